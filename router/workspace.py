"""A workspace's configuration: statuses, channels, queues, agents and the workflow.

``parse_workspace(dict)`` validates a declaration (from a config file or the admin API) and
raises :class:`ConfigError` naming the offending path (``agents[0].pasword``): an unknown key (a
typo would otherwise be ignored), a value of the wrong type, a duplicate id, a time that is not
positive, a time zone zoneinfo does not know, a value YAML reads as something JSON cannot hold
(dates, keys like ``yes``). ``check_file(doc)`` checks what a workspace file holds around the
declaration (``workspace:`` and ``bridges:``). The declaration is applied to Redis by
``Switch.apply_workspace``; every router node then reads it back from Redis.
docs/configuration.md describes the format.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from router.config_checks import (
    as_list,
    as_map,
    at,
    display_name,
    integer,
    kind_of,
    number,
    plain,
    seconds,
    section,
    text,
    unique,
    valid_id,
)
from router.errors import ConfigError
from router.expressions import ExpressionError
from router.expressions import compile as compile_expression
from router.workflow import MAX_PRIORITY, Workflow, WorkflowError
from router.workflow_load import check_load_terms, load_workflow

__all__ = [
    "CHANNELS",
    "KEYS",
    "AgentConfig",
    "ChannelConfig",
    "QueueConfig",
    "StatusConfig",
    "WorkspaceConfig",
    "check_file",
    "parse_agent",
    "parse_queue",
    "parse_workspace",
]

CHANNELS = ("chat", "email", "voice")

#: The keys each part of a declaration may have; any other is refused (a typo would be ignored).
#: Agents' ``attributes`` are free-form, as TaskRouter's worker attributes are.
KEYS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        # bridges: a file without `workspace:` holds them beside the declaration's keys
        "workspace": frozenset(
            {"id", "queues", "agents", "workflow", "statuses", "channels", "routing"}
            | {"timezone", "dispositions", "canned", "bridges"}
        ),
        "queue": frozenset({"id", "name", "target", "order", "sl_target_s"}),
        "agent": frozenset({"id", "name", "attributes", "capacity", "role", "password"}),
        "status": frozenset({"name", "routable"}),
        "channel": frozenset({"offer_timeout_s", "priority"}),
        "routing": frozenset(
            {"reopen_window_s", "reopen_agent_timeout_s", "transfer_agent_timeout_s"}
            | {"max_missed_offers", "reoffer_refused_after_s", "reject_status"}
        ),
        "bridge": frozenset({"id", "workspace", "channels", "key_env", "key_file"}),
        "file": frozenset({"workspace", "bridges"}),  # a file with `workspace:` at the top
    }
)


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
DEFAULT_DISPOSITIONS = ("resolved", "follow-up", "no-answer", "spam")
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
    dispositions: tuple[str, ...] = DEFAULT_DISPOSITIONS
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


# -- the declaration's keys -------------------------------------------------------------------


def _known(d: Mapping[str, Any], kind: str, path: str) -> None:
    allowed = KEYS[kind]
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f", did you mean {close[0]}?" if close else ""
            raise ConfigError(
                f"{at(path, key)}: unknown key{hint} (allowed: {', '.join(sorted(allowed))})"
            )


# -- the parts -------------------------------------------------------------------------------------


def parse_queue(d: Mapping[str, Any], path: str = "queue") -> QueueConfig:
    d = as_map(d, path, "a map such as {id: support, target: \"skills HAS 'support'\"}")
    _known(d, "queue", path)
    qid = valid_id(d.get("id"), f"{path}.id")
    target = text(d.get("target", "1 == 1"), f"{path}.target")
    try:
        compile_expression(target)
        check_load_terms(target, allowed=False)  # membership is computed once per agent
    except ExpressionError as e:
        raise ConfigError(f"{path}.target: {e}") from None
    order = text(d.get("order", "fifo"), f"{path}.order").lower()
    if order not in ("fifo", "lifo"):
        raise ConfigError(f"{path}.order: fifo or lifo")
    sl = number(d.get("sl_target_s", 60), f"{path}.sl_target_s")
    if not 0 < sl <= 86_400:
        raise ConfigError(f"{path}.sl_target_s: seconds, more than 0 and at most a day")
    return QueueConfig(qid, display_name(d.get("name"), qid, f"{path}.name"), target, order, sl)


def parse_agent(d: Mapping[str, Any], path: str = "agent") -> AgentConfig:
    d = as_map(d, path, "a map such as {id: ann, name: Ann, capacity: {chat: 3}}")
    _known(d, "agent", path)
    aid = valid_id(d.get("id"), f"{path}.id")
    attrs = as_map(d.get("attributes", {}), f"{path}.attributes", "a map")
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
            display_name(x, "", where)  # no control or bidi characters, something visible
    cap_in = d.get("capacity", {"chat": 3, "email": 5, "voice": 1})
    if not isinstance(cap_in, Mapping):
        raise ConfigError(
            f"{path}.capacity: expected a map of channel to count, e.g. {{chat: 3, email: 5}}, "
            f"not {kind_of(cap_in)}"
        )
    capacity: dict[str, int] = {}
    for ch, n in cap_in.items():
        if ch not in CHANNELS:
            raise ConfigError(f"{path}.capacity.{ch}: unknown channel (known: chat, email, voice)")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 100:
            raise ConfigError(f"{path}.capacity.{ch}: an integer 0-100")
        capacity[ch] = n
    role = d.get("role", "agent")
    if role not in ("agent", "supervisor", "admin"):
        raise ConfigError(f"{path}.role: agent, supervisor or admin")
    pw = d.get("password")
    # never echoed: the message would put it in a log; a number in YAML (1234, or 0123 read
    # as 83) or yes/no would silently become another password
    if pw is not None and (not isinstance(pw, str) or not 1 <= len(pw) <= 1024):
        raise ConfigError(
            f'{path}.password: a string of 1-1024 characters (in YAML, quote it: "1234")'
        )
    return AgentConfig(
        aid, display_name(d.get("name"), aid, f"{path}.name"), dict(attrs), capacity, role, pw
    )


def _statuses(value: Any) -> tuple[StatusConfig, ...]:
    """The default statuses, with those declared added or redefined (by name)."""
    statuses = list(DEFAULT_STATUSES)
    what = "a list of statuses such as [lunch, {name: training, routable: false}]"
    raw = as_list(value, "statuses", what)
    names: list[str] = []
    for i, s in enumerate(raw):
        path = f"statuses[{i}]"
        if isinstance(s, Mapping):
            _known(s, "status", path)
            name = valid_id(s.get("name"), f"{path}.name")
            routable = s.get("routable", False)
            if not isinstance(routable, bool):
                raise ConfigError(
                    f"{path}.routable: expected true or false, not {kind_of(routable)}"
                )
        else:
            name, routable = valid_id(s, path), False
        names.append(name)
        statuses = [x for x in statuses if x.name != name] + [StatusConfig(name, routable)]
    unique(names, "statuses", "status")
    return tuple(statuses)


def _channels(value: Any) -> dict[str, ChannelConfig]:
    channels = dict(DEFAULT_CHANNELS)
    raw = section(value, "channels", "a map of channel to settings, e.g. {chat: {priority: 5}}")
    for ch, c in raw.items():
        path = f"channels.{ch}"
        if ch not in CHANNELS:
            raise ConfigError(f"{path}: unknown channel (known: chat, email, voice)")
        c = section(c, path, "a map such as {offer_timeout_s: 30, priority: 5}")
        _known(c, "channel", path)
        base = channels[ch]
        timeout = seconds(c, "offer_timeout_s", base.offer_timeout_s, path, zero=False)
        priority = integer(c.get("priority", base.priority), f"{path}.priority")
        if not 0 <= priority <= MAX_PRIORITY:
            raise ConfigError(f"{path}.priority: expected 0-{MAX_PRIORITY}, not {priority}")
        channels[ch] = ChannelConfig(timeout, priority)
    return channels


def _routing(value: Any, statuses: Sequence[StatusConfig]) -> dict[str, Any]:
    """The routing settings, as WorkspaceConfig's fields."""
    r = section(value, "routing", "a map such as {max_missed_offers: 3}")
    _known(r, "routing", "routing")
    missed = integer(r.get("max_missed_offers", 3), "routing.max_missed_offers")
    if missed < 0:
        raise ConfigError(f"routing.max_missed_offers: expected 0 or more (0: never), not {missed}")
    reject = r.get("reject_status")
    names = [s.name for s in statuses]
    if reject is not None and reject not in names:
        raise ConfigError(f"routing.reject_status: not a configured status ({', '.join(names)})")
    return {
        "reopen_window_s": seconds(r, "reopen_window_s", 72 * 3600, "routing", zero=True),
        "reopen_agent_timeout_s": seconds(r, "reopen_agent_timeout_s", 120, "routing", zero=False),
        "transfer_agent_timeout_s": seconds(
            r, "transfer_agent_timeout_s", 60, "routing", zero=False
        ),
        "max_missed_offers": missed,
        "reoffer_refused_after_s": seconds(r, "reoffer_refused_after_s", 60, "routing", zero=True),
        "reject_status": reject,
    }


