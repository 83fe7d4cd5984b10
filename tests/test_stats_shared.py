"""Supervisor statistics are shared: every open supervisor page asks for a snapshot each second,
and a snapshot reads every agent of the workspace, so the pages of one node asking within
``share_s`` of each other are given the same snapshot, read from Redis once. A change of the
workspace's queues is never served from before it. The routing core on the test Redis.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from router.stats import Stats
from router.switch import Switch
from tests.switchboard_fixtures import DECL, agent

AGENTS = [agent(f"a{i}", ["support"], chat=2) for i in range(30)]


async def agent_reads(redis: Redis) -> int:
    """How many HMGETs Redis has run (a snapshot reads each agent's hash with one, in
    router/lua/agents_read.lua; these agents hold no cases, whose reads would count too)."""
    stats = await redis.info("commandstats")
    row = stats.get("cmdstat_hmget") or {}
    return int(row.get("calls", 0))


async def test_pages_asking_together_share_one_snapshot(switch: Switch, redis_server: str) -> None:
    await switch.apply_workspace({**DECL, "agents": AGENTS})
    cfg = await switch.config("acme")
    stats = Stats(redis_server, share_s=3600)  # "together", however slow this machine is
    try:
        before = await agent_reads(switch.redis)
        # five pages at once, then five more one after another
        together = await asyncio.gather(
            *(stats.snapshot(switch.store, cfg, "acme") for _ in range(5))
        )
        after = [await stats.snapshot(switch.store, cfg, "acme") for _ in range(5)]
        reads = await agent_reads(switch.redis) - before
    finally:
        await stats.close()
    assert len(together[0]["agents"]) == len(AGENTS)
    assert all(s is together[0] for s in [*together, *after])
    assert reads == len(AGENTS)  # once, not ten times


async def test_a_snapshot_still_being_made_is_shared_however_long_it_takes(
    switch: Switch, redis_server: str
) -> None:
    """A big workspace's snapshot may take longer than share_s: the pages asking meanwhile wait
    for it rather than each starting another read of every agent."""
    await switch.apply_workspace({**DECL, "agents": AGENTS})
    cfg = await switch.config("acme")
    stats = Stats(redis_server, share_s=0.0)  # made: at once too old to share
    try:
        before = await agent_reads(switch.redis)
        together = await asyncio.gather(
            *(stats.snapshot(switch.store, cfg, "acme") for _ in range(5))
        )
        reads = await agent_reads(switch.redis) - before
    finally:
        await stats.close()
    assert all(s is together[0] for s in together)
    assert reads == len(AGENTS)


async def test_a_snapshot_is_made_again_once_it_is_older_than_share_s(
    switch: Switch, redis_server: str
) -> None:
    await switch.apply_workspace({**DECL, "agents": AGENTS})
    cfg = await switch.config("acme")
    stats = Stats(redis_server, share_s=0.0)
    try:
        first = await stats.snapshot(switch.store, cfg, "acme")
        await switch.set_status("acme", "a0", "available")
        second = await stats.snapshot(switch.store, cfg, "acme")
    finally:
        await stats.close()
    assert second is not first
    statuses = {a["id"]: a["status"] for a in second["agents"]}
    assert statuses["a0"] == "available"


async def test_a_change_of_queues_is_never_served_from_before_it(
    switch: Switch, redis_server: str
) -> None:
    await switch.apply_workspace({**DECL, "agents": AGENTS})
    stats = Stats(redis_server, share_s=3600)
    try:
        old = await stats.snapshot(switch.store, await switch.config("acme"), "acme")
        vip = {"id": "vip", "name": "VIP", "target": "skills HAS 'support'", "sl_target_s": 20}
        await switch.apply_workspace({**DECL, "agents": AGENTS, "queues": [*DECL["queues"], vip]})
        new = await stats.snapshot(switch.store, await switch.config("acme"), "acme")
    finally:
        await stats.close()
    assert "vip" not in [q["id"] for q in old["queues"]]
    row = next(q for q in new["queues"] if q["id"] == "vip")
    assert (row["name"], row["sl_target_s"]) == ("VIP", 20)
