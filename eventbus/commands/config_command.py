"""`eventbus config check FILE`: the file checked as `serve` would check it, without starting anything."""

from __future__ import annotations

import argparse
import os

from eventbus.configuration.file import ConfigFileError, load_config_file


def add_config_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `config` to the `eventbus` command's subcommands."""
    parser = commands.add_parser("config", help="the TOML config file: check one (docs/config.md)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="check a config file: prints ok and a summary, or every error with its key's path (exit 2)",
        description=(
            "Reads FILE as `eventbus serve --config FILE` would: unknown keys, bad values and missing env: "
            "variables are refused, each naming its key. Kind and connector options are checked by `serve`, "
            "by the same rules as the API, when it applies the declarations."
        ),
    )
    check.add_argument("file", metavar="FILE")


async def config(args: argparse.Namespace) -> int:
    from eventbus.commands.client_commands import UsageError

    try:
        loaded = load_config_file(args.file, os.environ)
    except ConfigFileError as exc:
        raise UsageError(exc.message) from exc
    declarations = loaded.declarations
    print(f"ok: {args.file}")
    settings = ", ".join(sorted(path for path in _paths(loaded.values))) or "none (defaults)"
    print(f"settings: {settings}")
    print(f"api keys: {len(loaded.api_keys)}")
    print(f"sources: {len(declarations.sources)} " + _names([s.name for s in declarations.sources]))
    print(f"subscriptions: {len(declarations.subscriptions)} " + _names([s.name for s in declarations.subscriptions]))
    return 0


def _paths(values: dict[str, object]) -> list[str]:
    from eventbus.configuration.values import SETTINGS

    return [setting.path for setting in SETTINGS if setting.name in values]


def _names(names: list[str]) -> str:
    return f"({', '.join(names)})" if names else ""
