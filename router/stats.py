"""Live supervisor statistics: queue depth and longest wait from the waiting sets, service level
and answer/abandon counts from the workspace's event log (never by scanning case keys).

Service level, per queue, over the last 60 minutes:

    SL = answered within the queue's target  ÷  (answered + abandoned + escalated)

"answered" is an offer accepted (``offer.accepted``, with the case's wait since it last began
waiting: created, reopened, or handed on by the agent who had it; a supervisor moving a waiting
case does not restart it); "abandoned" is a case that ended before any agent took it
(``case.abandoned``); "escalated" is a case that waited out the queue's workflow step and moved
on unanswered (``case.escalated``), or that a supervisor moved on after it had waited past the
queue's target (``case.transferred`` with the queue it left): a breach of the queue it left,
not only of the one that finally answers it. A waiting case moved on within the target counts
for neither queue until it is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router import keys, queries
from router.errors import StoreUnavailable
from router.push import pairs, script_list
from router.store import Lane, Store, open_client, stop_task
from router.triage import agent_data, queue_members
from router.wire import Once
from router.workspace import WorkspaceConfig

__all__ = ["SL_FORMULA", "Stats"]

log = logging.getLogger("switchboard.stats")
SL_FORMULA = "answered within target ÷ (answered + abandoned + escalated), last 60 min"
CATCH_UP_S = 2.0  # a first snapshot waits this long at most for the last hour's counts
WINDOW_S = 3600
COUNTED = frozenset({"offer.accepted", "case.abandoned", "case.escalated", "case.transferred"})
MAX_TIMED = 200_000  # accepted cases a tail keeps the time of, for their handle times
# a queue's minute: answered within target, answered, abandoned, escalated, the answered cases'
# waits (ms, summed), completed, their handle times (ms, summed: accept to complete)
WITHIN, ANSWERED, ABANDONED, ESCALATED, WAITED, COMPLETED, HANDLED = range(7)
# the log entries _count looks at; the others are skipped unread
_WANTED = COUNTED | {"offer.timeout", "case.reopened", "case.completed"}
#: offered, assigned and wrapping cases a snapshot lists of each (the oldest): a supervisor's
#: In progress (web/supervisor.js HANDLED_LIMIT)
LISTED = 50
#: agents read per call of agents_read.lua: a call holds Redis for about half a millisecond
AGENTS_READ = 25
# log entries read at a time: each batch, parsed and counted, is one piece of work for the
# node, during which no console is served (500 took 1 - 4 ms, the largest pieces of a node
# with supervisors watching; 100 take under half a millisecond)
READ_BATCH = 100
# Once caught up, the tail reads again after this long: a blocking read returned as soon as an
# entry came, a few entries per read under load, and the reads' own cost (a round trip and a
# wake-up each) was 8 % of a node's core at 1,000 cases/s. Pages refresh each second.
TAIL_PAUSE_S = 0.25


class _Tail:
    """Follows one workspace's log stream and keeps per-minute counts per queue."""

    def __init__(
        self, redis: aioredis.Redis, ws: str, targets: dict[str, float], lane: Lane | None = None
    ) -> None:
        # lane: a connection of the store's own (raw replies; None on a cluster: redis-py's)
        self.redis, self.ws, self.lane = redis, ws, lane
        # each queue's target (ms) as the counts were made: Stats starts a new tail, which
        # counts the last hour again, when a queue is added or its target changes
        self.targets = targets
        # each queue's counts named above (WITHIN ... HANDLED), by minute
        self.queues = Hour(7)
        # each agent's [cases completed, their handle times (ms, summed), offers missed]
        self.agents = Hour(3)
        # case -> (when it was last accepted, ms; its queue): a completion's handle time and
        # queue, from the log alone (the routing scripts write nothing more for them). A case
        # accepted before the hour this tail reads is not timed.
        self.accepted: dict[str, tuple[int, str]] = {}
        # set once the last hour is read: until then the counts are not yet true
        self.caught_up = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"stats-{ws}")

    def _count(self, fields: dict[str, str]) -> None:
        t = fields.get("t")
        ts = _ms(fields.get("ts"))
        minute = ts // 60_000
        if t == "offer.timeout" and fields.get("agent"):
            self.agents.add(fields["agent"], minute, {2: 1})
            return
        q = fields.get("queue", "")
        # taken: an offer accepted, or a closed case its agent took back to follow it up
        taken = t == "offer.accepted" or (t == "case.reopened" and bool(fields.get("agent")))
        if taken and fields.get("case"):
            self.accepted[fields["case"]] = (ts, q)
            while len(self.accepted) > MAX_TIMED:  # the oldest first: cases left open for days
                del self.accepted[next(iter(self.accepted))]
        if t == "case.completed":
            began = self.accepted.pop(fields.get("case", ""), None)
            if began is None:
                return  # accepted before the hour this tail reads: not timed
            handled, q = ts - began[0], began[1]
            if fields.get("agent"):
                self.agents.add(fields["agent"], minute, {0: 1, 1: handled})
            if q:
                self.queues.add(q, minute, {COMPLETED: 1, HANDLED: handled})
            return
        if not q or t not in COUNTED:
            return
        target = self.targets.get(q, 60_000)
        waited = _ms(fields.get("waited"))
        if t == "case.transferred" and waited <= target:
            return  # moved on within the target: no breach of the queue it left
        if t == "offer.accepted":
            self.queues.add(q, minute, {ANSWERED: 1, WAITED: waited, WITHIN: int(waited <= target)})
        elif t == "case.abandoned":
            self.queues.add(q, minute, {ABANDONED: 1})
        else:
            self.queues.add(q, minute, {ESCALATED: 1})

    async def _run(self) -> None:
        cursor = f"{int((time.time() - WINDOW_S) * 1000)}-0"
        stream = keys.log(self.ws)
        try:
            while True:
                try:
                    entries = await self._read(stream, cursor)
                    for _, fields in entries:
                        # most of the log (cases created, queued, offered) counts for nothing
                        # here: passed over without being decoded
                        if _kind(fields) in _WANTED:
                            self._count(pairs(fields))
                    if entries:
                        eid = entries[-1][0]
                        cursor = eid.decode() if isinstance(eid, bytes) else str(eid)
                    if len(entries) < READ_BATCH:  # caught up: what comes next, in a while
                        self.caught_up.set()
                        await asyncio.sleep(TAIL_PAUSE_S)
                except asyncio.CancelledError:
                    raise
                except (RedisError, OSError, StoreUnavailable) as e:
                    log.warning("stats tail %s: %s", self.ws, e)
                    await asyncio.sleep(1.0)
        finally:
            if self.lane is not None:
                with contextlib.suppress(Exception):
                    await self.lane.close()

    async def _read(self, stream: str, cursor: str) -> list[Any]:
        """The next log entries after ``cursor`` (waiting up to a second for some): pairs of
        id and fields (a flat list from the lane, a dict from redis-py)."""
        if self.lane is None:
            got = await self.redis.xread({stream: cursor}, count=READ_BATCH, block=1000)
            return [e for _, entries in got or [] for e in entries]
        got = await self.lane.call(
            "XREAD", "COUNT", READ_BATCH, "BLOCK", 1000, "STREAMS", stream, cursor, blocks_s=1.0
        )
        if not got:
            return []
        return list(next(iter(got.values())) if isinstance(got, dict) else got[0][1])

    def service_level(self, queue: str) -> dict[str, Any]:
        """A queue's last hour: service level and its counts, the average speed of answer
        (``asa_s``, the answered cases' wait) and average handle time (``aht_s``, accept to
        complete, of the cases completed from it); None where nothing was counted."""
        s = self.queues.since(_hour_ago()).get(queue) or [0] * 7
        total = s[ANSWERED] + s[ABANDONED] + s[ESCALATED]
        return {
            "answered": s[ANSWERED],
            "abandoned": s[ABANDONED],
            "escalated": s[ESCALATED],
            "within_target": s[WITHIN],
            "service_level": round(s[WITHIN] / total, 4) if total else None,
            "asa_s": round(s[WAITED] / s[ANSWERED] / 1000, 1) if s[ANSWERED] else None,
            "completed": s[COMPLETED],
            "aht_s": round(s[HANDLED] / s[COMPLETED] / 1000, 1) if s[COMPLETED] else None,
        }

    def agent_counts(self) -> dict[str, dict[str, Any]]:
        """Each agent's last hour: cases completed, their average handle time, offers missed
        (only the agents with some)."""
        return {
            a: {
                "completed": done,
                "aht_s": round(handled / done / 1000, 1) if done else None,
                "missed": missed,
            }
            for a, (done, handled, missed) in self.agents.since(_hour_ago()).items()
        }


