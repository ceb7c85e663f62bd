"""Helpers of the `/metrics` tests: scrape a running server and read samples the Prometheus parser found."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from eventbus.http.metrics import METRICS_STATE
from eventbus.runtime import EventBusServer


class Scrape:
    """One `/metrics` answer, parsed by prometheus_client's text parser (which refuses malformed output)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [sample for family in self.families.values() for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels` (0 when none matches)."""
        return sum(
            s.value for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}


async def get_metrics(server: EventBusServer, *, key: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of `GET /metrics`; the store gauges are read afresh (no cache) for tests."""
    assert server.addresses is not None and server.http_app is not None
    server.http_app[METRICS_STATE].ttl = 0.0
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{server.addresses.http}/metrics", headers=headers) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def scrape(server: EventBusServer, *, key: str | None = None) -> Scrape:
    status, content_type, body = await get_metrics(server, key=key)
    assert status == 200, body
    assert content_type.startswith("text/plain; version="), content_type  # prometheus_client says which
    return Scrape(body)
