"""The agent console, supervisor view and chat widget (web/) in a real browser.

Headless Chromium (Debian's ``chromium``) driven by Playwright's async API on the session event
loop, against a real ``switchboard serve`` with its embedded Redis (tests/server.py). Customers
arrive through the chat widget page and through a channel bridge on ``/ws/bridge``. Nothing
sleeps to synchronize: every wait is Playwright's auto-waiting ``expect`` or a frame with a
deadline.

Without chromium the tests are skipped locally and fail under CI (``CI`` set). Set
``SWITCHBOARD_SCREENSHOTS=docs/screenshots`` to refresh the screenshots in docs/console.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgpack
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    WebSocketRoute,
    async_playwright,
    expect,
)
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from router.chat_ws import identity_hash
from tests.server import BRIDGE_KEY, CHAT_IDENTITY_SECRET, ServerProcess, write_config

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = os.environ.get("SWITCHBOARD_SCREENSHOTS", "")
DEADLINE = 10.0
HOSTILE = [
    "<img src=x onerror=window.__pwned=1>",
    "<script>window.__pwned=1</script>",
    "javascript:alert(1)",
]

expect.set_options(timeout=10_000)

WORKSPACE: dict[str, Any] = {
    "id": "acme",
    "queues": [
        {"id": "support", "name": "Support", "target": "skills HAS 'support'", "sl_target_s": 60},
        {"id": "billing", "name": "Billing", "target": "skills HAS 'billing'", "sl_target_s": 120},
        # nobody takes it, and its target is a second: its cases are over target at once
        {"id": "urgent", "name": "Urgent", "target": "skills HAS 'urgent'", "sl_target_s": 1},
    ],
    "workflow": {
        "task_routing": {
            "filters": [
                {
                    "filter_friendly_name": "Billing",
                    "expression": "topic == 'billing'",
                    "targets": [{"queue": "billing"}],
                },
                {
                    "filter_friendly_name": "Urgent",
                    "expression": "topic == 'urgent'",
                    "targets": [{"queue": "urgent"}],
                },
            ],
            "default_filter": {"queue": "support"},
        }
    },
    "agents": [
        {
            "id": "sam",
            "name": "Sam Support",
            "password": "pw-sam",
            "attributes": {"skills": ["support"]},
            "capacity": {"chat": 2, "email": 2},
        },
        {
            "id": "bea",
            "name": "Bea Billing",
            "password": "pw-bea",
            "attributes": {"skills": ["billing"]},
            "capacity": {"chat": 1, "email": 1, "voice": 1},
        },
        {
            "id": "sue",
            "name": "Sue Supervisor",
            "password": "pw-sue",
            "role": "supervisor",
            "attributes": {"skills": []},
            "capacity": {},
        },
    ],
    "statuses": [{"name": "lunch"}],
    "dispositions": ["resolved", "escalated", "spam"],
    "canned": {"hello": "Hi! Thanks for getting in touch. I'm on it."},
}
PASSWORDS = {"sam": "pw-sam", "bea": "pw-bea", "sue": "pw-sue"}


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: CI must run the browser tests (.ci/run)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path / "data", write_config(tmp_path / "acme.json", WORKSPACE))
    try:
        yield s
    finally:
        s.stop()


class Web:
    """Browser contexts for one test (one per person), checked for page errors and CSP
    violations when the test ends: the pages must run under the server's strict CSP."""

    def __init__(self, browser: Browser, server: ServerProcess) -> None:
        self.browser, self.server = browser, server
        self.contexts: list[BrowserContext] = []
        self.problems: list[str] = []

    async def page(self, path: str) -> Page:
        ctx = await self.browser.new_context(
            base_url=self.server.url, viewport={"width": 1360, "height": 860}
        )
        self.contexts.append(ctx)
        page = await ctx.new_page()
        page.on("pageerror", lambda e: self.problems.append(f"{path}: {e}"))
        page.on(
            "console",
            lambda m: (
                self.problems.append(f"{path}: {m.text}")
                if "Content Security Policy" in m.text
                else None
            ),
        )
        await page.goto(path)
        return page

    async def agent(self, agent: str, *, status: str | None = "available") -> Page:
        page = await self.page("/")
        await sign_in(page, agent)
        if status:
            await set_status(page, status)
        return page

    async def close(self) -> None:
        for ctx in self.contexts:
            await ctx.close()


