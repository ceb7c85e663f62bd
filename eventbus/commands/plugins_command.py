"""`eventbus plugins`: the installed plugins, loaded in this process, with their connectors and destinations."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from eventbus.commands.output import print_rows, wants_json
from eventbus.logs import configure_logging
from eventbus.plugin import PluginLoadError, load_plugins

COLUMNS = ("name", "version", "dist", "connectors", "destinations", "failures")


def add_plugins_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `plugins` to the `eventbus` command's subcommands."""
    parser = commands.add_parser(
        "plugins",
        help="list installed plugins, their versions, connectors and destination kinds (local: no server needed)",
        description=(
            "Load the plugins of entry-point group `eventbus` in this process, as `eventbus serve` would, and list "
            "them. Runs locally: it does not contact a server. Honours EVENTBUS_DISABLE_PLUGINS (comma-separated "
            "names) and EVENTBUS_DISABLE_PLUGIN_AUTOLOAD. Exits 1 if a plugin cannot be loaded."
        ),
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per plugin (the default when piped)")


async def plugins(args: argparse.Namespace) -> int:
    # Logs (a plugin that raised while registering) go to stderr, so stdout stays a clean table or JSON.
    configure_logging(level="warning")
    try:
        loaded = load_plugins()
    except PluginLoadError as exc:
        print(f"eventbus plugins: {exc}", file=sys.stderr)
        return 1
    as_json = wants_json(bool(getattr(args, "json", False)))
    rows: list[dict[str, Any]] = [
        {
            "name": info.name,
            "version": info.version,
            "dist": info.dist,
            "connectors": info.connectors,
            "destinations": info.destinations,
            "failures": info.failures,
        }
        for info in loaded.info()
    ]
    if not rows and not as_json:
        print("no plugins installed (entry-point group `eventbus`)", file=sys.stderr)
        return 0
    print_rows(rows, COLUMNS, as_json=as_json)
    return 0
