"""Email adapter: inbound SMTP becomes normalized events, agent replies go out over SMTP.

Inbound runs an aiosmtpd server on the running event loop, inside the Switchboard process. A
mail is answered ``250`` only after the injected ``ingest`` callable returned for every
workspace it was addressed to; any exception from ``ingest`` answers ``451 4.3.0`` so the sending
MTA retries (ingest deduplicates on the event ``id``, so a retry is harmless). The adapter never
touches routing state itself.

SMTP replies: ``550 5.1.1`` unknown mailbox, ``552 5.3.4`` over the size cap (SIZE is advertised)
or too complex to parse (parts, depth, time), ``550 5.1.7`` no usable sender, ``554 5.6.0`` a
parser failure, ``451 4.3.x`` anything worth retrying.

Outbound builds every header from scratch (nothing is copied from inbound mail) with control
characters removed, and hands the message to the configured smarthost.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from types import TracebackType
from typing import Any, AnyStr, Protocol

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.email_parse import (
    Limits,
    MessageTooComplex,
    ParsedMail,
    clean_line,
    normalize,
    normalize_message_id,
    parse_address,
    parse_message,
)
from adapters.email_tokens import (
    make_message_id,
    reply_nonce,
    reply_token,
    strip_tokens,
    verify_message_id,
    verify_token,
)

__all__ = [
    "EmailAdapter",
    "EmailConfig",
    "FileStore",
    "Ingest",
    "IngestRefused",
    "build_reply",
    "make_message_id",
    "parse_peers",
    "quote",
    "reply_nonce",
    "reply_token",
    "send",
    "verify_message_id",
    "verify_token",
]

log = logging.getLogger("switchboard.adapters.email")

Ingest = Callable[[str, dict[str, Any]], Awaitable[Mapping[str, Any]]]
"""``(workspace, event) -> {"case": ..., "customer": ..., "duplicate": bool}``; raises to refuse."""


class FileStore(Protocol):
    """Where attachments' bytes are kept for agents to open (router/attachments.py)."""

    async def keep(self, ws: str, name: str, ctype: str, data: bytes) -> str: ...

    async def link(self, ws: str, ids: Iterable[str], case: str) -> None: ...

    async def drop(self, ws: str, ids: Iterable[str]) -> None: ...


class IngestRefused(Exception):
    """Stand-in for ``router.errors.SwitchboardError`` in tests. The adapter treats *any*
    exception from ingest as "not accepted" and answers 451."""


@dataclass(frozen=True, kw_only=True)
class EmailConfig:
    hostname: str  # address the SMTP server binds to
    port: int  # 0 picks a free port; see EmailAdapter.port
    mailboxes: Mapping[str, tuple[str, str | None]]  # address -> (workspace, queue hint)
    reply_secret: bytes  # HMAC key for reply tokens; rotating it orphans older tokens
    domain: str  # right-hand side of our Message-IDs; also the SMTP greeting name
    max_message_bytes: int = 10 * 1024 * 1024
    max_parts: int = 100
    max_depth: int = 10
    parse_timeout_s: float = 2.0
    max_text_chars: int = 60_000
    max_recipients: int = 50
    parse_workers: int = 4
    idle_timeout_s: float = 300.0
    drain_timeout_s: float = 10.0
    tls_context: ssl.SSLContext | None = None  # offers STARTTLS inbound when set
    smarthost_host: str = "localhost"
    smarthost_port: int = 25
    smarthost_username: str | None = None
    smarthost_password: str | None = None
    smarthost_starttls: bool | None = None  # None: use STARTTLS when offered
    smarthost_timeout_s: float = 30.0
    from_addresses: Mapping[str, str] = field(default_factory=dict)  # workspace -> From
    plus_address_replies: bool = True  # Reply-To: support+{token}@...
    # the MTAs whose Authentication-Results headers say who sent a mail (adapters/email_auth.py)
    authserv_ids: frozenset[str] = frozenset()
    # who may deliver: a MAIL FROM from any other address is refused (554 5.7.1); empty = anyone
    # who can reach the port. The trusted headers are only as good as this path.
    peers: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def __post_init__(self) -> None:
        if len(self.reply_secret) < 16:
            raise ValueError("reply_secret must be at least 16 bytes")
        for address in (*self.mailboxes, *self.from_addresses.values()):
            if parse_address(address) is None:
                raise ValueError(f"not a plain email address: {address!r}")


