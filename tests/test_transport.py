"""CorkedTransport: a turn's writes leave together, in order, and nothing held is lost on close."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from router.transport import CorkedTransport


class Counting:
    """A real transport, counting the writes that reach it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def pair() -> tuple[Counting, socket.socket]:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    theirs.setblocking(False)
    return Counting(transport), theirs


async def read_all(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    out = b""
    async with asyncio.timeout(5):
        while len(out) < n:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                break
            out += chunk
    return out


async def test_writes_of_one_turn_leave_in_one_write_in_order() -> None:
    real, peer = await pair()
    corked = CorkedTransport(real)  # type: ignore[arg-type]
    for frame in (b"ack-1;", b"offer;", b"ack-2;"):
        corked.write(frame)
    assert real.writes == []  # held until the turn ends
    assert await read_all(peer, 18) == b"ack-1;offer;ack-2;"
    assert real.writes == [b"ack-1;offer;ack-2;"]
    corked.write(b"next;")  # a later turn: a write of its own
    assert await read_all(peer, 5) == b"next;"
    assert real.writes[1:] == [b"next;"]
    corked.close()
    peer.close()


async def test_close_sends_what_is_held_first() -> None:
    real, peer = await pair()
    corked = CorkedTransport(real)  # type: ignore[arg-type]
    corked.write(b"last frame")
    corked.close()
    assert await read_all(peer, 100) == b"last frame"  # then EOF
    peer.close()


async def test_abort_drops_what_is_held() -> None:
    real, peer = await pair()
    corked = CorkedTransport(real)  # type: ignore[arg-type]
    corked.write(b"never sent")
    corked.abort()
    assert await read_all(peer, 100) == b""
    assert real.writes == []
    peer.close()
