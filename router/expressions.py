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
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, NoReturn, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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

MAX_LENGTH = 4096
MAX_DEPTH = 32
MAX_NODES = 256

_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "HAS", "CONTAINS", "TRUE", "FALSE", "NULL"})
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INDEX = re.compile(r"\[([0-9]+)\]")
_NUMERIC_STRING = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "/": "/", "n": "\n", "t": "\t", "r": "\r"}
_ESCAPES |= {"b": "\b", "f": "\f"}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MAX_INT_BITS = 3000  # beyond this str(int) gets slow, and no routing data is that big


class ExpressionError(ValueError):
    """A malformed expression; ``column`` is the 1-based character offset of the fault."""

    def __init__(self, expression: str, column: int, reason: str) -> None:
        super().__init__(f"{reason} at column {column}")
        self.expression = expression
        self.column = column
        self.reason = reason

    def __reduce__(self) -> tuple[type[ExpressionError], tuple[str, int, str]]:
        return (ExpressionError, (self.expression, self.column, self.reason))


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


# --- tokenizer and parser -----------------------------------------------------------


class _Token(NamedTuple):
    kind: str  # "str" "num" "key" "kw" "op" "(" ")" "[" "]" "," "end"
    value: Any
    column: int


def _segment_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, reason: str, pos: int | None = None) -> NoReturn:
        raise ExpressionError(self.text, (self.pos if pos is None else pos) + 1, reason)

    def tokens(self) -> list[_Token]:
        out: list[_Token] = []
        text = self.text
        while True:
            while self.pos < len(text) and text[self.pos].isspace():
                self.pos += 1
            start = self.pos
            if start >= len(text):
                out.append(_Token("end", None, start + 1))
                return out
            ch = text[start]
            if ch in "'\"":
                out.append(_Token("str", self.string(ch), start + 1))
            elif ch in "0123456789-." and _NUMBER.match(text, start):
                out.append(_Token("num", self.number(), start + 1))
            elif ch.isalpha() or ch == "_":
                out.append(self.word())
            elif text.startswith(("==", "!=", ">=", "<="), start):
                self.pos += 2
                out.append(_Token("op", text[start : start + 2], start + 1))
            elif ch in "=<>":
                self.pos += 1
                out.append(_Token("op", "==" if ch == "=" else ch, start + 1))
            elif ch in "()[],":
                self.pos += 1
                out.append(_Token(ch, ch, start + 1))
            else:
                self.fail(f"unexpected character {ch!r}")

    def string(self, quote: str) -> str:
        text, start = self.text, self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == quote:
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                code = text[self.pos + 1 : self.pos + 2]
                if code in _ESCAPES:
                    out.append(_ESCAPES[code])
                    self.pos += 2
                    continue
                width = {"u": 4, "U": 8}.get(code, 0)
                digits = text[self.pos + 2 : self.pos + 2 + width]
                if not width or len(digits) != width or not re.fullmatch("[0-9a-fA-F]+", digits):
                    self.fail("unknown escape sequence in string")
                if int(digits, 16) > 0x10FFFF:
                    self.fail("escape sequence out of Unicode range")
                out.append(chr(int(digits, 16)))
                self.pos += 2 + width
                continue
            out.append(ch)
            self.pos += 1
        self.fail("unterminated string", start)

    def number(self) -> int | float:
        match = _NUMBER.match(self.text, self.pos)
        assert match is not None
        self.pos = match.end()
        if self.pos < len(self.text) and (
            _segment_char(self.text[self.pos]) or self.text[self.pos] == "."
        ):
            self.fail("malformed number", match.start())
        token = match.group()
        value: int | float = float(token) if any(c in token for c in ".eE") else int(token)
        if _kind(value) != _NUM:
            self.fail("number out of range", match.start())
        return value

    def word(self) -> _Token:
        text, start = self.text, self.pos
        while self.pos < len(text) and _segment_char(text[self.pos]):
            self.pos += 1
        first = text[start : self.pos]
        if first.upper() in _KEYWORDS:
            return _Token("kw", first.upper(), start + 1)
        path: list[str | int] = [first]
        while self.pos < len(text):
            if text[self.pos] == ".":
                begin = self.pos = self.pos + 1
                while self.pos < len(text) and _segment_char(text[self.pos]):
                    self.pos += 1
                if begin == self.pos:
                    self.fail("expected a key name after '.'")
                path.append(text[begin : self.pos])
            elif match := _INDEX.match(text, self.pos):
                path.append(int(match.group(1)))
                self.pos = match.end()
            else:
                break
        return _Token("key", tuple(path), start + 1)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _Lexer(text).tokens()
        self.index = 0
        self.depth = 0
        self.nodes = 0

    def fail(self, reason: str, token: _Token | None = None) -> NoReturn:
        raise ExpressionError(self.text, (token or self.peek()).column, reason)

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def take(self, node: bool = True) -> _Token:
        """Consume a token; ``node`` says whether it counts toward MAX_NODES."""
        token = self.peek()
        self.index += 1
        self.nodes += node
        if self.nodes > MAX_NODES:
            self.fail(f"expression has more than {MAX_NODES} nodes", token)
        return token

    def is_kw(self, word: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == "kw" and token.value == word

    def parse(self) -> _Pred:
        if self.peek().kind == "end":
            self.fail("expression is empty")
        node = self.disjunction()
        if self.peek().kind != "end":
            self.fail(
                "unexpected ')'" if self.peek().kind == ")" else "expected AND, OR or the end"
            )
        return node

    def disjunction(self) -> _Pred:
        children = [self.conjunction()]
        while self.is_kw("OR"):
            self.take()
            children.append(self.conjunction())
        return children[0] if len(children) == 1 else _Or(tuple(children))

    def conjunction(self) -> _Pred:
        children = [self.unary()]
        while self.is_kw("AND"):
            self.take()
            children.append(self.unary())
        return children[0] if len(children) == 1 else _And(tuple(children))

    def nest(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"expression nested deeper than {MAX_DEPTH} levels", token)

    def unary(self) -> _Pred:
        token = self.peek()
        if self.is_kw("NOT"):
            self.nest(self.take())
            node: _Pred = _Not(self.unary())
        elif token.kind == "(":
            self.nest(self.take(node=False))
            node = self.disjunction()
            if self.peek().kind != ")":
                self.fail("expected ')'")
            self.take(node=False)
        elif token.kind == "kw" and token.value in ("TRUE", "FALSE") and not self.at_comparison(1):
            self.take()
            return _Lit(token.value == "TRUE")
        else:
            return self.comparison()
        self.depth -= 1
        return node

    def at_comparison(self, ahead: int) -> bool:
        token = self.peek(ahead)
        if token.kind == "op":
            return True
        return token.kind == "kw" and token.value in ("CONTAINS", "HAS", "IN", "NOT")

    def comparison(self) -> _Pred:
        left = self.operand()
        if not self.at_comparison(0):
            self.fail("expected a comparison operator")
        op = self.take().value
        if op == "NOT":
            if not self.is_kw("IN"):
                self.fail("expected IN after NOT")
            self.take(node=False)
            op = "NOT IN"
        right = self.operand(f"expected a value after {op}")
        return _Cmp(op, left, right)

    def operand(self, reason: str = "expected a key or a value") -> _Const | _Key:
        token = self.peek()
        if token.kind == "key":
            self.take()
            return _Key(token.value)
        if token.kind == "[":
            return self.array()
        constant = self.constant()
        if constant is None:
            self.fail(reason)
        return constant

    def constant(self, node: bool = True) -> _Const | None:
        token = self.peek()
        if token.kind in ("str", "num"):
            self.take(node)
            return _Const(token.value)
        if token.kind == "kw" and token.value in ("TRUE", "FALSE", "NULL"):
            self.take(node)
            return _Const({"TRUE": True, "FALSE": False, "NULL": None}[token.value])
        return None

    def array(self) -> _Const:
        self.take()  # an array literal counts as one node, whatever its length
        items: list[object] = []
        while self.peek().kind != "]":
            if items and self.peek().kind != ",":
                self.fail("expected ',' or ']'")
            if items:
                self.take(node=False)
            item = self.constant(node=False)
            if item is None:
                self.fail("expected a string, number, true, false or null")
            items.append(item.value)
        self.take(node=False)
        constant = _const(items)
        assert isinstance(constant, _Const)
        return constant


@functools.lru_cache(maxsize=1024)
def _parse_path(text: str) -> _Path:
    tokens = _Lexer(text).tokens()
    if len(tokens) != 2 or tokens[0].kind != "key":
        raise ExpressionError(text, tokens[0].column, "expected a key path like a.b[0].c")
    path: _Path = tokens[0].value
    return path


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
