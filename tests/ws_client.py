"""A small typed WebSocket client for end-to-end tests of the Switchboard protocol, and
``Stack``: a real Redis with real ``switchboard serve`` nodes on it.

``WsClient`` wraps one ``websockets`` connection speaking either codec. Every ``send`` gets a
fresh ``ref`` unless one is given; ``request`` sends and waits for the ``ack``/``error`` with the
same ref. Frames that arrive while waiting for something else are kept in a backlog, so nothing
a test might look for later is lost; every wait has a deadline and fails with what was seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import msgpack
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from router import keys
from router.embedded import EmbeddedRedis
from router.store import Store, connect, is_cluster_url
from router.switch import Switch
from tests.server import BRIDGE_KEY, ServerProcess, write_config
from tests.util import wait_for

__all__ = [
    "CHAT_ONLY_KEY",
    "JSON",
    "MSGPACK",
    "OTHER_CHAT_KEY",
    "Frame",
    "Stack",
    "WsClient",
    "bridge_event",
    "connect_agent",
    "connect_bridge",
    "connect_chat",
    "event",
    "open_ws",
    "team_workspace",
    "uid",
]

MSGPACK = "switchboard.v1.msgpack"
JSON = "switchboard.v1.json"
DEADLINE = 10.0
CHAT_ONLY_KEY = "chat-only-key"
OTHER_CHAT_KEY = "other-chat-key"
#: see tests/server.py
BRIDGE_IDS = {BRIDGE_KEY: "test-bridge", CHAT_ONLY_KEY: "chat-only", OTHER_CHAT_KEY: "other-chat"}


def bridge_event(event_id: str, key: str = BRIDGE_KEY) -> str:
    """How the router knows a bridge's event id (its dedupe key's): each bridge's ids are its
    own, so another bridge sending the same id is not a repeat of it."""
    return f"bridge:{BRIDGE_IDS[key]}|{event_id}"


Frame = dict[str, Any]
Match = Callable[[Frame], bool]
_refs = itertools.count(1)


class WsClient:
    """One connection. Not safe for concurrent readers: one coroutine reads at a time."""

    def __init__(self, ws: ClientConnection, codec: str) -> None:
        self.ws = ws
        self.codec = codec
        self.backlog: list[Frame] = []
        self.seen: list[Frame] = []  # everything received, for failure messages
        self.refs: set[Any] = set()  # every ref sent

    # -- sending ----------------------------------------------------------------------------

    def encode(self, frame: Mapping[str, Any]) -> bytes | str:
        if self.codec == MSGPACK:
            data: bytes = msgpack.packb(dict(frame), use_bin_type=True)
            return data
        return json.dumps(dict(frame))

    async def send(self, type_: str, ref: Any = None, **fields: Any) -> Any:
        """Send a frame with a ``ref`` (a fresh one unless given); return the ref."""
        if ref is None:
            ref = f"r{next(_refs)}"
        self.refs.add(ref)
        await self.send_raw(self.encode({"type": type_, "ref": ref, **fields}))
        return ref

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def request(self, type_: str, *, within: float = DEADLINE, **fields: Any) -> Frame:
        """Send a frame and return the server's answer to it (``ack`` or ``error``)."""
        ref = await self.send(type_, **fields)
        return await self.answer(ref, within=within)

    async def ok(self, type_: str, *, within: float = DEADLINE, **fields: Any) -> Frame:
        """Like ``request``, but the answer must be an ``ack``."""
        got = await self.request(type_, within=within, **fields)
        assert got["type"] == "ack", f"{type_} {fields}: expected ack, got {got}"
        return got

    async def fails(
        self, type_: str, code: str, *, within: float = DEADLINE, **fields: Any
    ) -> Frame:
        """Like ``request``, but the answer must be an ``error`` with this ``code``."""
        got = await self.request(type_, within=within, **fields)
        assert got["type"] == "error", f"{type_}: expected error {code}, got {got}"
        assert got["code"] == code, f"{type_}: expected error {code}, got {got}"
        assert isinstance(got.get("message"), str) and got["message"], got
        return got

    async def answer(self, ref: Any, *, within: float = DEADLINE) -> Frame:
        return await self.wait(
            lambda f: f.get("ref") == ref and f["type"] in ("ack", "error"),
            within=within,
            what=f"answer to ref {ref!r}",
        )

    # -- receiving --------------------------------------------------------------------------

    def decode(self, data: bytes | str) -> Frame:
        if isinstance(data, bytes):
            assert self.codec == MSGPACK, "binary frame on a JSON connection"
            frame = msgpack.unpackb(data, raw=False)
        else:
            assert self.codec == JSON, "text frame on a msgpack connection"
            frame = json.loads(data)
        assert isinstance(frame, dict) and isinstance(frame.get("type"), str), frame
        return frame

    async def recv(self, within: float = DEADLINE) -> Frame:
        """The next frame (from the backlog first). ConnectionClosed if the server closed."""
        if self.backlog:
            return self.backlog.pop(0)
        frame = self.decode(await asyncio.wait_for(self.ws.recv(), within))
        self.seen.append(frame)
        return frame

    async def wait(
        self,
        match: Match,
        *,
        within: float = DEADLINE,
        what: str = "frame",
    ) -> Frame:
        """The first frame, old or new, for which ``match`` holds; others stay in the backlog."""
        for i, f in enumerate(self.backlog):
            if match(f):
                return self.backlog.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            left = deadline - loop.time()
            try:
                if left <= 0:
                    raise TimeoutError
                frame = self.decode(await asyncio.wait_for(self.ws.recv(), left))
            except TimeoutError:
                raise AssertionError(
                    f"no {what} within {within:g} s; received {self.seen[-20:]}"
                ) from None
            self.seen.append(frame)
            if match(frame):
                return frame
            self.backlog.append(frame)

    async def expect(
        self,
        type_: str,
        *,
        within: float = DEADLINE,
        **fields: Any,
    ) -> Frame:
        """The first frame of this type whose given fields have the given values."""

        def match(f: Frame) -> bool:
            return f["type"] == type_ and all(f.get(k) == v for k, v in fields.items())

        return await self.wait(match, within=within, what=f"{type_} {fields or ''}")

    async def offer_for(self, case: str, *, within: float = DEADLINE) -> Frame:
        """The ``offer`` frame for this case."""
        return await self.wait(
            lambda f: f["type"] == "offer" and f["case"]["id"] == case,
            within=within,
            what=f"offer for case {case}",
        )

    def unsolicited(self) -> list[Frame]:
        """Frames received that were neither the greeting nor answers to this client's frames."""
        return [
            f
            for f in self.seen
            if f["type"] not in ("hello", "welcome")
            and not (f["type"] in ("ack", "error") and f.get("ref") in self.refs)
        ]

    def pending(self, type_: str) -> list[Frame]:
        """Frames of this type already received and not consumed."""
        return [f for f in self.backlog if f["type"] == type_]

    async def closed(self, within: float = DEADLINE) -> int | None:
        """Read (into the backlog) until the server closes; return the close code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise AssertionError(f"still open after {within:g} s; got {self.seen[-20:]}")
                try:
                    data = await asyncio.wait_for(self.ws.recv(), left)
                except TimeoutError:
                    continue
                frame = self.decode(data)
                self.seen.append(frame)
                self.backlog.append(frame)
        except ConnectionClosed:
            pass
        return self.ws.close_code  # 1006 when the connection dropped without a close frame

    async def close(self) -> None:
        await self.ws.close()

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_ws(
    url: str,
    codec: str | None = JSON,
    *,
    headers: Mapping[str, str] | None = None,
    origin: str | None = None,
    subprotocols: list[str] | None = None,
    compression: str | None = None,
    default: str = JSON,
) -> WsClient:
    """Connect to ``url`` offering ``codec``; with None, offer no subprotocol and speak the
    endpoint's ``default``. ``compression="deflate"`` offers permessage-deflate."""
    if subprotocols is None:
        subprotocols = [codec] if codec else []
    ws = await ws_connect(
        url,
        subprotocols=subprotocols or None,  # type: ignore[arg-type]
        additional_headers=dict(headers or {}),
        origin=origin,  # type: ignore[arg-type]
        compression=compression,
        max_size=None,
        max_queue=None,  # never stop reading: a close must not wait behind unread frames
        open_timeout=DEADLINE,
        proxy=None,
        ping_interval=None,
    )
    return WsClient(ws, ws.subprotocol or default)


