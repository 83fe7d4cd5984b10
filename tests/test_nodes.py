"""Several ``switchboard serve`` nodes on one Redis behave as one; draining and crashing nodes
lose nothing.

Node A (index 0) has a long reconnect grace and node B (index 1) a short one: the grace is
armed by the node where a console disconnects, so "reconnect within the grace" is tested by
leaving A, and "the grace runs out" by leaving B — both without racing a clock. Tests that
stop or kill a node start a node of their own.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from websockets.exceptions import ConnectionClosed

from router import keys
from router.app import create_app, drain
from router.config import BridgeKey, Settings
from router.store import Store, connect
from router.switch import Switch
from tests.server import BRIDGE_KEY
from tests.util import free_port, offer_state, wait_for
from tests.ws_client import (
    CHAT_ONLY_KEY,
    JSON,
    Stack,
    WsClient,
    bridge_event,
    connect_agent,
    connect_bridge,
    connect_chat,
    event,
    team_workspace,
    uid,
)

A, B = 0, 1
LONG_GRACE = {"SWITCHBOARD_GRACE_S": "30"}
SHORT_GRACE = {
    "SWITCHBOARD_GRACE_S": "0.5",
    "SWITCHBOARD_NODE_DEAD_S": "1",
    "SWITCHBOARD_VISITOR_GRACE_S": "1",
}
TEAMS = {
    "cross": 1,
    "dual": 1,
    "keep": 1,
    "lapse": 2,
    "ghost": 2,
    "relay": 1,
    "drain": 1,
    "orphan": 1,
    "kill": 0,
    "parked": 0,  # a queue nobody serves: its cases just wait
    "revive": 1,
}
#: edits the workspace through one node and reads it through the other
ADMIN = {"id": "root", "name": "Root", "password": "pw", "role": "admin", "capacity": {}}
#: takes every case the crash test makes
KILLER = {
    "id": "kill1",
    "name": "Kill 1",
    "password": "pw",
    "attributes": {"skills": ["kill"]},
    "capacity": {"email": 100},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    st = await Stack.start(
        tmp_path_factory.mktemp("nodes"),
        team_workspace(TEAMS, extra_agents=[KILLER, ADMIN]),
        nodes=[LONG_GRACE, SHORT_GRACE],
    )
    try:
        yield st
    finally:
        await st.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bridge(stack: Stack) -> WsClient:
    """The all-channels bridge, connected to node A."""
    return await stack.bridge(node=A)


# -- one system ------------------------------------------------------------------------------------


async def test_an_admin_reads_through_one_node_what_it_wrote_through_the_other(
    stack: Stack,
) -> None:
    http, a, b = stack.http, stack.nodes[A].url, stack.nodes[B].url
    login = await http.post(
        f"{a}/api/login", json={"workspace": "acme", "agent": "root", "password": "pw"}
    )
    auth = {"Authorization": f"Bearer {login.json()['token']}"}
    for _ in range(5):  # each node caches the workspace; the timer loop alone refreshes in ~1 s
        queue = uid("q")
        assert (await http.put(f"{a}/api/queues/{queue}", headers=auth, json={})).status_code == 201
        listed = (await http.get(f"{b}/api/queues", headers=auth)).json()["queues"]
        assert queue in {q["id"] for q in listed}
        assert (await http.delete(f"{b}/api/queues/{queue}", headers=auth)).status_code == 204
        listed = (await http.get(f"{a}/api/queues", headers=auth)).json()["queues"]
        assert queue not in {q["id"] for q in listed}


async def test_cases_replies_and_deliveries_cross_nodes(stack: Stack, bridge: WsClient) -> None:
    # ingested on A, offered to a console on B
    console, _ = await stack.agent("cross1", node=B, status="available")
    thread, email = uid("t"), f"{uid()}@example.com"
    ack = await bridge.ok("event", **event("cross", thread=thread, email=email))
    offer = await console.offer_for(ack["case"])
    await console.ok("offer.accept", offer=offer["offer"])
    # replied on B, delivered by the bridge on A
    sent = await console.ok("case.reply", case=ack["case"], text="from node B")
    deliver = await bridge.expect("deliver", case=ack["case"])
    assert deliver["message"] == sent["entry"]["id"] and deliver["text"] == "from node B"
    await bridge.ok("delivered", id=deliver["id"])
    # the customer writes again through A: the console on B hears it
    await bridge.ok("event", **event("cross", thread=thread, email=email, text="thanks"))
    assert (await console.expect("case.message", case=ack["case"]))["entry"]["text"] == "thanks"

    # a chat widget on B, the agent on A: the reply reaches the widget across nodes
    agent, _ = await stack.agent("support1", node=A, status="available")
    widget, _ = await stack.chat(node=B)
    case = (await widget.ok("message", text="hi from B"))["case"]
    await agent.ok("offer.accept", offer=(await agent.offer_for(case))["offer"])
    await agent.ok("case.reply", case=case, text="hello from A")
    assert (await widget.expect("message", dir="out"))["text"] == "hello from A"


async def test_an_agents_pushes_reach_their_console_and_page_whatever_the_node(
    stack: Stack, bridge: WsClient
) -> None:
    """One console per agent: one opened on node B closes the one on node A (4000, told why),
    and pushes made on node A reach it there; a supervisor's page (client=supervisor) of the
    same agent is neither closed nor closes anyone, and gets the pushes too."""
    on_a, _ = await stack.agent("dual1", node=A, status="available")
    page, _ = await stack.agent("dual1", node=A, client="supervisor")
    on_b, _ = await stack.agent("dual1", node=B)
    assert (await on_a.expect("session.replaced"))["type"] == "session.replaced"
    assert await on_a.closed() == 4000
    ack = await bridge.ok("event", **event("dual"))  # ingested, and offered, on node A
    offers = [await c.offer_for(ack["case"]) for c in (on_b, page)]
    assert offers[0] == offers[1]
    await on_b.ok("offer.accept", offer=offers[0]["offer"])
    await page.ok("ping")  # still open


async def test_reconnect_to_another_node_within_the_grace_keeps_everything(
    stack: Stack, bridge: WsClient
) -> None:
    console, _ = await stack.agent("keep1", node=A, status="available")
    first = await bridge.ok("event", **event("keep"))
    accepted = await console.offer_for(first["case"])
    await console.ok("offer.accept", offer=accepted["offer"])
    second = await bridge.ok("event", **event("keep"))
    pending = await console.offer_for(second["case"])
    await console.close()  # leaves node A: a 30 s grace

    again, hello = await stack.agent("keep1", node=B)
    assert hello["agent"]["status"] == "available"
    assert [c["case"]["id"] for c in hello["cases"]] == [first["case"]]
    assert [o["offer"] for o in hello["offers"]] == [pending["offer"]]
    assert hello["offers"][0]["deadline"] == pending["deadline"]
    await again.ok("offer.accept", offer=pending["offer"])
    await again.ok("case.reply", case=first["case"], text="still here")


async def test_after_the_grace_pending_offers_are_rescinded_and_requeued(
    stack: Stack, bridge: WsClient
) -> None:
    leaving, _ = await stack.agent("lapse1", node=B, status="available")  # idle longest
    staying, _ = await stack.agent("lapse2", node=A, status="available")
    ack = await bridge.ok("event", **event("lapse"))
    offer = await leaving.offer_for(ack["case"])
    await leaving.close()  # leaves node B: a 0.5 s grace

    requeued = await staying.offer_for(ack["case"])
    assert requeued["offer"] != offer["offer"]
    assert await offer_state(stack.redis, "acme", offer["offer"]) == "rescinded"
    _, hello = await stack.agent("lapse1", node=A)
    assert hello["agent"]["status"] == "offline" and hello["offers"] == []


async def test_after_the_grace_the_case_goes_to_a_teammate_who_came_later(
    stack: Stack, bridge: WsClient
) -> None:
    leaving, _ = await stack.agent("ghost1", node=B, status="available")
    ack = await bridge.ok("event", **event("ghost"))
    offer = await leaving.offer_for(ack["case"])
    await stack.agent("ghost2", node=A, status="available")  # idle since now
    await leaving.close()

    async def rescinded() -> bool:
        st = await offer_state(stack.redis, "acme", offer["offer"])
        return bool(st != "pending")

    await wait_for(rescinded, 10)
    case = await stack.case(ack["case"])
    assert (case["st"], case["oagent"]) == ("offered", "ghost2")


async def test_bridge_deliveries_are_resent_to_its_next_connection_on_any_node(
    stack: Stack, bridge: WsClient
) -> None:
    relay = await stack.bridge(node=A, key=CHAT_ONLY_KEY)
    consoles = [
        (await stack.agent("relay1", node=A))[0],
        (await stack.agent("relay1", node=B, client="supervisor"))[0],  # a second connection
    ]
    await consoles[0].ok("status", status="available")
    ack = await relay.ok("event", **event("relay"))  # its replies go out through this bridge
    await consoles[0].ok("offer.accept", offer=(await consoles[0].offer_for(ack["case"]))["offer"])
    # more replies than one page of the pending list (100), from both nodes
    sent = []
    for i in range(130):
        reply = await consoles[i % 2].ok("case.reply", case=ack["case"], text=f"r{i}")
        sent.append(reply["entry"]["id"])
    first = [await relay.expect("deliver", case=ack["case"]) for _ in sent]
    assert [d["message"] for d in first] == sent
    await relay.close()  # nothing acknowledged

    again = stack.track(await connect_bridge(stack.nodes[B].ws_url, CHAT_ONLY_KEY))
    resent = [await again.expect("deliver", case=ack["case"]) for _ in sent]
    assert [d["id"] for d in resent] == [d["id"] for d in first]
    for d in resent:
        await again.ok("delivered", id=d["id"])
    await again.close()

    last = stack.track(await connect_bridge(stack.nodes[A].ws_url, CHAT_ONLY_KEY))
    await last.ok("ping")
    final = await consoles[1].ok("case.reply", case=ack["case"], text="last")
    nxt = await last.expect("deliver", case=ack["case"])
    assert nxt["message"] == final["entry"]["id"]  # nothing acknowledged came back


# -- drain and crash -----------------------------------------------------------------------------


def _events(team: str, n: int, **kw: Any) -> list[dict[str, Any]]:
    return [event(team, channel="email", **kw) for _ in range(n)]


async def _pump(client: WsClient, evs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Send every event without waiting; return the acks that came back, by event id, until
    the connection closes."""
    refs: dict[Any, str] = {}
    acks: dict[str, dict[str, Any]] = {}
    try:
        for ev in evs:
            refs[await client.send("event", **ev)] = ev["id"]
        while len(acks) < len(evs):
            frame = await client.recv()
            if frame["type"] == "ack" and frame.get("ref") in refs:
                acks[refs[frame["ref"]]] = frame
    except ConnectionClosed:
        pass
    return acks


