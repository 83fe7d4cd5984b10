"""The Store: concurrent transitions share one EVALSHA per workspace, each keeps its own result."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from router import store as store_mod
from router.errors import StoreUnavailable
from router.store import Store
from router.switch import Switch
from tests.switchboard_fixtures import DECL, agent


async def evalsha_calls(redis: Redis) -> int:
    stats = (await redis.info("commandstats")).get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0))


async def test_concurrent_transitions_share_one_call_and_keep_their_own_errors(
    switch: Switch, redis: Redis
) -> None:
    await switch.apply_workspace(
        {**DECL, "agents": [agent("ann", ["support"]), agent("bob", ["support"])]}
    )
    store: Store = switch.store
    # bob's agent hash becomes a string: his transition raises WRONGTYPE inside the batch
    await redis.delete("sb:{acme}:a:bob")
    await redis.set("sb:{acme}:a:bob", "not a hash")
    await redis.config_resetstat()
    batches = store.batches
    ann: object  # a result, or the exception the transition raised
    bob: object
    ann_again: object
    ann, bob, ann_again = await asyncio.gather(
        store.run("agent_status", "acme", "ann", "available", "1"),
        store.run("agent_status", "acme", "bob", "available", "1"),
        store.run("agent_status", "acme", "ann", "away", "0"),
        return_exceptions=True,
    )
    assert store.batches == batches + 1 and await evalsha_calls(redis) == 1
    assert isinstance(bob, StoreUnavailable) and "WRONGTYPE" in str(bob)
    # the others ran, in order, around the failed one
    assert isinstance(ann, dict) and ann["ok"] and isinstance(ann_again, dict)
    assert await redis.hget("sb:{acme}:a:ann", "st") == b"away"


async def test_large_batches_are_split(switch: Switch, redis: Redis) -> None:
    agents = [agent(f"a{i}", ["support"]) for i in range(store_mod.MAX_BATCH * 2 + 5)]
    await switch.apply_workspace({**DECL, "agents": agents})
    await redis.config_resetstat()
    results = await asyncio.gather(
        *(switch.store.run("agent_status", "acme", a["id"], "available", "1") for a in agents)
    )
    assert all(r["ok"] and r["status"] == "available" for r in results)
    assert await evalsha_calls(redis) == 3
    for a in agents:
        assert await redis.hget(f"sb:{{acme}}:a:{a['id']}", "st") == b"available"


async def test_unknown_transition_is_refused_before_redis(switch: Switch) -> None:
    with pytest.raises(ValueError, match="no transition script"):
        await switch.store.run("drop_everything", "acme")


async def test_flushed_script_is_reloaded(switch: Switch, redis: Redis) -> None:
    await switch.apply_workspace({**DECL, "agents": [agent("ann", ["support"])]})
    await redis.script_flush()
    res = await switch.store.run("agent_status", "acme", "ann", "available", "1")
    assert res["ok"]


async def test_unbatched_store_sends_each_call_alone(switch: Switch, redis: Redis) -> None:
    """The baseline the core bench measures batching against: one EVALSHA per transition."""
    await switch.apply_workspace({**DECL, "agents": [agent("ann", ["support"])]})
    switch.store.batching = False
    await redis.config_resetstat()
    results = await asyncio.gather(
        *(switch.store.run("agent_status", "acme", "ann", s, r) for s, r in [("away", "0")] * 3)
    )
    assert [r["status"] for r in results] == ["away"] * 3
    assert await evalsha_calls(redis) == 3


async def test_plain_commands_and_a_readers_own_connection(switch: Switch, redis: Redis) -> None:
    """Store.commands: replies in order, in one round trip; a command Redis refuses raises
    StoreUnavailable (what the outbox reader treats as Redis failing). A reader's own
    connection: a blocking read that times out is an empty reply, a refusal raises."""
    store: Store = switch.store
    await redis.hset("t:h", mapping={"a": "1", "b": "2"})
    await redis.set("t:s", "x")
    got = await store.commands(
        ("HMGET", "t:h", "a", "b"), ("GET", "t:s"), ("XACK", "t:x", "g", "1-0")
    )
    assert got == [[b"1", b"2"], b"x", 0]
    with pytest.raises(StoreUnavailable, match="WRONGTYPE"):
        await store.commands(("GET", "t:s"), ("HGETALL", "t:s"))
    assert await redis.get("t:s") == b"x"

    lane = store.own_connection()
    assert lane is not None
    try:
        await redis.xgroup_create("t:x", "g", id="0", mkstream=True)
        await redis.xadd("t:x", {"k": "v"})
        read = ("XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "BLOCK", 50, "STREAMS", "t:x", ">")
        first = await lane.call(*read, blocks_s=0.05)
        entries = next(iter(first.values())) if isinstance(first, dict) else first[0][1]
        assert [fields for _, fields in entries] == [[b"k", b"v"]]
        assert await lane.call(*read, blocks_s=0.05) is None  # nothing new within 50 ms
        with pytest.raises(StoreUnavailable, match="WRONGTYPE"):
            await lane.call("HGETALL", "t:s")
    finally:
        await lane.close()
