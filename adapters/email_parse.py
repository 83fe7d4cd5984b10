"""The sans-I/O half of the email adapter: raw RFC 5322 bytes in, plain data out.

Nothing here does I/O or touches routing state. ``parse_message`` is meant to run in a worker
thread: it enforces its own limits (part count, nesting depth, a wall-clock budget checked
between steps) and raises ``MessageTooComplex`` instead of grinding on a MIME bomb. Every other
oddity of real mail — unknown charsets, broken encoded words, missing headers — degrades to a
best guess (UTF-8, else Windows-1252), replacement characters or ``None`` rather than an
exception.

Which case a mail answers is for :mod:`adapters.email_tokens` to say; who sent it, for
:mod:`adapters.email_auth`.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesFeedParser
from email.policy import EmailPolicy, Policy
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any, TypedDict

import nh3

from adapters.email_auth import sender_verdict
from adapters.email_tokens import find_case, strip_tokens

__all__ = [
    "Attachment",
    "Limits",
    "MessageTooComplex",
    "ParsedMail",
    "clean_line",
    "html_to_text",
    "is_forward",
    "normalize",
    "normalize_message_id",
    "parse_address",
    "parse_message",
    "trim_quoted",
]


class MessageTooComplex(Exception):
    """The message exceeds the part, depth or time budget; it must be refused, not retried."""


class Attachment(TypedDict):
    name: str
    type: str
    size: int


@dataclass(frozen=True, slots=True)
class Limits:
    max_parts: int = 100
    max_depth: int = 10
    budget_s: float = 2.0
    max_text_chars: int = 60_000  # the router refuses text over 64 Ki characters
    max_attachments: int = 50  # ... and more than 50 attachments


@dataclass(frozen=True, slots=True)
class ParsedMail:
    """What the adapter keeps of one message. Header values are decoded, single-line text."""

    digest: str  # sha256 of the raw bytes
    message_id: str | None  # "<local@domain>"
    sender: str | None  # lower-cased From address
    name: str | None  # From display name
    recipients: tuple[str, ...]  # lower-cased To/Cc addresses
    subject: str
    # plain text, quoted earlier text trimmed (not in a forward), then the text of mails it
    # forwards as attachments; capped at Limits.max_text_chars
    text: str
    untrimmed_length: int
    truncated: bool
    attachments: tuple[Attachment, ...]  # the first Limits.max_attachments
    attachments_omitted: int
    reply_ids: tuple[str, ...]  # In-Reply-To first, then References newest first
    date: float | None
    language: str | None
    auto_submitted: bool
    # Authentication-Results values, topmost first (adapters/email_auth.py judges them)
    auth_results: tuple[str, ...] = ()
    # the Message-IDs of the mails it carries (a forwarded message/rfc822, a bounce's returned
    # message or text/rfc822-headers): a bounce of our reply names the case in them
    returned_ids: tuple[str, ...] = ()
    # each attachment's bytes, in the order of ``attachments`` (None: a forwarded mail, read
    # into ``text`` instead); the adapter keeps them (router/attachments.py)
    files: tuple[bytes | None, ...] = ()
    # the mail that began the conversation it is part of, as the sender's client tells it: the
    # first of References, else In-Reply-To, else its own Message-ID (None: none of them)
    thread_root: str | None = None


# --- headers ------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MSGID = re.compile(r"<([^<>\s\x00-\x1f\x7f]{1,250})>")
_BARE_MSGID = re.compile(r"[^<>\s\x00-\x1f\x7f]{1,250}@[^<>\s\x00-\x1f\x7f]{1,250}")
_ADDR = re.compile(
    r"[^\s@<>()\[\],;:\"\\\x00-\x1f\x7f]{1,64}@[^\s@<>()\[\],;:\"\\\x00-\x1f\x7f]{1,253}"
)
_LANG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8}){0,4}")
_MAX_HEADER = 16_384
_MAX_REPLY_IDS = 50


def clean_line(value: str, limit: int = 998) -> str:
    """One line of text: control and line-separator characters become spaces, runs collapse."""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


def normalize_message_id(value: str | None) -> str | None:
    """``<local@domain>`` from a Message-ID-like value, or None if there is none."""
    if not value:
        return None
    m = _MSGID.search(value)
    if m:
        return f"<{m.group(1)}>"
    m = _BARE_MSGID.search(value)
    return f"<{m.group(0)}>" if m else None


def parse_address(value: str) -> str | None:
    """The lower-cased addr-spec if ``value`` is exactly one plain address, else None."""
    addr = value.strip().lower()
    return addr if len(addr) <= 254 and _ADDR.fullmatch(addr) else None


def _unsurrogate(value: str) -> str:
    # BytesParser keeps 8-bit header bytes as surrogate escapes; most such headers are UTF-8,
    # and those that are not are mostly Windows-1252 (an old mailer's "Caf\xe9")
    return _guess(value.encode("utf-8", "surrogateescape"))


def _as_cp1252(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start : exc.end].decode("cp1252", errors="replace"), exc.end


codecs.register_error("switchboard.cp1252", _as_cp1252)


def _guess(data: bytes) -> str:
    """Text in no declared (or an unknown) charset: UTF-8 where it is that, and each byte that
    is not as Windows-1252 (an old mailer's "caf\xe9"), as browsers read undeclared pages."""
    return data.decode("utf-8", errors="switchboard.cp1252")


_MAX_AUTH_RESULTS = 8
_WANTED = {
    *("from", "to", "cc", "subject", "message-id", "in-reply-to", "references", "date"),
    *("content-language", "auto-submitted", "precedence"),
}


def _auth_results(msg: Message) -> tuple[str, ...]:
    """The first few ``Authentication-Results`` values, topmost first, unfolded."""
    found: list[str] = []
    for key, value in msg.raw_items():
        if key.lower() == "authentication-results" and len(found) < _MAX_AUTH_RESULTS:
            text = _unsurrogate(str(value))[:_MAX_HEADER]
            found.append(re.sub(r"\s+", " ", text).strip())
    return tuple(found)


def _raw_headers(msg: Message) -> dict[str, str]:
    """First value of each header we read, raw: policy.default's structured parsing is slow on
    hostile input and strict on sloppy input, and these need neither."""
    found: dict[str, str] = {}
    for key, value in msg.raw_items():
        name = key.lower()
        if name in _WANTED and name not in found:
            text = _unsurrogate(str(value))[:_MAX_HEADER]
            found[name] = re.sub(r"\r?\n(?=[ \t])", "", text).replace("\r", "").replace("\n", "")
    return found


def _decode_bytes(data: bytes, charset: str | None) -> str:
    name = (charset or "").strip().strip('"').lower()[:40]
    try:
        codec = codecs.lookup(name).name if name else ""
    except (LookupError, TypeError, ValueError):
        codec = ""  # an unknown charset is no better than none
    if codec in ("", "ascii"):
        return _guess(data)  # undeclared 8-bit text: UTF-8 (a superset of ASCII), else 1252
    if codec == "iso8859-1":
        codec = "cp1252"  # what mail labelled Latin-1 really is (as for browsers: "\x80" is €)
    try:
        return data.decode(codec, errors="replace")
    except (LookupError, TypeError, ValueError):  # not a text codec ("base64")
        return _guess(data)


def _decode_words(value: str) -> str:
    """RFC 2047 encoded words to text; unknown charsets decode with replacement characters."""
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # HeaderParseError, LookupError, UnicodeError: fall back per chunk
        try:
            chunks = decode_header(value)
        except Exception:
            return value
        return "".join(c if isinstance(c, str) else _decode_bytes(c, cs) for c, cs in chunks)


def _addresses(value: str | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if value:
        for name, raw_addr in getaddresses([value]):
            if addr := parse_address(raw_addr):
                out.append((clean_line(_decode_words(name), 200), addr))
    return out


def _date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _language(value: str | None) -> str | None:
    first = (value or "").split(",")[0].strip()
    return first.lower() if _LANG.fullmatch(first) else None


def _is_auto(headers: Mapping[str, str]) -> bool:
    auto = headers.get("auto-submitted", "no").strip().lower()
    precedence = headers.get("precedence", "").strip().lower()
    return auto != "no" or precedence in ("bulk", "junk", "list", "auto_reply")


# --- body ---------------------------------------------------------------------------------------

_HTML_SPACE = re.compile(r"\s+")
# [^<>] rather than [^>]: an unterminated "<a" must not make each match scan to the end.
_HTML_BREAK = re.compile(r"<(?:br|hr)\b[^<>]*>|</(?:div|li|tr|h[1-6]|pre|table)\s*>", re.I)
_HTML_PARAGRAPH = re.compile(r"</(?:p|blockquote)\s*>", re.I)
# a block's start breaks the line too ("Hello,<div>my order…"), unless a line just ended: it
# is marked, and the mark is a line break only where text comes before it. Not a row's start:
# text between a table's rows would be moved out of the table (rows end lines already).
_HTML_BLOCK_START = re.compile(
    r"<(?:div|p|li|h[1-6]|pre|table|blockquote|ul|ol|dl|dt|dd)\b[^<>]*>", re.I
)
_BLOCK_MARK = "\ue000"  # a private-use character: no mail's text means anything by it
_MARK_AT_LINE_START = re.compile(f"(^|\n)[ \t{_BLOCK_MARK}]*")
_HTML_CELL = re.compile(r"</t[dh]\s*>", re.I)  # "<td>Total</td><td>40</td>": "Total 40"
# nh3's output keeps only <a> with an http(s) href, attributes quoted and text escaped; anchors
# cannot nest, so this reads it exactly
_HTML_LINK = re.compile(r'<a(?: href="([^"<>]*)")?>([^<]*)</a>')
_HTML_ANY_LINK = re.compile(r"</?a\b[^<>]*>")  # should nh3 ever write one otherwise
_MAX_URL = 2000
_HTML_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]{0,20})\b[^<>]*>")
_DROP_CONTENT = {"script", "style", "title", "template", "noscript", "head"}
_RAW_TEXT = {"script", "style", "title"}  # cannot nest
_NEVER_NESTED = {
    *("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"),
    *("track", "wbr", "p", "li", "dt", "dd", "td", "th", "tr", "option", "html", "body"),
}
_MAX_HTML_DEPTH = 100


