"""Workflows: what users run. `Workflow`, `WorkflowMulti`, `DAG` and `af.run()`; the default
runner that `await node` uses outside any flow is registered here."""

from __future__ import annotations

import concurrent.futures
import difflib
import sys
import time
from contextvars import ContextVar
from typing import Any, ClassVar

import anyio
import anyio.from_thread
import sniffio

from . import _context
from . import events as ev
from ._background import RunHandle
from ._errors import FlowFailed, ParameterError, TargetError, TaskFailed
from ._graph import COMPLETE, DONE, MISSING, OK, UNSET
from ._node import Node, iter_nodes, replace_nodes
from ._records import forget
from ._registry import Registry
from ._render import summary
from ._results import Preview, RunResult
from ._scheduler import Run
from ._settings import Options, check_options
from ._targets import Target, target_for
from ._task import REGISTRY, Task


def did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def forced_task_names(items: Any, flow: Workflow) -> set[str]:
    """The task names `force=` gives: tasks, nodes or names; a name that is no task is an error."""
    if items is None:
        return set()
    if isinstance(items, (Task, str, Node)):
        items = [items]
    out = set()
    for t in items:
        if isinstance(t, Task):
            out.add(t.name)
        elif isinstance(t, Node):
            out.add(t.task.name)
        elif isinstance(t, str):
            if REGISTRY.get(t) is None:
                tasks = sorted({n.task.name for n in flow.nodes()} if flow.roots else set())
                raise ParameterError(
                    f"force names an unknown task {t!r}; this flow's tasks: {', '.join(tasks) or 'none'}"
                    f"{did_you_mean(t, tasks or REGISTRY.names())}",
                    task=t,
                    param="force",
                )
            out.add(t)
        else:
            raise ParameterError(f"force takes tasks or task names, got {t!r}", param="force")
    return out


FORCE_REACHED: ContextVar[set[str] | None] = ContextVar("asyncflow_force_reached", default=None)
"""Set by a WorkflowMulti: its flows add the tasks they reached instead of checking `force=` alone."""


def check_forced_reached(forced: set[str], reached: set[str]) -> None:
    """A forced task that the run never reached (not in the flow, not even as a dynamic child) is a
    mistake the user would not see otherwise: nothing was rebuilt for it."""
    missing = sorted(forced - reached)
    if missing:
        raise ParameterError(
            f"force names {', '.join(map(repr, missing))}, which this run never reached (no node of "
            f"{'that task' if len(missing) == 1 else 'those tasks'}); its tasks: {', '.join(sorted(reached))}"
            f"{did_you_mean(missing[0], sorted(reached))}",
            task=missing[0],
            param="force",
        )


