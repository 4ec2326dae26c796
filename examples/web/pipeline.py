"""The tasks the web example serves: a shared upstream, a per-request step, and a slow one."""

from __future__ import annotations

import os

import anyio

import asyncflow as af


def note(name: str) -> None:
    """Append to the execution log (ASYNCFLOW_WEB_LOG), so tests can count bodies."""
    log = os.environ.get("ASYNCFLOW_WEB_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (name + "\n").encode())
        os.close(fd)


@af.task
async def reference(size: int = 100) -> list[int]:
    """An expensive upstream that every request needs: computed once, shared."""
    note(f"reference[size={size}]")
    await anyio.sleep(0.2)
    return list(range(size))


@af.task
async def score(user: str, data: list[int] = af.depends(reference)) -> dict:
    note(f"score[user={user}]")
    await anyio.sleep(0.01)
    return {"user": user, "score": sum(data) % (len(user) + 7)}


@af.task
async def report(user: str, steps: int = 3, pause: float = 0.2) -> list[int]:
    """A run with several visible steps (for the live graph page)."""
    return await af.gather(*[part(user=user, k=k, pause=pause) for k in range(steps)])


@af.task
async def part(user: str, k: int, pause: float) -> int:
    await anyio.sleep(pause)
    return k
