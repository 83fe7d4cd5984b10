"""``create_app(settings)`` — the Starlette application: routes, lifespan, background loops.

On startup: connect to Redis (or start the embedded redis-server when no URL is configured),
load the transition scripts, apply the workspace file if one is configured, start the pub/sub
hub, the timer loop and the adapter plugins. On shutdown (or SIGTERM, see ``drain``): stop
taking work, tell consoles to reconnect elsewhere, stop everything in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from router import keys
from router.agent_ws import agent_endpoint
from router.api import api_routes
from router.auth import Tokens
from router.bridge_ws import bridge_endpoint
from router.chat_ws import chat_endpoint, restore_widgets
from router.config import Settings, load_workspace_file
from router.context import Ctx
from router.embedded import EmbeddedRedis
from router.errors import CLOSE_CODES, Conflict, SwitchboardError
from router.hub import RAW_SEND, Hub
from router.metrics import METRICS, watch_gc, watch_loop
from router.plugins import Plugin
from router.stats import Stats
from router.store import Store, connect, stop_task
from router.switch import Switch

__all__ = ["WEB_DIR", "create_app", "drain"]

log = logging.getLogger("switchboard.app")
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
FAIL_LOG_S = 10.0  # while Redis is away the timer loop fails 20 times a second: said this often


async def _timer_loop(ctx: Ctx) -> None:
    """Fire due timers of every workspace; any node may, each timer fires once."""
    tick = 0
    workspaces: list[str] = []
    failing = 0  # ticks failed in a row: said once, then every FAIL_LOG_S, and when it ends
    said = 0.0
    secret_said = False
    while True:
        try:
            if tick % 20 == 0:
                workspaces = await ctx.switch.workspaces()
                await ctx.switch.refresh_configs()
                await ctx.switch.heartbeat(
                    ctx.node,
                    dead_after_s=ctx.settings.node_dead_s,
                    grace_s=ctx.settings.grace_s,
                    visitor_grace_s=ctx.settings.visitor_grace_s,
                    rejoin=lambda: _restore_presence(ctx),
                )
                if ctx.secret_shared and not secret_said:
                    secret_said = await _secret_still_shared(ctx)
            for ws in workspaces:
                while await ctx.switch.run_timers(ws) >= 500:
                    pass
            if failing and (workspaces or tick % 20 == 0):  # (a tick that asked Redis)
                log.warning("timer loop: working again after %d failed ticks", failing)
                failing = 0
        except asyncio.CancelledError:
            raise
        except (SwitchboardError, RedisError, OSError) as e:
            failing += 1
            if failing == 1 or time.monotonic() - said >= FAIL_LOG_S:
                said = time.monotonic()
                log.warning("timer loop: %s (%d ticks failed in a row)", e, failing)
        tick += 1
        await asyncio.sleep(ctx.settings.timer_interval_s)


async def _secret_still_shared(ctx: Ctx) -> bool:
    """Whether the shared token secret went missing or changed (Redis started empty, flushed):
    nodes started since sign with another one, and a token from one fails on the others. Said
    once, as an error: restart every node. Returns whether it was said."""
    stored = await ctx.redis.get(keys.SECRET)
    if stored is not None and stored.decode() == ctx.settings.secret:
        return False
    log.error(
        "token secret: the one the nodes share in Redis (sb:secret) is %s; restart every node "
        "so that all sign alike (or set SWITCHBOARD_SECRET)",
        "gone" if stored is None else "another now",
    )
    return True


async def _restore_presence(ctx: Ctx) -> None:
    """Another node took this one for dead and reaped its consoles and widgets: say again what
    it holds (on the first beat, nothing yet)."""
    for (ws, agent), conns in list(ctx.hub.agents.items()):
        if conns:
            try:
                await ctx.switch.presence(
                    ws, agent, "restore", ctx.node, ctx.settings.grace_s, count=len(conns)
                )
            except SwitchboardError as e:  # the agent is gone meanwhile
                log.warning("consoles of %s/%s not restored: %s", ws, agent, e)
    await restore_widgets(ctx)


async def drain(ctx: Ctx) -> None:
    """Stop taking new work: /readyz turns 503, consoles are told to reconnect and closed 1012."""
    ctx.draining = True
    await asyncio.sleep(ctx.settings.drain_delay_s)  # let load balancers see /readyz 503
    for conns in list(ctx.hub.agents.values()):
        await ctx.hub.broadcast(conns, {"type": "drain", "message": "server restarting"})
        for c in list(conns):
            with contextlib.suppress(Exception):
                await c.ws.close(CLOSE_CODES["restart"], "server restarting")  # type: ignore[attr-defined]


async def _apply_file(switch: Switch, decl: dict[str, Any], path: str) -> None:
    """Apply a workspace file when it changed since it was last applied, so that edits made
    through the admin API survive restarts until the file itself is edited. One that would drop
    a queue cases wait in is not applied (the workspace stays as stored, and says why): those
    cases would wait where no list shows them."""
    ws = str(decl.get("id", "default"))
    digest = hashlib.sha256(json.dumps(decl, sort_keys=True).encode()).hexdigest()
    cfg_key = keys.settings(ws)
    if await switch.redis.hget(cfg_key, "filehash") == digest.encode():
        log.info("workspace %s: %s is as last applied; the stored workspace stands", ws, path)
        return
    try:
        await switch.apply_workspace(decl)
    except Conflict as e:
        log.error("workspace %s: %s NOT applied, the stored workspace stands: %s", ws, path, e)
        return
    await switch.redis.hset(cfg_key, "filehash", digest)
    log.info("workspace %s: applied %s (changed since it was last applied)", ws, path)


async def _with_shared_secret(settings: Settings, redis: Any) -> Settings:
    """The settings with their token signing secret. With none configured, every node sharing
    a Redis must still sign alike (a token from one node is good on the others, and so are the
    email reply tokens it derives): the first node to start stores its secret (the one kept in
    its data_dir) in Redis, and the others take that one."""
    local = settings.with_secret()
    if settings.secret or not settings.redis_url:
        return local  # configured, or the embedded Redis of one node
    await redis.set(keys.SECRET, local.secret, nx=True)
    shared = await redis.get(keys.SECRET)
    if shared is None:
        return local
    log.info(
        "token secret: shared by the nodes on this Redis (set SWITCHBOARD_SECRET to choose it)"
    )
    return replace(settings, secret=shared.decode())


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    plugins: Sequence[Plugin] = app.state.plugins
    embedded = None
    url = settings.redis_url
    if not url:
        embedded = EmbeddedRedis(Path(settings.data_dir) / "redis")
        url = await embedded.start()
        log.info("embedded redis-server at %s (data in %s)", url, settings.data_dir)
    client = connect(url, max_connections=32)
    settings = await _with_shared_secret(settings, client)
    store = Store(client)
    await store.load()
    node = f"{os.uname().nodename}-{os.getpid()}-{secrets.token_hex(3)}"
    hub = Hub(client, node)
    switch = Switch(store, notify=hub.notify)
    bridge_keys = settings.bridge_keys
    if settings.config:
        decl, file_bridges = load_workspace_file(settings.config)
        await _apply_file(switch, decl, str(settings.config))
        bridge_keys = bridge_keys + file_bridges
    ctx = Ctx(
        settings=settings,
        redis_url=url,
        redis=client,
        switch=switch,
        hub=hub,
        tokens=Tokens(settings.secret, {"session": settings.token_ttl_s}),
        stats=Stats(url, settings.stats_share_s),
        node=node,
        bridge_keys=bridge_keys,
        secret_shared=bool(settings.redis_url) and not app.state.settings.secret,
    )
    app.state.ctx = ctx
    await hub.start()
    timers = asyncio.create_task(_timer_loop(ctx), name="timers")
    lag = asyncio.create_task(watch_loop(), name="loop-lag")
    watch_gc()
    started: list[Plugin] = []
    try:
        for p in plugins:
            await p.start(ctx)
            started.append(p)
        ctx.ready = True
        # long-lived start-up objects (config, compiled expressions, code) leave the collector's
        # view, and young collections run less often: full-heap GC pauses were 140-450 ms under
        # load (bench/README.md)
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 20, 20)
        log.info("switchboard node %s ready on %s:%s", node, settings.host, settings.port)
        yield
    finally:
        ctx.ready = False
        for p in reversed(started):
            with contextlib.suppress(Exception):
                await p.stop()
        await stop_task(timers)
        await stop_task(lag)
        await hub.stop()
        await ctx.stats.close()
        await store.close()
        if embedded is not None:
            await embedded.stop()


async def livez(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    ctx: Ctx = request.app.state.ctx
    if not ctx.ready or ctx.draining:
        return PlainTextResponse("draining" if ctx.draining else "starting", status_code=503)
    try:
        await ctx.redis.ping()
    except (RedisError, OSError):
        return PlainTextResponse("redis unreachable", status_code=503)
    return PlainTextResponse("ready")


async def metrics(request: Request) -> Response:
    ctx: Ctx = request.app.state.ctx
    with contextlib.suppress(RedisError, SwitchboardError, OSError):
        for ws in await ctx.switch.workspaces():
            cfg = await ctx.switch.config(ws)
            for q in cfg.queues:
                depth = await ctx.redis.zcard(keys.queue_waiting(ws, q.id))
                METRICS.queue_depth.labels(ws, q.id).set(depth)
    return Response(generate_latest(METRICS.registry), media_type=CONTENT_TYPE_LATEST)


def _page(name: str) -> Any:
    async def page(request: Request) -> Response:
        return FileResponse(
            WEB_DIR / name,
            headers={
                "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
                "img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
                "base-uri 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    return page


# what Starlette's router itself answers (no such route, a method the route does not take)
_ROUTING_CODES = {404: "route.unknown", 405: "method.not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    """Errors Starlette raises before any endpoint runs: JSON ``{code, message}`` under /api,
    as every API error is (docs/api.md); plain text elsewhere, as before."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})  # a 405's Allow
    if request.url.path.startswith("/api/") or request.url.path == "/api":
        code = _ROUTING_CODES.get(exc.status_code, "http.error")
        return JSONResponse(
            {"code": code, "message": exc.detail}, status_code=exc.status_code, headers=headers
        )
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=headers)


