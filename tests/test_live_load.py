"""Target expressions on the agent's live load (TaskRouter's worker.channel.<ch>.assigned_tasks and
available_capacity_percentage), end to end on real Redis: checked per agent when matching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from router.errors import ConfigError
from router.switch import Switch
from router.triage import load_code
from router.workflow import LoadCondition
from tests.switchboard_fixtures import DECL, Inbox, agent, chat


def workspace(*targets: dict[str, Any], agents: list[dict[str, Any]]) -> dict[str, Any]:
    """DECL's queues; every case goes through ``targets``, then to the support queue."""
    flow: dict[str, Any] = {"filters": [{"expression": "1 == 1", "targets": list(targets)}]}
    flow["default_filter"] = {"queue": "support"}
    return {**DECL, "workflow": {"task_routing": flow}, "agents": agents}


async def case_status(sw: Switch, case: str) -> str:
    v = await sw.redis.hget(f"sb:{{acme}}:c:{case}", "st")
    return v.decode() if v else ""


async def pool_of(sw: Switch, case: str) -> str:
    v: bytes | None = await sw.redis.hget(f"sb:{{acme}}:c:{case}", "pool")
    assert v is not None
    return v.decode()


def offered(inbox: Inbox, who: str) -> list[str]:
    return [o["case"]["id"] for o in inbox.offers(who)]


async def accept_last(sw: Switch, inbox: Inbox, who: str) -> str:
    o = inbox.last_offer(who)
    await sw.accept("acme", who, o["offer"])
    case: str = o["case"]["id"]
    return case


@pytest.mark.parametrize("expression", [None, "worker.channel.chat.assigned_tasks < 1"])
async def test_a_second_chat_goes_to_the_agent_without_a_chat(
    switch: Switch, inbox: Inbox, expression: str | None
) -> None:
    target: dict[str, Any] = {"queue": "support"}
    if expression:
        target["expression"] = expression
    await switch.apply_workspace(
        workspace(target, agents=[agent("ann", ["support"]), agent("bob", ["support"])])
    )
    await switch.set_status("acme", "ann", "available")
    await switch.ingest("acme", chat("e1", email="a@x.test"))
    await accept_last(switch, inbox, "ann")
    # bob becomes available after ann's chat began: ann has been idle on chat longer
    await switch.set_status("acme", "bob", "available")
    second = await switch.ingest("acme", chat("e2", email="b@x.test"))
    winner = "bob" if expression else "ann"  # without the term, ann has a free chat slot
    assert offered(inbox, winner)[-1] == second.case
    assert len(offered(inbox, "ann")) == (1 if expression else 2)


async def test_a_case_no_agent_fits_waits_until_a_completion_lowers_the_load(
    switch: Switch, inbox: Inbox
) -> None:
    target = {"queue": "support", "expression": "worker.channel.chat.assigned_tasks < 1"}
    await switch.apply_workspace(workspace(target, agents=[agent("ann", ["support"], chat=3)]))
    await switch.set_status("acme", "ann", "available")
    first = await switch.ingest("acme", chat("e1", email="a@x.test"))
    # a pending offer counts as an assigned task (TaskRouter counts reservations)
    second = await switch.ingest("acme", chat("e2", email="b@x.test"))
    assert offered(inbox, "ann") == [first.case]
    assert await case_status(switch, second.case) == "queued"
    pool = await pool_of(switch, second.case)  # ann has free chat capacity: the term holds it
    assert await switch.redis.zscore(f"sb:{{acme}}:p:{pool}:av:chat", "ann") is not None
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    assert await case_status(switch, second.case) == "queued"
    await switch.complete("acme", "ann", first.case)
    assert offered(inbox, "ann") == [first.case, second.case]


async def test_a_rejected_offer_frees_the_load_for_the_next_case(
    switch: Switch, inbox: Inbox
) -> None:
    target = {"queue": "support", "expression": "worker.channel.chat.assigned_tasks < 1"}
    await switch.apply_workspace(workspace(target, agents=[agent("ann", ["support"], chat=3)]))
    await switch.set_status("acme", "ann", "available")
    first = await switch.ingest("acme", chat("e1", email="a@x.test"))
    second = await switch.ingest("acme", chat("e2", email="b@x.test"))
    await switch.reject("acme", "ann", inbox.last_offer("ann")["offer"])
    assert offered(inbox, "ann") == [first.case, second.case]
    assert await case_status(switch, first.case) == "queued"  # ann refused it


