"""Bad input over real sockets: each gets a typed ``error`` (or a close 1008/1009 when the
connection itself is at fault), changes nothing, and other connections don't notice.

A witness console and a witness bridge stay connected for the whole module; after every test
they must still answer and must have received nothing but answers to their own frames.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import pytest_asyncio
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from websockets.exceptions import ConnectionClosed

from router import keys
from tests.server import BRIDGE_KEY
from tests.util import offer_state, wait_for
from tests.ws_client import (
    CHAT_ONLY_KEY,
    JSON,
    MSGPACK,
    OTHER_CHAT_KEY,
    Frame,
    Stack,
    WsClient,
    bridge_event,
    connect_agent,
    connect_bridge,
    connect_chat,
    event,
    open_ws,
    team_workspace,
    uid,
)

TEAMS = {"witness": 1, "frames": 1, "mine": 2, "stale": 1, "scope": 1, "limits": 2, "iso": 1}
BRISK = {
    "id": "brisk",
    "queues": [{"id": "support"}],
    "channels": {"chat": {"offer_timeout_s": 0.3}},
    "agents": [{"id": "bea", "name": "Bea", "password": "pw", "capacity": {"chat": 5}}],
}
SECRET = "test-secret"  # what tests/server.py gives every node


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    st = await Stack.start(tmp_path_factory.mktemp("bad-input"), team_workspace(TEAMS))
    await st.apply_workspace(BRISK)
    try:
        yield st
    finally:
        await st.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bridge(stack: Stack) -> WsClient:
    return await stack.bridge()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def witness(stack: Stack) -> WsClient:
    console, _ = await stack.agent("witness1")
    return console


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def nobody_else_notices(witness: WsClient, bridge: WsClient) -> AsyncIterator[None]:
    yield
    await witness.ok("ping")
    await bridge.ok("ping")
    for client in (witness, bridge):
        assert client.unsolicited() == [], "a bystander received frames not meant for it"


def token(
    subject: str,
    *,
    kind: str = "ws",
    ws: str = "acme",
    role: str = "agent",
    secret: str = SECRET,
    age_s: int = 0,
) -> str:
    """A token as the server signs them, made here: expired (``age_s``) or forged (``secret``)."""

    class Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age_s

    s = URLSafeTimedSerializer(secret, salt="switchboard.v1", signer=Signer)
    return str(s.dumps({"k": kind, "w": ws, "s": subject, "r": role}))


async def refused(client: WsClient, code: str) -> None:
    """The server said why in an error frame, then closed the connection with 1008."""
    frame = await client.recv()
    assert frame["type"] == "error" and frame["code"] == code, frame
    assert frame["message"]
    assert await client.closed() == 1008


async def nothing_stored(stack: Stack, event_id: str, ws: str = "acme") -> None:
    for key in (event_id, bridge_event(event_id)):
        assert not await stack.redis.exists(keys.dedupe(ws, key))


# -- frames ----------------------------------------------------------------------------------------


async def test_unknown_type(stack: Stack, bridge: WsClient) -> None:
    console, _ = await stack.agent("frames1")
    widget, _ = await stack.chat()
    bogus = [f"x.{uid()}" for _ in range(5)]
    for client in (console, bridge, widget):
        for t in bogus:
            got = await client.fails(t, "frame.unknown_type")
            assert t in got["message"]
    # a client cannot mint metric series with made-up types
    metrics = (await stack.http.get(f"{stack.nodes[0].url}/metrics")).text
    assert not any(t in metrics for t in bogus)
    await console.ok("ping")


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        "[1, 2]",
        '"type"',
        '{"type": 5, "ref": "a"}',
        '{"ref": "a"}',
        "[" * 20_000 + "]" * 20_000,
        b"\xc1",
        b"\x81\xa4type",
        msgpack.packb({1: 2}),
        msgpack.packb(["ping"]),
        b"\xff\xfe\x00",
    ],
    ids=lambda d: repr(d[:12]),
)
async def test_malformed_frame(stack: Stack, data: bytes | str) -> None:
    # a binary frame is msgpack on a msgpack connection; a text frame is always JSON
    codec = MSGPACK if isinstance(data, bytes) else JSON
    console, _ = await stack.agent("frames1", codec=codec)
    await console.send_raw(data)
    got = await console.recv()
    assert got["type"] == "error" and got["code"] == "frame.malformed" and got["ref"] is None
    await console.ok("ping")  # the connection goes on


async def test_malformed_frames_on_bridge_and_widget(stack: Stack) -> None:
    other = await stack.bridge(key=CHAT_ONLY_KEY)
    widget, _ = await stack.chat()
    for client, data in ((other, b"\x93\x01"), (widget, "nope")):
        await client.send_raw(data)
        got = await client.wait(lambda f: f["type"] == "error" and f.get("ref") is None)
        assert got["code"] == "frame.malformed"
        await client.ok("ping")


AGENT_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("offer.accept", {"offer": 123}, "frame.invalid"),
    ("offer.accept", {}, "frame.invalid"),
    ("offer.reject", {"offer": ["o1"]}, "frame.invalid"),
    ("offer.accept", {"offer": "o" * 65}, "frame.invalid"),
    ("status", {"status": 7}, "frame.invalid"),
    ("status", {"status": "busy"}, "status.unknown"),
    ("case.reply", {"case": "CASE", "text": ["hi"]}, "frame.invalid"),
    ("case.reply", {"case": "CASE", "text": ""}, "frame.invalid"),
    ("case.reply", {"case": "CASE", "text": "   "}, "reply.invalid"),
    ("case.reply", {"case": "CASE", "text": "x" * 32_001}, "frame.invalid"),
    ("case.note", {"case": None, "text": "x"}, "frame.invalid"),
    ("case.transfer", {"case": "CASE", "queue": "mine", "agent": "mine2"}, "transfer.invalid"),
    ("case.transfer", {"case": "CASE"}, "transfer.invalid"),
    ("case.transfer", {"case": "CASE", "queue": "nope"}, "queue.unknown"),
    ("case.transfer", {"case": "CASE", "agent": "nobody"}, "agent.unknown"),
    ("case.transfer", {"case": "CASE", "queue": 5}, "frame.invalid"),
    ("case.complete", {"case": "CASE", "disposition": "bogus"}, "disposition.unknown"),
    ("case.followup", {"case": "CASE", "due": "tomorrow"}, "frame.invalid"),
    ("case.followup", {"case": "CASE", "due": True}, "frame.invalid"),
    ("case.followup", {"case": "CASE", "due": float("nan")}, "frame.invalid"),
    ("case.followup", {"case": "CASE", "in_s": float("inf")}, "frame.invalid"),
    ("case.followup", {"case": "CASE", "due": 10**14}, "followup.invalid"),
    ("case.followup", {"case": "CASE"}, "frame.invalid"),
    ("case.reopen", {"case": ["CASE"]}, "frame.invalid"),
    ("case.reopen", {}, "frame.invalid"),
    ("history.fetch", {"customer": "CUST", "limit": "10"}, "frame.invalid"),
    ("history.fetch", {"customer": "CUST", "before": True}, "frame.invalid"),
    ("history.fetch", {"customer": 1}, "frame.invalid"),
]


async def test_wrong_field_types_on_the_agent_socket(stack: Stack, bridge: WsClient) -> None:
    console, _ = await stack.agent("frames1", codec=MSGPACK, status="available")
    ack = await bridge.ok("event", **event("frames"))
    offer = await console.offer_for(ack["case"])
    await console.ok("offer.accept", offer=offer["offer"])
    before = await stack.case(ack["case"])
    timeline = await stack.redis.llen(keys.customer_timeline("acme", ack["customer"]))
    for type_, fields, code in AGENT_FIELDS:
        fields = {
            k: {"CASE": ack["case"], "CUST": ack["customer"]}.get(v, v) if isinstance(v, str) else v
            for k, v in fields.items()
        }
        await console.fails(type_, code, **fields)
    # JSON's non-standard Infinity literal, too
    text, _ = await stack.agent("frames1", codec=JSON)
    case = json.dumps(ack["case"])
    await text.send_raw(f'{{"type":"case.followup","ref":"inf","case":{case},"in_s":Infinity}}')
    got = await text.answer("inf")
    assert (got["type"], got["code"]) == ("error", "frame.invalid")
    # and as a ref, which no answer could carry back as JSON: refused, with no ref
    await text.send_raw(f'{{"type":"case.reply","ref":NaN,"case":{case},"text":"hi"}}')
    got = await text.wait(lambda f: f["type"] == "error" and f["ref"] is None, what="error")
    assert got["code"] == "frame.invalid" and "ref" in got["message"]
    assert await stack.case(ack["case"]) == before
    assert await stack.redis.llen(keys.customer_timeline("acme", ack["customer"])) == timeline
    assert await stack.redis.hget(keys.agent("acme", "frames1"), "st") == b"available"


def _bad_events() -> list[tuple[dict[str, Any], str]]:
    ok = event("frames")
    return [
        ({**ok, "identities": "alice"}, "event.invalid"),
        ({**ok, "identities": {}}, "event.invalid"),
        ({**ok, "identities": {"email": "not-an-email"}}, "event.invalid"),
        ({**ok, "identities": {"phone": "12345"}}, "event.invalid"),
        ({**ok, "identities": {"fax": "123"}}, "event.invalid"),
        ({**ok, "kind": "call.transferred"}, "event.invalid"),
        ({**ok, "ts": "yesterday"}, "event.invalid"),
        ({**ok, "ts": float("nan")}, "event.invalid"),
        ({**ok, "ts": float("inf")}, "event.invalid"),
        ({**ok, "ts": -1e12}, "event.invalid"),  # before 2000: a unit mistake
        ({**ok, "ts": 1e11}, "event.invalid"),  # milliseconds, or centuries ahead
        ({**ok, "attachments": [{"name": "a.pdf", "size": -1}]}, "event.invalid"),
        ({**ok, "attachments": [{"name": "a.pdf", "size": "12 KB"}]}, "event.invalid"),
        ({**ok, "attachments": [{"name": "a.pdf", "size": 1e30}]}, "event.invalid"),
        ({**ok, "attachments": [{"name": ["a.pdf"]}]}, "event.invalid"),
        ({**ok, "attachments": ["a.pdf"]}, "event.invalid"),
        ({**ok, "attachments": [{"name": "a", "url": "javascript:alert(1)"}]}, "event.invalid"),
        ({**ok, "attachments": [{"name": "a", "url": "http://plain.example/a"}]}, "event.invalid"),
        ({**ok, "attachments": [{"name": "a", "url": "https://x.example/a b"}]}, "event.invalid"),
        (
            {**ok, "attachments": [{"name": "a", "url": "https://x.example/" + "a" * 2000}]},
            "event.invalid",
        ),
        ({**ok, "attributes": [1, 2]}, "event.invalid"),
        ({**ok, "id": "has space"}, "event.invalid"),
        ({**ok, "id": 17}, "event.invalid"),
        ({k: v for k, v in ok.items() if k != "id"}, "event.invalid"),
        ({**ok, "seq": "3"}, "event.invalid"),
        ({**ok, "text": "x" * (64 * 1024 + 1)}, "event.too_large"),
        ({**ok, "subject": 5}, "event.invalid"),
        ({**ok, "channel": "fax"}, "event.invalid"),
        ({**ok, "channel": ["chat"]}, "event.invalid"),
        ({**ok, "channel": None}, "event.invalid"),
    ]


async def test_bad_events_store_nothing(stack: Stack, bridge: WsClient) -> None:
    log_len = await stack.redis.xlen(keys.log("acme"))
    for ev, code in _bad_events():
        await bridge.fails("event", code, **ev)
        if isinstance(ev.get("id"), str):
            await nothing_stored(stack, ev["id"])
    assert await stack.redis.xlen(keys.log("acme")) == log_len
    for bad_id in (5, "abc", "1-2-3", "9" * 50):
        await bridge.fails("delivered", "frame.invalid", id=bad_id)


async def test_bad_widget_frames(stack: Stack) -> None:
    widget, welcome = await stack.chat()
    await widget.fails("message", "frame.invalid", text="")
    await widget.fails("message", "frame.invalid", text=["hi"])
    await widget.fails("message", "frame.invalid", text="x" * 8001)
    await widget.fails("identify", "event.invalid", email="not-an-email")
    await widget.fails(
        "identify", "identity.unverified", email="a@b.example", identity_hash="0" * 64
    )
    await widget.fails("identify", "frame.invalid", email="a@b.example", identity_hash=7)
    await widget.fails(
        "identify", "identity.unverified", email="a@b.example", identity_hash="é" * 9
    )
    await widget.fails("identify", "frame.invalid", name="Only A Name", identity_hash="0" * 64)
    await widget.fails("identify", "frame.invalid", email="a@b.example", name="N" * 201)
    await widget.fails("message", "frame.invalid", text="hi", id="x" * 65)
    await widget.fails("message", "frame.invalid", text="hi", id=17)
    assert (await widget.ok("identify", name="N"))["claims"] == []  # the refused ones left none
    assert (await widget.ok("end")).keys() == {"type", "ref"}  # nothing to end yet
    assert not await stack.redis.hget(keys.threads("acme"), "chat:" + welcome["visitor"])


# -- somebody else's things ----------------------------------------------------------------------


async def test_another_agents_offer_and_case(stack: Stack, bridge: WsClient) -> None:
    owner, _ = await stack.agent("mine1", status="available")
    ack = await bridge.ok("event", **event("mine"))
    offer = await owner.offer_for(ack["case"])
    other, _ = await stack.agent("mine2", status="available")
    await other.fails("offer.accept", "offer.unknown", offer=offer["offer"])
    await other.fails("offer.reject", "offer.unknown", offer=offer["offer"])
    assert await offer_state(stack.redis, "acme", offer["offer"]) == "pending"
    await owner.ok("offer.accept", offer=offer["offer"])

    case, cust = ack["case"], ack["customer"]
    before = await stack.case(case)
    timeline = await stack.redis.llen(keys.customer_timeline("acme", cust))
    actions: list[tuple[str, dict[str, Any]]] = [
        ("case.reply", {"text": "hijack"}),
        ("case.note", {"text": "hijack"}),
        ("case.transfer", {"queue": "mine"}),
        ("case.wrapup", {}),
        ("case.complete", {"disposition": "resolved"}),
        ("case.followup", {"in_s": 1}),
        ("case.reopen", {}),
    ]
    for type_, fields in actions:
        await other.fails(type_, "case.unknown", case=case, **fields)
    await other.fails("history.fetch", "customer.unknown", customer=cust)
    for type_, fields in [
        ("stats.fetch", {}),
        ("case.move", {"case": case, "queue": "mine"}),
        ("agent.status", {"agent": "mine1", "status": "offline"}),
    ]:
        await other.fails(type_, "forbidden", **fields)
    assert await stack.case(case) == before
    assert await stack.redis.llen(keys.customer_timeline("acme", cust)) == timeline
    assert await stack.redis.hget(keys.agent("acme", "mine1"), "st") == b"available"
    assert [f["type"] for f in owner.unsolicited()] == ["offer"]


async def test_stale_and_repeated_answers_to_offers(stack: Stack, bridge: WsClient) -> None:
    console, _ = await stack.agent("stale1", status="available")

    async def new_offer(**kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        ack = await bridge.ok("event", **event("stale", **kw))
        return ack, await console.offer_for(ack["case"])

    _, rejected = await new_offer()
    await console.ok("offer.reject", offer=rejected["offer"])
    await console.fails("offer.accept", "offer.rejected", offer=rejected["offer"])

    ack, accepted = await new_offer()
    await console.ok("offer.accept", offer=accepted["offer"])
    assert (await console.ok("offer.accept", offer=accepted["offer"]))["duplicate"] is True
    await console.fails("offer.reject", "offer.accepted", offer=accepted["offer"])
    await console.ok("case.complete", case=ack["case"])
    refused = await console.fails("case.reply", "case.completed", case=ack["case"], text="late")
    assert refused["message"] == "the case is completed"  # said as a person reads it
    await console.fails("case.wrapup", "case.completed", case=ack["case"])

    thread, email = uid("t"), f"{uid()}@example.com"
    ack, rescinded = await new_offer(thread=thread, email=email)
    await bridge.ok(
        "event", **event("stale", thread=thread, email=email, kind="conversation.ended", text="")
    )
    await console.expect("offer.rescinded", offer=rescinded["offer"])
    await console.fails("offer.accept", "offer.rescinded", offer=rescinded["offer"])
    await console.fails("offer.reject", "offer.rescinded", offer=rescinded["offer"])
    await console.fails("offer.accept", "offer.unknown", offer="o999999999")

    bea, _ = await stack.agent("bea", workspace="brisk", status="available")
    widget, _ = await stack.chat(workspace="brisk")
    late = await bea.offer_for((await widget.ok("message", text="hello?"))["case"])
    await bea.expect("offer.rescinded", offer=late["offer"], reason="timeout")
    timed_out = await bea.fails("offer.accept", "offer.timeout", offer=late["offer"])
    assert timed_out["message"] == "the offer has timed out"
    assert await stack.redis.smembers(keys.agent_cases("brisk", "bea")) == set()


async def test_nothing_crosses_workspaces(stack: Stack, bridge: WsClient) -> None:
    owner, _ = await stack.agent("scope1", status="available")
    ack = await bridge.ok("event", **event("scope"))
    offer = await owner.offer_for(ack["case"])
    assert not await stack.redis.exists(keys.case("brisk", keys.offer_case(offer["offer"])))
    bea, _ = await stack.agent("bea", workspace="brisk")
    await bea.fails("offer.accept", "offer.unknown", offer=offer["offer"])
    await bea.fails("case.reply", "case.unknown", case=ack["case"], text="hi")
    await bea.fails("history.fetch", "customer.unknown", customer=ack["customer"])
    await owner.ok("offer.accept", offer=offer["offer"])

    # a bridge is scoped to its workspace and its channels
    ev = event("scope")
    await bridge.fails("event", "bridge.workspace", workspace="brisk", **ev)
    await nothing_stored(stack, ev["id"], "brisk")
    await nothing_stored(stack, ev["id"], "acme")
    chat_only = await stack.bridge(key=CHAT_ONLY_KEY)
    await chat_only.fails("event", "bridge.channel", **{**ev, "channel": "email"})
    await chat_only.fails("event", "bridge.channel", **{**ev, "channel": "voice"})
    await nothing_stored(stack, ev["id"])
    # nothing was recorded: the same id, sent properly, is new
    assert (await bridge.ok("event", workspace="acme", **ev))["duplicate"] is False


async def test_a_bridges_threads_and_event_ids_are_its_own(stack: Stack, bridge: WsClient) -> None:
    """Two gateways that both number their conversations (or reuse event ids), and a bridge
    that sends a web chat visitor's id as its thread: none of them joins another's case, puts
    text on another customer's history, or is taken for a repeat of another's event. Naming a
    case another source opened, or one that does not exist, is refused, and stores nothing."""
    thread, eid = uid("conv-"), uid("e")
    mine = await bridge.ok("event", **event("iso", eid=eid, thread=thread, text="card 4111"))
    theirs = stack.track(await connect_bridge(stack.nodes[0].ws_url, OTHER_CHAT_KEY))
    other = await theirs.ok("event", **event("iso", eid=eid, thread=thread, text="hello"))
    assert (other["action"], other["duplicate"]) == ("created", False)
    assert other["case"] != mine["case"]
    again = await bridge.ok("event", **event("iso", thread=thread, email=uid("x") + "@a.b"))
    assert again["case"] == mine["case"]  # its own thread goes on as before

    history = keys.customer_timeline("acme", mine["customer"])
    before = await stack.redis.llen(history)
    await theirs.fails("event", "case.unknown", **event("iso", case=mine["case"], eid=uid("e")))
    widget, welcome = await stack.chat()
    chat = await widget.ok("message", text="hi, I am the visitor")
    nowhere = ({"case": mine["case"][:-4] + "ffff"}, {"case": "../x y"}, {"case": "c-nope"})
    for named in ({"thread": welcome["visitor"]}, {"case": chat["case"]}, *nowhere):
        ev = event("iso", text="STRANGER TEXT", **named)
        if "case" in named:
            await bridge.fails("event", "case.unknown", **ev)
            await nothing_stored(stack, ev["id"])
        else:
            assert (await bridge.ok("event", **ev))["case"] != chat["case"]
    assert await stack.redis.llen(history) == before
    # nor its visitor: a bridge's visitor of the same id is another person, not the widget's
    their_visitor = await bridge.ok(
        "event", **{**event("iso"), "identities": {"visitor": welcome["visitor"]}}
    )
    assert their_visitor["customer"] != (await stack.case(chat["case"]))["cust"]
    widget2 = await stack.chat(token=welcome["token"])
    texts = [m["text"] for m in widget2[1].get("messages", [])]
    assert "STRANGER TEXT" not in texts


# -- who may connect ------------------------------------------------------------------------------


async def test_tokens(stack: Stack) -> None:
    base, url = stack.nodes[0].ws_url, stack.nodes[0].url
    for bad, code in [
        (token("frames1", age_s=3600), "auth.expired"),
        (token("frames1", secret="not-the-secret"), "auth.invalid"),
        ("garbage", "auth.invalid"),
        ("", "auth.invalid"),
        (token("frames1", kind="session"), "auth.invalid"),
        (token("frames1", kind="visitor"), "auth.invalid"),
        (token("ghost"), "agent.unknown"),
        (token("frames1", ws="nowhere"), "agent.unknown"),
    ]:
        await refused(stack.track(await connect_agent(base, bad)), code)
    assert (await stack.agent("frames1"))[1]["type"] == "hello"  # a good token still works

    for bad, code in [
        (token("v123", kind="visitor", secret="not-the-secret"), "auth.invalid"),
        (token("v123", kind="visitor", age_s=40 * 86400), "auth.expired"),
        (token("frames1"), "auth.invalid"),
    ]:
        await refused(stack.track(await connect_chat(base, token=bad)), code)
    await refused(stack.track(await connect_chat(base, workspace="nowhere")), "workspace.unknown")

    expired = token("frames1", kind="session", age_s=13 * 3600)
    r = await stack.http.post(f"{url}/api/ws-token", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and r.json()["code"] == "auth.expired"
    for body in ("{oops", "[1]"):
        r = await stack.http.post(f"{url}/api/login", content=body)
        assert r.status_code == 400 and r.json()["code"] == "body.invalid"


async def test_a_connect_token_is_spent_once_and_never_logged(stack: Stack) -> None:
    base = stack.nodes[0].ws_url
    good = await stack.ws_token("frames1")
    first = stack.track(await connect_agent(base, good))
    assert (await first.expect("hello"))["type"] == "hello"
    await refused(stack.track(await connect_agent(base, good)), "auth.reused")
    await first.close()
    assert good not in stack.nodes[0].log()


async def test_foreign_origin(stack: Stack) -> None:
    base, mine = stack.nodes[0].ws_url, stack.nodes[0].url
    good = await stack.ws_token("frames1")
    evil = "https://evil.example"
    await refused(stack.track(await connect_agent(base, good, origin=evil)), "origin.forbidden")
    await refused(
        stack.track(await connect_chat(base, workspace="acme", origin=evil)), "origin.forbidden"
    )
    console = stack.track(await connect_agent(base, good, origin=mine))
    assert (await console.recv())["type"] == "hello"
    widget = stack.track(await connect_chat(base, workspace="acme", origin=mine))
    assert (await widget.recv())["type"] == "welcome"


async def test_unsupported_subprotocol(stack: Stack) -> None:
    base = stack.nodes[0].ws_url
    headers = {"Authorization": f"Bearer {BRIDGE_KEY}"}
    for path in (
        f"/ws/agent?token={await stack.ws_token('frames1')}",
        "/ws/bridge",
        "/ws/chat?workspace=acme",
    ):
        client = stack.track(
            await open_ws(base + path, headers=headers, subprotocols=["switchboard.v2.json"])
        )
        await refused(client, "subprotocol.unsupported")


async def test_bridge_keys(stack: Stack) -> None:
    base = stack.nodes[0].ws_url
    for headers in (
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Basic {BRIDGE_KEY}"},
    ):
        client = stack.track(await open_ws(f"{base}/ws/bridge", MSGPACK, headers=headers))
        await refused(client, "auth.invalid")
    client = stack.track(await connect_bridge(base, "chat-only-key"))
    assert (await client.ok("ping"))["ts"] > 0


# -- limits ----------------------------------------------------------------------------------------


async def test_frames_over_the_size_limit_close_1009(stack: Stack) -> None:
    base = stack.nodes[0].ws_url
    console, _ = await stack.agent("limits1", codec=MSGPACK)
    await console.ok("ping", pad=b"x" * 250_000)  # under 256 KiB: fine
    await console.send_raw(msgpack.packb({"type": "ping", "pad": b"x" * 256 * 1024}))
    assert await console.closed() == 1009

    # the limit counts bytes on the wire, not characters
    console, _ = await stack.agent("limits1", codec=JSON)
    await console.send_raw(json.dumps({"type": "ping", "pad": "€" * 90_000}, ensure_ascii=False))
    assert await console.closed() == 1009

    widget, _ = await stack.chat()
    await widget.ok("ping", pad="x" * 60_000)
    await widget.send_raw(json.dumps({"type": "message", "text": "x" * 64 * 1024}))
    assert await widget.closed() == 1009

    big = await stack.bridge(key=CHAT_ONLY_KEY)
    await big.ok("ping", pad=b"x" * 1_000_000)
    await big.send_raw(msgpack.packb({"type": "ping", "pad": b"x" * 1024 * 1024}))
    assert await big.closed() == 1009

    again = stack.track(await connect_agent(base, await stack.ws_token("limits1")))
    assert (await again.recv())["type"] == "hello"


async def test_the_longest_text_in_any_script_fits_a_frame_and_a_longer_one_is_refused(
    stack: Stack,
) -> None:
    """A chat message of 8,000 characters and a reply of 32,000 fit their endpoint's frame in
    any script, as a browser sends them (UTF-8: an emoji is 4 bytes) or escaped as JSON's
    \\uXXXX (6 bytes). Over the length, the text is refused with a typed error and the
    connection stays, rather than being closed for the frame's size."""

    async def answer(client: WsClient, frame: dict[str, Any], *, ascii_only: bool) -> Frame:
        ref = f"big{len(frame['text'])}{ascii_only}"
        await client.send_raw(json.dumps({**frame, "ref": ref}, ensure_ascii=ascii_only))
        return await client.answer(ref)

    widget, _ = await stack.chat()
    ack = await answer(widget, {"type": "message", "text": "😀" * 8000}, ascii_only=False)
    assert ack["type"] == "ack" and ack["case"], ack
    escaped = await answer(widget, {"type": "message", "text": "€" * 8000}, ascii_only=True)
    assert escaped["type"] == "ack", escaped
    over = await answer(widget, {"type": "message", "text": "😀" * 8001}, ascii_only=False)
    assert (over["type"], over["code"]) == ("error", "frame.invalid"), over
    await widget.ok("ping")  # still open

    console, _ = await stack.agent("limits2", codec=JSON)
    for text, ascii_only in (("😀" * 32_001, False), ("€" * 32_001, True)):
        frame = {"type": "case.note", "case": ack["case"], "text": text}
        refused = await answer(console, frame, ascii_only=ascii_only)
        assert (refused["type"], refused["code"]) == ("error", "frame.invalid"), refused
    await console.ok("ping")


