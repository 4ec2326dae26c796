"""Dynamic dependencies: awaiting, gathering, returning and yielding nodes, to any depth."""

from __future__ import annotations

import anyio
import pytest

import asyncflow as af

pytestmark = pytest.mark.anyio


@af.task
async def square(x: int) -> int:
    return x * x


async def test_await_node_inside_a_body(store) -> None:
    @af.task
    async def squares_total(n: int) -> int:
        acc = 0
        for i in range(n):
            acc += await square(x=i)
        return acc

    flow = af.Workflow(squares_total(n=4), store=store)
    result = await flow.run()
    assert await flow.output() == 0 + 1 + 4 + 9
    assert result.ran == 5


async def test_fully_dynamic_parameter_computed_at_run_time(store) -> None:
    """d6tflow's "Fully Dynamic" case ("doesn't work yet" there): the upstream parameter comes from data."""

    @af.task
    async def task_a(param: int) -> int:
        return param * 10

    @af.task
    async def task_b(param: int) -> int:
        value = param + 1  # computed while running
        return await task_a(param=value)

    flow = af.Workflow(task_b(param=1), store=store)
    await flow.run()
    assert await flow.output() == 20
    assert await af.Workflow(task_a(param=2), store=store).output() == 20


async def test_gather_runs_children_concurrently(store) -> None:
    started = 0
    both = anyio.Event()

    @af.task(persist=False)
    async def child(i: int) -> int:
        nonlocal started
        started += 1
        if started == 2:
            both.set()
        with anyio.fail_after(5):
            await both.wait()  # only returns if the two children run at the same time
        return i

    @af.task
    async def parent() -> list[int]:
        return await af.gather(child(i=1), child(i=2))

    with anyio.fail_after(10):
        flow = af.Workflow(parent(), store=store)
        await flow.run()
    assert await flow.output() == [1, 2]


async def test_returned_nodes_keep_their_structure(any_store) -> None:
    store = any_store

    @af.task
    async def generate(n: int) -> dict:
        return {"squares": [square(x=i) for i in range(n)], "last": square(x=n), "const": 7}

    flow = af.Workflow(generate(n=3), store=store)
    await flow.run()
    assert await flow.output() == {"squares": [0, 1, 4], "last": 9, "const": 7}


async def test_flyte_generate_others_yields_and_assembles(any_store) -> None:
    store = any_store

    @af.task
    async def other_task(index: int) -> int:
        return index + 100

    @af.task
    async def generate_others(tasks_count: int):  # type: ignore[no-untyped-def]
        res = []
        for i in range(tasks_count):
            out = yield other_task(index=i)
            res.append(out)
        assert res == [100 + i for i in range(tasks_count)]

    flow = af.Workflow(generate_others(tasks_count=3), store=store)
    await flow.run()
    assert await flow.output() == [100, 101, 102]


async def test_collector_yielding_collections(store) -> None:
    @af.task
    async def collector():  # type: ignore[no-untyped-def]
        pair = yield [square(x=2), square(x=3)]
        assert pair == [4, 9]
        yield {"a": square(x=4)}
        yield "not a node"

    flow = af.Workflow(collector(), store=store)
    await flow.run()
    assert await flow.output() == [[4, 9], {"a": 16}, "not a node"]


async def test_recursion_to_any_depth(any_store) -> None:
    store = any_store

    @af.task
    async def fib(n: int) -> int:
        if n < 2:
            return n
        a, b = await af.gather(fib(n=n - 1), fib(n=n - 2))
        return a + b

    flow = af.Workflow(fib(n=15), store=store, max_concurrency=4)
    result = await flow.run()
    assert await flow.output() == 610
    assert result.ran == 16  # each fib(k) once, however many callers


async def test_dynamic_children_under_max_concurrency_one_do_not_deadlock(mem_store) -> None:
    @af.task(persist=False)
    async def dleaf(i: int) -> int:
        await anyio.sleep(0)
        return i

    @af.task(persist=False)
    async def fan(n: int) -> int:
        return sum(await af.gather(*[dleaf(i=i) for i in range(n)]))

    with anyio.fail_after(60):
        flow = af.Workflow(fan(n=10_000), store=mem_store, max_concurrency=1)
        result = await flow.run()
    assert result.ran == 10_001
    assert result.peak_concurrency == 1


