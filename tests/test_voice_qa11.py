"""Voice calls and agent states as a contact center's shift runs them (QA round 11).

End to end: a real ``switchboard serve --adapters twilio`` on the suite's real Redis, signed
Twilio webhooks over real HTTP, a generic bridge and agent consoles on real WebSockets, and the
recording stand-in for api.twilio.com from tests/test_twilio.py. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from router import keys
from tests import test_twilio
from tests.server import BRIDGE_KEY, ServerProcess
from tests.test_twilio import (
    CALLER,
    NUMBER,
    PUBLIC,
    WS,
    TwilioApi,
    call,
    case_of,
    new_sid,
    phone_agents,
    status,
    twiml,
    webhook,
)
from tests.test_twilio import (
    start_server as twilio_server,
)
from tests.util import wait_for
from tests.ws_client import JSON, WsClient, connect_agent, connect_bridge, uid


def start_server(tmp_path: Path, redis_server: str, api: TwilioApi) -> ServerProcess:
    agents = [
        *phone_agents(),
        {
            "id": "sue",
            "name": "Sue",
            "password": "pw",
            "role": "supervisor",
            "attributes": {"skills": []},
            "capacity": {},
        },
    ]
    return twilio_server(tmp_path, redis_server, api, agents=agents)


twilio_api = test_twilio.twilio_api  # its fake Twilio REST API, a fixture


@pytest.fixture
def server(
    tmp_path: Path, redis: Redis, redis_server: str, twilio_api: TwilioApi
) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path, redis_server, twilio_api)
    yield srv
    srv.stop()
    print(srv.log()[-6000:])  # shown when the test failed


async def console(
    srv: ServerProcess, who: str, status: str | None = "available", client: str = ""
) -> WsClient:
    login = await asyncio.to_thread(srv.login, who)
    ws = await connect_agent(srv.ws_url, login["ws_token"], origin=srv.url, client=client)
    await ws.expect("hello")
    if status:
        await ws.ok("status", status=status)
    return ws


@pytest.fixture
async def consoles(server: ServerProcess) -> AsyncIterator[list[WsClient]]:
    """Consoles a test opened, closed when it ends."""
    opened: list[WsClient] = []
    yield opened
    for ws in opened:
        await ws.close()


def hold_round(root: ET.Element) -> bool:
    """Whether TwiML keeps the caller holding: it ends with the redirect to the next round."""
    return (
        root[-1].tag == "Redirect" and root[-1].text == f"{PUBLIC}/voice/twilio/hold?workspace={WS}"
    )


async def dialed(
    srv: ServerProcess, sid: str, agent_id: str, dial_status: str = "completed"
) -> ET.Element:
    """Twilio asks the <Dial action> URL what next: the agent's leg of the call ended."""
    params = call(sid, CallStatus="in-progress", DialCallStatus=dial_status)
    return twiml(await webhook(srv, "dialed", params, query=f"workspace={WS}&agent={agent_id}"))


# -- a generic bridge's callback -------------------------------------------------------------------


async def test_call_connect_of_a_callback_tells_the_bridge_whom_to_call_back(
    server: ServerProcess, consoles: list[WsClient]
) -> None:
    """A caller on a bridge's platform presses 1 and hangs up. The agent who accepts has no
    live call to be put through to: the bridge's call.connect says so (``callback``) and names
    the number to dial and the number the caller had called, which it used to leave out — the
    bridge would try to connect a call that no longer exists."""
    bridge = await connect_bridge(server.ws_url, BRIDGE_KEY)
    try:
        thread = uid("pbx-")
        ack = await bridge.ok(
            "event", id=uid("e"), channel="voice", kind="call.offered", thread=thread,
            identities={"phone": CALLER}, attributes={"to": NUMBER}, text="Inbound call",
        )  # fmt: skip
        await bridge.ok(
            "event", id=uid("e"), channel="voice", kind="callback.requested", thread=thread,
            identities={"phone": CALLER}, attributes={"callback_number": "+14155550188"},
        )  # fmt: skip
        ended = await bridge.ok(
            "event", id=uid("e"), channel="voice", kind="call.ended", thread=thread, seq=4,
            identities={"phone": CALLER},
        )  # fmt: skip
        assert ended["action"] == "appended"  # a callback keeps its place in line

        ann = await console(server, "ann")
        consoles.append(ann)
        offer = await ann.offer_for(ack["case"])
        await ann.ok("offer.accept", offer=offer["offer"])
        connect = await bridge.expect("call.connect", case=ack["case"])
        assert connect["callback"] is True
        assert connect["callback_number"] == "+14155550188"
        assert connect["to"] == NUMBER
        await bridge.ok("delivered", id=connect["id"])

        # a live call's connect carries no callback
        live = await bridge.ok(
            "event", id=uid("e"), channel="voice", kind="call.offered", thread=uid("pbx-"),
            identities={"phone": "+14155550177"}, text="Inbound call",
        )  # fmt: skip
        await ann.ok("case.complete", case=ack["case"])
        offer = await ann.offer_for(live["case"])
        await ann.ok("offer.accept", offer=offer["offer"])
        connect = await bridge.expect("call.connect", case=live["case"])
        assert "callback" not in connect and "callback_number" not in connect
        await bridge.ok("delivered", id=connect["id"])
    finally:
        await bridge.close()


