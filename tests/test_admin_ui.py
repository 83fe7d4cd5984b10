"""The admin page (``/admin``, web/admin.js): agents, queues and the workflow, in a real browser.

An admin adds, edits and removes agents and queues and edits the workflow through the page; each
test checks what the server then holds through the REST API (docs/api.md), and that the server's
own message reaches the page when it refuses a change. A supervisor at ``/admin`` sees "Admins
only". Real ``switchboard serve`` nodes (tests/ws_client.py's ``Stack``), headless Chromium with
tests/test_console.py's harness; every wait is on a condition in the page (Playwright's
``expect``) or a frame with a deadline, never a sleep.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Locator, Page, expect

from tests import test_console, test_supervisor_qa10
from tests.test_console import Web
from tests.ws_client import Stack

# test_console's browser, one per module
chromium = test_console.chromium
browser = test_console.browser
# browser contexts, checked for page errors and CSP violations at the end
pages = test_supervisor_qa10.pages
customer_event = test_supervisor_qa10.customer_event
signed_in_at = test_supervisor_qa10.signed_in_at

pytestmark = pytest.mark.browser

WORKFLOW: dict[str, Any] = {
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
}

WORKSPACE: dict[str, Any] = {
    "id": "acme",
    "queues": [
        {"id": "support", "name": "Support", "target": "skills HAS 'support'"},
        {"id": "billing", "name": "Billing", "target": "skills HAS 'billing'"},
    ],
    "workflow": WORKFLOW,
    "agents": [
        {
            "id": "sam",
            "name": "Sam Support",
            "password": "pw",
            "attributes": {"skills": ["support"], "languages": ["en", "de"], "team": "north"},
            "capacity": {"chat": 3, "email": 1, "voice": 1},
        },
        {
            "id": "bea",
            "name": "Bea Billing",
            "password": "pw",
            "attributes": {"skills": ["billing"]},
            "capacity": {"chat": 1},
        },
        {"id": "sue", "name": "Sue", "password": "pw", "role": "supervisor", "capacity": {}},
        {"id": "ada", "name": "Ada", "password": "pw", "role": "admin", "capacity": {}},
    ],
}


@pytest_asyncio.fixture(loop_scope="session")
async def one_node(tmp_path: Path) -> AsyncIterator[Stack]:
    st = await Stack.start(tmp_path, WORKSPACE)
    try:
        yield st
    finally:
        await st.stop()


async def signed_in(stack: Stack, browser: Any, webs: list[Web], agent: str = "ada") -> Page:
    """``agent`` signed in on /admin (the page's own sign-in form)."""
    return await signed_in_at(stack, browser, webs, "/admin", agent)


async def admin_page(stack: Stack, browser: Any, webs: list[Web]) -> Page:
    """Ada's admin page, with the agents listed."""
    page = await signed_in(stack, browser, webs)
    await expect(agent_row(page, "ada")).to_be_visible()
    return page


def agent_row(page: Page, agent: str) -> Locator:
    return page.locator(f"[data-testid=admin-agent-row][data-agent='{agent}']")


def queue_row(page: Page, queue: str) -> Locator:
    return page.locator(f"[data-testid=admin-queue-row][data-queue='{queue}']")


async def rest(stack: Stack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Ada's REST call: (status, JSON answer or None)."""
    token = (await stack.login("ada"))["token"]
    r = await stack.http.request(
        method,
        f"{stack.nodes[0].url}/api{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    return r.status_code, (r.json() if r.content else None)


async def fill_agent(page: Page, **fields: str) -> None:
    for name, value in fields.items():
        await page.get_by_test_id(f"admin-agent-{name.replace('_', '-')}").fill(value)


# -- agents ---------------------------------------------------------------------------------------


async def test_an_admin_adds_an_agent_who_can_then_sign_in(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    stack = one_node
    page = await admin_page(stack, browser, pages)
    form = page.get_by_test_id("admin-agent-form")
    await expect(form).to_contain_text("Add an agent")
    await fill_agent(
        page,
        id="cy",
        name="Cy Newman",
        password="pw-cy",
        skills="billing, support",
        languages="en, fr",
        cap_chat="200",  # over the limit: the server says which field
        cap_email="0",
        cap_voice="1",
    )
    await page.get_by_test_id("admin-agent-role").select_option("agent")
    await page.get_by_test_id("admin-agent-save").click()
    error = page.get_by_test_id("admin-agent-error")
    await expect(error).to_have_text("agent.capacity.chat: an integer 0-100")
    await expect(error).to_have_attribute("role", "alert")
    chat = page.get_by_test_id("admin-agent-cap-chat")
    await expect(chat).to_have_attribute("aria-invalid", "true")
    # nothing typed is lost, and nothing was created
    await expect(page.get_by_test_id("admin-agent-name")).to_have_value("Cy Newman")
    await expect(page.get_by_test_id("admin-agent-skills")).to_have_value("billing, support")
    await expect(page.get_by_test_id("admin-agent-password")).to_have_value("pw-cy")
    assert (await rest(stack, "GET", "/agents/cy"))[0] == 404

    await chat.fill("2")
    await page.get_by_test_id("admin-agent-save").click()
    await expect(page.get_by_test_id("admin-saved")).to_contain_text("Added Cy Newman")
    row = agent_row(page, "cy")
    await expect(row.get_by_test_id("admin-agent-skills-cell")).to_have_text("billingsupport")
    await expect(row.get_by_test_id("admin-agent-capacity-chat")).to_have_text("Chat 2")
    await expect(row.get_by_test_id("admin-agent-capacity-email")).to_have_count(0)
    await expect(error).to_be_hidden()
    await expect(page.get_by_test_id("admin-agent-id")).to_have_value("")  # ready for the next

    status, cy = await rest(stack, "GET", "/agents/cy")
    assert status == 200
    assert cy["name"] == "Cy Newman"
    assert cy["role"] == "agent"
    assert cy["attributes"] == {"skills": ["billing", "support"], "languages": ["en", "fr"]}
    assert cy["capacity"] == {"chat": 2, "email": 0, "voice": 1}
    me = await stack.login("cy", password="pw-cy")  # they sign in with the password given
    assert me["role"] == "agent"

    # the same id again is not added over them
    await fill_agent(page, id="cy", name="Someone Else", password="x")
    await page.get_by_test_id("admin-agent-save").click()
    await expect(error).to_contain_text("there is already an agent cy")
    assert (await rest(stack, "GET", "/agents/cy"))[1]["name"] == "Cy Newman"


async def test_editing_skills_keeps_the_other_attributes_and_the_password(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    stack = one_node
    page = await admin_page(stack, browser, pages)
    row = agent_row(page, "sam")
    await expect(row.get_by_test_id("admin-agent-other-cell")).to_have_text("team=north")
    await row.get_by_test_id("admin-agent-edit").click()
    await expect(page.get_by_test_id("admin-agent-form")).to_contain_text("Edit Sam Support")
    await expect(page.get_by_test_id("admin-agent-id")).to_have_value("sam")
    await expect(page.get_by_test_id("admin-agent-id")).to_have_attribute("readonly", "")
    await expect(page.get_by_test_id("admin-agent-skills")).to_have_value("support")
    await expect(page.get_by_test_id("admin-agent-languages")).to_have_value("en, de")
    await expect(page.get_by_test_id("admin-agent-kept")).to_contain_text("team=north")
    await expect(page.get_by_test_id("admin-agent-password")).to_have_value("")

    # meanwhile, another admin gives Sam one more attribute: the save keeps it too
    more = {"skills": ["support"], "languages": ["en", "de"], "team": "north", "tier": 2}
    status, _ = await rest(stack, "PUT", "/agents/sam", {"attributes": more})
    assert status == 200
    await page.get_by_test_id("admin-agent-skills").fill("support, billing")
    await page.get_by_test_id("admin-agent-cap-email").fill("4")
    await page.get_by_test_id("admin-agent-save").click()
    await expect(page.get_by_test_id("admin-saved")).to_contain_text("Saved Sam Support")
    await expect(row.get_by_test_id("admin-agent-skills-cell")).to_have_text("supportbilling")
    await expect(row.get_by_test_id("admin-agent-capacity-email")).to_have_text("Email 4")

    _, sam = await rest(stack, "GET", "/agents/sam")
    assert sam["attributes"] == {
        "skills": ["support", "billing"],
        "languages": ["en", "de"],
        "team": "north",
        "tier": 2,
    }
    assert sam["capacity"] == {"chat": 3, "email": 4, "voice": 1}
    assert sam["role"] == "agent"
    await stack.login("sam", password="pw")  # a blank password kept the one they had


async def test_removing_an_agent_who_holds_a_case_is_refused_and_a_free_one_goes(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    stack = one_node
    bridge = await stack.bridge()
    sam, _ = await stack.agent("sam", status="available")
    case = await customer_event(bridge, "support")
    offer = await sam.expect("offer")
    await sam.ok("offer.accept", offer=offer["offer"])

    page = await admin_page(stack, browser, pages)
    dialog = page.get_by_test_id("admin-confirm")
    await agent_row(page, "sam").get_by_test_id("admin-agent-remove").click()
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("Remove Sam Support (sam)?")
    await page.get_by_test_id("admin-confirm-yes").click()
    refusal = page.locator("[data-testid=admin-agent-row-error][data-agent=sam]")
    await expect(refusal).to_contain_text("Sam Support was not removed")
    await expect(refusal).to_contain_text(f"sam holds 1 case(s): move them first ({case})")
    await expect(refusal).to_have_attribute("role", "alert")
    await expect(agent_row(page, "sam")).to_be_visible()
    assert (await rest(stack, "GET", "/agents/sam"))[0] == 200

    # an admin cannot remove themself: the server's message, and Ada stays
    await agent_row(page, "ada").get_by_test_id("admin-agent-remove").click()
    await page.get_by_test_id("admin-confirm-yes").click()
    own = page.locator("[data-testid=admin-agent-row-error][data-agent=ada]")
    await expect(own).to_contain_text("you cannot remove yourself; another admin can")

    # a free agent: nothing happens until the admin confirms
    await agent_row(page, "bea").get_by_test_id("admin-agent-remove").click()
    await expect(dialog).to_contain_text("Remove Bea Billing (bea)?")
    await page.get_by_test_id("admin-confirm-no").click()
    await expect(dialog).to_be_hidden()
    await expect(agent_row(page, "bea")).to_be_visible()
    assert (await rest(stack, "GET", "/agents/bea"))[0] == 200

    await agent_row(page, "bea").get_by_test_id("admin-agent-remove").click()
    await page.get_by_test_id("admin-confirm-yes").click()
    await expect(agent_row(page, "bea")).to_have_count(0)
    await expect(page.get_by_test_id("admin-saved")).to_contain_text("Removed Bea Billing (bea)")
    assert (await rest(stack, "GET", "/agents/bea"))[0] == 404
    await expect(agent_row(page, "sam")).to_be_visible()


# -- queues ---------------------------------------------------------------------------------------


async def test_a_queue_with_a_bad_target_is_refused_with_the_servers_message(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    stack = one_node
    page = await admin_page(stack, browser, pages)
    await expect(queue_row(page, "support")).to_be_visible()
    await page.get_by_test_id("admin-queue-id").fill("vip")
    await page.get_by_test_id("admin-queue-name").fill("VIP")
    await page.get_by_test_id("admin-queue-target").fill("tier ==")
    await page.get_by_test_id("admin-queue-sl").fill("20")
    await page.get_by_test_id("admin-queue-save").click()
    error = page.get_by_test_id("admin-queue-error")
    await expect(error).to_contain_text("target: ")
    await expect(error).to_contain_text("at column")
    await expect(error).to_have_attribute("role", "alert")
    await expect(page.get_by_test_id("admin-queue-target")).to_have_attribute(
        "aria-invalid", "true"
    )
    await expect(page.get_by_test_id("admin-queue-target")).to_have_value("tier ==")
    await expect(queue_row(page, "vip")).to_have_count(0)
    _, listed = await rest(stack, "GET", "/queues")
    assert [q["id"] for q in listed["queues"]] == ["support", "billing"]

    await page.get_by_test_id("admin-queue-target").fill("tier == 'gold'")
    await page.get_by_test_id("admin-queue-save").click()
    await expect(page.get_by_test_id("admin-saved")).to_contain_text("Added queue VIP")
    row = queue_row(page, "vip")
    await expect(row.get_by_test_id("admin-queue-target-cell")).to_have_text("tier == 'gold'")
    await expect(row.get_by_test_id("admin-queue-sl-cell")).to_have_text("20 s")
    await expect(error).to_be_hidden()
    _, listed = await rest(stack, "GET", "/queues")
    vip = next(q for q in listed["queues"] if q["id"] == "vip")
    assert (vip["name"], vip["target"], vip["order"], vip["sl_target_s"]) == (
        "VIP",
        "tier == 'gold'",
        "fifo",
        20,
    )

    # editing keeps the id; a queue the workflow routes to cannot go, with the server's reason
    await row.get_by_test_id("admin-queue-edit").click()
    await expect(page.get_by_test_id("admin-queue-id")).to_have_value("vip")
    await page.get_by_test_id("admin-queue-order").select_option("lifo")
    await page.get_by_test_id("admin-queue-save").click()
    await expect(row.get_by_test_id("admin-queue-order-cell")).to_have_text("LIFO")
    await queue_row(page, "support").get_by_test_id("admin-queue-remove").click()
    await page.get_by_test_id("admin-confirm-yes").click()
    await expect(
        page.locator("[data-testid=admin-queue-row-error][data-queue=support]")
    ).to_contain_text("the workflow routes to this queue; change the workflow first")
    await row.get_by_test_id("admin-queue-remove").click()
    await page.get_by_test_id("admin-confirm-yes").click()
    await expect(row).to_have_count(0)
    _, listed = await rest(stack, "GET", "/queues")
    assert [q["id"] for q in listed["queues"]] == ["support", "billing"]


# -- workflow -------------------------------------------------------------------------------------


async def test_a_workflow_without_a_default_filter_is_refused_with_the_servers_message(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    stack = one_node
    page = await admin_page(stack, browser, pages)
    text = page.get_by_test_id("admin-workflow-text")
    await expect(text).to_have_value(json.dumps(WORKFLOW, indent=2))
    error = page.get_by_test_id("admin-workflow-error")

    await text.fill("{ not json")
    await page.get_by_test_id("admin-workflow-save").click()
    await expect(error).to_contain_text("Not valid JSON")

    no_default = {"task_routing": {"filters": WORKFLOW["task_routing"]["filters"]}}
    await text.fill(json.dumps(no_default, indent=2))
    await page.get_by_test_id("admin-workflow-save").click()
    await expect(error).to_contain_text(
        "workflow: task_routing.default_filter: required: the queue for cases no filter matches"
    )
    await expect(error).to_have_attribute("role", "alert")
    await expect(text).to_have_value(json.dumps(no_default, indent=2))  # the edit is kept
    assert (await rest(stack, "GET", "/workflow"))[1] == WORKFLOW

    changed = {"task_routing": {**WORKFLOW["task_routing"], "default_filter": {"queue": "billing"}}}
    await text.fill(json.dumps(changed))
    await page.get_by_test_id("admin-workflow-save").click()
    await expect(page.get_by_test_id("admin-saved")).to_contain_text("Saved the workflow")
    await expect(error).to_be_hidden()
    await expect(text).to_have_value(json.dumps(changed, indent=2))  # as the server holds it
    assert (await rest(stack, "GET", "/workflow"))[1] == changed


# -- who may use it -------------------------------------------------------------------------------


async def test_a_supervisor_at_admin_sees_admins_only(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    page = await signed_in(one_node, browser, pages, agent="sue")
    forbidden = page.get_by_test_id("forbidden")
    await expect(forbidden).to_be_visible()
    await expect(forbidden.get_by_role("heading")).to_have_text("Admins only")
    await expect(forbidden).to_contain_text("You're signed in as Sue, who isn't an admin.")
    await expect(page.get_by_test_id("forbidden-console")).to_have_attribute("href", "/")
    await expect(page.get_by_test_id("admin-agent-form")).to_have_count(0)
    await expect(page.get_by_test_id("admin-workflow-text")).to_have_count(0)


async def test_the_supervisor_and_admin_pages_link_to_each_other_for_an_admin(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    page = await admin_page(one_node, browser, pages)
    await page.get_by_test_id("admin-supervisor-link").click()
    await expect(page).to_have_url(one_node.nodes[0].url + "/supervisor")
    await expect(page.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(page.locator(".who-ws")).to_have_text("Admin · acme")  # who is signed in
    await page.get_by_test_id("supervisor-admin-link").click()  # signed in on both
    await expect(agent_row(page, "ada")).to_be_visible()
    # a supervisor is not shown the way to a page that is not theirs
    sue = await test_supervisor_qa10.supervisor_page(one_node, 0, browser, pages)
    await expect(sue.get_by_test_id("supervisor-admin-link")).to_have_count(0)
    await expect(sue.locator(".who-ws")).to_have_text("Supervisor · acme")


async def test_an_agents_console_follows_what_an_admin_changes(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    """Sam's open console shows the capacity and name Ada gives him on the admin page at once,
    and says an admin changed them (no reload, no sign-out)."""
    sam = await signed_in_at(one_node, browser, pages, "/", "sam")
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(sam.get_by_test_id("load-chat")).to_have_text("Chat 0/3")

    page = await admin_page(one_node, browser, pages)
    await agent_row(page, "sam").get_by_test_id("admin-agent-edit").click()
    await expect(page.get_by_test_id("admin-agent-id")).to_have_value("sam")  # the form is his
    await page.get_by_test_id("admin-agent-name").fill("Sam Senior")
    await page.get_by_test_id("admin-agent-cap-chat").fill("5")
    await page.get_by_test_id("admin-agent-save").click()
    await expect(agent_row(page, "sam")).to_contain_text("Sam Senior")

    await expect(sam.get_by_test_id("load-chat")).to_have_text("Chat 0/5")
    await expect(sam.get_by_test_id("agent-name")).to_have_text("Sam Senior")
    await expect(sam.get_by_test_id("agent-updated")).to_contain_text(
        "An admin changed your name and capacity."
    )
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")  # still signed in


async def test_an_open_case_shows_its_queue_renamed_at_once(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    """Ada renames the queue of the case Sam has open: his case shows the new name, with no
    reload (queues.updated), and so does his transfer menu."""
    sam = await signed_in_at(one_node, browser, pages, "/", "sam")
    await sam.get_by_test_id("status-select").select_option("available")
    await customer_event(await one_node.bridge(), "support")
    await sam.get_by_test_id("offer-accept").click()
    case = sam.locator("[data-testid=case-panel]:not([hidden])")
    await expect(case.get_by_test_id("case-queue")).to_have_text("Support")

    page = await admin_page(one_node, browser, pages)
    await queue_row(page, "support").get_by_test_id("admin-queue-edit").click()
    await expect(page.get_by_test_id("admin-queue-id")).to_have_value("support")
    await page.get_by_test_id("admin-queue-name").fill("Customer care")
    await page.get_by_test_id("admin-queue-save").click()
    await expect(queue_row(page, "support")).to_contain_text("Customer care")

    await expect(case.get_by_test_id("case-queue")).to_have_text("Customer care")
    await expect(case.get_by_test_id("transfer-queue").locator("option")).to_contain_text(
        ["Customer care", "Billing"]
    )


async def test_each_agent_shows_the_queues_their_skills_match(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    """A skill typed "Support" matches no target ('support'): the row says so, where an admin
    looks, instead of the agent silently never getting a case."""
    page = await admin_page(one_node, browser, pages)
    await expect(agent_row(page, "sam").get_by_test_id("admin-agent-queues")).to_have_text(
        "Support"
    )
    await agent_row(page, "bea").get_by_test_id("admin-agent-edit").click()
    await expect(page.get_by_test_id("admin-agent-id")).to_have_value("bea")  # the form is hers
    await page.get_by_test_id("admin-agent-skills").fill("Billing")
    await page.get_by_test_id("admin-agent-save").click()
    await expect(agent_row(page, "bea").get_by_test_id("admin-agent-no-queue")).to_have_text(
        "matches no queue"
    )
    await expect(agent_row(page, "sue").get_by_test_id("admin-agent-queues-cell")).to_have_text(
        "—"  # takes no cases: nothing to match
    )


async def test_the_supervisor_view_lists_who_takes_cases_and_names_the_signed_in_role(
    one_node: Stack, browser: Any, pages: list[Web]
) -> None:
    """Ada saves Sue (a supervisor who takes no cases) on the admin page, which writes her
    capacities as 0: the supervisor view still lists only who takes cases. Demoted to agent,
    Sue signing in at /supervisor is named an agent above the refusal, not a supervisor."""

    def listed(page: Page, agent: str) -> Locator:
        return page.locator(f"[data-testid=agent-row][data-agent='{agent}']")

    sue = await test_supervisor_qa10.supervisor_page(one_node, 0, browser, pages)
    await expect(listed(sue, "sam")).to_be_visible()
    await expect(listed(sue, "sue")).to_have_count(0)
    page = await admin_page(one_node, browser, pages)
    await agent_row(page, "sue").get_by_test_id("admin-agent-edit").click()
    await expect(page.get_by_test_id("admin-agent-id")).to_have_value("sue")
    await expect(page.get_by_test_id("admin-agent-cap-chat")).to_have_value("0")
    await page.get_by_test_id("admin-agent-save").click()
    await expect(page.get_by_test_id("admin-saved")).to_contain_text("Saved Sue")
    # then Sam renamed: once the view shows that, it shows what was saved before it
    await agent_row(page, "sam").get_by_test_id("admin-agent-edit").click()
    await expect(page.get_by_test_id("admin-agent-id")).to_have_value("sam")
    await page.get_by_test_id("admin-agent-name").fill("Sam Renamed")
    await page.get_by_test_id("admin-agent-save").click()
    await expect(listed(sue, "sam")).to_contain_text("Sam Renamed")
    await expect(listed(sue, "sue")).to_have_count(0)

    await agent_row(page, "sue").get_by_test_id("admin-agent-edit").click()
    await expect(page.get_by_test_id("admin-agent-id")).to_have_value("sue")
    await page.get_by_test_id("admin-agent-role").select_option("agent")
    await page.get_by_test_id("admin-agent-save").click()
    await expect(agent_row(page, "sue").get_by_test_id("admin-agent-role-cell")).to_have_text(
        "Agent"
    )
    again = await test_supervisor_qa10.signed_in_at(one_node, browser, pages, "/supervisor", "sue")
    await expect(again.get_by_test_id("forbidden")).to_be_visible()
    await expect(again.locator(".who-ws")).to_have_text("Agent · acme")