class Workflow:
    """A set of nodes to preview, run, reset and read, with its options (API.md section 5).

    `Workflow(task, params)` binds the task with `params`; `Workflow([node, ...])` takes nodes.
    """

    def __init__(self, what: Any = None, params: dict[str, Any] | None = None, **options: Any) -> None:
        if params is not None and not isinstance(params, dict):
            raise ParameterError(f"Workflow params must be a dict of parameter values, got {params!r}")
        self.params = dict(params or {})
        self.options = check_options(options)
        self._check_params(what)
        self._roots = self._bind(what) if what is not None else []
        self._values: dict[Node, Any] = {}  # outputs of persist=False nodes from the last run
        self._children: dict[Node, list[Node]] = {}  # dynamic children seen in runs

    # binding --------------------------------------------------------------------------------
    def _check_params(self, what: Any) -> None:
        """Workflow parameters no task of the flow accepts are a mistake: named, with a suggestion."""
        tasks = [what] if isinstance(what, Task) else [t for t in what if isinstance(t, Task)] if isinstance(
            what, (list, tuple)) else []  # fmt: skip
        if not self.params or not tasks:
            return
        accepted = sorted({name for t in tasks for name in t.params})
        for name in self.params:
            if name not in accepted:
                which = tasks[0].name if len(tasks) == 1 else "the flow's tasks"
                raise ParameterError(
                    f"workflow parameter {name!r} is not accepted by {which}; it accepts "
                    f"{', '.join(accepted) or 'no parameters'}{did_you_mean(name, accepted)}",
                    task=tasks[0].name if len(tasks) == 1 else None,
                    param=name,
                )

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
            found = [n for n in self.nodes() if n.task is what]
            return found or [self._bind_task(what)]
        return self._bind(what)

    @property
    def roots(self) -> list[Node]:
        """The nodes this workflow runs by default."""
        return list(self._roots)

    def nodes(self, roots: list[Node] | None = None) -> list[Node]:
        """Every node reachable from the roots (or from `roots`), statically or through dynamic
        children seen in this workflow's runs; upstream after the nodes that need it."""
        seen: dict[Node, None] = {}
        stack = list(reversed(self._roots if roots is None else roots))
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen[n] = None
            stack.extend(reversed([*n.deps, *self._children.get(n, ())]))
        return list(seen)

    def with_options(self, **options: Any) -> Workflow:
        """The same workflow (roots and parameters) with these options changed."""
        flow = Workflow(None, self.params, **{**self.options, **options})
        flow._roots = list(self._roots)
        return flow

    def option(self, name: str, overrides: dict[str, Any] | None = None) -> Any:
        """An option's value for a run with `overrides`: theirs, else this workflow's, else the settings'."""
        return getattr(self.resolve(overrides or {}), name)

    def resolve(self, overrides: dict[str, Any]) -> Options:
        """Every option resolved and checked once for a run with `overrides`."""
        return Options.resolve(overrides, self.options)

    # API ------------------------------------------------------------------------------------
    async def _survey(self, what: Any, options: dict[str, Any]) -> tuple[list[Node], Run]:
        roots = self._nodes(what)
        force = options.pop("force", None)
        force_all = options.pop("force_all", False)
        run = Run(self.resolve(options), forced_task_names(force, self), force_all)
        await run.survey(roots, self._children)
        return roots, run

    async def _learn_children(self) -> None:
        """Add the dynamic children the store's records know (a flow made in a new process has
        seen none run) to those this workflow knows: reset and outputs then reach them."""
        if not self._roots:
            return
        _, run = await self._survey(None, {})
        for st in run.states.values():
            recorded = st.deps[len(st.node.deps) :]
            if recorded:
                known = self._children.setdefault(st.node, [])
                known.extend(d.node for d in recorded if d.node not in known)

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
            status[st.node] = st.shown
            if st.status != COMPLETE or st.stale:
                why[st.node] = await run.explain(st)
        kept = {st.node for st in run.states.values() if st.stale and st.status == COMPLETE}
        return Preview(roots, status, children, why, kept)

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
        forced = forced_task_names(force, self)
        run = Run(self.resolve(options), forced, force_all)
        t0 = time.perf_counter()
        await run.execute(roots)
        states = list(run.states.values())
        limits = {name: lim.stats() for name, lim in sorted(run.pool.limits.items())}
        result = RunResult(roots, states, time.perf_counter() - t0, run.pool.peak, run.failures, run.dynamic, limits)
        for parent, kids in run.dynamic.items():
            known = self._children.setdefault(parent, [])
            have = set(known)
            known.extend(k for k in kids if k not in have)
        for st in states:
            if st.status == DONE and not st.node.task.persist and st.output is not UNSET:
                self._values[st.node] = st.output
        if run.emitter.callback is not None:
            await run.emitter.emit(
                ev.FlowFinished(
                    timestamp=time.time(),
                    ran=result.ran,
                    skipped=result.skipped,
                    failed=result.failed,
                    duration=result.duration,
                    ok=result.ok,
                )
            )
        if run.options.execution_summary:
            print(summary(result), file=sys.stderr)
        if run.emitter.failure is not None:
            raise FlowFailed(result, result.errors, run.emitter.failure)
        if not result.ok:
            errors = result.errors or [
                TaskFailed(st.node.id, st.error or RuntimeError(f"{st.node.id} was cancelled"))
                for st in states
                if st.status not in OK
            ]
            raise FlowFailed(result, errors)
        if forced:  # (after a failure, which says more)
            reached = {st.node.task.name for st in states}
            collector = FORCE_REACHED.get()
            if collector is not None:  # a WorkflowMulti checks what all its flows reached
                collector.update(reached)
            else:
                check_forced_reached(forced, reached)
        return result, run

    def start(self, task_group: Any, what: Any = None, **options: Any) -> RunHandle:
        """Start `run(what, **options)` in the background, in the application's task group; the
        handle streams its events, answers status queries and cancels it."""
        options = dict(options)
        user_on_event = options.pop("on_event", self.options.get("on_event"))

        async def start(on_event: Any) -> RunResult:
            return await self.run(what, on_event=on_event, **options)

        handle = RunHandle(start, user_on_event)
        task_group.start_soon(handle.main)
        return handle

    async def reset(self, what: Any = None, *, downstream: bool = False, upstream: bool = False) -> list[str]:
        """Delete the targets of a task's (or these nodes') nodes in this flow, and their records;
        with `downstream=True` those of every node of the flow that depends on them too, with
        `upstream=True` those of everything they depend on (d6tflow's reset_downstream /
        reset_upstream). Returns the paths of the targets that were there."""
        if isinstance(what, Task):
            nodes = [n for n in self.nodes() if n.task is what] or [self._bind_task(what)]
        else:
            nodes = self._nodes(what)
        chosen = dict.fromkeys(nodes)
        if upstream or downstream:
            await self._learn_children()
        if upstream:
            chosen.update(dict.fromkeys(self.nodes(nodes)))
        if downstream:
            chosen.update(dict.fromkeys(self._downstream(nodes)))
        nodes = [n for n in chosen if not n.task.is_external]
        by_folder: dict[Any, tuple[Any, str, list[Target]]] = {}
        for n in nodes:
            self._values.pop(n, None)
            t = self.target(n)
            if t is not None:
                by_folder.setdefault((t.store.key, t.folder), (t.store, t.folder, []))[2].append(t)
        shown: list[str] = []
        for store, folder, targets in by_folder.values():
            if len(targets) > 16:
                present, _, _ = await store.scan(folder)
                there = [t for t in targets if t.name in present]
            else:
                there = [t for t in targets if await store.probe(t.fs_path) is not None]
            await store.delete([t.fs_path for t in there])
            await forget(store, folder, {t.name for t in targets})
            shown.extend(t.path for t in there)
        return shown

    def _downstream(self, nodes: list[Node]) -> list[Node]:
        """The flow's nodes that depend on any of `nodes`, directly or not."""
        users: dict[Node, list[Node]] = {}
        for n in self.nodes():
            for up in (*n.deps, *self._children.get(n, ())):
                users.setdefault(up, []).append(n)
        seen: dict[Node, None] = {}
        stack = list(nodes)
        while stack:
            for user in users.get(stack.pop(), ()):
                if user not in seen:
                    seen[user] = None
                    stack.append(user)
        return list(seen)

    def target(self, what: Any = None) -> Target | None:
        """A node's (or a task's single node's) target under this workflow's store."""
        nodes = self._nodes(what)
        if len(nodes) != 1:
            raise ParameterError(f"{len(nodes)} nodes match {what!r}; pass one node, e.g. flow.target(task(**params))")
        options = self.resolve({})
        return target_for(nodes[0], options.store, options.storage_options)

    async def _read(self, node: Node) -> Any:
        if node.task.is_external:
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
        """`{node id: output}` for a task's nodes in this flow (or for the given nodes); with no
        argument, of every node of the flow (d6tflow's outputLoadAll), upstream first."""
        if what is None:
            await self._learn_children()
        nodes = list(reversed(self.nodes())) if what is None else self._nodes(what)
        return {n.id: await self._read(n) for n in nodes}

    async def is_complete(self, node: Node) -> bool:
        """Whether `node` would be skipped by a run of this workflow."""
        _, run = await self._survey(node, {})
        return run.state(node).status == COMPLETE and not run.state(node).stale


