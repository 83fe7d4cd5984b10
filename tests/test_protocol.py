"""The WebSocket protocol (docs/protocol.md), frame by frame, over real sockets against a real
``switchboard serve`` process and a real Redis.

Every team of agents has its own queue (see ``team_workspace``), so tests sharing the module's
server never route to each other's agents; ids are fresh per test.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from router import keys
from router.chat_ws import identity_hash
from tests.server import CHAT_IDENTITY_SECRET
from tests.util import offer_state, wait_for
from tests.ws_client import (
    CHAT_ONLY_KEY,
    JSON,
    MSGPACK,
    OTHER_CHAT_KEY,
    Stack,
    WsClient,
    bridge_event,
    connect_agent,
    event,
    open_ws,
    team_workspace,
    uid,
)

#: team -> number of agents (see team_workspace)
TEAMS = {
    **dict.fromkeys(["kinds", "offer", "accept", "reply", "xferb", "wrap"], 1),
    **dict.fromkeys(["follow", "hist", "move", "movex", "voice", "pipe", "dup", "codec"], 1),
    "reopen": 1,
    "takeback": 2,
    "recall": 1,
    "upgrade": 1,
    "undeliv": 1,
    "skip": 1,
    "fulist": 2,
    "crm": 1,
    "claims": 1,  # its agent never connects: cases wait
    "handon": 1,
    "merge": 1,
    "mergedel": 1,
    "hello": 2,
    "rescind": 1,
    "leave": 1,
    "reject": 2,
    "xfer": 2,
}
BOSS = {
    "id": "boss",
    "name": "Boss",
    "password": "pw",
    "role": "supervisor",
    "attributes": {"skills": []},
    "capacity": {"chat": 0},
}
ADMIN = {
    "id": "admin",
    "name": "Admin",
    "password": "pw",
    "role": "admin",
    "attributes": {"skills": []},
    "capacity": {"chat": 0},
}
#: a second workspace whose offers time out fast and whose agents go away after 2 misses
BRISK = {
    "id": "brisk",
    "queues": [{"id": "support"}],
    "channels": {"chat": {"offer_timeout_s": 0.3}},
    "routing": {"max_missed_offers": 2},
    "agents": [{"id": "bea", "name": "Bea", "password": "pw", "capacity": {"chat": 5}}],
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    decl = team_workspace(TEAMS, extra_agents=[BOSS, ADMIN])
    st = await Stack.start(tmp_path_factory.mktemp("protocol"), decl)
    await st.apply_workspace(BRISK)
    try:
        yield st
    finally:
        await st.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bridge(stack: Stack) -> WsClient:
    """The module's one connection of the all-channels bridge: it receives every delivery."""
    return await stack.bridge()


async def offered(
    stack: Stack, bridge: WsClient, agent: str, team: str, **kw: Any
) -> tuple[WsClient, dict[str, Any], dict[str, Any]]:
    """``agent`` connected and available; an event for ``team`` acked; the offer it got."""
    console, _ = await stack.agent(agent, status="available")
    ack = await bridge.ok("event", **event(team, **kw))
    return console, await console.offer_for(ack["case"]), ack


# -- endpoints and sign-in ------------------------------------------------------------------------


async def test_password_guessing_is_slowed_down_not_locked_out(stack: Stack) -> None:
    """Five wrong passwords for one agent: then each attempt must wait (429 login.throttled,
    Retry-After), even with the right password; once the wait is over the right one works and
    clears the count. Another agent is not held up."""
    http, url = stack.http, stack.nodes[0].url

    async def login(agent: str, password: str) -> Any:
        body = {"workspace": "acme", "agent": agent, "password": password}
        return await http.post(f"{url}/api/login", json=body)

    try:
        for _ in range(5):
            assert (await login("hello2", "guess")).status_code == 401
        held = await login("hello2", "pw")
        assert held.status_code == 429 and held.json()["code"] == "login.throttled"
        assert 1 <= int(held.headers["retry-after"]) <= 60
        assert (await login("hello1", "pw")).status_code == 200
        deadline = time.monotonic() + 10
        while (r := await login("hello2", "pw")).status_code == 429:
            assert time.monotonic() < deadline, "still throttled after its Retry-After"
            await asyncio.sleep(0.2)
        assert r.status_code == 200
        assert not await stack.redis.exists(keys.login_failures("acme", "hello2"))
    finally:
        await stack.redis.delete(keys.login_failures_from("127.0.0.1"))


async def test_login_then_ws_token_then_hello(stack: Stack) -> None:
    http, url = stack.http, stack.nodes[0].url
    r = await http.post(
        f"{url}/api/login", json={"workspace": "acme", "agent": "hello1", "password": "pw"}
    )
    assert r.status_code == 200
    login = r.json()
    assert login["agent"] == "hello1" and login["role"] == "agent" and login["name"] == "Hello 1"
    assert login["token"] and login["ws_token"]

    bad = await http.post(
        f"{url}/api/login", json={"workspace": "acme", "agent": "hello1", "password": "nope"}
    )
    assert bad.status_code == 401 and bad.json()["code"] == "auth.invalid"
    assert (await http.post(f"{url}/api/ws-token")).status_code == 401

    me: httpx.Response | dict[str, str]  # the /api/me answer, then this agent's directory entry
    me = await http.get(f"{url}/api/me", headers={"Authorization": f"Bearer {login['token']}"})
    assert me.json() == {"workspace": "acme", "agent": "hello1", "role": "agent"}
    r = await http.post(
        f"{url}/api/ws-token", headers={"Authorization": f"Bearer {login['token']}"}
    )
    assert r.status_code == 200
    fresh = r.json()
    assert fresh["expires_in"] > 0

    console = stack.track(await connect_agent(stack.nodes[0].ws_url, fresh["token"]))
    hello = await console.recv()  # the very first frame
    assert hello["type"] == "hello"
    assert hello["workspace"] == "acme"
    assert hello["agent"]["id"] == "hello1" and hello["agent"]["name"] == "Hello 1"
    assert hello["agent"]["status"] == "offline"
    assert hello["agent"]["capacity"] == {"chat": 2, "email": 3, "voice": 1}
    assert {"name": "available", "routable": True} in hello["statuses"]
    assert {"id": "hello", "name": "hello"} in hello["queues"]
    assert "resolved" in hello["dispositions"]
    assert hello["cases"] == [] and hello["offers"] == []
    directory = await console.ok("agents.list")  # the directory for transfers, on demand
    me = {"id": "hello1", "name": "Hello 1", "status": "offline"}
    load = {"chat": 0, "email": 0, "voice": 0}
    assert {**me, "capacity": {"chat": 2, "email": 3, "voice": 1}, "load": load} in directory[
        "agents"
    ]


async def test_hello_after_reconnect_is_the_snapshot(stack: Stack, bridge: WsClient) -> None:
    console, _ = await stack.agent("hello2", status="available")
    first = await bridge.ok("event", **event("hello", text="first"))
    offer1 = await console.expect("offer")
    assert offer1["case"]["id"] == first["case"]
    await console.ok("offer.accept", offer=offer1["offer"])
    second = await bridge.ok("event", **event("hello", text="second"))
    offer2 = await console.expect("offer")
    await console.close()

    again, hello = await stack.agent("hello2")
    assert hello["agent"]["status"] == "available"
    assert hello["agent"]["load"]["chat"] == 2
    [case] = hello["cases"]
    assert case["case"]["id"] == first["case"] and case["case"]["status"] == "assigned"
    assert [e["text"] for e in case["timeline"]] == ["first"]
    [pending] = hello["offers"]
    assert pending["offer"] == offer2["offer"] and pending["case"]["id"] == second["case"]
    assert pending["deadline"] == offer2["deadline"]
    assert pending["customer"]["id"] == offer2["customer"]["id"]
    assert [e["text"] for e in pending["timeline"]] == ["second"]
    assert pending["why"]["queue"] == "hello"
    assert pending["why"] == offer2["why"]  # after a reload the card says why as it did live
    await again.ok("offer.accept", offer=offer2["offer"])  # the snapshot's offer is live


