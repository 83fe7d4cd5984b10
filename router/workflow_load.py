"""Loading a TaskRouter workflow configuration: parse the JSON, validate it, build a Workflow.

``load_workflow`` checks the whole configuration once, when a workspace is configured:
structure and unknown keys, queues against the workspace's, numbers (TaskRouter accepts
them as strings), ``order_by`` and every expression, including where a target expression
may read the agent's live load (``check_load_terms``, also used for queue targets). It
raises WorkflowError naming the offending path, so a workflow that loads cannot fail
later; routing a case with it is ``router.workflow``'s job, which this module builds on
and which never imports it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any, NoReturn

from router.expressions import ExpressionError, as_number, compile, key_uses, resolve
from router.workflow import (
    _LOAD_KEY,
    MAX_PRIORITY,
    Filter,
    Target,
    Workflow,
    WorkflowError,
    parse_order_by,
)

__all__ = ["check_load_terms", "load_workflow"]

_TARGET_KEYS = frozenset(
    {"queue", "priority", "timeout", "expression", "order_by", "skip_if"}
    | {"known_worker_sid", "known_worker_friendly_name"}
)
_FILTER_KEYS = frozenset({"filter_friendly_name", "expression", "targets"})
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_LOAD_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})


def load_workflow(
    config: Mapping[str, Any] | str,
    queues: Collection[str],
    *,
    reservation_timeout: float = 120.0,
) -> Workflow:
    """Validate a TaskRouter workflow configuration (a mapping or JSON text).

    Every expression is compiled here, so a workflow that loads cannot fail later on
    syntax. Numbers may be given as strings (``"priority": "5"``), as TaskRouter allows.
    Raises WorkflowError naming the offending path (``task_routing.filters[1].targets[0]
    .expression``) and, for expression syntax, the column: for malformed JSON or
    structure, unknown keys, a queue not in ``queues``, a first target without a queue,
    a non-integer priority, a non-positive timeout, both known-worker fields at once,
    or a bad ``order_by``. ``reservation_timeout`` (seconds an offer may stay
    unanswered, TaskRouter's TaskReservationTimeout) must be positive.
    """
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise WorkflowError(
                "", f"invalid JSON: {exc.msg} (line {exc.lineno})", exc.colno
            ) from exc
    root = _mapping(config, "")
    if "task_routing" in root or not ({"filters", "default_filter"} & root.keys()):
        _only(root, frozenset({"task_routing"}), "")
        if root.get("task_routing") is None:
            _fail("task_routing", 'required: {"filters": [...], "default_filter": {"queue": ...}}')
        routing, base = _mapping(root.get("task_routing"), "task_routing"), "task_routing."
    else:
        routing, base = root, ""  # some TaskRouter examples omit the wrapper
    _only(routing, frozenset({"filters", "default_filter"}), base.rstrip("."))
    known = frozenset(queues)
    raw_filters = routing.get("filters", [])
    if not isinstance(raw_filters, list):
        _fail(f"{base}filters", "must be a list")
    filters = tuple(_filter(raw, f"{base}filters[{i}]", known) for i, raw in enumerate(raw_filters))
    default = None
    if routing.get("default_filter") is not None:
        default = _target(routing["default_filter"], f"{base}default_filter", known, None)
        # TaskRouter's default filter has no timeout and nothing after it to skip to.
        default = replace(default, timeout=None, skip_if=None)
    seconds = _seconds(reservation_timeout, "reservation_timeout")
    if seconds is None:
        _fail("reservation_timeout", "must be a positive number of seconds")
    return Workflow(filters, default, seconds)


def _fail(path: str, reason: str, column: int | None = None) -> NoReturn:
    raise WorkflowError(path, reason, column)


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _fail(path, f"must be an object, not {type(value).__name__}")
    return value


def _only(value: Mapping[str, Any], allowed: frozenset[str], path: str) -> None:
    # Unknown keys are usually typos ("timout"); silently ignoring one misroutes work.
    for key in value:
        if key not in allowed:
            _fail(
                f"{path}.{key}" if path else str(key),
                f"unknown key (allowed: {', '.join(sorted(allowed))})",
            )


def _filter(raw: object, path: str, known: frozenset[str]) -> Filter:
    value = _mapping(raw, path)
    _only(value, _FILTER_KEYS, path)
    name = value.get("filter_friendly_name", path.rpartition(".")[2])
    if not isinstance(name, str):
        _fail(f"{path}.filter_friendly_name", "must be a string")
    expression = _expression(value.get("expression"), f"{path}.expression")
    if expression is None:
        _fail(f"{path}.expression", 'a filter needs an expression ("1==1" matches every task)')
    raw_targets = value.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        _fail(f"{path}.targets", "must be a non-empty list")
    targets: list[Target] = []
    for i, raw_target in enumerate(raw_targets):
        inherited = targets[-1].queue if targets else None
        targets.append(_target(raw_target, f"{path}.targets[{i}]", known, inherited))
    return Filter(name, expression, tuple(targets))


def _target(raw: object, path: str, known: frozenset[str], inherited: str | None) -> Target:
    value = _mapping(raw, path)
    _only(value, _TARGET_KEYS, path)
    queue = value.get("queue")
    if queue is None:
        if inherited is None:
            _fail(f"{path}.queue", "required here (only later targets inherit the queue)")
        queue = inherited
    elif not isinstance(queue, str) or not queue:
        _fail(f"{path}.queue", "must be a non-empty string")
    elif queue not in known:
        _fail(f"{path}.queue", f"unknown queue {queue!r} (known: {', '.join(sorted(known))})")
    timeout = _seconds(value.get("timeout"), f"{path}.timeout")
    order_by = value.get("order_by")
    if order_by is not None and not isinstance(order_by, str):
        _fail(f"{path}.order_by", "must be a string like 'worker.level DESC'")
    try:
        clauses = parse_order_by(order_by or "")
    except WorkflowError as exc:
        _fail(f"{path}.order_by", exc.reason, exc.column)
    if "known_worker_sid" in value and "known_worker_friendly_name" in value:
        _fail(path, "use known_worker_sid or known_worker_friendly_name, not both")
    known_key = "known_worker_sid" if "known_worker_sid" in value else "known_worker_friendly_name"
    expression = _expression(value.get("expression"), f"{path}.expression")
    if expression is not None:
        try:
            check_load_terms(expression)
        except ExpressionError as exc:
            _fail(f"{path}.expression", exc.reason, exc.column)
    priority = _integer(value.get("priority"), f"{path}.priority")
    if priority is not None and not 0 <= priority <= MAX_PRIORITY:
        _fail(f"{path}.priority", f"must be 0-{MAX_PRIORITY}, not {priority}")
    return Target(
        queue=queue,
        priority=priority,
        timeout=timeout,
        expression=expression,
        order_by=clauses,
        skip_if=_canonical(_expression(value.get("skip_if"), f"{path}.skip_if")),
        known_agent=_known_agent(value.get(known_key), f"{path}.{known_key}"),
    )


def _expression(value: object, path: str) -> str | None:
    """The expression text if present and valid; blank counts as absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        _fail(path, "must be a string")
    if not value.strip():
        return None
    try:
        compile(value)
    except ExpressionError as exc:
        _fail(path, exc.reason, exc.column)
    return value


def check_load_terms(expression: str, *, allowed: bool = True) -> None:
    """Raise ExpressionError at the first use of the agent's live load that routing cannot
    check: ``worker.channel.<name>.assigned_tasks`` or ``.available_capacity_percentage``
    anywhere but in a top-level AND term compared (``== != < <= > >=``) with a number or a
    task value. ``allowed=False`` (queue targets, computed once per agent) rejects any use.
    """
    for use in key_uses(expression):
        match = _LOAD_KEY.match(use.key)
        if match is None:
            continue
        name = f"worker.channel.{match.group(1)}.{match.group(2)}"
        other = re.split(r"[.\[]", use.other, maxsplit=1)[0] if use.other is not None else None
        if not allowed:
            reason = f"{name} (live load) works only in a workflow target's expression"
        elif match.end() != len(use.key):
            reason = f"compare {name} itself: it has no fields"
        elif not use.conjunct:
            reason = f"{name} (live load) works only in a top-level AND term, not under OR or NOT"
        elif use.op not in _LOAD_OPS:
            reason = f"compare {name} with == != < <= > or >="
        elif use.other is not None and other not in ("task", "taskrouter"):
            reason = f"compare {name} with a number or a task value, not with {use.other}"
        elif use.other is None and (isinstance(use.value, str) or as_number(use.value) is None):
            reason = f"compare {name} with a number"
        else:
            continue
        raise ExpressionError(expression, use.column, reason)


def _canonical(text: str | None) -> str | None:
    return None if text is None else compile(text).canonical()


def _known_agent(value: object, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        _fail(path, "must name a task attribute, like 'task.agent_sid'")
    text = value.strip()
    offset = value.index(text)
    if text.startswith("task."):
        text, offset = text[5:], offset + 5
    try:
        resolve({}, text)
    except ExpressionError as exc:
        _fail(path, f"bad attribute path: {exc.reason}", offset + exc.column)
    return text


def _integer(value: object, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    _fail(path, "must be an integer")


def _seconds(value: object, path: str) -> float | None:
    """A positive finite number of seconds, None when absent; raises for anything else."""
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value.strip())
    if number is None or not math.isfinite(number) or number <= 0:
        _fail(path, "must be a positive number of seconds")
    return number
