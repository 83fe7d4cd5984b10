"""Exploratory QA, round 13: an agent choosing a canned reply from the keyboard, replies over
the length limit, and a chat customer's long messages, unsent text, details form and a page
that names no chat of ours.

Browser tests use tests/test_console.py's harness (a real ``switchboard serve`` and headless
Chromium) and wait only on conditions in the page, with a deadline.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.async_api import WebSocketRoute, expect

from tests import test_console
from tests.server import ServerProcess
from tests.test_console import Web, customer_chat, panel, say, set_status, sign_in
from tests.test_console_ui_fixes import open_email_case

# test_console's fixtures, for the tests here: a browser per module, a server and people per test
chromium = test_console.chromium
browser = test_console.browser
server = test_console.server
web = test_console.web

pytestmark = pytest.mark.browser

HELLO = "Hi! Thanks for getting in touch. I'm on it."  # the test workspace's canned "hello"


async def test_a_canned_reply_is_chosen_with_the_arrows_and_inserted_with_enter(
    web: Web, server: ServerProcess
) -> None:
    sam = await open_email_case(web, server)
    box = panel(sam).get_by_test_id("reply-input")
    await box.fill("Thanks for waiting.")
    canned = panel(sam).get_by_test_id("canned-select")
    await canned.focus()
    await canned.press("ArrowDown")  # moving through the list inserts nothing yet
    await expect(canned).to_have_value("hello")
    await expect(box).to_have_value("Thanks for waiting.")
    await expect(canned).to_be_focused()
    await canned.press("Enter")
    # after a word, a space: not "…waiting.Hi!"
    await expect(box).to_have_value(f"Thanks for waiting. {HELLO}")
    await expect(box).to_be_focused()
    await expect(canned).to_have_value("")


async def test_a_status_notice_goes_when_the_status_it_names_does(
    web: Web, server: ServerProcess
) -> None:
    """Set Away for missing offers, the notice stays until Sam is back to read it; choosing
    Available takes it away (it would say Away under a green Available)."""
    sam = await web.page("/")
    routes: list[WebSocketRoute] = []

    async def agent_socket(ws: WebSocketRoute) -> None:
        ws.connect_to_server()  # relayed as is, both ways
        routes.append(ws)

    await sam.route_web_socket(re.compile(r"/ws/agent"), agent_socket)
    await sign_in(sam, "sam")
    await set_status(sam, "available")
    # what the server sends when offers time out in a row (router/lua/timers_run.lua)
    routes[-1].send(json.dumps({"type": "status", "status": "away", "reason": "missed_offers"}))
    notice = sam.get_by_test_id("status-changed")
    await expect(notice).to_contain_text("offers were missed in a row")
    await set_status(sam, "available")
    await expect(notice).to_have_count(0)


async def test_a_reply_over_the_limit_is_refused_in_the_console_and_kept(
    web: Web, server: ServerProcess
) -> None:
    sam = await open_email_case(web, server)
    box = panel(sam).get_by_test_id("reply-input")
    text = "€" * 32_001
    await box.fill(text)
    await box.press("Control+Enter")
    await expect(sam.get_by_test_id("toast-error")).to_contain_text(
        "32,001 characters, 32,000 at most"
    )
    await expect(box).to_have_value(text)  # kept, to shorten
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await box.fill("€" * 32_000)  # at the limit, in a 3-byte script: sent
    await box.press("Control+Enter")
    await expect(box).to_have_value("")
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")


async def test_a_chat_message_counts_an_emoji_as_one_character(
    web: Web, server: ServerProcess
) -> None:
    """5,000 emoji are 10,000 UTF-16 units but 5,000 characters: under the 8,000 a message may
    have. 8,001 characters are refused in the page, the text kept."""
    dana = await customer_chat(web)
    await say(dana, "🙂" * 5000)
    await expect(dana.get_by_test_id("chat-error")).to_be_hidden()
    await dana.get_by_test_id("chat-input").fill("a" * 8001)
    await dana.get_by_test_id("chat-input").press("Enter")
    await expect(dana.get_by_test_id("chat-error")).to_contain_text("8001 characters, 8000 at most")
    await expect(dana.get_by_test_id("chat-input")).to_have_value("a" * 8001)
    await expect(dana.get_by_test_id("chat-status")).to_have_text("Connected")


async def test_a_chat_message_typed_and_not_sent_survives_a_reload(
    web: Web, server: ServerProcess
) -> None:
    dana = await customer_chat(web)
    await dana.get_by_test_id("chat-input").fill("My order number is 4411 and")
    await dana.reload()
    await expect(dana.get_by_test_id("chat-status")).to_have_text("Connected")
    await expect(dana.get_by_test_id("chat-input")).to_have_value("My order number is 4411 and")
    await say(dana, "My order number is 4411 and it is late")
    await dana.reload()
    await expect(dana.get_by_test_id("chat-status")).to_have_text("Connected")
    await expect(dana.get_by_test_id("chat-input")).to_have_value("")  # sent: no draft left


async def test_the_details_form_leaves_the_message_box_in_view_on_a_phone(
    web: Web, server: ServerProcess
) -> None:
    dana = await customer_chat(web)
    await dana.set_viewport_size({"width": 390, "height": 844})
    await dana.get_by_test_id("chat-details-toggle").click()
    await expect(dana.get_by_test_id("chat-name")).to_be_visible()
    widget = await dana.get_by_test_id("chat-widget").bounding_box()
    send = await dana.get_by_test_id("chat-send").bounding_box()
    assert widget is not None and send is not None
    assert send["y"] + send["height"] <= widget["y"] + widget["height"], (send, widget)
    await dana.get_by_test_id("chat-identify").scroll_into_view_if_needed()
    await expect(dana.get_by_test_id("chat-identify")).to_be_in_viewport()


async def test_a_page_naming_no_workspace_of_ours_takes_no_message(
    web: Web, server: ServerProcess
) -> None:
    page = await web.page("/chat?workspace=nope")
    await expect(page.get_by_test_id("chat-status")).to_have_text("Chat is not available.")
    await expect(page.get_by_test_id("chat-unavailable")).to_be_visible()
    await expect(page.get_by_test_id("chat-input")).to_be_disabled()
    await expect(page.get_by_test_id("chat-send")).to_be_disabled()
    await expect(page.get_by_test_id("chat-waiting")).to_be_hidden()
    await expect(page.get_by_test_id("chat-details")).to_be_hidden()
