"""One run: plan what must run (the inventory lists each task folder once; fingerprints decide),
run it on the pool, resolve dynamic dependencies, record what each target was built from.

`Run` composes a `Pool` (slots, limits, workers) and an `Inventory` (the run's view of the store)
and keeps the node states; the pure steps over them live in `_graph`, and the execution of one
node in `_execute`.
"""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from . import _context, _leases
from . import events as ev
from ._code import new_epoch
from ._concurrent import run_all
from ._emitter import Emitter
from ._errors import CycleError, MissingInputError, TaskFailed
from ._execute import Flight, ThreadToken, execute, flights
from ._faults import fault
from ._fingerprint import decide
from ._graph import (
    BROKEN,
    FAILED,
    FINISHED,
    OK,
    PENDING,
    RUNNING,
    UNSET,
    UPSTREAM_FAILED,
    NodeState,
    Status,
    activate,
    cycle_error,
    expand,
    find_wait_cycle,
    post_order,
    settle,
    wait_on,
)
from ._inventory import Inventory
from ._log import log
from ._node import Node, iter_nodes, replace_nodes
from ._pool import Pool

if TYPE_CHECKING:
    from ._settings import Options
    from ._targets import Target


_NO_EVENTS: list[Any] = []
_NOT_PERSISTED = ("not persisted",)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC around a synchronous bulk build of states.

    Why: allocating 100,000 states makes the collector rescan the growing heap dozens of times
    (measured: 0.5 s against 0.18 s). No await happens inside, and it is re-enabled at once.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Run:
    """Executes nodes for one `Workflow.run()` (or `preview()`, which only plans). Made inside the
    event loop that runs it."""

    def __init__(self, options: Options, force: set[str] = frozenset(), force_all: bool = False) -> None:  # type: ignore[assignment]
        self.options = options
        self.emitter = Emitter(options.on_event)
        self.log_info = options.log_info
        self.log_warning = options.log_warning
        self.force = force
        self.force_all = force_all
        self.pool = Pool(options.max_concurrency, options.limits, self._execute)
        self.new_event = self.pool.new_event
        self.park = self.pool.park
        self.unpark = self.pool.unpark
        self.begin_publish = self.pool.begin_publish
        self.end_publish = self.pool.end_publish
        self.inventory = Inventory(options.store, options.storage_options, options.check_dependencies, self.new_event)
        self.store_of = self.inventory.store_of
        self.target_of = self.inventory.target_of
        self.explain = self.inventory.explain  # why a surveyed node would run, in words
        self.states: dict[bytes, NodeState] = {}  # by node key: bytes hash in C, cached
        self.flights: dict[Any, Flight] = flights()
        self.thread_limiter: anyio.CapacityLimiter | None = _thread_limiter(options.max_threads)
        self.thread_carrier = _thread_carrier()
        self.thread_tokens: dict[NodeState, ThreadToken] = {}  # thread bodies running now
        self.executors: set[Any] = set()  # executor objects (Dask...) to close when the run ends
        self.leases = _leases.RunLeases(options.single_flight == "store", options.lease_seconds)
        self.dynamic: dict[Node, list[Node]] = {}
        self.failures: list[NodeState] = []
        self.started = time.time()

    def state(self, node: Node) -> NodeState:
        """The node's state in this run."""
        return self.states[node.key]

    async def _execute(self, st: NodeState) -> None:
        await execute(self, st)

    # planning -------------------------------------------------------------------------------
    def _is_forced(self, node: Node) -> bool:
        return self.force_all or node.task.name in self.force

    async def plan_one(self, node: Node) -> NodeState:
        """`plan([node])`, with a shortcut for the common streamed case (an in-memory node with no
        upstream: nothing to list or decide) that keeps `af.map` at a few µs an item."""
        task = node.task
        if task.persist or node.deps or task.is_external or node.key in self.states:
            return (await self.plan([node]))[0]
        st = NodeState(node)
        st.status = PENDING
        st.reasons = _NOT_PERSISTED
        self.states[node.key] = st
        if task.limit is not None:
            self.pool.check_limit(task)
        self.emitter.planned(1)
        self.pool.queue(st)
        return st

    async def plan(self, roots: list[Node]) -> list[NodeState]:
        """Bring `roots` and their static upstream into the run; queue what must run."""
        new = await self.survey(roots)
        return await self._activate([self.states[n.key] for n in roots], new)

    async def survey(self, roots: list[Node], children: dict[Node, list[Node]] | None = None) -> list[NodeState]:
        """Add `roots` and their upstream (plus known dynamic `children`, shown by previews) as
        states, each marked COMPLETE, MISSING or TODO (STALE flagged) from one listing per task
        folder. Recorded dynamic children of current-looking nodes count as their upstream.
        Returns the new states."""
        new_epoch()  # code fingerprints are checked again, once each
        batch = self.new_event()
        new: list[NodeState] = []
        waits: set[Any] = set()
        adopted: list[tuple[NodeState, list[Node]]] = []
        try:
            todo = list(roots)
            while todo:
                with _gc_paused():
                    added, more = expand(todo, self.states, batch, children)
                new.extend(added)
                waits |= more
                await self.inventory.existence(added)
                todo = []
                for st, kids in await self.inventory.recorded_children(added, self._is_forced):
                    adopted.append((st, kids))
                    todo.extend(kids)
            for st, kids in adopted:
                st.deps = [*st.deps, *(self.states[k.key] for k in kids)]
            for w in waits:
                await w.wait()
            with _gc_paused():
                order = post_order(new, set(new)) if adopted else new  # expansions are upstream first
                opts = self.options
                decide(order, opts.check_dependencies, opts.rerun_stale, None if self.force_all else self.force)
            for st in new:
                if st.exists and st.record is None and st.stale and st not in self.inventory.warned:
                    t = self.target_of(st.node)
                    log().warning("target without fingerprint record: rebuilding", path=t.path if t else "")
        except BaseException:
            for st in new:
                self.states.pop(st.node.key, None)
            raise
        finally:
            batch.set()
        return new

    async def _activate(self, roots: list[NodeState], new: list[NodeState]) -> list[NodeState]:
        """Wire what must run from `roots`, fail early on missing inputs, queue what is ready."""
        found = activate(roots, new, self.states)
        if found.missing:
            urls = sorted({str(st.node.params["url"]) for st in found.missing})
            raise MissingInputError(urls, sorted(set(found.needed_by)))
        checked: set[Any] = set()
        for st in found.to_queue:
            task = st.node.task
            if task.limit is not None and task not in checked:
                checked.add(task)
                self.pool.check_limit(task)
        if self.emitter.callback is not None:
            self.emitter.planned(len(found.to_queue))
            for st in found.skipped:
                await self.emitter.node(ev.TaskSkipped, st, reason="complete")
        for st in found.to_queue:
            if st.deps:
                failed = next((d for d in st.deps if d.status in BROKEN), None)
                if failed is not None:
                    await self.finish(st, UPSTREAM_FAILED, failed.error)
                    continue
            if st.npending == 0 and st.status == PENDING:
                self.pool.queue(st)
        return roots

    # the node lifecycle ---------------------------------------------------------------------
    async def finish(self, st: NodeState, status: Status, error: BaseException | None = None) -> None:
        """Record the end of a node, release what waited for it, and emit the events."""
        for event in self.settle(st, status, error):
            await self.emitter.emit(event)

    def settle(self, st: NodeState, status: Status, error: BaseException | None = None, last: bool = False) -> Any:
        """`finish` without emitting: the events to emit (none without `on_event`). `last`: by the
        worker that ran `st`, as the last thing before it takes its next node (one made ready here)."""
        ended = settle(st, status, error, self.pool.hand_on if last else self.pool.queue)
        if not ended:
            return _NO_EVENTS
        out: list[Any] = []
        for s in ended:
            if s.status == FAILED:
                self.failures.append(s)
            if self.emitter.callback is not None:
                out.append(self.emitter.ended(s))
        if status == FAILED and self.options.fail_fast:
            self.pool.cancel()
        return out

    # outputs --------------------------------------------------------------------------------
    async def output_of(self, st: NodeState) -> Any:
        """A finished node's output: in memory, or read back from its target. A target found
        complete is read only if what is read is what was trusted (or was built the same way):
        one replaced meanwhile by another writer (a process running other code) is rebuilt."""
        if st.output is UNSET:
            t = self.target_of(st.node)
            if t is None:
                raise RuntimeError(f"{st.node.id} has no output in this run")  # pragma: no cover
            trusted, value = await self.inventory.read_trusted(st, t)
            st.output = value if trusted else await self._rebuild(st.node)
        return st.output

    async def _rebuild(self, node: Node) -> Any:
        """Build one node again, in a run of its own with this run's options."""
        run = Run(self.options, {node.task.name})
        await run.execute([node])
        st = run.state(node)
        if st.status not in OK:
            raise st.error or RuntimeError(f"{node.id} could not be rebuilt")
        return await run.output_of(st)

    async def load_outputs(self, states: Any) -> None:
        """Load several outputs at once (their reads are batched by the store)."""
        todo = [s for s in states if s.output is UNSET]
        if todo:
            await run_all([functools.partial(self.output_of, s) for s in todo])

    async def publish(self, st: NodeState, target: Target, data: bytes | None, out_hash: str | None = None) -> None:
        """Write a node's target and its record (with the dynamic children it awaited)."""
        kids = [self.states[c.key] for c in dict.fromkeys(self.dynamic.get(st.node, ())) if c.key in self.states]
        await self.inventory.publish(st, target, data, kids, out_hash)

    # dynamic dependencies -------------------------------------------------------------------
    async def resolve(self, value: Any, parent: NodeState | None) -> Any:
        """Run the nodes inside `value` from a body and return `value` with their outputs."""
        nodes = list(dict.fromkeys(iter_nodes(value)))
        if not nodes:
            return value
        if parent is not None:
            known = self.dynamic.setdefault(parent.node, [])
            seen = set(known)
            known.extend(n for n in nodes if n not in seen)
        states = await self.plan(nodes)
        waiting = [s for s in states if s.status not in FINISHED]
        if waiting:
            event = self.new_event()
            wait_on(waiting, len(waiting), event)
            if parent is None:
                await event.wait()
            else:
                async with self.awaiting(parent, waiting):
                    await event.wait()
        failed = [s for s in states if s.status not in OK]
        if failed:
            for s in failed:
                s.delivered = True
            s = failed[0]
            if isinstance(s.error, CycleError):
                raise s.error
            raise TaskFailed(s.node.id, s.error or RuntimeError(f"{s.node.id} was {s.status.name.lower()}"))
        await self.load_outputs(states)
        by_node = {s.node: s.output for s in states}
        return replace_nodes(value, by_node.__getitem__)

    async def wait_any(self, states: list[NodeState], parent: NodeState | None) -> None:
        """Wait until one of `states` has finished (a waiting body gives its slot back)."""
        if any(s.status in FINISHED for s in states):
            return
        event = self.new_event()
        wait_on(states, 1, event)
        if parent is None:
            await event.wait()
            return
        async with self.awaiting(parent, states):
            await event.wait()

    @asynccontextmanager
    async def awaiting(self, parent: NodeState, states: list[NodeState]) -> AsyncIterator[None]:
        """`parent`'s body waits for `states`: a cycle back to it is a `CycleError`; its slot is given
        back meanwhile."""
        for s in states:
            path = find_wait_cycle(parent, s)
            if path is not None:
                raise cycle_error(path)
        if parent.awaiting is None:
            parent.awaiting = set()
        parent.awaiting.update(states)
        await self.park(parent)
        token = self.thread_tokens.get(parent)
        limiter = self.thread_limiter
        if token is not None and token.held and limiter is not None:  # a thread body waiting (through
            token.held = False  # anyio.from_thread): its thread token goes back meanwhile too
            limiter.release_on_behalf_of(token)
        try:
            yield
        finally:
            parent.awaiting.difference_update(states)
            if token is not None and limiter is not None and self.thread_tokens.get(parent) is token:
                await limiter.acquire_on_behalf_of(token)
                token.held = True
            await self.unpark(parent)

    # the whole run --------------------------------------------------------------------------
    @asynccontextmanager
    async def working(self) -> AsyncIterator[TaskGroup]:
        """The run's pool at work for the block; executor objects (a Dask cluster...) are closed,
        and given-back leases deleted, at its end, whatever happens."""
        try:
            async with self.pool.open() as tg:
                self.leases.tg = tg  # object-store leases are renewed and deleted in the background there
                yield tg
        except BaseExceptionGroup as group:  # Ctrl-C (trio delivers it inside the task group): plainly
            if group.subgroup(KeyboardInterrupt) is not None:
                raise KeyboardInterrupt from None
            raise
        finally:
            with anyio.CancelScope(shield=True):
                for executor in self.executors:
                    await executor.close()
                await self.leases.drop()

    async def execute(self, roots: list[Node]) -> list[NodeState]:
        """Plan and run `roots`; returns their states (failures are recorded, not raised).

        Run from inside a task body (a workflow run by a body), the body waits for these roots:
        a node of this run waiting for that body's node is a cycle, found like any other."""
        states = await self.plan(roots)  # errors here (missing inputs, cycles) come before any body
        fault("after_plan", ",".join(st.node.id for st in states[:3]))
        waiting = [s for s in states if s.status not in FINISHED]
        frame = _context.current.get()
        body = frame.state if frame is not None and frame.run is not self else None
        async with self.working():
            if waiting:
                event = self.new_event()
                wait_on(waiting, len(waiting), event)
                if frame is not None and body is not None and body.status == RUNNING:
                    async with frame.run.awaiting(body, waiting):  # the body gives its slot back meanwhile
                        await event.wait()
                else:
                    await event.wait()
        for s in self.states.values():
            if s.status not in FINISHED:
                s.status = Status.CANCELLED
        return states


_THREADS: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("asyncflow_threads")


_CARRIER: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("asyncflow_thread_carrier")


def _thread_carrier() -> anyio.CapacityLimiter:
    """The limiter anyio's thread calls for bodies go through: never the bound itself (the thread
    limiter's tokens are), and not the host's default one either."""
    try:
        return _CARRIER.get()
    except LookupError:
        carrier = anyio.CapacityLimiter(10_000)
        _CARRIER.set(carrier)
        return carrier


def _thread_limiter(size: int) -> anyio.CapacityLimiter:
    """The limiter of thread bodies on this event loop, shared by every run (`max_threads`)."""
    try:
        limiter = _THREADS.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(size)
        _THREADS.set(limiter)
    if limiter.total_tokens != size:
        limiter.total_tokens = size  # the latest setting wins
    return limiter
