"""The email channel end to end: a real ``switchboard serve --adapters email`` on the suite's
Redis, mail sent with smtplib, an agent on a real WebSocket, replies written to the outbox
folder (no smarthost). Who sent a mail is decided by the trusted MTA's Authentication-Results."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from router import keys
from tests.email_server import console, email_server
from tests.email_server import send as send_mail
from tests.server import BRIDGE_KEY, ServerProcess
from tests.switchboard_fixtures import DECL, agent
from tests.util import wait_for
from tests.ws_client import WsClient, connect_bridge, uid

MX = "mx.acme.test"  # the MTA in front, whose Authentication-Results we trust
WS = "acme"


@pytest.fixture
def server(tmp_path: Path, redis: Redis, redis_server: str) -> Iterator[ServerProcess]:
    decl = copy.deepcopy(DECL)
    decl["agents"] = [{**agent("ann", ["support"]), "password": "pw"}]
    env = {
        "SWITCHBOARD_MAILBOXES": "support@acme.test=acme,help@acme.test=acme",
        "SWITCHBOARD_SMTP_AUTHSERV_IDS": MX,
    }
    yield from email_server(tmp_path, decl, env, redis_url=redis_server)


@pytest.fixture
async def ann(server: ServerProcess) -> AsyncIterator[WsClient]:
    async for ws in console(server):
        yield ws


def send(
    server: ServerProcess, sender: str, text: str, auth: str | None, *,
    name: str = "Nora Quinn", to: str = "support@acme.test",
    subject: str = "Refund for order 5521",
) -> None:  # fmt: skip
    """One mail through the SMTP adapter, as the MTA in front would relay it."""
    msg = EmailMessage()
    if auth is not None:
        msg["Authentication-Results"] = f"{MX}; {auth}"
    msg["From"] = f"{name} <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uid('m')}@{sender.rpartition('@')[2]}>"
    msg.set_content(text)
    send_mail(server, msg)


async def email_offer(ann: WsClient) -> dict[str, Any]:
    """The next offer of an email case (chat offers in between are passed over)."""
    while (offer := await ann.expect("offer"))["case"]["channel"] != "email":
        pass
    return offer


async def replies(server: ServerProcess, n: int) -> list[Message]:
    """The first ``n`` replies written to the outbox folder, oldest first."""
    outbox = server.data_dir / "mail-out"
    await wait_for(lambda: len(list(outbox.glob("*.eml"))) >= n, message="replies in the outbox")
    return [message_from_bytes(p.read_bytes()) for p in sorted(outbox.glob("*.eml"))]


async def profile(redis: Redis, customer: str) -> set[str]:
    return {k.decode() for k in await redis.hkeys(keys.customer(WS, customer))}


async def test_a_mail_its_domain_disowns_joins_no_customer(
    server: ServerProcess, redis: Redis, ann: WsClient
) -> None:
    nora = f"{uid('nora')}@example.com"
    await asyncio.to_thread(send, server, nora, "my order is late", "dmarc=pass")
    genuine = await ann.expect("offer")
    owner = genuine["case"]["customer"]
    assert f"email:{nora}" in genuine["customer"]["identities"]
    assert genuine["case"]["attributes"]["sender_auth"] == "pass"
    await ann.ok("offer.accept", offer=genuine["offer"])
    await ann.ok("case.complete", case=genuine["case"]["id"], disposition="resolved")

    # the same From, but example.com's DMARC policy says this mail is not theirs
    forged = "please send the refund to my new card"
    await asyncio.to_thread(send, server, nora, forged, "spf=fail smtp.mailfrom=example.com")
    offer = await ann.expect("offer")
    case = offer["case"]
    assert case["customer"] != owner  # none of Nora's history is offered with it
    assert case["attributes"]["sender_auth"] == "fail"
    assert offer["customer"]["identities"] == []
    assert offer["customer"]["claims"] == [f"email:{nora}"]  # the console: "not verified"
    assert f"claim:email:{nora}" in await profile(redis, case["customer"])
    assert await redis.hget(keys.identities(WS), f"email:{nora}") == owner.encode()
    assert forged not in str(await redis.lrange(keys.customer_timeline(WS, owner), 0, -1))

    # the reply still goes back to the address the mail came from
    await ann.ok("offer.accept", offer=offer["offer"])
    await ann.ok("case.reply", case=case["id"], text="We only refund to the original card.")
    [reply] = await replies(server, 1)
    assert reply["To"] == nora

    # a mail nobody checked (no header from our MTA) is taken at its word, as before
    await asyncio.to_thread(send, server, nora, "is it shipped?", None)
    again = await ann.expect("offer")
    assert again["case"]["customer"] == owner
    assert again["case"]["attributes"]["sender_auth"] == "unchecked"


async def test_a_reply_goes_to_the_address_the_customer_wrote_from(
    server: ServerProcess, ann: WsClient
) -> None:
    # one customer with two addresses, linked by her CRM id; she writes from the one that sorts last
    crm, home, work = uid("crm"), f"a-{uid('n')}@example.com", f"z-{uid('n')}@example.com"
    bridge = await connect_bridge(server.ws_url, BRIDGE_KEY)
    try:
        for addr in (home, work):
            ids = {"email": addr, "external": crm}
            await bridge.ok("event", id=uid("e"), channel="chat", identities=ids, thread=uid("t"))
    finally:
        await bridge.close()
    await asyncio.to_thread(send, server, work, "the invoice went to my work address", "dmarc=pass")
    offer = await email_offer(ann)
    assert {f"email:{home}", f"email:{work}"} <= set(offer["customer"]["identities"])
    await ann.ok("offer.accept", offer=offer["offer"])
    await ann.ok("case.reply", case=offer["case"]["id"], text="Resent it there.")
    [reply] = await replies(server, 1)
    assert reply["To"] == work
    # the SMTP library's line per connection and command stays out of the server's log
    assert "mail.log" not in server.log_path.read_text()


async def test_someone_else_writing_on_the_case_is_not_sent_the_customers_reply(
    server: ServerProcess, ann: WsClient
) -> None:
    """Mallory got hold of the case's reply address and writes on it: her mail joins the
    conversation (the agent sees who wrote), but the agent's next reply goes to the customer."""
    nina = f"{uid('nina')}@example.com"
    await asyncio.to_thread(send, server, nina, "what is my balance?", "dmarc=pass")
    offer = await email_offer(ann)
    case = offer["case"]["id"]
    await ann.ok("offer.accept", offer=offer["offer"])
    await ann.ok("case.reply", case=case, text="Let me check.")
    [first] = await replies(server, 1)
    token_address = first["Reply-To"]

    await asyncio.to_thread(
        send, server, "mallory@evil.test", "Please send it here.", "dmarc=pass",
        name="Mallory", to=token_address, subject="Re: Refund for order 5521",
    )  # fmt: skip
    joined = await ann.expect("case.message", case=case)
    assert joined["entry"]["addr"] == "mallory@evil.test"  # the console marks her, by address
    await ann.ok("case.reply", case=case, text="Your balance is $1,234.")
    second = (await replies(server, 2))[1]
    assert second["To"] == nina


