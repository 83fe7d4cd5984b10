"""The email channel as a support team meets it: forwards, old mailers' charsets, bounces,
display-name tricks, HTML links and tables, replies that quote the customer, and a reply the
smarthost refuses for good, which must not hold up every reply behind it."""

from __future__ import annotations

import asyncio
import copy
import json
import smtplib
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.email import EmailAdapter, build_reply, quote, reply_token
from adapters.email_parse import Limits, html_to_text, is_forward, parse_message, trim_quoted
from tests.email_server import SMTP_PORT, console, email_server, smtp_listening
from tests.email_server import send as send_mail
from tests.server import ServerProcess
from tests.switchboard_fixtures import DECL, agent
from tests.test_email_adapter import DOMAIN, SECRET, Recorder, config, mail, submit
from tests.util import wait_for
from tests.ws_client import WsClient, uid

# --- inbound, at the adapter ---------------------------------------------------------------------


@pytest.fixture
def ingest() -> Recorder:
    return Recorder()


@pytest.fixture
async def adapter(ingest: Recorder) -> AsyncIterator[EmailAdapter]:
    async with EmailAdapter(config(), ingest) as running:
        yield running


def parsed(raw: bytes | EmailMessage) -> Any:
    return parse_message(raw if isinstance(raw, bytes) else raw.as_bytes(), Limits())


def test_a_forward_keeps_what_it_forwards() -> None:
    """A customer forwards the shop's confirmation: the agent must read it, not lose it as
    "quoted earlier text"."""
    gmail = mail(
        "Hi, see below: it says 2 items, I got 1.\n\n"
        "---------- Forwarded message ---------\n"
        "From: Shop <orders@shop.example>\nDate: Mon, 20 Nov 2026 at 10:00\n"
        "Subject: Your order\nTo: <dan@example.com>\n\nOrder 9912: 2 items, 40 EUR.\n",
        subject="Fwd: Your order",
    )
    text = parsed(gmail).text
    assert text.startswith("Hi, see below") and text.endswith("Order 9912: 2 items, 40 EUR.")
    outlook_block = (
        "Please look, the refund never came.\n\n________________________________\n"
        "From: Billing <billing@shop.example>\nSent: Monday, November 20, 2026 10:00 AM\n"
        "To: Erin\nSubject: Refund\n\nYour refund of 40 EUR was issued.\n"
    )
    assert parsed(mail(outlook_block, subject="FW: Refund")).text.endswith("was issued.")
    assert parsed(mail(outlook_block, subject="WG: Refund")).text.endswith("was issued.")
    # the same block under an answer is the customer's quoted history, trimmed as before
    assert parsed(mail(outlook_block, subject="RE: Refund")).text == (
        "Please look, the refund never came."
    )
    assert is_forward("[ext] Fwd: x") and not is_forward("Re: Fwd: x")
    assert (
        trim_quoted("a\n\nOn Mon, Bob wrote:\n> b", forward=True) == "a\n\nOn Mon, Bob wrote:\n> b"
    )


def test_a_mail_forwarded_as_an_attachment_is_read_and_named() -> None:
    shop = EmailMessage()
    shop["From"], shop["To"] = "Shop <orders@shop.example>", "fay@example.com"
    shop["Subject"], shop["Date"] = "Shipping notice", "Fri, 20 Nov 2026 10:00:00 +0000"
    shop.set_content("Your parcel 123 ships today.")
    shop.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="label.pdf")
    # the customer's own words are HTML only; the forwarded mail's are plain text
    fay = mail("", subject="Parcel never came", sender="Fay <fay@example.com>")
    fay.set_content("<p>My parcel <b>never</b> came.</p>", subtype="html")
    fay.add_attachment(shop)
    got = parsed(fay)
    assert got.text == (
        "My parcel never came.\n\n---------- Forwarded message ----------\n"
        "From: Shop <orders@shop.example>\nDate: Fri, 20 Nov 2026 10:00:00 +0000\n"
        "Subject: Shipping notice\nTo: fay@example.com\n\nYour parcel 123 ships today."
    )
    assert [(a["name"], a["type"]) for a in got.attachments] == [
        ("Shipping notice.eml", "message/rfc822"),
        ("label.pdf", "application/pdf"),
    ]


