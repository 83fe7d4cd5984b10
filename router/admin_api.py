"""Administration REST API under ``/api``: agents, queues, workflow, customers, cases.

Every route but ``/api/openapi.json`` needs ``Authorization: Bearer <session token>``. The
workspace is the token's; a ``?workspace=`` naming another one is refused (403), and ids from
another workspace are never found (404). The caller's role is read from Redis on every call, so
a demotion or a deleted agent takes effect at once, not when the token expires. Resources an
agent may not see answer 404, never 403, so their existence does not leak. Mutations go through
the :class:`~router.switch.Switch`; queue and workflow changes re-apply the stored workspace
declaration. The routes, their roles and schemas are documented in ``router/openapi.py``
(served as ``/api/openapi.json``) and docs/api.md.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from router import keys, queries, snapshot
from router.auth import Principal
from router.context import Ctx
from router.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from router.expressions import ExpressionError
from router.expressions import compile as compile_expression
from router.http import body, endpoint, principal
from router.ingest import parse_event
from router.openapi import document
from router.switch import new_id
from router.workflow import WorkflowError, load_workflow
from router.workspace import CHANNELS, WorkspaceConfig, parse_agent

__all__ = ["admin_routes"]

_AGENT_FIELDS = frozenset({"id", "name", "attributes", "capacity", "role", "password"})
_QUEUE_FIELDS = frozenset({"id", "name", "target", "order", "sl_target_s"})
_CASE_FIELDS = frozenset({"id", "channel", "identities", "name", "subject", "text", "attributes"})


async def _body(request: Request) -> dict[str, Any]:
    return await body(request)


def _principal(request: Request, role: str, workspace: str | None) -> Principal:
    return principal(request, role, workspace)


def _ctx(request: Request) -> Ctx:
    ctx: Ctx = request.app.state.ctx
    return ctx


async def _caller(request: Request, role: str = "agent") -> Principal:
    """The signed-in caller with their current role; 401 / 403 as for every route."""
    who = _principal(request, "agent", request.query_params.get("workspace") or None)
    stored = await _ctx(request).redis.hget(keys.agent(who.workspace, who.subject), "role")
    if stored is None:
        raise Unauthorized("this agent no longer exists; sign in again")
    current = Principal(who.kind, who.workspace, who.subject, stored.decode())
    if not current.can(role):
        raise Forbidden(f"{role}s only")
    return current


def _only(d: dict[str, Any], allowed: frozenset[str]) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise BadRequest(f"{extra[0]}: unknown field", code="body.invalid")


def _opt_str(d: dict[str, Any], name: str, limit: int = 200) -> str | None:
    v = d.get(name)
    if v is None:
        return None
    if not isinstance(v, str) or not v or len(v) > limit:
        raise BadRequest(f"{name}: a string of 1-{limit} characters", code="body.invalid")
    return v


def _int_param(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: an integer {lo}-{hi}", code="query.invalid") from None
    if not lo <= v <= hi:
        raise BadRequest(f"{name}: an integer {lo}-{hi}", code="query.invalid")
    return v


def _path_id(request: Request, what: str) -> str:
    v = str(request.path_params["id"])
    if not keys.valid_id(v):
        raise NotFound(f"{what} not found", code=f"{what}.unknown")
    return v


# -- agents ---------------------------------------------------------------------------------------


async def list_agents(request: Request) -> dict[str, Any]:
    who = await _caller(request, "supervisor")
    return {"agents": await queries.agents(_ctx(request).redis, who.workspace)}


async def get_agent(request: Request) -> dict[str, Any]:
    who = await _caller(request)
    aid = str(request.path_params["id"])
    if aid != who.subject and not who.can("supervisor"):
        raise Forbidden("agents may read only themselves")
    view = await queries.agent(_ctx(request).redis, who.workspace, aid)
    if view is None:
        raise NotFound("agent not found", code="agent.unknown")
    return view


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
    decl = {
        "id": aid,
        "name": _opt_str(d, "name") or old.get("name") or aid,
        "attributes": d.get("attributes", old.get("attributes", {})),
        "capacity": _capacity(d["capacity"]) if "capacity" in d else old.get("capacity"),
        "role": d.get("role", old.get("role", "agent")),
        "password": password,
    }
    if decl["capacity"] is None:
        del decl["capacity"]  # a new agent: parse_agent's default
    await ctx.switch.upsert_agent(who.workspace, parse_agent(decl, "agent"))
    view = await queries.agent(ctx.redis, who.workspace, aid)
    return JSONResponse(view, status_code=200 if old else 201)


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
    res = await _ctx(request).switch.set_status(who.workspace, aid, status)
    return {"agent": aid, "status": res["status"]}


# -- queues and workflow ------------------------------------------------------------------------


async def _edit_declaration(
    request: Request, ws: str, change: Callable[[dict[str, Any]], None]
) -> WorkspaceConfig:
    """Read the stored declaration, change it, re-apply it (ConfigError -> 400, nothing kept).

    The re-applied declaration lists no agents: Redis holds the agents as they are now (the
    admin API may have changed them since the file was loaded), and apply_workspace then just
    recomputes every agent's queue memberships from that state instead of resetting agents to
    the file's attributes and passwords. Edits are serialized per process; two nodes editing
    at the same moment can still lose one edit (apply_workspace has no compare-and-set).
    """
    ctx, state = _ctx(request), request.app.state
    lock: asyncio.Lock | None = getattr(state, "admin_edit_lock", None)
    if lock is None:
        lock = state.admin_edit_lock = asyncio.Lock()
    async with lock:
        raw = await ctx.redis.hget(keys.settings(ws), "decl")
        if raw is None:
            raise NotFound("workspace not found", code="workspace.unknown")
        decl: dict[str, Any] = json.loads(raw)
        change(decl)
        decl["agents"] = []
        return await ctx.switch.apply_workspace(decl)


async def list_queues(request: Request) -> dict[str, Any]:
    who = await _caller(request)
    ctx = _ctx(request)
    cfg = await ctx.switch.config(who.workspace)
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
    created = False

    def change(decl: dict[str, Any]) -> None:
        nonlocal created
        queues = decl.setdefault("queues", [])
        for q in queues:
            if q.get("id") == qid:
                q.update(d)
                return
        created = True
        queues.append({**d, "id": qid})

    await _edit_declaration(request, who.workspace, change)
    cfg = await ctx.switch.config(who.workspace)
    view = next(q for q in await queries.queues(ctx.redis, cfg, who.workspace) if q["id"] == qid)
    return JSONResponse(view, status_code=201 if created else 200)


async def delete_queue(request: Request) -> Response:
    who = await _caller(request, "admin")
    ctx = _ctx(request)
    qid = _path_id(request, "queue")
    cfg = await ctx.switch.config(who.workspace)
    if cfg.queue(qid) is None:
        raise NotFound("queue not found", code="queue.unknown")
    if qid in queries.workflow_queues(cfg.workflow_json):
        raise Conflict(
            "the workflow routes to this queue; change the workflow first", code="queue.in_use"
        )
    for status in ("queued", "offered"):
        page = await queries.list_cases(ctx.redis, cfg, who.workspace, status, queue=qid, limit=1)
        if page.cases:
            raise Conflict(
                f"cases are {status} in this queue; move them first", code="queue.in_use"
            )

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
    cfg = await _ctx(request).switch.config(who.workspace)
    return dict(cfg.workflow_json)


async def put_workflow(request: Request) -> Response:
    """Replace the workflow (TaskRouter's JSON); a malformed one is refused naming path/column."""
    who = await _caller(request, "admin")
    ctx = _ctx(request)
    wf = await _body(request)
    cfg = await ctx.switch.config(who.workspace)
    try:
        load_workflow(wf, [q.id for q in cfg.queues])
    except WorkflowError as e:
        return _invalid(f"workflow: {e}", f"workflow.{e.path}".rstrip("."), e.column)

    def change(decl: dict[str, Any]) -> None:
        decl["workflow"] = wf

    cfg = await _edit_declaration(request, who.workspace, change)
    return JSONResponse(dict(cfg.workflow_json))


# -- customers ----------------------------------------------------------------------------------


async def _visible_customer(request: Request) -> tuple[Principal, str]:
    """The caller and the customer in the path, if they may see it (supervisor+, or an agent
    holding or being offered one of the customer's cases); 404 otherwise."""
    who = await _caller(request)
    cust = _path_id(request, "customer")
    if not who.can("supervisor"):
        redis = _ctx(request).redis
        mine = await queries.held_cases(redis, who.workspace, who.subject)
        if cust not in await queries.customers_of(redis, who.workspace, mine):
            raise NotFound("customer not found", code="customer.unknown")
    return who, cust


async def get_customer(request: Request) -> dict[str, Any]:
    who, cust = await _visible_customer(request)
    view = await queries.customer(_ctx(request).redis, who.workspace, cust)
    if view is None:
        raise NotFound("customer not found", code="customer.unknown")
    return view


async def customer_timeline(request: Request) -> dict[str, Any]:
    who, cust = await _visible_customer(request)
    redis = _ctx(request).redis
    if not await redis.exists(keys.customer(who.workspace, cust)):
        raise NotFound("customer not found", code="customer.unknown")
    before = _int_param(request, "before", None, 0, 2**62)
    limit = _int_param(request, "limit", snapshot.TIMELINE_PAGE, 1, 200)
    assert limit is not None
    return await snapshot.history(redis, who.workspace, cust, before, limit)


async def find_customers(request: Request) -> dict[str, Any]:
    who = await _caller(request, "supervisor")
    identity = request.query_params.get("identity", "")
    kind, sep, value = identity.partition(":")
    if not sep:
        raise BadRequest("identity: kind:value, like email:a@example.com", code="query.invalid")
    try:
        normalized = parse_event(
            {"id": "lookup", "channel": "chat", "identities": {kind: value}}
        ).identities[0]
    except BadRequest as e:
        raise BadRequest(f"identity: {e.message}", code="query.invalid") from None
    redis = _ctx(request).redis
    cust = await queries.find_customer(redis, who.workspace, normalized)
    view = await queries.customer(redis, who.workspace, cust) if cust else None
    return {"customers": [view] if view else []}


async def merge_customers(request: Request) -> dict[str, Any]:
    who = await _caller(request, "admin")
    d = await _body(request)
    _only(d, frozenset({"into", "from"}))
    into, from_ = _opt_str(d, "into", 64), _opt_str(d, "from", 64)
    if into is None or from_ is None:
        raise BadRequest("into and from: both required", code="body.invalid")
    if into == from_:
        raise BadRequest("into and from: two different customers", code="body.invalid")
    if not keys.valid_id(into) or not keys.valid_id(from_):
        raise NotFound("customer not found", code="customer.unknown")
    res = await _ctx(request).switch.merge_customers(who.workspace, into, from_)
    return {
        "into": into,
        "from": from_,
        "moved_cases": int(res.get("moved_cases", 0)),
        "identities": list(res.get("identities") or []),
    }


# -- cases ----------------------------------------------------------------------------------------


async def list_cases(request: Request) -> dict[str, Any]:
    who = await _caller(request, "supervisor")
    ctx = _ctx(request)
    status = request.query_params.get("status", "")
    queue = request.query_params.get("queue", "")
    if queue and not keys.valid_id(queue):
        raise BadRequest("queue: not a queue id", code="query.invalid")
    limit = _int_param(request, "limit", 50, 1, 200)
    assert limit is not None
    cfg = await ctx.switch.config(who.workspace)
    page = await queries.list_cases(
        ctx.redis,
        cfg,
        who.workspace,
        status,
        queue=queue,
        limit=limit,
        cursor=request.query_params.get("cursor"),
    )
    return {"cases": page.cases, "next_cursor": page.next_cursor}


async def get_case(request: Request) -> dict[str, Any]:
    who = await _caller(request)
    ctx = _ctx(request)
    case = _path_id(request, "case")
    if not who.can("supervisor") and case not in await queries.held_cases(
        ctx.redis, who.workspace, who.subject
    ):
        raise NotFound("case not found", code="case.unknown")
    detail = await snapshot.case_detail(ctx.redis, who.workspace, case)
    if detail is None:
        raise NotFound("case not found", code="case.unknown")
    detail["case"] = queries.case_summary(await queries.case_fields(ctx.redis, who.workspace, case))
    return detail


async def create_case(request: Request) -> Response:
    """Open a case by ingesting one inbound event; the same ``id`` again changes nothing."""
    who = await _caller(request, "supervisor")
    d = await _body(request)
    _only(d, _CASE_FIELDS)
    # the key is namespaced so it cannot collide with the ids of adapters' events
    key = _opt_str(d, "id", 190) or new_id("e")
    event = {**d, "id": f"api:{key}", "kind": "message"}
    res = await _ctx(request).switch.ingest(who.workspace, event)
    out = {
        "id": key,
        "case": res.case,
        "customer": res.customer,
        "action": res.action,
        "duplicate": res.duplicate,
        "offered": res.offered,
    }
    return JSONResponse(out, status_code=200 if res.duplicate else 201)


async def move_case(request: Request) -> dict[str, Any]:
    """Supervisor move: a waiting (queued or offered) case goes to another queue."""
    who = await _caller(request, "supervisor")
    ctx = _ctx(request)
    case = _path_id(request, "case")
    d = await _body(request)
    _only(d, frozenset({"queue", "note"}))
    queue = _opt_str(d, "queue", 64)
    if queue is None:
        raise BadRequest("queue: required", code="body.invalid")
    note = d.get("note", "")
    if not isinstance(note, str) or len(note) > 2000:
        raise BadRequest("note: a string of at most 2000 characters", code="body.invalid")
    await ctx.switch.transfer(who.workspace, "", case, queue=queue, note=note)
    return queries.case_summary(await queries.case_fields(ctx.redis, who.workspace, case))


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document())


Handler = Callable[[Request], Awaitable[Any]]

#: (path under /api, method, handler) — router/openapi.py documents each one.
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("/openapi.json", "GET", openapi_json),
    ("/agents", "GET", list_agents),
    ("/agents/{id}", "GET", get_agent),
    ("/agents/{id}", "PUT", put_agent),
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
)


def admin_routes() -> list[BaseRoute]:
    """The administration routes, each wrapped by router.http.endpoint (typed errors -> JSON)."""
    return [Route(path, endpoint(fn), methods=[method]) for path, method, fn in ROUTES]
