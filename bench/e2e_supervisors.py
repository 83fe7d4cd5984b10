"""Supervisor pages for ``python -m bench e2e --supervisors N``: routing measured with people
watching it.

Each page asks what ``web/supervisor.js`` asks every second, in JSON as the browser does:
``stats.fetch`` on its WebSocket (queues, service levels, every agent's status and load, and
the oldest 50 offered, assigned and wrapping cases) and ``GET /api/cases?status=queued`` (the
oldest 50 waiting cases). A page waits for both answers, then for the rest of its second, as
the browser does. The pages run in a process of their own (``python -m bench.e2e_supervisors``),
so that their work never holds up the load generator's timing. The bench workspace declares
the supervisors (``s0`` …,
``server_proc.SUPERVISORS``); their tokens are minted with the server's secret, like the
agents'.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import uvloop

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


class _Pages:
    """The pages themselves, refreshing every second until cancelled (in the pages' process)."""

    def __init__(self, server: Server, n: int) -> None:
        self.server = server
        self.pages = [_Page(f"s{i}") for i in range(n)]
        self.durations: list[float] = []
        self.failed = 0
        self._http: httpx.AsyncClient | None = None

    async def run(self, ready: Callable[[], None]) -> None:
        tokens = Tokens(self.server.secret)
        self._http = httpx.AsyncClient(base_url=self.server.url, timeout=30.0)
        tasks = []
        try:
            for page in self.pages:
                ws_token = tokens.issue(Principal("ws", WORKSPACE, page.sid, "supervisor"))
                page.client = await open_ws(
                    self.server.host, self.server.port,
                    f"/ws/agent?token={ws_token}&client=supervisor", page.on_message,
                    headers={"Sec-WebSocket-Protocol": wire.JSON},
                )  # fmt: skip
                session = tokens.issue(Principal("session", WORKSPACE, page.sid, "supervisor"))
                tasks.append(asyncio.create_task(self._refresh(page, session)))
            ready()
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            for page in self.pages:
                if page.client is not None:
                    page.client.close()
            await self._http.aclose()

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


class Supervisors:
    """``n`` supervisor pages refreshing every second, in a process of their own (on the load
    generator's core), from :meth:`start` until :meth:`stop`; :meth:`take` gives the
    refreshes' durations (s) and the failed ones. A page parses a ~280 KiB JSON frame each
    second (3 ms with the standard library): in the load generator's own loop, that pause
    delayed the offers it was timing, and counted as the server's."""

    def __init__(self, server: Server, n: int) -> None:
        self.server, self.n = server, n
        self.durations: list[float] = []
        self.failed = 0
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        if not self.n:
            return
        s = self.server
        self._proc = proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.e2e_supervisors", s.host, str(s.port), s.secret,
            str(self.n), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            await self.stop()
            raise RuntimeError(f"supervisor pages did not start: {line!r}")

    def take(self) -> tuple[list[float], int]:
        out, failed = self.durations, self.failed
        self.durations, self.failed = [], 0
        return out, failed

    async def stop(self) -> None:
        """End the pages (their stdin closed) and take what they measured."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        try:
            out = await asyncio.wait_for(proc.stdout.read(), 30)
            got = json.loads(out.decode().strip().splitlines()[-1])
            self.durations += got["durations"]
            self.failed += got["failed"]
        except (TimeoutError, ValueError, IndexError, KeyError):
            self.failed += 1  # said nothing readable: counted, not hidden
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def _main(host: str, port: int, secret: str, n: int) -> None:
    """The pages' process: "ready" once they are open; on stdin's end, what they measured."""
    pages = _Pages(Server(host, port, None, None, secret=secret), n)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    task = asyncio.create_task(pages.run(lambda: print("ready", flush=True)))
    ended = asyncio.create_task(stdin.read())
    await asyncio.wait([task, ended], return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as e:  # said, and counted as a failed refresh
        print(f"supervisor pages: {e!r}", file=sys.stderr, flush=True)
        pages.failed += 1
    print(json.dumps({"durations": pages.durations, "failed": pages.failed}), flush=True)


if __name__ == "__main__":
    uvloop.run(_main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
