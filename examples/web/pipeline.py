"""The tasks the web example serves: a shared upstream, a per-request step, and a slow one."""

from __future__ import annotations

import os
from typing import Annotated

import anyio
from msgspec import Meta

import asyncflow as af

# Bounds a client cannot exceed: checked by the tasks' own binding (422 naming the parameter).
User = Annotated[str, Meta(min_length=1, max_length=64)]
Size = Annotated[int, Meta(ge=1, le=10_000)]
Steps = Annotated[int, Meta(ge=1, le=50)]
Pause = Annotated[float, Meta(ge=0, le=30)]


def note(name: str) -> None:
    """Append to the execution log (ASYNCFLOW_WEB_LOG), so tests can count bodies."""
    log = os.environ.get("ASYNCFLOW_WEB_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (name + "\n").encode())
        os.close(fd)


@af.task
async def reference(size: Size = 100) -> list[int]:
    """An expensive upstream that every request needs: computed once, shared."""
    note(f"reference[size={size}]")
    await anyio.sleep(0.2)
    return list(range(size))


@af.task
async def score(user: User, data: list[int] = af.depends(reference)) -> dict:
    note(f"score[user={user}]")
    await anyio.sleep(0.01)
    return {"user": user, "score": sum(data) % (len(user) + 7)}


@af.task
async def report(user: User, steps: Steps = 3, pause: Pause = 0.2) -> list[int]:
    """A run with several visible steps (for the live graph page)."""
    return await af.gather(*[part(user=user, k=k, pause=pause) for k in range(steps)])


@af.task
async def part(user: User, k: Annotated[int, Meta(ge=0, le=49)], pause: Pause) -> int:
    await anyio.sleep(pause)
    return k
