"""``/ws/agent`` — agent and supervisor consoles.

Connect with ``?token=<ws token>`` (from ``POST /api/ws-token``) and subprotocol
``switchboard.v1.json`` (browsers) or ``switchboard.v1.msgpack``. The first server frame is
``hello``, the full snapshot; it is sent again on every reconnect. Frames are documented in
docs/protocol.md.
"""

from __future__ import annotations

import math
import time
from typing import Any, TypeGuard

from starlette.websockets import WebSocket

from router import keys, snapshot
from router.admission import accept_socket, admit, reject_connection
from router.auth import Principal, token_digest
from router.context import Ctx
from router.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    SwitchboardError,
    Unauthorized,
)
from router.http import current
from router.hub import Conn
from router.metrics import METRICS
from router.session import serve_frames

__all__ = ["accept_socket", "agent_endpoint", "reject_connection"]


def _str(frame: dict[str, Any], name: str, limit: int = 200, required: bool = True) -> str:
    v = frame.get(name)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or (required and not v) or len(v) > limit:
        raise BadRequest(
            f"{name}: expected a string of at most {limit} characters", code="frame.invalid"
        )
    return v


def _finite(v: Any) -> TypeGuard[int | float]:
    """A real number (not a bool, NaN or infinity) in a sane range."""
    return (
        isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
        and abs(v) < 1e15
    )


NAME_TTL_S = 60.0  # how long a session trusts the display name it read


