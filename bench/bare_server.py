"""The servers under test for the bare-limits bench, and how to run one in its own process.

Two raw ASGI apps (no framework, so only uvicorn and the WebSocket implementation are timed):

* :class:`RelayApp` — ``/consumer/<ch>`` connections wait; every frame arriving on
  ``/producer/<ch>`` is sent, same bytes, to that channel's consumer. ``/idle`` connections
  just stay open (for the memory-per-connection measurement).
* :class:`PipelineApp` — the "bare pipeline": a case frame on ``/ingest/<n>`` is msgpack-decoded,
  matched by one EVALSHA (``lua/bare_match.lua``), and an ``offer`` frame is sent to the chosen
  ``/agent/<id>`` connection; the agent's ``offer.accept`` frame runs a second EVALSHA
  (``lua/bare_accept.lua``), which counts the case done in Redis.

:func:`run_server` starts one of them under uvicorn + uvloop in a child process
(``python -m bench.bare_server``), listening on a loopback socket the parent binds and passes
down, optionally pinned to one CPU, and always stops it on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import redis.asyncio as aioredis
import uvicorn

from bench.bare_os import die_with_parent, raise_nofile_limit
from bench.bare_redis import stop_process

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LUA_DIR = Path(__file__).with_name("lua")
HOST = "127.0.0.1"


async def _refuse_http(scope: Message, send: Send) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "websocket.disconnect":
        pass


class RelayApp:
    """Pure relay: producer frame in → same bytes out on the consumer of the same channel."""

    def __init__(self) -> None:
        self._consumers: dict[str, Send] = {}

    async def prepare(self) -> None:
        """Nothing to prepare; present so both apps start the same way."""

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return await _refuse_http(scope, send)
        role, _, channel = scope["path"].strip("/").partition("/")
        await receive()  # websocket.connect
        if role == "consumer":
            # Registered before the handshake completes, so frames sent after it are relayed.
            self._consumers[channel] = send
            try:
                await send({"type": "websocket.accept"})
                await _until_disconnect(receive)
            finally:
                self._consumers.pop(channel, None)
            return
        await send({"type": "websocket.accept"})
        if role == "producer":
            await self._relay(channel, receive)
        else:
            await _until_disconnect(receive)

    async def _relay(self, channel: str, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            consumer = self._consumers.get(channel)
            if consumer is not None:  # no consumer yet: drop, as a relay would
                await consumer({"type": "websocket.send", "bytes": message.get("bytes")})


class PipelineApp:
    """Bare pipeline: case → match script → offer out → accept in → accept script.

    Keys, all under ``prefix``: ``agents`` (zset), ``offers`` (hash case → agent) and ``done``
    (counter the load generator reads to count completed cases). A case arriving while no
    agent is connected is dropped; the load generator sees it as a missing offer.
    """

    def __init__(self, redis_url: str, prefix: str) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=64, timeout=10)
        self._redis = aioredis.Redis.from_pool(pool)
        self._match = self._redis.register_script((LUA_DIR / "bare_match.lua").read_text())
        self._accept = self._redis.register_script((LUA_DIR / "bare_accept.lua").read_text())
        self._agents_key, self._offers_key = f"{prefix}agents", f"{prefix}offers"
        self._done_key = f"{prefix}done"
        self._agents: dict[str, Send] = {}

    async def prepare(self) -> None:
        """Load both scripts so the first case does not pay for NOSCRIPT + SCRIPT LOAD."""
        for script in (self._match, self._accept):
            await self._redis.script_load(script.script)

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return await _refuse_http(scope, send)
        role, _, name = scope["path"].strip("/").partition("/")
        await receive()  # websocket.connect
        if role == "agent":
            await self._serve_agent(name, receive, send)
        elif role == "ingest":
            await send({"type": "websocket.accept"})
            await self._serve_ingest(receive)
        else:
            await send({"type": "websocket.close", "code": 1008})

    async def _serve_agent(self, agent: str, receive: Receive, send: Send) -> None:
        # Registered before the handshake completes, so a connected agent can be offered work.
        await self._redis.zadd(self._agents_key, {agent: 0})
        self._agents[agent] = send
        try:
            await send({"type": "websocket.accept"})
            keys = [self._offers_key, self._done_key]
            while (message := await receive())["type"] == "websocket.receive":
                frame = msgpack.unpackb(message["bytes"])
                await self._accept(keys=keys, args=[frame["case"], agent])
        finally:
            self._agents.pop(agent, None)
            await self._redis.zrem(self._agents_key, agent)

    async def _serve_ingest(self, receive: Receive) -> None:
        keys = [self._agents_key, self._offers_key]
        while (message := await receive())["type"] == "websocket.receive":
            case = msgpack.unpackb(message["bytes"])
            agent = await self._match(keys=keys, args=[case["id"]])
            send = self._agents.get(agent.decode()) if agent else None
            if send is not None:
                offer = {"type": "offer", "case": case["id"], "agent": agent, "ts": case["ts"]}
                await send({"type": "websocket.send", "bytes": msgpack.packb(offer)})


class _ReadyServer(uvicorn.Server):
    """Prepares the app before listening, then prints ``ready`` for the parent to wait on."""

    def __init__(self, config: uvicorn.Config, prepare: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._prepare = prepare

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self._prepare()
        await super().startup(sockets=sockets)
        sys.stdout.write("ready\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    """Child-process entry point: serve one app on an inherited listening socket."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--app", choices=["relay", "pipeline"], required=True)
    parser.add_argument("--ws", required=True)
    parser.add_argument("--cpu", type=int, default=-1)
    parser.add_argument("--redis-url")
    parser.add_argument("--prefix", default="bare:")
    args = parser.parse_args(argv)
    # Measured on purpose, to compare with its successor; the warning is just noise here.
    warnings.filterwarnings("ignore", message="The `websockets` implementation is deprecated")
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})  # before uvloop starts threads, so they inherit it
    raise_nofile_limit()
    app = RelayApp() if args.app == "relay" else PipelineApp(args.redis_url, args.prefix)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        ws=args.ws,
        ws_per_message_deflate=False,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    _ReadyServer(config, app.prepare).run(sockets=[socket.socket(fileno=args.fd)])


