"""Read-side queries: the ``hello`` snapshot, history pages, a chat widget's conversation.

Nothing here changes state. The ``hello`` snapshot is the truth a console rebuilds its screen
from after every (re)connect: the agent's status and load, their open cases with timelines,
and their pending offers.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from router import keys
from router.push import case_view, chat_frame, customer_view, pairs, why
from router.workspace import WorkspaceConfig

__all__ = ["agent_directory", "agent_view", "case_detail", "chat_history", "hello", "history"]

TIMELINE_PAGE = 50


def _dec(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v or "")


def agent_view(fields: dict[str, str], *, attributes: bool = True) -> dict[str, Any]:
    """An agent as consoles and pages see them; without ``attributes`` (JSON to parse) when
    the caller has no use for them."""
    chs = [c for c in fields.get("chs", "").split(",") if c]
    view = {
        "id": fields.get("id", ""),
        "name": fields.get("name", ""),
        "role": fields.get("role", "agent"),
        "status": fields.get("st", "offline"),
        "capacity": {c: int(fields.get(f"cap:{c}") or 0) for c in chs},
        "load": {c: int(fields.get(f"load:{c}") or 0) for c in chs},
        # became available, or last offered / freed on a channel, whichever came last
        "idle_since": max(int(fields.get(f) or 0) for f in ("idle", *(f"idle:{c}" for c in chs))),
    }
    if attributes:
        view["attributes"] = json.loads(fields.get("attrs") or "{}")
    return view


async def history(
    redis: aioredis.Redis,
    ws: str,
    customer: str,
    before: int | None = None,
    limit: int = TIMELINE_PAGE,
) -> dict[str, Any]:
    """One page of a customer's timeline, newest last. ``before`` is an index from a previous
    page's ``start``; pages go back in time."""
    total = int(await redis.llen(keys.customer_timeline(ws, customer)))
    end = total if before is None else max(0, min(before, total))
    start = max(0, end - max(1, min(limit, 200)))
    raw = await redis.lrange(keys.customer_timeline(ws, customer), start, end - 1) if end else []
    return {
        "customer": customer,
        "start": start,
        "total": total,
        "timeline": await _named(redis, ws, [json.loads(r) for r in raw]),
    }


