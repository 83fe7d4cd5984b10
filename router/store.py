"""The connection to Redis and the transition scripts, with calls batched across concurrent cases.

Every state transition is one Lua script (``router/lua/<thing>_<verb>.lua``). They are loaded
as one script: ``_lib.lua``, each transition's body as a function, then ``_batch.lua``, which
runs a list of transitions in order. Calls made by concurrent coroutines within the same
event-loop turn are sent together: one ``EVALSHA`` per workspace and up to
:data:`MAX_BATCH` transitions, so the helpers are set up once per batch and Redis parses one
command, which is what lets one router process route more cases per second than one round
trip per case allows (see bench/README.md). Each transition keeps its own result or error; the
batch is atomic as a whole. A batch is flushed at once; there is no timer and no added latency.

The store sends its batches on a connection of its own, pipelined (``router/redis_pipe.py``:
a batch is written in the loop turn that flushes it, and its replies resolve its callers as
they arrive; at most eight batches unanswered, the rest wait to join one), not through
redis-py's pool and command path, whose work per command was the largest single cost in a
router's profile. :meth:`Store.commands` sends the few other Redis calls on the routing path
(a bridge's acknowledgements of its deliveries) the same way; :meth:`Store.own_connection`
gives a reader a connection of its own for blocking reads.

Failure: any Redis error reaches the caller as :class:`StoreUnavailable`; the ingest path treats
that as "not acknowledged" so the sender retries. A script that Redis no longer knows (restart,
``SCRIPT FLUSH``) is reloaded and the call retried once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from router import fastjson, keys
from router.errors import StoreUnavailable
from router.redis_pipe import Pipe, TakeoverUnsupported, open_pipe

log = logging.getLogger("switchboard.store")

__all__ = [
    "SCRIPT_NAMES",
    "Lane",
    "Store",
    "connect",
    "is_cluster_url",
    "now_ms",
    "open_client",
    "read_lua",
    "stop_task",
]

SCRIPT_NAMES = (
    "agent_presence",
    "agent_remove",
    "agent_status",
    "agent_update",
    "agents_read",
    "case_complete",
    "case_delivered",
    "case_delivery_failed",
    "case_followup",
    "case_reopen",
    "case_reply",
    "case_transfer",
    "case_wrapup",
    "chat_presence",
    "customer_merge",
    "event_ingest",
    "followup_cancel",
    "offer_accept",
    "offer_reject",
    "pool_define",
    "timers_run",
    "workspace_declare",
)


def now_ms() -> int:
    return int(time.time() * 1000)


def read_lua(name: str) -> str:
    """The text of ``router/lua/<name>.lua``."""
    return (resources.files("router") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


# (workspace prefix, transition, its ARGV: now first, the caller's future)
_Pending = tuple[str, str, list[Any], "asyncio.Future[Any]"]

MAX_BATCH = 32  # transitions per EVALSHA: a batch holds Redis for about 5 ms at most


@dataclass(frozen=True, slots=True)
class _Script:
    source: bytes
    sha: str
    evalsha: tuple[str, str, int]  # a batch's command before its key: EVALSHA <sha> 1


# The names of the transitions in the batch (_batch.lua's ARGV layout: name, count, arguments).
_WANT = """local WANT = {}
do
  local i = 1
  while i <= #ARGV do
    local n = tonumber(ARGV[i + 1])
    if n == nil then break end
    WANT[ARGV[i]] = true
    i = i + 2 + n
  end
