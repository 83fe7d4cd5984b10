"""Switchboard on a real Redis Cluster: three redis-server processes in cluster mode, started by
the module (the suite's own binary, see ``find_redis_server``), with the 16384 slots split
between them. Two workspaces whose hash tags live on different nodes route end to end through
the core; a real ``switchboard serve --redis-url redis+cluster://…`` offers a bridge event to an
agent console over WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

from router import keys, queries
from router.embedded import EmbeddedRedisError, find_redis_server
from router.stats import Stats
from router.store import Store, connect
from router.switch import Switch
from tests.switchboard_fixtures import DECL, Inbox, agent, chat
from tests.util import free_port, wait_for
from tests.ws_client import Stack, event, team_workspace

NODES = 3
SLOTS = 16384
DEADLINE = 30.0


@dataclass
class Cluster:
    ports: list[int]
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def owner(self, ws: str) -> int:
        """Index of the node serving the workspace's hash slot."""
        slot: int = key_slot(keys.prefix(ws).encode())
        return slot * NODES // SLOTS


def _slot_ranges() -> list[range]:
    """The slots of each node: node i serves [i*N/3, (i+1)*N/3), as ``Cluster.owner`` assumes."""
    return [range(i * SLOTS // NODES, (i + 1) * SLOTS // NODES) for i in range(NODES)]


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000, fixed in Redis 6.2) is free as well."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise AssertionError("no free port pair for a cluster node")


def _spawn(root: Path) -> Cluster:
    """Start the cluster's redis-server processes (not yet a cluster: no slots, no peers)."""
    try:
        binary = find_redis_server()
    except EmbeddedRedisError as e:
        pytest.skip(f"no redis-server: {e}")
    cluster = Cluster([], [], [])
    try:
        for i in range(NODES):
            _spawn_node(cluster, binary, root / f"n{i}")
    except BaseException:
        _stop(cluster)
        raise
    return cluster


def _spawn_node(cluster: Cluster, binary: str, d: Path) -> None:
    port = _cluster_port()
    d.mkdir()
    log = d / "redis.log"
    args = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(d),
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(d / "nodes.conf"),
        "--cluster-node-timeout", "5000",
        "--appendonly", "no",
        "--save", "",
        "--daemonize", "no",
        "--logfile", "",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    cluster.ports.append(port)
    cluster.procs.append(proc)
    cluster.logs.append(log)


async def _start_cluster(root: Path) -> Cluster:
    cluster = _spawn(root)
    clients = [Redis(host="127.0.0.1", port=p) for p in cluster.ports]
    try:

        async def all_up() -> bool:
            for proc, log in zip(cluster.procs, cluster.logs, strict=True):
                if proc.poll() is not None:
                    text = log.read_text(errors="replace")[-800:]
                    if "already in use" in text:  # a port taken meanwhile: not the binary's fault
                        raise AssertionError(f"cluster node could not listen: {text}")
                    pytest.skip(f"redis-server cannot run in cluster mode: {text}")
            try:
                for c in clients:
                    await c.ping()
            except (RedisError, OSError):
                return False
            return True

        await wait_for(all_up, DEADLINE, interval=0.05, message="cluster nodes did not start")
        for c, slots in zip(clients, _slot_ranges(), strict=True):
            await c.execute_command("CLUSTER ADDSLOTS", *slots)
        for p in cluster.ports[1:]:
            await clients[0].execute_command("CLUSTER MEET", "127.0.0.1", p)

        async def ok() -> bool:
            for c in clients:
                info = await c.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
                state, known = info.get("cluster_state"), info.get("cluster_known_nodes")
                if state != "ok" or int(known or 0) != NODES:
                    return False
            return True

        await wait_for(ok, DEADLINE, interval=0.05, message="cluster_state never became ok")
    except BaseException:
        _stop(cluster)
        raise
    finally:
        for c in clients:
            await c.aclose()
    return cluster


def _stop(cluster: Cluster) -> None:
    for proc in cluster.procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in cluster.procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    c = await _start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        _stop(c)


def _workspace_on(cluster: Cluster, node: int, stem: str) -> str:
    """A workspace id (``stem`` plus a number) whose hash slot is served by ``node``."""
    for i in range(1000):
        ws = f"{stem}{i}"
        if cluster.owner(ws) == node:
            return ws
    raise AssertionError("no workspace id found")


async def test_cluster_is_three_primaries(cluster: Cluster) -> None:
    client = connect(cluster.url)
    assert isinstance(client, RedisCluster)
    try:
        await client.initialize()
        assert len(client.get_primaries()) == NODES
        ws_a = _workspace_on(cluster, 0, "ws")
        node = client.get_node_from_key(keys.prefix(ws_a))
        assert node is not None and node.port == cluster.ports[0]
    finally:
        await client.aclose()


async def test_core_routes_two_workspaces_on_different_nodes(cluster: Cluster) -> None:
    ws_a, ws_b = _workspace_on(cluster, 1, "east"), _workspace_on(cluster, 2, "west")
    inbox = Inbox()
    client = connect(cluster.url)
    store = Store(client)
    await store.load()
    sw = Switch(store, notify=inbox)
    try:
        for ws in (ws_a, ws_b):
            decl = {**DECL, "id": ws, "agents": [agent(f"ann-{ws}", ["support"])]}
            await sw.apply_workspace(decl)
        assert {ws_a, ws_b} <= set(await sw.workspaces())
        for ws in (ws_a, ws_b):
            ann = f"ann-{ws}"
            await sw.set_status(ws, ann, "available")
            r = await sw.ingest(ws, chat(f"e-{ws}", email=f"{ws}@example.com"))
            assert r.action == "created" and not r.duplicate
            offer = inbox.last_offer(ann)
            assert offer["case"]["id"] == r.case and offer["case"]["queue"] == "support"
            await sw.accept(ws, ann, offer["offer"])
            assert await client.hget(keys.case(ws, r.case), "st") == b"assigned"
            await sw.complete(ws, ann, r.case, "resolved", "done")
            assert await client.hget(keys.case(ws, r.case), "st") == b"completed"
            # plain commands (a bridge's call connects) go through the cluster's pipeline
            st, (callback,) = await store.commands(
                ("HGET", keys.case(ws, r.case), "st"),
                ("HMGET", keys.case(ws, r.case), "callback"),
            )
            assert (st, callback) == (b"completed", None)
            # a duplicate is recognized (the dedupe key lives in the workspace's slot too)
            again = await sw.ingest(ws, chat(f"e-{ws}", email=f"{ws}@example.com"))
            assert again.duplicate and again.case == r.case
            # read models: pipelines of one workspace's keys, a blocking stream read for stats
            profile = await queries.customer(client, ws, r.customer)
            assert profile is not None and profile["cases"][-1]["id"] == r.case
            assert [a["id"] for a in await queries.agents(client, ws)] == [ann]
            stats = Stats(cluster.url)
            try:
                snap = await stats.snapshot(store, await sw.config(ws), ws)
                assert {q["id"]: q["waiting"] for q in snap["queues"]}["support"] == 0
            finally:
                await stats.close()
        # each workspace's state really is on its own shard
        for ws, idx in ((ws_a, 1), (ws_b, 2)):
            shard = Redis(host="127.0.0.1", port=cluster.ports[idx])
            try:
                assert await shard.exists(keys.settings(ws), keys.agent(ws, f"ann-{ws}")) == 2
            finally:
                await shard.aclose()
        # the timer loop and the node heartbeat (global keys) work on the cluster too
        for ws in (ws_a, ws_b):
            await sw.run_timers(ws)
        assert await sw.heartbeat("cluster-test-node") == []
        assert store.own_connection() is None  # readers keep reading through the cluster client
    finally:
        await store.close()


async def test_scripts_are_reloaded_on_noscript(cluster: Cluster) -> None:
    """After SCRIPT FLUSH on every primary, the next call reloads the scripts and succeeds."""
    ws = _workspace_on(cluster, 0, "flush")
    client = connect(cluster.url)
    store = Store(client)
    await store.load()
    sw = Switch(store, notify=Inbox())
    try:
        await sw.apply_workspace({**DECL, "id": ws, "agents": [agent("ann", ["support"])]})
        for port in cluster.ports:
            node = Redis(host="127.0.0.1", port=port)
            await node.script_flush()
            await node.aclose()
        assert (await sw.set_status(ws, "ann", "available")).get("ok", True)
        r = await sw.ingest(ws, chat("e-flush"))
        assert r.action == "created"
    finally:
        await store.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cluster_stack(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    decl = team_workspace({"east": 1})
    st = await Stack.start(tmp_path_factory.mktemp("cluster-stack"), decl, redis_url=cluster.url)
    try:
        yield st
    finally:
        await st.stop()
    # SIGTERM drained and stopped every node (no background loop stuck on the cluster client)
    for n in st.nodes:
        assert n.proc.returncode in (0, -signal.SIGTERM), n.log()[-3000:]
        assert "Application shutdown complete" in n.log(), n.log()[-3000:]


async def test_server_on_cluster_offers_a_bridge_event(cluster_stack: Stack) -> None:
    st = cluster_stack
    r = await st.http.get(f"{st.nodes[0].url}/readyz")
    assert r.status_code == 200 and r.text == "ready"
    bridge = await st.bridge()
    console, hello = await st.agent("east1", status="available")
    assert hello["workspace"] == "acme"
    ack = await bridge.ok("event", **event("east"))
    offer = await console.offer_for(ack["case"])
    await console.ok("offer.accept", offer=offer["offer"])
    assert (await st.case(ack["case"]))["st"] == "assigned"
    # a reply leaves through the workspace outbox (a stream consumer group) to the bridge
    await console.ok("case.reply", case=ack["case"], text="hi from the cluster")
    delivered = await bridge.expect("deliver", case=ack["case"])
    assert delivered["text"] == "hi from the cluster"
    await bridge.ok("delivered", id=delivered["id"])
    await console.ok("case.complete", case=ack["case"], disposition="resolved")
    assert (await st.case(ack["case"]))["st"] == "completed"


async def test_server_on_cluster_relays_pushes_between_nodes(cluster_stack: Stack) -> None:
    """A second node: an offer made on node 1 reaches a console on node 0 through pub/sub."""
    st = cluster_stack
    if len(st.nodes) < 2:
        await st.add_node()
    console, _ = await st.agent("support1", node=0, status="available")
    bridge = await st.bridge(node=1)
    try:
        ack = await bridge.ok("event", **event("support"))
        offer = await console.offer_for(ack["case"])
        assert offer["case"]["id"] == ack["case"]
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bridge.close(), 2)
