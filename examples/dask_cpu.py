"""CPU-bound fan-out on a 2-worker Dask LocalCluster (extra `dask`): 200 pure-Python computations.

Each body runs in a worker process and writes its own target; the scheduler stays on the event
loop and writes the fingerprint records. A second run finds everything complete.

    python examples/dask_cpu.py
"""

from __future__ import annotations

import asyncio
import os

import asyncflow as af

DASK = af.DaskExecutor(n_workers=2)


@af.task(executor=DASK)
def collatz_steps(start: int) -> int:
    """Pure-Python CPU work: the longest Collatz chain below `start`."""
    best = 0
    for n in range(start, start + 2_000):
        steps = 0
        while n != 1:
            n = n // 2 if n % 2 == 0 else 3 * n + 1
            steps += 1
        best = max(best, steps)
    return best


@af.task
async def longest(chains: list[int]) -> int:
    return max(chains)


async def main() -> None:
    flow = af.Workflow(longest(chains=[collatz_steps(start=1 + 2_000 * i) for i in range(200)]))
    result = await flow.run()
    print(f"ran {result.ran} nodes in {result.duration:.2f}s on {os.cpu_count()} cores")
    print("longest chain:", await flow.output())


if __name__ == "__main__":  # worker processes are spawned: the guard is required
    asyncio.run(main())
