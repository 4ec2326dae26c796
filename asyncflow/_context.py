"""The "current run" of a task body: how `await node` inside a body reaches the scheduler.

This is the one sanctioned upward call (like anyio's `get_async_backend()`): `_node` asks the
context for the run executing the current body; only when there is none does it start one.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol


class RunContext(Protocol):
    """What a running workflow offers to the body it executes."""

    async def resolve(self, value: Any, parent: Any) -> Any:
        """Run the nodes inside `value` (a node or a collection) and return their outputs."""
        ...


class Frame:
    """The run and the node state whose body is executing."""

    __slots__ = ("run", "state")

    def __init__(self, run: RunContext, state: Any) -> None:
        self.run = run
        self.state = state


current: ContextVar[Frame | None] = ContextVar("asyncflow_current_frame", default=None)

remote: ContextVar[str | None] = ContextVar("asyncflow_remote_task", default=None)
"""Set on a Dask worker while a body runs: there `await node` cannot reach the scheduler."""
