"""Exploratory QA, round 12: what an agent typed survives a reload of the console, and text
left in a case that stopped being theirs meanwhile is handed back, not dropped.

Browser tests use tests/test_console.py's harness (a real ``switchboard serve`` and headless
Chromium) and wait only on conditions in the page, with a deadline.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.async_api import WebSocketRoute, expect

from tests import test_console
from tests.server import ServerProcess
from tests.test_console import (
    PASSWORDS,
    Web,
    bridge,
    customer_chat,
    panel,
    say,
    send_email,
    set_status,
    sign_in,
)
from tests.test_console_qa10 import remind_now
from tests.test_console_ui_fixes import open_email_case
from tests.util import wait_for

# test_console's fixtures, for the tests here: a browser per module, a server and people per test
chromium = test_console.chromium
browser = test_console.browser
server = test_console.server
web = test_console.web

browser_test = pytest.mark.browser

# the case ids (and "<id>#wrap") the console keeps drafts for, in this tab
DRAFT_KEYS = """() => {
  const k = Object.keys(sessionStorage).find((k) => k.startsWith("switchboard.drafts"));
  return k ? Object.keys(JSON.parse(sessionStorage.getItem(k))) : [];
}"""
DRAFT = "Hi Kim, I have asked the courier where your parcel is and"


def _supervisor(server: ServerProcess) -> httpx.AsyncClient:
    token = server.login("sue", PASSWORDS["sue"])["token"]
    return httpx.AsyncClient(
        base_url=server.url, timeout=10, headers={"Authorization": f"Bearer {token}"}
    )


async def _move_to_billing(server: ServerProcess, case: str) -> None:
    async with _supervisor(server) as c:
        r = await c.patch(f"/api/cases/{case}", json={"queue": "billing"})
    assert r.status_code == 200, r.text


async def _timeline_texts(server: ServerProcess, case: str) -> list[str]:
    async with _supervisor(server) as c:
        r = await c.get(f"/api/cases/{case}")
    assert r.status_code == 200, r.text
    return [str(e.get("text", "")) for e in r.json()["timeline"]]


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


@browser_test
async def test_a_reply_sent_twice_in_a_hurry_goes_once_and_later_typing_stays(
    web: Web, server: ServerProcess
) -> None:
    """Ctrl+Enter pressed twice while the network is slow: the customer gets the reply once,
    and what Sam typed while it was on its way stays in the box."""
    sam = await web.page("/")
    held: list[Any] = []

    async def agent_socket(ws: WebSocketRoute) -> None:
        to_server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            text = message if isinstance(message, str) else message.decode(errors="replace")
            if '"case.reply"' in text:
                held.append(message)  # the slow network: sent on when the test says
            else:
                to_server.send(message)

        ws.on_message(from_page)
        relay.append(to_server)

    relay: list[Any] = []
    await sam.route_web_socket(re.compile(r"/ws/agent"), agent_socket)
    await sign_in(sam, "sam")
    await set_status(sam, "available")
    async with bridge(server) as b:
        await send_email(b, sender="kim@example.com", name="Kim Lee", subject="Late", text="?")
    await sam.get_by_test_id("offer-accept").click()
    box = panel(sam).get_by_test_id("reply-input")
    await box.fill("It ships today")
    await box.press("Control+Enter")
    await box.press("Control+Enter")
    await wait_for(lambda: held, message="the reply on its way")
    await box.press("End")
    await box.type(" PS: tracking follows")
    relay[-1].send(held[0])
    entries = panel(sam).get_by_test_id("timeline-text").filter(has_text="It ships today")
    await expect(entries).to_have_count(1)
    await expect(box).to_have_value("PS: tracking follows")
    assert len(held) == 1


@browser_test
async def test_completing_with_a_note_in_the_box_asks_first(
    web: Web, server: ServerProcess
) -> None:
    sam = await open_email_case(web, server)
    case = str(await panel(sam).get_attribute("data-case"))
    await panel(sam).get_by_test_id("compose-mode-note").check()
    await panel(sam).get_by_test_id("reply-input").fill("Called the carrier, awaiting answer")
    await panel(sam).get_by_test_id("wrapup").click()  # the box takes notes in wrap-up too
    await panel(sam).get_by_test_id("disposition-select").select_option("resolved")
    await panel(sam).get_by_test_id("complete").click()
    ask = panel(sam).get_by_test_id("wrapup-unsent")
    await expect(ask).to_contain_text("Your internal note has not been added")
    texts_before = await _timeline_texts(server, case)
    assert "Called the carrier, awaiting answer" not in texts_before
    await ask.get_by_test_id("wrapup-send-first").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    assert "Called the carrier, awaiting answer" in await _timeline_texts(server, case)


@browser_test
async def test_transferring_with_a_reply_in_the_box_asks_first(
    web: Web, server: ServerProcess
) -> None:
    sam = await open_email_case(web, server)
    await panel(sam).get_by_test_id("reply-input").fill(DRAFT)
    await panel(sam).get_by_test_id("transfer-queue").select_option("billing")
    await panel(sam).get_by_test_id("transfer-submit").click()
    ask = panel(sam).get_by_test_id("wrapup-unsent")
    await expect(ask).to_contain_text("Your reply to the customer has not been sent")
    await ask.get_by_test_id("wrapup-cancel").click()  # changed their mind: all as it was
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)
    await expect(panel(sam).get_by_test_id("reply-input")).to_have_value(DRAFT)
    await panel(sam).get_by_test_id("transfer-submit").click()
    await panel(sam).get_by_test_id("wrapup-discard").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)


@browser_test
async def test_a_reload_comes_back_to_the_case_that_was_open(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    async with bridge(server) as b:
        for who, name in (("ola@example.com", "Ola Berg"), ("rene@example.com", "René Roy")):
            await send_email(b, sender=who, name=name, subject="Question", text="?")
            await sam.get_by_test_id("offer-accept").first.click()
            await expect(sam.get_by_test_id("case-tab").filter(has_text=name)).to_have_count(1)
    tabs = sam.get_by_test_id("case-tab")
    order = [await t.get_attribute("data-case") for t in await tabs.all()]
    await tabs.nth(1).click()
    await sam.reload()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(tabs).to_have_count(2)
    assert [await t.get_attribute("data-case") for t in await tabs.all()] == order
    await expect(tabs.nth(1)).to_have_attribute("aria-selected", "true")


@browser_test
async def test_a_reminder_whose_case_went_away_says_so_and_stays(
    web: Web, server: ServerProcess
) -> None:
    """Open case on a reminder is decided when pressed: the case moved away meanwhile, so it
    says where it is now, and the reminder stays until Sam dismisses it."""
    sam = await open_email_case(web, server)
    case = str(await panel(sam).get_attribute("data-case"))
    await remind_now(sam, "Check the parcel arrived")
    reminder = sam.get_by_test_id("reminder")
    await expect(reminder).to_have_count(1)
    await _move_to_billing(server, case)
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    await reminder.get_by_role("button", name="Open case").click()
    await expect(sam.get_by_test_id("reopen-error")).to_have_text(
        re.compile("Not opened: the case is waiting for an agent in the Billing queue")
    )
    await expect(reminder).to_have_count(1)
    await expect(reminder).to_contain_text("Check the parcel arrived")


@browser_test
async def test_a_reminder_reopens_the_closed_case_it_is_about(
    web: Web, server: ServerProcess
) -> None:
    """Sam closed the case, and the follow-up falls due: the reminder (kept over a reload)
    reopens it, and the case is Sam's again with its history, to write to Kim once more."""
    sam = await open_email_case(web, server)
    await remind_now(sam, "Did the parcel arrive?")
    await expect(sam.get_by_test_id("reminder")).to_have_count(1)
    await panel(sam).get_by_test_id("wrapup").click()
    await panel(sam).get_by_test_id("disposition-select").select_option("resolved")
    await panel(sam).get_by_test_id("complete").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    await sam.reload()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    reminder = sam.get_by_test_id("reminder")
    await expect(reminder).to_contain_text("closed")
    await set_status(sam, "away")  # taken back while away: Sam's anyway, and told so
    await reminder.get_by_role("button", name="Reopen case").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)
    await expect(sam.get_by_test_id("reopened-while-away")).to_contain_text("Away")
    await expect(reminder).to_have_count(0)  # done: not shown again
    await expect(panel(sam).get_by_test_id("timeline-reopened")).to_be_visible()
    await expect(panel(sam)).to_contain_text("Where is it?")  # the history came with it
    await panel(sam).get_by_test_id("reply-input").fill("Hi Kim, did it arrive in the end?")
    await panel(sam).get_by_test_id("reply-send").click()
    await expect(panel(sam).get_by_text("did it arrive in the end?")).to_be_visible()
    await sam.reload()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)
    await expect(sam.get_by_test_id("reminder")).to_have_count(0)


