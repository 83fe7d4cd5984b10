"""Twilio's REST API, the two calls Switchboard makes: update a live call, start a new one.

Every request retries, with capped exponential backoff and jitter, on what may pass — a 5xx,
429, a timeout or a broken connection — for as long as it takes (the caller cancels it, e.g. on
shutdown). Any other 4xx can't succeed by retrying (the call has ended, the number is invalid,
the credentials are wrong) and raises :class:`TwilioRejected` at once. Retrying an update is
harmless (it sets the same TwiML again); retrying a create after a lost answer may ring twice,
which is the price of at-least-once delivery.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["TwilioRejected", "TwilioRest"]

log = logging.getLogger("switchboard.adapters.twilio")


class TwilioRejected(Exception):
    """Twilio answered a 4xx that retrying won't fix."""

    def __init__(self, status: int, code: Any, message: str) -> None:
        super().__init__(f"HTTP {status}, Twilio error {code}: {message}")
        self.status, self.code = status, code


@dataclass(frozen=True, slots=True)
class Backoff:
    first_s: float = 0.25
    max_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Full jitter around an exponential: attempt 1 waits up to ``first_s``."""
        cap = min(self.max_s, self.first_s * 2.0 ** (attempt - 1))
        return cap / 2 + random.uniform(0, cap / 2)


class TwilioRest:
    """An ``httpx.AsyncClient`` for one account: basic auth AccountSid:AuthToken."""

    def __init__(
        self,
        api_base: str,
        account_sid: str,
        auth_token: str,
        *,
        timeout_s: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._prefix = f"/2010-04-01/Accounts/{account_sid}"
        self._backoff = backoff or Backoff()
        self._client = httpx.AsyncClient(
            base_url=api_base.rstrip("/"),
            auth=httpx.BasicAuth(account_sid, auth_token),
            timeout=timeout_s,
            headers={"User-Agent": "switchboard-twilio/1"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def update_call(self, call_sid: str, twiml: str) -> dict[str, Any]:
        """Replace what a live call is doing with ``twiml`` (``Calls/{CallSid}.json``)."""
        return await self._post(f"{self._prefix}/Calls/{call_sid}.json", {"Twiml": twiml})

    async def create_call(self, to: str, from_: str, twiml: str) -> dict[str, Any]:
        """Start an outbound call from ``from_`` to ``to`` running ``twiml`` (``Calls.json``)."""
        return await self._post(
            f"{self._prefix}/Calls.json", {"To": to, "From": from_, "Twiml": twiml}
        )

    async def _post(self, path: str, data: dict[str, str]) -> dict[str, Any]:
        attempt = 0
        while True:
            attempt += 1
            try:
                r = await self._client.post(path, data=data)
            except httpx.TransportError as e:
                why = f"{type(e).__name__}: {e}"
            else:
                if r.is_success:
                    return _json(r)
                body = _json(r)
                if r.status_code != 429 and r.status_code < 500:
                    raise TwilioRejected(
                        r.status_code, body.get("code"), str(body.get("message") or r.reason_phrase)
                    )
                why = f"HTTP {r.status_code}"
            delay = self._backoff.delay(attempt)
            log.warning("twilio POST %s: %s; retry %d in %.2f s", path, why, attempt, delay)
            await asyncio.sleep(delay)


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