def _html_depth(markup: str) -> int:
    depth = deepest = 0
    for m in _HTML_TAG.finditer(markup):
        if m.group(2).lower() in _NEVER_NESTED:
            continue
        depth = max(depth - 1, 0) if m.group(1) else depth + 1
        deepest = max(deepest, depth)
    return deepest


def _flatten(m: re.Match[str]) -> str:
    return m.group(0) if m.group(2).lower() in _RAW_TEXT else " "


def html_to_text(markup: str) -> str:
    """Plain text from HTML: every tag stripped by nh3 (script/style content dropped), entities
    unescaped, whitespace collapsed, block ends kept as line breaks. No markup survives; the
    text may contain ``<`` where the customer wrote one, and must be displayed as text."""
    markup = _HTML_SPACE.sub(" ", markup).replace(_BLOCK_MARK, "")  # newlines are spaces
    markup = _HTML_BLOCK_START.sub(_BLOCK_MARK + "\\g<0>", markup)
    markup = _HTML_PARAGRAPH.sub("\\g<0>\n\n", _HTML_BREAK.sub("\\g<0>\n", markup))
    markup = _HTML_CELL.sub("\\g<0> ", markup)
    if _html_depth(markup) > _MAX_HTML_DEPTH:
        # The HTML tree builder is quadratic in nesting depth: flatten such markup first.
        markup = _HTML_TAG.sub(_flatten, markup)
    cleaned = nh3.clean(
        markup,
        tags={"a"},
        # "*": no attributes on every tag (not even title, lang): an anchor is <a href="…">
        attributes={"a": {"href"}, "*": set()},
        url_schemes={"http", "https"},
        link_rel=None,
        clean_content_tags=_DROP_CONTENT,
    )
    text = html.unescape(_HTML_ANY_LINK.sub("", _HTML_LINK.sub(_link, cleaned)))
    text = _MARK_AT_LINE_START.sub("\\1", text).replace(_BLOCK_MARK, "\n")
    return _tidy(text.replace("\xa0", " "))


