"""Locust scenarios for Switchboard: bridges streaming events in, agents answering offers.

Run headless (a server and Redis are started for the run unless ``-H`` names one)::

    locust -f bench/locustfile.py --headless -u 54 -r 54 -t 30s \\
        --sb-agents 50 --sb-bridges 4 --sb-rate 100 --sb-mix chat=50,email=30,voice=20

* ``BridgeUser`` (``--sb-bridges`` of them) holds one ``/ws/bridge`` connection and sends
  ``event`` frames, ``--sb-rate`` events/s in all, channels drawn from ``--sb-mix``; each event is
  a new customer, so a new case.
* ``AgentUser`` (``--sb-agents``) holds one console (``/ws/agent``, token minted with the server's
  secret), goes available, accepts each offer after ``--sb-think-ms`` and completes the case
  after ``--sb-handle-ms`` (both times 0.5-1.5 at random).

``-u`` must be at least agents + bridges (both classes have a fixed count). Latencies are
reported the way locust measures non-HTTP protocols, as ``events.request`` with request type
``WS``, from timestamps carried in the frames (wall clock: one machine, so one clock):
``event→ack`` (bridge), ``ingest→offer`` (the event's ``attributes.t0`` comes back in the offer),
``accept→ack``, ``complete→ack``, and ``freed→next offer`` (a complete, then an offer for a case
that was already waiting when it was sent). Lost and duplicated offers are counted at the end
when one process runs every user (no ``--processes``/workers): every case a bridge's ack named
must have been offered once, or still be waiting in a queue or offered to an agent user that
stopped before the offer came (asked of the server).

One locust process generates about 21k frames/s at most (PERF-NOTES); for higher rates use
``python -m bench e2e``. With workers, start the server yourself
(``python -m bench.server_proc --agents N``) and pass ``-H``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import gevent
import httpx
import msgpack
import websocket
from locust import User, between, constant_throughput, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from bench.server_proc import BRIDGE_KEY, SECRET, WORKSPACE
from router.auth import Principal, Tokens

SUBPROTOCOL = "switchboard.v1.msgpack"
TOPICS = ("support", "billing", "sales")
TEXT = {"chat": "Where is my order?", "email": "I was charged twice.", "voice": ""}
_agent_ids = itertools.count()
_server: subprocess.Popen[bytes] | None = None
_tally: dict[str, Any] = {"acked": set(), "offered": set(), "duplicated": 0}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    g = parser.add_argument_group("Switchboard")
    g.add_argument("--sb-agents", type=int, default=50, help="agent users (default 50)")
    g.add_argument("--sb-bridges", type=int, default=4, help="bridge users (default 4)")
    g.add_argument("--sb-rate", type=float, default=100.0, help="events/s, all bridges")
    g.add_argument("--sb-mix", default="chat=50,email=30,voice=20", help="channel weights")
    g.add_argument("--sb-think-ms", type=float, default=500.0, help="offer → accept")
    g.add_argument("--sb-handle-ms", type=float, default=3000.0, help="accept → complete")
    g.add_argument("--sb-secret", default=SECRET, help="the server's SWITCHBOARD_SECRET")
    g.add_argument("--sb-bridge-key", default=BRIDGE_KEY, help="the server's bridge key")


def _mix(spec: str) -> tuple[list[str], list[float]]:
    pairs = [p.split("=") for p in spec.split(",") if p]
    return [c.strip() for c, _ in pairs], [float(w) for _, w in pairs]


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None:
        return
    AgentUser.fixed_count = opts.sb_agents
    BridgeUser.fixed_count = opts.sb_bridges
    BridgeUser.wait_time = constant_throughput(opts.sb_rate / max(opts.sb_bridges, 1))
    if environment.host or isinstance(environment.runner, WorkerRunner):
        return
    environment.host = _start_server(opts.sb_agents)


def _start_server(agents: int) -> str:
    """``python -m bench.server_proc`` in a child process; this process moves to the second
    core (the server takes the first)."""
    global _server
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    args = [sys.executable, "-m", "bench.server_proc", "--port", str(port),
            "--agents", str(agents), "--backlog-agents", "0", "--idle-agents", "0"]  # fmt: skip
    _server = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if _server.poll() is not None:
            raise SystemExit("locustfile: the bench server exited; see its output above")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        time.sleep(0.2)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[1]})
    print(f"locustfile: server at {url}; locust on core {cpus[-1]}", file=sys.stderr)
    return url


@events.quitting.add_listener
def _quitting(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if runner is not None and not isinstance(runner, MasterRunner | WorkerRunner):
        gevent.sleep(1.0)  # offers for the last acks
        acked, offered = _tally["acked"], _tally["offered"]
        unoffered = acked - offered
        found = _open_cases(environment) if unoffered else {"queued": set(), "offered": set()}
        if found is None:
            outcome = f"lost {len(unoffered)} (or still waiting: the server did not say)"
        else:
            # offered: to an agent user that had stopped before the offer reached it
            waiting, offered_late = unoffered & found["queued"], unoffered & found["offered"]
            lost = unoffered - waiting - offered_late
            outcome = (f"still waiting {len(waiting)}, offered as the agents stopped "
                       f"{len(offered_late)}, lost {len(lost)}")  # fmt: skip
        print(f"locustfile: {len(acked)} cases acked, {len(offered)} offered; {outcome}, "
              f"duplicated {_tally['duplicated']}", file=sys.stderr)  # fmt: skip
    if _server is not None and _server.poll() is None:
        _server.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            _server.wait(30)


def _open_cases(environment: Environment) -> dict[str, set[str]] | None:
    """The cases still queued or offered on the server, read as the bench workspace's first
    supervisor (a case acked and never offered is lost only if it is in neither); None if the
    server could not be asked."""
    opts = environment.parsed_options
    token = Tokens(opts.sb_secret if opts else SECRET).issue(
        Principal("session", WORKSPACE, "s0", "supervisor")
    )
    found: dict[str, set[str]] = {}
    try:
        for status in ("queued", "offered"):
            found[status] = set()
            cursor: str | None = ""
            while cursor is not None:
                r = httpx.get(
                    f"{environment.host}/api/cases",
                    params={
                        "status": status,
                        "limit": 200,
                        **({"cursor": cursor} if cursor else {}),
                    },
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=10,
                )
                r.raise_for_status()
                page = r.json()
                found[status].update(str(c["id"]) for c in page["cases"])
                cursor = page.get("next_cursor")
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as e:
        print(f"locustfile: could not list the open cases: {e}", file=sys.stderr)
        return None
    return found


def _fire(name: str, started: float, length: int = 0, error: str | None = None) -> None:
    events.request.fire(
        request_type="WS", name=name, response_time=(time.time() - started) * 1000,
        response_length=length, exception=None if error is None else Exception(error),
        context={},
    )  # fmt: skip


class _WsUser(User):
    """One WebSocket connection and a greenlet reading it."""

    abstract = True
    ws: websocket.WebSocket

    def connect(self, path: str, header: list[str] | None = None) -> None:
        url = (self.host or "").replace("http", "ws", 1) + path
        self.ws = websocket.create_connection(
            url, subprotocols=[SUBPROTOCOL], header=header, suppress_origin=True
        )
        self.refs = itertools.count(1)
        self.pending: dict[int, tuple[str, float, str]] = {}  # ref → (kind, sent, case)
        self._reader = gevent.spawn(self._read)

    def send(self, frame: dict[str, Any], kind: str = "", case: str = "") -> None:
        ref = next(self.refs)
        frame["ref"] = ref
        self.pending[ref] = (kind or frame["type"], time.time(), case)
        with contextlib.suppress(websocket.WebSocketConnectionClosedException):  # stopping
            self.ws.send_binary(msgpack.packb(frame))

    def _read(self) -> None:
        with contextlib.suppress(websocket.WebSocketException, OSError):
            while True:
                data = self.ws.recv()
                if isinstance(data, bytes):
                    self.on_frame(msgpack.unpackb(data), len(data))

    def on_frame(self, frame: dict[str, Any], length: int) -> None:
        raise NotImplementedError

    def on_stop(self) -> None:
        self._reader.kill(block=False)
        with contextlib.suppress(websocket.WebSocketException, OSError):
            self.ws.close()


class BridgeUser(_WsUser):
    """A channel bridge: one event per task run, at a constant throughput."""

    fixed_count = 0  # set from --sb-bridges

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.channels, self.weights = _mix(opts.sb_mix if opts else "chat=1")
        key = opts.sb_bridge_key if opts else BRIDGE_KEY
        self.connect("/ws/bridge", [f"Authorization: Bearer {key}"])

    @task
    def event(self) -> None:
        channel = random.choices(self.channels, self.weights)[0]
        n = uuid.uuid4().hex[:16]
        frame: dict[str, Any] = {
            "type": "event", "id": f"lc{n}", "channel": channel, "thread": f"lt{n}",
            "kind": "call.offered" if channel == "voice" else "message",
            "text": TEXT.get(channel, ""),
            "attributes": {"topic": random.choice(TOPICS), "t0": repr(time.time())},
            "identities": {"phone": f"+1555{int(n[:8], 16) % 10**8:08d}"} if channel == "voice"
            else {"email": f"{n}@locust.test"},
        }  # fmt: skip
        if channel == "email":
            frame["subject"] = "Charged twice"
        self.send(frame)

    def on_frame(self, frame: dict[str, Any], length: int) -> None:
        sent = self.pending.pop(frame.get("ref", -1), None)
        if sent is None:
            return
        if frame.get("type") == "error":
            _fire("event→ack", sent[1], length, str(frame.get("code")))
            return
        _fire("event→ack", sent[1], length)
        if frame.get("action") == "created" and not frame.get("duplicate"):
            _tally["acked"].add(frame["case"])


class AgentUser(_WsUser):
    """An agent at a console: accepts every offer after a think time, completes after a
    handle time. Everything happens in reaction to frames; the task only keeps the user alive."""

    fixed_count = 0  # set from --sb-agents
    wait_time = between(1, 1)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.think = (opts.sb_think_ms if opts else 500) / 1000
        self.handle = (opts.sb_handle_ms if opts else 3000) / 1000
        runner = self.environment.runner
        worker = getattr(runner, "worker_index", 0) if isinstance(runner, WorkerRunner) else 0
        per_worker = opts.sb_agents if opts else 50
        self.agent = f"r{worker * per_worker + next(_agent_ids)}"
        token = Tokens(opts.sb_secret if opts else SECRET).issue(
            Principal("ws", WORKSPACE, self.agent, "agent")
        )
        self.freed_at = 0.0
        self.connect(f"/ws/agent?token={token}")
        self.send({"type": "status", "status": "available"})

    @task
    def stay(self) -> None:
        """Nothing to do on a schedule: offers drive this user."""

    def on_frame(self, frame: dict[str, Any], length: int) -> None:
        kind = frame.get("type")
        if kind == "offer":
            self._offer(frame, length)
            return
        if kind not in ("ack", "error"):
            return
        sent = self.pending.pop(frame.get("ref", -1), None)
        if sent is None:
            return
        what, started, case = sent
        if what in ("accept", "complete"):
            _fire(f"{what}→ack", started, length, frame.get("code") if kind == "error" else None)
        if kind == "ack" and what == "accept":
            gevent.spawn_later(self.handle * random.uniform(0.5, 1.5), self._complete, case)

    def _offer(self, frame: dict[str, Any], length: int) -> None:
        case = frame.get("case") or {}
        cid = case.get("id", "")
        if cid in _tally["offered"]:
            _tally["duplicated"] += 1
        _tally["offered"].add(cid)
        t0 = (case.get("attributes") or {}).get("t0")
        if isinstance(t0, str):
            with contextlib.suppress(ValueError):
                _fire("ingest→offer", float(t0), length)
        # An offer for a case that was already waiting when this agent freed up.
        if self.freed_at and case.get("created", 0) / 1000 < self.freed_at:
            _fire("freed→next offer", self.freed_at, length)
        self.freed_at = 0.0
        accept = {"type": "offer.accept", "offer": frame["offer"]}
        gevent.spawn_later(self.think * random.uniform(0.5, 1.5), self.send, accept, "accept", cid)

    def _complete(self, case: str) -> None:
        self.freed_at = time.time()
        self.send({"type": "case.complete", "case": case, "disposition": "resolved"},
                  "complete", case)  # fmt: skip