@browser_test
async def test_the_follow_ups_set_are_listed_and_can_be_cancelled(
    web: Web, server: ServerProcess
) -> None:
    """Sam sets a follow-up for in an hour: the console lists it (also after a reload) with
    its time, customer and note, until it falls due or Sam cancels it; the history says it
    was cancelled."""
    sam = await open_email_case(web, server)
    await panel(sam).get_by_test_id("followup-when").select_option("3600")
    await panel(sam).get_by_test_id("followup-note").fill("Chase the courier")
    await panel(sam).get_by_test_id("followup-submit").click()
    await expect(sam.get_by_test_id("followup-count")).to_have_text("1")
    await sam.reload()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    box = sam.get_by_test_id("followups")
    await box.locator("summary").click()
    item = box.get_by_test_id("followup-item")
    await expect(item).to_have_count(1)
    await expect(item).to_contain_text("Kim Lee — Chase the courier")
    # one that falls due is a reminder now, not on the list
    await remind_now(sam, "Ask Kim for the tracking number")
    await expect(sam.get_by_test_id("reminder")).to_have_count(1)
    await expect(item).to_have_count(1)
    await item.get_by_test_id("followup-cancel").click()
    await expect(sam.get_by_test_id("followup-cancelled")).to_contain_text("Kim Lee")
    await expect(box).to_be_hidden()
    await expect(panel(sam).get_by_test_id("timeline-followup-cancelled")).to_be_visible()
    await sam.reload()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(sam.get_by_test_id("followups")).to_be_hidden()