async def test_codecs_by_subprotocol(stack: Stack) -> None:
    base = stack.nodes[0].ws_url
    token = await stack.ws_token("codec1")
    packed = stack.track(await connect_agent(base, token, MSGPACK))
    assert packed.ws.subprotocol == MSGPACK
    raw = await packed.ws.recv()
    assert isinstance(raw, bytes) and packed.decode(raw)["type"] == "hello"
    ref = await packed.send("ping")
    raw = await packed.ws.recv()
    assert isinstance(raw, bytes)
    assert packed.decode(raw) == {
        "type": "ack",
        "ref": ref,
        "ts": pytest.approx(time.time(), abs=60),
    }

    token = await stack.ws_token("codec1")
    text = stack.track(await connect_agent(base, token, JSON))
    assert text.ws.subprotocol == JSON
    assert isinstance(await text.ws.recv(), str)

    # offering both: the server takes the first one offered that it speaks
    token = await stack.ws_token("codec1")
    both = stack.track(
        await open_ws(f"{base}/ws/agent?token={token}", subprotocols=["x.unknown", JSON, MSGPACK])
    )
    assert both.ws.subprotocol == JSON

    # offering none: consoles and widgets default to JSON, bridges to msgpack (unnamed)
    token = await stack.ws_token("codec1")
    plain = stack.track(await open_ws(f"{base}/ws/agent?token={token}", None))
    assert plain.ws.subprotocol is None
    assert isinstance(await plain.ws.recv(), str)
    headers = {"Authorization": f"Bearer {CHAT_ONLY_KEY}"}
    bplain = stack.track(await open_ws(f"{base}/ws/bridge", None, headers=headers, default=MSGPACK))
    assert bplain.ws.subprotocol is None
    ref = await bplain.send("ping")
    raw = await bplain.ws.recv()
    assert isinstance(raw, bytes) and bplain.decode(raw)["ref"] == ref

    # a bridge may speak JSON, a widget msgpack
    bjson = stack.track(await open_ws(f"{base}/ws/bridge", JSON, headers=headers))
    ack = await bjson.ok("event", **event("codec", channel="chat"))
    assert ack["action"] == "created"
    widget, welcome = await stack.chat(codec=MSGPACK)
    assert widget.ws.subprotocol == MSGPACK and welcome["visitor"]


@pytest.mark.parametrize("path", ["/ws/agent", "/ws/bridge", "/ws/chat?workspace=acme"])
async def test_permessage_deflate_is_off(stack: Stack, path: str) -> None:
    headers = {"Authorization": f"Bearer {CHAT_ONLY_KEY}"}
    if path == "/ws/agent":
        path += "?token=" + await stack.ws_token("codec1")
    client = stack.track(
        await open_ws(
            f"{stack.nodes[0].ws_url}{path}", JSON, headers=headers, compression="deflate"
        )
    )
    assert client.ws.response is not None
    assert "Sec-WebSocket-Extensions" not in client.ws.response.headers
    assert client.ws.protocol.extensions == []
    assert (await client.ok("ping"))["ts"] > 0


async def test_ping_on_every_endpoint(stack: Stack, bridge: WsClient) -> None:
    console, _ = await stack.agent("codec1")
    widget, _ = await stack.chat()
    for client in (console, bridge, widget):
        ack = await client.ok("ping")
        assert isinstance(ack["ts"], float)


# -- bridge → server: events ----------------------------------------------------------------------


async def test_event_ack_is_durable_and_repeats_change_nothing(
    stack: Stack, bridge: WsClient
) -> None:
    ev = event("dup", channel="email", subject="Refund", text="where is my refund?")
    ack = await bridge.ok("event", **ev)
    assert ack["action"] == "created" and ack["duplicate"] is False
    assert ack["case"] and ack["customer"]
    # acknowledged only once it is in Redis: read it straight back, no waiting
    case = await stack.case(ack["case"])
    assert case["st"] == "queued" and case["cust"] == ack["customer"] and case["ch"] == "email"
    assert await stack.redis.exists(keys.dedupe("acme", bridge_event(ev["id"])))
    timeline = keys.customer_timeline("acme", ack["customer"])
    assert await stack.redis.llen(timeline) == 1
    log_len = await stack.redis.xlen(keys.log("acme"))

    again = await bridge.ok("event", **ev)
    changed = await bridge.ok("event", **{**ev, "text": "a different text, same id"})
    for dup in (again, changed):
        assert dup["duplicate"] is True
        assert (dup["case"], dup["customer"], dup["action"]) == (
            ack["case"],
            ack["customer"],
            "created",
        )
    assert await stack.redis.llen(timeline) == 1
    assert await stack.redis.xlen(keys.log("acme")) == log_len
    assert (await stack.case(ack["case"]))["updated"] == case["updated"]


async def test_pipelined_events_are_acked_by_ref(stack: Stack, bridge: WsClient) -> None:
    evs = {await bridge.send("event", **(ev := event("pipe"))): ev for _ in range(40)}
    acks = {ref: await bridge.answer(ref) for ref in evs}
    assert all(a["type"] == "ack" for a in acks.values())
    assert len({a["case"] for a in acks.values()}) == len(evs)
    for ref, ack in acks.items():
        assert (await stack.case(ack["case"]))["event"] == bridge_event(evs[ref]["id"])


async def test_event_kinds_and_case_pushes(stack: Stack, bridge: WsClient) -> None:
    email, thread = f"{uid('k')}@example.com", uid("thread")
    console, _ = await stack.agent("kinds1", status="available")
    created = await bridge.ok("event", **event("kinds", email=email, thread=thread, text="hi"))
    assert created["action"] == "created"
    offer = await console.expect("offer")
    await console.ok("offer.accept", offer=offer["offer"])

    more = await bridge.ok("event", **event("kinds", email=email, thread=thread, text="more"))
    assert (more["action"], more["case"]) == ("appended", created["case"])
    msg = await console.expect("case.message")
    assert msg["case"] == created["case"]
    assert msg["entry"]["text"] == "more" and msg["entry"]["dir"] == "in"
    assert msg["entry"]["ch"] == "chat"

    before = json.loads((await stack.case(created["case"]))["attrs"])
    cb = await bridge.ok(
        "event",
        **event(
            "kinds", email=email, thread=thread, kind="callback.requested", text="call me",
            attributes={"team": "kinds", "callback_number": "+14155550123"},
        ),
    )  # fmt: skip
    assert cb["action"] == "appended"
    upd = await console.expect("case.updated", event="callback.requested")
    assert upd["case"] == created["case"] and upd["entry"]["text"] == "call me"
    assert upd["callback_number"] == "+14155550123"
    after = await stack.case(created["case"])
    assert after["callback"] == "1"
    # the number the caller left joins the case's attributes; the others are kept as they were
    assert json.loads(after["attrs"]) == {**before, "callback_number": "+14155550123"}

    end = await bridge.ok(
        "event", **event("kinds", email=email, thread=thread, kind="conversation.ended", text="")
    )
    assert end["action"] == "appended"
    upd = await console.expect("case.updated", event="conversation.ended")
    assert upd["case"] == created["case"]

    # a call that ends while it is still being offered: abandoned, the offer is rescinded
    call = uid("call")
    phone = f"+1555{int(time.time() * 1000) % 10_000_000:07d}"
    rang = await bridge.ok(
        "event",
        **event(
            "kinds",
            channel="voice",
            kind="call.offered",
            thread=call,
            identities={"phone": phone},
            text="",
        ),
    )
    assert rang["action"] == "created"
    ring = await console.offer_for(rang["case"])
    hung = await bridge.ok(
        "event",
        **event(
            "kinds",
            channel="voice",
            kind="call.ended",
            thread=call,
            identities={"phone": phone},
            text="",
        ),
    )
    assert (hung["action"], hung["case"]) == ("abandoned", rang["case"])
    gone = await console.expect("offer.rescinded", offer=ring["offer"])
    assert gone == {
        "type": "offer.rescinded",
        "offer": ring["offer"],
        "case": rang["case"],
        "reason": "abandoned",
    }
    assert (await stack.case(rang["case"]))["st"] == "abandoned"

    # an end for a conversation nobody knows opens nothing
    stray = await bridge.ok("event", **event("kinds", kind="conversation.ended", text=""))
    assert stray["action"] == "ignored"


