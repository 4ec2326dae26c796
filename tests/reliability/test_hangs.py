"""Nothing hangs: cycles across runs are `CycleError`s, every run is cancellable at once, leaving
`af.map` early is safe, and finished runs keep nothing alive."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import anyio
import anyio.from_thread
import pytest

import asyncflow as af

from ..conftest import BACKEND

pytestmark = pytest.mark.anyio


async def test_a_dynamic_cycle_across_two_concurrent_runs_is_a_cycle_error(mem_store) -> None:
    x_in, y_in = anyio.Event(), anyio.Event()

    @af.task
    async def x() -> int:
        x_in.set()
        await y_in.wait()
        return await y()

    @af.task
    async def y() -> int:
        y_in.set()
        await x_in.wait()
        return await x()

    errors: dict[str, BaseException] = {}

    async def run(name: str, node: af.Node) -> None:
        try:
            await af.Workflow(node, store=mem_store).run()
        except af.FlowFailed as e:
            errors[name] = e

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "one", x())
            tg.start_soon(run, "two", y())
    assert set(errors) == {"one", "two"}
    for e in errors.values():
        cause = e.__cause__
        assert isinstance(cause, af.CycleError), cause
        assert set(cause.path) == {"x", "y"} and cause.path[0] == cause.path[-1]


async def test_a_workflow_run_by_a_body_that_needs_that_body_is_a_cycle_error(mem_store) -> None:
    @af.task
    async def outer() -> int:
        await af.Workflow(inner(), store=mem_store).run()  # inner needs outer: this very node
        return 1

    @af.task
    async def inner(o: int = af.depends("outer")) -> int:
        return o

    @af.task
    async def outer_dynamic() -> int:
        await af.Workflow(inner_dynamic(), store=mem_store).run()
        return 1

    @af.task
    async def inner_dynamic() -> int:
        return await outer_dynamic()

    for root, path in ((outer(), ["outer", "inner", "outer"]), (outer_dynamic(), ["outer_dynamic", "inner_dynamic",
                                                                                  "outer_dynamic"])):  # fmt: skip
        with anyio.fail_after(5), pytest.raises(af.FlowFailed) as e:
            await af.Workflow(root, store=mem_store).run()
        assert isinstance(e.value.__cause__, af.CycleError)
        assert e.value.__cause__.path == path


async def _cancelled_within(seconds: float, started: anyio.Event, *runs: af.Workflow) -> float:
    """Start the runs, wait until `started`, cancel them all; how long the cancellation took."""
    async with anyio.create_task_group() as tg:
        for flow in runs:
            tg.start_soon(flow.run)
        await started.wait()
        await anyio.wait_all_tasks_blocked()
        t0 = time.monotonic()
        tg.cancel_scope.cancel()
    took = time.monotonic() - t0
    assert took < seconds
    return took


async def test_every_run_is_cancellable_at_once_even_while_others_wait_for_its_nodes(mem_store) -> None:
    started = anyio.Event()

    @af.task
    async def long_shared(k: int) -> int:
        started.set()
        await anyio.sleep(60)
        return k

    @af.task
    async def needs(name: str, x: int = af.depends(long_shared, k=1)) -> int:
        return x

    with anyio.fail_after(10):
        owner = af.Workflow(long_shared(k=1), store=mem_store)
        await _cancelled_within(1.0, started, owner, af.Workflow(needs(name="a"), store=mem_store),
                                af.Workflow(needs(name="b"), store=mem_store))  # fmt: skip

        started = anyio.Event()  # the owner alone, while another run waits for its node
        async with anyio.create_task_group() as waiting:
            waiting.start_soon(af.Workflow(needs(name="c"), store=mem_store).run)
            await _cancelled_within(1.0, started, af.Workflow(long_shared(k=1), store=mem_store))
            waiting.cancel_scope.cancel()


async def test_leaving_af_map_early_is_safe_and_stops_what_is_in_flight(mem_store) -> None:
    af.settings.store = mem_store
    running: set[int] = set()
    stopped: list[int] = []

    @af.task(persist=False)
    async def streamed(i: int) -> int:
        if i == 0:
            return 0
        running.add(i)
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            stopped.append(i)
            raise
        return i

    with anyio.fail_after(10):
        async for out in af.map(streamed, range(100), window=4):
            assert out == 0
            break  # plain `async for`, no aclosing
        for _ in range(10):
            await anyio.sleep(0)  # the caller's own task goes on: it was not cancelled
        gc.collect()
        while sorted(stopped) != sorted(running):
            await anyio.sleep(0.01)
        assert running == {1, 2, 3}

        running.clear()
        stopped.clear()
        async with af.map(streamed, range(100), window=3) as outputs:
            async for _ in outputs:
                break
        assert sorted(stopped) == sorted(running) == [1, 2]  # stopped when the block ends
        with pytest.raises(ZeroDivisionError):
            async for _ in af.map(streamed, range(5), window=2):
                1 / 0  # an error in the loop's body is the caller's, untouched
        await anyio.sleep(0)


def test_runs_on_s3_keep_no_event_loop_alive(s3_store) -> None:
    @af.task
    async def small(i: int) -> int:
        return i

    def loops() -> int:
        gc.collect()
        return sum(isinstance(o, asyncio.AbstractEventLoop) for o in gc.get_objects())

    before = loops()
    for i in range(40):
        assert af.run(small(i=i), store=s3_store) == i
    assert loops() <= before + 1  # none of the 40 finished loops (nor their S3 clients) is kept


def test_thread_bodies_of_concurrent_runs_share_one_limiter(mem_store) -> None:
    lock = threading.Lock()
    now = peak = 0

    @af.task(persist=False)
    def blocking(flow: int, i: int) -> int:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(0.01)
        with lock:
            now -= 1
        return i

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for f in range(40):
                tg.start_soon(af.Workflow([blocking(flow=f, i=i) for i in range(10)], store=mem_store).run)

    af.settings.max_threads = 8
    threads = threading.active_count()
    anyio.run(main, backend=BACKEND)
    assert peak == 8  # 400 bodies of 40 runs, never more than the loop's 8 threads at once
    assert threading.active_count() <= threads + 2 * 8  # (trio keeps a few idle threads cached a while)


async def test_leaving_af_map_early_inside_a_body_stops_its_items(mem_store) -> None:
    started: list[int] = []

    @af.task(persist=False)
    async def slow_item(i: int) -> int:
        if i == 0:
            return 0
        started.append(i)
        await anyio.sleep(60)
        return i

    @af.task(persist=False)
    async def breaks() -> int:
        async for out in af.map(slow_item, range(100), window=4):
            return out  # leaves the stream at once: the three items in flight are not needed
        return -1

    with anyio.fail_after(5):
        result = await af.Workflow(breaks(), store=mem_store).run()
    assert result.ok and sorted(started) == [1, 2, 3]


async def test_a_workflow_run_by_a_body_gives_the_body_s_slot_back(mem_store) -> None:
    @af.task
    async def nested_k() -> int:
        return 1

    @af.task
    async def nested_x() -> int:
        return await nested_k() + 1

    @af.task
    async def nested_a() -> int:
        return await af.Workflow(nested_x(), store=mem_store).run() and 5  # the nested run needs slots too

    with anyio.fail_after(5):
        result = await af.Workflow([nested_a(), nested_x()], store=mem_store, max_concurrency=1).run()
    assert result.ok


async def test_a_static_cycle_made_after_binding_is_a_cycle_error(mem_store) -> None:
    @af.task
    async def linked(name: str, others: list) -> int:
        return 1

    to_b: list[Any] = []
    to_a: list[Any] = []
    a = linked(name="a", others=to_b)
    b = linked(name="b", others=to_a)
    to_b.append(b)  # the lists are changed after binding: a needs b, b needs a
    to_a.append(a)
    with anyio.fail_after(5), pytest.raises(af.CycleError):
        await af.Workflow(a, store=mem_store).run()


def test_thread_bodies_bound_by_max_threads_even_when_abandoned(mem_store) -> None:
    lock = threading.Lock()
    now = peak = 0

    @af.task(persist=False, timeout=0.05)
    def overstays(i: int) -> int:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(0.3)  # past its timeout: abandoned, but still running
        with lock:
            now -= 1
        return i

    async def main() -> None:
        with pytest.raises(af.FlowFailed):
            await af.Workflow([overstays(i=i) for i in range(12)], store=mem_store).run()
        for k in range(3):
            with anyio.move_on_after(0.05):
                await af.Workflow([overstays(i=100 + 10 * k + i) for i in range(4)], store=mem_store).run()

    af.settings.max_threads = 3
    anyio.run(main, backend=BACKEND)
    assert peak <= 3


async def test_thread_bodies_awaiting_thread_children_do_not_deadlock(mem_store) -> None:
    @af.task
    def thread_leaf(i: int) -> int:
        return i

    @af.task
    def thread_parent(j: int) -> int:  # a plain function that needs a child: it hops back to the loop
        return anyio.from_thread.run(lambda: af.gather(thread_leaf(i=j)))[0] + 1

    af.settings.max_threads = 1
    with anyio.fail_after(10):
        result = await af.Workflow([thread_parent(j=j) for j in range(3)], store=mem_store).run()
    assert result.ran == 6


async def test_af_run_inside_a_thread_body_runs_on_the_body_s_loop(mem_store) -> None:
    runs: list[str] = []

    @af.task
    def thread_outer() -> int:
        runs.append("thread_outer")
        return af.run(thread_inner(), store=mem_store)  # a flow needing this very body's node

    @af.task
    def thread_inner(o: int = af.depends("thread_outer")) -> int:
        return o

    @af.task
    def shares() -> int:
        return af.run(base_value(), store=mem_store) + 1

    @af.task
    def base_value() -> int:
        runs.append("base")
        return 41

    with anyio.fail_after(10):
        with pytest.raises(af.FlowFailed) as e:
            await af.Workflow(thread_outer(), store=mem_store).run()
        assert isinstance(e.value.__cause__, af.CycleError) and runs == ["thread_outer"]
        result = await af.Workflow([shares(), base_value()], store=mem_store).run()
    assert result.ok and runs.count("base") == 1  # one loop, one execution of the shared node


def test_abandoned_thread_bodies_keep_no_event_loop_alive(store) -> None:
    @af.task(timeout=0.02)
    def overstay_once(i: int) -> int:
        time.sleep(0.1)
        return i

    def loops() -> int:
        gc.collect()
        return sum(isinstance(o, asyncio.AbstractEventLoop) for o in gc.get_objects())

    before = loops()
    for i in range(5):
        with pytest.raises(af.FlowFailed):
            af.run(overstay_once(i=i), store=store)
    time.sleep(0.3)  # the abandoned threads finish after their loops are gone
    assert loops() <= before + 1
