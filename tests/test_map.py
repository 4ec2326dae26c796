"""`af.map`: a streaming fan-out whose memory follows the window, not the number of items."""

from __future__ import annotations

import contextlib

import anyio
import pytest

import asyncflow as af

pytestmark = pytest.mark.anyio


@af.task(persist=False)
async def double(x: int, offset: int = 0) -> int:
    await anyio.sleep(0)
    return 2 * x + offset


async def test_map_outside_a_flow_in_order(mem_store) -> None:
    af.settings.store = mem_store
    out = [y async for y in af.map(double, range(100), offset=1)]
    assert out == [2 * x + 1 for x in range(100)]


async def test_map_as_completed_from_an_async_iterable(mem_store) -> None:
    af.settings.store = mem_store

    @af.task(persist=False)
    async def slow_first(x: int) -> int:
        await anyio.sleep(0.2 if x == 0 else 0)
        return x

    async def numbers():  # type: ignore[no-untyped-def]
        for i in range(5):
            yield i

    out = [y async for y in af.map(slow_first, numbers(), ordered=False)]
    assert sorted(out) == [0, 1, 2, 3, 4]
    assert out[-1] == 0  # the slow one comes last


async def test_map_pulls_items_only_as_slots_free_up(mem_store) -> None:
    af.settings.store = mem_store
    pulled = 0
    in_flight_max = 0
    now = 0

    @af.task(persist=False)
    async def work(x: int) -> int:
        nonlocal now, in_flight_max
        now += 1
        in_flight_max = max(in_flight_max, now)
        await anyio.sleep(0)
        now -= 1
        return x

    def items():  # type: ignore[no-untyped-def]
        nonlocal pulled
        for i in range(1000):
            pulled += 1
            yield i

    seen = 0
    async with contextlib.aclosing(af.map(work, items(), window=4)) as results:
        async for _ in results:
            seen += 1
            assert pulled <= seen + 4  # never more than the window ahead
    assert seen == 1000
    assert in_flight_max <= 4


async def test_map_inside_a_body_uses_its_run_and_gives_the_slot_back(mem_store) -> None:
    @af.task(persist=False)
    async def mapped_total(n: int) -> int:
        acc = 0
        async for y in af.map(double, range(n), window=8):
            acc += y
        return acc

    flow = af.Workflow(mapped_total(n=500), store=mem_store, max_concurrency=1)
    with anyio.fail_after(30):
        await flow.run()
    assert await flow.output() == 2 * sum(range(500))


async def test_map_raises_task_failed_for_a_failing_item(mem_store) -> None:
    af.settings.store = mem_store

    @af.task(persist=False)
    async def picky(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    got = []
    with pytest.raises(af.TaskFailed) as e:
        async for y in af.map(picky, range(10)):
            got.append(y)
    assert got == [0, 1, 2]
    assert e.value.node_id == "picky[x=3]"
    assert isinstance(e.value.__cause__, ValueError)


async def test_map_memory_stays_bounded_by_the_window(mem_store) -> None:
    import tracemalloc

    af.settings.store = mem_store

    @af.task(persist=False)
    async def ident(x: int) -> int:
        return x

    async def consume(n: int) -> int:
        count = 0
        async for _ in af.map(ident, range(n), window=16):
            count += 1
        return count

    peaks = []
    for n in (1_000, 10_000):
        tracemalloc.start()
        try:
            assert await consume(n) == n
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < peaks[0] * 2  # ten times the items, not ten times the memory


def test_map_rejects_bad_arguments() -> None:
    with pytest.raises(af.ParameterError, match="takes a task"):
        af.map(len, [1])  # type: ignore[arg-type]
    with pytest.raises(af.ParameterError, match="window must be a positive int"):
        af.map(double, [1], window=0)
