"""Fingerprints: what a target was built from, so that a change makes exactly the right nodes stale.

A node's fingerprint has two halves, recorded with its target:
- `own`: its task's code (`_code`: its function's normalized source and, transitively, the user's
  own helpers, classes, constants and closure values it refers to), its `version` and its
  parameters (the node key);
- `inputs`: the output hash of each upstream as it was when this node was built (content, not the
  upstream's own fingerprint: an upstream rebuilt to identical bytes changes nothing below it),
  the checksum of each external input, and the output hash of each dynamic child.

An `Entry` is what the store keeps per target (`_records` writes them): the fingerprint halves,
the output hash, and the target's *version tag* when it was written (inode, size and mtime
locally; the ETag on object stores). It is trusted only for a target whose tag is the same: a
target edited, replaced or written by another process under another fingerprint is never
described by an entry that is not its own. Its `detail` (code parts, per-input hashes, dynamic
children) is decoded only to explain a stale node or to find its dynamic children.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import msgspec

from ._code import code_fingerprint
from ._graph import COMPLETE, MISSING, OK, TODO, NodeState

if TYPE_CHECKING:
    from ._node import Node
    from ._task import Task


class Detail(msgspec.Struct, frozen=True, kw_only=True):
    """What an entry's target was built from, in full (read to explain, or to find children)."""

    node_id: str
    code: str
    version: str | None
    inputs: dict[str, str]  # upstream or external id -> output hash / checksum it was built from
    children: list[Any] = []  # dynamic children, each as `_inventory.describe` gives it
    code_parts: dict[str, str] = {}  # the task function ("") and each helper, class, constant it reaches
    built: float = 0.0


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """One target's record: its name, its version tag, the fingerprint halves, its output hash."""

    name: str
    tag: str
    own: str
    inputs_fp: str
    output: str
    children: bool = False  # it has dynamic children (in `detail`)
    detail: msgspec.Raw = msgspec.Raw(b"")  # a msgpack-encoded Detail, decoded when asked

    def details(self) -> Detail | None:
        """The decoded detail (None when it is missing or unreadable: the node is then rebuilt)."""
        try:
            return msgspec.msgpack.decode(self.detail, type=Detail) if self.detail else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None


OUTSIDE: Any = Entry("", "", "", "", "")
"""Stands for the record of a target changed outside asyncflow (entries exist, none is its own)."""


def code_hash(task: Task) -> str:
    """The task's code fingerprint: its function's normalized source and, transitively, the
    user's own code it refers to (re-validated on each call, computed again when that changed)."""
    return code_fingerprint(task.fn).total


def own_fingerprint(node: Node) -> str:
    """Code + version + parameters, cached on the node while its task's code fingerprint (checked
    again once per planning pass: an edited helper, a task defined again) is the one it was made from."""
    task = node.task
    code = code_fingerprint(task.fn)
    if node.own_code is not code:
        prefix = f"{code.total}\0{task.version or ''}\0".encode()
        node.own_fp = hashlib.blake2b(prefix + node.key, digest_size=6).hexdigest()
        node.own_code = code
    return node.own_fp  # type: ignore[return-value]


def inputs_fingerprint(inputs: list[tuple[bytes, str]]) -> str:
    """Over (upstream key, its output hash) pairs, in a stable order."""
    if len(inputs) > 1:
        inputs = sorted(inputs)
    return hashlib.blake2b(b"".join(k + o.encode() for k, o in inputs), digest_size=6).hexdigest()


def output_hash(data: bytes) -> str:
    """Hash of an output's bytes: what dependants record as their input."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def reasons(node: Node, record: Detail | None, inputs: dict[str, str], own_matches: bool) -> list[str]:
    """Why a node with a target built from `record` would be rebuilt now, in words."""
    if record is None:
        return ["no fingerprint record"]
    out = []
    task = node.task
    if not own_matches:
        if record.code != code_hash(task):
            parts = code_fingerprint(task.fn).parts
            old = record.code_parts or {"": record.code}
            for label in sorted(set(parts) | set(old)):
                if parts.get(label) != old.get(label):
                    if label == "":
                        out.append(f"code of {task.name} changed")
                    elif label.startswith(("helper ", "class ")):
                        out.append(f"code of {label} changed")
                    else:
                        out.append(f"{label} changed")
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
    forced_tasks: set[str] | None,
) -> None:
    """Mark each state COMPLETE, MISSING, or TODO with its reasons (STALE ones flagged `stale`),
    from the facts gathered by one listing per folder; upstream first. `forced_tasks` None means
    all of them. (A hot loop: 10,000 nodes for an all-complete re-run.)"""
    for st in order:
        node = st.node
        task = node.task
        if task.is_external:
            st.status = COMPLETE if st.exists else MISSING
            continue
        deps = st.deps
        forced = forced_tasks is None or task.name in forced_tasks
        if not forced:
            for d in deps:
                if d.forced:
                    forced = True
                    break
        if forced:
            st.forced = True
            st.status, st.reasons = TODO, ("forced",)
            continue
        if not task.persist:
            st.status, st.reasons = TODO, ("not persisted",)
            continue
        if not st.exists:
            st.status, st.reasons = TODO, ("no target",)
            continue
        rec = st.record
        if rec is None or rec is OUTSIDE:
            why = _NO_RECORD if rec is None else _OUTSIDE
            st.status, st.reasons, st.stale = TODO, why, True
            continue
        if rec.own != own_fingerprint(node):
            _stale(st, rerun_stale, ("fingerprint changed",))
            continue
        if check_dependencies and deps:
            pairs = []
            for d in deps:
                if d.status not in OK or d.out_hash is None:
                    break
                pairs.append((d.node.key, d.out_hash))
            else:
                if rec.inputs_fp != inputs_fingerprint(pairs):
                    _stale(st, rerun_stale, ("input changed",))
                    continue
                st.status = COMPLETE
                st.out_hash = rec.output
                continue
            st.status, st.reasons, st.maybe = TODO, ("upstream pending",), True
            continue
        st.status = COMPLETE
        st.out_hash = rec.output


_NO_RECORD = ("no fingerprint record",)
_OUTSIDE = ("target changed outside asyncflow",)


def _stale(st: NodeState, rerun_stale: bool, why: tuple[str, ...]) -> None:
    st.stale = True
    st.reasons = why
    own = st.node.task.rerun_stale  # the task's own choice wins over the workflow's
    if own if own is not None else rerun_stale:
        st.status = TODO
    else:  # kept as it is: dependants see the output it has
        st.status = COMPLETE
        st.out_hash = st.record.output
