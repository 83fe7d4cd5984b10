"""One Redis connection, pipelined: what the store sends is written at once and answered by
callbacks from the socket's own reads.

redis-py makes a round trip a coroutine chain: a write and a ``drain``, then a read that waits
on a ``StreamReader`` and parses with hiredis, each step resumed by the event loop. The store
runs that for every batch of transitions, and a batch's callers then wait one more loop turn to
be woken. Here a batch is written in the loop turn that flushes it, and :meth:`Pipe.data_received`
hands each complete reply to its caller's callback as the bytes arrive, in order; batches
pipeline on the one connection, as Redis answers a client's commands in the order sent.

The connection is made by redis-py (its connection class and settings, so TLS, AUTH, ``SELECT``
and ``HELLO`` are its own), then taken over: its transport is given this protocol, and redis-py
reads nothing more from it. A connection that fails, or that Redis closes, fails every call in
flight (``StoreUnavailable``: not acknowledged, the sender retries); the next batch opens a new
one. A call that gets no answer within the deadline closes the connection the same way.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError

from router.errors import StoreUnavailable

__all__ = ["Pipe", "Replied", "TakeoverUnsupported", "open_pipe"]

log = logging.getLogger("switchboard.store")

# Called once with the replies of one write (results, or the ResponseError Redis answered
# one command with), or with the StoreUnavailable that ended the connection first.
Replied = Callable[[list[Any] | StoreUnavailable], None]

_MORE = object()  # hiredis: not a whole reply yet


class TakeoverUnsupported(Exception):
    """redis-py's connection is not laid out as this module expects (a future version): the
    store then keeps to redis-py's own path."""


def _reply_error(message: str) -> ResponseError:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


class Pipe(asyncio.Protocol):
    """A connection's replies go, in order, to the callbacks of :meth:`send`."""

    def __init__(self, conn: AbstractConnection, timeout: float) -> None:
        self._conn = conn  # kept: it owns the stream objects the transport was made with
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {
            "protocolError": InvalidResponse, "replyError": _reply_error, "notEnoughData": _MORE,
        }  # fmt: skip
        if conn.encoder.decode_responses:
            kwargs["encoding"] = conn.encoder.encoding
            kwargs["errors"] = conn.encoder.encoding_errors
        self._reader = hiredis.Reader(**kwargs)
        # per write in flight: [replies expected, replies so far, callback, deadline]
        self._waiting: collections.deque[list[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._why = "Redis closed the connection"
        self.lost = False

    def take_over(self, transport: asyncio.Transport, unread: bytes) -> None:
        self._transport = transport
        transport.set_protocol(self)
        if unread:
            self.data_received(unread)

    def send(self, packed: bytes, replies: int, done: Replied) -> None:
        """Write ``packed`` (``replies`` commands); ``done`` gets their replies."""
        if self.lost or self._transport is None:
            done(StoreUnavailable(self._why))
            return
        deadline = self._loop.time() + self._timeout
        self._waiting.append([replies, [], done, deadline])
        self._transport.write(packed)
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(deadline, self._check)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as e:  # not the Redis protocol: nothing after it can be read
                self._fail(f"Redis sent something unreadable: {e}")
                return
            if reply is _MORE:
                return
            if not self._waiting:  # a reply nobody asked for: the stream cannot be trusted
                self._fail("Redis sent a reply nobody waited for")
                return
            head = self._waiting[0]
            head[1].append(reply)
            if len(head[1]) == head[0]:
                self._waiting.popleft()
                _call(head[2], head[1])

    def eof_received(self) -> bool:
        return False  # close: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.lost:
            self._why = f"Redis connection lost: {exc}"
        self.lost = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiting, self._waiting = self._waiting, collections.deque()
        for w in waiting:
            _call(w[2], StoreUnavailable(self._why))

    def close(self) -> None:
        self._fail("the store closed")

    def _fail(self, why: str) -> None:
        if not self.lost:
            self._why = why
            self.lost = True
        if self._transport is not None:
            self._transport.abort()  # connection_lost fails what is in flight
        else:
            self.connection_lost(None)

    def _check(self) -> None:
        """The deadline of the oldest write in flight: past it, the connection is given up."""
        self._watchdog = None
        if not self._waiting:
            return
        deadline = self._waiting[0][3]
        if self._loop.time() >= deadline:
            self._fail(f"Redis did not answer within {self._timeout:g} s")
        else:
            self._watchdog = self._loop.call_at(deadline, self._check)


def _call(done: Replied, result: list[Any] | StoreUnavailable) -> None:
    try:
        done(result)
    except Exception:  # a caller's bug must not stop the replies of the others
        log.exception("a Redis reply's callback failed")


async def open_pipe(conn: AbstractConnection, deadline_s: float) -> Pipe:
    """Connect ``conn`` (redis-py's handshake), then take its transport over; a write
    unanswered for ``deadline_s`` closes it."""
    await conn.connect()
    writer = getattr(conn, "_writer", None)
    stream = getattr(conn, "_reader", None)
    transport = getattr(writer, "transport", None)
    if stream is None or not hasattr(transport, "set_protocol"):
        await conn.disconnect()
        raise TakeoverUnsupported(f"redis-py {type(conn).__name__} has no stream to take over")
    pipe = Pipe(conn, deadline_s)
    unread = bytes(getattr(stream, "_buffer", b""))  # nothing, after a handshake
    pipe.take_over(cast(asyncio.Transport, transport), unread)
    return pipe
