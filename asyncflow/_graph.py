"""The graph a run works on: node states, their lifecycle, and the pure steps over them.

No I/O and no anyio (pytask's scheduler shape): the planner feeds states with facts from the
store, and these functions decide. `expand` brings nodes and their static upstream into a run,
`activate` walks from the roots through what must run and says what is ready, `settle` ends a
node and says which dependants became ready. Waiting is done by whoever holds a `Waker`.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ._errors import CycleError, ParameterError
from ._params import ID_FORMATS

if TYPE_CHECKING:  # a type-only back reference (listed in the layering test): states hold nodes
    from ._node import Node


class Status(enum.IntEnum):
    """Where a node is in one run. Every status from COMPLETE on is final."""

    def __new__(cls, value: int, doc: str) -> Status:
        member = int.__new__(cls, value)
        member._value_ = value
        member.__doc__ = doc
        return member

    NEW = 0, "Being planned: its facts (target, record) are being gathered."
    TODO = 1, "Planned: it must run, but no root needs it yet (it may be dropped)."
    PENDING = 2, "Needed: waiting for its upstream to finish."
    READY = 3, "Queued for a worker."
    RUNNING = 4, "Its body (or the wait for another run executing it) is under way."
    COMPLETE = 5, "Its output exists and is current: not run (reported as skipped)."
    MISSING = 6, "An external input that does not exist."
    DONE = 7, "It ran and its output is published (or held in memory)."
    FAILED = 8, "Its body failed for good (retries exhausted)."
    UPSTREAM_FAILED = 9, "Not run: something it needs failed."
    CANCELLED = 10, "The run ended before it finished."

    @property
    def finished(self) -> bool:
        return self >= Status.COMPLETE


NEW, TODO, PENDING, READY, RUNNING = Status.NEW, Status.TODO, Status.PENDING, Status.READY, Status.RUNNING
COMPLETE, MISSING, DONE, FAILED = Status.COMPLETE, Status.MISSING, Status.DONE, Status.FAILED
UPSTREAM_FAILED, CANCELLED = Status.UPSTREAM_FAILED, Status.CANCELLED
FINISHED = frozenset(s for s in Status if s.finished)
OK = frozenset({COMPLETE, DONE})
BROKEN = frozenset({FAILED, UPSTREAM_FAILED, CANCELLED})

_OUTCOME = {COMPLETE: "skipped", DONE: "ran", FAILED: "failed", UPSTREAM_FAILED: "upstream_failed"}
_PREVIEW = {COMPLETE: "COMPLETE", MISSING: "MISSING"}


def outcome(status: Status) -> str:
    """The word a run result uses for a final status: ran, skipped, failed, upstream_failed or
    cancelled (the one place these words come from)."""
    return _OUTCOME.get(status, "cancelled")


UNSET: Any = object()
"""A state's output before it is known (None is a valid output)."""


class Waker(Protocol):
    """Something a waiting task sleeps on (an anyio Event)."""

    def set(self) -> None: ...


class Join:
    """Something waiting for `remaining` nodes to finish (a parked body, or the run's roots)."""

    __slots__ = ("event", "remaining")

    def __init__(self, remaining: int, event: Waker) -> None:
        self.remaining = remaining
        self.event = event


class NodeState:
    """A node's life in one run.

    Graph: `status`, `deps` (upstream states, then recorded dynamic children), `dependants`,
    `npending` (unfinished upstream), `joins` (who waits for it).
    Plan: `batch` (the planning pass it belongs to while NEW), `exists`, `record` (the fingerprint
    record beside its target), `reasons` (why it must run), `stale` (its target was built from
    something else), `maybe` (pending only on upstream: skipped if their outputs come out as
    recorded), `forced`.
    Pool: `holds_slot`, `holds_limit`, `parked` (how deep its body waits on other nodes),
    `awaiting` (the nodes it waits on, for cycle detection).
    Result: `output`, `out_hash`, `error`, `delivered` (its failure went to a body that awaited
    it, which decides), `started`, `duration`, `attempts`.
    """

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

    def __init__(self, node: Node, batch: Waker | None = None) -> None:
        self.node = node
        self.status = NEW
        self.batch = batch
        self.deps: list[NodeState] | tuple[()] = ()
        # who waits for it by name: most nodes have one (kept alone: 64 bytes less a node) or none
        self.dependants: NodeState | list[NodeState] | None = None
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
        self.delivered = False
        self.record: Any = None
        self.out_hash: str | None = None
        self.reasons: tuple[str, ...] | list[str] | None = None
        self.stale = False
        self.maybe = False

    def __repr__(self) -> str:
        return f"<NodeState {self.node.id} {self.status.name}>"

    @property
    def outcome(self) -> str:
        """The word a run result uses: ran, skipped, failed, upstream_failed or cancelled."""
        return outcome(self.status)

    @property
    def shown(self) -> str:
        """The word a preview uses: COMPLETE, PENDING, STALE or MISSING."""
        return "STALE" if self.stale else _PREVIEW.get(self.status, "PENDING")


def wait_on(states: Iterable[NodeState], remaining: int, event: Waker) -> Join:
    """A Join that wakes `event` once `remaining` of `states` have finished."""
    join = Join(remaining, event)
    for s in states:
        if s.joins is None:
            s.joins = [join]
        else:
            s.joins.append(join)
    return join


