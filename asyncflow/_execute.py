"""Executing one node: inputs, the body (async, generator, thread or process), retries, timeout,
returned / yielded nodes, atomic publication, events and per-node log context.

It works against `Running`, the few things a run offers it, and de-duplicates nodes across the
runs of an event loop ("flights"): a node that another run is executing on the same store is
awaited, not run twice.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import sniffio
import structlog

from . import _context
from . import events as ev
from ._dask import Published
from ._errors import CycleError, MissingInputError, ParameterError, SerializationError, TaskFailed, describe
from ._faults import fault
from ._graph import COMPLETE, DONE, FAILED, OK, RUNNING, UNSET, NodeState, Status, cycle_error, find_wait_cycle
from ._inventory import others_published
from ._log import log
from ._node import has_nodes, replace_nodes
from ._params import check_parts

if TYPE_CHECKING:
    from ._emitter import Emitter
    from ._inventory import Inventory
    from ._leases import Lease, RunLeases
    from ._store import Store
    from ._targets import Target


bind_log_context = structlog.contextvars.bind_contextvars

sleep: Callable[[float], Awaitable[None]] = anyio.sleep
"""Waits between tries; `asyncflow.testing.instant_retries()` replaces it (no wall-clock waits)."""

_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})

_NOT_RETRIED = (CycleError, MissingInputError, ParameterError, SerializationError)


class Running(Protocol):
    """What a run offers the execution of its nodes."""

    flights: dict[Any, Flight]
    inventory: Inventory
    emitter: Emitter
    log_info: bool
    log_warning: bool
    executors: set[Any]
    thread_limiter: anyio.CapacityLimiter | None
    thread_carrier: anyio.CapacityLimiter
    thread_tokens: dict[NodeState, ThreadToken]
    leases: RunLeases

    def store_of(self, node: Any) -> Store: ...
    def target_of(self, node: Any) -> Target | None: ...
    async def park(self, st: NodeState) -> None: ...
    async def unpark(self, st: NodeState) -> None: ...
    async def begin_publish(self, st: NodeState) -> None: ...
    def end_publish(self) -> None: ...
    async def finish(self, st: NodeState, status: Status, error: BaseException | None = None) -> None: ...
    def settle(
        self, st: NodeState, status: Status, error: BaseException | None = None, last: bool = False
    ) -> list[Any]: ...
    async def load_outputs(self, states: Any) -> None: ...
    async def resolve(self, value: Any, parent: NodeState | None) -> Any: ...
    def awaiting(self, parent: Any, states: Any) -> AbstractAsyncContextManager[None]: ...
    async def publish(self, st: NodeState, target: Target, data: bytes | None, out_hash: str | None = None) -> None: ...


class Flight:
    """A node being executed by some run of this event loop; others wait instead of re-running.

    `state` is the executing run's state of the node: a waiter in another run waits for it, which
    is how a cycle across runs (or through a workflow run inside a body) is found.
    """

    __slots__ = ("done", "error", "ok", "out_hash", "output", "state")

    def __init__(self, state: NodeState) -> None:
        self.state = state
        self.done: anyio.Event | None = None  # made by the first waiter
        self.ok = False
        self.error: BaseException | None = None
        self.output: Any = None
        self.out_hash: str | None = None


_FLIGHTS: anyio.lowlevel.RunVar[dict[Any, Flight]] = anyio.lowlevel.RunVar("asyncflow_flights")


def flights() -> dict[Any, Flight]:
    """The nodes in flight on this event loop, by (store key, node key)."""
    try:
        return _FLIGHTS.get()
    except LookupError:
        table: dict[Any, Flight] = {}
        _FLIGHTS.set(table)
        return table


async def execute(run: Running, st: NodeState) -> None:
    """Run one ready node to the end: DONE with its output published, or FAILED."""
    node = st.node
    table = run.flights
    key = (run.store_of(node).key, node.key)
    other = table.get(key)
    if other is not None and await _share(run, st, key, other):
        return
    flight = table[key] = Flight(st)
    try:
        await _execute(run, st)
        if st.status in OK:
            flight.ok = True
            flight.output = st.output
            flight.out_hash = st.out_hash
        else:
            flight.error = st.error
    finally:
        del table[key]
        if flight.done is not None:
            flight.done.set()


async def _share(run: Running, st: NodeState, key: Any, other: Flight) -> bool:
    """Another run of this loop executes the same node on the same store: wait and share its
    result. False when that run was cancelled and nobody else took over: run it here (a run's
    cancellation is never held up by others waiting for its nodes, nor does it fail them)."""
    while other is not None:
        st.awaiting = {other.state}
        path = find_wait_cycle(st, other.state)
        if path is not None:  # the owner (transitively) waits for this very state
            st.awaiting = None
            await run.finish(st, FAILED, cycle_error(path))
            return True
        if other.done is None:
            other.done = anyio.Event()
        await run.park(st)
        try:
            await other.done.wait()
        finally:
            st.awaiting = None
            await run.unpark(st)
        if other.ok:
            st.output = other.output
            st.out_hash = other.out_hash
            await run.finish(st, DONE)
            return True
        if other.error is not None:
            await run.finish(st, FAILED, other.error)
            return True
        other = run.flights.get(key)  # type: ignore[assignment]
    return False


def passes_through(e: BaseException) -> bool:
    """Cancellation of this task and Ctrl-C pass through a body's handler; any other exception
    (SystemExit, GeneratorExit and custom BaseExceptions included) is the body's failure. On
    asyncio, a CancelledError a body raises while nobody cancels its task (it awaited a future that
    something else cancelled) is the body's failure too, not the run's cancellation."""
    if isinstance(e, KeyboardInterrupt):
        return True
    if not isinstance(e, anyio.get_cancelled_exc_class()):
        return False
    if sniffio.current_async_library() == "asyncio":
        import asyncio

        task = asyncio.current_task()
        return task is None or task.cancelling() > 0
    return True


async def _execute(run: Running, st: NodeState) -> None:
    node = st.node
    task = node.task
    st.status = RUNNING
    st.started = time.time()
    t0 = time.perf_counter()
    lease: Lease | None = None
    try:
        target = run.target_of(node) if task.persist else None
        if target is not None and not st.forced:
            if st.maybe and run.inventory.unchanged_inputs(st):
                await run.finish(st, COMPLETE)  # upstream rebuilt to the same bytes: early cut-off
                return
            if await run.inventory.built_elsewhere(st, target):
                await run.finish(st, COMPLETE)  # another run of this process built it meanwhile
                return
        if target is not None and run.leases.enabled:

            async def built() -> bool:
                return not st.forced and await run.inventory.built_elsewhere(st, target, anyone=True)

            lease = await run.leases.take(target, built)
            if lease is not None and (lease.elsewhere or (await _maybe_built(run, lease, target) and await built())):
                await run.finish(st, COMPLETE)  # another process built it (its lease kept us waiting)
                return
        deps = st.deps
        if deps:
            if any(d.output is UNSET for d in deps):  # (in memory already: no coroutine)
                await run.load_outputs(deps)
            outputs = {d.node: d.output for d in deps}
            kwargs = {k: replace_nodes(v, outputs.__getitem__) for k, v in node.args.items()}
        else:
            kwargs = node.args
        if task.retries or task.timeout is not None:
            value = await _call_with_retries(run, st, kwargs)
        else:
            st.attempts = 1
            if run.emitter.callback is not None and (told := run.emitter.node_now(ev.TaskStarted, st, attempt=1)):
                await told
            if task.kind == "async" and task.executor == "async":  # the hot path: one try of a coroutine
                _enter(run, st)
                value = await task.fn(**kwargs)
            else:
                value = await _call(run, st, kwargs)
        if type(value) not in _PLAIN and has_nodes(value):
            value = await run.resolve(value, st)  # Flyte-style: returned nodes run, outputs take their place
        if task.outputs is not None and not isinstance(value, Published):  # (a worker's format checked its parts)
            check_parts(task, value)  # a dict of exactly its declared parts
        if isinstance(value, Published):  # a worker wrote the target: only its record is left
            await run.publish(st, target, None, value.out_hash)  # type: ignore[arg-type]
            value = UNSET  # read back from the target when someone needs it
        elif target is not None:
            data, value = target.publishable(value)  # downstream gets what a later run reads
            await run.begin_publish(st)
            try:
                fault("before_publish", node.id)
                await run.publish(st, target, data)
                fault("after_publish", node.id)
            finally:
                run.end_publish()
    except BaseException as e:
        if passes_through(e):
            raise
        st.duration = time.perf_counter() - t0
        if run.log_warning:
            log().warning("task failed", node_id=node.id, error=describe(e))
        await run.finish(st, FAILED, e)
        return
    finally:
        if lease is not None:
            run.leases.give_back(lease)
    st.output = value
    st.duration = time.perf_counter() - t0
    if run.emitter.callback is not None and (told := run.emitter.node_now(ev.TaskSucceeded, st, duration=st.duration)):
        await told
    if run.log_info:
        log().info("task succeeded", node_id=node.id, duration=round(st.duration, 6))
    run.settle(st, DONE, last=True)  # nothing awaited from here to the worker taking its next node


async def _maybe_built(run: Running, lease: Lease, target: Target) -> bool:
    """Whether to look at the target again once its lease is held: always locally (a cheap stat);
    on object stores only if another process wrote records in the folder since this run looked
    (one listing for the folder instead of a request per node)."""
    return lease.fd >= 0 or await others_published(run.inventory, target)


async def _call_with_retries(run: Running, st: NodeState, kwargs: dict[str, Any]) -> Any:
    task = st.node.task
    delay = task.retry_delay
    while True:
        st.attempts += 1
        if run.emitter.callback is not None:
            await run.emitter.node(ev.TaskStarted, st, attempt=st.attempts)
        try:
            if task.timeout is None:
                return await _call(run, st, kwargs)
            try:
                with anyio.fail_after(task.timeout):
                    return await _call(run, st, kwargs)
            except TimeoutError as e:
                raise TimeoutError(f"{st.node.id} timed out after {task.timeout:g}s (try {st.attempts})") from e
        except _NOT_RETRIED:
            raise
        except Exception as e:
            if st.attempts > task.retries:
                raise
            if run.emitter.callback is not None:
                await run.emitter.node(ev.TaskRetrying, st, attempt=st.attempts, delay=delay, error=describe(e))
            if run.log_warning:
                log().warning("task retrying", node_id=st.node.id, attempt=st.attempts, delay=delay, error=describe(e))
            await sleep(delay)
            delay *= 2


def _enter(run: Running, st: NodeState) -> None:
    """Make `await node` in the body reach this run, and bind the node id for log lines.

    Both stay set after the body: they live in this worker's own context, and its next node
    replaces them (cheaper than resetting, on the hot path).
    """
    _context.current.set(_context.Frame(run, st))
    bind_log_context(node_id=run.emitter.id_of(st) if run.emitter.callback is not None else st.node.make_id())
    if run.log_info:
        log().info("task started", attempt=st.attempts)


async def _call(run: Running, st: NodeState, kwargs: dict[str, Any]) -> Any:
    """One try of the body."""
    task = st.node.task
    _enter(run, st)
    executor = task.executor
    if not isinstance(executor, str):  # an executor object: Dask...
        if executor not in run.executors:  # this run uses it (and closes it when it ends)
            run.executors.add(executor)
            getattr(executor, "open", lambda: None)()
        if getattr(executor, "writes_targets", False):
            return await executor.run(task, kwargs, run.target_of(st.node))
        return await executor.run(task, kwargs)
    kind = task.kind
    if kind == "async":
        return await task.fn(**kwargs)
    if kind == "asyncgen":
        return await _drive_generator(run, st, task.fn(**kwargs))
    if executor == "thread":
        return await _in_thread(run, st, functools.partial(task.fn, **kwargs))
    return await _call_in_process(task, kwargs)


async def _in_thread(run: Running, st: NodeState, call: Callable[[], Any]) -> Any:
    """A plain function's body in a worker thread, holding a token of the loop's thread limiter
    until the thread ends: an abandoned thread (a timeout, a cancelled run) still counts, so
    `max_threads` bounds the threads really running. A body waiting for other nodes gives its
    token back meanwhile (see `Run.awaiting`)."""
    limiter = run.thread_limiter
    assert limiter is not None
    token = ThreadToken()  # the borrower: a plain object (the limiter outlives runs; it keeps nothing of them)
    await limiter.acquire_on_behalf_of(token)
    run.thread_tokens[st] = token
    job = _ThreadJob(call, functools.partial(_release_thread_token, run, st, limiter))
    try:
        return await anyio.to_thread.run_sync(job.run, abandon_on_cancel=True, limiter=run.thread_carrier)
    except BaseException:
        if not job.started:
            _release_thread_token(run, st, limiter)
        raise


class ThreadToken:
    """What holds a thread limiter token for a thread body (while it holds one)."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = True


