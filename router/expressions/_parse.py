"""The lexer and parser of router.expressions: text to syntax tree, bounded, with columns.

Holds the size bounds (MAX_LENGTH, MAX_DEPTH, MAX_NODES), ExpressionError, the tokenizer
(strings, numbers, key paths, keywords, operators) and the recursive-descent parser that
builds the tree as written, before any folding; plus the cached key-path parser.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple, NoReturn

from router.expressions._tree import _And, _Cmp, _Const, _const, _Key, _Lit, _Not, _Or, _Pred
from router.expressions._values import _NUM, _kind, _Path

MAX_LENGTH = 4096
MAX_DEPTH = 32
MAX_NODES = 256

_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "HAS", "CONTAINS", "TRUE", "FALSE", "NULL"})
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INDEX = re.compile(r"\[([0-9]+)\]")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "/": "/", "n": "\n", "t": "\t", "r": "\r"}
_ESCAPES |= {"b": "\b", "f": "\f"}


class ExpressionError(ValueError):
    """A malformed expression; ``column`` is the 1-based character offset of the fault."""

    def __init__(self, expression: str, column: int, reason: str) -> None:
        super().__init__(f"{reason} at column {column}")
        self.expression = expression
        self.column = column
        self.reason = reason

    def __reduce__(self) -> tuple[type[ExpressionError], tuple[str, int, str]]:
        return (ExpressionError, (self.expression, self.column, self.reason))


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
