"""``/ws/chat`` — the customer's chat widget.

A new visitor connects with ``?workspace=<id>`` and receives ``welcome`` with an anonymous
visitor token to keep (the widget stores it, so a reload or a dropped connection resumes the
same conversation); a returning one connects with ``?token=<visitor token>``. A visitor sees
only their own conversation: its messages, the agents' replies, never notes or agent ids.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from starlette.websockets import WebSocket

from router import keys, snapshot
from router.admission import accept_socket, admit, reject_connection
from router.auth import Principal, Tokens
from router.context import Ctx
from router.errors import BadRequest, NotFound, SwitchboardError
from router.hub import Conn
from router.ingest import parse_event
from router.metrics import METRICS
from router.session import serve_frames

__all__ = ["chat_endpoint"]


class ChatSession:
    def __init__(self, ctx: Ctx, who: Principal, conn: Conn) -> None:
        self.ctx, self.conn = ctx, conn
        self.ws, self.visitor = who.workspace, who.subject
        self.case = ""
        self.identities: dict[str, str] = {"visitor": self.visitor}
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
            ids = {k: f[k] for k in ("email", "phone") if isinstance(f.get(k), str) and f[k]}
            probe = parse_event(
                {"id": "probe", "channel": "chat", "identities": ids or {"visitor": self.visitor}}
            )  # validates, raises BadRequest
            for ident in probe.identities:
                kind, value = ident.split(":", 1)
                self.identities[kind] = value
            if isinstance(f.get("name"), str):
                self.name = f["name"][:200]
            return {"identities": sorted(self.identities)}
        if t == "end":
            if not self.case:
                return None
            return await self._send("conversation.ended", "", f.get("id"))
        if t == "ping":
            return {"ts": time.time()}
        raise BadRequest(f"unknown frame type {t[:40]!r}", code="frame.unknown_type")

    async def _send(self, kind: str, text: str, client_id: Any) -> dict[str, Any]:
        cid = (
            client_id
            if isinstance(client_id, str) and 0 < len(client_id) <= 64
            else secrets.token_hex(8)
        )
        event = {
            "id": f"{self.visitor}:{cid}",
            "channel": "chat",
            "kind": kind,
            "identities": dict(self.identities),
            "thread": self.visitor,
            "text": text,
            "name": self.name,
        }
        res = await self.ctx.switch.ingest(self.ws, event)
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
        if case:
            await session.watch(case.decode())
            messages = await snapshot.chat_history(ctx.redis, who.workspace, session.case)
        await conn.send(
            {
                "type": "welcome",
                "visitor": who.subject,
                "token": token,
                "workspace": who.workspace,
                "case": session.case,
                "messages": messages,
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
