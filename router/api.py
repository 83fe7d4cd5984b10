"""REST under ``/api``: sign-in and tokens here; administration in ``router/admin_api.py``.

``POST /api/login`` checks an agent's password and returns a session token (REST, hours) and a
WebSocket token (one connect, minutes); ``POST /api/ws-token`` trades a session token for a
fresh WebSocket token before each (re)connect. Errors are JSON ``{"code", "message"}`` with the
HTTP status of the typed error.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from router import keys
from router.admin_api import admin_routes
from router.auth import Principal, verify_password
from router.context import Ctx
from router.errors import BadRequest, Forbidden, SwitchboardError, TooLarge, Unauthorized

__all__ = ["api_routes", "body", "endpoint", "principal"]

MAX_BODY = 256 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(fn: Callable[[Request], Awaitable[Any]]) -> Endpoint:
    """Wrap a handler: its return value becomes JSON; typed errors become their status."""

    async def wrapped(request: Request) -> Response:
        try:
            result = await fn(request)
        except SwitchboardError as e:
            return JSONResponse({"code": e.code, "message": e.message},
                                status_code=e.http_status)
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


@endpoint
async def login(request: Request) -> dict[str, Any]:
    """Sign in with workspace, agent and password."""
    ctx: Ctx = request.app.state.ctx
    d = await body(request)
    ws, agent, password = d.get("workspace", "default"), d.get("agent"), d.get("password")
    if not all(isinstance(v, str) and v for v in (ws, agent, password)):
        raise BadRequest("workspace, agent and password are required", code="body.invalid")
    assert isinstance(ws, str) and isinstance(agent, str) and isinstance(password, str)
    if not keys.valid_id(ws) or not keys.valid_id(agent):
        raise Unauthorized("wrong agent or password")
    row = await ctx.redis.hmget(keys.agent(ws, agent), ["pw", "role", "name"])
    if not row[0] or not verify_password(password, row[0].decode()):
        raise Unauthorized("wrong agent or password")
    role = row[1].decode() if row[1] else "agent"
    who = Principal("session", ws, agent, role)
    return {"token": ctx.tokens.issue(who),
            "ws_token": ctx.tokens.issue(Principal("ws", ws, agent, role)),
            "workspace": ws, "agent": agent, "role": role,
            "name": row[2].decode() if row[2] else agent,
            "expires_in": ctx.tokens.ttl("session")}


@endpoint
async def ws_token(request: Request) -> dict[str, Any]:
    """A fresh one-connect WebSocket token for the signed-in agent."""
    ctx: Ctx = request.app.state.ctx
    who = principal(request)
    return {"token": ctx.tokens.issue(Principal("ws", who.workspace, who.subject, who.role)),
            "expires_in": ctx.tokens.ttl("ws")}


@endpoint
async def me(request: Request) -> dict[str, Any]:
    who = principal(request)
    return {"workspace": who.workspace, "agent": who.subject, "role": who.role}


def api_routes() -> list[BaseRoute]:
    return [
        Route("/login", login, methods=["POST"]),
        Route("/ws-token", ws_token, methods=["POST"]),
        Route("/me", me, methods=["GET"]),
        *admin_routes(),
    ]
