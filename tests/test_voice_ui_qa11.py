"""Voice calls as agents and supervisors see them (QA round 11).

* A call's offer card and its case header show the number it comes from: the customer's phone,
  else the case's ``caller`` attribute (a SIP or client caller has no phone identity).
* The case header says the customer ended the conversation — "Call ended · 14:03", "Customer
  ended the chat · 14:03" — live, and after a reload (the case's ``ended``); a chat visitor who
  writes again is back, and the line goes; ending it again, the line says when they ended it
  that time (its latest end entry).
* The supervisor's waiting list tells a callback from a call on hold: "Callback · <number>".
* ``PUT /api/agents/{id}/status`` by a supervisor: a signed-out agent is not made available
  (409 ``agent.signed_out``), and a signed-in agent's console shows the status they were given.
* ``switchboard demo`` serves the Twilio webhooks once the Twilio settings are there.

Browser tests drive headless Chromium with tests/test_console.py's harness against a real
``switchboard serve``; every wait is Playwright's auto-waiting ``expect`` (10 s) or a deadline.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from router import cli
from router.plugins import Plugin
from router.push import case_view
from tests import test_console
from tests.server import ServerProcess
from tests.test_console import (
    Bridge,
    Web,
    bridge,
    customer_chat,
    panel,
    say,
    send_email,
    set_status,
    shoot,
    sign_in,
)
from tests.test_twilio import ACCOUNT, CALLER, PUBLIC, TOKEN, call, new_sid, twiml, webhook
from tests.util import wait_for

# test_console's browser, server (its acme workspace: bea takes calls) and pages
chromium = test_console.chromium
browser = test_console.browser
server = test_console.server
web = test_console.web

browser_test = pytest.mark.browser

KIM = "+14155550123"


async def ring(
    b: Bridge, *, name: str, phone: str = "", topic: str = "billing", **attributes: Any
) -> tuple[str, str]:
    """A call ringing at the voice platform, reported by its bridge: (case, thread). Without
    ``phone`` the caller is known by a client address only, as Twilio reports a SIP caller."""
    thread = f"call-{secrets.token_hex(6)}"
    ack = await b.event(
        id=f"call-{secrets.token_hex(6)}",
        channel="voice",
        kind="call.offered",
        identities={"phone": phone} if phone else {"external": f"twilio:client:{thread}"},
        name=name,
        thread=thread,
        text="Incoming call",
        attributes={"topic": topic, **attributes},
    )
    return str(ack["case"]), thread


async def voice_event(
    b: Bridge, thread: str, kind: str, phone: str = KIM, **attributes: Any
) -> None:
    await b.event(
        id=f"{kind}-{secrets.token_hex(6)}",
        channel="voice",
        kind=kind,
        identities={"phone": phone},
        thread=thread,
        text="",
        attributes=attributes,
    )


async def complete(page: Page) -> None:
    await panel(page).get_by_test_id("wrapup").click()
    await panel(page).get_by_test_id("disposition-select").select_option("resolved")
    await panel(page).get_by_test_id("complete").click()
    await expect(page.get_by_test_id("case-tab")).to_have_count(0)


def token(srv: ServerProcess, agent: str, password: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {srv.login(agent, password)['token']}"}


# -- 1. the caller's number ------------------------------------------------------------------------


@browser_test
async def test_a_call_offer_and_its_case_show_the_number_it_comes_from(
    web: Web, server: ServerProcess
) -> None:
    bea = await web.agent("bea")  # billing: one call at a time
    async with bridge(server) as b:
        await ring(b, name="KIM LEE", phone=KIM)
        offer = bea.get_by_test_id("offer")
        await expect(offer.get_by_test_id("offer-customer")).to_have_text(
            f"Call from KIM LEE · {KIM}"
        )
        await expect(offer.get_by_test_id("offer-caller-number")).to_have_text(KIM)
        await shoot(bea, "voice-offer-number.png")
        await offer.get_by_test_id("offer-accept").click()
        await expect(panel(bea).get_by_test_id("case-customer")).to_have_text("KIM LEE")
        await expect(panel(bea).get_by_test_id("case-ids")).to_have_text(KIM)

        # a caller with no phone identity: the number is the call's caller attribute (it waits
        # while bea is on the first call)
        await ring(b, name="Lou Park", caller="client:lou")
        await complete(bea)
        offer = bea.get_by_test_id("offer")
        await expect(offer.get_by_test_id("offer-caller-number")).to_have_text("client:lou")
        await expect(offer.get_by_test_id("offer-customer")).to_have_text(
            "Call from Lou Park · client:lou"
        )
        await offer.get_by_test_id("offer-accept").click()
        await expect(panel(bea).get_by_test_id("case-caller-number")).to_have_text("client:lou")
        await expect(panel(bea).get_by_test_id("case-ids")).to_contain_text(
            "calling from client:lou"
        )


@browser_test
async def test_app_sip_and_withheld_callers_are_named_not_shown_as_ids(
    web: Web, server: ServerProcess
) -> None:
    """The voice adapter knows a caller who is not a phone number by what Twilio reports: an
    app (``client:lou``) or SIP address, or for a withheld number (From a placeholder such as
    +266696687) the call alone. Agents read what that means, never the adapter's ids."""
    bea = await web.agent("bea")
    async with bridge(server) as b:
        for identity, caller, shown in [
            ("twilio:client:lou", "client:lou", "lou (app call)"),
            (
                "twilio:sip:kai@pbx.example.com",
                "sip:kai@pbx.example.com",
                "kai@pbx.example.com (SIP)",
            ),
            ("twilio-call:CA0123456789abcdef", "+266696687", "withheld number"),
        ]:
            await b.event(
                id=f"call-{secrets.token_hex(6)}",
                channel="voice",
                kind="call.offered",
                identities={"external": identity},
                thread=f"call-{secrets.token_hex(6)}",
                text="Incoming call",
                attributes={"topic": "billing", "caller": caller},
            )
            offer = bea.get_by_test_id("offer")
            await expect(offer.get_by_test_id("offer-customer")).to_have_text(f"Call from {shown}")
            await expect(offer.get_by_test_id("offer-caller-number")).to_have_count(0)
            await offer.get_by_test_id("offer-accept").click()
            await expect(panel(bea).get_by_test_id("case-ids")).to_have_text(shown)
            await expect(panel(bea).get_by_test_id("case-caller-number")).to_have_count(0)
            await complete(bea)


