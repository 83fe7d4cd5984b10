"""``/ws/chat`` — the customer's chat widget.

A new visitor connects with ``?workspace=<id>`` and receives ``welcome`` with an anonymous
visitor token to keep (the widget stores it, so a reload or a dropped connection resumes the
same conversation); a returning one connects with ``?token=<visitor token>``. A visitor sees
only their own conversation: its messages, the agents' replies, never notes or agent ids.

``identify`` with an email, phone or external id is a *claim*: shown to agents as unverified,
never linked to a customer, so typing someone else's address shows nobody their history and
pre-claims nothing. A site whose visitor is signed in vouches for them with ``identity_hash``,
the hex HMAC-SHA256 under ``SWITCHBOARD_CHAT_IDENTITY_SECRET`` of what it sends (see
:func:`identity_hash`): those identities link like any channel's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket

from router import keys, snapshot
from router.admission import accept_socket, admit, reject_connection
from router.auth import Principal, Tokens
from router.context import Ctx
from router.errors import BadRequest, Forbidden, NotFound, SwitchboardError
from router.hub import Conn
from router.ingest import parse_event
from router.metrics import METRICS
from router.session import serve_frames

__all__ = ["chat_endpoint", "identity_hash"]

# identify's fields that name the visitor, in the order identity_hash signs them
_SIGNED = (("external_id", "external"), ("email", "email"), ("phone", "phone"))


def identity_hash(secret: str, given: Mapping[str, str]) -> str:
    """What a site puts in ``identify``'s ``identity_hash`` for a signed-in visitor: the hex
    HMAC-SHA256 under ``secret`` of ``"<field>:<value>"`` lines, joined by newlines, for
    ``external_id``, ``email`` and ``phone`` in that order, each exactly as sent, absent ones
    left out."""
    text = "\n".join(f"{f}:{given[f]}" for f, _ in _SIGNED if given.get(f))
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


class ChatSession:
    def __init__(self, ctx: Ctx, who: Principal, conn: Conn) -> None:
        self.ctx, self.conn = ctx, conn
        self.ws, self.visitor = who.workspace, who.subject
        self.case = ""
        self.identities: dict[str, str] = {"visitor": self.visitor}
        self.claims: dict[str, str] = {}  # kind -> value, stated and not verified
        self.secret = ctx.settings.chat_identity_secret
        self.name = ""

    async def watch(self, case: str) -> None:
        if case and case != self.case:
            if self.case:
                await self.ctx.hub.unwatch_case(self.ws, self.case, self.conn)
            self.case = case
            await self.ctx.hub.watch_case(self.ws, case, self.conn)

    async def handle(self, f: dict[str, Any]) -> dict[str, Any] | None:
        t = f["type"]
        if t == "message":
            text = f.get("text")
            if not isinstance(text, str) or not text.strip() or len(text) > 8000:
                raise BadRequest("text: 1-8000 characters", code="frame.invalid")
            return await self._send("message", text, f.get("id"))
        if t == "identify":
            return self._identify(f)
        if t == "end":
            if not self.case:
                return None
            return await self._send("conversation.ended", "", f.get("id"))
        if t == "ping":
            return {"ts": time.time()}
        raise BadRequest(f"unknown frame type {t[:40]!r}", code="frame.unknown_type")

    def _identify(self, f: Mapping[str, Any]) -> dict[str, Any]:
        name = f.get("name")  # checked first: a refused frame changes nothing
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise BadRequest("name: at most 200 characters", code="frame.invalid")
        given = {k: f[k] for k, _ in _SIGNED if isinstance(f.get(k), str) and f[k]}
        ids = {kind: given[k] for k, kind in _SIGNED if k in given}
        probe = parse_event(
            {"id": "probe", "channel": "chat", "identities": ids or {"visitor": self.visitor}}
        )  # validates, raises BadRequest
        signature = f.get("identity_hash")
        verified = signature is not None
        if verified:
            if not self.secret:
                raise Forbidden(
                    "this server verifies no chat identities", code="identity.unverified"
                )
            if not isinstance(signature, str):
                raise BadRequest("identity_hash: a hex string", code="frame.invalid")
            if not given:
                raise BadRequest(
                    "identity_hash: signs external_id, email or phone; none given",
                    code="frame.invalid",
                )
            expected = identity_hash(self.secret, given).encode()
            if not hmac.compare_digest(signature.lower().encode(), expected):
                raise Forbidden("identity_hash does not match", code="identity.unverified")
        for ident in probe.identities if ids else ():
            kind, value = ident.split(":", 1)
            if verified:
                self.identities[kind] = value
                self.claims.pop(kind, None)
            elif self.identities.get(kind) != value:
                self.claims[kind] = value
        if name is not None:
            self.name = name
        return {"identities": sorted(self.identities), "claims": sorted(self.claims)}

    async def _send(self, kind: str, text: str, client_id: Any) -> dict[str, Any]:
        if client_id is None:
            cid = secrets.token_hex(8)
        elif isinstance(client_id, str) and 0 < len(client_id) <= 64:
            cid = client_id
        else:
            raise BadRequest("id: 1-64 characters", code="frame.invalid")
        event = {
            "id": f"{self.visitor}:{cid}",
            "channel": "chat",
            "kind": kind,
            "identities": dict(self.identities),
            "claims": dict(self.claims),
            "thread": self.visitor,
            "text": text,
            "name": self.name,
        }
        res = await self.ctx.switch.ingest(self.ws, event, source="widget")
        await self.watch(res.case)
        return {"case": res.case, "duplicate": res.duplicate}


async def chat_endpoint(websocket: WebSocket) -> None:
    ctx: Ctx = websocket.app.state.ctx
    s = ctx.settings
    codec = await admit(websocket, ctx)
    if codec is None:
        return
    token = websocket.query_params.get("token", "")
    try:
        if token:
            who = ctx.tokens.verify(token, "visitor")
        else:
            ws = websocket.query_params.get("workspace", "")
            await ctx.switch.config(ws)  # NotFound for an unknown workspace
            who = Principal("visitor", ws, Tokens.new_visitor_id(), "visitor")
            token = ctx.tokens.issue(who)
    except (SwitchboardError, ValueError) as e:
        msg = e.message if isinstance(e, SwitchboardError) else "unknown workspace"
        code = e.code if isinstance(e, SwitchboardError) else NotFound.code
        await reject_connection(websocket, codec, code, msg)
        return
    await accept_socket(websocket, codec)
    conn = Conn(websocket, codec, f"chat:{who.subject}")
    session = ChatSession(ctx, who, conn)
    METRICS.connections.labels("chat").inc()
    try:
        case = await ctx.redis.hget(keys.threads(who.workspace), f"chat:{who.subject}")
        messages: list[dict[str, Any]] = []
        agent = None
        if case:
            await session.watch(case.decode())
            messages = await snapshot.chat_history(ctx.redis, who.workspace, session.case)
            agent = await snapshot.chat_agent(ctx.redis, who.workspace, session.case)
        await conn.send(
            {
                "type": "welcome",
                "visitor": who.subject,
                "token": token,
                "workspace": who.workspace,
                "case": session.case,
                "messages": messages,
                "agent": agent,
            }
        )
        await serve_frames(
            websocket,
            conn,
            session.handle,
            endpoint="chat",
            max_frame=s.chat_max_frame,
            rate=min(s.rate_per_s, 10.0),
        )
    finally:
        conn.closed = True
        METRICS.connections.labels("chat").dec()
        if session.case:
            await ctx.hub.unwatch_case(who.workspace, session.case, conn)
