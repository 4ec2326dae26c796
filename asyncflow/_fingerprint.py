"""Fingerprints: what a target was built from, so that a change makes exactly the right nodes stale.

A node's fingerprint has two halves, recorded beside its target:
- `own`: its task's code (the AST without docstrings, comments or formatting), its `version` and
  its parameters (the node key);
- `inputs`: the output hash of each upstream as it was when this node was built (content, not the
  upstream's own fingerprint: an upstream rebuilt to identical bytes changes nothing below it),
  the checksum of each external input, and the output hash of each dynamic child.

The record is a small file named `.{target}.afrec-{own}-{inputs}-{output}[-d]`, so one listing of
a task folder tells, for every node, whether it is current and what its output hash is; its JSON
content (read only to explain, or to find dynamic children: the `-d` flag) has the details.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from ._graph import COMPLETE, MISSING, OK, TODO, NodeState

if TYPE_CHECKING:
    from ._node import Node
    from ._task import Task

RECORD_MARK = ".afrec-"


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """What a target was built from (the content of its record file)."""

    node_id: str
    own: str
    inputs_fp: str
    output: str
    code: str
    version: str | None
    inputs: dict[str, str]  # upstream or external id -> output hash / checksum it was built from
    children: list[tuple[str, dict[str, Any]]] = []  # dynamic children: (task name, params)
    built: float = 0.0


class RecordName(msgspec.Struct, frozen=True):
    """The fingerprint halves and output hash carried by a record's file name."""

    name: str
    own: str
    inputs_fp: str
    output: str
    has_children: bool


def record_name(target_name: str, own: str, inputs_fp: str, output: str, has_children: bool) -> str:
    return f".{target_name}{RECORD_MARK}{own}-{inputs_fp}-{output}{'-d' if has_children else ''}"


def split_names(names: Iterable[str]) -> tuple[set[str], dict[str, RecordName]]:
    """A folder's names split into targets and `{target name: RecordName}`, in one pass (run in
    the listing's worker thread for local disk)."""
    targets: set[str] = set()
    records: dict[str, RecordName] = {}
    mark = RECORD_MARK
    for name in names:
        if name[0] == ".":
            i = name.rfind(mark)
            if i > 1:
                rec = parse_record(name, i)
                if rec is not None:
                    records[name[1:i]] = rec
        else:
            targets.add(name)
    return targets, records


def parse_record(name: str, at: int = -1) -> RecordName | None:
    """The fingerprint halves and output hash a record file name carries (fixed widths)."""
    i = (name.rfind(RECORD_MARK) if at < 0 else at) + len(RECORD_MARK)
    if len(name) - i < 42 or name[i + 12] != "-" or name[i + 25] != "-":
        return None
    return RecordName(name, name[i : i + 12], name[i + 13 : i + 25], name[i + 26 : i + 42], name.endswith("-d"))


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]


def code_hash(task: Task) -> str:
    """Hash of the task function's code: comments, docstrings, blank lines, formatting and the
    decorator do not count. Cached on the task."""
    cached = getattr(task, "_code_hash", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    fn = task.fn
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                node.decorator_list = []
                node.name = "_"  # renaming a function (with name=... kept) is not a change
                break
        _strip_docstrings(tree)
        text = ast.dump(tree, annotate_fields=False, include_attributes=False)
    except (OSError, TypeError, SyntaxError):  # no source (REPL, built on the fly): the bytecode
        code = fn.__code__
        text = repr((code.co_code, code.co_consts, code.co_names))
    result = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
    task._code_hash = result  # type: ignore[attr-defined]
    return result


def own_fingerprint(node: Node) -> str:
    """Code + version + parameters (cached on the node: it is the same all the process long)."""
    own = node._own
    if own is None:
        task = node.task
        prefix = getattr(task, "_fp_prefix", None)
        if prefix is None:
            prefix = task._fp_prefix = f"{code_hash(task)}\0{task.version or ''}\0".encode()  # type: ignore[attr-defined]
        own = node._own = hashlib.blake2b(prefix + node.key, digest_size=6).hexdigest()
    return own


def inputs_fingerprint(inputs: list[tuple[bytes, str]]) -> str:
    """Over (upstream key, its output hash) pairs, in a stable order."""
    h = hashlib.blake2b(digest_size=6)
    for key, out in sorted(inputs):
        h.update(key)
        h.update(out.encode())
    return h.hexdigest()


def output_hash(data: bytes) -> str:
    """Hash of an output's bytes: what dependants record as their input."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def reasons(node: Node, record: Record | None, inputs: dict[str, str], own_matches: bool) -> list[str]:
    """Why a node with a target built from `record` would be rebuilt now, in words."""
    if record is None:
        return ["no fingerprint record"]
    out = []
    task = node.task
    if not own_matches:
        if record.code != code_hash(task):
            out.append(f"code of {task.name} changed")
        if (record.version or None) != task.version:
            out.append(f"version {record.version or 'none'} -> {task.version or 'none'}")
        if not out:
            out.append("fingerprint changed")
    for name in sorted(set(record.inputs) | set(inputs)):
        if record.inputs.get(name) != inputs.get(name):
            if name.startswith("external["):
                out.append(f"external {name[len('external[url=') : -1]} changed")
            elif name not in inputs:
                out.append(f"input {name} removed")
            else:
                out.append(f"input {name} changed")
    return out


def decide(
    order: list[NodeState],
    check_dependencies: bool,
    rerun_stale: bool,
    is_forced: Callable[[Node], bool],
    is_external: Callable[[Node], bool],
) -> None:
    """Mark each state COMPLETE, MISSING, or TODO with its reasons (STALE ones flagged `stale`),
    from the facts gathered by one listing per folder; upstream first."""
    for st in order:
        node = st.node
        task = node.task
        deps = st.deps
        if is_external(node):
            st.status = COMPLETE if st.exists else MISSING
            continue
        forced = is_forced(node)
        if not forced and deps:
            forced = any(d.forced for d in deps)
        st.forced = forced
        if not task.persist:
            st.status, st.reasons = TODO, ["not persisted"]
            continue
        if forced:
            st.status, st.reasons = TODO, ["forced"]
            continue
        if not st.exists:
            st.status, st.reasons = TODO, ["no target"]
            continue
        rec = st.record
        if rec is None:
            st.status, st.reasons, st.stale = TODO, ["no fingerprint record"], True
            continue
        if rec.own != own_fingerprint(node):
            _stale(st, rerun_stale, ["fingerprint changed"])
            continue
        if check_dependencies and deps:
            if any(d.status not in OK or d.out_hash is None for d in deps):
                st.status, st.reasons, st.maybe = TODO, ["upstream pending"], True
                continue
            if rec.inputs_fp != inputs_fingerprint([(d.node.key, d.out_hash) for d in deps]):  # type: ignore[misc]
                _stale(st, rerun_stale, ["input changed"])
                continue
        st.status = COMPLETE
        st.out_hash = rec.output


def _stale(st: NodeState, rerun_stale: bool, why: list[str]) -> None:
    st.stale = True
    st.reasons = why
    if rerun_stale:
        st.status = TODO
    else:  # kept as it is: dependants see the output it has
        st.status = COMPLETE
        st.out_hash = st.record.output