async def connect_agent(
    base: str, token: str, codec: str = JSON, *, origin: str | None = None, client: str = ""
) -> WsClient:
    """An agent console on ``base`` (``ws://host:port``) with a WebSocket token; ``client``
    "supervisor" connects as the supervisor's page (it takes over from no console)."""
    q = {"token": token, **({"client": client} if client else {})}
    return await open_ws(f"{base}/ws/agent?{urlencode(q)}", codec, origin=origin)


async def connect_bridge(base: str, key: str, codec: str = MSGPACK) -> WsClient:
    """A channel bridge authenticated by its key."""
    return await open_ws(f"{base}/ws/bridge", codec, headers={"Authorization": f"Bearer {key}"})


async def connect_chat(
    base: str, *, workspace: str = "", token: str = "", codec: str = JSON, origin: str | None = None
) -> WsClient:
    """A chat widget: new visitor (``workspace``) or returning one (``token``)."""
    q = {"token": token} if token else {"workspace": workspace}
    return await open_ws(f"{base}/ws/chat?{urlencode(q)}", codec, origin=origin)


# -- a running system: one Redis, some nodes, helpers to sign in and connect ---------------------


def uid(prefix: str = "") -> str:
    """A fresh id for events, threads, customers: tests share a module's Redis."""
    return f"{prefix}{secrets.token_hex(5)}"


