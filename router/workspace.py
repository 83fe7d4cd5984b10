"""A workspace's configuration: statuses, channels, queues, agents and the workflow.

``parse_workspace(dict)`` validates a declaration (from a config file or the admin API) and
raises :class:`ConfigError` naming the offending path. The declaration is applied to Redis by
``Switch.apply_workspace``; every router node then reads it back from Redis.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router import keys
from router.errors import ConfigError
from router.expressions import ExpressionError
from router.expressions import compile as compile_expression
from router.workflow import Workflow, WorkflowError
from router.workflow_load import check_load_terms, load_workflow

__all__ = [
    "CHANNELS",
    "AgentConfig",
    "ChannelConfig",
    "QueueConfig",
    "StatusConfig",
    "WorkspaceConfig",
    "parse_agent",
    "parse_queue",
    "parse_workspace",
]

CHANNELS = ("chat", "email", "voice")


@dataclass(frozen=True, slots=True)
class StatusConfig:
    name: str
    routable: bool


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Per-channel routing defaults: how long an offer waits and the default priority."""

    offer_timeout_s: float
    priority: int


@dataclass(frozen=True, slots=True)
class QueueConfig:
    id: str
    name: str
    target: str = "1 == 1"  # which agents serve this queue (TaskRouter's target_workers)
    order: str = "fifo"  # fifo | lifo
    sl_target_s: float = 60.0  # service level: share of cases answered within this many s


@dataclass(frozen=True, slots=True)
class AgentConfig:
    id: str
    name: str
    attributes: Mapping[str, Any]
    capacity: Mapping[str, int]
    role: str = "agent"  # agent | supervisor | admin
    password: str | None = None  # plain text from a config file; stored hashed


DEFAULT_STATUSES = (
    StatusConfig("available", True),
    StatusConfig("away", False),
    StatusConfig("offline", False),
)
DEFAULT_CHANNELS = {
    "voice": ChannelConfig(offer_timeout_s=15, priority=10),
    "chat": ChannelConfig(offer_timeout_s=30, priority=5),
    "email": ChannelConfig(offer_timeout_s=120, priority=0),
}


@dataclass(frozen=True, slots=True)
class WorkspaceConfig:
    id: str
    queues: tuple[QueueConfig, ...]
    agents: tuple[AgentConfig, ...]
    workflow: Workflow
    workflow_json: Mapping[str, Any]
    statuses: tuple[StatusConfig, ...] = DEFAULT_STATUSES
    channels: Mapping[str, ChannelConfig] = field(default_factory=lambda: dict(DEFAULT_CHANNELS))
    reopen_window_s: float = 72 * 3600
    reopen_agent_timeout_s: float = 120
    transfer_agent_timeout_s: float = 60
    max_missed_offers: int = 3
    # an agent who refused a case (rejected it, let its offer time out, transferred it away) is
    # not offered it again for this long; then they may be, if no one else has taken it
    # (0: never again)
    reoffer_refused_after_s: float = 60
    reject_status: str | None = None
    timezone: str = "UTC"
    dispositions: tuple[str, ...] = ("resolved", "follow-up", "no-answer", "spam")
    canned: Mapping[str, str] = field(default_factory=dict)

    _queue_index: dict[str, QueueConfig] = field(init=False, repr=False, compare=False)
    _status_index: dict[str, StatusConfig] = field(init=False, repr=False, compare=False)
    # triage's plans by the task values the workflow reads (router/triage.py); lives and dies
    # with this configuration, so a changed workflow or queue never sees an old plan
    plan_cache: dict[Any, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # looked up on every routed case: dicts, not scans
        object.__setattr__(self, "_queue_index", {q.id: q for q in self.queues})
        object.__setattr__(self, "plan_cache", {})
        object.__setattr__(self, "_status_index", {s.name: s for s in self.statuses})

    def status(self, name: str) -> StatusConfig | None:
        return self._status_index.get(name)

    def queue(self, qid: str) -> QueueConfig | None:
        return self._queue_index.get(qid)


def _req(d: Mapping[str, Any], key: str, path: str, typ: type | tuple[type, ...] = str) -> Any:
    if key not in d:
        raise ConfigError(f"{path}.{key}: required")
    v = d[key]
    if not isinstance(v, typ) or (isinstance(v, bool) and typ is not bool):
        raise ConfigError(f"{path}.{key}: expected {getattr(typ, '__name__', typ)}")
    return v


def _id(value: Any, path: str) -> str:
    if not isinstance(value, str) or not keys.valid_id(value):
        raise ConfigError(f"{path}: ids are 1-64 characters of A-Z a-z 0-9 _ . @ + -")
    return value


def _name(value: Any, default: str, path: str) -> str:
    """A display name: at most 200 characters, without control characters or the bidi
    controls that make a name read as something else on a colleague's screen (U+202E)."""
    name = default if value is None else str(value)
    if len(name) > 200:
        raise ConfigError(f"{path}: at most 200 characters")
    for ch in name:
        if unicodedata.category(ch) == "Cc" or unicodedata.bidirectional(ch) in _BIDI_CONTROLS:
            raise ConfigError(f"{path}: no control characters (U+{ord(ch):04X})")
    if not any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in name):
        raise ConfigError(f"{path}: at least one visible character")  # a row with no name
    return name


