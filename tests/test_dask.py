"""Task bodies on a real dask.distributed LocalCluster (2 worker processes on 127.0.0.1)."""

from __future__ import annotations

import os
import time

import anyio
import pytest

pytest.importorskip("distributed")

import asyncflow as af

from . import _dask_tasks as t

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # dask's asynchronous client is asyncio's


async def test_bodies_run_on_workers_which_write_the_targets(store) -> None:
    root = t.gather_pids(parts=[t.crunch(i=i) for i in range(12)])
    flow = af.Workflow([root, t.async_on_worker(i=1)], store=store)
    result = await flow.run()
    assert result.ran == 14
    pids = await flow.output(root)
    assert os.getpid() not in pids and len(pids) >= 1
    assert await flow.output(t.async_on_worker(i=1)) != os.getpid()  # async bodies too
    target = flow.target(t.crunch(i=3))
    assert os.path.exists(target.path)  # written by the worker
    assert await target.load() == [
        pids[0] if len(pids) == 1 else (await target.load())[0],
        sum(k * k for k in range(10_003)),
    ]
    again = await af.Workflow([root], store=store).run()
    assert again.ran == 0 and again.skipped == 1  # fingerprint records written by the scheduler


async def test_a_worker_body_may_return_nodes(store) -> None:
    flow = af.Workflow(t.returns_nodes(n=3), store=store)
    await flow.run()
    out = await flow.output()
    assert [x[1] for x in out] == [sum(k * k for k in range(10_000 + i)) for i in range(3)]


@pytest.mark.parametrize("task", [t.awaits_a_node, t.yields_a_node])
async def test_awaiting_or_yielding_on_a_worker_is_a_clear_error(store, task) -> None:
    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow(task(), store=store).run()
    assert "return the nodes instead" in str(e.value)


async def test_remote_exceptions_arrive_with_their_remote_traceback(store) -> None:
    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow(t.raises(), store=store).run()
    cause = e.value.__cause__
    assert isinstance(cause, ValueError) and str(cause) == "raised on a worker"
    assert "_dask_tasks.py" in str(e.value)  # file:line of the raise, on the worker


async def test_a_killed_worker_ends_in_a_retry_not_a_hang(store, tmp_path) -> None:
    with anyio.fail_after(120):
        flow = af.Workflow(t.dies_once(marker=str(tmp_path / "died")), store=store)
        await flow.run()
    assert (tmp_path / "died").exists()  # the first try killed its worker process
    assert await flow.output() == 7


async def test_cancelling_the_run_cancels_its_dask_futures(store) -> None:
    t0 = time.monotonic()
    with anyio.move_on_after(8):  # long enough to start the cluster and submit
        await af.Workflow([t.sleeps(i=i) for i in range(4)], store=store).run()
    assert time.monotonic() - t0 < 25  # returned promptly: futures cancelled, cluster closed
    assert not os.path.exists(os.path.join(store, "sleeps"))


SCRIPT = """
import asyncio, json, os, sys
import asyncflow as af
from helpers import scale  # a module beside the script: on the workers neither is installed

DASK = af.DaskExecutor(sys.argv[1])

@af.task(executor=DASK)
def square(i: int) -> list[int]:
    return [os.getpid(), scale(i * i)]

@af.task
async def total(parts: list[list[int]]) -> dict:
    return {"pids": sorted({p[0] for p in parts}), "sum": sum(p[1] for p in parts)}

if __name__ == "__main__":
    out = af.run(total(parts=[square(i=i) for i in range(8)]), store=sys.argv[2])
    again = asyncio.run(af.Workflow(total(parts=[square(i=i) for i in range(8)]), store=sys.argv[2]).run())
    print(json.dumps({"me": os.getpid(), "pids": out["pids"], "sum": out["sum"], "ran": again.ran}))
"""


