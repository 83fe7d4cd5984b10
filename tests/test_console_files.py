"""Files customers send, in the agent console: an email's attachment is saved from the case's
history under its own name, exactly as sent; a file the agent may no longer read says so.

A real ``switchboard serve`` with the email adapter (tests/email_server.py) and headless
Chromium (tests/test_console.py's harness); mail goes in over SMTP with smtplib.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests import test_console
from tests.email_server import email_server, send
from tests.server import ServerProcess
from tests.test_console import Web, panel

chromium = test_console.chromium
browser = test_console.browser
web = test_console.web

browser_test = pytest.mark.browser

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 64


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    env = {"SWITCHBOARD_MAILBOXES": "support@acme.test=acme"}
    yield from email_server(tmp_path, test_console.WORKSPACE, env)


def _mail_with_invoice() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Kim Lee <kim@example.com>"
    msg["To"] = "support@acme.test"
    msg["Subject"] = "Charged twice"
    msg["Message-ID"] = "<invoice-1@example.com>"
    msg.set_content("The invoice is attached.")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="Rechnung März.pdf")
    return msg


@browser_test
async def test_an_agent_saves_the_file_a_customer_sent(
    web: Web, server: ServerProcess, tmp_path: Path
) -> None:
    sam = await web.agent("sam")
    await asyncio.to_thread(send, server, _mail_with_invoice())
    await sam.get_by_test_id("offer-accept").click()
    save = panel(sam).get_by_test_id("attachment-save")
    await expect(save).to_have_accessible_name("Save Rechnung März.pdf")
    async with sam.expect_download() as info:
        await save.click()
    download = await info.value
    assert download.suggested_filename == "Rechnung März.pdf"
    await download.save_as(tmp_path / "saved.pdf")
    assert (tmp_path / "saved.pdf").read_bytes() == PDF
    await expect(panel(sam).get_by_test_id("attachment-error")).to_be_hidden()