def test_undeclared_8bit_text_reads_as_windows_1252() -> None:
    """An old mailer's Latin-1, declared or not, reads as written, not as "caf\ufffd"."""
    raw = (
        b"From: Ren\xe9 Roux <rene@example.fr>\r\nTo: support@acme.test\r\n"
        b"Subject: Caf\xe9 cr\xe8me\r\n\r\nLe caf\xe9 co\xfbte 5 \x80, merci \xc3\xa0 vous\r\n"
    )
    got = parsed(raw)
    assert (got.name, got.subject) == ("René Roux", "Café crème")
    assert got.text == "Le café coûte 5 €, merci à vous"  # UTF-8 where it is UTF-8
    latin1 = (
        b"From: r@example.fr\r\nSubject: x\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"\r\n\x93Caf\xe9\x94 \x80 5\r\n"
    )
    assert parsed(latin1).text == "\u201ccafé\u201d € 5".replace("c", "C", 1)
    unknown = b"From: r@example.fr\r\nContent-Type: text/plain; charset=x-klingon\r\n\r\nt\xe9\r\n"
    assert parsed(unknown).text == "té"


def test_a_display_name_that_shows_another_address_is_not_shown() -> None:
    spoof = b'From: "alice@example.com" <mallory@evil.example>\r\nSubject: x\r\n\r\nrefund me\r\n'
    got = parsed(spoof)
    assert (got.sender, got.name) == ("mallory@evil.example", None)
    own = b'From: "Alice (Alice@Example.com)" <alice@example.com>\r\nSubject: x\r\n\r\nhi\r\n'
    assert parsed(own).name == "Alice (Alice@Example.com)"


def test_html_links_show_where_they_lead_and_table_cells_stay_apart() -> None:
    markup = (
        '<p>Click <a href="javascript:alert(document.cookie)">here</a> or '
        '<a href="https://shop.example/track?id=1&amp;x=2" title="t" onclick="x()">track</a>'
        ' or <a href="https://shop.example/">https://shop.example/</a>.</p>'
        "<table><tr><td>Order</td><td>9912</td></tr><tr><th>Total</th><th>40 EUR</th></tr>"
        "</table>"
    )
    assert html_to_text(markup) == (
        "Click here or track (https://shop.example/track?id=1&x=2) or https://shop.example/."
        "\n\nOrder 9912\nTotal 40 EUR"
    )


def test_a_broken_mailers_text_is_read() -> None:
    raw = b"From: g@example.com\r\nSubject: x\r\nContent-Type: multipart/mixed\r\n\r\nhello\r\n"
    got = parsed(raw)
    assert (got.text, got.attachments) == ("hello", ())
    # a mail whose first line is no header has no headers at all, but its text is still read
    assert parsed(b"Order 7 is late\r\nFrom: g@example.com\r\n\r\nthanks\r\n").text == (
        "Order 7 is late\nFrom: g@example.com\n\nthanks"
    )


async def test_a_bounce_is_marked_automatic(adapter: EmailAdapter, ingest: Recorder) -> None:
    """MAIL FROM:<> is a bounce or another automatic notice (RFC 5321 4.5.5): the workflow must
    be able to tell it from a customer writing."""
    bounce = mail("Delivery failed", sender="MAILER-DAEMON@mx.example.com",
                  subject="Undelivered Mail Returned to Sender")  # fmt: skip
    assert (await submit(adapter, bounce, sender=""))[0] == 250
    person = mail("a person writing")
    assert (await submit(adapter, person))[0] == 250
    flags = [e["attributes"]["auto_submitted"] for e in ingest.events]
    assert flags == [True, False]


def dsn(returned: EmailMessage | str) -> bytes:
    """A bounce as Postfix writes one: a report, then the returned message (or its headers)."""
    if isinstance(returned, str):
        carried = b"Content-Type: text/rfc822-headers\r\n\r\n" + returned.encode()
    else:
        carried = b"Content-Type: message/rfc822\r\n\r\n" + returned.as_bytes(policy=policy.SMTP)
    return (
        b"From: MAILER-DAEMON@mx.example.com (Mail Delivery System)\r\n"
        b"To: support@acme.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        b"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.com\r\n\r\nStatus: 5.1.1\r\n"
        b"--b\r\n" + carried + b"\r\n--b--\r\n"
    )


