"""Events a run emits to `on_event`: frozen msgspec Structs, `msgspec.json.encode(event)` on the wire.

They live here only (not at the top level), so the event `TaskFailed` never shadows the exception
`af.TaskFailed`. Each carries the node id, the task name, the parameters and a timestamp; `kind`
is the tag that tells them apart once encoded (decode with `msgspec.json.decode(data, type=Event)`).
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "Event",
    "FlowFinished",
    "TaskFailed",
    "TaskRetrying",
    "TaskSkipped",
    "TaskStarted",
    "TaskSucceeded",
]


class _NodeEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    node_id: str
    task: str
    params: dict[str, Any]
    timestamp: float


class TaskStarted(_NodeEvent, frozen=True, kw_only=True, tag="TaskStarted"):
    """A body starts a try (`attempt` counts from 1)."""

    attempt: int = 1


class TaskSucceeded(_NodeEvent, frozen=True, kw_only=True, tag="TaskSucceeded"):
    """A body finished and its output was published; `duration` in seconds, all tries included."""

    duration: float


class TaskSkipped(_NodeEvent, frozen=True, kw_only=True, tag="TaskSkipped"):
    """A node was not run: `reason` is "complete" or "upstream failed"."""

    reason: str


class TaskFailed(_NodeEvent, frozen=True, kw_only=True, tag="TaskFailed"):
    """A node failed for good (retries exhausted); `error` is `Type: message (file:line)`."""

    error: str
    error_type: str
    duration: float


class TaskRetrying(_NodeEvent, frozen=True, kw_only=True, tag="TaskRetrying"):
    """A try failed and another follows after `delay` seconds."""

    attempt: int
    delay: float
    error: str


class FlowFinished(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="FlowFinished"):
    """A run ended: counts, whether it succeeded, and whether it was cancelled (then `ok` is false
    and the nodes still running when it ended were cancelled)."""

    timestamp: float
    ran: int
    skipped: int
    failed: int
    duration: float
    ok: bool
    cancelled: bool = False


Event = TaskStarted | TaskSucceeded | TaskSkipped | TaskFailed | TaskRetrying | FlowFinished
