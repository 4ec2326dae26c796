"""The store's thread batcher (group commit) and local-disk primitives."""

from __future__ import annotations

import os
import threading

import anyio
import pytest

from asyncflow._batcher import ThreadBatcher
from asyncflow._local import TMP_PREFIX, list_folder, write_atomic

pytestmark = pytest.mark.anyio


async def test_batcher_runs_every_call_with_few_thread_hops() -> None:
    batcher = ThreadBatcher()
    threads: set[int] = set()
    hops = 0
    results: dict[int, int] = {}

    def work(i: int) -> int:
        threads.add(threading.get_ident())
        return i * 2

    original = anyio.to_thread.run_sync

    async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal hops
        hops += 1
        return await original(*args, **kwargs)

    anyio.to_thread.run_sync = counting  # type: ignore[assignment]
    try:

        async def one(i: int) -> None:
            results[i] = await batcher.call(work, i)

        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(one, i)
    finally:
        anyio.to_thread.run_sync = original  # type: ignore[assignment]
    assert results == {i: i * 2 for i in range(500)}
    assert threading.get_ident() not in threads
    assert hops <= 50  # 500 calls, a few dozen hops at most (how many depends on the machine's load)


async def test_batcher_reraises_each_callers_own_error() -> None:
    batcher = ThreadBatcher()

    def maybe(i: int) -> int:
        if i % 2:
            raise ValueError(i)
        return i

    outcomes: dict[int, object] = {}

    async def one(i: int) -> None:
        try:
            outcomes[i] = await batcher.call(maybe, i)
        except ValueError as e:
            outcomes[i] = e.args[0] * -1

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(one, i)
    assert outcomes == {i: (i if i % 2 == 0 else -i) for i in range(10)}


async def test_a_cancelled_queued_call_never_runs() -> None:
    batcher = ThreadBatcher(max_batches=1)
    release = threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        release.wait(5)
        ran.append("blocker")

    def late() -> None:
        ran.append("late")

    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.call, blocker)
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await batcher.call(late)  # queued behind the running batch, then cancelled
        release.set()
    await batcher.call(lambda: None)
    assert ran == ["blocker"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_cancelled_leader_never_fakes_or_drops_the_other_callers_results(backend: str) -> None:
    """The caller that leads a batch is cancelled at every loop turn of its life in turn: the other
    caller's call always runs and returns its own result."""

    async def sweep() -> list[int]:
        bad = []
        for k in range(40):
            batcher = ThreadBatcher(max_batches=1)
            got: dict[str, object] = {}
            scope = anyio.CancelScope()

            async def leader() -> None:
                with scope:
                    await batcher.call(lambda: "mine")

            async def other() -> None:
                got["other"] = await batcher.call(lambda: "theirs")

            async with anyio.create_task_group() as tg:
                tg.start_soon(leader)
                tg.start_soon(other)
                for _ in range(k):
                    await anyio.sleep(0)
                scope.cancel()
            if got.get("other") != "theirs":
                bad.append(k)
        return bad

    assert anyio.run(sweep, backend=backend) == []


def test_local_write_is_atomic_and_cleans_up_on_failure(tmp_path) -> None:
    target = str(tmp_path / "sub" / "x.json")
    write_atomic(target, b"1")
    with open(target, "rb") as f:
        assert f.read() == b"1"
    with pytest.raises(TypeError):
        write_atomic(str(tmp_path / "sub" / "y.json"), object())  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path / "sub")) == ["x.json"]
    (tmp_path / "sub" / f"{TMP_PREFIX}1-abc-0-z.json").write_bytes(b"partial")
    assert list_folder(str(tmp_path / "sub")) == {"x.json"}  # temporaries never count
