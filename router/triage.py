"""Triage: from a normalized event to a routing plan. Pure — no I/O.

The workspace's workflow (TaskRouter's format, :mod:`router.workflow`) picks the filter and its
targets; each target becomes a *step* of the plan stored on the case. A step names a **pool** —
a queue narrowed by the target's worker filter (with the case's own attributes already bound
in) — so Lua can match in O(log n) against precomputed per-pool sorted sets. Escalation to the
next step happens in Redis (``timers_run.lua``), keeping the case's age.

A target's terms on the agent's live load (``worker.channel.chat.assigned_tasks < 2``) cannot
be precomputed: they travel in the pool's id, after ``#`` (:func:`load_code`), and the Lua
matching checks them per candidate agent (``_lib.lua`` ``load_conds``); a pool id without
``#`` has none, and costs nothing more.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from router import fastjson
from router.expressions import Expression, ExpressionError, clock_values
from router.expressions import compile as compile_expression
from router.workflow import LoadCondition, Step
from router.workspace import AgentConfig, WorkspaceConfig

__all__ = [
    "PoolSpec",
    "Triage",
    "agent_data",
    "load_code",
    "order_value",
    "pool_id",
    "pool_members",
    "reopen_plan",
    "skip_rule",
    "triage",
]

_SKIP = re.compile(r"^\s*workers\.available\s*(==|!=|>=|<=|>|<)\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A queue narrowed by a worker filter, ordered by idle time or an agent attribute."""

    id: str
    queue: str
    filter: str  # canonical expression over agent attributes; "true" = the whole queue
    order_by: tuple[tuple[str, bool], ...] = ()
    # compiled filter when known (bound task values can make the text exceed compile()'s bound)
    expression: Expression | None = field(default=None, compare=False, repr=False)
    load: str = ""  # live-load conditions checked when matching (load_code), "" = none

    def compiled(self) -> Expression | None:
        if self.expression is not None:
            return self.expression
        try:
            return compile_expression(self.filter)
        except ExpressionError:
            return None


@dataclass(frozen=True, slots=True)
class Triage:
    filter_name: str
    plan: list[dict[str, Any]]  # steps as stored on the case (JSON); shared, do not modify
    pools: list[PoolSpec]  # pools the plan needs defined in Redis
    fields: dict[str, Any]  # case hash fields for a new case
    plan_json: str = ""  # plan as JSON, as the ingest script takes it
    reopen_json: str = ""  # reopen_plan(...) as JSON


def pool_id(
    queue: str, filter_: str, order_by: Sequence[tuple[str, bool]] = (), load: str = ""
) -> str:
    """Stable id: the queue id itself for the plain queue, ``queue^hash`` for a narrowed one,
    ``queue^hash#<load code>`` for one with live-load conditions (Lua reads them there)."""
    if filter_ == "true" and not order_by and not load:
        return queue
    order = ",".join(f"{k}:{'d' if d else 'a'}" for k, d in order_by)
    digest = hashlib.sha1(f"{filter_}|{order}".encode()).hexdigest()[:12]
    return f"{queue}^{digest}#{load}" if load else f"{queue}^{digest}"


_LOAD_NAMES = {"assigned_tasks": "at", "available_capacity_percentage": "acp"}


def load_code(conditions: Sequence[LoadCondition]) -> str:
    """Live-load conditions as ``_lib.lua`` reads them from a pool id: sorted, ``&``-joined
    ``<channel>.at<op><n>`` (assigned tasks) / ``<channel>.acp<op><n>`` (available capacity
    %), op one of ``== != < >``; ``""`` for none. Ids never hold ``#`` (keys.valid_id)."""
    codes = {f"{c.channel}.{_LOAD_NAMES[c.key]}{c.op}{c.value}" for c in conditions}
    return "&".join(sorted(codes))


def skip_rule(text: str | None) -> list[Any] | None:
    """Compile a target's ``skip_if`` to ``[op, n]`` over the step's available-agent count.

    Switchboard supports the form TaskRouter documents, ``workers.available == 0`` (any
    comparison with a whole number); anything else is rejected when the workflow is loaded.
    """
    if not text:
        return None
    m = _SKIP.match(text)
    if m is None:
        raise ValueError(f"skip_if supports 'workers.available <op> <number>', got {text!r}")
    return [m.group(1), int(m.group(2))]


