"""Administration REST API for customers and cases: look up a customer by identity, read one
and their timeline, merge two, and list, read, open and move cases. The rules of
``router/admin_api.py`` hold here too (it owns the route table): a supervisor sees every customer
and case of the workspace, an agent only those of cases they hold or are offered, and anything
else answers 404, never 403. Opening a case ingests one inbound event through the
:class:`~router.switch.Switch`, so repeating its ``id`` changes nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from router import keys, queries, snapshot
from router.admin_http import _body, _caller, _ctx, _int_param, _only, _opt_str, _path_id
from router.attachments import Attachments
from router.auth import Principal
from router.errors import BadRequest, NotFound
from router.ids import new_id
from router.ingest import attachment_name, parse_event

__all__ = [
    "create_case",
    "customer_timeline",
    "find_customers",
    "get_case",
    "get_customer",
    "list_cases",
    "merge_customers",
    "move_case",
]

_CASE_FIELDS = frozenset(
    {"id", "channel", "identities", "name", "subject", "text", "attributes", "bridge"}
)


# -- customers ----------------------------------------------------------------------------------


async def _visible_customer(request: Request) -> tuple[Principal, str]:
    """The caller and the customer in the path, if they may see it (supervisor+, or an agent
    holding or being offered one of the customer's cases); 404 otherwise."""
    who = await _caller(request)
    cust = _path_id(request, "customer")
    if not await _may_see(request, who, cust):
        raise NotFound("customer not found", code="customer.unknown")
    return who, cust


async def _may_see(request: Request, who: Principal, cust: str) -> bool:
    """Supervisor+, or an agent holding or being offered one of the customer's cases."""
    if who.can("supervisor"):
        return True
    redis = _ctx(request).redis
    mine = await queries.held_cases(redis, who.workspace, who.subject)
    return cust in await queries.customers_of(redis, who.workspace, mine)


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
    cfg = await ctx.switch.config(who.workspace, fresh=True)
    page = await queries.list_cases(
        ctx.redis,
        cfg,
        who.workspace,
        status,
        queue=queue,
        limit=limit,
        cursor=request.query_params.get("cursor"),
        commands=ctx.switch.store.commands,
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
    event = {**{k: v for k, v in d.items() if k != "bridge"}, "id": f"api:{key}", "kind": "message"}
    # the bridge that carries this conversation (a CRM opening a WhatsApp case): the replies go
    # out through it alone, not through every bridge that takes the channel
    source = ""
    if bridge := _opt_str(d, "bridge", 64):
        ctx = _ctx(request)
        known = {b.id: b for b in ctx.bridge_keys if b.workspace == who.workspace}
        if bridge not in known:
            raise BadRequest(f"bridge: no bridge {bridge!r} in this workspace", code="body.invalid")
        if d.get("channel") not in known[bridge].channels:
            raise BadRequest(f"bridge: {bridge} does not take this channel", code="body.invalid")
        source = f"bridge:{bridge}"
    res = await _ctx(request).switch.ingest(who.workspace, event, source=source)
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
    """Supervisor move: a case goes to another queue — a waiting one (queued or offered), or
    one taken back from its agent (assigned or wrapping: signed out, gone home)."""
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
    name = await ctx.redis.hget(keys.agent(who.workspace, who.subject), "name")
    by_name = (name or b"").decode() or who.subject
    await ctx.switch.transfer(who.workspace, "", case, queue=queue, note=note, by_name=by_name)
    return queries.case_summary(await queries.case_fields(ctx.redis, who.workspace, case))


# -- attachments ------------------------------------------------------------------------------

#: types a browser may be told as they are; anything else is served as bytes to save
_INERT_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"}
)


async def get_attachment(request: Request) -> Response:
    """A file a customer sent, always as a download: its type only when inert (no HTML, no
    SVG: a customer's file must never run as our page), sandboxed, never sniffed."""
    who = await _caller(request)
    ctx = _ctx(request)
    fid = _path_id(request, "attachment")
    f = await Attachments(ctx.redis).read(who.workspace, fid)
    if f is not None and not who.can("supervisor"):
        # an agent reads the files of the customers whose cases they hold (as their timeline)
        cust = await ctx.redis.hget(keys.case(who.workspace, f.case), "cust") if f.case else None
        if cust is None or not await _may_see(request, who, cust.decode()):
            f = None
    if f is None:
        raise NotFound("attachment not found", code="attachment.unknown")
    ctype = f.type.lower() if f.type.lower() in _INERT_TYPES else "application/octet-stream"
    name = attachment_name(f.name)  # saved as shown: no bidi override turning .exe into .png
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    headers = {
        "Content-Disposition": f'attachment; filename="{ascii_name}"; '
        f"filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "private, no-store",
    }
    return Response(f.data, media_type=ctype, headers=headers)