async def test_completed_case_reopens_and_late_callbacks_are_stale(
    stack: Stack, bridge: WsClient
) -> None:
    email, thread = f"{uid('r')}@example.com", uid("t")
    console, offer, ack = await offered(
        stack, bridge, "reopen1", "reopen", email=email, thread=thread
    )
    await console.ok("offer.accept", offer=offer["offer"])
    await console.ok("case.complete", case=ack["case"], disposition="resolved")
    back = await bridge.ok("event", **event("reopen", email=email, thread=thread, text="again"))
    assert (back["action"], back["case"]) == ("reopened", ack["case"])
    again = await console.offer_for(ack["case"])
    assert again["why"]["reason"].startswith("preferred agent")
    await console.ok("offer.accept", offer=again["offer"])

    # status callbacks carry a sequence number: an older one arriving late is not applied
    call, phone = uid("CA"), "+14155550199"
    kw: dict[str, Any] = {
        "channel": "voice",
        "thread": call,
        "identities": {"phone": phone},
        "text": "",
    }
    rang = await bridge.ok("event", **event("reopen", kind="call.offered", seq=2, **kw))
    late = await bridge.ok("event", **event("reopen", kind="call.ended", seq=1, **kw))
    assert (late["action"], late["case"]) == ("stale", rang["case"])
    assert (await stack.case(rang["case"]))["st"] in ("queued", "offered")


# -- server → agent: offers and the agent's answers ----------------------------------------------


async def test_offer_carries_case_profile_cross_channel_timeline_and_why(
    stack: Stack, bridge: WsClient
) -> None:
    email = f"{uid('zoe')}@example.com"
    by_mail = await bridge.ok(
        "event",
        **event(
            "offer",
            channel="email",
            email=email,
            name="Zoe Q",
            subject="Invoice 12",
            text="my invoice is wrong",
        ),
    )
    by_chat = await bridge.ok("event", **event("offer", email=email, text="hello? <b>x</b>"))
    assert by_chat["customer"] == by_mail["customer"]  # one customer across channels
    console, _ = await stack.agent("offer1", status="available")  # pulls both cases
    offer = await console.offer_for(by_chat["case"])
    await console.offer_for(by_mail["case"])
    assert isinstance(offer["offer"], str) and offer["offer"]
    assert isinstance(offer["deadline"], int) and offer["deadline"] > time.time() * 1000
    case = offer["case"]
    assert case["id"] == by_chat["case"] and case["channel"] == "chat"
    assert case["status"] == "offered" and case["queue"] == "offer"
    assert case["customer"] == by_chat["customer"] and isinstance(case["priority"], int)
    assert offer["customer"] == {
        "id": by_chat["customer"],
        "name": "Zoe Q",
        "identities": [f"email:{email}"],
        "claims": [],
    }
    assert [(e["ch"], e["text"]) for e in offer["timeline"]] == [
        ("email", "my invoice is wrong"),
        ("chat", "hello? <b>x</b>"),
    ]
    assert offer["timeline"][0]["subject"] == "Invoice 12"
    assert offer["timeline_total"] == 2
    why = offer["why"]
    assert (why["queue"], why["filter"], why["step"]) == ("offer", "offer", 1)
    assert isinstance(why["reason"], str) and why["reason"]


async def test_accept_assigns_once(stack: Stack, bridge: WsClient) -> None:
    console, offer, ack = await offered(stack, bridge, "accept1", "accept")
    got = await console.ok("offer.accept", offer=offer["offer"])
    assert got == {"type": "ack", "ref": got["ref"], "case": ack["case"], "duplicate": False}
    # a console restoring its screen may ask for the case detail with the accept
    again = await console.ok("offer.accept", offer=offer["offer"], detail=True)
    assert again["case"] == ack["case"] and again["duplicate"] is True
    detail = again["detail"]
    assert detail["case"]["status"] == "assigned" and detail["case"]["agent"] == "accept1"
    assert detail["customer"]["id"] == ack["customer"]
    assert [e["id"] for e in detail["timeline"]] == [offer["timeline"][0]["id"]]
    case = await stack.case(ack["case"])
    third = await console.ok("offer.accept", offer=offer["offer"])
    assert third["case"] == ack["case"] and third["duplicate"] is True
    assert await stack.case(ack["case"]) == case
    assert await stack.redis.smembers(keys.agent_cases("acme", "accept1")) == {ack["case"].encode()}


async def test_reject_sends_the_case_to_the_next_agent(stack: Stack, bridge: WsClient) -> None:
    first, offer, ack = await offered(stack, bridge, "reject1", "reject")
    second, _ = await stack.agent("reject2", status="available")
    got = await first.ok("offer.reject", offer=offer["offer"])
    assert got["case"] == ack["case"] and got["duplicate"] is False
    nxt = await second.offer_for(ack["case"])
    assert nxt["offer"] != offer["offer"]
    again = await first.ok("offer.reject", offer=offer["offer"])
    assert again["duplicate"] is True
    assert (await stack.case(ack["case"]))["oagent"] == "reject2"


async def test_status(stack: Stack) -> None:
    console, _ = await stack.agent("reject2")
    for status in ("away", "available", "offline"):
        assert (await console.ok("status", status=status))["status"] == status
    assert (await stack.redis.hget(keys.agent("acme", "reject2"), "st")) == b"offline"


async def test_reply_is_delivered_through_the_bridge(stack: Stack, bridge: WsClient) -> None:
    console, offer, ack = await offered(
        stack, bridge, "reply1", "reply", subject="Order", thread="order-77" + uid()
    )
    case = ack["case"]
    await console.ok("offer.accept", offer=offer["offer"])
    sent = await console.ok("case.reply", case=case, text="On its way!")
    entry = sent["entry"]
    assert (entry["dir"], entry["text"], entry["case"]) == ("out", "On its way!", case)
    assert entry["from"] == "Reply 1" and entry["id"]

    deliver = await bridge.expect("deliver", case=case)
    assert deliver["channel"] == "chat" and deliver["text"] == "On its way!"
    assert deliver["thread"].startswith("chat:order-77") and deliver["subject"] == "Order"
    assert deliver["identities"] == offer["customer"]["identities"]
    assert deliver["from"] == "Reply 1" and deliver["message"] == entry["id"]
    assert (await bridge.ok("delivered", id=deliver["id"])).keys() == {"type", "ref"}
    # the agent sees it delivered at once, and so does every later view of the history
    marked = await console.expect("case.updated", case=case, event="reply.delivered")
    assert marked["reply"] == entry["id"] and marked["via"].startswith("bridge:")
    assert isinstance(marked["delivered"], float)

    note = await console.ok("case.note", case=case, text="customer is VIP")
    assert note["entry"]["dir"] == "note"
    second = await console.ok("case.reply", case=case, text="Anything else?")
    nxt = await bridge.expect("deliver", case=case)  # the note was never delivered
    assert nxt["message"] == second["entry"]["id"]
    page = (await console.ok("history.fetch", customer=ack["customer"]))["history"]
    assert [e["dir"] for e in page["timeline"]] == ["in", "out", "note", "out"]
    assert ["delivered" in e for e in page["timeline"]] == [False, True, False, False]
    await bridge.ok("delivered", id=nxt["id"])
    await console.expect("case.updated", case=case, event="reply.delivered", reply=nxt["message"])
    # said again (a bridge retrying), or for an entry that was never its to deliver: nothing
    await bridge.ok("delivered", id=nxt["id"])
    await bridge.ok("delivered", id="1-0")
    page = (await console.ok("history.fetch", customer=ack["customer"]))["history"]
    assert ["delivered" in e for e in page["timeline"]] == [False, True, False, True]
    log = await stack.redis.xrange(keys.log("acme"))
    marks = [
        f for _, f in log if f[b"t"] == b"case.reply_delivered" and f[b"case"] == case.encode()
    ]
    assert len(marks) == 2


