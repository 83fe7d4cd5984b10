"""Reply tokens: which case an inbound mail answers, unguessably.

Our replies carry the case in their Message-ID (``<case.nonce.mac@domain>``), in a subject
token ``[#case.mac]`` and in a plus-address ``support+case.mac@``; mac is the first 16 hex of
HMAC-SHA256 under the workspace's reply secret, bound to the workspace. A mail threads onto a
case only when one of these verifies (docs/adapters-email.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

__all__ = [
    "find_case",
    "make_message_id",
    "reply_nonce",
    "reply_token",
    "strip_tokens",
    "verify_message_id",
    "verify_token",
]

_CASE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN = re.compile(r"([A-Za-z0-9_-]{1,64})\.([0-9a-fA-F]{16})")
_MSGID_TOKEN = re.compile(r"<([A-Za-z0-9_-]{1,64})\.([0-9a-f]{16})\.([0-9a-fA-F]{16})@([^<>@\s]+)>")
_SUBJECT_TOKEN = re.compile(r"\[#([A-Za-z0-9_-]{1,64}\.[0-9a-fA-F]{16})\]")
_PLUS_TOKEN = re.compile(r"[^@+]*\+([A-Za-z0-9_-]{1,64}\.[0-9a-fA-F]{16})@.*")


def _mac(secret: bytes, workspace: str, case_id: str, nonce: str) -> str:
    msg = f"{workspace}:{case_id}:{nonce}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:16]


def _check_case_id(case_id: str) -> None:
    if not _CASE_ID.fullmatch(case_id):
        raise ValueError(f"case id must match [A-Za-z0-9_-]{{1,64}}: {case_id!r}")


def reply_token(secret: bytes, workspace: str, case_id: str) -> str:
    """``{case_id}.{mac16}``, for subjects (``[#token]``) and plus-addresses.
    ValueError on a case id outside ``[A-Za-z0-9_-]{1,64}``."""
    _check_case_id(case_id)
    return f"{case_id}.{_mac(secret, workspace, case_id, '')}"


def verify_token(secret: bytes, workspace: str, token: str) -> str | None:
    """The case id if ``token`` was issued for this workspace with this secret, else None."""
    m = _TOKEN.fullmatch(token)
    if m is None:
        return None
    case_id, mac = m.group(1), m.group(2).lower()
    return case_id if hmac.compare_digest(mac, _mac(secret, workspace, case_id, "")) else None


def make_message_id(
    secret: bytes, workspace: str, case_id: str, domain: str, *, nonce: str | None = None
) -> str:
    """``<{case_id}.{nonce}.{mac16}@{domain}>``: unique per call (random nonce), checked by
    ``verify_message_id``."""
    _check_case_id(case_id)
    nonce = nonce or secrets.token_hex(8)
    if not re.fullmatch(r"[0-9a-f]{16}", nonce):
        raise ValueError("nonce must be 16 lower-case hex digits")
    return f"<{case_id}.{nonce}.{_mac(secret, workspace, case_id, nonce)}@{domain}>"


def reply_nonce(reply_id: str) -> str:
    """The nonce of the Message-ID of the reply that is timeline entry ``reply_id``: the same
    every time, so a reply sent again (the outbox delivers at least once) is the same message
    to the customer's mail client, and later replies can name it in ``References``."""
    return hashlib.sha256(reply_id.encode()).hexdigest()[:16]


def verify_message_id(secret: bytes, workspace: str, domain: str, message_id: str) -> str | None:
    """The case id if we generated ``message_id`` for this workspace and domain, else None."""
    m = _MSGID_TOKEN.fullmatch(message_id.strip())
    if m is None or m.group(4).lower() != domain.lower():
        return None
    case_id, nonce, mac = m.group(1), m.group(2), m.group(3).lower()
    return case_id if hmac.compare_digest(mac, _mac(secret, workspace, case_id, nonce)) else None


def find_case(
    reply_ids: Iterable[str],
    addresses: Iterable[str],
    subject: str,
    *,
    secret: bytes,
    workspace: str,
    domain: str,
) -> str | None:
    """The case named by the first token whose MAC verifies — in a mail's In-Reply-To and
    References (``reply_ids``), its recipients' plus-addresses, then its subject; forged or stale
    tokens are skipped."""
    for mid in reply_ids:
        if case := verify_message_id(secret, workspace, domain, mid):
            return case
    for addr in addresses:
        m = _PLUS_TOKEN.fullmatch(addr)
        if m and (case := verify_token(secret, workspace, m.group(1))):
            return case
    for token in _SUBJECT_TOKEN.findall(subject):
        if case := verify_token(secret, workspace, token):
            return case
    return None


def strip_tokens(subject: str) -> str:
    """``subject`` without our ``[#case.mac]`` tokens, so replies don't accumulate them."""
    return " ".join(_SUBJECT_TOKEN.sub(" ", subject).split())