@dataclass(frozen=True)
class ServerHandle:
    """A running server: where it listens, its pid (for CPU time, RSS), the CPU it is pinned to."""

    host: str
    port: int
    pid: int
    cpu: int | None


@contextlib.asynccontextmanager
async def run_server(
    app: str,
    ws: str,
    *,
    cpu: int | None,
    redis_url: str | None = None,
    prefix: str = "bare:",
    start_timeout: float = 20.0,
) -> AsyncIterator[ServerHandle]:
    """Run ``app`` ("relay" or "pipeline") with uvicorn ``ws`` impl in a child process.

    Raises ``RuntimeError`` if the child does not report ready within ``start_timeout`` s.
    On exit the child gets SIGTERM, then SIGKILL after 10 s; it also gets SIGTERM if this
    process dies first.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    argv = ["-m", "bench.bare_server", "--fd", str(listener.fileno())]
    argv += ["--app", app, "--ws", ws, "--cpu", str(-1 if cpu is None else cpu)]
    if redis_url is not None:
        argv += ["--redis-url", redis_url, "--prefix", prefix]
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=(listener.fileno(),),
            preexec_fn=die_with_parent,
        )
    finally:
        listener.close()  # the child holds its own copy
    try:
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(start_timeout):
                line = await proc.stdout.readline()
        except TimeoutError:
            raise RuntimeError(f"{app} server did not start within {start_timeout} s") from None
        if line.strip() != b"ready":
            raise RuntimeError(f"{app} server failed to start (exit code {proc.returncode})")
        yield ServerHandle(host=HOST, port=port, pid=proc.pid, cpu=cpu)
    finally:
        await stop_process(proc, grace=10.0)


if __name__ == "__main__":
    main()
