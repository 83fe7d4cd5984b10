"""TaskRouter workflow configurations: validate once, plan each case's route, no I/O.

A configuration is the JSON that Twilio TaskRouter documents::

    {"task_routing": {
        "filters": [{"filter_friendly_name": "Gold", "expression": "tier == 'gold'",
                     "targets": [{"queue": "vip", "priority": 10, "timeout": 60,
                                  "expression": "task.language IN worker.languages"},
                                 {"queue": "support"}]}],
        "default_filter": {"queue": "support"}}}

Queues are our own ids (any non-empty string) instead of ``WQ…`` sids. Semantics
follow TaskRouter's docs: the first matching filter wins; its targets are routing
steps taken in order; a target without a queue inherits the previous one; a target's
priority sticks until another target sets one; expressions, timeouts, ``order_by``,
``skip_if`` and known-agent fields apply only to the target that states them. When the
last step of a filter times out (or is skipped) the case flows into the next filter
that also matches; ``default_filter`` only catches cases no filter matched, or that
skipped past every step.

A target expression may read the agent's live load, ``worker.channel.<name>.assigned_tasks``
and ``worker.channel.<name>.available_capacity_percentage``, in top-level AND terms compared
with a number (or a task value): a step keeps them apart as ``load_conditions``, checked by the
router when it matches, since they change with every offer; the rest of the expression decides
which agents belong to the step's pool. Any other use of them is rejected when loading.

Loading and validating a configuration (``load_workflow``) is ``router.workflow_load``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from router.expressions import Expression, ExpressionError, as_number, compile, resolve

__all__ = [
    "DEFAULT_FILTER_NAME",
    "MAX_PRIORITY",
    "Filter",
    "LoadCondition",
    "Plan",
    "Step",
    "Target",
    "Workflow",
    "WorkflowError",
    "order_key",
    "parse_order_by",
]

DEFAULT_FILTER_NAME = "default_filter"
_TRUE = compile("true")
_FALSE = compile("false")
# The agent's live load on a channel, as target expressions read it (worker. prefix optional).
_LOAD_KEY = re.compile(
    r"(?:worker\.)?channel\.([A-Za-z0-9_]+)\.(assigned_tasks|available_capacity_percentage)"
    r"(?![A-Za-z0-9_])"
)
_LOAD_BOUND = 10**9  # loads and percentages stay far inside; larger numbers are clamped

OrderBy = tuple[tuple[str, bool], ...]  # (agent attribute path, descending?)


class WorkflowError(ValueError):
    """An invalid workflow: ``path`` names the field, ``column`` the fault in an expression."""

    def __init__(self, path: str, reason: str, column: int | None = None) -> None:
        where = f"{path}: " if path else ""
        at = "" if column is None else f" at column {column}"
        super().__init__(f"{where}{reason}{at}")
        self.path = path
        self.reason = reason
        self.column = column

    def __reduce__(self) -> tuple[type[WorkflowError], tuple[str, str, int | None]]:
        return (WorkflowError, (self.path, self.reason, self.column))


#: a case's priority is 0 - this: a waiting case's score holds 11 bits of it (_lib.lua)
MAX_PRIORITY = 2047


@dataclass(frozen=True)
class Target:
    """One routing step as configured; ``queue`` is already resolved through inheritance."""

    queue: str
    priority: int | None = None
    timeout: float | None = None
    expression: str | None = None  # as written; worker keys prefixed "worker." or bare
    order_by: OrderBy = ()
    skip_if: str | None = None
    known_agent: str | None = None  # task attribute path holding the agent id


@dataclass(frozen=True, order=True)
class LoadCondition:
    """A step's condition on the agent's live load on ``channel``, checked when matching.

    ``assigned_tasks`` is the agent's load on the channel, pending offers included (as
    TaskRouter counts reservations); ``available_capacity_percentage`` is
    ``floor(100 * (capacity - load) / capacity)``, 0 without capacity. ``op`` is one of
    ``== != < >`` and ``value`` an integer: ``<= 2`` is kept as ``< 3``, ``> 1.5`` as ``> 1``.
    """

    channel: str
    key: str  # assigned_tasks | available_capacity_percentage
    op: str
    value: int

    def holds(self, capacity: int, load: int) -> bool:
        """Whether an agent with this capacity and load on the channel meets the condition."""
        x = load
        if self.key == "available_capacity_percentage":
            x = 100 * (capacity - load) // capacity if capacity > 0 else 0
        if self.op == "<":
            return x < self.value
        if self.op == ">":
            return x > self.value
        return (x == self.value) == (self.op == "==")


@dataclass(frozen=True)
class Filter:
    name: str
    expression: str  # over task attributes, bare or prefixed "task."
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class Step:
    """One routing step of one case, with everything task-dependent already resolved.

    ``worker_filter`` is the canonical target expression over agent attributes (task
    values and time of day bound, ``worker.`` stripped; ``"true"`` when the target has
    none), without its terms on the agent's live load: those are ``load_conditions``,
    all of which must also hold. ``worker_expression`` is the filter compiled; prefer it,
    since bound task values can make the text longer than ``compile()`` accepts. A filter
    that is ``"false"`` has no load conditions. ``known_agent_id`` set:
    only that agent may take the case (and only if it also passes the filter); a
    known-agent target whose task attribute is missing gets ``worker_filter == "false"``,
    so the case waits out the step as TaskRouter does. ``skip_if`` (canonical text) is
    evaluated by the caller against ``{"workers": {"available": n, ...}}`` when no agent
    is found on entering the step; true moves the case on at once.
    """

    index: int
    queue: str
    priority: int
    timeout: float | None
    worker_filter: str
    order_by: OrderBy
    skip_if: str | None
    known_agent_id: str | None
    filter_name: str
    worker_expression: Expression = field(compare=False, repr=False)
    load_conditions: tuple[LoadCondition, ...] = ()


@dataclass(frozen=True)
class Plan:
    """The route of one case: ``steps`` in order, then possibly ``fallback``.

    ``steps`` holds the matched filter's targets, then those of later filters that also
    match, as far as a case can get: it stops after a step with neither timeout nor
    ``skip_if``, which holds the case until it is assigned. A step's timeout moves the
    case to the next step, keeping its age; when the last step's timeout expires the
    case is cancelled (TaskRouter's WorkflowTimeout). A held ``skip_if`` moves it on at
    once; skipping past the last step leads to ``fallback``, the default filter, which
    is set only when that can happen. No steps at all (nothing matched and no default
    filter): the caller cancels the case.
    """

    filter_name: str
    steps: tuple[Step, ...]
    fallback: Step | None = None

    def deadline(self, index: int) -> float | None:
        """The case age (seconds) at which step ``index`` times out, or None if it never does.

        TaskRouter measures timeouts on the task's age: a step's deadline is the sum of
        its own and all earlier steps' timeouts, so time saved by skipping a step is
        spent in the next one. Raises IndexError for an index outside ``steps``.
        """
        step = self.steps[index]
        if step.timeout is None:
            return None
        return sum(s.timeout or 0.0 for s in self.steps[: index + 1])


@dataclass(frozen=True)
class Workflow:
    filters: tuple[Filter, ...]
    default_target: Target | None
    reservation_timeout: float = 120.0

    @functools.cached_property
    def task_keys(self) -> tuple[str, ...] | None:
        """The top-level task attributes a plan can depend on, sorted; None when it also
        depends on the time of day (``taskrouter.*``), so plans must not be reused."""
        names: set[str] = set()
        targets = [t for f in self.filters for t in f.targets]
        if self.default_target is not None:
            targets.append(self.default_target)
        paths = [p for f in self.filters for p in _filter_expression(f.expression).keys()]
        for t in targets:
            task_paths = compile(t.expression).keys() if t.expression else frozenset()
            for p in task_paths:
                head, _, rest = p.partition(".")
                if head == "taskrouter" or (head == "task" and rest):
                    paths.append(p if head == "taskrouter" else rest)
            if t.known_agent is not None:
                paths.append(t.known_agent.removeprefix("task."))
        for p in paths:
            name = re.split(r"[.\[]", p, maxsplit=1)[0]
            if name in ("taskrouter", "task", ""):
                return None
            names.add(name)
        return tuple(sorted(names))

    def plan(
        self,
        task: Mapping[str, Any],
        *,
        default_priority: int = 0,
        clock: Mapping[str, Any] | None = None,
    ) -> Plan:
        """Route a case with attributes ``task``; pure, and never raises for any attributes.

        ``default_priority`` is the case's own priority, kept until a target sets one.
        ``clock`` is ``expressions.clock_values(...)``; without it every ``taskrouter.*``
        key is null, so time-of-day rules do not match.
        """
        moments = clock.get("taskrouter") if clock is not None else None
        moments = moments if isinstance(moments, Mapping) else {}
        attributes: Mapping[str, Any] = task
        if clock is not None:
            attributes = {**task, "taskrouter": moments}
        steps: list[Step] = []
        priority, first = default_priority, ""
        for rule in self.filters:
            if steps and _holds(steps[-1]):
                break
            if not _filter_expression(rule.expression).evaluate(attributes):
                continue
            first = first or rule.name
            for target in rule.targets:
                priority = priority if target.priority is None else target.priority
                steps.append(_step(len(steps), rule.name, target, priority, task, moments))
                if _holds(steps[-1]):
                    break
        fallback = None
        if self.default_target is not None and (not steps or steps[-1].skip_if is not None):
            target = self.default_target
            final = priority if target.priority is None else target.priority
            fallback = _step(len(steps), DEFAULT_FILTER_NAME, target, final, task, moments)
        if not steps:
            return Plan(DEFAULT_FILTER_NAME, (fallback,) if fallback else ())
        return Plan(first, tuple(steps), fallback)


def _holds(step: Step) -> bool:
    """Whether a case can never leave ``step`` unassigned, making later targets unreachable."""
    return step.timeout is None and step.skip_if is None


@functools.lru_cache(maxsize=1024)
def _filter_expression(text: str) -> Expression:
    return compile(text).strip_prefix("task")


def _step(
    index: int,
    name: str,
    target: Target,
    priority: int,
    task: Mapping[str, Any],
    moments: Mapping[str, Any],
) -> Step:
    expression = compile(target.expression) if target.expression else _TRUE
    bound = expression.bind("task", task).bind("taskrouter", moments).strip_prefix("worker")
    residual, load = _split_load(bound)
    agent = None
    if target.known_agent is not None:
        agent = _agent_id(resolve(task, target.known_agent))
        if agent is None:
            residual, load = _FALSE, ()
    return Step(
        index=index,
        queue=target.queue,
        priority=priority,
        timeout=target.timeout,
        worker_filter=residual.canonical(),
        order_by=target.order_by,
        skip_if=target.skip_if,
        known_agent_id=agent,
        filter_name=name,
        worker_expression=residual,
        load_conditions=load,
    )


def _is_load_key(path: str) -> bool:
    return _LOAD_KEY.fullmatch(path) is not None


def _split_load(expression: Expression) -> tuple[Expression, tuple[LoadCondition, ...]]:
    """The expression without its live-load terms, and those terms as conditions.

    Loading checked that every live-load key is in a top-level AND term compared with a
    number or a (now bound) task value, so split() cannot fail here.
    """
    rest, terms = expression.split(_is_load_key)
    conditions: set[LoadCondition] = set()
    for term in terms:
        match = _LOAD_KEY.fullmatch(term.key)
        assert match is not None
        condition = _load_condition(match.group(1), match.group(2), term.op, term.value)
        if condition is False:
            return _FALSE, ()
        if isinstance(condition, LoadCondition):
            conditions.add(condition)
    if rest.constant_value is False:
        return rest, ()
    return rest, tuple(sorted(conditions))


def _load_condition(channel: str, key: str, op: str, value: object) -> LoadCondition | bool:
    """``<load> op value`` as an integer condition, or its result when that is constant.

    A load is a whole number, so ``< 1.5`` is ``< 2`` and ``== 1.5`` is never true; a
    value that is not a number (a task attribute that is missing, a word) compares as the
    expression language says: only ``!= null`` holds.
    """
    number = as_number(value)
    if number is None:
        return op == "!=" and value is None
    if op in ("==", "!="):
        if isinstance(number, float) and not number.is_integer():
            return op == "!="
        n = int(number)
    elif op in ("<", ">="):
        n = math.ceil(number)
        n, op = (n, "<") if op == "<" else (n - 1, ">")
    else:
        n = math.floor(number)
        n, op = (n + 1, "<") if op == "<=" else (n, ">")
    return LoadCondition(channel, key, op, max(-_LOAD_BOUND, min(_LOAD_BOUND, n)))


def _agent_id(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return str(value)
    return None


def order_key(order_by: OrderBy, attributes: Mapping[str, Any]) -> tuple[tuple[int, float], ...]:
    """Sort key for an agent: sort ascending by it to get the ``order_by`` order.

    As in TaskRouter, an agent lacking a numeric value for a clause sorts after those
    that have one, whichever the direction. Ties are left to the caller (TaskRouter
    then prefers the agent idle longest).
    """
    key: list[tuple[int, float]] = []
    for path, descending in order_by:
        value = resolve(attributes, path)
        if isinstance(value, bool) or not isinstance(value, int | float):
            key.append((1, 0.0))
        elif isinstance(value, float) and not math.isfinite(value):
            key.append((1, 0.0))
        else:
            key.append((0, -value if descending else value))
    return tuple(key)


def parse_order_by(text: str) -> OrderBy:
    """Parse ``"worker.level DESC, worker.age ASC"`` into ``(("level", True), ("age", False))``.

    The direction is optional (ASC) and case-insensitive; a bare path means a worker
    attribute. Raises WorkflowError (path ``order_by``, with the column) for an empty
    clause, an unknown direction, a malformed path, a task/taskrouter path or live load
    (``worker.channel.<ch>.assigned_tasks``; ``configured_capacity`` is static and allowed).
    """
    if not text.strip():
        return ()
    clauses: list[tuple[str, bool]] = []
    start = 0  # offset of the current clause in text
    for piece in text.split(","):
        words = [(m.group(), start + m.start() + 1) for m in re.finditer(r"\S+", piece)]
        if not words or len(words) > 2:
            column = words[2][1] if words else start + 1
            _order_fail("expected '<attribute> [ASC|DESC]'", column)
        (path, column), direction = words[0], words[1:]
        if direction and direction[0][0].upper() not in ("ASC", "DESC"):
            _order_fail("expected ASC or DESC", direction[0][1])
        head, dot, rest = path.partition(".")
        if head in ("task", "taskrouter", "workers") or head.startswith("worker["):
            _order_fail("order_by sorts agents: use worker.<attribute>", column)
        if head == "worker":
            path, column = rest, column + len(head) + len(dot)
        if _LIVE_LOAD.fullmatch(path):
            _order_fail(
                "order_by cannot rank by live load, which moves with every offer: use it in "
                "the target's expression, or order by a static attribute",
                column,
            )
        try:
            resolve({}, path)
        except ExpressionError as exc:
            _order_fail(f"bad attribute path: {exc.reason}", column + exc.column - 1)
        clauses.append((path, bool(direction) and direction[0][0].upper() == "DESC"))
        start += len(piece) + 1
    return tuple(clauses)


_LIVE_LOAD = re.compile(r"channel\.[^.]+\.(assigned_tasks|available_capacity_percentage)")


def _order_fail(reason: str, column: int) -> NoReturn:
    raise WorkflowError("order_by", reason, column)
