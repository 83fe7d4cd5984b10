"""Races: many clients on several Redis connections hit the same offers and cases at once.

Each ``Switch`` here has its own Store and connection pool, like separate router processes, so
calls from different switches really interleave inside Redis. The tests never sleep: a worker
runs a fixed number of operations, and ``asyncio.timeout`` only bounds a hang.

Afterwards the whole Redis state and the event log are checked: every offer ended at most once
and exactly as the callers were told, no case had two owners at any point of the log, no agent
is over capacity, and every acknowledged case is terminal or visibly in flight.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from router.errors import Conflict, NotFound
from router.store import Store, connect, now_ms
from router.switch import Switch
from tests.switchboard_fixtures import DECL, agent

WS = "acme"
P = "sb:{acme}:"
SWITCHES = 4  # "router processes", each with its own connection pool
WORKERS = 50
OPS = 40
CHANNELS = ("chat", "email", "voice")
AGENTS = [
    agent(f"ag{i}", ["support", "sales"] if i % 2 else ["support"], chat=3, email=3, voice=1)
    for i in range(8)
]
TERMINAL = frozenset({"completed", "cancelled", "abandoned"})
HOLDING = frozenset({"assigned", "wrapping"})


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Switches:
    """Several switches on one Redis, and every offer any of them pushed to any agent."""

    def __init__(self, url: str, n: int) -> None:
        self.all = [Switch(Store(connect(url)), notify=self._notify) for _ in range(n)]
        self.offers: dict[str, tuple[str, str]] = {}  # offer -> (agent, case), in push order

    async def _notify(self, ws: str, agent: str, frame: dict[str, Any], **_: Any) -> None:
        if frame["type"] == "offer":
            self.offers[frame["offer"]] = (agent, frame["case"]["id"])

    def pick(self, rng: random.Random) -> Switch:
        return rng.choice(self.all)

    def recent_offer(self, rng: random.Random) -> str | None:
        """One of the latest offers: most are still pending, so answers really collide."""
        latest = list(self.offers)[-8:]
        return rng.choice(latest) if latest else None

    async def close(self) -> None:
        for sw in self.all:
            await sw.store.close()


@pytest_asyncio.fixture(loop_scope="session")
async def switches(redis: Redis, redis_server: str) -> AsyncIterator[Switches]:
    sws = Switches(redis_server, SWITCHES)
    await sws.all[0].apply_workspace({**DECL, "agents": AGENTS})
    try:
        yield sws
    finally:
        await sws.close()


async def outcome(call: Awaitable[dict[str, Any]]) -> str:
    """ok | dup | conflict | notfound — anything else (e.g. StoreUnavailable) fails the test."""
    try:
        res = await call
    except Conflict:
        return "conflict"
    except NotFound:
        return "notfound"
    return "dup" if res.get("duplicate") else "ok"


def event(n: int, rng: random.Random) -> dict[str, Any]:
    ch = rng.choice(CHANNELS)
    ids = {"phone": f"+1555{n:07d}"} if ch == "voice" else {"email": f"c{n}@x.test"}
    topic = rng.choice(["sales", "other"])
    return {
        "id": f"ev{n}",
        "channel": ch,
        "identities": ids,
        "thread": f"t{n}",
        "kind": "call.offered" if ch == "voice" else "message",
        "text": "hi",
        "attributes": {"topic": topic},
    }


class Workload:
    """50 clients doing random things to shared offers and cases; records what each was told."""

    def __init__(self, sws: Switches, seed: int) -> None:
        self.sws = sws
        self.seed = seed
        self.cases: set[str] = set()  # acknowledged
        self.assigned: dict[str, str] = {}  # case -> agent, as last told (may be stale)
        self.told: list[tuple[str, str, str, str]] = []  # (verb, offer|case, agent, outcome)
        self.ids = iter(range(10**6))

    async def worker(self, w: int) -> None:
        rng = random.Random(self.seed * 1000 + w)
        ops = [
            self.ingest,
            self.status,
            self.answer_burst,
            self.reject,
            self.complete_burst,
            self.timers,
            self.transfer,
        ]
        weights = [5, 3, 6, 2, 3, 1, 1]
        for _ in range(OPS):
            await rng.choices(ops, weights)[0](rng)

    async def ingest(self, rng: random.Random) -> None:
        res = await self.sws.pick(rng).ingest(WS, event(next(self.ids), rng))
        assert res.action == "created" and not res.duplicate
        self.cases.add(res.case)

    async def status(self, rng: random.Random) -> None:
        a = rng.choice(AGENTS)["id"]
        st = rng.choice(["available", "available", "available", "away", "offline"])
        await self.sws.pick(rng).set_status(WS, a, st)

    async def answer_burst(self, rng: random.Random) -> None:
        """Several consoles/nodes answer the same offer at once; a stranger tries too."""
        o = self.sws.recent_offer(rng)
        if o is None:
            return
        a, c = self.sws.offers[o]
        stranger = rng.choice([x["id"] for x in AGENTS if x["id"] != a])
        calls: list[tuple[str, str, Awaitable[dict[str, Any]]]] = []
        for _ in range(rng.randint(2, 4)):
            calls.append(("accept", a, self.sws.pick(rng).accept(WS, a, o)))
        for _ in range(rng.randint(0, 2)):
            calls.append(("reject", a, self.sws.pick(rng).reject(WS, a, o)))
        calls.append(("accept", stranger, self.sws.pick(rng).accept(WS, stranger, o)))
        rng.shuffle(calls)
        results = await asyncio.gather(*(outcome(call) for _, _, call in calls))
        for (verb, who, _), res in zip(calls, results, strict=True):
            self.told.append((verb, o, who, res))
            if verb == "accept" and who == a and res == "ok":
                self.assigned[c] = a

    async def reject(self, rng: random.Random) -> None:
        o = self.sws.recent_offer(rng)
        if o is not None:
            a, _ = self.sws.offers[o]
            self.told.append(("reject", o, a, await outcome(self.sws.pick(rng).reject(WS, a, o))))

    async def complete_burst(self, rng: random.Random) -> None:
        if not self.assigned:
            return
        c = rng.choice(sorted(self.assigned))
        a = self.assigned[c]
        calls = [self.sws.pick(rng).complete(WS, a, c, "resolved") for _ in range(3)]
        if rng.random() < 0.5:
            calls.append(self.sws.pick(rng).wrapup(WS, a, c))
        results = await asyncio.gather(*(outcome(call) for call in calls))  # all at once
        for res in results[:3]:
            self.told.append(("complete", c, a, res))

    async def timers(self, rng: random.Random) -> None:
        """Offer deadlines race the answers: the clock runs ahead by up to an offer timeout."""
        ahead = rng.choice([0, 0, 16_000, 16_000, 31_000])
        await self.sws.pick(rng).run_timers(WS, now=now_ms() + ahead)

    async def transfer(self, rng: random.Random) -> None:
        if self.assigned:
            c = rng.choice(sorted(self.assigned))
            q = rng.choice(["support", "sales"])
            await outcome(self.sws.pick(rng).transfer(WS, self.assigned[c], c, queue=q))


async def read_all(r: Redis) -> dict[str, Any]:
    """Cases, offers, agents and waiting sets, straight from Redis."""
    names = [_s(k) for k in await r.keys(P + "*")]
    pipe = r.pipeline(transaction=False)
    for k in names:
        pipe.type(k)
    types = dict(zip(names, [_s(t) for t in await pipe.execute()], strict=True))
    hashes = [k for k, t in types.items() if t == "hash"]
    zsets = [k for k, t in types.items() if t == "zset" and (":w:" in k or k.endswith(":wait"))]
    sets = [k for k, t in types.items() if t == "set" and k.endswith((":cases", ":offers"))]
    pipe = r.pipeline(transaction=False)
    for k in hashes:
        pipe.hgetall(k)
    for k in zsets:
        pipe.zrange(k, 0, -1)
    for k in sets:
        pipe.smembers(k)
    values = await pipe.execute()
    h = {k: {_s(a): _s(b) for a, b in v.items()} for k, v in zip(hashes, values, strict=False)}
    rest = {k: {_s(m) for m in v} for k, v in zip(zsets + sets, values[len(hashes) :], strict=True)}

    def kind(tag: str) -> dict[str, dict[str, str]]:
        out = {}
        for k, v in h.items():
            tail = k[len(P) :]
            if tail.startswith(tag + ":") and ":" not in tail[len(tag) + 1 :]:
                out[tail[len(tag) + 1 :]] = v
        return out

    cases = kind("c")
    return {
        "cases": cases,
        # an offer lives in its case's hash: each case's last offer, "ost" its state
        "offers": {
            f["offer"]: {"st": f.get("ost"), "case": c, "agent": f.get("oagent"), "ch": f.get("ch")}
            for c, f in cases.items()
            if f.get("offer")
        },
        "agents": kind("a"),
        "waits": {k: v for k, v in rest.items() if k in zsets},
        "sets": {k: v for k, v in rest.items() if k in sets},
    }


def check_state(state: dict[str, Any], acked: set[str]) -> None:
    cases, offers, agents = state["cases"], state["offers"], state["agents"]
    pending = {o: f for o, f in offers.items() if f["st"] == "pending"}
    live = Counter(f["case"] for f in pending.values())
    assert all(n == 1 for n in live.values()), f"cases with several pending offers: {live}"
    for o, f in pending.items():
        cf = cases[f["case"]]
        assert cf["st"] == "offered" and cf["offer"] == o, f"pending {o} but case is {cf}"
    for c, f in cases.items():
        if f["st"] in HOLDING:
            assert c not in live, f"assigned case {c} also has a pending offer"
            mine = state["sets"].get(f"{P}a:{f['agent']}:cases", set())
            assert c in mine, f"{c} not in its agent's list of cases"
    for a, af in agents.items():
        for ch in CHANNELS:
            held = sum(f["agent"] == a and f["ch"] == ch for f in pending.values())
            held += sum(
                f["st"] in HOLDING and f.get("agent") == a and f["ch"] == ch for f in cases.values()
            )
            load, cap = int(af.get(f"load:{ch}", 0)), int(af[f"cap:{ch}"])
            assert load == held <= cap, f"{a} {ch}: load {load}, holds {held}, capacity {cap}"
    for c in acked:
        f = cases[c]
        inside = sorted(k[len(P) :] for k, members in state["waits"].items() if c in members)
        if f["st"] == "queued":
            want = sorted([f"p:{f['pool']}:w:{f['ch']}", f"q:{f['q']}:wait"])
            assert inside == want, f"queued case {c} waits in {inside}, not {want}"
        else:
            assert f["st"] in TERMINAL | HOLDING | {"offered"}, f"case {c} is {f['st']}"
            assert not inside, f"{f['st']} case {c} is still in {inside}"


def check_log(entries: list[dict[str, str]]) -> None:
    """Replay the log: one live offer or owner per case at every point, each offer ends once."""
    offered: dict[str, str] = {}  # case -> live offer
    owner: dict[str, str] = {}  # case -> agent holding it
    ended: dict[str, str] = {}  # offer -> how it ended
    for i, e in enumerate(entries):
        t, c, o = e["t"], e.get("case", ""), e.get("offer", "")
        where = f"log entry {i} {e}"
        if t == "offer.created":
            assert c not in offered and c not in owner, f"{where}: case already has an owner"
            offered[c] = o
        elif t in ("offer.accepted", "offer.rejected", "offer.timeout", "offer.rescinded"):
            assert o not in ended, f"{where}: offer already ended {ended[o]}"
            assert offered.get(c) == o, f"{where}: not the case's live offer"
            ended[o] = t
            del offered[c]
            if t == "offer.accepted":
                assert c not in owner, f"{where}: accepted twice without a transfer"
                owner[c] = e["agent"]
        elif t in ("case.completed", "case.transferred") and e.get("agent"):
            assert owner.pop(c, None) == e["agent"], f"{where}: not held by that agent"
        elif t in ("case.abandoned", "case.cancelled"):
            assert c not in offered and c not in owner, f"{where}: ended a case still held"


async def log_entries(r: Redis) -> list[dict[str, str]]:
    return [{_s(k): _s(v) for k, v in f.items()} for _, f in await r.xrange(P + "log")]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_concurrent_answers_keep_one_owner(
    switches: Switches, redis: Redis, seed: int
) -> None:
    work = Workload(switches, seed)
    async with asyncio.timeout(120):  # a deadline against hangs, not a synchronisation
        for a in AGENTS[:5]:
            await switches.all[0].set_status(WS, a["id"], "available")
        await asyncio.gather(*(work.worker(w) for w in range(WORKERS)))

    state = await read_all(redis)
    check_state(state, work.cases)
    log = await log_entries(redis)
    check_log(log)

    # every offer ended at most once, exactly as its callers were told
    told: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    res: str | Counter[str]  # one answer's outcome, then all the outcomes of one offer or case
    for verb, thing, who, res in work.told:
        told[(verb, thing)][res] += 1
        if verb == "accept" and who != switches.offers[thing][0]:
            assert res == "notfound", f"{who} answered someone else's offer {thing}: {res}"
    logged = Counter((e["t"], e["offer"]) for e in log if e["t"].startswith("offer."))
    # every offer's end as the log tells it; a case's last offer as its hash does too
    ends = {e["offer"]: e["t"].removeprefix("offer.") for e in log if e["t"].startswith("offer.")}
    ends = {o: "pending" if t == "created" else t for o, t in ends.items()}
    for o, f in state["offers"].items():
        assert f["st"] == ends.get(o), f"offer {o}: the case says {f['st']}, the log {ends.get(o)}"
    for o, st in ends.items():
        acc, rej = told[("accept", o)]["ok"], told[("reject", o)]["ok"]
        assert acc + rej <= 1, f"offer {o} answered {acc} + {rej} times successfully"
        assert (st == "accepted") == (acc == 1) == (logged["offer.accepted", o] == 1)
        assert (st == "rejected") == (rej == 1) == (logged["offer.rejected", o] == 1)
    for (verb, c), res in told.items():
        if verb == "complete":
            assert res["ok"] == (state["cases"][c]["st"] == "completed"), f"{c}: {res}"
    # the workload did race: some answers lost to others
    assert sum(r["dup"] + r["conflict"] for r in told.values()) > 0


async def test_concurrent_duplicate_ingests_make_one_case(switches: Switches, redis: Redis) -> None:
    """50 deliveries of 5 events (a bridge retrying everywhere at once): 5 cases, 5 offers."""
    for a in AGENTS:
        await switches.all[0].set_status(WS, a["id"], "available")
    # even: a Spanish chat (its pool is defined on first sight, by all switches at once; no
    # agent speaks Spanish, so it waits); odd: a sales chat, offered at once
    attrs = [{"language": "es"}, {"topic": "sales"}]
    events = [
        {
            "id": f"dup{n}",
            "channel": "chat",
            "identities": {"email": f"d{n}@x.test"},
            "thread": f"d{n}",
            "text": "hi",
            "attributes": attrs[n % 2],
        }
        for n in range(5)
    ]
    copies = [(n % 5, switches.all[n % SWITCHES]) for n in range(WORKERS)]
    random.Random(7).shuffle(copies)
    async with asyncio.timeout(60):
        results = await asyncio.gather(*(sw.ingest(WS, events[i]) for i, sw in copies))

    by_event: dict[int, list[Any]] = defaultdict(list)
    for (i, _), res in zip(copies, results, strict=True):
        by_event[i].append(res)
    log = await log_entries(redis)
    created = Counter(e["case"] for e in log if e["t"] == "case.created")
    offered = Counter(e["case"] for e in log if e["t"] == "offer.created")
    pools = Counter(e["pool"] for e in log if e["t"] == "pool.defined")
    for i, answers in by_event.items():
        assert len({r.case for r in answers}) == 1, f"event {i} made cases {answers}"
        assert [r.duplicate for r in answers].count(False) == 1, f"event {i}: {answers}"
        case = answers[0].case
        assert created[case] == 1 and offered[case] == i % 2, f"{case}: {created}, {offered}"
        cust = await redis.hget(P + f"c:{case}", "cust")
        assert await redis.llen(P + f"cu:{_s(cust)}:tl") == 1
    assert len(created) == 5
    assert len(pools) == 3 and set(pools.values()) == {1}, f"pools defined: {pools}"
    check_state(await read_all(redis), {r.case for r in results})
    check_log(log)


def test_log_check_catches_a_second_owner() -> None:
    """The log replay above is not vacuous: it rejects a case accepted twice."""
    offer = {"t": "offer.created", "case": "c1", "agent": "a", "offer": "o1"}
    accept = {"t": "offer.accepted", "case": "c1", "agent": "a", "offer": "o1"}
    check_log([offer, accept])
    with pytest.raises(AssertionError, match="already has an owner"):
        check_log([offer, accept, {**offer, "agent": "b", "offer": "o2"}])
    with pytest.raises(AssertionError, match="already ended"):
        check_log([offer, accept, accept])


async def test_first_cases_of_a_new_pool_define_it_once(switch: Switch) -> None:
    """64 concurrent first cases of new pools: each pool is defined once, not 64 times."""
    import asyncio

    from tests.switchboard_fixtures import DECL, agent, chat

    await switch.apply_workspace({**DECL, "agents": [agent("ann", ["support"], chat=3)]})
    before = await switch.redis.xlen("sb:{acme}:log")
    calls = switch.store.calls
    await asyncio.gather(
        *(
            switch.ingest(
                "acme", chat(f"p{i}", email=f"p{i}@x.test", attributes={"language": "es"})
            )
            for i in range(64)
        )
    )
    entries = await switch.redis.xrange("sb:{acme}:log", min="-", max="+")
    defined = [e[b"pool"] for _, e in entries[before:] if e[b"t"] == b"pool.defined"]
    # the step's narrowed pool (the queue's own, the workflow's default, came with the
    # declaration: Switch.apply_workspace)
    assert len(defined) == len(set(defined)) == 1
    assert switch.store.calls - calls == 64 + 1  # one script per case, one for the pool


async def test_a_membership_computed_before_a_change_it_depends_on_is_refused(
    switch: Switch,
) -> None:
    """Memberships are computed in Python and written by a script that checks a version: an
    agent update computed before a pool was defined must recompute (it would drop the agent
    from that pool), and a pool computed before an agent changed must recompute (it would miss
    the change) — but two agents' updates never make each other retry, so a workspace edit
    that recomputes every agent on two nodes at once does not keep retrying."""
    from tests.switchboard_fixtures import DECL, agent

    await switch.apply_workspace(
        {**DECL, "agents": [agent("ann", ["support"]), agent("bob", ["support"])]}
    )
    store, cfg_key = switch.store, "sb:{acme}:cfg"

    async def version(which: str) -> str:
        return (await switch.redis.hget(cfg_key, which) or b"0").decode()

    async def update(aid: str, pver: str) -> dict[str, Any]:
        res: dict[str, Any] = await store.run(
            "agent_update", "acme", aid, aid.title(), "chat", '{"chat": 2}',
            '{"skills": ["support"]}', "[]", pver,
        )  # fmt: skip
        return res

    async def define(pool: str, aver: str) -> dict[str, Any]:
        res: dict[str, Any] = await store.run(
            "pool_define", "acme", pool, "support", "language == 'fr'", aver, "[]", "[]", ""
        )
        return res

    pver, aver = await version("pver"), await version("aver")
    assert (await update("ann", pver))["ok"]
    assert (await update("bob", pver))["ok"]  # computed before ann's update: still fine
    assert (await define("support^fr", aver)) == {"ok": False, "retry": True}  # ann changed
    assert (await define("support^fr", await version("aver")))["ok"]
    assert (await update("ann", pver)) == {"ok": False, "retry": True}  # a pool came meanwhile
    assert (await update("ann", await version("pver")))["ok"]