def _release_thread_token(run: Running, st: NodeState, limiter: anyio.CapacityLimiter) -> None:
    token = run.thread_tokens.pop(st, None)  # on the event loop, once
    if token is not None and token.held:
        token.held = False
        limiter.release_on_behalf_of(token)


class _ThreadJob:
    """One body call in a worker thread; it forgets the body once done (an idle worker thread
    keeps its last call: it must not keep the task, its arguments or its run alive)."""

    __slots__ = ("call", "release", "started")

    def __init__(self, call: Callable[[], Any], release: Callable[[], None]) -> None:
        self.call: Callable[[], Any] | None = call
        self.release: Callable[[], None] | None = release
        self.started = False

    def run(self) -> Any:
        self.started = True
        call, release, self.call = self.call, self.release, None
        assert call is not None
        try:
            return call()
        except KeyboardInterrupt as e:  # never Ctrl-C (signals reach the main thread): the body's own
            raise RuntimeError("the body raised KeyboardInterrupt in its worker thread") from e
        finally:
            del call
            self.release = None
            # The worker thread keeps the context it ran in until its next call: drop the frame it
            # holds (the run, its states, their outputs), or an idle thread would keep them alive.
            _context.current.set(None)
            if release is not None:
                try:
                    anyio.from_thread.run_sync(release)
                except Exception:  # the event loop is gone: nothing left to release
                    pass


