"""Administration REST API under ``/api``: agents, queues, workflow, customers, cases.

Every route but ``/api/openapi.json`` needs ``Authorization: Bearer <session token>``. The
workspace is the token's; a ``?workspace=`` naming another one is refused (403), and ids from
another workspace are never found (404). The caller's role is read from Redis on every call, so
a demotion or a deleted agent takes effect at once, not when the token expires. Resources an
agent may not see answer 404, never 403, so their existence does not leak. Mutations go through
the :class:`~router.switch.Switch`; queue and workflow changes re-apply the stored workspace
declaration. The routes, their roles and schemas are documented in ``router/openapi.py``
(served as ``/api/openapi.json``) and docs/api.md. The customer and case handlers live in
``router/admin_cases.py``, the request helpers all of them share in ``router/admin_http.py``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from router import keys, queries
from router.admin_cases import (
    create_case,
    customer_timeline,
    find_customers,
    get_attachment,
    get_case,
    get_customer,
    list_cases,
    merge_customers,
    move_case,
)
from router.admin_http import _body, _caller, _ctx, _only, _opt_str, _path_id
from router.errors import BadRequest, Conflict, Forbidden, NotFound
from router.expressions import ExpressionError
from router.expressions import compile as compile_expression
from router.http import endpoint
from router.openapi import document
from router.triage import agent_data, queue_members
from router.workflow import WorkflowError
from router.workflow_load import load_workflow
from router.workspace import (
    CHANNELS,
    NO_DEFAULT_FILTER,
    WorkspaceConfig,
    parse_agent,
    parse_queue,
)

#: an admin edit that keeps losing the race for the declaration gives up after this many tries
EDIT_ATTEMPTS = 5

__all__ = ["admin_routes"]

_AGENT_FIELDS = frozenset({"id", "name", "attributes", "capacity", "role", "password"})
_QUEUE_FIELDS = frozenset({"id", "name", "target", "order", "sl_target_s"})


# -- agents ---------------------------------------------------------------------------------------


async def list_agents(request: Request) -> dict[str, Any]:
    who = await _caller(request, "supervisor")
    ctx = _ctx(request)
    views = await queries.agents(ctx.redis, who.workspace)
    return {"agents": _with_queues(await ctx.switch.config(who.workspace), views)}


async def get_agent(request: Request) -> dict[str, Any]:
    who = await _caller(request)
    aid = str(request.path_params["id"])
    if aid != who.subject and not who.can("supervisor"):
        raise Forbidden("agents may read only themselves")
    ctx = _ctx(request)
    view = await queries.agent(ctx.redis, who.workspace, aid)
    if view is None:
        raise NotFound("agent not found", code="agent.unknown")
    return _with_queues(await ctx.switch.config(who.workspace), [view])[0]


def _with_queues(cfg: WorkspaceConfig, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each agent view with ``queues``: the queues whose targets their attributes match (those
    they may be offered cases from, given capacity on the case's channel): an admin sees at
    once a skill that matches nothing ("Support" where the targets say 'support')."""
    members = queue_members(cfg.queues, {v["id"]: agent_data(v) for v in views})
    return [{**v, "queues": [q.id for q in cfg.queues if v["id"] in members[q.id]]} for v in views]


async def put_agent(request: Request) -> Response:
    """Create or update an agent; fields left out keep their value (new agents: defaults)."""
    who = await _caller(request, "admin")
    ctx, aid = _ctx(request), str(request.path_params["id"])
    d = await _body(request)
    _only(d, _AGENT_FIELDS)
    if d.get("id", aid) != aid:
        raise BadRequest("id: differs from the path", code="body.invalid")
    password = _opt_str(d, "password", 1024)
    old = await queries.agent(ctx.redis, who.workspace, aid) or {}
    if not old:
        ids = [m.decode() for m in await ctx.redis.smembers(keys.agents(who.workspace))]
        _new_id("agent", aid, ids)
    elif _create_only(request):
        raise Conflict(f"there is already an agent {aid}", code="agent.exists")
    decl = {
        "id": aid,
        "name": _opt_str(d, "name") or old.get("name") or aid,
        "attributes": d.get("attributes", old.get("attributes", {})),
        "capacity": _capacity(d["capacity"]) if "capacity" in d else old.get("capacity"),
        "role": d.get("role", old.get("role", "agent")),
        "password": password,
    }
    if aid == who.subject and decl["role"] != "admin":
        # the workspace keeps at least one admin: the one asking (as for removing themselves)
        raise Conflict(
            "you cannot take away your own admin role; another admin can", code="agent.self"
        )
    if decl["capacity"] is None:
        del decl["capacity"]  # a new agent: parse_agent's default
    await ctx.switch.upsert_agent(
        who.workspace, parse_agent(decl, "agent"), create_only=_create_only(request)
    )
    view = await queries.agent(ctx.redis, who.workspace, aid)
    return JSONResponse(view, status_code=200 if old else 201)


