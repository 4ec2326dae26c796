"""Workflows: what users run. `Workflow`, `WorkflowMulti`, `DAG`, `RunResult`, `Preview`, `af.run()`."""

from __future__ import annotations

import sys
import time
from typing import Any, ClassVar

import anyio
import msgspec
import sniffio

from ._background import RunHandle
from ._errors import FlowFailed, ParameterError, TargetError, TaskFailed
from ._graph import COMPLETE, DONE, FAILED, MISSING, OK, UNSET, UPSTREAM_FAILED, NodeState
from ._node import Node, iter_nodes, replace_nodes
from ._render import dot, mermaid, summary, tree
from ._scheduler import Run
from ._settings import OPTION_NAMES, settings
from ._stats import RunStats, run_stats
from ._targets import Target, target_for
from ._task import EXTERNAL, Task

_STATUS = {COMPLETE: "skipped", DONE: "ran", FAILED: "failed", UPSTREAM_FAILED: "upstream_failed"}
_PREVIEW = {COMPLETE: "COMPLETE", MISSING: "MISSING"}
_PLAIN_REASONS = frozenset({"no target", "not persisted"})  # what PENDING says by itself


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
    ) -> None:
        self.roots = roots
        self._children = children or {}
        self._states = states
        self.duration = duration
        self.peak_concurrency = peak
        counts: dict[str, int] = {}
        for st in states:
            status = _STATUS.get(st.status, "cancelled")
            counts[status] = counts.get(status, 0) + 1
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
            from ._errors import describe

            self._records = {
                st.node.id: NodeRecord(
                    st.node.id,
                    st.node.task.name,
                    _STATUS.get(st.status, "cancelled"),
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
        from ._report import report_html

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
    ) -> None:
        self.roots = roots
        self.status = status
        self.children = children
        self.reasons = reasons or {}

    def label(self, node: Node) -> str:
        """`id STATUS`, then the reason in parentheses when it says more than "no target"."""
        status = self.status[node]
        why = [r for r in self.reasons.get(node, ()) if r not in _PLAIN_REASONS]
        return f"{node.id} {status} ({'; '.join(why)})" if why else f"{node.id} {status}"

    def _kids(self, node: Node) -> list[Node]:
        return [*node.deps, *self.children.get(node, ())] if node.task is not EXTERNAL else []

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


def _task_names(items: Any) -> set[str]:
    if items is None:
        return set()
    if isinstance(items, (Task, str)):
        items = [items]
    out = set()
    for t in items:
        if isinstance(t, Task):
            out.add(t.name)
        elif isinstance(t, str):
            out.add(t)
        elif isinstance(t, Node):
            out.add(t.task.name)
        else:
            raise ParameterError(f"force takes tasks or task names, got {t!r}")
    return out


class Workflow:
    """A set of nodes to preview, run, reset and read, with its options (API.md section 5).

    `Workflow(task, params)` binds the task with `params`; `Workflow([node, ...])` takes nodes.
    """

    def __init__(self, what: Any = None, params: dict[str, Any] | None = None, **options: Any) -> None:
        unknown = set(options) - OPTION_NAMES
        if unknown:
            raise ParameterError(
                f"unknown workflow option(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(OPTION_NAMES))}"
            )
        self.params = dict(params or {})
        self.options = options
        self._what = what
        self._roots = self._bind(what) if what is not None else []
        self._values: dict[Node, Any] = {}  # outputs of persist=False nodes from the last run
        self._children: dict[Node, list[Node]] = {}  # dynamic children seen in runs

    # binding --------------------------------------------------------------------------------
    def _bind_task(self, task: Task) -> Node:
        accepts = task.params
        return task(**{k: v for k, v in self.params.items() if k in accepts})

    def _bind(self, what: Any) -> list[Node]:
        if isinstance(what, Node):
            return [what]
        if isinstance(what, Task):
            return [self._bind_task(what)]
        if isinstance(what, (list, tuple)):
            if all(type(item) is Node for item in what):
                return list(what)
            return [n for item in what for n in self._bind(item)]
        raise ParameterError(f"a workflow takes a task, a node or a list of them, got {what!r}")

    def _nodes(self, what: Any = None) -> list[Node]:
        if what is None:
            if not self._roots:
                raise ParameterError("this workflow has no default task: pass a task or nodes")
            return list(self._roots)
        if isinstance(what, Task):
            found = [n for n in self._graph() if n.task is what]
            return found or [self._bind_task(what)]
        return self._bind(what)

    def _graph(self) -> list[Node]:
        """Every node reachable from the roots, statically or through known dynamic children."""
        seen: dict[Node, None] = {}
        stack = list(reversed(self._roots))
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen[n] = None
            stack.extend(reversed([*n.deps, *self._children.get(n, ())]))
        return list(seen)

    def option(self, name: str, overrides: dict[str, Any] | None = None) -> Any:
        if overrides and name in overrides:
            return overrides[name]
        if name in self.options:
            return self.options[name]
        return getattr(settings, name)

    def _run_obj(self, overrides: dict[str, Any], force: set[str] = frozenset(), force_all: bool = False) -> Run:  # type: ignore[assignment]
        unknown = set(overrides) - OPTION_NAMES
        if unknown:
            raise ParameterError(
                f"unknown workflow option(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(OPTION_NAMES))}"
            )
        return Run(
            store=self.option("store", overrides),
            storage_options=self.option("storage_options", overrides),
            max_concurrency=self.option("max_concurrency", overrides),
            limits=self.option("limits", overrides),
            check_dependencies=self.option("check_dependencies", overrides),
            rerun_stale=self.option("rerun_stale", overrides),
            fail_fast=self.option("fail_fast", overrides),
            on_event=self.option("on_event", overrides),
            force=force,
            force_all=force_all,
        )

    # API ------------------------------------------------------------------------------------
    async def _survey(self, what: Any, options: dict[str, Any]) -> tuple[list[Node], Run]:
        roots = self._nodes(what)
        force = options.pop("force", None)
        force_all = options.pop("force_all", False)
        run = self._run_obj(options, _task_names(force), force_all)
        await run.survey(roots, self._children)
        return roots, run

    async def preview(self, what: Any = None, **options: Any) -> Preview:
        """Each node's status (COMPLETE, PENDING, STALE, MISSING) and why, without running anything."""
        roots, run = await self._survey(what, options)
        status: dict[Node, str] = {}
        why: dict[Node, list[str]] = {}
        children = {k: list(v) for k, v in self._children.items()}
        for st in run.states.values():
            recorded = st.deps[len(st.node.deps) :]  # dynamic children found in its record
            if recorded:
                known = children.setdefault(st.node, [])
                known.extend(d.node for d in recorded if d.node not in known)
            status[st.node] = "STALE" if st.stale else _PREVIEW.get(st.status, "PENDING")
            if st.status != COMPLETE or st.stale:
                why[st.node] = await run.explain(st)
        return Preview(roots, status, children, why)

    async def explain(self, what: Any = None, **options: Any) -> dict[str, list[str]]:
        """`{node id: [reasons]}` for every node a run would build, as data: "no target", "code of
        fit changed", "version 1 -> 2", "input get_data[n=4] changed", "external a.csv changed",
        "forced", "upstream pending" (rebuilt only if an upstream's output changes)..."""
        _, run = await self._survey(what, options)
        out = {}
        for st in run.states.values():
            if st.status != COMPLETE and st.status != MISSING:
                out[st.node.id] = await run.explain(st)
            elif st.status == MISSING:
                out[st.node.id] = ["missing external input"]
        return out

    async def run(self, what: Any = None, *, force: Any = None, force_all: bool = False, **options: Any) -> RunResult:
        """Run what is not complete (and its upstream); raise `FlowFailed` if anything failed."""
        result, _ = await self._execute(self._nodes(what), force, force_all, options)
        return result

    async def _execute(
        self, roots: list[Node], force: Any, force_all: bool, options: dict[str, Any]
    ) -> tuple[RunResult, Run]:
        run = self._run_obj(options, _task_names(force), force_all)
        t0 = time.perf_counter()
        await run.execute(roots)
        states = [st for st in run.states.values()]
        result = RunResult(roots, states, time.perf_counter() - t0, run.peak, run.failures, run.dynamic)
        for parent, kids in run.dynamic.items():
            known = self._children.setdefault(parent, [])
            have = set(known)
            known.extend(k for k in kids if k not in have)
        for st in states:
            if st.status == DONE and not st.node.task.persist and st.output is not UNSET:
                self._values[st.node] = st.output
        on_event = run.on_event
        if on_event is not None:
            from . import events

            await run.emit(
                events.FlowFinished(
                    timestamp=time.time(),
                    ran=result.ran,
                    skipped=result.skipped,
                    failed=result.failed,
                    duration=result.duration,
                    ok=result.ok,
                )
            )
        if self.option("execution_summary", options):
            print(summary(result), file=sys.stderr)
        if not result.ok:
            errors = result.errors or [
                TaskFailed(st.node.id, st.error or RuntimeError(f"{st.node.id} was cancelled"))
                for st in states
                if st.status not in OK
            ]
            raise FlowFailed(result, errors)
        return result, run

    def start(self, task_group: Any, what: Any = None, **options: Any) -> RunHandle:
        """Start `run(what, **options)` in the background, in the application's task group; the
        handle streams its events, answers status queries and cancels it."""
        handle = RunHandle(self, what, dict(options))
        task_group.start_soon(handle._main)
        return handle

    async def reset(self, what: Any = None) -> list[str]:
        """Delete the targets of a task's (or these nodes') nodes in this flow; returns their paths."""
        if isinstance(what, Task):
            nodes = [n for n in self._graph() if n.task is what] or [self._bind_task(what)]
        else:
            nodes = self._nodes(what)
        by_store: dict[Any, tuple[Any, list[str]]] = {}
        shown = []
        for n in nodes:
            self._values.pop(n, None)
            t = self.target(n)
            if t is not None:
                by_store.setdefault(t.store.key, (t.store, []))[1].append(t.fs_path)
                shown.append(t.path)
        for store, paths in by_store.values():
            await store.delete(paths)
        return shown

    def target(self, what: Any = None) -> Target | None:
        """A node's (or a task's single node's) target under this workflow's store."""
        nodes = self._nodes(what)
        if len(nodes) != 1:
            raise ParameterError(f"{len(nodes)} nodes match {what!r}; pass one node, e.g. flow.target(task(**params))")
        return target_for(nodes[0], self.option("store"), self.option("storage_options"))

    async def _read(self, node: Node) -> Any:
        if node.task is EXTERNAL:
            return node.params["url"]
        if not node.task.persist:
            if node in self._values:
                return self._values[node]
            raise TargetError(
                f"{node.id} is not persisted (persist=False) and this workflow has not run it; run the flow first",
                path="",
            )
        t = self.target(node)
        assert t is not None
        return await t.load()

    async def output(self, what: Any = None) -> Any:
        """The output of the default node (or of `what`): read from its target, never built."""
        nodes = self._nodes(what)
        if isinstance(what, Task) and len(nodes) > 1:
            raise ParameterError(f"task {what.name!r} has {len(nodes)} nodes in this flow; use flow.outputs()")
        return await self._read(nodes[0])

    async def outputs(self, what: Any = None) -> dict[str, Any]:
        """`{node id: output}` for a task's nodes in this flow (or for the given nodes)."""
        return {n.id: await self._read(n) for n in self._nodes(what)}

    async def is_complete(self, node: Node) -> bool:
        """Whether `node` would be skipped by a run of this workflow."""
        _, run = await self._survey(node, {})
        return run.state(node).status == COMPLETE and not run.state(node).stale


class WorkflowMulti:
    """The same task over several parameter sets: `{name: params}`; every method answers `{name: ...}`."""

    def __init__(self, task: Task, params: dict[str, dict[str, Any]], **options: Any) -> None:
        if not isinstance(params, dict) or not params:
            raise ParameterError("WorkflowMulti takes a dict of {name: params}")
        self.workflows = {name: Workflow(task, p, **options) for name, p in params.items()}

    async def _each(self, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        errors: list[FlowFailed] = []

        async def one(name: str, flow: Workflow) -> None:
            try:
                out[name] = await getattr(flow, method)(*args, **kwargs)
            except FlowFailed as e:
                errors.append(e)

        async with anyio.create_task_group() as tg:
            for name, flow in self.workflows.items():
                tg.start_soon(one, name, flow)
        if errors:
            raise FlowFailed(errors[0].result, [x for e in errors for x in e.errors])
        return {name: out[name] for name in self.workflows}

    async def run(self, what: Any = None, **kwargs: Any) -> dict[str, RunResult]:
        return await self._each("run", what, **kwargs)

    async def preview(self, what: Any = None, **kwargs: Any) -> dict[str, Preview]:
        return await self._each("preview", what, **kwargs)

    async def reset(self, what: Any = None) -> dict[str, list[str]]:
        return await self._each("reset", what)

    async def output(self, what: Any = None) -> dict[str, Any]:
        return await self._each("output", what)

    async def outputs(self, what: Any = None) -> dict[str, dict[str, Any]]:
        return await self._each("outputs", what)


class DAG:
    """A named set of tasks (Gluepy): subclass with `label` and `tasks`; registered on definition."""

    label: ClassVar[str]
    tasks: ClassVar[list[Task]]
    registry: ClassVar[dict[str, type[DAG]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        label = getattr(cls, "label", None)
        if not isinstance(label, str) or not label:
            raise ParameterError(f"DAG {cls.__name__} needs a `label` string")
        tasks = getattr(cls, "tasks", None)
        if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, Task) for t in tasks):
            raise ParameterError(f"DAG {label!r}: `tasks` must be a list of @af.task functions")
        DAG.registry[label] = cls

    def __init__(self, params: dict[str, Any] | None = None, **options: Any) -> None:
        self.workflow = Workflow(list(self.tasks), params, **options)

    @classmethod
    def get(cls, label: str) -> type[DAG]:
        """The DAG class registered under `label`; the error lists the known labels."""
        try:
            return DAG.registry[label]
        except KeyError:
            known = ", ".join(sorted(DAG.registry)) or "none (import the module that defines them)"
            raise ParameterError(f"unknown DAG label {label!r}; known: {known}") from None

    async def run(self, **kwargs: Any) -> RunResult:
        return await self.workflow.run(**kwargs)

    async def preview(self, **kwargs: Any) -> Preview:
        return await self.workflow.preview(**kwargs)


async def run_default(value: Any) -> Any:
    """`await node` outside any run: run it (and what it needs) on the default settings."""
    nodes = list(dict.fromkeys(iter_nodes(value)))
    flow = Workflow(nodes, execution_summary=False)
    try:
        _, run = await flow._execute(nodes, None, False, {})
    except FlowFailed as e:
        raise e.errors[0] from e.errors[0].__cause__
    states = [run.state(n) for n in nodes]
    await run.load_outputs(states)
    return replace_nodes(value, lambda n: run.state(n).output)


def run(what: Any, **options: Any) -> Any:
    """Run from synchronous code and return the output(s): of a task (default params), a node,
    a list of nodes (a list back) or a Workflow (its default node)."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = None
    if library is not None:
        raise RuntimeError(
            f"af.run() was called inside a running {library} event loop; use `await flow.run()` "
            "or `await node` there instead"
        )

    async def main() -> Any:
        if isinstance(what, Workflow):
            flow = what
            nodes = flow._nodes()
            single = True
        else:
            single = not isinstance(what, (list, tuple))
            flow = Workflow(what, **options)
            nodes = flow._roots
        _, r = await flow._execute(nodes, None, False, options if isinstance(what, Workflow) else {})
        states = [r.state(n) for n in nodes]
        await r.load_outputs(states)
        outs = [st.output for st in states]
        return outs[0] if single else outs

    return anyio.run(main)
