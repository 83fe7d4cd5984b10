"""Push: turn what a transition script returned into the frames an agent's console receives.

Pure functions; delivery to sockets (local, or via Redis pub/sub to the node holding the agent's
connection) lives in ``router/hub.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from router import fastjson

__all__ = [
    "case_view",
    "chat_agent_frame",
    "chat_frame",
    "customer_view",
    "offer_frame",
    "pairs",
    "script_list",
    "why",
]

_INT_FIELDS = ("pri", "created", "updated", "assigned", "closed", "age", "step")


def pairs(flat: Sequence[Any] | Mapping[Any, Any]) -> dict[str, str]:
    """A Redis HGETALL reply (flat list from Lua, or a dict from redis-py) as a str dict."""
    if isinstance(flat, Mapping):
        try:  # a raw RESP3 reply (Store.commands): bytes, decoded in C
            keys, values = map(bytes.decode, flat.keys()), map(bytes.decode, flat.values())
            return dict(zip(keys, values, strict=True))
        except TypeError:
            return {_s(k): _s(v) for k, v in flat.items()}
    if all(type(x) is str for x in flat):  # from a script's JSON reply: the hot path
        it = iter(flat)
        return dict(zip(it, it, strict=True))
    try:  # a raw RESP2 reply: bytes, decoded in C
        it = map(bytes.decode, flat)
        return dict(zip(it, it, strict=True))
    except TypeError:
        return {_s(k): _s(v) for k, v in zip(flat[0::2], flat[1::2], strict=True)}


def script_list(v: Any) -> list[Any]:
    """A list from a script's JSON reply: Redis's cjson encodes an empty Lua table as {}."""
    return v if isinstance(v, list) else []


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def case_view(fields: Mapping[str, str]) -> dict[str, Any]:
    """The case as consoles see it (internal routing fields left out). An offer carries only
    the fields read here (``OFFER_FIELDS`` in router/lua/_lib.lua): keep the two in step."""
    out: dict[str, Any] = {
        "id": fields.get("id", ""),
        "channel": fields.get("ch", ""),
        "status": fields.get("st", ""),
        "priority": int(fields.get("pri") or 0),
        "queue": fields.get("q", ""),
        "customer": fields.get("cust", ""),
        "subject": fields.get("subject", ""),
        "created": int(fields.get("created") or 0),
        "agent": fields.get("agent", ""),
        "filter": fields.get("flt", ""),
        "step": int(fields.get("step") or 0),
    }
    try:
        out["attributes"] = fastjson.loads(fields.get("attrs") or "{}")
    except ValueError:
        out["attributes"] = {}
    for k in ("disposition", "reopened", "transferred"):
        if fields.get(k):
            out[k] = fields[k]
    if fields.get("callback") == "1":  # ("0": settled, as good as none)
        out["callback"] = "1"
        if fields.get("cbwhy") == "hangup":  # not asked for: a call handed on after it ended
            out["callback_reason"] = "hung_up"
        elif fields.get("cbwhy") == "followup":  # its agent took it back to call them again
            out["callback_reason"] = "followup"
    if fields.get("vleft"):  # the chat visitor left the page then (ms; router/chat_ws.py)
        out["visitor_left"] = int(fields["vleft"])
    if fields.get("ended"):  # the customer hung up or ended the chat then (ms; event_ingest.lua)
        out["ended"] = int(fields["ended"])
    return out


def customer_view(profile: Mapping[str, str]) -> dict[str, Any]:
    """A customer as agents see it: ``identities`` vouched for (a channel's address, a signed
    chat identity) and ``claims``, what a chat visitor typed in and nobody verified."""
    identities = sorted(k[2:] for k in profile if k.startswith("i:"))
    claims = sorted(
        k[6:] for k in profile if k.startswith("claim:") and f"i:{k[6:]}" not in profile
    )
    return {
        "id": profile.get("id", ""),
        "name": profile.get("name", ""),
        "identities": identities,
        "claims": claims,
    }


def handed_on(case: Mapping[str, Any]) -> bool:
    """Whether the case (``case_view``) was transferred or moved since it was (re)opened: its
    plan is the transfer's now, not its workflow filter's."""
    moved = case.get("transferred") or ""
    return bool(moved) and float(moved) >= float(case.get("reopened") or 0)


def why_reason(pool: str, handed: bool = False) -> str:
    """Why the agent was offered a case waiting in ``pool``, as the offer card says it."""
    if pool.startswith("a~"):
        if handed:
            return "named in the transfer"
        return "preferred agent: handled this customer's case before"
    if "^" in pool:
        return "longest-idle available agent in the queue who matches the target expression"
    return "longest-idle available agent in the queue with free capacity on this channel"


def why(case: Mapping[str, Any], pool: str) -> dict[str, Any]:
    """An offer's ``why``: the queue, the workflow filter and step that routed the case (a
    transferred case's filter is '' and ``transferred`` is true), and the router's reason."""
    handed = handed_on(case)
    out = {
        "queue": case["queue"],
        "filter": "" if handed else case["filter"],
        "step": case["step"],
        "reason": why_reason(pool, handed),
    }
    if handed:
        out["transferred"] = True
    return out


def offer_frame(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The ``offer`` frame for an offer payload returned by a transition script."""
    fields = pairs(payload.get("fields") or [])
    case = case_view(fields)
    frame: dict[str, Any] = {
        "type": "offer",
        "offer": payload["offer"],
        "deadline": payload["deadline"],
        "case": case,
        "why": why(case, fields.get("pool", "")),
    }
    cust = payload.get("customer")
    if isinstance(cust, Mapping):
        frame["customer"] = customer_view(pairs(cust.get("profile") or []))
        tl = cust.get("timeline")
        if isinstance(tl, str):  # the script's entries as one JSON array text
            tl = fastjson.loads(tl)
        frame["timeline"] = tl if isinstance(tl, list) else []
        frame["timeline_total"] = cust.get("total", 0)
    return frame


def chat_agent_frame(event: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What a customer's widget sees when the agent joins, hands the chat on or closes it
    (``chat_event`` in _lib.lua): the agent's display name, never their id."""
    return {
        "type": "agent",
        "case": event.get("case", ""),
        "event": event.get("event", ""),
        "name": name,
        "ts": event.get("ts", 0),
    }


def chat_frame(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What a customer's widget sees of a timeline entry: no internal fields, no agent id."""
    return {
        "type": "message",
        "case": entry.get("case", ""),
        "id": entry.get("id", ""),
        "dir": entry.get("dir", ""),
        "text": entry.get("text", ""),
        "from": entry.get("from", "") if entry.get("dir") == "out" else "",
        "ts": entry.get("ts", 0),
    }
