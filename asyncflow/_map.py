"""`af.map`: stream a task over an iterable, pulling items only as slots free up.

Memory follows the window (the concurrency bound), not the number of items: at most `window`
nodes exist at once, and each one's state is dropped once its output has been handed over.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

from . import _context
from ._errors import ParameterError, TaskFailed
from ._graph import FINISHED, OK, NodeState
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
) -> AsyncIterator[Any]:
    """The outputs of `task(item, **fixed)` for each item: in order (`ordered=True`) or as they
    complete. At most `window` items (default: the run's `max_concurrency`) are in flight; the
    next item is taken from `items` only when one is done. Inside a body it uses the body's run;
    elsewhere it starts one on `af.settings` (iterate it to the end, or close it with
    `contextlib.aclosing`). A failing item raises `af.TaskFailed` from the iteration."""
    if not isinstance(task, Task):
        raise ParameterError(f"af.map() takes a task, got {task!r}")
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ParameterError(f"af.map(): window must be a positive int, got {window!r}")
    return _map(task, items, ordered, window, fixed)


async def _map(task: Task, items: Any, ordered: bool, window: int | None, fixed: dict[str, Any]) -> AsyncIterator[Any]:
    frame = _context.current.get()
    if frame is not None:
        async for out in _stream(frame.run, frame.state, task, items, ordered, window, fixed):  # type: ignore[arg-type]
            yield out
        return
    run = Run(Options.resolve({}))
    failure: TaskFailed | None = None
    async with run.working() as tg:
        try:
            async for out in _stream(run, None, task, items, ordered, window, fixed):
                yield out
        except TaskFailed as e:
            failure = e  # raised below, outside the task group: not wrapped in an ExceptionGroup
        finally:
            tg.cancel_scope.cancel()  # nothing of the stream outlives its consumer
    if failure is not None:
        raise failure


async def _stream(
    run: Run,
    parent: NodeState | None,
    task: Task,
    items: Any,
    ordered: bool,
    window: int | None,
    fixed: dict[str, Any],
) -> AsyncIterator[Any]:
    size = window or run.options.max_concurrency
    source = aiter(items) if hasattr(items, "__aiter__") else iter(items)
    is_async = hasattr(source, "__anext__")
    pending: deque[NodeState] = deque()
    exhausted = False
    while True:
        while not exhausted and len(pending) < size:
            try:
                item = await anext(source) if is_async else next(source)
            except (StopIteration, StopAsyncIteration):
                exhausted = True
                break
            node = task.bind((item,), dict(fixed))
            st = await run.plan_one(node)
            pending.append(st)
        if not pending:
            return
        if ordered:
            st = pending[0]
            await run.wait_any([st], parent)
            pending.popleft()
        else:
            await run.wait_any(list(pending), parent)
            st = next(s for s in pending if s.status in FINISHED)
            pending.remove(st)
        if st.status not in OK:
            st.delivered = True
            raise TaskFailed(st.node.id, st.error or RuntimeError(f"{st.node.id} was {st.status}"))
        out = await run.output_of(st)
        if not st.dependants and not st.joins:
            run.states.pop(st.node.key, None)  # handed over: memory stays bounded by the window
        yield out
