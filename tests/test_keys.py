"""The Lua scripts build their keys themselves (router/lua/_lib.lua, ``k_*``); Python builds the
same keys in router/keys.py. Both must agree, or Python would read and write keys the scripts
never touch. Each Lua builder runs in a real Redis and is compared with its Python twin; a
builder added to _lib.lua without a twin here fails the test."""

from __future__ import annotations

import re
from collections.abc import Callable

from redis.asyncio import Redis

from router import keys
from router.store import read_lua

WS = "acme"
A, Q, CH, C, OF, U, E = "al", "support", "chat", "c1", "o1", "u1", "ev1"
P = "support^3f2a#chat.at<2"  # a pool id with live-load conditions

# Lua builder -> (its arguments, the key router/keys.py builds for them)
TWINS: dict[str, tuple[tuple[str, ...], Callable[[], str]]] = {
    "k_cfg": ((), lambda: keys.settings(WS)),
    "k_agents": ((), lambda: keys.agents(WS)),
    "k_agent": ((A,), lambda: keys.agent(WS, A)),
    "k_agent_pools": ((A,), lambda: keys.agent_pools(WS, A)),
    "k_agent_conns": ((A,), lambda: keys.agent_conns(WS, A)),
    "k_agent_cases": ((A,), lambda: keys.agent_cases(WS, A)),
    "k_agent_offers": ((A,), lambda: keys.agent_offers(WS, A)),
    "k_agent_reminders": ((A,), lambda: keys.agent_reminders(WS, A)),
    "k_node_agents": (("n1",), lambda: keys.node_agents(WS, "n1")),
    "k_node_widgets": (("n1",), lambda: keys.node_widgets(WS, "n1")),
    "k_agent_followups": ((A,), lambda: keys.agent_followups(WS, A)),
    "k_queues": ((), lambda: keys.queues(WS)),
    "k_queue": ((Q,), lambda: keys.queue(WS, Q)),
    "k_queue_wait": ((Q,), lambda: keys.queue_waiting(WS, Q)),
    "k_pools": ((), lambda: keys.pools(WS)),
    "k_pool": ((P,), lambda: keys.pool(WS, P)),
    "k_pool_agents": ((P,), lambda: keys.pool_agents(WS, P)),
    "k_pool_av": ((P, CH), lambda: keys.pool_available(WS, P, CH)),
    "k_pool_wait": ((P, CH), lambda: keys.pool_waiting(WS, P, CH)),
    "k_case": ((C,), lambda: keys.case(WS, C)),
    "k_customer": ((U,), lambda: keys.customer(WS, U)),
    "k_customer_cases": ((U,), lambda: keys.customer_cases(WS, U)),
    "k_timeline": ((U,), lambda: keys.customer_timeline(WS, U)),
    "k_ids": ((), lambda: keys.identities(WS)),
    "k_threads": ((), lambda: keys.threads(WS)),
    "k_dedupe": ((E,), lambda: keys.dedupe(WS, E)),
    "k_timers": ((), lambda: keys.timers(WS)),
    "k_log": ((), lambda: keys.log(WS)),
    "k_outbox": ((), lambda: keys.outbox(WS)),
    "k_push_case": ((C,), lambda: keys.push_case(WS, C)),
}


def _lib() -> str:
    return read_lua("_lib")


def test_every_lua_key_builder_has_a_python_twin() -> None:
    builders = set(re.findall(r"^local function (k_\w+)\(", _lib(), re.MULTILINE))
    assert builders == set(TWINS), (
        f"without a twin in TWINS: {sorted(builders - set(TWINS))}; "
        f"gone from _lib.lua: {sorted(set(TWINS) - builders)}"
    )


async def test_lua_and_python_build_the_same_keys(redis: Redis) -> None:
    calls = ", ".join(
        f"{name}({', '.join(repr(a) for a in args)})" for name, (args, _) in TWINS.items()
    )
    script = f"{_lib()}\nreturn {{{calls}}}"
    built = await redis.eval(script, 1, keys.prefix(WS))
    got = dict(zip(TWINS, (b.decode() for b in built), strict=True))
    assert got == {name: twin() for name, (_, twin) in TWINS.items()}
