"""Several awaitables at once, failing like one: the first error as it is, never an ExceptionGroup.

Why: a task group raises an `ExceptionGroup` when one child fails, which `except af.StorageError`
does not catch. Listing several folders or reading several upstream targets is one operation to
the caller: its first failure cancels the rest and is raised alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio


async def run_all(calls: list[Callable[[], Awaitable[Any]]]) -> None:
    """Await every call concurrently; on the first exception cancel the others and raise it."""
    if len(calls) == 1:
        await calls[0]()
        return
    errors: list[Exception] = []

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        try:
            await call()
        except Exception as e:
            errors.append(e)
            tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        for call in calls:
            tg.start_soon(one, call)
    if errors:
        raise errors[0]
