"""Exploratory QA, round 10: the supervisor view stays true without a reload.

* A queue an admin adds, renames or removes (REST API, through another router node) reaches a
  supervisor's open page: its queue table, the queue names of the listed cases and the move
  form's menu; a removed queue chosen in that menu is not swapped for another one.
* "In progress" and "Waiting cases" list a bounded page; the page counts every case per state
  and says how many the list leaves out ("…and 3 more in progress").
* A queue's service level is counted against the target it has now: a queue added after the
  statistics started, or a target changed, is not held to a stale (or default) one.

Browser tests start real ``switchboard serve`` nodes on one Redis (tests/ws_client.py's
``Stack``) and drive headless Chromium with tests/test_console.py's harness; they wait only on
conditions in the page, with deadlines. The statistics tests run the routing core on the test
Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st
from playwright.async_api import Page, expect

import router.stats
import router.store
from router import keys, queries
from router.stats import Hour, Stats
from router.store import now_ms
from router.switch import Switch
from tests import test_console
from tests.switchboard_fixtures import DECL, Inbox, agent, chat
from tests.test_console import Web
from tests.util import wait_for
from tests.ws_client import Stack, WsClient, uid

# test_console's browser, one per module
chromium = test_console.chromium
browser = test_console.browser

browser_test = pytest.mark.browser

WORKSPACE: dict[str, Any] = {
    "id": "acme",
    "queues": [
        {"id": "support", "name": "Support", "target": "skills HAS 'support'"},
        {"id": "billing", "name": "Billing", "target": "skills HAS 'billing'"},
    ],
    "workflow": {
        "task_routing": {
            "filters": [
                {
                    "filter_friendly_name": "Billing",
                    "expression": "topic == 'billing'",
                    "targets": [{"queue": "billing"}],
                }
            ],
            "default_filter": {"queue": "support"},
        }
    },
    "agents": [
        {
            "id": "sam",
            "name": "Sam Support",
            "password": "pw",
            "attributes": {"skills": ["support"]},
            "capacity": {"chat": 60, "email": 1, "voice": 1},
        },
        {"id": "sue", "name": "Sue", "password": "pw", "role": "supervisor", "capacity": {}},
        {"id": "ada", "name": "Ada", "password": "pw", "role": "admin", "capacity": {}},
    ],
}


@pytest_asyncio.fixture(loop_scope="session")
async def two_nodes(tmp_path: Path) -> AsyncIterator[Stack]:
    st = await Stack.start(tmp_path, WORKSPACE, nodes=[{}, {}])
    try:
        yield st
    finally:
        await st.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def one_node(tmp_path: Path) -> AsyncIterator[Stack]:
    st = await Stack.start(tmp_path, WORKSPACE)
    try:
        yield st
    finally:
        await st.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def pages(browser: Any) -> AsyncIterator[list[Web]]:
    """Browser contexts per node, checked for page errors and CSP violations at the end."""
    webs: list[Web] = []
    try:
        yield webs
    finally:
        for w in webs:
            await w.close()
    for w in webs:
        assert not w.problems, w.problems


async def signed_in_at(
    stack: Stack, browser: Any, webs: list[Web], path: str, agent: str, node: int = 0
) -> Page:
    """A new browser context on ``node`` at ``path``, ``agent`` signed in with the page's own
    form (password "pw"); whatever the page then shows is the caller's to wait for."""
    web = Web(browser, stack.nodes[node])
    webs.append(web)
    page = await web.page(path)
    await page.get_by_test_id("login-workspace").fill("acme")
    await page.get_by_test_id("login-agent").fill(agent)
    await page.get_by_test_id("login-password").fill("pw")
    await page.get_by_test_id("login-submit").click()
    return page


async def supervisor_page(stack: Stack, node: int, browser: Any, webs: list[Web]) -> Page:
    """Sue's supervisor view, signed in on ``node``."""
    page = await signed_in_at(stack, browser, webs, "/supervisor", "sue", node)
    await expect(page.get_by_test_id("connection-state")).to_have_text("Live")
    return page


