"""Read-only queries for the admin API: agents, queues, customers and case listings.

Nothing here changes state. Listings never scan the keyspace: waiting cases come from the
queues' waiting sets, offered and assigned ones from the agents' offer and case sets, and
closed ones from the workspace's event log (``XREVRANGE``), as the design says history must.
Every function takes the caller's workspace; ids from another workspace are simply not found.
"""

from __future__ import annotations

import re
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from router import keys
from router.errors import BadRequest
from router.push import case_view, customer_view, pairs
from router.snapshot import agent_view
from router.workspace import WorkspaceConfig

__all__ = [
    "CLOSED",
    "HELD",
    "OPEN",
    "READ_CHUNK",
    "STATUSES",
    "CasePage",
    "Commands",
    "agent",
    "agents",
    "case_fields",
    "case_summary",
    "chunks",
    "customer",
    "customers_of",
    "find_customer",
    "held_cases",
    "held_pages",
    "list_cases",
    "queues",
    "workflow_queues",
]

OPEN = ("queued", "offered", "assigned", "wrapping")
CLOSED = ("completed", "cancelled", "abandoned")
STATUSES = OPEN + CLOSED
#: Log entries one closed-case page may read before it returns what it found so far.
LOG_SCAN_BUDGET = 20_000
_LOG_BATCH = 500
CUSTOMER_CASES = 100

_KEYSET = re.compile(r"^(-?[0-9]{1,20})~([A-Za-z0-9_.@+-]{1,64})$")
_STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


#: case ages ('age', the waiting order) count in ms from 2024-01-01 (EPOCH_MS in _lib.lua)
AGE_EPOCH_MS = 1704067200000


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def case_summary(fields: Mapping[str, str]) -> dict[str, Any]:
    """A case as listings show it: the console's view plus its lifecycle moments."""
    out = case_view(fields)
    out["updated"] = int(fields.get("updated") or 0)
    if fields.get("pv"):  # a chat's first words, where it has no subject (router/switch.py)
        out["preview"] = fields["pv"]
    if fields.get("closed"):
        out["closed"] = int(fields["closed"])
    if fields.get("st") == "offered" and fields.get("oagent"):
        out["offered_to"] = fields["oagent"]
    if fields.get("st") in ("queued", "offered") and fields.get("age"):
        # since when the customer waits (ms): 'plan_start', a reopened case's reopening, not its
        # creation; a case its agent handed on, from then (it keeps its age, which ranks it);
        # not reset by a supervisor's move. The queues' waiting sets are scored the same way
        # (enqueue in _lib.lua), which the longest wait and this listing's order read
        since = fields.get("plan_start")
        out["waiting_since"] = (
            int(float(since)) if since else int(float(fields["age"])) + AGE_EPOCH_MS
        )
    return out


async def case_fields(redis: aioredis.Redis, ws: str, case: str) -> dict[str, str]:
    """The case's hash as a str dict; empty if there is no such case in this workspace."""
    if not keys.valid_id(case):
        return {}
    return pairs(await redis.hgetall(keys.case(ws, case)))


# -- agents ---------------------------------------------------------------------------------------


async def agents(redis: aioredis.Redis, ws: str) -> list[dict[str, Any]]:
    ids = sorted(_s(m) for m in await redis.smembers(keys.agents(ws)))
    pipe = redis.pipeline(transaction=False)
    for aid in ids:
        pipe.hgetall(keys.agent(ws, aid))
    return [agent_view(pairs(row)) for row in await pipe.execute() if row]


async def agent(redis: aioredis.Redis, ws: str, aid: str) -> dict[str, Any] | None:
    """One agent with the ids of the cases they hold and the offers pending for them."""
    if not keys.valid_id(aid):
        return None
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keys.agent(ws, aid))
    pipe.smembers(keys.agent_cases(ws, aid))
    pipe.smembers(keys.agent_offers(ws, aid))
    row, cases, offers = await pipe.execute()
    if not row:
        return None
    view = agent_view(pairs(row))
    view["cases"] = sorted(_s(c) for c in cases)
    view["offers"] = sorted(_s(o) for o in offers)
    return view


async def held_cases(redis: aioredis.Redis, ws: str, aid: str) -> set[str]:
    """Cases the agent holds (assigned, wrapping) or has a pending offer for."""
    cases = {_s(c) for c in await redis.smembers(keys.agent_cases(ws, aid))}
    offers = await redis.smembers(keys.agent_offers(ws, aid))
    cases.update(c for o in offers if (c := keys.offer_case(_s(o))))
    return cases


