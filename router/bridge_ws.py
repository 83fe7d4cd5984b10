"""``/ws/bridge`` — channel bridges stream events in and take deliveries out.

Authenticate with ``Authorization: Bearer <bridge key>``; a key is scoped to one workspace and
a set of channels. Speak msgpack (default) or JSON. Events may be pipelined: many ``event``
frames in flight, each answered by an ``ack`` (carrying the case id) once the event is durably
in Redis, or an ``error``; acks can come back out of order, matched by ``ref``. Deliveries
(``deliver``, ``call.connect``) come from the workspace outbox and are re-sent until the bridge
answers ``delivered`` with their ``id``.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from typing import Any

from starlette.websockets import WebSocket

from router import keys, wire
from router.admission import accept_socket, admit, reject_connection
from router.auth import find_bridge
from router.case_events import EventTail
from router.config import BridgeKey
from router.context import Ctx
from router.errors import BadRequest, Forbidden, NotFound, SwitchboardError
from router.hub import Conn
from router.ingest import CHANNELS, E164
from router.metrics import METRICS
from router.outbox import OutboxReader
from router.push import pairs
from router.session import serve_frames

__all__ = ["bridge_endpoint"]

_STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
MAX_UNANSWERED = 10_000  # replies remembered per connection until the bridge answers


def _outbox_id(f: dict[str, Any]) -> str:
    eid = f.get("id")
    if not isinstance(eid, str) or not _STREAM_ID.match(eid):
        raise BadRequest("id: the id of a deliver frame", code="frame.invalid")
    return eid


class BridgeSession:
    def __init__(self, ctx: Ctx, bridge: BridgeKey, conn: Conn) -> None:
        self.ctx, self.bridge, self.conn = ctx, bridge, conn
        self.ws = bridge.workspace
        # One consumer name per bridge, not per node: entries left unacknowledged by a
        # connection (closed, or on a node that died) are re-sent to the bridge's next
        # connection on whichever node it lands.
        self.reader = OutboxReader(
            ctx.redis_url,
            self.ws,
            f"bridge:{bridge.id}",
            f"bridge:{bridge.id}",
            bridge.channels,
            self.deliver,
            source=f"bridge:{bridge.id}",
            store=ctx.switch.store,
        )
        self.events: EventTail | None = None  # case lifecycle events, once subscribed
        # replies sent on this connection and not yet answered: outbox id -> (case, customer,
        # entry id), to mark each delivered when the bridge says so (oldest dropped past the
        # bound: a bridge that never answers costs nothing but the marks)
        self.replies: dict[str, tuple[str, str, str]] = {}

    async def handle(self, f: dict[str, Any]) -> dict[str, Any] | None:
        t = f["type"]
        if t == "event":
            return await self.event(f)
        if t == "delivered":
            eid = _outbox_id(f)
            reply = self.replies.get(eid)
            if reply is not None:  # marked first: a failure here leaves the entry to resend
                await self.ctx.switch.reply_delivered(
                    self.ws, *reply, via=f"bridge:{self.bridge.id}"
                )
            await self.reader.ack(eid)
            self.replies.pop(eid, None)
            return None
        if t == "delivery.failed":
            await self.delivery_failed(f)
            return None
        if t == "events.subscribe":
            return await self.subscribe(f)
        if t == "ping":
            return {"ts": time.time()}
        raise BadRequest(f"unknown frame type {t[:40]!r}", code="frame.unknown_type")

    async def subscribe(self, f: dict[str, Any]) -> dict[str, Any]:
        """Case lifecycle events from now, or ``after`` a log id the bridge handled last (a
        CRM resuming): ``case.event`` frames until the connection closes (router/case_events.py).
        Subscribing again starts again from the new cursor."""
        after = f.get("after")
        if after is None:  # from the log's end as it is now: nothing written after it is missed
            last = await self.ctx.redis.xrevrange(keys.log(self.ws), count=1)
            after = last[0][0].decode() if last else "0-0"
        elif not isinstance(after, str) or not _STREAM_ID.match(after):
            raise BadRequest("after: the id of a case.event (<ms>-<n>)", code="frame.invalid")
        if self.events is not None:
            await self.events.stop()
        self.events = EventTail(self.ctx.redis_url, self.ws, after, self.conn.send)
        self.events.start()
        return {"after": after}

    async def delivery_failed(self, f: dict[str, Any]) -> None:
        """The bridge gave up on a reply (the number is not on the platform, the platform's
        window for answering closed): the agents hear the customer did not get it, and the
        case's history says so (Switch.delivery_failed). An entry that is not pending for this
        bridge (delivered already, another's, never sent) changes nothing."""
        eid = _outbox_id(f)
        reason, to = f.get("reason"), f.get("to", "")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
            raise BadRequest("reason: why, at most 500 characters", code="frame.invalid")
        if not isinstance(to, str) or len(to) > 200:
            raise BadRequest("to: where it was going, at most 200 characters", code="frame.invalid")
        entry = await self.reader.pending(eid)
        if entry is None or entry.get("src", "") not in ("", self.reader.source):
            return  # (another source's, pending here only until the reader skips it)
        if entry.get("kind") != "deliver":
            raise BadRequest("only a deliver can fail this way", code="frame.invalid")
        reply = entry.get("entry") if isinstance(entry.get("entry"), dict) else None
        with contextlib.suppress(NotFound):  # the case is gone: nobody to tell
            await self.ctx.switch.delivery_failed(
                self.ws, str(entry.get("case", "")), reason, to=to, reply=reply, key=eid
            )
        await self.reader.ack(eid)

    async def event(self, f: dict[str, Any]) -> dict[str, Any]:
        channel = f.get("channel")
        if not isinstance(channel, str) or channel not in CHANNELS:  # as parse_event says it
            raise BadRequest(f"channel: one of {sorted(CHANNELS)}", code="event.invalid")
        if channel not in self.bridge.channels:
            raise Forbidden(f"this bridge may not send {channel} events", code="bridge.channel")
        # A key is scoped to one workspace; an event naming another is refused, not rerouted.
        if "workspace" in f and f["workspace"] != self.ws:
            raise Forbidden(
                "this bridge may not send events for that workspace", code="bridge.workspace"
            )
        ts = f.get("ts")
        if isinstance(ts, float) and not math.isfinite(ts):
            raise BadRequest("ts: seconds since the epoch", code="event.invalid")
        t0 = time.perf_counter()
        body = {k: v for k, v in f.items() if k not in ("type", "ref", "workspace")}
        res = await self.ctx.switch.ingest(self.ws, body, source=f"bridge:{self.bridge.id}")
        elapsed = time.perf_counter() - t0
        METRICS.offer_decision.observe(elapsed)  # events and cases are counted in Switch.ingest
        if res.offered:
            METRICS.ingest_to_offer.observe(elapsed)
        return {
            "case": res.case,
            "customer": res.customer,
            "action": res.action,
            "duplicate": res.duplicate,
        }

    async def deliver(self, eid: str, entry: dict[str, Any]) -> bool:
        customer = keys.customer(self.ws, entry.get("customer", ""))
        if entry.get("kind") == "call.connect":
            if "identities" in entry:  # what to tell, read by the script that accepted the call
                identities = json.loads(entry["identities"])
                name, callback = entry.get("agent_name", ""), entry.get("callback") == "1"
                attrs: bytes | str | None = entry.get("attrs")
            else:  # an entry from before (an upgrade): read now, one round trip
                raw_customer, raw_agent, (cb, attrs) = await self.ctx.switch.store.commands(
                    ("HGETALL", customer),
                    ("HGETALL", keys.agent(self.ws, entry["agent"])),
                    ("HMGET", keys.case(self.ws, entry.get("case", "")), "callback", "attrs"),
                )
                identities = _identities(pairs(raw_customer))
                name, callback = pairs(raw_agent).get("name", ""), cb == b"1"
            frame = {
                "type": "call.connect",
                "id": eid,
                "case": entry.get("case"),
                "thread": entry.get("thread", ""),
                "agent": entry["agent"],
                "agent_name": name,
                "identities": identities,
            }
            if callback:
                # the caller hung up after asking to be called back (or their call was handed
                # on after it ended): there is no live call to connect; dial the agent, then
                # the customer back
                frame["callback"] = True
                frame.update(_callback_numbers(attrs, identities))
        else:
            identities = _identities(pairs(await self.ctx.redis.hgetall(customer)))
            e = entry.get("entry") or {}
            if isinstance(e, dict) and isinstance(e.get("id"), str):
                while len(self.replies) >= MAX_UNANSWERED:
                    del self.replies[next(iter(self.replies))]
                self.replies[eid] = (str(entry.get("case", "")), entry.get("customer", ""), e["id"])
            frame = {
                "type": "deliver",
                "id": eid,
                "channel": entry.get("ch"),
                "case": entry.get("case"),
                "thread": entry.get("thread", ""),
                "subject": entry.get("subject", ""),
                "identities": identities,
                "text": e.get("text", ""),
                "from": e.get("from", ""),
                "message": e.get("id", ""),
            }
        await self.conn.send(frame)
        return False  # acknowledged when the bridge answers "delivered"


async def bridge_endpoint(websocket: WebSocket) -> None:
    ctx: Ctx = websocket.app.state.ctx
    s = ctx.settings
    codec = await admit(websocket, ctx, default=wire.MSGPACK, browser=False)
    if codec is None:
        return
    auth = websocket.headers.get("authorization", "")
    try:
        if not auth.lower().startswith("bearer "):
            raise Forbidden("send Authorization: Bearer <bridge key>", code="auth.invalid")
        bridge = find_bridge(ctx.bridge_keys, auth[7:].strip())
    except SwitchboardError as e:
        await reject_connection(websocket, codec, e.code, e.message)
        return
    await accept_socket(websocket, codec)
    conn = Conn(websocket, codec, f"bridge:{bridge.id}", endpoint="bridge")
    session = BridgeSession(ctx, bridge, conn)
    session.reader.start()
    METRICS.connections.labels("bridge").inc()
    try:
        await serve_frames(
            websocket,
            conn,
            session.handle,
            endpoint="bridge",
            max_frame=s.bridge_max_frame,
            rate=s.bridge_rate_per_s,
            concurrent=64,  # fills the pipelines; more in flight only starves agents in overload
        )
    finally:
        conn.closed = True
        METRICS.connections.labels("bridge").dec()
        await session.reader.stop()
        if session.events is not None:
            await session.events.stop()


def _identities(customer: dict[str, str]) -> list[str]:
    """A customer's linked identities ("phone:+1…", "email:…"), from their hash's ``i:`` fields."""
    return sorted(k[2:] for k in customer if k.startswith("i:"))


def _callback_numbers(attrs: bytes | str | None, identities: list[str]) -> dict[str, str]:
    """Whom a callback dials and from which number: the number the caller left (else the
    number they called from, else the customer's phone), and the number they had called."""
    try:
        a = json.loads(attrs or b"{}")
    except ValueError:
        a = {}
    if not isinstance(a, dict):
        a = {}
    out: dict[str, str] = {}
    phones = [i[6:] for i in identities if i.startswith("phone:")]
    for v in (a.get("callback_number"), a.get("caller"), *phones):
        if isinstance(v, str) and E164.match(v):
            out["callback_number"] = v
            break
    if isinstance(a.get("to"), str) and a["to"]:
        out["to"] = a["to"][:200]
    return out