class Hour:
    """Counts per key (a queue, an agent) over a rolling hour: by minute, and their running
    sums, so that reading the hour's totals costs what changed since the last read, not a
    pass over every minute of every key (a thousand agents' hour is 60,000 minutes)."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.minutes: dict[int, dict[str, list[int]]] = {}  # minute -> key -> counts
        self.sums: dict[str, list[int]] = {}  # key -> its counts over the minutes kept

    def add(self, key: str, minute: int, counts: dict[int, int]) -> None:
        """Add ``counts`` (index -> amount) to ``key`` in ``minute``."""
        row = self.minutes.setdefault(minute, {}).get(key)
        if row is None:
            row = self.minutes[minute][key] = [0] * self.width
        total = self.sums.get(key)
        if total is None:
            total = self.sums[key] = [0] * self.width
        for i, n in counts.items():
            row[i] += n
            total[i] += n

    def since(self, minute: int) -> dict[str, list[int]]:
        """Each key's counts from ``minute`` on (key -> counts; keys with none left out): the
        minutes before it are dropped."""
        for old in [m for m in self.minutes if m < minute]:
            for key, row in self.minutes.pop(old).items():
                total = self.sums[key]
                for i, n in enumerate(row):
                    total[i] -= n
                if not any(total):
                    del self.sums[key]
        return self.sums


def _ms(value: str | None) -> int:
    """A log entry's milliseconds (a time, or a wait), whole: sums of them stay exact."""
    return round(float(value or 0))