async def test_a_bridge_keeps_no_other_bridges_replies_pending(
    stack: Stack, bridge: WsClient
) -> None:
    """Another chat bridge's reader skips this bridge's reply (never handed to it), and its
    consumer group does not keep it pending: an entry that is not its own is acknowledged."""
    other = await stack.bridge(key=OTHER_CHAT_KEY)
    console, offer, ack = await offered(stack, bridge, "skip1", "skip")
    await console.ok("offer.accept", offer=offer["offer"])
    await console.ok("case.reply", case=ack["case"], text="Only for the first bridge")
    deliver = await bridge.expect("deliver", case=ack["case"])
    eid = deliver["id"]

    async def acknowledged_by_the_other() -> bool:
        groups = {g["name"]: g for g in await stack.redis.xinfo_groups(keys.outbox("acme"))}
        seen = groups[b"bridge:other-chat"]["last-delivered-id"].decode()
        read = tuple(map(int, seen.split("-"))) >= tuple(map(int, eid.split("-")))
        pending = await stack.redis.xpending_range(
            keys.outbox("acme"), "bridge:other-chat", eid, eid, 1
        )
        return read and not pending

    await wait_for(acknowledged_by_the_other, timeout=10, message="the other bridge keeps it")
    await bridge.ok("delivered", id=eid)
    await other.close()  # (deliveries go to any open connection of a bridge: later tests')


async def test_a_bridge_that_cannot_deliver_a_reply_says_so(stack: Stack, bridge: WsClient) -> None:
    """The gateway gives up on a reply (the number is not on its platform): its agent is told
    at once, the history says the customer did not get it, and the reply is not sent again.
    Saying it of an entry that is not pending for this bridge changes nothing."""
    console, offer, ack = await offered(stack, bridge, "undeliv1", "undeliv")
    case = ack["case"]
    await console.ok("offer.accept", offer=offer["offer"])
    await console.ok("case.reply", case=case, text="Your refund is on its way")
    deliver = await bridge.expect("deliver", case=case)
    for bad in ({}, {"reason": ""}, {"reason": 5}, {"reason": "x" * 501}, {"reason": "r", "to": 1}):
        await bridge.fails("delivery.failed", "frame.invalid", id=deliver["id"], **bad)
    await bridge.ok("delivery.failed", id=deliver["id"], reason="not on WhatsApp", to="+4917")
    alert = await console.expect("error", code="delivery.failed")
    assert "not on WhatsApp" in alert["message"]
    told = await console.expect("case.updated", case=case, event="delivery.failed")
    assert told["entry"]["text"] == "Reply not delivered to +4917: not on WhatsApp"
    history = (await console.ok("history.fetch", customer=ack["customer"]))["history"]
    assert history["timeline"][-1]["kind"] == "delivery.failed"
    # acknowledged: not pending any more, so saying it again (or of any other id) does nothing
    group, eid = "bridge:test-bridge", deliver["id"]
    assert not await stack.redis.xpending_range(keys.outbox("acme"), group, eid, eid, 1)
    length = await stack.redis.llen(keys.customer_timeline("acme", ack["customer"]))
    for eid in (deliver["id"], "1-0"):
        await bridge.ok("delivery.failed", id=eid, reason="again")
    assert await stack.redis.llen(keys.customer_timeline("acme", ack["customer"])) == length
    await console.ok("case.complete", case=case, disposition="resolved")


async def test_a_crm_hears_the_cases_lifecycle_and_resumes_where_it_left(
    stack: Stack, bridge: WsClient
) -> None:
    """A bridge that subscribes gets case.event frames as cases are created, taken and
    completed (ids, channel, queue, agent, disposition: no message text), and one that comes
    back after the last id it handled gets what came after it, missing nothing."""
    # (another key than the module's bridge: a second connection of a key shares its deliveries)
    crm = await stack.bridge(key=OTHER_CHAT_KEY)
    await crm.fails("events.subscribe", "frame.invalid", after="yesterday")
    start = (await crm.ok("events.subscribe"))["after"]
    console, offer, ack = await offered(stack, bridge, "crm1", "crm", text="my card is 4111")
    case = ack["case"]
    created = await crm.expect("case.event", case=case, event="created")
    assert (created["customer"], created["channel"]) == (ack["customer"], "chat")
    assert "4111" not in json.dumps(created)
    await console.ok("offer.accept", offer=offer["offer"])
    taken = await crm.expect("case.event", case=case, event="assigned")
    assert (taken["agent"], taken["queue"]) == ("crm1", "crm")
    await console.ok("case.complete", case=case, disposition="resolved")
    done = await crm.expect("case.event", case=case, event="completed")
    assert (done["agent"], done["disposition"]) == ("crm1", "resolved")
    assert start < created["id"] < taken["id"] < done["id"]

    await crm.close()
    back = await stack.bridge(key=OTHER_CHAT_KEY)  # the CRM restarted: after the last it handled
    await back.ok("events.subscribe", after=created["id"])
    again = [await back.expect("case.event", case=case) for _ in range(2)]
    assert [e["event"] for e in again] == ["assigned", "completed"]
    assert again[0] == taken
    await back.close()


async def test_replies_go_out_only_the_way_the_case_came_in(stack: Stack, bridge: WsClient) -> None:
    """A bridge is handed the replies of its own conversations only: not another bridge's, and
    not those of a web chat (the widget has them already)."""
    other = await stack.bridge(key=OTHER_CHAT_KEY)
    console, offer, mine = await offered(stack, bridge, "reply1", "reply")
    await console.ok("offer.accept", offer=offer["offer"])
    await console.ok("case.reply", case=mine["case"], text="to the first bridge")
    assert (await bridge.expect("deliver", case=mine["case"]))["text"] == "to the first bridge"
    await console.ok("case.complete", case=mine["case"], disposition="resolved")

    support, _ = await stack.agent("support1", status="available")
    widget, _ = await stack.chat()
    web = await widget.ok("message", text="from the web")
    await support.ok("offer.accept", offer=(await support.offer_for(web["case"]))["offer"])
    await support.ok("case.reply", case=web["case"], text="to the widget")
    assert (await widget.expect("message", dir="out"))["text"] == "to the widget"
    await support.ok("case.complete", case=web["case"], disposition="resolved")
    await support.ok("status", status="away")  # the widget tests below make support1 available

    theirs = await other.ok("event", **event("reply"))
    await console.ok("offer.accept", offer=(await console.offer_for(theirs["case"]))["offer"])
    await console.ok("case.reply", case=theirs["case"], text="to the second bridge")
    first = await other.expect("deliver")  # its first: nothing of the others' came before it
    assert (first["case"], first["text"]) == (theirs["case"], "to the second bridge")
    await other.ok("delivered", id=first["id"])
    await console.ok("case.complete", case=theirs["case"], disposition="resolved")