def agent_data(agent: AgentConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The data a worker filter is evaluated against: attributes plus configured capacity."""
    if isinstance(agent, AgentConfig):
        attrs, cap = dict(agent.attributes), agent.capacity
    else:
        attrs, cap = dict(agent.get("attributes", {})), agent.get("capacity", {})
    attrs.setdefault("channel", {ch: {"configured_capacity": n} for ch, n in cap.items()})
    return attrs


def _lookup(data: Mapping[str, Any], path: str) -> Any:
    cur: Any = data
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def order_value(data: Mapping[str, Any], order_by: Sequence[tuple[str, bool]]) -> int:
    """Sort key of an agent in a pool (lower is offered first): the first ``order_by`` key,
    negated when descending, as an integer within ±2047; 0 when absent or not a number."""
    if not order_by:
        return 0
    path, desc = order_by[0]
    v = _lookup(data, path)
    if isinstance(v, bool) or not isinstance(v, int | float):
        return 0
    n = round(-v if desc else v)
    return max(-2047, min(2047, n))


def pool_members(
    spec: PoolSpec, queue_target: str, agents: Mapping[str, Mapping[str, Any]]
) -> list[list[Any]]:
    """``[[agent id, order value], ...]`` for the agents (id -> agent_data) in the pool."""
    q = compile_expression(queue_target).strip_prefix("worker")
    f = spec.compiled()
    if f is None:
        return []
    return [
        [aid, order_value(data, spec.order_by)]
        for aid, data in agents.items()
        if q.evaluate(data) and f.evaluate(data)
    ]


def queue_members(
    queues: Sequence[Any], agents: Mapping[str, Mapping[str, Any]]
) -> dict[str, frozenset[str]]:
    """Queue id -> the agents (id -> agent_data) whose attributes its target matches: the
    queues an agent may be offered cases from. A target that no longer compiles matches
    nobody."""
    out: dict[str, frozenset[str]] = {}
    for q in queues:
        try:
            matched = pool_members(PoolSpec(q.id, q.id, "true"), q.target, agents)
        except ExpressionError:
            matched = []
        out[q.id] = frozenset(str(m[0]) for m in matched)
    return out


def _step(
    ws: WorkspaceConfig, step: Step, due: float | None
) -> tuple[dict[str, Any], PoolSpec | None]:
    q = ws.queue(step.queue)
    lifo = "1" if q is not None and q.order == "lifo" else "0"
    out: dict[str, Any] = {"queue": step.queue, "pri": step.priority, "lifo": lifo}
    if due is not None:
        out["due"] = int(due * 1000)  # since the plan started (TaskRouter: on the task's age)
    skip = skip_rule(step.skip_if)
    if skip is not None:
        out["skip"] = skip
    if step.known_agent_id:
        out["agent"] = step.known_agent_id
        return out, None
    load = load_code(step.load_conditions)
    spec = PoolSpec(
        pool_id(step.queue, step.worker_filter, step.order_by, load),
        step.queue,
        step.worker_filter,
        tuple(step.order_by),
        step.worker_expression,
        load,
    )
    out["pool"] = spec.id
    return out, spec


def triage(
    ws: WorkspaceConfig,
    channel: str,
    attributes: Mapping[str, Any],
    *,
    subject: str = "",
    now: datetime | None = None,
) -> Triage:
    """Plan the routing of a new case on ``channel`` with task ``attributes``.

    A plan depends only on the few task values the workflow reads, so plans are kept per
    configuration keyed by those values (unless the workflow reads the time of day): most
    cases are planned by one dict lookup instead of evaluating every filter.
    """
    ch = ws.channels[channel]
    task = {"channel": channel, **attributes}
    names = ws.workflow.task_keys
    key = None if names is None or now is not None else _plan_key(channel, task, names)
    planned = ws.plan_cache.get(key) if key is not None else None
    if planned is None:
        planned = _plan(ws, channel, task, now)
        if key is not None:
            if len(ws.plan_cache) >= PLAN_CACHE_SIZE:
                ws.plan_cache.clear()
            ws.plan_cache[key] = planned
    filter_name, steps, pools, plan_json, reopen_json = planned
    fields = {
        "pri": steps[0]["pri"] if steps else ch.priority,
        "otm": int(ch.offer_timeout_s * 1000),
        "attrs": fastjson.dumps_str(dict(attributes)),
        "subject": subject,
        "flt": filter_name,
    }
    return Triage(filter_name, steps, pools, fields, plan_json, reopen_json)


PLAN_CACHE_SIZE = 4096  # distinct plans kept per configuration; then the cache starts over


def _plan_key(channel: str, task: Mapping[str, Any], names: Sequence[str]) -> tuple[Any, ...]:
    values: list[Any] = [channel]
    for name in names:
        v = task.get(name)
        if v is None or type(v) in (str, int, float, bool):
            values.append((type(v).__name__, v))  # 1, 1.0 and True are equal keys otherwise
        else:
            values.append(json.dumps(v, sort_keys=True, default=str))
    return tuple(values)


def _plan(
    ws: WorkspaceConfig, channel: str, task: Mapping[str, Any], now: datetime | None
) -> tuple[str, list[dict[str, Any]], list[PoolSpec], str, str]:
    ch = ws.channels[channel]
    clock = clock_values(now or datetime.now(UTC), ws.timezone)
    plan = ws.workflow.plan(task, default_priority=ch.priority, clock=clock)
    steps: list[dict[str, Any]] = []
    pools: list[PoolSpec] = []
    for i, s in enumerate(plan.steps):
        out, spec = _step(ws, s, plan.deadline(i))
        steps.append(out)
        if spec is not None:
            pools.append(spec)
    if plan.fallback is not None and plan.steps and plan.fallback is not plan.steps[0]:
        out, spec = _step(ws, plan.fallback, None)
        out["fb"] = True  # reached only by skipping past the last step, never by its timeout
        steps.append(out)
        if spec is not None:
            pools.append(spec)
    reopen = reopen_plan(ws, steps)
    return plan.filter_name, steps, pools, _compact(steps), _compact(reopen)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def reopen_plan(ws: WorkspaceConfig, plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A reopened case first waits for its last agent, then follows its normal ``plan``."""
    first = plan[0] if plan else {"queue": "", "pri": 0, "lifo": "0"}
    known = {
        "known": "last_agent",
        "queue": first["queue"],
        "pri": first["pri"],
        "lifo": "0",
        "due": int(ws.reopen_agent_timeout_s * 1000),
    }
    shift = known["due"]
    rest = [{**s, "due": s["due"] + shift} if "due" in s else s for s in plan]
    return [known, *rest]
