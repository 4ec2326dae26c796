"""Reliability in one process: cancellation, timeouts, retries, sharing, errors, loop health."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import anyio
import pytest

import asyncflow as af
from asyncflow import testing

from ..conftest import BACKEND, raw_exists, raw_write

pytestmark = pytest.mark.anyio


async def test_cancel_scope_cancels_every_body_and_publishes_nothing_partial(any_store) -> None:
    entered = 0
    all_in = anyio.Event()
    cleaned: list[int] = []

    @af.task
    async def done_early(i: int) -> int:
        return i

    @af.task
    async def hang(i: int) -> int:
        nonlocal entered
        entered += 1
        if entered == 4:
            all_in.set()
        try:
            await anyio.sleep(60)
        finally:
            with anyio.CancelScope(shield=True):
                cleaned.append(i)
        return i

    published = anyio.Event()

    def on_event(e: Any) -> None:
        if type(e).__name__ == "TaskSucceeded" and e.task == "done_early":
            published.set()

    nodes = [done_early(i=0), *[hang(i=i) for i in range(4)]]
    flow = af.Workflow(nodes, store=any_store, max_concurrency=10, on_event=on_event)
    with anyio.fail_after(10):
        with anyio.move_on_after(30) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(flow.run)
                await all_in.wait()
                await published.wait()
                scope.cancel()
    assert sorted(cleaned) == [0, 1, 2, 3]
    assert await raw_exists(flow.target(done_early(i=0)).path)  # finished targets stay
    for i in range(4):
        assert not await raw_exists(flow.target(hang(i=i)).path)  # no partial ones


@pytest.mark.skipif(BACKEND != "asyncio", reason="plain asyncio task.cancel()")
async def test_native_asyncio_task_cancel_propagates(store) -> None:
    started = asyncio.Event()
    cleaned = []

    @af.task
    async def slow() -> int:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append(1)
        return 1

    before = len(asyncio.all_tasks())
    task = asyncio.create_task(af.Workflow(slow(), store=store).run())  # what a web framework does
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [1]
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) <= before  # nothing leaked


async def test_retries_back_off_on_an_injected_clock(store) -> None:
    tries = []

    @af.task(retries=4, retry_delay=10.0)
    async def flaky() -> int:
        tries.append(1)
        if len(tries) < 4:
            raise ConnectionError("again")
        return 7

    t0 = time.monotonic()
    flow = af.Workflow(flaky(), store=store)
    with testing.instant_retries() as slept:
        await flow.run()
    assert slept == [10.0, 20.0, 40.0]
    assert time.monotonic() - t0 < 5  # no wall-clock waits
    assert await flow.output() == 7


async def test_a_hundred_concurrent_flows_share_their_common_nodes(mem_store) -> None:
    counts: dict[str, int] = {}
    gate = anyio.Event()

    @af.task
    async def shared(k: int) -> int:
        counts[f"s{k}"] = counts.get(f"s{k}", 0) + 1
        await gate.wait()
        return k

    @af.task
    async def own(flow: int, j: int, parts: list = af.depends(shared, k=0)) -> int:
        counts[f"o{flow}.{j}"] = counts.get(f"o{flow}.{j}", 0) + 1
        return sum(await af.gather(*[shared(k=k) for k in range(10)])) + j

    results: dict[int, list[Any]] = {}

    async def one_flow(f: int) -> None:
        flow = af.Workflow([own(flow=f, j=j) for j in range(5)], store=mem_store, max_concurrency=8)
        await flow.run()
        results[f] = list((await flow.outputs(own)).values())

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for f in range(100):
                tg.start_soon(one_flow, f)
            await anyio.wait_all_tasks_blocked()
            gate.set()
    assert {k: v for k, v in counts.items() if k.startswith("s")} == {f"s{k}": 1 for k in range(10)}
    assert sum(v for k, v in counts.items() if k.startswith("o")) == 500
    assert all(sorted(r) == [45 + j for j in range(5)] for r in results.values())


async def test_cancelling_the_run_executing_a_shared_node_is_prompt_and_another_takes_over(mem_store) -> None:
    release = anyio.Event()
    started = anyio.Event()
    bodies = []

    @af.task
    async def common() -> int:
        bodies.append(1)
        started.set()
        await release.wait()
        return 99

    @af.task
    async def user(name: str, x: int = af.depends(common)) -> str:
        return f"{name}:{x}"

    out: dict[str, str] = {}

    async def caller(name: str) -> None:
        flow = af.Workflow(user(name=name), store=mem_store)
        await flow.run()
        out[name] = await flow.output()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            async with anyio.create_task_group() as owner:
                owner.start_soon(caller, "a")  # a runs `common`...
                await started.wait()
                tg.start_soon(caller, "b")  # ...b waits for it
                await anyio.wait_all_tasks_blocked()
                owner.cancel_scope.cancel()  # a goes away
            assert out == {}  # a's run is over at once, though `common` was never released
            await anyio.wait_all_tasks_blocked()
            assert bodies == [1, 1]  # b runs it itself
            release.set()
    assert out == {"b": "b:99"}  # b's result is what it would have been


async def test_a_shared_node_is_cancelled_when_its_last_caller_leaves(mem_store) -> None:
    started = anyio.Event()
    cancelled = []

    @af.task
    async def common() -> int:
        started.set()
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            cancelled.append(1)
            raise
        return 1

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(af.Workflow(common(), store=mem_store).run)
            await started.wait()
            tg.start_soon(af.Workflow(common(), store=mem_store).run)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert cancelled == [1]


async def test_upstream_target_deleted_between_check_and_read(store) -> None:
    @af.task
    async def up() -> int:
        return 1

    @af.task
    async def down(x: int = af.depends(up)) -> int:
        return x + 1

    await af.Workflow(up(), store=store).run()
    target = af.Workflow(up(), store=store).target()
    with testing.fault("after_plan", lambda _: os.unlink(target.path)), pytest.raises(af.FlowFailed) as e:
        await af.Workflow(down(), store=store).run()
    cause = e.value.__cause__
    assert isinstance(cause, af.TargetError)
    assert cause.path == target.path  # named, never a bare FileNotFoundError


@pytest.mark.parametrize(
    ("fmt", "bad"),
    [("json", b'{"a": [1, 2'), ("json", b"\xff\xfe garbage"), ("pickle", b"\x80\x05\x95trunc"), ("msgpack", b"\xc1")],
)
async def test_corrupt_truncated_and_garbage_targets(any_store, fmt: str, bad: bytes) -> None:
    @af.task(format=fmt)
    async def value() -> dict:
        return {"a": [1, 2, 3]}

    flow = af.Workflow(value(), store=any_store)
    await flow.run()
    await raw_write(flow.target().path, bad)
    with pytest.raises(af.TargetError) as e:
        await flow.output()
    assert e.value.path == flow.target().path
    assert e.value.format == fmt


async def test_storage_errors_are_not_read_as_missing(store, monkeypatch) -> None:
    @af.task
    async def fine() -> int:
        return 1

    @af.task
    async def many(i: int) -> int:
        return i

    flow = af.Workflow(fine(), store=store)
    await flow.run()
    bulk = af.Workflow([many(i=i) for i in range(40)], store=store)
    await bulk.run()

    def denied(path: str, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(af.StorageError, match="Permission denied"):
        await bulk.run()  # a run of many nodes lists their folder: not "missing, so run it again"
    monkeypatch.undo()
    monkeypatch.setattr(os, "stat", denied)
    with pytest.raises(af.StorageError, match="Permission denied"):
        await flow.run()  # a run of a few checks each target
    with pytest.raises(af.StorageError, match="Permission denied"):
        await flow.target().exists()


async def test_the_loop_keeps_answering_while_thread_bodies_block(mem_store) -> None:
    gaps: list[float] = []
    stop = anyio.Event()

    async def heartbeat() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    @af.task(persist=False)
    def blocking(i: int) -> int:
        time.sleep(0.05)  # plain blocking code: runs in a worker thread
        return i

    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        await af.Workflow([blocking(i=i) for i in range(50)], store=mem_store, max_concurrency=10).run()
        stop.set()
    assert len(gaps) > 10
    assert max(gaps) < 1.5  # generous: shared machines are noisy; a blocked loop would be >= 2.5 s


async def test_memory_per_node_of_a_large_dynamic_fan_out_stays_small(mem_store) -> None:
    import tracemalloc

    @af.task(persist=False)
    async def tiny(i: int) -> int:
        return i

    @af.task(persist=False)
    async def spawn(n: int) -> int:
        return len(await af.gather(*[tiny(i=i) for i in range(n)]))

    tracemalloc.start()
    try:
        flow = af.Workflow(spawn(n=100_000), store=mem_store, max_concurrency=16)
        result = await flow.run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.ran == 100_001
    assert result.peak_concurrency <= 16
    assert peak / 100_000 < 3000  # bytes per node, every structure included


def test_async_filesystems_are_never_shared_across_event_loops(s3_store) -> None:
    @af.task
    async def n(i: int) -> int:
        return i

    assert af.run(n(i=1), store=s3_store) == 1  # one event loop...
    assert asyncio.run(af.Workflow(n(i=2), store=s3_store).run()).ran == 1  # ...then another
    assert af.run(n(i=1), store=s3_store) == 1


def test_thread_body_timeout_never_publishes_late(store) -> None:
    finished = threading.Event()

    @af.task(timeout=0.05)
    def slow() -> int:
        time.sleep(0.3)
        finished.set()
        return 1

    with pytest.raises(af.FlowFailed):
        af.run(slow(), store=store)
    assert finished.wait(5)
    time.sleep(0.1)
    assert not os.path.exists(os.path.join(store, "slow"))
