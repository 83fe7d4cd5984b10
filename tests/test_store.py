"""The Store: concurrent transitions share one EVALSHA per workspace, each keeps its own result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from router import store as store_mod
from router.errors import StoreUnavailable
from router.store import Store
from router.switch import Switch
from tests.switchboard_fixtures import DECL, agent
from tests.util import wait_for


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


async def test_a_connection_redis_closes_is_replaced(switch: Switch, redis: Redis) -> None:
    """Redis closing the store's connection (a restart, ``CLIENT KILL``, an idle timeout)
    while nothing is in flight costs nothing: the next transition opens a new one."""
    await switch.apply_workspace({**DECL, "agents": [agent("ann", ["support"])]})
    store: Store = switch.store
    await store.run("agent_status", "acme", "ann", "available", "1")
    killed = await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert killed >= 1
    res = await store.run("agent_status", "acme", "ann", "away", "0")
    assert res["ok"] and res["status"] == "away"
    assert await redis.hget("sb:{acme}:a:ann", "st") == b"away"


async def test_an_unanswered_batch_fails_at_its_deadline_and_the_next_one_works(
    redis: Redis, redis_server: str
) -> None:
    """Redis holding a batch past the store's deadline (here paused) fails it as
    StoreUnavailable (not acknowledged: the sender retries) instead of hanging; once Redis
    answers again, so does the store, on a new connection."""
    from router.store import connect

    sep = "&" if "?" in redis_server else "?"
    store = Store(connect(f"{redis_server}{sep}socket_timeout=0.3"))
    try:
        await store.load()
        await store.commands(("SET", "t:k", "1"))
        await redis.execute_command("CLIENT", "PAUSE", 800, "ALL")
        with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.3 s"):
            await store.commands(("GET", "t:k"))
        assert await redis.ping()  # answered once the pause is over
        assert await store.commands(("GET", "t:k")) == [b"1"]
    finally:
        await store.close()


async def test_a_cancelled_caller_leaves_the_replies_in_step(switch: Switch, redis: Redis) -> None:
    """A caller that gives up while its batch is in flight: its reply is still read and
    dropped, so the next caller gets its own reply, not the one before it."""
    await switch.apply_workspace({**DECL, "agents": [agent("ann", ["support"])]})
    store: Store = switch.store
    await store.run("agent_status", "acme", "ann", "away", "0")  # connected
    batches = store.batches
    await redis.execute_command("CLIENT", "PAUSE", 300, "ALL")
    first = asyncio.ensure_future(store.run("agent_status", "acme", "ann", "available", "1"))
    await wait_for(lambda: store.batches > batches, message="the first batch was not sent")
    first.cancel()
    second = await store.run("agent_status", "acme", "ann", "away", "0")
    assert first.cancelled()
    assert second["ok"] and second["status"] == "away"
    assert await store.commands(("HGET", "sb:{acme}:a:ann", "st")) == [b"away"]


def _batches_reach(store: Store, n: int) -> Callable[[], bool]:
    return lambda: store.batches >= n


async def test_calls_beyond_the_batches_in_flight_wait_to_join_one(
    switch: Switch, redis: Redis
) -> None:
    """At most eight batches go unanswered; calls made meanwhile are sent together, as one
    EVALSHA, when a reply comes, and each still gets its own result."""
    agents = [agent(f"a{i}", ["support"]) for i in range(20)]
    await switch.apply_workspace({**DECL, "agents": agents})
    store: Store = switch.store
    await store.run("agent_status", "acme", "a0", "away", "0")  # connected
    await redis.config_resetstat()
    await redis.execute_command("CLIENT", "PAUSE", 300, "ALL")
    batches = store.batches
    calls = []
    for i in range(8):  # one batch each: every call is flushed before the next is made
        calls.append(asyncio.ensure_future(store.run("agent_status", "acme", f"a{i}", "away", "0")))
        await wait_for(_batches_reach(store, batches + i + 1), message=f"batch {i} was not sent")
    calls += [
        asyncio.ensure_future(store.run("agent_status", "acme", f"a{i}", "away", "0"))
        for i in range(8, 20)
    ]
    results = await asyncio.gather(*calls)
    assert [r["status"] for r in results] == ["away"] * 20
    assert store.batches == batches + 9
    assert await evalsha_calls(redis) == 9


async def test_without_a_connection_to_take_over_the_store_keeps_to_redis_pys_path(
    redis: Redis, redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redis-py whose connection cannot be taken over (a future layout): batches, their
    NOSCRIPT reload and plain commands all go through redis-py's pool instead, and work."""
    from router import redis_pipe
    from router.store import connect

    async def unsupported(conn: object, deadline_s: float) -> object:
        raise redis_pipe.TakeoverUnsupported("no stream to take over")

    monkeypatch.setattr(store_mod, "open_pipe", unsupported)
    store = Store(connect(redis_server))
    try:
        await store.load()
        await redis.hset("sb:{acme}:a:ann", "st", "offline")
        assert await store.commands(("HGET", "sb:{acme}:a:ann", "st")) == [b"offline"]
        await redis.script_flush()
        replies = await asyncio.gather(
            *(store.commands(("HSET", "t:h", f"f{i}", i)) for i in range(3))
        )
        assert replies == [[1], [1], [1]] and await redis.hlen("t:h") == 3
        removed = await store.run("agent_remove", "acme", "nobody")  # the script reloaded
        assert removed["ok"] is False and store.batches == 1
    finally:
        await store.close()