class App(Starlette):
    """Starlette, except that its own WebSocket endpoints are called straight from the server.

    Through Starlette's middleware and router, a WebSocket keeps about ten coroutine frames
    suspended for as long as it is open: a kilobyte or more of every idle console, which the
    bench's memory floor counts (at most 1.5 times a bare relay's). The endpoints need none of those
    layers: they answer their own errors with typed frames and close codes, and an error
    escaping them reaches uvicorn, which closes the socket (1011) as Starlette would.
    The routes stay declared too (``app.routes``, plugins' routes still go through Starlette).
    """

    sockets: dict[str, Callable[[WebSocket], Awaitable[None]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            path, root = scope["path"], scope.get("root_path", "")
            endpoint = self.sockets.get(path[len(root) :] if path.startswith(root) else path)
            if endpoint is not None:
                scope["app"] = self
                scope[RAW_SEND] = send
                await endpoint(WebSocket(scope, receive=receive, send=send))
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, *, plugins: Sequence[Plugin] = ()) -> App:
    routes: list[BaseRoute] = [
        Route("/", _page("index.html")),
        Route("/supervisor", _page("supervisor.html")),
        Route("/admin", _page("admin.html")),
        Route("/chat", _page("chat.html")),
        Route("/livez", livez),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        WebSocketRoute("/ws/agent", agent_endpoint),
        WebSocketRoute("/ws/bridge", bridge_endpoint),
        WebSocketRoute("/ws/chat", chat_endpoint),
        Mount("/api", routes=api_routes()),
    ]
    for p in plugins:
        routes.extend(p.routes())
    if WEB_DIR.is_dir():
        routes.append(Mount("/static", StaticFiles(directory=WEB_DIR), name="static"))
    app = App(routes=routes, lifespan=_lifespan, exception_handlers={HTTPException: _http_error})
    app.sockets = {"/ws/agent": agent_endpoint, "/ws/bridge": bridge_endpoint,
                   "/ws/chat": chat_endpoint}  # fmt: skip
    app.state.settings = settings
    app.state.plugins = list(plugins)
    return app