# -- the hold loop ends when nobody will come ---------------------------------------------------


async def test_a_caller_still_holding_when_the_case_closes_is_told_and_the_call_ends(
    server: ServerProcess, redis: Redis, twilio_api: TwilioApi, consoles: list[WsClient]
) -> None:
    """The agent accepted, but the call could not be put through to them (Twilio refused the
    update), so the caller went on holding; the agent completed the case. Every hold round
    used to answer the same hold loop, so the caller held for good with nobody coming. Now a
    round looks at the case: waiting or being connected, hold; closed, say so and hang up."""
    twilio_api.fail_with = 400
    sid = new_sid()
    twiml(await webhook(server, "incoming", call(sid)))
    assert hold_round(twiml(await webhook(server, "hold", call(sid))))  # queued: hold

    ann = await console(server, "ann")
    consoles.append(ann)
    offer = await ann.expect("offer")
    assert hold_round(twiml(await webhook(server, "hold", call(sid))))  # offered: hold
    await ann.ok("offer.accept", offer=offer["offer"])
    await wait_for(lambda: twilio_api.calls(f"/Calls/{sid}.json"), timeout=10)
    # accepted and being connected: the call update ends the loop
    assert hold_round(twiml(await webhook(server, "hold", call(sid))))
    # any other key on hold goes through the same look
    assert hold_round(twiml(await webhook(server, "gather", call(sid, Digits="7"))))

    await ann.ok("case.complete", case=offer["case"]["id"], disposition="resolved")
    root = twiml(await webhook(server, "hold", call(sid)))
    assert [v.tag for v in root] == ["Say", "Hangup"]
    assert "no one can take your call" in (root[0].text or "")
    root = twiml(await webhook(server, "gather", call(sid, Digits="7")))
    assert [v.tag for v in root] == ["Say", "Hangup"]
    assert (await case_of(redis, sid))["st"] == "completed"  # a hold round changes nothing

    # a call no case has (never ingested here) is not held either; a bad CallSid is refused
    root = twiml(await webhook(server, "hold", call(new_sid())))
    assert root[-1].tag == "Hangup"
    r = await webhook(server, "hold", call("CA-not-a-call-sid"))
    assert r.status_code == 400 and r.text.startswith("twilio.invalid")


# -- transfers -----------------------------------------------------------------------------------


async def test_the_agent_hanging_up_after_a_transfer_puts_the_caller_back_on_hold(
    server: ServerProcess, redis: Redis, twilio_api: TwilioApi, consoles: list[WsClient]
) -> None:
    """Ann takes the call, transfers it to Sales and hangs up her softphone. The <Dial> that
    connected her was the call's last verb, so her hanging up ended the caller's call too,
    and the transferred case was abandoned. Now the <Dial> asks /voice/twilio/dialed what
    next: a transferred call goes back on hold until Bob accepts it; a call whose agent simply
    hangs up ends."""
    sid = new_sid()
    twiml(await webhook(server, "incoming", call(sid)))
    ann = await console(server, "ann")
    consoles.append(ann)
    offer = await ann.expect("offer")
    case = offer["case"]["id"]
    await ann.ok("offer.accept", offer=offer["offer"])
    got = await wait_for(lambda: twilio_api.calls(f"/Calls/{sid}.json"), timeout=10)
    assert isinstance(got, list)
    dial = ET.fromstring(got[0].form["Twiml"]).find("Dial")
    assert dial is not None
    assert dial.get("action") == f"{PUBLIC}/voice/twilio/dialed?workspace={WS}&agent=ann"
    assert dial.get("method") == "POST"

    await ann.ok("case.transfer", case=case, queue="sales", note="wants a quote")
    root = await dialed(server, sid, "ann")  # Ann hangs up her leg
    assert hold_round(root)
    assert "transfer" in (root[0][0].text or "").lower()  # "Please hold while we transfer…"
    ended = await webhook(server, "status", status(sid, "in-progress", 5))
    assert ended.json()["action"] == "ignored"
    assert (await case_of(redis, sid))["st"] == "queued"  # still in line, not abandoned

    bob = await console(server, "bob")
    consoles.append(bob)
    offer = await bob.offer_for(case)
    await bob.ok("offer.accept", offer=offer["offer"])
    got = await wait_for(lambda: len(twilio_api.calls(f"/Calls/{sid}.json")) == 2, timeout=10)
    bridged = twilio_api.calls(f"/Calls/{sid}.json")[-1]
    sip = ET.fromstring(bridged.form["Twiml"]).find("Dial/Sip")
    assert sip is not None and sip.text == "sip:bob@pbx.example.test"
    # Ann's leg ending late, when Bob is being connected: the caller holds for him
    assert hold_round(await dialed(server, sid, "ann"))

    # Bob's conversation ends when he hangs up: the call ends, without a word
    root = await dialed(server, sid, "bob")
    assert [v.tag for v in root] == ["Hangup"]
    # and an agent who never answers their leg: the caller is told before the call ends
    root = await dialed(server, sid, "bob", "no-answer")
    assert [v.tag for v in root] == ["Say", "Hangup"]


