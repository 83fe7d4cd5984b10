"""Watching the server under load: CPU and RSS samples, Redis command counts, py-spy profiles.

CPU shares are per second of wall time (1.0 = one core busy). ``other_cpu`` is what the rest of
the machine used meanwhile (the server, Redis and this process excluded): on a shared machine,
the first thing to read before trusting a rate. Redis's share includes its AOF rewrite children,
all at once in the sample in which a child ends (while it runs, it shows as other).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as aioredis

from bench.bare_os import busy_seconds

__all__ = [
    "Probe",
    "Sample",
    "aof_forks",
    "fresh_aof",
    "profile_top",
    "record_profile",
    "redis_commands",
]


@dataclass(frozen=True)
class Sample:
    wall: float
    server_cpu: float
    server_rss_kib: int
    redis_cpu: float
    client_cpu: float
    machine_busy: float
    server_core_busy: float | None  # the server's core, when it is pinned to one


def _cpu(proc: psutil.Process | None, *, children: bool = False) -> float:
    """CPU seconds of ``proc``; with ``children``, also of its children that have ended (Redis's
    AOF rewrites run in a forked child: counted as Redis once it is reaped, not as "other")."""
    if proc is None:
        return 0.0
    with contextlib.suppress(psutil.Error):
        t = proc.cpu_times()
        own = float(t.user + t.system)
        return own + float(t.children_user + t.children_system) if children else own
    return 0.0


class Probe:
    """CPU time and RSS of the server (and Redis) when they run on this machine."""

    def __init__(self, server_pid: int | None, redis_pid: int | None) -> None:
        self.server = psutil.Process(server_pid) if server_pid else None
        self.redis = psutil.Process(redis_pid) if redis_pid else None
        self.server_core: int | None = None
        if self.server is not None:
            with contextlib.suppress(psutil.Error):
                cpus = self.server.cpu_affinity() or []
                self.server_core = cpus[0] if len(cpus) == 1 else None

    def rss_kib(self) -> int:
        if self.server is None:
            return 0
        with contextlib.suppress(psutil.Error):
            return int(self.server.memory_info().rss // 1024)
        return 0

    def sample(self) -> Sample:
        return Sample(
            wall=time.perf_counter(),
            server_cpu=_cpu(self.server),
            server_rss_kib=self.rss_kib(),
            redis_cpu=_cpu(self.redis, children=True),
            client_cpu=time.process_time(),
            machine_busy=busy_seconds(),
            server_core_busy=None if self.server_core is None else busy_seconds(self.server_core),
        )

    @staticmethod
    def shares(a: Sample, b: Sample) -> dict[str, float]:
        elapsed = max(b.wall - a.wall, 1e-9)
        server, redis = b.server_cpu - a.server_cpu, b.redis_cpu - a.redis_cpu
        client = b.client_cpu - a.client_cpu
        other = b.machine_busy - a.machine_busy - server - redis - client
        core_other = None
        if a.server_core_busy is not None and b.server_core_busy is not None:
            core_other = max(b.server_core_busy - a.server_core_busy - server, 0.0) / elapsed
        return {
            "server_cpu": server / elapsed,
            "redis_cpu": redis / elapsed,
            "client_cpu": client / elapsed,
            "other_cpu": max(other, 0.0) / elapsed,
            # What else ran on the server's core: server_cpu + this near 1.0 = core saturated.
            "server_core_other_cpu": core_other,
            "server_cpu_s": server,
        }


async def redis_commands(url: str | None) -> Counter[str]:
    """Calls per command so far, and ``<command>:usec`` (time Redis spent in it), from
    ``INFO commandstats``; empty when Redis is not reachable. Commands that scripts run are
    counted too (``evalsha:usec`` includes them)."""
    if not url:
        return Counter()
    client = aioredis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    except (aioredis.RedisError, OSError):
        return Counter()
    finally:
        await client.aclose()
    out: Counter[str] = Counter()
    for k, v in stats.items():
        name = k.removeprefix("cmdstat_")
        out[name] = int(v["calls"])
        out[f"{name}:usec"] = int(v["usec"])
    return out


async def aof_forks(url: str | None) -> tuple[int, float] | None:
    """Redis's forks so far (``total_forks``: its AOF rewrites, as the bench's Redis makes no
    RDB snapshots) and the last fork's stall of its main thread in ms; None when unreachable."""
    if not url:
        return None
    client = aioredis.Redis.from_url(url)
    try:
        stats = await client.info("stats")
    except (aioredis.RedisError, OSError):
        return None
    finally:
        await client.aclose()
    return int(stats.get("total_forks", 0)), int(stats.get("latest_fork_usec", 0)) / 1000