async def test_transfer_to_a_queue_then_to_an_agent(stack: Stack, bridge: WsClient) -> None:
    first, offer, ack = await offered(stack, bridge, "xfer1", "xfer")
    case = ack["case"]
    await first.ok("offer.accept", offer=offer["offer"])
    other, _ = await stack.agent("xferb1", status="available")
    assert (
        await first.ok("case.transfer", case=case, queue="xferb", note="billing issue")
    ).keys() == {"type", "ref"}
    moved = await other.offer_for(case)
    assert moved["case"]["queue"] == "xferb"
    assert moved["timeline"][-1]["dir"] == "note"
    assert moved["timeline"][-1]["text"] == "billing issue"
    assert await stack.redis.smembers(keys.agent_cases("acme", "xfer1")) == set()

    await other.ok("offer.accept", offer=moved["offer"])
    named, _ = await stack.agent("xfer2", status="available")
    await other.ok("case.transfer", case=case, agent="xfer2")
    direct = await named.offer_for(case)
    assert direct["why"]["reason"] == "named in the transfer"
    assert direct["why"]["transferred"] and direct["why"]["filter"] == ""


async def test_wrapup_then_complete_frees_capacity(stack: Stack, bridge: WsClient) -> None:
    # voice capacity is 1: the second call waits until the first one is completed
    console, _ = await stack.agent("wrap1", status="available")
    calls = [
        await bridge.ok(
            "event",
            **event(
                "wrap",
                channel="voice",
                kind="call.offered",
                identities={"phone": f"+1202555{i:04d}"},
                text="",
            ),
        )
        for i in (1, 2)
    ]
    offer = await console.offer_for(calls[0]["case"])
    await console.ok("offer.accept", offer=offer["offer"])
    assert (await stack.case(calls[1]["case"]))["st"] == "queued"
    assert (await console.ok("case.wrapup", case=calls[0]["case"])).keys() == {"type", "ref"}
    assert (await stack.case(calls[0]["case"]))["st"] == "wrapping"
    await console.ok("case.wrapup", case=calls[0]["case"])  # repeated: no second effect
    await console.ok(
        "case.complete", case=calls[0]["case"], disposition="resolved", note="refund issued"
    )
    done = await stack.case(calls[0]["case"])
    assert (done["st"], done["disposition"]) == ("completed", "resolved")
    nxt = await console.offer_for(calls[1]["case"])  # capacity freed: the next call
    assert nxt["case"]["channel"] == "voice"
    await console.ok("case.complete", case=calls[0]["case"])  # repeated: no second effect


async def test_followup_sends_a_reminder(stack: Stack, bridge: WsClient) -> None:
    email = f"{uid('f')}@example.com"
    console, offer, ack = await offered(
        stack, bridge, "follow1", "follow", email=email, subject="Parcel late"
    )
    await console.ok("offer.accept", offer=offer["offer"])
    due = int(time.time() * 1000) + 50
    got = await console.ok("case.followup", case=ack["case"], due=due, note="call back")
    assert got["due"] == due
    # the history says so, for whoever has the case next: when, by whom, why
    entry = got["entry"]
    assert (entry["kind"], entry["due"], entry["text"], entry["case"]) == (
        "followup",
        due,
        "call back",
        ack["case"],
    )
    history = await console.ok("history.fetch", customer=offer["customer"]["id"])
    assert history["history"]["timeline"][-1] == entry
    reminder = await console.expect("reminder", case=ack["case"])
    # it names its case: who, what about, on which channel, in which state
    assert reminder["note"] == "call back" and reminder["id"] == f"{ack['case']}|1"
    assert (reminder["customer"], reminder["subject"], reminder["channel"]) == (
        email,
        "Parcel late",
        "chat",
    )
    assert reminder["status"] == "assigned" and reminder["due"] == pytest.approx(due / 1000, abs=5)
    for bad in (0, -5):
        await console.fails("case.followup", "followup.invalid", case=ack["case"], in_s=bad)
    got = await console.ok("case.followup", case=ack["case"], in_s=0.05, note="again")
    assert abs(got["due"] - time.time() * 1000) < 60_000
    assert (await console.expect("reminder", case=ack["case"]))["note"] == "again"
    # shown again after a reconnect, with the case's state now, not when it fell due
    await console.ok("case.complete", case=ack["case"], disposition="resolved")
    console, hello = await stack.agent("follow1")
    kept = {r["id"]: r for r in hello["reminders"]}
    assert kept[f"{ack['case']}|1"]["status"] == "completed"
    for rid in (f"{ack['case']}|1", f"{ack['case']}|2"):
        await console.ok("reminder.dismiss", id=rid)


async def test_an_agent_sees_and_cancels_the_follow_ups_they_set(
    stack: Stack, bridge: WsClient
) -> None:
    """The follow-ups an agent set and that are not yet due are in their hello (soonest first,
    naming the case as a reminder does); one they cancel will not remind them, and the history
    says so. Nobody else can cancel it; one that fell due leaves the list."""
    one, offer, ack = await offered(
        stack, bridge, "fulist1", "fulist", name="Pia Park", subject="Invoice 9"
    )
    case = ack["case"]
    await one.ok("offer.accept", offer=offer["offer"])
    late = await one.ok("case.followup", case=case, in_s=7200, note="second chase")
    soon = await one.ok("case.followup", case=case, in_s=3600, note="chase the invoice")
    assert (late["id"], soon["id"]) == (f"{case}|1", f"{case}|2")
    _, hello = await stack.agent("fulist1", client="supervisor")
    assert [f["id"] for f in hello["followups"]] == [soon["id"], late["id"]]
    first = hello["followups"][0]
    assert (first["case"], first["note"], first["customer"]) == (
        case,
        "chase the invoice",
        "Pia Park",
    )
    assert (first["subject"], first["channel"]) == ("Invoice 9", "chat")
    assert first["due"] == pytest.approx(soon["due"] / 1000)

    other, _ = await stack.agent("fulist2")
    await other.fails("followup.cancel", "followup.unknown", id=soon["id"])  # not theirs
    got = await one.ok("followup.cancel", id=soon["id"])
    assert (got["entry"]["kind"], got["entry"]["case"]) == ("followup.cancelled", case)
    await one.fails("followup.cancel", "followup.unknown", id=soon["id"])  # gone already
    await one.fails("followup.cancel", "followup.unknown", id="nonsense")
    timers = await stack.redis.zrange(keys.timers("acme"), 0, -1)
    assert f"f|{case}|fulist1|2".encode() not in timers
    _, hello = await stack.agent("fulist1", client="supervisor")
    assert [f["id"] for f in hello["followups"]] == [late["id"]]

    # one that falls due leaves the list (it is a reminder now)
    due = await one.ok("case.followup", case=case, in_s=0.05, note="now")
    await one.expect("reminder", case=case, id=due["id"])
    _, hello = await stack.agent("fulist1", client="supervisor")
    assert [f["id"] for f in hello["followups"]] == [late["id"]]
    await one.ok("followup.cancel", id=late["id"])
    await one.ok("reminder.dismiss", id=due["id"])
    await one.ok("case.complete", case=case, disposition="resolved")


async def test_a_reminder_due_while_away_waits_for_the_agent(
    stack: Stack, bridge: WsClient
) -> None:
    """A follow-up that falls due while the agent is signed out is not lost: the next hello
    carries it until they dismiss it, and a dismissal on one console takes it off the others."""
    console, offer, ack = await offered(stack, bridge, "follow1", "follow", name="Rita Reyes")
    await console.ok("offer.accept", offer=offer["offer"])
    await console.ok("case.wrapup", case=ack["case"])
    await console.ok("case.complete", case=ack["case"], disposition="resolved")
    await console.ok("case.followup", case=ack["case"], in_s=0.05, note="did it arrive?")
    await console.close()
    kept = keys.agent_reminders("acme", "follow1")
    deadline = time.monotonic() + 10
    while not await stack.redis.hlen(kept):
        assert time.monotonic() < deadline, "the reminder never fell due"
        await asyncio.sleep(0.05)

    first, hello = await stack.agent("follow1")
    [r] = [r for r in hello["reminders"] if r["case"] == ack["case"]]
    assert (r["note"], r["customer"], r["status"]) == ("did it arrive?", "Rita Reyes", "completed")
    second, hello2 = await stack.agent("follow1", client="supervisor")  # another connection
    assert r in hello2["reminders"]
    await first.ok("reminder.dismiss", id=r["id"])
    assert (await second.expect("reminder.dismissed"))["id"] == r["id"]
    # someone else's or an unknown reminder: nothing to dismiss, nothing changes
    await first.ok("reminder.dismiss", id="nope|1")
    await first.fails("reminder.dismiss", "frame.invalid", id=7)
    _, again = await stack.agent("follow1")
    assert r["id"] not in [x["id"] for x in again["reminders"]]


