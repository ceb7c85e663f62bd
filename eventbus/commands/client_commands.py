"""`eventbus publish`, `tail` and `groups`: thin commands over `eventbus.client`."""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

from eventbus.cejson import events_from_json_lines, stored_event_to_json
from eventbus.client import EventBusClient, GroupStatus
from eventbus.clock import SystemClock
from eventbus.commands.output import print_record, print_rows, wants_json
from eventbus.errors import DeliveryLeaseLostError, InvalidArgumentError
from eventbus.model import Event, PublishResult, parse_rfc3339
from eventbus.tls import ClientTls

_RELATIVE = re.compile(r"^\+?(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
BATCH_LIMIT = 1000


class UsageError(Exception):
    """A mistake on the command line: exit status 2."""


def client_of(args: argparse.Namespace) -> EventBusClient:
    tls = None
    if args.tls or args.tls_ca or args.tls_cert or args.tls_key:
        try:
            tls = ClientTls.from_files(args.tls_ca, args.tls_cert, args.tls_key)
        except InvalidArgumentError as exc:  # a missing or bad PEM file is a mistake on the command line
            raise UsageError(exc.message) from exc
    return EventBusClient(args.server, api_key=args.api_key, tls=tls)


def _span(text: str) -> timedelta | None:
    match = _RELATIVE.match(text)
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)]) if match else None


def parse_moment(text: str, field: str) -> datetime:
    """RFC 3339, or a delay from now such as `30s`, `+5m`, `2h` (a moment in the future: --not-before)."""
    span = _span(text)
    if span is not None:
        return SystemClock().now() + span
    try:
        return parse_rfc3339(text, field)
    except InvalidArgumentError as exc:
        raise UsageError(f"{field}: {text!r} is neither RFC 3339 nor a delay like 30s, 5m, 2h") from exc


def parse_since(text: str, field: str = "--since") -> datetime:
    """RFC 3339, or an age such as `30m`, `2h`, `3d` meaning that long ago (a moment in the past: --since)."""
    span = _span(text.removeprefix("-")) if not text.startswith("+") else None
    if span is not None:
        return SystemClock().now() - span
    try:
        return parse_rfc3339(text, field)
    except InvalidArgumentError as exc:
        raise UsageError(f"{field}: {text!r} is neither RFC 3339 nor an age like 30m, 2h, 3d (that long ago)") from exc


def parse_duration(text: str, field: str) -> timedelta:
    """A span such as `500ms`, `5s`, `5m`, `2h`, `3d`."""
    span = _span(text.strip()) if not text.strip().startswith("+") else None
    if span is None:
        raise UsageError(f"{field}: {text!r} is not a duration like 5s, 5m, 2h, 3d")
    return span


def _read_data(args: argparse.Namespace) -> object:
    if args.data is None:
        return None
    raw: bytes = Path(args.data[1:]).read_bytes() if args.data.startswith("@") else args.data.encode()
    if args.content_type and not args.content_type.split(";")[0].strip().endswith("json"):
        return raw  # kept byte-exact
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"--data is not valid JSON ({exc}); give --content-type for other data") from exc


def _publish_rows(results: list[PublishResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]


async def publish(args: argparse.Namespace) -> int:
    not_before = parse_moment(args.not_before, "--not-before") if args.not_before else None
    if args.batch:
        try:
            text = sys.stdin.read() if args.batch == "-" else Path(args.batch).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{args.batch}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        try:
            events = events_from_json_lines(text)
        except InvalidArgumentError as exc:
            raise UsageError(f"{args.batch}: {exc.message}") from exc
        if not events:
            raise UsageError(f"{args.batch}: no events in the file")
    else:
        if not args.type or not args.source:
            raise UsageError("publish needs --type and --source (or --batch FILE.jsonl)")
        try:
            events = [
                Event.create(
                    type=args.type,
                    source=args.source,
                    id=args.id,
                    subject=args.subject,
                    data=_read_data(args),
                    datacontenttype=args.content_type,
                )
            ]
        except InvalidArgumentError as exc:
            raise UsageError(exc.message) from exc
    as_json = wants_json(args.json)
    columns = ["id", "source", "event_id", "seq", "duplicate"]
    async with client_of(args) as client:
        results: list[PublishResult] = []
        # Each call of up to 1000 events is atomic; a longer file is sent in such calls, in order. With --json
        # each call's results are printed as soon as it is stored, so a later failure still shows what landed.
        for start in range(0, len(events), BATCH_LIMIT):
            stored = await client.publish(events[start : start + BATCH_LIMIT], not_before=not_before)
            if as_json:
                print_rows(_publish_rows(stored), columns, as_json=True)
            results.extend(stored)
    if not as_json:
        print_rows(_publish_rows(results), columns, as_json=False)
    return 0


def _start(text: str) -> str | int | datetime:
    if text in ("latest", "earliest"):
        return text
    if text.isdigit():
        return int(text)
    try:
        return parse_rfc3339(text, "--from")
    except InvalidArgumentError as exc:
        raise UsageError(f"--from {text!r}: use latest, earliest, a seq number or an RFC 3339 time") from exc


async def tail(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    start = _start(args.start)
    seen = 0
    async with client_of(args) as client:
        subscription = client.subscribe(
            args.group, args.pattern or [], filter=args.filter, start=start, max_in_flight=args.max_in_flight
        )
        async with subscription:
            async for delivery in subscription:
                line = stored_event_to_json(delivery.event)
                line["delivery_id"] = delivery.delivery_id
                line["attempt"] = delivery.attempt
                sys.stdout.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
                sys.stdout.flush()
                try:
                    await delivery.ack()
                except DeliveryLeaseLostError:
                    continue  # the stream dropped: the client reconnects and the event comes again
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
    return 0


def _group_row(group: GroupStatus) -> dict[str, object]:
    row = asdict(group)
    row["filter"] = json.loads(group.filter) if group.filter else None
    return row


async def groups(args: argparse.Namespace) -> int:
    as_json = wants_json(args.json)
    async with client_of(args) as client:
        if args.action == "list":
            rows: list[dict[str, object]] = []
            token = ""
            while True:
                page, token = await client.list_groups(page_token=token)
                rows.extend(_group_row(g) for g in page)
                if not token:
                    break
            columns = ["name", "patterns", "lag", "pending", "leased", "dead", "oldest_pending_age", "active_streams"]
            print_rows(rows, columns, as_json=as_json)
        elif args.action == "show":
            print_record(_group_row(await client.get_group(args.name)), as_json=as_json)
        elif args.action == "seek":
            to: int | datetime = int(args.to) if args.to.isdigit() else parse_moment(args.to, "--to")
            print_record(_group_row(await client.seek_group(args.name, to)), as_json=as_json)
        elif args.action == "rm":
            await client.delete_group(args.name)
            print_record({"deleted": args.name}, as_json=as_json)
    return 0
