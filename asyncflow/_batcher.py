"""Group commit: many small blocking calls per worker-thread hop.

Why: one thread hop costs ~100 µs, as much as writing a small file; batching makes thousands of
small reads and writes cost a few hops. One batcher per store and event loop (its events belong
to that loop).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import sniffio

_QUEUED, _LEADING, _RUNNING, _DONE = 0, 1, 2, 3


class _Item:
    __slots__ = ("args", "error", "fn", "result", "state")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.state = _QUEUED
        self.result: Any = None
        self.error: BaseException | None = None


class _Batch:
    """Calls that go to one thread hop together; their callers wait on its event (set when it
    is done, or when it may start: then one of them leads it)."""

    __slots__ = ("event", "items", "state")

    def __init__(self) -> None:
        self.items: list[_Item] = []
        self.state = _QUEUED
        self.event = anyio.Event()

    def wake(self) -> None:
        event, self.event = self.event, anyio.Event()
        event.set()


def _run_batch(batch: list[_Item]) -> None:
    for it in batch:
        try:
            it.result = it.fn(*it.args)
        except BaseException as e:  # handed back to the caller on the loop
            it.error = e
        it.state = _DONE


class ThreadBatcher:
    """Runs small blocking calls in worker threads, many per thread hop.

    Calls join the newest queued batch (up to `max_size` calls). A caller whose batch may start (a
    thread slot is free) leads it: it runs the whole batch in one thread call. At most
    `max_batches` thread calls at once, on a limiter of their own (the host's default thread
    limiter is left alone). Each batch's end wakes only its own callers and the next batch's:
    waking costs stay proportional to the calls, however many are queued.
    """

    def __init__(self, max_batches: int = 2, max_size: int = 128) -> None:
        self.max_batches = max_batches
        self.max_size = max_size
        self.queue: deque[_Batch] = deque()  # batches not yet running, oldest first
        self.running = 0
        self._limiter = anyio.CapacityLimiter(max_batches)
        self._hops: set[asyncio.Future[None]] = set()

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in a worker thread; its result, or its exception raised here."""
        item = _Item(fn, args)
        batch = self.queue[-1] if self.queue else None
        if batch is None or len(batch.items) >= self.max_size:
            batch = _Batch()
            self.queue.append(batch)
        batch.items.append(item)
        try:
            while item.state != _DONE:
                if batch.state == _QUEUED and self.running < self.max_batches:
                    await self._lead(batch)
                else:
                    await batch.event.wait()
        except BaseException:
            if item.state == _QUEUED:  # cancelled while queued: a queued call must never run late
                batch.items.remove(item)
                if not batch.items and batch.state == _QUEUED:
                    self.queue.remove(batch)
                    self._wake_next()
            raise
        if item.error is not None:
            raise item.error
        return item.result

    async def _lead(self, batch: _Batch) -> None:
        self.running += 1
        batch.state = _LEADING
        try:
            # Let the tasks that are ready right now join the batch too: one hop for all. (Not a
            # cancellation point: the batch holds other callers' calls.)
            await anyio.lowlevel.cancel_shielded_checkpoint()
        except BaseException:  # asyncio's own Task.cancel() passes any shield: another caller leads
            self.running -= 1
            batch.state = _QUEUED
            batch.wake()
            raise
        self.queue.remove(batch)
        batch.state = _RUNNING
        for it in batch.items:
            it.state = _RUNNING
        # The batch holds other callers' calls (other runs' writes among them): the leader's
        # cancellation must neither abandon nor fake their results. An anyio shield stops anyio's
        # cancellation; asyncio's own `Task.cancel()` (a timeout, a host cancelling its task) is
        # stopped only by a task of its own, which then finishes the batch without the leader.
        if sniffio.current_async_library() == "asyncio":
            hop = asyncio.ensure_future(self._hop(batch))
            self._hops.add(hop)  # (the loop keeps only weak references to tasks)
            hop.add_done_callback(self._hops.discard)
            await asyncio.shield(hop)
        else:
            with anyio.CancelScope(shield=True):
                await self._hop(batch)

    async def _hop(self, batch: _Batch) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_run_batch, batch.items, limiter=self._limiter)
        finally:
            self.running -= 1
            for it in batch.items:
                if it.state != _DONE:  # the thread never ran it: say so, never report success
                    it.error = RuntimeError("a worker thread could not run this storage call")
                    it.state = _DONE
            batch.state = _DONE
            batch.wake()
            self._wake_next()

    def _wake_next(self) -> None:
        """A thread slot is free: the oldest queued batch may start."""
        for batch in self.queue:
            if batch.state == _QUEUED:
                batch.wake()
                return
