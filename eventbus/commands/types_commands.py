"""`eventbus types list | show | schema set | schema rm`: the event-type catalogue and the JSON Schemas per type, over
the client's Admin calls."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from eventbus.commands.output import print_record, print_rows, wants_json

if TYPE_CHECKING:
    from eventbus.client_types import EventTypeStatus

TYPE_COLUMNS = ["type", "count", "first_seen", "last_seen", "schema"]


def add_types_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], client: argparse.ArgumentParser
) -> None:
    types = commands.add_parser("types", help="event types seen, and their JSON Schemas: list, show, schema set|rm")
    actions = types.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[client], help="every type seen or with a schema, by name")
    listing.add_argument("--pattern", metavar="P", help="only types matching this pattern (order.*, order.**)")
    show = actions.add_parser("show", parents=[client], help="one type: count, first and last seen, sample, schema")
    show.add_argument("type", metavar="TYPE")
    schema = actions.add_parser("schema", help="the JSON Schema events of a type must validate against: set, rm")
    schema_actions = schema.add_subparsers(dest="schema_action", required=True, metavar="ACTION")
    set_schema = schema_actions.add_parser(
        "set", parents=[client], help="register or replace it (draft 2020-12, self-contained, at most 64 KiB)"
    )
    set_schema.add_argument("type", metavar="TYPE")
    set_schema.add_argument("--schema", required=True, metavar="JSON|@FILE.json", help="the schema, or @ a file")
    remove = schema_actions.add_parser("rm", parents=[client], help="remove it: events of the type are not checked")
    remove.add_argument("type", metavar="TYPE")


def json_argument(text: str, flag: str) -> object:
    """A JSON value given on the command line, or `@FILE` to read it from a file."""
    from eventbus.commands.client_commands import UsageError

    try:
        raw = Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text
        return json.loads(raw)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{flag}: {exc}") from exc


def type_row(status: EventTypeStatus) -> dict[str, object]:
    return {
        "type": status.type,
        "count": status.count,
        "first_seen": status.first_seen,
        "last_seen": status.last_seen,
        "sample_event_id": status.sample_event_id,
        "sample": status.sample,
        "sample_omitted": status.sample_omitted,
        "schema": status.schema,
        "schema_updated_at": status.schema_updated_at,
    }


async def types(args: argparse.Namespace) -> int:
    from eventbus.commands.client_commands import client_of

    as_json = wants_json(args.json)
    async with client_of(args) as client:
        if args.action == "list":
            found: list[EventTypeStatus] = []
            token = ""
            while True:
                page, token = await client.list_event_types(pattern=args.pattern, page_token=token)
                found.extend(page)
                if not token:
                    break
            rows = [type_row(s) for s in found]
            if not as_json:  # the table says whether there is a schema; `show` prints it
                rows = [{**row, "schema": "yes" if s.schema_json else None} for row, s in zip(rows, found, strict=True)]
            print_rows(rows, TYPE_COLUMNS, as_json=as_json)
        elif args.action == "show":
            print_record(type_row(await client.get_event_type(args.type)), as_json=as_json)
        elif args.schema_action == "set":
            schema = json_argument(args.schema, "--schema")
            print_record(type_row(await client.set_event_schema(args.type, json.dumps(schema))), as_json=as_json)
        else:
            await client.delete_event_schema(args.type)
            print_record({"type": args.type, "schema_deleted": True}, as_json=as_json)
    return 0