class AgentSession:
    def __init__(self, ctx: Ctx, who: Principal, conn: Conn) -> None:
        self.ctx, self.who, self.conn = ctx, who, conn
        self.ws, self.agent = who.workspace, who.subject
        self.sw = ctx.switch
        self._name_cache: str = who.subject  # see _name
        self._named_at: float | None = None

    async def handle(self, f: dict[str, Any]) -> dict[str, Any] | None:
        method = _HANDLERS.get(f["type"])
        if method is None:
            raise BadRequest(f"unknown frame type {f['type'][:40]!r}", code="frame.unknown_type")
        result: dict[str, Any] | None = await method(self, f)
        return result

    async def status(self, f: dict[str, Any]) -> dict[str, Any]:
        res = await self.sw.set_status(self.ws, self.agent, _str(f, "status", 64))
        return {"status": res["status"]}

    async def accept(self, f: dict[str, Any]) -> dict[str, Any]:
        res = await self.sw.accept(self.ws, self.agent, _str(f, "offer", 64))
        METRICS.offer_outcomes.labels("accepted").inc()
        out = {"case": res["case"], "duplicate": res["duplicate"]}
        if f.get("detail"):  # the offer frame already carried it; ask only when restoring
            out["detail"] = await snapshot.case_detail(self.ctx.redis, self.ws, res["case"])
        return out

    async def reject(self, f: dict[str, Any]) -> dict[str, Any]:
        res = await self.sw.reject(self.ws, self.agent, _str(f, "offer", 64))
        METRICS.offer_outcomes.labels("rejected").inc()
        return {"case": res["case"], "duplicate": res["duplicate"]}

    async def reply(self, f: dict[str, Any]) -> dict[str, Any]:
        res = await self.sw.reply(
            self.ws,
            self.agent,
            _str(f, "case", 64),
            _str(f, "text", 32_000),
            agent_name=await self._name(),
        )
        return {"entry": res["entry"]}

    async def note(self, f: dict[str, Any]) -> dict[str, Any]:
        res = await self.sw.reply(
            self.ws,
            self.agent,
            _str(f, "case", 64),
            _str(f, "text", 32_000),
            note=True,
            agent_name=await self._name(),
        )
        return {"entry": res["entry"]}

    async def transfer(self, f: dict[str, Any]) -> None:
        await self.sw.transfer(
            self.ws,
            self.agent,
            _str(f, "case", 64),
            queue=_str(f, "queue", 64, False),
            to_agent=_str(f, "agent", 64, False),
            note=_str(f, "note", 2000, False),
            by_name=await self._name(),
        )

    async def wrapup(self, f: dict[str, Any]) -> None:
        await self.sw.wrapup(self.ws, self.agent, _str(f, "case", 64))

    async def complete(self, f: dict[str, Any]) -> None:
        await self.sw.complete(
            self.ws,
            self.agent,
            _str(f, "case", 64),
            _str(f, "disposition", 64, False),
            _str(f, "note", 4000, False),
            agent_name=await self._name(),
        )

    async def followup(self, f: dict[str, Any]) -> dict[str, Any]:
        due, in_s = f.get("due"), f.get("in_s")
        if due is None and _finite(in_s):
            if in_s <= 0:
                raise BadRequest("in_s: seconds from now, more than 0", code="followup.invalid")
            due = int((time.time() + float(in_s)) * 1000)
        if not _finite(due):
            raise BadRequest(
                "due: ms since the epoch (or in_s: seconds from now)", code="frame.invalid"
            )
        res = await self.sw.followup(
            self.ws,
            self.agent,
            _str(f, "case", 64),
            int(due),
            _str(f, "note", 2000, False),
            agent_name=await self._name(),
        )
        return {"id": res["id"], "due": res["due"], "entry": res.get("entry")}

    async def cancel_followup(self, f: dict[str, Any]) -> dict[str, Any]:
        res = await self.sw.cancel_followup(
            self.ws, self.agent, _str(f, "id", 200), agent_name=await self._name()
        )
        return {"entry": res.get("entry")}

    async def reopen(self, f: dict[str, Any]) -> dict[str, Any]:
        """Take a closed case back (a follow-up): the answer carries the case detail, as an
        accepted offer's tab is built from."""
        res = await self.sw.reopen(
            self.ws, self.agent, _str(f, "case", 64), agent_name=await self._name()
        )
        detail = await snapshot.case_detail(self.ctx.redis, self.ws, res["case"])
        return {"case": res["case"], "duplicate": res["duplicate"], "detail": detail}

    async def history(self, f: dict[str, Any]) -> dict[str, Any]:
        customer = _str(f, "customer", 64)
        # a customer merged into another since the console learnt the id: follow it
        into = await self.ctx.redis.hget(keys.customer(self.ws, customer), "merged_into")
        if into:
            customer = into.decode()
        if not self.who.can("supervisor") and customer not in await self._my_customers():
            raise NotFound("customer not found", code="customer.unknown")
        before = f.get("before")
        if before is not None and (isinstance(before, bool) or not isinstance(before, int)):
            raise BadRequest("before: an index from a previous page", code="frame.invalid")
        limit = f.get("limit", 50)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise BadRequest("limit: an integer", code="frame.invalid")
        page = await snapshot.history(self.ctx.redis, self.ws, customer, before, limit)
        return {"history": page}

    async def agents(self, f: dict[str, Any]) -> dict[str, Any]:
        return {"agents": await snapshot.agent_directory(self.ctx.redis, self.ws)}

    async def queues(self, f: dict[str, Any]) -> dict[str, Any]:
        """The workspace's queues as declared now (hello's, which an admin may have changed
        since): the transfer form asks each time it is shown."""
        cfg = await self.sw.config(self.ws)
        return {"queues": [{"id": q.id, "name": q.name} for q in cfg.queues]}

    async def dismiss_reminder(self, f: dict[str, Any]) -> None:
        """The agent has seen a reminder: it is not shown again (on this or any console)."""
        rid = _str(f, "id", 200)
        if await self.ctx.redis.hdel(keys.agent_reminders(self.ws, self.agent), rid):
            # the agent's other consoles take it down too
            await self.ctx.hub.notify(
                self.ws, self.agent, {"type": "reminder.dismissed", "id": rid}
            )

    async def ping(self, f: dict[str, Any]) -> dict[str, Any]:
        return {"ts": time.time()}

    # -- supervisors -------------------------------------------------------------------------

    def _supervisor(self) -> None:
        if not self.who.can("supervisor"):
            raise Forbidden("supervisors only", code="forbidden")

    async def stats(self, f: dict[str, Any]) -> dict[str, Any]:
        self._supervisor()
        cfg = await self.sw.config(self.ws)
        return {"stats": await self.ctx.stats.shared(self.sw.store, cfg, self.ws)}

    async def move(self, f: dict[str, Any]) -> None:
        self._supervisor()
        await self.sw.transfer(
            self.ws,
            "",
            _str(f, "case", 64),
            queue=_str(f, "queue", 64),
            note=_str(f, "note", 2000, False),
            by_name=await self._name(),
        )

    async def agent_status(self, f: dict[str, Any]) -> dict[str, Any]:
        self._supervisor()
        target = _str(f, "agent", 64)
        res = await self.sw.set_status(self.ws, target, _str(f, "status", 64), by=self.agent)
        return {"status": res["status"]}

    # -- helpers -----------------------------------------------------------------------------

    async def _name(self) -> str:
        """The agent's display name, for the entries they write: read once a minute at most
        (a Redis round trip per completed case cost the server a third of its throughput)."""
        now = time.monotonic()
        if self._named_at is None or now - self._named_at > NAME_TTL_S:
            v = await self.ctx.redis.hget(keys.agent(self.ws, self.agent), "name")
            self._name_cache, self._named_at = (v.decode() if v else self.agent), now
        return self._name_cache

    async def _my_customers(self) -> set[str]:
        r = self.ctx.redis
        cases = {c.decode() for c in await r.smembers(keys.agent_cases(self.ws, self.agent))}
        for o in await r.smembers(keys.agent_offers(self.ws, self.agent)):
            if c := keys.offer_case(o.decode()):
                cases.add(c)
        out = set()
        for c in cases:
            u = await r.hget(keys.case(self.ws, c), "cust")
            if u:
                out.add(u.decode())
        return out


