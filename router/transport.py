"""Frames written to one socket in one event-loop turn leave in one ``write`` syscall.

A router answers in bursts: one Redis reply resolves a dozen transitions at once, and their
frames go out in the same loop turn — a bridge gets a dozen acks, an agent who completed a case
gets the ack and the next offer. uvicorn's WebSocket protocol writes each frame to the transport
straight away, and on a loopback socket each ``write`` also runs the receiving side's network
stack: it was a third of the server's CPU under load (bench/README.md). :class:`CorkedTransport`
holds the writes of one turn and sends them together at the start of the next (``call_soon``):
the order is kept, and a frame waits no longer than the callbacks already queued.

:class:`CorkedWebSocketProtocol` is uvicorn's ``websockets-sansio`` protocol on such a transport
(``SWITCHBOARD_WS_IMPL=websockets-sansio``, the default; any other value is handed to uvicorn
as is, uncorked).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["CorkedTransport", "CorkedWebSocketProtocol", "ws_protocol"]


class CorkedTransport:
    """Wraps an asyncio transport: ``write`` is deferred to the end of the loop turn and
    joined with the other writes of that turn; ``close`` sends what is held first."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._held: list[bytes] | None = None  # made on a write: most sockets are idle

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [data]
            self._loop.call_soon(self._flush)
        else:
            self._held.append(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, is_closing, pause_reading, ...
        return getattr(self._transport, name)


class CorkedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O ``websockets`` protocol, writing through a :class:`CorkedTransport`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CorkedTransport(transport))  # type: ignore[arg-type]
        self.logger = _Quiet(self.logger)  # type: ignore[assignment]  # (a Logger in all it uses)


class _Quiet:
    """uvicorn's logger for one connection, except that a client's text frame that is not
    UTF-8 (closed 1007: the client's fault) is one line, not an ERROR with a traceback each
    time — anyone may send one to the chat widget's endpoint."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if msg.startswith("Invalid UTF-8"):
            self._logger.info("closed a WebSocket (1007): a text frame that is not UTF-8")
        else:
            self._logger.exception(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


def ws_protocol(impl: str) -> Any:
    """What to give uvicorn as ``ws=`` for the ``ws_impl`` setting."""
    return CorkedWebSocketProtocol if impl == "websockets-sansio" else impl
