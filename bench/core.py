"""``python -m bench core``: the routing core's throughput and offer latency, next to raw Redis.

Like a database benchmark, one run starts everything it measures and compares against the
bare limit of the same Redis, measured in the same run with the same client library:

1. A private ``redis-server`` (:class:`~router.embedded.EmbeddedRedis`: unix socket, AOF on
   with ``appendfsync everysec`` as in production, or off with ``--no-aof``). With 2+ CPUs
   Redis is pinned to the second one and this process to the first.
2. ``raw_evalsha_per_s``: 64 asyncio callers each awaiting one ``EVALSHA`` of ``return 1``
   in a loop, redis-py asyncio with hiredis over a ``BlockingConnectionPool`` — one call per
   case, no batching (:func:`bench.bare_redis.measure_evalsha`, which also reports pipelines
   of 64 on one connection as ``pipelined_evalsha_per_s``).
3. A :class:`~router.switch.Switch` on a :class:`~router.store.Store`, both with their
   defaults, gets the workspace of :mod:`bench.workload` (400 agents, 4 queues, 3 channels)
   with every agent available. One coroutine per agent reacts to the frames the Switch hands
   its ``notify`` callback: it accepts each offer after a think time, then completes the case
   after a handle time, which frees capacity so completions pull waiting cases.
4. **Routed phase** (saturated, closed loop): 64 producer coroutines each call
   ``switch.ingest`` with the next event as soon as the previous one is acknowledged; agents
   accept at once. ``routed_per_s`` counts offers made (an offer counts when ``notify``
   receives it), ``lifecycle_per_s`` cases completed (ingest → offer → accept → complete),
   both over the same window after a warm-up. ``ratio_to_raw`` = routed / raw.
5. **Latency phase** (open loop): the same producers on a fixed schedule at half the routed
   rate, agents with think and handle times. ``p50_ms``/``p99_ms`` are its offer-decision
   latencies: from the start of the ``ingest`` call to ``notify`` receiving the offer for the
   case that event created, in this process (cases that had to wait for a free agent
   included). The routed phase's figures are ``saturated_p50_ms``/``saturated_p99_ms``.
6. **Unbatched phase**: the routed phase again (half as long) with the Store sending every
   transition as its own ``EVALSHA`` and round trip, as a lone caller would
   (``Store.batching = False``): ``unbatched_routed_per_s``, and ``ratio_to_unbatched`` = routed
   / unbatched, what batching across concurrent cases buys for the same work;
   ``ratio_to_unbatched_per_core`` compares them per core-second of the busier party (the
   unbatched loop, with a connection per caller, saturates both sides; the batched one does
   not, so its wall-clock rate is a floor).
7. Drain and check: every case an ingest created or reopened must be offered exactly once
   (no rejects and no timers run here, so any other count is a bug): ``lost_offers`` and
   ``duplicate_offers`` must be 0, and nothing may be left waiting in Redis. Exit status 1
   otherwise.

The floor this bench guards: ``routed_per_s >= 1.5 * raw_evalsha_per_s`` (``floor_met``),
reachable only by batching or pipelining calls across concurrent cases. Each phase also reports
CPU per case for this process and for Redis, and ``ratio_per_core`` compares both rates per
core-second of the busier party, which a shared machine's other tenants move far less than
they move the wall-clock ratio (``warnings`` says when they took CPU during the run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import uvloop
from redis.asyncio import Redis
from redis.utils import HIREDIS_AVAILABLE

from bench.bare_os import pin, set_affinity
from bench.bare_redis import measure_evalsha
from bench.core_harness import WARMUP_S, Bench, _drain, _left_waiting, run_phase, setup
from bench.workload import PACED, SATURATED, workspace
from router.embedded import EmbeddedRedis
from router.store import Store, connect

__all__ = ["FLOOR", "main", "measure_core", "warnings"]

log = logging.getLogger("bench.core")

FLOOR = 1.5  # routed_per_s must reach this multiple of raw_evalsha_per_s
LATENCY_LOAD = 0.5  # the latency phase runs at this share of the routed phase's rate


async def _measure_switch(url: str, seconds: float, agents: int, producers: int) -> dict[str, Any]:
    # the unbatched phase: a connection for every producer and agent, as lone callers have
    store = Store(connect(url, max_connections=producers + agents))
    await store.load()
    decl = workspace(agents)
    bench = Bench(store, [a["id"] for a in decl["agents"]])
    reporter = asyncio.create_task(bench.progress())
    try:
        await setup(bench, decl)
        out = await _phases(bench, seconds, producers)
        await _drain(bench)
        out |= await _checks(bench)
    finally:
        reporter.cancel()
        await bench.agents.stop()
        await store.close()
    return out


async def _phases(bench: Bench, seconds: float, producers: int) -> dict[str, Any]:
    bench.agents.timings = SATURATED
    log.info("routed phase: %d producers at saturation, %.0f s (+%.0f s warm-up)",
             producers, seconds, WARMUP_S)  # fmt: skip
    sat = await run_phase(bench, "routed", [bench.closed_loop] * producers, seconds)
    rate = LATENCY_LOAD * sat["routed_per_s"]
    log.info("latency phase: %.0f cases/s (%.0f %% of routed), %.0f s", rate,
             100 * LATENCY_LOAD, seconds)  # fmt: skip
    bench.agents.timings = PACED
    interval = producers / max(rate, 1.0)
    paced = [partial(bench.open_loop, interval, i * interval / producers) for i in range(producers)]
    lat = await run_phase(bench, "latency", paced, seconds)
    log.info("unbatched phase: the routed phase with every transition its own EVALSHA, %.0f s",
             seconds / 2)  # fmt: skip
    bench.agents.timings = SATURATED
    bench.store.batching = False
    try:
        alone = await run_phase(bench, "unbatched", [bench.closed_loop] * producers, seconds / 2)
    finally:
        bench.store.batching = True
    return {
        "unbatched_routed_per_s": alone["routed_per_s"],
        "ratio_to_unbatched": round(sat["routed_per_s"] / max(alone["routed_per_s"], 1e-9), 3),
        "unbatched_client_us_per_case": alone["client_us_per_case"],
        "unbatched_redis_us_per_case": alone["redis_us_per_case"],
        # per core-second of the busier party, as ratio_per_core: the batched closed loop does
        # not saturate either side, so the wall-clock ratio understates what batching saves
        "ratio_to_unbatched_per_core": round(
            max(alone["client_us_per_case"], alone["redis_us_per_case"])
            / max(sat["client_us_per_case"], sat["redis_us_per_case"], 1e-9),
            3,
        ),
        "routed_per_s": sat["routed_per_s"],
        "lifecycle_per_s": sat["lifecycle_per_s"],
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        **{
            f"saturated_{k}": v
            for k, v in sat.items()
            if k not in ("routed_per_s", "lifecycle_per_s")
        },
        "latency_target_per_s": round(rate, 1),
        **{f"latency_{k}": v for k, v in lat.items() if k not in ("p50_ms", "p99_ms")},
    }


async def _checks(bench: Bench) -> dict[str, Any]:
    t = bench.tally
    return {
        "cases": t.actions["created"],
        "reopened": t.actions["reopened"],
        "follow_ups": t.actions["appended"],
        "offers": t.offers,
        "offered_at_ingest": t.at_ingest,
        "offered_by_pull": t.by_pull,
        "lost_offers": t.missing(),
        "duplicate_offers": t.duplicates(),
        "left_waiting": await _left_waiting(bench),
        "completed": bench.agents.completed,
        "errors": dict(t.errors + bench.agents.errors),
    }


@contextlib.asynccontextmanager
async def _private_redis(aof: bool) -> AsyncIterator[EmbeddedRedis]:
    """EmbeddedRedis in a temp dir (unix socket; AOF per ``aof``), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-core-") as tmp:
        server = EmbeddedRedis(Path(tmp), appendonly=aof, restart=False)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


