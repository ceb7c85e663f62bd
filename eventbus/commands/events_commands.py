"""`eventbus events list | show`: the stored events, read over the gRPC `ListEvents` and `Admin.GetEvent` calls (the
latter with the raw inbound request an event came from; `EventBus.GetEvent` for a key without `admin`)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from eventbus.cejson import raw_request_to_json, stored_event_to_json
from eventbus.commands.output import print_json, print_record, print_rows, wants_json
from eventbus.errors import PermissionDeniedError
from eventbus.model import StoredEvent

if TYPE_CHECKING:
    from eventbus.client_values import RawRequestStatus

EVENT_COLUMNS = ["event_id", "seq", "type", "source", "id", "subject", "received_at"]


def add_events_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], client: argparse.ArgumentParser
) -> None:
    events = commands.add_parser("events", help="stored events: list with filters, show one")
    actions = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[client], help="events in the order they were stored")
    listing.add_argument("--pattern", action="append", metavar="P", help="type pattern, repeatable (default: all)")
    listing.add_argument("--source", help="only events of this CloudEvents source")
    listing.add_argument("--subject", help="only events of this subject")
    listing.add_argument("--since", metavar="T", help="received at or after: RFC 3339, or an age like 2h (ago)")
    listing.add_argument("--until", metavar="T", help="received before: RFC 3339, or an age like 30m (ago)")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    show = actions.add_parser(
        "show", parents=[client], help="one event, as CloudEvents JSON with the bus's ids, and its raw /hooks request"
    )
    show.add_argument("event", nargs="?", metavar="EVENT", help="evt_... (or --source S --id ID)")
    show.add_argument("--source", help="the event's CloudEvents source (with --id)")
    show.add_argument("--id", dest="ce_id", metavar="ID", help="the event's CloudEvents id (with --source)")


def event_row(stored: StoredEvent) -> dict[str, Any]:
    """CloudEvents JSON plus `event_id`, `seq` and `received_at`."""
    return stored_event_to_json(stored)


def raw_request_row(raw: RawRequestStatus) -> dict[str, Any]:
    """The shape REST `GET /v1/events/{id}` gives `raw_request`."""
    return raw_request_to_json(
        request_id=raw.request_id,
        received_at=raw.received_at,
        method=raw.method,
        path=raw.path,
        query=raw.query,
        headers=raw.headers,
        body=raw.body,
        remote=raw.remote,
    )


def _safe(text: str) -> str:
    """Visible on a terminal: the request is the sender's, and its control characters (escape sequences) must not
    drive the operator's terminal. Line breaks and tabs stay."""
    return "".join(c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" for c in text)


def _print_raw_table(raw: dict[str, Any]) -> None:
    write = sys.stdout.write
    write("\nraw request\n")
    query = "&".join(f"{k}={v}" for k, v in raw["query"])
    line = f"{raw['method']} {raw['path']}{'?' + query if query else ''}"
    write(f"  {_safe(line)}\n  received_at  {raw['received_at']}\n  remote       {raw['remote'] or '-'}\n")
    write(f"  request_id   {raw['request_id']}\n\nheaders\n")
    write("".join(f"  {_safe(name)}: {_safe(value)}\n" for name, value in raw["headers"]) or "  -\n")
    if raw["body_base64"] is not None:
        write(f"\nbody (not UTF-8, base64)\n{raw['body_base64']}\n")
    else:
        write(f"\nbody\n{_safe(raw['body'])}\n" if raw["body"] else "\nbody\n  -\n")
    sys.stdout.flush()


async def _show(args: argparse.Namespace, *, as_json: bool) -> None:
    from eventbus.commands.admin_commands import _event
    from eventbus.commands.client_commands import client_of

    event_id, source, id = _event(args.event, args.source, args.ce_id, required=True)
    async with client_of(args) as client:
        try:
            stored, raw = await client.get_event_detail(event_id, source=source, id=id)
            known = True
        except PermissionDeniedError:
            # A `subscribe` key may read events but not raw requests (their headers are admin material): the
            # event alone, without a `raw_request` field (unknown here, not absent).
            stored, raw, known = await client.get_event(event_id, source=source, id=id), None, False
    row = event_row(stored)
    raw_row = raw_request_row(raw) if raw is not None else None
    if as_json:
        print_json({**row, "raw_request": raw_row} if known else row)
    elif raw_row is None:
        print_record({**row, "raw_request": None} if known else row, as_json=False)
    else:
        print_record(row, as_json=False)
        _print_raw_table(raw_row)


async def events(args: argparse.Namespace) -> int:
    from eventbus.commands.client_commands import UsageError, client_of, parse_since

    as_json = wants_json(args.json)
    if args.action == "show":
        await _show(args, as_json=as_json)
        return 0
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    since = parse_since(args.since) if args.since else None
    until = parse_since(args.until, "--until") if args.until else None
    if since is not None and until is not None and until <= since:
        raise UsageError("--until must be after --since")
    found: list[StoredEvent] = []
    async with client_of(args) as client:
        token = ""
        while len(found) < args.limit:
            page, token = await client.list_events(
                patterns=args.pattern or (),
                source=args.source,
                subject=args.subject,
                received_after=since,
                received_before=until,
                page_size=min(args.limit - len(found), 1000),
                page_token=token,
            )
            found.extend(page)
            if not token:
                break
    print_rows([event_row(e) for e in found[: args.limit]], EVENT_COLUMNS, as_json=as_json)
    return 0