def team_workspace(
    teams: Mapping[str, int], *, extra_agents: Sequence[Frame] = (), ws: str = "acme", **top: Any
) -> Frame:
    """A workspace where each team is isolated: queue ``<team>`` is served by agents
    ``<team>1..n`` (skill ``<team>``) and gets the events whose attribute ``team`` is the team's
    name. Events with no team (the chat widget's) go to the ``support`` queue, which has one
    agent unless ``teams`` says otherwise. Every agent's password is ``pw``."""
    sizes = {"support": 1, **teams}
    agents = [
        {
            "id": f"{t}{i}",
            "name": f"{t.title()} {i}",
            "password": "pw",
            "attributes": {"skills": [t], "languages": ["en"]},
            "capacity": {"chat": 2, "email": 3, "voice": 1},
        }
        for t, n in sizes.items()
        for i in range(1, n + 1)
    ]
    return {
        "id": ws,
        "queues": [{"id": t, "target": f"skills HAS '{t}'"} for t in sizes],
        "workflow": {
            "task_routing": {
                "filters": [
                    {
                        "filter_friendly_name": t,
                        "expression": f"team == '{t}'",
                        "targets": [{"queue": t}],
                    }
                    for t in sizes
                    if t != "support"
                ],
                "default_filter": {"queue": "support"},
            }
        },
        "agents": [*agents, *extra_agents],
        **top,
    }


def event(
    team: str,
    *,
    eid: str = "",
    channel: str = "chat",
    email: str = "",
    kind: str = "message",
    thread: str = "",
    text: str = "hello",
    **kw: Any,
) -> Frame:
    """An ``event`` frame body routed to ``team``'s queue; fresh ids unless given."""
    return {
        "id": eid or uid("e"),
        "channel": channel,
        "kind": kind,
        "identities": {"email": email or f"{uid('c')}@example.com"},
        "thread": thread or uid("t"),
        "text": text,
        "attributes": {"team": team},
        **kw,
    }


