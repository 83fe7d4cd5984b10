"""Agents and the pools they belong to, for the :class:`~router.switch.Switch`.

An agent's record is stored together with their memberships of every defined pool, computed from
the workspace's queue targets; a pool is defined the first time a (queue, filter) pair is seen,
with its members computed from every agent's record. Both scripts check the workspace's ``ver``
and are retried a few times if an agent or pool changed meanwhile, then fail with
``StoreUnavailable``. Nothing here delivers frames: :meth:`Pools.update_agent` returns the
script's result for the caller to dispatch.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

from router import fastjson, keys
from router.auth import hash_password, verify_password
from router.errors import BadRequest, Conflict, StoreUnavailable
from router.store import Store
from router.triage import PoolSpec, agent_data, pool_members
from router.workspace import AgentConfig, WorkspaceConfig

__all__ = ["Pools"]

_RETRIES = 8


class Pools:
    """The agents and pool memberships of any number of workspaces on one Redis."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis = store.redis
        self._known: dict[str, set[str]] = {}
        self._defining: dict[tuple[str, str], asyncio.Future[None]] = {}

    def forget(self, ws: str) -> None:
        """Drop what is known of the workspace's pools (its declaration changed)."""
        self._known.pop(ws, None)

    async def agent_ids(self, ws: str) -> list[str]:
        return sorted(m.decode() for m in await self.redis.smembers(keys.agents(ws)))

    async def update_agent(
        self, ws: str, cfg: WorkspaceConfig, a: AgentConfig, *, create_only: bool = False
    ) -> dict[str, Any]:
        """Create or update an agent with the pools they belong to; returns the script's
        result (offers and pushes) for the caller to dispatch. ``create_only``: an agent of
        this id that exists is refused (Conflict ``agent.exists``), in the same atomic step."""
        data = agent_data(a)
        for _ in range(_RETRIES):
            ver = await self._ver(ws, "pver")  # a pool defined meanwhile: compute again
            memberships = await self._memberships(ws, cfg, data)
            res: dict[str, Any] = await self.store.run(
                "agent_update",
                ws,
                a.id,
                a.name,
                ",".join(sorted(a.capacity)),
                fastjson.dumps_str(a.capacity),
                fastjson.dumps_str(a.attributes),
                fastjson.dumps_str(memberships),
                ver,
                "1" if create_only else "",
            )
            if res.get("error") == "agent.exists":
                raise Conflict(f"there is already an agent {a.id}", code="agent.exists")
            if res.get("ok"):
                break
        else:
            raise StoreUnavailable("agent update kept conflicting; try again")
        ak = keys.agent(ws, a.id)
        role, pw = await self.redis.hmget(ak, ["role", "pw"])
        extra: dict[str, Any] = {"role": a.role}
        new_pw = a.password is not None and not (
            pw is not None and verify_password(a.password, pw.decode())
        )
        if new_pw:
            extra["pw"] = hash_password(str(a.password))
        await self.redis.hset(ak, mapping=extra)
        # a new role or password ends the sessions signed in before it (auth.revoked): a
        # demoted supervisor's open console must not keep a supervisor's powers
        if (role is not None and role.decode() != a.role) or (new_pw and pw is not None):
            await self.redis.hincrby(ak, "sv", 1)
            res = {**res, "revoked": True}
        return res

    async def stored_agent(self, ws: str, aid: str) -> AgentConfig | None:
        """The agent as stored (without password), or None if there is no such agent."""
        row = await self.redis.hgetall(keys.agent(ws, aid))
        if not row:
            return None
        d = {k.decode(): v.decode() for k, v in row.items()}
        caps = {k[4:]: int(v) for k, v in d.items() if k.startswith("cap:")}
        return AgentConfig(
            aid,
            d.get("name", aid),
            json.loads(d.get("attrs", "{}")),
            caps,
            d.get("role", "agent"),
        )

    async def _ver(self, ws: str, which: str) -> str:
        """The pools' ("pver") or the agents' ("aver") version: each writer checks the other's."""
        v = await self.redis.hget(keys.settings(ws), which)
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

    async def ensure(self, ws: str, cfg: WorkspaceConfig, specs: list[PoolSpec]) -> None:
        """Define each pool not yet known to be defined. Raises BadRequest for a pool of an
        unconfigured queue, StoreUnavailable if the definition kept conflicting."""
        known = self._known.setdefault(ws, set())
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
            ver = await self._ver(ws, "aver")  # an agent updated meanwhile: compute again
            members = pool_members(spec, queue.target, await self._agent_datas(ws))
            res = await self.store.run(
                "pool_define",
                ws,
                spec.id,
                spec.queue,
                spec.filter,
                ver,
                fastjson.dumps_str(members),
                fastjson.dumps_str(spec.order_by),
                spec.load,
            )
            if res.get("ok"):
                return
        raise StoreUnavailable("pool definition kept conflicting; try again")
