"""Runs in the background, observed: for applications (a web service starts runs from request
handlers, streams their events, answers status queries and cancels them).

Structured: a run lives in a task group the application owns (its lifespan), started with
`flow.start(task_group)`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

from . import _limits
from . import events as ev
from ._errors import FlowFailed
from ._results import RunResult

Start = Callable[[Callable[[Any], Any]], Awaitable[RunResult]]
"""Starts the run with the given `on_event` callback and returns its result (`Workflow.run`)."""


class RunHandle:
    """A workflow run in the background: its events (replayable by any number of readers), its
    status, counts and result, and `cancel()`. Made by `Workflow.start(task_group)`."""

    def __init__(self, start: Start, on_event: Callable[[Any], Any] | None = None) -> None:
        self.status = "pending"  # -> "running" -> "succeeded" | "failed" | "cancelled"
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.counts = {"started": 0, "succeeded": 0, "skipped": 0, "failed": 0}
        self._start = start
        self._events: list[Any] = []
        self._changed = anyio.Event()
        self._done = anyio.Event()
        self._scope = anyio.CancelScope()
        self._user_on_event = on_event
        self._started = time.time()

    # the run ---------------------------------------------------------------------------------
    async def main(self) -> None:
        """The run itself: started in the application's task group."""
        self.status = "running"
        self._started = time.time()
        try:
            with self._scope:
                try:
                    self.result = await self._start(self._record)
                    self.status = "succeeded"
                except FlowFailed as e:
                    self.result, self.error, self.status = e.result, e, "failed"
                    self._finish(ok=False)
                except Exception as e:  # bad input, storage: the run never got going
                    self.error, self.status = e, "failed"
                    self._finish(ok=False)
            if self._scope.cancelled_caught or self.status == "running":
                self.status = "cancelled"
                self._finish(ok=False, cancelled=True)
        finally:  # whatever happened, readers and waiters are released
            self._done.set()
            self._wake()

    def _finish(self, ok: bool, cancelled: bool = False) -> None:
        if not self._events or not isinstance(self._events[-1], ev.FlowFinished):
            c, now = self.counts, time.time()
            self._keep(
                ev.FlowFinished(
                    timestamp=now, ran=c["succeeded"], skipped=c["skipped"], failed=c["failed"],
                    duration=now - self._started, ok=ok, cancelled=cancelled,
                )
            )  # fmt: skip

    def _record(self, event: Any) -> Any:
        """The run's `on_event`: keep the event, then hand it to the application's callback."""
        self._keep(event)
        return self._user_on_event(event) if self._user_on_event is not None else None

    def _keep(self, event: Any) -> None:
        kind = type(event)
        if kind is ev.TaskStarted and event.attempt == 1:
            self.counts["started"] += 1
        elif kind is ev.TaskSucceeded:
            self.counts["succeeded"] += 1
        elif kind is ev.TaskSkipped:
            self.counts["skipped"] += 1
        elif kind is ev.TaskFailed:
            self.counts["failed"] += 1
        self._events.append(event)
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    # for the application ---------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Cancel the run: running bodies are cancelled, no partial target is left."""
        self._scope.cancel()

    async def wait(self) -> RunResult | None:
        """Wait for the end; the result (None if it never ran: see `error`)."""
        await self._done.wait()
        return self.result

    def events(self) -> AsyncIterator[Any]:
        """Every event from the start, then the new ones as they come, until `FlowFinished`.
        Each call is an independent reader; a reader that stops does not disturb the run (a plain
        iterator, not a generator: nothing to close)."""
        return _Reader(self)

    def snapshot(self) -> dict[str, Any]:
        """Status, counts, the error text when failed, and the event loop's limits (size, tokens
        borrowed, waiters and their peaks, every run's together: they are shared)."""
        out: dict[str, Any] = {"status": self.status, **self.counts, "events": len(self._events)}
        out["limits"] = _limits.stats()
        if self.error is not None:
            out["error"] = str(self.error)
        return out


class _Reader:
    """One reader of a run's events, from the first."""

    def __init__(self, run: RunHandle) -> None:
        self.run = run
        self.i = 0
        self.finished = False

    def __aiter__(self) -> _Reader:
        return self

    async def __anext__(self) -> Any:
        run = self.run
        while not self.finished:
            if self.i < len(run._events):
                event = run._events[self.i]
                self.i += 1
                self.finished = isinstance(event, ev.FlowFinished)
                return event
            if run._done.is_set():
                break
            await run._changed.wait()
        raise StopAsyncIteration