def _timezone(value: Any) -> str:
    """A time zone zoneinfo knows: triage reads the clock in it for every new case."""
    tz = text(value, "timezone")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            f"timezone: unknown time zone {tz!r}; an IANA name such as Europe/Berlin, "
            "America/New_York or UTC"
        ) from None
    return tz


def _dispositions(value: Any) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_DISPOSITIONS
    what = "a list of names such as [resolved, follow-up]"
    out = tuple(
        text(x, f"dispositions[{i}]") for i, x in enumerate(as_list(value, "dispositions", what))
    )
    for i, x in enumerate(out):
        if len(x) > 64:  # what a console may send back when it completes a case
            raise ConfigError(f"dispositions[{i}]: at most 64 characters")
        display_name(x, "", f"dispositions[{i}]")
    unique(out, "dispositions", "disposition")
    return out


def _canned(value: Any) -> dict[str, str]:
    """Canned replies: a map of a short name (what the console's menu shows) to the text."""
    what = 'a map of name to reply text, e.g. {hello: "Hi, how can I help?"}'
    out: dict[str, str] = {}
    for name, reply in section(value, "canned", what).items():
        display_name(name, "", f"canned.{name}")
        if not isinstance(reply, str) or not reply.strip():
            raise ConfigError(f"canned.{name}: expected the reply's text, not {kind_of(reply)}")
        out[name] = reply
    return out


