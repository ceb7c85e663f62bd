"""The plugin API: pluggy markers for project `eventbus`, the connector and destination contract, the loader.

A plugin is a module (or object) with `@hookimpl` functions, published through the `eventbus` entry-point group::

    [project.entry-points.eventbus]
    acme = "eventbus_acme"

docs/plugins.md is the author guide; `eventbus.plugin.hookspecs` is the contract; `eventbus.plugin.helpers` reads
JSON and form bodies, refuses options and checks HMACs for connectors.
"""

from __future__ import annotations

from typing import Final

import pluggy

NAME: Final = "eventbus"  # the pluggy project name and the entry-point group
hookspec = pluggy.HookspecMarker(NAME)
hookimpl = pluggy.HookimplMarker(NAME)

# The markers come first: hookspecs.py (imported by the loader below) takes `hookspec` from this module.
from eventbus.plugin.connectors import (  # noqa: E402
    Accepted,
    Connector,
    ConnectorResult,
    CustomResponse,
    Headers,
    InboundRequest,
    Refused,
    SourceConfig,
)
from eventbus.plugin.destinations import (  # noqa: E402
    Delivery,
    Destination,
    DestinationContext,
    DestinationResult,
    KeyValueState,
    Outcome,
)
from eventbus.plugin.helpers import (  # noqa: E402
    body_text,
    json_body,
    media_type,
    no_options,
    parse_form,
    parse_json,
    signed_by_any,
)
from eventbus.plugin.lifecycle import ServerContext  # noqa: E402
from eventbus.plugin.manager import (  # noqa: E402
    PluginFailure,
    PluginInfo,
    PluginLoadError,
    Plugins,
    load_plugins,
)
from eventbus.plugin.registry import ConnectorRegistry, DestinationRegistry, DuplicateNameError  # noqa: E402

__all__ = [
    "NAME",
    "Accepted",
    "Connector",
    "ConnectorRegistry",
    "ConnectorResult",
    "CustomResponse",
    "Delivery",
    "Destination",
    "DestinationContext",
    "DestinationRegistry",
    "DestinationResult",
    "DuplicateNameError",
    "Headers",
    "InboundRequest",
    "KeyValueState",
    "Outcome",
    "PluginFailure",
    "PluginInfo",
    "PluginLoadError",
    "Plugins",
    "Refused",
    "ServerContext",
    "SourceConfig",
    "body_text",
    "hookimpl",
    "hookspec",
    "json_body",
    "load_plugins",
    "media_type",
    "no_options",
    "parse_form",
    "parse_json",
    "signed_by_any",
]