async def test_text_that_is_not_utf8_closes_1007_with_one_line_logged(stack: Stack) -> None:
    """Anyone can send the chat endpoint a text frame that is not UTF-8: it is closed 1007, and
    the log says so in one line, not an ERROR with a traceback for each."""
    widget, _ = await stack.chat()
    await widget.ws.send(b'{"type":"message","text":"\xff\xfe"}', text=True)
    assert await widget.closed() == 1007
    log = stack.nodes[0].log()
    assert "a text frame that is not UTF-8" in log
    assert "Invalid UTF-8 sequence" not in log and "UnicodeDecodeError" not in log
    again, _ = await stack.chat()  # nothing else noticed
    await again.ok("ping")


async def test_rate_limit_then_close_1008(stack: Stack) -> None:
    console, _ = await stack.agent("limits2")
    # a burst over the limit: every frame is answered, the excess with rate_limited
    refs = [await console.send("ping") for _ in range(250)]
    answers = [await console.answer(ref) for ref in refs]
    codes = [a.get("code", "ack") for a in answers]
    assert {"ack", "rate_limited"} == set(codes), set(codes)
    assert codes[0] == "ack"

    async def refilled() -> bool:
        answer = await console.request("ping")
        return bool(answer["type"] == "ack")

    await wait_for(refilled, 5, interval=0.1)  # the bucket refills; the connection lives on

    # persistent flooding closes the connection with 1008
    flood, _ = await stack.agent("limits2")
    try:
        for _ in range(2000):
            await flood.send("ping")
    except ConnectionClosed:
        pass
    assert await flood.closed() == 1008
    still, _ = await stack.agent("limits2")
    await still.ok("ping")


