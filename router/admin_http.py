"""Request helpers shared by the administration handlers in ``router/admin_api.py`` and
``router/admin_cases.py``: the JSON body, the signed-in caller with their current role (read from
Redis on every call, so 401 / 403 are the same for every route), the app's :class:`Ctx`, strict
field checks for bodies (``body.invalid``), integer query parameters (``query.invalid``) and ids
in the path (malformed ones are simply not found, 404). They are private to the admin modules;
nothing here knows about a particular resource.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from router import keys
from router.auth import Principal
from router.context import Ctx
from router.errors import BadRequest, NotFound
from router.http import body, signed_in


async def _body(request: Request) -> dict[str, Any]:
    return await body(request)


def _ctx(request: Request) -> Ctx:
    ctx: Ctx = request.app.state.ctx
    return ctx


async def _caller(request: Request, role: str = "agent") -> Principal:
    """The signed-in caller with their current role; 401 / 403 as for every route."""
    return await signed_in(request, role, request.query_params.get("workspace") or None)


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
