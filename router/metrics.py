"""Prometheus metrics (prometheus_client), named by Prometheus conventions.

One registry per process; ``/metrics`` exposes it. Queue depth is a gauge refreshed by the
stats loop; everything else is counted where it happens. The counters and histograms touched for
every frame and case are :class:`HotCounter` and :class:`HotHistogram`: plain numbers (a router
is one event-loop thread) that the registry reads when scraped, because prometheus_client's own
take a lock on every increment and walk the buckets in Python — 2 % of a router's CPU under load.
"""

from __future__ import annotations

import asyncio
import gc
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

__all__ = ["METRICS", "HotCounter", "HotHistogram", "Metrics", "watch_gc", "watch_loop"]

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HotCounter:
    """A labelled counter: ``counter.labels("agent", "in", "offer.accept").inc()``."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self._name, self._doc, self._labelnames = name, documentation, list(labelnames)
        self._children: dict[tuple[str, ...], _Count] = {}
        registry.register(self)

    def labels(self, *values: str) -> _Count:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name} takes labels {self._labelnames}, not {values}")
            child = self._children[values] = _Count()
        return child

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self._name, self._doc, labels=self._labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=self._labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family


class HotHistogram:
    """A histogram without labels: ``histogram.observe(seconds)``."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name, self._doc = name, documentation
        self._bounds = sorted(buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one: above every bound
        self._sum = 0.0
        registry.register(self)

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self._name, self._doc)]

    def collect(self) -> Iterator[Metric]:
        buckets, total = [], 0
        for bound, n in zip([*self._bounds, float("inf")], self._counts, strict=True):
            total += n
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        yield HistogramMetricFamily(self._name, self._doc, buckets=buckets, sum_value=self._sum)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "switchboard_connections", "Open WebSocket connections.", ["endpoint"], registry=r
        )
        self.frames = HotCounter(
            "switchboard_frames",
            "WebSocket frames by endpoint, direction and type.",
            ["endpoint", "direction", "type"],
            registry=r,
        )
        self.cases_created = HotCounter(
            "switchboard_cases_created", "Cases opened, by channel.", ["channel"], registry=r
        )
        self.events = HotCounter(
            "switchboard_events", "Ingested events by outcome.", ["action"], registry=r
        )
        self.queue_depth = Gauge(
            "switchboard_queue_depth",
            "Cases waiting, by workspace and queue.",
            ["workspace", "queue"],
            registry=r,
        )
        self.offer_outcomes = HotCounter(
            "switchboard_offer_outcomes", "Offers ended, by outcome.", ["outcome"], registry=r
        )
        self.offer_decision = HotHistogram(
            "switchboard_offer_decision_seconds",
            "Time to run one routing transition script that may make offers.",
            buckets=_LATENCY,
            registry=r,
        )
        self.loop_lag = HotHistogram(
            "switchboard_event_loop_lag_seconds",
            "How late the event loop woke for a timer (set every 50 ms): the longest any frame "
            "waited behind other work then. Routing latency cannot be below it.",
            buckets=_LATENCY,
            registry=r,
        )
        self.gc_pause = HotHistogram(
            "switchboard_gc_pause_seconds",
            "Python's cyclic garbage collections, each a pause of the whole node.",
            buckets=_LATENCY,
            registry=r,
        )
        self.ingest_to_offer = HotHistogram(
            "switchboard_ingest_to_offer_seconds",
            "From a bridge event's frame, decoded, to its offer frame handed to the agent's "
            "console (or published to the node holding it); bridge events only.",
            buckets=_LATENCY,
            registry=r,
        )


METRICS = Metrics()


LAG_PERIOD_S = 0.05


async def watch_loop() -> None:
    """Observe the event loop's lag (``loop_lag``) until cancelled: a sleep of 50 ms that
    takes longer was held up by work that ran meanwhile."""
    loop = asyncio.get_running_loop()
    while True:
        began = loop.time()
        await asyncio.sleep(LAG_PERIOD_S)
        METRICS.loop_lag.observe(max(0.0, loop.time() - began - LAG_PERIOD_S))


def _gc_timed(phase: str, info: dict[str, int]) -> None:
    global _gc_began
    if phase == "start":
        _gc_began = time.perf_counter()
    elif _gc_began is not None:
        METRICS.gc_pause.observe(time.perf_counter() - _gc_began)
        _gc_began = None


_gc_began: float | None = None


def watch_gc() -> None:
    """Observe every cyclic collection's pause (``gc_pause``), from now on; once per process."""
    if _gc_timed not in gc.callbacks:
        gc.callbacks.append(_gc_timed)
