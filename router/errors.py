"""The error tree. The core raises these; the edges translate them.

Every error has a stable ``code`` (dotted, documented in docs/protocol.md) and a human message.
The edges map them: WebSocket ``error`` frame (or a close code where the connection itself is
at fault), HTTP status, SMTP reply.
"""

from __future__ import annotations

__all__ = [
    "CLOSE_CODES",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "NotFound",
    "RateLimited",
    "StoreUnavailable",
    "SwitchboardError",
    "TooLarge",
    "Unauthorized",
    "from_script",
]


class SwitchboardError(Exception):
    """Base class: ``code`` is stable and machine-readable, ``str(e)`` is for humans."""

    code = "error"
    http_status = 400

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class BadRequest(SwitchboardError):
    """The request or frame is malformed or has a field of the wrong type."""

    code = "bad_request"


class TooLarge(SwitchboardError):
    """The frame or message is larger than this endpoint accepts."""

    code = "too_large"
    http_status = 413


class Unauthorized(SwitchboardError):
    """Missing, expired or forged credentials."""

    code = "auth.invalid"
    http_status = 401


class Forbidden(SwitchboardError):
    """Authenticated, but not allowed to do this."""

    code = "forbidden"
    http_status = 403


class NotFound(SwitchboardError):
    """No such thing — or not one the caller may see (never says which)."""

    code = "not_found"
    http_status = 404


class Conflict(SwitchboardError):
    """The thing exists but is not in a state that allows this (e.g. an expired offer)."""

    code = "conflict"
    http_status = 409


class RateLimited(SwitchboardError):
    """Too many frames or requests; slow down."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str = "", *, code: str | None = None, retry_after: int = 0):
        super().__init__(message, code=code)
        self.retry_after = retry_after  # seconds; REST sends it as Retry-After when set


class StoreUnavailable(SwitchboardError):
    """Redis is unreachable or failed; nothing was acknowledged."""

    code = "unavailable"
    http_status = 503


class ConfigError(SwitchboardError):
    """The configuration is invalid; the message names the offending path."""

    code = "config.invalid"


#: WebSocket close codes used when the connection itself is at fault.
CLOSE_CODES = {
    "policy": 1008,  # auth failure, foreign Origin, repeated abuse
    "too_large": 1009,  # frame over the endpoint's limit
    "restart": 1012,  # graceful drain: reconnect elsewhere
    "replaced": 4000,  # the agent opened a console elsewhere: don't reconnect on your own
}


# what a script's "<thing>.<state>" refusal says, as a person would read it ("Could not accept:
# the offer has timed out", not "not possible: it is timeout")
_STATE_SAID = {
    "timeout": "has timed out",
    "rescinded": "was withdrawn",
    "rejected": "was declined",
    "accepted": "was accepted already",
    "queued": "is waiting in a queue",
    "offered": "is being offered",
    "assigned": "is with an agent",
    "wrapping": "is in wrap-up",
    "completed": "is completed",
    "cancelled": "was cancelled",
    "abandoned": "was abandoned",
    "same_queue": "is waiting in that queue already",
}


def from_script(code: str) -> SwitchboardError:
    """Map an error code returned by a Lua transition script to a typed error."""
    if code == "reply.channel":
        return BadRequest("a call takes notes, not replies", code=code)
    if code.endswith(".unknown"):
        return NotFound(f"{code.split('.')[0]} not found", code=code)
    thing, _, state = code.partition(".")
    said = _STATE_SAID.get(state)
    if said is not None:
        return Conflict(f"the {thing} {said}", code=code)
    return Conflict(f"not possible: it is {state}", code=code)