DAGS = Registry("DAG", "label")
"""DAG classes by label: one live DAG per label (a class defined again at the same place replaces)."""


class DAG:
    """A named set of tasks (Gluepy): subclass with `label` and `tasks`; registered on definition."""

    label: ClassVar[str]
    tasks: ClassVar[list[Task]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        label = getattr(cls, "label", None)
        if not isinstance(label, str) or not label:
            raise ParameterError(f"DAG {cls.__name__} needs a `label` string")
        tasks = getattr(cls, "tasks", None)
        if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, Task) for t in tasks):
            raise ParameterError(f"DAG {label!r}: `tasks` must be a list of @af.task functions")
        DAGS.adopt(label, cls, lambda c: c, lambda old, new: new)

    def __init__(self, params: dict[str, Any] | None = None, **options: Any) -> None:
        self.workflow = Workflow(list(self.tasks), params, **options)

    @classmethod
    def get(cls, label: str) -> type[DAG]:
        """The DAG class registered under `label`; the error lists the known labels."""
        found = DAGS.get(label)
        if found is None:
            known = ", ".join(DAGS.names()) or "none (import the module that defines them)"
            raise ParameterError(f"unknown DAG label {label!r}; known: {known}")
        return found  # type: ignore[no-any-return]

    async def run(self, **kwargs: Any) -> RunResult:
        return await self.workflow.run(**kwargs)

    async def preview(self, **kwargs: Any) -> Preview:
        return await self.workflow.preview(**kwargs)


class _DefaultRunner:
    """`await node` and `node.complete()` outside any flow: a run on the default settings."""

    async def resolve(self, value: Any) -> Any:
        nodes = list(dict.fromkeys(iter_nodes(value)))
        flow = Workflow(nodes, execution_summary=False)
        try:
            _, run = await flow._execute(nodes, None, False, {})
        except FlowFailed as e:
            raise e.errors[0] from e.errors[0].__cause__
        states = [run.state(n) for n in nodes]
        await run.load_outputs(states)
        return replace_nodes(value, lambda n: run.state(n).output)

    async def is_complete(self, node: Any) -> bool:
        return await Workflow([node], execution_summary=False).is_complete(node)


_context.register_default_runner(_DefaultRunner())


def run(what: Any, **options: Any) -> Any:
    """Run from synchronous code and return the output(s): of a task (default params), a node,
    a list of nodes (a list back) or a Workflow (its default node)."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = None
    if library is not None and (library != "asyncio" or _context.current.get() is not None):
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

    if library is not None:  # a notebook cell, the asyncio REPL: the flow runs on an event loop of
        with concurrent.futures.ThreadPoolExecutor(1, "asyncflow-run") as pool:  # its own, in a thread,
            return pool.submit(anyio.run, main).result()  # and the caller waits (its loop waits too)
    if _context.current.get() is not None:  # a plain-function body (a worker thread) runs a flow:
        try:  # on the body's own event loop, so its nodes are shared and cycles through it are found
            return anyio.from_thread.run(main)
        except anyio.NoEventLoopError:  # not an anyio worker thread after all
            pass
    return anyio.run(main)
