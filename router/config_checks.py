"""Checks for configuration values, each raising ConfigError naming the value's path and what
was wrong with it ("channels.chat.offer_timeout_s: expected more than 0 seconds, not -5"): the
workspace declaration's parts (router/workspace.py) are built from these."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from router import keys
from router.errors import ConfigError

__all__ = [
    "as_list",
    "as_map",
    "at",
    "display_name",
    "integer",
    "kind_of",
    "number",
    "plain",
    "seconds",
    "section",
    "text",
    "unique",
    "valid_id",
]


def at(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def kind_of(value: Any) -> str:
    """What a wrong value is, for an error message ("not the text 'three'")."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (true/false)"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value[:40]!r}" + ("..." if len(value) > 40 else "")
    if isinstance(value, Mapping):
        return "a map"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def as_map(value: Any, path: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected {what}, not {kind_of(value)}")
    return value


def section(value: Any, path: str, what: str) -> Mapping[str, Any]:
    """A map that may be left out, or left empty (``routing:`` with nothing under it)."""
    return {} if value is None else as_map(value, path, what)


def as_list(value: Any, path: str, what: str) -> Sequence[Any]:
    """A list that may be left out, or left empty."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{path}: expected {what}, not {kind_of(value)}")
    return value


def unique(ids: Sequence[str], path: str, what: str) -> None:
    seen: dict[str, int] = {}
    for i, v in enumerate(ids):
        if v in seen:
            raise ConfigError(f"{path}[{i}]: duplicate {what} {v!r} (also {path}[{seen[v]}])")
        seen[v] = i


def plain(value: Any, path: str, depth: int = 0) -> None:
    """Only what JSON holds: the declaration is stored as JSON and its file is hashed as JSON.
    YAML reads more (dates, binary, sets, non-string keys such as ``yes`` or ``1``)."""
    where = path or "workspace"
    if depth > 64:  # or a YAML alias that contains itself
        raise ConfigError(f"{where[:60]}...: nested more than 64 levels deep")
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, not {value}")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(
                    f"{where}: the key {k!r} is not text (in YAML, quote keys such as "
                    f"yes, no, on, off and numbers)"
                )
            plain(v, at(path, k), depth + 1)
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            plain(v, f"{where}[{i}]", depth + 1)
        return
    raise ConfigError(
        f"{where}: expected text, a number, true/false, a list or a map, not a "
        f"{type(value).__name__} (in YAML, quote dates and times)"
    )


def valid_id(value: Any, path: str) -> str:
    if not isinstance(value, str) or not keys.valid_id(value):
        raise ConfigError(f"{path}: ids are 1-64 characters of A-Z a-z 0-9 _ . @ + -")
    return value


def text(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a string, not {kind_of(value)}")
    return value


def display_name(value: Any, default: str, path: str) -> str:
    """A display name: at most 200 characters, without control characters or the bidi
    controls that make a name read as something else on a colleague's screen (U+202E)."""
    name = default if value is None else text(value, path)
    if len(name) > 200:
        raise ConfigError(f"{path}: at most 200 characters")
    for ch in name:
        if unicodedata.category(ch) == "Cc" or unicodedata.bidirectional(ch) in _BIDI_CONTROLS:
            raise ConfigError(f"{path}: no control characters (U+{ord(ch):04X})")
    if not any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in name):
        raise ConfigError(f"{path}: at least one visible character")  # a row with no name
    return name


_BIDI_CONTROLS = frozenset({"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"})


def number(value: Any, path: str, what: str = "a number") -> float:
    """A finite number; text is refused ("30" in YAML is text, and so is a typo'd unit)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path}: expected {what}, not {kind_of(value)}")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):  # .inf and .nan in YAML, or more digits than a float holds
        raise ConfigError(f"{path}: expected {what}, not {'so large a number' if v else value}")
    return v


def integer(value: Any, path: str) -> int:
    v = number(value, path, "a whole number")
    if not v.is_integer():
        raise ConfigError(f"{path}: expected a whole number, not {value}")
    return int(v)


def seconds(d: Mapping[str, Any], key: str, default: float, path: str, *, zero: bool) -> float:
    """A duration in seconds: more than 0, or (``zero``) 0 or more."""
    v = number(d.get(key, default), at(path, key))
    if v < 0 or (v == 0 and not zero):
        more = "0 or more" if zero else "more than 0"
        raise ConfigError(f"{at(path, key)}: expected {more} seconds, not {d.get(key)}")
    return v
