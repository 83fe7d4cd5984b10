"""Whether an inbound mail's From address is vouched for, read from ``Authentication-Results``.

Anyone can write ``From: nora@example.com``. The MTA in front of Switchboard (Postfix with
OpenDKIM/OpenDMARC, rspamd, a cloud inbound relay) checks SPF, DKIM and DMARC and records what it
found in an ``Authentication-Results`` header (RFC 8601), tagged with its own *authserv-id*.
Switchboard does no DNS lookups of its own: it trusts the headers of the authserv-ids it is told
to (``SWITCHBOARD_SMTP_AUTHSERV_IDS``), and only the topmost one, because that MTA prepends its
header above whatever the sender wrote and removes forged copies of its own (RFC 8601 §5).
Parsing is the ``authres`` package's.

Verdicts, for the From domain *d*:

- ``pass``: ``dmarc=pass``; or ``dkim=pass`` with ``header.d`` = *d*; or ``spf=pass`` with the
  ``smtp.mailfrom`` domain = *d* (exact domains: looser alignment is DMARC's job, with the
  public-suffix list, and a ``dmarc=pass`` says it was done);
- ``fail``: ``dmarc=fail``, or ``spf=fail`` for *d*: the domain's owner says this mail is not
  theirs. The adapter then records the address as a claim, linked to no customer;
- ``none``: the trusted header says neither (no policy, ``softfail``, signed by another domain);
- ``unchecked``: no authserv-id configured, or no header from one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import authres

__all__ = ["sender_verdict"]

_AUTHSERV = re.compile(r"\s*(?:\([^)]*\)\s*)*([^\s;()]+)")
# An MTA's header is a few hundred characters; a longer one is parsed no further (authres is a
# recursive descent parser: deep comment nesting raises RecursionError, and 8 KB takes ~20 ms).
_MAX_LENGTH = 2048


def _domain(value: str) -> str:
    """The domain of ``user@domain`` or ``@domain`` or ``domain``, lower-cased."""
    return value.rpartition("@")[2].strip().strip(".").lower()


def sender_verdict(headers: Sequence[str], sender: str, trusted: Iterable[str]) -> str:
    """The verdict on ``sender`` from the ``Authentication-Results`` values ``headers`` (topmost
    first), trusting the authserv-ids ``trusted``."""
    trusted_ids = {t.strip().lower() for t in trusted if t.strip()}
    if not trusted_ids:
        return "unchecked"
    for value in headers:
        m = _AUTHSERV.match(value)
        if m is None or m.group(1).lower() not in trusted_ids:
            continue
        if len(value) > _MAX_LENGTH:
            return "none"
        try:
            parsed = authres.AuthenticationResultsHeader.parse_value(value)
        except (authres.AuthResError, ValueError, IndexError, RecursionError):
            return "none"  # our MTA's header, unreadable: vouches for nothing
        return _judge(parsed.results, _domain(sender))
    return "unchecked"


def _judge(results: Sequence[authres.core.AuthenticationResult], domain: str) -> str:
    verdict = "none"
    for r in results:
        method, result = str(r.method).lower(), str(r.result).lower()
        props = {f"{p.type}.{p.name}".lower(): str(p.value) for p in r.properties}
        if method == "dmarc":
            if result == "pass":
                return "pass"
            if result == "fail":
                verdict = "fail"
        elif method == "dkim" and result == "pass":
            if _domain(props.get("header.d", "")) == domain:
                return "pass"
        elif method == "spf":
            aligned = _domain(props.get("smtp.mailfrom", "")) == domain
            if aligned and result == "pass":
                return "pass"
            if aligned and result == "fail":
                verdict = "fail"
    return verdict
