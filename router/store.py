"""The connection to Redis and the transition scripts, with calls batched across concurrent cases.

Every state transition is one Lua script (``router/lua/<thing>_<verb>.lua``), loaded once with
``_lib.lua`` prepended and called by SHA. Calls made by concurrent coroutines within the same
event-loop turn are sent together as one pipeline (no MULTI: each script is atomic on its own),
which is what lets one router process route more cases per second than one round trip per case
allows (see bench/README.md). A batch is flushed at once; there is no timer and no added latency.

Failure: any Redis error reaches the caller as :class:`StoreUnavailable`; the ingest path treats
that as "not acknowledged" so the sender retries. A script that Redis no longer knows (restart,
``SCRIPT FLUSH``) is reloaded and the call retried once.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from router import fastjson, keys
from router.errors import StoreUnavailable

__all__ = [
    "SCRIPT_NAMES",
    "Store",
    "connect",
    "is_cluster_url",
    "now_ms",
    "open_client",
    "stop_task",
]

SCRIPT_NAMES = (
    "agent_presence",
    "agent_status",
    "agent_update",
    "case_complete",
    "case_followup",
    "case_reply",
    "case_transfer",
    "case_wrapup",
    "customer_merge",
    "event_ingest",
    "offer_accept",
    "offer_reject",
    "pool_define",
    "timers_run",
)


def now_ms() -> int:
    return int(time.time() * 1000)


def _read_lua(name: str) -> str:
    return (resources.files("router") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class _Script:
    name: str
    source: bytes
    sha: str
    evalsha: bytes  # "EVALSHA <sha> 1" in the Redis protocol, less the array header


def _pack(head: bytes, argv: list[Any]) -> bytes:
    """One ``EVALSHA`` in the Redis protocol (RESP2): ``head`` then each of ``argv``."""
    parts = [b"*%d\r\n" % (len(argv) + 3), head]
    add = parts.append
    for a in argv:
        t = type(a)
        b = a.encode() if t is str else a if t is bytes else str(a).encode()
        add(b"$%d\r\n" % len(b))
        add(b)
        add(b"\r\n")
    return b"".join(parts)


def _load_scripts() -> dict[str, _Script]:
    lib = _read_lua("_lib")
    out: dict[str, _Script] = {}
    for name in SCRIPT_NAMES:
        source = (lib + "\n" + _read_lua(name)).encode()
        sha = hashlib.sha1(source).hexdigest()
        head = b"$7\r\nEVALSHA\r\n$40\r\n" + sha.encode() + b"\r\n$1\r\n1\r\n"
        out[name] = _Script(name, source, sha, head)
    return out


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel a background task and return once it has ended.

    redis-py (its cluster client in particular) can turn a cancellation that lands mid-command
    into a ``ConnectionError``, which a retrying loop would swallow: cancel until it is done.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled():
        task.exception()  # retrieved: it ended by cancellation or by an error already logged


def is_cluster_url(url: str) -> bool:
    return url.startswith(("redis+cluster://", "rediss+cluster://"))


def open_client(url: str) -> aioredis.Redis:
    """A separate client with its own connections, for blocking reads (``XREAD BLOCK``) that
    must not hold one of the shared pool's: a cluster client for a ``redis+cluster://`` URL."""
    if is_cluster_url(url):
        from redis.asyncio.cluster import RedisCluster

        cluster: aioredis.Redis = RedisCluster.from_url(url.replace("+cluster", "", 1))
        return cluster
    return aioredis.Redis.from_url(url)


def connect(url: str, *, max_connections: int = 16) -> aioredis.Redis:
    """A client whose pool waits for a free connection instead of failing (PERF-NOTES).

    ``redis+cluster://host:port`` connects to a Redis Cluster: every workspace's keys share one
    hash slot, and scripts are routed by their first key (the workspace prefix).
    """
    if is_cluster_url(url):
        from redis.asyncio.cluster import RedisCluster

        cluster: aioredis.Redis = RedisCluster.from_url(
            url.replace("+cluster", "", 1), max_connections=max_connections
        )
        return cluster
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=10
    )
    return aioredis.Redis(connection_pool=pool)


_Pending = tuple[_Script, list[Any], "asyncio.Future[Any]"]


class Store:
    """Runs transition scripts; concurrent calls share pipelines.

    ``await store.run("offer_accept", ws, agent, offer)`` returns the script's decoded JSON.
    ``now`` (ARGV[1]) is filled in by the store unless given with ``now=``.
    """

    def __init__(self, client: aioredis.Redis, *, max_inflight: int = 8) -> None:
        self.redis = client
        self._scripts = _load_scripts()
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._slots = asyncio.Semaphore(max_inflight)
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0
        self.batches = 0

    async def load(self) -> None:
        """Load every script into Redis (also done lazily on NOSCRIPT)."""
        try:
            for s in self._scripts.values():
                await self.redis.script_load(s.source)
        except RedisError as e:
            raise StoreUnavailable(str(e)) from e

    async def run(self, name: str, ws: str, *args: Any, now: int | None = None) -> Any:
        script = self._scripts[name]
        argv = [keys.prefix(ws), now_ms() if now is None else now, *args]
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((script, argv, fut))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        raw = await fut
        return fastjson.loads(raw)

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        self.calls += len(batch)
        self.batches += 1
        try:
            async with self._slots:
                results = await self._execute(batch)
                retry = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
                if retry:
                    await self.load()
                    again = await self._execute([batch[i] for i in retry])
                    for i, r in zip(retry, again, strict=True):
                        results[i] = r
        except (RedisError, OSError) as e:
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(StoreUnavailable(str(e)))
            return
        for (_, _, fut), r in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(r, Exception):
                fut.set_exception(StoreUnavailable(str(r)))
            else:
                fut.set_result(r)

    async def _execute(self, batch: list[_Pending]) -> list[Any]:
        pool = getattr(self.redis, "connection_pool", None)
        if pool is None:  # Redis Cluster: its own pipeline routes each call to its slot
            pipe = self.redis.pipeline(transaction=False)
            for script, argv, _ in batch:
                pipe.execute_command("EVALSHA", script.sha, 1, *argv)
            return list(await pipe.execute(raise_on_error=False))
        # One connection, the whole batch written at once, replies read in order: what a
        # pipeline does, without redis-py packing each argument (a fifth of a router's CPU).
        packed = b"".join([_pack(script.evalsha, argv) for script, argv, _ in batch])
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(packed, check_health=False)
            results: list[Any] = []
            for _ in batch:
                try:
                    results.append(await conn.read_response())
                except ResponseError as e:  # NOSCRIPT, or an error raised by the script
                    results.append(e)
            return results
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()
