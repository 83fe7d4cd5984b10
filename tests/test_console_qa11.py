"""Exploratory QA, round 11: an unsent draft stays what it was written as (a note never becomes
a reply when the reply box is built again, a reply never quietly a note), a colleague typed by
name takes a transfer, and history written before entries named their agents names them now.

Same harness as tests/test_console.py (a real ``switchboard serve`` and headless Chromium);
every wait is Playwright's auto-waiting ``expect``: a condition in the page, with a deadline.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.async_api import Page, WebSocketRoute, expect
from redis.asyncio import Redis

from router import keys, snapshot
from tests import test_console
from tests.server import ServerProcess
from tests.test_console import Web, customer_chat, panel, say, set_status, sign_in

# test_console's fixtures, for the tests here: a browser per module, a server and people per test
chromium = test_console.chromium
browser = test_console.browser
server = test_console.server
web = test_console.web


async def chat_case(web: Web, text: str = "Where is my parcel?") -> tuple[Page, Page]:
    """Sam with Ada's chat open."""
    sam = await web.agent("sam")
    ada = await customer_chat(web)
    await say(ada, text)
    await sam.get_by_test_id("offer-accept").click()
    await expect(panel(sam).get_by_test_id("reply-input")).to_be_visible()
    return sam, ada


async def note_mode(page: Page) -> None:
    await panel(page).locator("label.seg", has_text="Internal note").click()
    await expect(panel(page).get_by_test_id("reply-send")).to_have_text("Add note")


async def is_a_note(page: Page, text: str) -> None:
    """The reply box holds ``text`` as an internal note: note mode, "Add note"."""
    case = panel(page)
    await expect(case.get_by_test_id("reply-input")).to_have_value(text)
    await expect(case.get_by_test_id("compose-mode-note")).to_be_checked()
    await expect(case.get_by_test_id("reply-send")).to_have_text("Add note")
    await expect(case.get_by_test_id("composer")).to_have_class(re.compile("note-mode"))


# -- 1: a draft stays what it was written as ----------------------------------------------------


@pytest.mark.browser
async def test_a_note_typed_in_wrap_up_stays_a_note_when_the_customer_writes_again(
    web: Web,
) -> None:
    sam, ada = await chat_case(web)
    case = panel(sam)
    await case.get_by_test_id("wrapup").click()
    await expect(case.get_by_test_id("notes-only")).to_have_text("Notes only in wrap-up")
    note = "Angry about the delay; check the courier's claim 4411."
    await case.get_by_test_id("reply-input").fill(note)
    # Ada writes again: the case resumes and the box takes replies, but what Sam typed was a
    # note, and Ctrl+Enter must not send it to her
    await say(ada, "Sorry, one more thing.")
    await expect(case.get_by_test_id("case-status")).to_have_text("In progress")
    await is_a_note(sam, note)
    await case.get_by_test_id("reply-input").press("Control+Enter")
    filed = case.locator("[data-testid=timeline-entry][data-dir=note]").filter(has_text="4411")
    await expect(filed).to_have_count(1)
    await expect(case.get_by_test_id("reply-input")).to_have_value("")
    await expect(case.get_by_test_id("reply-send")).to_have_text("Add note")  # until changed
    # the widget never saw it: the agent's only line there is his joining
    await expect(ada.get_by_test_id("chat-message")).to_have_count(2)
    await expect(ada.get_by_test_id("chat-messages")).not_to_contain_text("4411")