def test_a_script_runs_on_a_cluster_of_dask_commands_with_no_setup(tmp_path) -> None:
    """`dask scheduler` and `dask worker` started by hand, in a folder where the script and its
    helper module are not: the bodies (and what they use of the user's code) travel by value."""
    import json
    import socket
    import subprocess
    import sys
    from pathlib import Path

    dask = Path(sys.executable).parent / "dask"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    elsewhere = tmp_path / "worker-home"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", ":0"], cwd=elsewhere, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    worker = subprocess.Popen([str(dask), "worker", address, "--nworkers", "2", "--nthreads", "1",
                               "--host", "127.0.0.1", "--dashboard-address", ":0"], cwd=elsewhere, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        project = tmp_path / "project"
        project.mkdir()
        (project / "deeper.py").write_text("FACTOR = 10\n")  # imported by helpers: shipped too
        (project / "helpers.py").write_text(
            "import msgspec\nfrom deeper import FACTOR\n\nclass Scaled(msgspec.Struct):\n    value: int\n\n"
            "def scale(x):\n    return Scaled(value=FACTOR * x).value\n"
        )  # a Struct of the user's, which cloudpickle could not rebuild by value
        (project / "pipeline.py").write_text(SCRIPT)
        out = subprocess.run([sys.executable, "pipeline.py", address, str(tmp_path / "store")], cwd=project,
                             capture_output=True, text=True, timeout=180, env=env)  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["sum"] == 10 * sum(i * i for i in range(8)) and got["ran"] == 0  # all complete afterwards
        assert got["pids"] and got["me"] not in got["pids"]  # on the cluster's workers, not in the script's process
        assert len(list((tmp_path / "store" / "square").glob("*.json"))) == 8  # written by the workers
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
        for proc in (worker, scheduler):
            proc.wait(30)


async def test_a_task_with_several_outputs_runs_on_a_worker(store) -> None:
    flow = af.Workflow([t.split_on_worker(n=3)], store=store)
    result = await flow.run()
    assert result.ran == 1
    whole = await flow.output(t.split_on_worker(n=3))
    assert whole["train"] == [0, 1, 2] and whole["test"] != [os.getpid()]  # built on a worker
    assert (await af.Workflow([t.split_on_worker(n=3)], store=store).run()).ran == 0  # complete
    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow([t.split_wrong_on_worker(n=1)], store=store).run()
    assert "declares outputs train, test and returned a dict with 'train'" in str(e.value)  # said as locally


async def test_bodies_ready_together_travel_in_a_few_dask_tasks_each_with_its_own_result(store) -> None:
    nodes = [t.where_it_ran(i=i) for i in range(40)]
    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow(nodes, store=store, max_concurrency=40).run()
    result = e.value.result
    failed = {r.node_id for r in result.records.values() if r.status == "failed"}
    assert failed == {f"where_it_ran[i={i}]" for i in range(40) if i % 7 in (3, 5)}  # each body's own error
    assert "body 3 fails alone" in str(e.value) and "_dask_tasks.py" in str(e.value)  # with its remote line
    flow = af.Workflow(nodes, store=store)
    tasks = {await flow.output(n) for n in nodes if n.params["i"] % 7 not in (3, 5)}  # the others' were written
    assert 1 <= len(tasks) <= 8  # 29 bodies in a few Dask tasks (about two a worker thread), not 29


async def test_a_body_with_a_timeout_travels_alone_so_others_never_eat_its_time(store) -> None:
    nodes = [t.timed(i=i) for i in range(12)]  # i=0 sleeps past its timeout; the others are instant
    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow(nodes, store=store, max_concurrency=12).run()
    failed = {r.node_id for r in e.value.result.records.values() if r.status == "failed"}
    assert failed == {"timed[i=0]"}


async def test_two_concurrent_runs_share_the_local_cluster_until_the_last_ends(store) -> None:
    results = {}

    async def one(name: str, nodes: list[af.Node]) -> None:
        results[name] = await af.Workflow(nodes, store=store).run()

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "long", [t.naps(i=i) for i in range(8)])
        tg.start_soon(one, "short", [t.crunch(i=100)])  # ends first: the cluster must stay up for the other
    assert results["short"].ran == 1 and results["long"].ran == 8
