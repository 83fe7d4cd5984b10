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

from router import fastjson
from router.errors import BadRequest

__all__ = ["JSON", "MSGPACK", "SUBPROTOCOLS", "Codec", "Once", "choose", "decode", "encode"]

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


class Once:
    """A value sent in many frames, encoded once per codec: one supervisors' statistics
    snapshot (a thousand agents: ~250 KiB of JSON) answers every page on the node that asks
    within half a second. :func:`encode` splices it in where it is a frame's top-level value."""

    __slots__ = ("_encoded", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._encoded: dict[str, bytes] = {}

    def encoded(self, codec: Codec) -> bytes:
        out = self._encoded.get(codec)
        if out is None:
            out = self._encoded[codec] = _encode(self.value, codec)
        return out


class _Splice(Exception):
    """A frame holds a :class:`Once`: encoded piece by piece instead."""


def _default(value: Any) -> str:
    if isinstance(value, Once):
        raise _Splice
    return str(value)


def _encode(value: Any, codec: Codec) -> bytes:
    if codec == MSGPACK:
        out: bytes = msgpack.packb(value, use_bin_type=True, default=_default)
        return out
    return fastjson.dumps(value, default=_default)


def encode(frame: dict[str, Any], codec: Codec) -> bytes | str:
    """A frame in the codec: bytes (msgpack) or str (JSON, with orjson: a browser's console
    is sent JSON, and its frames are the largest). Values that neither encodes are sent as
    their ``str``; a :class:`Once` at the top level is spliced in as encoded before."""
    try:
        out = _encode(frame, codec)
    except _Splice:
        out = _spliced(frame, codec)
    return out if codec == MSGPACK else out.decode()


def _spliced(frame: dict[str, Any], codec: Codec) -> bytes:
    def part(v: Any) -> bytes:
        return v.encoded(codec) if isinstance(v, Once) else _encode(v, codec)

    if codec == MSGPACK:
        head: bytes = msgpack.Packer().pack_map_header(len(frame))
        return head + b"".join(part(k) + part(v) for k, v in frame.items())
    return b"{" + b",".join(part(k) + b":" + part(v) for k, v in frame.items()) + b"}"