def _cores() -> tuple[int | None, int | None]:
    """(CPU for this process, CPU for Redis): the first two we may run on, or None, None."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


async def measure_core(
    seconds: float = 8.0, *, aof: bool = True, agents: int = 400, producers: int = 64
) -> dict[str, Any]:
    """Run the whole measurement (see the module docstring); return one flat dict.

    Starts and stops its own Redis, also on error. Pins this process for the duration (its
    affinity is restored on return). Raises ``EmbeddedRedisError`` if Redis cannot start and
    ``TimeoutError`` if producers do not stop within 30 s of a phase's end.
    """
    started = time.perf_counter()
    affinity = os.sched_getaffinity(0)
    own_cpu, redis_cpu = _cores()
    try:
        pin(0, own_cpu)
        async with _private_redis(aof) as server:
            if server.pid is not None:
                pin(server.pid, redis_cpu)
            info = await _redis_info(server.url)
            raw_s = max(1.0, 0.4 * seconds)
            log.info("raw EVALSHA: 64 callers, then pipelines of 64, %.0f s each", raw_s)
            raw = await measure_evalsha(server.url, raw_s)
            log.info("raw EVALSHA: %.0f/s (64 callers), %.0f/s pipelined",
                     raw["raw_evalsha_per_s"], raw["pipelined_evalsha_per_s"])  # fmt: skip
            core = await _measure_switch(server.url, seconds, agents, producers)
    finally:
        set_affinity(0, affinity)
    out = _result(core, raw, info, seconds, aof, agents, producers, started)
    return out | {
        "pinned": own_cpu is not None,
        "python_cpu_id": own_cpu,
        "redis_cpu_id": redis_cpu,
    }


async def _redis_info(url: str) -> dict[str, Any]:
    client = Redis.from_url(url)
    try:
        return dict(await client.info("server"))
    finally:
        await client.aclose()


def _result(
    core: dict[str, Any], raw: dict[str, Any], info: Mapping[str, Any], seconds: float,
    aof: bool, agents: int, producers: int, started: float,
) -> dict[str, Any]:  # fmt: skip
    raw_rate = float(raw["raw_evalsha_per_s"])
    ratio = core["routed_per_s"] / raw_rate if raw_rate else 0.0
    return {
        "routed_per_s": core["routed_per_s"],
        "lifecycle_per_s": core["lifecycle_per_s"],
        "raw_evalsha_per_s": round(raw_rate, 1),
        "ratio_to_raw": round(ratio, 3),
        "floor": FLOOR,
        "floor_met": ratio >= FLOOR,
        "p50_ms": core["p50_ms"],
        "p99_ms": core["p99_ms"],
        **{k: v for k, v in core.items() if k not in ("routed_per_s", "lifecycle_per_s")},
        **_per_core(core, raw),
        "pipelined_evalsha_per_s": round(float(raw["pipelined_evalsha_per_s"]), 1),
        "raw_evalsha_client_cpu": round(float(raw["raw_evalsha_client_cpu"]), 3),
        "raw_evalsha_redis_cpu": round(float(raw["raw_evalsha_redis_cpu"]), 3),
        "aof": aof,
        "agents": agents,
        "producers": producers,
        "seconds": seconds,
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "hiredis": HIREDIS_AVAILABLE,
        "redis_version": info.get("redis_version"),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def _per_core(core: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, float]:
    """Both rates as if the busier party (this process or Redis) had a whole core to itself.

    Rate / CPU share of the busier party, measured over the same window: on a shared machine,
    where other tenants take CPU from both, these move far less than the wall-clock rates (this
    assumes cost per case stays flat up to saturation, and needs the two pinned apart).
    """
    case_us = max(core["saturated_client_us_per_case"], core["saturated_redis_us_per_case"])
    routed = 1e6 / case_us if case_us else 0.0
    busy = max(float(raw["raw_evalsha_client_cpu"]), float(raw["raw_evalsha_redis_cpu"]))
    raw_rate = float(raw["raw_evalsha_per_s"]) / busy if busy else 0.0
    return {
        "routed_per_core_s": round(routed, 1),
        "raw_evalsha_per_core_s": round(raw_rate, 1),
        "ratio_per_core": round(routed / raw_rate, 3) if raw_rate else 0.0,
    }


def warnings(r: Mapping[str, Any]) -> list[str]:
    """What makes a figure a floor rather than a limit, or a run invalid; worth reading first."""
    found = []
    if not r["pinned"]:
        found.append("fewer than 2 CPUs: nothing pinned; Redis and this process competed")
    if r["saturated_other_cpu"] > 0.15:
        found.append(
            f"other processes used {r['saturated_other_cpu']:.2f} cores during the routed phase:"
            " rates are floors; see ratio_per_core"
        )
    if max(r["saturated_client_cpu"], r["saturated_redis_cpu"]) < 0.8:
        found.append("routed phase: neither this process nor Redis reached 80 % of a core")
    if r["latency_ingested_per_s"] < 0.95 * r["latency_target_per_s"]:
        found.append("latency phase: the producers fell behind their schedule")
    if r["lost_offers"] or r["duplicate_offers"] or r["left_waiting"] or r["errors"]:
        found.append(
            f"correctness: {r['lost_offers']} offers lost, {r['duplicate_offers']} duplicated,"
            f" {r['left_waiting']} cases left waiting, errors {r['errors']}"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    """CLI: measure on uvloop, print the result; exit 1 if an offer was lost or duplicated."""
    parser = argparse.ArgumentParser(
        prog="python -m bench core", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="per phase (default 8)")
    parser.add_argument("--no-aof", dest="aof", action="store_false", help="Redis without AOF")
    parser.add_argument("--agents", type=int, default=400, help="default 400")
    parser.add_argument("--producers", type=int, default=64, help="default 64")
    parser.add_argument("--json", action="store_true", help="print one JSON object, last")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    result = uvloop.run(
        measure_core(args.seconds, aof=args.aof, agents=args.agents, producers=args.producers)
    )
    result["warnings"] = warnings(result)
    _summarise(result)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 1 if result["lost_offers"] or result["duplicate_offers"] else 0


def _summarise(r: Mapping[str, Any]) -> None:
    pinned = "not pinned (1 CPU)"
    if r["pinned"]:
        pinned = f"python on CPU {r['python_cpu_id']}, redis-server on CPU {r['redis_cpu_id']}"
    log.info("%s; AOF %s; %s", pinned, "on" if r["aof"] else "off", r["cpu_model"])
    log.info("routed %.0f/s, lifecycle %.0f/s, raw EVALSHA %.0f/s: ratio %.2f (floor %.1f: %s)",
             r["routed_per_s"], r["lifecycle_per_s"], r["raw_evalsha_per_s"], r["ratio_to_raw"],
             r["floor"], "met" if r["floor_met"] else "NOT met")  # fmt: skip
    log.info("the same work unbatched (an EVALSHA per transition): %.0f/s; batched is %.2fx "
             "(%.2fx per core-second of the busier party)", r["unbatched_routed_per_s"],
             r["ratio_to_unbatched"], r["ratio_to_unbatched_per_core"])  # fmt: skip
    log.info("per core-second of the busier party: routed %.0f, raw %.0f: ratio %.2f",
             r["routed_per_core_s"], r["raw_evalsha_per_core_s"], r["ratio_per_core"])  # fmt: skip
    log.info("offer latency at %.0f cases/s: p50 %s ms, p99 %s ms", r["latency_target_per_s"],
             r["p50_ms"], r["p99_ms"])  # fmt: skip
    for warning in r["warnings"]:
        log.warning("warning: %s", warning)


if __name__ == "__main__":
    sys.exit(main())