@contextlib.asynccontextmanager
async def browsing(browser: Browser, server: ServerProcess) -> AsyncIterator[Web]:
    """A test's browser contexts on ``server``: closed at the end, and no page may have had an
    error or a CSP violation."""
    w = Web(browser, server)
    try:
        yield w
    finally:
        await w.close()
    assert not w.problems, w.problems


@pytest_asyncio.fixture(loop_scope="session")
async def web(browser: Browser, server: ServerProcess) -> AsyncIterator[Web]:
    async with browsing(browser, server) as w:
        yield w


# -- people ---------------------------------------------------------------------------------------


async def sign_in(page: Page, agent: str, workspace: str = "acme") -> None:
    await page.get_by_test_id("login-workspace").fill(workspace)
    await page.get_by_test_id("login-agent").fill(agent)
    await page.get_by_test_id("login-password").fill(PASSWORDS[agent])
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("connection-state")).to_have_text("Live")


async def set_status(page: Page, status: str) -> None:
    select = page.get_by_test_id("status-select")
    await select.select_option(status)
    await expect(select).to_have_class(f"status-{status}")  # set once the server acked


def panel(page: Page) -> Any:
    """The open case's panel."""
    return page.locator("[data-testid=case-panel]:not([hidden])")


async def customer_chat(
    web: Web, *, name: str = "", email: str = "", phone: str = "", signed: bool = False
) -> Page:
    """A customer on the chat widget demo page, optionally leaving their details — or, with
    ``signed``, signed in on the site, which renders them with its identity hash (the demo page
    takes them from its URL)."""
    if signed:
        given = {k: v for k, v in (("email", email), ("phone", phone)) if v}
        query = urlencode(
            {"workspace": "acme", **given, "name": name,
             "identity_hash": identity_hash(CHAT_IDENTITY_SECRET, given)}
        )  # fmt: skip
        page = await web.page(f"/chat?{query}")
        await expect(page.get_by_test_id("chat-status")).to_have_text("Connected")
        await expect(page.get_by_test_id("chat-details")).to_be_hidden()
        return page
    page = await web.page("/chat?workspace=acme")
    await expect(page.get_by_test_id("chat-status")).to_have_text("Connected")
    if name or email or phone:
        await page.get_by_test_id("chat-details-toggle").click()
        await page.get_by_test_id("chat-name").fill(name)
        await page.get_by_test_id("chat-email").fill(email)
        await page.get_by_test_id("chat-phone").fill(phone)
        await page.get_by_test_id("chat-identify").click()
        await expect(page.get_by_test_id("chat-details-toggle")).to_have_text(
            "Your details · saved"
        )
    return page


async def say(customer: Page, text: str) -> None:
    await customer.get_by_test_id("chat-input").fill(text)
    await customer.get_by_test_id("chat-input").press("Enter")
    sent = customer.get_by_test_id("chat-message").filter(has_text=text)
    await expect(sent.last).not_to_have_class(re.compile("sbchat-pending"))


async def shoot(page: Page, name: str, *, top: bool = False) -> None:
    """Save a screenshot for docs/console.md when SWITCHBOARD_SCREENSHOTS names a folder."""
    if SCREENSHOTS:
        if top:
            await page.locator("main").evaluate("main => main.scrollTo(0, 0)")
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 -- a test helper
        dismiss = page.get_by_test_id("toast-dismiss")
        while await dismiss.count():
            await dismiss.first.click()
        await page.screenshot(path=str(Path(SCREENSHOTS) / name), animations="disabled")


# -- the channel bridge ---------------------------------------------------------------------------


