"""A supervisors' snapshot reads its agents with one script per chunk (router/lua/agents_read.lua),
not with three commands per agent: each agent as ``snapshot.agent_view`` makes them from their
hash (the script and the Python must agree, or a page would show another load or status than
the agent's own console), and the cases they are offered or hold, by state, as they are now.
The routing core on the test Redis."""

from __future__ import annotations

from typing import Any

from router import keys
from router.push import pairs, script_list
from router.snapshot import agent_view
from router.switch import Switch
from tests.switchboard_fixtures import DECL, Inbox, agent, chat

AGENTS = [
    agent("ann", ["support"], chat=2, email=3, voice=1),
    {**agent("bob", ["support"]), "capacity": {"voice": 1}},  # calls only
    {**agent("sue", ["support"]), "role": "supervisor", "capacity": {}},  # takes no cases
]


async def read(switch: Switch, *ids: str, attrs: bool = False) -> dict[str, Any]:
    got: dict[str, Any] = await switch.store.run("agents_read", "acme", "1" if attrs else "0", *ids)
    return got


async def python_view(switch: Switch, aid: str) -> dict[str, Any]:
    return agent_view(pairs(await switch.redis.hgetall(keys.agent("acme", aid))), attributes=False)


async def test_each_agent_reads_as_the_python_view_of_their_hash(
    switch: Switch, inbox: Inbox
) -> None:
    await switch.apply_workspace({**DECL, "agents": AGENTS})
    await switch.set_status("acme", "ann", "available")
    await switch.ingest("acme", chat("e1", email="pat@example.com"))  # offered to ann: load 1
    # her idle moment is the latest of hers and her channels': her email's, here
    idle = int(await switch.redis.hget(keys.agent("acme", "ann"), "idle"))
    await switch.redis.hset(keys.agent("acme", "ann"), "idle:email", idle + 5000)
    got = await read(switch, "ann", "bob", "sue", "ghost")  # ghost: no such agent, left out
    views = {a["id"]: a for a in script_list(got["agents"])}
    assert list(views) == ["ann", "bob", "sue"]
    for aid in views:
        assert views[aid] == await python_view(switch, aid), aid
    assert views["ann"]["load"] == {"chat": 1, "email": 0, "voice": 0}
    assert views["ann"]["idle_since"] == idle + 5000 and views["ann"]["status"] == "available"
    assert views["bob"]["capacity"] == {"voice": 1}
    assert views["sue"]["capacity"] == {} and views["sue"]["role"] == "supervisor"
    assert got["attrs"] == {}  # not asked for


async def test_attributes_come_as_stored_when_asked_for(switch: Switch) -> None:
    await switch.apply_workspace({**DECL, "agents": AGENTS})
    got = await read(switch, "ann", "bob", attrs=True)
    for aid in ("ann", "bob"):
        stored = await switch.redis.hget(keys.agent("acme", aid), "attrs")
        assert got["attrs"][aid] == stored.decode()


async def test_the_cases_come_by_the_state_they_are_in_now(switch: Switch, inbox: Inbox) -> None:
    await switch.apply_workspace({**DECL, "agents": [agent("ann", ["support"], chat=5)]})
    await switch.set_status("acme", "ann", "available")
    cases = [
        (await switch.ingest("acme", chat(f"e{i}", email=f"p{i}@example.com"))).case
        for i in range(4)
    ]
    offers = {o["case"]["id"]: o["offer"] for o in inbox.offers("ann")}
    await switch.accept("acme", "ann", offers[cases[0]])
    await switch.accept("acme", "ann", offers[cases[1]])
    await switch.wrapup("acme", "ann", cases[1])
    await switch.accept("acme", "ann", offers[cases[2]])
    await switch.complete("acme", "ann", cases[2])  # closed: neither held nor offered
    got = {(c, st) for _, c, st in script_list((await read(switch, "ann"))["cases"])}
    assert got == {(cases[0], "assigned"), (cases[1], "wrapping"), (cases[3], "offered")}
    created = {c: int(ts) for ts, c, _ in script_list((await read(switch, "ann"))["cases"])}
    for c, ts in created.items():
        assert ts == int(await switch.redis.hget(keys.case("acme", c), "created"))


async def test_no_agents_read_as_none(switch: Switch) -> None:
    await switch.apply_workspace({**DECL, "agents": AGENTS})
    got = await read(switch, "ghost")
    assert script_list(got["agents"]) == [] and script_list(got["cases"]) == []