end"""


def _load_script() -> _Script:
    """_lib, every transition as ``T['<name>'] = function() <body> end``, then _batch.

    A transition's function is made only when the batch runs it (``WANT``): making a closure
    costs a walk of the chunk's open upvalues for each helper it uses, and in a batch of a few
    transitions making all sixteen cost more than running them (callgrind; bench/README.md).
    """
    parts = ["local ARGV = ARGV  -- each transition's own, set by _batch.lua", read_lua("_lib")]
    parts.append("local T = {}")
    parts.append(_WANT)
    for name in SCRIPT_NAMES:
        parts.append(f"if WANT['{name}'] then T['{name}'] = function()\n{read_lua(name)}\nend end")
    parts.append(read_lua("_batch"))
    source = "\n".join(parts).encode()
    sha = hashlib.sha1(source).hexdigest()
    return _Script(source, sha, ("EVALSHA", sha, 1))


def _arg(a: Any) -> bytes:
    t = type(a)
    return a.encode() if t is str else a if t is bytes else str(a).encode()


def _batch_argv(items: list[_Pending]) -> list[bytes]:
    """_batch.lua's ARGV: per transition its name, its argument count, its arguments."""
    out: list[bytes] = []
    for _, name, argv, _ in items:
        out.append(name.encode())
        out.append(b"%d" % len(argv))
        out.extend([_arg(a) for a in argv])
    return out


def _pack(head: tuple[Any, ...], prefix: str, items: list[_Pending]) -> bytes:
    """One ``EVALSHA`` in the Redis protocol: ``head`` (``EVALSHA``, the script, 1), the key,
    then _batch.lua's ARGV (per transition its name, its argument count, its arguments),
    framed by hiredis in C (a Python loop over the arguments was twice as long)."""
    cmd = [*head, prefix]
    add, extend = cmd.append, cmd.extend
    for _, name, argv, _ in items:
        add(name)
        add(len(argv))
        extend(argv)
    return _command(tuple(cmd))


_PACK: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command  # (its stub types one item)


def _command(cmd: tuple[Any, ...]) -> bytes:
    """One command in the Redis protocol (RESP2); an argument that is not str, bytes, int or
    float is sent as its ``str``."""
    try:
        return _PACK(cmd)
    except TypeError:  # a bool, None, ...: hiredis takes none of them
        return _PACK(tuple(_arg(a) for a in cmd))


def _chunks(batch: list[_Pending]) -> list[tuple[str, list[_Pending]]]:
    """The batch as (workspace prefix, transitions) groups of at most MAX_BATCH, in order."""
    groups: dict[str, list[_Pending]] = {}
    for item in batch:
        groups.setdefault(item[0], []).append(item)
    return [
        (prefix, items[i : i + MAX_BATCH])
        for prefix, items in groups.items()
        for i in range(0, len(items), MAX_BATCH)
    ]


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


