"""The README's code runs as shown: each ```python block after a `<!-- checked -->` line is executed,
in order, in one namespace, top-level `await` allowed, in a fresh folder and a process of its own
(its task names are the README's). A hidden block, `<!-- checked: what it does` up to `-->`, runs at
its place too: the definitions a fragment assumes, or checks of what it did that the reader need not
see. A line's result is checked against what its comment shows:
`expr  # 'value'` (a Python literal, up to two spaces), `expr  # af.SomeError: text ... more` (that
error, whose message holds each part), and `print(...)` followed by comment lines (the printed text)."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parent.parent / "README.md"


def checked_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of each block marked `<!-- checked -->` and of each hidden block, in order."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.strip() == "<!-- checked -->" and i + 1 < len(lines) and lines[i + 1].startswith("```python"):
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            out.append((i + 3, "\n".join(lines[i + 2 : end])))
        elif line.startswith("<!-- checked:"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "-->")
            out.append((i + 2, "\n".join(lines[i + 1 : end])))
    return out


def _comments(code: str) -> dict[int, str]:
    found: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT:
            found[tok.start[0]] = tok.string[1:].strip()
    return found


def _literal(comment: str) -> tuple[bool, Any]:
    """The value a comment shows: the whole comment, or (after a quote or bracket) its part before two spaces."""
    for text in (comment, comment.split("  ")[0] if comment[:1] in "'\"{[(" else None):
        if text:
            try:
                return True, ast.literal_eval(text)
            except (ValueError, SyntaxError):
                pass
    return False, None


async def _run(code: str, first: int, ns: dict[str, Any]) -> None:
    comments = _comments(code)
    lines = code.splitlines()
    tree = ast.parse(code)
    for stmt in tree.body:
        source = ast.get_source_segment(code, stmt)
        where = f"README.md:{first + stmt.lineno - 1}: {source}"
        comment = comments.get(stmt.end_lineno or stmt.lineno, "")
        shown = []  # comment lines right below a print(...): what it prints
        for line in lines[stmt.end_lineno or 0 :]:
            if not line.startswith("# "):
                break
            shown.append(re.sub(r"\s{2,}<- .*$", "", line[2:]))  # `   <- a note` is the README's aside
        error = re.match(r"af\.(\w+Error): (.*)", comment)
        compiled = compile(ast.Module([stmt], []) if not isinstance(stmt, ast.Expr) else ast.Expression(stmt.value),
                           "README.md", "exec" if not isinstance(stmt, ast.Expr) else "eval",
                           flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)  # fmt: skip
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                value = eval(compiled, ns)
                if asyncio.iscoroutine(value):
                    value = await value
        except Exception as e:
            if error is None:
                raise AssertionError(f"{where} raised {e!r}") from e
            assert type(e).__name__ == error.group(1), f"{where}: raised {e!r}"
            for part in error.group(2).split("..."):
                assert part.strip() in str(e), f"{where}: {part.strip()!r} not in {str(e)!r}"
            continue
        assert error is None, f"{where}: expected {error.group(1)}"
        if isinstance(stmt, ast.Expr) and shown and "print" in (source or ""):
            assert out.getvalue().rstrip("\n").splitlines() == shown, f"{where} printed {out.getvalue()!r}"
        elif isinstance(stmt, ast.Expr) and comment:
            is_literal, expected = _literal(comment)
            if is_literal:
                assert value == expected, f"{where}: got {value!r}, the README shows {expected!r}"


async def _main() -> None:
    ns: dict[str, Any] = {"__name__": "readme"}
    for first, code in checked_blocks(README.read_text()):
        await _run(code, first, ns)


def test_the_readmes_checked_blocks_run_as_shown(tmp_path: Path) -> None:
    blocks = checked_blocks(README.read_text())
    assert len(blocks) >= 3  # the quick start, tasks and nodes, readable ids at least
    root = str(README.parent)
    out = subprocess.run([sys.executable, "-c", "import asyncio, tests.test_readme as t; asyncio.run(t._main())"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": root, "ASYNCFLOW_EXECUTION_SUMMARY": "false"})  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    assert (tmp_path / "data").is_dir()  # the quick start's flow persisted in ./data, as the README says


def test_every_python_block_of_the_readme_is_checked() -> None:
    lines = README.read_text().splitlines()
    unchecked = [
        i + 1 for i, line in enumerate(lines) if line.startswith("```python") and lines[i - 1] != "<!-- checked -->"
    ]
    assert not unchecked, f"README.md lines {unchecked}: python blocks without <!-- checked -->"