class Stack:
    """One real Redis and ``switchboard serve`` nodes on it; closes what it opened."""

    def __init__(self, root: Path, decl: Frame, redis: EmbeddedRedis | None, url: str) -> None:
        self.root, self.decl, self._redis, self.url = root, decl, redis, url
        # a Redis Cluster URL (redis+cluster://) gets a cluster client, like the server's
        self.redis = connect(url) if is_cluster_url(url) else aioredis.Redis.from_url(url)
        self.config = write_config(root / "workspace.json", decl)
        self.nodes: list[ServerProcess] = []
        self._clients: list[WsClient] = []
        self.http = httpx.AsyncClient(timeout=DEADLINE)
        self._sessions: dict[tuple[str, str], str] = {}

    @classmethod
    async def start(
        cls,
        root: Path,
        decl: Frame,
        *,
        nodes: Sequence[Mapping[str, str]] = ({},),
        redis_url: str = "",
    ) -> Stack:
        """Nodes on a fresh embedded Redis, or on ``redis_url`` (left running) when given."""
        server, url = None, redis_url
        if not redis_url:
            server = EmbeddedRedis(root / "redis", appendonly=False)
            url = await server.start()
        stack = cls(root, decl, server, url)
        try:
            for env in nodes:
                await stack.add_node(env)
        except BaseException:
            await stack.stop()
            raise
        return stack

    async def add_node(self, env: Mapping[str, str] | None = None) -> ServerProcess:
        """Start one more node (in a thread: a start takes about a second)."""
        n = len(self.nodes)
        node = await asyncio.to_thread(
            ServerProcess,
            self.root / f"node{n}",
            self.config,
            redis_url=self.url,
            env=dict(env or {}),
        )
        self.nodes.append(node)
        return node

    async def stop(self) -> None:
        for c in self._clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.close(), 2)
        await self.http.aclose()
        for node in self.nodes:
            await asyncio.to_thread(node.stop)
        await self.redis.aclose()
        if self._redis is not None:
            await self._redis.stop()

    def track(self, client: WsClient) -> WsClient:
        self._clients.append(client)
        return client

    async def login(
        self, agent: str, *, node: int = 0, workspace: str = "acme", password: str = "pw"
    ) -> Frame:
        """``POST /api/login``: session token, WebSocket token, profile."""
        r = await self.http.post(
            f"{self.nodes[node].url}/api/login",
            json={"workspace": workspace, "agent": agent, "password": password},
        )
        assert r.status_code == 200, r.text
        data: Frame = r.json()
        return data

    async def ws_token(self, agent: str, *, node: int = 0, workspace: str = "acme") -> str:
        """A fresh WebSocket token, as a console gets one before each (re)connect: signed in
        once per agent (a password check costs ~0.1 s), then ``POST /api/ws-token``."""
        session = self._sessions.get((workspace, agent))
        if session is None:
            session = (await self.login(agent, node=node, workspace=workspace))["token"]
            self._sessions[(workspace, agent)] = session
        r = await self.http.post(
            f"{self.nodes[node].url}/api/ws-token", headers={"Authorization": f"Bearer {session}"}
        )
        assert r.status_code == 200, r.text
        token: str = r.json()["token"]
        return token

    async def agent(
        self,
        agent: str,
        *,
        node: int = 0,
        codec: str = JSON,
        workspace: str = "acme",
        status: str | None = None,
        client: str = "",
    ) -> tuple[WsClient, Frame]:
        """A signed-in console and its ``hello``; with ``status``, set it first. A second
        console of one agent closes the first (session.replaced), unless ``client`` is
        "supervisor" (the supervisor's page)."""
        token = await self.ws_token(agent, node=node, workspace=workspace)
        conn = await connect_agent(self.nodes[node].ws_url, token, codec, client=client)
        client_ = self.track(conn)
        hello = await client_.expect("hello")
        if status is not None:
            await client_.ok("status", status=status)
        return client_, hello

    async def bridge(
        self, *, node: int = 0, key: str = BRIDGE_KEY, codec: str = MSGPACK
    ) -> WsClient:
        """A bridge connection, once its outbox consumer group exists (deliveries from then on
        reach it)."""
        client = self.track(await connect_bridge(self.nodes[node].ws_url, key, codec))
        group = f"bridge:{BRIDGE_IDS[key]}".encode()

        async def ready() -> bool:
            try:
                groups = await self.redis.xinfo_groups(keys.outbox("acme"))
            except ResponseError:
                return False
            return any(g["name"] == group for g in groups)

        await wait_for(ready, DEADLINE, message="the bridge's outbox group was not created")
        return client

    async def apply_workspace(self, decl: Frame) -> None:
        """Declare one more workspace through the routing core (a config file holds one)."""
        store = Store(connect(self.url))
        await store.load()
        try:
            await Switch(store).apply_workspace(decl)
        finally:
            await store.close()

    async def chat(
        self, *, node: int = 0, workspace: str = "acme", token: str = "", codec: str = JSON
    ) -> tuple[WsClient, Frame]:
        """A chat widget and its ``welcome``."""
        client = self.track(
            await connect_chat(
                self.nodes[node].ws_url, workspace=workspace, token=token, codec=codec
            )
        )
        return client, await client.expect("welcome")

    async def case(self, case: str, workspace: str = "acme") -> dict[str, str]:
        """A case's stored fields, straight from Redis."""
        raw = await self.redis.hgetall(keys.case(workspace, case))
        return {k.decode(): v.decode() for k, v in raw.items()}
