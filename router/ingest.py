"""Ingest: validate a normalized channel event. Pure — the Redis side is ``event_ingest.lua``.

Adapters build events in this shape and hand them to ``Switch.ingest``; bridges send the same
shape as an ``event`` frame. Validation is strict and typed: anything off raises
:class:`~router.errors.BadRequest` naming the field, and nothing is written.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router import keys
from router.errors import BadRequest, TooLarge

__all__ = [
    "CHANNELS",
    "KINDS",
    "Event",
    "attachment_name",
    "entry_ts",
    "parse_event",
    "preview",
    "timeline_entry",
]

CHANNELS = frozenset({"chat", "email", "voice"})
KINDS = frozenset(
    {"message", "call.offered", "call.ended", "callback.requested", "conversation.ended"}
)
IDENTITY_KINDS = frozenset({"email", "phone", "visitor", "external"})
MAX_TEXT = 64 * 1024
MAX_ATTRIBUTES_JSON = 16 * 1024
MAX_SEQ = 2**53 - 1  # an event's seq: exact as a double, the scripts' numbers
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")  # a phone number: + and 7 to 15 digits
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_TOKEN = re.compile(r"^[\x21-\x7e]{1,200}$")
# What an attachment's name loses: C0/C1 controls, zero-width characters, and the bidi
# embeddings, overrides and isolates that let "invoice\u202egnp.exe" show as "invoiceexe.png"
_NAME_JUNK = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
# a link agents may open: https only (no javascript:, data: or plain http), no spaces or controls
_URL = re.compile(r"^https://[^\s\x00-\x1f\x7f<>\"\\]{1,1990}$")
# What a one-line text agents read (a subject, a sender's name) loses: controls, the same bidi
# embeddings, overrides and isolates ("bidi \u202egnp.exe" must not show as "bidi exe.png") and
# invisible zero-width spaces. Joiners (U+200C/D: Persian, emoji sequences) and marks (U+200E/F,
# U+061C) stay: they belong to those scripts and only place a neutral, never reverse a run.
_LINE_JUNK = re.compile("[\x00-\x1f\x7f-\x9f\u200b\u202a-\u202e\u2060\u2066-\u2069\ufeff]")
_TS_EARLIEST = 946_684_800  # 2000-01-01: older than that is a unit mistake, not history
_TS_AHEAD_S = 86_400  # a bridge's clock may run ahead; a day ahead is a mistake


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    channel: str
    kind: str
    identities: tuple[str, ...]  # "kind:value", normalized
    # identities the sender states but nobody vouched for (a chat visitor's unverified
    # details): shown to agents as such, never linked to a customer
    claims: tuple[str, ...] = ()
    name: str = ""
    thread: str = ""
    case: str = ""
    subject: str = ""
    text: str = ""
    attachments: tuple[Mapping[str, Any], ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    ts: float = 0.0
    seq: int | None = None

    @property
    def thread_key(self) -> str:
        return f"{self.channel}:{self.thread}" if self.thread else ""


def _str(d: Mapping[str, Any], key: str, limit: int, *, required: bool = False) -> str:
    v = d.get(key)
    if v is None:
        if required:
            raise BadRequest(f"{key}: required", code="event.invalid")
        return ""
    if not isinstance(v, str):
        raise BadRequest(f"{key}: expected a string", code="event.invalid")
    if len(v) > limit:
        raise TooLarge(f"{key}: longer than {limit} characters", code="event.too_large")
    return v


def _identity(kind: str, value: Any) -> str:
    if kind not in IDENTITY_KINDS:
        raise BadRequest(f"identities.{kind}: unknown identity kind", code="event.invalid")
    if not isinstance(value, str) or not value or len(value) > 320:
        raise BadRequest(f"identities.{kind}: expected a non-empty string", code="event.invalid")
    v = value.strip()
    if kind == "email":
        v = v.lower()
        if not _EMAIL.match(v):
            raise BadRequest("identities.email: not an email address", code="event.invalid")
    elif kind == "phone":
        v = re.sub(r"[\s().-]", "", v)
        if not E164.match(v):
            raise BadRequest("identities.phone: not an E.164 number", code="event.invalid")
    elif not _TOKEN.match(v):
        raise BadRequest(f"identities.{kind}: printable ASCII, 1-200", code="event.invalid")
    return f"{kind}:{v}"


def _identities(ids: Mapping[Any, Any]) -> tuple[str, ...]:
    """Normalized "kind:value"s, strongest first: the first one already known names the
    customer."""
    order = {"external": 0, "email": 1, "phone": 2, "visitor": 3}
    return tuple(
        sorted(
            (_identity(str(k), v) for k, v in ids.items()),
            key=lambda i: order.get(i.split(":", 1)[0], 9),
        )
    )


def attachment_name(raw: str) -> str:
    """A file's name as agents see it and save it: no controls, zero-width or bidi characters;
    runs of spaces (line separators too) as one; and cut to length keeping its extension:
    "invoice.pdf" + 200 spaces + ".exe" must not show as "invoice.pdf"."""
    name = " ".join(_NAME_JUNK.sub("", raw).split()) or "attachment"
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = name[:200] if not dot or len(ext) > 20 else f"{stem[: 199 - len(ext)]}.{ext}"
    return name


def _attachment(a: Any, i: int) -> dict[str, Any]:
    """One attachment's name, type, size and stored file's id (never its bytes), checked."""
    if not isinstance(a, Mapping):
        raise BadRequest(f"attachments[{i}]: expected a map", code="event.invalid")
    name, ctype, size = a.get("name", ""), a.get("type", ""), a.get("size", 0)
    if not isinstance(name, str) or not isinstance(ctype, str):
        raise BadRequest(f"attachments[{i}]: name and type are strings", code="event.invalid")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**53:
        raise BadRequest(
            f"attachments[{i}].size: a whole number of bytes from 0 to 2^53", code="event.invalid"
        )
    out: dict[str, Any] = {"name": attachment_name(name), "type": ctype[:100], "size": size}
    fid = a.get("id")
    if fid is not None:  # a file kept by router/attachments.py (who may read it: its case)
        if not isinstance(fid, str) or not keys.valid_id(fid):
            raise BadRequest(f"attachments[{i}].id: a file id", code="event.invalid")
        out["id"] = fid
    url = a.get("url")
    if url is not None:  # where the bridge's platform keeps it (a WhatsApp photo): a link
        if not isinstance(url, str) or len(url) > 2000 or not _URL.match(url):
            raise BadRequest(
                f"attachments[{i}].url: an https:// address of at most 2000 characters",
                code="event.invalid",
            )
        out["url"] = url
    return out


def _line(text: str) -> str:
    """``text`` as one clean line: whitespace runs (line breaks too) become one space, and
    ``_LINE_JUNK`` goes."""
    return " ".join(_LINE_JUNK.sub("", " ".join(text.split())).split())


def parse_event(d: Any) -> Event:
    """Validate and normalize one event; raise BadRequest/TooLarge naming the field."""
    if not isinstance(d, Mapping):
        raise BadRequest("event: expected a map", code="event.invalid")
    eid = _str(d, "id", 200, required=True)
    if not _TOKEN.match(eid):
        raise BadRequest("id: printable ASCII without spaces, 1-200", code="event.invalid")
    channel = _str(d, "channel", 16, required=True)
    if channel not in CHANNELS:
        raise BadRequest(f"channel: one of {sorted(CHANNELS)}", code="event.invalid")
    kind = _str(d, "kind", 32) or "message"
    if kind not in KINDS:
        raise BadRequest(f"kind: one of {sorted(KINDS)}", code="event.invalid")
    ids = d.get("identities") or {}
    claimed = d.get("claims") or {}
    if not isinstance(claimed, Mapping):
        raise BadRequest("claims: expected a map", code="event.invalid")
    # a sender nobody vouches for (an email its domain disowns) may come with claims alone
    if not isinstance(ids, Mapping) or not (ids or claimed):
        raise BadRequest("identities: a non-empty map", code="event.invalid")
    identities = _identities(ids)
    claims = tuple(c for c in _identities(claimed) if c not in identities)
    attrs = d.get("attributes") or {}
    if not isinstance(attrs, Mapping):
        raise BadRequest("attributes: expected a map", code="event.invalid")
    if len(repr(attrs)) > MAX_ATTRIBUTES_JSON:
        raise TooLarge("attributes: too large", code="event.too_large")
    atts = d.get("attachments") or []
    if not isinstance(atts, list) or len(atts) > 50:
        raise BadRequest("attachments: a list of at most 50", code="event.invalid")
    attachments = tuple(_attachment(a, i) for i, a in enumerate(atts))
    ts = d.get("ts")
    if ts is not None and (
        isinstance(ts, bool)
        or not isinstance(ts, int | float)
        or not math.isfinite(ts)
        or not _TS_EARLIEST <= ts <= time.time() + _TS_AHEAD_S
    ):
        raise BadRequest(
            "ts: seconds since the epoch, from 2000 to a day ahead", code="event.invalid"
        )
    seq = d.get("seq")
    if seq is not None and (
        isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ
    ):
        # the scripts compare it as a double, and a case without one counts as -1: a negative
        # seq would be dropped as stale, a huge one would make every later status of the call
        # stale (its hang-up never applied)
        raise BadRequest(f"seq: an integer from 0 to {MAX_SEQ}", code="event.invalid")
    return Event(
        id=eid,
        channel=channel,
        kind=kind,
        identities=identities,
        claims=claims,
        name=_line(_str(d, "name", 200)),
        thread=_str(d, "thread", 200),
        case=_str(d, "case", 64),
        subject=_line(_str(d, "subject", 998)),
        text=_str(d, "text", MAX_TEXT),
        attachments=attachments,
        attributes=dict(attrs),
        ts=float(ts) if ts is not None else time.time(),
        seq=seq,
    )


def preview(text: str, limit: int = 120) -> str:
    """The first words of a message, on one line, as a stand-in for a subject."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def entry_ts(ts: float | None = None) -> float:
    """A timeline entry's time (s), now unless given: whole milliseconds, which the scripts'
    JSON (cjson, 14 significant digits) carries exactly, so an entry pushed live from a script
    says the same time as the stored one. Rounded down, never past the scripts' clock (whole
    ms): a message stamped in the millisecond an agent rejoined for it still comes first."""
    return math.floor((time.time() if ts is None else ts) * 1000) / 1000


def timeline_entry(ev: Event) -> dict[str, Any]:
    """The customer-timeline record of an inbound event (the case id is set in Redis)."""
    entry: dict[str, Any] = {
        "id": ev.id,
        "ch": ev.channel,
        "dir": "in",
        "kind": ev.kind,
        "ts": entry_ts(ev.ts),
        "text": ev.text,
    }
    if ev.subject:
        entry["subject"] = ev.subject
    if ev.name:
        entry["from"] = ev.name
    if ev.channel == "email":  # the address it came from, where a reply to it goes
        addr = next((i[6:] for i in (*ev.identities, *ev.claims) if i.startswith("email:")), "")
        if addr:
            entry["addr"] = addr
    if ev.attachments:
        entry["attachments"] = list(ev.attachments)
    # the adapter cut the text (adapters/email_parse.py: mail over 60,000 characters): the agent
    # must know they are not reading all of it, and how long it was
    if ev.attributes.get("truncated") is True:
        entry["truncated"] = True
        full = ev.attributes.get("untrimmed_length")
        if isinstance(full, int) and not isinstance(full, bool) and full > len(ev.text):
            entry["full_length"] = full
    return entry
