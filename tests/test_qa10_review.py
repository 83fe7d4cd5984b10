"""QA review of round 10's features, used as agents and chat visitors would.

* The chat widget's *End chat* pressed again after the chat ended sent a second end: the agent's
  timeline said twice that the customer left.
* The console's transfer menu, when the queue chosen in it was removed by an admin, fell silently
  to another queue (the first), which one more click would have transferred the case to.

Same harness as tests/test_console.py (a real ``switchboard serve`` with its Redis, headless
Chromium); every wait is Playwright's auto-waiting ``expect`` or a condition with a deadline.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from playwright.async_api import expect

from tests import test_console, test_console_qa10
from tests.server import ServerProcess
from tests.test_chat_qa10 import LEFT, Line, chat_with_sam
from tests.test_console import Web, panel, say
from tests.test_console_ui_fixes import open_email_case

chromium = test_console.chromium
browser = test_console.browser
server = test_console.server
web = test_console.web
admin_server = test_console_qa10.admin_server
admin_web = test_console_qa10.admin_web

pytestmark = pytest.mark.browser


async def test_end_chat_pressed_again_after_the_chat_ended_tells_the_agent_once(
    web: Web, server: ServerProcess
) -> None:
    sam, visitor, _ = await chat_with_sam(web, Line())
    left = panel(sam).get_by_test_id("timeline-entry").filter(has_text=LEFT)
    await visitor.get_by_test_id("chat-end").click()
    await expect(visitor.get_by_test_id("chat-ended")).to_be_visible()
    await expect(left).to_have_count(1)

    await visitor.get_by_test_id("chat-end").click()  # again: the chat has ended already
    await expect(visitor.get_by_test_id("chat-ended")).to_be_visible()
    # an end sent by that press would be delivered before this message (the outbox is in order)
    await say(visitor, "Actually, one more question")
    await expect(panel(sam).get_by_test_id("timeline")).to_contain_text("one more question")
    await expect(left).to_have_count(1)


async def test_a_chosen_queue_removed_from_the_transfer_menu_is_not_swapped_for_another(
    admin_web: Web, admin_server: ServerProcess
) -> None:
    sam = await open_email_case(admin_web, admin_server)
    menu = panel(sam).get_by_test_id("transfer-queue")
    options = menu.locator("option")

    async def use_menu_until(want: list[str]) -> None:
        # each use of the menu asks for the queues (the router may take a second to see a change)
        async with asyncio.timeout(test_console.DEADLINE):
            while await options.all_text_contents() != want:
                await menu.blur()
                await menu.focus()
                await asyncio.sleep(0.1)  # a poll's pace; the condition is what is waited on

    async with httpx.AsyncClient(base_url=admin_server.url) as http:
        r = await http.post(
            "/api/login", json={"workspace": "acme", "agent": "ada", "password": "pw-ada"}
        )
        auth = {"Authorization": f"Bearer {r.json()['token']}"}
        r = await http.put(
            "/api/queues/vip", json={"name": "VIP", "target": "skills HAS 'support'"}, headers=auth
        )
        assert r.status_code < 300, r.text
        await use_menu_until(["Support", "Billing", "Urgent", "VIP"])
        await menu.select_option("vip")
        r = await http.delete("/api/queues/vip", headers=auth)
        assert r.status_code == 204, r.text

    # the menu asks again: it does not show (and would not transfer to) Support instead
    await use_menu_until(["Choose a queue", "Support", "Billing", "Urgent"])
    assert await menu.input_value() == ""
    await panel(sam).get_by_test_id("transfer-submit").click()
    await expect(panel(sam).get_by_test_id("transfer-error")).to_have_text(
        "Not transferred: choose a queue."
    )
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)  # still Sam's
    await menu.select_option("billing")
    await panel(sam).get_by_test_id("transfer-submit").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    await expect(sam.get_by_test_id("toast-info").last).to_contain_text("Transferred to Billing.")
