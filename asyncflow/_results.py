"""What a run or a preview tells: `RunResult` (counts, per-node `NodeRecord`s, `RunStats`) and
`Preview` (statuses without running)."""

from __future__ import annotations

from typing import Any

import msgspec

from ._drawing import dag_svg
from ._errors import TaskFailed, describe
from ._graph import FAILED, NodeState, Status, outcome
from ._node import Node
from ._render import dot, mermaid, tree
from ._report import report_html

_PLAIN_REASONS = frozenset({"no target", "not persisted"})  # what PENDING says by itself


class TaskStats(msgspec.Struct, frozen=True):
    """Durations (seconds) of one task's nodes that ran, and their retries and failures."""

    count: int
    total: float
    p50: float
    p95: float
    max: float
    retries: int
    failures: int


class RunStats(msgspec.Struct, frozen=True):
    """A run's figures: `critical_path` is the chain of node ids that set its length."""

    wall: float
    ran: int
    throughput: float  # nodes run per second of wall time
    peak_concurrency: int
    tasks: dict[str, TaskStats]
    critical_path: list[str]
    critical_path_time: float


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def run_stats(records: list[Any], wall: float, peak: int) -> RunStats:
    """Statistics over a run's `NodeRecord`s."""
    by_task: dict[str, list[Any]] = {}
    for r in records:
        by_task.setdefault(r.task, []).append(r)
    tasks = {}
    for name, recs in sorted(by_task.items()):
        durations = sorted(r.duration for r in recs if r.status in ("ran", "failed"))
        tasks[name] = TaskStats(
            count=len(durations),
            total=sum(durations),
            p50=_quantile(durations, 0.5),
            p95=_quantile(durations, 0.95),
            max=durations[-1] if durations else 0.0,
            retries=sum(max(0, r.attempts - 1) for r in recs),
            failures=sum(r.status == "failed" for r in recs),
        )
    ran = sum(1 for r in records if r.status == "ran")
    path, span = critical_path(records)
    return RunStats(wall, ran, ran / wall if wall > 0 else 0.0, peak, tasks, path, span)


def critical_path(records: list[Any]) -> tuple[list[str], float]:
    """From the node that finished last, back through the upstream node that finished last before
    it: the chain that set the run's length, and its span in seconds."""
    ran = {r.node_id: r for r in records if r.started > 0}
    if not ran:
        return [], 0.0
    end = max(ran.values(), key=lambda r: r.started + r.duration)
    path = [end]
    seen = {end.node_id}
    while True:
        ups = [ran[u] for u in path[-1].upstream if u in ran and u not in seen]
        if not ups:
            break
        nxt = max(ups, key=lambda r: r.started + r.duration)
        seen.add(nxt.node_id)
        path.append(nxt)
    path.reverse()
    span = (end.started + end.duration) - path[0].started
    return [r.node_id for r in path], span


class NodeRecord(msgspec.Struct, frozen=True):
    """How one node fared in a run (`started`: epoch seconds, 0 when it did not run)."""

    node_id: str
    task: str
    status: str  # "ran", "skipped", "failed", "upstream_failed" or "cancelled"
    duration: float
    attempts: int
    error: str | None = None
    started: float = 0.0
    upstream: tuple[str, ...] = ()  # static upstream and dynamic children, by id