async def delete_agent(request: Request) -> Response:
    """Remove an agent (refused while they hold cases: ``agent.busy``, with the case ids)."""
    who = await _caller(request, "admin")
    aid = _path_id(request, "agent")
    if aid == who.subject:
        # the workspace keeps at least one admin: the one asking
        raise Conflict("you cannot remove yourself; another admin can", code="agent.self")
    await _ctx(request).switch.remove_agent(who.workspace, aid)
    return Response(status_code=204)


def _capacity(given: Any) -> Any:
    """Channels left out get capacity 0, explicitly: a channel merely missing from the map
    would keep its old capacity field in Redis and come back on the next re-apply."""
    if not isinstance(given, dict):
        return given  # parse_agent names the error
    return {**{ch: 0 for ch in CHANNELS}, **given}


async def put_agent_status(request: Request) -> dict[str, Any]:
    who = await _caller(request)
    aid = str(request.path_params["id"])
    if aid != who.subject and not who.can("supervisor"):
        raise Forbidden("agents may set only their own status")
    status = _opt_str(await _body(request), "status", 64)
    if status is None:
        raise BadRequest("status: required", code="body.invalid")
    if not keys.valid_id(aid):
        raise NotFound("agent not found", code="agent.unknown")
    ctx = _ctx(request)
    # set by someone else (a supervisor): as from the supervisor page (Switch.set_status)
    by = who.subject if aid != who.subject else ""
    res = await ctx.switch.set_status(who.workspace, aid, status, by=by)
    return {"agent": aid, "status": res["status"]}


# -- queues and workflow ------------------------------------------------------------------------


async def _edit_declaration(
    request: Request, ws: str, change: Callable[[dict[str, Any]], None]
) -> WorkspaceConfig:
    """Read the stored declaration, change it, re-apply it (ConfigError -> 400, nothing kept).

    The re-applied declaration lists no agents: Redis holds the agents as they are now (the
    admin API may have changed them since the file was loaded), and apply_workspace then just
    recomputes every agent's queue memberships from that state instead of resetting agents to
    the file's attributes and passwords. Edits are serialized per process (each recomputes
    every agent's memberships); across nodes, the declaration is stored only if nobody changed
    it since it was read (workspace_declare.lua), and an edit that lost that race is made again
    on what won, a few times, before it answers 409 ``workspace.changed``.
    """
    ctx, state = _ctx(request), request.app.state
    lock: asyncio.Lock | None = getattr(state, "admin_edit_lock", None)
    if lock is None:
        lock = state.admin_edit_lock = asyncio.Lock()
    async with lock:
        for attempt in range(1, EDIT_ATTEMPTS + 1):
            decl, version = await ctx.switch.declaration(ws)
            change(decl)
            decl["agents"] = []
            try:
                return await ctx.switch.apply_workspace(decl, read_version=version)
            except Conflict as e:
                if e.code != "workspace.changed" or attempt == EDIT_ATTEMPTS:
                    raise
                await asyncio.sleep(random.uniform(0.005, 0.05))  # the other edit gets through
    raise AssertionError("unreachable")


async def list_queues(request: Request) -> dict[str, Any]:
    who = await _caller(request)
    ctx = _ctx(request)
    cfg = await ctx.switch.config(who.workspace, fresh=True)
    return {"queues": await queries.queues(ctx.redis, cfg, who.workspace)}


async def put_queue(request: Request) -> Response:
    """Create or update a queue; fields left out keep their value (new queues: defaults)."""
    who = await _caller(request, "admin")
    ctx, qid = _ctx(request), str(request.path_params["id"])
    d = await _body(request)
    _only(d, _QUEUE_FIELDS)
    if d.get("id", qid) != qid:
        raise BadRequest("id: differs from the path", code="body.invalid")
    for name in ("name", "target", "order"):
        if name in d and not isinstance(d[name], str):
            raise BadRequest(f"{name}: a string", code="body.invalid")
    if isinstance(d.get("target"), str):
        try:
            compile_expression(d["target"])
        except ExpressionError as e:
            return _invalid(f"target: {e}", "target", e.column)
    # the fields given, checked on their own: an error names "queue.<field>", not the queue's
    # place in the stored declaration (fields left out keep values that were valid)
    parse_queue({**d, "id": qid})
    cfg = await ctx.switch.config(who.workspace, fresh=True)
    if cfg.queue(qid) is None:
        _new_id("queue", qid, [q.id for q in cfg.queues])
    elif _create_only(request):
        raise Conflict(f"there is already a queue {qid}", code="queue.exists")
    created = False

    def change(decl: dict[str, Any]) -> None:
        nonlocal created
        queues = decl.setdefault("queues", [])
        for q in queues:
            if q.get("id") == qid:
                if _create_only(request):  # added meanwhile, through another node
                    raise Conflict(f"there is already a queue {qid}", code="queue.exists")
                q.update(d)
                return
        created = True
        queues.append({**d, "id": qid})

    await _edit_declaration(request, who.workspace, change)
    cfg = await ctx.switch.config(who.workspace, fresh=True)
    view = next(q for q in await queries.queues(ctx.redis, cfg, who.workspace) if q["id"] == qid)
    return JSONResponse(view, status_code=201 if created else 200)