async def _named(
    redis: aioredis.Redis, ws: str, entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Entries written before the history named agents name them as later ones do: any entry
    with an ``agent`` and no ``from`` (an agent's note, reply or wrap-up; who passed a case on)
    gets the agent's name as ``from``, and a transfer without ``to_name`` the name of the agent
    or queue it went to — all once stored as ids only. Their names as they are now, from
    the agent's and queue's hashes; an id nothing names any more stays as it was. Entries that
    name theirs (all written since) cost nothing."""
    ids: set[str] = set()
    targets: set[str] = set()
    for e in entries:
        if isinstance(e.get("agent"), str) and e["agent"] and not e.get("from"):
            ids.add(e["agent"])
        if e.get("kind") == "transfer" and isinstance(e.get("to"), str) and e["to"]:
            if not e.get("to_name"):
                targets.add(e["to"])
    if not ids and not targets:
        return entries
    agents = sorted(ids | targets)
    queues = sorted(targets)
    pipe = redis.pipeline(transaction=False)
    for a in agents:
        pipe.hget(keys.agent(ws, a), "name")
    for q in queues:
        pipe.hget(keys.queue(ws, q), "name")
    names = await pipe.execute()
    agent_name = {a: _dec(n) for a, n in zip(agents, names[: len(agents)], strict=True) if n}
    queue_name = {q: _dec(n) for q, n in zip(queues, names[len(agents) :], strict=True) if n}
    for e in entries:
        by = e.get("agent")
        if isinstance(by, str) and by and not e.get("from"):
            e["from"] = agent_name.get(by, by)
        to = e.get("to")
        if e.get("kind") == "transfer" and isinstance(to, str) and to and not e.get("to_name"):
            # a transfer went to an agent or to a queue, and its entry did not say which
            e["to_name"] = agent_name.get(to) or queue_name.get(to) or to
    return entries


async def case_detail(redis: aioredis.Redis, ws: str, case: str) -> dict[str, Any] | None:
    """A case with its customer and the latest page of the customer's timeline."""
    fields = pairs(await redis.hgetall(keys.case(ws, case)))
    if not fields:
        return None
    view = case_view(fields)
    cust = fields.get("cust", "")
    profile = pairs(await redis.hgetall(keys.customer(ws, cust)))
    page = await history(redis, ws, cust)
    return {
        "case": view,
        "customer": customer_view(profile),
        "timeline": page["timeline"],
        "timeline_start": page["start"],
        "timeline_total": page["total"],
    }


async def hello(redis: aioredis.Redis, cfg: WorkspaceConfig, ws: str, agent: str) -> dict[str, Any]:
    fields = pairs(await redis.hgetall(keys.agent(ws, agent)))
    cases = [_dec(c) for c in await redis.smembers(keys.agent_cases(ws, agent))]
    # in the order the agent took them (as their tabs stood before a reload), not by id
    pipe = redis.pipeline(transaction=False)
    for c in cases:
        pipe.hget(keys.case(ws, c), "assigned")
    taken = {c: float(t or 0) for c, t in zip(cases, await pipe.execute(), strict=True)}
    cases.sort(key=lambda c: (taken[c], c))
    offers = sorted(_dec(o) for o in await redis.smembers(keys.agent_offers(ws, agent)))
    open_cases = [d for d in [await case_detail(redis, ws, c) for c in cases] if d]
    pending = []
    for o in offers:
        case = keys.offer_case(o)
        of = await redis.hmget(keys.case(ws, case), "offer", "ost", "odl", "pool") if case else []
        if not of or _dec(of[0] or b"") != o or of[1] != b"pending":
            continue
        detail = await case_detail(redis, ws, case)
        if detail:
            pending.append(
                {
                    "type": "offer",
                    "offer": o,
                    "deadline": int(of[2] or 0),
                    **detail,
                    "why": why(detail["case"], _dec(of[3] or b"")),
                }
            )
    return {
        "type": "hello",
        "workspace": ws,
        "agent": agent_view(fields),
        "statuses": [{"name": s.name, "routable": s.routable} for s in cfg.statuses],
        "queues": [{"id": q.id, "name": q.name} for q in cfg.queues],
        "dispositions": list(cfg.dispositions),
        "canned": dict(cfg.canned),
        "cases": open_cases,
        "offers": pending,
        "reminders": await reminders(redis, ws, agent),
        "followups": await followups(redis, ws, agent),
    }


async def followups(redis: aioredis.Redis, ws: str, agent: str) -> list[dict[str, Any]]:
    """The follow-ups the agent set that are not yet due, soonest first (the first 100): each
    names its case as a reminder does (``id``, ``case``, ``due`` in s, ``note``, ``customer``,
    ``subject``, ``channel``)."""
    rows = await redis.zrange(keys.agent_followups(ws, agent), 0, 99, withscores=True)
    pipe = redis.pipeline(transaction=False)
    for member, _ in rows:
        case, _, n = _dec(member).partition("|")
        pipe.hmget(keys.case(ws, case), [f"followup:{n}", "cust", "subject", "ch"])
    cases = await pipe.execute()
    for _, cust, _, _ in cases:
        pipe.hgetall(keys.customer(ws, _dec(cust or b"")))
    profiles = await pipe.execute()
    out = []
    for (member, due), (note, _, subject, ch), prof in zip(rows, cases, profiles, strict=True):
        fid = _dec(member)
        out.append(
            {
                "id": fid,
                "case": fid.partition("|")[0],
                "due": due / 1000,
                "note": _dec(note or b""),
                "customer": customer_label(pairs(prof)),
                "subject": _dec(subject or b""),
                "channel": _dec(ch or b""),
            }
        )
    return out


def customer_label(profile: dict[str, str]) -> str:
    """A customer as an agent knows them: their name, else an email or phone they wrote from,
    else the web chat visitor they are (as timers_run.lua's reminders name them)."""
    if profile.get("name"):
        return profile["name"]
    for k in sorted(profile):
        if k.startswith(("i:email:", "i:phone:")):
            return k[8:]
    for k in sorted(profile):
        if k.startswith("i:visitor:"):
            v = k[10:]
            return f"web chat visitor {'…' + v[-6:] if len(v) > 8 else v}"
    return ""


async def reminders(redis: aioredis.Redis, ws: str, agent: str) -> list[dict[str, Any]]:
    """The agent's follow-up reminders that fell due and are not dismissed, oldest first."""
    out = [json.loads(v) for v in await redis.hvals(keys.agent_reminders(ws, agent))]
    out.sort(key=lambda r: (r.get("due", 0), r.get("id", "")))
    # each case's state now, not when its reminder fell due
    pipe = redis.pipeline(transaction=False)
    for r in out:
        pipe.hget(keys.case(ws, str(r.get("case", ""))), "st")
    for r, st in zip(out, await pipe.execute(), strict=True):
        if st:
            r["status"] = _dec(st)
    return out


async def chat_history(redis: aioredis.Redis, ws: str, case: str) -> list[dict[str, Any]]:
    """The messages of one chat case as its customer may see them (no notes, no agent ids)."""
    cust = await redis.hget(keys.case(ws, case), "cust")
    if not cust:
        return []
    raw = await redis.lrange(keys.customer_timeline(ws, _dec(cust)), -500, -1)
    out = []
    for r in raw:
        e = json.loads(r)
        if e.get("case") == case and e.get("dir") in ("in", "out"):
            out.append(chat_frame(e))
    return out


async def chat_agent(redis: aioredis.Redis, ws: str, case: str) -> dict[str, Any] | None:
    """Where a chat case's agent stands, for a widget that (re)connects — what the last
    ``agent`` frame said, with its time (``ts``, s) so the widget puts it in its place in the
    story: ``joined`` while assigned, ``closed`` once wrapped up or completed, ``transferred``
    while the case waits after its agent handed it on, ``waiting`` (no name) while it waits
    for someone otherwise; ``abandoned`` (its visitor left before anyone answered) or
    ``cancelled`` once the chat was closed unanswered; ``None`` for no case."""
    st, agent, assigned, wrapping, closed, moved, resumed = await redis.hmget(
        keys.case(ws, case),
        "st",
        "last_agent",
        "assigned",
        "wrapping_since",
        "closed",
        "transferred",
        "resumed",
    )
    if int(resumed or 0) > int(assigned or 0):  # the visitor wrote during wrap-up: rejoined
        assigned = resumed
    if st in (b"queued", b"offered"):
        # handed on and not yet taken: the latest move is the transfer (not a reopened case's)
        if agent and moved and int(moved) > max(int(closed or 0), int(assigned or 0)):
            return await _agent_move(redis, ws, "transferred", agent, moved)
        return {"event": "waiting"}
    if st in (b"abandoned", b"cancelled"):  # closed before anyone answered: not waiting
        return (
            {"event": st.decode(), "ts": int(closed) / 1000} if closed else {"event": st.decode()}
        )
    event, at = {
        b"assigned": ("joined", assigned),
        b"wrapping": ("closed", wrapping),
        # completed after a wrap-up: the conversation closed when the wrap-up began
        b"completed": ("closed", wrapping if int(wrapping or 0) >= int(assigned or 1) else closed),
    }.get(st or b"", ("", None))
    if not event or not agent:
        return None
    return await _agent_move(redis, ws, event, agent, at)


async def _agent_move(
    redis: aioredis.Redis, ws: str, event: str, agent: bytes, at_ms: bytes | None
) -> dict[str, Any]:
    name = await redis.hget(keys.agent(ws, _dec(agent)), "name")
    move: dict[str, Any] = {"event": event, "name": _dec(name) or "Agent"}
    if at_ms:
        move["ts"] = int(at_ms) / 1000
    return move


async def agent_directory(redis: aioredis.Redis, ws: str) -> list[dict[str, Any]]:
    """Every agent's id, name, status, and capacity and load per channel (for transfers: the
    console's picker shows who is available and who is busy — on a call — and leaves out who
    takes none of the case's channel — the server would refuse them, ``transfer.invalid``),
    asked for on demand: a workspace can have thousands, too many for every hello. One
    pipelined ``HMGET`` per agent."""
    from router.ingest import CHANNELS  # the channels an agent may have a ``cap:`` field for

    ids = sorted(_dec(a) for a in await redis.smembers(keys.agents(ws)))
    channels = sorted(CHANNELS)
    pipe = redis.pipeline(transaction=False)
    for aid in ids:
        pipe.hmget(
            keys.agent(ws, aid),
            ["name", "st", *(f"cap:{c}" for c in channels), *(f"load:{c}" for c in channels)],
        )
    rows = await pipe.execute()
    n = len(channels)
    return [
        {
            "id": aid,
            "name": _dec(name) or aid,
            "status": _dec(st) or "offline",
            "capacity": {c: int(v or 0) for c, v in zip(channels, rest[:n], strict=True)},
            # open cases and pending offers per channel (a call: its one voice slot)
            "load": {c: int(v or 0) for c, v in zip(channels, rest[n:], strict=True)},
        }
        for aid, (name, st, *rest) in zip(ids, rows, strict=True)
    ]
