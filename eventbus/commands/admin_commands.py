"""`eventbus endpoints`, `subscriptions`, `deliveries` and `replay`: thin commands over the client's Admin calls."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import TypedDict

from eventbus.client import EventBusClient
from eventbus.client_values import AttemptStatus, DeliveryExplanation, DeliveryStatus, SubscriptionStatus
from eventbus.commands.client_commands import UsageError, client_of, parse_duration, parse_since
from eventbus.commands.output import print_record, print_rows, wants_json

ENDPOINT_COLUMNS = ["id", "url", "state", "patterns", "circuit", "pending", "dead"]
SUBSCRIPTION_COLUMNS = ["id", "kind", "state", "patterns", "circuit", "pending", "dead"]
DELIVERY_COLUMNS = ["id", "subscription_id", "event_id", "state", "attempt_count", "next_attempt_at", "last_error"]
ATTEMPT_COLUMNS = ["number", "started_at", "duration", "status_code", "error_class", "outcome", "next_attempt_at"]


# -- reading the flags -----------------------------------------------------------------------------------------


def parse_headers(values: list[str] | None) -> dict[str, str] | None:
    """`--header K:V`, split on the first ':' (values may hold more)."""
    if values is None:
        return None
    headers: dict[str, str] = {}
    for text in values:
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {text!r}: expected NAME:VALUE")
        headers[name.strip()] = value.strip()
    return headers


def _filter(text: str | None) -> str | None:
    if text:
        try:
            json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--filter is not valid JSON ({exc})") from exc
    return text


def _schedule(text: str | None) -> list[timedelta] | None:
    if text is None:
        return None
    if text.strip().lower() in ("", "none"):
        return []  # no retries: one attempt only
    return [parse_duration(part, "--retry-schedule") for part in text.split(",")]


class Settings(TypedDict):
    """The settings every push subscription has, as keyword arguments of the client (None: not given)."""

    patterns: list[str] | None
    filter: str | None
    retry_schedule: list[timedelta] | None
    rate_limit: float | None
    max_concurrency: int | None
    max_pending_age: timedelta | None
    ordering: str | None


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        patterns=args.pattern,
        filter=_filter(args.filter),
        retry_schedule=_schedule(args.retry_schedule),
        rate_limit=args.rate_limit,
        max_concurrency=args.max_concurrency,
        max_pending_age=parse_duration(args.max_pending_age, "--max-pending-age") if args.max_pending_age else None,
        ordering=args.ordering,
    )


def _endpoint_options(args: argparse.Namespace, url: str | None) -> dict[str, object]:
    given = {
        "url": url,
        "secret": args.secret,
        "format": args.format,
        "headers": parse_headers(args.header),
        "timeout": args.timeout,
        "ed25519": True if args.ed25519 else None,
    }
    return {key: value for key, value in given.items() if value is not None}


def _json_object(text: str, flag: str) -> dict[str, object]:
    try:
        raw = Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text
        value = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{flag}: {exc}") from exc
    if not isinstance(value, dict):
        raise UsageError(f"{flag}: must be a JSON object")
    return value


def _kind_options(args: argparse.Namespace) -> dict[str, object] | None:
    """`--options JSON|@FILE`, then each `--option K=V` (a string value) on top."""
    if args.options is None and not args.option:
        return None
    options = _json_object(args.options, "--options") if args.options else {}
    for text in args.option or ():
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise UsageError(f"--option {text!r}: expected KEY=VALUE")
        options[key] = value
    return options


EventNames = tuple[str | None, str | None, str | None]  # (event_id, source, id)


def _event(event: str | None, source: str | None, id: str | None, *, required: bool) -> EventNames:
    """An event named `evt_...`, or by `--source S --id ID` (its CloudEvents identity)."""
    if event:
        if source or id:
            raise UsageError("name the event by evt_... or by --source S --id ID, not both")
        if not event.startswith("evt_"):
            raise UsageError(f"{event!r} is not an event id (evt_...); name the event by --source S --id ID instead")
        return event, None, None
    if source or id:
        if not (source and id):
            raise UsageError("--source and --id go together: they name an event by its CloudEvents source and id")
        return None, source, id
    if required:
        raise UsageError("name the event: evt_... or --source S --id ID")
    return None, None, None


# -- what is printed -------------------------------------------------------------------------------------------


def subscription_row(status: SubscriptionStatus, *, endpoint_view: bool = False) -> dict[str, object]:
    """One flat record; an endpoint's options (url, headers, format, timeout, ...) stand at the top level."""
    row: dict[str, object] = {"id": status.id, "kind": status.kind}
    lift = endpoint_view and status.kind == "webhook"
    if lift:
        row["url"] = status.options.get("url")
        row.update(status.options)
    row.update(
        patterns=list(status.patterns),
        filter=json.loads(status.filter) if status.filter else None,
        state=status.state,
        state_reason=status.state_reason,
    )
    if not lift:
        row["options"] = status.options
    health, stats = status.health, status.stats
    row.update(
        retry_schedule=list(status.retry_schedule),
        rate_limit=status.rate_limit,
        max_concurrency=status.max_concurrency,
        max_pending_age=status.max_pending_age,
        ordering=status.ordering,
        created_at=status.created_at,
        updated_at=status.updated_at,
        circuit=health.circuit,
        consecutive_failures=health.consecutive_failures,
        failing_since=health.failing_since,
        circuit_opened_at=health.circuit_opened_at,
        next_probe_at=health.next_probe_at,
        pending=stats.pending,
        leased=stats.leased,
        succeeded=stats.succeeded,
        dead=stats.dead,
        oldest_pending_age=stats.oldest_pending_age,
    )
    row.update(status.revealed)  # secret, public_key: this answer only
    return row


