"""`eventbus keys create | list | revoke`: API keys over the client's Admin calls (a new key is shown once)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from eventbus.commands.output import print_record, print_rows, wants_json

if TYPE_CHECKING:
    from eventbus.client_keys import KeyStatus

KEY_COLUMNS = ["id", "name", "scopes", "created_at", "last_used_at", "revoked_at"]


def add_keys_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], client: argparse.ArgumentParser
) -> None:
    keys = commands.add_parser("keys", help="API keys: create (the key is shown once), list, revoke")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", parents=[client], help="a new key; prints it with `key`, shown this once")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        metavar="SCOPE",
        help="publish, subscribe or admin (admin implies the others); repeatable or comma-separated",
    )
    create.add_argument("--name", default="", help="what the key is for")
    listing = actions.add_parser("list", parents=[client], help="the active keys (never the key itself)")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    revoke = actions.add_parser("revoke", parents=[client], help="refuse the key from now on")
    revoke.add_argument("id", metavar="ID", help="key_...")


def key_row(status: KeyStatus) -> dict[str, object]:
    return {
        "id": status.id,
        "name": status.name,
        "scopes": list(status.scopes),
        "created_at": status.created_at,
        "last_used_at": status.last_used_at,
        "revoked_at": status.revoked_at,
    }


async def keys(args: argparse.Namespace) -> int:
    from eventbus.commands.client_commands import client_of

    as_json = wants_json(args.json)
    async with client_of(args) as client:
        if args.action == "create":
            scopes = [s for text in args.scope for s in text.split(",") if s.strip()]
            created = await client.create_key(scopes, name=args.name)
            print_record({**key_row(created.status), "key": created.key}, as_json=as_json)
            if not as_json:
                print("\nthe key is shown this once: the server keeps only its SHA-256", file=sys.stderr)
        elif args.action == "list":
            found: list[KeyStatus] = []
            token = ""
            while True:
                page, token = await client.list_keys(include_revoked=args.all, page_token=token)
                found.extend(page)
                if not token:
                    break
            print_rows([key_row(k) for k in found], KEY_COLUMNS, as_json=as_json)
        elif args.action == "revoke":
            print_record(key_row(await client.revoke_key(args.id)), as_json=as_json)
    return 0