def _bridges(value: Any) -> None:
    """Bridges as router/config.py reads them (it reads their keys' secrets): checked first,
    so that a typo there is named instead of ignored."""
    ids: list[str] = []
    what = "a list of bridges such as [{id: crm, channels: [chat], key_env: CRM_BRIDGE_KEY}]"
    for i, b in enumerate(as_list(value, "bridges", what)):
        path = f"bridges[{i}]"
        b = as_map(b, path, "a map such as {id: crm, channels: [chat], key_env: CRM_BRIDGE_KEY}")
        if "key" in b:  # not echoed
            raise ConfigError(
                f"{path}.key: secrets are never in the file; name the environment variable "
                "(key_env) or the file (key_file) that holds the key"
            )
        _known(b, "bridge", path)
        ids.append(valid_id(b.get("id"), f"{path}.id"))
        if "workspace" in b:
            valid_id(b["workspace"], f"{path}.workspace")
        chans = as_list(b.get("channels", CHANNELS), f"{path}.channels", "a list such as [chat]")
        for j, ch in enumerate(chans):
            if ch not in CHANNELS:
                raise ConfigError(
                    f"{path}.channels[{j}]: unknown channel (known: chat, email, voice)"
                )
        if not chans:
            raise ConfigError(f"{path}.channels: at least one channel (left out: all three)")
        given = [k for k in ("key_env", "key_file") if k in b]
        if len(given) != 1:
            raise ConfigError(
                f"{path}: give either key_env (an environment variable's name) or key_file "
                "(a file's path): the key itself is never in the file"
            )
        if not isinstance(b[given[0]], str) or not b[given[0]].strip():
            raise ConfigError(f"{path}.{given[0]}: expected a name, not {kind_of(b[given[0]])}")
    unique(ids, "bridges", "bridge id")


