"""Measure the bare limits of our stack in one run, to report Switchboard's figures against.

On a shared, noisy machine absolute figures move by a quarter or more between runs, so our
own figures are reported as ratios to limits measured in the same run. CPU time per unit of
work (``*_us_per_*``) and memory hold up far better than rates; every rate comes with the
CPU shares of the parties and of everything else on the machine, to judge it by.

Everything runs on this machine and is started and stopped here: a private redis-server on a
unix socket (unless ``redis_url`` is given) and uvicorn servers in child processes on
loopback. With 2+ cores the server under test is pinned to one core and this process (the
load generator) to another. Each measurement counts for ``seconds`` after a 0.5 s warm-up
and is cut off if it overruns. What is measured, and how, is in the modules doing it:

* :mod:`bench.bare_redis` — ``raw_evalsha_per_s`` (64 asyncio callers, one EVALSHA each
  at a time, ``BlockingConnectionPool``), ``pipelined_evalsha_per_s`` (one connection,
  pipelines of 64), with client and Redis CPU shares.
* :mod:`bench.bare_ws` on :mod:`bench.bare_server` — the relay ceiling per uvicorn WebSocket
  implementation; the bare pipeline (case → match script → offer → accept → accept script),
  saturated and at a fixed 1,000 cases/s; RSS per idle connection.

Run ``python -m bench.bare [--seconds N] [--idle-conns N] [--redis-url URL] [--json]``;
progress goes to stderr, the result to stdout (with ``--json``, one JSON object, last).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis
import uvicorn.config
import uvloop

from bench.bare_os import Cores, pin, quiet_gc, raise_nofile_limit, set_affinity
from bench.bare_redis import RedisHandle, measure_evalsha, private_redis
from bench.bare_server import run_server
from bench.bare_ws import (
    measure_idle_rss,
    measure_pipeline_open,
    measure_pipeline_saturated,
    measure_relay,
)

__all__ = ["WS_IMPLS", "main", "measure_bare", "ws_impls"]

log = logging.getLogger("bench.bare")

WS_IMPLS = ("websockets-sansio", "websockets")
"""uvicorn WebSocket implementations to compare, fastest expected first."""

OPEN_LOOP_RATE = 1000.0
_T = TypeVar("_T")


def ws_impls() -> list[str]:
    """The implementations of :data:`WS_IMPLS` that the installed uvicorn offers."""
    return [impl for impl in WS_IMPLS if impl in uvicorn.config.WS_PROTOCOLS]


async def measure_bare(
    seconds: float = 5.0,
    *,
    redis_url: str | None = None,
    idle_conns: int = 2000,
    pipeline_seconds: float | None = None,
    pinned: bool = True,
) -> dict[str, Any]:
    """Measure the bare limits of our stack; return the figures.

    Keys (rates per second; ``*_cpu`` in cores, 1.0 = one core busy; latencies in ms):
    ``raw_evalsha_*`` and ``pipelined_evalsha_*`` (``per_s``, ``client_cpu``, ``redis_cpu``,
    ``other_cpu``); ``bare_relay_by_impl`` (uvicorn ws implementation → figures),
    ``best_ws_impl`` and its ``bare_relay_frames_per_s``, ``bare_relay_us_per_frame``
    (server CPU µs per relayed frame), ``bare_relay_p50_ms``/``p99_ms`` (at saturation);
    ``bare_pipeline_rate`` (completed cases/s, saturated, over ``pipeline_seconds``, default
    ``seconds``), ``bare_pipeline_rate_median_s`` (the median of its per-second rates),
    ``bare_pipeline_us_per_case``,
    ``bare_pipeline_p50_ms``/``p99_ms`` (time to offer at ``bare_pipeline_open_rate``);
    ``bare_rss_kib_per_connection``; context (``cpus``, ``pinned``, ``loop``,
    ``redis_version``, ...), ``warnings`` (why some figures may be floors) and ``elapsed_s``.

    Starts what it needs and stops it again, also on error or cancellation. Temporarily pins
    the calling process to one CPU (restored on return; ``pinned=False``: every process is left
    to the scheduler) and raises its RLIMIT_NOFILE soft limit to the hard limit (left raised).
    Raises ``RuntimeError`` if a server cannot start and ``TimeoutError`` if a measurement
    overruns its bound.
    """
    started = time.perf_counter()
    cores, affinity = Cores.plan(pinned), os.sched_getaffinity(0)
    raise_nofile_limit()
    try:
        pin(0, cores.client)
        async with _redis(redis_url) as handle:
            result = await _measure_all(
                handle, seconds, idle_conns, cores, pipeline_seconds or seconds
            )
    finally:
        set_affinity(0, affinity)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


@contextlib.asynccontextmanager
async def _redis(redis_url: str | None) -> AsyncIterator[RedisHandle]:
    if redis_url is not None:
        yield RedisHandle(url=redis_url, pid=None)
    else:
        async with private_redis() as handle:
            yield handle


async def _bounded(coro: Coroutine[Any, Any, _T], seconds: float, what: str) -> _T:
    """Await ``coro``, or cancel it and raise ``TimeoutError`` after ``seconds``."""
    bound = asyncio.timeout(seconds)
    try:
        async with bound:
            return await coro
    except TimeoutError:
        if bound.expired():
            raise TimeoutError(f"{what} overran its {seconds:.0f} s bound") from None
        raise


async def _measure_all(
    handle: RedisHandle, seconds: float, idle_conns: int, cores: Cores, pipeline_seconds: float
) -> dict[str, Any]:
    limit = seconds + 40  # warm-up, server start-up, drain
    out: dict[str, Any] = await _environment(handle, seconds, cores)
    if handle.pid is not None:
        pin(handle.pid, cores.server)  # the client is the limit here: keep Redis off its core
    log.info("EVALSHA: 64 callers, then pipelines of 64, %.0f s each", seconds)
    out |= await _bounded(measure_evalsha(handle.url, seconds), 2 * limit, "EVALSHA")
    log.info("EVALSHA: %.0f/s unpipelined, %.0f/s pipelined", out["raw_evalsha_per_s"],
             out["pipelined_evalsha_per_s"])  # fmt: skip
    if handle.pid is not None:
        pin(handle.pid, cores.redis)  # now the server is the limit: Redis joins the client
    out |= await _bounded(_measure_relays(seconds, cores), len(WS_IMPLS) * limit, "relay")
    out |= await _bounded(
        _measure_pipeline(handle.url, out["best_ws_impl"], seconds, pipeline_seconds, cores),
        2 * (limit + pipeline_seconds),
        "pipeline",
    )
    idle_limit = max(30.0, idle_conns / 200) + limit
    out |= await _bounded(
        _measure_idle(out["best_ws_impl"], idle_conns, cores), idle_limit, "idle connections"
    )
    out["warnings"] = _warnings(out)
    for warning in out["warnings"]:
        log.warning("%s", warning)
    return out


async def _environment(handle: RedisHandle, seconds: float, cores: Cores) -> dict[str, Any]:
    client = aioredis.Redis.from_url(handle.url)
    try:
        version = (await client.info("server"))["redis_version"]
    finally:
        await client.aclose()
    return {
        "seconds": seconds,
        "cpus": cores.available,
        "pinned": cores.server is not None,
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "redis_version": version,
        "redis_private": handle.pid is not None,
    }


async def _measure_relays(seconds: float, cores: Cores) -> dict[str, Any]:
    by_impl: dict[str, dict[str, float | None]] = {}
    for impl in ws_impls():
        log.info("relay, uvicorn ws=%s: %.0f s", impl, seconds)
        async with run_server("relay", impl, cpu=cores.server) as server:
            by_impl[impl] = await measure_relay(server, seconds)
        fig = by_impl[impl]
        log.info("relay, uvicorn ws=%s: %.0f frames/s, %.1f µs server CPU/frame", impl,
                 fig["frames_per_s"], fig["us_per_frame"])  # fmt: skip
    # Pick by server CPU per frame: steadier than throughput on a noisy machine.
    best = min(by_impl, key=lambda impl: by_impl[impl]["us_per_frame"] or float("inf"))
    return {
        "bare_relay_by_impl": by_impl,
        "best_ws_impl": best,
        "bare_relay_frames_per_s": by_impl[best]["frames_per_s"],
        "bare_relay_us_per_frame": by_impl[best]["us_per_frame"],
        "bare_relay_p50_ms": by_impl[best]["p50_ms"],
        "bare_relay_p99_ms": by_impl[best]["p99_ms"],
    }


async def _measure_pipeline(
    url: str, impl: str, seconds: float, saturated_s: float, cores: Cores
) -> dict[str, Any]:
    prefix = f"bare:{uuid.uuid4().hex[:12]}:"
    redis = aioredis.Redis.from_url(url)
    try:
        async with run_server(
            "pipeline", impl, cpu=cores.server, redis_url=url, prefix=prefix
        ) as server:
            log.info("bare pipeline, saturated: %.0f s", saturated_s)
            sat = await measure_pipeline_saturated(server, redis, f"{prefix}done", saturated_s)
            log.info("bare pipeline: %.0f cases/s; now %.0f/s open loop for %.0f s",
                     sat["rate"], OPEN_LOOP_RATE, seconds)  # fmt: skip
            fixed = await measure_pipeline_open(
                server, redis, f"{prefix}done", seconds, rate=OPEN_LOOP_RATE
            )
    finally:
        with contextlib.suppress(aioredis.RedisError, OSError):
            await redis.delete(*(f"{prefix}{key}" for key in ("agents", "offers", "done")))
        await redis.aclose()
    return {
        "bare_pipeline_rate": sat["rate"],
        "bare_pipeline_rate_median_s": sat["rate_median_s"],
        "bare_pipeline_rates_per_s": sat["rates_per_s"],
        "bare_pipeline_seconds": saturated_s,
        "bare_pipeline_offers_per_s": sat["offers_per_s"],
        "bare_pipeline_us_per_case": sat["us_per_case"],
        "bare_pipeline_server_cpu": sat["server_cpu"],
        "bare_pipeline_client_cpu": sat["client_cpu"],
        "bare_pipeline_redis_cpu": sat["redis_cpu"],
        "bare_pipeline_other_cpu": sat["other_cpu"],
        "bare_pipeline_server_core_other_cpu": sat["server_core_other_cpu"],
        "bare_pipeline_window": sat["window"],
        "bare_pipeline_open_rate": fixed["rate"],
        "bare_pipeline_p50_ms": fixed["p50_ms"],
        "bare_pipeline_p99_ms": fixed["p99_ms"],
        "bare_pipeline_open_missing": fixed["missing_offers"],
        "bare_pipeline_open_send_lag_p99_ms": fixed["send_lag_p99_ms"],
        "bare_pipeline_open_server_cpu": fixed["server_cpu"],
        "bare_pipeline_open_client_cpu": fixed["client_cpu"],
    }


async def _measure_idle(impl: str, conns: int, cores: Cores) -> dict[str, Any]:
    log.info("idle connections: %d on ws=%s", conns, impl)
    if conns + 64 > (limit := raise_nofile_limit()):
        log.warning("RLIMIT_NOFILE is %d: not all %d connections can open", limit, conns)
    async with run_server("relay", impl, cpu=cores.server) as server:
        idle = await measure_idle_rss(server, conns)
    log.info("idle connections: %.1f KiB each", idle["kib_per_connection"])
    return {
        "bare_idle_conns": idle["conns"],
        "bare_idle_failed": idle["failed"],
        "bare_idle_server_fds_added": idle["server_fds_added"],
        "bare_rss_kib_per_connection": idle["kib_per_connection"],
    }


def _warnings(out: dict[str, Any]) -> list[str]:
    """Things that make a figure a floor rather than a limit, worth reading before ratios."""
    found = []
    if not out["pinned"]:
        found.append("nothing pinned (fewer than 2 CPUs, or asked): server and load generator "
                     "competed")  # fmt: skip
    shares = {f"relay {impl}": fig for impl, fig in out["bare_relay_by_impl"].items()}
    shares["bare pipeline"] = {
        "client_cpu": out["bare_pipeline_client_cpu"],
        "server_core_other_cpu": out["bare_pipeline_server_core_other_cpu"],
    }
    for what, fig in shares.items():
        if fig["client_cpu"] > 0.9:
            found.append(f"{what}: load generator at {fig['client_cpu']:.0%} CPU")
        if (fig["server_core_other_cpu"] or 0.0) > 0.15:
            found.append(
                f"{what}: other processes took {fig['server_core_other_cpu']:.0%} of the"
                " server's core; rates are floors, server CPU per frame/case still holds"
            )
    if out["bare_pipeline_open_missing"]:
        found.append(f"open loop: {out['bare_pipeline_open_missing']} offers never arrived")
    if out["bare_idle_failed"]:
        found.append(f"idle connections: {out['bare_idle_failed']} failed to open")
    return found


def _print_human(result: dict[str, Any]) -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            for sub, fig in value.items():
                print(f"{key}.{sub}: {json.dumps(fig)}")
        else:
            print(f"{key}: {round(value, 3) if isinstance(value, float) else value}")


async def _run_cli(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM cancels the run like Ctrl-C does, so servers and Redis are still stopped.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with quiet_gc():
        return await measure_bare(
            args.seconds, redis_url=args.redis_url, idle_conns=args.idle_conns
        )


def main(argv: list[str] | None = None) -> int:
    """CLI: run :func:`measure_bare` on uvloop and print the result."""
    summary = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=summary)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    parser.add_argument("--idle-conns", type=int, default=2000, help="for RSS (default 2000)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting a private one")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    try:
        result = uvloop.run(_run_cli(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log.warning("interrupted; everything started was stopped")
        return 130
    if args.json:
        print(json.dumps(result))
    else:
        _print_human(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