async def _each_once(stack: Stack, acks: dict[str, dict[str, Any]]) -> None:
    """Every event is in Redis exactly once: one customer, one case, one timeline entry."""
    pipe = stack.redis.pipeline(transaction=False)
    for ack in acks.values():
        pipe.llen(keys.customer_cases("acme", ack["customer"]))
        pipe.llen(keys.customer_timeline("acme", ack["customer"]))
    assert set(await pipe.execute()) == {1}
    assert len({a["case"] for a in acks.values()}) == len(acks)


async def test_sigterm_drains_and_loses_or_duplicates_nothing(
    stack: Stack, bridge: WsClient
) -> None:
    node = await stack.add_node(LONG_GRACE)
    c = len(stack.nodes) - 1
    console, _ = await stack.agent("drain1", node=c, status="available")
    held = await bridge.ok("event", **event("drain"))
    await console.ok("offer.accept", offer=(await console.offer_for(held["case"]))["offer"])
    waiting = await bridge.ok("event", **event("drain"))
    pending = await console.offer_for(waiting["case"])

    evs = _events("parked", 300)  # they just queue
    sender = stack.track(await connect_bridge(node.ws_url, BRIDGE_KEY))
    pump = asyncio.create_task(_pump(sender, evs))
    await wait_for(lambda: len([f for f in sender.seen if f["type"] == "ack"]) >= 20, 10)
    node.proc.send_signal(signal.SIGTERM)
    acked = await pump
    assert await console.closed() == 1012
    assert await sender.closed() == 1012
    # uvicorn re-raises the signal once it has shut down cleanly
    assert await asyncio.to_thread(node.proc.wait, 15) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in node.log()

    # the bridge retries what was not acknowledged, on another node
    retry = stack.track(await connect_bridge(stack.nodes[B].ws_url, BRIDGE_KEY))
    missing = [ev for ev in evs if ev["id"] not in acked]
    acked.update(await _pump(retry, missing))
    assert len(acked) == len(evs)
    await _each_once(stack, acked)

    _, hello = await stack.agent("drain1", node=B)
    assert [x["case"]["id"] for x in hello["cases"]] == [held["case"]]
    assert [x["offer"] for x in hello["offers"]] == [pending["offer"]]


