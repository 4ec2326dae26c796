"""One run's cancellation never changes another run's results: a co-run sharing the store (and
some nodes) is cancelled at many different moments (a timer at a random time, or a random number
of loop turns; on asyncio half of the time by asyncio's own `Task.cancel()` or `asyncio.timeout`,
which anyio's shields do not stop), and the other run's every output must be on disk and read back
right, every time. Seeded; on asyncio and on trio whatever the suite's backend. (Before the fix, 4 of 300 timer
iterations lost 4-16 outputs of a run that reported success.)"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncflow as af

ITERATIONS = 150  # per backend


@af.task
async def piece(i: int, salt: str) -> int:
    await anyio.sleep(0)
    return i * 3 + len(salt)


@af.task
async def gathered(salt: str, n: int) -> int:
    return sum(await af.gather(*[piece(i=i, salt=salt) for i in range(n)]))


async def _one(store: str, seed: int, asyncio_native: bool) -> dict[str, Any]:
    rng = random.Random(seed)
    n = rng.choice([20, 60, 120])
    by_timer = rng.random() < 0.7
    mine = [piece(i=i, salt=f"a{seed}") for i in range(n)]
    shared = rng.sample(mine, k=n // 4)  # the other run needs some of these nodes too
    theirs = [piece(i=i, salt=f"b{seed}") for i in range(n)] + shared + [gathered(salt=f"a{seed}", n=n // 2)]
    rng.shuffle(theirs)
    out: dict[str, Any] = {}

    async def run_mine() -> None:
        out["result"] = await af.Workflow(mine, store=store, max_concurrency=rng.choice([1, 4, 16, 100])).run()

    async def run_theirs(scope: anyio.CancelScope) -> None:
        with scope:
            await af.Workflow(theirs, store=store, max_concurrency=rng.choice([1, 8, 100])).run()

    async def run_theirs_natively() -> None:  # asyncio's own cancellation, which passes anyio's shields
        flow = af.Workflow(theirs, store=store, max_concurrency=rng.choice([1, 8, 100]))
        if by_timer:
            with contextlib.suppress(TimeoutError):  # often while it plans, when its task leads storage calls
                async with asyncio.timeout(rng.choice([rng.uniform(0, 0.005), rng.uniform(0, 0.15)])):
                    await flow.run()
            return
        task = asyncio.ensure_future(flow.run())
        for _ in range(rng.choice([rng.randrange(0, 12), rng.randrange(0, 8000)])):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    native = asyncio_native and rng.random() < 0.5
    scope = anyio.CancelScope(deadline=anyio.current_time() + rng.uniform(0, 0.15)) if by_timer else anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        other = (run_theirs_natively,) if native else (run_theirs, scope)
        if rng.random() < 0.5:
            tg.start_soon(run_mine)
            tg.start_soon(*other)
        else:
            tg.start_soon(*other)
            tg.start_soon(run_mine)
        if not by_timer and not native:
            for _ in range(rng.randrange(0, 8000)):  # cancel the other run after a random number of turns
                await anyio.sleep(0)
            scope.cancel()
    result = out["result"]
    lost = []
    flow = af.Workflow(mine, store=store)
    for node in mine:
        target = flow.target(node)
        assert target is not None
        if not Path(target.path).is_file():
            lost.append(node.id)
    again = await af.Workflow(mine, store=store).run()  # a fresh run must find every output complete
    outputs = await flow.outputs()
    wrong = [nid for nid, v in outputs.items() if v != int(nid.split("i=")[1].split(",")[0]) * 3 + len(f"a{seed}")]
    return {"ok": result.ok, "done": result.ran + result.skipped, "n": n, "lost": lost, "rebuilt": again.ran,
            "wrong": wrong}  # fmt: skip


@pytest.mark.slow  # (it runs both backends itself: the trio pass of the suite need not run it again)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_cancelled_co_run_never_changes_another_runs_results(tmp_path: Path, backend: str) -> None:
    losses = []
    t0 = time.monotonic()
    for seed in range(ITERATIONS):
        report = anyio.run(_one, str(tmp_path / f"s{seed}"), seed, backend == "asyncio", backend=backend)
        if not report["ok"] or report["done"] != report["n"] or report["lost"] or report["rebuilt"] or report["wrong"]:
            losses.append((seed, report))
    assert not losses, f"{len(losses)} of {ITERATIONS} iterations lost or changed outputs: {losses[:3]}"
    assert time.monotonic() - t0 < 300
