"""Stateful property test of the routing core: random sequences of real core calls on real Redis.

A small pure-Python model of the workspace's routing rules (the DECL workflow, queues and agent
skills, read independently of ``router.triage``) follows every step. The model learns what the
core did from the event log (``sb:{acme}:log``: every transition script appends to it inside its
atomic call, so it is the exact order of what happened) and checks each logged transition against
the rules as it replays it — an offer made by a pull must be the best waiting case for that agent
at that moment, an offer goes only to a routable, eligible agent with free capacity who has not
refused the case, timers fire in deadline order. After every step the whole Redis state is read
back and checked against the model and against the promises of docs/DESIGN.md: at most one owner,
capacity, work conservation, nothing lost; duplicates must change no key at all.

Hypothesis state machines are synchronous: the machine owns an event loop and its own Store on
the session's redis-server, and flushes Redis at the start of every example.

The bugs this machine has found are kept at the end as minimal, hand-driven regressions. A
new one goes there first as ``xfail(strict=True, raises=Violation)`` until the core is fixed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

import router.store
from router.errors import BadRequest, Conflict, NotFound
from router.store import Store, connect, now_ms
from router.switch import Switch
from tests.switchboard_fixtures import DECL, agent

T = TypeVar("T")

WS = "acme"
P = "sb:{acme}:"
EPOCH_MS = 1704067200000  # case ages count from here (router/lua/_lib.lua)
CHANNELS = ("chat", "email", "voice")
CHANNEL_PRI = {"voice": 10, "chat": 5, "email": 0}  # workspace defaults
OFFER_MS = {"voice": 15_000, "chat": 30_000, "email": 120_000}
REOPEN_AGENT_MS = 120_000
TRANSFER_AGENT_MS = 60_000
MAX_MISSED = 3
QUEUE_SKILL = {"support": "support", "sales": "sales", "billing": "billing"}  # DECL targets
LIFO_QUEUES = frozenset({"billing"})
MOSTLY = st.sampled_from([True, True, True, False])  # a rule's usual case, now and then not
TERMINAL = frozenset({"completed", "cancelled", "abandoned"})
ROUTABLE = {"available": True, "away": False, "offline": False}
END_KIND = {"voice": "call.ended", "chat": "conversation.ended", "email": "conversation.ended"}


@dataclass(frozen=True)
class AgentSpec:
    id: str
    skills: frozenset[str]
    languages: frozenset[str]
    cap: dict[str, int]


AGENTS = {
    a.id: a
    for a in (
        AgentSpec("ann", frozenset({"support"}), frozenset({"en"}), {"chat": 2, "email": 3}),
        AgentSpec("bob", frozenset({"support", "sales"}), frozenset({"en", "es"}), {"chat": 3}),
        AgentSpec("cid", frozenset({"billing", "support"}), frozenset({"es"}), {"email": 5}),
        AgentSpec("dee", frozenset({"sales", "billing"}), frozenset({"en"}), {"email": 4}),
    )
}
for _a in AGENTS.values():  # voice 1 for everyone; chat 2-3, email 2-5
    _a.cap.setdefault("voice", 1)
    _a.cap.setdefault("chat", 2)
    _a.cap.setdefault("email", 2)


def workspace_decl() -> dict[str, Any]:
    agents = [
        agent(a.id, sorted(a.skills), languages=sorted(a.languages), **a.cap)
        for a in AGENTS.values()
    ]
    # the model keeps a refusal for good; refusals that lapse are tested in test_core
    routing = {**DECL.get("routing", {}), "reoffer_refused_after_s": 0}
    return {**DECL, "agents": agents, "routing": routing}


# -- the model: routing rules of DECL ------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One routing step: who may take the case, at what priority, until when."""

    queue: str
    pri: int
    due: int | None = None  # ms after the plan started at which the step times out
    lifo: bool = False
    language: str | None = None  # target expression "task.language IN worker.languages"
    agent: str | None = None  # only this agent (reopen's last agent, transfer to an agent)

    def eligible(self, a: AgentSpec) -> bool:
        if self.agent is not None:
            return a.id == self.agent
        ok = QUEUE_SKILL[self.queue] in a.skills
        return ok and (self.language is None or self.language in a.languages)

    def pool_ok(self, pool: str) -> bool:
        if self.agent is not None:
            return pool == f"a~{self.agent}"
        if self.language is not None:
            return pool.startswith(f"{self.queue}^")
        return pool == self.queue


def triage_plan(ch: str, attrs: dict[str, str]) -> list[Step]:
    """DECL's workflow, read by hand: the first matching filter's targets, in order.

    No plan here can skip past its last step (no ``skip_if``), so none has a fallback step.
    """
    pri = CHANNEL_PRI[ch]
    if attrs.get("topic") == "sales":
        return [Step("sales", 10)]
    if attrs.get("language") == "es":
        return [Step("support", pri, due=30_000, language="es"), Step("support", 20)]
    if attrs.get("topic") == "billing":
        return [Step("billing", pri, lifo=True)]
    return [Step("support", pri)]  # the default filter


def reopen_plan(plan: list[Step], last_agent: str) -> list[Step]:
    first = plan[0]
    known = Step(first.queue, first.pri, due=REOPEN_AGENT_MS, agent=last_agent)
    later = [s if s.due is None else replace(s, due=s.due + REOPEN_AGENT_MS) for s in plan]
    return [known, *later]


@dataclass
class Case:
    id: str
    ch: str
    thread: str
    plan: list[Step]
    plan_start: int
    age: int
    status: str = "new"  # + queued offered assigned wrapping; limbo = rescinded, kept out
    step: int = 0  # 1-based index into plan
    pri: int = 0
    x: set[str] = field(default_factory=set)  # agents who rejected it or let it time out
    offer: str = ""
    agent: str = ""
    last_agent: str = ""
    esc: bool = False  # its step timed out while it was offered
    gone: bool = False  # the customer ended the conversation while an agent had the case
    callback: bool = False  # a call to be called back: its caller hanging up ends nothing
    timer: int | None = None  # armed escalation timer (score) of the current step

    @property
    def cur(self) -> Step:
        return self.plan[self.step - 1]


@dataclass
class Offer:
    id: str
    case: str
    agent: str
    ch: str
    deadline: int
    status: str = "pending"


@dataclass
class AgentState:
    status: str = "offline"
    load: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0))
    missed: int = 0

    @property
    def routable(self) -> bool:
        return ROUTABLE[self.status]


@dataclass
class Ctx:
    """What the step under replay was asked to do."""

    kind: str  # ingest status accept reject timers wrapup complete transfer move remove reopen
    attrs: dict[str, str] = field(default_factory=dict)
    ch: str = ""
    thread: str = ""
    keep_out: bool = False  # a rescinded offer's case is re-routed by the caller, not requeued
    plan: Callable[[Case], list[Step]] | None = None
    status: str = ""
    agent: str = ""
    case: str = ""


@dataclass
class Expect:
    kind: str  # enter | requeue
    step: int = 0


class Violation(AssertionError):
    pass


def must(cond: object, msg: str) -> None:
    if not cond:
        raise Violation(msg)