async def test_available_capacity_percentage(switch: Switch, inbox: Inbox) -> None:
    # chat capacity 2: 100 % with no chat, 50 % with one
    term = "worker.channel.chat.available_capacity_percentage > 50"
    target = {"queue": "support", "expression": term}
    await switch.apply_workspace(workspace(target, agents=[agent("ann", ["support"], chat=2)]))
    await switch.set_status("acme", "ann", "available")
    first = await switch.ingest("acme", chat("e1", email="a@x.test"))
    second = await switch.ingest("acme", chat("e2", email="b@x.test"))
    assert offered(inbox, "ann") == [first.case]
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.wrapup("acme", "ann", first.case)
    assert await case_status(switch, second.case) == "queued"  # wrapping holds the capacity
    await switch.complete("acme", "ann", first.case)
    assert offered(inbox, "ann") == [first.case, second.case]


async def test_a_vip_chat_waits_for_an_agent_off_the_phone(switch: Switch, inbox: Inbox) -> None:
    """The term reads the voice channel, the case is a chat: the end of the call pulls it."""
    flow = {
        "filters": [
            {
                "expression": "vip == true",
                "targets": [
                    {
                        "queue": "support",
                        "expression": "task.vip == true AND "
                        "worker.channel.voice.available_capacity_percentage == 100",
                    }
                ],
            }
        ],
        "default_filter": {"queue": "support"},
    }
    decl = {**DECL, "workflow": {"task_routing": flow}, "agents": [agent("ann", ["support"])]}
    await switch.apply_workspace(decl)
    await switch.set_status("acme", "ann", "available")
    call = await switch.ingest(
        "acme",
        {"id": "v1", "channel": "voice", "kind": "call.offered", "thread": "CA1",
         "identities": {"phone": "+15551230000"}, "text": "call"},
    )  # fmt: skip
    await accept_last(switch, inbox, "ann")
    vip = await switch.ingest("acme", chat("e1", attributes={"vip": True}))
    plain = await switch.ingest("acme", chat("e2", email="b@x.test"))
    assert offered(inbox, "ann") == [call.case, plain.case]
    assert await case_status(switch, vip.case) == "queued"
    await switch.complete("acme", "ann", call.case)
    assert offered(inbox, "ann") == [call.case, plain.case, vip.case]


async def test_a_term_that_a_higher_load_meets_is_pulled_by_the_offer(
    switch: Switch, inbox: Inbox
) -> None:
    """Emails only for agents already chatting: ann's first chat offer pulls the email."""
    flow = {
        "filters": [
            {
                "expression": "channel == 'email'",
                "targets": [
                    {"queue": "support", "expression": "worker.channel.chat.assigned_tasks > 0"}
                ],
            }
        ],
        "default_filter": {"queue": "support"},
    }
    decl = {**DECL, "workflow": {"task_routing": flow}, "agents": [agent("ann", ["support"])]}
    await switch.apply_workspace(decl)
    await switch.set_status("acme", "ann", "available")
    mail = await switch.ingest(
        "acme",
        {"id": "m1", "channel": "email", "identities": {"email": "m@x.test"}, "text": "hi"},
    )
    assert offered(inbox, "ann") == []
    assert await case_status(switch, mail.case) == "queued"
    talk = await switch.ingest("acme", chat("e1"))
    assert offered(inbox, "ann") == [talk.case, mail.case]


async def test_pools_with_different_load_terms_are_different_pools(
    switch: Switch, inbox: Inbox
) -> None:
    targets: list[dict[str, Any]] = [
        {"queue": "support", "expression": "worker.channel.chat.assigned_tasks < 1", "timeout": 5},
        {"queue": "support", "expression": "worker.channel.chat.assigned_tasks < 2"},
    ]
    await switch.apply_workspace(workspace(*targets, agents=[agent("ann", ["support"])]))
    r = await switch.ingest("acme", chat("e1"))
    first = await pool_of(switch, r.case)
    assert first.startswith("support^") and first.endswith("#chat.at<1")
    row = await switch.redis.hmget(f"sb:{{acme}}:p:{first}", ["filter", "load"])
    assert row == [b"true", b"chat.at<1"]
    # the same static filter, so the same digest; the conditions tell the pools apart
    second = first.replace(
        "chat.at<1", load_code([LoadCondition("chat", "assigned_tasks", "<", 2)])
    )
    assert second.endswith("#chat.at<2")
    assert await switch.redis.smismember("sb:{acme}:pools", [first, second]) == [1, 1]


