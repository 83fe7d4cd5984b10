"""Exploratory QA, round 11: the web pages at a phone's and a small laptop's width, and toasts.

* The supervisor view on a phone (390 px): the page never scrolls sideways; its tables reflow,
  one card per queue, case and agent, each figure under its column's heading, with the row's
  actions (Move…, the status menu) on the card and working. At 1400 px they are tables as before.
* The same confirmation again (a follow-up scheduled three more times) refreshes the toast that
  is up and counts it (a "times 4" badge); it does not stack one toast per press. A different
  message still gets its own toast.
* The agent console never scrolls as a page, at any width: with offers, a case open and a long
  timeline, the visually hidden text in offers and timeline entries (laid out against the page,
  not its pane) made the page scroll into an empty band below the app.

Same harness as tests/test_console.py (a real ``switchboard serve`` and headless Chromium); its
fixtures and helpers are reused from there. Every wait is Playwright's auto-waiting ``expect``
or ``until`` below: a condition in the page, awaited with a deadline.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page, ViewportSize, expect
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests import test_console
from tests.server import ServerProcess
from tests.test_console import (
    DEADLINE,
    Web,
    bridge,
    panel,
    send_email,
    set_status,
    shoot,
    sign_in,
)

# test_console's fixtures, for the tests here: a browser per module, a server and people per test
chromium = test_console.chromium
browser = test_console.browser
server = test_console.server
web = test_console.web

pytestmark = pytest.mark.browser

PHONE: ViewportSize = {"width": 390, "height": 844}


async def until(page: Page, predicate: str, arg: Any, what: str) -> None:
    """Wait (with the DEADLINE) until the JavaScript ``predicate(arg)`` holds in ``page``."""
    try:
        await page.wait_for_function(predicate, arg=arg, timeout=DEADLINE * 1000)
    except PlaywrightTimeoutError:
        raise AssertionError(f"{what}: not so after {DEADLINE} s") from None


# how far the page itself scrolls, each way (0 when the app fits the window, as it must)
PAGE_OVERFLOW = """() => { const se = document.scrollingElement;
  return { x: se.scrollWidth - se.clientWidth, y: se.scrollHeight - se.clientHeight }; }"""


async def within_width(page: Page, locator: Any, width: int) -> None:
    box = await locator.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, box


# -- 1: the supervisor view on a phone ------------------------------------------------------------


async def test_the_supervisor_view_fits_a_phone_with_its_actions_in_reach(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    async with bridge(server) as b:
        handled = await send_email(
            b, sender="kim@example.com", name="Kim Lee", subject="Parcel late",
            text="Where is it?",
        )  # fmt: skip
        await sam.get_by_test_id("offer-accept").click()
        await expect(sam.get_by_test_id("case-tab")).to_have_count(1)
        waiting = await send_email(  # nobody takes billing: it waits
            b, sender="lou@example.com", name="Lou Park-Montgomery-Fairweather",
            subject="Charged twice for the same order, and the refund never came",
            text="Two charges.", topic="billing",
        )  # fmt: skip

    sue = await web.page("/supervisor")
    await sue.set_viewport_size(PHONE)
    await sign_in(sue, "sue")
    row = sue.locator(f"[data-testid=waiting-case][data-case={waiting['case']}]")
    await expect(row).to_contain_text("Charged twice")
    progress = sue.locator(f"[data-testid=progress-case][data-case={handled['case']}]")
    await expect(progress.get_by_test_id("progress-case-state")).to_have_text("In progress")
    sam_row = sue.locator("[data-testid=agent-row][data-agent=sam]")
    await expect(sam_row).to_be_visible()

    # nothing scrolls sideways: not the page, and not a table inside its panel (they reflow)
    assert await sue.evaluate(PAGE_OVERFLOW) == {"x": 0, "y": 0}
    main = await sue.locator("main").evaluate("m => m.scrollWidth - m.clientWidth")
    assert main == 0
    widths = await sue.locator(".table-scroll").evaluate_all(
        "ss => ss.map(s => [s.querySelector('table').dataset.testid,"
        " s.scrollWidth - s.clientWidth])"
    )
    assert len(widths) == 4 and all(over == 0 for _, over in widths), widths

    # each figure is shown under its column's heading
    async def heading(cell: Any) -> str:
        text: str = await cell.evaluate("c => getComputedStyle(c, '::before').content")
        return text.split(" / ")[0]  # less its alternative text (none: the header names it)

    queue = sue.locator("[data-testid=queue-row][data-queue=billing]")
    assert await heading(queue.get_by_test_id("queue-waiting")) == '"Waiting"'
    assert await heading(queue.get_by_test_id("queue-sl")) == '"Service level"'
    assert await heading(row.get_by_test_id("waiting-case-queue")) == '"Queue"'
    assert await heading(row.get_by_test_id("waiting-case-age")) == '"Waiting"'
    assert await heading(progress.get_by_test_id("progress-case-agent")) == '"Agent"'
    assert await heading(progress.get_by_test_id("progress-case-age")) == '"Open for"'
    await shoot(sue, "supervisor-phone.png", top=True)

    # the row actions are on screen and work: Move… fills in the move form, the case moves
    move = row.get_by_test_id("waiting-case-move")
    await move.scroll_into_view_if_needed()
    await within_width(sue, move, PHONE["width"])
    await move.click()
    await expect(sue.get_by_test_id("move-case-id")).to_have_value(waiting["case"])
    await expect(sue.get_by_test_id("move-case-queue")).to_be_focused()
    await sue.get_by_test_id("move-case-queue").select_option("urgent")  # nobody takes it
    await sue.get_by_test_id("move-case-submit").click()
    await expect(sue.get_by_test_id("move-case-warning")).to_contain_text(  # asked first
        "Nobody has the skills for Urgent"
    )
    await sue.get_by_test_id("move-case-submit").click()
    await expect(sue.get_by_test_id("move-confirmation")).to_contain_text("Case moved to Urgent.")
    await expect(row.get_by_test_id("waiting-case-queue")).to_have_text("Urgent")
    # ... and so does an agent's status menu
    status = sam_row.get_by_test_id("agent-status")
    await status.scroll_into_view_if_needed()
    await within_width(sue, status, PHONE["width"])
    await status.select_option("lunch")
    await expect(sam_row.locator("xpath=..")).to_have_attribute("data-status", "lunch")
    await expect(sam.get_by_test_id("status-select")).to_have_value("lunch")
    assert await sue.evaluate(PAGE_OVERFLOW) == {"x": 0, "y": 0}

    # on a desktop they are tables, their headings in a header row, as before
    await sue.set_viewport_size({"width": 1400, "height": 900})
    tables = await sue.locator("table.data").evaluate_all(
        "ts => ts.map(t => [getComputedStyle(t).display,"
        " getComputedStyle(t.tHead).display, t.tHead.getBoundingClientRect().height > 0])"
    )
    assert tables == [["table", "table-header-group", True]] * 4, tables
    assert await heading(queue.get_by_test_id("queue-waiting")) in ("none", "normal")
    assert await sue.evaluate(PAGE_OVERFLOW) == {"x": 0, "y": 0}


# -- 2: a repeated confirmation is counted, not stacked -------------------------------------------

# the follow-up confirmations up: [message, how many times it was shown]
CONFIRMATIONS = """() => [...document.querySelectorAll('[data-testid=followup-confirmation]')]
  .map(t => { const badge = t.querySelector('[data-testid=toast-count]');
    return [t.querySelector('.toast-text').firstChild.textContent,
            badge && !badge.hidden ? Number(badge.textContent.slice(1)) : 1]; })"""


async def test_a_repeated_confirmation_refreshes_its_toast_instead_of_stacking(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    async with bridge(server) as b:
        await send_email(b, sender="kim@example.com", name="Kim Lee", subject="Parcel late",
                         text="Where is it?")  # fmt: skip
    await sam.get_by_test_id("offer-accept").click()
    case = panel(sam)
    await case.get_by_test_id("followup-when").select_option("3600")  # in 1 hour
    schedule = case.get_by_test_id("followup-submit")
    for _ in range(4):
        await schedule.click()  # waits until the last one was acked (it is disabled till then)
    await until(sam, f"() => ({CONFIRMATIONS})().reduce((n, [, k]) => n + k, 0) === 4", None,
                "four follow-ups confirmed")  # fmt: skip
    shown = await sam.evaluate(CONFIRMATIONS)
    # one toast per message: four presses within a minute say "set for 10:42" once, times 4
    # (two toasts only when the presses straddle a minute, each message once)
    messages = [text for text, _ in shown]
    assert len(set(messages)) == len(messages) <= 2, shown
    toasts = sam.get_by_test_id("followup-confirmation")
    if len(shown) == 1:
        await expect(toasts.get_by_test_id("toast-count")).to_have_text(
            "\u00d74"
        )  # "x4", multiplication sign
        await expect(toasts).to_contain_text("(4 times)")  # what a screen reader hears
    # in the offers column, lined up with the offers
    toast_box = await toasts.first.bounding_box()
    title_box = await sam.locator("#offers-title").bounding_box()
    assert toast_box and title_box and toast_box["x"] == title_box["x"], (toast_box, title_box)

    # a different confirmation still gets a toast of its own
    await case.get_by_test_id("followup-when").select_option(str(24 * 3600))  # tomorrow
    await schedule.click()
    await until(sam, f"(old) => ({CONFIRMATIONS})().some(([t]) => !old.includes(t))",
                messages, "tomorrow's follow-up confirmed")  # fmt: skip
    shown = await sam.evaluate(CONFIRMATIONS)
    new = [(text, n) for text, n in shown if text not in messages]
    assert len(new) == 1 and new[0][1] == 1, shown


# -- 3: the agent console never scrolls as a page -------------------------------------------------

# every pane scrolled to its top, then to its bottom: how far the page itself could scroll
PANES_AND_PAGE = """() => { const se = document.scrollingElement; const out = [];
  const panes = [...document.querySelectorAll('.side-offers, .tl-scroll, .case-body')];
  for (const end of ['top', 'bottom']) {
    for (const p of panes) p.scrollTop = end === 'top' ? 0 : p.scrollHeight;
    window.scrollTo(0, 1e6);
    out.push([end, se.scrollWidth - se.clientWidth, se.scrollHeight - se.clientHeight,
              window.scrollY]);
    window.scrollTo(0, 0);
  }
  return out; }"""

# the offers and the timeline are longer than their panes (so the check above means something)
PANES_SCROLL = """() => ['.side-offers', '.tl-scroll'].every(s => {
  const p = document.querySelector(s); return p && p.scrollHeight > p.clientHeight + 40; })"""


async def test_the_console_never_scrolls_into_an_empty_band_below_the_app(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam", status="lunch")
    await sam.set_viewport_size({"width": 1100, "height": 700})
    async with bridge(server) as b:
        for n in range(60):  # one at a time, so they thread onto one case in order
            await b.event(
                id=f"band-{n}", channel="chat", identities={"email": "tom@example.com"},
                name="Tom Long", thread="tom-1", text=f"message number {n}",
            )  # fmt: skip
        await b.event(id="band-other", channel="chat", identities={"email": "ivy@example.com"},
                      name="Ivy Short", thread="ivy-1", text="hello?")  # fmt: skip
        for n in range(2):
            await send_email(b, sender=f"m{n}@example.com", name=f"Mel {n}",
                             subject=f"Order {n}", text="Where is it?")  # fmt: skip
    await set_status(sam, "available")
    offers = sam.get_by_test_id("offer")
    await expect(offers).to_have_count(4)
    await offers.filter(has_text="Tom Long").get_by_test_id("offer-accept").click()
    await expect(panel(sam).get_by_test_id("timeline-entry")).to_have_count(50)
    await expect(offers).to_have_count(3)

    for width in (1360, 1100, 1024, 800, 390):
        await sam.set_viewport_size({"width": width, "height": 700})
        await until(sam, PANES_SCROLL, None, f"offers and timeline overflow their panes at {width}")
        ends = await sam.evaluate(PANES_AND_PAGE)
        assert ends == [["top", 0, 0, 0], ["bottom", 0, 0, 0]], (width, ends)
        await shoot(sam, f"console-{width}.png")
