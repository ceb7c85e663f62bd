"""`eventbus events list | show`: the stored events, read over the gRPC `ListEvents` and `GetEvent` calls."""

from __future__ import annotations

import argparse
from typing import Any

from eventbus.cejson import stored_event_to_json
from eventbus.commands.output import print_record, print_rows, wants_json
from eventbus.model import StoredEvent

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
    show = actions.add_parser("show", parents=[client], help="one event, as CloudEvents JSON with the bus's ids")
    show.add_argument("event", nargs="?", metavar="EVENT", help="evt_... (or --source S --id ID)")
    show.add_argument("--source", help="the event's CloudEvents source (with --id)")
    show.add_argument("--id", dest="ce_id", metavar="ID", help="the event's CloudEvents id (with --source)")


def event_row(stored: StoredEvent) -> dict[str, Any]:
    """CloudEvents JSON plus `event_id`, `seq` and `received_at`."""
    return stored_event_to_json(stored)


async def events(args: argparse.Namespace) -> int:
    from eventbus.commands.admin_commands import _event
    from eventbus.commands.client_commands import UsageError, client_of, parse_since

    as_json = wants_json(args.json)
    if args.action == "show":
        event_id, source, id = _event(args.event, args.source, args.ce_id, required=True)
        async with client_of(args) as client:
            stored = await client.get_event(event_id, source=source, id=id)
        print_record(event_row(stored), as_json=as_json)
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
