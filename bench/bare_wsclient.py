"""A hand-framed WebSocket client on a bare ``asyncio.Protocol``, light enough to load a server.

Why not the ``websockets`` client: on a 2-core box the load generator shares the machine with
the server under test, and a full client spends about as much CPU per frame as the server.
This one does only what a benchmark needs: an HTTP/1.1 upgrade, masked binary frames out
(masking via websockets' C ``apply_mask``), unfragmented frames in, ping → pong, close. The
frames one socket sends in one event-loop turn leave in one write (the router's own
:class:`~router.transport.CorkedTransport`): in a closed loop each offer received sends the
next event, a burst per turn, and a write per frame cost the shared core about a tenth of the
router's throughput (bench/README.md). The bare limits are driven by this same client.

Guarantees and limits: one callback per complete data frame, in order, called from the
event loop (keep it short). There's no backpressure on ``send``; callers bound what they
have in flight. Fragmented messages, extensions and compression are not supported
(the handshake offers none), and a fragmented frame closes the connection with an error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import struct
from collections.abc import Callable
from typing import cast

from router.transport import CorkedTransport

try:
    from websockets.speedups import apply_mask
except ImportError:  # pure-Python fallback, slower but correct
    from websockets.utils import apply_mask

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING = 0x1, 0x2, 0x8, 0x9

OnMessage = Callable[[bytes], None]
HANDSHAKE_TIMEOUT = 10.0


class WsError(Exception):
    """The handshake failed or the server broke the protocol."""


class WsClient(asyncio.Protocol):
    """One client connection; create it with :func:`connect`."""

    def __init__(self, key: bytes, on_message: OnMessage | None) -> None:
        self.on_message = on_message
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._upgraded = False

    # asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(
            asyncio.Transport, CorkedTransport(cast(asyncio.Transport, transport))
        )

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._upgraded and not self._read_handshake():
            return
        try:
            self._read_frames()
        except WsError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or WsError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    # API ---------------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """Queue one masked binary frame (no backpressure: bound your own window)."""
        self._write_frame(_OP_BINARY, payload)

    def send_text(self, payload: str) -> None:
        """Queue one masked text frame."""
        self._write_frame(_OP_TEXT, payload.encode())

    def close(self) -> None:
        """Send a normal close frame and close the socket without waiting for the echo."""
        if self._transport is not None and not self._transport.is_closing():
            self._write_frame(_OP_CLOSE, struct.pack("!H", 1000))
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection at once (no close frame)."""
        if self._transport is not None:
            self._transport.abort()

    # internals ---------------------------------------------------------------------------

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        assert self._transport is not None
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
        mask = random.randbytes(4)  # the server unmasks whatever key it gets; no need for urandom
        self._transport.write(header + mask + apply_mask(payload, mask))

    def _read_handshake(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if not head[0].startswith("HTTP/1.1 101"):
            self._fail(WsError(f"handshake refused: {head[0]!r}"))
            return False
        if headers.get("sec-websocket-accept", "").encode() != self._accept:
            self._fail(WsError("bad Sec-WebSocket-Accept"))
            return False
        self._upgraded = True
        if not self.handshake.done():
            self.handshake.set_result(None)
        return True

    def _read_frames(self) -> None:
        buf, pos, size = self._buf, 0, len(self._buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, start = b1 & 0x7F, pos + 2
            if length == 126:
                if size - start < 2:
                    break
                (length,) = struct.unpack_from("!H", buf, start)
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", buf, start)
                start += 8
            if b1 & 0x80:
                raise WsError("server frames must not be masked")
            if size - start < length:
                break
            payload = bytes(buf[start : start + length])
            pos = start + length
            self._dispatch(b0, payload)
        del buf[:pos]

    def _dispatch(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        if not b0 & 0x80 or opcode == 0:
            raise WsError("fragmented messages are not supported")
        if opcode in (_OP_BINARY, _OP_TEXT):
            if self.on_message is not None:
                self.on_message(payload)
        elif opcode == _OP_PING:
            self._write_frame(0xA, payload)
        elif opcode == _OP_CLOSE:
            self.close()

    def _fail(self, exc: BaseException) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc)
        if self._transport is not None and not self._upgraded:
            self._transport.abort()


async def connect(
    host: str, port: int, path: str, on_message: OnMessage | None = None, *,
    headers: dict[str, str] | None = None, within: float = HANDSHAKE_TIMEOUT,
) -> WsClient:  # fmt: skip
    """Open a WebSocket to ``ws://host:port/path`` with optional extra handshake ``headers``
    (e.g. ``Sec-WebSocket-Protocol``, ``Authorization``); raise ``WsError``/``OSError`` on
    failure. The TCP connect + upgrade is bounded by ``within`` seconds (``TimeoutError``).
    """
    key = base64.b64encode(os.urandom(16))
    lines = [
        f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
        "Connection: Upgrade", f"Sec-WebSocket-Key: {key.decode()}", "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]  # fmt: skip
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(within):
        transport, client = await loop.create_connection(
            lambda: WsClient(key, on_message), host, port
        )
        transport.write(request)
        try:
            await client.handshake
        except BaseException:
            transport.abort()
            raise
    return client