def _hour_ago() -> int:
    """The first minute of the last hour."""
    return int(time.time() // 60) - WINDOW_S // 60


class _Shared:
    """One workspace's latest snapshot on this node: what it was made for, its making (a task,
    awaited by every page that asks meanwhile), and when it was made (None while it is)."""

    __slots__ = ("_once", "at", "shape", "task")

    def __init__(self, shape: tuple[Any, ...], task: asyncio.Task[dict[str, Any]]) -> None:
        self.shape, self.task = shape, task
        self.at: float | None = None
        self._once: Once | None = None
        task.add_done_callback(self._made)

    def once(self) -> Once:
        """The snapshot made, encoded at most once per codec for all the pages given it."""
        if self._once is None:
            self._once = Once(self.task.result())
        return self._once

    def _made(self, task: asyncio.Task[dict[str, Any]]) -> None:
        self.at = time.monotonic()
        if not task.cancelled():
            task.exception()  # retrieved: the pages still waiting are given it

    def fresh(self, share_s: float) -> bool:
        """Still being made (however long a big workspace takes), or made within share_s."""
        return self.at is None or time.monotonic() - self.at < share_s


class Stats:
    def __init__(self, url: str, share_s: float = 0.5) -> None:
        self.redis = open_client(url)
        self._tails: dict[str, _Tail] = {}
        # Every open supervisor page asks for a snapshot each second, and a snapshot reads
        # every agent of the workspace (their hashes, offer and case sets): twenty pages on a
        # thousand agents were sixty thousand Redis reads a second beside the routing. The
        # pages of one node asking within share_s of each other get the same one.
        self.share_s = share_s
        self._shared: dict[str, _Shared] = {}
        # who may take each queue's cases, by workspace: (the agents' version and the queues'
        # targets it was computed for, queue id -> agent ids); computed again when either moves
        self._staff: dict[str, tuple[tuple[Any, ...], dict[str, frozenset[str]]]] = {}

    def _staffing(
        self,
        ws: str,
        cfg: WorkspaceConfig,
        shape: tuple[Any, ...],
        agents: list[dict[str, Any]],
        attrs: dict[str, str],
    ) -> dict[str, frozenset[str]]:
        """Queue id -> the agents its target matches who take some channel (supervisors
        without capacity do not count), kept for ``shape`` (the agents' version, the queues'
        targets, how many agents). ``attrs``: each agent's attributes as stored (JSON)."""
        datas = {
            a["id"]: agent_data({**a, "attributes": json.loads(attrs.get(a["id"]) or "{}")})
            for a in agents
            if any(n > 0 for n in a["capacity"].values())
        }
        staff = queue_members(cfg.queues, datas)
        self._staff[ws] = (shape, staff)
        return staff

    async def close(self) -> None:
        for t in self._tails.values():
            await stop_task(t.task)
        for shared in self._shared.values():
            await stop_task(shared.task)
        await self.redis.aclose()

    async def snapshot(self, store: Store, cfg: WorkspaceConfig, ws: str) -> dict[str, Any]:
        """Queues (waiting, longest wait, service level) and agents (status, load): see
        :meth:`shared`."""
        return (await self.shared(store, cfg, ws)).value  # type: ignore[no-any-return]

    async def shared(self, store: Store, cfg: WorkspaceConfig, ws: str) -> Once:
        """The snapshot, made at most once per ``share_s`` per workspace on this node (and
        again at once when the workspace's queues change), every page asking meanwhile given
        the same, and sent encoded once (a thousand agents' snapshot is ~250 KiB of JSON).
        Read through the store's connection (``Store.commands``: raw replies, none of
        redis-py's work per command), a chunk of agents per round trip: a thousand agents'
        snapshot cost the node 60 ms of one piece, during which no console was served."""
        shape = tuple((q.id, q.name, q.sl_target_s) for q in cfg.queues)
        shared = self._shared.get(ws)
        if shared is None or not shared.fresh(self.share_s) or shared.shape != shape:
            task = asyncio.create_task(self._snapshot(store, cfg, ws), name=f"stats-of-{ws}")
            shared = self._shared[ws] = _Shared(shape, task)
        try:
            # shielded: a page that goes away mid-way does not cancel the others' snapshot
            await asyncio.shield(shared.task)
            return shared.once()
        except Exception:
            if self._shared.get(ws) is shared:
                del self._shared[ws]  # the next page to ask tries again
            raise

    async def _snapshot(self, store: Store, cfg: WorkspaceConfig, ws: str) -> dict[str, Any]:
        targets = {q.id: q.sl_target_s * 1000 for q in cfg.queues}
        tail = self._tails.get(ws)
        if tail is None or tail.targets != targets:
            old, tail = tail, _Tail(self.redis, ws, targets, store.own_connection())
            self._tails[ws] = tail  # before any await: a concurrent snapshot uses this one
            if old is not None:
                await stop_task(old.task)
        if not tail.caught_up.is_set():  # the first look after a start: not a row of zeros
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tail.caught_up.wait(), CATCH_UP_S)
        now_rel = time.time() * 1000 - queries.AGE_EPOCH_MS  # case ages count from 2024
        waits = await store.commands(
            *[
                cmd
                for q in cfg.queues
                for cmd in (
                    ("ZCARD", keys.queue_waiting(ws, q.id)),
                    ("ZRANGE", keys.queue_waiting(ws, q.id), 0, 0, "WITHSCORES"),
                )
            ]
        )
        queues = []
        for i, q in enumerate(cfg.queues):
            waiting, oldest = int(waits[2 * i]), _first_score(waits[2 * i + 1])
            longest = max(0.0, (now_rel - oldest) / 1000) if oldest is not None else 0.0
            queues.append(
                {
                    "id": q.id,
                    "name": q.name,
                    "waiting": waiting,
                    "longest_wait_s": round(longest, 1),
                    "sl_target_s": q.sl_target_s,
                    **tail.service_level(q.id),
                }
            )
        members, aver = await store.commands(
            ("SMEMBERS", keys.agents(ws)), ("HGET", keys.settings(ws), "aver")
        )
        ids = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        # who may take each queue's cases: worked out again only when an agent or a target
        # changed (the agents' version, ``aver``, moves with every agent written), and only
        # then are the agents' attributes read
        shape = (aver, tuple((q.id, q.target) for q in cfg.queues), len(ids))
        kept = self._staff.get(ws)
        staff = kept[1] if kept is not None and kept[0] == shape else None
        agents: list[dict[str, Any]] = []
        attrs: dict[str, str] = {}
        # the cases the agents are offered or hold: state -> case -> its creation
        held: dict[str, dict[str, int]] = {s: {} for s in queries.HELD}
        for chunk in queries.chunks(ids, AGENTS_READ):  # agents_read.lua, a chunk per call
            got = await store.run("agents_read", ws, "0" if staff else "1", *chunk)
            agents += script_list(got.get("agents"))
            attrs.update(got.get("attrs") or {})
            for created, case, state in script_list(got.get("cases")):
                held[state][case] = created
        # What follows goes over every agent two or three times: each pass is a piece of
        # work of its own (a thousand agents: a few ms), the consoles' frames going between.
        await asyncio.sleep(0)
        counts = tail.agent_counts()
        for a in agents:  # the last hour's work, beside what they hold now
            a["hour"] = counts.get(a["id"], {"completed": 0, "aht_s": None, "missed": 0})
        await asyncio.sleep(0)
        if staff is None:
            staff = self._staffing(ws, cfg, shape, agents, attrs)
        taking = {s.name for s in cfg.statuses if s.routable}
        on = {a["id"] for a in agents if a["status"] in taking}
        free = {  # of them, with room left on some channel
            a["id"]
            for a in agents
            if a["id"] in on and any(a["load"].get(ch, 0) < n for ch, n in a["capacity"].items())
        }
        for row in queues:
            members = staff.get(row["id"], frozenset())
            row["agents"] = len(members)  # whose skills the queue's target matches
            row["agents_available"] = len(members & on)  # of them, taking cases now
            row["agents_free"] = len(members & free)  # and with room left
        await asyncio.sleep(0)
        # every open case by status (a listing is cut at a page, these say how many there are),
        # and the oldest of those agents are offered or hold
        first = await queries.held_pages(store.commands, ws, held, LISTED)
        cases = {"queued": sum(q["waiting"] for q in queues)}
        cases.update((st, len(c)) for st, c in held.items())
        return {
            "queues": queues,
            "agents": agents,
            "cases": cases,
            "in_progress": {
                st: {"cases": page.cases, "more": page.next_cursor is not None}
                for st, page in first.items()
            },
            "sl_formula": SL_FORMULA,
            "ts": time.time(),
        }


def _first_score(reply: Any) -> float | None:
    """The score of ``ZRANGE key 0 0 WITHSCORES``: a flat [member, score] (RESP2), or
    [[member, score]] (RESP3); None for an empty set."""
    if not reply:
        return None
    first = reply[0]
    return float(first[1] if isinstance(first, list | tuple) else reply[1])


def _kind(fields: Any) -> str:
    """A log entry's type (its ``t``, which the scripts write first) without decoding the rest."""
    if isinstance(fields, dict):
        t = fields.get(b"t", fields.get("t", b""))
    elif len(fields) > 1 and fields[0] in (b"t", "t"):
        t = fields[1]
    else:
        t = pairs(fields).get("t", "")
    return t.decode() if isinstance(t, bytes) else str(t)
