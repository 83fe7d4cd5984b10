"""What follows a conversation by email: an agent's reply the mail server refuses for good is
told to the agents (never to the customer), and a customer who writes again and again on a
thread whose case closed long ago gets one new case, not one per mail."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from redis.asyncio import Redis

from router import keys, snapshot
from router.errors import NotFound
from router.store import now_ms
from router.switch import Switch
from tests.email_server import console, email_server, send, smtp_listening
from tests.server import ServerProcess
from tests.switchboard_fixtures import DECL, Inbox, agent, chat
from tests.test_email_adapter import mail
from tests.test_email_qa11 import Smarthost
from tests.util import wait_for
from tests.ws_client import WsClient, uid

WS = "acme"
LONG_AGO_MS = 5 * 86400 * 1000  # past the default reopen window (72 h)


async def setup(sw: Switch, *agents: dict[str, Any]) -> None:
    await sw.apply_workspace({**DECL, "agents": list(agents)})


async def timeline(redis: Redis, customer: str) -> list[dict[str, Any]]:
    return [
        json.loads(raw) for raw in await redis.lrange(keys.customer_timeline(WS, customer), 0, -1)
    ]


async def close_long_ago(redis: Redis, case: str) -> None:
    """The case was completed days ago, outside the reopen window."""
    await redis.hset(keys.case(WS, case), "closed", now_ms() - LONG_AGO_MS)


def email(eid: str, sender: str = "alice@example.com", case: str = "", **kw: Any) -> dict[str, Any]:
    """A mail as the email adapter hands it on: ``case`` is the case its reply token names."""
    return {
        "id": eid,
        "channel": "email",
        "kind": "message",
        "identities": {"email": sender},
        "thread": case,
        "case": case,
        "subject": "Order 7",
        "text": kw.pop("text", "Where is my parcel?"),
        **kw,
    }


# --- the routing core: a reply not delivered --------------------------------------------------


def frames(inbox: Inbox, agent_id: str, type_: str) -> list[dict[str, Any]]:
    return [f for f in inbox.frames[agent_id] if f["type"] == type_]


async def test_a_reply_not_delivered_goes_in_the_history_and_to_its_agent(
    switch: Switch, inbox: Inbox
) -> None:
    await setup(switch, agent("ann", ["support"]), agent("bob", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", email("m1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    sent = await switch.reply("acme", "ann", r.case, "It ships today.", agent_name="Ann A.")
    inbox.clear()

    got = await switch.delivery_failed(
        "acme", r.case, "550 5.1.1 mailbox unknown", to="alice@example.com",
        reply=sent["entry"], key="1-0",
    )  # fmt: skip
    text = "Reply not delivered to alice@example.com: 550 5.1.1 mailbox unknown"
    assert (got["dir"], got["kind"], got["text"], got["case"]) == (
        "note", "delivery.failed", text, r.case,
    )  # fmt: skip
    assert got["reply"] == sent["entry"]["id"] and got["reply_text"] == "It ships today."
    # in the customer's history, after the reply it is about
    tl = await timeline(switch.redis, r.customer)
    assert [e.get("kind") for e in tl[-2:]] == ["message", "delivery.failed"] and tl[-1] == got
    # the agent holding the case sees it on the case at once, and is alerted
    [upd] = frames(inbox, "ann", "case.updated")
    assert upd == {"type": "case.updated", "case": r.case, "event": "delivery.failed", "entry": got}
    [alert] = frames(inbox, "ann", "error")
    assert alert["code"] == "delivery.failed" and alert["case"] == r.case and alert["ref"] is None
    assert alert["message"].startswith("Your reply on “Order 7” was not delivered to alice@")

    # the adapter tries the same delivery again (it crashed before it was done): told once
    assert await switch.delivery_failed("acme", r.case, "550", key="1-0") == {}
    assert len(await timeline(switch.redis, r.customer)) == len(tl)
    assert len(inbox.frames["ann"]) == 2

    # handed on to bob: bob holds it and sees the next one; ann, who wrote it, is alerted too
    await switch.set_status("acme", "bob", "available")
    await switch.transfer("acme", "ann", r.case, to_agent="bob")
    await switch.accept("acme", "bob", inbox.last_offer("bob")["offer"])
    inbox.clear()
    await switch.delivery_failed("acme", r.case, "552 too big", reply=sent["entry"], key="2-0")
    assert [f["entry"]["text"] for f in frames(inbox, "bob", "case.updated")] == [
        "Reply not delivered: 552 too big"
    ]
    assert frames(inbox, "bob", "error")[0]["message"].startswith("A reply on “Order 7”")
    assert frames(inbox, "ann", "error")[0]["message"].startswith("Your reply")
    assert not frames(inbox, "ann", "case.updated")

    # closed: nobody has the case on screen; the one who last had it is alerted
    await switch.complete("acme", "bob", r.case)
    inbox.clear()
    await switch.delivery_failed("acme", r.case, "550 gone", to="alice@example.com", key="3-0")
    assert [f["type"] for f in inbox.frames["bob"]] == ["error"]
    assert (await timeline(switch.redis, r.customer))[-1]["reason"] == "550 gone"

    with pytest.raises(NotFound):
        await switch.delivery_failed("acme", "c-none", "550", key="4-0")


async def test_the_customer_never_sees_a_delivery_failure(switch: Switch, inbox: Inbox) -> None:
    """On a chat (the widget shows the case's history): only what was said in and out."""
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    r = await switch.ingest("acme", chat("e1", thread="v1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    sent = await switch.reply("acme", "ann", r.case, "Hi Alice!")
    await switch.delivery_failed("acme", r.case, "the widget is gone", reply=sent["entry"])
    seen = await snapshot.chat_history(switch.redis, WS, r.case)
    assert [m["text"] for m in seen] == ["hello", "Hi Alice!"]
    assert (await timeline(switch.redis, r.customer))[-1]["kind"] == "delivery.failed"


# --- the routing core: an old thread -------------------------------------------------------------


async def test_mail_on_a_long_closed_case_opens_one_new_case_not_one_per_mail(
    switch: Switch, inbox: Inbox
) -> None:
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    first = await switch.ingest("acme", email("m1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", first.case)
    await close_long_ago(switch.redis, first.case)

    # two answers to our old reply: each names the old case (its token)
    a = await switch.ingest("acme", email("m2", case=first.case, text="It never came."))
    assert a.action == "created" and a.case != first.case
    b = await switch.ingest("acme", email("m3", case=first.case, text="Any news?"))
    assert (b.action, b.case) == ("appended", a.case)
    assert await switch.redis.lrange(keys.customer_cases(WS, a.customer), 0, -1) == [
        first.case.encode(), a.case.encode(),
    ]  # fmt: skip
    # the new case closes: within its window it is reopened, not a third case
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", a.case)
    c = await switch.ingest("acme", email("m4", case=first.case, text="Still nothing."))
    assert (c.action, c.case) == ("reopened", a.case)
    # and once that one too is long closed, the next mail opens a new case, which the thread
    # follows from then on
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", a.case)
    await close_long_ago(switch.redis, a.case)
    d = await switch.ingest("acme", email("m5", case=first.case, text="Hello?"))
    assert d.action == "created" and d.case not in (first.case, a.case)
    e = await switch.ingest("acme", email("m6", case=first.case, text="Hello??"))
    assert (e.action, e.case) == ("appended", d.case)
    # a mail naming the newer case itself joins it as before
    f = await switch.ingest("acme", email("m7", case=d.case, text="Me again."))
    assert (f.action, f.case) == ("appended", d.case)


async def test_an_old_thread_never_leads_into_a_strangers_case(
    switch: Switch, inbox: Inbox
) -> None:
    """Someone else who had the old reply address wrote first and got a case of their own: the
    customer's mail on that thread does not join it."""
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    first = await switch.ingest("acme", email("m1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", first.case)
    await close_long_ago(switch.redis, first.case)
    theirs = await switch.ingest("acme", email("m2", "mallory@evil.test", case=first.case))
    assert theirs.action == "created" and theirs.customer != first.customer
    mine = await switch.ingest("acme", email("m3", case=first.case, text="Me again."))
    assert mine.action == "created" and mine.case != theirs.case
    assert mine.customer == first.customer
    assert all(e["case"] != theirs.case for e in await timeline(switch.redis, first.customer))


async def test_an_end_for_a_long_closed_chat_ends_nothing_else(
    switch: Switch, inbox: Inbox
) -> None:
    """A widget left open for days ends its own, long-closed chat: the visitor's newer chat on
    the same thread stays open."""
    await setup(switch, agent("ann", ["support"]))
    await switch.set_status("acme", "ann", "available")
    old = await switch.ingest("acme", chat("e1", thread="v1"))
    await switch.accept("acme", "ann", inbox.last_offer("ann")["offer"])
    await switch.complete("acme", "ann", old.case)
    await close_long_ago(switch.redis, old.case)
    new = await switch.ingest("acme", chat("e2", thread="v1", text="new question"))
    assert new.action == "created"
    end = await switch.ingest(
        "acme", chat("e3", thread="v1", kind="conversation.ended", text="", case=old.case)
    )
    assert end.action == "ignored"
    assert await switch.redis.hget(keys.case(WS, new.case), "st") == b"offered"


# --- end to end: a server, its smarthost, an agent's console ------------------------------------


class HoldingSmarthost(Smarthost):
    """Also answers ``held-*`` recipients only once ``release`` is set, and then 550."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("held-"):
            await self.release.wait()
            return "550 5.1.1 No such user here"
        return await super().handle_RCPT(server, session, envelope, address, options)


@pytest.fixture
async def smarthost() -> AsyncIterator[HoldingSmarthost]:
    handler = HoldingSmarthost()
    async with smtp_listening(handler, "relay.test") as handler.port:
        yield handler
        handler.release.set()


@pytest.fixture
def server(
    tmp_path: Path, redis: Redis, redis_server: str, smarthost: HoldingSmarthost
) -> Iterator[ServerProcess]:
    decl = copy.deepcopy(DECL)
    decl["agents"] = [{**agent("ann", ["support"], email=5), "password": "pw"}]
    env = {
        "SWITCHBOARD_MAILBOXES": "support@acme.test=acme",
        "SWITCHBOARD_SMARTHOST": f"127.0.0.1:{smarthost.port}",
    }
    # the test's Redis: a case closed days ago is one whose "closed" says so
    yield from email_server(tmp_path, decl, env, redis_url=redis_server)


@pytest.fixture
async def ann(server: ServerProcess) -> AsyncIterator[WsClient]:
    async for ws in console(server):
        yield ws


def new_mail(sender: str, text: str) -> EmailMessage:
    return mail(text, sender=sender, Message_ID=f"<{uid('m')}@x.test>")


def answer(to: EmailMessage, sender: str, text: str) -> EmailMessage:
    """The customer's mail client answering our reply ``to``."""
    subject = str(to["Subject"])  # "Re: Order 7 [#…]": our reply answers her first mail
    return mail(
        text, sender=sender, to=str(to["Reply-To"]), subject=subject,
        Message_ID=f"<{uid('m')}@x.test>", In_Reply_To=str(to["Message-ID"]),
        References=str(to["Message-ID"]),
    )  # fmt: skip


async def open_case(server: ServerProcess, ann: WsClient, sender: str) -> str:
    await asyncio.to_thread(send, server, new_mail(sender, "Where is my parcel?"))
    offer = await ann.expect("offer")
    await ann.ok("offer.accept", offer=offer["offer"])
    return str(offer["case"]["id"])


async def test_the_agent_is_told_when_the_smarthost_refuses_their_reply(
    server: ServerProcess, ann: WsClient, smarthost: HoldingSmarthost
) -> None:
    gone = f"gone-{uid()}@example.com"
    case = await open_case(server, ann, gone)
    await ann.ok("case.reply", case=case, text="It ships today.")
    upd = await ann.expect("case.updated", case=case, event="delivery.failed")
    entry = upd["entry"]
    assert entry["text"] == f"Reply not delivered to {gone}: 550 5.1.1 No such user here"
    assert (entry["dir"], entry["kind"], entry["reply_text"]) == (
        "note", "delivery.failed", "It ships today.",
    )  # fmt: skip
    alert = await ann.expect("error", code="delivery.failed", case=case)
    assert gone in alert["message"] and "550 5.1.1" in alert["message"]
    # the operator still has it; the history keeps it for whoever opens the customer next
    assert list((server.data_dir / "mail-failed").glob("*.json"))
    customer = next(f["case"]["customer"] for f in ann.seen if f["type"] == "offer")
    page = (await ann.ok("history.fetch", customer=customer))["history"]["timeline"]
    assert [e["kind"] for e in page][-2:] == ["message", "delivery.failed"]
    assert page[-1]["id"] == entry["id"]


async def test_an_agent_who_closed_the_case_hears_of_the_reply_refused_after(
    server: ServerProcess, ann: WsClient, smarthost: HoldingSmarthost
) -> None:
    held = f"held-{uid()}@example.com"
    case = await open_case(server, ann, held)
    await ann.ok("case.reply", case=case, text="All sorted, closing this.")
    await ann.ok("case.complete", case=case, disposition="resolved")
    smarthost.release.set()  # the relay answers only now: 550
    alert = await ann.expect("error", code="delivery.failed", case=case)
    assert alert["message"].startswith(f"Your reply on “Order 7” was not delivered to {held}")
    assert not [f for f in ann.seen if f["type"] == "case.updated"]


async def test_two_answers_on_a_long_closed_thread_open_one_case(
    server: ServerProcess, redis: Redis, ann: WsClient, smarthost: HoldingSmarthost
) -> None:
    alice = f"alice-{uid()}@example.com"
    first = await open_case(server, ann, alice)
    await ann.ok("case.reply", case=first, text="It ships today.")
    ours = await smarthost.mail_to(alice)
    await ann.ok("case.complete", case=first, disposition="resolved")
    await close_long_ago(redis, first)

    # days later she answers our old reply, twice, from her mail client's thread
    await asyncio.to_thread(send, server, answer(ours, alice, "It never came."))
    offer = await ann.expect("offer")
    second = offer["case"]["id"]
    assert second != first
    await ann.ok("offer.accept", offer=offer["offer"])
    await asyncio.to_thread(send, server, answer(ours, alice, "Hello? Any news?"))
    msg = await ann.expect("case.message", case=second)
    assert msg["entry"]["text"] == "Hello? Any news?"
    customer = offer["case"]["customer"]
    cases = await wait_for(
        lambda: redis.lrange(keys.customer_cases(WS, customer), 0, -1), message="her cases"
    )
    assert cases == [first.encode(), second.encode()]
    assert not ann.pending("offer")


async def test_a_refused_reply_that_cannot_be_kept_still_holds_up_nothing(
    server: ServerProcess, ann: WsClient, smarthost: HoldingSmarthost
) -> None:
    """The data dir takes no ``mail-failed/`` record (here a file stands where the directory
    should be; in life a full or read-only disk): the refused reply is still set aside, logged,
    and its agent told, and the replies behind it go out."""
    (server.data_dir / "mail-failed").write_text("not a directory")
    gone, fine = f"gone-{uid()}@example.com", f"fine-{uid()}@example.com"
    refused = await open_case(server, ann, gone)
    sent = await open_case(server, ann, fine)
    await ann.ok("case.reply", case=refused, text="It ships today.")
    await ann.ok("case.reply", case=sent, text="Yours too.")
    assert "Yours too." in (await smarthost.mail_to(fine)).get_content()
    upd = await ann.expect("case.updated", case=refused, event="delivery.failed")
    assert upd["entry"]["text"] == f"Reply not delivered to {gone}: 550 5.1.1 No such user here"
    alert = await ann.expect("error", code="delivery.failed", case=refused)
    assert gone in alert["message"]
    assert (server.data_dir / "mail-failed").read_text() == "not a directory"
    await wait_for(lambda: "could not be kept" in server.log(), message="the error logged")
    assert (
        f"for case {refused} to {gone} not delivered (refused by the smarthost: 550 5.1.1"
        in server.log()
    )
    assert all(m["To"] != gone for m in smarthost.received)