@browser_test
async def test_a_follow_up_filled_in_but_not_scheduled_is_asked_about_before_completing(
    web: Web, server: ServerProcess
) -> None:
    """Sam types a follow-up and forgets Schedule, then completes the case: asked first, and
    "Schedule it, then complete" sets it (the list shows it) and closes the case."""
    sam = await open_email_case(web, server)
    await panel(sam).get_by_test_id("followup-note").fill("Call them about the credit")
    await panel(sam).get_by_test_id("wrapup").click()
    await panel(sam).get_by_test_id("disposition-select").select_option("resolved")
    await panel(sam).get_by_test_id("complete").click()
    ask = panel(sam).get_by_test_id("followup-unsent")
    await expect(ask).to_contain_text("Call them about the credit")
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)  # not yet
    await ask.get_by_test_id("followup-unsent-schedule").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    await expect(sam.get_by_test_id("followup-count")).to_have_text("1")
    await sam.get_by_test_id("followups").locator("summary").click()
    await expect(sam.get_by_test_id("followup-item")).to_contain_text("Call them about the credit")


@browser_test
async def test_a_photo_a_bridge_links_opens_from_its_host_in_a_tab_of_its_own(
    web: Web, server: ServerProcess
) -> None:
    """A WhatsApp bridge sends a photo its platform keeps: Sam sees its name, size and an
    Open button naming the host (never a link built from what came in); it opens in a new tab."""
    sam = await web.agent("sam")
    url = "https://media.example.com/p/42.jpg"
    async with bridge(server) as b:
        await b.event(
            id="wa-photo-1", channel="chat", identities={"phone": "+14155550177"},
            text="here is the broken part",
            attachments=[{"name": "part.jpg", "type": "image/jpeg", "size": 2048, "url": url}],
        )  # fmt: skip
    await sam.get_by_test_id("offer-accept").click()
    opener = panel(sam).get_by_test_id("attachment-open")
    await expect(opener).to_have_text("Open (media.example.com)")
    assert await panel(sam).locator("a[href]").count() == 0
    # (the platform's server, stood in for: this machine reaches no other)
    await sam.context.route(
        "https://media.example.com/**",
        lambda route: route.fulfill(status=200, content_type="image/jpeg", body=b"\xff\xd8"),
    )
    async with sam.context.expect_page() as popup:
        await opener.click()
    page = await popup.value
    await page.wait_for_load_state()
    assert page.url == url


