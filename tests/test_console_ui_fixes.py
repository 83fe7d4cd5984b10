"""The console and the chat widget at the edges exploratory QA found: laptop-sized windows,
long subjects, forged senders, cases newer than the open one, transfers that cannot happen and
a reloaded or handed-on chat.

Same harness as tests/test_console.py (a real ``switchboard serve`` and headless Chromium); its
fixtures and helpers are reused from there. Every wait is Playwright's auto-waiting ``expect``
or ``until`` below: a condition in the page, awaited with a deadline.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest
from playwright.async_api import Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests import test_console
from tests.server import ServerProcess
from tests.test_console import (
    DEADLINE,
    Web,
    bridge,
    customer_chat,
    panel,
    say,
    send_email,
)

# test_console's fixtures, for the tests here: a browser per module, a server and people per test
chromium = test_console.chromium
browser = test_console.browser
server = test_console.server
web = test_console.web

pytestmark = pytest.mark.browser


async def until(page: Page, predicate: str, arg: Any, what: str) -> None:
    """Wait (with the DEADLINE) until the JavaScript ``predicate(arg)`` holds in ``page``."""
    try:
        await page.wait_for_function(predicate, arg=arg, timeout=DEADLINE * 1000)
    except PlaywrightTimeoutError:
        raise AssertionError(f"{what}: not so after {DEADLINE} s") from None


def height_at_least(selector: str, px: float) -> tuple[str, list[Any]]:
    return (
        "([sel, px]) => { const e = document.querySelector(sel);"
        " return !!e && e.getBoundingClientRect().height >= px; }",
        [selector, px],
    )


async def open_email_case(web: Web, server: ServerProcess, subject: str = "Parcel late") -> Page:
    sam = await web.agent("sam")
    async with bridge(server) as b:
        await send_email(
            b, sender="kim@example.com", name="Kim Lee", subject=subject, text="Where is it?"
        )
    await sam.get_by_test_id("offer-accept").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)
    return sam


# -- 1: layout at laptop widths ------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1024, 768), (1100, 800)])
async def test_conversation_keeps_most_of_the_height_at_laptop_widths(
    web: Web, server: ServerProcess, size: tuple[int, int]
) -> None:
    sam = await open_email_case(web, server)
    width, height = size
    await sam.set_viewport_size({"width": width, "height": height})
    scroller = "[data-testid=case-panel]:not([hidden]) .tl-scroll"
    predicate, arg = height_at_least(scroller, 0.4 * height)
    await until(sam, predicate, arg, f"the conversation is 40 % of {width}x{height}")
    # the page itself does not scroll (into an empty band below the app): only the case does
    assert await sam.evaluate(
        "() => document.documentElement.scrollHeight <= window.innerHeight"
    ), f"the page scrolls at {width}x{height}"
    # the actions are still there, below the conversation, a scroll away
    wrapup = panel(sam).get_by_test_id("wrapup")
    await wrapup.scroll_into_view_if_needed()
    await expect(wrapup).to_be_in_viewport()


async def test_a_long_unbroken_subject_leaves_the_customer_name_readable(
    web: Web, server: ServerProcess
) -> None:
    sam = await open_email_case(web, server, subject="X" * 300)
    name = "[data-testid=case-panel]:not([hidden]) [data-testid=case-customer]"
    for width, height in ((1360, 860), (1024, 768), (420, 800)):
        await sam.set_viewport_size({"width": width, "height": height})
        # "Kim Lee" on one line: about one line high, and wider than a few letters
        await until(
            sam,
            "sel => { const r = document.querySelector(sel).getBoundingClientRect();"
            " return r.width >= 60 && r.height <= 40; }",
            name,
            f"the customer's name on one line at {width}px",
        )
        # the header's facts never overlap each other
        labels = panel(sam).locator(".case-facts dt")
        boxes = [await labels.nth(i).bounding_box() for i in range(await labels.count())]
        rects = [b for b in boxes if b]
        for i, a in enumerate(rects):
            for b in rects[i + 1 :]:
                apart = (
                    a["x"] + a["width"] <= b["x"] + 0.5
                    or b["x"] + b["width"] <= a["x"] + 0.5
                    or a["y"] + a["height"] <= b["y"] + 0.5
                    or b["y"] + b["height"] <= a["y"] + 0.5
                )
                assert apart, (width, a, b)


# -- 2: the offer card says who is not verified --------------------------------------------------


async def test_offer_card_flags_a_forged_sender_and_a_chat_visitors_typed_name(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    offer = sam.get_by_test_id("offer")
    async with bridge(server) as b:
        # the real customer: her domain vouches for the mail
        await send_email(
            b, sender="alice@example.com", name="Alice Moreno", subject="Order", text="Hi"
        )
        await expect(offer.get_by_test_id("offer-customer")).to_have_text("Email from Alice Moreno")
        await offer.get_by_test_id("offer-accept").click()
        await expect(sam.get_by_test_id("case-tab")).to_have_count(1)
        # dmarc=fail: the same name and address, but only as a claim
        await b.event(
            id=f"mail-{secrets.token_hex(6)}",
            channel="email",
            identities={},
            claims={"email": "alice@example.com"},
            name="Alice Moreno",
            subject="New bank details",
            text="Please pay to this IBAN.",
        )
    await expect(offer.get_by_test_id("offer-customer")).to_have_text(
        "Email from Alice Moreno · not verified"
    )
    # a screen reader hears it too
    await expect(sam.get_by_test_id("announcer-urgent")).to_contain_text(
        "offer from Alice Moreno, not verified"
    )
    await offer.get_by_test_id("offer-accept").click()
    await expect(panel(sam).get_by_test_id("case-claims")).to_have_text(
        "Says: alice@example.com · not verified"
    )

    # a chat visitor who typed a name (and nothing else) is just as unverified
    eve = await customer_chat(web, name="Alice Moreno")
    await say(eve, "It's me, Alice.")
    await expect(offer.get_by_test_id("offer-customer")).to_have_text(
        "Chat from Alice Moreno · not verified"
    )
    await offer.get_by_test_id("offer-accept").click()
    await expect(panel(sam).get_by_test_id("case-claims")).to_have_text(
        "Says: Alice Moreno · not verified"
    )


# -- 4: dividers say whether the other case came before or after ---------------------------------


async def test_dividers_tell_earlier_from_later_cases(web: Web, server: ServerProcess) -> None:
    sam = await web.agent("sam")
    offer = sam.get_by_test_id("offer")
    async with bridge(server) as b:
        for n, subject in enumerate(("First question", "Second question")):
            await b.event(
                id=f"mail-{secrets.token_hex(6)}",
                channel="email",
                identities={"email": "kim@example.com"},
                name="Kim Lee",
                thread=f"kim-{n}",
                subject=subject,
                text=f"{subject}, please.",
            )
            await expect(offer.get_by_test_id("offer-subject")).to_have_text(subject)
            await offer.get_by_test_id("offer-accept").click()
            await expect(sam.get_by_test_id("case-tab")).to_have_count(n + 1)
    tabs = sam.get_by_test_id("case-tab")
    dividers = panel(sam).locator(".tl-divider")
    await tabs.first.click()  # the first case: the second one came after it
    await expect(dividers).to_have_text(
        [re.compile(r"^This case · Email · \S+$", re.I), re.compile(r"^Later case · ", re.I)]
    )
    await tabs.nth(1).click()  # the second case: the first one came before it
    await expect(dividers).to_have_text(
        [re.compile(r"^Earlier case · ", re.I), re.compile(r"^This case · ", re.I)]
    )


# -- 5: transfers that cannot happen say so ------------------------------------------------------


async def test_transfer_refusals_are_shown_next_to_the_form(
    web: Web, server: ServerProcess
) -> None:
    sam = await open_email_case(web, server)
    await web.agent("bea")  # signed in: the picker offers her (not the signed-out)
    await panel(sam).locator("label.seg", has_text="To an agent").click()
    options = panel(sam).locator("[data-testid=transfer-agents] option")
    await expect(options.first).to_be_attached()
    assert "sam" not in [await o.get_attribute("value") for o in await options.all()]
    error = panel(sam).get_by_test_id("transfer-error")

    await panel(sam).get_by_test_id("transfer-agent").fill("sam")  # typed in anyway
    await panel(sam).get_by_test_id("transfer-submit").click()
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("already yours")

    await panel(sam).get_by_test_id("transfer-agent").fill("nobody")  # the server refuses
    await expect(error).to_be_hidden()
    await panel(sam).get_by_test_id("transfer-submit").click()
    await expect(error).to_contain_text("Not transferred to nobody")
    await expect(sam.get_by_test_id("toast-error").last).to_contain_text("Not transferred")
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)  # still Sam's


# -- 3: the chat widget after a reload and a transfer --------------------------------------------


async def test_chat_widget_keeps_the_story_in_order_and_the_newest_line_in_view(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    ada = await customer_chat(web)
    await ada.set_viewport_size({"width": 520, "height": 640})
    await say(ada, "Hello?")
    await sam.get_by_test_id("offer-accept").click()
    await panel(sam).get_by_test_id("reply-input").fill("Hi, Sam here.")
    await panel(sam).get_by_test_id("reply-send").click()
    await expect(ada.get_by_test_id("chat-message").filter(has_text="Sam here")).to_be_visible()

    await ada.reload()
    await expect(ada.get_by_test_id("chat-status")).to_have_text("Connected")
    lines = ada.locator("[data-testid=chat-messages] > li")
    await expect(lines).to_have_text(
        [
            re.compile("Hello\\?"),
            "Sam Support joined the chat",
            re.compile("Sam here"),
        ]
    )

    for n in range(8):
        await say(ada, f"more detail number {n}")
    await panel(sam).get_by_test_id("transfer-queue").select_option("billing")
    await panel(sam).get_by_test_id("transfer-submit").click()
    handed = ada.get_by_test_id("chat-system").last
    await expect(handed).to_have_text("Sam Support handed your chat to a colleague")
    await expect(ada.get_by_test_id("chat-waiting")).to_be_visible()
    await until(
        ada,
        "() => { const e = document.querySelector('[data-testid=chat-messages]');"
        " return e.scrollHeight - e.scrollTop - e.clientHeight <= 2; }",
        None,
        "the chat log scrolled to its newest line",
    )
    await expect(handed).to_be_in_viewport()


# -- 6: wrap-up ends the conversation ------------------------------------------------------------


async def test_wrapping_up_with_an_unsent_reply_asks_first_and_ends_transfers(
    web: Web, server: ServerProcess
) -> None:
    sam = await open_email_case(web, server)
    case = panel(sam)
    await case.get_by_test_id("reply-input").fill("It ships tomorrow, Kim.")
    await case.get_by_test_id("wrapup").click()
    ask = case.get_by_test_id("wrapup-unsent")
    await expect(ask).to_be_visible()
    await expect(case.get_by_test_id("compose-mode-reply")).to_have_count(1)  # not wrapped yet
    await case.get_by_test_id("wrapup-cancel").click()
    await expect(ask).to_have_count(0)
    await expect(case.get_by_test_id("reply-input")).to_have_value("It ships tomorrow, Kim.")

    await case.get_by_test_id("wrapup").click()
    await case.get_by_test_id("wrapup-send-first").click()
    # sent as the reply, then wrapped up: notes only, and nothing to transfer any more
    await expect(case.get_by_test_id("notes-only")).to_have_text("Notes only in wrap-up")
    sent = case.locator("[data-testid=timeline-entry][data-dir=out]")
    await expect(sent).to_contain_text("It ships tomorrow, Kim.")
    await expect(case.get_by_test_id("reply-input")).to_have_value("")
    await expect(case.get_by_test_id("transfer-submit")).to_have_count(0)
    await expect(case.get_by_test_id("disposition-select")).to_be_visible()


async def test_wrapping_up_without_sending_drops_the_draft(web: Web, server: ServerProcess) -> None:
    sam = await open_email_case(web, server)
    case = panel(sam)
    await case.get_by_test_id("reply-input").fill("Never mind this.")
    await case.get_by_test_id("wrapup").click()
    await case.get_by_test_id("wrapup-discard").click()
    await expect(case.get_by_test_id("notes-only")).to_be_visible()
    await expect(case.get_by_test_id("reply-input")).to_have_value("")
    await expect(case.locator("[data-testid=timeline-entry][data-dir=out]")).to_have_count(0)


async def test_a_reloaded_chat_widget_shows_where_a_handed_on_chat_stands(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    ada = await customer_chat(web)
    await say(ada, "Hello?")
    await sam.get_by_test_id("offer-accept").click()
    await panel(sam).get_by_test_id("reply-input").fill("Hi, Sam here.")
    await panel(sam).get_by_test_id("reply-send").click()
    await expect(ada.get_by_test_id("chat-message").filter(has_text="Sam here")).to_be_visible()
    await panel(sam).get_by_test_id("transfer-queue").select_option("billing")
    await panel(sam).get_by_test_id("transfer-submit").click()
    await expect(ada.get_by_test_id("chat-waiting")).to_be_visible()

    # reloaded while nobody has it yet: still waiting, and told why
    await ada.reload()
    await expect(ada.get_by_test_id("chat-status")).to_have_text("Connected")
    lines = ada.locator("[data-testid=chat-messages] > li")
    await expect(lines).to_have_text(
        [
            re.compile("Hello\\?"),
            re.compile("Sam here"),
            "Sam Support handed your chat to a colleague",
        ]
    )
    await expect(ada.get_by_test_id("chat-waiting")).to_be_visible()

    bea = await web.agent("bea")
    await bea.get_by_test_id("offer-accept").click()
    await panel(bea).get_by_test_id("reply-input").fill("Bea from billing, hello.")
    await panel(bea).get_by_test_id("reply-send").click()
    await expect(ada.get_by_test_id("chat-message").filter(has_text="Bea from")).to_be_visible()
    await ada.reload()
    await expect(ada.get_by_test_id("chat-status")).to_have_text("Connected")
    story: list[str | re.Pattern[str]] = [
        re.compile("Hello\\?"),
        re.compile("Sam here"),
        "Bea Billing joined the chat",
    ]
    await expect(lines).to_have_text([*story, re.compile("Bea from billing")])
    await expect(ada.get_by_test_id("chat-waiting")).to_be_hidden()

    # she wraps up; Ada writes again, which resumes it: her message, then Bea is back
    await panel(bea).get_by_test_id("wrapup").click()
    closed = "Bea Billing closed the conversation. Write again any time."
    await expect(ada.get_by_test_id("chat-system").last).to_have_text(closed)
    await say(ada, "Sorry, one more thing.")
    await expect(lines).to_have_text(
        [
            *story,
            re.compile("Bea from billing"),
            closed,
            re.compile("one more thing"),
            "Bea Billing joined the chat",
        ]
    )
    # and so after a reload: she rejoined when Ada wrote, not when she first joined
    await ada.reload()
    await expect(ada.get_by_test_id("chat-status")).to_have_text("Connected")
    await expect(lines.last).to_have_text("Bea Billing joined the chat")
    await expect(lines.nth(-2)).to_have_text(re.compile("one more thing"))


async def test_the_selected_case_tab_is_never_cut_off_in_a_full_tab_strip(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")  # room for two emails and two chats: four tabs
    await sam.set_viewport_size({"width": 1024, "height": 768})
    names = ["Bartholomew Featherstonehaugh", "Maximiliana Oyelaran-Castellanos",
             "Konstantinos Papadimitriou", "Wilhelmina Vanderbilt-Whitney"]  # fmt: skip
    tab_in_view = (
        "() => { const t = document.querySelector('[data-testid=case-tab][aria-selected=true]');"
        " const s = document.querySelector('[data-testid=case-tabs]');"
        " if (!t || !s) return false;"
        " const a = t.getBoundingClientRect(), b = s.getBoundingClientRect();"
        " return a.left >= b.left - 1 && a.right <= b.right + 1; }"
    )
    async with bridge(server) as b:
        for i, name in enumerate(names):
            await b.event(
                id=f"tabs-{secrets.token_hex(4)}",
                channel="email" if i % 2 == 0 else "chat",
                identities={"email": f"c{i}-{secrets.token_hex(3)}@example.com"},
                name=name,
                subject="Question" if i % 2 == 0 else None,
                text="Hello",
            )
            await sam.get_by_test_id("offer-accept").click()
            await expect(sam.get_by_test_id("case-tab")).to_have_count(i + 1)
            await expect(sam.get_by_test_id("case-tab").nth(i)).to_have_attribute(
                "aria-selected", "true"
            )
            await until(sam, tab_in_view, None, f"case {i + 1}'s tab in view")
    strip = sam.get_by_test_id("case-tabs")
    assert await strip.evaluate("s => s.scrollWidth > s.clientWidth"), "the strip is not full"

    # and back to the first with the keyboard, as a tab list is used: it comes into view too
    await sam.get_by_test_id("case-tab").nth(3).focus()
    await sam.keyboard.press("Home")
    await expect(sam.get_by_test_id("case-tab").nth(0)).to_have_attribute("aria-selected", "true")
    await until(sam, tab_in_view, None, "the first case's tab in view")
