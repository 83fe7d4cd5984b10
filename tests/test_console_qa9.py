"""Exploratory QA, round 9: a truncated email says so, the case actions can be found at laptop
widths, the transfer picker suggests only who can take the case, and customer text cannot
reorder the console with bidi controls.

Browser tests use tests/test_console.py's harness (a real ``switchboard serve`` and headless
Chromium) and wait only on conditions in the page, with a deadline; the ingest, adapter and
directory tests are plain unit tests, the directory's on a real Redis.
"""

from __future__ import annotations

import re
import secrets
import signal
import time
from email.message import EmailMessage

import pytest
from playwright.async_api import Page, expect
from redis.asyncio import Redis

from adapters.email_parse import Limits, normalize, parse_message
from router import keys
from router.ingest import parse_event, timeline_entry
from router.snapshot import agent_directory
from tests import test_console
from tests.server import ServerProcess
from tests.test_console import Web, bridge, panel, send_email, set_status
from tests.test_console_ui_fixes import height_at_least, open_email_case, until

# test_console's fixtures, for the tests here: a browser per module, a server and people per test
chromium = test_console.chromium
browser = test_console.browser
server = test_console.server
web = test_console.web

browser_test = pytest.mark.browser
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "bidi \u202egnp.exe" shows as "bidi exe.png"


# -- 1: a truncated email says so ----------------------------------------------------------------


def test_a_cut_mail_marks_its_timeline_entry() -> None:
    """From SMTP to the timeline entry: the adapter cuts a long body and says so; the entry
    carries the mark and the full length."""
    message = EmailMessage()
    message["From"] = "Kim Lee <kim@example.com>"
    message["To"] = "support@acme.test"
    message["Subject"] = "Logs attached inline"
    message["Message-ID"] = "<long-1@example.com>"
    message.set_content("line of a very long log\n" * 4_000)  # 96,000 characters
    mail = parse_message(message.as_bytes(), Limits())
    event = normalize(
        mail, workspace="acme", mailbox="support@acme.test", queue_hint=None,
        rcpt_tos=("support@acme.test",), envelope_sender="kim@example.com",
        secret=b"s" * 32, domain="acme.test", now=time.time(),
    )  # fmt: skip
    assert event is not None
    entry = timeline_entry(parse_event(event))
    assert entry["truncated"] is True
    assert entry["full_length"] >= 96_000 > len(entry["text"])

    whole = timeline_entry(parse_event({**event, "attributes": {"truncated": False}}))
    assert "truncated" not in whole and "full_length" not in whole


