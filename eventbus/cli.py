"""The `eventbus` command: `serve` runs the server; the client commands talk to one over gRPC."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from eventbus import __version__
from eventbus.commands.config_command import add_config_parser
from eventbus.commands.events_commands import add_events_command
from eventbus.commands.keys_commands import add_keys_command
from eventbus.commands.plugins_command import add_plugins_parser
from eventbus.commands.sources_commands import add_sources_command
from eventbus.commands.types_commands import add_types_command
from eventbus.errors import EventBusError

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
# The webhook payload formats (the server validates them too; listed here so `--help` shows them).
PAYLOAD_FORMATS = ("standard", "cloudevents-structured", "cloudevents-binary", "raw")


def _client_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--server",
        default=os.environ.get("EVENTBUS_SERVER", "127.0.0.1:50051"),
        help="gRPC address of the server (env EVENTBUS_SERVER; default 127.0.0.1:50051)",
    )
    parent.add_argument("--api-key", default=os.environ.get("EVENTBUS_API_KEY"), help="API key (env EVENTBUS_API_KEY)")
    parent.add_argument("--json", action="store_true", help="one JSON object per line (the default when piped)")
    # TLS (docs/tls.md): any of these turns it on; the client certificate's env names differ from the server's
    # EVENTBUS_TLS_CERT/KEY so one shell can hold both.
    tls = parent.add_argument_group("TLS")
    tls.add_argument(
        "--tls",
        action="store_true",
        default=os.environ.get("EVENTBUS_TLS", "").strip().lower() in ("1", "true", "yes", "on"),
        help="connect with TLS, trusting the public roots (env EVENTBUS_TLS; implied by the flags below)",
    )
    tls.add_argument(
        "--tls-ca",
        metavar="PEM",
        default=os.environ.get("EVENTBUS_TLS_CA"),
        help="CA of the server (env EVENTBUS_TLS_CA)",
    )
    tls.add_argument(
        "--tls-cert",
        metavar="PEM",
        default=os.environ.get("EVENTBUS_TLS_CLIENT_CERT"),
        help="client certificate for mutual TLS (env EVENTBUS_TLS_CLIENT_CERT)",
    )
    tls.add_argument(
        "--tls-key",
        metavar="PEM",
        default=os.environ.get("EVENTBUS_TLS_CLIENT_KEY"),
        help="key of --tls-cert (env EVENTBUS_TLS_CLIENT_KEY)",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventbus", description="Webhook gateway and event bus.")
    parser.add_argument("--version", action="version", version=f"eventbus {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    client = _client_options()

    serve = commands.add_parser("serve", help="run gRPC and HTTP in one process")
    serve.add_argument("--store", help="store URL (env EVENTBUS_STORE; default sqlite:///eventbus-data/eventbus.db)")
    serve.add_argument("--grpc-listen", help="HOST:PORT, port 0 picks one (env EVENTBUS_GRPC_LISTEN; 127.0.0.1:50051)")
    serve.add_argument("--http-listen", help="HOST:PORT (env EVENTBUS_HTTP_LISTEN; default 127.0.0.1:8080)")
    serve.add_argument("--api-key", help="one key with every scope (env EVENTBUS_API_KEY; default none: open)")
    serve.add_argument(
        "--allow-destination",
        action="append",
        metavar="CIDR",
        help="let outbound deliveries reach this network (repeatable; env EVENTBUS_ALLOW_DESTINATIONS)",
    )
    serve.add_argument("--log-format", choices=["console", "json"], help="env EVENTBUS_LOG_FORMAT; console on a TTY")
    serve.add_argument("--log-level", help="debug, info, warning, error (env EVENTBUS_LOG_LEVEL; default info)")
    serve.add_argument(
        "--shutdown-grace", help="seconds in-flight calls get to finish on SIGTERM (env EVENTBUS_SHUTDOWN_GRACE; 10)"
    )
    serve.add_argument(
        "--hooks-body-limit",
        help="bytes of one POST /hooks/{source} body (env EVENTBUS_HOOKS_BODY_LIMIT; 1048576)",
    )
    serve.add_argument("--config", metavar="FILE", help="TOML settings file (env EVENTBUS_CONFIG; docs/config.md)")
    serve.add_argument("--retention", metavar="7d", help="keep events this long (env EVENTBUS_RETENTION; 7d)")
    serve.add_argument(
        "--retry-schedule",
        metavar="5s,5m,30m",
        help="default retry delays of new subscriptions (env EVENTBUS_RETRY_SCHEDULE; 5s,5m,30m,2h,5h,10h,10h)",
    )
    serve.add_argument(
        "--max-pending-age", metavar="3d", help="default of new subscriptions (env EVENTBUS_MAX_PENDING_AGE; 3d)"
    )
    serve.add_argument(
        "--max-in-flight", metavar="N", help="outbound sends at once in this process (env EVENTBUS_MAX_IN_FLIGHT; 1024)"
    )
    serve.add_argument("--tls-cert", metavar="PEM", help="certificate chain for gRPC and HTTP (env EVENTBUS_TLS_CERT)")
    serve.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert (env EVENTBUS_TLS_KEY)")
    serve.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="require client certificates signed by this CA (env EVENTBUS_TLS_CLIENT_CA)",
    )
    serve.add_argument(
        "--insecure", action="store_true", default=None, help="allow listening beyond loopback without TLS"
    )
    serve.add_argument(
        "--metrics-public", action="store_true", default=None, help="serve /metrics without the admin scope"
    )

    publish = commands.add_parser("publish", parents=[client], help="publish one event, or a JSON-lines batch")
    publish.add_argument("--type")
    publish.add_argument("--source")
    publish.add_argument("--id", help="default: a random UUID")
    publish.add_argument("--subject")
    publish.add_argument("--data", help="JSON text, or @FILE")
    publish.add_argument("--content-type", help="datacontenttype; a non-JSON type sends --data as raw bytes")
    publish.add_argument("--not-before", help="deliver no sooner: RFC 3339 or a delay like 30s, 5m, 2h")
    publish.add_argument("--batch", metavar="FILE.jsonl", help="one CloudEvents JSON object per line (- for stdin)")

    tail = commands.add_parser("tail", parents=[client], help="print events of a group as they come, and ack them")
    tail.add_argument("--group", help="durable group to join (default: an ephemeral one)")
    tail.add_argument("--pattern", action="append", help="type pattern, repeatable (default: every type)")
    tail.add_argument("--filter", help="content filter, JSON")
    tail.add_argument("--from", dest="start", default="latest", help="latest, earliest, SEQ or RFC 3339 time")
    tail.add_argument("--count", type=int, help="exit after N events")
    tail.add_argument("--max-in-flight", type=int, default=0, help="deliveries outstanding at once (default 100)")

    groups = commands.add_parser("groups", help="consumer groups: list, show, seek, rm")
    actions = groups.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[client], help="every group with its lag")
    for name, text in (("show", "one group with lag, pending and oldest age"), ("rm", "delete a group")):
        action = actions.add_parser(name, parents=[client], help=text)
        action.add_argument("name")
    seek = actions.add_parser("seek", parents=[client], help="move a group to a seq or a time")
    seek.add_argument("name")
    seek.add_argument("--to", required=True, help="SEQ or RFC 3339 time")

    _add_subscription_commands(commands, client)
    _add_delivery_commands(commands, client)
    add_events_command(commands, client)
    add_types_command(commands, client)
    add_sources_command(commands, client)
    add_keys_command(commands, client)
    add_plugins_parser(commands)
    add_config_parser(commands)
    return parser


def _add_settings_flags(parser: argparse.ArgumentParser, *, update: bool) -> None:
    """What every push subscription has; on `update` each flag is optional and changes only that setting."""
    more = "; replaces the current ones" if update else " (default: every type)"
    parser.add_argument("--pattern", action="append", help=f"type pattern, repeatable{more}")
    parser.add_argument("--filter", help="content filter, JSON" + ('; "" removes it' if update else ""))
    parser.add_argument("--rate-limit", type=float, metavar="N", help="deliveries per second at most (0: no limit)")
    parser.add_argument("--max-concurrency", type=int, metavar="N", help="deliveries in flight at once")
    parser.add_argument("--retry-schedule", metavar="5s,5m,30m", help="retry delays (none: a single attempt)")
    parser.add_argument("--max-pending-age", metavar="3d", help="a delivery pending longer is dead (expired)")
    parser.add_argument(
        "--ordering",
        choices=["none", "subject"],
        help="subject: one subject in order" + (" (add only)" if update else ""),
    )
    if not update:
        parser.add_argument("--paused", action="store_true", help="create it paused (deliveries are held)")


def _add_endpoint_flags(parser: argparse.ArgumentParser, *, update: bool) -> None:
    if update:
        parser.add_argument("--url", help="a new destination URL")
    parser.add_argument("--secret", metavar="whsec_...", help="signing secret (default: generated, shown once)")
    parser.add_argument("--format", choices=PAYLOAD_FORMATS, help="payload format (default standard)")
    parser.add_argument(
        "--header",
        action="append",
        metavar="NAME:VALUE",
        help="extra header, repeatable" + (" (replaces all)" if update else ""),
    )
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="per attempt, 1-60 (default 15)")
    parser.add_argument("--ed25519", action="store_true", help="also sign with an ed25519 key pair (v1a)")


def _add_kind_option_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="a kind option (string), repeatable")
    parser.add_argument("--options", metavar="JSON|@FILE.json", help="the kind's options as a JSON object")


def _add_event_flags(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    if positional:
        parser.add_argument("event", nargs="?", metavar="EVENT", help="evt_... (or --source S --id ID)")
    else:
        parser.add_argument("--event", metavar="EVENT", help="evt_... (or --source S --id ID)")
    parser.add_argument("--source", help="the event's CloudEvents source (with --id)")
    parser.add_argument("--id", dest="ce_id", metavar="ID", help="the event's CloudEvents id (with --source)")


def _add_subscription_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], client: argparse.ArgumentParser
) -> None:
    """`endpoints` (webhook subscriptions) and `subscriptions` (every push kind) share most actions."""
    for command, text in (
        (
            "endpoints",
            "webhook endpoints: add, list, show, update, pause, resume, rotate-secret, recover, why, test, rm",
        ),
        (
            "subscriptions",
            "subscriptions of every push kind: add, list, show, update, pause, resume, recover, why, test, rm",
        ),
    ):
        is_endpoints = command == "endpoints"
        actions = commands.add_parser(command, help=text).add_subparsers(dest="action", required=True, metavar="ACTION")
        add = actions.add_parser("add", parents=[client], help="create one; prints it with its secret (shown once)")
        if is_endpoints:
            add.add_argument("url", metavar="URL")
            _add_endpoint_flags(add, update=False)
        else:
            add.add_argument("--kind", required=True, help="webhook, or a plugin destination kind")
            _add_kind_option_flags(add)
        _add_settings_flags(add, update=False)
        update = actions.add_parser("update", parents=[client], help="change the settings given, keep the rest")
        update.add_argument("id", metavar="ID")
        if is_endpoints:
            _add_endpoint_flags(update, update=True)
        else:
            _add_kind_option_flags(update)
        _add_settings_flags(update, update=True)
        listing = actions.add_parser("list", parents=[client], help="every one, with state and backlog")
        if not is_endpoints:
            listing.add_argument("--kind", help="only this kind")
        simple = [
            ("show", "one, with state (and why), circuit and counts"),
            ("rm", "delete one"),
            ("pause", "hold its deliveries"),
            ("resume", "active again (from paused or disabled); held deliveries go at once"),
        ]
        if is_endpoints:
            simple.append(("enable", "the same as resume"))
        for name, help_text in simple:
            actions.add_parser(name, parents=[client], help=help_text).add_argument("id", metavar="ID")
        if is_endpoints:
            rotate = actions.add_parser("rotate-secret", parents=[client], help="a new secret; the old one signs 24 h")
            rotate.add_argument("id", metavar="ID")
            rotate.add_argument("--secret", metavar="whsec_...", help="the new secret (default: generated)")
        recover = actions.add_parser("recover", parents=[client], help="re-queue its dead deliveries since T")
        recover.add_argument("id", metavar="ID")
        recover.add_argument("--since", required=True, metavar="T", help="RFC 3339, or an age like 2h (2 hours ago)")
        recover.add_argument("--include-pending", action="store_true", help="also send pending deliveries now")
        why = actions.add_parser("why", parents=[client], help="why an event was (not yet) delivered to it")
        why.add_argument("id", metavar="ID")
        _add_event_flags(why, positional=True)
        test = actions.add_parser(
            "test", parents=[client], help="send it (only it) a test event now; prints the delivery"
        )
        test.add_argument("id", metavar="ID")
        test.add_argument("--type", help="the event's type (default eventbus.test)")
        test.add_argument("--data", metavar="JSON|@FILE.json", help="the event's data (default: a small sample)")


def _add_delivery_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], client: argparse.ArgumentParser
) -> None:
    deliveries = commands.add_parser("deliveries", help="deliveries: list, show with attempts, resend")
    actions = deliveries.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[client], help="deliveries, oldest first")
    listing.add_argument("--subscription", metavar="ID", help="of this subscription only")
    _add_event_flags(listing, positional=False)
    listing.add_argument("--state", choices=["pending", "leased", "succeeded", "dead"])
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    for name, help_text in (("show", "one delivery and its attempts"), ("resend", "a new attempt now")):
        actions.add_parser(name, parents=[client], help=help_text).add_argument("id", metavar="ID")
    replay = commands.add_parser("replay", parents=[client], help="deliver stored events again to a subscription")
    replay.add_argument("--to", required=True, metavar="SUB", help="the subscription (sub_...)")
    replay.add_argument("--pattern", action="append", help="type pattern, repeatable (default: the subscription's)")
    replay.add_argument("--since", required=True, metavar="T", help="RFC 3339, or an age like 2h (2 hours ago)")


def _command(args: argparse.Namespace) -> Command:
    from eventbus.commands import (
        admin_commands,
        client_commands,
        config_command,
        events_commands,
        keys_commands,
        plugins_command,
        sources_commands,
        types_commands,
    )

    if args.command == "serve":
        from eventbus.commands.serve import serve_command

        return serve_command
    return {
        "publish": client_commands.publish,
        "tail": client_commands.tail,
        "groups": client_commands.groups,
        "endpoints": admin_commands.endpoints,
        "subscriptions": admin_commands.subscriptions,
        "deliveries": admin_commands.deliveries,
        "replay": admin_commands.replay,
        "events": events_commands.events,
        "types": types_commands.types,
        "sources": sources_commands.sources,
        "keys": keys_commands.keys,
        "plugins": plugins_command.plugins,
        "config": config_command.config,
    }[args.command]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from eventbus.commands.client_commands import UsageError

    try:
        return asyncio.run(_command(args)(args))
    except UsageError as exc:
        print(f"eventbus {args.command}: {exc}", file=sys.stderr)
        return 2
    except EventBusError as exc:
        # One line (DESIGN.md §5): the message names the first field at fault and counts the others.
        print(f"eventbus {args.command}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"eventbus {args.command}: {exc}", file=sys.stderr)
        return 1