async def test_sigterm_tells_consoles_to_reconnect(stack: Stack) -> None:
    node = await stack.add_node(LONG_GRACE)
    console, _ = await stack.agent("drain1", node=len(stack.nodes) - 1)
    node.proc.send_signal(signal.SIGTERM)
    code = await console.closed()
    await asyncio.to_thread(node.proc.wait, 15)
    assert code == 1012
    assert console.pending("drain") == [{"type": "drain", "message": "server restarting"}]


async def test_drain_refuses_new_work_and_closes_consoles_1012(
    stack: Stack, tmp_path: Path
) -> None:
    """``drain()`` itself, on an in-process node (the SIGTERM path never reaches it yet)."""
    port = free_port()
    settings = Settings(
        port=port,
        redis_url=stack.url,
        secret="test-secret",
        data_dir=str(tmp_path),
        allowed_origins=(f"http://127.0.0.1:{port}",),
        log_json=False,
        bridge_keys=(BridgeKey("test-bridge", "acme", frozenset({"chat", "email"}), BRIDGE_KEY),),
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app, port=port, ws="websockets-sansio", ws_per_message_deflate=False, log_config=None
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or serving.done(), 20)
        base, url = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
        assert (await stack.http.get(f"{url}/readyz")).status_code == 200
        token = await stack.ws_token("drain1")
        console = stack.track(await connect_agent(base, token))
        await console.expect("hello")
        sender = stack.track(await connect_bridge(base, BRIDGE_KEY))

        await drain(app.state.ctx)
        assert await console.closed() == 1012
        assert console.pending("drain") == [{"type": "drain", "message": "server restarting"}]
        ready = await stack.http.get(f"{url}/readyz")
        assert (ready.status_code, ready.text) == (503, "draining")
        for late in (
            await connect_agent(base, token),
            await connect_bridge(base, BRIDGE_KEY),
            await connect_chat(base, workspace="acme", codec=JSON),
        ):
            assert await stack.track(late).closed() == 1012
        # work already in flight on an open bridge connection is still answered
        assert (await sender.ok("event", **event("drain")))["action"] == "created"
    finally:
        server.should_exit = True
        await serving