_BIDI_CONTROLS = frozenset({"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"})


def _number(value: Any, path: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: expected a number") from None
    if isinstance(value, bool) or not math.isfinite(v):  # "inf" and "nan" parse as floats
        raise ConfigError(f"{path}: expected a number")
    return v


def parse_queue(d: Mapping[str, Any], path: str = "queue") -> QueueConfig:
    qid = _id(d.get("id"), f"{path}.id")
    target = str(d.get("target", "1 == 1"))
    try:
        compile_expression(target)
        check_load_terms(target, allowed=False)  # membership is computed once per agent
    except ExpressionError as e:
        raise ConfigError(f"{path}.target: {e}") from None
    order = str(d.get("order", "fifo")).lower()
    if order not in ("fifo", "lifo"):
        raise ConfigError(f"{path}.order: fifo or lifo")
    sl = _number(d.get("sl_target_s", 60), f"{path}.sl_target_s")
    if not 0 < sl <= 86_400:  # NaN fails this too: it would be stored, then break every reader
        raise ConfigError(f"{path}.sl_target_s: seconds, more than 0 and at most a day")
    return QueueConfig(qid, _name(d.get("name"), qid, f"{path}.name"), target, order, sl)


def parse_agent(d: Mapping[str, Any], path: str = "agent") -> AgentConfig:
    aid = _id(d.get("id"), f"{path}.id")
    attrs = d.get("attributes", {})
    if not isinstance(attrs, Mapping):
        raise ConfigError(f"{path}.attributes: expected a map")
    # the lists queue targets test with HAS / IN: a lone string would make the agent silently
    # unroutable ('support' HAS 'support' is false, as in TaskRouter)
    for key in ("skills", "languages"):
        v = attrs.get(key)
        if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise ConfigError(f'{path}.attributes.{key}: a list of strings, e.g. ["support"]')
        for i, x in enumerate(v or []):  # shown as tags on every admin's and supervisor's page
            where = f"{path}.attributes.{key}[{i}]"
            if len(x) > 64:
                raise ConfigError(f"{where}: at most 64 characters")
            _name(x, "", where)  # no control or bidi characters, something visible
    cap_in = d.get("capacity", {"chat": 3, "email": 5, "voice": 1})
    if not isinstance(cap_in, Mapping):
        raise ConfigError(f"{path}.capacity: expected a map of channel to count")
    capacity: dict[str, int] = {}
    for ch, n in cap_in.items():
        if ch not in CHANNELS:
            raise ConfigError(f"{path}.capacity.{ch}: unknown channel")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 100:
            raise ConfigError(f"{path}.capacity.{ch}: an integer 0-100")
        capacity[ch] = n
    role = str(d.get("role", "agent"))
    if role not in ("agent", "supervisor", "admin"):
        raise ConfigError(f"{path}.role: agent, supervisor or admin")
    pw = d.get("password")
    return AgentConfig(
        aid,
        _name(d.get("name"), aid, f"{path}.name"),
        dict(attrs),
        capacity,
        role,
        None if pw is None else str(pw),
    )


#: A workflow must say where a case no filter matches goes. TaskRouter cancels such a task;
#: here that would drop a customer's request over a gap in the rules (docs/routing.md).
NO_DEFAULT_FILTER = (
    'required: the queue for cases no filter matches, e.g. {"queue": "support"} '
    "(without it they would be cancelled)"
)


def parse_workspace(d: Mapping[str, Any]) -> WorkspaceConfig:
    """Validate a workspace declaration; raise ConfigError naming the offending path."""
    ws = _id(d.get("id", "default"), "workspace.id")
    queues = tuple(parse_queue(q, f"queues[{i}]") for i, q in enumerate(d.get("queues", [])))
    if not queues:
        raise ConfigError("queues: at least one queue")
    qids = [q.id for q in queues]
    if len(set(qids)) != len(qids):
        raise ConfigError("queues: duplicate id")
    agents = tuple(parse_agent(a, f"agents[{i}]") for i, a in enumerate(d.get("agents", [])))
    wf_json = d.get("workflow") or {"task_routing": {"default_filter": {"queue": qids[0]}}}
    try:
        workflow = load_workflow(wf_json, qids)
    except WorkflowError as e:
        raise ConfigError(f"workflow: {e}") from None
    if workflow.default_target is None:
        raise ConfigError(f"workflow: task_routing.default_filter: {NO_DEFAULT_FILTER}")
    statuses = list(DEFAULT_STATUSES)
    for i, s in enumerate(d.get("statuses", [])):
        name = _id(s.get("name") if isinstance(s, Mapping) else s, f"statuses[{i}]")
        routable = bool(s.get("routable", False)) if isinstance(s, Mapping) else False
        statuses = [x for x in statuses if x.name != name] + [StatusConfig(name, routable)]
    channels = dict(DEFAULT_CHANNELS)
    for ch, c in (d.get("channels") or {}).items():
        if ch not in CHANNELS:
            raise ConfigError(f"channels.{ch}: unknown channel")
        base = channels[ch]
        channels[ch] = ChannelConfig(
            _number(c.get("offer_timeout_s", base.offer_timeout_s), f"channels.{ch}"),
            int(_number(c.get("priority", base.priority), f"channels.{ch}.priority")),
        )
    routing = d.get("routing") or {}
    reject_status = routing.get("reject_status")
    reoffer = _number(routing.get("reoffer_refused_after_s", 60), "routing.reoffer_refused_after_s")
    if reoffer < 0:
        raise ConfigError("routing.reoffer_refused_after_s: expected 0 or more seconds")
    if reject_status is not None and reject_status not in {s.name for s in statuses}:
        raise ConfigError("routing.reject_status: not a configured status")
    return WorkspaceConfig(
        id=ws,
        queues=queues,
        agents=agents,
        workflow=workflow,
        workflow_json=wf_json,
        statuses=tuple(statuses),
        channels=channels,
        reopen_window_s=_number(routing.get("reopen_window_s", 72 * 3600), "routing"),
        reopen_agent_timeout_s=_number(routing.get("reopen_agent_timeout_s", 120), "routing"),
        transfer_agent_timeout_s=_number(routing.get("transfer_agent_timeout_s", 60), "routing"),
        max_missed_offers=int(routing.get("max_missed_offers", 3)),
        reoffer_refused_after_s=reoffer,
        reject_status=reject_status,
        timezone=str(d.get("timezone", "UTC")),
        dispositions=tuple(d.get("dispositions", ("resolved", "follow-up", "no-answer", "spam"))),
        canned=dict(d.get("canned", {})),
    )
