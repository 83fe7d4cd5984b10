"""Exploratory QA, round 10: the chat widget's *End chat* while its connection is down, and the
details a visitor types reaching the agent who has the chat open.

*End chat* pressed offline used to be dropped (the widget said the chat had ended, the agent
kept waiting); now it waits in the widget's outbox, survives a reload, is delivered once when
the widget is back, and ends only the conversation it was pressed in. Details typed in the
widget used to reach an open case's console only on a reload; now the agent's console is sent
the case again (``case.refresh``).

Browser tests use tests/test_console.py's harness (a real ``switchboard serve`` and headless
Chromium); the widget's network is cut with Playwright's WebSocket routing. Protocol tests speak
to the same server over real sockets. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, WebSocketRoute, expect

from tests import test_console
from tests.server import ServerProcess
from tests.test_console import PASSWORDS, Web, customer_chat, panel, say
from tests.ws_client import WsClient, connect_agent, connect_chat

# test_console's fixtures, for the tests here: a browser per module, a server and people per test
chromium = test_console.chromium
browser = test_console.browser
server = test_console.server
web = test_console.web

browser_test = pytest.mark.browser
LEFT = "Customer ended the chat"  # how the agent's timeline shows the visitor's end
BACK = 30_000  # ms: the widget's reconnect backoff (jittered) plus its welcome


class Line:
    """The widget page's network: ``cut`` drops its chat connection and refuses new ones (as a
    dead network does) until ``mend``."""

    def __init__(self) -> None:
        self.down = False
        self.sockets: list[WebSocketRoute] = []

    async def route(self, ws: WebSocketRoute) -> None:
        if self.down:
            await ws.close(code=1011, reason="network down")
            return
        ws.connect_to_server()
        self.sockets.append(ws)

    async def cut(self) -> None:
        self.down = True
        for ws in self.sockets:
            with contextlib.suppress(PlaywrightError):  # one that closed by itself
                await ws.close(code=1011, reason="network down")
        self.sockets.clear()

    def mend(self) -> None:
        self.down = False


async def widget(web: Web, line: Line) -> Page:
    """A visitor on the widget demo page, their connection going through ``line``."""
    page = await web.page("about:blank")
    await page.route_web_socket(re.compile(r"/ws/chat"), line.route)
    await page.goto("/chat?workspace=acme")
    await expect(page.get_by_test_id("chat-status")).to_have_text("Connected")
    return page


async def chat_with_sam(web: Web, line: Line) -> tuple[Page, Page, str]:
    """Sam (available) and a visitor whose chat he accepted; the case id."""
    sam = await web.agent("sam")
    visitor = await widget(web, line)
    await say(visitor, "Where is my parcel?")
    offer = sam.get_by_test_id("offer")
    case = await offer.get_attribute("data-case")
    assert case
    await offer.get_by_test_id("offer-accept").click()
    await expect(visitor.get_by_test_id("chat-system")).to_have_text("Sam Support joined the chat")
    return sam, visitor, case


async def go_offline_and_end(visitor: Page, line: Line) -> None:
    await line.cut()
    await expect(visitor.get_by_test_id("chat-status")).to_contain_text("Reconnecting")
    await visitor.get_by_test_id("chat-end").click()
    # it says what is happening rather than pretending the chat has ended
    await expect(visitor.get_by_test_id("chat-ending")).to_have_text(
        "Ending the chat as soon as you're back online — or, if you close this page,"
        " the next time you open it."
    )
    await expect(visitor.get_by_test_id("chat-ended")).to_have_count(0)
    await expect(visitor.get_by_test_id("chat-end")).to_be_disabled()


# -- 1: End chat while the connection is down ----------------------------------------------------


@browser_test
async def test_end_chat_pressed_offline_ends_the_chat_once_when_back_even_after_a_reload(
    web: Web, server: ServerProcess
) -> None:
    line = Line()
    sam, visitor, _ = await chat_with_sam(web, line)
    left = panel(sam).get_by_test_id("timeline-entry").filter(has_text=LEFT)

    await go_offline_and_end(visitor, line)
    await visitor.reload()  # still offline: the end waits in the widget's storage
    await expect(visitor.get_by_test_id("chat-status")).to_contain_text("Reconnecting")
    await expect(visitor.get_by_test_id("chat-ending")).to_be_visible()
    await expect(left).to_have_count(0)

    line.mend()
    await expect(visitor.get_by_test_id("chat-ended")).to_have_text(
        "You ended the chat. Write again any time.", timeout=BACK
    )
    await expect(visitor.get_by_test_id("chat-ending")).to_have_count(0)
    await expect(visitor.get_by_test_id("chat-end")).to_be_enabled()
    await expect(left).to_have_count(1)  # Sam hears it

    # delivered once: a reload does not send it again (it would go before the next message),
    # and the widget still says the chat ended rather than showing it as going on
    await visitor.reload()
    await expect(visitor.get_by_test_id("chat-status")).to_have_text("Connected")
    await expect(visitor.get_by_test_id("chat-ended")).to_be_visible()
    await expect(visitor.get_by_test_id("chat-message")).to_have_count(0)
    await say(visitor, "Sorry, one more thing")
    await expect(panel(sam).get_by_test_id("timeline")).to_contain_text("Sorry, one more thing")
    await expect(left).to_have_count(1)
    await expect(visitor.get_by_test_id("chat-waiting")).to_be_hidden()  # Sam still has it


@browser_test
async def test_an_end_that_waited_does_not_end_the_conversation_taken_up_again(
    web: Web, server: ServerProcess
) -> None:
    """While the widget is cut off with its end waiting, Sam closes the case and the visitor
    takes it up again over another connection: the end was for the conversation that is over,
    and must not end the one going on now (the same case, reopened)."""
    line = Line()
    sam, visitor, case = await chat_with_sam(web, line)
    token = await visitor.evaluate(
        "() => JSON.parse(localStorage.getItem('switchboard.chat.acme')).token"
    )
    await go_offline_and_end(visitor, line)

    await panel(sam).get_by_test_id("wrapup").click()
    await panel(sam).get_by_test_id("disposition-select").select_option("resolved")
    await panel(sam).get_by_test_id("complete").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    async with await connect_chat(server.ws_url, token=token) as elsewhere:
        await elsewhere.expect("welcome")
        again = await elsewhere.ok("message", text="Back again: it arrived damaged")
    assert again["case"] == case  # reopened
    await sam.get_by_test_id("offer-accept").click()
    await expect(panel(sam).get_by_test_id("timeline")).to_contain_text("arrived damaged")

    line.mend()
    await expect(visitor.get_by_test_id("chat-status")).to_have_text("Connected", timeout=BACK)
    await expect(visitor.get_by_test_id("chat-ending")).to_have_count(0)
    await expect(visitor.get_by_test_id("chat-ended")).to_have_count(0)
    await expect(visitor.get_by_test_id("chat-messages")).to_contain_text("arrived damaged")
    await say(visitor, "Can you send a new one?")  # an end still on its way would go first
    await expect(panel(sam).get_by_test_id("timeline")).to_contain_text("send a new one")
    await expect(panel(sam).get_by_test_id("timeline-entry").filter(has_text=LEFT)).to_have_count(0)


async def test_an_end_ends_the_case_it_names_once_and_no_later_one(server: ServerProcess) -> None:
    async with await connect_chat(server.ws_url, workspace="acme") as visitor:
        await visitor.expect("welcome")
        first = (await visitor.ok("message", text="anyone there?", id="m-1"))["case"]
        gone = await visitor.ok("end", id="e-1", case=first)  # nobody took it yet: abandoned
        assert gone["case"] == first
        later = (await visitor.ok("message", text="back again", id="m-2"))["case"]
        assert later != first

        # an end that waited for the first conversation (a widget that was offline) ends nothing
        stale = await visitor.ok("end", id="e-late", case=first)
        assert "case" not in stale

        async with await sam_console(server) as sam:
            await sam.ok("status", status="available")  # the later case still waits for him
            await sam.ok("offer.accept", offer=(await sam.offer_for(later))["offer"])
            done = await visitor.ok("end", id="e-2", case=later)
            assert (done["case"], done["duplicate"]) == (later, False)
            resent = await visitor.ok("end", id="e-2", case=later)  # its ack was lost
            assert (resent["case"], resent["duplicate"]) == (later, True)
            await visitor.ok("message", text="one more thing", id="m-3")
            await sam.expect("case.message", case=later)
            ended = [f for f in sam.seen if f["type"] == "case.updated"]
            assert [(f["case"], f["event"]) for f in ended] == [(later, "conversation.ended")]
            await visitor.fails("end", "frame.invalid", case=7)


# -- 2: details typed in the widget reach the open case ------------------------------------------


async def sam_console(server: ServerProcess) -> WsClient:
    login: dict[str, Any] = await asyncio.to_thread(server.login, "sam", PASSWORDS["sam"])
    sam = await connect_agent(server.ws_url, login["ws_token"])
    await sam.expect("hello")
    return sam


@browser_test
async def test_details_typed_in_the_widget_show_on_the_agents_open_case_at_once(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    ada = await customer_chat(web)  # anonymous at first
    await say(ada, "Is my order shipped?")
    await sam.get_by_test_id("offer-accept").click()
    header = panel(sam).get_by_test_id("case-customer")
    await expect(header).not_to_have_text("Ada Byron")
    await panel(sam).get_by_test_id("reply-input").fill("Let me check")  # a draft, kept

    await ada.get_by_test_id("chat-details-toggle").click()
    await ada.get_by_test_id("chat-name").fill("Ada Byron")
    await ada.get_by_test_id("chat-email").fill("ada@example.com")
    await ada.get_by_test_id("chat-identify").click()
    await expect(ada.get_by_test_id("chat-details-toggle")).to_have_text("Your details · saved")

    await expect(header).to_have_text("Ada Byron")  # no reload
    await expect(sam.get_by_test_id("case-tab")).to_contain_text("Ada Byron")
    await expect(panel(sam).get_by_test_id("case-claims")).to_have_text(
        "Says: ada@example.com · not verified"
    )
    await expect(panel(sam).get_by_test_id("reply-input")).to_have_value("Let me check")
    await expect(panel(sam).get_by_test_id("timeline-entry")).to_have_count(1)


async def test_identify_sends_the_agent_the_case_again_only_when_something_is_new(
    server: ServerProcess,
) -> None:
    async with await connect_chat(server.ws_url, workspace="acme") as visitor:
        welcome = await visitor.expect("welcome")
        case = (await visitor.ok("message", text="hello"))["case"]
        async with await sam_console(server) as sam:
            await sam.ok("status", status="available")
            await sam.ok("offer.accept", offer=(await sam.offer_for(case))["offer"])
            await visitor.ok("identify", name="Wanda\u202e", email="Wanda@Example.com")
            refresh = await sam.expect("case.refresh")
            assert refresh["case"]["id"] == case and refresh["case"]["status"] == "assigned"
            assert refresh["customer"]["name"] == "Wanda"  # cleaned as ingest cleans it
            assert refresh["customer"]["claims"] == ["email:wanda@example.com"]
            assert [e["text"] for e in refresh["timeline"]] == ["hello"]

            # a widget that reconnects says the same again: nothing new, nothing sent
            async with await connect_chat(server.ws_url, token=welcome["token"]) as back:
                await back.expect("welcome")
                await back.ok("identify", name="Wanda", email="wanda@example.com")
                await back.ok("message", text="still there?")
            await sam.expect("case.message", case=case)
            assert [f for f in sam.seen if f["type"] == "case.refresh"] == [refresh]