async def test_handing_on_a_call_whose_caller_hung_up_makes_it_a_callback(
    server: ServerProcess, redis: Redis, twilio_api: TwilioApi, consoles: list[WsClient]
) -> None:
    """The caller hangs up while talking to Ann, who transfers the case to Bob for the follow
    up. Bob was offered it as a live incoming call and, accepting, had Twilio asked to connect
    a call that had ended (a 4xx, logged; nobody called anyone). Now the case is a callback for
    the number the caller called from: Bob's offer says so, and accepting rings Bob, then the
    customer."""
    sid = new_sid()
    twiml(await webhook(server, "incoming", call(sid)))
    ann = await console(server, "ann")
    consoles.append(ann)
    offer = await ann.expect("offer")
    case = offer["case"]["id"]
    await ann.ok("offer.accept", offer=offer["offer"])
    await wait_for(lambda: twilio_api.calls(f"/Calls/{sid}.json"), timeout=10)
    r = await webhook(server, "status", status(sid, "completed", 6, CallDuration="40"))
    assert r.json()["action"] == "appended"
    await ann.expect("case.updated", case=case, event="call.ended")

    bob = await console(server, "bob")
    consoles.append(bob)
    await ann.ok("case.transfer", case=case, agent="bob", note="call him about the quote")
    offer = await bob.offer_for(case)
    assert offer["case"]["callback"] == "1"
    assert offer["case"]["callback_reason"] == "hung_up"  # not asked for: "the caller hung up"
    assert offer["case"]["attributes"]["callback_number"] == CALLER
    await bob.ok("offer.accept", offer=offer["offer"])
    got = await wait_for(lambda: twilio_api.calls("/Calls.json"), timeout=10)
    assert isinstance(got, list) and len(got) == 1
    assert got[0].form["To"] == "sip:bob@pbx.example.test" and got[0].form["From"] == NUMBER
    number = ET.fromstring(got[0].form["Twiml"]).find("Dial/Number")
    assert number is not None and number.text == CALLER
    assert len(twilio_api.calls(f"/Calls/{sid}.json")) == 1  # the ended call is left alone
    attrs = json.loads((await case_of(redis, sid))["attrs"])
    assert attrs["callback_number"] == CALLER and attrs["to"] == NUMBER

    # a live call handed on stays a live call (no callback)
    live = new_sid()
    twiml(await webhook(server, "incoming", call(live, caller="+14155550166")))
    await bob.ok("case.complete", case=case)
    offer = await ann.expect("offer")
    await ann.ok("offer.accept", offer=offer["offer"])
    await ann.ok("case.transfer", case=offer["case"]["id"], agent="bob")
    moved = await bob.offer_for(offer["case"]["id"])
    assert "callback" not in moved["case"]


# -- agent states ---------------------------------------------------------------------------------