def _link(m: re.Match[str]) -> str:
    """A link as text: ``track (https://…)``, so the agent sees where "click here" leads; an
    address that is its own text once; other schemes (``javascript:``) only their text."""
    href, label = m.group(1) or "", m.group(2)
    url = html.unescape(href)
    if not url or len(url) > _MAX_URL or url in html.unescape(label):
        return label
    return f"{label} ({href})" if label.strip() else f"({href})"


def _tidy(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_ATTRIBUTION = re.compile(
    r"\s*(?:On\s.{1,300}\swrote|Le\s.{1,300}\sa\s+écrit|Am\s.{1,300}\sschrieb.{0,200}"
    r"|El\s.{1,300}\sescribió|Op\s.{1,300}\sschreef.{0,200})\s*:\s*",
    re.I,
)
_SEPARATOR = re.compile(r"\s*-{3,}\s*Original Message\s*-{3,}\s*", re.I)
# what the forwarding client wrote above the message it forwards (Gmail, Thunderbird, Apple Mail,
# and their German, French, Spanish and Dutch versions)
_FORWARD_MARK = re.compile(
    r"\s*(?:-{2,}\s*(?:Forwarded message|Weitergeleitete Nachricht|Message transf[ée]r[ée]"
    r"|Mensaje reenviado|Doorgestuurd bericht)\s*-{2,}"
    r"|(?:Begin forwarded message|Anfang der weitergeleiteten Nachricht)\s*:)\s*",
    re.I,
)
# Fwd:, FW:, and WG:/TR:/RV:/ENC:/Doorst: (German, French, Spanish, Portuguese, Dutch), maybe
# after the ticket systems' "[ext]" tags; not "Re: Fwd:", which answers a forward
_FORWARD_SUBJECT = re.compile(r"(?:\[[^\]]{0,40}\]\s*)*(?:fwd?|wg|tr|rv|enc|doorst)\s*:", re.I)


def is_forward(subject: str) -> bool:
    """Whether ``subject`` says the mail forwards another (``Fwd: …``, ``FW: …``, ``WG: …``)."""
    return _FORWARD_SUBJECT.match(subject.strip()) is not None


_OUTLOOK_RULE = re.compile(r"\s*_{20,}\s*")


def trim_quoted(text: str, *, forward: bool = False) -> str:
    """Drop quoted earlier text: ``>`` lines and everything from an attribution line
    (``On <date>, <name> wrote:``, ``-----Original Message-----``, an Outlook ``From:/Sent:``
    block) onward. If nothing would remain, the text is returned unchanged. A forward
    (``forward``, or a ``---------- Forwarded message ----------`` line before any of those)
    is kept whole: what it forwards is what the customer wants read."""
    if forward:
        return text.strip()
    lines = text.split("\n")
    cut = len(lines)
    for i, line in enumerate(lines):
        if len(line) > 1000:
            continue
        if _FORWARD_MARK.fullmatch(line):
            return text.strip()
        joined = f"{line} {lines[i + 1]}" if i + 1 < len(lines) else line
        nxt = [ln.strip().lower() for ln in lines[i + 1 : i + 4]]
        if (
            _ATTRIBUTION.fullmatch(line)
            or (line.lstrip().startswith("On ") and _ATTRIBUTION.fullmatch(joined[:1000]))
            or _SEPARATOR.fullmatch(line)
            or (_OUTLOOK_RULE.fullmatch(line) and nxt and nxt[0].startswith("from:"))
            or (
                line.lower().startswith("from:")
                and any(n.startswith(("sent:", "date:")) for n in nxt)
            )
        ):
            cut = i
            break
    kept = [ln for ln in lines[:cut] if not ln.lstrip().startswith(">")]
    trimmed = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    return trimmed or text.strip()


_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _subtype(part: Message) -> str:
    """The part's text subtype; a ``multipart/*`` without a boundary (a broken mailer's) holds
    plain text, as the stdlib parser leaves it."""
    if part.get_content_maintype() == "multipart" and not part.is_multipart():
        return "plain"
    return part.get_content_subtype()


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    text = _decode_bytes(data, charset)
    if _subtype(part) == "html":
        return html_to_text(text)
    return _TEXT_CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    if not name:
        return None
    return clean_line(_unsurrogate(name), 255) or None


# --- parse --------------------------------------------------------------------------------------

_MAX_STRUCTURED = 1024


class _Policy(EmailPolicy):
    """policy.default, except that a structured header (Content-Type, Content-Disposition, ...)
    is parsed from at most 1 KiB: the stdlib parser is superlinear on some long values."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if not hasattr(value, "name"):  # not yet parsed
            value = value[:_MAX_STRUCTURED]
        return super().header_fetch_parse(name, value)


_POLICY = _Policy()


class _Budget:
    __slots__ = ("deadline", "limits", "parts")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.budget_s
        self.parts = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise MessageTooComplex("parse time budget exceeded")

    def new_part(self, policy: Policy = _POLICY) -> EmailMessage:
        # The feed parser calls this for every part it opens, so a bomb stops at part N + 1.
        self.parts += 1
        if self.parts > self.limits.max_parts:
            raise MessageTooComplex(f"more than {self.limits.max_parts} MIME parts")
        self.tick()
        return EmailMessage(policy=policy)


def _leaves(msg: Message, budget: _Budget) -> tuple[list[tuple[Message, int]], list[Message]]:
    """Leaf parts in document order, each with the message it belongs to: 0 the mail itself,
    n its n-th forwarded message/rfc822 — itself a leaf of its parent (an attachment), and
    listed second, in order."""
    leaves: list[tuple[Message, int]] = []
    forwarded: list[Message] = []
    stack: list[tuple[Message, int, int]] = [(msg, 0, 0)]
    while stack:
        budget.tick()
        part, depth, owner = stack.pop()
        if depth > budget.limits.max_depth:
            raise MessageTooComplex(f"MIME nesting deeper than {budget.limits.max_depth}")
        payload: Any = part.get_payload()
        if isinstance(payload, list):
            if part.get_content_type() == "message/rfc822":
                leaves.append((part, owner))
                forwarded.append(part)
                owner = len(forwarded)
            children = [(p, depth + 1, owner) for p in payload if isinstance(p, Message)]
            stack.extend(reversed(children))
            continue
        leaves.append((part, owner))
    return leaves, forwarded


def _is_attachment(part: Message) -> bool:
    textual = part.get_content_maintype() == "text" or _subtype(part) == "plain"
    return (
        not textual or part.get_content_disposition() == "attachment" or _filename(part) is not None
    )


def _inner(part: Message) -> Message | None:
    """The message a message/rfc822 part holds."""
    payload: Any = part.get_payload()
    inner = payload[0] if isinstance(payload, list) and payload else None
    return inner if isinstance(inner, Message) else None


def _attachment(part: Message) -> tuple[Attachment, bytes | None]:
    ctype = part.get_content_type()
    data: bytes | None = None
    name = _filename(part)
    if ctype == "message/rfc822":
        inner = _inner(part)
        try:
            size = len(inner.as_bytes()) if inner is not None else 0
        except Exception:
            size = 0
        # a forwarded mail is named by its subject, as mail clients show it
        subject = _raw_headers(inner).get("subject", "") if inner is not None else ""
        subject = strip_tokens(clean_line(_decode_words(subject), 120))
        name = name or (f"{subject}.eml" if subject else "forwarded message.eml")
    else:
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        size = len(data)
    return {"name": name or "attachment", "type": ctype, "size": size}, data


def _body(parts: Sequence[Message]) -> Message | None:
    """The part to read: text/plain preferred, else text/html."""
    plain = next((p for p in parts if _subtype(p) == "plain"), None)
    if plain is not None:  # not "or": a part without headers is falsy (len() counts them)
        return plain
    return next((p for p in parts if _subtype(p) == "html"), None)


_MAX_FORWARDS = 5
_RETURNED_MSGID = re.compile(r"^message-id:\s*<([^<>\s\x00-\x1f\x7f]{1,250})>", re.I | re.M)
_FORWARD_HEADERS = (("from", "From"), ("date", "Date"), ("subject", "Subject"), ("to", "To"))


def _forward_block(part: Message, text: str) -> str:
    """A forwarded message as a mail client quotes one inline: who, when, what, then its text."""
    inner = _inner(part)
    headers = _raw_headers(inner) if inner is not None else {}
    lines = ["---------- Forwarded message ----------"]
    for key, label in _FORWARD_HEADERS:
        if value := strip_tokens(clean_line(_decode_words(headers.get(key, "")), 500)):
            lines.append(f"{label}: {value}")
    return "\n".join(lines) + ("\n\n" + text.strip() if text.strip() else "")


def parse_message(raw: bytes, limits: Limits) -> ParsedMail:
    """Parse one message within ``limits`` (``MessageTooComplex`` past them). Malformed content
    degrades, it does not raise; anything else raised here is a parser bug for the caller to log."""
    budget = _Budget(limits)
    parser = BytesFeedParser(_factory=budget.new_part, policy=_POLICY)
    budget.parts = 0  # the constructor probes the factory once
    view = memoryview(raw)
    for start in range(0, len(raw), 65_536):
        budget.tick()
        parser.feed(bytes(view[start : start + 65_536]))
    msg = parser.close()

    leaves, forwarded = _leaves(msg, budget)
    inline: list[tuple[Message, int]] = []
    attachments: list[Attachment] = []
    files: list[bytes | None] = []
    for part, owner in leaves:
        budget.tick()  # each part's headers cost a little: keep the deadline close
        if _is_attachment(part):
            attachment, data = _attachment(part)
            attachments.append(attachment)
            files.append(data)
        else:
            inline.append((part, owner))
    returned: list[str] = []
    for part in forwarded[:_MAX_FORWARDS]:
        inner = _inner(part)
        if inner is not None and (
            mid := normalize_message_id(_raw_headers(inner).get("message-id"))
        ):
            returned.append(mid)
    for part, _ in inline:
        if part.get_content_type() == "text/rfc822-headers":
            budget.tick()
            returned += [f"<{m}>" for m in _RETURNED_MSGID.findall(_part_text(part)[:_MAX_HEADER])]
    cap = limits.max_text_chars * 4  # bounded work on giant bodies
    headers = _raw_headers(msg)
    subject = clean_line(_decode_words(headers.get("subject", "")))
    body = _body([p for p, owner in inline if owner == 0])
    full = _part_text(body) if body is not None else ""
    budget.tick()
    pieces = [trim_quoted(full[:cap], forward=is_forward(subject))]
    # a mail forwarded as an attachment is read like one forwarded inline: its text follows
    for n, part in enumerate(forwarded[:_MAX_FORWARDS], start=1):
        budget.tick()
        inner = _body([p for p, owner in inline if owner == n])
        inner_text = _part_text(inner)[:cap] if inner is not None else ""
        pieces.append(_forward_block(part, inner_text))
        full += "\n\n" + inner_text
    text = "\n\n".join(p for p in pieces if p)
    sender = _addresses(headers.get("from"))
    name = (sender[0][0] or None) if sender else None
    if name and sender and _other_address(name, sender[0][1]):
        name = None  # "alice@example.com" <mallory@evil.example>: the address is who it is
    recipients = _addresses(headers.get("to")) + _addresses(headers.get("cc"))
    refs = _MSGID.findall(headers.get("references", ""))
    reply_ids = [f"<{m}>" for m in _MSGID.findall(headers.get("in-reply-to", ""))]
    reply_ids += [f"<{m}>" for m in reversed(refs[-_MAX_REPLY_IDS:])]
    message_id = normalize_message_id(headers.get("message-id"))
    return ParsedMail(
        digest=hashlib.sha256(raw).hexdigest(),
        message_id=message_id,
        sender=sender[0][1] if sender else None,
        name=name,
        recipients=tuple(addr for _, addr in recipients[:_MAX_REPLY_IDS]),
        subject=subject,
        text=text[: limits.max_text_chars],
        untrimmed_length=len(full),
        truncated=len(text) > limits.max_text_chars or len(full) > cap,
        attachments=tuple(attachments[: limits.max_attachments]),
        attachments_omitted=max(len(attachments) - limits.max_attachments, 0),
        reply_ids=tuple(dict.fromkeys(reply_ids[:_MAX_REPLY_IDS])),
        date=_date(headers.get("date")),
        language=_language(headers.get("content-language")),
        auto_submitted=_is_auto(headers),
        auth_results=_auth_results(msg),
        returned_ids=tuple(dict.fromkeys(returned[:_MAX_FORWARDS])),
        files=tuple(files[: limits.max_attachments]),
        thread_root=f"<{refs[0]}>" if refs else reply_ids[0] if reply_ids else message_id,
    )


def _other_address(name: str, address: str) -> bool:
    """Whether a display name shows an email address other than the sender's own."""
    return any(m.lower() != address for m in _ADDR.findall(name))


# --- normalized event ---------------------------------------------------------------------------

_SANE_PAST_S = 7 * 86_400  # a mail can sit in retry queues for days
_SANE_FUTURE_S = 900


def _own_thread(sender: str, root: str | None) -> str | None:
    """The thread key of a sender's own conversation: their address and its first mail's
    Message-ID, hashed to a fixed length (thread keys are at most 200 characters)."""
    if not root:
        return None
    digest = hashlib.sha256(f"{sender.lower()}\n{root}".encode()).hexdigest()[:40]
    return f"mail:{digest}"


def normalize(
    mail: ParsedMail,
    *,
    workspace: str,
    mailbox: str,
    queue_hint: str | None,
    rcpt_tos: Sequence[str],
    envelope_sender: str | None,
    secret: bytes,
    domain: str,
    now: float,
    authserv_ids: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    """The normalized ``email``/``message`` event for one workspace, or None without a sender.

    The sender's address is the customer's identity unless the trusted MTA's
    Authentication-Results say the domain disowns the mail (``fail``, adapters/email_auth.py):
    then it is only a claim, linked to no customer. ``attributes.sender_auth`` keeps the verdict.
    """
    sender = mail.sender
    # MAIL FROM:<> (aiosmtpd hands on "<>"): a bounce or another automatic notice (RFC 5321
    # 4.5.5), never a person writing
    null_sender = not envelope_sender or envelope_sender.strip() in ("<>", "")
    if sender is None and not null_sender and envelope_sender:
        found = _addresses(envelope_sender)
        sender = found[0][1] if found else None
    if sender is None:
        return None
    mid = mail.message_id
    if mid is None:
        event_id = f"sha256:{mail.digest}"
    elif len(mid) <= 200 and mid.isascii() and mid.isprintable():
        event_id = mid
    else:
        event_id = "sha256:" + hashlib.sha256(mid.encode()).hexdigest()
    # a bounce of our reply carries it back: its Message-ID names the case, so the agent sees
    # on the case that the reply did not arrive (only our own, signed Message-IDs thread)
    case = find_case(
        (*mail.reply_ids, *(mail.returned_ids if null_sender or mail.auto_submitted else ())),
        (*rcpt_tos, *mail.recipients),
        mail.subject,
        secret=secret,
        workspace=workspace,
        domain=domain,
    )
    verdict = sender_verdict(mail.auth_results, sender, authserv_ids)
    who = "claims" if verdict == "fail" else "identities"
    thread = case
    if case is None and verdict != "fail" and not (null_sender or mail.auto_submitted):
        # no token of ours: the customer wrote again on their own mail (a reply to it, or a
        # forward with more): it goes on in the case that mail opened, if the same address
        # sent both. Another sender naming that mail opens a case of their own.
        thread = _own_thread(sender, mail.thread_root)
    sane = mail.date is not None and now - _SANE_PAST_S <= mail.date <= now + _SANE_FUTURE_S
    return {
        "id": event_id,
        "channel": "email",
        "kind": "message",
        who: {"email": sender},
        "name": mail.name,
        "thread": thread,
        "case": case,
        # our reply token, which threaded it, is noise to the agent reading it
        "subject": strip_tokens(mail.subject),
        "text": mail.text,
        "attachments": [dict(a) for a in mail.attachments],
        "attributes": {
            "to": mailbox,
            "queue_hint": queue_hint,
            "message_id": mail.message_id or event_id,
            "language": mail.language,
            "untrimmed_length": mail.untrimmed_length,
            "truncated": mail.truncated,
            "attachments_omitted": mail.attachments_omitted,
            "auto_submitted": mail.auto_submitted or null_sender,
            "sender_auth": verdict,
        },
        "ts": mail.date if sane and mail.date is not None else now,
    }