class Model:
    """The routing rules, replayed over the core's event log and checked as they go."""

    def __init__(self) -> None:
        self.cases: dict[str, Case] = {}
        self.offers: dict[str, Offer] = {}
        self.agents = {a: AgentState() for a in AGENTS}
        self.threads: dict[str, str] = {}  # "<channel>:<thread>" -> case
        self.expect: dict[str, Expect] = {}
        self.expect_away: set[str] = set()
        self.removed: set[str] = set()  # agents removed and not yet added back

    # views

    def pending(self) -> list[Offer]:
        return [o for o in self.offers.values() if o.status == "pending"]

    def pending_of(self, a: str) -> list[Offer]:
        return [o for o in self.pending() if o.agent == a]

    def held(self, *statuses: str) -> list[str]:
        return sorted(c.id for c in self.cases.values() if c.status in statuses)

    def timers(self) -> dict[str, int]:
        out = {f"o|{o.id}": o.deadline for o in self.pending()}
        for c in self.cases.values():
            if c.timer is not None:
                out[f"e|{c.id}|{c.step}"] = c.timer
        return out

    def free(self, a: str, ch: str) -> bool:
        return self.agents[a].load[ch] < AGENTS[a].cap[ch]

    def candidates(self, a: str, ch: str) -> list[Case]:
        """Waiting cases on ``ch`` that agent ``a`` may take."""
        spec = AGENTS[a]
        return [
            c
            for c in self.cases.values()
            if c.status == "queued" and c.ch == ch and a not in c.x and c.cur.eligible(spec)
        ]

    # replay

    def replay(self, events: list[dict[str, str]], ctx: Ctx, now: int | None = None) -> None:
        if ctx.kind != "timers":
            for i, ev in enumerate(events):
                self.apply(ev, events[i - 1] if i else None, ctx)
        else:
            assert now is not None
            self.replay_timers(events, ctx, now)
        must(not self.expect, f"transitions left half done: {self.expect}")
        must(not self.expect_away, f"agents not set away after missed offers: {self.expect_away}")

    def replay_timers(self, events: list[dict[str, str]], ctx: Ctx, now: int) -> None:
        """timers_run fires due timers in (score, member) order, each as one log segment."""
        due = sorted((s, m) for m, s in self.timers().items() if s <= now)
        pos = 0

        def segment() -> None:
            nonlocal pos
            end = pos + 1
            while end < len(events) and events[end]["t"] not in ("offer.timeout", "case.escalated"):
                end += 1
            for i in range(pos, end):
                self.apply(events[i], events[i - 1] if i > pos else None, ctx)
            pos = end

        for _, member in due:
            kind, *parts = member.split("|")
            nxt = events[pos] if pos < len(events) else {}
            if kind == "o":
                if self.offers[parts[0]].status != "pending":
                    continue  # rescinded: its agent was set away for the offers missed before it
                must(
                    nxt.get("t") == "offer.timeout" and nxt.get("offer") == parts[0],
                    f"offer {parts[0]} was due by {now} but did not time out next; got {nxt}",
                )
                segment()
                continue
            c = self.cases[parts[0]]
            if c.step != int(parts[1]):
                # the case left that step earlier in this run (an offer of a one-agent step
                # that timed out moved it on): the timer was the old step's, the new one stays
                continue
            c.timer = None
            if c.status == "queued":
                must(
                    nxt.get("t") == "case.escalated" and nxt.get("case") == c.id,
                    f"case {c.id} step {c.step} was due by {now} but did not escalate; got {nxt}",
                )
                segment()
            elif c.status == "offered":
                c.esc = True
        must(pos == len(events), f"unexpected transitions while firing timers: {events[pos:]}")

    def apply(self, ev: dict[str, str], prev: dict[str, str] | None, ctx: Ctx) -> None:
        t, ts = ev["t"], int(ev["ts"])
        handler = getattr(self, "on_" + t.replace(".", "_"), None)
        if handler is None:
            must(t in IGNORED_EVENTS, f"unexpected log event {ev}")
            return
        handler(ev, ts, ctx, prev)

    def _case(self, ev: dict[str, str]) -> Case:
        must(ev["case"] in self.cases, f"{ev['t']} for a case never created: {ev}")
        return self.cases[ev["case"]]

    def _enter(self, c: Case, step: int) -> None:
        # a step for one agent who takes no cases now is skipped (enter_step in _lib.lua)
        while step <= len(c.plan) and (a := c.plan[step - 1].agent) is not None:
            if self.agents[a].routable:
                break
            step += 1
        self.expect[c.id] = Expect("enter", step)

    def on_case_created(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        must(ctx.kind == "ingest" and ev.get("ch") == ctx.ch, f"case created by {ctx}: {ev}")
        cid = ev["case"]
        must(cid not in self.cases, f"case id reused: {ev}")
        plan = triage_plan(ctx.ch, ctx.attrs)
        c = Case(cid, ctx.ch, ctx.thread, plan, ts, ts - EPOCH_MS)
        self.cases[cid] = c
        self.threads[f"{ctx.ch}:{ctx.thread}"] = cid
        self._enter(c, 1)

    def on_case_reopened(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        c = self._case(ev)
        if ctx.kind == "reopen":  # its agent took it back: theirs at once, a call as a callback
            a = ev.get("agent", "")
            must(c.status in TERMINAL and a == ctx.agent, f"reopened by {ctx} from {c}: {ev}")
            c.status, c.agent, c.last_agent, c.x, c.esc = "assigned", a, a, set(), False
            c.gone, c.callback, c.age = False, c.ch == "voice", ts - EPOCH_MS
            self.agents[a].load[c.ch] += 1
            return
        must(ctx.kind == "ingest" and c.status == "completed", f"reopened from {c.status}: {ev}")
        c.plan = reopen_plan(triage_plan(c.ch, ctx.attrs), c.last_agent)
        c.plan_start, c.age, c.x, c.agent, c.status = ts, ts - EPOCH_MS, set(), "", "new"
        self._enter(c, 1)

    def on_case_transferred(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        c = self._case(ev)
        must(ctx.kind in ("transfer", "move") and ctx.plan is not None, f"by {ctx}: {ev}")
        assert ctx.plan is not None
        a = ev.get("agent", "")
        taken = ev.get("from_agent", "")  # a supervisor took it back from its agent
        if a:
            must(c.status == "assigned" and c.agent == a, f"{c} moved by {a}")
            self.agents[a].load[c.ch] -= 1
        elif taken:
            must(ctx.kind == "move", f"taken from {taken} by {ctx}: {ev}")
            ok = c.status in ("assigned", "wrapping") and c.agent == taken
            must(ok, f"supervisor took {c} from {taken}")
            self.agents[taken].load[c.ch] -= 1
        else:
            must(c.status in ("queued", "limbo"), f"supervisor moved a {c.status} case: {ev}")
        c.plan = ctx.plan(c)
        if a or taken:  # handed on: the customer waits from now (a move keeps the wait's start)
            c.plan_start = ts
        c.agent, c.status = "", "new"
        c.x = {a or taken} if a or taken else set()
        c.timer = None  # the old plan's step timer means nothing for the new plan
        self._enter(c, 1)

    def on_case_escalated(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        c = self._case(ev)
        must(ctx.kind == "timers" and c.status == "queued", f"escalated from {c.status}: {ev}")
        must(ev.get("from_step") == str(c.step), f"escalated from the wrong step: {ev}, {c}")
        self._enter(c, c.step + 1)

    def _waited_for_gone(self, c: Case) -> None:
        """An agent who stops taking cases (a status, missed offers, their removal) moves the
        cases waiting for them by name on to their next step (rescind_all in _lib.lua), after
        their rescinded offers went on."""
        a = c.cur.agent if c.status == "queued" and c.step else None
        if a is not None and not self.agents[a].routable and c.id not in self.expect:
            self._enter(c, c.step + 1)

    def on_case_queued(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        c = self._case(ev)
        self._waited_for_gone(c)
        exp = self.expect.pop(c.id, None)
        must(exp is not None, f"case queued out of the blue: {ev}")
        assert exp is not None
        if "step" not in ev:
            must(exp.kind == "requeue", f"requeued, but expected {exp}: {ev}")
            c.status = "queued"
            return
        must(exp.kind == "enter", f"entered a step, but expected a requeue: {ev}")
        i = exp.step
        must(i <= len(c.plan), f"{c.id}: plan exhausted, expected cancellation, got {ev}")
        must(ev.get("step") == str(i), f"{c.id} should enter step {i}: {ev}")
        s = c.plan[i - 1]
        must(ev.get("queue") == s.queue, f"{c.id} step {i} is in queue {s.queue}: {ev}")
        c.step, c.pri, c.status, c.esc, c.offer = i, s.pri, "queued", False, ""
        c.timer = None if s.due is None else c.plan_start + s.due

    def on_case_cancelled(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        c = self._case(ev)
        self._waited_for_gone(c)
        exp = self.expect.pop(c.id, None)
        ok = exp is not None and exp.kind == "enter" and exp.step > len(c.plan)
        must(ok, f"{c.id} cancelled while its plan has steps left ({exp}): {ev}")
        c.status = "cancelled"

    def on_case_abandoned(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        c = self._case(ev)
        must(ctx.kind == "ingest" and ctx.thread == c.thread, f"abandoned by {ctx}: {ev}")
        must(c.status in ("queued", "limbo"), f"abandoned from {c.status}: {ev}")
        c.status = "abandoned"

    def on_offer_created(
        self, ev: dict[str, str], ts: int, ctx: Ctx, prev: dict[str, str] | None
    ) -> None:
        c, a, oid = self._case(ev), ev["agent"], ev["offer"]
        ag, spec = self.agents[a], AGENTS[a]
        where = f"{oid}: {c.id} offered to {a}"
        must(oid not in self.offers, f"offer id reused: {ev}")
        must(c.status == "queued", f"{where} while the case is {c.status}")
        must(ev.get("ch") == c.ch and ev.get("queue") == c.cur.queue, f"{where}: {ev} vs {c}")
        must(ag.routable, f"{where}, who is {ag.status} (not routable)")
        must(c.cur.eligible(spec), f"{where}, who is not eligible for step {c.cur}")
        must(a not in c.x, f"{where}, who already refused it")
        must(self.free(a, c.ch), f"{where}, who has no free {c.ch} capacity ({ag.load})")
        pushed = prev is not None and prev["t"] == "case.queued" and prev.get("case") == c.id
        if not pushed:  # a pull: the agent takes the best waiting case on that channel
            check_order(c, self.candidates(a, c.ch), f"{where} by a pull")
        self.offers[oid] = Offer(oid, c.id, a, c.ch, ts + OFFER_MS[c.ch])
        c.status, c.offer = "offered", oid
        ag.load[c.ch] += 1

    def _offer(self, ev: dict[str, str]) -> Offer:
        o = self.offers.get(ev["offer"])
        must(o is not None and o.status == "pending", f"{ev['t']} of a non-pending offer: {ev}")
        assert o is not None
        must(o.agent == ev["agent"] and o.case == ev["case"], f"{ev} vs {o}")
        return o

    def on_offer_accepted(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        o = self._offer(ev)
        must(ctx.kind == "accept", f"accepted by {ctx}: {ev}")
        c = self.cases[o.case]
        o.status = "accepted"
        c.status, c.agent, c.last_agent, c.esc, c.timer = "assigned", o.agent, o.agent, False, None
        self.agents[o.agent].missed = 0

    def _end_offer(self, ev: dict[str, str], ctx: Ctx, status: str) -> None:
        o = self._offer(ev)
        o.status = status
        c, ag = self.cases[o.case], self.agents[o.agent]
        ag.load[o.ch] -= 1
        if status != "rescinded":
            c.x.add(o.agent)
        if status == "timeout":
            ag.missed += 1
            if ag.missed >= MAX_MISSED and ag.routable:
                ag.status = "away"
                self.expect_away.add(o.agent)
        must(c.status == "offered" and c.offer == o.id, f"{o} ended but case is {c}")
        if ctx.keep_out:
            c.status = "limbo"
        else:
            c.status = "requeue"
            if c.esc or c.cur.agent == o.agent:
                # its step timed out meanwhile, or was for this agent alone, who refused it or
                # stopped taking cases: on to the next step (requeue in _lib.lua)
                self._enter(c, c.step + 1)
            else:
                self.expect[c.id] = Expect("requeue")

    def on_offer_rejected(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        must(ctx.kind == "reject", f"rejected by {ctx}: {ev}")
        self._end_offer(ev, ctx, "rejected")

    def on_offer_timeout(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        must(ctx.kind == "timers", f"timed out by {ctx}: {ev}")
        must(self.offers[ev["offer"]].deadline <= ts, f"timed out before its deadline: {ev}")
        self._end_offer(ev, ctx, "timeout")

    def on_offer_rescinded(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        # a status that is not routable rescinds the agent's pending offers: one they set, or
        # the away the timers set after missed offers (logged before these)
        a = ev["agent"]
        ok = ctx.kind == "status" and not ROUTABLE[ctx.status] and a == ctx.agent
        ok = ok or (ctx.kind == "remove" and a == ctx.agent)
        away = self.agents[a].status == "away" and a not in self.expect_away
        ok = ok or (ctx.kind == "timers" and away) or ctx.keep_out
        must(ok, f"rescinded by {ctx}: {ev}")
        self._end_offer(ev, ctx, "rescinded")

    def on_case_wrapping(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        c = self._case(ev)
        must(c.status == "assigned" and c.agent == ev["agent"], f"{ev} vs {c}")
        c.status = "wrapping"

    def on_case_resumed(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        # the customer wrote again during wrap-up: the case is the same agent's again
        c = self._case(ev)
        must(ctx.kind == "ingest", f"resumed by {ctx}: {ev}")
        must(c.status == "wrapping" and c.agent == ev["agent"], f"{ev} vs {c}")
        c.status = "assigned"

    def on_case_completed(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        # case_complete.lua logs this last, after the pull it triggers: applied up front
        c = self._case(ev)
        ok = c.status == "completed" and c.agent == ev["agent"]
        must(ok and ctx.kind == "complete" and ctx.case == c.id, f"{ev} vs {c}")

    def on_agent_removed(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        a = ev["agent"]
        must(ctx.kind == "remove" and a == ctx.agent, f"removed by {ctx}: {ev}")
        waiting = [c.id for c in self.cases.values() if c.status == "queued" and c.cur.agent == a]
        must(not waiting, f"{a} removed, but {waiting} still wait for them by name")

    def on_agent_status(self, ev: dict[str, str], ts: int, ctx: Ctx, prev: Any) -> None:
        a = ev["agent"]
        if ev.get("reason") == "missed_offers":
            must(a in self.expect_away, f"set away without {MAX_MISSED} missed offers: {ev}")
            self.expect_away.discard(a)
            must(ev["status"] == "away", f"{ev}")
        else:
            must(ctx.kind == "status" and (a, ev["status"]) == (ctx.agent, ctx.status), f"{ev}")


IGNORED_EVENTS = frozenset(
    {"customer.created", "identity.conflict", "agent.updated", "pool.defined"}
)


def check_order(chosen: Case, waiting: list[Case], where: str) -> None:
    """Within a queue, FIFO takes the highest priority then the oldest, LIFO the newest
    (TaskRouter: LIFO ignores priority); across queues the candidates (each queue's first)
    rank by priority, then age, then id.

    Checked per channel: capacities are per channel, so ranking across channels decides
    nothing.
    """
    must(chosen in waiting, f"{where}, but it was not a waiting case the agent may take")

    def rank(c: Case) -> tuple[int, int, str]:
        return (-c.pri, c.age, c.id)

    lifo_heads: dict[str, Case] = {}
    for d in waiting:
        if d.cur.lifo:
            h = lifo_heads.get(d.cur.queue)
            if h is None or (d.age, h.id) > (h.age, d.id):
                lifo_heads[d.cur.queue] = d
    if chosen.cur.lifo:
        head = lifo_heads[chosen.cur.queue]
        must(head.age <= chosen.age, f"{where}, but {head.id} is newer in LIFO {head.cur.queue}")
    for d in waiting:
        if d is chosen or (d.cur.lifo and lifo_heads[d.cur.queue] is not d):
            continue
        if chosen.cur.lifo and d.cur.lifo and d.cur.queue == chosen.cur.queue:
            continue
        must(
            not rank(d) < rank(chosen),
            f"{where}, but {d.id} (pri {d.pri}, age {d.age}) outranks it "
            f"(pri {chosen.pri}, age {chosen.age})",
        )


# -- reading Redis ---------------------------------------------------------------------------------


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# Read-only, one round trip: every key with its type and full value. Test tooling, not a
# transition: it reads whole keyspaces with KEYS, which only a small test database affords.
_DUMP = """
local out = {}
for _, k in ipairs(redis.call('KEYS', '*')) do
  local t = redis.call('TYPE', k)['ok']
  local v
  if t == 'string' then v = redis.call('GET', k)
  elseif t == 'hash' then v = redis.call('HGETALL', k)
  elseif t == 'set' then v = redis.call('SMEMBERS', k)
  elseif t == 'zset' then v = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
  elseif t == 'list' then v = redis.call('LRANGE', k, 0, -1)
  elseif t == 'stream' then  -- its length and last entry id tell whether anything was added
    local last = redis.call('XREVRANGE', k, '+', '-', 'COUNT', 1)[1]
    v = {tostring(redis.call('XLEN', k)), last and last[1] or ''}
  end
  out[#out + 1] = {k, t, v or ''}
end
return cjson.encode(out)
"""


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[0::2], flat[1::2], strict=True))


async def snapshot(r: Any) -> dict[str, tuple[str, Any]]:
    """Every key with its type and full value, as plain str data (comparable with ==)."""
    out: dict[str, tuple[str, Any]] = {}
    for k, t, v in json.loads(await r.eval(_DUMP, 0)):
        if t != "string" and not isinstance(v, list):
            v = []  # cjson writes an empty table as {}
        if t == "hash":
            v = _pairs(v)
        elif t == "set":
            v = set(v)
        elif t == "zset":
            v = {m: float(sc) for m, sc in _pairs(v).items()}
        elif t == "stream":
            v = tuple(v)
        out[k] = (t, v)
    return out


class State:
    """Typed views of one snapshot."""

    def __init__(self, snap: dict[str, tuple[str, Any]]) -> None:
        self.snap = snap

    def get(self, key: str, default: Any) -> Any:
        item = self.snap.get(P + key)
        return default if item is None else item[1]

    def hash(self, key: str) -> dict[str, str]:
        return dict(self.get(key, {}))

    def members(self, kind: str) -> Iterator[tuple[str, Any]]:
        """(id, value) of the keys ``<kind>:<id>`` (no further ':')."""
        for k, (_, v) in self.snap.items():
            rest = k[len(P) :] if k.startswith(P) else ""
            if rest.startswith(kind + ":") and ":" not in rest[len(kind) + 1 :]:
                yield rest[len(kind) + 1 :], v

    def waiting_sets(self) -> Iterator[tuple[str, dict[str, float]]]:
        for k, (t, v) in self.snap.items():
            rest = k[len(P) :] if k.startswith(P) else ""
            if t == "zset" and (":w:" in rest or rest.endswith(":wait")):
                yield rest, v


def xs(field_value: str | None) -> set[str]:
    return {a for a in (field_value or "").split("|") if a}


def check_state(model: Model, s: State, acked: set[str]) -> None:
    """The promises, read from Redis, plus model == Redis."""
    cases = dict(s.members("c"))
    # an offer lives in its case's hash: the case's last offer, "ost" its state
    offers = {
        f["offer"]: {"st": f.get("ost"), "case": c, "agent": f.get("oagent"), "ch": f.get("ch")}
        for c, f in cases.items()
        if f.get("offer")
    }
    agents = {a: s.hash(f"a:{a}") for a in AGENTS if a not in model.removed}
    for a in model.removed:  # nothing of a removed agent stays
        left = [k for k in s.snap if k.startswith(f"{P}a:{a}:") or k == f"{P}a:{a}"]
        must(not left, f"{a} was removed, but {left} stay")
        must(a not in s.get("agents", set()), f"{a} was removed, but is still listed")
    pending = {o: f for o, f in offers.items() if f.get("st") == "pending"}
    must(set(cases) == set(model.cases), f"cases: redis {set(cases)} model {set(model.cases)}")

    # at most one owner
    f: dict[str, Any] | None  # an offer's, a case's or an agent's fields, as each check reads them
    by_case: dict[str, list[str]] = {}
    for o, f in pending.items():
        by_case.setdefault(f["case"], []).append(o)
        cf = cases.get(f["case"], {})
        ok = cf.get("st") == "offered" and cf.get("offer") == o and cf.get("oagent") == f["agent"]
        must(ok, f"pending offer {o} {f} but its case is {cf}")
        must(o in s.get(f"a:{f['agent']}:offers", set()), f"{o} missing from its agent's offers")
    for c, os_ in by_case.items():
        must(len(os_) == 1, f"case {c} has {len(os_)} pending offers: {os_}")
    # nobody who is not taking work (away, offline) holds a pending offer: it went on
    for o, f in pending.items():
        must(agents[f["agent"]].get("r") == "1", f"{o} pending for {f['agent']}, not routable")
    for c, f in cases.items():
        if f.get("st") in ("assigned", "wrapping"):
            must(c not in by_case, f"assigned case {c} also has a pending offer")
            must(c in s.get(f"a:{f.get('agent')}:cases", set()), f"{c} not in its agent's cases")
        if f.get("st") == "offered":
            must(c in by_case, f"case {c} is offered with no pending offer: {f}")
    for a in AGENTS:
        for c in s.get(f"a:{a}:cases", set()):
            cf = cases.get(c, {})
            ok = cf.get("st") in ("assigned", "wrapping") and cf.get("agent") == a
            must(ok, f"{a}'s cases list {c}, which is {cf.get('st')} for {cf.get('agent')}")

    # capacity
    for a, af in agents.items():
        for ch in CHANNELS:
            held = sum(1 for f in pending.values() if f["agent"] == a and f["ch"] == ch)
            held += sum(
                1
                for f in cases.values()
                if f.get("st") in ("assigned", "wrapping")
                and f.get("agent") == a
                and f.get("ch") == ch
            )
            load, cap = int(af.get(f"load:{ch}", 0)), int(af.get(f"cap:{ch}", 0))
            must(load == held, f"{a} {ch}: load {load} but holds {held}")
            must(load <= cap, f"{a} {ch}: load {load} over capacity {cap}")

    # work conservation (eligibility from the model's own reading of queues and skills)
    for a, af in agents.items():
        if af.get("r") != "1":
            continue
        for ch in CHANNELS:
            if int(af.get(f"load:{ch}", 0)) >= AGENTS[a].cap[ch]:
                continue
            for c, f in cases.items():
                if f.get("st") != "queued" or f.get("ch") != ch or a in xs(f.get("x")):
                    continue
                ok = not model.cases[c].cur.eligible(AGENTS[a])
                must(
                    ok,
                    f"{a} is available with free {ch} capacity and eligible, but "
                    f"{c} ({model.cases[c].cur}) waits",
                )

    # nobody waits for someone who is not there: a case waiting in a step for one agent waits
    # for an agent who takes cases
    for mc in model.cases.values():
        if mc.status == "queued" and mc.cur.agent is not None:
            a = mc.cur.agent
            must(agents.get(a, {}).get("r") == "1", f"{mc.id} waits for {a}, who takes no cases")

    # nothing lost
    waits = list(s.waiting_sets())
    for c in acked:
        f = cases.get(c)
        must(f is not None, f"acknowledged case {c} vanished")
        assert f is not None
        st_ = f.get("st")
        must(st_ in TERMINAL | {"queued", "offered", "assigned", "wrapping"}, f"{c} is {st_}")
        inside = [k for k, members in waits if c in members]
        if st_ == "queued":
            want = sorted([f"p:{f['pool']}:w:{f['ch']}", f"q:{f['q']}:wait"])
            must(sorted(inside) == want, f"queued case {c} waits in {inside}, not {want}")
        else:
            must(not inside, f"{st_} case {c} still in waiting sets {inside}")
    for k, members in waits:
        for c in members:
            must(cases.get(c, {}).get("st") == "queued", f"{k} holds {c}, which is not queued")

    # order: each pool's waiting set lists its cases in the promised order
    for k, members in waits:
        if not k.startswith("p:"):
            continue
        line = [model.cases[c] for c in members]  # ZRANGE order: the order offers take
        must(len({c.cur.lifo for c in line}) <= 1, f"{k} mixes LIFO and FIFO cases: {members}")
        if line and line[0].cur.lifo:  # newest first, among cases of equal priority
            for pri in {c.pri for c in line}:
                ages = [c.age for c in line if c.pri == pri]
                must(ages == sorted(ages, reverse=True), f"{k} is out of LIFO order: {members}")
        else:
            keys = [(-c.pri, c.age, c.id) for c in line]
            must(
                keys == sorted(keys),
                f"{k} is out of order: {list(zip(members, keys, strict=True))}",
            )

    compare(model, cases, offers, agents, s)


def compare(
    model: Model,
    cases: dict[str, dict[str, str]],
    offers: dict[str, dict[str, str]],
    agents: dict[str, dict[str, str]],
    s: State,
) -> None:
    """The model and Redis agree on everything the routing rules determine."""
    # Redis keeps each case's last offer (earlier ones ended, as the log says)
    last = {o.case: o.id for o in model.offers.values()}  # made in order: the last one wins
    must(set(offers) == set(last.values()), "offers differ")
    # each check compares its own shape: a case's fields, an offer's, an agent's
    got: dict[str, object] | tuple[object, ...]
    want: dict[str, object] | tuple[object, ...]
    for cid, c in model.cases.items():
        f = cases[cid]
        got = {
            "st": f.get("st"),
            "step": f.get("step"),
            "pri": f.get("pri"),
            "age": f.get("age"),
            "x": xs(f.get("x")),
            "agent": f.get("agent") or "",
        }
        want = {
            "st": c.status,
            "step": str(c.step),
            "pri": str(c.pri),
            "age": str(c.age),
            "x": c.x,
            "agent": c.agent,
        }
        if c.status in ("queued", "offered"):
            got["esc"], want["esc"] = f.get("esc"), "1" if c.esc else "0"
            got["pool"], want["pool"] = c.cur.pool_ok(f.get("pool", "")), True
            got["lifo"], want["lifo"] = f.get("lifo"), "1" if c.cur.lifo else "0"
        if c.status == "offered":
            got["offer"], want["offer"] = f.get("offer"), c.offer
        must(got == want, f"case {cid}: redis {got} model {want}")
    for cid, f in cases.items():  # each case's last offer (earlier ones ended in the log)
        if f.get("offer"):
            o = model.offers.get(f["offer"])
            must(o is not None and o.case == cid, f"case {cid}'s offer {f['offer']} not made")
            assert o is not None
            got = (f.get("ost"), f.get("oagent"), f.get("ch"), f.get("odl"))
            want = (o.status, o.agent, o.ch, str(o.deadline))
            must(got == want, f"offer {o.id}: redis {got} model {want}")
    for a, ag in model.agents.items():
        if a in model.removed:
            continue
        f = agents[a]
        got = (f.get("st"), f.get("r"), int(f.get("missed", 0)))
        want = (ag.status, "1" if ag.routable else "0", ag.missed)
        loads = {ch: int(f.get(f"load:{ch}", 0)) for ch in CHANNELS}
        must(got == want and loads == ag.load, f"agent {a}: redis {got} {loads} model {ag}")
    timers = {m: int(v) for m, v in s.get("timers", {}).items()}
    must(timers == model.timers(), f"timers: redis {timers} model {model.timers()}")


# -- the machine ------------------------------------------------------------------------------

_URL = ""  # the session's redis-server, set by the tests below


class RoutingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.model = Model()
        self.clock = 0  # simulated time for run_timers only
        self.ids = itertools.count()
        self.events: list[tuple[dict[str, Any], str]] = []  # (event, its case), for duplicates
        self.acked: set[str] = set()
        self.run(self._start())
        # The transitions' clock: 1 ms per transition from now, never the wall clock, so that a
        # replayed example routes the same way however slowly the machine runs it (a deadline
        # within a second of a timer tick used to fall on either side of it under load).
        self.now = now_ms()
        self._wall_clock = router.store.now_ms
        router.store.now_ms = self._tick_ms

    def run(self, aw: Awaitable[T]) -> T:
        return self.loop.run_until_complete(aw)

    async def _start(self) -> None:
        self.store = Store(connect(_URL))
        self.redis = self.store.redis
        await self.redis.flushall()
        await self.store.load()
        self.switch = Switch(self.store)
        await self.switch.apply_workspace(workspace_decl())
        self.last_log = "0-0"
        await self.read_log()

    def _tick_ms(self) -> int:
        self.now += 1
        return self.now

    def teardown(self) -> None:
        router.store.now_ms = self._wall_clock
        self.run(self.store.close())
        self.loop.close()

    async def read_log(self) -> list[dict[str, str]]:
        raw = await self.redis.xrange(P + "log", min=f"({self.last_log}")
        if raw:
            self.last_log = _s(raw[-1][0])
        return [{_s(k): _s(v) for k, v in f.items()} for _, f in raw]

    def settle(self, ctx: Ctx, now: int | None = None) -> None:
        """Replay what the step logged through the model, then check the whole state."""
        events = self.run(self.read_log())
        self.model.replay(events, ctx, now)
        check_state(self.model, State(self.run(snapshot(self.redis))), self.acked)

    def unchanged(self, call: Awaitable[T]) -> T:
        """Run a request that must change nothing -- whether it answers or raises."""
        before = self.run(snapshot(self.redis))
        try:
            return self.run(call)
        finally:
            after = self.run(snapshot(self.redis))
            diff = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            must(not diff, f"a repeated or refused request changed {diff}")

    # -- actions (rules draw their arguments, repro tests call these directly) --

    def ingest(
        self, ch: str, attrs: dict[str, str], who: int, *, thread: str = "", kind: str = ""
    ) -> str:
        n = next(self.ids)
        thread = thread or f"t{n}"
        ev: dict[str, Any] = {
            "id": f"e{n}",
            "channel": ch,
            "kind": kind or ("call.offered" if ch == "voice" else "message"),
            "identities": {"phone": f"+1555000{who:04d}"}
            if ch == "voice"
            else {"email": f"c{who}@x.test"},
            "thread": thread,
            "text": f"event {n}",
            "attributes": attrs,
        }
        key = f"{ch}:{thread}"
        old = self.model.cases.get(self.model.threads.get(key, ""))
        ended = ev["kind"] in ("call.ended", "conversation.ended")
        if old is None:
            want = "ignored" if ended else "created"
        elif ended and old.callback and old.status in ("queued", "offered"):
            want = "appended"  # the caller is to be called back: hanging up ends nothing
        elif ended:
            want = {
                "queued": "abandoned",
                "offered": "abandoned",
                "assigned": "appended",
                "wrapping": "appended",
            }.get(old.status, "ignored")
        else:
            want = {"completed": "reopened", "cancelled": "created", "abandoned": "created"}.get(
                old.status, "appended"
            )
        offered = old is not None and old.status == "offered"
        res = self.run(self.switch.ingest(WS, ev))
        self.events.append((ev, res.case))
        must(res.action == want and not res.duplicate, f"ingest {ev}: {res}, expected {want}")
        if want in ("created", "reopened", "appended", "abandoned"):
            self.acked.add(res.case)
        if old is not None and want in ("appended", "reopened"):
            old.gone = ended  # ended while held, or back (a message, a reopened case)
            if want == "reopened":
                old.callback = False  # settled with the case it reopens
        self.settle(Ctx("ingest", attrs=attrs, ch=ch, thread=thread, keep_out=ended and offered))
        return res.case

    def set_status(self, a: str, status: str) -> None:
        ag = self.model.agents[a]
        ag.status = status  # the script sets it first, then routes
        if ROUTABLE[status]:
            ag.missed = 0
        self.run(self.switch.set_status(WS, a, status))
        self.settle(Ctx("status", status=status, agent=a))
        if not ROUTABLE[status]:
            must(not self.model.pending_of(a), f"{a} went {status} but holds offers")

    def accept(self, oid: str) -> None:
        o = self.model.offers[oid]
        res = self.run(self.switch.accept(WS, o.agent, oid))
        must(res["case"] == o.case and not res["duplicate"], f"accept {oid}: {res}")
        self.settle(Ctx("accept"))

    def reject(self, oid: str) -> None:
        o = self.model.offers[oid]
        res = self.run(self.switch.reject(WS, o.agent, oid))
        must(res["case"] == o.case and not res["duplicate"], f"reject {oid}: {res}")
        self.settle(Ctx("reject"))

    def tick(self, advance_ms: int) -> None:
        self.clock = max(self.clock, self.now + advance_ms)
        self.run(self.switch.run_timers(WS, now=self.clock))
        self.settle(Ctx("timers"), now=self.clock)

    def wrapup(self, cid: str) -> None:
        self.run(self.switch.wrapup(WS, self.model.cases[cid].agent, cid))
        self.settle(Ctx("wrapup"))

    def complete(self, cid: str) -> None:
        c = self.model.cases[cid]
        c.status = "completed"  # the script frees the capacity first, then pulls
        self.model.agents[c.agent].load[c.ch] -= 1
        res = self.run(self.switch.complete(WS, c.agent, cid, "resolved"))
        must(not res["duplicate"], f"complete {cid}: {res}")
        self.settle(Ctx("complete", case=cid))

    def transfer(self, cid: str, queue: str = "", to_agent: str = "") -> None:
        c = self.model.cases[cid]

        def plan(c: Case) -> list[Step]:
            if queue:
                return [Step(queue, c.pri, lifo=queue in LIFO_QUEUES)]
            back = c.cur.queue
            return [
                Step(back, c.pri, due=TRANSFER_AGENT_MS, agent=to_agent),
                Step(back, c.pri, lifo=back in LIFO_QUEUES),
            ]

        call = self.switch.transfer(WS, c.agent, cid, queue=queue, to_agent=to_agent)
        refusal = None
        if c.status == "wrapping":
            refusal = "case.wrapping"  # the conversation has ended
        elif to_agent and (
            to_agent == c.agent
            or AGENTS[to_agent].cap.get(c.ch, 0) <= 0
            or not self.model.agents[to_agent].routable
        ):
            # to yourself, to someone who takes no cases on its channel or none now (away,
            # signed out)
            refusal = "transfer.invalid"
        if refusal:  # refused, no change
            try:
                self.run(call)
            except (BadRequest, Conflict) as e:
                must(e.code == refusal, f"transfer of {cid} to {to_agent or queue}: {e.code}")
            else:
                must(False, f"transfer of {cid} from {c.agent} to {to_agent or queue} was accepted")
            self.settle(Ctx("refused"))
            return
        self.run(call)
        self.handed_on(c)
        self.settle(Ctx("transfer", plan=plan))

    def remove_and_add_back(self, a: str) -> None:
        """An admin removes an agent (refused while they hold cases: nothing changes), then
        adds them back: a new agent of the same id, signed out, with nothing of the old one."""
        if any(self.model.cases[c].agent == a for c in self.model.held("assigned", "wrapping")):
            with pytest.raises(Conflict) as refused:
                self.unchanged(self.switch.remove_agent(WS, a))
            must(refused.value.code == "agent.busy", f"removing {a}: {refused.value.code}")
            return
        ag = self.model.agents[a]
        ag.status = "offline"  # the script takes them out of routing first, then rescinds
        self.run(self.switch.remove_agent(WS, a))
        self.model.removed.add(a)
        self.settle(Ctx("remove", agent=a))
        must(not self.model.pending_of(a), f"{a} was removed but holds offers")
        must(all(v == 0 for v in ag.load.values()), f"{a} was removed with load {ag.load}")
        self.model.agents[a] = AgentState()
        self.model.removed.discard(a)
        spec = AGENTS[a]
        decl = agent(a, sorted(spec.skills), languages=sorted(spec.languages), **spec.cap)
        self.run(self.switch.upsert_agent(WS, decl))
        self.settle(Ctx("add"))

    def take_back(self, a: str, cid: str) -> None:
        """Agent a reopens a case to follow it up: theirs at once if it is closed, they had it
        last, and they have room on its channel; otherwise refused, saying why, and nothing
        changes (asking again for a case they hold changes nothing either)."""
        c = self.model.cases[cid]
        call = self.switch.reopen(WS, a, cid)
        if c.agent == a and c.status in ("assigned", "wrapping"):
            must(self.unchanged(call)["duplicate"], f"{a} took back {cid}, which they hold")
            return
        refusal = None
        if a not in (c.agent, c.last_agent):
            refusal = "case.unknown"
        elif c.status not in TERMINAL:
            refusal = "case.assigned" if c.status == "wrapping" else f"case.{c.status}"
        elif not self.model.free(a, c.ch):
            refusal = "agent.full"
        if refusal:
            with pytest.raises((NotFound, Conflict)) as refused:
                self.unchanged(call)
            must(refused.value.code == refusal, f"{a} taking back {c}: {refused.value.code}")
            return
        self.run(call)
        self.settle(Ctx("reopen", agent=a, case=cid))

    def handed_on(self, c: Case) -> None:
        """A call taken from its agent after its caller hung up becomes a callback (the next
        agent calls them back; every caller here has a phone number on file)."""
        if c.ch == "voice" and c.gone and c.status in ("assigned", "wrapping"):
            c.callback = True

    def move(self, cid: str, queue: str) -> None:
        """A supervisor moves a case to another queue: a waiting one (queued or offered), or
        one they take back from its agent (assigned or wrapping). A waiting case to the queue
        it waits in is refused, and nothing changes."""
        c = self.model.cases[cid]
        if c.status == "queued" and c.cur.queue == queue:
            try:
                self.run(self.switch.transfer(WS, "", cid, queue=queue))
            except Conflict as e:
                must(e.code == "case.same_queue", f"move of {cid} to its own {queue}: {e.code}")
            else:
                must(False, f"move of waiting {cid} to its own queue {queue} was accepted")
            self.settle(Ctx("refused"))
            return
        self.run(self.switch.transfer(WS, "", cid, queue=queue))
        self.handed_on(self.model.cases[cid])
        plan = lambda c: [Step(queue, c.pri, lifo=queue in LIFO_QUEUES)]  # noqa: E731
        self.settle(Ctx("move", plan=plan, keep_out=True))

    # -- rules --

    attrs_st = st.fixed_dictionaries(
        {},
        optional={
            "topic": st.sampled_from(["sales", "billing", "other"]),
            "language": st.sampled_from(["en", "es"]),
        },
    )

    @rule(
        cases=st.lists(
            st.tuples(st.sampled_from(CHANNELS), attrs_st, st.integers(0, 3)),
            min_size=1,
            max_size=4,
        )
    )
    def add_cases(self, cases: list[tuple[str, dict[str, str], int]]) -> None:
        """New contacts arrive (a few at once, so queues build up); each is one ingest."""
        for ch, attrs, who in cases:
            self.ingest(ch, attrs, who)

    @precondition(lambda self: self.model.threads)
    @rule(data=st.data(), attrs=attrs_st, to=st.sampled_from(["completed", "open", "gone"]))
    def follow_up(self, data: st.DataObject, attrs: dict[str, str], to: str) -> None:
        """A message on an existing thread: joins an open case, reopens a completed one,
        opens a new case after a cancelled or abandoned one."""
        statuses = {
            "completed": {"completed"},
            "open": {"queued", "offered", "assigned", "wrapping"},
            "gone": {"cancelled", "abandoned"},
        }[to]
        keys = sorted(
            k for k, c in self.model.threads.items() if self.model.cases[c].status in statuses
        )
        if keys:
            ch, thread = data.draw(st.sampled_from(keys)).split(":", 1)
            self.ingest(ch, attrs, 9, thread=thread)

    @precondition(lambda self: self.model.held("queued", "offered", "assigned"))
    @rule(data=st.data())
    def caller_hangs_up(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(self.model.held("queued", "offered", "assigned")))
        c = self.model.cases[cid]
        self.ingest(c.ch, {}, 9, thread=c.thread, kind=END_KIND[c.ch])

    @initialize(agents=st.sets(st.sampled_from(sorted(AGENTS))))
    def agents_log_in(self, agents: set[str]) -> None:
        for a in sorted(agents):
            self.set_status(a, "available")

    @rule(
        a=st.sampled_from(sorted(AGENTS)),
        status=st.sampled_from(["available", "available", "away", "offline"]),
    )
    def change_status(self, a: str, status: str) -> None:
        self.set_status(a, status)

    @rule(a=st.sampled_from(sorted(AGENTS)))
    def admin_removes_agent(self, a: str) -> None:
        self.remove_and_add_back(a)

    @precondition(lambda self: self.model.pending())
    @rule(data=st.data())
    def accept_offer(self, data: st.DataObject) -> None:
        self.accept(data.draw(st.sampled_from([o.id for o in self.model.pending()])))

    @precondition(lambda self: self.model.pending())
    @rule(data=st.data(), wrap=st.booleans())
    def handle_a_case(self, data: st.DataObject, wrap: bool) -> None:
        """An agent takes an offer and sees the case through (each call checked on its own)."""
        o = data.draw(st.sampled_from(self.model.pending()))
        self.accept(o.id)
        if wrap:
            self.wrapup(o.case)
        self.complete(o.case)

    @precondition(lambda self: self.model.pending())
    @rule(data=st.data())
    def answer_someone_elses_offer(self, data: st.DataObject) -> None:
        o = data.draw(st.sampled_from(self.model.pending()))
        other = data.draw(st.sampled_from(sorted(set(AGENTS) - {o.agent})))
        call = data.draw(st.sampled_from([self.switch.accept, self.switch.reject]))
        with pytest.raises(NotFound):
            self.unchanged(call(WS, other, o.id))

    @precondition(lambda self: self.model.pending())
    @rule(data=st.data())
    def reject_offer(self, data: st.DataObject) -> None:
        self.reject(data.draw(st.sampled_from([o.id for o in self.model.pending()])))

    @rule(advance=st.sampled_from([0, 5_000, 16_000, 31_000, 61_000, 121_000, 151_000]))
    def time_passes(self, advance: int) -> None:
        self.tick(advance)

    @precondition(lambda self: self.model.held("assigned"))
    @rule(data=st.data())
    def wrap_up(self, data: st.DataObject) -> None:
        self.wrapup(data.draw(st.sampled_from(self.model.held("assigned"))))

    @precondition(lambda self: self.model.held("assigned", "wrapping"))
    @rule(data=st.data())
    def complete_case(self, data: st.DataObject) -> None:
        self.complete(data.draw(st.sampled_from(self.model.held("assigned", "wrapping"))))

    @precondition(lambda self: self.model.held("assigned", "wrapping"))
    @rule(data=st.data(), queue=st.sampled_from(sorted(QUEUE_SKILL)))
    def transfer_to_queue(self, data: st.DataObject, queue: str) -> None:
        self.transfer(data.draw(st.sampled_from(self.model.held("assigned", "wrapping"))), queue)

    @precondition(lambda self: self.model.held("assigned", "wrapping"))
    @rule(data=st.data(), to=st.sampled_from(sorted(AGENTS)))
    def transfer_to_agent(self, data: st.DataObject, to: str) -> None:
        self.transfer(data.draw(st.sampled_from(self.model.held("assigned", "wrapping"))), "", to)

    @precondition(lambda self: self.model.cases)
    @rule(data=st.data(), a=st.sampled_from(sorted(AGENTS)))
    def agent_takes_back(self, data: st.DataObject, a: str) -> None:
        """Mostly a case its last agent asks for, often a closed one (a follow-up); sometimes
        any case, any agent."""
        handled = [c.id for c in self.model.cases.values() if c.last_agent]
        closed = [cid for cid in handled if self.model.cases[cid].status in TERMINAL]
        pick = list(self.model.cases)
        for narrower in (handled, closed):
            if data.draw(MOSTLY) and narrower:
                pick = narrower
        c = self.model.cases[data.draw(st.sampled_from(sorted(pick)))]
        if c.last_agent and data.draw(MOSTLY):
            a = c.last_agent
        cid = c.id
        self.take_back(a, cid)

    @precondition(lambda self: self.model.held("queued", "offered", "assigned", "wrapping"))
    @rule(data=st.data(), queue=st.sampled_from(sorted(QUEUE_SKILL)))
    def supervisor_moves(self, data: st.DataObject, queue: str) -> None:
        held = self.model.held("queued", "offered", "assigned", "wrapping")
        self.move(data.draw(st.sampled_from(held)), queue)

    @precondition(lambda self: self.events)
    @rule(data=st.data())
    def duplicate_event(self, data: st.DataObject) -> None:
        ev, case = data.draw(st.sampled_from(self.events))
        res = self.unchanged(self.switch.ingest(WS, ev))
        must(res.duplicate and res.case == case, f"repeated event {ev['id']} of {case}: {res}")

    @precondition(lambda self: any(o.status != "pending" for o in self.model.offers.values()))
    @rule(data=st.data())
    def repeat_answer(self, data: st.DataObject) -> None:
        """Accepting or rejecting an offer that has already ended changes nothing."""
        o = data.draw(
            st.sampled_from([o for o in self.model.offers.values() if o.status != "pending"])
        )
        verb = data.draw(st.sampled_from(["accepted", "rejected"]))
        call = self.switch.accept if verb == "accepted" else self.switch.reject
        if o.status == verb:  # the same answer again: ok, a duplicate
            res = self.unchanged(call(WS, o.agent, o.id))
            must(res["duplicate"] and res["case"] == o.case, f"repeat on {o}: {res}")
        else:
            with pytest.raises(Conflict):
                self.unchanged(call(WS, o.agent, o.id))

    @precondition(lambda self: self.model.held("completed"))
    @rule(data=st.data())
    def repeat_complete(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(self.model.held("completed")))
        c = self.model.cases[cid]
        res = self.unchanged(self.switch.complete(WS, c.agent, cid))
        must(res["duplicate"], f"repeat complete of {cid}: {res}")


# -- the tests --------------------------------------------------------------------------------


@pytest.fixture
def machine_url(redis_server: str) -> str:
    global _URL
    _URL = redis_server
    return redis_server


def test_routing_rules_hold_for_random_sequences(machine_url: str) -> None:
    run_state_machine_as_test(
        RoutingMachine,
        settings=settings(
            max_examples=150,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


# -- regressions: core bugs this machine found (fixed in e93a78d), replayed by hand ------------


@contextmanager
def scenario() -> Iterator[RoutingMachine]:
    """The machine driven by hand: every step is checked exactly as in the random runs."""
    m = RoutingMachine()
    try:
        yield m
    finally:
        m.teardown()


def test_agent_who_rejects_at_full_capacity_gets_the_next_case(machine_url: str) -> None:
    """offer_reject.lua freed the capacity without refreshing the agent's available sets."""
    with scenario() as m:
        m.set_status("ann", "available")
        m.ingest("voice", {}, 1)  # rings ann: her one voice line is taken
        m.reject(m.model.pending()[0].id)  # the line is free again
        m.ingest("voice", {}, 2)  # must ring ann (it used to wait in the queue)
        assert [o.agent for o in m.model.pending()] == ["ann"]


def test_agent_whose_caller_hangs_up_gets_the_next_call(machine_url: str) -> None:
    """event_ingest.lua: a caller hanging up while ringing left the agent unroutable."""
    with scenario() as m:
        m.set_status("ann", "available")
        m.ingest("voice", {}, 1, thread="CA1")  # rings ann
        m.ingest("voice", {}, 1, thread="CA1", kind="call.ended")  # the caller gives up
        m.ingest("voice", {}, 2)  # must ring ann
        assert [o.agent for o in m.model.pending()] == ["ann"]


def test_going_offline_does_not_offer_the_case_back(machine_url: str) -> None:
    """agent_status.lua requeued the rescinded case while the agent still looked available."""
    with scenario() as m:
        m.set_status("ann", "available")
        m.ingest("chat", {}, 1)  # offered to ann, who can take 2 chats
        m.set_status("ann", "offline")  # rescinds it; it must not come back to her
        assert not m.model.pending()


def test_supervisor_move_drops_the_old_step_timer(machine_url: str) -> None:
    """case_transfer.lua kept the old plan's step timer; 30 s later it cancelled the case."""
    with scenario() as m:
        cid = m.ingest("chat", {"language": "es"}, 1)  # waits 30 s for a Spanish speaker
        m.move(cid, "sales")
        m.tick(31_000)
        assert m.model.cases[cid].status == "queued"


def test_transfer_to_agent_falls_back_in_the_queue_order(machine_url: str) -> None:
    """switch.py scored the fallback step after a transfer to an agent FIFO, even in LIFO."""
    with scenario() as m:
        m.set_status("dee", "available")
        cid = m.ingest("chat", {"topic": "billing"}, 1)  # billing is LIFO
        m.accept(m.model.pending()[0].id)
        m.set_status("dee", "away")
        m.set_status("ann", "available")
        for who in (2, 3):  # ann takes two chats: she is full
            m.ingest("chat", {}, who)
            m.accept(m.model.pending_of("ann")[0].id)
        m.transfer(cid, to_agent="ann")  # ann is busy: the case waits for her 60 s
        m.tick(61_000)  # then back to billing, where it must wait in LIFO order ...
        newer = m.ingest("chat", {"topic": "billing"}, 2)  # ... behind this newer one
        m.set_status("cid", "available")
        assert [m.model.offers[o.id].case for o in m.model.pending()] == [newer, cid]


def test_priority_ranks_across_a_lifo_and_a_fifo_queue(machine_url: str) -> None:
    with scenario() as m:
        m.set_status("bob", "available")
        sale = m.ingest("chat", {"topic": "sales"}, 1)  # priority 10
        m.accept(m.model.pending()[0].id)
        m.set_status("bob", "away")
        m.transfer(sale, queue="billing")  # keeps priority 10, waits in LIFO billing
        m.ingest("chat", {}, 2)  # support, priority 5
        m.ingest("chat", {}, 3)  # support, priority 5
        m.set_status("cid", "available")  # billing + support, 2 chats: the 10 must be one
        assert sale in {o.case for o in m.model.pending()}


def test_removing_an_agent_moves_on_what_waits_for_them(machine_url: str) -> None:
    """agent_remove.lua: refused while they hold a case; otherwise their pending offer goes
    back to its queue, and a case transferred to them by name (ringing for them) moves on to
    its queue at once, rather than waiting out the 60 s for someone who no longer exists."""
    with scenario() as m:
        m.set_status("bob", "available")
        a = m.ingest("voice", {}, 1)  # bob's one line
        m.accept(m.model.pending_of("bob")[0].id)
        m.set_status("ann", "available")
        b = m.ingest("voice", {}, 2)
        m.accept(m.model.pending_of("ann")[0].id)
        m.transfer(b, to_agent="bob")  # bob is on a call: it waits for him by name
        c = m.ingest("voice", {}, 3)  # rings ann
        assert [o.case for o in m.model.pending_of("ann")] == [c]
        m.remove_and_add_back("bob")  # refused: he holds a call (checked unchanged)
        m.remove_and_add_back("ann")
        assert m.model.cases[c].status == "queued"
        m.complete(a)  # bob is free: the call transferred to him rings him
        assert [o.case for o in m.model.pending_of("bob")] == [b]
        m.remove_and_add_back("bob")
        assert m.model.cases[b].status == "queued"
        assert m.model.cases[b].cur.agent is None
