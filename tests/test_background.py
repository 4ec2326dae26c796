"""Runs in the background (for applications): events with replay, status, result, cancel."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

import asyncflow as af
from asyncflow import events

pytestmark = pytest.mark.anyio


@af.task
async def step(i: int) -> int:
    await anyio.sleep(0.001)
    return i


@af.task
async def total(xs: list[int]) -> int:
    return sum(xs)


async def test_events_replay_for_every_reader_and_end_with_flow_finished(mem_store) -> None:
    flow = af.Workflow(total(xs=[step(i=i) for i in range(5)]), store=mem_store)
    async with anyio.create_task_group() as tg:
        run = flow.start(tg)
        early = [e async for e in run.events()]  # reads while it runs
        result = await run.wait()
        late = [e async for e in run.events()]  # a late reader gets what already happened
    assert [type(e) for e in early] == [type(e) for e in late]
    assert isinstance(late[-1], events.FlowFinished) and late[-1].ok
    assert sum(isinstance(e, events.TaskSucceeded) for e in late) == 6
    assert run.status == "succeeded" and result is not None and result.ran == 6
    assert run.snapshot() == {"status": "succeeded", "started": 6, "succeeded": 6, "skipped": 0, "failed": 0,
                              "events": len(late), "limits": {}}  # fmt: skip
    wire = [msgspec.json.decode(msgspec.json.encode(e), type=events.Event) for e in late]
    assert wire == late


async def test_cancel_stops_running_bodies_and_ends_the_stream(mem_store) -> None:
    entered = anyio.Event()
    stopped = []

    @af.task
    async def forever() -> int:
        entered.set()
        try:
            await anyio.sleep(60)
        finally:
            stopped.append(1)
        return 1

    flow = af.Workflow(forever(), store=mem_store)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            run = flow.start(tg)
            await entered.wait()
            run.cancel()
            seen = [e async for e in run.events()]
    assert stopped == [1]
    assert run.status == "cancelled"
    assert isinstance(seen[-1], events.FlowFinished) and not seen[-1].ok and seen[-1].cancelled
    assert seen[-1].duration > 0
    assert run.snapshot()["status"] == "cancelled"
    assert not await af.Workflow(forever(), store=mem_store).is_complete(forever())


async def test_a_failing_run_reports_its_error(mem_store) -> None:
    @af.task
    async def bad() -> int:
        raise ValueError("no")

    got: list[Any] = []
    async with anyio.create_task_group() as tg:
        run = af.Workflow(bad(), store=mem_store).start(tg, on_event=got.append)
        await run.wait()
    assert run.status == "failed"
    assert "bad failed: ValueError: no" in run.snapshot()["error"]
    assert [type(e).__name__ for e in got][-1] == "FlowFinished"  # the caller's own on_event still runs


async def test_a_reader_that_stops_does_not_disturb_the_run(mem_store) -> None:
    async with anyio.create_task_group() as tg:
        run = af.Workflow([step(i=i) for i in range(20)], store=mem_store).start(tg)
        async for _ in run.events():
            break  # a client went away
        result = await run.wait()
    assert result is not None and result.ran == 20
