"""Who may connect: agent passwords (scrypt), signed tokens, bridge API keys, Origin checks.

Tokens are itsdangerous-signed (HMAC-SHA256, timestamped) maps — a well-reviewed library for
exactly this, rather than hand-rolled signing. Kinds: ``session`` (REST, hours), ``ws`` (one
WebSocket connect, minutes) and ``visitor`` (a chat widget's anonymous identity, days).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from router.config import BridgeKey
from router.errors import Unauthorized

__all__ = [
    "Principal",
    "Tokens",
    "find_bridge",
    "hash_password",
    "origin_allowed",
    "token_digest",
    "verify_password",
]

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
TTL = {"session": 12 * 3600, "ws": 300, "visitor": 30 * 86400}


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check; False for any malformed stored hash."""
    try:
        scheme, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **_SCRYPT)
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # session | ws | visitor
    workspace: str
    subject: str  # agent id or visitor id
    role: str = "agent"  # agent | supervisor | admin | visitor
    # the agent's session version ("sv" in its hash) when the token was issued: a change of
    # role or password bumps it, which ends every session signed in before (auth.revoked)
    version: int = 0

    def can(self, role: str) -> bool:
        order = {"visitor": 0, "agent": 1, "supervisor": 2, "admin": 3}
        return order.get(self.role, -1) >= order[role]


class Tokens:
    def __init__(self, secret: str, ttl: dict[str, int] | None = None) -> None:
        self._s = URLSafeTimedSerializer(secret, salt="switchboard.v1")
        self._ttl = {**TTL, **(ttl or {})}

    def issue(self, p: Principal) -> str:
        # the nonce makes every token distinct, so a ws token can be spent exactly once
        return self._s.dumps(
            {
                "k": p.kind,
                "w": p.workspace,
                "s": p.subject,
                "r": p.role,
                "v": p.version,
                "n": secrets.token_hex(8),
            }
        )

    def verify(self, token: str, kind: str) -> Principal:
        """The principal of a valid token of this kind; Unauthorized otherwise."""
        try:
            d: Any = self._s.loads(token, max_age=self._ttl[kind])
        except SignatureExpired:
            raise Unauthorized("token expired", code="auth.expired") from None
        except BadSignature:
            raise Unauthorized("invalid token") from None
        if not isinstance(d, dict) or d.get("k") != kind:
            raise Unauthorized("wrong kind of token")
        v = d.get("v", 0)  # tokens from before versions: 0, as an agent never changed
        return Principal(kind, str(d["w"]), str(d["s"]), str(d["r"]), v if type(v) is int else -1)

    def ttl(self, kind: str) -> int:
        return self._ttl[kind]

    @staticmethod
    def new_visitor_id() -> str:
        return "v" + secrets.token_hex(12)


def find_bridge(keys: Iterable[BridgeKey], presented: str) -> BridgeKey:
    """The bridge whose key matches (constant-time); Unauthorized otherwise."""
    found = None
    for k in keys:
        if hmac.compare_digest(k.key.encode(), presented.encode()):
            found = k
    if found is None:
        raise Unauthorized("unknown bridge key")
    return found


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """Browsers always send Origin; non-browser clients (bridges, benches) send none."""
    return origin is None or origin in set(allowed)


def token_digest(token: str) -> str:
    """What a spent one-connect token is remembered by (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]
