"""The request corpora of the ingest load processes: uniquely signed Standard Webhooks requests (`ingest`) and
binary-mode CloudEvents (`ingest-ce`), built before the run so that signing costs the load nothing in the window."""

from __future__ import annotations

import time
from typing import Protocol

EVENT_TYPE = "order.paid"  # the Standard Webhooks payload's type (stored as standardwebhooks.order.paid)
TYPE_CE = "bench.order.paid"  # ce-type of the CloudEvents requests
SOURCE_ROOT = "/bench/ingest-ce/"  # ce-source of the CloudEvents requests: this, then the process's prefix


class LateCounter(Protocol):
    signed_late: int


class Corpus:
    """Uniquely signed Standard Webhooks requests: `webhook-id` = prefix + counter, timestamp = signing time."""

    def __init__(self, secret: str, prefix: str, body_bytes: int) -> None:
        from eventbus.signing import sign_v1

        self._sign = sign_v1
        self.secret = secret
        self.prefix = prefix
        self.body_bytes = body_bytes
        self.made = 0
        self._ready: list[tuple[dict[str, str], bytes]] = []
        self._next = 0

    def body(self, number: int) -> bytes:
        """`{"type": "order.paid", "data": {...}}` padded to exactly `body_bytes`."""
        head = (
            f'{{"type":"{EVENT_TYPE}","timestamp":"2026-11-28T12:00:00Z","data":{{"id":"ord_{self.prefix}{number}",'
            f'"amount":1999,"currency":"EUR","customer":"cus_{number % 977}","padding":"'
        )
        tail = '"}}'
        return (head + "x" * max(0, self.body_bytes - len(head) - len(tail)) + tail).encode()

    def make(self) -> tuple[dict[str, str], bytes]:
        number = self.made
        self.made += 1
        msg_id = f"msg_{self.prefix}{number}"
        stamp = int(time.time())
        body = self.body(number)
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": self._sign(self.secret, msg_id, stamp, body),
        }
        return headers, body

    def fill(self, count: int) -> None:
        self._ready = [self.make() for _ in range(count)]

    def take(self, report: LateCounter) -> tuple[dict[str, str], bytes]:
        if self._next < len(self._ready):
            item = self._ready[self._next]
            self._ready[self._next] = ({}, b"")  # release it
            self._next += 1
            return item
        report.signed_late += 1
        return self.make()


class CloudEventsCorpus(Corpus):
    """Binary-mode CloudEvents requests: attributes in `ce-*` headers, the JSON data as the body."""

    def make(self) -> tuple[dict[str, str], bytes]:
        number = self.made
        self.made += 1
        headers = {
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-type": TYPE_CE,
            "ce-source": f"{SOURCE_ROOT}{self.prefix}",
            "ce-id": str(number),
        }
        return headers, self.body(number)