async def test_kill_9_loses_no_acknowledged_case(stack: Stack, bridge: WsClient) -> None:
    node = await stack.add_node(SHORT_GRACE)
    evs = _events("kill", 60)
    sender = stack.track(await connect_bridge(node.ws_url, BRIDGE_KEY))
    pump = asyncio.create_task(_pump(sender, evs))
    await wait_for(lambda: len([f for f in sender.seen if f["type"] == "ack"]) >= 15, 10)
    node.proc.kill()
    acked = await pump
    await asyncio.to_thread(node.proc.wait, 15)
    assert acked, "nothing was acknowledged before the kill"
    for eid, ack in acked.items():  # everything acknowledged is still there
        assert await stack.redis.exists(keys.dedupe("acme", bridge_event(eid)))
        assert (await stack.case(ack["case"]))["st"] == "queued"

    retry = stack.track(await connect_bridge(stack.nodes[A].ws_url, BRIDGE_KEY))
    again = await _pump(retry, evs)  # a bridge resends what it is unsure of: all of it
    assert all(again[eid]["case"] == ack["case"] for eid, ack in acked.items())
    assert all(again[eid]["duplicate"] for eid in acked)
    await _each_once(stack, again)

    console, _ = await stack.agent("kill1", node=B, status="available")
    offered = {(await console.wait(lambda f: f["type"] == "offer"))["case"]["id"] for _ in evs}
    assert offered == {a["case"] for a in again.values()}


async def test_kill_9_of_the_consoles_node_still_ends_its_grace(
    stack: Stack, bridge: WsClient
) -> None:
    node = await stack.add_node(SHORT_GRACE)
    console, _ = await stack.agent("orphan1", node=len(stack.nodes) - 1, status="available")
    ack = await bridge.ok("event", **event("orphan"))
    offer = await console.offer_for(ack["case"])
    node.proc.kill()
    assert await console.closed() == 1006
    await asyncio.to_thread(node.proc.wait, 15)

    async def rescinded() -> bool:
        st = await offer_state(stack.redis, "acme", offer["offer"])
        return bool(st == "rescinded")

    await wait_for(rescinded, 15, interval=0.05)


# -- chat visitors whose node went ------------------------------------------------------------


