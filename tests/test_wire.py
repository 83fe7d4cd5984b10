"""Frames on the wire (router/wire.py): what a console decodes is what the server meant to send,
in either codec, including a value shared by many frames (one supervisors' snapshot for every
page of a node) that is encoded once and spliced into each.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from router import wire

# what frames carry: JSON's values (finite floats; integers a browser reads exactly)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _decode(data: bytes | str, codec: wire.Codec) -> Any:
    return msgpack.unpackb(data) if codec == wire.MSGPACK else json.loads(data)


@given(
    frame=st.dictionaries(st.text(max_size=8), _values, max_size=5),
    shared=_values,
    at=st.integers(min_value=0, max_value=5),
)
def test_a_shared_value_decodes_as_if_it_were_sent_plainly(
    frame: dict[str, Any], shared: Any, at: int
) -> None:
    keys = list(frame)
    key = keys[at] if at < len(keys) else "stats"
    once = wire.Once(shared)
    for codec in wire.SUBPROTOCOLS:
        plain = _decode(wire.encode({**frame, key: shared}, codec), codec)
        spliced = _decode(wire.encode({**frame, key: once}, codec), codec)
        assert spliced == plain
        assert spliced[key] == _decode(wire.encode({"v": shared}, codec), codec)["v"]


class _Counted:
    """A value neither codec knows: sent as its str, which counts how often it is made."""

    made = 0

    def __str__(self) -> str:
        _Counted.made += 1
        return "counted"


def test_a_shared_value_is_encoded_once_per_codec_however_many_frames_carry_it() -> None:
    _Counted.made = 0
    once = wire.Once({"agents": [{"id": "a1", "note": _Counted()}]})
    for ref in range(10):  # ten pages, each answered with its own ref
        for codec in wire.SUBPROTOCOLS:
            got = _decode(wire.encode({"type": "ack", "ref": ref, "stats": once}, codec), codec)
            assert got == {
                "type": "ack",
                "ref": ref,
                "stats": {"agents": [{"id": "a1", "note": "counted"}]},
            }
    assert _Counted.made == 2  # once in msgpack, once in JSON


def test_values_json_cannot_hold_as_orjson_would_are_still_sent() -> None:
    """Integers past 64 bits and non-string keys (a customer's attributes may hold them) and
    unknown objects: sent, not an error that would drop the frame."""
    frame = {"type": "case", "big": 2**70, "by_n": {1: "one"}, "odd": _Counted()}
    assert json.loads(wire.encode(frame, wire.JSON)) == {
        "type": "case",
        "big": 2**70,
        "by_n": {"1": "one"},
        "odd": "counted",
    }
