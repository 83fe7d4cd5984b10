"""Exploratory QA, round 11: details a chat visitor types while their chat is offered to an agent.

The agent who *holds* a chat was sent the case again when its visitor gave their name or email
(``case.refresh``, round 10); the agent it was only *offered* to kept seeing "a web chat visitor"
on the offer card until a reload. Now that agent's console is sent the customer as they are now
(``offer.updated``): the card reads the name, with the claimed email marked as not verified, and
accepting opens the case with them. A visitor who identifies while the chat is still queued is
offered with their details.

Browser tests use tests/test_console.py's harness (a real ``switchboard serve`` and headless
Chromium); protocol tests speak to the same server over real sockets. Every wait is a condition
with a deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import expect

from tests import test_console
from tests.server import ServerProcess
from tests.test_console import PASSWORDS, Web, customer_chat, panel, say, shoot
from tests.ws_client import WsClient, connect_agent, connect_chat

# test_console's fixtures, for the tests here: a browser per module, a server and people per test
chromium = test_console.chromium
browser = test_console.browser
server = test_console.server
web = test_console.web

browser_test = pytest.mark.browser


async def sam_console(server: ServerProcess) -> WsClient:
    login: dict[str, Any] = await asyncio.to_thread(server.login, "sam", PASSWORDS["sam"])
    sam = await connect_agent(server.ws_url, login["ws_token"])
    await sam.expect("hello")
    return sam


# -- over real sockets ---------------------------------------------------------------------------


async def test_details_given_while_offered_reach_the_offered_agents_console(
    server: ServerProcess,
) -> None:
    async with await connect_chat(server.ws_url, workspace="acme") as visitor:
        welcome = await visitor.expect("welcome")
        case = (await visitor.ok("message", text="Is my order shipped?"))["case"]
        async with await sam_console(server) as sam:
            await sam.ok("status", status="available")
            offer = await sam.offer_for(case)
            assert offer["customer"]["name"] == "" and offer["customer"]["claims"] == []

            # refused input changes nothing and tells nobody, as before
            await visitor.fails("identify", "frame.invalid", name="x" * 201)
            await visitor.fails("identify", "event.invalid", email="not an address")

            await visitor.ok("identify", name="Ada Byron\u202e", email="Ada@Example.com")
            updated = await sam.expect("offer.updated", offer=offer["offer"])
            assert updated["case"] == case
            customer = updated["customer"]
            assert customer["id"] == offer["customer"]["id"]
            assert customer["name"] == "Ada Byron"  # cleaned as ingest cleans it
            assert customer["claims"] == ["email:ada@example.com"]  # a claim, not an identity
            assert not [i for i in customer["identities"] if not i.startswith("visitor:")]

            # a widget that reconnects says the same again: nothing new, nothing sent
            async with await connect_chat(server.ws_url, token=welcome["token"]) as back:
                await back.expect("welcome")
                await back.ok("identify", name="Ada Byron", email="ada@example.com")
                await back.ok("message", text="still there?")
            await sam.expect("case.message", case=case)
            assert [f for f in sam.seen if f["type"] == "offer.updated"] == [updated]
            assert not [f for f in sam.seen if f["type"] == "case.refresh"]  # no case of his yet

            # accepted, the case is hers; a reconnecting console's hello says so too
            await sam.ok("offer.accept", offer=offer["offer"])
        async with await sam_console(server) as again:
            (hello,) = [f for f in again.seen if f["type"] == "hello"]
            (held,) = [d for d in hello["cases"] if d["case"]["id"] == case]
            assert held["customer"]["name"] == "Ada Byron"
            assert held["customer"]["claims"] == ["email:ada@example.com"]


async def test_details_given_while_queued_come_with_the_later_offer(
    server: ServerProcess,
) -> None:
    async with await connect_chat(server.ws_url, workspace="acme") as visitor:
        await visitor.expect("welcome")
        case = (await visitor.ok("message", text="Hello?"))["case"]  # nobody available: queued
        await visitor.ok("identify", name="Grace Hopper", phone="+14155550123")
        async with await sam_console(server) as sam:
            await sam.ok("status", status="available")
            offer = await sam.offer_for(case)
            assert offer["customer"]["name"] == "Grace Hopper"
            assert offer["customer"]["claims"] == ["phone:+14155550123"]
            # nothing to refresh: the offer was made after the details
            assert not [f for f in sam.seen if f["type"] in ("offer.updated", "case.refresh")]


# -- in the console ------------------------------------------------------------------------------


@browser_test
async def test_offer_card_shows_details_typed_while_offered_and_the_case_opens_with_them(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    ada = await customer_chat(web)  # anonymous at first
    await say(ada, "Is my order shipped?")
    offer = sam.get_by_test_id("offer")
    who = offer.get_by_test_id("offer-customer")
    await expect(who).to_have_text("Chat from a web chat visitor")
    await expect(offer.get_by_test_id("offer-claims")).to_be_hidden()
    await sam.evaluate("window.__sameConsole = true")  # gone, should the page reload

    await ada.get_by_test_id("chat-details-toggle").click()
    await ada.get_by_test_id("chat-name").fill("Ada Byron")
    await ada.get_by_test_id("chat-email").fill("ada@example.com")
    await ada.get_by_test_id("chat-identify").click()
    await expect(ada.get_by_test_id("chat-details-toggle")).to_have_text("Your details · saved")

    await expect(who).to_have_text("Chat from Ada Byron · not verified")  # no reload
    await expect(offer.get_by_test_id("offer-claims")).to_have_text("Says: ada@example.com")
    await expect(sam.get_by_test_id("announcer")).to_contain_text(
        "Offer updated: Chat from Ada Byron · not verified."
    )
    assert await sam.evaluate("window.__sameConsole === true")
    await shoot(sam, "offer-details-updated.png")

    await offer.get_by_test_id("offer-accept").click()
    await expect(panel(sam).get_by_test_id("case-customer")).to_have_text("Ada Byron")
    await expect(sam.get_by_test_id("case-tab")).to_contain_text("Ada Byron")
    await expect(panel(sam).get_by_test_id("case-claims")).to_have_text(
        "Says: ada@example.com · not verified"
    )
    assert await sam.evaluate("window.__sameConsole === true")
    # what she wrote before she gave her name is hers too, not "Customer"'s
    await say(ada, "It was order 7.")
    lines = panel(sam).get_by_test_id("timeline-entry").filter(has_text="order")
    await expect(lines.locator(".tl-who")).to_have_text(["Ada Byron", "Ada Byron"])