class _TlsFront:
    """A TLS listener in front of the test Redis, as a managed Redis behind ``rediss://`` is:
    each connection is decrypted here and its bytes handed to Redis and back."""

    def __init__(self, redis_url: str, ca_file: str) -> None:
        import ssl

        import trustme

        ca = trustme.CA()
        ca.cert_pem.write_to_path(ca_file)
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(self.ctx)
        self.redis_url, self.ca_file = redis_url, ca_file
        self.server: asyncio.Server | None = None
        self.connections = 0

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ctx)
        port = self.server.sockets[0].getsockname()[1]
        return f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={self.ca_file}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from urllib.parse import urlparse

        self.connections += 1
        up_r, up_w = await asyncio.open_unix_connection(urlparse(self.redis_url).path)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))


async def _routes_over(url: str) -> tuple[bool, list[object]]:
    """Open a Store on ``url``; route a transition, a batch of them and plain commands."""
    from router.store import connect

    store = Store(connect(url))
    try:
        await store.load()
        first = await store.run("agent_status", "acme", "ann", "available", "1")
        together = await asyncio.gather(
            *(store.run("agent_status", "acme", "ann", s, r) for s, r in (("away", "0"),) * 5)
        )
        got = await store.commands(("HGET", "sb:{acme}:a:ann", "st"), ("PING",))
        return store._piped, [first["status"], *(t["status"] for t in together), *got]
    finally:
        await store.close()


async def test_over_tls_the_store_takes_over_the_encrypted_connection(
    switch: Switch, redis: Redis, redis_server: str, tmp_path: object
) -> None:
    """``rediss://`` with a verified certificate: redis-py makes the TLS handshake, the store
    takes over the encrypted transport (asyncio's and uvloop's, which the server runs on) and
    its batches and commands are answered through it."""
    import uvloop

    await switch.apply_workspace({**DECL, "agents": [agent("ann", ["support"])]})
    front = _TlsFront(redis_server, f"{tmp_path}/ca.pem")
    async with front as url:
        on_asyncio = await _routes_over(url)

        def on_uvloop() -> tuple[bool, list[object]]:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(_routes_over(url))

        on_uv = await asyncio.to_thread(on_uvloop)
    expected = (True, ["available", *["away"] * 5, b"away", b"PONG"])
    assert on_asyncio == expected
    assert on_uv == expected
    assert front.connections >= 2
