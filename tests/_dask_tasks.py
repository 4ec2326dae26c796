"""Tasks for the Dask tests: in an importable module, as workers import tasks by module name."""

from __future__ import annotations

import os
import signal

import anyio

import asyncflow as af

DASK = af.DaskExecutor()


@af.task(executor=DASK)
def crunch(i: int) -> list[int]:
    return [os.getpid(), sum(k * k for k in range(10_000 + i))]


@af.task(executor=DASK)
async def async_on_worker(i: int) -> int:
    await anyio.sleep(0)
    return os.getpid()


@af.task
async def gather_pids(parts: list[list[int]]) -> list[int]:
    return sorted({p[0] for p in parts})


@af.task(executor=DASK)
def returns_nodes(n: int) -> list:
    return [crunch(i=i) for i in range(n)]


@af.task(executor=DASK)
async def awaits_a_node() -> int:
    return await crunch(i=1)


@af.task(executor=DASK)
async def yields_a_node():  # type: ignore[no-untyped-def]
    yield crunch(i=1)


@af.task(executor=DASK)
def raises() -> int:
    raise ValueError("raised on a worker")


@af.task(executor=DASK)
def dies_once(marker: str) -> int:
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-task
    return 7


@af.task(executor=DASK)
def sleeps(i: int) -> int:
    import time

    time.sleep(30)
    return i


@af.task(executor=DASK, outputs=("train", "test"))
def split_on_worker(n: int) -> dict:
    return {"train": list(range(n)), "test": [os.getpid()]}


@af.task(executor=DASK, outputs=("train", "test"))
def split_wrong_on_worker(n: int) -> dict:
    return {"train": [n]}


@af.task(executor=DASK)
def where_it_ran(i: int) -> str:
    """The Dask task that ran this body (bodies submitted together share one)."""
    import distributed

    if i % 7 == 3:
        raise ValueError(f"body {i} fails alone")
    if i % 7 == 5:
        raise SystemExit(i)  # a base exception fails its body alone too (the worker lives on)
    return str(distributed.get_worker().get_current_task())


@af.task(executor=af.DaskExecutor(n_workers=1, threads_per_worker=2), timeout=3)
def timed(i: int) -> int:  # (one worker: a free thread takes the next body, none waits behind the slow one)
    import time

    time.sleep(5 if i == 0 else 0)
    return i


@af.task(executor=DASK)
def naps(i: int) -> int:
    import time

    time.sleep(0.3)
    return i
