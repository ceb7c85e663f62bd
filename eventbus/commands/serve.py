"""`eventbus serve`: settings from flags, env and the config file, logging, the faster loop when installed, then run."""

from __future__ import annotations

import argparse
import asyncio

import structlog

from eventbus.config import settings_from, settings_reader
from eventbus.errors import InvalidArgumentError
from eventbus.logs import configure_logging
from eventbus.plugin.manager import PluginLoadError
from eventbus.runtime import serve


async def serve_command(args: argparse.Namespace) -> int:
    from eventbus.commands.client_commands import UsageError

    flags = vars(args)
    try:
        settings = settings_from(flags)  # a refused config file lists every error, each naming its key
    except InvalidArgumentError as exc:
        raise UsageError(exc.message) from exc
    configure_logging(settings.log_format, settings.log_level)
    structlog.get_logger("eventbus.server").info(
        "server_starting", loop=type(asyncio.get_running_loop()).__module__.split(".")[0]
    )
    try:
        return await serve(settings, settings_source=settings_reader(flags))
    except InvalidArgumentError as exc:
        # Settings refused at start-up (a bad store URL; an open bus beyond loopback, known once the stored keys
        # are loaded; a declared source or subscription the service layer refuses): a usage error, like the ones
        # found before.
        raise UsageError(exc.message) from exc
    except PluginLoadError as exc:  # one line naming the plugin and how to start without it, no traceback
        structlog.get_logger("eventbus.server").error("plugin_load_failed", error=str(exc))
        raise SystemExit(f"eventbus serve: {exc}") from None
