"""Named pools and per-task limits: one per event loop, shared by every run on it.

Why per loop and not per run: `@af.task(limit=2)` means "two bodies of it at once" to its user,
and `limits={"db": 4}` stands for four connections, however many requests start runs. The tokens
are plain counters (a run's pool takes and gives them synchronously, with no anyio call); who
waits for one is queued here with the pool that will run it, so a token given back by one run
goes to the next waiter, whichever run it belongs to.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from ._graph import READY

if TYPE_CHECKING:
    from ._graph import NodeState


class Limit:
    """Tokens of one named pool (or one task's int limit), and who waits for one: a resuming body
    (an Event, handed the token) or a ready node with the pool that will run it."""

    __slots__ = ("free", "name", "peak_borrowed", "peak_waiting", "total", "waiting")

    def __init__(self, name: str, total: int) -> None:
        self.name = name
        self.total = total
        self.free = total
        self.waiting: deque[anyio.Event | tuple[Any, NodeState]] = deque()
        self.peak_borrowed = 0
        self.peak_waiting = 0

    def take(self) -> bool:
        """Take a token if one is free."""
        if self.free <= 0:
            return False
        self.free -= 1
        borrowed = self.total - self.free
        if borrowed > self.peak_borrowed:
            self.peak_borrowed = borrowed
        return True

    def wait(self, waiter: anyio.Event | tuple[Any, NodeState]) -> None:
        self.waiting.append(waiter)
        if len(self.waiting) > self.peak_waiting:
            self.peak_waiting = len(self.waiting)

    def give_back(self) -> list[Any]:
        """Return a token and wake who may use it; the pools whose ready nodes were woken (each must
        dispatch)."""
        self.free += 1
        return self.wake()

    def wake(self) -> list[Any]:
        """Hand free tokens to the first waiters: each is *given* its token (a queued node holds it
        from now on, so no other waiter can be starved by a node whose pool is busy)."""
        pools: list[Any] = []
        while self.free > 0 and self.waiting:
            w = self.waiting.popleft()
            if isinstance(w, tuple):
                pool, st = w
                if pool.closing or st.status is not READY:
                    continue  # its run ended, or it was withdrawn: it will never run
                self.take()
                st.holds_limit = True
                pool.ready.appendleft(st)  # its pool runs it when a slot is free
                if pool not in pools:
                    pools.append(pool)
            else:
                self.take()
                w.set()  # a resuming body is handed the token
        return pools

    def resize(self, total: int) -> list[Any]:
        """The latest size given wins, even while runs hold tokens (it may go below what is borrowed:
        then nobody gets one until enough come back)."""
        self.free += total - self.total
        self.total = total
        return self.wake()

    def forget(self, pool: Any) -> None:
        """A run's pool closes: its queued nodes leave the queue."""
        if any(isinstance(w, tuple) and w[0] is pool for w in self.waiting):
            self.waiting = deque(w for w in self.waiting if not (isinstance(w, tuple) and w[0] is pool))

    def stats(self) -> dict[str, int]:
        return {
            "size": self.total,
            "borrowed": self.total - self.free,
            "waiting": len(self.waiting),
            "peak_borrowed": self.peak_borrowed,
            "peak_waiting": self.peak_waiting,
        }


_LIMITS: anyio.lowlevel.RunVar[dict[str, Limit]] = anyio.lowlevel.RunVar("asyncflow_limits")


def _registry() -> dict[str, Limit]:
    try:
        return _LIMITS.get()
    except LookupError:
        limits: dict[str, Limit] = {}
        _LIMITS.set(limits)
        return limits


def shared(name: str, total: int) -> tuple[Limit, list[Any]]:
    """This event loop's limit `name`, made or resized to `total`; and the pools to dispatch (a
    resize may have freed tokens for their waiters)."""
    limits = _registry()
    lim = limits.get(name)
    if lim is None:
        lim = limits[name] = Limit(name, total)
        return lim, []
    return lim, (lim.resize(total) if lim.total != total else [])


def stats() -> dict[str, dict[str, int]]:
    """Every limit of this event loop: size, tokens borrowed, waiters, and their peaks so far
    (nothing outside an event loop)."""
    try:
        limits = _registry()
    except RuntimeError:  # anyio.NoEventLoopError: called from outside any loop
        return {}
    return {name: lim.stats() for name, lim in sorted(limits.items())}
