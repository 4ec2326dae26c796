"""The pool that runs a run's ready nodes: a bounded, elastic set of worker coroutines.

Why a pool and not a task per node: starting an anyio task per node costs ~40-90 µs; a worker
coroutine that takes ready nodes from a deque costs a few µs and its memory does not grow with
the number of waiting nodes. A body that awaits other nodes *parks*: it gives its slot (and its
pool token) back and a new worker may start, so `max_concurrency=1` never deadlocks; it takes a
slot again, ahead of queued work, when what it waits for is done. A finished body trades its slot
for a publish token while its output is written, so writes overlap with the next bodies.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from . import _limits
from ._errors import ParameterError
from ._graph import READY, NodeState
from ._limits import Limit

Execute = Callable[[NodeState], Awaitable[None]]
"""Runs one node to its end."""


class _Worker:
    __slots__ = ("event", "item")

    def __init__(self, event: anyio.Event) -> None:
        self.event = event
        self.item: NodeState | None = None


class Pool:
    """Slots (`max_concurrency`, this run's), named and per-task limits (the event loop's, shared
    with every other run: `_limits`), and the workers that use them.

    Made inside a running event loop; `execute` runs one node (the run's).
    """

    def __init__(self, max_concurrency: int, limits: dict[str, int], execute: Execute) -> None:
        # The running backend's Event class, made directly: anyio.Event() looks the backend up
        # each time (~3 µs), and the scheduler makes one or two per node.
        self.new_event: Callable[[], anyio.Event] = type(anyio.Event())
        self.execute = execute
        self.max_concurrency = max_concurrency
        self.limits: dict[str, Limit] = {}
        for name, n in limits.items():
            self._use(name, int(n))
        self.tg: TaskGroup | None = None
        self.ready: deque[NodeState] = deque()
        self.free = max_concurrency
        self.idle: list[_Worker] = []
        self.slot_waiters: deque[anyio.Event] = deque()
        self.publish_free = 2 * max_concurrency
        self.publish_waiters: deque[anyio.Event] = deque()
        self.closing = False
        self.peak = 0
        self.running: dict[NodeState, anyio.CancelScope] = {}  # what each busy worker runs

    @asynccontextmanager
    async def open(self) -> AsyncIterator[TaskGroup]:
        """The pool at work: its workers run in this task group until the block ends."""
        async with anyio.create_task_group() as tg:
            self.tg = tg
            self._dispatch()
            try:
                yield tg
            finally:
                self.close()

    def cancel(self) -> None:
        """Cancel every body of this pool (fail_fast)."""
        if self.tg is not None:
            self.tg.cancel_scope.cancel()

    def check_limit(self, task: Any) -> None:
        """A task's `limit`, made ready for use: a named pool must exist; an int makes its own."""
        limit = task.limit
        if isinstance(limit, str) and limit not in self.limits:
            raise ParameterError(
                f"task {task.name!r} uses limit {limit!r}, but the workflow sets no such pool; "
                f"pass limits={{{limit!r}: N}}",
                task=task.name,
                param="limit",
            )
        if isinstance(limit, int):
            self._use(f"task:{task.name}", limit)

    def _use(self, name: str, total: int) -> None:
        lim, woken = _limits.shared(name, total)
        self.limits[name] = lim
        self._dispatch_others(woken)

    def _dispatch_others(self, pools: list[Any]) -> None:
        for pool in pools:
            if pool is not self and pool.tg is not None:  # another run's node got a token
                pool._dispatch()

    def _limit_of(self, st: NodeState) -> Limit | None:
        limit = st.node.task.limit
        if limit is None:
            return None
        return self.limits[limit if isinstance(limit, str) else f"task:{st.node.task.name}"]

    def queue(self, st: NodeState) -> None:
        """`st` is ready: a worker takes it as soon as a slot (and its limit) allows."""
        st.status = READY
        self.ready.append(st)
        if self.tg is not None:
            self._dispatch()

    def hand_on(self, st: NodeState) -> None:
        """`st` became ready as the node this worker ran finished: queued without dispatching, so
        the worker runs it next itself (a chain runs on one worker, with no hand-over to another)."""
        st.status = READY
        self.ready.append(st)

    def _take(self) -> NodeState | None:
        """The next ready node whose limit has a token (slot already taken by the caller)."""
        while self.ready:
            st = self.ready.popleft()
            if st.status is not READY:  # withdrawn while queued (an af.map stream left early)
                if st.holds_limit:  # (a token it was handed while queued)
                    self._release(st)
                continue
            lim = self._limit_of(st) if st.node.task.limit is not None else None
            if lim is not None and not st.holds_limit:
                if not lim.take():
                    lim.wait((self, st))
                    continue
                st.holds_limit = True
            st.holds_slot = True
            return st
        return None

    def _dispatch(self) -> None:
        while self.free > 0 and (self.slot_waiters or self.ready):
            if self.slot_waiters:
                self.free -= 1
                self.slot_waiters.popleft().set()  # a resuming body gets the slot
                continue
            self.free -= 1
            st = self._take()
            if st is None:
                self.free += 1
                return
            self._note_peak()
            if self.idle:
                w = self.idle.pop()
                w.item = st
                w.event.set()
            else:
                assert self.tg is not None
                self.tg.start_soon(self._worker, st)

    def _note_peak(self) -> None:
        used = self.max_concurrency - self.free
        if used > self.peak:
            self.peak = used

    def _release(self, st: NodeState) -> None:
        if st.holds_limit:
            st.holds_limit = False
            lim = self._limit_of(st)
            assert lim is not None
            self._release_limit(lim)
        if st.holds_slot:
            st.holds_slot = False
            self.free += 1

    def _release_limit(self, lim: Limit) -> None:
        self._dispatch_others(lim.give_back())

    def _give_slot_back(self) -> None:
        self.free += 1
        self._dispatch()

    async def _wait_turn(self, queue: deque[Any] | Limit, give_back: Callable[[], None]) -> None:
        """Wait in `queue` until a releaser hands its token over; cancelled after the handover,
        give the token back (never leak it)."""
        turn = self.new_event()
        if isinstance(queue, Limit):
            queue.wait(turn)
        else:
            queue.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():
                give_back()
            else:
                (queue.waiting if isinstance(queue, Limit) else queue).remove(turn)
            raise

    async def _worker(self, st: NodeState | None) -> None:
        # One cancel scope for the worker's life (one per node would cost ~4 µs a node): cancelling it
        # withdraws the node it runs (`withdraw`); the worker then ends and the others go on.
        with anyio.CancelScope() as scope:
            await self._work(st, scope)
        if scope.cancel_called:
            self._dispatch()

    def withdraw(self, st: NodeState) -> None:
        """Stop a running node nobody needs any more (an af.map item whose stream was left)."""
        scope = self.running.get(st)
        if scope is not None:
            scope.cancel()

    async def _work(self, st: NodeState | None, scope: anyio.CancelScope) -> None:
        me: _Worker | None = None
        n = 0
        running = self.running
        while st is not None:
            running[st] = scope
            try:
                await self.execute(st)
            finally:
                del running[st]
                self._release(st)
            st = None
            if not self.slot_waiters and self.free > 0 and self.ready:
                self.free -= 1
                st = self._take()
                if st is None:
                    self.free += 1
                elif self.ready:
                    self._dispatch()  # the rest of what this node made ready goes to other workers
            if st is None:
                self._dispatch()
                if self.closing:
                    return
                if me is None:
                    me = _Worker(self.new_event())
                else:
                    me.event = self.new_event()
                    me.item = None
                self.idle.append(me)
                try:
                    await me.event.wait()
                except BaseException:
                    if me in self.idle:
                        self.idle.remove(me)
                    raise
                st = me.item
            n += 1
            if n % 64 == 0:
                await anyio.lowlevel.checkpoint()  # a worker on a streak of instant bodies lets others in

    def close(self) -> None:
        """No more work: idle workers leave."""
        self.closing = True
        for lim in self.limits.values():
            lim.forget(self)
        for st in self.ready:  # queued nodes handed a token that will never run here: give it back
            if st.holds_limit:
                self._release(st)
        idle, self.idle = self.idle, []
        for w in idle:
            w.event.set()

    async def begin_publish(self, st: NodeState) -> None:
        """The body is done and its output goes to storage: trade the body slot for a publish token.

        Why: writes then overlap with the next bodies instead of idling the pool, while the
        number of writes in flight (and of outputs held for them) stays bounded too.
        """
        if self.publish_free > 0:
            self.publish_free -= 1
        else:
            await self._wait_turn(self.publish_waiters, self.end_publish)
        self._release(st)
        self._dispatch()

    def end_publish(self) -> None:
        if self.publish_waiters:
            self.publish_waiters.popleft().set()  # hand the token over
        else:
            self.publish_free += 1

    async def park(self, st: NodeState) -> None:
        """A body starts waiting on other nodes: give its slot (and pool token) back."""
        st.parked += 1
        if st.parked == 1:
            self._release(st)
            self._dispatch()

    async def unpark(self, st: NodeState) -> None:
        """The body resumes: take a slot again, ahead of queued work."""
        st.parked -= 1
        if st.parked:
            return
        lim = self._limit_of(st) if st.node.task.limit is not None else None
        if lim is not None:  # the token first: a body holding a slot never waits for a token
            if not lim.take():
                await self._wait_turn(lim, lambda: self._release_limit(lim))
            st.holds_limit = True
        try:
            if self.free > 0 and not self.slot_waiters:
                self.free -= 1
            else:
                await self._wait_turn(self.slot_waiters, self._give_slot_back)
        except BaseException:
            if st.holds_limit:  # cancelled while waiting for a slot: the token goes back
                st.holds_limit = False
                assert lim is not None
                self._release_limit(lim)
            raise
        st.holds_slot = True
        self._note_peak()

    # finishing ------------------------------------------------------------------------------
