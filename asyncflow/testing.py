"""Helpers for testing your own pipelines (structlog's `testing`, trio's `MockClock` and httpx's
`MockTransport` are the models): a fresh memory store, an event recorder, instant retries and
fault points.

    import asyncflow as af
    from asyncflow import testing

    async def test_fit_retries_then_succeeds():
        events = testing.EventRecorder()
        with testing.instant_retries() as delays:
            await af.Workflow(fit(), store=testing.memory_store(), on_event=events).run()
        assert delays == [0.5, 1.0]
        assert events.kinds() == ["TaskStarted", "TaskRetrying", ...]
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import _execute, _faults, events

__all__ = ["FAULT_POINTS", "EventRecorder", "fault", "fault_environment", "instant_retries", "memory_store"]

FAULT_POINTS = (
    "after_plan",
    "after_temp_write",
    "after_segment_write",
    "before_publish",
    "before_record",
    "after_publish",
)
"""Where asyncflow lets a test crash, fail or wait: after planning (before any body), after a local
target's bytes are written (before it is linked or renamed into place), before a target is
published, between a target in place and its entry in the folder's record segments, after a target
and its record are in place. A hook receives a detail: the node id, or the path written."""


def memory_store() -> str:
    """A fresh, empty in-memory store URL (`memory://asyncflow-test-...`), one per call."""
    return f"memory://asyncflow-test-{uuid.uuid4().hex}"


class EventRecorder:
    """An `on_event` callback that keeps every event, in order."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        """The event kinds in order (`"TaskStarted"`, `"TaskSucceeded"`, ... `"FlowFinished"`)."""
        return [type(e).__name__ for e in self.events]

    def of(self, kind: type[Any] | str) -> list[Any]:
        """The events of one kind (a class from `asyncflow.events`, or its name)."""
        name = kind if isinstance(kind, str) else kind.__name__
        return [e for e in self.events if type(e).__name__ == name]

    def node_ids(self, kind: type[Any] | str = events.TaskSucceeded) -> list[str]:
        """The node ids of the events of one kind, in order."""
        return [e.node_id for e in self.of(kind)]

    def clear(self) -> None:
        self.events.clear()


@contextmanager
def instant_retries() -> Iterator[list[float]]:
    """Within the block, waits between retries take no time; yields the list of delays asked for."""
    delays: list[float] = []
    original = _execute.sleep

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    _execute.sleep = sleep
    try:
        yield delays
    finally:
        _execute.sleep = original


@contextmanager
def fault(point: str, action: Callable[[str], None] | BaseException | type[BaseException]) -> Iterator[list[str]]:
    """Arm a fault point for the block: `action` is called with the point's detail (it may block,
    record or raise), or an exception (class or instance) to raise there. Yields the details seen."""
    if point not in FAULT_POINTS:
        raise ValueError(f"unknown fault point {point!r}; the points are {', '.join(FAULT_POINTS)}")
    seen: list[str] = []

    def hook(detail: str) -> None:
        seen.append(detail)
        if isinstance(action, (BaseException, type)):
            raise action
        action(detail)

    previous = _faults.HOOKS.get(point)
    _faults.HOOKS[point] = hook
    try:
        yield seen
    finally:
        if previous is None:
            _faults.HOOKS.pop(point, None)
        else:
            _faults.HOOKS[point] = previous


def fault_environment(point: str, action: str = "kill", nth: int = 1) -> dict[str, str]:
    """Environment variables that arm a fault point in a child process: at the `nth` time it is
    reached, `kill` prints `FAULT point detail` and SIGKILLs the process, `raise` raises OSError."""
    if point not in FAULT_POINTS:
        raise ValueError(f"unknown fault point {point!r}; the points are {', '.join(FAULT_POINTS)}")
    if action not in ("kill", "raise"):
        raise ValueError(f"fault action must be 'kill' or 'raise', got {action!r}")
    return {"ASYNCFLOW_FAULT": f"{point}:{action}:{nth}"}
