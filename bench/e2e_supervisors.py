"""Supervisor pages for ``python -m bench e2e --supervisors N``: routing measured with people
watching it.

Each page asks what ``web/supervisor.js`` asks every second, in JSON as the browser does:
``stats.fetch`` on its WebSocket (queues, service levels, every agent's status and load, and
the oldest 50 offered, assigned and wrapping cases) and ``GET /api/cases?status=queued`` (the
oldest 50 waiting cases). A page waits for both answers, then for the rest of its second, as
the browser does. The bench workspace declares the supervisors (``s0`` …,
``server_proc.SUPERVISORS``); their tokens are minted with the server's secret, like the
agents'.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from typing import Any

import httpx

from bench.bare_wsclient import WsClient
from bench.e2e_load import open_ws
from bench.server_proc import WORKSPACE, Server
from router import wire
from router.auth import Principal, Tokens

__all__ = ["Supervisors"]

POLL_S = 1.0  # web/supervisor.js POLL_MS
PAGE = 50  # its WAITING_LIMIT


class _Page:
    """One supervisor's page: its console (for ``stats.fetch``) and its REST calls."""

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.client: WsClient | None = None
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.refs = itertools.count(1)

    def on_message(self, payload: bytes) -> None:
        frame = json.loads(payload)
        fut = self.waiting.pop(frame.get("ref"), None) if isinstance(frame, dict) else None
        if fut is not None and not fut.done():
            fut.set_result(frame)

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        assert self.client is not None
        ref = next(self.refs)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[ref] = fut
        self.client.send_text(json.dumps({**frame, "ref": ref}))
        return await fut


class Supervisors:
    """``n`` supervisor pages refreshing every second until :meth:`stop`; :meth:`take` gives
    the refreshes' durations (s) since the last call, and the failed ones."""

    def __init__(self, server: Server, n: int) -> None:
        self.server, self.n = server, n
        self.pages = [_Page(f"s{i}") for i in range(n)]
        self.durations: list[float] = []
        self.failed = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if not self.n:
            return
        tokens = Tokens(self.server.secret)
        self._http = httpx.AsyncClient(base_url=self.server.url, timeout=30.0)
        for page in self.pages:
            ws_token = tokens.issue(Principal("ws", WORKSPACE, page.sid, "supervisor"))
            page.client = await open_ws(
                self.server.host, self.server.port,
                f"/ws/agent?token={ws_token}&client=supervisor", page.on_message,
                headers={"Sec-WebSocket-Protocol": wire.JSON},
            )  # fmt: skip
            session = tokens.issue(Principal("session", WORKSPACE, page.sid, "supervisor"))
            self._tasks.append(asyncio.create_task(self._refresh(page, session)))

    async def _refresh(self, page: _Page, session: str) -> None:
        assert self._http is not None
        headers = {"Authorization": f"Bearer {session}"}
        while True:
            began = time.perf_counter()
            try:
                stats, waiting = await asyncio.gather(
                    page.request({"type": "stats.fetch"}),
                    self._http.get(f"/api/cases?status=queued&limit={PAGE}", headers=headers),
                )
                if stats.get("type") != "ack" or waiting.status_code != 200:
                    self.failed += 1
                else:
                    self.durations.append(time.perf_counter() - began)
            except (httpx.HTTPError, OSError):
                self.failed += 1
            await asyncio.sleep(max(0.0, POLL_S - (time.perf_counter() - began)))

    def take(self) -> tuple[list[float], int]:
        out, failed = self.durations, self.failed
        self.durations, self.failed = [], 0
        return out, failed

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for page in self.pages:
            if page.client is not None:
                page.client.close()
        if self._http is not None:
            await self._http.aclose()
