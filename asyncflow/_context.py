"""The "current run" of a task body, and the default runner: how `await node` reaches a scheduler.

This is the one sanctioned upward call (like anyio's `get_async_backend()`): `_node` asks the
context for the run executing the current body; when there is none, it asks the default runner,
which `_workflow` registers when it is imported (so `await node` works outside any flow).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import Any, Protocol


class RunContext(Protocol):
    """What a running workflow offers to the body it executes."""

    async def resolve(self, value: Any, parent: Any) -> Any:
        """Run the nodes inside `value` (a node or a collection) and return their outputs."""
        ...

    def awaiting(self, parent: Any, states: Any) -> AbstractAsyncContextManager[None]:
        """While the block runs, the body of `parent` waits for `states` (found in cycles; its slot is
        given back)."""
        ...


class Frame:
    """The run and the node state whose body is executing."""

    __slots__ = ("run", "state")

    def __init__(self, run: RunContext, state: Any) -> None:
        self.run = run
        self.state = state


class DefaultRunner(Protocol):
    """Runs and checks nodes outside any flow, on `af.settings`."""

    async def resolve(self, value: Any) -> Any:
        """Run the nodes inside `value` (and what they need) and return their outputs."""
        ...

    async def is_complete(self, node: Any) -> bool:
        """Whether a run of `node` on the default settings would skip it."""
        ...


current: ContextVar[Frame | None] = ContextVar("asyncflow_current_frame", default=None)

remote: ContextVar[str | None] = ContextVar("asyncflow_remote_task", default=None)
"""Set on a Dask worker while a body runs: there `await node` cannot reach the scheduler."""

_default: list[DefaultRunner] = []


def register_default_runner(runner: DefaultRunner) -> None:
    """Called once by `_workflow` at import: the runner for nodes awaited outside any flow."""
    _default[:] = [runner]


def default_runner() -> DefaultRunner:
    """The registered default runner (always there once `asyncflow` is imported)."""
    if not _default:  # pragma: no cover - only if a private module is imported on its own
        raise RuntimeError("asyncflow is not fully imported: `import asyncflow` first")
    return _default[0]