async def _held_chat(stack: Stack, node: int) -> tuple[WsClient, WsClient, str]:
    """support1's console on B (the node that reaps the others), available, holding a chat
    whose widget is on ``node``."""
    agent, _ = await stack.agent("support1", node=B, status="available")
    widget, _ = await stack.chat(node=node)
    case = (await widget.ok("message", text="are you there?"))["case"]
    await agent.ok("offer.accept", offer=(await agent.offer_for(case))["offer"])
    return agent, widget, case


async def _widgets(stack: Stack, case: str) -> int:
    return int((await stack.case(case)).get("wv") or 0)


async def test_a_visitor_whose_widget_node_was_killed_is_still_said_to_have_left(
    stack: Stack,
) -> None:
    node = await stack.add_node(SHORT_GRACE)
    agent, widget, case = await _held_chat(stack, len(stack.nodes) - 1)
    assert await _widgets(stack, case) == 1
    node.proc.kill()  # the widget's connection dies with it, and nobody counts it out there
    await widget.closed()
    await asyncio.to_thread(node.proc.wait, 15)
    # node B finds it dead (1 s), counts its widgets out, and the grace (1 s) runs from there
    left = await agent.expect("case.updated", case=case, event="visitor.left", within=20)
    assert left["visitor_left"] > 0
    assert await _widgets(stack, case) == 0
    counted = [
        f.decode()
        async for k in stack.redis.scan_iter(match=keys.node_widgets("acme", "*"))
        for f in await stack.redis.hkeys(k)
    ]
    assert not [f for f in counted if f.startswith(f"{case}|")], counted  # no node counts it
    await agent.ok("case.complete", case=case, disposition="resolved")


async def test_a_visitor_who_left_just_before_their_node_stopped_is_still_said_to_have_left(
    stack: Stack,
) -> None:
    node = await stack.add_node({**LONG_GRACE, "SWITCHBOARD_VISITOR_GRACE_S": "2"})
    agent, widget, case = await _held_chat(stack, len(stack.nodes) - 1)
    await widget.close()  # the tab closed: the grace starts on that node...

    async def counted_out() -> bool:
        return await _widgets(stack, case) == 0

    await wait_for(counted_out, message="the widget's close was not counted")
    node.proc.send_signal(signal.SIGTERM)  # ...which stops before the grace is over
    await asyncio.to_thread(node.proc.wait, 15)
    await agent.expect("case.updated", case=case, event="visitor.left", within=20)
    await agent.ok("case.complete", case=case, disposition="resolved")


async def test_a_node_taken_for_dead_while_alive_says_again_what_it_holds(
    stack: Stack, bridge: WsClient
) -> None:
    """A stall longer than SWITCHBOARD_NODE_DEAD_S: another node reaps node A's consoles (as
    it would a killed node's). At its next beat A finds itself gone and registers them again,
    so offers are relayed to them instead of going nowhere."""
    console, _ = await stack.agent("revive1", node=A, status="available")
    conns = keys.agent_conns("acme", "revive1")
    [node_a] = [n.decode() for n in await stack.redis.hkeys(conns)]
    agent, widget, chat = await _held_chat(stack, A)  # and a chat visitor on A
    # what the reaper does: A off the living, its consoles and widgets counted out
    store = Store(connect(stack.url))
    await store.load()
    try:
        await stack.redis.zrem(keys.NODES, node_a)
        sw = Switch(store)
        await sw.presence("acme", "revive1", "reap", node_a)
        await sw.chat_presence("acme", "reap", node_a, 30)
    finally:
        await store.close()
    assert not await stack.redis.hexists(conns, node_a)
    assert await _widgets(stack, chat) == 0

    async def restored() -> bool:
        return bool(await stack.redis.hget(conns, node_a) == b"1")

    await wait_for(restored, 10, message="node A did not say again what it holds")
    assert await stack.redis.sismember(keys.node_agents("acme", node_a), "revive1")
    ack = await bridge.ok("event", **event("revive"))
    await console.ok("offer.accept", offer=(await console.offer_for(ack["case"]))["offer"])
    assert await _widgets(stack, chat) == 1  # the visitor is still there
    await widget.close()  # and when they do leave, that is counted as before

    async def counted_out() -> bool:
        return await _widgets(stack, chat) == 0

    await wait_for(counted_out, message="the widget's close was not counted")
    held = await stack.redis.hkeys(keys.node_widgets("acme", node_a))
    assert not [f for f in held if f.decode().startswith(f"{chat}|")], held
    await agent.ok("case.complete", case=chat, disposition="resolved")