_HANDLERS = {
    "status": AgentSession.status,
    "offer.accept": AgentSession.accept,
    "offer.reject": AgentSession.reject,
    "case.reply": AgentSession.reply,
    "case.note": AgentSession.note,
    "case.transfer": AgentSession.transfer,
    "case.wrapup": AgentSession.wrapup,
    "case.complete": AgentSession.complete,
    "case.followup": AgentSession.followup,
    "case.reopen": AgentSession.reopen,
    "followup.cancel": AgentSession.cancel_followup,
    "history.fetch": AgentSession.history,
    "reminder.dismiss": AgentSession.dismiss_reminder,
    "ping": AgentSession.ping,
    "agents.list": AgentSession.agents,
    "queues.list": AgentSession.queues,
    "stats.fetch": AgentSession.stats,
    "case.move": AgentSession.move,
    "agent.status": AgentSession.agent_status,
}


async def agent_endpoint(websocket: WebSocket) -> None:
    ctx: Ctx = websocket.app.state.ctx
    s = ctx.settings
    codec = await admit(websocket, ctx)
    if codec is None:
        return
    try:
        token = websocket.query_params.get("token", "")
        who = ctx.tokens.verify(token, "ws")
        spent = keys.spent_token(who.workspace, token_digest(token))
        if not await ctx.redis.set(spent, 1, nx=True, ex=ctx.tokens.ttl("ws")):
            raise Unauthorized(
                "this connect token was already used; get a fresh one", code="auth.reused"
            )
        who = await current(ctx, who)  # their role now; not if it or their password changed
    except SwitchboardError as e:
        await reject_connection(websocket, codec, e.code, e.message)
        return
    await accept_socket(websocket, codec)
    # ?client=supervisor: the supervisor's page, which handles no cases and never takes over
    takes_over = websocket.query_params.get("client", "console") == "console"
    # consoles in the order they connected, whatever their node: the newest one stays
    seq = await ctx.redis.hincrby(keys.agent(who.workspace, who.subject), "cseq", 1)
    label = f"{who.workspace}/{who.subject}"
    conn = Conn(websocket, codec, label, takes_over=takes_over, seq=seq, endpoint="agent")
    session = AgentSession(ctx, who, conn)
    METRICS.connections.labels("agent").inc()
    conn.hold()  # pushes that race the snapshot are sent after it, never before
    await ctx.hub.add_agent(who.workspace, who.subject, conn)
    try:
        await ctx.switch.presence(who.workspace, who.subject, "connect", ctx.node, s.grace_s)
        cfg = await ctx.switch.config(who.workspace)
        await conn.release(await snapshot.hello(ctx.redis, cfg, who.workspace, who.subject))
        if takes_over:  # the agent's consoles elsewhere (this node or another) close
            await ctx.hub.notify(
                who.workspace, who.subject, {"type": "session.replaced", "seq": conn.seq}
            )
        await serve_frames(
            websocket,
            conn,
            session.handle,
            endpoint="agent",
            max_frame=s.agent_max_frame,
            rate=s.rate_per_s,
        )
    finally:
        conn.closed = True
        METRICS.connections.labels("agent").dec()
        await ctx.hub.remove_agent(who.workspace, who.subject, conn)
        try:
            await ctx.switch.presence(who.workspace, who.subject, "disconnect", ctx.node, s.grace_s)
        except SwitchboardError:
            pass