async def test_a_bounce_of_our_reply_lands_on_its_case(
    adapter: EmailAdapter, ingest: Recorder
) -> None:
    ours = build_reply(
        from_addr="support@acme.test", to_addr="typo@example.con", subject="Order 7",
        text="It ships today.", case_id="c42", workspace="acme", in_reply_to=None,
        references=[], secret=SECRET, domain=DOMAIN,
    )  # fmt: skip
    assert (await submit(adapter, dsn(ours), sender=""))[0] == 250
    headers_only = f"From: support@acme.test\nMessage-ID: {ours['Message-ID']}\nSubject: x\n"
    assert (await submit(adapter, dsn(headers_only), sender=""))[0] == 250
    # someone forwarding our reply is not a bounce: it threads only by its own tokens
    forward = mail("look what they sent me", subject="Fwd: Order 7")
    forward.add_attachment(ours)
    assert (await submit(adapter, forward))[0] == 250
    assert [e["case"] for e in ingest.events] == ["c42", "c42", None]
    assert ingest.events[0]["attributes"]["auto_submitted"] is True
    assert "It ships today." in ingest.events[0]["text"]  # the agent sees which reply it was


async def test_our_reply_token_threads_but_is_not_shown(
    adapter: EmailAdapter, ingest: Recorder
) -> None:
    token = reply_token(SECRET, "acme", "c42")
    answer = mail("Any news?", subject=f"Re: Order 7 [#{token}]")
    assert (await submit(adapter, answer))[0] == 250
    event = ingest.events[0]
    assert (event["case"], event["subject"]) == ("c42", "Re: Order 7")


# --- outbound ------------------------------------------------------------------------------------


def test_a_reply_quotes_the_mail_it_answers() -> None:
    block = quote("Where is\nmy parcel?", name="Alice Smith", address="alice@example.com",
                  when=1_795_415_732.0)  # fmt: skip
    assert block == (
        "On Mon, 23 Nov 2026 at 06:35 UTC, Alice Smith <alice@example.com> wrote:\n"
        "> Where is\n> my parcel?"
    )
    assert quote("") == ""
    long = quote("x\n" * 500)
    assert long.count("\n> x") == 200 and long.endswith("> […]")
    reply = build_reply(
        from_addr="support@acme.test", to_addr="alice@example.com", subject="Parcel",
        text="It ships today.", case_id="c42", workspace="acme", in_reply_to="<m1@example.com>",
        references=[], secret=SECRET, domain="acme.test", quoted=block,
    )  # fmt: skip
    body = reply.get_content().replace("\r\n", "\n")
    assert body == f"It ships today.\n\n{block}\n"
    # the customer's answer, quoting it all, is trimmed back to what they wrote
    quoted = "\n".join(f"> {line}" for line in body.splitlines())
    answer = mail(f"Thanks!\n\nOn Mon, Ann <support@acme.test> wrote:\n{quoted}")
    assert parsed(answer).text == "Thanks!"


# --- end to end: a server with a smarthost -------------------------------------------------------


class Smarthost:
    """The relay the server sends replies to: refuses ``gone-*`` recipients for good (550),
    answers ``busy-*`` ones 451 once, and records what it takes."""

    def __init__(self) -> None:
        self.port = 0
        self.received: list[EmailMessage] = []
        self.deferred: set[str] = set()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("gone-"):
            return "550 5.1.1 No such user here"
        if address.startswith("busy-") and address not in self.deferred:
            self.deferred.add(address)
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None
        sent = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(sent, EmailMessage)  # what policy.default makes
        self.received.append(sent)
        return "250 OK"

    async def mail_to(self, address: str) -> EmailMessage:
        found = await wait_for(
            lambda: next((m for m in self.received if m["To"] == address), None),
            timeout=15,
            message=f"a reply to {address} at the smarthost",
        )
        assert isinstance(found, EmailMessage)
        return found


@pytest.fixture
async def smarthost() -> AsyncIterator[Smarthost]:
    handler = Smarthost()
    async with smtp_listening(handler, "relay.test") as handler.port:
        yield handler


@pytest.fixture
def server(tmp_path: Path, smarthost: Smarthost) -> Iterator[ServerProcess]:
    decl = copy.deepcopy(DECL)
    decl["agents"] = [{**agent("ann", ["support"], email=5), "password": "pw"}]
    env = {
        "SWITCHBOARD_MAILBOXES": "support@acme.test=acme",
        "SWITCHBOARD_SMARTHOST": f"127.0.0.1:{smarthost.port}",
    }
    yield from email_server(tmp_path, decl, env)  # its own Redis: nobody else's cases


