"""`af.map`: stream a task over an iterable, pulling items only as slots free up.

Memory follows the window (the concurrency bound), not the number of items: at most `window`
nodes exist at once, and each one's state is dropped once its output has been handed over.
Inside a body, each item is an input of the body's output, recorded with it like any dynamic
child: there the run keeps a state per item until the body ends.

Outside a run, the stream owns a small run whose workers live in a background task of the event
loop: the consumer's `async for` holds no task group across its iterations, so leaving the loop
early (`break`, an exception, a cancelled consumer) is always safe. The stream's work stops when
it is exhausted, closed (`aclose`, `async with`) or dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from types import TracebackType
from typing import Any

import anyio
import sniffio

from . import _context
from ._errors import ParameterError, TaskFailed
from ._graph import CANCELLED, FINISHED, OK, PENDING, READY, RUNNING, TODO, NodeState, settle
from ._scheduler import Run
from ._settings import Options
from ._task import Task


def map(
    task: Task,
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    ordered: bool = True,
    window: int | None = None,
    **fixed: Any,
) -> MapStream:
    """The outputs of `task(item, **fixed)` for each item: in order (`ordered=True`) or as they
    complete. At most `window` items (default: the run's `max_concurrency`) are in flight; the
    next item is taken from `items` only when one is done. Inside a body it uses the body's run;
    elsewhere it starts one on `af.settings`. A failing item raises `af.TaskFailed` from the
    iteration. Leaving the loop early is safe; `async with af.map(...) as outputs:` also stops
    the items in flight at once when the block ends."""
    if not isinstance(task, Task):
        raise ParameterError(f"af.map() takes a task, got {task!r}")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise ParameterError(f"af.map(): window must be a positive int, got {window!r}")
    return MapStream(task, items, ordered, window, fixed)


class MapStream:
    """The async iterator `af.map` returns (also an async context manager)."""

    def __init__(self, task: Task, items: Any, ordered: bool, window: int | None, fixed: dict[str, Any]) -> None:
        self._args = (task, items, ordered, window, fixed)
        self._outputs: AsyncIterator[Any] | None = None
        self._owned: _OwnRun | None = None

    def __aiter__(self) -> MapStream:
        return self

    async def __anext__(self) -> Any:
        if self._outputs is None:
            frame = _context.current.get()
            if frame is not None:  # inside a body: the body's run does the work
                self._outputs = _Stream(frame.run, frame.state, *self._args)  # type: ignore[arg-type]
            else:
                self._owned = _OwnRun(Run(Options.resolve({})))
                await self._owned.start()
                self._outputs = _Stream(self._owned.run, None, *self._args)
        try:
            return await anext(self._outputs)
        except BaseException:
            await self.aclose()  # exhausted or failed: nothing of it keeps running
            raise

    async def aclose(self) -> None:
        """Stop the items in flight when the stream owns its run; inside a body, withdraw the items
        not started yet (those running finish, as part of the body's run)."""
        if isinstance(self._outputs, _Stream):
            self._outputs.withdraw()
        if self._owned is not None:
            owned, self._owned = self._owned, None
            with anyio.CancelScope(shield=True):  # short: its bodies are cancelled
                await owned.stop()

    async def __aenter__(self) -> MapStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if isinstance(self._outputs, _Stream):
            self._outputs.withdraw()
        if self._owned is not None:  # dropped mid-way (a `break`): its work stops
            try:
                self._owned.cancel()
            except Exception:  # pragma: no cover - the event loop is already gone
                pass


class _OwnRun:
    """A run whose pool works in a background task of the event loop, not in the caller's."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.scope = anyio.CancelScope()
        self.started = anyio.Event()
        self.stopped = anyio.Event()

    async def start(self) -> None:
        coro = self._work()
        if sniffio.current_async_library() == "trio":
            import trio

            trio.lowlevel.spawn_system_task(lambda: coro)
        else:
            import asyncio

            self._task = asyncio.get_running_loop().create_task(coro)
        await self.started.wait()

    async def _work(self) -> None:
        try:
            with self.scope:
                async with self.run.working():
                    self.started.set()
                    await anyio.sleep_forever()
        except Exception:  # pragma: no cover - the pool's own failure: its items end, cancelled
            pass
        finally:
            self.started.set()
            for st in list(self.run.states.values()):  # wake whoever waits for an unfinished item
                if st.status not in FINISHED:
                    settle(st, CANCELLED, None, lambda _: None)
            self.stopped.set()

    def cancel(self) -> None:
        self.scope.cancel()

    async def stop(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()


class _Stream:
    """The outputs of a task over items, through `run` (an iterator class, not an async generator:
    dropping it half-way leaves nothing to finalize)."""

    def __init__(
        self, run: Run, parent: NodeState | None, task: Task, items: Any, ordered: bool, window: int | None,
        fixed: dict[str, Any],
    ) -> None:  # fmt: skip
        self.run = run
        self.parent = parent
        self.task = task
        self.ordered = ordered
        self.fixed = fixed
        self.size = window or run.options.max_concurrency
        self.source = aiter(items) if hasattr(items, "__aiter__") else iter(items)
        self.is_async = hasattr(self.source, "__anext__")
        self.pending: deque[NodeState] = deque()
        self.mine: set[NodeState] = set()  # states this stream brought into the run
        self.exhausted = False

    def __aiter__(self) -> _Stream:
        return self

    def withdraw(self) -> None:
        """The consumer left: its items nobody else needs are dropped, those running stopped."""
        pending, self.pending = self.pending, deque()
        self.exhausted = True
        for st in pending:
            if st in self.mine and st.status in (READY, PENDING, RUNNING) and not st.dependants:
                running = st.status == RUNNING
                st.status = TODO
                self.run.states.pop(st.node.key, None)
                if running:
                    self.run.pool.withdraw(st)

    async def __anext__(self) -> Any:
        run, parent, pending = self.run, self.parent, self.pending
        while not self.exhausted and len(pending) < self.size:
            try:
                item = await anext(self.source) if self.is_async else next(self.source)
            except (StopIteration, StopAsyncIteration):
                self.exhausted = True
                break
            node = self.task.bind((item,), dict(self.fixed))
            if parent is not None:  # an input of the body's output: recorded with it, re-checked later
                run.dynamic.setdefault(parent.node, []).append(node)
            known = node.key in run.states
            st = await run.plan_one(node)
            if not known:
                self.mine.add(st)
            pending.append(st)
        if not pending:
            raise StopAsyncIteration
        if self.ordered:
            st = pending[0]
            await run.wait_any([st], parent)
            pending.popleft()
        else:
            await run.wait_any(list(pending), parent)
            st = next(s for s in pending if s.status in FINISHED)
            pending.remove(st)
        if st.status not in OK:
            st.delivered = True
            raise TaskFailed(st.node.id, st.error or RuntimeError(f"{st.node.id} was {st.status.name.lower()}"))
        self.mine.discard(st)
        out = await run.output_of(st)
        if parent is None and not st.dependants and not st.joins:
            run.states.pop(st.node.key, None)  # handed over: memory stays bounded by the window
        return out