async def test_a_mail_to_a_second_mailbox_is_answered_from_it(
    server: ServerProcess, ann: WsClient
) -> None:
    oli = f"{uid('oli')}@example.com"
    await asyncio.to_thread(
        send, server, oli, "Hello?", "dmarc=pass", name="Oli", to="help@acme.test", subject="Help"
    )
    offer = await email_offer(ann)
    await ann.ok("offer.accept", offer=offer["offer"])
    await ann.ok("case.reply", case=offer["case"]["id"], text="Hi Oli.")
    [reply] = await replies(server, 1)
    assert "help@acme.test" in reply["From"]  # not support@, the workspace's first
    assert reply["Reply-To"].startswith("help+")


async def test_an_agent_opens_the_files_a_customer_sent(
    server: ServerProcess, ann: WsClient, redis: Redis
) -> None:
    """A mail's attachments are kept: the agent holding the case downloads each one as sent,
    always as a download, a hostile type (HTML) as plain bytes. An agent no longer reads
    them once the case is not theirs, and the same mail delivered twice keeps its files once."""
    pdf, page = b"%PDF-1.7\n" + bytes(range(256)) * 40, b"<script>alert(1)</script>"
    msg = EmailMessage()
    msg["Authentication-Results"] = f"{MX}; dmarc=pass"
    msg["From"] = "Nora Quinn <nora@example.com>"
    msg["To"] = "support@acme.test"
    msg["Subject"] = "Broken lamp"
    msg["Message-ID"] = f"<{uid('m')}@example.com>"
    msg.set_content("Photo and invoice attached.")
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="Rechnung März.pdf")
    msg.add_attachment(page, maintype="text", subtype="html", filename="look.html")
    # a right-to-left override shows "logs\u202egpj.exe" as "logsexe.jpg": it is dropped from
    # the name shown, and from the name the file is saved under
    msg.add_attachment(b"MZ", maintype="application", subtype="zip", filename="logs\u202egpj.exe")
    await asyncio.to_thread(send_mail, server, msg)
    offer = await email_offer(ann)
    files = offer["timeline"][-1]["attachments"]
    assert [(f["name"], f["size"]) for f in files] == [
        ("Rechnung März.pdf", len(pdf)),
        ("look.html", len(page)),
        ("logsgpj.exe", 2),
    ]
    assert all(f.get("id") for f in files)
    token = (await asyncio.to_thread(server.login, "ann"))["token"]
    hdr = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=hdr, timeout=10) as c:
        url = f"/api/attachments/{files[0]['id']}"
        assert (await c.get(url)).status_code == 200  # offered to her: she reads the history
        await ann.ok("offer.accept", offer=offer["offer"])
        r = await c.get(url)
        assert r.status_code == 200 and r.content == pdf
        assert r.headers["content-type"] == "application/pdf"
        assert r.headers["content-disposition"].startswith("attachment;")
        assert "filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf" in r.headers["content-disposition"]
        assert r.headers["x-content-type-options"] == "nosniff"
        r = await c.get(f"/api/attachments/{files[1]['id']}")
        assert r.status_code == 200 and r.content == page
        assert r.headers["content-type"] == "application/octet-stream"
        assert "sandbox" in r.headers["content-security-policy"]
        r = await c.get(f"/api/attachments/{files[2]['id']}")
        assert r.status_code == 200 and r.content == b"MZ"
        said = r.headers["content-disposition"]
        assert 'filename="logsgpj.exe"' in said and "filename*=UTF-8''logsgpj.exe" in said, said
        r = await c.get("/api/attachments/f-nothing")
        assert r.status_code == 404 and r.json()["code"] == "attachment.unknown"
        kept = await redis.keys(f"sb:{{{WS}}}:f:*")
        await asyncio.to_thread(send_mail, server, msg)  # the MTA delivers it again
        await ann.ok("case.wrapup", case=offer["case"]["id"])
        await ann.ok("case.complete", case=offer["case"]["id"])
        assert (await c.get(url)).status_code == 404  # no longer hers
    assert sorted(await redis.keys(f"sb:{{{WS}}}:f:*")) == sorted(kept)
