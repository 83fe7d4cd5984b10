"""``/ws/chat`` — the customer's chat widget.

A new visitor connects with ``?workspace=<id>`` and receives ``welcome`` with an anonymous
visitor token to keep (the widget stores it, so a reload or a dropped connection resumes the
same conversation); a returning one connects with ``?token=<visitor token>``. A visitor sees
only their own conversation: its messages, the agents' replies, never notes or agent ids.

``identify`` with an email, phone or external id is a *claim*: shown to agents as unverified,
never linked to a customer, so typing someone else's address shows nobody their history and
pre-claims nothing. A site whose visitor is signed in vouches for them with ``identity_hash``,
the hex HMAC-SHA256 under ``SWITCHBOARD_CHAT_IDENTITY_SECRET`` of what it sends (see
:func:`identity_hash`): those identities link like any channel's. Details given while a
conversation is open reach its customer at once, and the agent who has it on screen sees them:
the one holding it gets the case anew (``case.refresh``), the one it is offered to the customer
for the offer's card (``offer.updated``).

A visitor who closes the page without ending the chat is noticed: each case counts the widget
connections open on it (the case's ``wv``, and per node: ``chat_presence.lua``), and when the
last one has been gone for ``SWITCHBOARD_VISITOR_GRACE_S`` (a reload comes back well within it)
the agent holding the case is told (``case.updated`` ``visitor.left``, the time kept as the
case's ``vleft``), or a chat nobody answered yet is abandoned; a widget that opens the case again
tells them the visitor is back (``visitor.back``). The grace is a timer in Redis, fired by
whichever node runs timers first; a node that dies with widgets open has them counted out by the
node that finds it dead (``SWITCHBOARD_NODE_DEAD_S``), and the grace runs from then.

``end`` names the case it ends (a widget that was offline when the visitor pressed *End chat*
delivers it later): an end for any other conversation than the visitor's current one ends
nothing, and a resent one (same ``id``) is recorded once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError
from starlette.websockets import WebSocket

from router import keys, snapshot
from router.admission import accept_socket, admit, reject_connection
from router.auth import Principal, Tokens
from router.context import Ctx
from router.errors import BadRequest, Forbidden, NotFound, SwitchboardError
from router.hub import Conn
from router.ingest import parse_event
from router.metrics import METRICS
from router.push import customer_view, pairs
from router.session import serve_frames

__all__ = ["chat_endpoint", "identity_hash"]

log = logging.getLogger("switchboard.chat")

# identify's fields that name the visitor, in the order identity_hash signs them
_SIGNED = (("external_id", "external"), ("email", "email"), ("phone", "phone"))
# a case's states while its conversation is open; an agent has it on screen in the last two
_OPEN = (b"queued", b"offered", b"assigned", b"wrapping")
_HELD = (b"assigned", b"wrapping")


def identity_hash(secret: str, given: Mapping[str, str]) -> str:
    """What a site puts in ``identify``'s ``identity_hash`` for a signed-in visitor: the hex
    HMAC-SHA256 under ``secret`` of ``"<field>:<value>"`` lines, joined by newlines, for
    ``external_id``, ``email`` and ``phone`` in that order, each exactly as sent, absent ones
    left out."""
    text = "\n".join(f"{f}:{given[f]}" for f, _ in _SIGNED if given.get(f))
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


# the widgets counted on this node: (workspace, case, visitor) -> connections, said again should
# this node be taken for dead and reaped (restore_widgets)
_PRESENT: dict[tuple[str, str, str], int] = {}


async def restore_widgets(ctx: Ctx) -> None:
    """Count this node's widgets again after another node took it for dead and reaped them."""
    by_ws: dict[str, list[list[Any]]] = {}
    for (ws, case, visitor), n in list(_PRESENT.items()):
        by_ws.setdefault(ws, []).append([case, visitor, n])
    for ws, held in by_ws.items():
        await ctx.switch.chat_presence(
            ws, "restore", ctx.node, ctx.settings.visitor_grace_s, json.dumps(held)
        )