@browser_test
async def test_two_anonymous_chat_visitors_read_differently(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    for text in ("Is my order shipped?", "Do you ship to Norway?"):
        visitor = await customer_chat(web)  # neither says who they are
        await say(visitor, text)
        await sam.get_by_test_id("offer-accept").first.click()
    tabs = sam.get_by_test_id("case-tab")
    await expect(tabs).to_have_count(2)
    names = [await t.inner_text() for t in await tabs.all()]
    assert all("web chat visitor …" in n for n in names), names
    assert names[0] != names[1]


@browser_test
async def test_a_wrap_up_in_progress_survives_a_reload(web: Web, server: ServerProcess) -> None:
    sam = await open_email_case(web, server)
    await panel(sam).get_by_test_id("wrapup").click()
    await panel(sam).get_by_test_id("disposition-select").select_option("escalated")
    await panel(sam).get_by_test_id("wrapup-note").fill("Refund needs finance sign-off")
    await sam.reload()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(panel(sam).get_by_test_id("disposition-select")).to_have_value("escalated")
    await expect(panel(sam).get_by_test_id("wrapup-note")).to_have_value(
        "Refund needs finance sign-off"
    )
    await panel(sam).get_by_test_id("complete").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    # completed: nothing of it is kept in the browser
    assert await sam.evaluate(DRAFT_KEYS) == []


@browser_test
async def test_transfer_and_follow_up_notes_survive_a_reload(
    web: Web, server: ServerProcess
) -> None:
    """A note half-written for the next agent, or for a reminder, is kept like a reply."""
    sam = await open_email_case(web, server)
    await panel(sam).get_by_test_id("transfer-note").fill("Customer is upset about the delay")
    await panel(sam).get_by_test_id("followup-note").fill("check the refund went through")
    await sam.reload()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(panel(sam).get_by_test_id("transfer-note")).to_have_value(
        "Customer is upset about the delay"
    )
    await expect(panel(sam).get_by_test_id("followup-note")).to_have_value(
        "check the refund went through"
    )
    await panel(sam).get_by_test_id("followup-submit").click()
    await expect(sam.get_by_test_id("followup-confirmation")).to_be_visible()
    await expect(panel(sam).get_by_test_id("followup-note")).to_have_value("")
    # the history says so, for whoever has the case next
    entry = panel(sam).get_by_test_id("timeline-entry").filter(has_text="Follow-up set for")
    await expect(entry).to_contain_text("check the refund went through")
    await sam.reload()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(panel(sam).get_by_test_id("followup-note")).to_have_value("")  # it was used
    await panel(sam).get_by_test_id("wrapup").click()
    await panel(sam).get_by_test_id("disposition-select").select_option("resolved")
    await panel(sam).get_by_test_id("complete").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    assert await sam.evaluate(DRAFT_KEYS) == []  # nothing of the case is kept


@browser_test
async def test_a_supervisor_stepping_an_agents_status_menu_sets_only_where_it_stops(
    web: Web, server: ServerProcess
) -> None:
    """As in the agent's own menu: arrow steps through Sam's status on the supervisor page
    are not each sent (Away would hand Sam's ringing offer on), and the keyboard's focus stays
    on the menu when his row moves to its new group."""
    sam = await web.agent("sam", status="available")
    async with bridge(server) as b:
        await send_email(b, sender="ivy@example.com", name="Ivy", subject="Hold on", text="Hi")
    await expect(sam.get_by_test_id("offer")).to_have_count(1)
    sue = await web.page("/supervisor")
    await sign_in(sue, "sue")
    sam_row = sue.locator("[data-testid=agent-row][data-agent=sam]")
    menu = sam_row.get_by_test_id("agent-status")
    await expect(menu).to_have_value("available")
    options = await menu.locator("option").evaluate_all("os => os.map(o => o.value)")
    assert options.index("offline") == options.index("available") + 2  # away, then offline
    await menu.focus()
    for key in ["ArrowDown", "ArrowDown", "ArrowUp", "ArrowUp"]:  # to offline and back
        await sue.keyboard.press(key)
    await sue.keyboard.press("Enter")
    await expect(menu).to_be_focused()
    await expect(sam.get_by_test_id("offer")).to_have_count(1)  # away and offline were passed
    await expect(sam.get_by_test_id("status-changed")).to_have_count(0)
    await sue.keyboard.press("ArrowDown")  # away: where it stops is sent
    await sue.keyboard.press("Enter")
    await expect(sam_row.locator("xpath=..")).to_have_attribute("data-status", "away")
    await expect(sam.get_by_test_id("status-select")).to_have_value("away")
    await expect(sam.get_by_test_id("offer")).to_have_count(0)
    await expect(menu).to_be_focused()  # still on it, in its new group
    await expect(sue.get_by_test_id("agent-status-confirmation")).to_have_count(1)


@browser_test
async def test_a_reopened_case_offers_what_the_customer_wrote_again(
    web: Web, server: ServerProcess
) -> None:
    """The card of a case reopened by a reply shows that reply, not only the first subject."""
    sam = await web.agent("sam")
    async with bridge(server) as b:
        await b.event(
            id="mail-r1", channel="email", identities={"email": "kim@example.com"},
            name="Kim Lee", subject="Where is my parcel", text="Where is it?", thread="t-parcel",
        )  # fmt: skip
        await sam.get_by_test_id("offer-accept").click()
        await panel(sam).get_by_test_id("wrapup").click()
        await panel(sam).get_by_test_id("disposition-select").select_option("resolved")
        await panel(sam).get_by_test_id("complete").click()
        await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
        await b.event(
            id="mail-r2", channel="email", identities={"email": "kim@example.com"},
            name="Kim Lee", subject="Re: Where is my parcel", text="It still hasn't shipped!",
            thread="t-parcel",
        )  # fmt: skip
    offer = sam.get_by_test_id("offer")
    await expect(offer.get_by_test_id("offer-reopened")).to_have_text(
        "Reopened · wrote again: “It still hasn't shipped!”"
    )
    await expect(offer.get_by_test_id("offer-subject")).to_have_text("Where is my parcel")