def check_file(doc: Mapping[str, Any]) -> None:
    """Check what a workspace file holds around its declaration: either the declaration with
    ``bridges`` beside its keys, or ``workspace:`` and ``bridges:`` and nothing else. Raises
    ConfigError; the declaration itself is :func:`parse_workspace`'s to check."""
    if "workspace" in doc:
        _known(doc, "file", "")
        inner = doc["workspace"]
        if isinstance(inner, Mapping) and "bridges" in inner:
            raise ConfigError(
                "workspace.bridges: bridges go at the top of the file, beside workspace: "
                "(there they would be ignored)"
            )
    plain(doc.get("bridges"), "bridges")
    _bridges(doc.get("bridges"))


#: A workflow must say where a case no filter matches goes. TaskRouter cancels such a task;
#: here that would drop a customer's request over a gap in the rules (docs/routing.md).
NO_DEFAULT_FILTER = (
    'required: the queue for cases no filter matches, e.g. {"queue": "support"} '
    "(without it they would be cancelled)"
)


def parse_workspace(d: Mapping[str, Any]) -> WorkspaceConfig:
    """Validate a workspace declaration; raise ConfigError naming the offending path.

    Whatever this accepts is stored as JSON and parsed again by every node: it accepts only
    what it would accept again (plain JSON values, every key one it knows)."""
    d = as_map(d, "workspace", "a map")
    plain(d, "")
    _known(d, "workspace", "")
    ws = valid_id(d.get("id", "default"), "workspace.id")
    raw = as_list(d.get("queues"), "queues", "a list of queues such as [{id: support}]")
    queues = tuple(parse_queue(q, f"queues[{i}]") for i, q in enumerate(raw))
    if not queues:
        raise ConfigError("queues: at least one queue")
    qids = [q.id for q in queues]
    unique(qids, "queues", "queue id")
    raw = as_list(d.get("agents"), "agents", "a list of agents such as [{id: ann}]")
    agents = tuple(parse_agent(a, f"agents[{i}]") for i, a in enumerate(raw))
    unique([a.id for a in agents], "agents", "agent id")
    wf_json = d.get("workflow") or {"task_routing": {"default_filter": {"queue": qids[0]}}}
    try:
        workflow = load_workflow(wf_json, qids)
    except WorkflowError as e:
        raise ConfigError(f"workflow: {e}") from None
    if workflow.default_target is None:
        raise ConfigError(f"workflow: task_routing.default_filter: {NO_DEFAULT_FILTER}")
    statuses = _statuses(d.get("statuses"))
    _bridges(d.get("bridges"))  # beside the declaration's keys in a file without `workspace:`
    return WorkspaceConfig(
        id=ws,
        queues=queues,
        agents=agents,
        workflow=workflow,
        workflow_json=wf_json,
        statuses=statuses,
        channels=_channels(d.get("channels")),
        **_routing(d.get("routing"), statuses),
        timezone=_timezone(d.get("timezone", "UTC")),
        dispositions=_dispositions(d.get("dispositions")),
        canned=_canned(d.get("canned")),
    )
