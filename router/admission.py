"""The WebSocket handshake every endpoint shares: codec, Origin, draining, refusals.

A connection that may not be served is accepted only to say why — one ``error`` frame, then a
close with 1008 — so clients learn the reason instead of seeing a bare HTTP 403.
"""

from __future__ import annotations

from starlette.websockets import WebSocket

from router import wire
from router.auth import origin_allowed
from router.context import Ctx
from router.errors import CLOSE_CODES

__all__ = ["accept_socket", "admit", "reject_connection"]


async def accept_socket(websocket: WebSocket, codec: wire.Codec | None) -> None:
    """Accept the handshake, naming the subprotocol only if the client offered it: a client
    that offered none gets the endpoint's default codec, unnamed (RFC 6455, 4.2.2)."""
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=codec if codec in offered else None)


async def reject_connection(
    websocket: WebSocket, codec: wire.Codec | None, code: str, message: str
) -> None:
    """Accept, say why in an error frame, close with 1008 — the client learns the reason."""
    await accept_socket(websocket, codec)
    data = wire.encode({"type": "error", "code": code, "message": message}, codec or wire.JSON)
    if isinstance(data, bytes):
        await websocket.send_bytes(data)
    else:
        await websocket.send_text(data)
    await websocket.close(CLOSE_CODES["policy"], message[:100])


async def admit(
    websocket: WebSocket, ctx: Ctx, *, default: wire.Codec = wire.JSON, browser: bool = True
) -> wire.Codec | None:
    """The connection's codec, or None when it was refused (unknown subprotocol, a foreign
    browser Origin on a browser endpoint) or told to go elsewhere (1012: this node drains)."""
    codec = wire.choose(websocket.scope.get("subprotocols", []), default=default)
    if codec is None:
        await reject_connection(
            websocket,
            None,
            "subprotocol.unsupported",
            f"speak one of {', '.join(wire.SUBPROTOCOLS)}",
        )
        return None
    if browser and not origin_allowed(websocket.headers.get("origin"), ctx.settings.origins()):
        await reject_connection(websocket, codec, "origin.forbidden", "origin not allowed")
        return None
    if ctx.draining:
        await accept_socket(websocket, codec)
        await websocket.close(CLOSE_CODES["restart"], "draining")
        return None
    return codec
