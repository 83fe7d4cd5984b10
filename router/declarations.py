"""Workspace declarations in Redis and this process's cache of their parsed configs.

A declaration is validated (:func:`~router.workspace.parse_workspace`), stored without its agents'
passwords by one script that also upserts the queues, and listed in the global set of workspaces.
Each node parses a stored declaration once and keeps it until its ``declver`` changes:
:meth:`Declarations.changed`, run by the timer loop, drops what another node changed. The agents
a declaration names are not stored here: the :class:`~router.switch.Switch` does that, with the
pools they belong to (:mod:`router.pools`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from router import fastjson, keys
from router.errors import Conflict, NotFound
from router.store import Store
from router.workspace import WorkspaceConfig, parse_workspace

__all__ = ["Declarations", "default_queue"]


class Declarations:
    """The declarations of any number of workspaces on one Redis, with their configs cached."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis = store.redis
        self._configs: dict[str, tuple[bytes, WorkspaceConfig]] = {}

    async def apply(
        self, decl: Mapping[str, Any], *, read_version: str | None = None
    ) -> tuple[WorkspaceConfig, dict[str, Any]]:
        """Validate and store a workspace declaration and its queues; drop the cached config.
        Returns the config and the script's result (the offers made to cases that moved on
        from a queue it dropped, for the caller to dispatch).

        Raises ``Conflict`` (code ``workspace.changed``) and stores nothing if ``read_version``
        is given and the stored ``declver`` is no longer it.
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
            "workspace_declare",
            ws,
            read_version or "",
            fastjson.dumps_str(stored),
            fastjson.dumps_str(queues),
            default_queue(cfg),
        )
        if not res.get("ok"):
            raise Conflict(
                "the workspace changed while this edit was made", code="workspace.changed"
            )
        # the global set is in another hash slot than the workspace's keys: not in the script
        await self.redis.sadd(keys.WORKSPACES, ws)
        self._configs.pop(ws, None)
        return cfg, res

    async def read(self, ws: str) -> tuple[dict[str, Any], str]:
        """The stored declaration (agents as first declared, without passwords) and its version.
        Raises ``NotFound`` (code ``workspace.unknown``)."""
        raw = await self.redis.hmget(keys.settings(ws), ["decl", "declver"])
        if raw[0] is None:
            raise NotFound(f"workspace {ws!r} not found", code="workspace.unknown")
        decl: dict[str, Any] = json.loads(raw[0])
        return decl, (raw[1] or b"0").decode()

    async def config(self, ws: str) -> WorkspaceConfig:
        """The workspace's parsed config, cached. Raises ``NotFound`` (``workspace.unknown``)."""
        cached = self._configs.get(ws)
        if cached is not None:
            return cached[1]
        raw = await self.redis.hmget(keys.settings(ws), ["decl", "declver"])
        if raw[0] is None:
            raise NotFound(f"workspace {ws!r} not found", code="workspace.unknown")
        cfg = parse_workspace(json.loads(raw[0]))
        self._configs[ws] = (raw[1] or b"0", cfg)
        return cfg

    async def changed(self) -> AsyncIterator[str]:
        """Drop cached configs whose declaration another node changed, yielding each workspace
        as it is dropped (before the next one is checked)."""
        for ws in list(self._configs):
            if await self.drop_if_changed(ws):
                yield ws

    async def drop_if_changed(self, ws: str) -> bool:
        """Drop ws's cached config if another node changed its declaration since; True if so."""
        cached = self._configs.get(ws)
        if cached is None:
            return False
        if await self.redis.hget(keys.settings(ws), "declver") == cached[0]:
            return False
        self._configs.pop(ws, None)
        return True

    async def workspaces(self) -> list[str]:
        return sorted(m.decode() for m in await self.redis.smembers(keys.WORKSPACES))


def default_queue(cfg: WorkspaceConfig) -> str:
    """The workflow's default queue ('' if none): where a case goes whose plan led only to
    queues that have since been dropped (workspace_declare.lua)."""
    target = cfg.workflow.default_target
    return target.queue if target is not None else ""
