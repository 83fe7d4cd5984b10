"""The Switch: the routing core's one entry point, used by the server, adapters and benches.

Each method validates its input, runs exactly one transition script (plus, rarely, a pool
definition the first time a (queue, filter) pair is seen) and hands every resulting offer and
push to the ``notify`` callback — whichever node or process calls it. Errors are typed
(:mod:`router.errors`); a failed call has changed nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from router import fastjson, keys
from router.auth import hash_password
from router.errors import BadRequest, Conflict, NotFound, StoreUnavailable, from_script
from router.ingest import Event, parse_event, timeline_entry
from router.push import offer_frame
from router.store import Store, now_ms
from router.triage import PoolSpec, agent_data, pool_members, triage
from router.workspace import AgentConfig, WorkspaceConfig, parse_agent, parse_workspace

__all__ = ["IngestResult", "Notify", "Switch", "new_id"]


class Notify(Protocol):
    """Deliver a server → agent frame to that agent's consoles. ``nodes``, when given, names
    the router nodes that held the agent's consoles when the transition ran (offers carry it),
    so a node holding all of them need not relay the frame through Redis."""

    def __call__(
        self, ws: str, agent: str, frame: dict[str, Any], *, nodes: Sequence[str] | None = None
    ) -> Awaitable[None]: ...


DEDUPE_TTL_S = 7 * 86400
_RETRIES = 8


async def _drop(
    ws: str, agent: str, frame: dict[str, Any], *, nodes: Sequence[str] | None = None
) -> None:
    return None


def _json(v: Any) -> str:
    return fastjson.dumps_str(v)


def _as_list(v: Any) -> list[Any]:
    # Redis's cjson encodes an empty Lua table as {}.
    return v if isinstance(v, list) else []


_seq = itertools.count()


def new_id(tag: str) -> str:
    """Time-ordered, unguessable id: tag + ms timestamp + a per-process counter + 48 random
    bits. Ids made by one process sort in creation order even within a millisecond, which is
    what keeps FIFO exact for cases of equal priority and age."""
    return f"{tag}{int(time.time() * 1000):x}{next(_seq) & 0xFFFF:04x}{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class IngestResult:
    case: str
    customer: str
    action: str  # created | appended | reopened | abandoned | stale | ignored
    duplicate: bool
    offered: bool = False  # this very call offered the case to an agent


class Switch:
    """The routing core for any number of workspaces on one Redis."""

    def __init__(self, store: Store, *, notify: Notify | None = None) -> None:
        self.store = store
        self.redis = store.redis
        self.notify: Notify = notify or _drop
        self._configs: dict[str, tuple[bytes, WorkspaceConfig]] = {}
        self._pools: dict[str, set[str]] = {}
        self._defining: dict[tuple[str, str], asyncio.Future[None]] = {}

    # -- configuration ------------------------------------------------------------------------

    async def apply_workspace(
        self, decl: Mapping[str, Any], *, read_version: str | None = None
    ) -> WorkspaceConfig:
        """Validate and store a workspace declaration; upsert its queues and agents.

        ``read_version``: the ``declver`` the caller read the declaration at (a read-change-write
        edit); if it changed meanwhile nothing is stored and ``Conflict`` (code
        ``workspace.changed``) is raised, for the caller to read again and retry.
        """
        cfg = parse_workspace(decl)
        ws = cfg.id
        # stored without passwords: they are kept only hashed, on the agents
        stored = {
            **decl,
            "agents": [
                {k: v for k, v in a.items() if k != "password"}
                for a in decl.get("agents", [])
                if isinstance(a, Mapping)
            ],
        }
        queues = [
            [str(v) for v in (q.id, q.name, q.target, q.order, q.sl_target_s)] for q in cfg.queues
        ]
        res = await self.store.run(
            "workspace_declare", ws, read_version or "", _json(stored), _json(queues)
        )
        if not res.get("ok"):
            raise Conflict(
                "the workspace changed while this edit was made", code="workspace.changed"
            )
        # the global set is in another hash slot than the workspace's keys: not in the script
        await self.redis.sadd(keys.WORKSPACES, ws)
        self._configs.pop(ws, None)
        self._pools.pop(ws, None)
        await self.config(ws)
        declared = {a.id for a in cfg.agents}
        for a in cfg.agents:  # from the declaration as given: it has the passwords
            await self.upsert_agent(ws, a)
        # queue targets may have changed: recompute memberships of the other agents too
        for aid in await self.agent_ids(ws):
            if aid not in declared:
                await self._update_memberships(ws, aid)
        return cfg

    async def declaration(self, ws: str) -> tuple[dict[str, Any], str]:
        """The stored declaration (agents as first declared, without passwords) and its version,
        for a read-change-write edit: ``apply_workspace(changed, read_version=version)``."""
        raw = await self.redis.hmget(keys.settings(ws), ["decl", "declver"])
        if raw[0] is None:
            raise NotFound(f"workspace {ws!r} not found", code="workspace.unknown")
        decl: dict[str, Any] = json.loads(raw[0])
        return decl, (raw[1] or b"0").decode()

    async def config(self, ws: str) -> WorkspaceConfig:
        cached = self._configs.get(ws)
        if cached is not None:
            return cached[1]
        raw = await self.redis.hmget(keys.settings(ws), ["decl", "declver"])
        if raw[0] is None:
            raise NotFound(f"workspace {ws!r} not found", code="workspace.unknown")
        cfg = parse_workspace(json.loads(raw[0]))
        self._configs[ws] = (raw[1] or b"0", cfg)
        return cfg

    async def refresh_configs(self) -> None:
        """Drop cached declarations another node changed (called by the timer loop)."""
        for ws, (ver, _) in list(self._configs.items()):
            now = await self.redis.hget(keys.settings(ws), "declver")
            if now != ver:
                self._configs.pop(ws, None)
                self._pools.pop(ws, None)

    async def workspaces(self) -> list[str]:
        return sorted(m.decode() for m in await self.redis.smembers(keys.WORKSPACES))

    async def agent_ids(self, ws: str) -> list[str]:
        return sorted(m.decode() for m in await self.redis.smembers(keys.agents(ws)))

    # -- agents and pools ---------------------------------------------------------------------

    async def upsert_agent(self, ws: str, agent: AgentConfig | Mapping[str, Any]) -> None:
        """Create or update an agent; recompute the pools they belong to."""
        cfg = await self.config(ws)
        a = agent if isinstance(agent, AgentConfig) else parse_agent(agent)
        data = agent_data(a)
        for _ in range(_RETRIES):
            ver = await self._ver(ws)
            memberships = await self._memberships(ws, cfg, data)
            res = await self.store.run(
                "agent_update",
                ws,
                a.id,
                a.name,
                ",".join(sorted(a.capacity)),
                _json(a.capacity),
                _json(a.attributes),
                _json(memberships),
                ver,
            )
            if res.get("ok"):
                break
        else:
            raise StoreUnavailable("agent update kept conflicting; try again")
        extra = {"role": a.role}
        if a.password is not None:
            extra["pw"] = hash_password(a.password)
        await self.redis.hset(keys.agent(ws, a.id), mapping=extra)
        await self._dispatch(ws, res)

    async def _update_memberships(self, ws: str, aid: str) -> None:
        row = await self.redis.hgetall(keys.agent(ws, aid))
        if not row:
            return
        d = {k.decode(): v.decode() for k, v in row.items()}
        caps = {k[4:]: int(v) for k, v in d.items() if k.startswith("cap:")}
        await self.upsert_agent(
            ws,
            AgentConfig(
                aid,
                d.get("name", aid),
                json.loads(d.get("attrs", "{}")),
                caps,
                d.get("role", "agent"),
            ),
        )

    async def _ver(self, ws: str) -> str:
        v = await self.redis.hget(keys.settings(ws), "ver")
        return v.decode() if v else "0"

    async def _pool_specs(self, ws: str) -> list[PoolSpec]:
        ids = [m.decode() for m in await self.redis.smembers(keys.pools(ws))]
        ids = [p for p in ids if not p.startswith("a~")]
        pipe = self.redis.pipeline(transaction=False)
        for p in ids:
            pipe.hmget(keys.pool(ws, p), ["queue", "filter", "order", "load"])
        rows = await pipe.execute()
        specs = []
        for p, (q, f, o, ld) in zip(ids, rows, strict=True):
            if q is None:
                continue
            order = tuple((k, bool(d)) for k, d in json.loads(o or b"[]"))
            specs.append(PoolSpec(p, q.decode(), f.decode(), order, load=(ld or b"").decode()))
        return specs

    async def _memberships(
        self, ws: str, cfg: WorkspaceConfig, data: Mapping[str, Any]
    ) -> list[list[Any]]:
        out: list[list[Any]] = []
        for spec in await self._pool_specs(ws):
            q = cfg.queue(spec.queue)
            if q is None:
                continue
            out.extend([spec.id, ordval] for _, ordval in pool_members(spec, q.target, {"_": data}))
        return out

    async def _agent_datas(self, ws: str) -> dict[str, dict[str, Any]]:
        ids = await self.agent_ids(ws)
        pipe = self.redis.pipeline(transaction=False)
        for aid in ids:
            pipe.hgetall(keys.agent(ws, aid))
        out: dict[str, dict[str, Any]] = {}
        for aid, row in zip(ids, await pipe.execute(), strict=True):
            d = {k.decode(): v.decode() for k, v in row.items()}
            caps = {k[4:]: int(v) for k, v in d.items() if k.startswith("cap:")}
            out[aid] = agent_data(
                {"attributes": json.loads(d.get("attrs", "{}")), "capacity": caps}
            )
        return out

    async def _ensure_pools(self, ws: str, cfg: WorkspaceConfig, specs: list[PoolSpec]) -> None:
        known = self._pools.setdefault(ws, set())
        for spec in specs:
            if spec.id in known:
                continue
            # single flight: concurrent first cases of a new pool share one definition
            key = (ws, spec.id)
            pending = self._defining.get(key)
            if pending is None:
                pending = asyncio.ensure_future(self._define_pool(ws, cfg, spec))
                self._defining[key] = pending
                pending.add_done_callback(self._defined(key))
            await asyncio.shield(pending)
            known.add(spec.id)

    def _defined(self, key: tuple[str, str]) -> Callable[[asyncio.Future[None]], None]:
        def done(_: asyncio.Future[None]) -> None:
            self._defining.pop(key, None)

        return done

    async def _define_pool(self, ws: str, cfg: WorkspaceConfig, spec: PoolSpec) -> None:
        if await self.redis.sismember(keys.pools(ws), spec.id):
            return
        queue = cfg.queue(spec.queue)
        if queue is None:
            raise BadRequest(f"queue {spec.queue!r} not configured", code="queue.unknown")
        for _ in range(_RETRIES):
            ver = await self._ver(ws)
            members = pool_members(spec, queue.target, await self._agent_datas(ws))
            res = await self.store.run(
                "pool_define",
                ws,
                spec.id,
                spec.queue,
                spec.filter,
                ver,
                _json(members),
                _json(spec.order_by),
                spec.load,
            )
            if res.get("ok"):
                return
        raise StoreUnavailable("pool definition kept conflicting; try again")

    # -- ingest --------------------------------------------------------------------------------

    async def ingest(self, ws: str, event: Mapping[str, Any] | Event) -> IngestResult:
        """Dedupe, identify, thread, triage and queue one event; offer it if an agent is free.

        Returns only once the event is in Redis. Raises BadRequest/TooLarge for a bad event,
        NotFound for an unknown workspace, StoreUnavailable if Redis failed (not acknowledged).
        """
        ev = event if isinstance(event, Event) else parse_event(event)
        cfg = await self.config(ws)
        tri = triage(cfg, ev.channel, ev.attributes, subject=ev.subject)
        await self._ensure_pools(ws, cfg, tri.pools)
        res = await self.store.run(
            "event_ingest",
            ws,
            ev.id,
            ev.channel,
            ev.kind,
            _json(list(ev.identities)),
            ev.name,
            ev.thread_key,
            ev.case,
            _json(timeline_entry(ev)),
            new_id("c"),
            new_id("u"),
            tri.plan_json,
            _json(tri.fields),
            int(cfg.reopen_window_s * 1000),
            tri.reopen_json,
            "" if ev.seq is None else ev.seq,
            DEDUPE_TTL_S,
        )
        await self._dispatch(ws, res)
        for other in _as_list(res.get("conflicts")):
            await self._absorb_anonymous(ws, res["customer"], other)
        offered = any(o.get("case") == res["case"] for o in _as_list(res.get("offers")))
        return IngestResult(
            res["case"], res["customer"], res["action"], bool(res["duplicate"]), offered
        )

    # -- agent actions -------------------------------------------------------------------------

    async def _act(self, name: str, ws: str, *args: Any) -> dict[str, Any]:
        res: dict[str, Any] = await self.store.run(name, ws, *args)
        if not res.get("ok"):
            raise from_script(str(res.get("error", "error")))
        await self._dispatch(ws, res)
        return res

    async def set_status(self, ws: str, agent: str, status: str) -> dict[str, Any]:
        cfg = await self.config(ws)
        st = cfg.status(status)
        if st is None:
            raise BadRequest(f"unknown status {status!r}", code="status.unknown")
        return await self._act("agent_status", ws, agent, st.name, "1" if st.routable else "0")

    async def accept(self, ws: str, agent: str, offer: str) -> dict[str, Any]:
        return await self._act("offer_accept", ws, agent, offer)

    async def reject(self, ws: str, agent: str, offer: str) -> dict[str, Any]:
        cfg = await self.config(ws)
        after = cfg.status(cfg.reject_status) if cfg.reject_status else None
        return await self._act(
            "offer_reject",
            ws,
            agent,
            offer,
            after.name if after else "",
            ("1" if after.routable else "0") if after else "",
        )

    async def wrapup(self, ws: str, agent: str, case: str) -> dict[str, Any]:
        return await self._act("case_wrapup", ws, agent, case)

    async def complete(
        self, ws: str, agent: str, case: str, disposition: str = "", note: str = ""
    ) -> dict[str, Any]:
        cfg = await self.config(ws)
        if disposition and disposition not in cfg.dispositions:
            raise BadRequest(f"unknown disposition {disposition!r}", code="disposition.unknown")
        entry = ""
        if note or disposition:
            entry = _json(
                {
                    "id": new_id("n"),
                    "ch": "note",
                    "dir": "note",
                    "kind": "wrapup",
                    "ts": time.time(),
                    "text": note,
                    "disposition": disposition,
                    "agent": agent,
                    "case": case,
                }
            )
        return await self._act("case_complete", ws, agent, case, disposition, entry)

    async def transfer(
        self,
        ws: str,
        agent: str,
        case: str,
        *,
        queue: str = "",
        to_agent: str = "",
        note: str = "",
    ) -> dict[str, Any]:
        """Transfer an assigned case to a queue or a named agent (then back to the queue).

        ``agent`` '' means a supervisor moving a waiting case (the caller checked the role).
        """
        cfg = await self.config(ws)
        plan = await self._transfer_plan(ws, cfg, case, queue, to_agent)
        entry = _json(
            {
                "id": new_id("n"),
                "ch": "note",
                "dir": "note",
                "kind": "transfer",
                "ts": time.time(),
                "text": note,
                "agent": agent,
                "to": to_agent or queue,
            }
        )
        return await self._act("case_transfer", ws, agent, case, _json(plan), entry, to_agent)

    async def _transfer_plan(
        self, ws: str, cfg: WorkspaceConfig, case: str, queue: str, to_agent: str
    ) -> list[dict[str, Any]]:
        if bool(queue) == bool(to_agent):
            raise BadRequest("transfer to exactly one of queue or agent", code="transfer.invalid")
        row = await self.redis.hmget(keys.case(ws, case), ["q", "pri"])
        if row[0] is None:
            raise NotFound("case not found", code="case.unknown")
        pri = int(row[1] or 0)
        if to_agent:
            if not await self.redis.exists(keys.agent(ws, to_agent)):
                raise NotFound("agent not found", code="agent.unknown")
            back = row[0].decode()
            await self._ensure_pools(ws, cfg, [PoolSpec(back, back, "true")])
            tmo = int(cfg.transfer_agent_timeout_s * 1000)
            bq = cfg.queue(back)
            lifo = "1" if bq is not None and bq.order == "lifo" else "0"
            return [
                {"queue": back, "pri": pri, "lifo": "0", "due": tmo, "agent": to_agent},
                {"queue": back, "pri": pri, "lifo": lifo, "pool": back},
            ]
        q = cfg.queue(queue)
        if q is None:
            raise NotFound(f"queue {queue!r} not found", code="queue.unknown")
        spec = PoolSpec(q.id, q.id, "true")
        await self._ensure_pools(ws, cfg, [spec])
        return [
            {"queue": q.id, "pri": pri, "lifo": "1" if q.order == "lifo" else "0", "pool": q.id}
        ]

    async def followup(
        self, ws: str, agent: str, case: str, due_ms: int, note: str = ""
    ) -> dict[str, Any]:
        if due_ms < now_ms() - 60_000 or due_ms > now_ms() + 366 * 86400 * 1000:
            raise BadRequest("due: within the next year", code="followup.invalid")
        return await self._act("case_followup", ws, agent, case, due_ms, note[:2000])

    async def reply(
        self,
        ws: str,
        agent: str,
        case: str,
        text: str,
        *,
        note: bool = False,
        agent_name: str = "",
    ) -> dict[str, Any]:
        """Send ``text`` to the customer on the case's channel (or add an internal note)."""
        if not text.strip():
            raise BadRequest("text: empty", code="reply.invalid")
        entry = {
            "id": new_id("m"),
            "dir": "note" if note else "out",
            "kind": "message",
            "ts": time.time(),
            "text": text,
            "agent": agent,
            "from": agent_name or agent,
        }
        return await self._act(
            "case_reply", ws, agent, case, _json(entry), "note" if note else "reply"
        )

    async def _absorb_anonymous(self, ws: str, into: str, other: str) -> None:
        """A chat visitor who gives an email or phone of a known customer: their anonymous
        (visitor-only) customer record joins the known one, conversation and all. A record
        with any other identity is never merged automatically (an admin can)."""
        fields = [f.decode() for f in await self.redis.hkeys(keys.customer(ws, other))]
        idents = [f for f in fields if f.startswith("i:")]
        if idents and all(f.startswith("i:visitor:") for f in idents):
            try:
                await self.merge_customers(ws, into, other)
            except (NotFound, Conflict):
                pass  # merged meanwhile by another node

    async def merge_customers(self, ws: str, into: str, from_: str) -> dict[str, Any]:
        """Merge customer ``from_`` into ``into`` (admin): identities, cases, timeline."""
        return await self._act("customer_merge", ws, into, from_)

    async def presence(
        self, ws: str, agent: str, action: str, node: str, grace_s: float = 30
    ) -> str:
        """An agent's console connected or disconnected on ``node`` (or ``reap`` the
        connections a dead node held). Returns the agent's status."""
        res = await self.store.run(
            "agent_presence", ws, agent, action, int(grace_s * 1000), secrets.token_hex(8), node
        )
        if not res.get("ok"):
            raise from_script(str(res.get("error")))
        return str(res.get("status", ""))

    async def heartbeat(
        self, node: str, *, dead_after_s: float = 15, grace_s: float = 30
    ) -> list[str]:
        """Say this node is alive; reap the agent connections of nodes that stopped saying
        so (killed without a goodbye). Returns the nodes reaped."""
        now = now_ms()
        await self.redis.zadd(keys.NODES, {node: now})
        dead = [
            n.decode()
            for n in await self.redis.zrangebyscore(keys.NODES, 0, now - int(dead_after_s * 1000))
        ]
        for n in dead:
            for ws in await self.workspaces():
                for a in await self.redis.smembers(keys.node_agents(ws, n)):
                    await self.presence(ws, a.decode(), "reap", n, grace_s)
            await self.redis.zrem(keys.NODES, n)
        return dead

    async def run_timers(self, ws: str, *, now: int | None = None, limit: int = 500) -> int:
        """Fire the workspace's due timers (offer deadlines, escalations, reminders, grace)."""
        cfg = await self.config(ws)
        away = cfg.status("away")
        res = await self.store.run(
            "timers_run",
            ws,
            limit,
            cfg.max_missed_offers,
            away.name if away else "away",
            now=now,
        )
        await self._dispatch(ws, res)
        return int(res.get("fired", 0))

    # -- delivery ------------------------------------------------------------------------------

    async def _dispatch(self, ws: str, res: Mapping[str, Any]) -> None:
        for p in _as_list(res.get("push")):
            await self.notify(ws, p["agent"], p["frame"])
        for o in _as_list(res.get("offers")):
            nodes = _as_list(o["nodes"]) if "nodes" in o else None
            await self.notify(ws, o["agent"], offer_frame(o), nodes=nodes)
        for r in _as_list(res.get("rescinded")):
            if r.get("agent"):
                await self.notify(
                    ws,
                    r["agent"],
                    {
                        "type": "offer.rescinded",
                        "offer": r["offer"],
                        "case": r["case"],
                        "reason": "rescinded",
                    },
                )
