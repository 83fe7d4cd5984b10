"""A chat visitor who closes the page without ending the chat: the agent holding the case is told
(``case.updated`` ``visitor.left``) once no widget has had the case open for the visitor grace,
and told again when the visitor is back (``visitor.back``); a reload within the grace says
nothing. The console shows it in the case's header, across a reload of the console.

A real ``switchboard serve`` with a short grace (``SWITCHBOARD_VISITOR_GRACE_S``), real sockets,
and for the console headless Chromium (tests/test_console.py's harness). Every wait is a
condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect
from redis.asyncio import Redis

from router import keys
from tests import test_console
from tests.server import ServerProcess, write_config
from tests.test_console import PASSWORDS, WORKSPACE, Web, customer_chat, panel, say, shoot
from tests.util import wait_for
from tests.ws_client import WsClient, connect_agent, connect_chat

# test_console's fixtures, for the tests here: a browser per module, people per test; the
# server is this module's own (below), with a short visitor grace
chromium = test_console.chromium
browser = test_console.browser
web = test_console.web

GRACE_S = 2.0  # long enough for a reconnect over loopback, short enough to wait for
LEFT = "Visitor left the page"


@pytest.fixture
def server(tmp_path: Path, redis: Redis, redis_server: str) -> Iterator[ServerProcess]:
    s = ServerProcess(
        tmp_path / "data",
        write_config(tmp_path / "acme.json", WORKSPACE),
        redis_url=redis_server,  # the test's, to see the count of the visitor's widgets
        env={"SWITCHBOARD_VISITOR_GRACE_S": str(GRACE_S)},
    )
    try:
        yield s
    finally:
        s.stop()


async def sam_console(server: ServerProcess) -> WsClient:
    login: dict[str, Any] = await asyncio.to_thread(server.login, "sam", PASSWORDS["sam"])
    sam = await connect_agent(server.ws_url, login["ws_token"])
    await sam.expect("hello")
    return sam


def events(client: WsClient, case: str) -> list[str]:
    """The ``case.updated`` events the console has received for the case, in order."""
    return [
        f["event"]
        for f in client.seen
        if f["type"] == "case.updated" and f["case"] == case and f["event"].startswith("visitor.")
    ]


def shown(hello: dict[str, Any], case: str) -> dict[str, Any]:
    """The case as a console's ``hello`` shows it."""
    view: dict[str, Any]
    (view,) = [d["case"] for d in hello["cases"] if d["case"]["id"] == case]
    return view


async def test_the_agent_hears_once_that_the_visitor_left_and_that_they_came_back(
    server: ServerProcess,
) -> None:
    visitor = await connect_chat(server.ws_url, workspace="acme")
    token = (await visitor.expect("welcome"))["token"]
    case = (await visitor.ok("message", text="Where is my parcel?"))["case"]
    async with await sam_console(server) as sam:
        await sam.ok("status", status="available")
        await sam.ok("offer.accept", offer=(await sam.offer_for(case))["offer"])
        await visitor.close()  # the tab closed: no end
        left = await sam.expect(
            "case.updated", case=case, event="visitor.left", within=10 + GRACE_S
        )
        assert isinstance(left["visitor_left"], int) and left["visitor_left"] > 0
        await sam.ok("ping")
        assert events(sam, case) == ["visitor.left"]

    # a console that signs in again sees it in the case (hello); the visitor comes back
    async with await sam_console(server) as sam:
        assert shown(sam.seen[0], case)["visitor_left"] == left["visitor_left"]
        back = await connect_chat(server.ws_url, token=token)
        assert (await back.expect("welcome"))["case"] == case
        await sam.expect("case.updated", case=case, event="visitor.back")
        assert events(sam, case) == ["visitor.back"]

    async with await sam_console(server) as sam:
        assert "visitor_left" not in shown(sam.seen[0], case)
        await back.close()  # and leaves again: told again, once
        await sam.expect("case.updated", case=case, event="visitor.left", within=10 + GRACE_S)
        await sam.ok("ping")
        assert events(sam, case) == ["visitor.left"]


async def test_a_visitor_who_ended_the_chat_and_then_left_is_not_said_to_have_left(
    server: ServerProcess, redis: Redis
) -> None:
    ended = await connect_chat(server.ws_url, workspace="acme")
    await ended.expect("welcome")
    case = (await ended.ok("message", text="Thanks, that is all"))["case"]
    other = await connect_chat(server.ws_url, workspace="acme")
    await other.expect("welcome")
    witness = (await other.ok("message", text="Still there?"))["case"]
    async with await sam_console(server) as sam:
        await sam.ok("status", status="available")
        for c in (case, witness):
            await sam.ok("offer.accept", offer=(await sam.offer_for(c))["offer"])
        await ended.ok("end", case=case)
        await sam.expect("case.updated", case=case, event="conversation.ended")
        await ended.close()

        async def counted_out() -> bool:  # the ended chat's grace runs from here
            return await widgets(redis, case) == 0

        await wait_for(counted_out, message="the close is not counted")
        # the witness leaves after it, without ending: when the agent hears of that, the
        # ended chat's grace has run out as well
        await other.close()
        await sam.expect("case.updated", case=witness, event="visitor.left", within=10 + GRACE_S)
        await sam.ok("ping")
        assert events(sam, case) == []
        assert await redis.hget(keys.case("acme", case), "vleft") is None


async def widgets(redis: Redis, case: str) -> int:
    """How many widget connections the server counts on the case."""
    return int(await redis.hget(keys.case("acme", case), "wv") or 0)