async def test_a_supervisor_cannot_make_a_signed_out_agent_available(
    server: ServerProcess, redis: Redis, consoles: list[WsClient]
) -> None:
    """Sue picked Bob's row by mistake and set him available: he was not signed in, yet calls
    rang him (15 s each, three misses before he went away), while the callers waited. A
    routable status for an agent with no console (nor reconnect grace) is refused with a typed
    error and changes nothing; a status that takes no work is fine, and so is making him
    available once he is signed in."""
    sue = await console(server, "sue", status=None, client="supervisor")
    consoles.append(sue)
    err = await sue.fails("agent.status", "agent.signed_out", agent="bob", status="available")
    assert "not signed in" in err["message"]
    assert await redis.hget(keys.agent(WS, "bob"), "st") == b"offline"

    sid = new_sid()
    twiml(await webhook(server, "incoming", call(sid), query=f"workspace={WS}&topic=sales"))
    assert (await case_of(redis, sid))["st"] == "queued"  # rings nobody
    assert (await sue.ok("agent.status", agent="bob", status="away"))["status"] == "away"

    bob = await console(server, "bob", status=None)
    consoles.append(bob)
    assert (await sue.ok("agent.status", agent="bob", status="available"))["status"] == "available"
    assert (await bob.expect("status"))["reason"] == "supervisor"
    offer = await bob.expect("offer")
    assert offer["case"]["id"] == (await case_of(redis, sid))["id"]

    # within his reconnect grace (a dropped connection) he counts as signed in
    await sue.ok("agent.status", agent="bob", status="away")
    await bob.close()
    consoles.remove(bob)
    await wait_for(lambda: _no_connections(redis, "bob"), message="bob's console not gone")
    assert (await sue.ok("agent.status", agent="bob", status="available"))["status"] == "available"


async def _no_connections(redis: Redis, who: str) -> bool:
    return int(await redis.hlen(keys.agent_conns(WS, who))) == 0


# -- bad input ------------------------------------------------------------------------------------


async def test_a_seq_out_of_range_is_refused_and_the_hang_up_still_applies(
    server: ServerProcess, redis: Redis
) -> None:
    """A bridge sent seq=10**30 by mistake: it was taken, and every later status of the call —
    its hang-up — was answered "stale" and never applied, so a caller who had gone kept being
    offered to agents. A negative seq was dropped as stale at once. Both are now refused
    (event.invalid), change nothing, and the call's real statuses apply."""
    bridge = await connect_bridge(server.ws_url, BRIDGE_KEY, JSON)  # msgpack stops at 2**64
    try:
        thread = uid("pbx-")
        base: dict[str, Any] = {
            "channel": "voice",
            "thread": thread,
            "identities": {"phone": CALLER},
        }
        ack = await bridge.ok("event", id=uid("e"), kind="call.offered", seq=0, **base)
        for bad in (10**30, 2**53, -1):
            err = await bridge.fails(
                "event", "event.invalid", id=f"{thread}-bad", kind="callback.requested",
                seq=bad, **base,
            )  # fmt: skip
            assert "seq" in err["message"]
        case = await redis.hgetall(keys.case(WS, ack["case"]))
        assert case[b"st"] == b"queued" and case[b"seq"] == b"0" and b"callback" not in case
        # refused, so not even its idempotency key is kept: the same id sent right is new
        fixed = await bridge.ok(
            "event", id=f"{thread}-bad", kind="callback.requested", seq=1, **base
        )
        assert fixed["action"] == "appended" and not fixed["duplicate"]
        ended = await bridge.ok("event", id=uid("e"), kind="call.ended", seq=2**53 - 1, **base)
        assert ended["action"] == "appended"  # a callback keeps its place; the seq was applied
        assert await redis.hget(keys.case(WS, ack["case"]), "seq") == str(2**53 - 1).encode()
    finally:
        await bridge.close()


async def test_status_and_callback_entries_name_the_caller(
    server: ServerProcess, redis: Redis
) -> None:
    """The history showed the call's later entries ("Callback requested", "Call ended") from
    "Customer" while the call itself was from the caller's name: Twilio sends CallerName with
    every webhook, and the entries now carry it."""
    sid = new_sid()
    twiml(await webhook(server, "incoming", call(sid, CallerName="KIM LEE")))
    twiml(await webhook(server, "gather", call(sid, CallerName="KIM LEE", Digits="1")))
    await webhook(server, "status", status(sid, "completed", 3, CallerName="KIM LEE"))
    cust = (await case_of(redis, sid))["cust"]
    entries = [json.loads(e) for e in await redis.lrange(keys.customer_timeline(WS, cust), 0, -1)]
    assert [(e["kind"], e.get("from")) for e in entries] == [
        ("call.offered", "KIM LEE"),
        ("callback.requested", "KIM LEE"),
        ("call.ended", "KIM LEE"),
    ]