def expand(
    roots: list[Node],
    states: dict[bytes, NodeState],
    batch: Waker,
    children: dict[Node, list[Node]] | None,
) -> tuple[list[NodeState], set[Any]]:
    """New states for `roots` and their static upstream (plus known dynamic `children`), upstream
    first, added to `states`; and the batches of other planning passes still gathering facts
    about nodes these need."""
    added: list[NodeState] = []
    waits: set[Any] = set()
    stack: list[Any] = list(reversed(roots))  # a node, or a state whose upstream is done
    path: list[NodeState] = []  # the states whose upstream is being expanded: a way from a root
    on_path: set[NodeState] = set()
    while stack:
        node = stack.pop()
        if type(node) is NodeState:
            added.append(node)
            path.pop()
            on_path.discard(node)
            continue
        st = states.get(node.key)
        if st is not None:
            if st in on_path:  # a node among its own upstream (a parameter changed after binding...)
                raise cycle_error([*path[path.index(st) :], st])
            if st.status == NEW and st.batch is not batch:
                waits.add(st.batch)
            continue
        st = NodeState(node, batch)
        states[node.key] = st
        stack.append(st)
        path.append(st)
        on_path.add(st)
        if not node.task.is_external:
            stack.extend(node.deps)
        if children and node in children:
            stack.extend(children[node])
    for st in added:
        deps = st.node.deps
        if deps:
            st.deps = [states[d.key] for d in deps]
    if ID_FORMATS[0] and any(st.node.task.id_format is not None for st in added):
        _check_ids(added, states)
    return added, waits


def _check_ids(added: list[NodeState], states: dict[bytes, NodeState]) -> None:
    """Tasks with `id=`: one id, one node in a run (results keyed by id would merge two)."""
    seen: dict[str, Node] = {}
    for st in states.values():
        node = st.node
        if node.task.id_format is None:
            continue
        other = seen.setdefault(node.id, node)
        if other is not node:
            for a in added:  # (the run is left as it was)
                states.pop(a.node.key, None)
            raise ParameterError(
                f"task {node.task.name!r}: id {node.id!r} is given to two nodes of this run, {other.params!r} "
                f"and {node.params!r}; make the id format name the parameters that tell them apart",
                task=node.task.name,
                param="id",
            )


class Activation:
    """What `activate` found: states to queue (or fail), skipped ones, missing externals."""

    __slots__ = ("missing", "needed_by", "skipped", "to_queue")

    def __init__(self) -> None:
        self.to_queue: list[NodeState] = []
        self.skipped: list[NodeState] = []
        self.missing: list[NodeState] = []
        self.needed_by: list[str] = []


def activate(roots: list[NodeState], new: list[NodeState], states: dict[bytes, NodeState]) -> Activation:
    """Walk from `roots` through what must run: mark it PENDING and wire upstream counters.
    Planned states that nothing needs (upstream of complete nodes) are dropped from `states`; with
    missing externals, every state this planned is dropped (nothing may start)."""
    out = Activation()
    seen: set[NodeState] = set()
    fresh = set(new)
    stack = [st for st in reversed(roots) if st.status == TODO]  # (popped in declared order)
    for st in roots:
        if st.status == MISSING:
            out.missing.append(st)
        elif st.status == COMPLETE and st in fresh:
            out.skipped.append(st)
    seen.update(stack)
    while stack:
        st = stack.pop()
        st.status = PENDING
        push: list[NodeState] = []
        for d in st.deps:
            if d.status == TODO:
                if d not in seen:
                    seen.add(d)
                    push.append(d)
            elif d.status == MISSING:
                out.missing.append(d)
                out.needed_by.append(st.node.id)
                continue
            elif d.status == COMPLETE:
                if d in fresh and d not in seen:
                    seen.add(d)
                    out.skipped.append(d)
                continue
            if d.status not in FINISHED:
                st.npending += 1
                known = d.dependants
                if known is None:
                    d.dependants = st
                elif type(known) is NodeState:
                    d.dependants = [known, st]
                else:
                    known.append(st)  # type: ignore[union-attr]
        out.to_queue.append(st)
        stack.extend(reversed(push))  # upstream runs in the order it was declared
    root_set = set(roots)
    for st in new:  # planned but not needed: forget them
        if st not in seen and (st.status == TODO or (st.status == COMPLETE and st not in root_set)):
            del states[st.node.key]
    if out.missing:
        for st in out.to_queue:
            del states[st.node.key]
        for st in out.missing:
            states.pop(st.node.key, None)
    return out


def settle(
    st: NodeState, status: Status, error: BaseException | None, ready: Callable[[NodeState], None]
) -> list[NodeState]:
    """End `st` with `status`: dependants whose upstream is all done go to `ready`, those of a
    broken node become UPSTREAM_FAILED, and whoever waits is woken. Returns the states that ended
    with another status than DONE (for events and failure counts), often none."""
    if status == DONE and st.dependants is None and st.joins is None and st.status not in FINISHED:
        st.status = DONE  # the common leaf case: nothing waits on it by name
        return _NONE
    ended: list[NodeState] = []
    todo = [(st, status, error)]
    while todo:
        s, s_status, s_error = todo.pop()
        if s.status in FINISHED:
            continue
        s.status = s_status
        s.error = s_error
        if s_status != DONE:
            ended.append(s)
        dependants, s.dependants = s.dependants, None
        for d in (dependants,) if type(dependants) is NodeState else dependants or ():  # type: ignore[union-attr]
            if s_status in OK:
                d.npending -= 1
                if d.npending == 0 and d.status == PENDING:
                    ready(d)
            elif d.status not in FINISHED:
                todo.append((d, UPSTREAM_FAILED, s_error))
        joins, s.joins = s.joins, None
        for j in joins or ():
            j.remaining -= 1
            if j.remaining == 0:
                j.event.set()
    return ended


_NONE: list[NodeState] = []


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
    """The error for a wait cycle; one node met twice in a row (its states in two runs) shows once."""
    ids = [path[0].node.id]
    for prev, st in itertools.pairwise(path):
        if st is prev or st.node != prev.node:
            ids.append(st.node.id)
    return CycleError(ids)