async def customers_of(redis: aioredis.Redis, ws: str, cases: Iterable[str]) -> set[str]:
    ids = list(cases)
    if not ids:
        return set()
    pipe = redis.pipeline(transaction=False)
    for c in ids:
        pipe.hget(keys.case(ws, c), "cust")
    return {_s(u) for u in await pipe.execute() if u}


# -- queues and workflow ------------------------------------------------------------------------


async def queues(redis: aioredis.Redis, cfg: WorkspaceConfig, ws: str) -> list[dict[str, Any]]:
    pipe = redis.pipeline(transaction=False)
    for q in cfg.queues:
        pipe.zcard(keys.queue_waiting(ws, q.id))
    waiting = await pipe.execute()
    return [
        {
            "id": q.id,
            "name": q.name,
            "target": q.target,
            "order": q.order,
            "sl_target_s": q.sl_target_s,
            "waiting": int(n),
        }
        for q, n in zip(cfg.queues, waiting, strict=True)
    ]


def workflow_queues(workflow: Mapping[str, Any]) -> set[str]:
    """Every queue a TaskRouter workflow configuration names (filters and default filter)."""
    routing = workflow.get("task_routing", workflow)
    if not isinstance(routing, Mapping):
        return set()
    out: set[str] = set()
    for f in routing.get("filters") or []:
        for t in (f.get("targets") or []) if isinstance(f, Mapping) else []:
            if isinstance(t, Mapping) and isinstance(t.get("queue"), str):
                out.add(t["queue"])
    default = routing.get("default_filter")
    if isinstance(default, Mapping) and isinstance(default.get("queue"), str):
        out.add(default["queue"])
    return out


# -- customers ----------------------------------------------------------------------------------


async def customer(redis: aioredis.Redis, ws: str, cust: str) -> dict[str, Any] | None:
    """Profile, identities and the latest cases (newest first); None if unknown.

    A merged-away customer is a tombstone: ``{"id", "merged_into"}`` and nothing else.
    """
    if not keys.valid_id(cust):
        return None
    profile = pairs(await redis.hgetall(keys.customer(ws, cust)))
    if not profile:
        return None
    if profile.get("merged_into"):
        return {"id": cust, "merged_into": profile["merged_into"]}
    total = int(await redis.llen(keys.customer_cases(ws, cust)))
    ids = [_s(c) for c in await redis.lrange(keys.customer_cases(ws, cust), -CUSTOMER_CASES, -1)]
    pipe = redis.pipeline(transaction=False)
    for c in reversed(ids):
        pipe.hgetall(keys.case(ws, c))
    cases = [case_summary(pairs(row)) for row in await pipe.execute() if row]
    return {
        **customer_view(profile),
        "created": int(profile.get("created") or 0),
        "cases": cases,
        "cases_total": total,
    }


async def find_customer(redis: aioredis.Redis, ws: str, identity: str) -> str | None:
    """The customer an identity (``kind:value``, already normalized) belongs to."""
    u = await redis.hget(keys.identities(ws), identity)
    return _s(u) if u else None


# -- cases ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CasePage:
    cases: list[dict[str, Any]]
    next_cursor: str | None


def _bad_cursor() -> BadRequest:
    return BadRequest("cursor: not a cursor from a previous page", code="cursor.invalid")