@browser_test
async def test_the_transfer_picker_says_who_has_no_room_left(
    web: Web, server: ServerProcess
) -> None:
    """Bea is available but holds as many emails as she takes (one): the picker lists her after
    anyone free, as "Bea Billing · available · emails full" (a transfer to her waits until she
    has room), and once she has room again, without it."""
    bea = await web.agent("bea")
    sam = await web.agent("sam")
    async with bridge(server) as b:
        await send_email(b, sender="ola@example.com", name="Ola", subject="Invoice", text="Hi",
                         topic="billing")  # fmt: skip
        await bea.get_by_test_id("offer-accept").click()
        await send_email(b, sender="kim@example.com", name="Kim", subject="Parcel", text="Hi")
    await sam.get_by_test_id("offer-accept").click()
    await panel(sam).locator("label.seg", has_text="To an agent").click()
    option = panel(sam).locator("[data-testid=transfer-agents] option[value=bea]")
    await expect(option).to_have_attribute("label", "Bea Billing · available · emails full")
    await complete(bea)
    await panel(sam).locator("label.seg", has_text="To a queue").click()
    await panel(sam).locator("label.seg", has_text="To an agent").click()  # asks again
    await expect(option).to_have_attribute("label", "Bea Billing · available")


@browser_test
async def test_a_caller_known_only_by_their_number_is_not_named_twice(
    web: Web, server: ServerProcess
) -> None:
    bea = await web.agent("bea")
    async with bridge(server) as b:
        await ring(b, name="", phone=KIM)
        offer = bea.get_by_test_id("offer")
        await expect(offer.get_by_test_id("offer-customer")).to_have_text(f"Call from {KIM}")
        await expect(offer.get_by_test_id("offer-caller-number")).to_have_count(0)


# -- 2. the customer ended the conversation --------------------------------------------------------


def test_the_case_view_carries_when_the_customer_ended_the_conversation() -> None:
    assert case_view({"id": "c1", "ended": "1767261830000"})["ended"] == 1767261830000
    assert "ended" not in case_view({"id": "c1"})


