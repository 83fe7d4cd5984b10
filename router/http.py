"""HTTP plumbing shared by the REST modules: JSON bodies, typed errors → JSON, the caller."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from router import keys
from router.auth import Principal
from router.context import Ctx
from router.errors import BadRequest, Forbidden, SwitchboardError, TooLarge, Unauthorized

__all__ = ["MAX_BODY", "body", "current", "endpoint", "principal", "signed_in"]

MAX_BODY = 256 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(fn: Callable[[Request], Awaitable[Any]]) -> Endpoint:
    """Wrap a handler: its return value becomes JSON; typed errors become their status."""

    async def wrapped(request: Request) -> Response:
        try:
            result = await fn(request)
        except SwitchboardError as e:
            wait = getattr(e, "retry_after", 0)
            return JSONResponse(
                {"code": e.code, "message": e.message},
                status_code=e.http_status,
                headers={"Retry-After": str(wait)} if wait else None,
            )
        if isinstance(result, Response):
            return result
        return JSONResponse(result)

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


async def body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise TooLarge("request body too large")
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise BadRequest("body: invalid JSON", code="body.invalid") from None
    if not isinstance(data, dict):
        raise BadRequest("body: a JSON object", code="body.invalid")
    return data


def principal(request: Request, role: str = "agent", workspace: str | None = None) -> Principal:
    """The caller of a REST request (``Authorization: Bearer <session token>``)."""
    ctx: Ctx = request.app.state.ctx
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        raise Unauthorized("send Authorization: Bearer <session token>")
    who = ctx.tokens.verify(auth[7:].strip(), "session")
    if workspace is not None and who.workspace != workspace:
        raise Forbidden("not your workspace")
    if not who.can(role):
        raise Forbidden(f"{role}s only")
    return who


async def current(ctx: Ctx, who: Principal) -> Principal:
    """The agent behind a valid token as they are now: their stored role, and only if the
    token was issued since their role or password last changed (their session version)."""
    role, sv = await ctx.redis.hmget(keys.agent(who.workspace, who.subject), ["role", "sv"])
    if role is None:
        raise Unauthorized("this agent no longer exists; sign in again", code="agent.unknown")
    if int(sv or 0) != who.version:
        raise Unauthorized("your role or password changed since you signed in", code="auth.revoked")
    return Principal(who.kind, who.workspace, who.subject, role.decode(), who.version)


async def signed_in(
    request: Request, role: str = "agent", workspace: str | None = None
) -> Principal:
    """``principal``, checked against the agent as stored now (``current``)."""
    who = await current(request.app.state.ctx, principal(request, "agent", workspace))
    if not who.can(role):
        raise Forbidden(f"{role}s only")
    return who
