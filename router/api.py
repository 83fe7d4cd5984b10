"""REST under ``/api``: sign-in and tokens here; administration in ``router/admin_api.py``.

``POST /api/login`` checks an agent's password and returns a session token (REST, hours) and a
WebSocket token (one connect, minutes); ``POST /api/ws-token`` trades a session token for a
fresh WebSocket token before each (re)connect. Errors are JSON ``{"code", "message"}`` with the
HTTP status of the typed error.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from router import keys
from router.admin_api import admin_routes
from router.auth import Principal, verify_password
from router.context import Ctx
from router.errors import BadRequest, RateLimited, Unauthorized
from router.http import body, endpoint, signed_in

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
    ip = request.client.host if request.client else ""
    guards = [(keys.login_failures(ws, agent), ACCOUNT_FREE)]
    if ip:
        guards.append((keys.login_failures_from(ip), ADDRESS_FREE))
    await _not_throttled(ctx, guards)
    row = await ctx.redis.hmget(keys.agent(ws, agent), ["pw", "role", "name", "sv"])
    if not row[0] or not verify_password(password, row[0].decode()):
        await _failed(ctx, guards)
        raise Unauthorized("wrong agent or password")
    await ctx.redis.delete(guards[0][0])
    role = row[1].decode() if row[1] else "agent"
    version = int(row[3] or 0)
    who = Principal("session", ws, agent, role, version)
    return {
        "token": ctx.tokens.issue(who),
        "ws_token": ctx.tokens.issue(Principal("ws", ws, agent, role, version)),
        "workspace": ws,
        "agent": agent,
        "role": role,
        "name": row[2].decode() if row[2] else agent,
        "expires_in": ctx.tokens.ttl("session"),
    }


# Password guessing: an agent's account, and a client address, each get a few failed sign-ins
# free; after that each next attempt waits twice as long as the last (1 s, 2 s, 4 s … at most
# a minute), until 15 minutes pass without a failure. A wait, never a lockout: whoever knows
# the password gets in once it is over, so a stranger's guesses cannot lock an agent out for
# long. Redis holds the counts, so every node applies them.
ACCOUNT_FREE, ADDRESS_FREE = 5, 100  # an office behind one address shares its allowance
MAX_WAIT_S, FORGET_S = 60, 900


async def _not_throttled(ctx: Ctx, guards: list[tuple[str, int]]) -> None:
    now = time.time()
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for key, _ in guards:
            pipe.hget(key, "until")
        untils = await pipe.execute()
    wait = max((float(u) - now for u in untils if u), default=0.0)
    if wait > 0:
        s = int(wait) + 1
        raise RateLimited(
            f"too many failed sign-ins: try again in {s} s", code="login.throttled", retry_after=s
        )


async def _failed(ctx: Ctx, guards: list[tuple[str, int]]) -> None:
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for key, _ in guards:
            pipe.hincrby(key, "n", 1)
            pipe.expire(key, FORGET_S)
        counts = (await pipe.execute())[::2]
    now = time.time()
    for (key, free), n in zip(guards, counts, strict=True):
        if n >= free:
            wait = min(MAX_WAIT_S, 2 ** (n - free))
            await ctx.redis.hset(key, "until", f"{now + wait:.3f}")


@endpoint
async def ws_token(request: Request) -> dict[str, Any]:
    """A fresh one-connect WebSocket token for the signed-in agent."""
    ctx: Ctx = request.app.state.ctx
    who = await signed_in(request, workspace=request.query_params.get("workspace") or None)
    return {
        "token": ctx.tokens.issue(
            Principal("ws", who.workspace, who.subject, who.role, who.version)
        ),
        "expires_in": ctx.tokens.ttl("ws"),
    }


@endpoint
async def me(request: Request) -> dict[str, Any]:
    who = await signed_in(request, workspace=request.query_params.get("workspace") or None)
    return {"workspace": who.workspace, "agent": who.subject, "role": who.role}


def api_routes() -> list[BaseRoute]:
    return [
        Route("/login", login, methods=["POST"]),
        Route("/ws-token", ws_token, methods=["POST"]),
        Route("/me", me, methods=["GET"]),
        *admin_routes(),
    ]