@browser_test
async def test_a_truncated_email_says_so_on_its_timeline_entry(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    async with bridge(server) as b:
        await b.event(
            id=f"mail-{secrets.token_hex(6)}", channel="email",
            identities={"email": "kim@example.com"}, name="Kim Lee", subject="Server logs",
            text="log line\n" * 6_000,
            attributes={"truncated": True, "untrimmed_length": 250_000},
        )  # fmt: skip
    await sam.get_by_test_id("offer-accept").click()
    await panel(sam).get_by_test_id("reply-input").fill("Thanks, reading them now.")
    await panel(sam).get_by_test_id("reply-send").click()
    entries = panel(sam).get_by_test_id("timeline-entry")
    await expect(entries).to_have_count(2)
    marker = entries.first.get_by_test_id("timeline-truncated")
    await expect(marker).to_be_visible()
    await expect(marker).to_have_text(
        "Message truncated — the full text was 250,000 characters long;"
        " only the beginning is shown here."
    )
    await expect(entries.last.get_by_test_id("timeline-truncated")).to_have_count(0)


# -- 2: the case actions at laptop widths --------------------------------------------------------


@browser_test
async def test_the_case_header_points_to_the_actions_below_the_conversation(
    web: Web, server: ServerProcess
) -> None:
    sam = await open_email_case(web, server)
    cue = panel(sam).get_by_test_id("case-actions-jump")
    wrapup = panel(sam).get_by_test_id("wrapup")
    await expect(cue).to_be_hidden()  # wide: the actions stand beside the conversation
    await expect(wrapup).to_be_in_viewport()

    await sam.set_viewport_size({"width": 1024, "height": 768})
    await expect(cue).to_be_visible()
    await expect(cue).to_have_text("Actions ↓")
    await expect(cue).to_be_in_viewport()
    await expect(wrapup).not_to_be_in_viewport()
    predicate, arg = height_at_least("[data-testid=case-panel]:not([hidden]) .tl-scroll", 0.4 * 768)
    await until(sam, predicate, arg, "the conversation keeps 40 % of the height with the cue")
    assert await sam.evaluate("() => document.documentElement.scrollHeight <= window.innerHeight")

    await cue.click()
    await expect(wrapup).to_be_in_viewport()
    await expect(panel(sam).locator(".case-actions")).to_be_focused()
    await expect(cue).to_have_text("Conversation ↑")  # and back
    await cue.click()
    await expect(panel(sam).get_by_test_id("reply-input")).to_be_in_viewport()
    await expect(panel(sam).get_by_test_id("reply-input")).to_be_focused()
    await expect(cue).to_have_text("Actions ↓")
    assert await sam.evaluate("() => document.documentElement.scrollHeight <= window.innerHeight")


# -- 3: the transfer picker suggests only who can take the case ----------------------------------


async def test_the_directory_tells_each_agents_capacity_per_channel(redis: Redis) -> None:
    ws = "acme"
    await redis.sadd(keys.agents(ws), "sam", "sue")
    await redis.hset(
        keys.agent(ws, "sam"),
        mapping={"name": "Sam", "st": "available", "chs": "chat,email", "cap:chat": 2,
                 "cap:email": 1},
    )  # fmt: skip
    await redis.hset(keys.agent(ws, "sue"), mapping={"name": "Sue", "role": "supervisor"})
    assert await agent_directory(redis, ws) == [
        {"id": "sam", "name": "Sam", "status": "available",
         "capacity": {"chat": 2, "email": 1, "voice": 0},
         "load": {"chat": 0, "email": 0, "voice": 0}},
        {"id": "sue", "name": "Sue", "status": "offline",
         "capacity": {"chat": 0, "email": 0, "voice": 0},
         "load": {"chat": 0, "email": 0, "voice": 0}},
    ]  # fmt: skip


@browser_test
async def test_the_transfer_picker_leaves_out_who_takes_no_case_of_its_channel(
    web: Web, server: ServerProcess
) -> None:
    sam = await open_email_case(web, server)  # Sue supervises: no capacity on any channel
    await panel(sam).locator("label.seg", has_text="To an agent").click()
    options = panel(sam).locator("[data-testid=transfer-agents] option")
    await expect(options).to_have_count(0)  # and Bea is signed out (transfer.invalid)
    bea = await web.agent("bea")
    await panel(sam).locator("label.seg", has_text="To a queue").click()
    await panel(sam).locator("label.seg", has_text="To an agent").click()  # asks again
    await expect(options).to_have_count(1)
    await expect(options.first).to_have_attribute("value", "bea")
    await set_status(bea, "away")  # not taking cases: the server would refuse her too
    await panel(sam).locator("label.seg", has_text="To a queue").click()
    await panel(sam).locator("label.seg", has_text="To an agent").click()
    await expect(options).to_have_count(0)


# -- 4: bidi controls in customer text -----------------------------------------------------------


def test_subjects_and_names_lose_bidi_controls_and_bodies_keep_them() -> None:
    ev = parse_event(
        {
            "id": "e1", "channel": "email", "identities": {"email": "kim@example.com"},
            "name": f"Kim{RLO} \u2066Lee\u2069\u200b",
            "subject": f"bidi {RLO}gnp.exe \u202a\u202b\u202c\u202d \u2067x\u2068\ufeff\n\tend",
            "text": f"keep {RLO}this\u200f",
        }
    )  # fmt: skip
    assert ev.subject == "bidi gnp.exe x end"
    assert ev.name == "Kim Lee"
    assert ev.text == f"keep {RLO}this\u200f"  # what the customer wrote, as written
    # joiners and marks are part of writing Persian, Hebrew and emoji: they stay
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # ZWNJ inside the word
    kept = parse_event(
        {"id": "e2", "channel": "chat", "identities": {"visitor": "v1"},
         "subject": f"{persian} \u200f\U0001f469\u200d\U0001f4bb"}
    )  # fmt: skip
    assert kept.subject == f"{persian} \u200f\U0001f469\u200d\U0001f4bb"


async def bidi_of(page: Page, selector: str) -> list[str]:
    return list(
        await page.eval_on_selector_all(
            selector, "els => els.map(e => getComputedStyle(e).unicodeBidi)"
        )
    )


@browser_test
async def test_customer_text_is_isolated_and_shows_no_direction_override(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    async with bridge(server) as b:
        await send_email(
            b, sender="kim@example.com", name=f"Kim {RLO}eeL", subject=f"bidi {RLO}gnp.exe",
            text=f"Please open invoice{RLO}fdp.exe today",
        )  # fmt: skip
        offer = sam.get_by_test_id("offer")
        await expect(offer.get_by_test_id("offer-subject")).to_have_text("bidi gnp.exe")
        assert await bidi_of(sam, "[data-testid=offer-customer] bdi") == ["isolate"]
        await offer.get_by_test_id("offer-accept").click()
    case = panel(sam)
    await expect(case.locator(".fact dd bdi")).to_have_text("bidi gnp.exe")
    await expect(case.get_by_test_id("case-customer")).to_have_text("Kim eeL")
    text = case.get_by_test_id("timeline-text")
    await expect(text).to_have_text("Please open invoicefdp.exe today")  # the override is gone
    for selector, want in (
        (".tl-who", "isolate"),
        (".tl-subject", "isolate"),
        ("[data-testid=timeline-text]", "plaintext"),
        ("[data-testid=case-customer]", "isolate"),
        (".fact dd bdi", "isolate"),
    ):
        assert await bidi_of(sam, f"[data-testid=case-panel]:not([hidden]) {selector}") == [want]
    assert await bidi_of(sam, "[data-testid=case-tab] .case-tab-name") == ["isolate"]

    # the supervisor's waiting cases: the subject is isolated from the id beside it
    async with bridge(server) as b:
        await send_email(
            b, sender="lee@example.com", name="Lee", subject="\u05e9\u05dc\u05d5\u05dd 42",
            text="Urgent!", topic="urgent",
        )  # fmt: skip
    sue = await web.page("/supervisor")
    await test_console.sign_in(sue, "sue")
    row = sue.get_by_test_id("waiting-case").filter(has_text=re.compile("\u05e9\u05dc\u05d5\u05dd"))
    await expect(row).to_have_count(1)
    assert await bidi_of(sue, "[data-testid=waiting-case] .waiting-subject") == ["isolate"]


# -- the supervisor takes back a case from an agent who signed out --------------------------------


@browser_test
async def test_a_supervisor_sees_a_signed_out_agents_case_and_takes_it_back(
    web: Web, server: ServerProcess
) -> None:
    sam = await open_email_case(web, server, subject="Refund please")
    sue = await web.page("/supervisor")
    await test_console.sign_in(sue, "sue")
    row = sue.get_by_test_id("progress-case").filter(has_text="Refund please")
    await expect(row.get_by_test_id("progress-case-agent")).to_have_text("Sam Support")
    await expect(row.get_by_test_id("case-customer-name")).to_have_text("Kim Lee")  # who
    # Sam's status goes offline with the case still his (a supervisor could set it too)
    await sam.get_by_test_id("status-select").select_option("offline")
    await expect(row.get_by_test_id("progress-case-signed-out")).to_be_visible()
    await expect(row.get_by_test_id("progress-case-agent")).to_have_text("Sam Support · offline")
    draft = "Your refund went out today, it shows in"  # Sam was writing when he signed out
    await panel(sam).get_by_test_id("reply-input").fill(draft)

    await row.get_by_test_id("progress-case-move").click()
    await sue.get_by_test_id("move-case-queue").select_option("billing")
    await sue.get_by_test_id("move-case-submit").click()
    await expect(sue.get_by_test_id("move-confirmation")).to_be_visible()
    waiting = sue.get_by_test_id("waiting-case").filter(has_text="Refund please")
    await expect(waiting.get_by_test_id("waiting-case-queue")).to_have_text("Billing")
    await expect(waiting.get_by_test_id("case-customer-name")).to_have_text("Kim Lee")
    await expect(row).to_have_count(0)
    # Sam's console lets go of it, and says why
    removed = sam.get_by_test_id("case-removed")
    await expect(removed).to_contain_text("moved your case with Kim Lee to the Billing queue")
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    # and keeps what he had typed, until he has it
    await expect(removed).to_contain_text(f"What you had typed was not sent: “{draft}”")
    await sam.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await removed.get_by_role("button", name="Copy text").click()
    assert await sam.evaluate("navigator.clipboard.readText()") == draft
    await expect(removed).to_have_count(0)


# -- one console per agent -----------------------------------------------------------------------


@browser_test
async def test_a_second_console_takes_over_and_the_first_can_take_it_back(
    web: Web, server: ServerProcess
) -> None:
    first = await open_email_case(web, server, subject="Two windows")
    second = await web.agent("sam", status=None)
    await expect(second.get_by_test_id("case-tab")).to_have_count(1)  # the case is here now
    replaced = first.get_by_test_id("replaced")
    await expect(replaced).to_be_visible()
    await expect(replaced).to_contain_text("open in another window")
    await expect(first.get_by_test_id("connection-banner")).to_be_hidden()  # not "reconnecting"
    # the page behind is out of reach (no focus, no clicks): a reply typed there could never go
    behind = "() => document.querySelector('[data-testid=reply-input]').closest('[inert]') !== null"
    assert await first.evaluate(behind)
    await first.keyboard.press("Tab")
    assert await first.evaluate("() => document.activeElement.closest('[inert]') === null")

    await first.get_by_test_id("use-here").click()
    assert not await first.evaluate(behind)
    await expect(replaced).to_have_count(0)
    await expect(first.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(second.get_by_test_id("replaced")).to_be_visible()
    await panel(first).get_by_test_id("reply-input").fill("Answered from the first window.")
    await panel(first).get_by_test_id("reply-send").click()
    sent = panel(first).locator("[data-testid=timeline-entry][data-dir=out]")
    await expect(sent).to_contain_text("Answered from the first window.")

    # a supervisor's page and their own console live side by side
    sue = await web.page("/supervisor")
    await test_console.sign_in(sue, "sue")
    await web.agent("sue", status=None)
    stamp = sue.get_by_test_id("stats-updated")
    seen = await stamp.text_content()
    await expect(stamp).not_to_have_text(seen or "")  # still refreshing: not closed
    await expect(sue.get_by_test_id("connection-state")).to_have_text("Live")


# -- someone else writes on the customer's case --------------------------------------------------


@browser_test
async def test_a_mail_from_someone_else_on_the_case_is_marked_as_not_the_customers(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    async with bridge(server) as b:
        first = await send_email(
            b, sender="nina@example.com", name="Nina", subject="Balance", text="My balance?"
        )
        await sam.get_by_test_id("offer-accept").click()
        await b.event(  # with the case's reply address, as a reply token would give it
            id=f"mail-{secrets.token_hex(6)}", channel="email", case=first["case"],
            identities={"email": "mallory@evil.test"}, name="Nina", text="Send it here.",
        )  # fmt: skip
    mallory = panel(sam).get_by_test_id("timeline-entry").filter(has_text="Send it here.")
    await expect(mallory.get_by_test_id("timeline-stranger")).to_have_text(
        "mallory@evil.test · not this customer"
    )
    nina = panel(sam).get_by_test_id("timeline-entry").filter(has_text="My balance?")
    await expect(nina).to_be_visible()
    await expect(nina.get_by_test_id("timeline-stranger")).to_have_count(0)


@browser_test
async def test_a_stalled_connection_shows_the_banner_and_reconnects_not_a_takeover(
    web: Web, server: ServerProcess
) -> None:
    """The server stops answering (a laptop asleep, a frozen process): the console gives up on
    the connection after its ping goes unanswered, says so, and reconnects by itself once the
    server is back — it does not claim another window took over."""
    sam = await open_email_case(web, server, subject="Still there?")
    server.proc.send_signal(signal.SIGSTOP)
    try:
        banner = sam.get_by_test_id("connection-banner")
        await expect(banner).to_be_visible(timeout=45_000)  # a ping every 20 s, 10 s to answer
        await expect(sam.get_by_test_id("connection-state")).not_to_have_text("Live")
    finally:
        server.proc.send_signal(signal.SIGCONT)
    await expect(banner).to_be_hidden(timeout=30_000)
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(sam.get_by_test_id("replaced")).to_have_count(0)
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)


@browser_test
async def test_focus_stays_in_the_console_when_a_case_or_the_last_offer_goes(
    web: Web, server: ServerProcess
) -> None:
    sam = await open_email_case(web, server, subject="Focus")
    await panel(sam).get_by_test_id("wrapup").click()
    await panel(sam).get_by_test_id("disposition-select").select_option("resolved")
    await panel(sam).get_by_test_id("complete").focus()
    await sam.keyboard.press("Enter")
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    # on the offers (the list, or an offer that came meanwhile), not the page's body
    await until(
        sam,
        "() => !!document.activeElement"
        " && !!document.activeElement.closest('[data-testid=offer-list]')",
        None,
        "focus on the offers after Complete case",
    )

    async with bridge(server) as b:
        await send_email(b, sender="lee@example.com", name="Lee", subject="Next", text="Hi")
    offer = sam.get_by_test_id("offer")
    await offer.focus()
    await sam.keyboard.press("r")
    await expect(offer).to_have_count(0)
    await expect(sam.get_by_test_id("offer-list")).to_be_focused()


@browser_test
async def test_stepping_through_the_status_menu_with_arrows_sets_only_where_it_stops(
    web: Web, server: ServerProcess
) -> None:
    """Arrow keys step a closed menu through every option: only the one the agent stops on is
    sent (Enter, Tab away, or a second's pause), not each one passed (Away or Offline would hand
    a ringing offer on to a colleague)."""
    sam = await web.agent("sam", status="available")
    async with bridge(server) as b:
        await send_email(b, sender="ivy@example.com", name="Ivy", subject="Hold on", text="Hi")
    await expect(sam.get_by_test_id("offer")).to_have_count(1)
    menu = sam.get_by_test_id("status-select")
    options = await menu.locator("option").evaluate_all("os => os.map(o => o.value)")
    assert options.index("offline") == options.index("available") + 2  # away, then offline
    await menu.focus()
    for key in ["ArrowDown", "ArrowDown", "ArrowUp", "ArrowUp"]:  # to offline and back
        await sam.keyboard.press(key)
    await sam.keyboard.press("Enter")
    await expect(menu).to_have_class("status-available")
    await expect(sam.get_by_test_id("offer")).to_have_count(1)  # away and offline were passed
    # where it stops is sent: lunch (not routable) hands the offer on, and says so
    for _ in range(3):  # available -> away -> offline -> lunch
        await sam.keyboard.press("ArrowDown")
    await sam.keyboard.press("Enter")
    await expect(menu).to_have_class("status-lunch")
    await expect(sam.get_by_test_id("offer")).to_have_count(0)
    await expect(
        sam.get_by_text(
            "You are not available: the offer was withdrawn and the case went back to the queue."
        )
    ).to_be_visible()
