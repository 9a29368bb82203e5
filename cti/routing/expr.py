"""A small, safe expression language for skill requirements and priority rules.

    language_fr >= 5 and (internet >= 3 or billing >= 3)
    account.won_amount_24m >= 50000 or contact.role in ['CEO', 'CFO']
    not (team == 'night') and tier != "gold"

Grammar (no `eval`, no attribute access, no calls)::

    expr    := or
    or      := and ('or' and)*
    and     := not ('and' not)*
    not     := 'not' not | compare
    compare := value (('>=' | '<=' | '>' | '<' | '==' | '!=') value
                      | 'in' list | 'not' 'in' list)?
    value   := NUMBER | STRING | NAME | 'true' | 'false' | 'null' | list | '(' expr ')'
    list    := '[' (value (',' value)*)? ']'

Names (dotted allowed: `account.won_amount_24m`) are looked up in a mapping;
a missing name reads as the compile-time `default` (0 for skills, None for CRM
fields). A comparison between values that cannot be ordered (None >= 5,
'a' > 3) is false rather than an error: routing must never crash on one odd
CRM record.

`compile_expr` parses once and returns a closure tree: evaluating it per agent
costs a few Python calls, no parsing.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Env = Mapping[str, Any]
Fn = Callable[[Env], Any]


class ExprError(ValueError):
    """The expression does not parse; the message gives the position and what was expected."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>\d+(?:\.\d+)?)
      | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
      | (?P<op>>=|<=|==|!=|>|<|\(|\)|\[|\]|,)
    )""",
    re.VERBOSE,
)

_KEYWORDS = {"and", "or", "not", "in"}
_CONSTS = {"true": True, "True": True, "false": False, "False": False, "null": None, "None": None,
           "none": None}
_CMP: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
    "==": operator.eq, "!=": operator.ne,
}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # num | str | name | op | kw | end
    value: Any
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    n = len(text)
    while pos < n:
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            col = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
            raise ExprError(f"unexpected character {text[col]!r} at position {col}")
        start = m.start(m.lastgroup) if m.lastgroup else pos
        kind = m.lastgroup or "op"
        raw = m.group(kind)
        if kind == "num":
            toks.append(_Tok("num", float(raw) if "." in raw else int(raw), start))
        elif kind == "str":
            body = raw[1:-1]
            toks.append(_Tok("str", re.sub(r"\\(.)", r"\1", body), start))
        elif kind == "name" and raw in _KEYWORDS:
            toks.append(_Tok("kw", raw, start))
        elif kind == "name" and raw in _CONSTS:
            toks.append(_Tok("const", _CONSTS[raw], start))
        else:
            toks.append(_Tok(kind, raw, start))
        pos = m.end()
    toks.append(_Tok("end", None, n))
    return toks


def _safe_cmp(op: Callable[[Any, Any], bool], left: Fn, right: Fn) -> Fn:
    def fn(env: Env) -> bool:
        try:
            return bool(op(left(env), right(env)))
        except TypeError:
            return False

    return fn


def _safe_cmp_const(op: Callable[[Any, Any], bool], left: Fn, const: Any) -> Fn:
    # the common case (`skill >= 5`): one lookup, one comparison
    def fn(env: Env) -> bool:
        try:
            return bool(op(left(env), const))
        except TypeError:
            return False

    return fn


class _Parser:
    def __init__(self, text: str, default: Any) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.default = default
        self.names: set[str] = set()

    # -- helpers
    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def _is(self, kind: str, value: Any = None) -> bool:
        t = self.tok
        return t.kind == kind and (value is None or t.value == value)

    def _expect(self, kind: str, value: Any, what: str) -> _Tok:
        if not self._is(kind, value):
            self._fail(f"expected {what}")
        t = self.tok
        self.i += 1
        return t

    def _fail(self, msg: str) -> None:
        t = self.tok
        found = "end of expression" if t.kind == "end" else repr(str(t.value))
        raise ExprError(f"{msg} at position {t.pos}, found {found}")

    # -- grammar
    def parse(self) -> Fn:
        if self.tok.kind == "end":
            raise ExprError("empty expression")
        fn = self._or()
        if self.tok.kind != "end":
            self._fail("expected 'and', 'or' or end of expression")
        return fn

    def _or(self) -> Fn:
        parts = [self._and()]
        while self._is("kw", "or"):
            self.i += 1
            parts.append(self._and())
        if len(parts) == 1:
            return parts[0]
        ps = tuple(parts)
        return lambda env: any(p(env) for p in ps)

    def _and(self) -> Fn:
        parts = [self._not()]
        while self._is("kw", "and"):
            self.i += 1
            parts.append(self._not())
        if len(parts) == 1:
            return parts[0]
        ps = tuple(parts)
        return lambda env: all(p(env) for p in ps)

    def _not(self) -> Fn:
        if self._is("kw", "not"):
            self.i += 1
            inner = self._not()
            return lambda env: not inner(env)
        return self._compare()

    def _compare(self) -> Fn:
        left, _left_const = self._value()
        t = self.tok
        if t.kind == "op" and t.value in _CMP:
            self.i += 1
            right, right_const = self._value()
            op = _CMP[t.value]
            if right_const is not _NOT_CONST:
                return _safe_cmp_const(op, left, right_const)
            return _safe_cmp(op, left, right)
        negate = False
        if self._is("kw", "not") and self.toks[self.i + 1].kind == "kw" and self.toks[self.i + 1].value == "in":
            negate = True
            self.i += 1
        if self._is("kw", "in"):
            self.i += 1
            if not self._is("op", "["):
                self._fail("expected a list '[...]' after 'in'")
            right, right_const = self._value()
            if right_const is not _NOT_CONST:
                members = frozenset(v for v in right_const if _hashable(v))
                if negate:
                    return lambda env: _member(left(env), members) is False
                return lambda env: _member(left(env), members) is True
            if negate:
                return lambda env: not _in(left(env), right(env))
            return lambda env: _in(left(env), right(env))
        if negate:
            self._fail("expected 'in' after 'not'")
        return left

    def _value(self) -> tuple[Fn, Any]:
        """Return (closure, constant value or _NOT_CONST)."""
        t = self.tok
        if t.kind in ("num", "str", "const"):
            self.i += 1
            v = t.value
            return (lambda env: v), v
        if t.kind == "name":
            self.i += 1
            name = t.value
            self.names.add(name)
            default = self.default
            return (lambda env: env.get(name, default)), _NOT_CONST
        if self._is("op", "("):
            self.i += 1
            inner = self._or()
            self._expect("op", ")", "')'")
            return inner, _NOT_CONST
        if self._is("op", "["):
            self.i += 1
            items: list[tuple[Fn, Any]] = []
            if not self._is("op", "]"):
                items.append(self._value())
                while self._is("op", ","):
                    self.i += 1
                    items.append(self._value())
            self._expect("op", "]", "',' or ']'")
            if all(c is not _NOT_CONST for _, c in items):
                consts = [c for _, c in items]
                return (lambda env: consts), consts
            fns = tuple(f for f, _ in items)
            return (lambda env: [f(env) for f in fns]), _NOT_CONST
        self._fail("expected a name, number, string, list or '('")
        raise AssertionError  # unreachable: _fail raises


class _NotConst:
    pass


_NOT_CONST: Any = _NotConst()


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def _member(v: Any, members: frozenset[Any]) -> bool:
    try:
        return v in members
    except TypeError:
        return False


def _in(v: Any, container: Any) -> bool:
    try:
        return v in container
    except TypeError:
        return False


@dataclass(frozen=True, slots=True)
class Expr:
    """A compiled expression: call it with a mapping of names to values."""

    source: str
    names: frozenset[str]
    fn: Fn

    def __call__(self, env: Env) -> Any:
        return self.fn(env)

    def test(self, env: Env) -> bool:
        return bool(self.fn(env))


def compile_expr(text: str, *, default: Any = None) -> Expr:
    """Parse `text` once; raise ExprError (position + what was expected) if it does not parse."""
    if not isinstance(text, str):
        raise ExprError(f"expression must be a string, not {type(text).__name__}")
    p = _Parser(text, default)
    fn = p.parse()
    return Expr(text, frozenset(p.names), fn)


def compile_skills(text: str | None) -> Expr:
    """A skill requirement: names are skill names, a skill the agent lacks is level 0.

    None or an empty string means "any agent" (always true).
    """
    if text is None or not text.strip():
        return Expr("", frozenset(), lambda env: True)
    return compile_expr(text, default=0)