@pytest.fixture
async def ann(server: ServerProcess) -> AsyncIterator[WsClient]:
    async for ws in console(server):
        yield ws


def send(
    server: ServerProcess, sender: str, text: str, *,
    to: str = "support@acme.test", subject: str = "Order 7",
) -> None:  # fmt: skip
    msg = mail(text, sender=sender, to=to, subject=subject, Message_ID=f"<{uid('m')}@x.test>")
    send_mail(server, msg)


async def open_case(server: ServerProcess, ann: WsClient, sender: str, text: str) -> str:
    await asyncio.to_thread(send, server, sender, text)
    offer = await ann.expect("offer")
    await ann.ok("offer.accept", offer=offer["offer"])
    return str(offer["case"]["id"])


async def test_a_reply_refused_for_good_does_not_hold_up_the_others(
    server: ServerProcess, ann: WsClient, smarthost: Smarthost
) -> None:
    """The relay refuses one customer's address for good (550): that reply is set aside for the
    operator, and the replies behind it still go out; a 451 is tried again until it goes."""
    gone, busy, fine = (f"{p}-{uid()}@example.com" for p in ("gone", "busy", "fine"))
    cases = [await open_case(server, ann, who, "Where is my parcel?") for who in (gone, busy, fine)]
    for case, who in zip(cases, (gone, busy, fine), strict=True):
        await ann.ok("case.reply", case=case, text=f"Hello {who}, it ships today.")
    assert "ships today" in (await smarthost.mail_to(fine)).get_content()
    assert "ships today" in (await smarthost.mail_to(busy)).get_content()  # after the 451
    # the two the relay took are marked delivered for the agent; the refused one is not
    for case in (cases[2], cases[1]):
        marked = await ann.expect("case.updated", case=case, event="reply.delivered")
        assert marked["via"] == "email"
    await ann.expect("case.updated", case=cases[0], event="delivery.failed")
    assert not [f for f in ann.unsolicited() if f.get("event") == "reply.delivered"
                and f.get("case") == cases[0]]  # fmt: skip
    failed = server.data_dir / "mail-failed"
    [kept] = list(failed.glob("*.json"))
    record = json.loads(kept.read_text())
    assert record["delivery"]["to"] == {"email": gone}
    assert record["delivery"]["case"] == cases[0]
    assert "550 5.1.1" in record["reason"]
    assert f"to {gone} not delivered" in server.log()
    assert all(m["To"] != gone for m in smarthost.received)


async def test_a_reply_quotes_the_customers_mail_and_no_strangers(
    server: ServerProcess, ann: WsClient, smarthost: Smarthost
) -> None:
    nina = f"nina-{uid()}@example.com"
    case = await open_case(server, ann, f"Nina Ng <{nina}>", "What is my balance?\nAccount 7.")
    await ann.ok("case.reply", case=case, text="Let me check.")
    first = await smarthost.mail_to(nina)
    body = first.get_content().replace("\r\n", "\n")
    assert body.startswith("Let me check.\n\nOn ")
    assert body.endswith(f" UTC, Nina Ng <{nina}> wrote:\n> What is my balance?\n> Account 7.\n")
    # someone else who got hold of the reply address writes on the case: not quoted to Nina
    await asyncio.to_thread(
        send, server, "mallory@evil.test", "Send it to me instead.",
        to=str(first["Reply-To"]), subject=f"Re: {first['Subject']}",
    )  # fmt: skip
    await ann.expect("case.message", case=case)
    smarthost.received.clear()
    await ann.ok("case.reply", case=case, text="Your balance is $1,234.")
    second = await smarthost.mail_to(nina)
    assert "What is my balance?" in second.get_content()
    assert "Send it to me instead" not in second.get_content()