async def test_an_agent_takes_a_closed_case_back_to_follow_it_up(
    stack: Stack, bridge: WsClient
) -> None:
    """A follow-up falls due on a case that is closed: its agent reopens it (case.reopen) and
    has it at once, with its history, to write to the customer again. Only an agent who
    handled it last or was reminded of it may; a case open with a colleague is theirs (and the
    refusal says whose); an agent with no room on the channel is told so; nothing changes."""
    one, offer, ack = await offered(stack, bridge, "takeback1", "takeback", name="Ola Olsen")
    case, cust = ack["case"], ack["customer"]
    await one.ok("offer.accept", offer=offer["offer"])
    await one.ok("case.complete", case=case, disposition="resolved")
    await one.ok("case.followup", case=case, in_s=0.05, note="did the refund land?")
    reminder = await one.expect("reminder", case=case)
    assert reminder["status"] == "completed"

    two, _ = await stack.agent("takeback2", status="available")
    await two.fails("case.reopen", "case.unknown", case=case)  # never theirs
    await one.fails("case.reopen", "case.unknown", case="c-nope")
    assert (await stack.case(case))["st"] == "completed"

    got = await one.ok("case.reopen", case=case)
    assert (got["case"], got["duplicate"]) == (case, False)
    detail = got["detail"]
    assert (detail["case"]["status"], detail["case"]["agent"]) == ("assigned", "takeback1")
    assert "disposition" not in detail["case"]
    # the history says who reopened it, for whoever reads it next
    last = detail["timeline"][-1]
    assert (last["kind"], last["case"], last["from"]) == ("reopened", case, "Takeback 1")
    assert await stack.redis.sismember(keys.agent_cases("acme", "takeback1"), case)
    assert await stack.redis.hget(keys.agent("acme", "takeback1"), "load:chat") == b"1"
    assert (await one.ok("case.reopen", case=case))["duplicate"] is True  # no second effect
    assert await stack.redis.hget(keys.agent("acme", "takeback1"), "load:chat") == b"1"
    await one.ok("case.reply", case=case, text="Checking on your refund.")

    # handed to a colleague: the reminder still lets its agent ask, and the answer says whose
    await one.ok("case.transfer", case=case, agent="takeback2")
    handed = await two.offer_for(case)
    await two.ok("offer.accept", offer=handed["offer"])
    refused = await one.fails("case.reopen", "case.assigned", case=case)
    assert refused["message"] == "Takeback 2 has this case now"
    await two.ok("case.complete", case=case, disposition="resolved")
    await one.ok("case.reopen", case=case)  # reminded of it: theirs again
    await one.ok("reminder.dismiss", id=reminder["id"])
    await one.ok("case.complete", case=case, disposition="resolved")

    # no room on the channel: refused, and nothing changes
    await two.ok("status", status="offline")
    busy = [await bridge.ok("event", **event("takeback")) for _ in range(2)]
    for b in busy:
        await one.ok("offer.accept", offer=(await one.offer_for(b["case"]))["offer"])
    before = await stack.case(case)
    timeline = await stack.redis.llen(keys.customer_timeline("acme", cust))
    full = await one.fails("case.reopen", "agent.full", case=case)
    assert "no room for another chat case" in full["message"]
    assert await stack.case(case) == before
    assert await stack.redis.llen(keys.customer_timeline("acme", cust)) == timeline


async def connected_call(
    stack: Stack, bridge: WsClient, agent: str, team: str, phone: str
) -> tuple[WsClient, dict[str, Any], dict[str, Any]]:
    """A call from ``phone`` offered to ``agent`` and accepted: the console, the event's ack,
    and the ``call.connect`` the bridge got for it."""
    console, offer, ack = await offered(
        stack, bridge, agent, team, channel="voice", kind="call.offered",
        thread=uid("CA"), identities={"phone": phone}, text="",
    )  # fmt: skip
    await console.ok("offer.accept", offer=offer["offer"])
    return console, ack, await bridge.expect("call.connect", case=ack["case"])


async def test_a_call_connect_written_before_an_upgrade_reaches_the_bridge_whole(
    stack: Stack, bridge: WsClient
) -> None:
    """The script that accepts a call writes what the bridge is told (the agent's name, the
    caller's identities) into the outbox entry; an entry an older version wrote without them
    is completed from Redis when it is handed on, and the bridge sees no difference."""
    phone = "+14155550177"
    console, ack, new = await connected_call(stack, bridge, "upgrade1", "upgrade", phone)
    assert (new["agent"], new["agent_name"]) == ("upgrade1", "Upgrade 1")
    assert new["identities"] == [f"phone:{phone}"] and "callback" not in new
    await bridge.ok("delivered", id=new["id"])

    src = await stack.redis.hget(keys.case("acme", ack["case"]), "src")
    old_id = await stack.redis.xadd(
        keys.outbox("acme"),
        {"kind": "call.connect", "ch": "voice", "case": ack["case"], "customer": ack["customer"],
         "thread": new["thread"], "agent": "upgrade1", "src": src or b""},
    )  # fmt: skip
    old = await bridge.expect("call.connect", id=old_id.decode())
    assert {**old, "id": new["id"]} == new
    await bridge.ok("delivered", id=old["id"])
    await console.ok("case.complete", case=ack["case"], disposition="resolved")


async def test_a_reopened_call_is_a_callback(stack: Stack, bridge: WsClient) -> None:
    """Reopening a call whose line is long gone: the bridge is asked to call the agent and
    then the customer back (call.connect with callback), not to connect a call that ended."""
    phone = "+14155550142"
    console, ack, first = await connected_call(stack, bridge, "recall1", "recall", phone)
    assert "callback" not in first
    await bridge.ok("delivered", id=first["id"])
    await console.ok("case.complete", case=ack["case"], disposition="resolved")
    got = await console.ok("case.reopen", case=ack["case"])
    # the agent's follow-up, not something the caller asked for: the console says so
    assert got["detail"]["case"]["callback_reason"] == "followup"
    again = await bridge.wait(
        lambda f: (
            f["type"] == "call.connect" and f["case"] == ack["case"] and f["id"] != first["id"]
        ),
        what="callback",
    )
    assert (again["case"], again["callback"], again["callback_number"]) == (
        ack["case"], True, phone,
    )  # fmt: skip
    await bridge.ok("delivered", id=again["id"])
    await console.ok("case.complete", case=ack["case"], disposition="resolved")