# aiosmtpd's own size refusals carry no enhanced status code (RFC 3463); add one.
_REWRITES = {
    "552 Error: Too much mail data": "552 5.3.4 Message too big for system",
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ),
}
_QUEUE_ALLOWANCE_S = 5.0  # waiting for a parse worker is load, not a property of the message


class _ParserBusy(Exception):
    pass


class _Server(SMTP):
    def __init__(self, connections: weakref.WeakSet[_Server], *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        super().connection_lost(exc)

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            await super().push(_REWRITES.get(status, status))
        else:
            await super().push(status)


class _Handler:
    """aiosmtpd finds hooks by their ``handle_`` names; kept off EmailAdapter's public face."""

    def __init__(self, adapter: EmailAdapter) -> None:
        self._adapter = adapter

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self._adapter.peer_allowed(session.peer):
            log.warning(
                "SMTP: MAIL FROM refused to %r, not in SWITCHBOARD_SMTP_PEERS", session.peer
            )
            return "554 5.7.1 Not accepting mail from this address"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        return self._adapter._recipient(envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return await self._adapter._data(envelope)


class EmailAdapter:
    """The inbound SMTP server and the outbound reply path for one Switchboard process."""

    def __init__(self, config: EmailConfig, ingest: Ingest, files: FileStore | None = None) -> None:
        self._config = config
        self._ingest = ingest
        self._files = files  # None: attachments are listed by name, their bytes not kept
        self._mailboxes = {addr.lower(): target for addr, target in config.mailboxes.items()}
        self._limits = Limits(
            max_parts=config.max_parts,
            max_depth=config.max_depth,
            budget_s=config.parse_timeout_s,
            max_text_chars=config.max_text_chars,
        )
        self._server: asyncio.Server | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._connections: weakref.WeakSet[_Server] = weakref.WeakSet()
        self._inflight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``). RuntimeError before ``start()``."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("EmailAdapter is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen on ``config.hostname:config.port`` on the running loop; OSError if unbindable."""
        if self._server is not None:
            raise RuntimeError("EmailAdapter already started")
        cfg, loop, handler = self._config, asyncio.get_running_loop(), _Handler(self)
        self._closing = False
        self._executor = ThreadPoolExecutor(cfg.parse_workers, thread_name_prefix="email-parse")

        def protocol() -> _Server:
            return _Server(
                self._connections,
                handler,
                data_size_limit=cfg.max_message_bytes,
                enable_SMTPUTF8=True,
                hostname=cfg.domain,
                ident="Switchboard ESMTP",
                tls_context=cfg.tls_context,
                timeout=cfg.idle_timeout_s,
                loop=loop,
            )

        try:
            self._server = await loop.create_server(protocol, host=cfg.hostname, port=cfg.port)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        log.info("email adapter listening on %s:%d", cfg.hostname, self.port)
        if cfg.authserv_ids and not cfg.peers and not _loopback(cfg.hostname):
            log.warning(
                "email adapter: Authentication-Results from %s are trusted, and SMTP on %s takes "
                "mail from anyone who can reach it; set SWITCHBOARD_SMTP_PEERS to your MTA",
                ",".join(sorted(cfg.authserv_ids)),
                cfg.hostname,
            )

    def peer_allowed(self, peer: Any) -> bool:
        """Whether the connection from ``peer`` (a socket address) may deliver mail."""
        if not self._config.peers:
            return True
        try:
            address = ipaddress.ip_address(peer[0] if isinstance(peer, tuple) else peer)
        except (ValueError, TypeError, IndexError):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self._config.peers)

    async def stop(self) -> None:
        """Stop accepting, let mails already in DATA finish (up to ``drain_timeout_s``), then
        close the remaining connections. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing = True
        server.close()
        try:
            await asyncio.wait_for(self._drained.wait(), self._config.drain_timeout_s)
        except TimeoutError:
            log.warning("email adapter: %d mails still in flight at shutdown", self._inflight)
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.close()
        await server.wait_closed()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def __aenter__(self) -> EmailAdapter:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def deliver(self, workspace: str, delivery: Mapping[str, Any]) -> str:
        """Send an agent's reply: ``{"case", "to": {"email"}, "subject", "text", "agent":
        {"name"}, "in_reply_to", "references", "answers", "mailbox", "quote", "reply_id"}``
        (``mailbox``: the one the case came in on, which the reply comes from; else the
        workspace's first; ``quote``: the customer's mail it answers, quoted below, see
        :func:`quote`; ``reply_id``: the reply's timeline entry, which makes its Message-ID, see
        :func:`reply_nonce`). Returns the Message-ID.
        ValueError/LookupError/KeyError on a bad delivery; aiosmtplib.SMTPException or OSError
        when the smarthost refuses or is unreachable — nothing is retried or queued here."""
        agent = delivery.get("agent") or {}
        parent = delivery.get("in_reply_to")
        message = build_reply(
            from_addr=self._from_address(workspace, str(delivery.get("mailbox") or "")),
            from_name=str(agent.get("name") or "") or None,
            to_addr=str(delivery["to"]["email"]),
            subject=str(delivery.get("subject") or ""),
            text=str(delivery.get("text") or ""),
            case_id=str(delivery["case"]),
            workspace=workspace,
            in_reply_to=str(parent) if parent else None,
            references=[str(r) for r in delivery.get("references") or ()],
            secret=self._config.reply_secret,
            domain=self._config.domain,
            plus_address=self._config.plus_address_replies,
            answers=bool(delivery.get("answers")),
            quoted=str(delivery.get("quote") or ""),
            reply_id=str(delivery.get("reply_id") or ""),
        )
        await send(message, self._config)
        return str(message["Message-ID"])

    def _from_address(self, workspace: str, mailbox: str = "") -> str:
        # a mail to billing@ is answered from billing@ (and its replies come back there)
        target = self._mailboxes.get(mailbox.lower())
        if target is not None and target[0] == workspace:
            return mailbox
        if workspace in self._config.from_addresses:
            return self._config.from_addresses[workspace]
        for address, (ws, _) in self._config.mailboxes.items():
            if ws == workspace:
                return address
        raise LookupError(f"no email address configured for workspace {workspace!r}")

    def _mailbox(self, address: str) -> tuple[str, str, str | None] | None:
        addr = parse_address(address)
        if addr is None:
            return None
        local, _, domain = addr.rpartition("@")
        for key in (addr, f"{local.split('+', 1)[0]}@{domain}"):
            if key in self._mailboxes:
                workspace, hint = self._mailboxes[key]
                return key, workspace, hint
        return None

    def _recipient(self, envelope: Envelope, address: str, options: list[str]) -> str:
        if self._closing:
            return "451 4.3.2 Shutting down, try again later"
        if len(envelope.rcpt_tos) >= self._config.max_recipients:
            return "452 4.5.3 Too many recipients"
        if self._mailbox(address) is None:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def _data(self, envelope: Envelope) -> str:
        self._inflight += 1
        self._drained.clear()
        try:
            return await self._receive(envelope)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._drained.set()

    async def _receive(self, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        targets: dict[str, tuple[str, str | None]] = {}  # one event per workspace addressed
        for rcpt in envelope.rcpt_tos:
            if (found := self._mailbox(rcpt)) is not None:
                targets.setdefault(found[1], (found[0], found[2]))
        try:
            mail = await self._parse(raw)
        except MessageTooComplex as exc:
            log.info("email refused: %s", exc)
            return "552 5.3.4 Message too complex"
        except _ParserBusy:
            return "451 4.3.2 System busy, try again later"
        except Exception:
            log.exception("email parser failed")
            return "554 5.6.0 Message could not be parsed"
        now = time.time()
        events: list[tuple[str, dict[str, Any]]] = []
        for workspace, (mailbox, hint) in targets.items():
            event = normalize(
                mail,
                workspace=workspace,
                mailbox=mailbox,
                queue_hint=hint,
                rcpt_tos=envelope.rcpt_tos,
                envelope_sender=envelope.mail_from,
                secret=self._config.reply_secret,
                domain=self._config.domain,
                now=now,
                authserv_ids=self._config.authserv_ids,
            )
            if event is None:
                return "550 5.1.7 No usable sender address"
            events.append((workspace, event))
        for workspace, event in events:
            kept: list[str] = []
            try:
                kept = await self._keep_files(workspace, event, mail)
                result = await self._ingest(workspace, event)
            except Exception as exc:
                if kept and self._files is not None:
                    with contextlib.suppress(Exception):
                        await self._files.drop(workspace, kept)
                # a refusal that retrying cannot fix (the router's 4xx errors: a bad event, an
                # unknown workspace) is permanent; anything else (Redis down) is temporary
                if 400 <= getattr(exc, "http_status", 500) < 500:
                    log.warning("email refused (workspace %s): %s", workspace, exc)
                    return "554 5.6.0 Message refused: " + str(exc)[:200].replace(
                        "\r", " "
                    ).replace("\n", " ")
                log.warning("email ingest refused (workspace %s)", workspace, exc_info=True)
                return "451 4.3.0 Temporary failure, try again"
            if kept and self._files is not None:
                try:
                    if result.get("duplicate"):  # its entry lists the files kept the first time
                        await self._files.drop(workspace, kept)
                    else:
                        await self._files.link(workspace, kept, str(result.get("case") or ""))
                except Exception:
                    # the mail is in: its files stay, readable by supervisors, until they expire
                    log.warning(
                        "attachments of case %s not linked", result.get("case"), exc_info=True
                    )
            log.info("email ingested: workspace=%s case=%s", workspace, result.get("case"))
        return "250 2.0.0 OK"

    async def _keep_files(self, ws: str, event: dict[str, Any], mail: ParsedMail) -> list[str]:
        """Keep each attachment's bytes; the event's attachments get the ids. Returns them."""
        if self._files is None:
            return []
        kept: list[str] = []
        try:
            for att, data in zip(event.get("attachments") or [], mail.files, strict=False):
                if data is not None:
                    att["id"] = await self._files.keep(ws, att["name"], att["type"], data)
                    kept.append(att["id"])
        except Exception:
            if kept:
                with contextlib.suppress(Exception):
                    await self._files.drop(ws, kept)
            raise
        return kept

    async def _parse(self, raw: bytes) -> ParsedMail:
        if self._executor is None:
            raise _ParserBusy
        started: list[float] = []
        limits = self._limits

        def work() -> ParsedMail:
            started.append(time.monotonic())
            return parse_message(raw, limits)

        future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        try:
            return await asyncio.wait_for(future, limits.budget_s + _QUEUE_ALLOWANCE_S)
        except TimeoutError:
            # The worker stops itself at its deadline between steps; only a single step that
            # overran it (or a long wait for a free worker) gets here.
            if started and time.monotonic() - started[0] >= limits.budget_s:
                raise MessageTooComplex("parse overran its time budget") from None
            raise _ParserBusy from None


# --- outbound -----------------------------------------------------------------------------------

_REPLY_PREFIX = re.compile(r"^(?:\s*(?:re|aw|sv|antw)\s*(?:\[\d+\])?\s*:)+\s*", re.I)
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MAX_QUOTE_CHARS = 10_000
_MAX_QUOTE_LINES = 200


def quote(text: str, *, name: str = "", address: str = "", when: float | None = None) -> str:
    """The customer's mail a reply answers, as mail clients quote it below a reply:
    ``On Mon, 23 Nov 2026 at 06:35 UTC, Alice Smith <alice@example.com> wrote:`` and its lines
    ``> ``-prefixed — at most 200 lines and 10,000 characters, then ``> […]``. ``""`` for no
    text. (Our own inbound trimming knows this attribution: an answer quoting it is trimmed.)"""
    body = _BODY_CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not body:
        return ""
    lines = body[:_MAX_QUOTE_CHARS].split("\n")
    cut = len(body) > _MAX_QUOTE_CHARS or len(lines) > _MAX_QUOTE_LINES
    quoted = [f"> {line}".rstrip() for line in lines[:_MAX_QUOTE_LINES]]
    if cut:
        quoted.append("> […]")
    who = clean_line(name, 200)
    addr = clean_line(address, 254)
    who = f"{who} <{addr}>" if who and addr else who or addr or "you"
    date = ""
    if when is not None:
        try:
            date = datetime.fromtimestamp(when, UTC).strftime("%a, %d %b %Y at %H:%M UTC") + ", "
        except (OverflowError, OSError, ValueError):
            date = ""
    return f"On {date}{who} wrote:\n" + "\n".join(quoted)


def parse_peers(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``"10.0.0.5, 192.168.1.0/24, ::1"`` as networks; ValueError for anything else."""
    out = []
    for item in value.split(","):
        if item.strip():
            try:
                out.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as e:
                raise ValueError(f"SMTP peer {item.strip()!r}: not an address or network") from e
    return tuple(out)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _address(value: str, display_name: str | None = None) -> Address:
    addr = value.strip()
    if parse_address(addr) is None:
        raise ValueError(f"not a plain email address: {value!r}")
    try:
        return Address(display_name=clean_line(display_name or "", 200), addr_spec=addr)
    except (HeaderParseError, IndexError, ValueError) as exc:
        raise ValueError(f"not a plain email address: {value!r}") from exc


def build_reply(
    *,
    from_addr: str,
    to_addr: str,
    subject: str,
    text: str,
    case_id: str,
    workspace: str,
    in_reply_to: str | None,
    references: Sequence[str],
    secret: bytes,
    domain: str,
    from_name: str | None = None,
    plus_address: bool = True,
    answers: bool = False,
    quoted: str = "",
    reply_id: str = "",
) -> EmailMessage:
    """An agent's reply, every header built here from cleaned inputs: control characters in any
    input are removed, so no input can add a header. ``Re:`` is added once when the mail answers
    something (``in_reply_to``, ``references``, or ``answers``: the customer wrote on this case,
    in a mail without a Message-ID) and the subject carries ``[#{reply_token}]``. ``quoted``
    (:func:`quote`) follows the agent's text after a blank line. ``reply_id`` (the reply's
    timeline entry) makes the Message-ID the same each time it is built; without one it is new.
    ValueError on an invalid address or case id."""
    sender, recipient = _address(from_addr, from_name), _address(to_addr)
    token = reply_token(secret, workspace, case_id)
    parent = normalize_message_id(in_reply_to)
    refs = [r for r in map(normalize_message_id, [*references, in_reply_to or ""]) if r]
    refs = list(dict.fromkeys(refs))
    refs = refs[:1] + refs[-19:] if len(refs) > 20 else refs  # RFC 5322 3.6.4: keep first + recent
    base = _REPLY_PREFIX.sub("", strip_tokens(clean_line(subject)))[:200] or "(no subject)"

    message = EmailMessage(policy=policy.SMTP)
    message["From"] = sender
    message["To"] = recipient
    if plus_address:
        local, _, host = sender.addr_spec.rpartition("@")
        message["Reply-To"] = Address(addr_spec=f"{local.split('+', 1)[0]}+{token}@{host}")
    message["Subject"] = f"{'Re: ' if refs or answers else ''}{base} [#{token}]"
    message["Date"] = format_datetime(datetime.now(UTC))
    nonce = reply_nonce(reply_id) if reply_id else None
    message["Message-ID"] = make_message_id(
        secret, workspace, case_id, clean_line(domain), nonce=nonce
    )
    if parent:
        message["In-Reply-To"] = parent
    if refs:
        message["References"] = " ".join(refs)
    body = _BODY_CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    if quoted.strip():
        body = f"{body.rstrip()}\n\n{_BODY_CONTROL.sub('', quoted)}\n"
    message.set_content(body)
    return message


async def send(message: EmailMessage, config: EmailConfig) -> None:
    """Hand ``message`` to the smarthost; the envelope comes from its From/To headers.
    Raises aiosmtplib.SMTPException (refused, auth failed) or OSError/TimeoutError."""
    await aiosmtplib.send(
        message,
        hostname=config.smarthost_host,
        port=config.smarthost_port,
        username=config.smarthost_username,
        password=config.smarthost_password,
        start_tls=config.smarthost_starttls,
        timeout=config.smarthost_timeout_s,
    )
