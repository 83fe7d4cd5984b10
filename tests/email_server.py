"""A real ``switchboard serve`` with the email adapter, for the end-to-end email tests: its
SMTP port, mail sent to it as the MTA in front would relay it, and an agent's console signed in
and available to take what it routes."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

from tests.server import ServerProcess, write_config
from tests.util import free_port
from tests.ws_client import WsClient, connect_agent

SMTP_PORT: dict[str, int] = {}  # server URL -> its SMTP port


def email_server(
    tmp_path: Path, decl: dict[str, Any], env: dict[str, str], *, redis_url: str = ""
) -> Iterator[ServerProcess]:
    """For a fixture to ``yield from``: the server, with ``env`` on top of a free SMTP port;
    its log is printed when it stops (pytest shows it for a failed test)."""
    port = free_port()
    srv = ServerProcess(
        tmp_path / "srv",
        write_config(tmp_path / "ws.json", decl),
        redis_url=redis_url,
        adapters="email",
        env={"SWITCHBOARD_SMTP_PORT": str(port), **env},
    )
    SMTP_PORT[srv.url] = port
    try:
        yield srv
    finally:
        srv.stop()
        print(srv.log()[-6000:])


def send(server: ServerProcess, msg: EmailMessage) -> None:
    """One mail through the server's SMTP adapter."""
    with smtplib.SMTP("127.0.0.1", SMTP_PORT[server.url], timeout=10) as client:
        client.send_message(msg)


async def console(server: ServerProcess, agent: str = "ann") -> AsyncIterator[WsClient]:
    """For a fixture to ``async for``/yield: ``agent``'s console, signed in and available."""
    login = await asyncio.to_thread(server.login, agent)
    ws = await connect_agent(server.ws_url, login["ws_token"], origin=server.url)
    await ws.expect("hello")
    await ws.ok("status", status="available")
    try:
        yield ws
    finally:
        await ws.close()


@contextlib.asynccontextmanager
async def smtp_listening(handler: Any, hostname: str) -> AsyncIterator[int]:
    """An SMTP server on a free loopback port, its sessions answered by ``handler`` (aiosmtpd
    ``handle_*`` methods): a relay or sink for the server's replies. Yields the port."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname=hostname, loop=loop), "127.0.0.1", 0
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
