"""The syntax tree of router.expressions: nodes, folding constructors, rewrite and evaluate.

Holds the node types (constants, keys, comparisons, NOT/AND/OR), the constructors that
fold a node once its result no longer depends on data, the key rewrite behind bind and
strip_prefix, evaluation against data, canonical text and the key paths a tree uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

from router.expressions._values import (
    _ARR,
    _NULL,
    _OTHER,
    _compare,
    _is_scalar,
    _kind,
    _lookup,
    _Path,
    _Scalar,
)

# --- syntax tree --------------------------------------------------------------


class _Const(NamedTuple):
    value: _Scalar | tuple[_Scalar, ...] | None


class _Key(NamedTuple):
    path: _Path


class _Opaque(NamedTuple):
    """A bound object/NaN value: never in a finished tree, folded away by _cmp."""

    marker: None = None


class _Lit(NamedTuple):
    value: bool


class _Cmp(NamedTuple):
    op: str
    left: _Const | _Key
    right: _Const | _Key


class _Not(NamedTuple):
    child: _Pred


class _And(NamedTuple):
    children: tuple[_Pred, ...]


class _Or(NamedTuple):
    children: tuple[_Pred, ...]


_Pred = _Lit | _Cmp | _Not | _And | _Or
_Operand = _Const | _Key | _Opaque
_TRUE, _FALSE = _Lit(True), _Lit(False)
_OBJECT = object()  # stands for any object-like value: all such values compare alike


def _const(value: object) -> _Const | _Opaque:
    """The operand standing for a data value; arrays keep only their scalar elements."""
    if isinstance(value, list | tuple):
        # Null and nested values can never equal a scalar, so membership ignores them.
        return _Const(tuple(v for v in value if _is_scalar(v)))
    if value is not None and not _is_scalar(value):
        return _Opaque()
    return _Const(cast(_Scalar | None, value))


def _value(operand: _Const | _Opaque) -> object:
    return _OBJECT if isinstance(operand, _Opaque) else operand.value


def _cmp(op: str, left: _Operand, right: _Operand) -> _Pred:
    """Build a comparison, folding it when its result no longer depends on data."""
    if not isinstance(left, _Key) and not isinstance(right, _Key):
        return _Lit(_compare(op, _value(left), _value(right)))
    if isinstance(left, _Key) and isinstance(right, _Key):
        return _Cmp(op, left, right)
    key, other = (left, right) if isinstance(left, _Key) else (right, left)
    assert isinstance(key, _Key) and not isinstance(other, _Key)
    kind = _OTHER if isinstance(other, _Opaque) else _kind(other.value)
    if op in ("==", "!=") and kind in (_ARR, _OTHER):
        # Equal to nothing, and unequal exactly to a present value.
        return _Cmp("==", key, _Const(None)) if op == "!=" else _FALSE
    if kind == _OTHER or (kind == _NULL and op not in ("==", "!=")):
        return _FALSE
    assert isinstance(other, _Const)
    return _Cmp(op, key, other) if key is left else _Cmp(op, other, key)


def _not(child: _Pred) -> _Pred:
    if isinstance(child, _Lit):
        return _Lit(not child.value)
    return child.child if isinstance(child, _Not) else _Not(child)


def _junction(is_and: bool, children: Sequence[_Pred]) -> _Pred:
    flat: list[_Pred] = []
    for child in children:
        if isinstance(child, _Lit):
            if child.value != is_and:
                return child  # false absorbs an AND, true absorbs an OR
            continue  # and the other constant is the identity
        if (isinstance(child, _And) and is_and) or (isinstance(child, _Or) and not is_and):
            flat.extend(child.children)
        else:
            flat.append(child)
    if not flat:
        return _Lit(is_and)
    if len(flat) == 1:
        return flat[0]
    return _And(tuple(flat)) if is_and else _Or(tuple(flat))


def _rewrite(node: _Pred, key: Callable[[_Key], _Operand]) -> _Pred:
    if isinstance(node, _Cmp):
        left = key(node.left) if isinstance(node.left, _Key) else node.left
        right = key(node.right) if isinstance(node.right, _Key) else node.right
        return _cmp(node.op, left, right)
    if isinstance(node, _Not):
        return _not(_rewrite(node.child, key))
    if isinstance(node, _And | _Or):
        return _junction(isinstance(node, _And), [_rewrite(c, key) for c in node.children])
    return node


def _evaluate(node: _Pred, data: Mapping[str, Any]) -> bool:
    if isinstance(node, _Cmp):
        lv = _lookup(data, node.left.path) if isinstance(node.left, _Key) else node.left.value
        rv = _lookup(data, node.right.path) if isinstance(node.right, _Key) else node.right.value
        return _compare(node.op, lv, rv)
    if isinstance(node, _And):
        return all(_evaluate(c, data) for c in node.children)
    if isinstance(node, _Or):
        return any(_evaluate(c, data) for c in node.children)
    if isinstance(node, _Not):
        return not _evaluate(node.child, data)
    return node.value


# --- canonical text -------------------------------------------------------------


def _text_value(value: object) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_text_value(v) for v in value) + "]"
    assert isinstance(value, str)
    out = []
    for ch in value:
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def _text_path(path: _Path) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in path)[1:]


def _text(node: _Pred) -> str:
    if isinstance(node, _Lit):
        return _text_value(node.value)
    if isinstance(node, _Cmp):
        left, right = (
            _text_path(s.path) if isinstance(s, _Key) else _text_value(s.value)
            for s in (node.left, node.right)
        )
        return f"{left} {node.op} {right}"
    if isinstance(node, _Not):
        return f"NOT ({_text(node.child)})"
    if isinstance(node, _And):
        return " AND ".join(
            f"({_text(c)})" if isinstance(c, _Or) else _text(c) for c in node.children
        )
    return " OR ".join(_text(c) for c in node.children)


def _paths(node: _Pred) -> set[_Path]:
    if isinstance(node, _Cmp):
        return {s.path for s in (node.left, node.right) if isinstance(s, _Key)}
    if isinstance(node, _Not):
        return _paths(node.child)
    if isinstance(node, _And | _Or):
        return set().union(*(_paths(c) for c in node.children))
    return set()
