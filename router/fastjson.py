"""JSON on the hot path: orjson, with the standard library for what orjson refuses.

Every case crosses JSON several times (script arguments and results, timelines, pub/sub
relays); orjson does the same work in a fraction of the time. It refuses integers beyond 64
bits and non-string keys, which a customer's attributes may hold: those fall back to
``json.dumps``. Decoding errors are ``ValueError``s either way. Frames from clients are still
decoded by router/wire.py with the standard library (its errors are part of the protocol).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["dumps", "dumps_str", "loads"]

loads = orjson.loads


def dumps(value: Any, default: Callable[[Any], Any] = str) -> bytes:
    """Compact JSON, non-JSON values as ``default(value)`` (their ``str``)."""
    try:
        return orjson.dumps(value, default=default)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=default).encode()


def dumps_str(value: Any) -> str:
    return dumps(value).decode()