async def merged_into_a_caller(
    stack: Stack, bridge: WsClient, customer: str, phone: str
) -> tuple[str, str]:
    """A caller from ``phone`` (a voice case nobody takes: team "claims"), and ``customer``
    merged into them by an admin: (the caller's customer id, the admin's token)."""
    other = await bridge.ok("event", **event("claims", channel="voice", kind="call.offered",
                                              identities={"phone": phone}, text=""))  # fmt: skip
    admin = (await stack.login("admin"))["token"]
    r = await stack.http.post(
        f"{stack.nodes[0].url}/api/customers/merge",
        json={"into": other["customer"], "from": customer},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert r.status_code == 200, r.text
    return other["customer"], admin


async def test_a_merge_reaches_the_console_that_has_the_case_open(
    stack: Stack, bridge: WsClient
) -> None:
    """An admin merges the customer of an open case into another: the agent gets the case
    again with the merged customer and history (case.refresh), and a history.fetch with the
    old id, which the console may still hold, follows the merge."""
    mail, phone = f"{uid('m')}@example.com", f"+1555{secrets.randbelow(10**7):07d}"
    console, offer, ack = await offered(stack, bridge, "merge1", "merge", email=mail, text="hi")
    await console.ok("offer.accept", offer=offer["offer"])
    other, admin = await merged_into_a_caller(stack, bridge, ack["customer"], phone)
    fresh = await console.wait(
        lambda f: f["type"] == "case.refresh" and f["case"]["id"] == ack["case"],
        what="case.refresh",
    )
    assert fresh["customer"]["id"] == other
    assert {f"email:{mail}", f"phone:{phone}"} <= set(fresh["customer"]["identities"])
    old = (await console.ok("history.fetch", customer=ack["customer"]))["history"]
    assert old["customer"] == other and old["total"] == fresh["timeline_total"]

    # the other way round: a third customer merged into the one whose case is open
    third = await bridge.ok("event", **event("claims", email=f"{uid('t')}@example.com"))
    r = await stack.http.post(
        f"{stack.nodes[0].url}/api/customers/merge",
        json={"into": other, "from": third["customer"]},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert r.status_code == 200, r.text
    again = await console.wait(
        lambda f: f["type"] == "case.refresh" and f["timeline_total"] > fresh["timeline_total"],
        what="a second case.refresh",
    )
    assert again["case"]["id"] == ack["case"]
    # nor may anyone merge into a customer merged away (the two would point at each other)
    r = await stack.http.post(
        f"{stack.nodes[0].url}/api/customers/merge",
        json={"into": ack["customer"], "from": other},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert r.status_code == 404 and r.json()["code"] == "customer.unknown"


async def test_a_reply_confirmed_after_a_merge_is_marked_where_the_merge_moved_it(
    stack: Stack, bridge: WsClient
) -> None:
    """The customer is merged into another while a reply to them is on its way (an admin's
    merge here; a chat visitor who gives a known email is merged the same way): the bridge's
    ``delivered`` still marks the reply, now in the merged customer's history."""
    phone = f"+1555{secrets.randbelow(10**7):07d}"
    console, offer, ack = await offered(stack, bridge, "mergedel1", "mergedel", text="hi")
    case = ack["case"]
    await console.ok("offer.accept", offer=offer["offer"])
    sent = await console.ok("case.reply", case=case, text="Checking now")
    deliver = await bridge.expect("deliver", case=case)
    other, _ = await merged_into_a_caller(stack, bridge, ack["customer"], phone)
    await bridge.ok("delivered", id=deliver["id"])
    marked = await console.expect("case.updated", case=case, event="reply.delivered")
    assert marked["reply"] == sent["entry"]["id"]
    page = (await console.ok("history.fetch", customer=other))["history"]
    mine = [e for e in page["timeline"] if e["id"] == sent["entry"]["id"]]
    assert len(mine) == 1 and mine[0]["via"].startswith("bridge:")
    await console.ok("case.complete", case=case, disposition="resolved")


async def test_history_fetch_pages_back(stack: Stack, bridge: WsClient) -> None:
    email, thread = f"{uid('h')}@example.com", uid("t")
    console, _, ack = await offered(
        stack, bridge, "hist1", "hist", email=email, thread=thread, text="m0"
    )
    for i in range(1, 5):
        await bridge.ok("event", **event("hist", email=email, thread=thread, text=f"m{i}"))
    page = (await console.ok("history.fetch", customer=ack["customer"], limit=2))["history"]
    assert page["customer"] == ack["customer"] and page["total"] == 5 and page["start"] == 3
    assert [e["text"] for e in page["timeline"]] == ["m3", "m4"]
    older = (
        await console.ok("history.fetch", customer=ack["customer"], limit=2, before=page["start"])
    )["history"]
    assert [e["text"] for e in older["timeline"]] == ["m1", "m2"] and older["start"] == 1


async def test_supervisor_moves_a_case_and_sets_a_status(stack: Stack, bridge: WsClient) -> None:
    console, offer, ack = await offered(stack, bridge, "move1", "move")
    boss, hello = await stack.agent("boss")
    assert hello["agent"]["role"] == "supervisor"
    other, _ = await stack.agent("movex1", status="available")
    await boss.ok("case.move", case=ack["case"], queue="movex", note="overflow")
    gone = await console.expect("offer.rescinded", offer=offer["offer"])
    assert gone["case"] == ack["case"] and gone["reason"] == "rescinded"
    assert (await other.offer_for(ack["case"]))["case"]["queue"] == "movex"

    stats = (await boss.ok("stats.fetch"))["stats"]
    assert {"move", "movex"} <= {q["id"] for q in stats["queues"]}
    assert "move1" in {a["id"] for a in stats["agents"]}

    assert (await boss.ok("agent.status", agent="move1", status="away"))["status"] == "away"
    pushed = await console.expect("status")
    assert pushed == {"type": "status", "status": "away", "reason": "supervisor"}


async def test_going_offline_rescinds_pending_offers_with_a_push(
    stack: Stack, bridge: WsClient
) -> None:
    boss, _ = await stack.agent("boss")
    for team, by in (("rescind", boss), ("leave", None)):
        console, offer, _ = await offered(stack, bridge, f"{team}1", team)
        if by is None:
            await console.ok("status", status="offline")
        else:
            await by.ok("agent.status", agent=f"{team}1", status="offline")
        await console.ok("ping")  # pushes for this console were written before this answer
        assert await offer_state(stack.redis, "acme", offer["offer"]) == "rescinded"
        assert [f["offer"] for f in console.pending("offer.rescinded")] == [offer["offer"]]


async def test_voice_accept_sends_call_connect(stack: Stack, bridge: WsClient) -> None:
    call, phone = uid("CA"), "+14155550123"
    console, offer, ack = await offered(
        stack,
        bridge,
        "voice1",
        "voice",
        channel="voice",
        kind="call.offered",
        thread=call,
        identities={"phone": phone},
        text="",
    )
    assert offer["case"]["channel"] == "voice"
    await console.ok("offer.accept", offer=offer["offer"])
    connect = await bridge.expect("call.connect", case=ack["case"])
    assert connect["thread"] == f"voice:{call}" and connect["agent"] == "voice1"
    assert connect["agent_name"] == "Voice 1" and connect["identities"] == [f"phone:{phone}"]
    await bridge.ok("delivered", id=connect["id"])


async def test_offer_timeout_rescinds_and_missed_offers_set_away(stack: Stack) -> None:
    bea, _ = await stack.agent("bea", workspace="brisk", status="available")
    for n in (1, 2):
        widget, _ = await stack.chat(workspace="brisk")
        ack = await widget.ok("message", text=f"anyone there? ({n})")
        offer = await bea.offer_for(ack["case"])
        gone = await bea.expect("offer.rescinded", offer=offer["offer"])
        assert gone == {
            "type": "offer.rescinded",
            "offer": offer["offer"],
            "case": ack["case"],
            "reason": "timeout",
        }
    status = await bea.expect("status")
    assert status == {"type": "status", "status": "away", "reason": "missed_offers"}


# -- the chat widget ----------------------------------------------------------------------------


async def test_chat_widget_conversation(stack: Stack) -> None:
    widget, welcome = await stack.chat()
    assert welcome["workspace"] == "acme" and welcome["case"] == "" and welcome["messages"] == []
    assert welcome["visitor"].startswith("v") and welcome["token"]
    wanda = f"{uid('w')}@example.com"
    ident = await widget.ok("identify", email=wanda, name="Wanda")
    assert (ident["identities"], ident["claims"]) == (["visitor"], ["email"])  # typed, unsigned
    first = await widget.ok("message", text="hello", id="m-1")
    assert first["case"] and first["duplicate"] is False
    again = await widget.ok("message", text="hello", id="m-1")
    assert (again["case"], again["duplicate"]) == (first["case"], True)

    console, _ = await stack.agent("support1", status="available")
    offer = await console.offer_for(first["case"])
    assert offer["customer"]["name"] == "Wanda"
    assert offer["customer"]["identities"] == [f"visitor:{welcome['visitor']}"]
    assert offer["customer"]["claims"] == [f"email:{wanda}"]
    await console.ok("offer.accept", offer=offer["offer"])
    joined = await widget.expect("agent")  # named, never by id
    assert (joined["event"], joined["name"], joined["case"]) == (
        "joined",
        "Support 1",
        first["case"],
    )
    assert "support1" not in str(joined)
    sent = await console.ok("case.reply", case=first["case"], text="Hi Wanda, <i>how</i>?")
    await console.ok("case.note", case=first["case"], text="internal only")
    shown = await widget.expect("message", dir="out")
    assert shown == {
        "type": "message",
        "case": first["case"],
        "id": sent["entry"]["id"],
        "dir": "out",
        "text": "Hi Wanda, <i>how</i>?",
        "from": "Support 1",
        "ts": sent["entry"]["ts"],
    }
    await widget.ok("message", text="my order")
    assert (await console.expect("case.message", case=first["case"]))["entry"]["text"] == (
        "my order"
    )

    back, resumed = await stack.chat(token=welcome["token"])
    assert resumed["visitor"] == welcome["visitor"] and resumed["case"] == first["case"]
    assert [(m["dir"], m["text"]) for m in resumed["messages"]] == [
        ("in", "hello"),
        ("out", "Hi Wanda, <i>how</i>?"),
        ("in", "my order"),
    ]
    assert all("agent" not in m for m in resumed["messages"])
    assert resumed["agent"] == {"event": "joined", "name": "Support 1", "ts": joined["ts"]}
    assert (await back.ok("end"))["case"] == first["case"]
    assert (await console.expect("case.updated", case=first["case"]))["event"] == (
        "conversation.ended"
    )
    await console.ok("case.wrapup", case=first["case"])  # the agent closes it: both widgets hear
    for w in (widget, back):
        closed = await w.expect("agent", event="closed")
        assert (closed["name"], closed["case"]) == ("Support 1", first["case"])
    await console.ok("case.complete", case=first["case"], disposition="resolved")
    _, later = await stack.chat(token=welcome["token"])
    assert later["agent"] == {"event": "closed", "name": "Support 1", "ts": closed["ts"]}


async def test_a_chat_transfer_tells_the_visitor(stack: Stack) -> None:
    console, _ = await stack.agent("support1", status="available")
    widget, welcome = await stack.chat()
    sent = await widget.ok("message", text="can someone in billing help?")
    offer = await console.offer_for(sent["case"])
    await console.ok("offer.accept", offer=offer["offer"])
    assert (await widget.expect("agent"))["event"] == "joined"
    await console.ok("case.transfer", case=sent["case"], queue="handon", note="billing, please")
    moved = await widget.expect("agent")
    assert (moved["event"], moved["name"]) == ("transferred", "Support 1")
    # a widget that reconnects now hears the same, with its time (it waits for the next agent)
    _, back = await stack.chat(token=welcome["token"])
    assert (back["agent"]["event"], back["agent"]["name"]) == ("transferred", "Support 1")
    assert back["agent"]["ts"] == pytest.approx(moved["ts"], abs=1)
    other, _ = await stack.agent("handon1", status="available")
    await other.ok("offer.accept", offer=(await other.offer_for(sent["case"]))["offer"])
    assert (await widget.expect("agent"))["event"] == "joined"
    _, again = await stack.chat(token=welcome["token"])
    assert (again["agent"]["event"], again["agent"]["name"]) == ("joined", "Handon 1")
    assert again["agent"]["ts"] > back["agent"]["ts"]  # after the transfer, not at the first join


async def test_a_waiting_chat_says_so_to_a_widget_that_reconnects(stack: Stack) -> None:
    widget, welcome = await stack.chat()
    await widget.ok("message", text="is anyone there?")
    _, back = await stack.chat(token=welcome["token"])
    assert back["agent"] == {"event": "waiting"}


async def test_the_widget_names_the_agent_even_from_an_older_node(stack: Stack) -> None:
    """The agent's name travels in the chat event; one published by a node still on the previous
    release carries none, and the widget's node reads it. No name at all shows as "Agent"."""
    widget, _ = await stack.chat()
    sent = await widget.ok("message", text="anyone there?")
    channel = keys.push_case("acme", sent["case"])
    deadline = time.monotonic() + 10
    while dict(await stack.redis.pubsub_numsub(channel)).get(channel.encode(), 0) == 0:
        assert time.monotonic() < deadline, "the widget's node never subscribed"
        await asyncio.sleep(0.02)
    old = {"event": "joined", "case": sent["case"], "agent": "support1", "ts": 1.0}
    await stack.redis.publish(channel, json.dumps(old))
    joined = await widget.expect("agent")
    assert (joined["event"], joined["name"]) == ("joined", "Support 1")
    unnamed = old | {"event": "closed", "name": "", "ts": 2.0}
    await stack.redis.publish(channel, json.dumps(unnamed))
    closed = await widget.expect("agent")
    assert (closed["event"], closed["name"]) == ("closed", "Agent")
    assert "support1" not in str(joined) + str(closed)


async def test_a_chat_identity_is_a_claim_until_the_site_signs_it(
    stack: Stack, bridge: WsClient
) -> None:
    known = f"{uid('k')}@example.com"
    first = await bridge.ok("event", **event("claims", email=known))  # an existing customer
    owner = (await stack.case(first["case"]))["cust"]

    async def chat(**identify: Any) -> tuple[str, dict[str, Any]]:
        widget, _ = await stack.chat()
        ack = await widget.ok("identify", **identify)
        sent = await widget.ok("message", text="what did I order?")
        return (await stack.case(sent["case"]))["cust"], ack

    async def profile(cust: str) -> set[str]:
        return {k.decode() for k in await stack.redis.hkeys(keys.customer("acme", cust))}

    # typed in the widget: recorded as a claim on the visitor's own record, linked to nothing
    cust, ack = await chat(email=known, name="Not Really")
    assert (ack["identities"], ack["claims"]) == (["visitor"], ["email"])
    assert cust != owner
    assert f"claim:email:{known}" in await profile(cust)
    assert f"i:email:{known}" not in await profile(cust)
    assert await stack.redis.hget(keys.identities("acme"), f"email:{known}") == owner.encode()
    assert "Not Really" not in str(await stack.redis.hgetall(keys.customer("acme", owner)))

    # a hash the site did not make: refused, and the visitor stays anonymous
    widget, _ = await stack.chat()
    await widget.fails("identify", "identity.unverified", email=known, identity_hash="ab" * 32)
    sent = await widget.ok("message", text="hello?")
    anonymous = (await stack.case(sent["case"]))["cust"]
    assert anonymous != owner
    assert not {k for k in await profile(anonymous) if k.startswith("claim:")}

    # signed by the site (the visitor is signed in there): the chat joins the known customer
    signed = identity_hash(CHAT_IDENTITY_SECRET, {"email": known})
    cust, ack = await chat(email=known, identity_hash=signed)
    assert (ack["identities"], ack["claims"]) == (["email", "visitor"], [])
    assert cust == owner

    # a bridge may state claims too (a caller's "I'm calling for ..."): recorded, not linked
    said = await bridge.ok("event", **event("claims", claims={"phone": "+1 555 010 0999"}))
    assert "claim:phone:+15550100999" in await profile((await stack.case(said["case"]))["cust"])
    assert not await stack.redis.hget(keys.identities("acme"), "phone:+15550100999")
    await bridge.fails("event", "event.invalid", **event("claims", claims={"phone": "nope"}))
