"""The email adapter against real sockets: smtplib in, a recording ingest callable out, and a
real aiosmtpd sink for replies. The ingest recorder is the adapter's boundary, not a fake Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import smtplib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

import adapters.email as email_adapter
import adapters.email_auth as email_auth
import adapters.email_parse as email_parse
import adapters.email_tokens as email_tokens
from adapters.email import (
    EmailAdapter,
    EmailConfig,
    IngestRefused,
    build_reply,
    make_message_id,
    reply_token,
    verify_message_id,
    verify_token,
)
from adapters.email_parse import Limits, MessageTooComplex, html_to_text, parse_message, trim_quoted
from tests.email_server import smtp_listening

SECRET = b"test-reply-secret-0123456789abcdef"
DOMAIN = "acme.test"
MAILBOXES = {
    "support@acme.test": ("acme", "support"),
    "billing@acme.test": ("acme", "billing"),
    "help@globex.test": ("globex", None),
}
SIZE_CAP = 256 * 1024


class Recorder:
    """The ingest side of the boundary: records calls, or refuses while ``fail`` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: Exception | None = None

    async def __call__(self, workspace: str, event: dict[str, Any]) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.calls.append((workspace, event))
        return {
            "case": event["case"] or f"c{len(self.calls)}",
            "customer": "u1",
            "duplicate": False,
        }

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for _, event in self.calls]


def config(**overrides: Any) -> EmailConfig:
    settings: dict[str, Any] = {
        "hostname": "127.0.0.1",
        "port": 0,
        "mailboxes": MAILBOXES,
        "reply_secret": SECRET,
        "domain": DOMAIN,
        "max_message_bytes": SIZE_CAP,
    }
    return EmailConfig(**(settings | overrides))


@pytest.fixture
def ingest() -> Recorder:
    return Recorder()


@pytest.fixture
async def adapter(ingest: Recorder) -> AsyncIterator[EmailAdapter]:
    async with EmailAdapter(config(), ingest) as running:
        yield running


def mail(
    text: str = "Hello, my order is late.",
    *,
    subject: str = "Order 7",
    sender: str = "Alice Example <alice@example.com>",
    to: str = "support@acme.test",
    **headers: str,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)  # first: set_content() drops Content-* headers
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    return message