def _create_only(request: Request) -> bool:
    """``If-None-Match: *``: create, never replace (the admin page's Add forms send it)."""
    return request.headers.get("if-none-match", "").strip() == "*"


def _new_id(kind: str, new: str, existing: list[str]) -> None:
    """A new agent's or queue's id may not differ from one that exists only in case: two that
    read alike ("Support", "support") side by side in every menu are a mistake waiting."""
    for other in existing:
        if other != new and other.lower() == new.lower():
            raise Conflict(
                f"there is already {'an' if kind == 'agent' else 'a'} {kind} {other} "
                "(ids that differ only in case are refused)",
                code=f"{kind}.exists",
            )


async def delete_queue(request: Request) -> Response:
    who = await _caller(request, "admin")
    ctx = _ctx(request)
    qid = _path_id(request, "queue")
    cfg = await ctx.switch.config(who.workspace, fresh=True)
    if cfg.queue(qid) is None:
        raise NotFound("queue not found", code="queue.unknown")
    if qid in queries.workflow_queues(cfg.workflow_json):
        raise Conflict(
            "the workflow routes to this queue; change the workflow first", code="queue.in_use"
        )
    # cases waiting in it: refused by apply_workspace (queue.in_use), as for any declaration

    def change(decl: dict[str, Any]) -> None:
        decl["queues"] = [q for q in decl.get("queues", []) if q.get("id") != qid]

    await _edit_declaration(request, who.workspace, change)
    return Response(status_code=204)


def _invalid(message: str, path: str, column: int | None) -> JSONResponse:
    """A 400 for a configuration error that also names its path and column as fields."""
    err: dict[str, Any] = {"code": "config.invalid", "message": message, "path": path}
    if column is not None:
        err["column"] = column
    return JSONResponse(err, status_code=400)


async def get_workflow(request: Request) -> dict[str, Any]:
    who = await _caller(request, "supervisor")
    cfg = await _ctx(request).switch.config(who.workspace, fresh=True)
    return dict(cfg.workflow_json)


async def put_workflow(request: Request) -> Response:
    """Replace the workflow (TaskRouter's JSON); a malformed one is refused naming path/column."""
    who = await _caller(request, "admin")
    ctx = _ctx(request)
    wf = await _body(request)
    cfg = await ctx.switch.config(who.workspace, fresh=True)
    try:
        flow = load_workflow(wf, [q.id for q in cfg.queues])
    except WorkflowError as e:
        return _invalid(f"workflow: {e}", f"workflow.{e.path}".rstrip("."), e.column)
    if flow.default_target is None:
        path = "task_routing.default_filter" if "task_routing" in wf else "default_filter"
        return _invalid(f"workflow: {path}: {NO_DEFAULT_FILTER}", f"workflow.{path}", None)

    def change(decl: dict[str, Any]) -> None:
        decl["workflow"] = wf

    cfg = await _edit_declaration(request, who.workspace, change)
    return JSONResponse(dict(cfg.workflow_json))


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document())


Handler = Callable[[Request], Awaitable[Any]]

#: (path under /api, method, handler) — router/openapi.py documents each one.
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("/openapi.json", "GET", openapi_json),
    ("/agents", "GET", list_agents),
    ("/agents/{id}", "GET", get_agent),
    ("/agents/{id}", "PUT", put_agent),
    ("/agents/{id}", "DELETE", delete_agent),
    ("/agents/{id}/status", "PUT", put_agent_status),
    ("/queues", "GET", list_queues),
    ("/queues/{id}", "PUT", put_queue),
    ("/queues/{id}", "DELETE", delete_queue),
    ("/workflow", "GET", get_workflow),
    ("/workflow", "PUT", put_workflow),
    ("/customers", "GET", find_customers),
    ("/customers/merge", "POST", merge_customers),
    ("/customers/{id}", "GET", get_customer),
    ("/customers/{id}/timeline", "GET", customer_timeline),
    ("/cases", "GET", list_cases),
    ("/cases", "POST", create_case),
    ("/cases/{id}", "GET", get_case),
    ("/cases/{id}", "PATCH", move_case),
    ("/attachments/{id}", "GET", get_attachment),
)


def admin_routes() -> list[BaseRoute]:
    """The administration routes, each wrapped by router.http.endpoint (typed errors -> JSON).
    One route per path, dispatching on the method, so that a 405 lists in ``Allow`` every
    method the path takes (one route per method listed only the first one's)."""
    by_path: dict[str, dict[str, Handler]] = {}
    for path, method, fn in ROUTES:
        by_path.setdefault(path, {})[method] = fn
    return [Route(path, _dispatch(fns), methods=list(fns)) for path, fns in by_path.items()]


def _dispatch(fns: dict[str, Handler]) -> Callable[[Request], Awaitable[Response]]:
    wrapped = {m: endpoint(fn) for m, fn in fns.items()}
    if "GET" in wrapped:
        wrapped.setdefault("HEAD", wrapped["GET"])

    async def route(request: Request) -> Response:
        return await wrapped[request.method](request)

    return route