class RunResult:
    """The outcome of `Workflow.run()`: counts, and per node its status, duration and error."""

    def __init__(
        self,
        roots: list[Node],
        states: list[NodeState],
        duration: float,
        peak: int,
        failures: list[NodeState],
        children: dict[Node, list[Node]] | None = None,
        limits: dict[str, dict[str, int]] | None = None,
    ) -> None:
        self.roots = roots
        self.limits = limits or {}  # the limits this run used, at its end (shared by the event loop's runs)
        self._children = children or {}
        self._states = states
        self.duration = duration
        self.peak_concurrency = peak
        by_status: dict[Status, int] = {}
        for st in states:
            by_status[st.status] = by_status.get(st.status, 0) + 1
        counts: dict[str, int] = {}
        for status, n in by_status.items():
            word = outcome(status)
            counts[word] = counts.get(word, 0) + n
        self.ran = counts.get("ran", 0)
        self.skipped = counts.get("skipped", 0)
        self.failed = counts.get("failed", 0)
        self.upstream_failed = counts.get("upstream_failed", 0)
        self.cancelled = counts.get("cancelled", 0)
        self.errors = [TaskFailed(st.node.id, st.error) for st in failures if st.error is not None]
        self.ok = (
            self.cancelled == 0
            and self.upstream_failed == 0
            and not any(st.status == FAILED and not st.delivered for st in states)
        )
        self._records: dict[str, NodeRecord] | None = None

    @property
    def records(self) -> dict[str, NodeRecord]:
        """`{node id: NodeRecord}` for every node the run touched."""
        if self._records is None:
            self._records = {
                st.node.id: NodeRecord(
                    st.node.id,
                    st.node.task.name,
                    st.outcome,
                    st.duration,
                    st.attempts,
                    describe(st.error) if st.error is not None else None,
                    st.started,
                    tuple(n.id for n in (*st.node.deps, *self._children.get(st.node, ()))),
                )
                for st in self._states
            }
        return self._records

    @property
    def stats(self) -> RunStats:
        """Wall time, throughput, peak concurrency, per-task duration statistics, critical path."""
        return run_stats(list(self.records.values()), self.duration, self.peak_concurrency)

    def write_report(self, path: str) -> None:
        """One self-contained HTML file: the DAG, a timeline of node runs, concurrency over time and
        the per-task statistics (inline SVG: no script, no network)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(report_html(self))

    def __getitem__(self, node: Node | str) -> NodeRecord:
        return self.records[node.id if isinstance(node, Node) else node]

    @property
    def nodes(self) -> list[Node]:
        return [st.node for st in self._states]

    def __repr__(self) -> str:
        return (
            f"<RunResult ok={self.ok} ran={self.ran} skipped={self.skipped} failed={self.failed} "
            f"duration={self.duration:.3f}s>"
        )


class Preview:
    """Statuses without running. `str()` is the tree alone: one `id STATUS` line per node and position."""

    def __init__(
        self,
        roots: list[Node],
        status: dict[Node, str],
        children: dict[Node, list[Node]],
        reasons: dict[Node, list[str]] | None = None,
        kept: set[Node] | None = None,
    ) -> None:
        self.roots = roots
        self.status = status
        self.children = children
        self.reasons = reasons or {}
        self.kept = kept or set()  # STALE but kept (`rerun_stale=False`): a run will not rebuild them

    def label(self, node: Node) -> str:
        """`id STATUS`, then the reason in parentheses when it says more than "no target"."""
        status = "STALE (kept)" if node in self.kept else self.status[node]
        why = [r for r in self.reasons.get(node, ()) if r not in _PLAIN_REASONS]
        return f"{node.id} {status} ({'; '.join(why)})" if why else f"{node.id} {status}"

    def _kids(self, node: Node) -> list[Node]:
        return [*node.deps, *self.children.get(node, ())] if not node.task.is_external else []

    def __str__(self) -> str:
        return tree(self.roots, self._kids, self.label)

    def __repr__(self) -> str:
        return str(self)

    def __getitem__(self, node: Node | str) -> str:
        if isinstance(node, str):
            return self.by_id()[node]
        return self.status[node]

    def by_id(self) -> dict[str, str]:
        """`{node id: STATUS}` for every node shown."""
        return {n.id: s for n, s in self.status.items()}

    @property
    def nodes(self) -> list[Node]:
        return list(self.status)

    def edges(self) -> list[tuple[Node, Node]]:
        """(upstream, downstream) pairs, static and known dynamic ones."""
        return [(k, n) for n in self.status for k in self._kids(n)]

    def mermaid(self) -> str:
        return mermaid(self.edges(), self.nodes, self.status.__getitem__)

    def dot(self) -> str:
        return dot(self.edges(), self.nodes, self.status.__getitem__)

    def svg(self) -> str:
        """The graph drawn in layers, as the run report draws it, statuses coloured (its own CSS
        inside): each node a `<g class="node" data-id=... data-status=...>` (complete, pending, stale,
        missing) that a live page may recolour (running, ran, failed...). Beyond 60 nodes, a box per task."""
        nodes = [(n.id, n.task.name, self.status[n].lower()) for n in self.nodes]
        return dag_svg(nodes, [(u.id, d.id) for u, d in self.edges()], style=True)