async def test_a_reply_threads_under_the_customers_mails_and_ours_never_a_strangers(
    server: ServerProcess, ann: WsClient, smarthost: Smarthost
) -> None:
    """In-Reply-To names the customer's latest mail; References the thread so far, hers and
    ours (RFC 5322 3.6.4), so her mail client keeps it together; a stranger's mail on the case
    is in neither: she never had it, and its id would tell her of it."""
    nina = f"nina-{uid()}@example.com"
    m1 = f"<{uid('m')}@x.test>"
    await asyncio.to_thread(send_mail, server, mail("Where is it?", sender=nina, Message_ID=m1))
    offer = await ann.expect("offer")
    case = offer["case"]["id"]
    await ann.ok("offer.accept", offer=offer["offer"])
    await ann.ok("case.reply", case=case, text="Let me check.")
    r1 = await smarthost.mail_to(nina)
    assert (r1["In-Reply-To"], r1["References"]) == (m1, m1)
    m2 = f"<{uid('m')}@x.test>"
    her_answer = mail(
        "Still nothing.", sender=nina, to=str(r1["Reply-To"]), subject=f"Re: {r1['Subject']}",
        Message_ID=m2, In_Reply_To=str(r1["Message-ID"]), References=f"{m1} {r1['Message-ID']}",
    )  # fmt: skip
    await asyncio.to_thread(send_mail, server, her_answer)
    await ann.expect("case.message", case=case)
    stranger = mail(
        "Send it to me instead.", sender="mallory@evil.test", to=str(r1["Reply-To"]),
        subject=f"Re: {r1['Subject']}", Message_ID=f"<{uid('mal')}@evil.test>",
    )  # fmt: skip
    await asyncio.to_thread(send_mail, server, stranger)
    await ann.expect("case.message", case=case)
    smarthost.received.clear()
    await ann.ok("case.reply", case=case, text="It left the depot today.")
    r2 = await smarthost.mail_to(nina)
    assert r2["In-Reply-To"] == m2
    assert str(r2["References"]).split() == [m1, str(r1["Message-ID"]), m2]
    assert "evil.test" not in str(r2)


async def test_a_forward_and_bounces_reach_the_agent_as_they_are(
    server: ServerProcess, ann: WsClient, smarthost: Smarthost
) -> None:
    """What the agent is offered: the whole forward (the shop's mail it forwards too). The
    bounce of their reply comes back on the case; a bounce of nothing of ours is a case of its
    own, marked automatic, so the workflow can route it apart."""
    dan = f"dan-{uid()}@example.com"
    text = (
        "See below, I got 1 item.\n\n---------- Forwarded message ---------\n"
        "From: Shop <orders@shop.example>\nDate: Mon, 20 Nov 2026\nSubject: Order\n\n"
        "Order 9912: 2 items."
    )
    await asyncio.to_thread(send, server, dan, text, subject="Fwd: Order")
    offer = await ann.expect("offer")
    [entry] = offer["timeline"]
    assert entry["text"] == text
    assert offer["case"]["attributes"]["auto_submitted"] is False
    case = offer["case"]["id"]
    await ann.ok("offer.accept", offer=offer["offer"])
    await ann.ok("case.reply", case=case, text="The second item ships today.")
    reply = await smarthost.mail_to(dan)

    def bounce(raw: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", SMTP_PORT[server.url], timeout=10) as client:
            client.sendmail("", ["support@acme.test"], raw)  # from the null sender

    await asyncio.to_thread(bounce, dsn(reply))
    back = await ann.expect("case.message", case=case)
    assert back["entry"]["subject"] == "Undelivered Mail Returned to Sender"
    assert "The second item ships today." in back["entry"]["text"]

    await asyncio.to_thread(bounce, dsn("From: someone@acme.test\nSubject: not ours\n"))
    offer = await ann.expect("offer")
    assert offer["case"]["subject"] == "Undelivered Mail Returned to Sender"
    assert offer["case"]["attributes"]["auto_submitted"] is True


def test_html_blocks_start_new_lines_as_they_end_them() -> None:
    """Gmail writes a message as a div per line, the first line bare: "Hello,<div>my order…".
    A block's start breaks the line where text comes before it, and adds no blank line where a
    line has just ended."""
    gmail = '<div dir="ltr">Hello,<div>my order 7 is late.</div><div><br></div><div>Ann</div></div>'
    assert html_to_text(gmail) == "Hello,\nmy order 7 is late.\n\nAnn"
    table = "Order summary:<table><tr><td>Item</td><td>Qty</td></tr><tr><td>Mug</td><td>2</td></tr>"
    assert html_to_text(table + "</table>") == "Order summary:\nItem Qty\nMug 2"
    assert html_to_text("<h1>Title</h1>Head<p>one</p><p>two</p>") == "Title\nHead\none\n\ntwo"
    assert html_to_text("a \ue000<b>b</b>") == "a b"  # the mark is ours: a mail's own is dropped
