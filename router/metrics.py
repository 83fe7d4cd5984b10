"""Prometheus metrics (prometheus_client), named by Prometheus conventions.

One registry per process; ``/metrics`` exposes it. Queue depth is a gauge refreshed by the
stats loop; everything else is counted where it happens.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["METRICS", "Metrics"]

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "switchboard_connections", "Open WebSocket connections.", ["endpoint"], registry=r
        )
        self.frames = Counter(
            "switchboard_frames_total",
            "WebSocket frames by endpoint, direction and type.",
            ["endpoint", "direction", "type"],
            registry=r,
        )
        self.cases_created = Counter(
            "switchboard_cases_created_total",
            "Cases opened, by channel.",
            ["channel"],
            registry=r,
        )
        self.events = Counter(
            "switchboard_events_total", "Ingested events by outcome.", ["action"], registry=r
        )
        self.queue_depth = Gauge(
            "switchboard_queue_depth",
            "Cases waiting, by workspace and queue.",
            ["workspace", "queue"],
            registry=r,
        )
        self.offer_outcomes = Counter(
            "switchboard_offer_outcomes_total",
            "Offers ended, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.offer_decision = Histogram(
            "switchboard_offer_decision_seconds",
            "Time to run one routing transition script that may make offers.",
            buckets=_LATENCY,
            registry=r,
        )
        self.ingest_to_offer = Histogram(
            "switchboard_ingest_to_offer_seconds",
            "From a bridge event's arrival to its offer frame being written to the console.",
            buckets=_LATENCY,
            registry=r,
        )


METRICS = Metrics()
