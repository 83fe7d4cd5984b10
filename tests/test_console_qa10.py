"""Exploratory QA, round 10: follow-up reminders never cover an offer, and a voice caller who
asked to be called back is flagged on the offer card and in the case header, live.

Same harness as tests/test_console.py (a real ``switchboard serve`` and headless Chromium);
every wait is Playwright's auto-waiting ``expect`` or ``until``: a condition in the page,
awaited with a deadline.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from tests import test_console
from tests.server import ServerProcess, write_config
from tests.test_console import Bridge, Web, bridge, panel, send_email
from tests.test_console_ui_fixes import open_email_case, until

# test_console's fixtures, for the tests here: a browser per module, a server and people per test
chromium = test_console.chromium
browser = test_console.browser
server = test_console.server
web = test_console.web

pytestmark = pytest.mark.browser

# the sizes the console supports side by side: wide, laptop (actions below), narrow two-column
SIZES = ((1400, 900), (1100, 800), (800, 900))

# Every offer's Accept and Reject, scrolled into view, and every reminder's Dismiss take the
# click at their centre; and no point of a card's visible part is anything but that card.
UNCOVERED = """([offers, reminders]) => {
  const hit = (el, x, y) => {
    const at = document.elementFromPoint(x, y);
    return !!at && el.contains(at);
  };
  const centre = (el) => {
    el.scrollIntoView({ block: "nearest" });
    const r = el.getBoundingClientRect();
    return hit(el, r.left + r.width / 2, r.top + r.height / 2);
  };
  const cards = [...document.querySelectorAll("[data-testid=offer]")];
  const buttons = cards.flatMap((c) => [...c.querySelectorAll(
    "[data-testid=offer-accept], [data-testid=offer-reject]")]);
  const dismiss = [...document.querySelectorAll(
    "[data-testid=reminder] [data-testid=toast-dismiss]")];
  if (cards.length !== offers || dismiss.length !== reminders) return false;
  if (![...buttons, ...dismiss].every(centre)) return false;
  return cards.every((card) => {
    card.scrollIntoView({ block: "nearest" });
    const r = card.getBoundingClientRect();
    const box = card.parentElement.closest(".side-offers, .sidebar").getBoundingClientRect();
    const top = Math.max(r.top, box.top) + 4;
    const bottom = Math.min(r.bottom, box.bottom, innerHeight) - 4;
    const xs = [r.left + 8, r.left + r.width / 2, r.right - 8];
    const ys = [top, (top + bottom) / 2, bottom];
    return bottom > top && xs.every((x) => ys.every((y) => hit(card, x, y)));
  });
}"""


async def remind_now(page: Page, note: str) -> None:
    """Schedule a follow-up on the open case that falls due at once: the form's shortest choice
    is a minute, so the test adds a fraction of a second to its menu (the server takes any
    ``in_s`` above 0)."""
    when = panel(page).get_by_test_id("followup-when")
    await when.evaluate(
        "s => { if (s.querySelector('option[value=\"0.2\"]')) return;"
        " const o = document.createElement('option'); o.value = '0.2';"
        " o.textContent = 'now'; s.append(o); }"
    )
    await when.select_option("0.2")
    await panel(page).get_by_test_id("followup-note").fill(note)
    await panel(page).get_by_test_id("followup-submit").click()


# -- 1: reminders and offers --------------------------------------------------------------------


async def test_reminders_never_cover_an_offer_at_any_supported_size(
    web: Web, server: ServerProcess
) -> None:
    sam = await open_email_case(web, server, subject="Refund")
    for i in range(3):
        await remind_now(sam, f"Check refund step {i + 1}")
        await expect(sam.get_by_test_id("reminder")).to_have_count(i + 1)
    await expect(sam.get_by_test_id("reminder-count")).to_have_text("3")
    async with bridge(server) as b:
        await send_email(b, sender="lee@example.com", name="Lee", subject="Invoice", text="Hi")
        await b.event(
            id=f"chat-{secrets.token_hex(6)}", channel="chat",
            identities={"email": "ivy@example.com"}, name="Ivy", text="Hello there",
        )  # fmt: skip
    await expect(sam.get_by_test_id("offer")).to_have_count(2)

    for width, height in SIZES:
        await sam.set_viewport_size({"width": width, "height": height})
        await until(
            sam, UNCOVERED, [2, 3], f"offers and reminders clear of each other at {width}px"
        )
        for i in range(2):  # Playwright's own check: the click would land on the button
            await sam.get_by_test_id("offer-accept").nth(i).click(trial=True)
        assert await sam.evaluate(
            "() => document.documentElement.scrollHeight <= window.innerHeight"
        ), f"the page scrolls at {width}x{height}"

    # every reminder can be dismissed from the keyboard: focus moves on to the next one, and
    # after the last to the offers; the server forgets them
    first = sam.get_by_test_id("reminder").first.get_by_test_id("toast-dismiss")
    await first.focus()
    for left in (2, 1):
        await sam.keyboard.press("Enter")
        await expect(sam.get_by_test_id("reminder")).to_have_count(left)
        await expect(
            sam.get_by_test_id("reminder").first.get_by_test_id("toast-dismiss")
        ).to_be_focused()
    await sam.keyboard.press("Enter")
    await expect(sam.get_by_test_id("reminder")).to_have_count(0)
    await expect(sam.get_by_test_id("reminder-count")).to_be_hidden()
    await expect(sam.get_by_test_id("offer").first).to_be_focused()
    await sam.reload()
    await expect(sam.get_by_test_id("offer")).to_have_count(2)  # hello: offers and reminders
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)
    await expect(sam.get_by_test_id("reminder")).to_have_count(0)


# -- 2: a callback request, at a glance ---------------------------------------------------------


async def request_callback(b: Bridge, thread: str, phone: str, left: str = "") -> None:
    """The caller pressed 1 while waiting: ``callback.requested`` on the call's thread, with
    the number they left (``callback_number``) when it is not the one they call from."""
    await b.event(
        id=f"cb-{secrets.token_hex(6)}", channel="voice", kind="callback.requested",
        thread=thread, identities={"phone": phone},
        text=f"Caller asked to be called back at {left or phone}",
        attributes={"callback_number": left} if left else {},
    )  # fmt: skip


async def call(b: Bridge, phone: str, name: str) -> str:
    """A call to Billing (Bea takes calls; test_console's place_call rings Support): its thread."""
    thread = f"call-{secrets.token_hex(6)}"
    await b.event(
        id=f"call-{secrets.token_hex(6)}", channel="voice", kind="call.offered",
        identities={"phone": phone}, name=name, thread=thread, text="Incoming call",
        attributes={"topic": "billing"},
    )  # fmt: skip
    return thread


async def test_a_waiting_callers_callback_shows_on_the_offer_and_in_the_case_header(
    web: Web, server: ServerProcess
) -> None:
    bea = await web.agent("bea", status="away")
    async with bridge(server) as b:  # the caller waits, then asks to be called back
        thread = await call(b, "+15550100123", "Rosa Diaz")
        await request_callback(b, thread, "+15550100123")
    await test_console.set_status(bea, "available")
    offer = bea.get_by_test_id("offer")
    await expect(offer.get_by_test_id("offer-callback")).to_have_text(
        "☎ Callback requested · call back on +15550100123"
    )
    await offer.get_by_test_id("offer-accept").click()
    header = panel(bea).get_by_test_id("case-callback")
    await expect(header).to_have_text("☎ Callback requested · call back on +15550100123")
    await expect(header).to_be_in_viewport()
    await expect(bea.get_by_test_id("case-tab-callback")).to_have_text("callback")
    await bea.reload()  # from the server's own case view (hello), not only from the offer
    await expect(panel(bea).get_by_test_id("case-callback-number")).to_have_text("+15550100123")


async def test_a_callback_requested_while_offered_or_open_shows_at_once(
    web: Web, server: ServerProcess
) -> None:
    bea = await web.agent("bea")
    async with bridge(server) as b:
        thread = await call(b, "+15550100456", "Omar Haddad")
        offer = bea.get_by_test_id("offer")
        await expect(offer).to_have_count(1)
        await expect(offer.get_by_test_id("offer-callback")).to_have_count(0)
        await request_callback(b, thread, "+15550100456")  # while the offer is pending
        await expect(offer.get_by_test_id("offer-callback-number")).to_have_text("+15550100456")
        await offer.get_by_test_id("offer-accept").click()
        await expect(panel(bea).get_by_test_id("case-callback-number")).to_have_text("+15550100456")
        # the next call: the request comes while the case is open
        await panel(bea).get_by_test_id("wrapup").click()
        await panel(bea).get_by_test_id("disposition-select").select_option("resolved")
        await panel(bea).get_by_test_id("complete").click()
        await expect(bea.get_by_test_id("case-tab")).to_have_count(0)
        thread = await call(b, "+15550100789", "Nia Park")
        await bea.get_by_test_id("offer-accept").click()
        case = panel(bea)
        await expect(case.get_by_test_id("case-customer")).to_have_text("Nia Park")
        await expect(case.get_by_test_id("case-callback")).to_have_count(0)
        await case.get_by_test_id("reply-input").fill("Half-typed note")
        # she leaves another number than the one she calls from: that is the one to call
        await request_callback(b, thread, "+15550100789", left="+15550100999")
    await expect(case.get_by_test_id("case-callback")).to_have_text(
        "☎ Callback requested · call back on +15550100999"
    )
    await expect(bea.get_by_test_id("case-tab-callback")).to_be_visible()
    await expect(case.get_by_test_id("timeline-entry")).to_have_count(2)
    await expect(case.get_by_test_id("reply-input")).to_have_value("Half-typed note")
    await bea.reload()  # the server kept it on the case, not only in the frame
    await expect(panel(bea).get_by_test_id("case-callback-number")).to_have_text("+15550100999")


# -- 3: the transfer menu's queues are today's ---------------------------------------------------


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """test_console's workspace with an admin, Ada, who changes the queues over REST."""
    ada = {"id": "ada", "name": "Ada Admin", "password": "pw-ada", "role": "admin",
           "attributes": {"skills": []}, "capacity": {}}  # fmt: skip
    workspace = {**test_console.WORKSPACE, "agents": [*test_console.WORKSPACE["agents"], ada]}
    s = ServerProcess(tmp_path / "data", write_config(tmp_path / "acme.json", workspace))
    try:
        yield s
    finally:
        s.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def admin_web(browser: Browser, admin_server: ServerProcess) -> AsyncIterator[Web]:
    async with test_console.browsing(browser, admin_server) as w:
        yield w


async def test_the_transfer_menu_has_the_queues_an_admin_added_since_sign_in(
    admin_web: Web, admin_server: ServerProcess
) -> None:
    sam = await open_email_case(admin_web, admin_server)
    menu = panel(sam).get_by_test_id("transfer-queue")
    await expect(menu.locator("option")).to_have_text(["Support", "Billing", "Urgent"])
    async with httpx.AsyncClient(base_url=admin_server.url) as http:
        r = await http.post(
            "/api/login", json={"workspace": "acme", "agent": "ada", "password": "pw-ada"}
        )
        auth = {"Authorization": f"Bearer {r.json()['token']}"}
        for queue, body in (
            ("vip", {"name": "VIP", "target": "skills HAS 'support'"}),
            ("billing", {"name": "Billing & Refunds"}),
        ):
            r = await http.put(f"/api/queues/{queue}", json=body, headers=auth)
            assert r.status_code < 300, r.text

    # each use of the menu asks for the queues again (the router may take a second to see
    # the change): use it until it lists them, with a deadline
    want = ["Support", "Billing & Refunds", "Urgent", "VIP"]
    async with asyncio.timeout(test_console.DEADLINE):
        while await menu.locator("option").all_text_contents() != want:
            await menu.blur()
            await menu.focus()
            await asyncio.sleep(0.1)  # a poll's pace; the condition is what is waited on
    await menu.select_option("vip")
    await panel(sam).get_by_test_id("transfer-submit").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    await expect(sam.get_by_test_id("toast-info").last).to_contain_text("Transferred to VIP.")


async def test_a_reminder_that_falls_due_is_shown_not_left_below_the_fold(
    web: Web, server: ServerProcess
) -> None:
    """Nine reminders fill the tray: the newest, just due, is scrolled into view."""
    sam = await open_email_case(web, server, subject="Refund")
    for i in range(9):
        await remind_now(sam, f"Check refund step {i + 1}")
        await expect(sam.get_by_test_id("reminder")).to_have_count(i + 1)
        await expect(sam.get_by_test_id("reminder").last).to_be_in_viewport()