async def admin(stack: Stack, method: str, path: str, body: Any = None, node: int = 0) -> Any:
    """An admin's REST call through ``node``."""
    token = (await stack.login("ada", node=node))["token"]
    r = await stack.http.request(
        method,
        f"{stack.nodes[node].url}/api{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


async def customer_event(bridge: WsClient, topic: str) -> str:
    """A chat from a new customer about ``topic``; its case id."""
    ack = await bridge.ok(
        "event",
        id=uid("e"),
        channel="chat",
        identities={"email": f"{uid('c')}@example.com"},
        name="Kim Lee",
        text="hello",
        attributes={"topic": topic},
    )
    case: str = ack["case"]
    return case


# -- 1: queue changes reach an open page, through any node ----------------------------------------


@browser_test
async def test_an_open_supervisor_page_follows_queues_an_admin_adds_renames_and_removes(
    two_nodes: Stack, browser: Any, pages: list[Web]
) -> None:
    stack = two_nodes
    bridge = await stack.bridge(node=0)
    case = await customer_event(bridge, "billing")  # nobody takes billing: it waits
    sue = await supervisor_page(stack, 1, browser, pages)  # Sue's page is on node B
    waiting = sue.locator(f"[data-testid=waiting-case][data-case={case}]")
    await expect(waiting.get_by_test_id("waiting-case-queue")).to_have_text("Billing")
    menu = sue.get_by_test_id("move-case-queue")
    await expect(menu.locator("option")).to_have_text(["Choose a queue", "Support", "Billing"])

    # the admin adds a queue and renames one, through node A
    await admin(stack, "PUT", "/queues/vip", {"name": "VIP", "target": "skills HAS 'support'"})
    await admin(stack, "PUT", "/queues/billing", {"name": "Billing & Refunds"})
    vip_row = sue.locator("[data-testid=queue-row][data-queue=vip]")
    await expect(vip_row.get_by_test_id("queue-name")).to_have_text("VIP")
    await expect(sue.get_by_test_id("queue-name")).to_have_text(
        ["Support", "Billing & Refunds", "VIP"]
    )
    await expect(waiting.get_by_test_id("waiting-case-queue")).to_have_text("Billing & Refunds")
    await expect(menu.locator("option")).to_have_text(
        ["Choose a queue", "Support", "Billing & Refunds", "VIP"]
    )

    # the new queue can be chosen at once: the case moves there
    await waiting.get_by_test_id("waiting-case-move").click()
    await menu.select_option("vip")
    await sue.get_by_test_id("move-case-submit").click()
    await expect(sue.get_by_test_id("move-confirmation")).to_contain_text("Case moved to VIP.")
    await expect(waiting.get_by_test_id("waiting-case-queue")).to_have_text("VIP")
    assert (await stack.case(case))["q"] == "vip"

    # a queue chosen in the menu and then removed is not swapped for another one
    await admin(stack, "PUT", "/queues/spare", {"name": "Spare", "target": "skills HAS 'x'"})
    await expect(menu.locator("option[value=spare]")).to_have_text("Spare")
    await menu.select_option("spare")
    await admin(stack, "DELETE", "/queues/spare")
    await expect(sue.locator("[data-testid=queue-row][data-queue=spare]")).to_have_count(0)
    await expect(menu.locator("option[value=spare]")).to_have_count(0)
    await expect(sue.get_by_test_id("move-queue-removed")).to_contain_text("Spare was removed")
    await expect(menu).to_have_value("")
    assert await menu.evaluate("m => !m.validity.valid")  # the form asks for a choice


# -- 2: a cut list says how many it left out ---------------------------------------------------


@browser_test
async def test_in_progress_and_waiting_say_how_many_cases_they_leave_out(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    stack = one_node
    bridge = await stack.bridge()
    handled = [await customer_event(bridge, "support") for _ in range(53)]
    for _ in range(52):
        await customer_event(bridge, "billing")  # nobody takes billing
    sam, _ = await stack.agent("sam", status="available")
    accepted = 0
    while accepted < len(handled):
        offer = await sam.expect("offer")
        await sam.ok("offer.accept", offer=offer["offer"])
        accepted += 1
    await sam.ok("case.wrapup", case=handled[-1])  # a state of its own, listed in full

    sue = await supervisor_page(stack, 0, browser, pages)
    await expect(sue.get_by_test_id("progress-counts")).to_have_text(
        "0 offered · 52 in progress · 1 wrapping up"
    )
    await expect(sue.get_by_test_id("progress-case")).to_have_count(51)
    more = sue.get_by_test_id("progress-more")
    await expect(more).to_be_visible()
    await expect(more).to_have_text(
        "…and 2 more in progress (only the oldest 50 of each state are listed)."
    )
    await expect(sue.get_by_test_id("waiting-case")).to_have_count(50)
    await expect(sue.get_by_test_id("waiting-more")).to_have_text(
        "…and 2 more waiting (only the oldest 50 are listed: choose a queue to see its own)."
    )

    # the counts follow: Sam completes two cases, and what is left out shrinks
    await sam.ok("case.complete", case=handled[0])
    await sam.ok("case.complete", case=handled[-1])
    await expect(sue.get_by_test_id("progress-counts")).to_have_text(
        "0 offered · 51 in progress · 0 wrapping up"
    )
    await expect(more).to_have_text(
        "…and 1 more in progress (only the oldest 50 of each state are listed)."
    )
    await expect(sue.get_by_test_id("progress-case")).to_have_count(50)


# -- 3: the statistics behind the page ---------------------------------------------------------


async def _sl(stats: Stats, switch: Switch, queue: str, answered: int) -> dict[str, Any]:
    """``queue``'s row of a snapshot, once the statistics have read ``answered`` answers."""

    async def look() -> dict[str, Any] | None:
        snap = await stats.snapshot(switch.store, await switch.config("acme"), "acme")
        row: dict[str, Any] = next(q for q in snap["queues"] if q["id"] == queue)
        return row if row["answered"] == answered else None

    got = await wait_for(look, message=f"{queue}: {answered} answered not counted")
    assert isinstance(got, dict)
    return got


async def _answer_after(switch: Switch, inbox: Inbox, case: str, waited_s: int) -> None:
    """Ann answers ``case`` as if it had waited ``waited_s`` seconds (since it began waiting)."""
    began = now_ms() - waited_s * 1000  # since it began waiting
    await switch.redis.hset(keys.case("acme", case), "plan_start", began)
    await switch.set_status("acme", "ann", "available")
    offer = inbox.last_offer("ann")
    assert offer["case"]["id"] == case
    await switch.accept("acme", "ann", offer["offer"])
    await switch.set_status("acme", "ann", "away")


async def test_service_level_holds_new_and_changed_queues_to_their_own_target(
    switch: Switch, inbox: Inbox, redis_server: str
) -> None:
    decl = {**DECL, "agents": [agent("ann", ["support"], chat=10)]}
    await switch.apply_workspace(decl)
    stats = Stats(redis_server)
    try:
        await stats.snapshot(switch.store, await switch.config("acme"), "acme")  # a page opens
        # an admin adds a queue with a 20 s target, and the workflow routes to it
        vip = {"id": "vip", "target": "skills HAS 'support'", "sl_target_s": 20}
        routing = {
            **DECL["workflow"]["task_routing"],
            "filters": [
                {
                    "filter_friendly_name": "vip",
                    "expression": "topic == 'vip'",
                    "targets": [{"queue": "vip"}],
                },
                *DECL["workflow"]["task_routing"]["filters"],
            ],
        }
        await switch.apply_workspace(
            {**decl, "queues": [*decl["queues"], vip], "workflow": {"task_routing": routing}}
        )
        r = await switch.ingest("acme", chat("v1", attributes={"topic": "vip"}))
        await _answer_after(switch, inbox, r.case, 30)  # 30 s: over its 20 s target
        row = await _sl(stats, switch, "vip", 1)
        assert (row["within_target"], row["service_level"]) == (0, 0.0)

        # support's target (60 s by default) is cut to 10 s: a 30 s answer is now a miss
        r = await switch.ingest("acme", chat("s1", email="bo@example.com"))
        await _answer_after(switch, inbox, r.case, 30)
        assert (await _sl(stats, switch, "support", 1))["service_level"] == 1.0
        queues = [{**q, "sl_target_s": 10} if q["id"] == "support" else q for q in decl["queues"]]
        await switch.apply_workspace({**decl, "queues": [*queues, vip]})
        row = await _sl(stats, switch, "support", 1)
        assert (row["within_target"], row["service_level"]) == (0, 0.0)
    finally:
        await stats.close()


@pytest.mark.parametrize("chunk", [None, 1])
async def test_the_statistics_count_every_open_case_by_status(
    switch: Switch,
    inbox: Inbox,
    redis_server: str,
    chunk: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The counts are what the listings hold, page after page, and the snapshot's oldest of
    each state are the listings' first page: read in one round trip, or a chunk of one agent
    (then one case) at a time, through the store as the server reads them."""
    if chunk is not None:
        monkeypatch.setattr(queries, "READ_CHUNK", chunk)
        monkeypatch.setattr(router.stats, "AGENTS_READ", chunk)
    await switch.apply_workspace(
        {**DECL, "agents": [agent("ann", ["support"], chat=10), agent("bob", ["sales"], chat=10)]}
    )
    cases = [
        (
            await switch.ingest("acme", chat(f"e{i}", email=f"p{i}@example.com", name=f"Pat {i}"))
        ).case
        for i in range(7)
    ]
    await switch.ingest("acme", chat("q1", email="q@example.com", attributes={"topic": "billing"}))
    await switch.set_status("acme", "ann", "available")
    for case in cases[:5]:  # ann takes five, and has two offers pending
        offer = next(o for o in inbox.offers("ann") if o["case"]["id"] == case)
        await switch.accept("acme", "ann", offer["offer"])
    for case in cases[:2]:
        await switch.wrapup("acme", "ann", case)
    await switch.complete("acme", "ann", cases[0])

    stats = Stats(redis_server)
    try:
        snap = await stats.snapshot(switch.store, await switch.config("acme"), "acme")
    finally:
        await stats.close()
    assert snap["cases"] == {"queued": 1, "offered": 2, "assigned": 3, "wrapping": 1}
    cfg = await switch.config("acme")
    for status, listed_now in snap["in_progress"].items():
        first = await queries.list_cases(switch.redis, cfg, "acme", status, limit=50)
        assert listed_now == {"cases": first.cases, "more": False}, status
        assert len(first.cases) == snap["cases"][status]
        assert all(c["customer_name"].startswith("Pat ") for c in first.cases)  # who, not an id
    for status, n in snap["cases"].items():
        listed: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await queries.list_cases(
                switch.redis, cfg, "acme", status, limit=1, cursor=cursor,
                commands=switch.store.commands if chunk else None,
            )  # fmt: skip
            listed += page.cases
            if (cursor := page.next_cursor) is None:
                break
        assert len(listed) == n, status


@browser_test
async def test_an_agent_on_the_supervisor_page_is_told_and_shown_the_way_back(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    """An agent who signs in at /supervisor sees why there is nothing for them, and a link to
    their console that works (they are still signed in there)."""
    page = await signed_in_at(one_node, browser, pages, "/supervisor", "sam")
    panel = page.get_by_test_id("forbidden")
    await expect(panel).to_contain_text("Supervisors only")
    await expect(panel).to_contain_text("Sam Support")
    await panel.get_by_test_id("forbidden-console").click()
    await expect(page).to_have_url(one_node.nodes[0].url + "/")
    await expect(page.get_by_test_id("connection-state")).to_have_text("Live")


# -- 4: the waiting list by queue, and a move form that cannot misfire --------------------------


@browser_test
async def test_a_quiet_queues_waiting_case_can_be_found_and_moved_on_purpose(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    """51 support cases fill the oldest-50 list; the billing case behind them is found by
    listing Billing alone. Move… says which case the form is about and chooses no queue for
    it (the last move's queue sent a case there unasked)."""
    bridge = await one_node.bridge()
    for _ in range(51):
        await customer_event(bridge, "support")
    ack = await bridge.ok(
        "event", id=uid("e"), channel="email", identities={"email": "quiet@example.com"},
        name="Quinn Quiet", subject="Invoice copy", text="hello", attributes={"topic": "billing"},
    )  # fmt: skip
    quiet = ack["case"]
    sue = await supervisor_page(one_node, 0, browser, pages)
    # who could take them: Sam (support) is signed out; nobody has billing's skills
    support = sue.locator("[data-testid=queue-row][data-queue=support]")
    billing = sue.locator("[data-testid=queue-row][data-queue=billing]")
    await expect(support.get_by_test_id("queue-agents")).to_have_text("0 of 1nobody in")
    await expect(billing.get_by_test_id("queue-agents")).to_have_text("0 of 0nobody has the skills")
    row = sue.locator(f"[data-testid=waiting-case][data-case={quiet}]")
    await expect(sue.get_by_test_id("waiting-more")).to_contain_text("…and 2 more waiting")
    await expect(row).to_have_count(0)  # behind fifty older support cases
    await sue.get_by_test_id("waiting-queue").select_option("billing")
    await expect(sue.get_by_test_id("waiting-case")).to_have_count(1)
    await expect(row.get_by_test_id("case-customer-name")).to_have_text("Quinn Quiet")
    await expect(sue.get_by_test_id("waiting-more")).to_be_hidden()

    menu = sue.get_by_test_id("move-case-queue")
    await row.get_by_test_id("waiting-case-move").click()
    await expect(sue.get_by_test_id("move-case-what")).to_contain_text("Quinn Quiet")
    await expect(sue.get_by_test_id("move-case-what")).to_contain_text("waiting in Billing")
    await expect(menu).to_have_value("")  # nothing chosen for it
    await sue.get_by_test_id("move-case-submit").click()
    assert await menu.evaluate("m => !m.validity.valid")  # the form asks for a queue
    assert (await one_node.case(quiet))["q"] == "billing"
    await menu.select_option("support")
    await sue.get_by_test_id("move-case-submit").click()
    await expect(sue.get_by_test_id("move-confirmation")).to_contain_text("Case moved to Support.")
    await expect(sue.get_by_test_id("waiting-empty")).to_have_text("No case is waiting in Billing.")
    assert (await one_node.case(quiet))["q"] == "support"


@browser_test
async def test_taking_a_case_from_an_agent_at_work_asks_first(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    bridge = await one_node.bridge()
    sam, _ = await one_node.agent("sam", status="available")
    case = await customer_event(bridge, "support")
    await sam.ok("offer.accept", offer=(await sam.offer_for(case))["offer"])
    sue = await supervisor_page(one_node, 0, browser, pages)
    row = sue.locator(f"[data-testid=progress-case][data-case={case}]")
    await row.get_by_test_id("progress-case-move").click()
    await expect(sue.get_by_test_id("move-case-what")).to_contain_text("Sam Support")
    await sue.get_by_test_id("move-case-queue").select_option("billing")
    await sue.get_by_test_id("move-case-submit").click()
    await expect(sue.get_by_test_id("move-case-warning")).to_contain_text(
        "Sam Support (Available) is working on this case now. "
    )
    assert (await one_node.case(case))["st"] == "assigned"  # not yet
    await expect(sue.get_by_test_id("move-case-submit")).to_have_text("Take it and move")
    await sue.get_by_test_id("move-case-submit").click()
    await expect(sue.get_by_test_id("move-confirmation")).to_contain_text("Case moved to Billing.")
    assert (await one_node.case(case))["q"] == "billing"
    await expect(sue.get_by_test_id("move-case-id")).to_be_focused()


async def test_the_statistics_say_who_can_take_each_queue(
    switch: Switch, inbox: Inbox, redis_server: str
) -> None:
    """Per queue: the agents whose skills its target matches (not a supervisor without
    capacity), and how many of them take cases now; a target an admin changes to match nobody
    shows at once."""
    await switch.apply_workspace(
        {
            **DECL,
            "agents": [
                agent("ann", ["support"]),
                agent("bob", ["support", "sales"], email=0, voice=0),  # chats only
                {**agent("sue", ["support"]), "capacity": {}},  # supervises
            ],
        }
    )
    await switch.set_status("acme", "bob", "available")
    stats = Stats(redis_server, share_s=0)
    try:

        async def staffing() -> dict[str, tuple[int, int]]:
            snap = await stats.snapshot(switch.store, await switch.config("acme"), "acme")
            return {q["id"]: (q["agents_available"], q["agents"]) for q in snap["queues"]}

        async def free(queue: str) -> int:
            snap = await stats.snapshot(switch.store, await switch.config("acme"), "acme")
            return int(next(q for q in snap["queues"] if q["id"] == queue)["agents_free"])

        got = await staffing()
        assert (got["support"], got["sales"]) == ((1, 2), (1, 1))
        for i in range(2):  # bob's two chats: available, but with no room left
            await switch.ingest("acme", chat(f"s{i}", email=f"s{i}@example.com"))
        assert await free("sales") == 0 and (await staffing())["sales"] == (1, 1)
        await switch.set_status("acme", "ann", "available")
        assert (await staffing())["support"] == (2, 2)
        queues = [
            {**q, "target": "skills HAS 'nobody'"} if q["id"] == "sales" else q
            for q in DECL["queues"]
        ]
        await switch.apply_workspace({**DECL, "queues": queues})
        assert (await staffing())["sales"] == (0, 0)
    finally:
        await stats.close()


@browser_test
async def test_a_supervisor_reads_a_listed_cases_conversation(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    """Read opens the case's conversation and the customer's history (earlier cases too),
    read-only; Move… from there fills in the move form with it."""
    bridge = await one_node.bridge()
    sam, _ = await one_node.agent("sam", status="available")
    email = {"email": "rita@example.com"}
    first = await bridge.ok(
        "event", id=uid("e"), channel="email", identities=email, name="Rita Reyes",
        subject="Broken zipper", text="The zipper broke on day one.", thread=uid("t"),
    )  # fmt: skip
    await sam.ok("offer.accept", offer=(await sam.offer_for(first["case"]))["offer"])
    await sam.ok("case.reply", case=first["case"], text="Sorry! A new one is on its way.")
    await sam.ok("case.complete", case=first["case"], disposition="resolved")
    await sam.ok("status", status="away")
    again = await bridge.ok(
        "event", id=uid("e"), channel="chat", identities=email, name="Rita Reyes",
        text="The new one has not arrived", thread=uid("t"),
    )  # fmt: skip
    sue = await supervisor_page(one_node, 0, browser, pages)
    row = sue.locator(f"[data-testid=waiting-case][data-case={again['case']}]")
    await expect(row).to_contain_text("“The new one has not arrived”")  # a chat's first words
    await row.get_by_test_id("waiting-case-view").click()
    dialog = sue.get_by_test_id("case-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_test_id("case-dialog-title")).to_contain_text("Rita Reyes")
    await expect(dialog.get_by_test_id("case-dialog-facts")).to_contain_text("Waiting in Support")
    texts = dialog.get_by_test_id("timeline-text")
    await expect(texts).to_have_text(
        [
            "The zipper broke on day one.",
            "Sorry! A new one is on its way.",
            "The new one has not arrived",
        ]
    )
    await expect(dialog.get_by_test_id("reply-input")).to_have_count(0)  # read-only
    await dialog.get_by_test_id("case-dialog-move").click()
    await expect(dialog).to_be_hidden()
    await expect(sue.get_by_test_id("move-case-id")).to_have_value(again["case"])
    await expect(sue.get_by_test_id("move-case-queue")).to_be_focused()


async def test_the_statistics_give_average_answer_and_handle_times_and_each_agents_hour(
    switch: Switch, inbox: Inbox, redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per queue, the last hour's average speed of answer and handle time; per agent, the
    cases they completed, their average handle time and the offers they missed. A case its
    agent took back to follow up is handled again from then (not answered again). The
    transitions run on the test's clock (router.store.now_ms): handle times come from the log."""
    start = now_ms()
    clock = [start]
    monkeypatch.setattr(router.store, "now_ms", lambda: clock[0])
    await switch.apply_workspace({**DECL, "agents": [agent("ann", ["support"], chat=10)]})
    first = await switch.ingest("acme", chat("a1", email="a@example.com"))
    second = await switch.ingest("acme", chat("a2", email="b@example.com"))
    for case, waited in ((first.case, 30), (second.case, 10)):  # waited 30 s and 10 s
        await switch.redis.hset(keys.case("acme", case), "plan_start", start - waited * 1000)
    await switch.set_status("acme", "ann", "available")
    for offer in inbox.offers("ann"):
        await switch.accept("acme", "ann", offer["offer"])
    await switch.set_status("acme", "ann", "away")
    for case, minutes in ((second.case, 2), (first.case, 4)):  # handled for 2 and 4 minutes
        clock[0] = start + minutes * 60_000
        await switch.complete("acme", "ann", case, "resolved")
    clock[0] = start + 5 * 60_000  # she takes one back to follow it up, for 6 minutes
    await switch.reopen("acme", "ann", second.case)
    clock[0] = start + 11 * 60_000
    await switch.complete("acme", "ann", second.case, "resolved")
    missed = await switch.ingest("acme", chat("a3", email="c@example.com"))
    await switch.set_status("acme", "ann", "available")
    assert inbox.last_offer("ann")["case"]["id"] == missed.case
    await switch.run_timers("acme", now=clock[0] + 31_000)  # she lets it time out

    stats = Stats(redis_server, share_s=0)
    cfg = await switch.config("acme")
    try:
        snap = await stats.snapshot(switch.store, cfg, "acme")
        support = next(q for q in snap["queues"] if q["id"] == "support")
        assert support["asa_s"] == pytest.approx(20, abs=1)  # (30 + 10) / 2: no answer, a reopen
        assert support["completed"] == 3
        assert support["aht_s"] == pytest.approx(240, abs=1)  # (240 + 120 + 360) / 3
        ann = next(a for a in snap["agents"] if a["id"] == "ann")
        assert ann["hour"]["completed"] == 3 and ann["hour"]["missed"] == 1
        assert ann["hour"]["aht_s"] == pytest.approx(240, abs=1)

        # an hour later, what was done before the fifth minute has left the last hour
        monkeypatch.setattr(router.stats, "_hour_ago", lambda: (start + 5 * 60_000) // 60_000)
        snap = await stats.snapshot(switch.store, cfg, "acme")
    finally:
        await stats.close()
    support = next(q for q in snap["queues"] if q["id"] == "support")
    assert (support["answered"], support["asa_s"]) == (0, None)
    assert support["completed"] == 1 and support["aht_s"] == pytest.approx(360, abs=1)
    ann = next(a for a in snap["agents"] if a["id"] == "ann")
    assert ann["hour"] == {"completed": 1, "aht_s": pytest.approx(360, abs=1), "missed": 1}


@given(
    steps=st.lists(
        st.one_of(
            st.tuples(
                st.sampled_from("abc"), st.integers(0, 9), st.integers(0, 2), st.integers(1, 5)
            ),
            st.integers(0, 11),  # the hour moves on to this minute (never back)
        ),
        max_size=40,
    )
)
def test_an_hours_running_sums_are_the_sums_of_the_minutes_kept(
    steps: list[tuple[str, int, int, int] | int],
) -> None:
    """However the counts arrive and the hour moves on, each key's sums are those of its
    minutes still in the hour, and a key with nothing left is not listed."""
    hour, added, since = Hour(3), [], 0
    for step in steps:
        if isinstance(step, int):
            since = max(since, step)
        else:
            key, minute, index, n = step
            hour.add(key, minute, {index: n})
            added.append(step)
        expected: dict[str, list[int]] = {}
        for key, minute, index, n in added:
            if minute >= since:
                expected.setdefault(key, [0, 0, 0])[index] += n
        assert hour.since(since) == expected


@browser_test
async def test_the_move_form_asks_from_the_case_as_it_is_now(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    """Move… pressed while the case waited, then an agent accepted it: the form asks before
    taking it from him (it read the case again); and a queue nobody has the skills for is
    asked about too."""
    bridge = await one_node.bridge()
    case = await customer_event(bridge, "support")
    sue = await supervisor_page(one_node, 0, browser, pages)
    row = sue.locator(f"[data-testid=waiting-case][data-case={case}]")
    await row.get_by_test_id("waiting-case-move").click()  # waiting, as the form says
    sam, _ = await one_node.agent("sam", status="available")
    await sam.ok("offer.accept", offer=(await sam.offer_for(case))["offer"])
    await sue.get_by_test_id("move-case-queue").select_option("billing")
    await sue.get_by_test_id("move-case-submit").click()
    warning = sue.get_by_test_id("move-case-warning")
    await expect(warning).to_contain_text("Sam Support (Available) is working on this case now.")
    # billing: nobody in this workspace has its skills
    await expect(warning).to_contain_text("Nobody has the skills for Billing")
    assert (await one_node.case(case))["st"] == "assigned"
    await sue.get_by_test_id("move-case-queue").select_option("support")  # asked again
    await expect(warning).to_be_hidden()
    await sue.get_by_test_id("move-case-submit").click()
    await expect(warning).to_have_text(
        "Sam Support (Available) is working on this case now. "
        "Move case again to move it all the same."
    )
    assert (await one_node.case(case))["agent"] == "sam"


@browser_test
async def test_a_case_its_agent_took_back_reads_reopened_in_progress(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    """Sam completed a case and took it back to follow it up: Sue's In progress list says it
    was reopened, rather than showing it as handled non-stop since it came in."""
    bridge = await one_node.bridge()
    case = await customer_event(bridge, "support")
    sam, _ = await one_node.agent("sam", status="available")
    await sam.ok("offer.accept", offer=(await sam.offer_for(case))["offer"])
    await sam.ok("case.complete", case=case, disposition="resolved")
    await sam.ok("case.reopen", case=case)
    sue = await supervisor_page(one_node, 0, browser, pages)
    row = sue.locator(f"[data-testid=progress-case][data-case={case}]")
    await expect(row.get_by_test_id("progress-case-state")).to_have_text("In progress · reopened")
