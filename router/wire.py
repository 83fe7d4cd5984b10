"""Frames on the wire: maps with a ``type``, in msgpack (binary) or JSON (text) frames.

The codec is chosen per connection by WebSocket subprotocol; this is the only module that
calls msgpack. Decoding never raises anything but :class:`BadRequest` (code
``frame.malformed``): a hostile frame costs its sender an error frame, nothing more.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Final, Literal

import msgpack

from router.errors import BadRequest

__all__ = ["JSON", "MSGPACK", "SUBPROTOCOLS", "Codec", "choose", "decode", "encode"]

Codec = Literal["switchboard.v1.msgpack", "switchboard.v1.json"]
MSGPACK: Final = "switchboard.v1.msgpack"
JSON: Final = "switchboard.v1.json"
SUBPROTOCOLS: tuple[Codec, ...] = (MSGPACK, JSON)


def choose(offered: Sequence[str], default: Codec = JSON) -> Codec | None:
    """The first subprotocol the client offered that we speak; ``default`` if none offered;
    None if the client offered only ones we don't speak."""
    if not offered:
        return default
    for p in offered:
        if p == MSGPACK:
            return MSGPACK
        if p == JSON:
            return JSON
    return None


def decode(data: bytes | str, codec: Codec) -> dict[str, Any]:
    """One client frame → a dict with a string ``type``."""
    try:
        if isinstance(data, bytes) and codec == MSGPACK:
            frame = msgpack.unpackb(data, raw=False, strict_map_key=True)
        elif isinstance(data, str):
            frame = json.loads(data)
        else:
            frame = json.loads(data.decode("utf-8"))
    except (
        ValueError,
        TypeError,
        RecursionError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
        UnicodeDecodeError,
    ) as e:
        raise BadRequest(f"undecodable frame: {type(e).__name__}", code="frame.malformed") from None
    if not isinstance(frame, dict):
        raise BadRequest("a frame is a map", code="frame.malformed")
    if not isinstance(frame.get("type"), str):
        raise BadRequest("a frame has a string 'type'", code="frame.malformed")
    ref = frame.get("ref")
    if isinstance(ref, float) and not math.isfinite(ref):  # JSON's NaN: no answer could carry it
        raise BadRequest("ref: a string or a finite number", code="frame.invalid")
    return frame


def encode(frame: dict[str, Any], codec: Codec) -> bytes | str:
    if codec == MSGPACK:
        out: bytes = msgpack.packb(frame, use_bin_type=True, default=str)
        return out
    return json.dumps(frame, separators=(",", ":"), default=str)