async def test_child_failure_reaches_the_body_as_task_failed(store) -> None:
    @af.task
    async def boom(x: int) -> int:
        raise ValueError(f"bad {x}")

    @af.task
    async def careful() -> str:
        try:
            await boom(x=1)
        except af.TaskFailed as e:
            assert e.node_id == "boom[x=1]"
            assert isinstance(e.__cause__, ValueError)
            return "handled"
        return "not reached"

    flow = af.Workflow(careful(), store=store)
    result = await flow.run()
    assert result.ok
    assert await flow.output() == "handled"
    assert result["boom[x=1]"].status == "failed"


async def test_unhandled_child_failure_fails_the_parent_and_the_flow(store) -> None:
    @af.task
    async def boom() -> int:
        raise ValueError("deep")

    @af.task
    async def parent() -> int:
        return await boom()

    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow(parent(), store=store).run()
    assert isinstance(e.value.__cause__, ValueError)
    assert str(e.value).startswith("boom failed: ValueError: deep")


async def test_yielded_child_failure_is_thrown_into_the_generator(store) -> None:
    @af.task
    async def boom() -> int:
        raise KeyError("k")

    @af.task
    async def gen():  # type: ignore[no-untyped-def]
        try:
            yield boom()
        except af.TaskFailed:
            yield "recovered"

    flow = af.Workflow(gen(), store=store)
    await flow.run()
    assert await flow.output() == ["recovered"]


async def test_dynamic_cycle_raises_cycle_error_instead_of_hanging(store) -> None:
    @af.task
    async def ping(n: int) -> int:
        return await pong(n=n)

    @af.task
    async def pong(n: int) -> int:
        return await ping(n=n)

    @af.task
    async def selfish(n: int) -> int:
        return await selfish(n=n)

    with anyio.fail_after(10):
        with pytest.raises(af.FlowFailed) as e:
            await af.Workflow(ping(n=1), store=store).run()
    cause = e.value.__cause__
    assert isinstance(cause, af.CycleError)
    assert cause.path == ["pong[n=1]", "ping[n=1]", "pong[n=1]"]
    with anyio.fail_after(10):
        with pytest.raises(af.FlowFailed) as e:
            await af.Workflow(selfish(n=1), store=store).run()
    assert isinstance(e.value.__cause__, af.CycleError)
    assert e.value.__cause__.path == ["selfish[n=1]", "selfish[n=1]"]


async def test_dynamic_cycle_through_a_static_dependency(store) -> None:
    @af.task
    async def top() -> int:
        return await bottom()

    @af.task
    async def bottom(x: int = af.depends(top)) -> int:
        return x

    with anyio.fail_after(10):
        with pytest.raises(af.FlowFailed) as e:
            await af.Workflow(top(), store=store).run()
    assert isinstance(e.value.__cause__, af.CycleError)


async def test_await_node_outside_any_workflow_uses_the_default_engine(tmp_path) -> None:
    af.settings.store = str(tmp_path / "default")
    assert await square(x=5) == 25
    assert (await square(x=5).complete()) is True
    assert await square(x=5).load() == 25
    assert await af.gather(square(x=1), square(x=2)) == [1, 4]


async def test_await_failing_node_outside_a_workflow_raises_task_failed() -> None:
    @af.task
    async def broken() -> int:
        raise RuntimeError("nope")

    with pytest.raises(af.TaskFailed) as e:
        await broken()
    assert e.value.node_id == "broken"
    assert isinstance(e.value.__cause__, RuntimeError)


async def test_dynamic_children_show_in_preview_after_a_run(store) -> None:
    @af.task
    async def dyn(n: int) -> int:
        return sum(await af.gather(*[square(x=i) for i in range(n)]))

    flow = af.Workflow(dyn(n=2), store=store)
    assert str(await flow.preview()) == "└─ dyn[n=2] PENDING"
    await flow.run()
    assert str(await flow.preview()) == "\n".join(
        ["└─ dyn[n=2] COMPLETE", "   ├─ square[x=0] COMPLETE", "   └─ square[x=1] COMPLETE"]
    )


async def test_thread_body_can_return_nodes(store) -> None:
    @af.task
    def plain(n: int) -> list:
        return [square(x=i) for i in range(n)]

    flow = af.Workflow(plain(n=3), store=store)
    await flow.run()
    assert await flow.output() == [0, 1, 4]