class Bridge:
    """A channel bridge on /ws/bridge speaking msgpack, as an integration runs one: events in
    (acked once durable), deliveries out (answered ``delivered``)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.refs = itertools.count(1)
        self.acks: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.frames: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for data in self.ws:
            frame = msgpack.unpackb(data)
            ref = frame.get("ref")
            if frame["type"] in ("ack", "error") and ref in self.acks:
                self.acks.pop(ref).set_result(frame)
                continue
            if frame["type"] in ("deliver", "call.connect"):
                await self.ws.send(msgpack.packb({"type": "delivered", "id": frame["id"]}))
            self.frames.append(frame)
            self.arrived.set()

    async def event(self, **fields: Any) -> dict[str, Any]:
        ref = next(self.refs)
        self.acks[ref] = asyncio.get_running_loop().create_future()
        await self.ws.send(msgpack.packb({"type": "event", "ref": ref, **fields}))
        ack = await asyncio.wait_for(self.acks[ref], DEADLINE)
        assert ack["type"] == "ack", ack
        return ack

    async def next(self, ftype: str, **match: Any) -> dict[str, Any]:
        """The first frame of this type (and these field values) the bridge received."""
        async with asyncio.timeout(DEADLINE):
            while True:
                for f in self.frames:
                    if f["type"] == ftype and all(f.get(k) == v for k, v in match.items()):
                        self.frames.remove(f)
                        return f
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def bridge(server: ServerProcess) -> AsyncIterator[Bridge]:
    async with ws_connect(
        f"{server.ws_url}/ws/bridge",
        additional_headers={"Authorization": f"Bearer {BRIDGE_KEY}"},
        subprotocols=["switchboard.v1.msgpack"],  # type: ignore[list-item]
    ) as ws:
        b = Bridge(ws)
        try:
            yield b
        finally:
            b.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await b.reader


async def send_email(
    b: Bridge, *, sender: str, name: str, subject: str, text: str, topic: str = ""
) -> dict[str, Any]:
    """An inbound email. It arrives as a bridge event until the SMTP adapter is wired into
    these tests; this function is the only place that knows how email gets in."""
    return await b.event(
        id=f"mail-{secrets.token_hex(6)}",
        channel="email",
        identities={"email": sender},
        name=name,
        subject=subject,
        text=text,
        attributes={"topic": topic} if topic else {},
    )


async def place_call(b: Bridge, *, phone: str, name: str, topic: str = "") -> dict[str, Any]:
    """A voice call ringing at the voice platform, reported by its bridge."""
    return await b.event(
        id=f"call-{secrets.token_hex(6)}",
        channel="voice",
        kind="call.offered",
        identities={"phone": phone},
        name=name,
        thread=f"call-{secrets.token_hex(6)}",
        text="Incoming call",
        attributes={"topic": topic} if topic else {},
    )


# -- A: routing, history across channels, replies, wrap-up ----------------------------------------


async def test_offers_reach_the_right_agent_with_history_and_replies_flow_back(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")  # support: chat + email
    bea = await web.agent("bea")  # billing: chat (1), email (1), voice (1)
    # signed in on the shop's site: her email and phone link the chat to her emails and calls
    dana = await customer_chat(
        web, name="Dana Fox", email="dana@example.com", phone="+15550100777", signed=True
    )

    # a chat, no topic: the default route (Support) -> Sam
    await say(dana, "Hi, my parcel never arrived (order 4411).")
    await expect(dana.get_by_test_id("chat-waiting")).to_be_visible()
    offer = sam.get_by_test_id("offer")
    await expect(offer).to_have_count(1)
    await expect(offer.get_by_test_id("offer-channel")).to_have_text("Chat")
    await expect(offer.get_by_test_id("offer-customer")).to_contain_text("Dana Fox")
    await expect(offer.get_by_test_id("offer-subject")).to_contain_text("parcel never arrived")
    await expect(offer.get_by_test_id("offer-why")).to_contain_text("Support")
    await expect(offer.get_by_test_id("offer-countdown")).to_have_text(re.compile(r"^\d+ s$"))
    await expect(bea.get_by_test_id("offer")).to_have_count(0)

    await sam.keyboard.press("Alt+A")  # accept from the keyboard
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)
    await expect(dana.get_by_test_id("chat-system")).to_have_text("Sam Support joined the chat")
    await expect(dana.get_by_test_id("chat-waiting")).to_be_hidden()
    await expect(sam.get_by_test_id("offer")).to_have_count(0)
    await expect(panel(sam).get_by_test_id("timeline")).to_contain_text("parcel never arrived")
    await panel(sam).get_by_test_id("canned-select").select_option("hello")
    await expect(panel(sam).get_by_test_id("reply-input")).to_have_value(re.compile("I'm on it"))
    await panel(sam).get_by_test_id("reply-input").press("End")
    await panel(sam).get_by_test_id("reply-input").press_sequentially(" Checking the courier now.")
    await panel(sam).get_by_test_id("reply-input").press("Control+Enter")
    reply = dana.get_by_test_id("chat-message").filter(has_text="Checking the courier now.")
    await expect(reply).to_have_attribute("data-dir", "out")
    await expect(reply).to_contain_text("Sam Support")
    await expect(dana.get_by_test_id("chat-waiting")).to_be_hidden()
    await say(dana, "Thanks! It was a birthday present.")  # live into Sam's open case
    await expect(panel(sam).get_by_test_id("timeline")).to_contain_text("birthday present")
    await shoot(dana, "chat.png")

    async with bridge(server) as b:
        # an email from the same customer about billing -> Bea, with the chat in its history
        await send_email(
            b,
            sender="dana@example.com",
            name="Dana Fox",
            subject="Refund for order 4411",
            text="Hello,\nplease refund the missing parcel.\nDana",
            topic="billing",
        )
        offer = bea.get_by_test_id("offer")
        await expect(offer.get_by_test_id("offer-channel")).to_have_text("Email")
        await expect(offer.get_by_test_id("offer-subject")).to_have_text("Refund for order 4411")
        await expect(offer.get_by_test_id("offer-why")).to_contain_text("Billing")
        await expect(sam.get_by_test_id("offer")).to_have_count(0)
        await offer.get_by_test_id("offer-accept").click()
        timeline = panel(bea).get_by_test_id("timeline")
        await expect(timeline).to_contain_text("please refund the missing parcel")
        await expect(timeline).to_contain_text("parcel never arrived")  # the earlier chat
        await expect(timeline).to_contain_text("Checking the courier now.")
        await expect(timeline).to_contain_text("Earlier case")
        chat_entries = timeline.locator("[data-testid=timeline-entry][data-channel=chat]")
        await expect(chat_entries).to_have_count(3)
        await panel(bea).get_by_test_id("reply-input").fill("Refund issued: 42.00 EUR.")
        await panel(bea).get_by_test_id("reply-send").click()
        await expect(timeline).to_contain_text("Refund issued")
        mail = await b.next("deliver", channel="email")
        assert mail["text"] == "Refund issued: 42.00 EUR."
        assert "email:dana@example.com" in mail["identities"]
        assert mail["from"] == "Bea Billing"
        # the bridge answered "delivered": Bea sees it on her reply, live
        refund = timeline.get_by_test_id("timeline-entry").filter(has_text="Refund issued")
        await expect(refund.get_by_test_id("timeline-delivered")).to_have_text("✓ Delivered")

        # a call from her phone -> Bea again (voice capacity is separate from email)
        call = await place_call(b, phone="+15550100777", name="Dana Fox", topic="billing")
        offer = bea.get_by_test_id("offer")
        await expect(offer.get_by_test_id("offer-channel")).to_have_text("Call")
        await expect(offer.get_by_test_id("offer-customer")).to_contain_text("Dana Fox")
        await expect(bea.get_by_test_id("load-email")).to_have_text("Email 1/1")
        await shoot(bea, "console.png")
        await offer.focus()
        await offer.press("a")  # "A" accepts the focused offer
        await expect(bea.get_by_test_id("case-tab")).to_have_count(2)
        await expect(panel(bea).get_by_test_id("timeline")).to_contain_text("Refund issued")
        connect = await b.next("call.connect", case=call["case"])
        assert connect["agent"] == "bea"

        # Bea's one email slot is taken: a second billing email waits for her...
        await send_email(
            b,
            sender="olaf@example.com",
            name="Olaf Berg",
            subject="Invoice question",
            text="Why two invoices?",
            topic="billing",
        )
        await expect(bea.get_by_test_id("offer")).to_have_count(0)
        # ...until she wraps up and completes the email case, which frees the slot
        await bea.get_by_test_id("case-tab").filter(has_text="Email").click()
        await panel(bea).get_by_test_id("wrapup").click()
        await panel(bea).get_by_test_id("disposition-select").select_option("resolved")
        await panel(bea).get_by_test_id("wrapup-note").fill("Refunded the lost parcel.")
        await panel(bea).get_by_test_id("complete").click()
        await expect(bea.get_by_test_id("case-tab")).to_have_count(1)
        offer = bea.get_by_test_id("offer")
        await expect(offer.get_by_test_id("offer-subject")).to_have_text("Invoice question")
        await expect(offer.get_by_test_id("offer-customer")).to_contain_text("Olaf Berg")
        await bea.keyboard.press("Alt+R")
        await expect(bea.get_by_test_id("offer")).to_have_count(0)

    # Sam finishes the chat too: Dana is told, and Sam's reply box takes notes only
    await panel(sam).get_by_test_id("wrapup").click()
    await expect(dana.get_by_test_id("chat-system").last).to_have_text(
        "Sam Support closed the conversation. Write again any time."
    )
    await expect(panel(sam).get_by_test_id("notes-only")).to_have_text("Notes only in wrap-up")
    await expect(panel(sam).get_by_test_id("compose-mode-reply")).to_have_count(0)
    await expect(panel(sam).get_by_test_id("reply-send")).to_have_text("Add note")
    # Dana writes again before Sam completes: the conversation resumes, Sam may reply
    await say(dana, "One more thing: my invoice address changed.")
    await expect(panel(sam).get_by_test_id("compose-mode-reply")).to_have_count(1)
    await expect(panel(sam).get_by_test_id("timeline")).to_contain_text("invoice address changed")
    await panel(sam).get_by_test_id("reply-input").fill("Noted, Dana, thank you.")
    await panel(sam).get_by_test_id("reply-send").click()
    await expect(dana.get_by_test_id("chat-message").last).to_contain_text("Noted, Dana")
    await panel(sam).get_by_test_id("wrapup").click()
    await panel(sam).get_by_test_id("disposition-select").select_option("resolved")
    await panel(sam).get_by_test_id("complete").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    await expect(sam.get_by_test_id("no-cases")).to_be_visible()


async def test_transfer_to_a_colleague_picked_from_the_directory(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam")
    bea = await web.agent("bea")
    async with bridge(server) as b:
        await send_email(
            b, sender="kim@example.com", name="Kim Lee", subject="Charged for a return",
            text="I sent the parcel back but was charged again.",
        )  # fmt: skip
    await sam.get_by_test_id("offer-accept").click()  # support: Sam's
    await panel(sam).locator("label.seg", has_text="To an agent").click()
    # the picker lists colleagues who could take it: not Sam himself, not Sue (no capacity,
    # and signed out)
    options = panel(sam).locator("[data-testid=transfer-agents] option")
    await expect(options).to_have_count(1)
    await expect(options.first).to_have_attribute("value", "bea")
    await expect(options.first).to_have_attribute("label", "Bea Billing · available")
    await panel(sam).get_by_test_id("transfer-agent").fill("bea")
    await panel(sam).get_by_test_id("transfer-note").fill("A billing question after all.")
    await panel(sam).get_by_test_id("transfer-submit").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    offer = bea.get_by_test_id("offer")
    await expect(offer.get_by_test_id("offer-subject")).to_have_text("Charged for a return")
    # why it comes to her, from whom, before she accepts
    await expect(offer.get_by_test_id("offer-transfer")).to_have_text(
        "Transferred by Sam Support: “A billing question after all.”"
    )
    await offer.get_by_test_id("offer-accept").click()
    note = panel(bea).get_by_test_id("timeline-entry").filter(has_text="billing question after all")
    # who passed it on, and to whom, by name
    await expect(note.locator(".tl-who")).to_have_text("Sam Support")
    await expect(note).to_contain_text("Transferred to Bea Billing")


# -- B: the supervisor view -----------------------------------------------------------------------


async def test_supervisor_sees_queues_move_and_moves_cases_and_agents(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam", status=None)  # signed in, still offline
    sue = await web.page("/supervisor")
    await sign_in(sue, "sue")
    support = sue.locator("[data-testid=queue-row][data-queue=support]")
    billing = sue.locator("[data-testid=queue-row][data-queue=billing]")
    await expect(billing.get_by_test_id("queue-waiting")).to_have_text("0")
    await expect(sue.get_by_test_id("sl-formula")).to_contain_text("answered within target")

    async with bridge(server) as b:
        first = await send_email(
            b,
            sender="kim@example.com",
            name="Kim Lee",
            subject="Charged twice",
            text="I see two charges.",
            topic="billing",
        )
        await expect(billing.get_by_test_id("queue-waiting")).to_have_text("1")
        await expect(sue.get_by_test_id("total-waiting")).to_have_text("1")
        await send_email(
            b,
            sender="lou@example.com",
            name="Lou Park",
            subject="Change my card",
            text="New card details.",
            topic="billing",
        )
        await place_call(b, phone="+15550100999", name="Max Roy", topic="billing")
        await expect(billing.get_by_test_id("queue-waiting")).to_have_text("3")
        await expect(billing.get_by_test_id("queue-longest")).to_have_text(re.compile(r"\d+ s"))

    # move the oldest billing case to Support
    row = sue.locator(f"[data-testid=waiting-case][data-case={first['case']}]")
    await expect(row).to_contain_text("Charged twice")
    await row.get_by_test_id("waiting-case-move").click()
    await expect(sue.get_by_test_id("move-case-id")).to_have_value(first["case"])
    await sue.get_by_test_id("move-case-queue").select_option("support")
    await sue.get_by_test_id("move-case-submit").click()
    await expect(support.get_by_test_id("queue-waiting")).to_have_text("1")
    await expect(billing.get_by_test_id("queue-waiting")).to_have_text("2")

    # set Sam available from the supervisor view: he is offered the case and takes it
    sam_row = sue.locator("[data-testid=agent-row][data-agent=sam]")
    await expect(sam_row.locator("xpath=..")).to_have_attribute("data-status", "offline")
    await sam_row.get_by_test_id("agent-status").select_option("available")
    await expect(sam_row.locator("xpath=..")).to_have_attribute("data-status", "available")
    await expect(sam.get_by_test_id("status-changed")).to_contain_text("set by a supervisor")
    await expect(sam.get_by_test_id("status-select")).to_have_value("available")
    offer = sam.get_by_test_id("offer")
    await expect(offer.get_by_test_id("offer-subject")).to_have_text("Charged twice")
    await expect(support.get_by_test_id("queue-waiting")).to_have_text("0")
    await offer.get_by_test_id("offer-accept").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)
    await expect(sam_row.get_by_test_id("agent-load-email")).to_have_text("Email 1/2")
    await expect(support.get_by_test_id("queue-answered")).to_have_text("1")
    await expect(support.get_by_test_id("queue-sl")).to_contain_text("100%")
    await expect(support.get_by_test_id("queue-asa")).to_have_text(re.compile(r"^\d+ s$"))
    await expect(support.get_by_test_id("queue-aht")).to_have_text("—")  # none completed yet
    await expect(sam_row.get_by_test_id("agent-hour")).to_have_text("0 done")
    await shoot(sue, "supervisor.png", top=True)

    # Sam hands the case back to Billing with a note: it waits there again
    await panel(sam).get_by_test_id("transfer-queue").select_option("billing")
    await panel(sam).get_by_test_id("transfer-note").fill("Needs a billing specialist.")
    await panel(sam).get_by_test_id("transfer-submit").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(0)
    await expect(billing.get_by_test_id("queue-waiting")).to_have_text("3")
    await expect(sam_row.get_by_test_id("agent-load-email")).to_have_text("Email 0/2")

    # a case waiting past its queue's service-level target is flagged; the others are not
    async with bridge(server) as b:
        late = await send_email(
            b, sender="ned@example.com", name="Ned", subject="Anyone?", text="Hello?",
            topic="urgent",
        )  # fmt: skip
    flagged = sue.locator(f"[data-testid=waiting-case][data-case={late['case']}]")
    await expect(flagged.get_by_test_id("waiting-case-over-target")).to_have_text("over target")
    await expect(sue.get_by_test_id("waiting-case-over-target")).to_have_count(1)


async def test_supervisor_sees_who_handles_what(web: Web, server: ServerProcess) -> None:
    bea = await web.agent("bea")  # billing: chat (1), email (1), voice (1)
    sue = await web.page("/supervisor")
    await sign_in(sue, "sue")
    await expect(sue.get_by_test_id("progress-empty")).to_have_text(
        "Nobody is handling a case right now."
    )

    async with bridge(server) as b:
        mail = await send_email(
            b,
            sender="kim@example.com",
            name="Kim Lee",
            subject="Charged twice",
            text="I see two charges.",
            topic="billing",
        )
    row = sue.locator(f"[data-testid=progress-case][data-case={mail['case']}]")
    await expect(row.get_by_test_id("progress-case-state")).to_have_text("Offered")
    await expect(row.get_by_test_id("progress-case-agent")).to_have_text("Bea Billing")
    await bea.get_by_test_id("offer-accept").click()
    await expect(bea.get_by_test_id("case-tab")).to_have_count(1)

    # Bea has it: the supervisor sees who handles what, and for how long
    await expect(row.get_by_test_id("progress-case-state")).to_have_text("In progress")
    await expect(row).to_contain_text("Charged twice")
    await expect(row.get_by_test_id("progress-case-agent")).to_have_text("Bea Billing")
    await expect(row.get_by_test_id("progress-case-age")).to_have_text(re.compile(r"^\d+ s$"))
    await expect(sue.get_by_test_id("progress-case")).to_have_count(1)
    await expect(sue.get_by_test_id("progress-empty")).to_be_hidden()
    await expect(sue.get_by_test_id("waiting-case")).to_have_count(0)

    await panel(bea).get_by_test_id("wrapup").click()
    await expect(row.get_by_test_id("progress-case-state")).to_have_text("Wrapping up")
    await panel(bea).get_by_test_id("disposition-select").select_option("resolved")
    await panel(bea).get_by_test_id("complete").click()
    await expect(bea.get_by_test_id("case-tab")).to_have_count(0)
    await expect(row).to_have_count(0)
    await expect(sue.get_by_test_id("progress-empty")).to_be_visible()


# -- C: hostile customer text is only ever text ---------------------------------------------------


async def test_hostile_customer_text_is_rendered_as_text(web: Web, server: ServerProcess) -> None:
    sam = await web.agent("sam")
    eve = await customer_chat(web, name=HOSTILE[0])
    for text in HOSTILE:
        await say(eve, text)
    offer = sam.get_by_test_id("offer")
    await expect(offer.get_by_test_id("offer-customer")).to_contain_text(HOSTILE[0])
    await expect(offer.get_by_test_id("offer-subject")).to_have_text(HOSTILE[0])
    await offer.get_by_test_id("offer-accept").click()
    await expect(panel(sam).get_by_test_id("timeline-text")).to_have_text(HOSTILE)
    await expect(panel(sam).get_by_test_id("case-customer")).to_have_text(HOSTILE[0])

    # an email whose subject and sender name are hostile, too
    async with bridge(server) as b:
        await send_email(
            b, sender="eve@example.com", name=HOSTILE[2], subject=HOSTILE[1], text=HOSTILE[0]
        )
        offer = sam.get_by_test_id("offer")
        await expect(offer.get_by_test_id("offer-subject")).to_have_text(HOSTILE[1])
        await expect(offer.get_by_test_id("offer-customer")).to_contain_text(HOSTILE[2])

    # and the agent echoing it back is text in the customer's widget
    await panel(sam).get_by_test_id("reply-input").fill(HOSTILE[1])
    await panel(sam).get_by_test_id("reply-send").click()
    echoed = eve.locator("[data-testid=chat-message][data-dir=out]")
    await expect(echoed.get_by_test_id("chat-text")).to_have_text(HOSTILE[1])

    for page in (sam, eve):
        assert await page.evaluate("typeof window.__pwned") == "undefined"
        await expect(page.locator("img")).to_have_count(0)
        await expect(page.locator("script:not([src])")).to_have_count(0)
        await expect(page.locator('a[href^="javascript:"]')).to_have_count(0)
        await expect(page.locator("[onerror]")).to_have_count(0)


# -- D: a dropped connection comes back with the screen restored ----------------------------------


async def test_dropped_connection_reconnects_and_restores_from_hello(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.page("/")
    sockets: list[WebSocketRoute] = []
    cut = asyncio.Event()

    async def agent_socket(ws: WebSocketRoute) -> None:
        if cut.is_set():  # the network is down: every attempt fails at once
            await ws.close(code=1011, reason="network down")
            return
        ws.connect_to_server()
        sockets.append(ws)

    await sam.route_web_socket(re.compile(r"/ws/agent"), agent_socket)
    await sign_in(sam, "sam")
    await set_status(sam, "available")
    ada = await customer_chat(web, name="Ada Byron", email="ada@example.com")  # not signed in
    await say(ada, "Is my order shipped?")
    await sam.get_by_test_id("offer-accept").click()
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)
    claims = panel(sam).get_by_test_id("case-claims")  # what she typed, marked as such
    await expect(claims).to_have_text("Says: ada@example.com · not verified")
    await panel(sam).get_by_test_id("reply-input").fill("Yes, it left this morning.")
    await panel(sam).get_by_test_id("reply-send").click()
    await expect(
        ada.get_by_test_id("chat-message").filter(has_text="left this morning")
    ).to_be_visible()
    await expect(ada.get_by_test_id("chat-waiting")).to_be_hidden()

    cut.set()
    await sockets[-1].close(code=1011, reason="network down")
    banner = sam.get_by_test_id("connection-banner")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("Connection lost")
    await shoot(sam, "reconnecting.png")
    await expect(sam.get_by_test_id("connection-state")).not_to_have_text("Live")
    await say(ada, "Great, thanks! Sent while you were offline.")  # a push the console misses
    cut.clear()

    await expect(banner).to_be_hidden(timeout=20_000)  # backoff + jitter, then hello
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)
    await expect(panel(sam).get_by_test_id("timeline")).to_contain_text("while you were offline")
    assert len(sockets) >= 2

    # a reload keeps the agent signed in (session token in sessionStorage) and the case open
    await sam.reload()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(sam.get_by_test_id("case-tab")).to_have_count(1)
    await expect(panel(sam).get_by_test_id("reply-input")).to_be_visible()
    # ...and the customer's widget keeps the conversation across a reload
    await ada.reload()
    await expect(ada.get_by_test_id("chat-status")).to_have_text("Connected")
    await expect(ada.get_by_test_id("chat-message")).to_have_count(3)
    await expect(ada.get_by_test_id("chat-system")).to_have_text("Sam Support joined the chat")
    await expect(ada.get_by_test_id("chat-waiting")).to_be_hidden()


async def test_long_history_loads_older_pages(web: Web, server: ServerProcess) -> None:
    sam = await web.agent("sam", status="lunch")
    async with bridge(server) as b:  # 60 chat messages pile up while Sam is at lunch
        for n in range(60):  # one at a time, so they thread onto one case in order
            await b.event(
                id=f"long-{n}",
                channel="chat",
                identities={"email": "tom@example.com"},
                name="Tom Long",
                thread="tom-1",
                text=f"message number {n}",
            )
        await set_status(sam, "available")
        await sam.get_by_test_id("offer-accept").click()
        entries = panel(sam).get_by_test_id("timeline-entry")
        await expect(entries).to_have_count(50)  # the latest page came with the offer
        await expect(entries.last).to_contain_text("message number 59")
        await panel(sam).get_by_test_id("history-more").focus()
        await panel(sam).get_by_test_id("history-more").press("Enter")  # from the keyboard
        await expect(entries).to_have_count(60)
        await expect(entries.first).to_contain_text("message number 0")
        await expect(panel(sam).get_by_test_id("history-more")).to_be_hidden()
        # focus stays in the history, not dropped to the page
        await expect(panel(sam).locator(".tl-scroll")).to_be_focused()
