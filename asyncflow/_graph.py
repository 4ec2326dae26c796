"""The graph a run works on: per-node state, completeness decisions and cycle search.

Pure bookkeeping over nodes, with no I/O and no anyio: the scheduler feeds it existence facts and
acts on what it decides (pytask's scheduler shape).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._errors import CycleError

if TYPE_CHECKING:
    from ._node import Node

# states of a node inside one run
NEW = "new"  # being planned
TODO = "todo"  # planned, needs running, not yet reached by the needed-walk
COMPLETE = "complete"  # output exists and is current: skipped
MISSING = "missing"  # an external input that does not exist
PENDING = "pending"  # waiting for upstream nodes
READY = "ready"  # queued for a worker
RUNNING = "running"
DONE = "done"  # ran and published
FAILED = "failed"
UPSTREAM_FAILED = "upstream_failed"
CANCELLED = "cancelled"

FINISHED = frozenset({COMPLETE, MISSING, DONE, FAILED, UPSTREAM_FAILED, CANCELLED})
OK = frozenset({COMPLETE, DONE})
UNSET: Any = object()


class Join:
    """Something waiting for `remaining` nodes to finish (a parked body, or the run's roots)."""

    __slots__ = ("event", "remaining")

    def __init__(self, remaining: int, event: Any) -> None:
        self.remaining = remaining
        self.event = event


class NodeState:
    """A node's life in one run: status, upstream counter, waiters, output and timings."""

    __slots__ = (
        "attempts",
        "awaiting",
        "batch",
        "delivered",
        "dependants",
        "deps",
        "duration",
        "error",
        "exists",
        "forced",
        "holds_limit",
        "holds_slot",
        "joins",
        "maybe",
        "node",
        "npending",
        "out_hash",
        "output",
        "parked",
        "reasons",
        "record",
        "stale",
        "started",
        "status",
    )

    def __init__(self, node: Node, batch: Any = None) -> None:
        self.node = node
        self.status = NEW
        self.batch = batch
        self.deps: list[NodeState] | tuple[()] = ()
        self.dependants: list[NodeState] | None = None  # made on first use: most nodes have one or none
        self.joins: list[Join] | None = None
        self.npending = 0
        self.output: Any = UNSET
        self.error: BaseException | None = None
        self.exists = False
        self.forced = False
        self.started = 0.0
        self.duration = 0.0
        self.attempts = 0
        self.parked = 0
        self.holds_slot = False
        self.holds_limit = False
        self.awaiting: set[NodeState] | None = None
        self.delivered = False  # its failure was raised into an awaiting body, which decides
        self.record: Any = None  # the RecordName beside its target, if any
        self.out_hash: str | None = None  # hash of its output bytes (or an external's checksum)
        self.reasons: tuple[str, ...] | list[str] | None = None  # why it must run (preview, explain)
        self.stale = False  # its target was built from something else
        self.maybe = False  # pending only on upstream: skipped if their outputs did not change

    def __repr__(self) -> str:
        return f"<NodeState {self.node.id} {self.status}>"


def post_order(states: Iterable[NodeState], within: set[NodeState]) -> list[NodeState]:
    """`states` and their upstream inside `within`, upstream first (iterative: deep chains are fine)."""
    out: list[NodeState] = []
    seen: set[NodeState] = set()
    for root in states:
        if not root.deps:
            if root not in seen:
                seen.add(root)
                out.append(root)
            continue
        if root in seen:
            continue
        seen.add(root)
        stack: list[tuple[NodeState, int]] = [(root, 0)]
        while stack:
            st, i = stack.pop()
            if i < len(st.deps):
                stack.append((st, i + 1))
                d = st.deps[i]
                if d in within and d not in seen:
                    seen.add(d)
                    stack.append((d, 0))
            else:
                out.append(st)
    return out


def find_wait_cycle(parent: NodeState, child: NodeState) -> list[NodeState] | None:
    """The path child -> ... -> parent if `child` (transitively) waits for `parent`, else None.

    A node waits for its unfinished upstream nodes and for the nodes its parked body awaits.
    """
    if child is parent:
        return [parent, parent]
    stack: list[tuple[NodeState, list[NodeState]]] = [(child, [child])]
    seen = {child}
    while stack:
        st, path = stack.pop()
        nexts = [d for d in st.deps if d.status not in FINISHED]
        if st.awaiting:
            nexts.extend(st.awaiting)
        for n in nexts:
            if n is parent:
                return [parent, *path, parent]
            if n not in seen:
                seen.add(n)
                stack.append((n, [*path, n]))
    return None


def cycle_error(path: list[NodeState]) -> CycleError:
    return CycleError([st.node.id for st in path])
