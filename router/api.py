"""REST under ``/api``: sign-in and tokens here; administration in ``router/admin_api.py``.

``POST /api/login`` checks an agent's password and returns a session token (REST, hours) and a
WebSocket token (one connect, minutes); ``POST /api/ws-token`` trades a session token for a
fresh WebSocket token before each (re)connect. Errors are JSON ``{"code", "message"}`` with the
HTTP status of the typed error.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from router import keys
from router.admin_api import admin_routes
from router.auth import Principal, verify_password
from router.context import Ctx
from router.errors import BadRequest, Unauthorized
from router.http import body, endpoint, principal

__all__ = ["api_routes"]


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
    return {
        "token": ctx.tokens.issue(who),
        "ws_token": ctx.tokens.issue(Principal("ws", ws, agent, role)),
        "workspace": ws,
        "agent": agent,
        "role": role,
        "name": row[2].decode() if row[2] else agent,
        "expires_in": ctx.tokens.ttl("session"),
    }


@endpoint
async def ws_token(request: Request) -> dict[str, Any]:
    """A fresh one-connect WebSocket token for the signed-in agent."""
    ctx: Ctx = request.app.state.ctx
    who = principal(request)
    return {
        "token": ctx.tokens.issue(Principal("ws", who.workspace, who.subject, who.role)),
        "expires_in": ctx.tokens.ttl("ws"),
    }


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
