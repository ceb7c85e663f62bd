"""The security tests run on the REST suite's server: an admin `--api-key`, the installed plugins (the bundled
connectors and the RD Station destination), deliveries allowed to 127.0.0.1 only, a clock at the real time."""

from __future__ import annotations

from tests.rest.conftest import (  # noqa: F401 - fixtures, found by name
    clock,
    dispatch_settings,
    memo,
    receiver,
    rest,
    server,
    server_settings,
)
