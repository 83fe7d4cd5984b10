"""A customer writing again on their own mail — a reply to it before we answered, the usual
"forgot to say" — goes on in the case that mail opened, as a ticketing system threads by
In-Reply-To and References. Only the same address: a stranger naming the mail (a Cc'd
colleague replying to all) or a mail its domain disowns opens a case of its own.

The email channel end to end, as in tests/test_email_e2e.py (real server, smtplib, a real
console WebSocket)."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

from tests import test_email_e2e
from tests.email_server import send as send_mail
from tests.server import ServerProcess
from tests.test_email_e2e import MX, email_offer
from tests.ws_client import WsClient, uid

# test_email_e2e's fixtures: a server with the email adapter, and Ann's console on it
server = test_email_e2e.server
ann = test_email_e2e.ann


def mail(sender: str, text: str, *, auth: str = "dmarc=pass", on: str = "") -> EmailMessage:
    """A mail from ``sender``; ``on``: the Message-ID of the mail it answers."""
    msg = EmailMessage()
    msg["Authentication-Results"] = f"{MX}; {auth}"
    msg["From"] = sender
    msg["To"] = "support@acme.test"
    msg["Subject"] = "Re: Broken lamp" if on else "Broken lamp"
    msg["Message-ID"] = f"<{uid('m')}@example.com>"
    if on:
        msg["In-Reply-To"] = on
        msg["References"] = on
    msg.set_content(text)
    return msg


async def test_a_customer_writing_again_on_their_own_mail_stays_in_its_case(
    server: ServerProcess, ann: WsClient
) -> None:
    carol = f"{uid('carol')}@example.com"
    first = mail(carol, "My lamp arrived broken.")
    await asyncio.to_thread(send_mail, server, first)
    offer = await email_offer(ann)
    case = offer["case"]["id"]
    await ann.ok("offer.accept", offer=offer["offer"])

    await asyncio.to_thread(
        send_mail, server, mail(carol, "Forgot: order 5521.", on=first["Message-ID"])
    )
    more = await ann.expect("case.message", case=case)
    assert more["entry"]["text"] == "Forgot: order 5521."

    # a stranger naming Carol's mail, and one claiming to be Carol whom her domain disowns
    for sender, auth in ((f"{uid('eve')}@example.com", "dmarc=pass"), (carol, "dmarc=fail")):
        await asyncio.to_thread(
            send_mail, server, mail(sender, "Me too", auth=auth, on=first["Message-ID"])
        )
        other = await email_offer(ann)
        assert other["case"]["id"] != case, sender
