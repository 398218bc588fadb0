"""A small, honest subset of the Service Bus subscription-rule SQL filter syntax.

What the service documents (learn.microsoft.com, "Subscription Rule SQL Filter Syntax") and this
module models:

- user properties, unqualified or with the `user.` scope; names are case-insensitive; regular
  (`destination`), delimited (`[HR-EmployeeID]`, `]]` escapes `]`) or quoted (`"a b"`) names;
- constants: strings in single quotes (`''` is one quote), integers, TRUE and FALSE;
- `=`, `<>` and `!=`; `<property> IS [NOT] NULL`; NOT, AND, OR and parentheses;
- three-valued logic: a property the message does not have (or whose value is null) is
  *unknown*, a comparison with unknown is unknown, AND/OR/NOT follow the documented tables, and
  a rule takes the message only when its filter is TRUE.

So the default rule's `1=1`, a lane's `destination = 'profile_store'` and the likes of
`destination = 'a' OR destination IS NULL` work as on the service. Everything else the service
accepts (`sys.` properties, `>`/`<`, IN, LIKE, EXISTS, arithmetic, functions, parameters,
decimal constants, NULL outside IS NULL) raises `FilterNotSupported` when the rule is set up,
never matches silently. Text that is not a filter at all raises `FilterSyntaxError`.

String comparison is ordinal (case-sensitive), as C#'s, which the service's operators follow.
Comparing values of different kinds (a string with a number, say) is not modelled: evaluating it
raises `FilterNotSupported`, which the broker turns into a refused send.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

TRUE_FILTER = "1=1"
FALSE_FILTER = "1=0"

_SUPPORTED = (
    "supported: user properties, string/integer/TRUE/FALSE constants, =, <>, !=, "
    "IS [NOT] NULL, NOT, AND, OR, parentheses"
)


class FilterNotSupported(NotImplementedError):
    """Valid Service Bus SQL (or a value comparison) the double does not model."""


class FilterSyntaxError(ValueError):
    """Not a SQL filter expression."""


Truth = bool | None  # None: unknown


# -- tokens ---------------------------------------------------------------------------------------

TokenKind = Literal["string", "integer", "name", "keyword", "op", "end"]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: TokenKind
    value: Any
    at: int


_KEYWORDS = {"and", "or", "not", "is", "null", "true", "false"}
_UNSUPPORTED_KEYWORDS = {"in", "like", "escape", "exists"}
_UNSUPPORTED_OPS = {">", ">=", "<", "<=", "+", "-", "*", "/", "%", ","}
_NUMBER = re.compile(r"\d+(\.\d*)?([eE][+-]?\d+)?")


def _unsupported(what: str, text: str, at: int) -> FilterNotSupported:
    return FilterNotSupported(
        f"ServiceBusDouble does not support {what} in SQL filters (at {at} in {text!r}); "
        + _SUPPORTED
    )


def _syntax(what: str, text: str, at: int) -> FilterSyntaxError:
    return FilterSyntaxError(f"{what} at {at} in SQL filter {text!r}")


def _delimited(text: str, start: int, close: str) -> tuple[str, int]:
    """The content of a '...', [...] or "..." token starting at `start`; a doubled closing
    character stands for itself. Returns (content, index after the token)."""
    parts = []
    i = start + 1
    while True:
        end = text.find(close, i)
        if end < 0:
            raise _syntax(f"unterminated {text[start]}", text, start)
        parts.append(text[i:end])
        if text.startswith(close * 2, end):
            parts.append(close)
            i = end + 2
            continue
        return "".join(parts), end + 1


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "'":
            value, i2 = _delimited(text, i, "'")
            tokens.append(_Token("string", value, i))
            i = i2
        elif c == "[":
            value, i2 = _delimited(text, i, "]")
            tokens.append(_Token("name", value, i))
            i = i2
        elif c == '"':
            value, i2 = _delimited(text, i, '"')
            tokens.append(_Token("name", value, i))
            i = i2
        elif c.isdigit():
            match = _NUMBER.match(text, i)
            assert match is not None
            if match.group(1) or match.group(2):
                raise _unsupported("decimal and approximate number constants", text, i)
            tokens.append(_Token("integer", int(match.group(0)), i))
            i = match.end()
        elif c.isalpha():
            j = i + 1
            while j < len(text) and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            if word.lower() in _KEYWORDS:
                tokens.append(_Token("keyword", word.lower(), i))
            elif word.lower() in _UNSUPPORTED_KEYWORDS:
                raise _unsupported(word.upper(), text, i)
            else:
                tokens.append(_Token("name", word, i))
            i = j
        elif c == "@":
            raise _unsupported("parameters (@name)", text, i)
        else:
            op = next(
                (o for o in ("<>", "!=", ">=", "<=", "=", ">", "<") if text.startswith(o, i)),
                None,
            )
            if op is None and c in "()+-*/%,.":
                op = c
            if op is None:
                raise _syntax(f"unexpected {c!r}", text, i)
            if op in _UNSUPPORTED_OPS:
                raise _unsupported(f"the operator {op!r}", text, i)
            tokens.append(_Token("op", "<>" if op == "!=" else op, i))
            i += len(op)
    tokens.append(_Token("end", None, len(text)))
    return tokens


# -- the tree -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Property:
    name: str  # casefolded


@dataclass(frozen=True, slots=True)
class _Constant:
    value: str | int | bool


_Operand = _Property | _Constant


@dataclass(frozen=True, slots=True)
class _Compare:
    left: _Operand
    equal: bool  # False: <> (or !=)
    right: _Operand


@dataclass(frozen=True, slots=True)
class _IsNull:
    property: _Property
    negated: bool


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Node


@dataclass(frozen=True, slots=True)
class _And:
    operands: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Or:
    operands: tuple[_Node, ...]


_Node = _Compare | _IsNull | _Not | _And | _Or


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def at(self, kind: TokenKind, value: Any = None) -> bool:
        token = self.token
        return token.kind == kind and (value is None or token.value == value)

    def expect(self, kind: TokenKind, value: Any, what: str) -> None:
        if not self.at(kind, value):
            raise self.error(f"expected {what}")
        self.take()

    def error(self, what: str) -> FilterSyntaxError:
        token = self.token
        found = "the end" if token.kind == "end" else repr(token.value)
        return _syntax(f"{what}, found {found}", self.text, token.at)

    def parse(self) -> _Node:
        if self.at("end"):
            raise self.error("expected a predicate")
        node = self.disjunction()
        if not self.at("end"):
            raise self.error("expected AND, OR or the end")
        return node

    def disjunction(self) -> _Node:
        operands = [self.conjunction()]
        while self.at("keyword", "or"):
            self.take()
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else _Or(tuple(operands))

    def conjunction(self) -> _Node:
        operands = [self.negation()]
        while self.at("keyword", "and"):
            self.take()
            operands.append(self.negation())
        return operands[0] if len(operands) == 1 else _And(tuple(operands))

    def negation(self) -> _Node:
        if self.at("keyword", "not"):
            self.take()
            return _Not(self.negation())
        return self.primary()

    def primary(self) -> _Node:
        if self.at("op", "("):
            self.take()
            node = self.disjunction()
            self.expect("op", ")", "')'")
            return node
        start = self.token.at
        left = self.operand()
        if self.at("keyword", "is"):
            self.take()
            negated = self.at("keyword", "not")
            if negated:
                self.take()
            self.expect("keyword", "null", "NULL")
            if not isinstance(left, _Property):
                raise _syntax("IS [NOT] NULL needs a property on its left", self.text, start)
            return _IsNull(left, negated)
        if not self.at("op", "=") and not self.at("op", "<>"):
            raise self.error("expected =, <>, != or IS [NOT] NULL")
        equal = self.take().value == "="
        return _Compare(left, equal, self.operand())

    def operand(self) -> _Operand:
        token = self.take()
        if token.kind == "string" or token.kind == "integer":
            return _Constant(token.value)
        if token.kind == "keyword" and token.value in ("true", "false"):
            return _Constant(token.value == "true")
        if token.kind == "keyword" and token.value == "null":
            raise _unsupported(
                "NULL outside IS [NOT] NULL (a comparison with NULL is never true: use IS NULL)",
                self.text,
                token.at,
            )
        if token.kind != "name":
            self.i -= 1
            raise self.error("expected a property or a constant")
        name = token.value
        if self.at("op", "("):
            raise _unsupported(f"functions ({name}(...))", self.text, token.at)
        if self.at("op", "."):
            self.take()
            scope = name.lower()
            if scope == "sys":
                raise _unsupported("system properties (sys.)", self.text, token.at)
            if scope != "user":
                raise _syntax(f"unknown scope {name!r} (sys or user)", self.text, token.at)
            if not self.at("name"):
                raise self.error("expected a property name after 'user.'")
            name = self.take().value
        return _Property(str(name).casefold())


# -- evaluation -----------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    # proton's timestamp is an int subclass, but a point in time rather than a number
    if isinstance(value, int | float) and type(value).__name__ != "timestamp":
        return "number"
    return type(value).__name__


def _and(values: list[Truth]) -> Truth:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def _or(values: list[Truth]) -> Truth:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


class SqlFilter:
    """A parsed filter; `matches(application_properties)` is what a subscription rule asks."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self._tree = _Parser(expression).parse()

    def __repr__(self) -> str:
        return f"SqlFilter({self.expression!r})"

    def matches(self, properties: Mapping[str, Any]) -> bool:
        folded: dict[str, Any] = {}
        for key, value in properties.items():
            folded.setdefault(str(key).casefold(), value)
        return self._evaluate(self._tree, folded) is True

    def _evaluate(self, node: _Node, properties: Mapping[str, Any]) -> Truth:
        if isinstance(node, _Or):
            return _or([self._evaluate(n, properties) for n in node.operands])
        if isinstance(node, _And):
            return _and([self._evaluate(n, properties) for n in node.operands])
        if isinstance(node, _Not):
            inner = self._evaluate(node.operand, properties)
            return None if inner is None else not inner
        if isinstance(node, _IsNull):
            is_null = properties.get(node.property.name) is None
            return is_null != node.negated
        left = self._value(node.left, properties)
        right = self._value(node.right, properties)
        if left is None or right is None:
            return None
        kinds = (_kind(left), _kind(right))
        if kinds[0] != kinds[1] or kinds[0] not in ("string", "number", "boolean"):
            raise FilterNotSupported(
                f"ServiceBusDouble does not model comparing a {kinds[0]} with a {kinds[1]} "
                f"(SQL filter {self.expression!r})"
            )
        return bool(left == right) == node.equal

    @staticmethod
    def _value(operand: _Operand, properties: Mapping[str, Any]) -> Any:
        if isinstance(operand, _Constant):
            return operand.value
        return properties.get(operand.name)
