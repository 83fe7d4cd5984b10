"""The hub: this node's open sockets, and pushes across nodes through Redis pub/sub.

A push for an agent whose console is connected here is written straight to the socket; for an
agent connected elsewhere it is published on the agent's channel, which the node holding the
console subscribes to while it holds it. Chat widgets subscribe to their case's channel, on
which ``case_reply.lua`` publishes agent replies. Pub/sub is fire-and-forget: a console that
misses a push (say, mid-reconnect) gets the truth from the ``hello`` snapshot it receives on
every connect, and a missed offer still ends on time.

There is no backpressure toward pushers: a console whose socket fails is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router import fastjson, keys, wire
from router.errors import CLOSE_CODES
from router.metrics import METRICS
from router.push import chat_agent_frame, chat_frame
from router.store import stop_task

__all__ = ["RAW_SEND", "Conn", "Hub"]

log = logging.getLogger("switchboard.hub")


class Socket(Protocol):
    async def send_bytes(self, data: bytes) -> None: ...
    async def send_text(self, data: str) -> None: ...


# The server's own ASGI send, kept in a WebSocket's scope by router/app.py: Conn writes frames
# with it directly, as Starlette's WebSocket.send_bytes adds state checks per frame (the
# handshake and the close still go through Starlette).
RAW_SEND = "switchboard.raw_send"


_FRAMES_OUT: dict[str, dict[Any, Any]] = {}  # endpoint -> frame type -> its counter


class Conn:
    """One open WebSocket and the codec it speaks."""

    __slots__ = ("_raw", "closed", "codec", "endpoint", "held", "label", "seq", "takes_over", "ws")

    def __init__(
        self, ws: Socket, codec: wire.Codec, label: str = "", *, takes_over: bool = False,
        seq: int = 0, endpoint: str = "",
    ) -> None:  # fmt: skip
        self.ws = ws
        # frames sent are counted under this endpoint ("agent", "bridge", "chat"; "" = not)
        self.endpoint = endpoint
        # an agent console (not a supervisor's page): one per agent; a newer one (higher seq,
        # counted in Redis per agent) takes over
        self.takes_over = takes_over
        self.seq = seq
        # the server's send (RAW_SEND), when the socket is an accepted ASGI WebSocket
        self._raw: Callable[[dict[str, Any]], Any] | None = getattr(ws, "scope", {}).get(RAW_SEND)
        self.codec = codec
        self.label = label
        self.closed = False
        self.held: list[bytes | str] | None = None

    def hold(self) -> None:
        """Queue everything sent from now on until ``release``: a console subscribes to its
        pushes before reading its snapshot, and no push may overtake the snapshot."""
        self.held = []

    async def release(self, first: dict[str, Any]) -> None:
        """Send ``first`` (the snapshot), then what was held, in order; stop holding."""
        self.count_out(first.get("type"))
        await self._write(wire.encode(first, self.codec))
        while self.held:
            await self._write(self.held.pop(0))
        self.held = None

    async def send(self, frame: dict[str, Any]) -> None:
        self.count_out(frame.get("type"))
        await self.send_encoded(wire.encode(frame, self.codec))

    def count_out(self, ftype: Any) -> None:
        """Count a frame sent (``switchboard_frames_total{direction="out"}``); its children
        are looked up once per (endpoint, type). Types are the server's own, never a client's."""
        if self.endpoint:
            children = _FRAMES_OUT.get(self.endpoint)
            if children is None:
                children = _FRAMES_OUT[self.endpoint] = {}
            child = children.get(ftype)
            if child is None:
                label = ftype if isinstance(ftype, str) else "?"
                child = children[ftype] = METRICS.frames.labels(self.endpoint, "out", label)
            child.inc()

    async def send_encoded(self, data: bytes | str) -> None:
        if self.held is not None:
            self.held.append(data)
            return
        await self._write(data)

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (its session's loop then ends as for any disconnect)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            if self._raw is not None:
                await self._raw({"type": "websocket.close", "code": code, "reason": reason})
            else:
                await self.ws.close(code, reason)  # type: ignore[attr-defined]

    async def _write(self, data: bytes | str) -> None:
        if self.closed:
            return
        try:
            if self._raw is not None:
                key = "bytes" if isinstance(data, bytes) else "text"
                await self._raw({"type": "websocket.send", key: data})
            elif isinstance(data, bytes):
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_text(data)
        except Exception:
            self.closed = True


class Hub:
    def __init__(self, redis: aioredis.Redis, node: str) -> None:
        self.redis = redis
        self.node = node
        self.agents: dict[tuple[str, str], set[Conn]] = {}
        self.chats: dict[tuple[str, str], set[Conn]] = {}
        self.supervisors: dict[str, set[Conn]] = {}
        self._routes: dict[bytes, tuple[str, str, str]] = {}
        self._ps = redis.pubsub(ignore_subscribe_messages=True)
        self._task: asyncio.Task[None] | None = None
        self.on_node_message: Callable[[dict[str, Any]], None] | None = None
        self.relays_skipped = 0  # offers not published: no other node held the agent's consoles

    async def start(self) -> None:
        await self._ps.subscribe(f"sb:node:{self.node}")
        self._task = asyncio.create_task(self._reader(), name="hub-reader")

    async def stop(self) -> None:
        if self._task:
            await stop_task(self._task)
        with contextlib.suppress(RedisError, OSError):
            await self._ps.aclose()

    # -- membership -------------------------------------------------------------------------

    async def add_agent(self, ws: str, agent: str, conn: Conn) -> None:
        conns = self.agents.setdefault((ws, agent), set())
        conns.add(conn)
        if len(conns) == 1:
            await self._subscribe(keys.push_agent(ws, agent), ("a", ws, agent))

    async def remove_agent(self, ws: str, agent: str, conn: Conn) -> None:
        conns = self.agents.get((ws, agent))
        if conns is None:
            return
        conns.discard(conn)
        if not conns:
            del self.agents[(ws, agent)]
            await self._unsubscribe(keys.push_agent(ws, agent))

    async def watch_case(self, ws: str, case: str, conn: Conn) -> None:
        conns = self.chats.setdefault((ws, case), set())
        if conn in conns:
            return
        conns.add(conn)
        if len(conns) == 1:
            await self._subscribe(keys.push_case(ws, case), ("c", ws, case))

    async def unwatch_case(self, ws: str, case: str, conn: Conn) -> None:
        conns = self.chats.get((ws, case))
        if conns is None:
            return
        conns.discard(conn)
        if not conns:
            del self.chats[(ws, case)]
            await self._unsubscribe(keys.push_case(ws, case))

    async def _agent_name(self, ws: str, body: dict[str, Any]) -> str:
        """An agent's display name for a customer's widget: the one the event carries
        (chat_event in _lib.lua), "Agent" for an agent without one. An event published by a node
        still on the previous release carries none: read it then."""
        name = body.get("name")
        if name is None:
            agent = str(body.get("agent", ""))
            try:
                raw = await self.redis.hget(keys.agent(ws, agent), "name") if agent else None
            except RedisError:
                raw = None
            name = raw.decode() if isinstance(raw, bytes) else ""
        return name if isinstance(name, str) and name else "Agent"

    def connected_agents(self) -> int:
        return sum(len(c) for c in self.agents.values())

    async def _subscribe(self, channel: str, route: tuple[str, str, str]) -> None:
        self._routes[channel.encode()] = route
        try:
            await self._ps.subscribe(channel)
        except RedisError as e:
            log.warning("subscribe %s failed: %s", channel, e)

    async def _unsubscribe(self, channel: str) -> None:
        self._routes.pop(channel.encode(), None)
        try:
            await self._ps.unsubscribe(channel)
        except RedisError as e:
            log.warning("unsubscribe %s failed: %s", channel, e)

    # -- delivery -----------------------------------------------------------------------------

    async def notify(
        self, ws: str, agent: str, frame: dict[str, Any], *, nodes: Sequence[str] | None = None
    ) -> None:
        """Deliver a frame to every console of the agent, here or on another node.

        The frame is also published on the agent's channel, for consoles on other nodes (a
        second tab, or a reconnect that landed elsewhere before this socket noticed it was
        dead) — unless ``nodes`` says that, when the transition ran, no other node held one.
        Our own node skips its own publications.
        """
        conns = self.agents.get((ws, agent))
        if conns:
            await self.broadcast(conns, frame)
        if nodes is not None and all(n == self.node for n in nodes):
            self.relays_skipped += 1
            return
        payload = fastjson.dumps({"n": self.node, "f": frame})
        try:
            await self.redis.publish(keys.push_agent(ws, agent), payload)
        except RedisError as e:
            log.warning("publish to %s failed: %s", agent, e)

    async def broadcast(self, conns: set[Conn], frame: dict[str, Any]) -> None:
        if frame.get("type") == "session.replaced":
            # the agent opened a console elsewhere: every other console of theirs closes (the
            # supervisor's page stays), so no two screens act on the same cases
            newer = frame.get("seq")
            newer = newer if isinstance(newer, int) else 0
            conns = {c for c in conns if c.takes_over and c.seq < newer}
            for c in conns:
                await c.send(frame)
                await c.close(CLOSE_CODES["replaced"], "opened elsewhere")
            return
        encoded: dict[str, bytes | str] = {}
        for c in list(conns):
            data = encoded.get(c.codec)
            if data is None:
                data = encoded[c.codec] = wire.encode(frame, c.codec)
            c.count_out(frame.get("type"))
            await c.send_encoded(data)
        if frame.get("type") == "session.revoked":
            # the agent's role or password changed: their sessions end here and now, whatever
            # the console does with the frame (it signs out)
            for c in list(conns):
                await c.close(CLOSE_CODES["policy"], "signed out")

    async def _reader(self) -> None:
        lost = 0  # attempts since it was lost: said at the first, every 20th (10 s), and back
        while True:
            try:
                async for msg in self._ps.listen():
                    if msg.get("type") == "message":
                        await self._route(msg["channel"], msg["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                if lost % 20 == 0:
                    log.warning("pub/sub connection lost (%s); resubscribing", e)
                lost += 1
                await asyncio.sleep(0.5)
                try:
                    await self._ps.subscribe(
                        f"sb:node:{self.node}", *[c.decode() for c in self._routes]
                    )
                except (RedisError, OSError):
                    continue
                log.warning("pub/sub connection back after %d attempts", lost)
                lost = 0

    async def _route(self, channel: bytes, data: bytes) -> None:
        route = self._routes.get(channel)
        try:
            body = fastjson.loads(data)
        except ValueError:
            return
        if route is None:
            if self.on_node_message is not None and isinstance(body, dict):
                self.on_node_message(body)
            return
        kind, ws, ident = route
        if kind == "a":
            conns = self.agents.get((ws, ident))
            if conns and isinstance(body, dict) and body.get("n") != self.node:
                await self.broadcast(conns, body["f"])
        elif kind == "c":
            conns = self.chats.get((ws, ident))
            if conns and isinstance(body, dict):
                if "event" in body:  # the agent joined, handed the chat on, or closed it
                    name = await self._agent_name(ws, body)
                    await self.broadcast(conns, chat_agent_frame(body, name))
                else:
                    await self.broadcast(conns, chat_frame(body))
