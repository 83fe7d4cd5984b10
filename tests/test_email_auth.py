"""Who vouches for an inbound mail's From address: the trusted MTA's Authentication-Results."""

from __future__ import annotations

import pytest

from adapters.email_auth import sender_verdict

MX = "mx.acme.test"
NORA = "nora@example.com"


@pytest.mark.parametrize(
    ("header", "verdict"),
    [
        (f"{MX}; dmarc=pass header.from=example.com", "pass"),
        (f"{MX}; dkim=pass header.d=example.com header.s=s1; dmarc=none", "pass"),
        (f"{MX}; spf=pass smtp.mailfrom=bounce@example.com", "pass"),
        (f"{MX} 1; spf=pass smtp.mailfrom=Example.COM", "pass"),  # a version, any case
        # signed or sent by someone else's domain: says nothing about example.com
        (f"{MX}; dkim=pass header.d=mailer.test; spf=pass smtp.mailfrom=mailer.test", "none"),
        (f"{MX}; dkim=pass header.d=evil.example.com", "none"),  # exact domain only
        (f"{MX}; spf=softfail smtp.mailfrom=example.com", "none"),
        (f"{MX}; none", "none"),
        # the domain's owner says it is not theirs
        (f"{MX}; dkim=none; spf=fail smtp.mailfrom=example.com; dmarc=fail", "fail"),
        (f"{MX}; spf=fail smtp.mailfrom=example.com", "fail"),
        (f"{MX}; spf=fail smtp.mailfrom=mailer.test; dmarc=fail", "fail"),
        (f"{MX}; dmarc=fail; dkim=pass header.d=example.com", "pass"),  # an aligned signature
        (f"{MX}; this is not ;; a header", "none"),  # ours, unreadable: vouches for nothing
    ],
)
def test_the_trusted_header_decides(header: str, verdict: str) -> None:
    assert sender_verdict([header], NORA, [MX]) == verdict


def test_only_the_topmost_trusted_header_counts() -> None:
    ours = f"{MX}; dmarc=fail header.from=example.com"
    forged = f"{MX}; dmarc=pass header.from=example.com"  # written by the sender, below ours
    theirs = "mx.elsewhere.test; dmarc=pass header.from=example.com"
    assert sender_verdict([theirs, ours, forged], NORA, [MX]) == "fail"
    assert sender_verdict([forged], NORA, ["MX.ACME.TEST", "backup.acme.test"]) == "pass"


def test_unchecked_without_a_trusted_authserv_id() -> None:
    passing = f"{MX}; dmarc=pass header.from=example.com"
    assert sender_verdict([passing], NORA, []) == "unchecked"  # nothing configured
    assert sender_verdict([passing], NORA, [" "]) == "unchecked"
    assert sender_verdict([passing], NORA, ["mx.other.test"]) == "unchecked"  # not ours
    assert sender_verdict([], NORA, [MX]) == "unchecked"  # our MTA added none
    assert sender_verdict(["(comment) " + passing], NORA, [MX]) == "pass"


@pytest.mark.parametrize(
    "hostile",
    [
        f"{MX}; dkim=pass " + "(" * 1000 + ")" * 1000,  # deep enough to exhaust the recursion
        f"{MX}; " + "; ".join(f"dkim=pass header.d=d{i}.test" for i in range(400)),
        f"{MX}; dmarc=pass header.from=example.com " + "x" * 4000,
        f'{MX}; dkim=pass header.d="' + '\\"' * 900 + '"',
    ],
    ids=["nested-comments", "many-results", "oversized", "escapes"],
)
def test_hostile_headers_vouch_for_nothing(hostile: str) -> None:
    assert sender_verdict([hostile], NORA, [MX]) == "none"