async def _drive_generator(run: Running, st: NodeState, agen: Any) -> list[Any]:
    """d6tflow's TaskAggregator, fully dynamic: each yielded node (or collection) is run and its
    output sent back into the generator; the output is the list of what was yielded, resolved."""
    out: list[Any] = []
    send: Any = None
    throw: BaseException | None = None
    try:
        while True:
            try:
                yielded = await (agen.athrow(throw) if throw is not None else agen.asend(send))
            except StopAsyncIteration:
                return out
            send = throw = None
            if has_nodes(yielded):
                try:
                    send = await run.resolve(yielded, st)
                except TaskFailed as e:
                    throw = e  # the body may catch the child's failure at its `yield`
                    continue
            else:
                send = yielded
            out.append(send)
    finally:
        await agen.aclose()


async def _call_in_process(task: Any, kwargs: dict[str, Any]) -> Any:
    import pickle

    import anyio.to_process

    try:
        pickle.dumps(kwargs)
    except Exception as e:
        raise ParameterError(
            f"task {task.name!r} runs in a process, but its arguments cannot be pickled: {e}", task=task.name
        ) from e
    kind, value = await anyio.to_process.run_sync(
        _run_in_process, task.fn.__module__, task.fn.__qualname__, task.name, kwargs, cancellable=True
    )
    if kind == "unpicklable":
        type_name, why = value
        raise SerializationError(
            task.name, type_name, "pickle", None, why,
            fix="a body in a process sends its output back pickled: return a picklable value (or run it in a thread)",
        )  # fmt: skip
    if kind == "raised":  # a BaseException of the body (SystemExit...): its failure, the worker lives on
        raise value
    return value


def _run_in_process(module: str, qualname: str, name: str, kwargs: dict[str, Any]) -> tuple[str, Any]:
    import importlib
    import pickle

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    fn = getattr(obj, "fn", obj)
    try:
        value = fn(**kwargs)
    except Exception:
        raise
    except BaseException as e:  # SystemExit would end the worker process, failing other runs' bodies
        try:
            pickle.dumps(e)
            return "raised", e
        except Exception:
            return "raised", RuntimeError(f"the body raised {type(e).__name__}: {e}")
    try:
        pickle.dumps(value)  # it must travel back: say so clearly rather than fail in transit
    except Exception as e:
        cls = type(value)
        return "unpicklable", (f"{cls.__module__}.{cls.__qualname__}", f"cannot be pickled to come back: {e}")
    return "value", value