def delivery_row(delivery: DeliveryStatus, *, with_attempts: bool = False) -> dict[str, object]:
    row: dict[str, object] = {
        "id": delivery.delivery_id,
        "subscription_id": delivery.subscription_id,
        "event_id": delivery.event_id,
        "event_seq": delivery.event_seq,
        "state": delivery.state,
        "attempt_count": delivery.attempt_count,
        "next_attempt_at": delivery.next_attempt_at,
        "first_attempt_at": delivery.first_attempt_at,
        "last_attempt_at": delivery.last_attempt_at,
        "created_at": delivery.created_at,
        "finished_at": delivery.finished_at,
        "dead_reason": delivery.dead_reason,
        "last_error": delivery.last_error,
        "ordering_key": delivery.ordering_key,
        "manual": delivery.manual,
    }
    if with_attempts:
        row["attempts"] = [attempt_row(a) for a in delivery.attempts]
    return row


def attempt_row(attempt: AttemptStatus) -> dict[str, object]:
    headers: dict[str, str] = {}
    for name, value in attempt.response_headers:
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    row: dict[str, object] = {
        "id": attempt.attempt_id,
        "number": attempt.number,
        "started_at": attempt.started_at,
        "duration": attempt.duration,
        "status_code": attempt.status_code,
        "error_class": attempt.error_class,
        "error": attempt.error,
        "outcome": attempt.outcome,
        "next_attempt_at": attempt.next_attempt_at,
        "probe": attempt.probe,
        "manual": attempt.manual,
        "response_headers": headers,
    }
    try:
        row["response_body"] = attempt.response_body.decode("utf-8")
    except UnicodeDecodeError:
        row["response_body_base64"] = base64.b64encode(attempt.response_body).decode()
    return row


def _print_delivery(delivery: DeliveryStatus, *, as_json: bool) -> None:
    if as_json:
        print_record(delivery_row(delivery, with_attempts=True), as_json=True)
        return
    print_record(delivery_row(delivery), as_json=False)
    print()
    if delivery.attempts:
        print_rows([attempt_row(a) for a in delivery.attempts], ATTEMPT_COLUMNS, as_json=False)
    else:
        print("no attempts yet")


def _print_explanation(explanation: DeliveryExplanation, *, as_json: bool) -> None:
    delivery = explanation.delivery
    if as_json:
        record = {
            "subscription_id": explanation.subscription_id,
            "event_id": explanation.event_id,
            "verdict": explanation.verdict,
            "reasons": list(explanation.reasons),
            "delivery": delivery_row(delivery, with_attempts=True) if delivery else None,
        }
        print_record(record, as_json=True)
        return
    print_record({"event_id": explanation.event_id, "verdict": explanation.verdict}, as_json=False)
    for reason in explanation.reasons:
        print(f"  - {reason}")
    if delivery is not None:
        print()
        _print_delivery(delivery, as_json=False)


# -- the commands ----------------------------------------------------------------------------------------------


async def _list_subscriptions(client: EventBusClient, kind: str | None) -> list[SubscriptionStatus]:
    found: list[SubscriptionStatus] = []
    token = ""
    while True:
        page, token = await client.list_subscriptions(kind=kind, page_token=token)
        found.extend(page)
        if not token:
            return found


