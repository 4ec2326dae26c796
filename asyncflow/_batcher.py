"""Group commit: many small blocking calls per worker-thread hop.

Why: one thread hop costs ~100 µs, as much as writing a small file; batching makes thousands of
small reads and writes cost a few hops. One batcher per store and event loop (its events belong
to that loop).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

_PENDING, _RUNNING, _DONE = 0, 1, 2


class _Item:
    __slots__ = ("args", "done", "error", "fn", "result", "state")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.state = _PENDING
        self.done: anyio.Event | None = None  # its batch's end, once it is in one
        self.result: Any = None
        self.error: BaseException | None = None


def _run_batch(batch: list[_Item]) -> None:
    for it in batch:
        try:
            it.result = it.fn(*it.args)
        except BaseException as e:  # handed back to the caller on the loop
            it.error = e
        it.state = _DONE


class ThreadBatcher:
    """Runs small blocking calls in worker threads, many per thread hop.

    A caller that finds a free batch slot leads: it takes what is queued and runs it in one
    thread call; the others wait until a batch ends, then either find their call done or lead.
    At most `max_batches` thread calls at once, on a limiter of their own (the host's default
    thread limiter is left alone).
    """

    def __init__(self, max_batches: int = 2, max_size: int = 128) -> None:
        self.max_batches = max_batches
        self.max_size = max_size
        self.pending: deque[_Item] = deque()
        self.running = 0
        self._slot_free: anyio.Event | None = None  # set when a batch ends, for queued callers
        self._limiter = anyio.CapacityLimiter(max_batches)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in a worker thread; its result, or its exception raised here."""
        item = _Item(fn, args)
        self.pending.append(item)
        try:
            while item.state != _DONE:
                if item.state == _RUNNING:
                    assert item.done is not None
                    await item.done.wait()
                elif self.running < self.max_batches:
                    await self._lead()
                else:
                    if self._slot_free is None:
                        self._slot_free = anyio.Event()
                    await self._slot_free.wait()
        except BaseException:
            # Cancelled while queued: a queued call must never run late.
            if item.state == _PENDING:
                self.pending.remove(item)
            raise
        if item.error is not None:
            raise item.error
        return item.result

    async def _lead(self) -> None:
        self.running += 1
        batch: list[_Item] = []
        done = anyio.Event()
        try:
            # Let the tasks that are ready right now queue their calls too: one hop for all.
            await anyio.lowlevel.checkpoint()
            n = min(len(self.pending), self.max_size)
            batch = [self.pending.popleft() for _ in range(n)]
            for it in batch:
                it.state = _RUNNING
                it.done = done
            if batch:
                # Why shielded: the batch holds other callers' calls (other runs' writes among
                # them); the leader's cancellation must neither abandon nor fake their results.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_run_batch, batch, limiter=self._limiter)
        finally:
            self.running -= 1
            for it in batch:
                if it.state != _DONE:  # the thread never ran it: say so, never report success
                    it.error = RuntimeError("a worker thread could not run this storage call")
                    it.state = _DONE
            if batch:
                done.set()
            slot_free, self._slot_free = self._slot_free, None
            if slot_free is not None:
                slot_free.set()
