"""The scheduler: bounded concurrency, pools, single execution of shared nodes, failures, retries,
timeouts and cancellation."""

from __future__ import annotations

import threading

import anyio
import pytest

import asyncflow as af
from asyncflow import events

pytestmark = pytest.mark.anyio


class Gauge:
    """Counts bodies running at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def hold(self, seconds: float = 0.01) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await anyio.sleep(seconds)
        finally:
            self.now -= 1


async def test_max_concurrency_bounds_running_bodies(mem_store) -> None:
    gauge = Gauge()

    @af.task(persist=False)
    async def work(i: int) -> int:
        await gauge.hold()
        return i

    result = await af.Workflow([work(i=i) for i in range(30)], store=mem_store, max_concurrency=3).run()
    assert result.ran == 30
    assert gauge.peak == 3
    assert result.peak_concurrency == 3


async def test_default_max_concurrency_is_100(mem_store) -> None:
    gauge = Gauge()

    @af.task(persist=False)
    async def work(i: int) -> int:
        await gauge.hold(0.05)
        return i

    await af.Workflow([work(i=i) for i in range(150)], store=mem_store).run()
    assert gauge.peak == 100


async def test_named_pool_and_int_limit(mem_store) -> None:
    db, api = Gauge(), Gauge()

    @af.task(persist=False, limit="db")
    async def query(i: int) -> int:
        await db.hold()
        return i

    @af.task(persist=False, limit=2)
    async def call(i: int) -> int:
        await api.hold()
        return i

    nodes = [query(i=i) for i in range(12)] + [call(i=i) for i in range(12)]
    result = await af.Workflow(nodes, store=mem_store, max_concurrency=10, limits={"db": 3}).run()
    assert result.ran == 24
    assert db.peak == 3
    assert api.peak == 2


async def test_unknown_pool_name_fails_before_running(mem_store) -> None:
    ran = []

    @af.task(persist=False, limit="gpu")
    async def fit() -> int:
        ran.append(1)
        return 1

    with pytest.raises(af.ParameterError, match=r"limit 'gpu'.*limits=\{'gpu': N\}"):
        await af.Workflow(fit(), store=mem_store).run()
    assert ran == []


async def test_parent_in_a_limited_pool_awaiting_children_of_the_same_pool(mem_store) -> None:
    @af.task(persist=False, limit="one")
    async def nest(depth: int) -> int:
        if depth == 0:
            return 0
        return 1 + await nest(depth=depth - 1)

    with anyio.fail_after(10):
        flow = af.Workflow(nest(depth=5), store=mem_store, limits={"one": 1})
        await flow.run()
    assert await flow.output() == 5


async def test_node_needed_by_many_runs_once_in_a_flow(store) -> None:
    calls = []

    @af.task
    async def shared() -> int:
        calls.append(1)
        await anyio.sleep(0.01)
        return 42

    @af.task
    async def user(i: int, s: int = af.depends(shared)) -> int:
        return s + i

    @af.task
    async def dyn_user(i: int) -> int:
        return await shared() + i

    nodes = [user(i=i) for i in range(5)] + [dyn_user(i=i) for i in range(5)]
    await af.Workflow(nodes, store=store).run()
    assert calls == [1]


async def test_node_shared_by_concurrent_workflows_runs_once(store) -> None:
    calls = []
    release = anyio.Event()

    @af.task
    async def expensive() -> int:
        calls.append(1)
        await release.wait()
        return 7

    @af.task
    async def consumer(i: int, x: int = af.depends(expensive)) -> int:
        return x + i

    results = {}

    async def one(i: int) -> None:
        flow = af.Workflow(consumer(i=i), store=store)
        await flow.run()
        results[i] = await flow.output()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
            await anyio.wait_all_tasks_blocked()
            release.set()
    assert calls == [1]
    assert results == {i: 7 + i for i in range(20)}


async def test_independent_branches_go_on_after_a_failure(store) -> None:
    @af.task
    async def bad() -> int:
        raise ValueError("broken branch")

    @af.task
    async def good(i: int) -> int:
        await anyio.sleep(0.01)
        return i

    @af.task
    async def after_bad(x: int = af.depends(bad)) -> int:
        return x

    flow = af.Workflow([after_bad(), good(i=1), good(i=2)], store=store)
    with pytest.raises(af.FlowFailed) as e:
        await flow.run()
    result = e.value.result
    assert result.ran == 2
    assert result.failed == 1
    assert result["after_bad"].status == "upstream_failed"
    assert await af.Workflow(good(i=2), store=store).output() == 2


async def test_fail_fast_cancels_the_rest(store) -> None:
    cancelled = []

    @af.task
    async def bad() -> int:
        await anyio.sleep(0.01)
        raise ValueError("stop")

    @af.task
    async def slow(i: int) -> int:
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.append(i)
            raise
        return i

    with anyio.fail_after(10):
        with pytest.raises(af.FlowFailed) as e:
            await af.Workflow([bad(), slow(i=1), slow(i=2)], store=store, fail_fast=True).run()
    assert sorted(cancelled) == [1, 2]
    assert e.value.result.cancelled == 2
    assert isinstance(e.value.__cause__, ValueError)


async def test_retries_with_doubling_delay(store) -> None:
    tries = []
    seen: list[events.TaskRetrying] = []

    @af.task(retries=3, retry_delay=0.01)
    async def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("try again")
        return "ok"

    def on_event(e: object) -> None:
        if isinstance(e, events.TaskRetrying):
            seen.append(e)

    flow = af.Workflow(flaky(), store=store, on_event=on_event)
    result = await flow.run()
    assert await flow.output() == "ok"
    assert len(tries) == 3
    assert result["flaky"].attempts == 3
    assert [e.delay for e in seen] == [0.01, 0.02]


async def test_retries_exhausted_fail_with_the_last_error(store) -> None:
    @af.task(retries=1)
    async def always() -> int:
        raise ConnectionError("down")

    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow(always(), store=store).run()
    assert e.value.result["always"].attempts == 2
    assert isinstance(e.value.__cause__, ConnectionError)


async def test_timeout_per_try_for_async_bodies(store) -> None:
    tries = []

    @af.task(timeout=0.05, retries=1)
    async def sleepy() -> int:
        tries.append(1)
        await anyio.sleep(10)
        return 1

    with anyio.fail_after(5):
        with pytest.raises(af.FlowFailed) as e:
            await af.Workflow(sleepy(), store=store).run()
    assert len(tries) == 2
    assert isinstance(e.value.__cause__, TimeoutError)
    assert "timed out after 0.05s" in str(e.value)
    assert (await af.Workflow(sleepy(), store=store).preview())["sleepy"] != "COMPLETE"


async def test_timeout_of_a_thread_body_returns_at_the_deadline_and_publishes_nothing(store) -> None:
    finished = threading.Event()

    @af.task(timeout=0.05)
    def blocking() -> int:
        finished.wait(5)
        return 1

    with anyio.fail_after(3):
        with pytest.raises(af.FlowFailed) as e:
            await af.Workflow(blocking(), store=store).run()
    assert isinstance(e.value.__cause__, TimeoutError)
    finished.set()
    await anyio.sleep(0.05)
    assert (await af.Workflow(blocking(), store=store).preview())["blocking"] == "PENDING"


async def test_cancelling_run_cancels_running_bodies_promptly(store) -> None:
    started = 0
    cleaned = []
    all_started = anyio.Event()

    @af.task
    async def hang(i: int) -> int:
        nonlocal started
        started += 1
        if started == 5:
            all_started.set()
        try:
            await anyio.sleep(60)
        finally:
            cleaned.append(i)
        return i

    flow = af.Workflow([hang(i=i) for i in range(5)], store=store)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(flow.run)
            await all_started.wait()
            tg.cancel_scope.cancel()
    assert sorted(cleaned) == [0, 1, 2, 3, 4]
    assert (await flow.preview()).by_id() == {f"hang[i={i}]": "PENDING" for i in range(5)}


async def test_plain_functions_run_in_worker_threads(store) -> None:
    main = threading.get_ident()

    @af.task
    def where() -> bool:
        return threading.get_ident() != main

    flow = af.Workflow(where(), store=store)
    await flow.run()
    assert await flow.output() is True


async def test_thread_bodies_are_not_capped_by_the_default_thread_limiter(mem_store) -> None:
    barrier = threading.Barrier(50, timeout=10)

    @af.task(persist=False)
    def meet(i: int) -> int:
        barrier.wait()  # needs 50 threads at once: more than anyio's default 40
        return i

    with anyio.fail_after(20):
        result = await af.Workflow([meet(i=i) for i in range(50)], store=mem_store).run()
    assert result.ran == 50


async def test_ready_nodes_start_in_the_order_they_were_declared(mem_store) -> None:
    started: list[int] = []

    @af.task(persist=False)
    async def ordered(i: int) -> int:
        started.append(i)
        await anyio.sleep(0)
        return i

    @af.task(persist=False)
    async def ordered_root(parts: list[int]) -> int:
        return len(parts)

    await af.Workflow([ordered(i=i) for i in range(8)], store=mem_store).run()
    import sniffio

    if sniffio.current_async_library() == "asyncio":  # (trio may start new tasks in another order)
        assert started == list(range(8))
    started.clear()
    await af.Workflow(
        ordered_root(parts=[ordered(i=i) for i in range(10, 18)]), store=mem_store, max_concurrency=1
    ).run()
    assert started == list(range(10, 18))
