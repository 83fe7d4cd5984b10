"""Promise 1 across a Redis restart with AOF: acknowledged cases survive a kill -9 of
redis-server (the embedded supervisor restarts it from its AOF) and routing carries on."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from router.embedded import EmbeddedRedis
from router.store import Store, connect
from router.switch import Switch
from tests.switchboard_fixtures import DECL, Inbox, agent, chat
from tests.util import wait_for


async def test_acknowledged_cases_survive_redis_kill_and_aof_restart(tmp_path: Path) -> None:
    # a hang must fail the test, not stall the suite (seen once on Redis 7.0 after the restart)
    async with asyncio.timeout(90):
        await _survive(tmp_path)


async def _survive(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", extra_args=("--appendfsync", "always"))
    url = await server.start()
    store = Store(connect(url))
    inbox = Inbox()
    sw = Switch(store, notify=inbox)
    try:
        await sw.apply_workspace({**DECL, "agents": [agent("ann", ["support"], chat=10)]})
        acked = [
            (await sw.ingest("acme", chat(f"e{i}", email=f"c{i}@x.test"))).case for i in range(5)
        ]
        old_pid = server.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)

        async def back() -> bool:
            if server.pid in (None, old_pid):
                return False
            try:
                return bool(await asyncio.wait_for(store.redis.ping(), 2))
            except Exception:
                return False

        await wait_for(back, timeout=20, message="redis-server was not restarted")

        async def survived() -> bool:
            try:
                return await store.redis.exists(*[f"sb:{{acme}}:c:{c}" for c in acked]) == 5
            except Exception:
                return False

        assert await wait_for(survived, timeout=10)
        # the scripts were lost with the process: the store reloads them on NOSCRIPT
        await sw.set_status("acme", "ann", "available")
        assert {o["case"]["id"] for o in inbox.offers("ann")} == set(acked)
        # and a duplicate of an acknowledged event still changes nothing
        again = await sw.ingest("acme", chat("e0", email="c0@x.test"))
        assert again.duplicate and again.case == acked[0]
    finally:
        await store.close()
        await server.stop()