def _keyset(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    m = _KEYSET.match(cursor)
    if m is None:
        raise _bad_cursor()
    return int(m.group(1)), m.group(2)


async def queue_in_use(redis: aioredis.Redis, cfg: WorkspaceConfig, ws: str, qid: str) -> str:
    """Why queue ``qid`` may not be removed now ('' if it may): cases wait in it, and would wait
    where no list shows them and no agent is offered them."""
    for status in ("queued", "offered"):
        page = await list_cases(redis, cfg, ws, status, queue=qid, limit=1)
        if page.cases:
            return f"cases are {status} in this queue; move them first"
    return ""


async def list_cases(
    redis: aioredis.Redis,
    cfg: WorkspaceConfig,
    ws: str,
    status: str,
    *,
    queue: str = "",
    limit: int = 50,
    cursor: str | None = None,
    commands: Commands | None = None,
) -> CasePage:
    """One page of the workspace's cases in ``status`` (optionally in one queue).

    Queued cases come oldest first; offered, assigned and wrapping ones by creation time;
    closed ones (completed, cancelled, abandoned) newest first, from the event log. A closed
    page reads at most ``LOG_SCAN_BUDGET`` log entries, so it may hold fewer than ``limit``
    cases while ``next_cursor`` is still set: follow it until it is None. Raises BadRequest
    for an unknown status or a cursor that did not come from a previous page. ``commands``:
    how offered, assigned and wrapping pages read every agent's sets (``Store.commands``, raw
    and cheap, on the server; redis-py's pipeline if not given).
    """
    if status not in STATUSES:
        raise BadRequest(f"status: one of {', '.join(STATUSES)}", code="status.invalid")
    qids = [queue] if queue else [q.id for q in cfg.queues]
    reads = commands or pipelined(redis)
    if status == "queued":
        page = await _queued(redis, ws, qids, limit, _keyset(cursor))
    elif status in OPEN:
        page = await _held(reads, ws, status, queue, limit, _keyset(cursor))
    elif cursor is not None and not _STREAM_ID.match(cursor):
        raise _bad_cursor()
    else:
        page = await _closed(redis, ws, status, queue, limit, cursor)
    await _name_customers(reads, ws, page.cases)
    return page


async def _name_customers(commands: Commands, ws: str, cases: list[dict[str, Any]]) -> None:
    """Each listed case's ``customer_name`` (a supervisor's rows say who, not an id)."""
    names = await commands(
        *[("HGET", keys.customer(ws, str(c.get("customer") or "")), "name") for c in cases]
    )
    for c, name in zip(cases, names, strict=True):
        c["customer_name"] = _s(name) if name else ""


async def _hashes(redis: aioredis.Redis, ws: str, ids: list[str]) -> list[dict[str, str]]:
    pipe = redis.pipeline(transaction=False)
    for c in ids:
        pipe.hgetall(keys.case(ws, c))
    return [pairs(row) for row in await pipe.execute()]


async def _queued(
    redis: aioredis.Redis, ws: str, qids: list[str], limit: int, after: tuple[int, str] | None
) -> CasePage:
    # Keyset on (age, case id) across the queues' waiting sets. Members tied with the cursor's
    # age are fetched too (ZCOUNT), so a page boundary inside a tie loses nothing.
    lo = "-inf" if after is None else str(after[0])
    ties = [0] * len(qids)
    if after is not None:
        pipe = redis.pipeline(transaction=False)
        for q in qids:
            pipe.zcount(keys.queue_waiting(ws, q), lo, lo)
        ties = [int(n) for n in await pipe.execute()]
    pipe = redis.pipeline(transaction=False)
    for q, tie in zip(qids, ties, strict=True):
        pipe.zrangebyscore(
            keys.queue_waiting(ws, q), lo, "+inf", start=0, num=limit + 1 + tie, withscores=True
        )
    found: list[tuple[int, str]] = []
    for rows in await pipe.execute():
        found.extend((int(score), _s(c)) for c, score in rows)
    found = sorted({k for k in found if after is None or k > after})
    page = found[:limit]
    rows = await _hashes(redis, ws, [c for _, c in page])
    cases = [case_summary(f) for f in rows if f.get("st") == "queued"]
    more = len(found) > limit
    return CasePage(cases, f"{page[-1][0]}~{page[-1][1]}" if more and page else None)


async def _held(
    commands: Commands,
    ws: str,
    status: str,
    queue: str,
    limit: int,
    after: tuple[int, str] | None,
) -> CasePage:
    # Every agent's offers (or cases), then of each case only what the page is chosen by
    # (status, queue, creation), a chunk per round trip; the whole hash only for the page's.
    # A supervisor's page asked for three of these each second: read whole, a thousand agents'
    # cases cost the node ~100 ms of one piece each time (the page now has them from held()).
    ids = await _agent_ids(commands, ws)
    if status == "offered":
        members = _offered(await _members(commands, ws, ids, keys.agent_offers))
    else:
        members = await _members(commands, ws, ids, keys.agent_cases)
    keyed = [
        (created, c)
        async for rows in _lifecycles(commands, ws, members)
        for c, st, q, created in rows
        if st == status and (not queue or q == queue) and (after is None or (created, c) > after)
    ]
    return await _page(commands, ws, status, sorted(keyed), limit)


#: the states of the cases agents are offered or hold (a supervisors' In progress)
HELD = ("offered", "assigned", "wrapping")


async def held_pages(
    commands: Commands, ws: str, held: Mapping[str, Mapping[str, int]], limit: int
) -> dict[str, CasePage]:
    """The first page of each state's cases in ``held`` (state -> case -> its creation, as
    router/lua/agents_read.lua reads them): the oldest ``limit``, what :func:`list_cases`
    gives without a cursor, read whole, with their customers' names."""
    first = {}
    for st, cases in held.items():
        keyed = sorted((created, c) for c, created in cases.items())
        first[st] = page = await _page(commands, ws, st, keyed, limit)
        await _name_customers(commands, ws, page.cases)
    return first


async def _agent_ids(commands: Commands, ws: str) -> list[str]:
    (agents,) = await commands(("SMEMBERS", keys.agents(ws)))
    return sorted(_s(m) for m in agents)


async def _members(
    commands: Commands, ws: str, agent_ids: Sequence[str], key: Callable[[str, str], str]
) -> set[str]:
    """The members of every agent's set ``key`` (their offers, or their cases)."""
    members: set[str] = set()
    for chunk in chunks(agent_ids):
        for group in await commands(*[("SMEMBERS", key(ws, aid)) for aid in chunk]):
            members.update(_s(m) for m in group)
    return members


def _offered(offers: set[str]) -> set[str]:
    """The cases of these offers."""
    return {c for o in offers if (c := keys.offer_case(o))}


async def _lifecycles(
    commands: Commands, ws: str, cases: set[str]
) -> AsyncIterator[list[tuple[str, str, str, int]]]:
    """Each case's (id, status, queue, creation) ('' and 0 for a case that is gone), a chunk
    at a time: the caller handles each before the next is read."""
    for chunk in chunks(list(cases)):
        rows = await commands(*[("HMGET", keys.case(ws, c), "st", "q", "created") for c in chunk])
        yield [
            (c, _s(st) if st else "", _s(q) if q else "", int(created or 0))
            for c, (st, q, created) in zip(chunk, rows, strict=True)
        ]


async def _page(
    commands: Commands, ws: str, status: str, keyed: list[tuple[int, str]], limit: int
) -> CasePage:
    """The first ``limit`` of ``keyed`` ((creation, case), in order), read whole."""
    page = keyed[:limit]
    nxt = f"{page[-1][0]}~{page[-1][1]}" if len(keyed) > limit else None
    rows = await commands(*[("HGETALL", keys.case(ws, c)) for _, c in page])
    # as read a moment later: one that moved on meanwhile is left out of this page
    cases = [case_summary(f) for row in rows if (f := pairs(row)).get("st") == status]
    return CasePage(cases, nxt)


def pipelined(redis: aioredis.Redis) -> Commands:
    """:data:`Commands` through a redis-py pipeline (its replies parsed as redis-py does)."""

    async def run(*cmds: tuple[Any, ...]) -> list[Any]:
        if not cmds:
            return []
        pipe = redis.pipeline(transaction=False)
        for cmd in cmds:
            pipe.execute_command(*cmd)
        return list(await pipe.execute())

    return run


#: Redis commands in, their raw replies out, in one round trip (``Store.commands``).
Commands = Callable[..., Awaitable[list[Any]]]
#: Agents (or cases) read per round trip by :func:`held` and the supervisors' snapshot:
#: each answer is handled before the next is asked for, so the node serves its consoles in
#: between, instead of stopping for the whole workspace at once.
READ_CHUNK = 50


def chunks(items: Sequence[str], n: int = READ_CHUNK) -> Iterator[Sequence[str]]:
    """``items`` ``n`` at a time."""
    for i in range(0, len(items), n):
        yield items[i : i + n]


async def _closed(
    redis: aioredis.Redis, ws: str, status: str, queue: str, limit: int, cursor: str | None
) -> CasePage:
    # A case's latest closing entry is the one whose ts equals the case's "closed" moment;
    # older closings of a case that was reopened since (or is open again) are skipped.
    want = f"case.{status}"
    top = "+" if cursor is None else f"({cursor}"
    out: list[dict[str, Any]] = []
    scanned = 0
    while scanned < LOG_SCAN_BUDGET:
        entries = await redis.xrevrange(keys.log(ws), top, "-", count=_LOG_BATCH)
        if not entries:
            return CasePage(out, None)
        scanned += len(entries)
        hits = []
        for eid, raw in entries:
            e = pairs(raw)
            if e.get("t") == want and e.get("case"):
                hits.append((_s(eid), e))
        rows = await _hashes(redis, ws, [e["case"] for _, e in hits])
        for (eid, e), f in zip(hits, rows, strict=True):
            if f.get("st") != status or f.get("closed") != e.get("ts"):
                continue
            if queue and f.get("q") != queue:
                continue
            out.append(case_summary(f))
            if len(out) == limit:
                return CasePage(out, eid)
        top = f"({_s(entries[-1][0])}"
        if len(entries) < _LOG_BATCH:
            return CasePage(out, None)
    return CasePage(out, top[1:])
