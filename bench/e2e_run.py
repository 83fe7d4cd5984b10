"""One e2e run against one server (:mod:`bench.e2e`): the phases' counting and figures, and the
progress line printed every second.

:class:`Run` drives a phase (a warm-up not counted, then the counted body), samples CPU and
Redis's command counts around it, and drains; ``_figures`` turns a phase's counters into rates
and latency percentiles. The phases themselves, the idle consoles and the CLI are in
:mod:`bench.e2e`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.bare_os import percentile
from bench.e2e_load import Load, PhaseStats
from bench.e2e_probe import (
    Probe,
    aof_forks,
    fresh_aof,
    profile_top,
    record_profile,
    redis_commands,
)
from bench.server_proc import Server

__all__ = ["DRAIN_S", "Run"]

DRAIN_S = 20.0


def _ms(values_ns: list[int], q: float) -> float | None:
    v = percentile(sorted(values_ns), q)
    return None if v is None else v / 1e6


def _lat(prefix: str, values_ns: list[int]) -> dict[str, Any]:
    return {
        f"{prefix}_p50_ms": _ms(values_ns, 50),
        f"{prefix}_p99_ms": _ms(values_ns, 99),
        f"{prefix}_p999_ms": _ms(values_ns, 99.9),
        f"{prefix}_max_ms": max(values_ns) / 1e6 if values_ns else None,
        f"{prefix}_samples": len(values_ns),
    }


class Run:
    """One e2e run against one server: the load, the probe and the per-second timeline."""

    def __init__(self, server: Server, load: Load, args: argparse.Namespace) -> None:
        self.server, self.load, self.args = server, load, args
        self.probe = Probe(server.pid, server.redis_pid)
        self.redis_url = getattr(args, "_redis_url", None)
        self.timeline: list[dict[str, Any]] = []
        self.offered_now = 0.0
        self.started = time.perf_counter()
        self.out_dir: Path = args._out_dir

    @contextlib.asynccontextmanager
    async def monitor(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._progress())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _progress(self) -> None:
        prev = self.probe.sample()
        while True:
            await asyncio.sleep(1.0)
            now = self.probe.sample()
            shares = Probe.shares(prev, now)
            load = self.load
            lat, offers, done = load.second_lat_ns, load.second_offers, load.second_completed
            load.second_lat_ns, load.second_offers, load.second_completed = [], 0, 0
            elapsed = now.wall - prev.wall
            point = {
                "t": round(now.wall - self.started, 2), "phase": load.phase.name,
                "offered_rate": self.offered_now, "offers_per_s": offers / elapsed,
                "completed_per_s": done / elapsed, "p50_ms": _ms(lat, 50), "p99_ms": _ms(lat, 99),
                "server_rss_kib": now.server_rss_kib, **{k: v for k, v in shares.items()
                                                          if not k.endswith("_s")},
            }  # fmt: skip
            self.timeline.append(point)
            flight = load.in_flight()
            p50, p99 = _ms(lat, 50), _ms(lat, 99)
            print(
                f"e2e {load.phase.name:<9} {point['t']:6.1f}s  offered {self.offered_now:6.0f}/s"
                f"  offers {point['offers_per_s']:6.0f}/s  p50 {_f(p50)} p99 {_f(p99)} ms"
                f"  server {shares['server_cpu']:4.0%} {now.server_rss_kib / 1024:5.0f} MiB"
                f"  redis {shares['redis_cpu']:4.0%}  load generator {shares['client_cpu']:4.0%}"
                f"  other {shares['other_cpu']:4.0%}"
                f" (on server core {_pct(shares['server_core_other_cpu'])})"
                f"  agents {load.connected_agents()}  in flight {flight['open']}"
                f"  unacked {flight['unacked']}",
                file=sys.stderr,
                flush=True,
            )
            prev = now

    async def phase(
        self, name: str, seconds: float, body: Any, before: Any = None
    ) -> dict[str, Any]:
        """Run ``before`` (a coroutine, not counted), then ``body`` (counted) as phase
        ``name``; drain; return its figures."""
        self.load.start_phase(name)
        if before is not None:
            await before
        stats = self.load.phase
        cmds0 = await redis_commands(self.redis_url)
        forks0 = await aof_forks(self.redis_url)
        start = self.probe.sample()
        profile = None
        if self.args.profile and self.server.pid and name in self.args.profile.split(","):
            profile = asyncio.create_task(
                record_profile(self.server.pid, seconds, self.out_dir / f"profile-{name}.txt")
            )
        sampler = asyncio.create_task(self._per_second(stats))
        await body
        end = self.probe.sample()
        per_second = await stop_sampler(sampler)
        cmds1 = await redis_commands(self.redis_url)
        forks1 = await aof_forks(self.redis_url)
        drained = await self.load.drain(DRAIN_S)
        self.offered_now = 0.0
        out = self._figures(stats, Probe.shares(start, end), end.wall - start.wall)
        # Redis's AOF rewrites that began in the phase (each a fork: its main thread stalls for
        # fork_ms, then pays copy-on-write while the child runs)
        out["aof_rewrites"] = forks1[0] - forks0[0] if forks0 and forks1 else None
        out["fork_ms"] = forks1[1] if forks1 and out["aof_rewrites"] else None
        out["drained"] = drained
        out["completed_per_s_seconds"] = per_second
        out["completed_per_s_median"] = statistics.median(per_second) if per_second else None
        per_case = max((stats.offers + stats.completed) / 2, 1)
        cmds = cmds1 - cmds0
        usec = {k: v for k, v in cmds.items() if k.endswith(":usec")}
        calls = {k: v for k, v in cmds.items() if not k.endswith(":usec")}
        out["redis_commands_per_case"] = round(sum(calls.values()) / per_case, 2)
        out["evalsha_per_case"] = round(calls.get("evalsha", 0) / per_case, 2)
        out["redis_us_per_case"] = round(usec.get("evalsha:usec", 0) / per_case, 1)
        out["redis_us_per_evalsha"] = round(
            usec.get("evalsha:usec", 0) / max(calls.get("evalsha", 0), 1), 1
        )
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
        out["redis_top_commands_per_case"] = {k: round(v / per_case, 2) for k, v in top}
        if profile is not None and (path := await profile) is not None:
            out["profile"] = profile_top(path)
        return out

    @staticmethod
    async def _per_second(stats: PhaseStats) -> list[float]:
        """Completed cases per whole second of the phase, until cancelled."""
        rates: list[float] = []
        loop = asyncio.get_running_loop()
        t0, n0 = loop.time(), stats.completed
        try:
            while True:
                await asyncio.sleep(1.0)
                t1, n1 = loop.time(), stats.completed
                rates.append((n1 - n0) / (t1 - t0))
                t0, n0 = t1, n1
        except asyncio.CancelledError:
            return rates

    def _figures(self, s: PhaseStats, shares: dict[str, float], elapsed: float) -> dict[str, Any]:
        return {
            "phase": s.name, "seconds": round(elapsed, 2), "sent": s.sent,
            "offers": s.offers, "completed": s.completed,
            "offers_per_s": s.offers / elapsed, "completed_per_s": s.completed / elapsed,
            **_lat("ingest_offer", s.ingest_offer_ns), **_lat("freed", s.freed_ns),
            **_lat("accept_ack", s.accept_ack_ns),
            "send_lag_p99_ms": percentile(sorted(s.send_lag_ms), 99),
            # Cases routed in the window: offers and completions lag each other by the
            # handle time, so the mean of the two.
            "us_per_case": shares["server_cpu_s"] / max((s.offers + s.completed) / 2, 1) * 1e6,
            **{k: v for k, v in shares.items() if not k.endswith("_s")},
        }  # fmt: skip

    async def fresh_aof(self) -> None:
        """Rewrite Redis's AOF before a latency phase (:func:`bench.e2e_probe.fresh_aof`)."""
        took = await fresh_aof(self.redis_url)
        if took is not None:
            print(
                f"e2e: AOF rewritten before the phase ({took:.1f} s)", file=sys.stderr, flush=True
            )

    async def open_loop(self, name: str, rate: float, seconds: float) -> dict[str, Any]:
        self.offered_now = rate
        out = await self.phase(name, seconds, self.load.open_loop(rate, seconds))
        out["offered_rate"] = rate
        return out


async def stop_sampler(task: asyncio.Task[list[float]]) -> list[float]:
    task.cancel()
    return await task


def _pct(v: float | None) -> str:
    return "  - " if v is None else f"{v:4.0%}"


def _f(v: float | None) -> str:
    return "  -  " if v is None else f"{v:5.1f}"