def test_default_origins_are_the_servers_own_address() -> None:
    from router.config import Settings

    assert Settings(port=8020).origins() == ("http://127.0.0.1:8020", "http://localhost:8020")
    assert Settings(host="cc.example", port=443).origins() == ("http://cc.example:443",)
    assert Settings(allowed_origins=("https://app.example",)).origins() == ("https://app.example",)


async def test_an_attachment_name_cannot_hide_its_extension(stack: Stack, bridge: WsClient) -> None:
    """Bidi overrides, zero-width and control characters are taken out of attachment names:
    "invoice\u202egnp.exe" would otherwise show to an agent as "invoiceexe.png"."""
    ev = event("frames", text="see attached")
    ev["attachments"] = [{"name": "invoice\u202egnp.exe", "type": "application/pdf", "size": 10},
                         {"name": "\u2067a\u200b.txt\x07", "size": 0},
                         {"name": "invoice.pdf" + " " * 195 + "\u2028.exe"},
                         {"name": "x" * 300 + ".exe"}]  # fmt: skip
    ack = await bridge.ok("event", **ev)
    raw = await stack.redis.lrange(keys.customer_timeline("acme", ack["customer"]), -1, -1)
    names = [a["name"] for a in json.loads(raw[0])["attachments"]]
    assert names == ["invoicegnp.exe", "a.txt", "invoice.pdf .exe", "x" * 196 + ".exe"]
