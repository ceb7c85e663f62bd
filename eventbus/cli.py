"""The `eventbus` command: `serve` runs the server; `publish`, `tail`, `groups` talk to one over gRPC."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from eventbus import __version__
from eventbus.errors import EventBusError

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _client_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--server",
        default=os.environ.get("EVENTBUS_SERVER", "127.0.0.1:50051"),
        help="gRPC address of the server (env EVENTBUS_SERVER; default 127.0.0.1:50051)",
    )
    parent.add_argument("--api-key", default=os.environ.get("EVENTBUS_API_KEY"), help="API key (env EVENTBUS_API_KEY)")
    parent.add_argument("--json", action="store_true", help="one JSON object per line (the default when piped)")
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
    return parser


def _command(args: argparse.Namespace) -> Command:
    from eventbus.commands import client_commands

    if args.command == "serve":
        from eventbus.commands.serve import serve_command

        return serve_command
    return {
        "publish": client_commands.publish,
        "tail": client_commands.tail,
        "groups": client_commands.groups,
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
