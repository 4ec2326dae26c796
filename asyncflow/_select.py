"""`-k EXPR`: pytest / pytask expressions over node ids.

    expr     := and_expr ("or" and_expr)*
    and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | "(" expr ")" | word

A word matches a node when it is a case-insensitive substring of the node's id:
`-k "ols and not data_0"`, `-k "fit[data=a"`, `-k "(logit or ols) and data_1"`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ._errors import ParameterError

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")

Matcher = Callable[[str], bool]


def compile_expression(expr: str) -> Matcher:
    """A predicate over node ids; `ParameterError` naming the column (from 1, as pytask does) for a
    malformed one."""
    found = [(m.group(1), m.start(1)) for m in _TOKEN.finditer(expr)]
    tokens = [t for t, _ in found]
    if not tokens:
        raise ParameterError(f"empty -k expression {expr!r}")
    pos = 0

    def error(what: str, at: int | None = None) -> ParameterError:
        column = (found[at][1] if at is not None and at < len(found) else len(expr.rstrip())) + 1
        return ParameterError(f"-k expression {expr!r}, column {column}: {what}")

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        tok = peek()
        if tok is None:
            raise error("the expression ends too early (a word, 'not' or '(' is missing)")
        pos += 1
        return tok

    def parse_or() -> Matcher:
        left = parse_and()
        while peek() == "or":
            take()
            right = parse_and()
            left = (lambda a, b: lambda s: a(s) or b(s))(left, right)
        return left

    def parse_and() -> Matcher:
        left = parse_not()
        while peek() == "and":
            take()
            right = parse_not()
            left = (lambda a, b: lambda s: a(s) and b(s))(left, right)
        return left

    def parse_not() -> Matcher:
        tok = take()
        if tok == "not":
            inner = parse_not()
            return lambda s: not inner(s)
        if tok == "(":
            opened = pos - 1
            inner = parse_or()
            if peek() != ")":
                raise error(f"missing ')' to close the '(' of column {found[opened][1] + 1}", pos)
            take()
            return inner
        if tok in (")", "and", "or"):
            raise error(f"unexpected {tok!r}", pos - 1)
        word = tok.lower()
        return lambda s: word in s.lower()

    matcher = parse_or()
    if pos != len(tokens):
        raise error(f"unexpected {tokens[pos]!r}", pos)
    return matcher
