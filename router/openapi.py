"""The OpenAPI 3.1 document of ``/api``, built from one declarative table (``OPERATIONS``).

Each :class:`Op` names a route, who may call it, its query parameters and its request and
response schemas (``SCHEMAS``, JSON Schema 2020-12). ``tests/test_api.py`` checks that every
registered ``/api`` route is in the table and every operation in the table is registered.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["OPERATIONS", "SCHEMAS", "Op", "Param", "document"]

ID_PATTERN = "^[A-Za-z0-9_.@+-]{1,64}$"

_ROLES = {
    "public": "No token needed.",
    "agent": "Any signed-in agent.",
    "self": "The agent named in the path, or a supervisor or admin.",
    "holder": "Supervisors and admins, or an agent holding (or offered) a matching case; "
    "anyone else gets 404.",
    "supervisor": "Supervisors and admins.",
    "admin": "Admins only.",
}


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Op:
    method: str
    path: str  # under /api, OpenAPI template syntax
    summary: str
    role: str  # a key of _ROLES
    response: str = ""  # a SCHEMAS name; "" = no body
    status: int = 200
    request: str = ""  # a SCHEMAS name; "" = no body
    query: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    created: bool = False  # also answers 201 (something new was made)


def _obj(
    props: dict[str, Any], required: tuple[str, ...] = (), *, closed: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    return out


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
NUM: dict[str, Any] = {"type": "number"}
BOOL: dict[str, Any] = {"type": "boolean"}
ANY_OBJ: dict[str, Any] = {"type": "object"}
ID: dict[str, Any] = {"type": "string", "pattern": ID_PATTERN}
ROLE: dict[str, Any] = {"type": "string", "enum": ["agent", "supervisor", "admin"]}
CHANNEL: dict[str, Any] = {"type": "string", "enum": ["chat", "email", "voice"]}
STATUS: dict[str, Any] = {
    "type": "string",
    "enum": ["queued", "offered", "assigned", "wrapping", "completed", "cancelled", "abandoned"],
}
# a subset of what ingest accepts (it also takes non-ASCII addresses)
EMAIL = "^[\\x21-\\x3f\\x41-\\x7e]{1,64}@[\\x21-\\x3f\\x41-\\x7e]{1,255}$"
TOKEN: dict[str, Any] = {"type": "string", "pattern": "^[\\x21-\\x7e]{1,200}$"}
COUNTS: dict[str, Any] = {"type": "object", "additionalProperties": INT}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _obj({"code": STR, "message": STR, "path": STR, "column": INT}, ("code", "message")),
    "Login": _obj({"workspace": STR, "agent": STR, "password": STR}, ("agent", "password")),
    "LoginResult": _obj(
        {
            "token": STR,
            "ws_token": STR,
            "workspace": STR,
            "agent": STR,
            "role": ROLE,
            "name": STR,
            "expires_in": INT,
        },
        ("token", "ws_token", "workspace", "agent", "role", "expires_in"),
    ),
    "WsToken": _obj({"token": STR, "expires_in": INT}, ("token", "expires_in")),
    "Me": _obj({"workspace": STR, "agent": STR, "role": ROLE}, ("workspace", "agent", "role")),
    "Agent": _obj(
        {
            "id": STR,
            "name": STR,
            "role": ROLE,
            "status": STR,
            "capacity": COUNTS,
            "load": COUNTS,
            "idle_since": INT,
            "attributes": ANY_OBJ,
            "cases": _list(STR),
            "offers": _list(STR),
        },
        ("id", "name", "role", "status", "capacity", "load", "attributes"),
    ),
    "AgentList": _obj({"agents": _list(_ref("Agent"))}, ("agents",)),
    "AgentPut": _obj(
        {
            "id": ID,
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "attributes": ANY_OBJ,
            "capacity": _obj(
                {
                    c: {"type": "integer", "minimum": 0, "maximum": 100}
                    for c in ("chat", "email", "voice")
                },
                closed=True,
            ),
            "role": ROLE,
            "password": {"type": "string", "minLength": 1, "maxLength": 1024},
        },
        closed=True,
    ),
    "StatusPut": _obj(
        {"status": {"type": "string", "minLength": 1, "maxLength": 64}}, ("status",), closed=True
    ),
    "AgentStatus": _obj({"agent": STR, "status": STR}, ("agent", "status")),
    "Queue": _obj(
        {
            "id": STR,
            "name": STR,
            "target": STR,
            "order": {"type": "string", "enum": ["fifo", "lifo"]},
            "sl_target_s": NUM,
            "waiting": INT,
        },
        ("id", "name", "target", "order", "sl_target_s", "waiting"),
    ),
    "QueueList": _obj({"queues": _list(_ref("Queue"))}, ("queues",)),
    "QueuePut": _obj(
        {
            "id": ID,
            "name": STR,
            "target": STR,
            "order": {"type": "string", "enum": ["fifo", "lifo"]},
            "sl_target_s": NUM,
        },
        closed=True,
    ),
    "Workflow": {
        **_obj({"task_routing": _obj({"filters": _list(ANY_OBJ), "default_filter": ANY_OBJ})}),
        "description": "A Twilio TaskRouter workflow configuration; see docs/expressions.md.",
    },
    "Case": _obj(
        {
            "id": STR,
            "channel": STR,
            "status": STR,
            "priority": INT,
            "queue": STR,
            "customer": STR,
            "customer_name": STR,
            "subject": STR,
            "created": INT,
            "updated": INT,
            "closed": INT,
            "agent": STR,
            "offered_to": STR,
            "filter": STR,
            "step": INT,
            "attributes": ANY_OBJ,
            "disposition": STR,
            "callback": STR,
            "reopened": STR,
            "transferred": STR,
            "ended": INT,
            "visitor_left": INT,
        },
        ("id", "channel", "status", "priority", "queue", "customer", "created"),
    ),
    "CaseList": _obj(
        {"cases": _list(_ref("Case")), "next_cursor": {"type": ["string", "null"]}},
        ("cases", "next_cursor"),
    ),
    "CaseDetail": _obj(
        {
            "case": _ref("Case"),
            "customer": _obj(
                {"id": STR, "name": STR, "identities": _list(STR), "claims": _list(STR)}
            ),
            "timeline": _list(ANY_OBJ),
            "timeline_start": INT,
            "timeline_total": INT,
        },
        ("case", "customer", "timeline"),
    ),
    "CaseCreate": _obj(
        {
            "id": {
                "type": "string",
                "pattern": "^[\\x21-\\x7e]{1,190}$",
                "description": "idempotency key: the same id again changes nothing",
            },
            "channel": CHANNEL,
            "identities": {
                **_obj(
                    {
                        "email": {"type": "string", "pattern": EMAIL},
                        "phone": {"type": "string", "pattern": "^\\+[1-9][0-9]{6,14}$"},
                        "visitor": TOKEN,
                        "external": TOKEN,
                    },
                    closed=True,
                ),
                "minProperties": 1,
            },
            "name": {"type": "string", "maxLength": 200},
            "subject": {"type": "string", "maxLength": 998},
            "text": {"type": "string", "maxLength": 65536},
            "attributes": ANY_OBJ,
            "bridge": {"type": "string", "minLength": 1, "maxLength": 64},
        },
        ("channel", "identities"),
        closed=True,
    ),
    "CaseCreated": _obj(
        {
            "id": STR,
            "case": STR,
            "customer": STR,
            "action": STR,
            "duplicate": BOOL,
            "offered": BOOL,
        },
        ("id", "case", "customer", "action", "duplicate", "offered"),
    ),
    "CaseMove": _obj(
        {"queue": ID, "note": {"type": "string", "maxLength": 2000}}, ("queue",), closed=True
    ),
    "Customer": _obj(
        {
            "id": STR,
            "name": STR,
            "identities": _list(STR),
            "claims": {
                **_list(STR),
                "description": (
                    "identities stated but nobody verified: typed into the chat, or an email's"
                    " From when its domain disowns the mail"
                ),
            },
            "created": INT,
            "cases": _list(_ref("Case")),
            "cases_total": INT,
            "merged_into": STR,
        },
        ("id",),
    ),
    "CustomerList": _obj({"customers": _list(_ref("Customer"))}, ("customers",)),
    "Timeline": _obj(
        {"customer": STR, "start": INT, "total": INT, "timeline": _list(ANY_OBJ)},
        ("customer", "start", "total", "timeline"),
    ),
    "Merge": _obj({"into": ID, "from": ID}, ("into", "from"), closed=True),
    "MergeResult": _obj(
        {"into": STR, "from": STR, "moved_cases": INT, "identities": _list(STR)},
        ("into", "from", "moved_cases"),
    ),
}

_LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "page size")

OPERATIONS: tuple[Op, ...] = (
    Op(
        "POST",
        "/login",
        "Sign in: a session token (REST) and a WebSocket token",
        "public",
        "LoginResult",
        request="Login",
    ),
    Op("POST", "/ws-token", "A fresh one-connect WebSocket token", "agent", "WsToken"),
    Op("GET", "/me", "Who the token belongs to", "agent", "Me"),
    Op("GET", "/openapi.json", "This document", "public", "OpenAPI"),
    Op("GET", "/agents", "List the workspace's agents", "supervisor", "AgentList"),
    Op(
        "GET",
        "/agents/{id}",
        "One agent, with their open cases and pending offers",
        "self",
        "Agent",
        errors=(404,),
    ),
    Op(
        "PUT",
        "/agents/{id}",
        "Create or update an agent (fields left out keep their value)",
        "admin",
        "Agent",
        request="AgentPut",
        created=True,
    ),
    Op(
        "DELETE",
        "/agents/{id}",
        "Remove an agent who holds no case; their pending offers go to colleagues",
        "admin",
        status=204,
        errors=(404, 409),
    ),
    Op(
        "PUT",
        "/agents/{id}/status",
        "Set an agent's status",
        "self",
        "AgentStatus",
        request="StatusPut",
        errors=(404, 409),
    ),
    Op("GET", "/queues", "List the queues with their waiting counts", "agent", "QueueList"),
    Op(
        "PUT",
        "/queues/{id}",
        "Create or update a queue (re-applies the workspace)",
        "admin",
        "Queue",
        request="QueuePut",
        created=True,
        errors=(409,),
    ),
    Op(
        "DELETE",
        "/queues/{id}",
        "Delete a queue no workflow step routes to and no case waits in",
        "admin",
        status=204,
        errors=(404, 409),
    ),
    Op(
        "GET",
        "/attachments/{id}",
        "A file a customer sent (a download); agents: of the customers whose cases they hold",
        "agent",
        "File",
        errors=(404,),
    ),
    Op("GET", "/workflow", "The workflow (TaskRouter JSON)", "supervisor", "Workflow"),
    Op(
        "PUT",
        "/workflow",
        "Replace the workflow; errors name the path and column",
        "admin",
        "Workflow",
        request="Workflow",
        errors=(409,),
    ),
    Op(
        "GET",
        "/customers",
        "Look a customer up by identity",
        "supervisor",
        "CustomerList",
        query=(
            Param(
                "identity",
                {"type": "string"},
                "kind:value, e.g. email:a@example.com",
                required=True,
            ),
        ),
    ),
    Op(
        "POST",
        "/customers/merge",
        "Merge customer `from` into `into`",
        "admin",
        "MergeResult",
        request="Merge",
        errors=(404,),
    ),
    Op(
        "GET",
        "/customers/{id}",
        "A customer: profile, identities, latest cases",
        "holder",
        "Customer",
        errors=(404,),
    ),
    Op(
        "GET",
        "/customers/{id}/timeline",
        "A page of the customer's timeline (newest last)",
        "holder",
        "Timeline",
        errors=(404,),
        query=(
            Param(
                "before",
                {"type": "integer", "minimum": 0},
                "the `start` of the previous page: pages go back in time",
            ),
            _LIMIT,
        ),
    ),
    Op(
        "GET",
        "/cases",
        "List cases in one status (open: live sets; closed: the event log)",
        "supervisor",
        "CaseList",
        query=(
            Param("status", STATUS, "which cases", required=True),
            Param("queue", ID, "only this queue"),
            _LIMIT,
            Param("cursor", {"type": "string"}, "`next_cursor` of the previous page"),
        ),
    ),
    Op(
        "POST",
        "/cases",
        "Open a case (ingests one inbound event; idempotent on `id`)",
        "supervisor",
        "CaseCreated",
        request="CaseCreate",
        created=True,
    ),
    Op(
        "GET",
        "/cases/{id}",
        "A case with its customer and the latest timeline page",
        "holder",
        "CaseDetail",
        errors=(404,),
    ),
    Op(
        "PATCH",
        "/cases/{id}",
        "Move a case to another queue (a waiting one, or one taken back from its agent)",
        "supervisor",
        "Case",
        request="CaseMove",
        errors=(404, 409),
    ),
)

_WORKSPACE = Param(
    "workspace",
    ID,
    "optional: the workspace the caller means; a token for "
    "another workspace is then refused with 403",
)


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


_ERRORS = {
    400: "malformed request: the message names the field",
    401: "no, a forged or an expired token",
    403: "the caller's role or workspace may not do this",
    404: "not found (or not visible to the caller)",
    409: "not possible in the current state",
    413: "request body larger than 256 KiB",
    429: "too many failed sign-ins: wait Retry-After seconds (login.throttled)",
}


def _operation(op: Op) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": ID}
        for n in re.findall(r"{(\w+)}", op.path)
    ]
    query = op.query + ((_WORKSPACE,) if op.role != "public" else ())
    params += [
        {
            "name": p.name,
            "in": "query",
            "required": p.required,
            "schema": p.schema,
            "description": p.description,
        }
        for p in query
    ]
    responses: dict[str, Any] = {}
    ok: dict[str, Any] = {"description": "OK" if op.status == 200 else "No Content"}
    if op.response == "OpenAPI":
        ok["content"] = {"application/json": {"schema": ANY_OBJ}}
    elif op.response == "File":  # a customer's file, as bytes (its type when inert)
        ok["content"] = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    elif op.response:
        ok["content"] = {"application/json": {"schema": _ref(op.response)}}
    responses[str(op.status)] = ok
    if op.created:
        responses["201"] = {**ok, "description": "Created"}
    errors = set(op.errors)
    if op.request or op.query or op.role != "public":
        errors.add(400)
    if op.request:
        errors.add(413)
    if op.role != "public":
        errors |= {401, 403}
    elif op.path == "/login":
        errors |= {401, 429}
    for code in sorted(errors):
        responses[str(code)] = _error(_ERRORS[code])
    out: dict[str, Any] = {
        "operationId": f"{op.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', op.path).strip('_')}",
        "summary": op.summary,
        "description": f"Who may call: {_ROLES[op.role]}",
        "x-switchboard-role": op.role,
        "parameters": params,
        "responses": responses,
    }
    if op.request:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.request)}},
        }
    out["security"] = [] if op.role == "public" else [{"bearer": []}]
    return out


@functools.cache
def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (built once; treat it as read-only)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(f"/api{op.path}", {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard administration API",
            "version": "1",
            "description": "Agents, queues, workflow, customers and cases of the caller's "
            "workspace. Errors are JSON {code, message}. See docs/api.md.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the `token` from POST /api/login (a session token)",
                }
            },
        },
        "security": [{"bearer": []}],
    }
