"""The core bench's workload: a contact center's workspace, its customers and its agents.

Seeded, so two runs send the same load: :func:`workspace` declares the agents, queues and
workflow; :class:`EventStream` yields normalized events the way channel bridges send them;
:class:`Agents` plays the agents, reacting to the frames the Switch pushes, with
:class:`Timings` saying how long they take. Figures are chosen to look like a mid-sized
center, scaled down in time so a run lasts seconds rather than a shift:

* agents: each has 1-3 of four skills, a level 1-5, English plus maybe Spanish or French,
  and capacities voice 1 / chat 3 / email 5 (held concurrently, per channel);
* queues: ``support``, ``billing``, ``sales`` and ``tech``, each a skill expression;
  ``sales`` also needs ``level >= 2``;
* workflow: topic filters, with a first step narrowed by the task's language
  (``task.language IN worker.languages``) or by level, and a wider second step;
* events: 50 % chat, 30 % email, 20 % voice; a quarter come from returning customers,
  half of those on their previous thread (a follow-up on an open case, or a reopen).

Every event carries ``attributes.ref`` = its own id. Cases keep the attributes of the event
that created them, so the offer frame names the event that created its case; the bench uses
that to time the offer decision without any hook in the router.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router.errors import SwitchboardError
from router.switch import Switch

__all__ = ["PACED", "SATURATED", "WORKSPACE_ID", "Agents", "EventStream", "Timings", "workspace"]

WORKSPACE_ID = "bench"
SKILLS = ("support", "billing", "sales", "tech")
CAPACITY = {"voice": 1, "chat": 3, "email": 5}
CHANNEL_MIX = (("chat", 0.5), ("email", 0.3), ("voice", 0.2))
TOPIC_MIX = (("support", 0.4), ("billing", 0.25), ("sales", 0.15), ("tech", 0.2))
LANGUAGE_MIX = (("en", 0.75), ("es", 0.17), ("fr", 0.08))
RETURNING = 0.25  # share of events from a customer seen before
SAME_THREAD = 0.5  # share of returning customers' events on their previous thread
NEW_CUSTOMERS = 1_000_000

_QUEUES = (
    {"id": "support", "target": "skills HAS 'support'"},
    {"id": "billing", "target": "skills HAS 'billing'"},
    {"id": "sales", "target": "skills HAS 'sales' AND level >= 2"},
    {"id": "tech", "target": "skills HAS 'tech'"},
)
_IN_LANGUAGE = "task.language IN worker.languages"
_WORKFLOW = {
    "task_routing": {
        "filters": [
            {
                "filter_friendly_name": "sales",
                "expression": "topic == 'sales'",
                "targets": [{"queue": "sales", "priority": 10}],
            },
            {
                "filter_friendly_name": "billing",
                "expression": "topic == 'billing'",
                "targets": [
                    {"queue": "billing", "expression": _IN_LANGUAGE, "timeout": 120},
                    {"queue": "billing", "priority": 5},
                ],
            },
            {
                "filter_friendly_name": "tech",
                "expression": "topic == 'tech'",
                "targets": [
                    {"queue": "tech", "expression": "worker.level >= 3", "timeout": 120},
                    {"queue": "tech"},
                ],
            },
            {
                "filter_friendly_name": "other-language",
                "expression": "language != 'en'",
                "targets": [
                    {"queue": "support", "expression": _IN_LANGUAGE, "timeout": 120},
                    {"queue": "support", "priority": 20},
                ],
            },
        ],
        "default_filter": {"queue": "support"},
    }
}


def agent_id(i: int) -> str:
    return f"ag{i:04d}"


def _agent(i: int, rng: random.Random) -> dict[str, Any]:
    # Every skill gets agents of every language and level: no narrowed pool is ever empty.
    skills = {SKILLS[i % len(SKILLS)], *rng.sample(SKILLS, rng.randint(0, 2))}
    languages = ["en"] + (["es"] if i % 3 == 0 else []) + (["fr"] if i % 7 == 0 else [])
    return {
        "id": agent_id(i),
        "name": f"Agent {i}",
        "attributes": {"skills": sorted(skills), "languages": languages, "level": 1 + i % 5},
        "capacity": dict(CAPACITY),
    }


def workspace(agents: int, seed: int = 1) -> dict[str, Any]:
    """The declaration ``Switch.apply_workspace`` takes: ``agents`` agents, 4 queues."""
    rng = random.Random(seed)
    return {
        "id": WORKSPACE_ID,
        "queues": [dict(q) for q in _QUEUES],
        "workflow": _WORKFLOW,
        "agents": [_agent(i, rng) for i in range(agents)],
    }


@dataclass(frozen=True, slots=True)
class Timings:
    """How long simulated agents take, in seconds: offer → accept, accept → complete.

    Handle times are drawn uniformly from ``[0, 2 * mean]`` per channel.
    """

    think_s: tuple[float, float]
    handle_mean_s: dict[str, float]

    def think(self, rng: random.Random) -> float:
        lo, hi = self.think_s
        return rng.uniform(lo, hi) if hi > 0 else 0.0

    def handle(self, channel: str, rng: random.Random) -> float:
        mean = self.handle_mean_s.get(channel, 0.0)
        return rng.uniform(0.0, 2 * mean) if mean > 0 else 0.0


#: Routed-rate phase: agents accept at once; short handle times keep capacity turning over.
SATURATED = Timings((0.0, 0.0), {"voice": 0.15, "chat": 0.1, "email": 0.05})
#: Latency phase: a think time before accepting, longer handle times (some pools fill up).
PACED = Timings((0.02, 0.2), {"voice": 0.6, "chat": 0.4, "email": 0.2})


def _pick(rng: random.Random, mix: tuple[tuple[str, float], ...]) -> str:
    x = rng.random()
    for value, share in mix:
        x -= share
        if x < 0:
            return value
    return mix[-1][0]


@dataclass(slots=True)
class _Customer:
    n: int
    channel: str = ""
    thread: str = ""


class EventStream:
    """An endless, seeded stream of normalized events (the shape ``Switch.ingest`` takes).

    Returning customers reuse their identities; on their previous thread the event becomes a
    follow-up (open case) or a reopen (completed case) — which one depends on timing, so the
    caller reads it from ``IngestResult.action``.
    """

    def __init__(self, run: str, seed: int = 2) -> None:
        self._run = run
        self._rng = random.Random(seed)
        self._n = 0
        self._seen: list[_Customer] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        rng = self._rng
        self._n += 1
        eid = f"{self._run}-{self._n}"
        cust = self._customer()
        if cust.thread and rng.random() < SAME_THREAD:
            channel, thread = cust.channel, cust.thread
        else:
            channel, thread = _pick(rng, CHANNEL_MIX), eid
            cust.channel, cust.thread = channel, thread
        attributes = {
            "topic": _pick(rng, TOPIC_MIX),
            "language": _pick(rng, LANGUAGE_MIX),
            "tier": "gold" if cust.n % 10 == 0 else "standard",
            "ref": eid,
        }
        return _event(eid, channel, thread, cust.n, attributes, rng)

    def priming(self) -> list[dict[str, Any]]:
        """One new-customer event per channel, topic and language: sent one at a time before
        measuring, they make the router define every pool the workflow can route to."""
        events = []
        for channel, _ in CHANNEL_MIX:
            for topic, _ in TOPIC_MIX:
                for language, _ in LANGUAGE_MIX:
                    self._n += 1
                    eid = f"{self._run}-{self._n}"
                    attributes = {"topic": topic, "language": language, "ref": eid}
                    cust = self._rng.randrange(NEW_CUSTOMERS)
                    events.append(_event(eid, channel, eid, cust, attributes, self._rng))
        return events

    def _customer(self) -> _Customer:
        rng = self._rng
        if self._seen and rng.random() < RETURNING:
            return self._seen[rng.randrange(len(self._seen))]
        cust = _Customer(rng.randrange(NEW_CUSTOMERS))
        self._seen.append(cust)
        return cust


def _event(
    eid: str, channel: str, thread: str, n: int, attributes: dict[str, Any], rng: random.Random
) -> dict[str, Any]:
    email, phone = f"customer{n}@example.com", f"+1555{n:07d}"
    ev: dict[str, Any] = {"id": eid, "channel": channel, "thread": thread,
                          "attributes": attributes, "name": f"Customer {n}"}  # fmt: skip
    if channel == "voice":
        ev |= {"kind": "call.offered", "identities": {"phone": phone}}
    elif channel == "email":
        body = "Hello, I have a question about my account. " * rng.randint(5, 30)
        ev |= {"identities": {"email": email}, "subject": f"Order {n} question", "text": body}
    else:
        text = "hi, can someone help me with my order?"
        ev |= {"identities": {"visitor": f"v{n}", "email": email}, "text": text}
    return ev


_ACCEPT, _COMPLETE = 0, 1
_Work = tuple[int, str, str, str]  # action, offer id, case id, channel


class Agents:
    """The agents' consoles: one coroutine per agent, fed by the Switch's ``notify`` callback.

    Each offer is accepted after ``timings.think`` and its case completed (disposition
    ``resolved``) after ``timings.handle``; the waits are loop timers, so a long case never holds
    up an agent's others, while each agent's own clicks go one at a time. ``on_offer`` sees every
    offer frame first, synchronously, when it is pushed. A typed error from accept or complete is
    counted by code in ``errors`` and the agent carries on.
    """

    def __init__(
        self, ids: Sequence[str], on_offer: Callable[[Mapping[str, Any]], None], seed: int = 3
    ) -> None:
        self.timings = SATURATED
        self.accepted = 0
        self.completed = 0
        self.pushes = 0  # frames other than offers (case.message for follow-ups)
        self.errors: Counter[str] = Counter()
        self._on_offer = on_offer
        self._rng = random.Random(seed)
        self._inbox: dict[str, asyncio.Queue[_Work]] = {aid: asyncio.Queue() for aid in ids}
        self._tasks: list[asyncio.Task[None]] = []

    async def notify(self, ws: str, agent: str, frame: dict[str, Any], **_: Any) -> None:
        """The ``notify`` callback to give the Switch."""
        if frame.get("type") != "offer":
            self.pushes += 1
            return
        self._on_offer(frame)
        work = (_ACCEPT, frame["offer"], frame["case"]["id"], frame["case"]["channel"])
        _later(self.timings.think(self._rng), self._inbox[agent], work)

    def start(self, switch: Switch) -> None:
        self._tasks = [
            asyncio.create_task(self._run(switch, aid, inbox), name=f"agent-{aid}")
            for aid, inbox in self._inbox.items()
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, switch: Switch, aid: str, inbox: asyncio.Queue[_Work]) -> None:
        while True:
            action, offer, case, channel = await inbox.get()
            try:
                if action == _ACCEPT:
                    await switch.accept(WORKSPACE_ID, aid, offer)
                    self.accepted += 1
                    handle = self.timings.handle(channel, self._rng)
                    _later(handle, inbox, (_COMPLETE, offer, case, channel))
                else:
                    await switch.complete(WORKSPACE_ID, aid, case, "resolved")
                    self.completed += 1
            except SwitchboardError as exc:
                self.errors[exc.code] += 1


def _later(delay: float, inbox: asyncio.Queue[_Work], work: _Work) -> None:
    if delay > 0:
        asyncio.get_running_loop().call_later(delay, inbox.put_nowait, work)
    else:
        inbox.put_nowait(work)
