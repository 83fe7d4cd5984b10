"""Load generators for the WebSocket part of the bare-limits bench.

All run in this process on the hand-framed client (:mod:`bench.bare_wsclient`) against a
server from :mod:`bench.bare_server`. Frames are msgpack maps carrying ``ts``, the sender's
``time.perf_counter_ns()``; latency is "receive time - ts" in this same process, so no clock
sync is involved. Counting starts after a warm-up and stops after ``seconds``; CPU time of the
server process and of this process is sampled at both ends of that window.

* :func:`measure_relay` — closed loop: ``window`` frames circulate over ``pairs``
  producer → consumer pairs; each frame received is replaced by a new one. Throughput is the
  relay's ceiling; latency is at saturation, so it is mostly queueing (≈ window / rate).
* :func:`measure_pipeline_saturated` — closed loop of ``window`` cases in flight, a case
  leaving the window when its offer arrives (the accept is sent at that moment). The rate is
  of *completed* cases: the accept script's ``done`` counter in Redis, read at both ends.
* :func:`measure_pipeline_open` — cases sent on a fixed schedule (open loop: sending never
  waits for the server, so a stalled server cannot hide its queueing delay); latency runs
  from a case's send to its offer's arrival (time to offer).
* :func:`measure_idle_rss` — server RSS growth per idle connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgpack
import redis.asyncio as aioredis

from bench.bare_os import busy_seconds, cpu_seconds, percentile, rss_kib
from bench.bare_redis import redis_cpu_seconds
from bench.bare_server import ServerHandle
from bench.bare_wsclient import WsClient, connect

_FILLER = b"x" * 64  # a routing frame is ~100 bytes; keep relay frames that size


def _pack(frame: dict[str, object]) -> bytes:
    packed: bytes = msgpack.packb(frame)
    return packed


@dataclass(frozen=True)
class _Sample:
    """Wall time and busy CPU seconds of this process, the server, the whole machine, and the
    server's and this process's cores (when each is pinned to one), at one instant."""

    wall: float
    client_cpu: float
    server_cpu: float
    machine_busy: float
    server_core_busy: float | None
    client_core_busy: float | None

    @classmethod
    def take(cls, server: ServerHandle) -> _Sample:
        client_core = _pinned_core()
        return cls(
            wall=time.perf_counter(),
            client_cpu=time.process_time(),
            server_cpu=cpu_seconds(server.pid),
            machine_busy=busy_seconds(),
            server_core_busy=None if server.cpu is None else busy_seconds(server.cpu),
            client_core_busy=None if client_core is None else busy_seconds(client_core),
        )


def _pinned_core() -> int | None:
    cpus = os.sched_getaffinity(0)
    return next(iter(cpus)) if len(cpus) == 1 else None


@dataclass
class _Latencies:
    """Latencies of messages received while ``counting`` and sent at or after ``since_ns``."""

    counting: bool = False
    since_ns: int = 0
    count: int = 0
    samples_ns: list[int] = field(default_factory=list)

    def add(self, sent_ns: int, now_ns: int) -> None:
        if self.counting and sent_ns >= self.since_ns:
            self.count += 1
            self.samples_ns.append(now_ns - sent_ns)

    def summary_ms(self) -> dict[str, float | None]:
        ordered = sorted(s / 1e6 for s in self.samples_ns)
        return {"p50_ms": percentile(ordered, 50), "p99_ms": percentile(ordered, 99)}


def _close_all(clients: list[WsClient]) -> None:
    for client in clients:
        client.close()


def _cpu_shares(a: _Sample, b: _Sample, redis_cpu: float = 0.0) -> dict[str, float | None]:
    """CPU used per second of wall time (1.0 = one core) by each party and by the rest.

    ``other_cpu`` is what the rest of the machine used (``redis_cpu``, the CPU seconds Redis
    used between the samples, excluded). ``server_core_other_cpu`` and
    ``client_core_other_cpu`` are the shares of the server's and the load generator's own
    cores that something else took (Redis too, if it shares the core) — on a shared machine,
    the first thing to check.
    """
    elapsed = b.wall - a.wall
    server, client = b.server_cpu - a.server_cpu, b.client_cpu - a.client_cpu
    other = b.machine_busy - a.machine_busy - server - client - redis_cpu
    return {
        "server_cpu": server / elapsed,
        "client_cpu": client / elapsed,
        "other_cpu": max(other, 0.0) / elapsed,
        "server_core_other_cpu": _core_other(
            a.server_core_busy, b.server_core_busy, server, elapsed
        ),
        "client_core_other_cpu": _core_other(
            a.client_core_busy, b.client_core_busy, client, elapsed
        ),
    }


def _core_other(
    busy0: float | None, busy1: float | None, own: float, elapsed: float
) -> float | None:
    if busy0 is None or busy1 is None:
        return None
    return max(busy1 - busy0 - own, 0.0) / elapsed


async def measure_relay(
    server: ServerHandle, seconds: float, *, pairs: int = 4, window: int = 64, warmup: float = 0.5
) -> dict[str, float | None]:
    """Saturated relay throughput, server CPU µs per relayed frame, and latency at saturation.

    ``us_per_frame`` is server CPU time / frames relayed (one frame in + one out), which stays
    meaningful even if the load generator, not the server, turns out to be the limit.
    """
    lat = _Latencies()
    running = True
    producers: list[WsClient] = []
    clients: list[WsClient] = []

    def frame() -> bytes:
        return _pack({"type": "relay", "ts": time.perf_counter_ns(), "body": _FILLER})

    def on_message_for(pair: int) -> Callable[[bytes], None]:
        def on_message(payload: bytes) -> None:
            lat.add(msgpack.unpackb(payload)["ts"], time.perf_counter_ns())
            if running:
                producers[pair].send(frame())

        return on_message

    host, port = server.host, server.port
    try:
        for i in range(pairs):
            clients.append(await connect(host, port, f"/consumer/{i}", on_message_for(i)))
        for i in range(pairs):
            producers.append(await connect(host, port, f"/producer/{i}"))
        clients += producers
        for i in range(window):
            producers[i % pairs].send(frame())
        await asyncio.sleep(warmup)
        start, lat.counting = _Sample.take(server), True
        await asyncio.sleep(seconds)
        lat.counting, end = False, _Sample.take(server)
        running = False
    finally:
        _close_all(clients)
    elapsed = end.wall - start.wall
    return {
        "frames_per_s": lat.count / elapsed,
        "us_per_frame": (end.server_cpu - start.server_cpu) / max(lat.count, 1) * 1e6,
        **_cpu_shares(start, end),
        **lat.summary_ms(),
        "window": window,
    }


class _PipelineLoad:
    """Ingest and agent connections of the bare pipeline; agents accept every offer at once.

    Agent ids are unique per load, so a previous load's agents, whose disconnects the server
    may still be processing, cannot remove this load's agents from the Redis zset.
    """

    _loads = itertools.count()

    def __init__(self, lat: _Latencies) -> None:
        self._tag = f"l{next(self._loads)}"
        self.lat = lat
        self.after_offer: Callable[[], None] | None = None
        self.sent = 0
        self.offers = 0
        self.all_offered = asyncio.Event()  # set whenever every case sent has had its offer
        self._ingests: list[WsClient] = []
        self._clients: list[WsClient] = []

    async def open(self, server: ServerHandle, ingests: int, agents: int) -> None:
        for i in range(agents):
            agent = await connect(server.host, server.port, f"/agent/{self._tag}a{i}")
            agent.on_message = self._on_offer_for(agent)
            self._clients.append(agent)
        for i in range(ingests):
            self._ingests.append(await connect(server.host, server.port, f"/ingest/{i}"))
        self._clients += self._ingests

    def send_case(self, ts_ns: int) -> None:
        self.sent += 1
        self.all_offered.clear()
        case = {"type": "case", "id": self.sent, "ts": ts_ns}
        self._ingests[self.sent % len(self._ingests)].send(_pack(case))

    def close(self) -> None:
        _close_all(self._clients)

    def _on_offer_for(self, agent: WsClient) -> Callable[[bytes], None]:
        def on_offer(payload: bytes) -> None:
            offer = msgpack.unpackb(payload)
            self.lat.add(offer["ts"], time.perf_counter_ns())
            agent.send(_pack({"type": "offer.accept", "case": offer["case"]}))
            self.offers += 1
            if self.offers >= self.sent:
                self.all_offered.set()
            if self.after_offer is not None:
                self.after_offer()

        return on_offer


async def _drain(load: _PipelineLoad, seconds: float) -> None:
    """Wait (at most ``seconds``) until every case sent has had its offer.

    So no case of this load is still in the server when the next load starts (its offer
    would go to the next load's agents).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await load.all_offered.wait()


async def _done(redis: aioredis.Redis, key: str) -> int:
    return int(await redis.get(key) or 0)


async def _per_second(count: Callable[[], Awaitable[int]], seconds: float) -> list[float]:
    """Sleep ``seconds``, reading ``count`` every second: the rate in each whole second (the
    e2e bench shows their median next to its own, for the seconds no AOF rewrite or other
    tenant took a share of a core)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    rates: list[float] = []
    t0, n0 = loop.time(), await count()
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(1.0, left))
        t1, n1 = loop.time(), await count()
        if t1 - t0 >= 0.9:
            rates.append((n1 - n0) / (t1 - t0))
        t0, n0 = t1, n1
    return rates


async def measure_pipeline_saturated(
    server: ServerHandle,
    redis: aioredis.Redis,
    done_key: str,
    seconds: float,
    *,
    ingests: int = 4,
    agents: int = 16,
    window: int = 64,
    warmup: float = 0.5,
    drain: float = 2.0,
) -> dict[str, float | None]:
    """Completed cases per second with ``window`` cases in flight, plus CPU shares (with Redis)."""
    load = _PipelineLoad(_Latencies())
    running = True

    def refill() -> None:
        if running:
            load.send_case(time.perf_counter_ns())

    load.after_offer = refill
    try:
        await load.open(server, ingests, agents)
        for _ in range(window):
            load.send_case(time.perf_counter_ns())
        await asyncio.sleep(warmup)
        done0, redis0 = await _done(redis, done_key), await redis_cpu_seconds(redis)
        start, load.lat.counting = _Sample.take(server), True
        per_second = await _per_second(lambda: _done(redis, done_key), seconds)
        load.lat.counting, end = False, _Sample.take(server)
        done1, redis1 = await _done(redis, done_key), await redis_cpu_seconds(redis)
        running = False
        await _drain(load, drain)
    finally:
        load.close()
    elapsed = end.wall - start.wall
    return {
        "rate": (done1 - done0) / elapsed,
        "rate_median_s": statistics.median(per_second) if per_second else None,
        "rates_per_s": per_second,
        "us_per_case": (end.server_cpu - start.server_cpu) / max(done1 - done0, 1) * 1e6,
        "offers_per_s": load.lat.count / elapsed,
        **_cpu_shares(start, end, redis1 - redis0),
        "redis_cpu": (redis1 - redis0) / elapsed,
        "window": window,
    }


async def measure_pipeline_open(
    server: ServerHandle,
    redis: aioredis.Redis,
    done_key: str,
    seconds: float,
    *,
    rate: float = 1000.0,
    ingests: int = 4,
    agents: int = 16,
    warmup: float = 0.5,
    drain: float = 2.0,
) -> dict[str, float | None]:
    """Time-to-offer p50/p99 at a fixed arrival ``rate``; also how many cases went missing.

    Cases are due every ``1 / rate`` s and sent when due, however the server is doing; the
    sender wakes every 1 ms (uvloop's timer resolution: shorter sleeps busy-spin), so cases
    leave in bursts of about ``rate / 1000``. Each is stamped when handed to the socket; how late
    sends were against their schedule is reported as ``send_lag_p99_ms``.
    """
    load = _PipelineLoad(_Latencies(counting=True))
    lags_ms: list[float] = []
    try:
        await load.open(server, ingests, agents)
        done0 = await _done(redis, done_key)
        t0 = time.perf_counter_ns()
        load.lat.since_ns, end = t0 + int(warmup * 1e9), t0 + int((warmup + seconds) * 1e9)
        period_ns = 1e9 / rate
        start = _Sample.take(server)
        while (now := time.perf_counter_ns()) < end:
            while (due := t0 + int(load.sent * period_ns)) <= now:
                lags_ms.append((now - due) / 1e6)
                load.send_case(time.perf_counter_ns())
            await asyncio.sleep(0.001)
        finish = _Sample.take(server)
        await _drain(load, drain)
        load.lat.counting = False
        completed = await _done(redis, done_key) - done0
    finally:
        load.close()
    return {
        "rate": rate,
        "sent": load.sent,
        "completed": completed,
        "missing_offers": load.sent - load.offers,
        **load.lat.summary_ms(),
        "send_lag_p99_ms": percentile(sorted(lags_ms), 99),
        **_cpu_shares(start, finish),
    }


async def measure_idle_rss(
    server: ServerHandle, conns: int, *, concurrency: int = 256, settle: float = 1.0
) -> dict[str, float | int]:
    """Server RSS growth per idle WebSocket connection, from VmRSS before and after.

    A few connections are opened and closed first, so one-off costs of the first connection
    (lazy imports, buffers) are not charged to the idle ones. Bounded: gives up after
    ``max(30, conns / 200)`` seconds and divides by the connections actually opened.
    """
    warm = [await connect(server.host, server.port, "/idle") for _ in range(32)]
    _close_all(warm)
    await asyncio.sleep(settle)
    rss0, fds0 = rss_kib(server.pid), len(os.listdir(f"/proc/{server.pid}/fd"))
    clients: list[WsClient] = []
    gate = asyncio.Semaphore(concurrency)

    async def open_one() -> None:
        async with gate:
            clients.append(await connect(server.host, server.port, "/idle"))

    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(30.0, conns / 200)):
                await asyncio.gather(*(open_one() for _ in range(conns)), return_exceptions=True)
        await asyncio.sleep(settle)
        rss1, fds1 = rss_kib(server.pid), len(os.listdir(f"/proc/{server.pid}/fd"))
    finally:
        _close_all(clients)
    return {
        "conns": len(clients),
        "failed": conns - len(clients),
        "server_fds_added": fds1 - fds0,
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "kib_per_connection": (rss1 - rss0) / max(len(clients), 1),
    }
