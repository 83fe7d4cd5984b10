"""Value kinds and comparison for router.expressions: what a JSON value is, how two compare.

Holds the kind classification (null, boolean, number, string, array, other), numeric
strings, the scalar comparison and membership rules every operator uses, and key-path
lookup in data. Pure functions on plain data; nothing here knows the syntax tree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_NUMERIC_STRING = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_MAX_INT_BITS = 3000  # beyond this str(int) gets slow, and no routing data is that big


# --- values -----------------------------------------------------------------

_NULL, _BOOL, _NUM, _STR, _ARR, _OTHER = range(6)
_Scalar = bool | int | float | str
_Path = tuple[str | int, ...]


def _kind(value: object) -> int:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int):
        return _NUM if value.bit_length() <= _MAX_INT_BITS else _OTHER
    if isinstance(value, float):
        return _NUM if math.isfinite(value) else _OTHER
    if isinstance(value, str):
        return _STR
    if isinstance(value, list | tuple):
        return _ARR
    return _OTHER


def _as_number(text: str) -> int | float | None:
    # Bounded so int() never meets Python's digit limit on hostile data.
    if len(text) > 400 or not _NUMERIC_STRING.fullmatch(text):
        return None
    if text.lstrip("+-").isdigit():
        return int(text)
    number = float(text)
    return number if math.isfinite(number) else None


def _is_scalar(value: object) -> bool:
    return _kind(value) in (_BOOL, _NUM, _STR)


def _pair(a: object, b: object) -> tuple[Any, Any] | None:
    """Both scalars made comparable (numeric strings vs numbers), or None."""
    ka, kb = _kind(a), _kind(b)
    if ka == kb and ka in (_BOOL, _NUM, _STR):
        return a, b
    if ka == _NUM and isinstance(b, str):
        nb = _as_number(b)
        return None if nb is None else (a, nb)
    if isinstance(a, str) and kb == _NUM:
        na = _as_number(a)
        return None if na is None else (na, b)
    return None


def _member(item: object, array: object) -> bool:
    """Whether scalar ``item`` equals a scalar element of ``array`` (False if not an array)."""
    if not isinstance(array, list | tuple) or not _is_scalar(item):
        return False
    return any((p := _pair(item, e)) is not None and p[0] == p[1] for e in array)


def _compare(op: str, a: object, b: object) -> bool:
    if op in ("==", "!="):
        if a is None or b is None:
            return (a is b) == (op == "==")
        pair = _pair(a, b)
        return pair is not None and (pair[0] == pair[1]) == (op == "==")
    if op == "HAS":
        return _member(b, a)
    if op in ("IN", "NOT IN"):
        return isinstance(b, list | tuple) and _is_scalar(a) and _member(a, b) == (op == "IN")
    if op == "CONTAINS":
        return isinstance(a, str) and isinstance(b, str) and b in a
    pair = _pair(a, b)
    if pair is None or isinstance(a, bool):
        return False
    x, y = pair
    return bool(x > y if op == ">" else x >= y if op == ">=" else x < y if op == "<" else x <= y)


def _lookup(data: object, path: _Path) -> Any:
    for step in path:
        if isinstance(step, int):
            if not isinstance(data, list | tuple) or step >= len(data):
                return None
            data = data[step]
        elif isinstance(data, Mapping):
            data = data.get(step)
        else:
            return None
    return data