async def test_a_reload_within_the_grace_tells_the_agent_nothing(
    server: ServerProcess, redis: Redis
) -> None:
    visitor = await connect_chat(server.ws_url, workspace="acme")
    token = (await visitor.expect("welcome"))["token"]
    case = (await visitor.ok("message", text="hello"))["case"]
    async with await sam_console(server) as sam:
        await sam.ok("status", status="available")
        await sam.ok("offer.accept", offer=(await sam.offer_for(case))["offer"])

        # a reload: the page's connection closes and the new page's opens at once; a second
        # tab of the visitor's opens and closes meanwhile
        assert await widgets(redis, case) == 1
        await visitor.close()

        async def counted_out() -> bool:  # the server has seen the close: its grace runs
            return await widgets(redis, case) == 0

        await wait_for(counted_out, message="the close is not counted")
        reloaded = await connect_chat(server.ws_url, token=token)
        assert (await reloaded.expect("welcome"))["case"] == case
        async with await connect_chat(server.ws_url, token=token) as tab:
            await tab.expect("welcome")
            assert await widgets(redis, case) == 2

        # then the visitor goes: told once, and nothing before (a visitor.left for the reload
        # would have been followed by a visitor.back sent before the reload's welcome; the
        # ping's answer comes after every frame sent before it)
        await reloaded.close()
        await sam.expect("case.updated", case=case, event="visitor.left", within=10 + GRACE_S)
        await sam.ok("ping")
        assert events(sam, case) == ["visitor.left"]


async def test_an_unanswered_chat_whose_visitor_left_is_abandoned_not_offered(
    server: ServerProcess, redis: Redis
) -> None:
    # nobody is available: the chat waits; a reload within the grace keeps it
    visitor = await connect_chat(server.ws_url, workspace="acme")
    token = (await visitor.expect("welcome"))["token"]
    case = (await visitor.ok("message", text="Anyone there?"))["case"]
    await visitor.close()

    async def counted_out() -> bool:
        return await widgets(redis, case) == 0

    await wait_for(counted_out, message="the close is not counted")
    reloaded = await connect_chat(server.ws_url, token=token)
    assert (await reloaded.expect("welcome"))["case"] == case

    async def status() -> bytes | None:
        st: bytes | None = await redis.hget(keys.case("acme", case), "st")
        return st

    # then the visitor goes for good: the chat is abandoned, as a caller who hangs up is
    await reloaded.close()
    await wait_for(
        lambda: _is(status(), b"abandoned"), timeout=10 + GRACE_S, message="not abandoned"
    )
    assert await redis.hget(keys.case("acme", case), "reason") == b"conversation.ended"
    async with await sam_console(server) as sam:  # and no agent is handed it
        await sam.ok("status", status="available")
        await sam.ok("ping")
        assert not [f for f in sam.seen if f["type"] == "offer"]


async def _is(value: Any, want: object) -> bool:
    return bool(await value == want)


@pytest.mark.browser
async def test_the_console_shows_the_visitor_left_across_a_reload_until_they_are_back(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    visitor = await customer_chat(web)
    await say(visitor, "Is my order shipped?")
    await sam.get_by_test_id("offer-accept").click()
    notice = panel(sam).get_by_test_id("case-visitor-left")
    await expect(panel(sam).get_by_test_id("case-customer")).to_be_visible()
    await expect(notice).to_have_count(0)

    widget = visitor.context
    await visitor.close()  # the tab, not the chat: the visitor's storage stays
    await expect(notice).to_contain_text(LEFT, timeout=(10 + GRACE_S) * 1000)
    await expect(notice).to_have_text(re.compile(rf"^{LEFT} · .*\d:\d\d"))  # and when
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)
    await shoot(sam, "visitor-left.png", top=True)

    await sam.reload()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(notice).to_contain_text(LEFT)

    again = await widget.new_page()
    await again.goto("/chat?workspace=acme")
    await expect(again.get_by_test_id("chat-status")).to_have_text("Connected")
    await expect(again.get_by_test_id("chat-messages")).to_contain_text("Is my order shipped?")
    await expect(notice).to_have_count(0)
    await expect(panel(sam).get_by_test_id("case-customer")).to_be_visible()


@pytest.mark.browser
async def test_a_visitor_back_after_their_unanswered_chat_was_closed_is_not_told_to_wait(
    web: Web, server: ServerProcess, redis: Redis
) -> None:
    """Nobody answered, the visitor closed the page and came back after the grace: the chat was
    abandoned, so the widget says so instead of "you're in the queue"; writing again starts a
    new chat, which waits in the queue."""
    page = await customer_chat(web)
    await say(page, "Do you ship to Norway?")
    await expect(page.get_by_test_id("chat-waiting")).to_contain_text("keep this page open")
    case = str(await wait_for(lambda: _chat_case(page), message="no case"))
    context = page.context
    await page.close()
    await wait_for(
        lambda: _is(redis.hget(keys.case("acme", case), "st"), b"abandoned"),
        timeout=10 + GRACE_S, message="not abandoned",
    )  # fmt: skip
    back = await context.new_page()  # the same browser: the widget knows its visitor
    await back.goto("/chat?workspace=acme")
    await expect(back.get_by_test_id("chat-status")).to_have_text("Connected")
    await expect(back.get_by_test_id("chat-system")).to_have_text(
        "This chat was closed because you left before anyone could answer. "
        "Write again to start a new one."
    )
    await expect(back.get_by_test_id("chat-waiting")).to_be_hidden()
    await shoot(back, "chat-abandoned-back.png")
    await say(back, "Hello again: do you ship to Norway?")
    await expect(back.get_by_test_id("chat-waiting")).to_be_visible()
    assert await redis.hget(keys.case("acme", case), "st") == b"abandoned"


async def _chat_case(page: Any) -> str | None:
    stored = await page.evaluate("() => localStorage.getItem('switchboard.chat.acme')")
    case = json.loads(stored or "{}").get("case") if stored else None
    return case or None
