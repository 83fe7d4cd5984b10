"""The routing core end to end on real Redis: ingest → triage → queue → offer → accept → done."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from router import keys, queries, snapshot
from router.errors import BadRequest, Conflict, NotFound
from router.push import offer_frame
from router.stats import Stats
from router.store import Store, connect, now_ms
from router.switch import Switch
from tests.switchboard_fixtures import DECL, Inbox, agent, chat


async def setup(sw: Switch, *agents: dict[str, Any]) -> None:
    await sw.apply_workspace({**DECL, "agents": list(agents)})


async def case_field(sw: Switch, case: str, field: str) -> str | None:
    v = await sw.redis.hget(f"sb:{{acme}}:c:{case}", field)
    return v.decode() if v else None


async def test_available_agent_gets_offer_and_full_lifecycle(switch: Switch, inbox: Inbox) -> None:
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1"))
    assert r.action == "created" and not r.duplicate
    offer = inbox.last_offer("ann")
    assert offer["case"]["id"] == r.case
    assert offer["case"]["queue"] == "support"
    assert offer["customer"]["identities"] == ["email:alice@example.com"]
    assert [e["text"] for e in offer["timeline"]] == ["hello"]
    assert offer["why"]["queue"] == "support"
    await switch.accept("acme", "ann", offer["offer"])
    assert await case_field(switch, r.case, "st") == "assigned"
    await switch.wrapup("acme", "ann", r.case)
    await switch.complete("acme", "ann", r.case, "resolved", "sorted", agent_name="Ann A.")
    assert await case_field(switch, r.case, "st") == "completed"
    last = json.loads((await switch.redis.lrange(f"sb:{{acme}}:cu:{r.customer}:tl", -1, -1))[0])
    assert (last["kind"], last["text"], last["from"]) == ("wrapup", "sorted", "Ann A.")


async def test_attributes_beyond_fast_json_reach_the_offer_intact(
    switch: Switch, inbox: Inbox
) -> None:
    """Integers past 64 bits and non-ASCII text take the JSON fallback path, not an error."""
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    attrs = {"order": 2**70, "note": "Zoë — 注文", "tags": ["a", 1, None]}
    r = await switch.ingest("acme", chat("e-big", text="Grüße", attributes=attrs))
    offer = inbox.last_offer("ann")
    assert offer["case"]["id"] == r.case
    assert offer["case"]["attributes"] == attrs
    assert [e["text"] for e in offer["timeline"]] == ["Grüße"]


async def test_duplicate_event_changes_nothing(switch: Switch, inbox: Inbox) -> None:
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r1 = await switch.ingest("acme", chat("e1"))
    r2 = await switch.ingest("acme", chat("e1"))
    assert r2.duplicate and r2.case == r1.case
    assert len(inbox.offers("ann")) == 1
    assert await switch.redis.llen(f"sb:{{acme}}:cu:{r1.customer}:tl") == 1


async def test_waiting_cases_go_by_priority_then_age(switch: Switch, inbox: Inbox) -> None:
    await setup(switch, agent("ann", ["support", "sales"], chat=1))
    low1 = await switch.ingest("acme", chat("a", email="a@x.test"))
    low2 = await switch.ingest("acme", chat("b", email="b@x.test"))
    high = await switch.ingest("acme", chat("c", email="c@x.test", attributes={"topic": "sales"}))
    order = []
    await switch.set_status("acme", "ann", "available")
    for _ in range(3):
        o = inbox.last_offer("ann")
        order.append(o["case"]["id"])
        await switch.accept("acme", "ann", o["offer"])
        await switch.complete("acme", "ann", o["case"]["id"])
    assert order == [high.case, low1.case, low2.case]


async def test_reject_goes_to_next_agent_not_back(switch: Switch, inbox: Inbox) -> None:
    await setup(switch, agent("ann", ["support"]), agent("bob", ["support"]))
    await switch.set_status("acme", "ann", "available")
    await switch.set_status("acme", "bob", "available")
    r = await switch.ingest("acme", chat("e1"))
    first = "ann" if inbox.offers("ann") else "bob"
    other = "bob" if first == "ann" else "ann"
    await switch.reject("acme", first, inbox.last_offer(first)["offer"])
    assert inbox.last_offer(other)["case"]["id"] == r.case
    # the rejecting agent is not offered it again after the other one rejects too
    await switch.reject("acme", other, inbox.last_offer(other)["offer"])
    assert len(inbox.offers(first)) == 1
    assert await case_field(switch, r.case, "st") == "queued"


async def test_a_refusal_lapses_when_no_one_else_takes_the_case(
    switch: Switch, inbox: Inbox
) -> None:
    """The only eligible agent rejects a case, then lets it time out, then transfers it away:
    each time it waits, and after routing.reoffer_refused_after_s (60 s) it comes back to them
    rather than waiting for good."""
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1"))
    await switch.reject("acme", "ann", inbox.last_offer("ann")["offer"])
    t0 = now_ms()
    await switch.run_timers("acme", now=t0 + 59_000)
    assert len(inbox.offers("ann")) == 1 and await case_field(switch, r.case, "st") == "queued"
    await switch.run_timers("acme", now=t0 + 61_000)
    second = inbox.last_offer("ann")
    assert len(inbox.offers("ann")) == 2 and second["case"]["id"] == r.case
    # missed: refused as well, and back after the same while
    await switch.run_timers("acme", now=second["deadline"] + 1)
    assert await case_field(switch, r.case, "st") == "queued"
    await switch.run_timers("acme", now=second["deadline"] + 61_001)
    third = inbox.last_offer("ann")
    assert len(inbox.offers("ann")) == 3 and third["case"]["id"] == r.case
    await switch.accept("acme", "ann", third["offer"])
    await switch.transfer("acme", "ann", r.case, queue="support")
    assert await case_field(switch, r.case, "st") == "queued"
    await switch.run_timers("acme", now=now_ms() + 61_000)
    assert inbox.last_offer("ann")["case"]["id"] == r.case and len(inbox.offers("ann")) == 4


async def test_a_refusal_can_be_kept_for_good(switch: Switch, inbox: Inbox) -> None:
    """routing.reoffer_refused_after_s 0: the case waits for someone else, however long."""
    await switch.apply_workspace(
        {**DECL, "agents": [agent("ann", ["support"])], "routing": {"reoffer_refused_after_s": 0}}
    )
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1"))
    await switch.reject("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.run_timers("acme", now=now_ms() + 3_600_000)
    assert len(inbox.offers("ann")) == 1 and await case_field(switch, r.case, "st") == "queued"


async def test_a_refusal_lapsing_on_a_case_taken_meanwhile_changes_nothing(
    switch: Switch, inbox: Inbox
) -> None:
    await setup(switch, agent("ann", ["support"]), agent("bob", ["support"]))
    await switch.set_status("acme", "bob", "available")
    r = await switch.ingest("acme", chat("e1"))
    await switch.reject("acme", "bob", inbox.last_offer("bob")["offer"])
    await switch.set_status("acme", "ann", "available")
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", r.case, "resolved")
    await switch.run_timers("acme", now=now_ms() + 61_000)
    assert len(inbox.offers("bob")) == 1
    assert await case_field(switch, r.case, "st") == "completed"
    assert await case_field(switch, r.case, "x") == "|bob|"


async def test_transfers_nobody_can_take_and_replies_on_calls_are_refused(
    switch: Switch, inbox: Inbox
) -> None:
    """A transfer to yourself, to someone who takes no cases on the channel or to someone
    signed out, and a reply on a call: typed errors, and the case stays as it was."""
    boss = {**agent("sue", ["support"]), "capacity": {}}
    cy = agent("cy", ["support"])  # takes chats, but is signed out
    await setup(switch, agent("ann", ["support"]), agent("bob", ["support"], chat=0), boss, cy)
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    refusals = [
        ("ann", "yourself"),
        ("bob", "^Bob takes no chat"),  # named as agents know them (agent() titles the id)
        ("sue", "^Sue takes no chat"),
        ("cy", r"^Cy is not taking cases \(offline\)"),
    ]
    for to, why in refusals:
        with pytest.raises(BadRequest, match=why) as e:
            await switch.transfer("acme", "ann", r.case, to_agent=to)
        assert e.value.code == "transfer.invalid"
    assert await case_field(switch, r.case, "st") == "assigned"
    assert await case_field(switch, r.case, "agent") == "ann"
    assert await case_field(switch, r.case, "x") == "|"
    call = await switch.ingest(
        "acme",
        {"id": "v1", "channel": "voice", "kind": "call.offered", "thread": "CA1",
         "identities": {"phone": "+1 555 123 0000"}},
    )  # fmt: skip
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    tl = await switch.redis.llen(f"sb:{{acme}}:cu:{call.customer}:tl")
    with pytest.raises(BadRequest) as e:
        await switch.reply("acme", "ann", call.case, "hello?")
    assert e.value.code == "reply.channel"
    assert await switch.redis.llen(f"sb:{{acme}}:cu:{call.customer}:tl") == tl
    await switch.reply("acme", "ann", call.case, "asked for a callback", note=True)
    # a transfer's note belongs to its case in the customer's timeline
    await switch.transfer("acme", "ann", r.case, queue="support", note="over to the team")
    last = json.loads((await switch.redis.lrange(f"sb:{{acme}}:cu:{r.customer}:tl", -1, -1))[0])
    assert (last["kind"], last["text"], last["case"]) == ("transfer", "over to the team", r.case)


async def test_wrap_up_ends_the_conversation_notes_go_on(switch: Switch, inbox: Inbox) -> None:
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.reply("acme", "ann", r.case, "anything else?")
    await switch.wrapup("acme", "ann", r.case)
    outbox = await switch.redis.xlen("sb:{acme}:out")
    with pytest.raises(Conflict) as e:
        await switch.reply("acme", "ann", r.case, "one more thing")
    assert e.value.code == "case.wrapping"
    assert await switch.redis.xlen("sb:{acme}:out") == outbox
    await switch.reply("acme", "ann", r.case, "customer happy", note=True)
    # nor can it be transferred: the case stays ann's, in wrap-up (direct to Lua, too)
    tl = await switch.redis.llen(f"sb:{{acme}}:cu:{r.customer}:tl")
    with pytest.raises(Conflict) as e:
        await switch.transfer("acme", "ann", r.case, queue="support", note="over to you")
    assert e.value.code == "case.wrapping"
    res = await switch.store.run("case_transfer", "acme", "ann", r.case, "[]", "", "", 0)
    assert res == {"ok": False, "error": "case.wrapping"}
    assert await case_field(switch, r.case, "st") == "wrapping"
    assert await case_field(switch, r.case, "agent") == "ann"
    assert await switch.redis.llen(f"sb:{{acme}}:cu:{r.customer}:tl") == tl
    # the customer writes again before the case is completed: it resumes with ann
    again = await switch.ingest("acme", chat("e2", thread="e1", text="wait, one more thing"))
    assert (again.case, again.action) == (r.case, "appended")
    assert await case_field(switch, r.case, "st") == "assigned"
    assert inbox.frames["ann"][-1]["status"] == "assigned"
    await switch.reply("acme", "ann", r.case, "go ahead")


async def test_accept_is_idempotent_and_guarded(switch: Switch, inbox: Inbox) -> None:
    await setup(switch, agent("ann", ["support"]), agent("bob", ["sales"]))
    await switch.set_status("acme", "ann", "available")
    await switch.ingest("acme", chat("e1"))
    oid = inbox.last_offer("ann")["offer"]
    with pytest.raises(NotFound):
        await switch.accept("acme", "bob", oid)
    a1 = await switch.accept("acme", "ann", oid)
    a2 = await switch.accept("acme", "ann", oid)
    assert not a1["duplicate"] and a2["duplicate"]
    with pytest.raises(Conflict):
        await switch.reject("acme", "ann", oid)


async def test_offer_timeout_requeues_and_missed_offers_set_away(
    switch: Switch, inbox: Inbox
) -> None:
    await setup(switch, agent("ann", ["support"], chat=3))
    await switch.set_status("acme", "ann", "available")
    for i in range(3):
        await switch.ingest("acme", chat(f"e{i}", email=f"c{i}@x.test"))
    assert len(inbox.offers("ann")) == 3
    await switch.run_timers("acme", now=now_ms() + 31_000)
    st = await switch.redis.hget("sb:{acme}:a:ann", "st")
    assert st == b"away"
    with pytest.raises(Conflict):
        await switch.accept("acme", "ann", inbox.offers("ann")[0]["offer"])
    assert await switch.redis.zcard("sb:{acme}:q:support:wait") == 3


async def test_capacity_is_never_exceeded(switch: Switch, inbox: Inbox) -> None:
    await setup(switch, agent("ann", ["support"], chat=2))
    await switch.set_status("acme", "ann", "available")
    for i in range(4):
        await switch.ingest("acme", chat(f"e{i}", email=f"c{i}@x.test"))
    assert len(inbox.offers("ann")) == 2
    o = inbox.offers("ann")[0]
    await switch.accept("acme", "ann", o["offer"])
    await switch.complete("acme", "ann", o["case"]["id"])
    assert len(inbox.offers("ann")) == 3


async def test_one_customer_across_channels_one_timeline(switch: Switch, inbox: Inbox) -> None:
    await setup(switch, agent("ann", ["support"], chat=5, email=5, voice=1))
    await switch.ingest("acme", chat("c1", email="al@x.test", text="chat first"))
    await switch.ingest(
        "acme",
        {
            "id": "m1",
            "channel": "email",
            "identities": {"email": "AL@x.test", "phone": "+15551230000"},
            "subject": "still broken",
            "text": "mail second",
        },
    )
    await switch.ingest(
        "acme",
        {
            "id": "v1",
            "channel": "voice",
            "kind": "call.offered",
            "identities": {"phone": "+1 555 123 0000"},
            "thread": "CA1",
            "text": "incoming call",
        },
    )
    await switch.set_status("acme", "ann", "available")
    voice = next(o for o in inbox.offers("ann") if o["case"]["channel"] == "voice")
    texts = [e["text"] for e in voice["timeline"]]
    assert texts == ["chat first", "mail second", "incoming call"]


async def test_followup_message_reaches_assigned_agent(switch: Switch, inbox: Inbox) -> None:
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1", thread="conv1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    r2 = await switch.ingest("acme", chat("e2", thread="conv1", text="are you there?"))
    assert r2.case == r.case and r2.action == "appended"
    msg = [f for f in inbox.frames["ann"] if f["type"] == "case.message"]
    assert msg[-1]["entry"]["text"] == "are you there?"


async def test_reopen_prefers_last_agent(switch: Switch, inbox: Inbox) -> None:
    """A reopened case waits for its last agent while they are busy (at capacity), and is theirs
    once they are free; one whose last agent is not taking cases (away) goes to the queue at
    once, and so does one whose last agent steps away while it waits for them."""
    await setup(switch, agent("ann", ["support"], chat=1), agent("bob", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1", thread="conv1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", r.case)
    busy = await switch.ingest("acme", chat("b1", thread="other", email="o@example.com"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])  # her one chat
    await switch.set_status("acme", "bob", "available")
    r2 = await switch.ingest("acme", chat("e2", thread="conv1", text="one more thing"))
    assert r2.action == "reopened" and r2.case == r.case
    assert not inbox.offers("bob")  # waits for ann first
    await switch.complete("acme", "ann", busy.case)  # free: she gets it
    assert inbox.last_offer("ann")["case"]["id"] == r.case
    assert inbox.last_offer("ann")["why"]["reason"].startswith("preferred agent")
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", r.case)

    # ann is away: the reply goes to the queue (bob) at once
    await switch.set_status("acme", "ann", "away")
    r3 = await switch.ingest("acme", chat("e3", thread="conv1", text="and another"))
    assert r3.action == "reopened"
    assert inbox.last_offer("bob")["case"]["id"] == r.case
    await switch.accept("acme", "bob", inbox.last_offer("bob")["offer"])
    await switch.complete("acme", "bob", r.case)

    # bob is busy with two chats (all he takes): the reply waits for him, until he steps away
    inbox.frames["bob"].clear()
    for i in range(2):
        await switch.ingest("acme", chat(f"f{i}", thread=f"fill{i}", email=f"f{i}@example.com"))
    for o in inbox.offers("bob"):
        await switch.accept("acme", "bob", o["offer"])
    await switch.set_status("acme", "ann", "available")
    inbox.frames["ann"].clear()
    r4 = await switch.ingest("acme", chat("e4", thread="conv1", text="still there?"))
    assert r4.action == "reopened"
    assert await case_field(switch, r.case, "pool") == "a~bob"
    assert not inbox.offers("ann")  # bob's, while he takes cases
    await switch.set_status("acme", "bob", "away")  # his consoles keep the chats he holds
    assert await case_field(switch, r.case, "pool") == "support"
    assert inbox.last_offer("ann")["case"]["id"] == r.case


async def test_a_reopened_case_waits_from_its_reopening(switch: Switch, inbox: Inbox) -> None:
    """A supervisor sees how long the customer has waited this time, not the case's age: a
    case opened an hour ago and reopened now has waited seconds."""
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1", thread="conv-w"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", r.case)
    await switch.set_status("acme", "ann", "away")
    an_hour_ago = now_ms() - 3_600_000
    await switch.redis.hset(f"sb:{{acme}}:c:{r.case}", "created", an_hour_ago)
    before = now_ms()
    r2 = await switch.ingest("acme", chat("e2", thread="conv-w", text="still broken"))
    assert r2.action == "reopened"
    cfg = await switch.config("acme")
    [listed] = (await queries.list_cases(switch.redis, cfg, "acme", "queued")).cases
    assert listed["id"] == r.case and listed["created"] == an_hour_ago
    assert before - 5 <= listed["waiting_since"] <= now_ms()


async def test_reopen_does_not_wait_for_a_last_agent_who_signed_out(
    switch: Switch, inbox: Inbox
) -> None:
    await setup(switch, agent("ann", ["support"]), agent("bob", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1", thread="conv2"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", r.case)
    await switch.set_status("acme", "ann", "offline")
    await switch.set_status("acme", "bob", "available")
    r2 = await switch.ingest("acme", chat("e2", thread="conv2", text="one more thing"))
    assert r2.action == "reopened" and r2.case == r.case
    assert inbox.last_offer("bob")["case"]["id"] == r.case  # at once, not after 120 s
    assert await case_field(switch, r.case, "step") == "2"


async def test_a_reopened_case_no_longer_says_how_it_was_closed(
    switch: Switch, inbox: Inbox
) -> None:
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1", thread="conv9"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", r.case, disposition="resolved")
    assert await case_field(switch, r.case, "disposition") == "resolved"
    r2 = await switch.ingest("acme", chat("e2", thread="conv9", text="one more thing"))
    assert r2.action == "reopened" and r2.case == r.case
    assert await case_field(switch, r.case, "disposition") is None
    assert await case_field(switch, r.case, "closed") is None
    view = inbox.last_offer("ann")["case"]
    assert view["status"] == "offered" and "disposition" not in view and "callback" not in view
    # closed again, it says how this time
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", r.case, disposition="follow-up")
    assert await case_field(switch, r.case, "disposition") == "follow-up"
    assert await case_field(switch, r.case, "closed") is not None


async def test_a_reopened_case_no_longer_asks_for_the_callback_it_had(
    switch: Switch, inbox: Inbox
) -> None:
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1", thread="conv3"))
    await switch.ingest("acme", chat("e2", thread="conv3", kind="callback.requested"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    assert await case_field(switch, r.case, "callback") == "1"
    await switch.complete("acme", "ann", r.case)  # the call back was made
    r2 = await switch.ingest("acme", chat("e3", thread="conv3", text="one more thing"))
    assert r2.action == "reopened" and r2.case == r.case
    offer = inbox.last_offer("ann")
    assert offer["case"]["id"] == r.case and offer["case"].get("callback", "0") == "0"
    assert await case_field(switch, r.case, "callback") == "0"
    # a request that itself reopens the case marks it again
    await switch.accept("acme", "ann", offer["offer"])
    await switch.complete("acme", "ann", r.case)
    r3 = await switch.ingest("acme", chat("e4", thread="conv3", kind="callback.requested"))
    assert r3.action == "reopened"
    assert await case_field(switch, r.case, "callback") == "1"


async def test_escalation_keeps_age_and_relaxes_skills(switch: Switch, inbox: Inbox) -> None:
    await setup(switch, agent("ann", ["support"], languages=["en"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1", attributes={"language": "es"}))
    assert not inbox.offers("ann")  # step 1 needs a Spanish speaker
    age = await case_field(switch, r.case, "age")
    await switch.run_timers("acme", now=now_ms() + 31_000)
    o = inbox.last_offer("ann")
    assert o["case"]["id"] == r.case and o["case"]["step"] == 2 and o["case"]["priority"] == 20
    assert await case_field(switch, r.case, "age") == age


async def test_transfer_to_agent_and_queue(switch: Switch, inbox: Inbox) -> None:
    await setup(switch, agent("ann", ["support"]), agent("bob", ["sales"]))
    await switch.set_status("acme", "ann", "available")
    await switch.set_status("acme", "bob", "available")
    r = await switch.ingest("acme", chat("e1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.transfer(
        "acme", "ann", r.case, to_agent="bob", note="billing question", by_name="Ann A."
    )
    o = inbox.last_offer("bob")
    assert o["case"]["id"] == r.case
    # the history names who passed it on and to whom, as people, not ids
    note = o["timeline"][-1]
    assert note["kind"] == "transfer"
    assert (note["agent"], note["from"], note["to"], note["to_name"]) == (
        "ann",
        "Ann A.",
        "bob",
        "Bob",
    )
    await switch.accept("acme", "bob", o["offer"])
    await switch.transfer("acme", "bob", r.case, queue="support")
    last = json.loads((await switch.redis.lrange(f"sb:{{acme}}:cu:{r.customer}:tl", -1, -1))[0])
    assert (last["from"], last["to"], last["to_name"]) == (
        "bob",
        "support",
        "support",
    )  # a queue without a name
    assert inbox.last_offer("ann")["case"]["id"] == r.case
    with pytest.raises(BadRequest):
        await switch.transfer("acme", "ann", r.case, queue="support", to_agent="bob")


async def test_removing_an_agent_leaves_no_case_behind(switch: Switch, inbox: Inbox) -> None:
    """An agent who holds a case cannot be removed. Once they hold none, removing them hands
    their pending offer to a colleague, moves on a case waiting for them by name, and leaves
    nothing of them in Redis: the same id is a new agent afterwards."""
    await setup(switch, agent("ann", ["support"], chat=1), agent("bob", ["support"], chat=1))
    await switch.set_status("acme", "bob", "available")
    held = await switch.ingest("acme", chat("e1", email="a@x.test"))
    await switch.accept("acme", "bob", inbox.last_offer("bob")["offer"])
    with pytest.raises(Conflict) as e:
        await switch.remove_agent("acme", "bob")
    assert e.value.code == "agent.busy" and held.case in str(e.value)
    assert await case_field(switch, held.case, "agent") == "bob"

    await switch.set_status("acme", "ann", "available")
    named = await switch.ingest("acme", chat("e3", email="c@x.test"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    # a supervisor takes bob's case back; bob is then offered the next one (and is full)
    await switch.transfer("acme", "", held.case, queue="sales")
    pending = await switch.ingest("acme", chat("e2", email="b@x.test"))
    assert inbox.last_offer("bob")["case"]["id"] == pending.case
    # ann hands her case to bob by name: it waits for him
    await switch.transfer("acme", "ann", named.case, to_agent="bob")
    assert await case_field(switch, named.case, "pool") == "a~bob"

    await switch.remove_agent("acme", "bob")
    assert inbox.last_offer("ann")["case"]["id"] == pending.case
    told = [f["type"] for f in inbox.frames["bob"][-2:]]
    assert told == ["offer.rescinded", "session.revoked"]
    # the case for bob went on to its next step (the queue), where it waits for ann
    assert await case_field(switch, named.case, "st") == "queued"
    assert await case_field(switch, named.case, "q") == "support"
    assert await case_field(switch, named.case, "pool") != "a~bob"
    left = [k.decode() for k in await switch.redis.keys("sb:{acme}:*bob*")]
    assert left == []
    assert b"bob" not in await switch.redis.smembers("sb:{acme}:agents")
    for p in await switch.redis.smembers("sb:{acme}:pools"):
        assert await switch.redis.hget(f"sb:{{acme}}:p:{p.decode()}:agents", "bob") is None
    with pytest.raises(NotFound):
        await switch.remove_agent("acme", "bob")
    with pytest.raises(NotFound):
        await switch.set_status("acme", "bob", "available")

    await switch.upsert_agent("acme", agent("bob", ["support"], chat=1))
    fresh = await queries.agent(switch.redis, "acme", "bob")
    assert fresh is not None and fresh["status"] == "offline" and fresh["load"]["chat"] == 0


async def test_call_ended_while_waiting_abandons(switch: Switch, inbox: Inbox) -> None:
    await setup(switch, agent("ann", ["support"]))
    call = {
        "id": "v1",
        "channel": "voice",
        "kind": "call.offered",
        "identities": {"phone": "+15550001111"},
        "thread": "CA9",
    }
    r = await switch.ingest("acme", call)
    end = {**call, "id": "v2", "kind": "call.ended"}
    r2 = await switch.ingest("acme", end)
    assert r2.action == "abandoned" and r2.case == r.case
    assert await case_field(switch, r.case, "st") == "abandoned"
    await switch.set_status("acme", "ann", "available")
    assert not inbox.offers("ann")


async def test_an_end_pushed_live_says_the_time_the_history_keeps(
    switch: Switch, inbox: Inbox
) -> None:
    """The agent's live ``case.updated`` carries the end entry as the scripts re-encode it
    (cjson: 14 significant digits); the history keeps the one ingest wrote. Both must say the
    same millisecond, or the console's "Customer ended the chat · <time>" moves on a reload;
    and never a later one than the scripts' clock, which the chat widget orders by."""
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("t1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    ts = int(time.time()) - 5 + 0.501999  # a bridge's clock, to the microsecond
    await switch.ingest("acme", chat("t2", kind="conversation.ended", text="", ts=ts, thread="t1"))
    live = [f for f in inbox.frames["ann"] if f.get("event") == "conversation.ended"]
    assert len(live) == 1
    detail = await snapshot.case_detail(switch.redis, "acme", r.case)
    assert detail is not None
    kept = [e for e in detail["timeline"] if e.get("kind") == "conversation.ended"]
    # whole milliseconds, rounded down
    assert [e["ts"] for e in kept] == [live[0]["entry"]["ts"]] == [int(ts) + 0.501]


def rescinds(inbox: Inbox, agent_id: str) -> list[tuple[str, str]]:
    return [
        (f["case"], f["reason"]) for f in inbox.frames[agent_id] if f["type"] == "offer.rescinded"
    ]


def call(eid: str, phone: str) -> dict[str, Any]:
    return {
        "id": eid,
        "channel": "voice",
        "kind": "call.offered",
        "identities": {"phone": phone},
        "thread": eid,
    }


@pytest.mark.parametrize("status", ["away", "offline"])
async def test_going_unavailable_hands_a_ringing_offer_on_at_once(
    switch: Switch, inbox: Inbox, status: str
) -> None:
    """A call offered to ann rings her console; she goes on a break. The caller must not wait
    out the offer's deadline on someone who said they are not taking work: bob, free, gets it
    now, and ann's console is told why the card went."""
    await setup(switch, agent("ann", ["support"]), agent("bob", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", call("v1", "+15550002222"))
    assert inbox.last_offer("ann")["case"]["id"] == r.case
    await switch.set_status("acme", "bob", "available")
    assert not inbox.offers("bob")

    await switch.set_status("acme", "ann", status)
    assert rescinds(inbox, "ann") == [(r.case, "unavailable")]
    assert inbox.last_offer("bob")["case"]["id"] == r.case
    assert await switch.redis.scard("sb:{acme}:a:ann:offers") == 0
    # rescinded, not refused: back from her break, she may be offered it again
    assert await case_field(switch, r.case, "x") == "|"


async def test_missed_offers_set_away_and_hand_the_rest_on(switch: Switch, inbox: Inbox) -> None:
    """ann misses offers in a row (max_missed_offers, 3) and is set away: the offers she still
    holds go to bob then, not one deadline after another."""
    await setup(switch, agent("ann", ["support"], email=5), agent("bob", ["support"], email=5))
    await switch.set_status("acme", "ann", "available")
    made = [await switch.ingest("acme", chat(f"m{i}", email=f"m{i}@x.test")) for i in range(2)]
    made += [
        await switch.ingest("acme", {**chat(f"m{i}", email=f"m{i}@x.test"), "channel": "email"})
        for i in range(2, 5)
    ]
    assert len(inbox.offers("ann")) == 5
    await switch.set_status("acme", "bob", "available")
    bob_before = len(inbox.offers("bob"))
    # every deadline passes in one timer run: three time out, by then ann is away, and the
    # other two go on to bob instead of timing out as well
    deadline = max([int(await case_field(switch, c.case, "odl") or 0) for c in made])
    await switch.run_timers("acme", now=deadline)
    assert (await switch.redis.hget("sb:{acme}:a:ann", "st")) == b"away"
    ended = rescinds(inbox, "ann")
    assert sorted(why for _, why in ended) == ["timeout"] * 3 + ["unavailable"] * 2
    handed_on = {c for c, why in ended if why == "unavailable"}
    assert handed_on <= {f["case"]["id"] for f in inbox.offers("bob")[bob_before:]}


async def test_a_rejection_that_sets_a_break_hands_the_other_offers_on(
    switch: Switch, inbox: Inbox
) -> None:
    """With ``routing.reject_status`` a break (not routable), declining one offer puts ann on
    it: the other offer she holds goes to bob at once."""
    decl = {**DECL, "statuses": [{"name": "break"}], "routing": {"reject_status": "break"}}
    await switch.apply_workspace(
        {**decl, "agents": [agent("ann", ["support"]), agent("bob", ["support"])]}
    )
    await switch.set_status("acme", "ann", "available")
    one = await switch.ingest("acme", chat("j1", email="j1@x.test"))
    two = await switch.ingest("acme", chat("j2", email="j2@x.test"))
    await switch.set_status("acme", "bob", "available")
    first = next(f for f in inbox.offers("ann") if f["case"]["id"] == one.case)
    await switch.reject("acme", "ann", first["offer"])
    assert (await switch.redis.hget("sb:{acme}:a:ann", "st")) == b"break"
    assert rescinds(inbox, "ann") == [(two.case, "unavailable")]
    assert {f["case"]["id"] for f in inbox.offers("bob")} == {one.case, two.case}


async def test_reply_goes_to_outbox_only_from_owner(switch: Switch, inbox: Inbox) -> None:
    await setup(switch, agent("ann", ["support"]), agent("bob", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    with pytest.raises(NotFound):
        await switch.reply("acme", "bob", r.case, "hi from bob")
    await switch.reply("acme", "ann", r.case, "hi from ann")
    out = await switch.redis.xrange("sb:{acme}:out")
    assert len(out) == 1 and out[0][1][b"case"] == r.case.encode()


async def test_merge_customers_moves_identities_cases_and_timeline(
    switch: Switch, inbox: Inbox
) -> None:
    await setup(switch, agent("ann", ["support"]))
    a = await switch.ingest("acme", chat("e1", email="a@x.test", text="first"))
    b = await switch.ingest(
        "acme",
        {
            "id": "v1",
            "channel": "voice",
            "kind": "call.offered",
            "identities": {"phone": "+15550002222"},
            "thread": "CA1",
            "text": "second",
        },
    )
    assert a.customer != b.customer
    await switch.merge_customers("acme", a.customer, b.customer)
    c = await switch.ingest(
        "acme", chat("e2", email="z@x.test", text="third", identities={"phone": "+15550002222"})
    )
    assert c.customer == a.customer
    await switch.set_status("acme", "ann", "available")
    texts = [e["text"] for e in inbox.offers("ann")[0]["timeline"]]
    assert texts == ["first", "second", "third"]
    with pytest.raises(NotFound):
        await switch.merge_customers("acme", a.customer, b.customer)


async def test_visitor_who_identifies_joins_the_known_customer(
    switch: Switch, inbox: Inbox
) -> None:
    await setup(switch, agent("ann", ["support"]))
    known = await switch.ingest("acme", chat("m0", email="dana@x.test", text="earlier"))
    first = await switch.ingest(
        "acme",
        {
            "id": "w1",
            "channel": "chat",
            "identities": {"visitor": "v123"},
            "thread": "v123",
            "text": "hi, anonymous so far",
        },
    )
    assert first.customer != known.customer
    later = await switch.ingest(
        "acme",
        {
            "id": "w2",
            "channel": "chat",
            "identities": {"visitor": "v123", "email": "dana@x.test"},
            "thread": "v123",
            "text": "I'm Dana",
        },
    )
    assert later.case == first.case and later.customer == known.customer
    await switch.set_status("acme", "ann", "available")
    offer = next(o for o in inbox.offers("ann") if o["case"]["id"] == first.case)
    assert [e["text"] for e in offer["timeline"]][-3:] == [
        "earlier",
        "hi, anonymous so far",
        "I'm Dana",
    ]


async def test_an_offer_pending_from_before_the_upgrade_still_ends(
    switch: Switch, inbox: Inbox
) -> None:
    """Offers used to be hashes of their own (o:<id>, ids "o<n>"); one pending when the router
    is upgraded times out like any other: the case goes back and the agent's capacity returns."""
    await setup(switch, agent("ann", ["support"]), agent("bob", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e-old"))
    new_id = inbox.last_offer("ann")["offer"]
    # the same offer as the old layout kept it
    p, deadline = "sb:{acme}:", now_ms() + 30_000
    pipe = switch.redis.pipeline(transaction=False)
    old = {"id": "o17", "case": r.case, "agent": "ann", "st": "pending", "deadline": deadline}
    pipe.hset(f"{p}o:o17", mapping={**old, "ch": "chat"})
    pipe.hset(f"{p}c:{r.case}", mapping={"offer": "o17"})
    pipe.hdel(f"{p}c:{r.case}", "ost", "odl")
    pipe.srem(f"{p}a:ann:offers", new_id)
    pipe.sadd(f"{p}a:ann:offers", "o17")
    pipe.zrem(f"{p}timers", f"o|{new_id}")
    pipe.zadd(f"{p}timers", {"o|o17": deadline})
    await pipe.execute()

    with pytest.raises(NotFound):  # not answerable any more: it can only end
        await switch.accept("acme", "ann", "o17")
    await switch.set_status("acme", "bob", "available")
    await switch.run_timers("acme", now=deadline + 1)
    again = inbox.last_offer("bob")
    assert again["case"]["id"] == r.case and again["offer"] == f"{r.case}.1"
    assert await switch.redis.exists(f"{p}o:o17") == 0
    assert await switch.redis.smembers(f"{p}a:ann:offers") == set()
    assert await switch.redis.hget(f"{p}a:ann", "load:chat") == b"0"
    await switch.accept("acme", "bob", again["offer"])
    assert await case_field(switch, r.case, "st") == "assigned"


async def test_an_offers_history_keeps_its_latest_kilobyte(switch: Switch, inbox: Inbox) -> None:
    """A case offered again and again keeps how its recent offers ended (a stale answer is
    told that), not an ever longer list: the oldest are forgotten (offer.unknown)."""
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e-again"))
    for _ in range(80):  # going offline rescinds the offer; coming back is offered it again
        await switch.set_status("acme", "ann", "offline")
        await switch.set_status("acme", "ann", "available")
    last = inbox.last_offer("ann")["offer"]
    assert last == f"{r.case}.81"
    history = await case_field(switch, r.case, "oh")
    assert history is not None and 900 < len(history) <= 1000
    with pytest.raises(Conflict) as caught:
        await switch.accept("acme", "ann", f"{r.case}.80")
    assert caught.value.code == "offer.rescinded"
    with pytest.raises(NotFound):
        await switch.accept("acme", "ann", f"{r.case}.1")
    await switch.accept("acme", "ann", last)
    assert await case_field(switch, r.case, "st") == "assigned"


async def test_service_level_counts_escalations_and_waits_since_the_case_began_waiting(
    switch: Switch, inbox: Inbox, redis_server: str
) -> None:
    """A supervisor's first look after a start shows the last hour, not zeros; a case that
    waited out a queue's step counts against that queue; a transferred case's wait runs from
    its transfer, not from its creation (it was being handled meanwhile)."""
    await setup(switch, agent("ann", ["support"], languages=["en"]), agent("bob", ["sales"]))
    spanish = await switch.ingest("acme", chat("es1", attributes={"language": "es"}))  # 30 s step
    await switch.run_timers("acme", now=now_ms() + 31_000)  # nobody speaks Spanish: moves on
    assert await case_field(switch, spanish.case, "step") == "2"
    await switch.set_status("acme", "ann", "available")
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])  # answered, late

    r = await switch.ingest("acme", chat("e1", email="old@example.com"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    # as if it had come in an hour ago and ann had worked on it since
    await switch.redis.hset(f"sb:{{acme}}:c:{r.case}", "created", now_ms() - 3_600_000)
    await switch.set_status("acme", "bob", "available")
    await switch.transfer("acme", "ann", r.case, queue="sales")
    await switch.accept("acme", "bob", inbox.last_offer("bob")["offer"])
    # a transfer to a named agent who never answers falls back within its queue: no escalation
    await switch.transfer("acme", "bob", r.case, to_agent="ann")
    assert inbox.last_offer("ann")["case"]["id"] == r.case
    await switch.run_timers("acme", now=now_ms() + 61_000)
    assert await case_field(switch, r.case, "step") == "2"

    cfg = await switch.config("acme")
    stats = Stats(redis_server)
    try:
        first = await stats.snapshot(switch.store, cfg, "acme")  # the very first look
    finally:
        await stats.close()
    by_id = {q["id"]: q for q in first["queues"]}
    support, sales = by_id["support"], by_id["sales"]
    assert (support["escalated"], support["answered"], support["abandoned"]) == (1, 2, 0)
    # both answers came at once (only the timers' clock jumped): the escalation is the miss
    assert support["service_level"] == pytest.approx(2 / 3, abs=1e-3)
    assert (sales["answered"], sales["within_target"]) == (1, 1)  # waited since the transfer
    assert "escalated" in first["sl_formula"]


async def test_a_transfer_to_a_colleague_who_cannot_take_it_goes_on_at_once(
    switch: Switch, inbox: Inbox
) -> None:
    """The case goes on to the queue the moment the named colleague rejects it or steps away
    (it used to wait out the 60 s step for them while others were free); a transfer to one
    who is not taking cases is refused up front, naming their status."""
    await setup(
        switch,
        agent("ann", ["support"]),
        agent("bob", ["support"]),
        agent("cat", ["support"]),
    )
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    for who in ("bob", "cat"):
        await switch.set_status("acme", who, "available")

    await switch.transfer("acme", "ann", r.case, to_agent="bob", note="refund")
    await switch.reject("acme", "bob", inbox.last_offer("bob")["offer"])
    assert inbox.last_offer("cat")["case"]["id"] == r.case  # at once: cat is free
    await switch.accept("acme", "cat", inbox.last_offer("cat")["offer"])

    await switch.transfer("acme", "cat", r.case, to_agent="bob")
    assert inbox.last_offer("bob")["case"]["id"] == r.case
    inbox.frames["ann"].clear()
    await switch.set_status("acme", "bob", "away")  # while it rings for him
    assert inbox.last_offer("ann")["case"]["id"] == r.case
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])

    with pytest.raises(BadRequest, match=r"Bob is not taking cases \(away\): choose a queue"):
        await switch.transfer("acme", "ann", r.case, to_agent="bob")
    assert await case_field(switch, r.case, "agent") == "ann"


async def test_a_supervisor_moving_a_waiting_case_does_not_restart_its_wait(
    switch: Switch, inbox: Inbox, redis_server: str
) -> None:
    """Moving a waiting case must not launder a breach (to its own queue it is refused): the
    customer goes on waiting, the answering queue counts the whole wait, and the queue it left
    counts a move past its target as a breach. A case its agent hands on waits from then (they
    served the customer until then), as the supervisor's waiting list also says."""
    await setup(switch, agent("ann", ["support"]), agent("bob", ["sales"]))
    hour_ago = now_ms() - 3_600_000
    late = await switch.ingest("acme", chat("e1", email="late@example.com"))
    # it has waited an hour: its age and the start of its wait
    await switch.redis.hset(
        f"sb:{{acme}}:c:{late.case}",
        mapping={"age": hour_ago - queries.AGE_EPOCH_MS, "plan_start": hour_ago},
    )
    with pytest.raises(Conflict) as caught:  # to its own queue: nothing to launder it with
        await switch.transfer("acme", "", late.case, queue="support")
    assert caught.value.code == "case.same_queue"
    await switch.transfer("acme", "", late.case, queue="sales", note="no support today")
    soon = await switch.ingest("acme", chat("e2", email="soon@example.com"))
    await switch.transfer("acme", "", soon.case, queue="sales")  # moved on within the target
    await switch.set_status("acme", "bob", "available")
    offered = inbox.offers("bob")  # bob takes two chats: both at once
    assert {o["case"]["id"] for o in offered} == {late.case, soon.case}
    for o in offered:
        await switch.accept("acme", "bob", o["offer"])

    stats = Stats(redis_server)
    try:
        snap = await stats.snapshot(switch.store, await switch.config("acme"), "acme")
    finally:
        await stats.close()
    by_id = {q["id"]: q for q in snap["queues"]}
    assert by_id["support"]["escalated"] == 1  # the hour-long wait it moved on: counted once
    assert (by_id["sales"]["answered"], by_id["sales"]["within_target"]) == (2, 1)

    # ann serves a case for an hour, then hands it on: it waits from the hand-over
    await switch.set_status("acme", "bob", "away")
    await switch.set_status("acme", "ann", "available")
    served = await switch.ingest("acme", chat("e3", email="served@example.com"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.redis.hset(
        f"sb:{{acme}}:c:{served.case}",
        mapping={"age": hour_ago - queries.AGE_EPOCH_MS, "plan_start": hour_ago},
    )
    before = now_ms()
    await switch.transfer("acme", "ann", served.case, queue="sales")
    cfg = await switch.config("acme")
    queued = await queries.list_cases(switch.redis, cfg, "acme", "queued")
    listed = {c["id"]: c for c in queued.cases}
    assert before <= listed[served.case]["waiting_since"] <= now_ms()


async def test_a_supervisor_takes_back_a_case_from_an_agent_who_signed_out(
    switch: Switch, inbox: Inbox
) -> None:
    """Ann signed out holding a case: a supervisor moves it to a queue, where Bob gets it; Ann's
    slot is freed and her consoles are told. A wrap-up is taken back the same way."""
    await setup(switch, agent("ann", ["support"]), agent("bob", ["sales"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.set_status("acme", "ann", "offline")
    await switch.set_status("acme", "bob", "available")
    await switch.transfer("acme", "", r.case, queue="sales", note="ann went home")
    assert inbox.frames["ann"][-1] == {
        "type": "case.removed",
        "case": r.case,
        "reason": "moved",
        "queue": "sales",
    }
    assert inbox.last_offer("bob")["case"]["id"] == r.case
    assert await switch.redis.smembers("sb:{acme}:a:ann:cases") == set()
    assert await switch.redis.hget("sb:{acme}:a:ann", "load:chat") == b"0"
    await switch.accept("acme", "bob", inbox.last_offer("bob")["offer"])
    await switch.wrapup("acme", "bob", r.case)
    await switch.transfer("acme", "", r.case, queue="support")
    assert inbox.frames["bob"][-1]["type"] == "case.removed"
    assert await case_field(switch, r.case, "st") == "queued"
    assert await switch.redis.hget("sb:{acme}:a:bob", "load:chat") == b"0"
    # a closed case is not moved
    await switch.set_status("acme", "ann", "available")
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", r.case)
    with pytest.raises(Conflict) as e:
        await switch.transfer("acme", "", r.case, queue="sales")
    assert e.value.code == "case.completed"


# -- an agent takes a closed case back (case_reopen.lua) ----------------------------------------


async def test_a_case_taken_back_waits_as_a_case_of_now_if_handed_on(
    switch: Switch, inbox: Inbox
) -> None:
    """Reopened by its agent days after it came in, then handed on to the queue: it does not
    jump the cases waiting now by its first contact's age (a customer's reopening resets it
    the same way)."""
    await switch.apply_workspace({**DECL, "agents": [agent("ann", ["support"], chat=3)]})
    await switch.set_status("acme", "ann", "available")
    old = await switch.ingest("acme", chat("e1", email="old@x.test"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", old.case, "resolved")
    await switch.set_status("acme", "ann", "away")
    waiting = await switch.ingest("acme", chat("e2", email="new@x.test"))
    await switch.reopen("acme", "ann", old.case)
    await switch.transfer("acme", "ann", old.case, queue="support")
    ages = [await switch.redis.hget(keys.case("acme", c), "age") for c in (waiting.case, old.case)]
    assert float(ages[0] or 0) <= float(ages[1] or 0)  # the older case is the one waiting now


async def test_taking_a_case_back_can_open_a_live_load_pool_and_then_pulls(
    switch: Switch, inbox: Inbox
) -> None:
    """A queue for agents already busy on chat (assigned_tasks > 0): the case an agent takes
    back makes them busy, and the case waiting there is offered to them at once."""
    target = {"queue": "support", "expression": "worker.channel.chat.assigned_tasks > 0"}
    flow = {
        "filters": [{"expression": "topic == 'x'", "targets": [target]}],
        "default_filter": {"queue": "support"},
    }
    await switch.apply_workspace(
        {**DECL, "workflow": {"task_routing": flow}, "agents": [agent("ann", ["support"], chat=3)]}
    )
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1", email="a@x.test"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", r.case, "resolved")
    w = await switch.ingest("acme", chat("e2", email="b@x.test", attributes={"topic": "x"}))
    assert await switch.redis.hget(keys.case("acme", w.case), "st") == b"queued"
    await switch.reopen("acme", "ann", r.case)
    assert inbox.last_offer("ann")["case"]["id"] == w.case


async def test_the_queue_guard_holds_for_a_workspace_declared_without_an_id(
    switch: Switch, inbox: Inbox
) -> None:
    """A file without `id` declares workspace 'default': dropping a queue a case waits in is
    refused there too."""
    base = {k: v for k, v in DECL.items() if k != "id"}
    await switch.apply_workspace({**base, "agents": [agent("ann", ["x"])]})
    r = await switch.ingest("default", chat("e1", attributes={"topic": "sales"}))
    assert await switch.redis.hget(keys.case("default", r.case), "q") == b"sales"
    fewer = {
        **base,
        "queues": [q for q in DECL["queues"] if q["id"] != "sales"],
        "workflow": {"task_routing": {"filters": [], "default_filter": {"queue": "support"}}},
    }
    with pytest.raises(Conflict) as refused:
        await switch.apply_workspace(fewer)
    assert refused.value.code == "queue.in_use"


# -- a queue dropped from the declaration: no case is left in it ----------------------------------

WITHOUT_BILLING = {
    **DECL,
    "queues": [q for q in DECL["queues"] if q["id"] != "billing"],
    "workflow": {
        "task_routing": {
            "filters": [
                f
                for f in DECL["workflow"]["task_routing"]["filters"]
                if f["filter_friendly_name"] != "billing"
            ],
            "default_filter": {"queue": "support"},
        }
    },
}


async def waiting_in(sw: Switch, case: str) -> str | None:
    """The declared queue whose waiting list shows the case (None: no list shows it)."""
    cfg = await sw.config("acme", fresh=True)
    for q in cfg.queues:
        page = await queries.list_cases(sw.redis, cfg, "acme", "queued", queue=q.id)
        if case in [c["id"] for c in page.cases]:
            return q.id
    return None


async def test_a_case_whose_next_step_is_in_a_dropped_queue_goes_on_to_the_default(
    switch: Switch, inbox: Inbox
) -> None:
    """A Spanish chat's plan, made when it came in: a Spanish speaker in support for 30 s, then
    billing. Billing is dropped meanwhile (no case waits there, the workflow no longer names
    it). When the first step times out the case does not go to a queue nobody declares, lists
    or staffs: it waits in the workflow's default queue, and its agents are offered it."""
    spanish = {
        "filter_friendly_name": "spanish",
        "expression": "language == 'es'",
        "targets": [
            {"queue": "support", "expression": "task.language IN worker.languages", "timeout": 30},
            {"queue": "billing"},
        ],
    }
    workflow = {"task_routing": {"filters": [spanish], "default_filter": {"queue": "support"}}}
    ann = agent("ann", ["support"], languages=["en"])
    await switch.apply_workspace({**DECL, "workflow": workflow, "agents": [ann]})
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1", attributes={"language": "es"}))
    assert not inbox.offers("ann")  # step 1 wants a Spanish speaker
    await switch.apply_workspace({**WITHOUT_BILLING, "agents": [ann]})
    await switch.run_timers("acme", now=now_ms() + 31_000)
    assert await case_field(switch, r.case, "q") == "support"
    assert inbox.last_offer("ann")["case"]["id"] == r.case


async def test_a_node_that_has_not_seen_a_queue_dropped_does_not_route_into_it(
    switch: Switch, inbox: Inbox, redis_server: str
) -> None:
    """Another node still has the declaration from before billing was dropped (nodes read a
    change within a second): a billing case it takes in then waits in the default queue, listed,
    not in billing's pool brought back from the old declaration."""
    await setup(switch, agent("bob", ["billing"]), agent("ann", ["support"]))
    other = Switch(Store(connect(redis_server)), notify=inbox)
    await other.store.load()
    try:
        await other.config("acme")  # as it read it before the change
        await switch.apply_workspace({**WITHOUT_BILLING, "agents": [agent("ann", ["support"])]})
        for i in range(2):  # the first defines no pool for billing; the second finds none
            r = await other.ingest("acme", chat(f"b{i}", attributes={"topic": "billing"}))
            assert await waiting_in(switch, r.case) == "support"
        assert not await switch.redis.sismember(keys.pools("acme"), "billing")
    finally:
        await other.store.close()


async def test_a_case_that_came_into_a_queue_as_it_was_dropped_moves_on(
    switch: Switch, inbox: Inbox
) -> None:
    """Dropping a queue is refused while cases wait in it, but a node that has not yet seen the
    change can put one there between that check and the drop: the drop moves it on to its
    next step (here the default queue) and offers it there."""
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("b1", attributes={"topic": "billing"}))
    assert await waiting_in(switch, r.case) == "billing"
    # the drop as it lands after the check (Switch.apply_workspace made it a moment before)
    _, res = await switch.declarations.apply({**WITHOUT_BILLING, "agents": []})
    assert [(o["agent"], offer_frame(o)["case"]["id"]) for o in res["offers"]] == [("ann", r.case)]
    assert await waiting_in(switch, r.case) is None  # offered to ann, in support
    assert await case_field(switch, r.case, "q") == "support"