class ChatSession:
    def __init__(self, ctx: Ctx, who: Principal, conn: Conn) -> None:
        self.ctx, self.conn = ctx, conn
        self.ws, self.visitor = who.workspace, who.subject
        self.case = ""
        self.identities: dict[str, str] = {"visitor": self.visitor}
        self.claims: dict[str, str] = {}  # kind -> value, stated and not verified
        self.secret = ctx.settings.chat_identity_secret
        self.name = ""
        self.present = ""  # the case this connection is counted on (its ``wv``)

    async def watch(self, case: str) -> None:
        if case and case != self.case:
            if self.case:
                await self.ctx.hub.unwatch_case(self.ws, self.case, self.conn)
                await self.depart()
            self.case = case
            await self.ctx.hub.watch_case(self.ws, case, self.conn)
            await self._arrive(case)

    async def _arrive(self, case: str) -> None:
        """Count this connection as the visitor's on ``case``; if their agent was told they
        left, tell them they are back. A failure leaves the connection uncounted: its close
        then counts nothing either."""
        try:
            back = await self.ctx.switch.chat_presence(
                self.ws, "arrive", self.ctx.node, self.ctx.settings.visitor_grace_s,
                case, self.visitor,
            )  # fmt: skip
        except (RedisError, SwitchboardError) as e:
            log.warning("chat visitor %s not counted on %s: %s", self.visitor, case, e)
            return
        self.present = case
        key = (self.ws, case, self.visitor)
        _PRESENT[key] = _PRESENT.get(key, 0) + 1
        if back:
            frame = {"type": "case.updated", "case": case, "event": "visitor.back"}
            await self.ctx.switch.notify(self.ws, back, frame)

    async def depart(self) -> None:
        """This connection no longer counts on its case (it closed, or moved to a newer one).
        If it was the visitor's last, a timer looks after the grace whether they came back
        (``timers_run.lua``, ``v|``: on whichever node, should this one stop first)."""
        case, self.present = self.present, ""
        if not case:
            return
        key = (self.ws, case, self.visitor)
        if _PRESENT.get(key, 0) <= 1:
            _PRESENT.pop(key, None)
        else:
            _PRESENT[key] -= 1
        try:
            await self.ctx.switch.chat_presence(
                self.ws, "depart", self.ctx.node, self.ctx.settings.visitor_grace_s,
                case, self.visitor,
            )  # fmt: skip
        except (RedisError, SwitchboardError) as e:
            log.warning("chat visitor %s not uncounted on %s: %s", self.visitor, case, e)

    async def handle(self, f: dict[str, Any]) -> dict[str, Any] | None:
        t = f["type"]
        if t == "message":
            text = f.get("text")
            if not isinstance(text, str) or not text.strip() or len(text) > 8000:
                raise BadRequest("text: 1-8000 characters", code="frame.invalid")
            return await self._send("message", text, f.get("id"))
        if t == "identify":
            ack = self._identify(f)
            await self._share_details()
            return ack
        if t == "end":
            meant = f.get("case")
            if meant is not None and not isinstance(meant, str):
                raise BadRequest("case: the id of the case to end", code="frame.invalid")
            # nothing open, or an end meant for an earlier conversation (a widget that was
            # offline when the visitor pressed End chat): it must not end this one
            if not self.case or (meant and meant != self.case):
                return None
            # pinned to this connection's case: another tab may have opened a newer one since
            return await self._send("conversation.ended", "", f.get("id"), case=self.case)
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
            {
                "id": "probe",
                "channel": "chat",
                "identities": ids or {"visitor": self.visitor},
                "name": name or "",
            }
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
            self.name = probe.name  # as ingest cleans it: one line, no bidi controls
        return {"identities": sorted(self.identities), "claims": sorted(self.claims)}

    async def _share_details(self) -> None:
        """Record what the visitor says they are on the customer of their open case now, as
        their next message would (each claim; the name, unless the customer has one), and
        show it to the agent who has the case on screen: the one who holds it is sent the case
        anew (``case.refresh``), the one it is offered to the customer as it is now, for the
        offer's card (``offer.updated``) — their consoles showed it only after a reload before.
        A queued case's later offer reads the customer as recorded here. The case's state is
        read after the details are recorded: an offer made or accepted in between either read
        them itself or is the one told. Identities the site signed are linked by the next
        message, as before. If Redis fails, that next message still records everything: the
        identify stands."""
        if not self.case or not (self.name or self.claims):
            return
        r, k = self.ctx.redis, keys.case(self.ws, self.case)
        try:
            st, cust = await r.hmget(k, ["st", "cust"])
            if st not in _OPEN or not cust:
                return
            profile = keys.customer(self.ws, cust.decode())
            added = 0
            if self.name:
                added += await r.hsetnx(profile, "name", self.name)
            if self.claims:
                said = {f"claim:{kind}:{value}": "1" for kind, value in self.claims.items()}
                added += await r.hset(profile, mapping=said)
            if not added:
                return  # nothing new (a reconnect repeats its identify)
            st, agent, offer, oagent, ost = await r.hmget(
                k, ["st", "agent", "offer", "oagent", "ost"]
            )
            if st in _HELD and agent:
                to = agent.decode()
                detail = await snapshot.case_detail(r, self.ws, self.case)
                frame = {"type": "case.refresh", **detail} if detail else None
            elif st == b"offered" and oagent and offer and ost == b"pending":
                to = oagent.decode()
                frame = {
                    "type": "offer.updated",
                    "offer": offer.decode(),
                    "case": self.case,
                    "customer": customer_view(pairs(await r.hgetall(profile))),
                }
            else:
                return  # queued: nobody to tell; its offer will carry them
        except RedisError as e:
            log.warning("chat details of %s not shared with the case: %s", self.visitor, e)
            return
        if frame:
            await self.ctx.switch.notify(self.ws, to, frame)

    def _event(self, kind: str, text: str, cid: str, case: str) -> dict[str, Any]:
        """The visitor's event: what they say, as who they say they are, on their thread."""
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
        if case:  # this case, not whichever the thread names now
            event["case"] = case
        return event

    async def _send(
        self, kind: str, text: str, client_id: Any, *, case: str = ""
    ) -> dict[str, Any]:
        if client_id is None:
            cid = secrets.token_hex(8)
        elif isinstance(client_id, str) and 0 < len(client_id) <= 64:
            cid = client_id
        else:
            raise BadRequest("id: 1-64 characters", code="frame.invalid")
        res = await self.ctx.switch.ingest(
            self.ws, self._event(kind, text, cid, case), source="widget"
        )
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
    conn = Conn(websocket, codec, f"chat:{who.subject}", endpoint="chat")
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
        await session.depart()
