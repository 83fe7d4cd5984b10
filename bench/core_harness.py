"""The core bench's harness: a :class:`~router.switch.Switch` driven in-process, with counters.

:class:`Bench` holds the Switch on a :class:`~router.store.Store`, the simulated agents of
:mod:`bench.workload` and the producers; :class:`Tally` accounts for every offer expected and
seen, and its latency; :func:`setup` applies the workspace and primes its pools, :func:`run_phase`
runs producers for a warm-up and a counted window and returns rates and CPU per case, and
``_drain``/``_left_waiting`` end a run and check that nothing was left behind. What is measured
and reported is :mod:`bench.core`'s (``python -m bench core``); :mod:`bench.cost` reuses this
harness under callgrind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.bare_os import busy_seconds, percentile
from bench.bare_redis import redis_cpu_seconds
from bench.workload import WORKSPACE_ID, Agents, EventStream
from router import keys
from router.errors import SwitchboardError
from router.store import Store
from router.switch import Switch

__all__ = ["DRAIN_S", "WARMUP_S", "Bench", "Tally", "run_phase", "setup"]

log = logging.getLogger("bench.core")  # the harness logs as part of the core bench

WARMUP_S = 2.0
DRAIN_S = 20.0


class Tally:
    """What the bench knows about each case: offers expected and seen, and offer latency.

    Fed synchronously by :meth:`ingest` (around each ``Switch.ingest`` call) and by the agents'
    ``notify`` (:meth:`offer`). A case is expected to be offered once per ingest that created or
    reopened it. An offer counts as made *at ingest* when it reaches ``notify`` while the ingest
    that opened its case is still running, else *by pull* (a completing agent took the waiting
    case). Latency is timed for created cases only (a reopened case's frame still names the
    event that created it): ingest call start → its offer, for ingests started after
    :attr:`window`.
    """

    def __init__(self) -> None:
        self.started: dict[str, float] = {}  # event id -> ingest start, until its offer
        self.in_ingest: set[str] = set()  # event ids being ingested
        self.in_ingest_cases: Counter[str] = Counter()  # known cases re-contacted right now
        self.threads: dict[tuple[str, str], str] = {}  # (channel, thread) -> case
        self.expected: Counter[str] = Counter()
        self.offered: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.window = float("inf")
        self.offers = self.at_ingest = self.by_pull = self.reopened = 0

    def offer(self, frame: Mapping[str, Any]) -> None:
        now = time.perf_counter()
        case = frame["case"]
        self.offers += 1
        self.offered[case["id"]] += 1
        if case.get("reopened"):
            self.reopened += 1
            self._count_where(self.in_ingest_cases[case["id"]] > 0)
            return
        ref = case["attributes"].get("ref")
        started = self.started.pop(ref, None)
        if started is None:
            return
        self._count_where(ref in self.in_ingest)
        if started >= self.window:
            self.latencies.append(now - started)

    def _count_where(self, at_ingest: bool) -> None:
        if at_ingest:
            self.at_ingest += 1
        else:
            self.by_pull += 1

    async def ingest(self, switch: Switch, event: dict[str, Any]) -> None:
        eid, thread = event["id"], (event["channel"], event.get("thread", ""))
        known = self.threads.get(thread, "")
        self.started[eid] = time.perf_counter()
        self.in_ingest.add(eid)
        self.in_ingest_cases[known] += 1
        try:
            res = await switch.ingest(WORKSPACE_ID, event)
        except SwitchboardError as exc:
            self.errors[exc.code] += 1
            self.started.pop(eid, None)
            return
        finally:
            self.in_ingest.discard(eid)
            self.in_ingest_cases[known] -= 1
        self.actions[res.action] += 1
        self.threads[thread] = res.case
        if res.action in ("created", "reopened"):
            self.expected[res.case] += 1
        if res.action != "created":
            self.started.pop(eid, None)

    @property
    def ingested(self) -> int:
        return sum(self.actions.values())

    def missing(self) -> int:
        """Offers expected and not (yet) seen."""
        return sum(max(0, n - self.offered[c]) for c, n in self.expected.items())

    def duplicates(self) -> int:
        """Offers seen beyond those expected."""
        return sum(max(0, n - self.expected[c]) for c, n in self.offered.items())


@dataclass(frozen=True, slots=True)
class _Snapshot:
    t: float
    cpu: float
    redis_cpu: float
    busy: float  # the whole machine's busy CPU seconds, ours included
    evalsha: tuple[int, int]  # Redis's count of EVALSHA calls and µs spent in them
    ingested: int
    offers: int
    completed: int
    calls: int
    batches: int


class Bench:
    """The Switch, its simulated agents and the producers, with counters to read."""

    def __init__(self, store: Store, agent_ids: list[str]) -> None:
        self.store = store
        self.tally = Tally()
        self.agents = Agents(agent_ids, self.tally.offer)
        self.switch = Switch(store, notify=self.agents.notify)
        self.stream = EventStream(run="b")
        self.phase = "setup"
        self.producing = False

    async def snapshot(self) -> _Snapshot:
        redis_cpu = await redis_cpu_seconds(self.store.redis)
        stats = (await self.store.redis.info("commandstats")).get("cmdstat_evalsha", {})
        return _Snapshot(
            time.perf_counter(), time.process_time(), redis_cpu, busy_seconds(),
            (int(stats.get("calls", 0)), int(stats.get("usec", 0))), self.tally.ingested,
            self.tally.offers, self.agents.completed, self.store.calls, self.store.batches,
        )  # fmt: skip

    async def closed_loop(self) -> None:
        """One producer at saturation: the next event as soon as the last is acknowledged."""
        while self.producing:
            await self.tally.ingest(self.switch, next(self.stream))

    async def open_loop(self, interval: float, offset: float) -> None:
        """One producer on a fixed schedule; behind schedule, it catches up without pausing."""
        loop = asyncio.get_running_loop()
        due = loop.time() + offset
        while self.producing:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.tally.ingest(self.switch, next(self.stream))
            due += interval

    async def progress(self) -> None:
        """Log rates over the last second, once a second, to stderr."""
        last = await self.snapshot()
        while True:
            await asyncio.sleep(1.0)
            now = await self.snapshot()
            dt = now.t - last.t
            log.info(
                "%-9s %6.0f ingests/s %6.0f offers/s %6.0f completed/s | cpu %3.0f%% redis "
                "%3.0f%% | batch %4.1f | %d not offered yet",
                self.phase, (now.ingested - last.ingested) / dt, (now.offers - last.offers) / dt,
                (now.completed - last.completed) / dt, 100 * (now.cpu - last.cpu) / dt,
                100 * (now.redis_cpu - last.redis_cpu) / dt,
                (now.calls - last.calls) / max(1, now.batches - last.batches),
                len(self.tally.started),
            )  # fmt: skip
            last = now


def latency_ms(latencies: list[float]) -> dict[str, float | None]:
    xs = sorted(latencies)

    def ms(q: float) -> float | None:
        v = percentile(xs, q)
        return None if v is None else round(v * 1000, 3)

    return {"p50_ms": ms(50), "p99_ms": ms(99), "p999_ms": ms(99.9), "max_ms": ms(100)}


async def run_phase(
    bench: Bench,
    name: str,
    producers: Sequence[Callable[[], Coroutine[Any, Any, None]]],
    seconds: float,
) -> dict[str, Any]:
    """Run ``producers`` for a warm-up then ``seconds``; return rates over the counted window.

    Rates are per second of wall time; ``client_cpu``/``redis_cpu``/``other_cpu`` are cores'
    worth used by this process, by Redis and by anything else on the machine (a shared machine's
    other tenants); ``calls_per_case`` is store calls (EVALSHA) per offer made, ``batch`` the
    mean number of calls per pipeline the Store sent, ``redis_us_per_call`` Redis's own time per
    EVALSHA (``INFO commandstats``, wall time) and ``client_us_per_case``/``redis_us_per_case``
    the CPU this process / Redis used per offer made.
    """
    bench.phase, bench.producing = name, True
    tasks = [asyncio.create_task(p()) for p in producers]
    try:
        await asyncio.sleep(WARMUP_S)
        s0 = await bench.snapshot()
        bench.tally.window, bench.tally.latencies = s0.t, []
        await asyncio.sleep(seconds)
        s1 = await bench.snapshot()
        bench.tally.window = float("inf")
        bench.producing = False
        async with asyncio.timeout(30):
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    dt, offers = s1.t - s0.t, s1.offers - s0.offers
    client, redis = s1.cpu - s0.cpu, s1.redis_cpu - s0.redis_cpu
    calls, usec = s1.evalsha[0] - s0.evalsha[0], s1.evalsha[1] - s0.evalsha[1]
    return {
        "ingested_per_s": round((s1.ingested - s0.ingested) / dt, 1),
        "routed_per_s": round(offers / dt, 1),
        "lifecycle_per_s": round((s1.completed - s0.completed) / dt, 1),
        **latency_ms(bench.tally.latencies),
        "client_cpu": round(client / dt, 3),
        "redis_cpu": round(redis / dt, 3),
        "other_cpu": round(max(0.0, s1.busy - s0.busy - client - redis) / dt, 3),
        "client_us_per_case": round(1e6 * client / max(1, offers), 1),
        "redis_us_per_case": round(1e6 * redis / max(1, offers), 1),
        "redis_us_per_call": round(usec / max(1, calls), 1),
        "calls_per_case": round((s1.calls - s0.calls) / max(1, offers), 2),
        "batch": round((s1.calls - s0.calls) / max(1, s1.batches - s0.batches), 1),
    }


async def _drain(bench: Bench) -> None:
    """Wait (bounded) until every expected offer arrived and every accepted case completed."""
    deadline = time.perf_counter() + DRAIN_S
    bench.phase = "drain"
    while time.perf_counter() < deadline:
        busy = bench.agents.accepted - bench.agents.completed
        if busy == 0 and bench.agents.accepted == bench.tally.offers and not bench.tally.missing():
            return
        await asyncio.sleep(0.1)
    log.warning("drain: still busy after %.0f s", DRAIN_S)


async def _left_waiting(bench: Bench) -> int:
    """Cases still in a queue's waiting set in Redis."""
    cfg = await bench.switch.config(WORKSPACE_ID)
    sizes = [
        await bench.store.redis.zcard(keys.queue_waiting(WORKSPACE_ID, q.id)) for q in cfg.queues
    ]
    return int(sum(sizes))


async def setup(bench: Bench, decl: Mapping[str, Any]) -> None:
    """Apply the workspace, make every agent available, then define every pool by sending the
    priming events one at a time (concurrent first ingests would each define them again)."""
    started = time.perf_counter()
    await bench.switch.apply_workspace(decl)
    await asyncio.gather(
        *(bench.switch.set_status(WORKSPACE_ID, a["id"], "available") for a in decl["agents"])
    )
    bench.agents.start(bench.switch)
    applied = time.perf_counter()
    for event in bench.stream.priming():
        await bench.tally.ingest(bench.switch, event)
    log.info("workspace: %d agents, %d queues, applied in %.1f s, pools primed in %.1f s",
             len(decl["agents"]), len(decl["queues"]), applied - started,
             time.perf_counter() - applied)  # fmt: skip
