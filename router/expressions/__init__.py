"""TaskRouter-compatible expressions: parse once, evaluate many times, no I/O.

The language is Twilio TaskRouter's documented one (``skills HAS 'support' AND
level >= 3``), so workflows migrate unchanged; ``docs/expressions.md`` has the
grammar. Values follow JSON: null, booleans, numbers, strings, arrays, objects.

Comparison rules (all documented in ``docs/expressions.md``):

* A missing key, or an index out of range, is null. ``x == null`` is true only
  for null, ``x != null`` for anything else (arrays and objects included).
* _Scalar operators (``== != > >= < <= CONTAINS``) on an array or object are
  false, and so are array operators (``HAS IN NOT IN``) on two scalars.
* A string holding a decimal number (``"5"``, ``"08"``, ``"-1.5e3"``) is compared
  numerically when the other side is a number; two strings compare as strings.
* Any other mix of types (bool vs number, non-numeric string vs number) makes
  every operator false, ``!=`` included. Booleans are not ordered.
* NaN, infinities and integers above 3000 bits behave like objects.

Extensions beyond TaskRouter: ``NOT <expr>``, the bare predicates ``true`` and
``false``, and ``=`` accepted as ``==`` (TaskRouter's own examples use it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from router.expressions._parse import (
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_NODES,
    ExpressionError,
    _parse_path,
    _Parser,
)
from router.expressions._tree import (
    _And,
    _Cmp,
    _Const,
    _const,
    _evaluate,
    _junction,
    _Key,
    _Lit,
    _Not,
    _Operand,
    _Or,
    _paths,
    _Pred,
    _rewrite,
    _text,
    _text_path,
)
from router.expressions._values import _NUM, _as_number, _kind, _lookup

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_NODES",
    "Expression",
    "ExpressionError",
    "KeyUse",
    "Term",
    "as_number",
    "clock_values",
    "compile",
    "key_uses",
    "matches",
    "resolve",
]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


# --- public API ---------------------------------------------------------------

_ORDER_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_TURNED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}  # the same comparison, sides swapped


class Term(NamedTuple):
    """A top-level AND term ``key <op> value`` taken out by :meth:`Expression.split`."""

    key: str  # the key's path as text
    op: str  # == != < <= > >=, read with the key on the left (``1 > k`` gives ``k < 1``)
    value: Any  # the constant it is compared with: a scalar, None or an array (a tuple)


class KeyUse(NamedTuple):
    """One key as written in an expression, with the comparison it is an operand of."""

    key: str  # the key's path as text: "worker.channel.chat.assigned_tasks"
    column: int  # 1-based column where the key starts
    op: str  # the comparison's operator ("==" for "=", "NOT IN")
    left: bool  # whether the key is the comparison's left operand
    other: str | None  # the other operand's key path, or None when it is a constant
    value: Any  # the other operand's value when it is a constant (an array as a tuple)
    conjunct: bool  # the comparison is a top-level AND term: under no OR and no NOT


def _term(node: _Pred, select: Callable[[str], bool]) -> Term | None:
    if not isinstance(node, _Cmp) or node.op not in _ORDER_OPS:
        return None
    if isinstance(node.left, _Key) and isinstance(node.right, _Const):
        key, value, op = node.left, node.right.value, node.op
    elif isinstance(node.right, _Key) and isinstance(node.left, _Const):
        key, value, op = node.right, node.left.value, _TURNED.get(node.op, node.op)
    else:
        return None
    text = _text_path(key.path)
    if not select(text):
        return None
    return Term(text, op, value)


class Expression:
    """A compiled, constant-folded expression; immutable, hashable, equal by canonical text."""

    __slots__ = ("_canonical", "_node")
    _node: _Pred
    _canonical: str

    def __init__(self, node: _Pred) -> None:
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_canonical", _text(node))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Expression is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other._canonical == self._canonical

    def __hash__(self) -> int:
        return hash(self._canonical)

    def __repr__(self) -> str:
        return f"Expression({self._canonical!r})"

    def evaluate(self, data: Mapping[str, Any]) -> bool:
        """Evaluate against ``data``; never raises for any data shape (mismatches are false)."""
        return _evaluate(self._node, data)

    def bind(self, prefix: str, data: Mapping[str, Any]) -> Expression:
        """Replace every key ``prefix.<path>`` by ``<path>`` looked up in ``data``, then fold.

        Equivalent to evaluating with ``data`` nested under ``prefix``:
        ``e.bind("task", t).evaluate(d) == e.evaluate({**d, "task": t})``.
        Raises ExpressionError if ``prefix`` is not a key path.
        """
        head = _parse_path(prefix)
        size = len(head)

        def key(node: _Key) -> _Operand:
            if node.path[:size] != head:
                return node
            return _const(_lookup(data, node.path[size:]))

        return Expression(_rewrite(self._node, key))

    def strip_prefix(self, prefix: str) -> Expression:
        """Rewrite keys ``prefix.<path>`` to ``<path>``; the bare key ``prefix`` is kept."""
        head = _parse_path(prefix)
        size = len(head)

        def key(node: _Key) -> _Operand:
            rest = node.path[size:]
            # A remainder starting with an index ("worker[0]") has no key form: keep it.
            if node.path[:size] == head and rest and isinstance(rest[0], str):
                return _Key(rest)
            return node

        return Expression(_rewrite(self._node, key))

    def split(self, select: Callable[[str], bool]) -> tuple[Expression, tuple[Term, ...]]:
        """Take out the top-level AND terms comparing a selected key with a constant.

        ``select`` gets each key's path as text. Returns the rest (``true`` when nothing
        is left) and the terms in order: this expression is ``rest AND term AND ...``.
        Raises ValueError when a selected key is used any other way (under OR or NOT,
        against another key, with HAS, IN or CONTAINS): check the text with
        :func:`key_uses` first to report such a use with its column.
        """
        node = self._node
        rest: list[_Pred] = []
        terms: list[Term] = []
        for child in node.children if isinstance(node, _And) else (node,):
            term = _term(child, select)
            if term is not None:
                terms.append(term)
            elif any(select(_text_path(p)) for p in _paths(child)):
                raise ValueError(f"cannot split {_text(child)!r} off {self._canonical!r}")
            else:
                rest.append(child)
        return Expression(_junction(True, rest)), tuple(terms)

    def canonical(self) -> str:
        """Deterministic text: single quotes, upper-case keywords, one space around operators.

        Parsing it gives an equal Expression. It may exceed MAX_LENGTH after bind()
        put large values in; keep the Expression object instead of re-parsing then.
        """
        return self._canonical

    def keys(self) -> frozenset[str]:
        """The key paths still referenced, as text (``a.b[0]``)."""
        return frozenset(_text_path(p) for p in _paths(self._node))

    @property
    def is_constant(self) -> bool:
        return isinstance(self._node, _Lit)

    @property
    def constant_value(self) -> bool | None:
        """The result when the expression no longer depends on data, else None."""
        return self._node.value if isinstance(self._node, _Lit) else None


@functools.lru_cache(maxsize=4096)
def compile(expression: str) -> Expression:  # shadows the builtin on purpose, like re.compile
    """Parse and constant-fold ``expression``; cached, so repeated calls are cheap.

    Bounded against hostile input: at most MAX_LENGTH (4096) characters, MAX_DEPTH (32)
    nested parentheses/NOTs and MAX_NODES (256) nodes (operands, operators and keywords;
    an array literal counts once). Raises ExpressionError naming the 1-based column
    of the fault (the end of the text counts as one past its last character).
    """
    if not isinstance(expression, str):
        raise TypeError(f"expression must be str, not {type(expression).__name__}")
    if len(expression) > MAX_LENGTH:
        reason = f"expression longer than {MAX_LENGTH} characters"
        raise ExpressionError(expression, MAX_LENGTH + 1, reason)
    return Expression(_rewrite(_Parser(expression).parse(), lambda key: key))


def matches(expression: str, data: Mapping[str, Any]) -> bool:
    """``compile(expression).evaluate(data)``; raises ExpressionError only for bad syntax."""
    return compile(expression).evaluate(data)


def key_uses(expression: str) -> tuple[KeyUse, ...]:
    """Every key in ``expression`` as written, in text order, with its comparison.

    For checks that need the column of a key, such as where a key may appear; the
    expression is read as written, before any constant folding. Raises ExpressionError
    as :func:`compile` does.
    """
    compile(expression)  # the same bounds and errors
    parser = _Parser(expression)
    tree = parser.parse()
    # keys are operands, so a left-to-right walk of the tree meets them in token order
    columns = iter([t.column for t in parser.tokens if t.kind == "key"])
    uses: list[KeyUse] = []

    def walk(node: _Pred, top: bool) -> None:
        if isinstance(node, _Cmp):
            sides = (node.left, node.right)
            for i, side in enumerate(sides):
                if isinstance(side, _Key):
                    other = sides[1 - i]
                    name = _text_path(other.path) if isinstance(other, _Key) else None
                    value = None if isinstance(other, _Key) else other.value
                    uses.append(
                        KeyUse(
                            _text_path(side.path), next(columns), node.op, i == 0, name, value, top
                        )
                    )
        elif isinstance(node, _And):
            for child in node.children:
                walk(child, top)
        elif isinstance(node, _Or):
            for child in node.children:
                walk(child, False)
        elif isinstance(node, _Not):
            walk(node.child, False)

    walk(tree, True)
    return tuple(uses)


def as_number(value: object) -> int | float | None:
    """The number ``value`` compares as against a number, or None.

    A finite number is itself, a numeric string (``"5"``, ``"-1.5e3"``) its value;
    anything else (booleans, null, other strings, arrays, objects) is None.
    """
    if isinstance(value, str):
        return _as_number(value)
    if _kind(value) == _NUM:
        return cast(int | float, value)
    return None


def resolve(data: Mapping[str, Any], path: str) -> Any:
    """The value at key path ``path`` (``a.b[0].c``) in ``data``, or None when missing.

    Raises ExpressionError if ``path`` is not a key path.
    """
    return _lookup(data, _parse_path(path.strip()))


def clock_values(now: datetime, tz: str) -> dict[str, dict[str, int | str]]:
    """TaskRouter's time-of-day values at ``now`` in time zone ``tz``, to merge into data.

    Returns ``{"taskrouter": {"currentTime": 1430, "currentHour": "14",
    "currentMin": "30", "dayOfWeek": "Mon"}}``; the types follow TaskRouter's docs
    (numeric strings still compare numerically). TaskRouter itself always uses UTC:
    pass ``tz="UTC"`` for identical results. A naive ``now`` is taken as UTC.
    Raises ValueError for an unknown time zone.
    """
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    local = now.astimezone(zone)
    values: dict[str, int | str] = {
        "currentTime": local.hour * 100 + local.minute,
        "currentHour": f"{local.hour:02d}",
        "currentMin": f"{local.minute:02d}",
        "dayOfWeek": _DAYS[local.weekday()],
    }
    return {"taskrouter": values}
