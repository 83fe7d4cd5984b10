"""Plugs the email adapter into a Switchboard server process (``--adapters email``).

Inbound: the SMTP server hands each accepted mail to ``switch.ingest`` and answers 250 only
after the case is in Redis. Outbound: agents' email replies are read from the workspace outbox
(consumer group ``email``, at least once) and sent to the smarthost — or, with no smarthost
configured (the demo), written as ``.eml`` files under ``<data_dir>/mail-out/``. A reply the
smarthost refuses for good (a 5xx for its recipient or its content), or one that cannot be
built, is set aside under ``<data_dir>/mail-failed/`` and logged, so the replies behind it go
out, and the case's history and its agents are told (``Switch.delivery_failed``); anything else
(the smarthost unreachable, a 4xx) is retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosmtplib
from redis.exceptions import RedisError
from starlette.routing import BaseRoute

from adapters.email import (
    EmailAdapter,
    EmailConfig,
    build_reply,
    make_message_id,
    parse_peers,
    quote,
    reply_nonce,
)
from router import keys
from router.attachments import Attachments
from router.config import Settings
from router.errors import NotFound, SwitchboardError
from router.outbox import OutboxReader

if TYPE_CHECKING:
    from router.context import Ctx

__all__ = ["EmailPlugin", "parse_mailboxes", "plugin"]

log = logging.getLogger("switchboard.adapters.email")


def parse_mailboxes(spec: str) -> dict[str, tuple[str, str | None]]:
    """``"support@acme.test=acme,billing@acme.test=acme/billing"`` → address → (ws, queue)."""
    out: dict[str, tuple[str, str | None]] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        addr, _, target = item.partition("=")
        ws, _, queue = target.partition("/")
        if not addr or not ws:
            raise ValueError(f"mailbox {item!r}: expected address=workspace[/queue]")
        out[addr.strip().lower()] = (ws.strip(), queue.strip() or None)
    return out


class EmailPlugin:
    name = "email"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mailboxes = parse_mailboxes(settings.mailboxes)
        self.peers = parse_peers(settings.smtp_peers)
        self.adapter: EmailAdapter | None = None
        self.readers: list[OutboxReader] = []
        self.ctx: Ctx | None = None
        self.drop_dir = Path(settings.data_dir) / "mail-out"
        self.failed_dir = Path(settings.data_dir) / "mail-failed"

    def routes(self) -> list[BaseRoute]:
        return []

    def _config(self, secret: str) -> EmailConfig:
        s = self.settings
        host, _, port = s.smarthost.partition(":")
        return EmailConfig(
            hostname=s.smtp_host,
            port=s.smtp_port,
            mailboxes=self.mailboxes,
            reply_secret=hmac.new(secret.encode(), b"email-reply", hashlib.sha256).digest(),
            domain=s.smtp_domain,
            smarthost_host=host or "localhost",
            smarthost_port=int(port or 25),
            smarthost_username=s.smarthost_user or None,
            smarthost_password=s.smarthost_password or None,
            from_addresses={ws: addr for addr, (ws, _) in reversed(self.mailboxes.items())},
            authserv_ids=frozenset(a.strip() for a in s.smtp_authserv_ids.split(",") if a.strip()),
            peers=self.peers,
        )

    async def start(self, ctx: Ctx) -> None:
        self.ctx = ctx

        async def ingest(ws: str, event: dict[str, Any]) -> dict[str, Any]:
            res = await ctx.switch.ingest(ws, event, source="email")
            return {"case": res.case, "customer": res.customer, "duplicate": res.duplicate}

        files = Attachments(ctx.redis, days=self.settings.attachment_days)
        self.adapter = EmailAdapter(self._config(ctx.settings.secret), ingest, files)
        await self.adapter.start()
        for ws in sorted({ws for ws, _ in self.mailboxes.values()}):
            reader = OutboxReader(
                ctx.redis_url,
                ws,
                "email",
                ctx.node,
                frozenset({"email"}),
                self._deliverer(ws),
                source="email",
            )
            reader.start()
            self.readers.append(reader)

    def _deliverer(self, ws: str) -> Any:
        async def deliver(eid: str, entry: dict[str, Any]) -> bool:
            assert self.ctx is not None and self.adapter is not None
            delivery = await self._delivery(ws, entry)
            reply = entry.get("entry") if isinstance(entry.get("entry"), dict) else {}
            if delivery is None:
                log.warning(
                    "email reply %s for case %s: customer has no address; dropped",
                    eid,
                    entry.get("case"),
                )
                await self._tell(
                    ws,
                    eid,
                    str(entry.get("case") or ""),
                    "",
                    "the customer has no email address",
                    reply,
                )
                return True
            try:
                if self.settings.smarthost:
                    await self.adapter.deliver(ws, delivery)
                    await self._accepted(ws, entry, reply)
                else:
                    self._drop(ws, eid, delivery)
            except (ValueError, LookupError) as e:  # no mail can be made of it
                await self._failed(
                    ws,
                    eid,
                    delivery,
                    f"not sendable: {e}",
                    told=f"no mail could be made of it ({e})",
                    reply=reply,
                )
            except aiosmtplib.SMTPException as e:
                answer = _refused_for_good(e)
                if answer is None:
                    raise  # the outbox retries it (the smarthost is down, busy, misconfigured)
                await self._failed(
                    ws,
                    eid,
                    delivery,
                    f"refused by the smarthost: {answer}",
                    told=answer,
                    reply=reply,
                )
            return True

        return deliver

    async def _accepted(self, ws: str, entry: dict[str, Any], reply: Any) -> None:
        """The smarthost took the mail: the reply is marked delivered. Never raises: the mail
        is gone, and an error here must not make the outbox send it again."""
        assert self.ctx is not None
        if not isinstance(reply, dict) or not isinstance(reply.get("id"), str):
            return
        try:
            await self.ctx.switch.reply_delivered(
                ws, str(entry.get("case") or ""), str(entry.get("customer") or ""), reply["id"],
                via="email",
            )  # fmt: skip
        except (SwitchboardError, RedisError, OSError) as e:
            log.warning("email reply %s sent, but not marked delivered: %s", reply["id"], e)

    async def _failed(
        self,
        ws: str,
        eid: str,
        delivery: dict[str, Any],
        reason: str,
        *,
        told: str = "",
        reply: dict[str, Any] | None = None,
    ) -> None:
        """A reply that will never go out: retrying it would hold up every reply behind it in
        the outbox. Kept for the operator as ``mail-failed/<entry>.json``, logged, and the agents
        told on the case (``told``: the reason as they read it; ``reply``: its timeline entry).
        If the record cannot be written (the disk full, read-only), that is logged and the reply
        is set aside all the same: retrying it would not write it either."""
        path = self.failed_dir / f"{eid}.json"
        record = {"workspace": ws, "entry": eid, "reason": reason, "delivery": delivery}
        to = str((delivery.get("to") or {}).get("email") or "")
        try:
            self.failed_dir.mkdir(parents=True, exist_ok=True)
            _write_whole(path, json.dumps(record, indent=2, default=str).encode())
        except OSError as e:
            log.error(
                "email reply %s for case %s to %s not delivered (%s); could not be kept in %s: %s",
                eid,
                delivery.get("case"),
                to,
                reason,
                path,
                e,
            )
        else:
            log.error(
                "email reply %s for case %s to %s not delivered (%s); kept in %s",
                eid,
                delivery.get("case"),
                to,
                reason,
                path,
            )
        await self._tell(ws, eid, str(delivery.get("case") or ""), to, told or reason, reply)

    async def _tell(
        self, ws: str, eid: str, case: str, to: str, reason: str, reply: dict[str, Any] | None
    ) -> None:
        """The case's history and its agents hear the reply was not delivered (once per outbox
        entry). A Redis failure raises: the outbox tries the entry again, and tells them then."""
        assert self.ctx is not None
        try:
            await self.ctx.switch.delivery_failed(ws, case, reason, to=to, reply=reply, key=eid)
        except NotFound:
            log.warning("email reply %s: case %s is gone; nobody to tell", eid, case)

    async def _delivery(self, ws: str, entry: dict[str, Any]) -> dict[str, Any] | None:
        assert self.ctx is not None
        r = self.ctx.redis
        cust = entry.get("customer", "")
        prof = await r.hgetall(keys.customer(ws, cust))
        emails = sorted(k.decode()[8:] for k in prof if k.startswith(b"i:email:"))
        # a sender whose domain disowned the mail is only a claim: the reply still goes to the
        # address the mail came from, as any mail client's would
        emails = emails or sorted(k.decode()[12:] for k in prof if k.startswith(b"claim:email:"))
        # the customer's own addresses: a mail on the case from any other (someone who had its
        # reply address) is on the timeline, but the reply does not go to them
        own = {e.lower() for e in emails} | {
            k.decode()[12:].lower() for k in prof if k.startswith(b"claim:email:")
        }
        case = entry.get("case", "")
        given = entry.get("entry")
        reply: dict[str, Any] = given if isinstance(given, dict) else {}
        reply_id = str(reply.get("id") or "")
        cfg = self._config(self.ctx.settings.secret)
        # The thread, in order: the customer's own mails on the case and our replies to them.
        # A stranger's mail on the case (someone who had its reply address) is on the
        # timeline, but the reply neither answers it nor names it to the customer.
        parent = None
        refs: list[str] = []
        answers = False  # the customer wrote on this case: the reply's subject says "Re:"
        latest: dict[str, Any] | None = None  # the customer's latest mail on the case
        for raw in await r.lrange(keys.customer_timeline(ws, cust), -200, -1):
            e = json.loads(raw)
            if e.get("case") != case or e.get("ch") != "email":
                continue
            if e.get("dir") == "out" and isinstance(e.get("id"), str) and e["id"] != reply_id:
                try:  # our earlier reply, by the Message-ID it was sent with
                    refs.append(
                        make_message_id(
                            cfg.reply_secret, ws, case, cfg.domain, nonce=reply_nonce(e["id"])
                        )
                    )
                except ValueError:
                    pass
            elif e.get("dir") == "in":
                answers = True
                # a customer with several addresses is answered at the one she wrote from
                addr = e.get("addr")
                if isinstance(addr, str) and "@" in addr and addr.lower() in own:
                    emails = [addr]
                    latest = e  # only the customer's own words are quoted back to her
                    mid = e.get("id")
                    if isinstance(mid, str) and "@" in mid:
                        parent = mid if mid.startswith("<") else f"<{mid}>"
                        refs.append(parent)
        quoted = ""  # the customer's latest mail on the case, quoted below the reply
        if latest is not None:
            ts = latest.get("ts")
            quoted = quote(
                str(latest.get("text") or ""),
                name=str(latest.get("from") or ""),
                address=str(latest["addr"]),
                when=float(ts) if isinstance(ts, int | float) else None,
            )
        if not emails:
            return None
        text = reply.get("text", "")
        agent = reply.get("from", "")
        mailbox = ""  # the mailbox the case came in on: the reply comes from it
        try:
            attrs = json.loads(await r.hget(keys.case(ws, case), "attrs") or b"{}")
            if isinstance(attrs, dict) and isinstance(attrs.get("to"), str):
                mailbox = attrs["to"]
        except ValueError:
            pass
        return {
            "case": case,
            "to": {"email": emails[0]},
            "subject": entry.get("subject", ""),
            "text": text,
            "agent": {"name": agent},
            "in_reply_to": parent,
            "references": refs,  # build_reply keeps the first and the latest
            "answers": answers,
            "mailbox": mailbox,
            "quote": quoted,
            "reply_id": reply_id,
        }

    def _drop(self, ws: str, eid: str, delivery: dict[str, Any]) -> None:
        cfg = self._config(self.ctx.settings.secret if self.ctx else "x" * 16)
        mailbox = str(delivery.get("mailbox") or "")
        own = {a.lower(): w for a, (w, _) in self.mailboxes.items()}
        sender = mailbox if own.get(mailbox.lower()) == ws else ""  # as EmailAdapter.deliver
        msg = build_reply(
            from_addr=sender or cfg.from_addresses.get(ws, "support@localhost"),
            from_name=delivery["agent"]["name"] or None,
            to_addr=delivery["to"]["email"],
            subject=delivery["subject"],
            text=delivery["text"],
            case_id=delivery["case"],
            workspace=ws,
            in_reply_to=delivery["in_reply_to"],
            references=delivery["references"],
            secret=cfg.reply_secret,
            domain=cfg.domain,
            plus_address=cfg.plus_address_replies,
            answers=delivery.get("answers", False),
            quoted=str(delivery.get("quote") or ""),
            reply_id=str(delivery.get("reply_id") or ""),
        )
        self.drop_dir.mkdir(parents=True, exist_ok=True)
        path = self.drop_dir / f"{eid}.eml"
        _write_whole(path, bytes(msg))
        log.info("no smarthost configured: reply for case %s written to %s", delivery["case"], path)

    async def stop(self) -> None:
        for r in self.readers:
            await r.stop()
        if self.adapter is not None:
            await self.adapter.stop()


def _refused_for_good(exc: aiosmtplib.SMTPException) -> str | None:
    """The smarthost's answer if it refused this reply for good — a 5xx for every recipient, or
    for the message at DATA —, as it is logged and the agent reads it: "550 5.1.1 mailbox
    unknown" (each recipient too, if it refused more than the one). None for anything retrying
    may cure (a 4xx, a refused sender or sign-in — its configuration, not this reply —, a
    dropped connection)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = exc.recipients
        if not refused or any(r.code < 500 for r in refused):
            return None
        if len(refused) == 1:
            return f"{refused[0].code} {refused[0].message}"
        return "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in refused)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        return f"{exc.code} {exc.message}" if exc.code >= 500 else None
    return None


def plugin(settings: Settings) -> EmailPlugin | None:
    if not settings.smtp_port or not settings.mailboxes:
        return None
    return EmailPlugin(settings)


def _write_whole(path: Path, data: bytes) -> None:
    """Write a file that appears whole or not at all: whatever picks up the folder (a mail
    pickup, an operator's script) never reads one half-written."""
    part = path.with_name(f".{path.name}.part")
    try:
        with part.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except OSError:
        part.unlink(missing_ok=True)
        raise
