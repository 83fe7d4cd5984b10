"""Exploratory QA, round 12: what an agent typed survives a reload of the console, and text
left in a case that stopped being theirs meanwhile is handed back, not dropped.

Browser tests use tests/test_console.py's harness (a real ``switchboard serve`` and headless
Chromium) and wait only on conditions in the page, with a deadline.
"""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import expect

from tests import test_console
from tests.server import ServerProcess
from tests.test_console import PASSWORDS, Web, panel
from tests.test_console_ui_fixes import open_email_case

# test_console's fixtures, for the tests here: a browser per module, a server and people per test
chromium = test_console.chromium
browser = test_console.browser
server = test_console.server
web = test_console.web

browser_test = pytest.mark.browser

DRAFT = "Hi Kim, I have asked the courier where your parcel is and"


async def _move_to_billing(server: ServerProcess, case: str) -> None:
    token = server.login("sue", PASSWORDS["sue"])["token"]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        r = await c.patch(
            f"/api/cases/{case}",
            json={"queue": "billing"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert r.status_code == 200, r.text


@browser_test
async def test_a_reply_being_written_survives_a_reload(web: Web, server: ServerProcess) -> None:
    sam = await open_email_case(web, server)
    await panel(sam).get_by_test_id("reply-input").fill(DRAFT)
    await sam.reload()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(panel(sam).get_by_test_id("reply-input")).to_have_value(DRAFT)


@browser_test
async def test_text_left_in_a_case_moved_away_meanwhile_is_handed_back(
    web: Web, server: ServerProcess
) -> None:
    """Sam was writing when his page went away (a crash, a closed laptop); a supervisor moved
    the case meanwhile. When he opens the console again his text is shown, to copy, once."""
    sam = await open_email_case(web, server)
    case = await panel(sam).get_attribute("data-case")
    assert case
    await panel(sam).get_by_test_id("reply-input").fill(DRAFT)
    await sam.goto("about:blank")
    await _move_to_billing(server, case)
    await sam.goto("/")
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    stranded = sam.get_by_test_id("draft-stranded")
    await expect(stranded).to_contain_text(DRAFT)
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    # said once: the text is the agent's to copy now, not the page's to keep
    await sam.reload()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(sam.get_by_test_id("draft-stranded")).to_have_count(0)


@browser_test
async def test_signing_out_leaves_no_draft_in_the_browser(web: Web, server: ServerProcess) -> None:
    sam = await open_email_case(web, server)
    await panel(sam).get_by_test_id("reply-input").fill(DRAFT)
    stored = "() => Object.keys(sessionStorage).filter((k) => k.startsWith('switchboard.drafts'))"
    assert await sam.evaluate(stored)
    await sam.get_by_test_id("sign-out").click()
    await expect(sam.get_by_test_id("login-submit")).to_be_visible()
    assert await sam.evaluate(stored) == []