async def test_load_terms_outside_a_top_level_and_are_config_errors(switch: Switch) -> None:
    bad = {"queue": "support", "expression": "skills HAS 'x' OR channel.chat.assigned_tasks < 1"}
    with pytest.raises(ConfigError) as caught:
        await switch.apply_workspace(workspace(bad, agents=[]))
    message = str(caught.value)
    assert "task_routing.filters[0].targets[0].expression" in message
    assert "not under OR or NOT at column 19" in message
    queue = {"id": "support", "target": "worker.channel.voice.assigned_tasks == 0"}
    with pytest.raises(ConfigError, match=r"queues\[0\]\.target: .* at column 1"):
        await switch.apply_workspace({**DECL, "queues": [queue]})


# --- the Lua check agrees with LoadCondition.holds --------------------------------------------

LIB = (Path(__file__).parent.parent / "router" / "lua" / "_lib.lua").read_text()
FITS = LIB + "\nreturn load_fits(ARGV[2], load_conds(ARGV[3])) and 1 or 0"
CONDITIONS = [
    LoadCondition("chat", key, op, n)
    for key in ("assigned_tasks", "available_capacity_percentage")
    for op in ("==", "!=", "<", ">")
    for n in (-34, -1, 0, 1, 2, 33, 34, 50, 66, 67, 100)
]


async def test_lua_load_conditions_agree_with_python(redis: Redis) -> None:
    fits = redis.register_script(FITS)
    for cap in range(4):
        for load in range(6):  # above the capacity too: capacity can be lowered under load
            await redis.hset("sb:{t}:a:x", mapping={"cap:chat": cap, "load:chat": load})
            for c in CONDITIONS:
                pool = "q^0123456789ab#" + load_code([c])
                got = await fits(keys=["sb:{t}:"], args=[0, "x", pool])
                assert bool(got) == c.holds(cap, load), (c, cap, load)
    both = "q^0123456789ab#chat.at<2&voice.acp==100"
    await redis.hset("sb:{t}:a:x", mapping={"cap:voice": 1, "load:voice": 0, "load:chat": 1})
    assert await fits(keys=["sb:{t}:"], args=[0, "x", both]) == 1
    await redis.hset("sb:{t}:a:x", "load:voice", 1)
    assert await fits(keys=["sb:{t}:"], args=[0, "x", both]) == 0


@pytest.mark.parametrize("skip_if", ["workers.available == 0", "workers.available < 1"])
async def test_skip_if_counts_only_the_agents_who_meet_the_load_terms(
    switch: Switch, inbox: Inbox, skip_if: str
) -> None:
    """ann has room for more chats but already has one, so the first step's pool ("no chat
    yet") has nobody available: the step is skipped, and bob in sales gets the case."""
    first = {
        "queue": "support",
        "expression": "worker.channel.chat.assigned_tasks < 1",
        "skip_if": skip_if,
    }
    decl = workspace(
        first, {"queue": "sales"}, agents=[agent("ann", ["support"]), agent("bob", ["sales"])]
    )
    await switch.apply_workspace(decl)
    await switch.set_status("acme", "ann", "available")
    held = await switch.ingest("acme", chat("e1"))
    assert offered(inbox, "ann") == [held.case]
    await accept_last(switch, inbox, "ann")
    await switch.set_status("acme", "bob", "available")
    case = await switch.ingest("acme", chat("e2", email="b@x.test"))
    assert offered(inbox, "bob") == [case.case]
    assert offered(inbox, "ann") == [held.case]


async def test_skip_if_keeps_the_step_while_someone_meets_the_load_terms(
    switch: Switch, inbox: Inbox
) -> None:
    first = {
        "queue": "support",
        "expression": "worker.channel.chat.assigned_tasks < 1",
        "skip_if": "workers.available == 0",
    }
    decl = workspace(
        first,
        {"queue": "sales"},
        agents=[agent("ann", ["support"]), agent("cy", ["support"]), agent("bob", ["sales"])],
    )
    await switch.apply_workspace(decl)
    for who in ("ann", "cy", "bob"):
        await switch.set_status("acme", who, "available")
    one = await switch.ingest("acme", chat("e1"))
    two = await switch.ingest("acme", chat("e2", email="b@x.test"))
    # each support agent takes one chat; nobody fits a third, which then goes to sales
    firsts = offered(inbox, "ann") + offered(inbox, "cy")
    assert sorted(firsts) == sorted([one.case, two.case])
    three = await switch.ingest("acme", chat("e3", email="c@x.test"))
    assert offered(inbox, "bob") == [three.case]
