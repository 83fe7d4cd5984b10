"""The frame loop every WebSocket endpoint shares: size limit, rate limit, decode, ack/error.

A client frame may carry a ``ref``; the server answers each frame with ``ack`` (plus whatever
the handler returned) or ``error`` (``code`` + ``message``) carrying the same ``ref``. Handler
errors are typed (:mod:`router.errors`) and never end the connection; an oversized frame closes
it with 1009, persistent flooding with 1008. Bridges may have many frames in flight at once
(acks then come back out of order, matched by ``ref``); consoles are handled in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from router import wire
from router.errors import CLOSE_CODES, BadRequest, RateLimited, SwitchboardError
from router.hub import Conn
from router.metrics import METRICS

__all__ = ["Bucket", "Handler", "serve_frames"]

log = logging.getLogger("switchboard.session")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
MAX_VIOLATIONS = 200  # frames dropped for the rate before the connection is closed (1008)
VIOLATIONS_FORGOTTEN_S = 60.0  # ... counted again from 0 after this long without one


class Bucket:
    """Token bucket: ``rate`` frames per second, bursts of up to twice that."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(2.0 * rate, 1.0)
        self.tokens = self.burst
        self.last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def _too_large(data: bytes | str, limit: int) -> bool:
    """Is the frame over ``limit`` bytes on the wire? A text frame arrives decoded, so count
    its UTF-8 bytes, not its characters (only when the count could matter)."""
    if isinstance(data, bytes) or len(data) > limit:
        return len(data) > limit
    return len(data) * 4 > limit and len(data.encode("utf-8", "surrogatepass")) > limit


_FRAMES_IN: dict[tuple[str, str], Any] = {}


def _count_in(endpoint: str, ftype: str) -> None:
    """Count a frame in; the metric's children are looked up once per (endpoint, type)."""
    child = _FRAMES_IN.get((endpoint, ftype))
    if child is None:
        child = _FRAMES_IN[endpoint, ftype] = METRICS.frames.labels(endpoint, "in", ftype)
    child.inc()


async def _answer(conn: Conn, frame: dict[str, Any], handle: Handler, endpoint: str) -> None:
    ref = frame.get("ref")
    ftype = frame["type"]
    try:
        reply = await handle(frame)
    except SwitchboardError as e:
        # Label unknown types as "?": a client must not be able to mint metric series.
        label = "?" if e.code == "frame.unknown_type" else ftype
        _count_in(endpoint, label)
        await conn.send({"type": "error", "ref": ref, "code": e.code, "message": e.message})
        return
    except asyncio.CancelledError:
        raise
    except Exception:
        _count_in(endpoint, ftype)
        log.exception("handler for %s failed", ftype)
        await conn.send(
            {
                "type": "error",
                "ref": ref,
                "code": "internal",
                "message": "internal error; nothing was changed",
            }
        )
        return
    _count_in(endpoint, ftype)
    out: dict[str, Any] = {"type": "ack", "ref": ref}
    if reply:
        out.update(reply)
    await conn.send(out)


def _done(
    tasks: set[asyncio.Task[None]], slots: asyncio.Semaphore
) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        slots.release()

    return done


async def serve_frames(
    websocket: WebSocket,
    conn: Conn,
    handle: Handler,
    *,
    endpoint: str,
    max_frame: int,
    rate: float,
    concurrent: int = 1,
) -> None:
    """Read frames until the client leaves; return normally on disconnect or close."""
    bucket = Bucket(rate)
    violations, last_violation = 0, 0.0
    slots = asyncio.Semaphore(concurrent) if concurrent > 1 else None
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data: bytes | str | None = msg.get("bytes")
            if data is None:
                data = msg.get("text")
            if data is None:
                continue
            if _too_large(data, max_frame):
                await websocket.close(CLOSE_CODES["too_large"], "frame too large")
                return
            allowed = bucket.take()
            frame: dict[str, Any] | None = None
            try:
                frame = wire.decode(data, conn.codec)
            except BadRequest as e:
                bad = e
            if not allowed:
                # a burst now and then, hours apart, never adds up to a close: only a flood
                now = time.monotonic()
                if now - last_violation > VIOLATIONS_FORGOTTEN_S:
                    violations = 0
                violations, last_violation = violations + 1, now
                if violations > MAX_VIOLATIONS:
                    await websocket.close(CLOSE_CODES["policy"], "rate limit")
                    return
                # answered with the frame's ref when it has one, so the client knows which
                err = RateLimited(f"over {rate:g} frames/s; this frame was dropped")
                await conn.send(
                    {
                        "type": "error",
                        "ref": frame.get("ref") if frame else None,
                        "code": err.code,
                        "message": err.message,
                    }
                )
                continue
            if frame is None:
                await conn.send(
                    {"type": "error", "ref": None, "code": bad.code, "message": bad.message}
                )
                continue
            if slots is None:
                await _answer(conn, frame, handle, endpoint)
            else:
                await slots.acquire()
                task = asyncio.create_task(_answer(conn, frame, handle, endpoint))
                tasks.add(task)
                task.add_done_callback(_done(tasks, slots))
    except WebSocketDisconnect:
        return
    finally:
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
