"""`eventbus sources add | list | show | update | enable | disable | rotate-secret | rm`: the inbound receivers behind
`POST /hooks/<name>`, over the client's Admin calls. A generated or rotated-in secret is printed this once."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from eventbus.commands.output import print_record, print_rows, wants_json

if TYPE_CHECKING:
    from eventbus.client_sources import SourceStatus

SOURCE_COLUMNS = ["name", "connector", "path", "enabled", "rate_limit", "secrets_count", "id"]
_ONCE = "\nthe secret is shown this once: give it to the sender (the server never shows it again)"


def _add_option_flags(parser: argparse.ArgumentParser, *, update: bool) -> None:
    merged = " (merged into the current ones)" if update else ""
    parser.add_argument(
        "--option", action="append", metavar="KEY=VALUE", help=f"a connector option (string), repeatable{merged}"
    )
    parser.add_argument(
        "--options", metavar="JSON|@FILE.json", help=f"the connector's options as a JSON object{merged}"
    )
    parser.add_argument("--rate-limit", type=float, metavar="N", help="requests per second at most (0: no limit)")


def add_sources_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], client: argparse.ArgumentParser
) -> None:
    sources = commands.add_parser(
        "sources", help="inbound sources (/hooks/NAME): add, list, show, update, enable, disable, rotate-secret, rm"
    )
    actions = sources.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[client], help="a new source; prints its path (and a generated secret)")
    add.add_argument("name", metavar="NAME", help="1-63 of [a-z0-9_-]; senders POST to /hooks/NAME")
    add.add_argument("--connector", required=True, metavar="KIND", help="the connector kind (see `eventbus plugins`)")
    add.add_argument(
        "--secret", action="append", metavar="S", help="a verifying secret, at most 2 (default: one generated)"
    )
    _add_option_flags(add, update=False)
    add.add_argument("--disabled", action="store_true", help="create it disabled (requests are refused)")
    actions.add_parser("list", parents=[client], help="every source (never its secrets)")
    update = actions.add_parser("update", parents=[client], help="change the settings given, keep the rest")
    update.add_argument("name", metavar="NAME", help="its name or id (src_...)")
    update.add_argument(
        "--secret", action="append", metavar="S", help="replaces every secret, at once (rotate-secret keeps a grace)"
    )
    _add_option_flags(update, update=True)
    for name, text in (
        ("show", "one source (never its secrets: how many verify, and when a rotated-out one stops)"),
        ("enable", "accept its requests again"),
        ("disable", "refuse its requests"),
        ("rm", "delete it: /hooks/NAME answers 404 from now on"),
    ):
        actions.add_parser(name, parents=[client], help=text).add_argument(
            "name", metavar="NAME", help="its name or id (src_...)"
        )
    rotate = actions.add_parser("rotate-secret", parents=[client], help="a new secret; the current one verifies 24 h")
    rotate.add_argument("name", metavar="NAME", help="its name or id (src_...)")
    rotate.add_argument("--secret", metavar="S", help="the new secret (default: generated, shown once)")


def source_row(status: SourceStatus) -> dict[str, object]:
    row: dict[str, object] = {
        "id": status.id,
        "name": status.name,
        "connector": status.connector,
        "path": status.path,
        "enabled": status.enabled,
        "options": status.options,
        "rate_limit": status.rate_limit,
        "secrets_count": status.secrets_count,
        "previous_secret_expires_at": status.previous_secret_expires_at,
        "created_at": status.created_at,
        "updated_at": status.updated_at,
    }
    if status.secret is not None:
        row["secret"] = status.secret  # this answer only
    return row


async def sources(args: argparse.Namespace) -> int:
    from eventbus.commands.admin_commands import _kind_options
    from eventbus.commands.client_commands import UsageError, client_of

    as_json = wants_json(args.json)

    def show(status: SourceStatus) -> None:
        print_record(source_row(status), as_json=as_json)
        if status.secret is not None and not as_json:
            print(_ONCE, file=sys.stderr)

    async with client_of(args) as client:
        action = args.action
        if action == "add":
            show(
                await client.create_source(
                    args.name,
                    args.connector,
                    secrets=args.secret or (),
                    options=_kind_options(args),
                    enabled=not args.disabled,
                    rate_limit=args.rate_limit,
                )
            )
        elif action == "list":
            found: list[SourceStatus] = []
            token = ""
            while True:
                page, token = await client.list_sources(page_token=token)
                found.extend(page)
                if not token:
                    break
            print_rows([source_row(s) for s in found], SOURCE_COLUMNS, as_json=as_json)
        elif action == "show":
            show(await client.get_source(args.name))
        elif action == "update":
            options = _kind_options(args)
            if options is None and args.secret is None and args.rate_limit is None:
                raise UsageError("nothing to change: give --option, --options, --rate-limit or --secret")
            show(
                await client.update_source(args.name, secrets=args.secret, options=options, rate_limit=args.rate_limit)
            )
        elif action in ("enable", "disable"):
            show(await client.update_source(args.name, enabled=action == "enable"))
        elif action == "rotate-secret":
            show(await client.rotate_source_secret(args.name, args.secret))
        elif action == "rm":
            await client.delete_source(args.name)
            print_record({"deleted": args.name}, as_json=as_json)
    return 0