@browser_test
async def test_the_header_says_the_call_ended_live_and_after_a_reload(
    web: Web, server: ServerProcess
) -> None:
    bea = await web.agent("bea")
    async with bridge(server) as b:
        case, thread = await ring(b, name="KIM LEE", phone=KIM)
        await bea.get_by_test_id("offer-accept").click()
        head = panel(bea)
        await expect(head.get_by_test_id("case-customer")).to_have_text("KIM LEE")
        await expect(head.get_by_test_id("case-ended")).to_have_count(0)
        await voice_event(b, thread, "call.ended")
    # live: the header says so at once, and a notice tells the agent
    ended = re.compile(r"^Call ended · \d{1,2}:\d{2}")
    await expect(head.get_by_test_id("case-ended")).to_have_text(ended)
    await expect(bea.get_by_test_id("call-ended")).to_contain_text("Call with KIM LEE ended.")
    await expect(head.get_by_test_id("case-status")).to_have_text("In progress")  # until wrap-up
    await shoot(bea, "voice-call-ended.png", top=True)

    # the case keeps it: after a reload (hello) and in the REST API
    await bea.reload()
    await expect(bea.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(panel(bea).get_by_test_id("case-ended")).to_have_text(ended)
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get(f"/api/cases/{case}", headers=token(server, "sue", "pw-sue"))
    assert r.status_code == 200, r.text
    at = r.json()["case"]["ended"]
    assert isinstance(at, int) and at > 1_700_000_000_000  # ms


async def sam_takes_a_chat(web: Web) -> tuple[Page, Page]:
    """Ada Byron writes in the widget and sam accepts: his console and her widget."""
    sam = await web.agent("sam")
    customer = await customer_chat(web, name="Ada Byron", email="ada@example.com")
    await say(customer, "My parcel is lost")
    await sam.get_by_test_id("offer-accept").click()
    await expect(panel(sam).get_by_test_id("case-customer")).to_have_text("Ada Byron")
    return sam, customer


@browser_test
async def test_the_header_says_the_customer_ended_the_chat_until_they_write_again(
    web: Web, server: ServerProcess
) -> None:
    sam, customer = await sam_takes_a_chat(web)
    head = panel(sam)
    await customer.get_by_test_id("chat-end").click()
    await expect(customer.get_by_test_id("chat-ended")).to_be_visible()

    ended = re.compile(r"^Customer ended the chat · \d{1,2}:\d{2}")
    await expect(head.get_by_test_id("case-ended")).to_have_text(ended)
    await expect(sam.get_by_test_id("conversation-ended")).to_contain_text(
        "Ada Byron ended the chat."
    )
    await sam.reload()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(panel(sam).get_by_test_id("case-ended")).to_have_text(ended)

    # they write again on the same case: the conversation is back on
    await say(customer, "Actually, one more thing")
    await expect(panel(sam).get_by_test_id("timeline")).to_contain_text("Actually, one more thing")
    await expect(panel(sam).get_by_test_id("case-ended")).to_have_count(0)


def _as_shown(ts: float) -> str:
    """An entry's time (s) as the header's ``<time datetime>`` gives it: the ms the console
    rounds it to (Math.round), in Date.toISOString()'s form."""
    ms = math.floor(ts * 1000 + 0.5)
    at = datetime.fromtimestamp(ms // 1000, UTC)
    return f"{at:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


@browser_test
async def test_a_chat_ended_again_says_when_it_ended_the_second_time(
    web: Web, server: ServerProcess
) -> None:
    sam, customer = await sam_takes_a_chat(web)
    head = panel(sam)
    case = await head.get_attribute("data-case")
    shown = head.get_by_test_id("case-ended").locator("time")
    sue = token(server, "sue", "pw-sue")

    async def end(http: httpx.AsyncClient, n: int) -> str:
        """The visitor ends the chat, the ``n``th time: when its end entry says it was."""
        await customer.get_by_test_id("chat-end").click()
        await expect(customer.get_by_test_id("chat-ended")).to_be_visible()

        async def ends() -> list[float]:
            r = await http.get(f"/api/cases/{case}", headers=sue)
            assert r.status_code == 200, r.text
            timeline = r.json()["timeline"]
            at = [e["ts"] for e in timeline if e.get("kind") == "conversation.ended"]
            return at if len(at) == n else []

        at = await wait_for(ends, timeout=10, message=f"end {n} not on the case's timeline")
        assert isinstance(at, list)
        return _as_shown(at[-1])

    async with httpx.AsyncClient(base_url=server.url) as http:
        first = await end(http, 1)
        await expect(shown).to_have_attribute("datetime", first)
        await say(customer, "Actually, one more thing")
        await expect(head.get_by_test_id("timeline")).to_contain_text("Actually, one more thing")
        await expect(head.get_by_test_id("case-ended")).to_have_count(0)

        # they end it again: the header says when they ended it this time, not the first time
        second = await end(http, 2)
    assert second != first
    ended = re.compile(r"^Customer ended the chat · \d{1,2}:\d{2}")
    await expect(head.get_by_test_id("case-ended")).to_have_text(ended)
    await expect(shown).to_have_attribute("datetime", second)
    # and so after a reload (the case as the server has it, with its timeline)
    await sam.reload()
    await expect(sam.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(panel(sam).get_by_test_id("case-ended").locator("time")).to_have_attribute(
        "datetime", second
    )


# -- 3. the supervisor's waiting list --------------------------------------------------------------


@browser_test
async def test_the_waiting_list_tells_a_callback_from_a_call_on_hold(
    web: Web, server: ServerProcess
) -> None:
    sue = await web.page("/supervisor")
    await sign_in(sue, "sue")  # nobody takes calls: they wait
    async with bridge(server) as b:
        held, _ = await ring(b, name="Max Roy", phone="+15550100999")
        case, thread = await ring(b, name="KIM LEE", phone=KIM)
        row = sue.locator(f"[data-testid=waiting-case][data-case={case}]")
        await expect(row).to_contain_text("Incoming call")
        await expect(row.get_by_test_id("case-callback")).to_have_count(0)
        # the caller presses 1 on hold, leaving another number: the open page follows
        await voice_event(b, thread, "callback.requested", callback_number="+14155550777")
    await expect(row.get_by_test_id("case-callback")).to_have_text("☎ Callback · +14155550777")
    await expect(row).not_to_contain_text("Incoming call")
    await expect(row.get_by_test_id("case-customer-name")).to_have_text("KIM LEE")
    other = sue.locator(f"[data-testid=waiting-case][data-case={held}]")
    await expect(other).to_contain_text("Incoming call")
    await shoot(sue, "supervisor-callback.png", top=True)
    # and so it reads when the page is opened afresh
    await sue.reload()
    await expect(sue.get_by_test_id("connection-state")).to_have_text("Live")
    await expect(row.get_by_test_id("case-callback-number")).to_have_text("+14155550777")


# -- 4. REST: a supervisor sets an agent's status --------------------------------------------------


@browser_test
async def test_a_status_set_over_rest_reaches_the_agents_console_and_spares_the_signed_out(
    web: Web, server: ServerProcess
) -> None:
    sam = await web.agent("sam", status=None)  # signed in, still offline
    await expect(sam.get_by_test_id("status-select")).to_have_value("offline")
    sue = token(server, "sue", "pw-sue")
    async with httpx.AsyncClient(base_url=server.url, headers=sue) as http:
        r = await http.put("/api/agents/sam/status", json={"status": "available"})
        assert r.status_code == 200 and r.json() == {"agent": "sam", "status": "available"}, r.text
        # sam's console shows it, and says who did it
        await expect(sam.get_by_test_id("status-select")).to_have_value("available")
        await expect(sam.get_by_test_id("status-changed")).to_contain_text("set by a supervisor")
        await expect(sam.get_by_test_id("offers-empty")).to_contain_text("No offers right now")

        # bea has no console open: made available she would be offered cases nobody answers
        r = await http.put("/api/agents/bea/status", json={"status": "available"})
        assert r.status_code == 409 and r.json()["code"] == "agent.signed_out", r.text
        assert (await http.get("/api/agents/bea")).json()["status"] == "offline"
        # a status that routes nothing is fine
        r = await http.put("/api/agents/bea/status", json={"status": "lunch"})
        assert r.status_code == 200 and r.json()["status"] == "lunch", r.text

        # once she signs in, she can be made available; her console follows
        bea = await web.agent("bea", status=None)
        await expect(bea.get_by_test_id("status-select")).to_have_value("lunch")
        r = await http.put("/api/agents/bea/status", json={"status": "available"})
        assert r.status_code == 200, r.text
        await expect(bea.get_by_test_id("status-select")).to_have_value("available")
    # an agent's own status is theirs to set, console open or not
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.put(
            "/api/agents/sam/status",
            json={"status": "lunch"},
            headers=token(server, "sam", "pw-sam"),
        )
        assert r.status_code == 200, r.text
    await set_status(sam, "away")  # the console still works as before


# -- 5. the demo with Twilio -----------------------------------------------------------------------


def _demo_plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> list[Plugin]:
    """The adapters ``switchboard demo`` would serve with these settings (not served)."""
    for name in ("TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "PUBLIC_URL"):
        monkeypatch.delenv(f"SWITCHBOARD_{name}", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(f"SWITCHBOARD_{k}", v)
    served: list[list[Plugin]] = []

    def serve(settings: object, plugins: Sequence[Plugin], **kw: object) -> int:
        served.append(list(plugins))
        return 0

    monkeypatch.setattr(cli, "_serve", serve)
    code = cli.main(["demo", "--quiet", "--smtp-port", "0", "--data-dir", str(tmp_path)])
    assert code == 0
    assert len(served) == 1
    return served[0]


def test_the_demo_loads_the_twilio_adapter_when_its_token_is_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _demo_plugins(monkeypatch, tmp_path) == []
    plugins = _demo_plugins(
        monkeypatch,
        tmp_path,
        TWILIO_AUTH_TOKEN=TOKEN,
        TWILIO_ACCOUNT_SID=ACCOUNT,
        PUBLIC_URL=PUBLIC,
    )
    assert [p.name for p in plugins] == ["twilio"]
    paths = {getattr(r, "path", "") for r in plugins[0].routes()}
    assert "/voice/twilio/incoming" in paths and "/voice/twilio/status" in paths
    assert f"{PUBLIC}/voice/twilio/incoming" in capsys.readouterr().err
    # half a configuration is refused, as by `serve --adapters twilio`
    monkeypatch.delenv("SWITCHBOARD_PUBLIC_URL")
    monkeypatch.setattr(cli, "_serve", lambda *a, **kw: pytest.fail("served"))
    code = cli.main(["demo", "--quiet", "--smtp-port", "0", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "SWITCHBOARD_PUBLIC_URL" in capsys.readouterr().err


async def test_the_demo_answers_a_twilio_call_and_queues_it(tmp_path: Path) -> None:
    demo = await asyncio.to_thread(
        ServerProcess,
        tmp_path / "demo",
        command=("demo", "--quiet", "--smtp-port", "0"),
        env={
            "SWITCHBOARD_TWILIO_AUTH_TOKEN": TOKEN,
            "SWITCHBOARD_TWILIO_ACCOUNT_SID": ACCOUNT,
            "SWITCHBOARD_PUBLIC_URL": PUBLIC,
            # nothing is bridged here (nobody accepts); never the real API
            "SWITCHBOARD_TWILIO_API_BASE": "http://127.0.0.1:9",
        },
    )
    try:
        sid = new_sid()
        root = twiml(await webhook(demo, "incoming", call(sid), query="workspace=demo"))
        assert root.find(".//Say") is not None  # the caller is on hold
        auth = await asyncio.to_thread(demo.login, "sue", "demo", "demo")
        async with httpx.AsyncClient(
            base_url=demo.url, headers={"Authorization": f"Bearer {auth['token']}"}
        ) as http:

            async def queued() -> list[dict[str, Any]]:
                r = await http.get("/api/cases", params={"status": "queued"})
                r.raise_for_status()
                return [c for c in r.json()["cases"] if c["channel"] == "voice"]

            cases = await wait_for(queued, 10, message="the call did not queue")
        assert isinstance(cases, list)
        assert cases[0]["attributes"]["caller"] == CALLER
    finally:
        await asyncio.to_thread(demo.stop)
