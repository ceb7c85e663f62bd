"""Prometheus metrics: the per-server registry and hot-path recorders, and the scrape-time store gauges."""

from __future__ import annotations

from eventbus.metrics.registry import OTHER, LabelCap, Metrics

__all__ = ["OTHER", "LabelCap", "Metrics"]
