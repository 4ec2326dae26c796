"""One run: plan what must run (one listing per task folder, fingerprints decided), run it on the
pool (`_pool`), resolve dynamic dependencies, record what each target was built from.

Nodes are also de-duplicated across concurrent runs in one event loop ("flights"): a node that
another run is executing on the same store is awaited, not run twice.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import structlog

from . import events as ev
from ._errors import AsyncflowError, CycleError, MissingInputError, ParameterError, TaskFailed, describe, root_cause
from ._faults import fault
from ._fingerprint import (
    Record,
    RecordName,
    code_hash,
    decide,
    inputs_fingerprint,
    output_hash,
    own_fingerprint,
    parse_record,
    reasons,
    record_name,
    split_names,
)
from ._graph import (
    CANCELLED,
    COMPLETE,
    DONE,
    FAILED,
    FINISHED,
    MISSING,
    NEW,
    OK,
    PENDING,
    TODO,
    UNSET,
    UPSTREAM_FAILED,
    Join,
    NodeState,
    cycle_error,
    find_wait_cycle,
    post_order,
)
from ._identity import _enc_hook
from ._node import Node, has_nodes, iter_nodes, replace_nodes
from ._pool import Pool
from ._settings import settings
from ._store import Store, store_for_path
from ._targets import Target, store_of
from ._task import EXTERNAL, REGISTRY

log = structlog.get_logger("asyncflow")

_FLIGHTS: anyio.lowlevel.RunVar[dict[Any, _Flight]] = anyio.lowlevel.RunVar("asyncflow_flights")


class _Flight:
    """A node being executed by some run of this event loop; others wait instead of re-running."""

    __slots__ = ("done", "error", "ok", "out_hash", "output", "run", "scope", "waiters")

    def __init__(self, run: Run) -> None:
        self.run = run
        self.done: anyio.Event | None = None  # made by the first waiter
        self.ok = False
        self.error: BaseException | None = None
        self.output: Any = None
        self.out_hash: str | None = None
        self.waiters = 0  # other runs waiting for it: while there are any, it is shielded
        self.scope: anyio.CancelScope | None = None


def _flights() -> dict[Any, _Flight]:
    try:
        return _FLIGHTS.get()
    except LookupError:
        table: dict[Any, _Flight] = {}
        _FLIGHTS.set(table)
        return table


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


_NO_EVENTS: list[Any] = []
_NOT_PERSISTED = ("not persisted",)


def _join(states: list[NodeState], event: anyio.Event) -> Join:
    """A Join whose `event` is set once all of `states` have finished."""
    join = Join(len(states), event)
    for s in states:
        if s.joins is None:
            s.joins = [join]
        else:
            s.joins.append(join)
    return join


class Run(Pool):
    """Executes nodes for one `Workflow.run()` (or `preview()`, which only plans)."""

    def __init__(
        self,
        *,
        store: str | None,
        storage_options: dict[str, Any] | None,
        max_concurrency: int,
        limits: dict[str, int],
        check_dependencies: bool,
        rerun_stale: bool,
        fail_fast: bool,
        on_event: Any,
        force: set[str],
        force_all: bool,
    ) -> None:
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ParameterError(f"max_concurrency must be a positive int, got {max_concurrency!r}")
        self.store_url = store
        self.storage_options = storage_options
        self.max_concurrency = max_concurrency
        self.check_dependencies = check_dependencies
        self.rerun_stale = rerun_stale
        self.fail_fast = fail_fast
        self.on_event = on_event
        self.force = force
        self.force_all = force_all
        self.log_enabled_info = settings.log_enabled(20)
        self.log_enabled_warning = settings.log_enabled(30)
        Pool.__init__(self, max_concurrency, limits)
        self.states: dict[bytes, NodeState] = {}  # by node key: bytes hash in C, cached
        self._stores: dict[Any, Store] = {}
        self.flights: dict[Any, _Flight] = {}
        self.listings: dict[tuple[Any, str], set[str] | anyio.Event] = {}
        self.listed_at: dict[tuple[Any, str], int] = {}  # the store's generation when listed
        self.warned: set[NodeState] = set()  # records already warned about
        self.checked: set[Any] = set()  # stores found usable in this run
        self.executors: set[Any] = set()  # executor objects (Dask...) to close when the run ends
        self.records: dict[tuple[Any, str], dict[str, RecordName]] = {}  # fingerprint records, by target
        self.dynamic: dict[Node, list[Node]] = {}
        self.failures: list[NodeState] = []
        self.started = time.time()
        self.thread_limiter: anyio.CapacityLimiter | None = None

    def state(self, node: Node) -> NodeState:
        """The node's state in this run."""
        return self.states[node._key]

    # stores and targets --------------------------------------------------------------------
    def store_of(self, node: Node) -> Store:
        store = self._stores.get(node.task)
        if store is None:
            store = self._stores[node.task] = store_of(node, self.store_url, self.storage_options)
        return store

    def target_of(self, node: Node) -> Target | None:
        return Target(node, self.store_of(node)) if node.task.persist else None

    # events ---------------------------------------------------------------------------------
    async def emit(self, event: Any) -> None:
        result = self.on_event(event)
        if hasattr(result, "__await__"):
            await result

    def node_event(self, cls: Any, st: NodeState, **fields: Any) -> Any:
        import msgspec

        from ._identity import _enc_hook

        params = msgspec.to_builtins(st.node.params, enc_hook=_enc_hook)
        return cls(node_id=st.node.id, task=st.node.task.name, params=params, timestamp=time.time(), **fields)

    # planning -------------------------------------------------------------------------------
    def _is_forced(self, node: Node) -> bool:
        return self.force_all or node.task.name in self.force

    async def _existence(self, new: list[NodeState]) -> None:
        """Fill `exists` for new states: one listing per task folder, a check per external."""
        folders: dict[tuple[Any, str], tuple[Store, str]] = {}
        externals: list[NodeState] = []
        by_task: dict[Any, list[NodeState]] = {}
        for st in new:
            task = st.node.task
            if task is EXTERNAL:
                externals.append(st)
            elif task.persist:
                group = by_task.get(task)
                if group is None:
                    by_task[task] = [st]
                else:
                    group.append(st)
        groups = []
        for task, sts in by_task.items():
            store = self.store_of(sts[0].node)
            folder = store.join(task.name)
            k = (store.key, folder)
            folders[k] = (store, folder)
            groups.append((k, "." + task.format.ext, sts))
        for store, _ in folders.values():
            if store.key not in self.checked:
                self.checked.add(store.key)
                await store.check()  # a missing bucket or a refused login fails here, before any body
        todo = [k for k in folders if k not in self.listings]
        waits = [v for k in folders if isinstance(v := self.listings.get(k), anyio.Event)]
        if todo or externals:
            for k in todo:
                self.listings[k] = self.new_event()

            async def list_one(k: tuple[Any, str]) -> None:
                store, folder = folders[k]
                done = self.listings[k]
                try:
                    generation = store.generation.get(folder, 0)
                    names, self.records[k] = await store.listdir(folder, split_names)
                    self.listings[k] = names
                    self.listed_at[k] = generation
                except BaseException:
                    del self.listings[k]
                    raise
                finally:
                    assert isinstance(done, anyio.Event)
                    done.set()

            async def check_external(st: NodeState) -> None:
                url = st.node.params["url"]
                store, path = store_for_path(url)
                paths = await store.glob(path) if any(c in url for c in "*?[") else [path]
                sums = [await store.checksum(p) for p in paths]
                found = [(p, c) for p, c in zip(paths, sums, strict=True) if c is not None]
                st.exists = bool(found)
                st.output = [store.display(p) for p, _ in found] if len(paths) != 1 or path != paths[0] else url
                st.out_hash = output_hash(repr(found).encode()) if found else None

            if len(todo) + len(externals) == 1:
                await (list_one(todo[0]) if todo else check_external(externals[0]))
            else:
                async with anyio.create_task_group() as tg:
                    for k in todo:
                        tg.start_soon(list_one, k)
                    for st in externals:
                        tg.start_soon(check_external, st)
        for w in waits:
            await w.wait()
        for k, ext, sts in groups:
            listing = self.listings.get(k)
            if isinstance(listing, set) and listing:
                records = self.records.get(k, {})
                for st in sts:
                    name = st.node.file_stem() + ext
                    if name in listing:
                        st.exists = True
                        st.record = records.get(name)

    async def plan_one(self, node: Node) -> NodeState:
        """`plan([node])`, with a shortcut for the common streamed case (an in-memory node with no
        upstream: nothing to list or decide) that keeps `af.map` at a few µs an item."""
        task = node.task
        if task.persist or node.deps or task is EXTERNAL or node._key in self.states:
            return (await self.plan([node]))[0]
        st = NodeState(node)
        st.status = PENDING
        st.reasons = _NOT_PERSISTED
        self.states[node._key] = st
        if task.limit is not None:
            self._check_limit(st)
        self._queue(st)
        return st

    async def plan(self, roots: list[Node]) -> list[NodeState]:
        """Bring `roots` and their static upstream into the run; queue what must run."""
        new = await self.survey(roots)
        return await self._activate([self.states[n._key] for n in roots], new)

    async def survey(self, roots: list[Node], children: dict[Node, list[Node]] | None = None) -> list[NodeState]:
        """Add `roots` and their upstream (plus known dynamic `children`, shown by previews) as
        states, each marked COMPLETE, MISSING or TODO (STALE flagged) from one listing per task
        folder. Recorded dynamic children of current-looking nodes count as their upstream.
        Returns the new states."""
        batch = self.new_event()
        new: list[NodeState] = []
        waits: set[anyio.Event] = set()
        adopted: list[tuple[NodeState, list[Node]]] = []
        try:
            todo = list(roots)
            while todo:
                added = self._walk(todo, batch, new, waits, children)
                await self._existence(added)
                todo = []
                for st, kids in await self._recorded_children(added):
                    adopted.append((st, kids))
                    todo.extend(kids)
            for st, kids in adopted:
                st.deps = [*st.deps, *(self.states[k._key] for k in kids)]
            for w in waits:
                await w.wait()
            with _gc_paused():
                order = post_order(new, set(new)) if adopted else new  # walks are upstream first
                forced = None if self.force_all else self.force
                decide(order, self.check_dependencies, self.rerun_stale, forced, EXTERNAL)
            for st in new:
                if st.exists and st.record is None and st.stale and st not in self.warned:
                    t = self.target_of(st.node)
                    log.warning("target without fingerprint record: rebuilding", path=t.path if t else "")
        except BaseException:
            for st in new:
                self.states.pop(st.node._key, None)
            raise
        finally:
            batch.set()
        return new

    def _walk(
        self,
        roots: list[Node],
        batch: anyio.Event,
        new: list[NodeState],
        waits: set[anyio.Event],
        children: dict[Node, list[Node]] | None,
    ) -> list[NodeState]:
        """New states for `roots` and their static upstream, upstream first (synchronous)."""
        states = self.states
        added: list[NodeState] = []
        stack: list[Any] = list(reversed(roots))  # a node, or a state whose upstream is done
        with _gc_paused():
            while stack:
                node = stack.pop()
                if type(node) is NodeState:
                    added.append(node)
                    continue
                st = states.get(node._key)
                if st is not None:
                    if st.status == NEW and st.batch is not batch:
                        waits.add(st.batch)
                    continue
                st = NodeState(node, batch)
                states[node._key] = st
                stack.append(st)
                if node.task is not EXTERNAL:
                    stack.extend(node.deps)
                if children and node in children:
                    stack.extend(children[node])
            for st in added:
                deps = st.node.deps
                if deps:
                    st.deps = [states[d._key] for d in deps]
        new.extend(added)
        return added

    async def _recorded_children(self, states: list[NodeState]) -> list[tuple[NodeState, list[Node]]]:
        """The dynamic children recorded by current-looking nodes: a child that changed makes its
        parent pending, and an unchanged child keeps it complete."""
        candidates = [
            st
            for st in states
            if st.record is not None
            and st.record.has_children
            and not self._is_forced(st.node)
            and st.record.own == own_fingerprint(st.node)
        ]
        out = []
        for st in candidates:
            record = await self.read_record(st)
            if record is None:
                continue
            kids = []
            for name, params in record.children:
                task = REGISTRY.get(name)
                if task is None:
                    continue
                try:
                    kids.append(task.bind((), dict(params), strict=False))
                except AsyncflowError:
                    continue  # the child's task changed its parameters: the parent is stale anyway
            out.append((st, kids))
        return out

    async def explain(self, st: NodeState) -> list[str]:
        """Why a surveyed node would run, in words (reads the record of a stale node)."""
        if not st.stale or st.record is None:
            return list(st.reasons or ())
        record = await self.read_record(st)
        current = {d.node.id: d.out_hash for d in st.deps if d.out_hash is not None}
        return reasons(st.node, record, current, st.record.own == own_fingerprint(st.node))

    async def read_record(self, st: NodeState) -> Record | None:
        """The record beside a node's target; None (and one warning naming the path) if it is
        missing or unreadable, so that the node is rebuilt rather than trusted."""
        target = self.target_of(st.node)
        if target is None or st.record is None:
            return None
        path = f"{target.folder}/{st.record.name}"
        try:
            return msgspec.json.decode(await target.store.read(path), type=Record)
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError) as e:
            log.warning("unreadable fingerprint record: rebuilding", path=target.store.display(path), error=str(e))
            self.warned.add(st)
            st.record = None
            return None

    async def _activate(self, roots: list[NodeState], new: list[NodeState]) -> list[NodeState]:
        """Walk from `roots` through what must run; wire upstream counters; queue ready nodes."""
        missing: list[NodeState] = []
        needed_by: list[str] = []
        to_queue: list[NodeState] = []
        skipped: list[NodeState] = []
        seen: set[NodeState] = set()
        fresh = set(new)
        stack = [st for st in roots if st.status == TODO]
        for st in roots:
            if st.status == MISSING:
                missing.append(st)
            elif st.status == COMPLETE and st in fresh:
                skipped.append(st)
        seen.update(stack)
        while stack:
            st = stack.pop()
            st.status = PENDING
            for d in st.deps:
                if d.status == TODO:
                    if d not in seen:
                        seen.add(d)
                        stack.append(d)
                elif d.status == MISSING:
                    missing.append(d)
                    needed_by.append(st.node.id)
                    continue
                elif d.status == COMPLETE:
                    if d in fresh and d not in seen:
                        seen.add(d)
                        skipped.append(d)
                    continue
                if d.status not in FINISHED:
                    st.npending += 1
                    if d.dependants is None:
                        d.dependants = [st]
                    else:
                        d.dependants.append(st)
            to_queue.append(st)
        root_set = set(roots)
        for st in new:  # planned but not needed (upstream of complete nodes): forget them
            if st not in seen and (st.status == TODO or (st.status == COMPLETE and st not in root_set)):
                del self.states[st.node._key]
        if missing:
            for st in to_queue:
                del self.states[st.node._key]
            for st in missing:
                self.states.pop(st.node._key, None)
            raise MissingInputError(sorted({str(st.node.params["url"]) for st in missing}), sorted(set(needed_by)))
        checked: set[Any] = set()
        for st in to_queue:
            task = st.node.task
            if task.limit is not None and task not in checked:
                checked.add(task)
                self._check_limit(st)
        if self.on_event is not None:
            for st in skipped:
                await self.emit(self.node_event(ev.TaskSkipped, st, reason="complete"))
        for st in to_queue:
            if st.deps:
                failed = next((d for d in st.deps if d.status in (FAILED, UPSTREAM_FAILED, CANCELLED)), None)
                if failed is not None:
                    await self.finish(st, UPSTREAM_FAILED, failed.error)
                    continue
            if st.npending == 0 and st.status == PENDING:
                self._queue(st)
        return roots

    def listing_is_stale(self, target: Target) -> bool:
        """Whether others in this process wrote or deleted in the folder since this run listed it."""
        k = (target.store.key, target.folder)
        return k in self.listed_at and target.store.generation.get(target.folder, 0) != self.listed_at[k]

    def out_hash_of(self, st: NodeState) -> str:
        """The hash of a finished node's output (computed for in-memory outputs when asked)."""
        if st.out_hash is None:
            try:
                st.out_hash = output_hash(msgspec.msgpack.encode(st.output))
            except (TypeError, ValueError):  # not encodable: treat as changed every time
                st.out_hash = output_hash(repr(time.perf_counter_ns()).encode())
        return st.out_hash

    def _inputs(self, st: NodeState, deps: list[NodeState]) -> list[tuple[bytes, str]]:
        return [(d.node.key, self.out_hash_of(d)) for d in deps]

    async def unchanged_inputs(self, st: NodeState) -> bool:
        """For a node pending only on its upstream: whether its inputs came out as recorded."""
        if st.record is None or any(d.status not in OK for d in st.deps):
            return False
        if st.record.inputs_fp != inputs_fingerprint(self._inputs(st, list(st.deps))):
            st.stale = True
            st.reasons = ("input changed",)
            return False
        st.out_hash = st.record.output
        return True

    async def drop_record(self, st: NodeState, target: Target) -> None:
        """Before someone else (a Dask worker) rewrites a target: its old record goes first, so a
        crash in between leaves a target without a record (rebuilt), never a trusted stale one."""
        k = (target.store.key, target.folder)
        old = self.records.get(k, {}).get(target.name) or st.record
        if old is not None:
            await target.store.delete([f"{target.folder}/{old.name}"])
            self.records.get(k, {}).pop(target.name, None)
            st.record = None

    async def built_elsewhere(self, st: NodeState, target: Target) -> bool:
        """Whether another run of this process built this node, current (same fingerprint as it
        would have now), since this run decided it had to (re-listing the folder if others wrote
        in it since this run listed it)."""
        k = (target.store.key, target.folder)
        if self.listing_is_stale(target):
            generation = target.store.generation.get(target.folder, 0)
            names, self.records[k] = await target.store.listdir(target.folder, split_names)
            self.listings[k] = names
            self.listed_at[k] = generation
        else:
            names = self.listings.get(k)  # type: ignore[assignment]
            if st.exists or not isinstance(names, set):
                return False  # decided from this very listing
        record = self.records.get(k, {}).get(target.name)
        if target.name not in names or record is None or record.own != own_fingerprint(st.node):
            return False
        if self.check_dependencies and record.inputs_fp != inputs_fingerprint(self._inputs(st, list(st.deps))):
            return False
        st.record = record
        st.out_hash = record.output
        return True

    async def publish(self, st: NodeState, target: Target, data: bytes | None, out_hash: str | None = None) -> None:
        """Write the target and its fingerprint record (what it was built from). With `data` None
        the target is already written (by a Dask worker) and `out_hash` is its output's hash."""
        node = st.node
        inputs = list(st.deps[: len(node.deps)])  # static upstream (recorded children come after)
        kids = [self.states[c._key] for c in self.dynamic.get(node, ()) if c._key in self.states]
        inputs.extend(k for k in kids if k.status in OK)
        pairs = self._inputs(st, inputs)
        st.out_hash = output_hash(data) if data is not None else out_hash
        own = own_fingerprint(node)
        inputs_fp = inputs_fingerprint(pairs)
        children = [
            (k.node.task.name, k.node.params)
            for k in kids
            if k.node.task is not EXTERNAL and not any(has_nodes(v) for v in k.node.params.values())
        ]
        record = Record(
            node_id=node.id,
            own=own,
            inputs_fp=inputs_fp,
            output=st.out_hash,
            code=code_hash(node.task),
            version=node.task.version,
            inputs={d.node.id: h for d, (_, h) in zip(inputs, pairs, strict=True)},
            children=children,
            built=time.time(),
        )
        name = record_name(target.name, own, inputs_fp, st.out_hash, bool(children))  # type: ignore[arg-type]
        k = (target.store.key, target.folder)
        old = self.records.get(k, {}).get(target.name) or st.record
        old_path = f"{target.folder}/{old.name}" if old is not None and old.name != name else None
        record_bytes = msgspec.json.encode(record, enc_hook=_enc_hook)
        if data is not None:
            await target.store.publish(target.fs_path, data, f"{target.folder}/{name}", record_bytes, old_path)
        else:
            await target.store.write(f"{target.folder}/{name}", record_bytes)
        listing = self.listings.get(k)
        if isinstance(listing, set):  # keep this run's snapshot current
            listing.add(target.name)
            self.records.setdefault(k, {})[target.name] = parse_record(name)  # type: ignore[assignment]
            self.listed_at[k] = self.listed_at.get(k, 0) + 1

    # the pool -------------------------------------------------------------------------------
    async def finish(self, st: NodeState, status: str, error: BaseException | None = None) -> None:
        """Record the end of a node, release what waited for it, and emit the events."""
        for event in self.settle(st, status, error):
            await self.emit(event)

    def settle(self, st: NodeState, status: str, error: BaseException | None = None) -> list[Any]:
        """`finish` without emitting: returns the events to emit (none without `on_event`)."""
        if status == DONE and st.status not in FINISHED and st.dependants is None and st.joins is None:
            st.status = DONE  # the common leaf case, nothing waits on it by name
            return _NO_EVENTS
        out: list[Any] = []
        todo = [(st, status, error)]
        while todo:
            s, s_status, s_error = todo.pop()
            if s.status in FINISHED:
                continue
            s.status = s_status
            s.error = s_error
            if s_status != DONE:
                if s_status == FAILED:
                    self.failures.append(s)
                if self.on_event is not None:
                    out.append(self._end_event(s, s_status, s_error))
            dependants, s.dependants = s.dependants, None
            for d in dependants or ():
                if s_status in OK:
                    d.npending -= 1
                    if d.npending == 0 and d.status == PENDING:
                        self._queue(d)
                elif d.status not in FINISHED:
                    todo.append((d, UPSTREAM_FAILED, s_error))
            joins, s.joins = s.joins, None
            for j in joins or ():
                j.remaining -= 1
                if j.remaining == 0:
                    j.event.set()
        if status == FAILED and self.fail_fast and self.tg is not None:
            self.tg.cancel_scope.cancel()
        return out

    def _end_event(self, s: NodeState, status: str, error: BaseException | None) -> Any:
        if status == FAILED:
            cause = root_cause(error) if error else None
            return self.node_event(
                ev.TaskFailed,
                s,
                error=describe(error) if error else "",
                error_type=type(cause).__name__,
                duration=s.duration,
            )
        if status == UPSTREAM_FAILED:
            return self.node_event(ev.TaskSkipped, s, reason="upstream failed")
        return self.node_event(ev.TaskSkipped, s, reason=status)

    # outputs --------------------------------------------------------------------------------
    async def output_of(self, st: NodeState) -> Any:
        """A finished node's output: in memory, or read back from its target."""
        if st.output is UNSET:
            t = self.target_of(st.node)
            if t is None:
                raise RuntimeError(f"{st.node.id} has no output in this run")  # pragma: no cover
            st.output = await t.load()
        return st.output

    async def load_outputs(self, states: list[NodeState]) -> None:
        """Load several outputs at once (their reads are batched by the store)."""
        todo = [s for s in states if s.output is UNSET]
        if len(todo) == 1:
            await self.output_of(todo[0])
        elif todo:
            async with anyio.create_task_group() as tg:
                for s in todo:
                    tg.start_soon(self.output_of, s)

    # dynamic dependencies -------------------------------------------------------------------
    async def resolve(self, value: Any, parent: NodeState | None) -> Any:
        """Run the nodes inside `value` from a body and return `value` with their outputs."""
        nodes = list(dict.fromkeys(iter_nodes(value)))
        if not nodes:
            return value
        if parent is not None:
            self.dynamic.setdefault(parent.node, [])
            known = self.dynamic[parent.node]
            seen = set(known)
            known.extend(n for n in nodes if n not in seen)
        states = await self.plan(nodes)
        waiting = [s for s in states if s.status not in FINISHED]
        if waiting:
            if parent is not None:
                for s in waiting:
                    path = find_wait_cycle(parent, s)
                    if path is not None:
                        raise cycle_error(path)
            join = _join(waiting, self.new_event())
            if parent is not None:
                if parent.awaiting is None:
                    parent.awaiting = set()
                parent.awaiting.update(waiting)
                await self.park(parent)
                try:
                    await join.event.wait()
                finally:
                    parent.awaiting.difference_update(waiting)
                    await self.unpark(parent)
            else:
                await join.event.wait()
        failed = [s for s in states if s.status not in OK]
        if failed:
            for s in failed:
                s.delivered = True
            s = failed[0]
            if isinstance(s.error, CycleError):
                raise s.error
            raise TaskFailed(s.node.id, s.error or RuntimeError(f"{s.node.id} was {s.status}"))
        await self.load_outputs(states)
        by_node = {s.node: s.output for s in states}
        return replace_nodes(value, by_node.__getitem__)

    # the whole run --------------------------------------------------------------------------
    def prepare(self) -> None:
        """Per-event-loop resources, made when the run starts."""
        self.thread_limiter = anyio.CapacityLimiter(self.max_concurrency)
        self.flights = _flights()

    async def wait_any(self, states: list[NodeState], parent: NodeState | None) -> None:
        """Wait until one of `states` has finished (a waiting body gives its slot back)."""
        if any(s.status in FINISHED for s in states):
            return
        join = Join(1, self.new_event())
        for s in states:
            if s.joins is None:
                s.joins = [join]
            else:
                s.joins.append(join)
        if parent is None:
            await join.event.wait()
            return
        await self.park(parent)
        try:
            await join.event.wait()
        finally:
            await self.unpark(parent)

    async def execute(self, roots: list[Node]) -> list[NodeState]:
        """Plan and run `roots`; returns their states (failures are recorded, not raised)."""
        self.prepare()
        states = await self.plan(roots)  # errors here (missing inputs, cycles) come before any body
        fault("after_plan", ",".join(st.node.id for st in states[:3]))
        waiting = [s for s in states if s.status not in FINISHED]
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                self._dispatch()
                if waiting:
                    await _join(waiting, self.new_event()).event.wait()
                self.close()
        finally:
            for executor in self.executors:  # e.g. a LocalCluster lives as long as its run
                with anyio.CancelScope(shield=True):
                    await executor.close()
        for s in self.states.values():
            if s.status not in FINISHED:
                s.status = CANCELLED
        return states
