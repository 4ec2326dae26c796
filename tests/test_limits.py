"""Limits are the event loop's, shared by every run: `@af.task(limit=N)`, named pools, and their
statistics. `max_concurrency` stays a bound per run."""

from __future__ import annotations

import anyio
import pytest

import asyncflow as af

from .test_scheduler import Gauge

pytestmark = pytest.mark.anyio


async def _all(flows: list[af.Workflow]) -> list[af.RunResult]:
    results: list[af.RunResult] = []

    async def one(flow: af.Workflow) -> None:
        results.append(await flow.run())

    async with anyio.create_task_group() as tg:
        for flow in flows:
            tg.start_soon(one, flow)
    return results


async def test_a_task_limit_holds_across_concurrent_flows(mem_store) -> None:
    gauge = Gauge()

    @af.task(persist=False, limit=2)
    async def lim_call(i: int) -> int:
        await gauge.hold(0.005)
        return i

    flows = [af.Workflow([lim_call(i=10 * f + i) for i in range(5)], store=mem_store) for f in range(10)]
    results = await _all(flows)
    assert sum(r.ran for r in results) == 50
    assert gauge.peak == 2  # not 20: one limit for the event loop, not one per run


async def test_200_flows_naming_a_pool_of_4_never_run_more_than_4_in_it(mem_store) -> None:
    gauge = Gauge()

    @af.task(persist=False, limit="db")
    async def lim_query(i: int) -> int:
        await gauge.hold(0.001)
        return i

    flows = [af.Workflow(lim_query(i=i), store=mem_store, limits={"db": 4}) for i in range(200)]
    results = await _all(flows)
    assert all(r.ran == 1 for r in results) and len(results) == 200
    assert gauge.peak == 4


async def test_max_concurrency_stays_a_bound_per_run(mem_store) -> None:
    gauge = Gauge()

    @af.task(persist=False)
    async def lim_free(i: int) -> int:
        await gauge.hold(0.02)
        return i

    flows = [af.Workflow([lim_free(i=10 * f + i) for i in range(6)], store=mem_store, max_concurrency=2)
             for f in range(3)]  # fmt: skip
    await _all(flows)
    assert gauge.peak == 6  # 2 for each of the 3 runs


async def test_the_latest_size_given_wins_even_while_runs_hold_the_pool(mem_store) -> None:
    gauge = Gauge()

    @af.task(persist=False, limit="resized")
    async def lim_slow(i: int) -> int:
        await gauge.hold(0.02)
        return i

    async with anyio.create_task_group() as tg:
        tg.start_soon(af.Workflow([lim_slow(i=i) for i in range(20)], store=mem_store, limits={"resized": 1}).run)
        await anyio.sleep(0.05)
        assert gauge.peak == 1
        tg.start_soon(af.Workflow([lim_slow(i=100 + i) for i in range(20)], store=mem_store, limits={"resized": 3}).run)
    assert gauge.peak == 3  # the first run's waiting nodes got the new tokens too


async def test_a_cancelled_run_waiting_for_a_pool_leaves_its_tokens_to_the_others(mem_store) -> None:
    gauge = Gauge()

    @af.task(persist=False, limit="narrow")
    async def lim_narrow(i: int) -> int:
        await gauge.hold(0.01)
        return i

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            doomed = af.Workflow([lim_narrow(i=i) for i in range(30)], store=mem_store, limits={"narrow": 2})
            tg.start_soon(doomed.run)
            await anyio.sleep(0.015)
            tg.cancel_scope.cancel()  # the doomed run: cancelled with its nodes queued on the pool
        survivor = await af.Workflow([lim_narrow(i=100 + i) for i in range(10)], store=mem_store,
                                     limits={"narrow": 2}).run()  # fmt: skip
    assert survivor.ran == 10
    assert gauge.now == 0


async def test_limit_statistics_in_the_snapshot_and_the_result(mem_store) -> None:
    release = anyio.Event()

    @af.task(persist=False, limit="stats")
    async def lim_stat(i: int) -> int:
        await release.wait()
        return i

    async with anyio.create_task_group() as tg:
        handle = af.Workflow([lim_stat(i=i) for i in range(5)], store=mem_store, limits={"stats": 2}).start(tg)
        await anyio.wait_all_tasks_blocked()
        snap = handle.snapshot()
        assert snap["limits"]["stats"] == {"size": 2, "borrowed": 2, "waiting": 3, "peak_borrowed": 2,
                                           "peak_waiting": 3}  # fmt: skip
        release.set()
    result = await handle.wait()
    assert result is not None
    assert result.limits["stats"]["peak_borrowed"] == 2 and result.limits["stats"]["borrowed"] == 0


async def test_the_run_report_shows_the_pools_it_used(mem_store, tmp_path) -> None:
    @af.task(persist=False, limit="report_pool")
    async def lim_reported(i: int) -> int:
        await anyio.sleep(0.005)
        return i

    result = await af.Workflow([lim_reported(i=i) for i in range(6)], store=mem_store,
                               limits={"report_pool": 2}).run()  # fmt: skip
    result.write_report(str(tmp_path / "r.html"))
    html = (tmp_path / "r.html").read_text()
    row = html.split('<table id="limits">')[1].split("</table>")[0]
    assert "<td>report_pool</td><td>2</td><td>2</td><td>4</td>" in row  # size, peak in use, peak waiting


async def test_a_token_freed_while_the_next_waiter_s_run_is_busy_is_never_lost(mem_store) -> None:
    # run A (one slot) queues x on the pool, then its body z resumes needing the pool too; run B
    # holds the pool's only token. When B gives it back, A must go on (found by a red team: the
    # token went to x, which could not start while z held A's slot waiting for the token).
    gate_c, gate_w, z_go, z_started = anyio.Event(), anyio.Event(), anyio.Event(), anyio.Event()

    @af.task(persist=False)
    async def lim_c() -> int:
        await gate_c.wait()
        return 1

    @af.task(persist=False, limit="handover")
    async def lim_z() -> int:
        z_started.set()
        await z_go.wait()
        return await lim_c()

    @af.task(persist=False, limit="handover")
    async def lim_x() -> int:
        return 2

    @af.task(persist=False, limit="handover")
    async def lim_w() -> int:
        await gate_w.wait()
        return 3

    a = af.Workflow([lim_x(), lim_z()], store=mem_store, max_concurrency=1, limits={"handover": 1})
    b = af.Workflow(lim_w(), store=mem_store, limits={"handover": 1})
    results: list[af.RunResult] = []

    async def run(flow: af.Workflow) -> None:
        results.append(await flow.run())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, a)
            await z_started.wait()
            tg.start_soon(run, b)
            for gate in (z_go, gate_c, gate_w):
                await anyio.sleep(0.02)
                gate.set()
    assert sorted(r.ran for r in results) == [1, 3]