async def _shared_action(client: EventBusClient, args: argparse.Namespace, *, endpoint_view: bool) -> bool:
    """The actions endpoints and subscriptions have in common; False when `args.action` is none of them."""
    as_json = wants_json(args.json)

    def show(status: SubscriptionStatus) -> None:
        print_record(subscription_row(status, endpoint_view=endpoint_view), as_json=as_json)

    action = args.action
    if action == "show":
        show(await client.get_subscription(args.id))
    elif action == "rm":
        await client.delete_subscription(args.id)
        print_record({"deleted": args.id}, as_json=as_json)
    elif action == "pause":
        show(await client.pause_subscription(args.id))
    elif action in ("resume", "enable"):
        show(await client.resume_subscription(args.id))
    elif action == "rotate-secret":
        show(await client.rotate_secret(args.id, args.secret))
    elif action == "recover":
        since = parse_since(args.since)
        recovered = await client.recover(args.id, since=since, include_pending=args.include_pending)
        print_record({"subscription_id": args.id, "recovered": recovered}, as_json=as_json)
    elif action == "why":
        event_id, source, id = _event(args.event, args.source, args.ce_id, required=True)
        _print_explanation(await client.explain(args.id, event_id, source=source, id=id), as_json=as_json)
    elif action == "test":
        from eventbus.commands.types_commands import json_argument

        data = json_argument(args.data, "--data") if args.data is not None else None
        delivery = await client.send_test_event(args.id, type=args.type, data=data)
        print_record(delivery_row(delivery), as_json=as_json)
        if not as_json:
            print(f"\nsent now; its attempts: eventbus deliveries show {delivery.delivery_id}", file=sys.stderr)
    else:
        return False
    return True


async def endpoints(args: argparse.Namespace) -> int:
    as_json = wants_json(args.json)
    async with client_of(args) as client:
        if args.action == "add":
            status = await client.create_subscription(
                "webhook", options=_endpoint_options(args, args.url), paused=args.paused, **_settings(args)
            )
            print_record(subscription_row(status, endpoint_view=True), as_json=as_json)
        elif args.action == "update":
            options = _endpoint_options(args, args.url) or None
            status = await client.update_subscription(args.id, options=options, **_settings(args))
            print_record(subscription_row(status, endpoint_view=True), as_json=as_json)
        elif args.action == "list":
            rows = [subscription_row(s, endpoint_view=True) for s in await _list_subscriptions(client, "webhook")]
            print_rows(rows, ENDPOINT_COLUMNS, as_json=as_json)
        else:
            await _shared_action(client, args, endpoint_view=True)
    return 0


async def subscriptions(args: argparse.Namespace) -> int:
    as_json = wants_json(args.json)
    async with client_of(args) as client:
        if args.action == "add":
            status = await client.create_subscription(
                args.kind, options=_kind_options(args), paused=args.paused, **_settings(args)
            )
            print_record(subscription_row(status), as_json=as_json)
        elif args.action == "update":
            status = await client.update_subscription(args.id, options=_kind_options(args), **_settings(args))
            print_record(subscription_row(status), as_json=as_json)
        elif args.action == "list":
            rows = [subscription_row(s) for s in await _list_subscriptions(client, args.kind)]
            print_rows(rows, SUBSCRIPTION_COLUMNS, as_json=as_json)
        else:
            await _shared_action(client, args, endpoint_view=False)
    return 0


async def deliveries(args: argparse.Namespace) -> int:
    as_json = wants_json(args.json)
    async with client_of(args) as client:
        if args.action == "list":
            if args.limit < 1:
                raise UsageError("--limit must be at least 1")
            event_id, source, id = _event(args.event, args.source, args.ce_id, required=False)
            found: list[DeliveryStatus] = []
            token = ""
            while len(found) < args.limit:
                page, token = await client.list_deliveries(
                    subscription_id=args.subscription,
                    state=args.state,
                    page_size=min(args.limit - len(found), 1000),
                    page_token=token,
                    event_id=event_id,
                    source=source,
                    id=id,
                )
                found.extend(page)
                if not token:
                    break
            print_rows([delivery_row(d) for d in found], DELIVERY_COLUMNS, as_json=as_json)
        elif args.action == "show":
            _print_delivery(await client.get_delivery(args.id), as_json=as_json)
        elif args.action == "resend":
            print_record(delivery_row(await client.resend_delivery(args.id)), as_json=as_json)
    return 0


async def replay(args: argparse.Namespace) -> int:
    since = parse_since(args.since)
    async with client_of(args) as client:
        upto = await client.replay(args.to, since=since, patterns=args.pattern or ())
    print_record({"subscription_id": args.to, "upto_seq": upto}, as_json=wants_json(args.json))
    return 0