def _transact(port: int, raw: bytes, rcpts: tuple[str, ...], sender: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        client.ehlo()
        code, reply = client.mail(sender)
        assert code == 250, reply
        for rcpt in rcpts:
            code, reply = client.rcpt(rcpt)
            if code != 250:
                return code, reply
        return client.data(raw)


async def submit(
    adapter: EmailAdapter,
    message: EmailMessage | bytes,
    *,
    rcpts: tuple[str, ...] = ("support@acme.test",),
    sender: str = "alice@example.com",
) -> tuple[int, bytes]:
    """One SMTP transaction from a real client; returns the final reply (RCPT or DATA)."""
    raw = message if isinstance(message, bytes) else message.as_bytes(policy=policy.SMTP)
    return await asyncio.to_thread(_transact, adapter.port, raw, rcpts, sender)


async def assert_still_serving(adapter: EmailAdapter, ingest: Recorder) -> None:
    before = len(ingest.calls)
    code, reply = await submit(adapter, mail("still here", Message_ID="<alive@example.com>"))
    assert code == 250, reply
    assert len(ingest.calls) == before + 1 and ingest.events[-1]["text"] == "still here"


# --- inbound ------------------------------------------------------------------------------------


async def test_plain_text_mail_becomes_one_normalized_event(
    adapter: EmailAdapter, ingest: Recorder
) -> None:
    sent_at = datetime.now(UTC) - timedelta(minutes=5)
    message = mail(
        sender="Alice Example <Alice@Example.COM>",
        Message_ID="<m1@example.com>",
        Date=format_datetime(sent_at),
        Content_Language="de-DE",
    )
    code, reply = await submit(adapter, message, rcpts=("Billing@acme.test",))
    assert code == 250, reply
    [(workspace, event)] = ingest.calls
    assert workspace == "acme"
    # no token of ours: its thread is Alice's own conversation (test_email_threads_own.py)
    assert re.fullmatch(r"mail:[0-9a-f]{40}", event.pop("thread")), event
    assert event == {
        "id": "<m1@example.com>",
        "channel": "email",
        "kind": "message",
        "identities": {"email": "alice@example.com"},
        "name": "Alice Example",
        "case": None,
        "subject": "Order 7",
        "text": "Hello, my order is late.",
        "attachments": [],
        "attributes": {
            "to": "billing@acme.test",
            "queue_hint": "billing",
            "message_id": "<m1@example.com>",
            "language": "de-de",
            "untrimmed_length": len("Hello, my order is late.\n"),
            "truncated": False,
            "attachments_omitted": 0,
            "auto_submitted": False,
            "sender_auth": "unchecked",  # no MTA's Authentication-Results trusted
        },
        "ts": pytest.approx(sent_at.timestamp(), abs=1),
    }


async def test_missing_message_id_and_insane_date(adapter: EmailAdapter, ingest: Recorder) -> None:
    raw = mail(Date="Mon, 01 Jan 1990 00:00:00 +0000").as_bytes(policy=policy.SMTP)
    assert (await submit(adapter, raw))[0] == 250
    assert (await submit(adapter, raw))[0] == 250  # a retry carries the same idempotency key
    first, second = ingest.events
    assert first["id"].startswith("sha256:") and first["id"] == second["id"]
    assert abs(first["ts"] - time.time()) < 60


async def test_html_only_mail_reaches_ingest_as_plain_text(
    adapter: EmailAdapter, ingest: Recorder
) -> None:
    message = mail(Message_ID="<h1@example.com>")
    message.set_content(
        "<html><head><style>p{color:red}</style></head><body>"
        "<p>Hello &amp; welcome</p><script>alert('x')</script>"
        '<img src="x" onerror="alert(1)"><div>second<br>line</div></body></html>',
        subtype="html",
    )
    assert (await submit(adapter, message))[0] == 250
    text = ingest.events[0]["text"]
    assert text == "Hello & welcome\n\nsecond\nline"
    for markup in ("<", "script", "onerror", "alert", "color"):
        assert markup not in text


async def test_alternative_prefers_text_plain(adapter: EmailAdapter, ingest: Recorder) -> None:
    message = mail("the plain part")
    message.add_alternative("<p>the <b>html</b> part</p>", subtype="html")
    assert (await submit(adapter, message))[0] == 250
    assert ingest.events[0]["text"] == "the plain part"
    assert ingest.events[0]["attachments"] == []


async def test_attachments_recorded_with_sizes_not_bytes(
    adapter: EmailAdapter, ingest: Recorder
) -> None:
    message = mail("see attached")
    message.add_attachment(b"%PDF" + b"x" * 1230, maintype="application", subtype="pdf",
                           filename="invoice.pdf")  # fmt: skip
    message.add_attachment(b"\x89PNG" + b"\0" * 46, maintype="image", subtype="png",
                           filename="shot.png", disposition="inline")  # fmt: skip
    message.add_attachment("note text", filename="notes.txt")
    assert (await submit(adapter, message))[0] == 250
    event = ingest.events[0]
    assert event["text"] == "see attached"
    assert event["attachments"] == [
        {"name": "invoice.pdf", "type": "application/pdf", "size": 1234},
        {"name": "shot.png", "type": "image/png", "size": 50},
        {"name": "notes.txt", "type": "text/plain", "size": len("note text\r\n")},  # as sent
    ]


async def test_oversized_mail_refused_with_552(adapter: EmailAdapter, ingest: Recorder) -> None:
    big = mail(("y" * 70 + "\n") * (SIZE_CAP // 70 + 10))
    code, reply = await submit(adapter, big)
    assert (code, reply[:5]) == (552, b"5.3.4")

    def sendmail_with_size() -> None:
        with smtplib.SMTP("127.0.0.1", adapter.port, timeout=15) as client:
            client.ehlo()
            assert client.esmtp_features["size"] == str(SIZE_CAP)
            client.sendmail("alice@example.com", ["support@acme.test"], big.as_bytes())

    with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # SIZE= in MAIL FROM
        await asyncio.to_thread(sendmail_with_size)
    assert refused.value.smtp_code == 552 and refused.value.smtp_error.startswith(b"5.3.4")
    assert ingest.calls == []
    await assert_still_serving(adapter, ingest)


def _nested(depth: int) -> bytes:
    head = b"From: alice@example.com\r\nTo: support@acme.test\r\nSubject: bomb\r\n"
    lines = [head + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b0"\r\n']
    for level in range(1, depth):
        lines.append(
            b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n' % (level - 1, level)
        )
    lines.append(b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep\r\n" % (depth - 1))
    lines.extend(b"--b%d--\r\n" % level for level in reversed(range(depth)))
    return b"\r\n".join(lines)


def _wide(parts: int) -> bytes:
    head = b"From: alice@example.com\r\nTo: support@acme.test\r\nSubject: bomb\r\n"
    head += b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    return head + b"--b\r\n\r\nx\r\n" * parts + b"--b--\r\n"


@pytest.mark.parametrize(
    "raw", [_nested(30), _nested(3000), _wide(5000)], ids=["deep", "very-deep", "wide"]
)
async def test_mime_bombs_refused_and_server_keeps_serving(
    adapter: EmailAdapter, ingest: Recorder, raw: bytes
) -> None:
    code, reply = await submit(adapter, raw)
    assert (code, reply) == (552, b"5.3.4 Message too complex")
    assert ingest.calls == []
    await assert_still_serving(adapter, ingest)


async def test_parse_time_budget_refuses(ingest: Recorder) -> None:
    async with EmailAdapter(config(parse_timeout_s=0.0), ingest) as hurried:
        code, reply = await submit(hurried, mail())
    assert (code, reply) == (552, b"5.3.4 Message too complex")
    assert ingest.calls == []


async def test_undecodable_charsets_do_not_crash(adapter: EmailAdapter, ingest: Recorder) -> None:
    raw = (
        b"From: =?x-klingon?q?Worf?= <worf@example.com>\r\nTo: support@acme.test\r\n"
        b"Subject: =?x-bogus?q?caf=E9?= \xff\xfe ok\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="x-klingon"\r\nContent-Transfer-Encoding: 8bit\r\n'
        b"\r\ncaf\xe9 \xff tea\r\n"
    )
    code, reply = await submit(adapter, raw)
    assert code == 250, reply
    event = ingest.events[0]
    assert event["identities"] == {"email": "worf@example.com"}
    assert event["text"].startswith("caf") and event["text"].endswith("tea")
    assert event["subject"].endswith("ok")


async def test_unknown_recipient_refused_550(adapter: EmailAdapter, ingest: Recorder) -> None:
    code, reply = await submit(adapter, mail(), rcpts=("nobody@acme.test",))
    assert (code, reply[:5]) == (550, b"5.1.1")
    code, reply = await submit(adapter, mail(), rcpts=("support+anything@acme.test",))
    assert code == 250, reply
    assert [ws for ws, _ in ingest.calls] == ["acme"]


async def test_one_event_per_workspace_addressed(adapter: EmailAdapter, ingest: Recorder) -> None:
    rcpts = ("support@acme.test", "billing@acme.test", "help@globex.test")
    assert (await submit(adapter, mail(Message_ID="<x@example.com>"), rcpts=rcpts))[0] == 250
    assert [(ws, e["attributes"]["to"]) for ws, e in ingest.calls] == [
        ("acme", "support@acme.test"),
        ("globex", "help@globex.test"),
    ]


async def test_reply_to_our_message_id_threads_to_the_case(
    adapter: EmailAdapter, ingest: Recorder
) -> None:
    ours = make_message_id(SECRET, "acme", "c42", DOMAIN)
    message = mail("Thanks!", In_Reply_To=ours, References=f"<first@example.com> {ours}")
    assert (await submit(adapter, message))[0] == 250
    assert ingest.events[0]["case"] == "c42" and ingest.events[0]["thread"] == "c42"


@pytest.mark.parametrize(
    "where", ["plus-address", "subject"], ids=["plus-address", "subject-token"]
)
async def test_reply_tokens_thread_to_the_case(
    adapter: EmailAdapter, ingest: Recorder, where: str
) -> None:
    token = reply_token(SECRET, "acme", "c7")
    if where == "plus-address":
        code, _ = await submit(adapter, mail(), rcpts=(f"support+{token}@acme.test",))
    else:
        code, _ = await submit(adapter, mail(subject=f"Re: Order 7 [#{token}]"))
    assert code == 250
    assert ingest.events[0]["case"] == "c7"


def _forgeries() -> Iterator[str]:
    genuine = make_message_id(SECRET, "acme", "c42", DOMAIN)
    mac = genuine.split(".")[2].split("@")[0]
    yield genuine.replace(mac, ("0" if mac[0] != "0" else "1") + mac[1:])  # bad MAC
    yield genuine.replace("c42.", "c43.", 1)  # MAC for another case
    yield make_message_id(SECRET, "globex", "c42", DOMAIN)  # another workspace
    yield make_message_id(b"an-old-or-foreign-secret-0123456", "acme", "c42", DOMAIN)  # stale
    yield make_message_id(SECRET, "acme", "c42", "evil.test")  # another domain
    yield "<c42@acme.test>"  # a guessable id


@pytest.mark.parametrize("forged", list(_forgeries()))
async def test_forged_or_stale_tokens_never_thread(
    adapter: EmailAdapter, ingest: Recorder, forged: str
) -> None:
    token = forged.strip("<>").split("@")[0].rsplit(".", 2)
    subject_token = f"{token[0]}.{token[-1]}" if len(token) == 3 else "c42.0000000000000000"
    message = mail(subject=f"Re: [#{subject_token}]", In_Reply_To=forged, References=forged)
    code, _ = await submit(adapter, message, rcpts=(f"support+{subject_token}@acme.test",))
    assert code == 250
    # a forged token names no case: the mail is at most on the sender's own conversation
    assert ingest.events[0]["case"] is None
    assert str(ingest.events[0]["thread"]).startswith("mail:"), ingest.events[0]


async def test_quoted_earlier_text_is_trimmed(adapter: EmailAdapter, ingest: Recorder) -> None:
    body = (
        "Still broken, see below.\n> inline quote\nReally.\n\n"
        "On Mon, 1 Jan 2024 at 10:00, Bob Agent <support@acme.test> wrote:\n"
        "> Have you tried turning it off?\n> \n"
    )
    assert (await submit(adapter, mail(body)))[0] == 250
    event = ingest.events[0]
    assert event["text"] == "Still broken, see below.\nReally."
    assert event["attributes"]["untrimmed_length"] == len(body)


async def test_ingest_failure_answers_451_and_server_keeps_serving(
    adapter: EmailAdapter, ingest: Recorder
) -> None:
    ingest.fail = IngestRefused("redis is away")
    code, reply = await submit(adapter, mail(Message_ID="<retry@example.com>"))
    assert (code, reply) == (451, b"4.3.0 Temporary failure, try again")
    ingest.fail = None
    code, _ = await submit(adapter, mail(Message_ID="<retry@example.com>"))  # the MTA's retry
    assert code == 250 and ingest.events[0]["id"] == "<retry@example.com>"
    await assert_still_serving(adapter, ingest)


async def test_permanent_refusal_answers_554_so_the_sender_stops_retrying(
    adapter: EmailAdapter, ingest: Recorder
) -> None:
    from router.errors import BadRequest

    ingest.fail = BadRequest("identities.email: not an email address")
    code, reply = await submit(adapter, mail(Message_ID="<bad@example.com>"))
    assert code == 554 and b"not an email address" in reply
    ingest.fail = None
    await assert_still_serving(adapter, ingest)


def _mail_from(port: int, sender: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        client.ehlo()
        return client.mail(sender)


async def test_only_listed_peers_may_deliver(ingest: Recorder) -> None:
    """With SWITCHBOARD_SMTP_PEERS set, a sender from elsewhere is refused at MAIL FROM (and
    nothing is ingested); the listed MTA's mail goes through."""
    elsewhere = config(peers=email_adapter.parse_peers("10.0.0.0/8, 2001:db8::/32"))
    async with EmailAdapter(elsewhere, ingest) as guarded:
        code, reply = await asyncio.to_thread(_mail_from, guarded.port, "alice@example.com")
        assert (code, reply) == (554, b"5.7.1 Not accepting mail from this address")
    assert ingest.calls == []
    async with EmailAdapter(config(peers=email_adapter.parse_peers("127.0.0.1")), ingest) as mta:
        assert (await submit(mta, mail()))[0] == 250
    assert len(ingest.calls) == 1


async def test_trusting_headers_on_an_open_port_warns(
    ingest: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    wide = config(hostname="0.0.0.0", authserv_ids=frozenset({"mx.acme.test"}))
    with caplog.at_level("WARNING", logger="switchboard.adapters.email"):
        async with EmailAdapter(wide, ingest):
            pass
        assert "set SWITCHBOARD_SMTP_PEERS" in caplog.text
        caplog.clear()
        async with EmailAdapter(config(authserv_ids=frozenset({"mx.acme.test"})), ingest):
            pass  # loopback: only this host can reach it
        guarded = dataclasses.replace(wide, peers=email_adapter.parse_peers("127.0.0.1"))
        async with EmailAdapter(guarded, ingest):
            pass
        assert "SWITCHBOARD_SMTP_PEERS" not in caplog.text


def test_peers_parse_and_match() -> None:
    peers = email_adapter.parse_peers(" 192.0.2.7 , 10.1.0.0/16,::1")
    assert [str(p) for p in peers] == ["192.0.2.7/32", "10.1.0.0/16", "::1/128"]
    adapter = EmailAdapter(config(peers=peers), Recorder())
    assert adapter.peer_allowed(("10.1.200.3", 40000))
    assert adapter.peer_allowed(("::ffff:192.0.2.7", 40000, 0, 0))  # IPv4 on a dual-stack socket
    assert adapter.peer_allowed(("::1", 40000, 0, 0))
    assert not adapter.peer_allowed(("10.2.0.1", 40000))
    assert not adapter.peer_allowed(None) and not adapter.peer_allowed(("not an ip", 1))
    assert EmailAdapter(config(), Recorder()).peer_allowed(("203.0.113.9", 25))  # no list: anyone
    for bad in ("10.0.0.0/33", "mx.example.com", "10.0.0.1;rm"):
        with pytest.raises(ValueError, match="SMTP peer"):
            email_adapter.parse_peers(bad)


async def test_stop_is_idempotent_and_frees_the_port(ingest: Recorder) -> None:
    running = EmailAdapter(config(), ingest)
    await running.start()
    port = running.port
    await running.stop()
    await running.stop()
    with pytest.raises(RuntimeError):
        running.port  # noqa: B018
    with pytest.raises(OSError):
        await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", port, timeout=5)


async def test_stop_drains_a_mail_in_flight() -> None:
    entered, gate = asyncio.Event(), asyncio.Event()

    class Slow(Recorder):
        async def __call__(self, workspace: str, event: dict[str, Any]) -> dict[str, Any]:
            entered.set()
            await gate.wait()
            return await super().__call__(workspace, event)

    ingest = Slow()
    running = EmailAdapter(config(), ingest)
    await running.start()
    reply = asyncio.create_task(submit(running, mail()))
    await asyncio.wait_for(entered.wait(), 10)
    stopping = asyncio.create_task(running.stop())
    done, _ = await asyncio.wait({stopping}, timeout=0.2)
    assert not done  # stop() waits for the mail that is being ingested
    gate.set()
    assert (await asyncio.wait_for(reply, 10))[0] == 250
    await asyncio.wait_for(stopping, 10)
    assert len(ingest.calls) == 1


# --- pure helpers -------------------------------------------------------------------------------


def test_tokens_round_trip_and_bind_workspace() -> None:
    token = reply_token(SECRET, "acme", "c_01HZX")
    assert verify_token(SECRET, "acme", token) == "c_01HZX"
    assert verify_token(SECRET, "globex", token) is None
    assert verify_token(SECRET, "acme", token[:-1] + "x") is None
    mid = make_message_id(SECRET, "acme", "c_01HZX", DOMAIN)
    assert verify_message_id(SECRET, "acme", DOMAIN, mid) == "c_01HZX"
    assert mid != make_message_id(SECRET, "acme", "c_01HZX", DOMAIN)  # fresh nonce
    with pytest.raises(ValueError):
        reply_token(SECRET, "acme", "c42@evil\r\n")


def test_html_to_text_and_trim() -> None:
    assert html_to_text("<ul><li>a</li><li>b &lt;3</li></ul>") == "a\nb <3"
    outlook = "Sure.\n\n________________________________\nFrom: Bob\nSent: Monday\n\nold"
    assert trim_quoted(outlook) == "Sure."
    assert trim_quoted("> only a quote") == "> only a quote"  # nothing left: keep it all


def test_hostile_html_and_headers_stay_within_budget() -> None:
    head = b"From: a@example.com\r\nSubject: x\r\nContent-Type: text/html; x=" + b"(x)" * 5000
    html = b"<div>" * 50_000 + b"deep <b>text</b>" + b"<a " * 50_000
    parsed = parse_message(head + b"\r\n\r\n" + html, Limits(budget_s=5.0))
    assert parsed.text.startswith("deep text") and "<div" not in parsed.text


def test_parse_limits_are_configurable() -> None:
    parsed = parse_message(_nested(5), Limits(max_depth=10))
    assert parsed.text == "deep"
    with pytest.raises(MessageTooComplex):
        parse_message(_nested(5), Limits(max_depth=3))


def test_public_api_is_exactly_all() -> None:
    for module in (email_adapter, email_parse, email_tokens, email_auth):
        exported = set(module.__all__)
        assert exported <= set(vars(module))
        defined = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", "") == module.__name__
        }
        assert defined <= exported


# --- outbound -----------------------------------------------------------------------------------


class Sink:
    """A real SMTP server that records what it is given."""

    def __init__(self) -> None:
        self.port = 0
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.mail_from is not None and envelope.original_content is not None
        self.received.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 OK"


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    handler = Sink()
    async with smtp_listening(handler, "sink.test") as handler.port:
        yield handler


def outbound(sink: Sink) -> EmailAdapter:
    settings = config(smarthost_host="127.0.0.1", smarthost_port=sink.port)
    return EmailAdapter(settings, Recorder())  # deliver() needs no listening server


async def test_deliver_sends_a_threaded_reply(sink: Sink) -> None:
    delivery = {
        "case": "c42",
        "to": {"email": "alice@example.com"},
        "subject": "Re: RE: Order 7",
        "text": "Your parcel ships today.\nBob",
        "agent": {"name": "Bob Agent"},
        "in_reply_to": "<m2@example.com>",
        "references": ["<m1@example.com>", "<m2@example.com>"],
    }
    message_id = await outbound(sink).deliver("acme", delivery)
    [(mail_from, rcpts, raw)] = sink.received
    assert (mail_from, rcpts) == ("support@acme.test", ["alice@example.com"])
    sent = message_from_bytes(raw, policy=policy.default)
    token = reply_token(SECRET, "acme", "c42")
    assert sent["From"] == "Bob Agent <support@acme.test>"
    assert sent["To"] == "alice@example.com"
    assert sent["Reply-To"] == f"support+{token}@acme.test"
    assert sent["Subject"] == f"Re: Order 7 [#{token}]"
    assert sent["Message-ID"] == message_id
    assert verify_message_id(SECRET, "acme", DOMAIN, message_id) == "c42"
    assert sent["In-Reply-To"] == "<m2@example.com>"
    assert sent["References"] == "<m1@example.com> <m2@example.com>"
    assert sent["Date"] is not None and sent["Auto-Submitted"] is None
    assert sent.get_content().replace("\r\n", "\n") == "Your parcel ships today.\nBob\n"


async def test_a_second_reply_does_not_double_prefix_or_token(sink: Sink) -> None:
    first = build_reply(
        from_addr="support@acme.test", to_addr="alice@example.com", subject="Order 7",
        text="a", case_id="c42", workspace="acme", in_reply_to="<m1@example.com>",
        references=[], secret=SECRET, domain=DOMAIN,
    )  # fmt: skip
    again = build_reply(
        from_addr="support@acme.test", to_addr="alice@example.com", subject=str(first["Subject"]),
        text="b", case_id="c42", workspace="acme", in_reply_to=str(first["Message-ID"]),
        references=[str(first["Message-ID"])], secret=SECRET, domain=DOMAIN,
    )  # fmt: skip
    assert again["Subject"] == first["Subject"]
    assert str(again["Subject"]).count("Re:") == 1
    # a reply to a mail that came without a Message-ID still answers it; a first mail does not
    bare: dict[str, Any] = dict(
        from_addr="support@acme.test", to_addr="alice@example.com", subject="Order 7", text="c",
        case_id="c42", workspace="acme", in_reply_to=None, references=[], secret=SECRET,
        domain=DOMAIN,
    )  # fmt: skip
    assert str(build_reply(**bare, answers=True)["Subject"]).startswith("Re: Order 7 [#")
    assert str(build_reply(**bare)["Subject"]).startswith("Order 7 [#")


def test_a_reply_built_again_is_the_same_message() -> None:
    """The outbox delivers at least once: a reply sent again keeps its Message-ID (the
    customer's mail client shows it once), made from the reply's timeline entry."""
    args: dict[str, Any] = dict(
        from_addr="support@acme.test", to_addr="alice@example.com", subject="Order 7",
        text="a", case_id="c42", workspace="acme", in_reply_to=None, references=[],
        secret=SECRET, domain=DOMAIN,
    )  # fmt: skip
    once, again = (build_reply(**args, reply_id="n1a2b3")["Message-ID"] for _ in range(2))
    assert once == again
    assert verify_message_id(SECRET, "acme", DOMAIN, str(once)) == "c42"
    assert build_reply(**args, reply_id="n1a2b4")["Message-ID"] != once
    assert build_reply(**args)["Message-ID"] != build_reply(**args)["Message-ID"]


async def test_header_injection_is_neutralised(sink: Sink) -> None:
    delivery = {
        "case": "c42",
        "to": {"email": "alice@example.com"},
        "subject": "hi\r\nBcc: victim@evil.test",
        "text": "body",
        "agent": {"name": "Bob\r\nX-Injected: yes"},
        "in_reply_to": "<m1@example.com>\r\nBcc: victim@evil.test",
        "references": ["<m0@example.com>\nCc: victim@evil.test"],
    }
    await outbound(sink).deliver("acme", delivery)
    [(_, rcpts, raw)] = sink.received
    assert rcpts == ["alice@example.com"]
    sent = message_from_bytes(raw, policy=policy.default)
    for header in ("Bcc", "Cc", "X-Injected"):
        assert sent[header] is None
    assert str(sent["Subject"]).startswith("Re: hi Bcc: victim@evil.test [#")
    assert sent["In-Reply-To"] == "<m1@example.com>"
    assert b"victim" not in raw.split(b"\r\n\r\n")[0].replace(b"Subject: Re: hi Bcc: victim", b"")


async def test_injection_in_the_recipient_is_refused(sink: Sink) -> None:
    delivery = {
        "case": "c42",
        "to": {"email": "alice@example.com\r\nBcc: victim@evil.test"},
        "subject": "hi",
        "text": "body",
    }
    with pytest.raises(ValueError):
        await outbound(sink).deliver("acme", delivery)
    assert sink.received == []