async def fresh_aof(url: str | None, within: float = 120.0) -> float | None:
    """Rewrite Redis's AOF now (``BGREWRITEAOF``) and wait until it is done; the seconds it
    took, or None (no AOF, no Redis URL, or not done ``within`` seconds).

    A latency phase starts on a freshly rewritten AOF, the state a production Redis is in
    nearly all the time: its base is days of cases, so its tail takes minutes to hours to
    double. The bench's Redis starts empty, and with a small base it rewrites every few
    seconds; where a rewrite falls in a phase would decide its p99 (bench/README.md)."""
    if not url:
        return None
    client = aioredis.Redis.from_url(url)
    t0 = time.perf_counter()

    async def idle() -> None:
        while True:
            info = await client.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                return
            await asyncio.sleep(0.05)

    try:
        async with asyncio.timeout(within):
            if (await client.info("persistence")).get("aof_enabled") != 1:
                return None
            await idle()  # one already under way (or scheduled) ends first
            await client.bgrewriteaof()
            await idle()
        return time.perf_counter() - t0
    except (aioredis.RedisError, OSError):  # TimeoutError too
        return None
    finally:
        await client.aclose()


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if os.access(found, os.X_OK) else None


async def record_profile(pid: int, seconds: float, out: Path) -> Path | None:
    """``py-spy record`` the server for ``seconds`` into ``out`` (collapsed stacks); None when
    py-spy is missing or fails. Non-blocking sampling: the server is never paused."""
    exe = py_spy()
    if exe is None:
        return None
    proc = await asyncio.create_subprocess_exec(
        exe, "record", "--nonblocking", "--format", "raw", "--rate", "200",
        "--duration", str(max(1, round(seconds))), "--pid", str(pid), "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await proc.wait()
    return out if proc.returncode == 0 else None


_BUCKETS = (
    ("msgpack", ("msgpack",)),
    ("json", ("json/", "json\\")),
    ("redis-py", ("redis/",)),
    ("uvicorn + websockets", ("uvicorn/", "websockets/")),
    ("starlette", ("starlette/",)),
    ("prometheus_client", ("prometheus_client/",)),
    ("itsdangerous", ("itsdangerous/",)),
    ("router", ("router/",)),
    ("asyncio", ("asyncio/",)),
)


def _where(frame: str) -> str:
    for name, needles in _BUCKETS:
        if any(n in frame for n in needles):
            return name
    return "other"


def profile_top(path: Path, n: int = 15) -> dict[str, Any]:
    """Top functions by self and inclusive samples, and where the leaf time goes by package.

    Reads py-spy's raw format: one line per stack, ``frame;frame;… count``, each frame
    ``function (file:line)``. Lines are dropped so one function is one row.
    """
    if not path.exists():
        return {"samples": 0, "self": [], "inclusive": [], "by_package": {}}
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        total += k
        frames = [_strip_line(f) for f in stack.split(";")]
        own[frames[-1]] += k
        buckets[_where(frames[-1])] += k
        for f in set(frames):
            incl[f] += k

    def rows(c: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": f, "share": v / max(total, 1)} for f, v in c.most_common(n)]

    return {
        "samples": total,
        "self": rows(own),
        "inclusive": rows(incl),
        "by_package": {k: v / max(total, 1) for k, v in buckets.most_common()},
    }


def _strip_line(frame: str) -> str:
    """``f (path/to/mod.py:12)`` → ``f (to/mod.py)``: lines merged, paths shortened."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    parts = file.replace("\\", "/").split("/")
    for anchor in ("site-packages", "lib", "main"):
        if anchor in parts:
            parts = parts[len(parts) - parts[::-1].index(anchor) :]
            break
    return f"{name} ({'/'.join(parts[-3:])})"