class Store:
    """Runs transition scripts; concurrent calls share one EVALSHA per workspace.

    ``await store.run("offer_accept", ws, agent, offer)`` returns the script's decoded JSON.
    ``now`` (ARGV[1]) is filled in by the store unless given with ``now=``.
    """

    def __init__(self, client: aioredis.Redis, *, max_inflight: int = 8) -> None:
        self.redis = client
        self._script = _load_script()
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._max_inflight = max_inflight  # batches written and not yet answered
        self._inflight = 0
        self._slots = asyncio.Semaphore(max_inflight)  # the same, for a cluster client
        # the store's own pipelined connection (router/redis_pipe.py); a cluster client's
        # pipeline routes each batch to its slot instead
        self._pool: aioredis.ConnectionPool | None = getattr(client, "connection_pool", None)
        self._pipe: Pipe | None = None
        self._opening: asyncio.Task[Pipe | None] | None = None
        self._piped = self._pool is not None  # False: redis-py's connection could not be taken
        self._timeout = _batch_timeout(client)
        self._tasks: set[asyncio.Task[None]] = set()
        # the loop the store runs on, kept: asyncio.get_running_loop() costs a getpid syscall
        # on Python 3.11, and run() would call it twice per transition
        self._loop: asyncio.AbstractEventLoop | None = None
        self.calls = 0
        self.batches = 0
        # False: every call is its own EVALSHA and round trip, as for a lone caller; the
        # baseline ``python -m bench core`` measures batching against
        self.batching = True

    async def load(self) -> None:
        """Load the scripts into Redis (also done lazily on NOSCRIPT)."""
        try:
            await self.redis.script_load(self._script.source)
        except RedisError as e:
            raise StoreUnavailable(str(e)) from e

    async def run(self, name: str, ws: str, *args: Any, now: int | None = None) -> Any:
        if name not in SCRIPT_NAMES:
            raise ValueError(f"no transition script {name!r}")
        argv = [now_ms() if now is None else now, *args]
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not self.batching:
            await self._send([(keys.prefix(ws), name, argv, fut)], limit=False)
            return fastjson.loads(await fut)
        self._pending.append((keys.prefix(ws), name, argv, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, loop)
        raw = await fut
        return fastjson.loads(raw)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        if not self._pending or self._inflight >= self._max_inflight:
            return  # the rest wait to join one batch, sent when a reply comes (_replied)
        batch, self._pending = self._pending, []
        pipe = self._pipe
        if pipe is not None and not pipe.lost:
            self._write(pipe, batch)  # in this loop turn, no task
        else:  # no connection yet (or it failed): open one first
            task = loop.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _write(self, pipe: Pipe, batch: list[_Pending]) -> None:
        self.calls += len(batch)
        self.batches += 1
        self._inflight += 1
        chunks = _chunks(batch)
        pipe.send(self._packed(chunks), len(chunks), lambda replies: self._replied(chunks, replies))

    def _replied(
        self, chunks: list[tuple[str, list[_Pending]]], replies: list[Any] | StoreUnavailable
    ) -> None:
        """A batch's replies (or the failure that ended its connection), from the pipe."""
        self._inflight -= 1
        if isinstance(replies, StoreUnavailable):
            _fail(chunks, replies)
        elif any(isinstance(r, NoScriptError) for r in replies):
            task = asyncio.get_running_loop().create_task(self._reload_and_retry(chunks))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            try:
                _resolve(chunks, replies)
            except (TypeError, ValueError):  # not the shape _batch.lua returns: no caller hangs
                log.exception("a batch's reply could not be read")
                _fail(chunks, StoreUnavailable("Redis answered a batch with something unexpected"))
        if self._pending and not self._scheduled and self._loop is not None:
            self._flush(self._loop)

    async def _reload_and_retry(self, chunks: list[tuple[str, list[_Pending]]]) -> None:
        """Redis lost the script (a restart, ``SCRIPT FLUSH``): load it, run the batch again."""
        try:
            await self.load()
            pipe = await self._open_pipe()
            if pipe is None:
                replies = await self._execute(chunks)
            else:
                replies = await _roundtrip(pipe, self._packed(chunks), len(chunks))
        except (RedisError, OSError, StoreUnavailable) as e:
            _fail(chunks, StoreUnavailable(str(e)))
            return
        _resolve(chunks, replies)

    async def _send(self, batch: list[_Pending], *, limit: bool = True) -> None:
        """A batch the slow way: over a connection still to be opened, or (a cluster client,
        or batching off) over redis-py's pool or pipeline."""
        chunks = _chunks(batch)
        if limit and self._piped:
            try:
                pipe = await self._open_pipe()
            except StoreUnavailable as e:
                _fail(chunks, e)
                return
            if pipe is not None:
                self._write(pipe, batch)
                return
        self.calls += len(batch)
        self.batches += 1
        try:
            if limit:
                async with self._slots:
                    replies = await self._execute(chunks)
            else:
                replies = await self._execute(chunks)
            if any(isinstance(r, NoScriptError) for r in replies):
                await self.load()
                replies = await self._execute(chunks)
        except (RedisError, OSError) as e:
            _fail(chunks, StoreUnavailable(str(e)))
            return
        _resolve(chunks, replies)

    async def commands(self, *cmds: tuple[Any, ...]) -> list[Any]:
        """Plain Redis commands (``("HGETALL", key)``, ...) in one round trip, on the store's
        own connection: what a pipeline does, without redis-py's work per command, for the
        few reads and acknowledgements on the routing path (a bridge's ``XACK``s).
        Raises ``StoreUnavailable`` if Redis fails or any command errs."""
        if not cmds:
            return []
        pipe = await self._open_pipe() if self._piped else None
        if pipe is not None:
            packed = b"".join([_command(cmd) for cmd in cmds])
            return _refused(await _roundtrip(pipe, packed, len(cmds)))
        try:  # Redis Cluster (its pipeline routes each to its slot), or redis-py's own path
            async with self.redis.pipeline(transaction=False) as rp:
                for cmd in cmds:
                    rp.execute_command(*cmd)
                return _refused(list(await rp.execute(raise_on_error=False)))
        except (RedisError, OSError) as e:
            raise StoreUnavailable(str(e)) from e

    def own_connection(self) -> Lane | None:
        """A connection of the store's kind for one reader's blocking commands (an outbox
        reader's ``XREADGROUP ... BLOCK``, which would hold up a pipeline); None for a cluster
        client."""
        pool = self._pool
        return None if pool is None else Lane(_new_connection(pool), self._timeout)

    async def _open_pipe(self) -> Pipe | None:
        """The store's connection, opened if it is not (one opening shared by all who wait);
        None when redis-py's connection cannot be taken over (redis-py's own path, then)."""
        pipe = self._pipe
        if pipe is not None and not pipe.lost:
            return pipe
        if self._opening is None or self._opening.done():
            self._opening = asyncio.get_running_loop().create_task(self._connect())
        return await asyncio.shield(self._opening)

    async def _connect(self) -> Pipe | None:
        assert self._pool is not None
        try:
            async with asyncio.timeout(self._timeout):
                self._pipe = await open_pipe(_new_connection(self._pool), self._timeout)
        except TakeoverUnsupported as e:
            log.warning("%s; Redis calls take redis-py's slower path", e)
            self._piped = False
            return None
        except (RedisError, OSError, TimeoutError) as e:
            raise StoreUnavailable(f"cannot connect to Redis: {e}") from e
        return self._pipe

    async def _execute(self, chunks: list[tuple[str, list[_Pending]]]) -> list[Any]:
        """The batch on a connection of the client's pool (a cluster client: its pipeline)."""
        pool = getattr(self.redis, "connection_pool", None)
        if pool is None:  # Redis Cluster: its own pipeline routes each call to its slot
            pipe = self.redis.pipeline(transaction=False)
            for prefix, items in chunks:
                pipe.execute_command("EVALSHA", self._script.sha, 1, prefix, *_batch_argv(items))
            return list(await pipe.execute(raise_on_error=False))
        conn = await pool.get_connection()
        try:
            return await _exchange(conn, self._packed(chunks), len(chunks))
        finally:
            await pool.release(conn)

    def _packed(self, chunks: list[tuple[str, list[_Pending]]]) -> bytes:
        # the whole batch written at once, without redis-py packing each argument (a fifth of
        # a router's CPU when it did)
        head = self._script.evalsha
        return b"".join([_pack(head, prefix, items) for prefix, items in chunks])

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._opening is not None and not self._opening.done():
            await stop_task(self._opening)
        if self._pipe is not None:
            self._pipe.close()
        await self.redis.aclose()


class Lane:
    """One connection of the store's kind, held by one reader: a command and its reply, one
    at a time, without redis-py's work per command (:meth:`Store.own_connection`)."""

    def __init__(self, conn: AbstractConnection, timeout: float) -> None:
        self._conn, self._timeout = conn, timeout

    async def call(self, *cmd: Any, blocks_s: float = 0.0) -> Any:
        """The command's reply (raw, as Redis sends it); ``blocks_s``: how long the command
        itself may wait (``BLOCK``), on top of the store's deadline. Raises
        ``StoreUnavailable`` if Redis fails or refuses it."""
        (reply,) = await _commands_on(self._conn, (cmd,), self._timeout + blocks_s)
        return reply

    async def close(self) -> None:
        await self._conn.disconnect()


async def _commands_on(
    conn: AbstractConnection, cmds: Sequence[tuple[Any, ...]], within: float
) -> list[Any]:
    """Plain commands on ``conn`` in one round trip, ``within`` seconds; their replies, or
    ``StoreUnavailable`` if Redis fails or refuses any of them."""
    try:
        async with asyncio.timeout(within):
            packed = b"".join([_command(cmd) for cmd in cmds])
            return _refused(await _exchange(conn, packed, len(cmds)))
    except (RedisError, OSError) as e:
        raise StoreUnavailable(str(e)) from e


def _resolve(chunks: list[tuple[str, list[_Pending]]], replies: list[Any]) -> None:
    """Each transition's future gets its own result, or its error as StoreUnavailable."""
    for (_, items), reply in zip(chunks, replies, strict=True):
        if isinstance(reply, Exception):
            reply = [b"!" + str(reply).encode()] * len(items)
        for item, r in zip(items, reply, strict=True):
            fut = item[3]
            if fut.done():  # its caller gave up
                continue
            if r[:1] == b"!":
                fut.set_exception(StoreUnavailable(r[1:].decode(errors="replace")))
            else:
                fut.set_result(r)


def _fail(chunks: list[tuple[str, list[_Pending]]], error: StoreUnavailable) -> None:
    """Every transition of the batch fails with the error (each its own instance)."""
    for _, items in chunks:
        for item in items:
            if not item[3].done():
                item[3].set_exception(StoreUnavailable(str(error)))


async def _roundtrip(pipe: Pipe, packed: bytes, replies: int) -> list[Any]:
    """Send on the pipe and wait for the replies (raises StoreUnavailable)."""
    fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    def done(result: list[Any] | StoreUnavailable) -> None:
        if fut.done():  # the caller was cancelled; the reply is read all the same
            return
        if isinstance(result, StoreUnavailable):
            fut.set_exception(result)
        else:
            fut.set_result(result)

    pipe.send(packed, replies, done)
    return await fut


def _refused(replies: list[Any]) -> list[Any]:
    for r in replies:
        if isinstance(r, Exception):
            raise StoreUnavailable(str(r))
    return replies


async def _exchange(conn: AbstractConnection, packed: bytes, replies: int) -> list[Any]:
    """Write ``packed`` (``replies`` commands: EVALSHAs, or a few plain ones) and read the
    replies in order, as a pipeline does; each reply is a result or the ``ResponseError``
    (NOSCRIPT, or an error outside the transitions). Any other failure disconnects: no reply
    is left unread for the next user.

    A connection that Redis closed while it sat idle (a restart), or that holds unread bytes,
    is replaced before anything is written on it, as redis-py's pool does before lending one.
    """
    if conn.is_connected:
        try:
            stale = await conn.can_read()
        except (RedisConnectionError, OSError):
            stale = True
        if stale:
            await conn.disconnect()
    try:
        await conn.send_packed_command(packed, check_health=False)
        out: list[Any] = []
        for _ in range(replies):
            try:
                out.append(await conn.read_response())
            except ResponseError as e:
                out.append(e)
        return out
    except BaseException:
        await conn.disconnect()
        raise


def _new_connection(pool: aioredis.ConnectionPool) -> AbstractConnection:
    """A connection made as ``pool`` makes them, less its per-operation socket timeout (its
    user sets a deadline per exchange); not connected until first used."""
    conn: AbstractConnection = pool.connection_class(
        **{**pool.connection_kwargs, "socket_timeout": None}
    )
    return conn


def _batch_timeout(client: aioredis.Redis) -> float:
    pool = getattr(client, "connection_pool", None)
    timeout = pool.connection_kwargs.get("socket_timeout") if pool is not None else None
    return float(timeout) if timeout else 5.0
