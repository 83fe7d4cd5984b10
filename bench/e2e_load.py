"""The end-to-end bench's load generator: bridges that send events, agents that answer offers.

Everything runs on one asyncio loop over the hand-framed client of :mod:`bench.bare_wsclient`
(the ``websockets`` client spends about as much CPU per frame as the server; on a 2-core box
the generator must stay light). Frames are msgpack. Callbacks run on the loop and stay short.

What is timed, all with this process's ``perf_counter_ns`` (no clocks to synchronise):

* **ingest → offer** — an event carries ``attributes.t0`` (ns since the load started, stamped
  when the frame is handed to the socket, which writes at the end of the loop turn); the case
  keeps its attributes, so the offer frame carries it back.
* **agent freed → next offer** — from writing a ``case.complete`` to the agent's next offer,
  counted only for backlog agents while a queue of calls is kept standing in front of them.
* **accept → ack** — from writing ``offer.accept`` to its ``ack`` (matched by ``ref``).

And counted, never assumed: every acknowledged new case must be offered exactly once.
``lost`` = acknowledged cases never offered (after a drain); ``duplicated`` = offers for a case
that already had a live offer (a re-offer after a failed accept is not a duplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from bench.bare_wsclient import WsClient, WsError, connect
from bench.server_proc import Server
from router.auth import Tokens

__all__ = ["AgentConn", "Load", "PhaseStats", "open_ws"]

SUBPROTOCOL = "switchboard.v1.msgpack"
CHANNELS = ("chat",) * 5 + ("email",) * 3 + ("voice",) * 2  # 50 / 30 / 20 %
TOPICS = ("support",) * 5 + ("billing",) * 3 + ("sales",) * 2
TEXT = {
    "chat": "Hi, my order #4411 has not arrived yet. Can you check where it is?",
    "email": "Hello,\n\nI was charged twice for my last invoice. Please refund one.\n\nThanks",
    "voice": "",
}
_pack = msgpack.Packer(use_bin_type=True).pack


async def open_ws(
    host: str, port: int, path: str, on_message: Callable[[bytes], None] | None,
    headers: dict[str, str] | None = None, within: float = 30.0,
) -> WsClient:  # fmt: skip
    """Open a hand-framed WebSocket speaking ``switchboard.v1.msgpack``, with extra headers.

    Raises ``WsError``/``OSError``, or ``TimeoutError`` after ``within`` seconds.
    """
    return await connect(
        host, port, path, on_message,
        headers={"Sec-WebSocket-Protocol": SUBPROTOCOL, **(headers or {})}, within=within,
    )  # fmt: skip


@dataclass
class PhaseStats:
    """What one phase measured. Latencies in ns; counters over the counted window."""

    name: str
    ingest_offer_ns: list[int] = field(default_factory=list)
    freed_ns: list[int] = field(default_factory=list)
    accept_ack_ns: list[int] = field(default_factory=list)
    offers: int = 0
    completed: int = 0
    sent: int = 0
    send_lag_ms: list[float] = field(default_factory=list)


@dataclass
class AgentConn:
    id: str
    backlog: bool
    client: WsClient | None = None
    hello: bool = False
    freed_at: int = 0  # perf_counter_ns of the last case.complete written, until the next offer
    open_cases: int = 0


@dataclass
class _Request:
    kind: str  # event | accept | complete | status
    sent_ns: int
    agent: AgentConn | None = None
    case: str = ""
    backlog: bool = False


class Load:
    """Bridges and agents on one server; phases switch what is counted and how agents behave."""

    def __init__(self, server: Server, *, think_s: float, handle_s: float) -> None:
        self.server = server
        self.think_s, self.handle_s = think_s, handle_s
        self.backlog_handle_s = 0.1
        self.base_ns = time.perf_counter_ns()
        self.run = random.randrange(100, 1000)  # keeps ids unique against a reused Redis
        self.tokens = Tokens(server.secret)
        self.bridges: list[WsClient] = []
        self.agents: list[AgentConn] = []
        self.phase = PhaseStats("connect")
        self.counting = False
        self.refill_main = False  # saturated phase: a new event for every offer
        self.refill_backlog = False  # freed phase: a new call for every backlog offer
        self._refs = itertools.count(1)
        self._seq = itertools.count()
        self._requests: dict[int, _Request] = {}
        self.acked: set[str] = set()  # new cases whose event was acknowledged
        self.unoffered: set[str] = set()  # acknowledged, no offer seen yet (kept as they come)
        self.cases: dict[str, str] = {}  # case → live | failed (accept refused) | done
        self.duplicated = 0
        self.reoffered = 0
        self.rescinded = 0
        self.delivered = 0  # call.connects (and replies) the bridges answered "delivered" to
        self.not_created: Counter[str] = Counter()  # ack actions other than "created"
        self.errors: Counter[str] = Counter()
        self.open_cases = 0  # offered, not yet completed
        self.second_lat_ns: list[int] = []  # ingest → offer this second (progress, timeline)
        self.second_offers = 0
        self.second_completed = 0
        self.hello_bytes = 0
        self._loop = asyncio.get_running_loop()

    # -- connections -----------------------------------------------------------------------

    async def connect_bridges(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.server.bridge_key}"}
        for _ in range(n):
            held: list[WsClient] = []  # the connection, for its callback to answer on
            client = await open_ws(
                self.server.host, self.server.port, "/ws/bridge",
                lambda payload, held=held: self._on_bridge(payload, held[0]), headers,
            )  # fmt: skip
            held.append(client)
            self.bridges.append(client)

    async def connect_agents(self, ids: list[str], *, backlog: bool, concurrency: int = 16) -> None:
        """Open a console per agent, wait for every ``hello``, then set them available."""
        conns = [AgentConn(i, backlog) for i in ids]
        gate = asyncio.Semaphore(concurrency)

        async def one(agent: AgentConn) -> None:
            async with gate:
                path = self.server.agent_path(agent.id, self.tokens)
                agent.client = await open_ws(
                    self.server.host, self.server.port, path, self._on_agent_for(agent)
                )

        await asyncio.gather(*(one(a) for a in conns))
        self.agents += conns
        await self._until(lambda: all(a.hello for a in conns), 60, "agents' hello")
        for agent in conns:
            self._request(agent, "status", {"type": "status", "status": "available"})
        await self._until(lambda: not self._pending("status"), 60, "agents' status acks")

    def connected_agents(self) -> int:
        return sum(1 for a in self.agents if a.hello and a.client and not a.client.closed.done())

    def close(self) -> None:
        for client in self.bridges:
            client.close()
        for agent in self.agents:
            if agent.client is not None:
                agent.client.close()

    # -- sending -----------------------------------------------------------------------------

    def send_event(self, *, backlog: bool = False, topic: str = "") -> None:
        """Write one event frame: a new customer and thread every time (so a new case)."""
        n = next(self._seq)
        ref = next(self._refs)
        if backlog:
            channel, topic = "voice", "backlog"
        else:
            channel, topic = CHANNELS[n % 10], topic or TOPICS[(n * 7) % 10]
        now = time.perf_counter_ns()
        event: dict[str, Any] = {
            "type": "event", "ref": ref, "id": f"ev{self.run}-{n}", "channel": channel,
            "kind": "call.offered" if channel == "voice" else "message",
            "thread": f"t{self.run}-{n}", "text": TEXT[channel],
            "attributes": {"topic": topic, "t0": now - self.base_ns},
        }  # fmt: skip
        if channel == "voice":
            event["identities"] = {"phone": f"+1{self.run}{n:010d}"}
        else:
            event["identities"] = {"email": f"c{n}.{self.run}@bench.test"}
        if channel == "email":
            event["subject"] = "Charged twice"
        self._requests[ref] = _Request("event", now, backlog=backlog)
        self.phase.sent += 1
        self.bridges[n % len(self.bridges)].send(_pack(event))

    def _request(self, agent: AgentConn, kind: str, frame: dict[str, Any], case: str = "") -> None:
        ref = next(self._refs)
        frame["ref"] = ref
        now = time.perf_counter_ns()
        self._requests[ref] = _Request(kind, now, agent, case)
        if kind == "complete" and agent.backlog:
            agent.freed_at = now
        assert agent.client is not None
        agent.client.send(_pack(frame))

    def _pending(self, kind: str) -> int:
        return sum(1 for r in self._requests.values() if r.kind == kind)

    # -- receiving ---------------------------------------------------------------------------

    def _on_bridge(self, payload: bytes, bridge: WsClient) -> None:
        frame = msgpack.unpackb(payload)
        kind = frame.get("type")
        if kind == "call.connect" or kind == "deliver":
            # as a real bridge does once it has connected the call (or sent the reply): the
            # server then acknowledges the outbox entry
            bridge.send(_pack({"type": "delivered", "ref": "d", "id": frame["id"]}))
            self.delivered += 1
            return
        if kind not in ("ack", "error"):
            return
        if frame.get("ref") == "d":  # the answer to a "delivered"
            if kind == "error":
                self.errors[f"delivered:{frame.get('code')}"] += 1
            return
        req = self._requests.pop(frame.get("ref", -1), None)
        if req is None:
            self.errors[f"bridge:{frame.get('code', 'unmatched ack')}"] += 1
            return
        if kind == "error":
            self.errors[f"event:{frame.get('code')}"] += 1
        elif frame.get("action") != "created" or frame.get("duplicate"):
            self.not_created[str(frame.get("action"))] += 1
        else:
            self.acked.add(frame["case"])
            if frame["case"] not in self.cases:  # the offer can overtake the ack
                self.unoffered.add(frame["case"])

    def _on_agent_for(self, agent: AgentConn) -> Callable[[bytes], None]:
        def on_message(payload: bytes) -> None:
            frame = msgpack.unpackb(payload)
            kind = frame.get("type")
            if kind == "offer":
                self._on_offer(agent, frame)
            elif kind == "ack" or kind == "error":
                self._on_agent_reply(agent, frame, kind == "ack")
            elif kind == "hello":
                agent.hello = True
                self.hello_bytes = max(self.hello_bytes, len(payload))
            elif kind == "offer.rescinded":
                self.rescinded += 1

        return on_message

    def _on_offer(self, agent: AgentConn, frame: dict[str, Any]) -> None:
        now = time.perf_counter_ns()
        case = frame["case"]
        cid, offer = case["id"], frame["offer"]
        state = self.cases.get(cid)
        if state == "live" or state == "done":
            self.duplicated += 1  # a second live offer, or an offer for a completed case
            return
        if state == "failed":
            self.reoffered += 1
        else:
            self.unoffered.discard(cid)
        self.cases[cid] = "live"
        self.open_cases += 1
        agent.open_cases += 1
        t0 = (case.get("attributes") or {}).get("t0")
        if isinstance(t0, int):
            latency = now - self.base_ns - t0
            self.second_lat_ns.append(latency)
            if self.counting:
                self.phase.ingest_offer_ns.append(latency)
        self.second_offers += 1
        if self.counting:
            self.phase.offers += 1
            if agent.backlog and agent.freed_at:
                self.phase.freed_ns.append(now - agent.freed_at)
        agent.freed_at = 0
        if agent.backlog:
            if self.refill_backlog:
                self.send_event(backlog=True)
        elif self.refill_main:
            self.send_event()
        accept = {"type": "offer.accept", "offer": offer}
        think = 0.0 if agent.backlog else self.think_s
        self._later(think, self._request, agent, "accept", accept, cid)

    def _on_agent_reply(self, agent: AgentConn, frame: dict[str, Any], ok: bool) -> None:
        now = time.perf_counter_ns()
        req = self._requests.pop(frame.get("ref", -1), None)
        if req is None:
            if not ok:
                self.errors[f"agent:{frame.get('code')}"] += 1
            return
        if not ok:
            self.errors[f"{req.kind}:{frame.get('code')}"] += 1
            if req.kind == "accept":  # the offer is gone (expired, rescinded): may be re-offered
                self.cases[req.case] = "failed"
                self._case_done(agent)
            return
        if req.kind == "accept":
            if self.counting:
                self.phase.accept_ack_ns.append(now - req.sent_ns)
            complete = {"type": "case.complete", "case": req.case, "disposition": "resolved"}
            handle = self.backlog_handle_s if agent.backlog else self.handle_s
            self._later(handle, self._request, agent, "complete", complete, req.case)
        elif req.kind == "complete":
            self.cases[req.case] = "done"
            self._case_done(agent)
            self.second_completed += 1
            if self.counting:
                self.phase.completed += 1

    def _case_done(self, agent: AgentConn) -> None:
        self.open_cases -= 1
        agent.open_cases -= 1

    def _later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        if delay <= 0:
            fn(*args)
        else:
            self._loop.call_later(delay * random.uniform(0.5, 1.5), fn, *args)

    # -- phases --------------------------------------------------------------------------------

    async def prime(self, seconds: float) -> None:
        """One event per queue, one at a time, then drain: the first case of a queue defines
        its agent pool (a scan of every agent), which concurrent first cases would each
        repeat; keep that one-off out of the measured phases."""
        self.start_phase("prime")
        for topic in sorted(set(TOPICS)):
            self.send_event(topic=topic)
            await self._until(lambda: not self._requests, seconds, "priming")
        self.send_event(backlog=True)
        await self.drain(seconds)

    def start_phase(self, name: str) -> PhaseStats:
        self.phase = PhaseStats(name)
        return self.phase

    async def open_loop(self, rate: float, seconds: float, *, counting: bool = True) -> None:
        """Send events on a fixed schedule (never waiting for the server) for ``seconds``.

        The sender wakes every millisecond (uvloop's timer resolution), so events leave in
        bursts of about ``rate / 1000``; each is stamped when handed to the socket, and how late
        it was against its schedule is kept in ``send_lag_ms``.
        """
        self.counting = counting
        sent, period_ns = 0, 1e9 / rate
        t0 = time.perf_counter_ns()
        end = t0 + int(seconds * 1e9)
        try:
            while (now := time.perf_counter_ns()) < end:
                while (due := t0 + int(sent * period_ns)) <= now:
                    if counting:
                        self.phase.send_lag_ms.append((now - due) / 1e6)
                    self.send_event()
                    sent += 1
                await asyncio.sleep(0.001)
        finally:
            self.counting = False

    async def closed_loop(self, window: int, *, backlog: bool = False, warmup: float = 0.5) -> None:
        """Start a closed loop and let it settle (not counted): each offer sends the next
        event, keeping ``window`` in flight (saturation) or, for backlog, a queue of calls
        standing in front of the backlog agents. :meth:`count` measures; :meth:`stop_loops`
        ends it."""
        if backlog:
            self.refill_backlog = True
        else:
            self.refill_main = True
        for _ in range(window):
            self.send_event(backlog=backlog)
        await asyncio.sleep(warmup)
        self.start_phase(self.phase.name)  # what the warm-up counted is dropped

    async def count(self, seconds: float) -> None:
        """Count what happens for ``seconds``, then stop any closed loop."""
        self.counting = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self.counting = self.refill_main = self.refill_backlog = False

    def in_flight(self) -> dict[str, int]:
        return {
            "unacked": self._pending("event"),
            "unoffered": self.lost(),
            "open": self.open_cases,
            "requests": len(self._requests),
        }

    async def drain(self, seconds: float) -> bool:
        """Wait until every event is answered, every acked case offered and every case
        completed; at most ``seconds``. True when drained."""

        def drained() -> bool:
            return not self._requests and self.open_cases == 0 and self.lost() == 0

        with contextlib.suppress(TimeoutError):
            await self._until(drained, seconds, "drain")
            return True
        return False

    def lost(self) -> int:
        """Acknowledged new cases with no offer yet (after a drain: lost)."""
        return len(self.unoffered)

    @staticmethod
    async def _until(cond: Callable[[], bool], seconds: float, what: str) -> None:
        async with asyncio.timeout(seconds):
            while not cond():  # noqa: ASYNC110 -- polls state that many callbacks change
                await asyncio.sleep(0.05)


async def open_idle(
    server: Server, agents: list[str], *, concurrency: int = 64, within: float = 120.0
) -> tuple[list[WsClient], int]:
    """Open one console per agent, at most ``concurrency`` waiting for their ``hello`` at a
    time; give up on the rest after ``within`` seconds. Returns (clients, how many of them
    got their ``hello``)."""
    tokens = Tokens(server.secret)
    clients: list[WsClient] = []
    hellos = 0
    gate = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()

    async def one(agent: str) -> None:
        nonlocal hellos
        hello: asyncio.Future[None] = loop.create_future()

        def on_message(payload: bytes) -> None:
            if not hello.done() and msgpack.unpackb(payload).get("type") == "hello":
                hello.set_result(None)

        async with gate:
            with contextlib.suppress(OSError, WsError, TimeoutError):
                path = server.agent_path(agent, tokens)
                clients.append(await open_ws(server.host, server.port, path, on_message))
                async with asyncio.timeout(30.0):
                    await hello
                hellos += 1

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            await asyncio.gather(*(one(a) for a in agents))
    return clients, hellos