@pytest.mark.browser
async def test_a_note_draft_stays_a_note_across_a_reconnect(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.page("/")
    sockets: list[WebSocketRoute] = []

    async def agent_socket(ws: WebSocketRoute) -> None:
        ws.connect_to_server()
        sockets.append(ws)

    await sam.route_web_socket(re.compile(r"/ws/agent"), agent_socket)
    await sign_in(sam, "sam")
    await set_status(sam, "available")
    ada = await customer_chat(web)
    await say(ada, "Can I change my address?")
    await sam.get_by_test_id("offer-accept").click()
    await note_mode(sam)
    note = "Address change needs a supervisor's OK."
    await panel(sam).get_by_test_id("reply-input").fill(note)

    await sockets[-1].close(code=1011, reason="network down")
    banner = sam.get_by_test_id("connection-banner")
    await expect(banner).to_be_visible()
    await expect(banner).to_be_hidden(timeout=20_000)  # backoff, then hello rebuilds the case
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    assert len(sockets) >= 2
    await is_a_note(sam, note)


@pytest.mark.browser
async def test_choosing_note_while_wrap_up_asks_about_the_reply_answers_it(web: Web) -> None:
    sam, _ = await chat_case(web)
    case = panel(sam)
    await case.get_by_test_id("reply-input").fill("Courier says Tuesday.")
    await case.get_by_test_id("wrapup").click()
    await expect(case.get_by_test_id("wrapup-unsent")).to_be_visible()
    # it is not a reply any more: the question about an unsent reply goes, and Wrap up wraps up
    await note_mode(sam)
    await expect(case.get_by_test_id("wrapup-unsent")).to_have_count(0)
    await case.get_by_test_id("wrapup").click()
    await expect(case.get_by_test_id("notes-only")).to_have_text("Notes only in wrap-up")
    await expect(case.get_by_test_id("reply-input")).to_have_value("Courier says Tuesday.")
    await expect(case.get_by_test_id("draft-unsent-reply")).to_be_hidden()


@pytest.mark.browser
async def test_a_reply_unsent_when_another_window_wrapped_up_stays_a_reply(web: Web) -> None:
    sam, ada = await chat_case(web)
    reply = "Your refund went out yesterday."
    await panel(sam).get_by_test_id("reply-input").fill(reply)
    # Sam opens the console in another window (it takes over) and wraps up there
    other = await web.agent("sam", status=None)
    await expect(sam.get_by_test_id("replaced")).to_be_visible()
    await panel(other).get_by_test_id("wrapup").click()
    await expect(panel(other).get_by_test_id("notes-only")).to_be_visible()
    await sam.get_by_test_id("use-here").click()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    case = panel(sam)
    await expect(case.get_by_test_id("case-status")).to_have_text("Wrapping up")
    # the box takes notes only now: the reply is kept, and says it is an unsent reply
    await expect(case.get_by_test_id("reply-input")).to_have_value(reply)
    unsent = case.get_by_test_id("draft-unsent-reply")
    await expect(unsent).to_be_visible()
    await expect(unsent).to_contain_text("unsent reply")
    await expect(case.get_by_test_id("reply-input")).to_have_attribute(
        "aria-describedby", re.compile(".+")
    )
    # Ada writes again: it is a reply again, and goes to her
    await say(ada, "Hello? Are you there?")
    await expect(case.get_by_test_id("case-status")).to_have_text("In progress")
    await expect(case.get_by_test_id("compose-mode-reply")).to_be_checked()
    await expect(case.get_by_test_id("reply-send")).to_have_text("Send reply")
    await expect(unsent).to_be_hidden()
    await case.get_by_test_id("reply-send").click()
    await expect(
        ada.get_by_test_id("chat-message").filter(has_text="refund went out")
    ).to_be_visible()


# -- 2: names, not ids --------------------------------------------------------------------------


@pytest.mark.browser
async def test_a_colleague_typed_by_name_takes_the_transfer(web: Web) -> None:
    sam, _ = await chat_case(web)
    bea = await web.agent("bea")
    case = panel(sam)
    await case.locator("label.seg", has_text="To an agent").click()
    await expect(case.locator("[data-testid=transfer-agents] option")).to_have_count(1)
    # the field asks for a name or an id: her name, as typed
    await case.get_by_test_id("transfer-agent").fill("bea billing")
    await case.get_by_test_id("transfer-note").fill("Billing question.")
    await case.get_by_test_id("transfer-submit").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    await expect(sam.get_by_test_id("toast-info").filter(has_text="Transferred to")).to_have_text(
        re.compile("Transferred to Bea Billing\\.")
    )
    await bea.get_by_test_id("offer-accept").click()
    note = panel(bea).get_by_test_id("timeline-entry").filter(has_text="Billing question.")
    await expect(note.locator(".tl-who")).to_have_text("Sam Support")
    await expect(note).to_contain_text("Transferred to Bea Billing")


async def test_history_written_before_entries_named_agents_names_them(redis: Redis) -> None:
    ws, cust = "acme", "u1"
    await redis.hset(keys.agent(ws, "sam"), mapping={"name": "Sam Support"})
    await redis.hset(keys.agent(ws, "bea"), mapping={"name": "Bea Billing"})
    await redis.hset(keys.queue(ws, "billing"), mapping={"name": "Billing desk"})
    note = {"kind": "transfer", "dir": "note", "ch": "note"}
    old = [  # as stored before transfer and wrap-up notes carried names
        {**note, "id": "n1", "agent": "sam", "to": "bea"},
        {**note, "id": "n2", "agent": "bea", "to": "billing"},
        {**note, "id": "n3", "kind": "wrapup", "agent": "bea"},
        {**note, "id": "n4", "agent": "gone", "to": "x"},
        # a supervisor's move, written with names: left alone
        {**note, "id": "n5", "agent": "", "to": "billing", "from": "Sue", "to_name": "Billing"},
        {"id": "n6", "dir": "out", "ch": "chat", "agent": "sam", "from": "Sam S."},
    ]
    await redis.rpush(keys.customer_timeline(ws, cust), *[json.dumps(e) for e in old])
    page = await snapshot.history(redis, ws, cust)
    named = {e["id"]: (e.get("from"), e.get("to_name")) for e in page["timeline"]}
    assert named == {
        "n1": ("Sam Support", "Bea Billing"),
        "n2": ("Bea Billing", "Billing desk"),
        "n3": ("Bea Billing", None),
        "n4": ("gone", "x"),  # nothing names them any more: as they were
        "n5": ("Sue", "Billing"),
        "n6": ("Sam S.", None),
    }
