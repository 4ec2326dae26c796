"""d6tflow's "Fully Dynamic" case, which d6tflow says "doesn't work yet": the upstream's parameter is
computed inside the body, and the body awaits it and goes on.

    python examples/fully_dynamic.py
"""

from __future__ import annotations

import asyncio

import asyncflow as af


@af.task
async def task_a(param: int) -> int:
    return param * 100


@af.task
async def task_b(param: int) -> dict:
    value = 1 if param % 2 else 2  # decided from data at run time
    df_train = await task_a(param=value)  # runs task_a (or reads it if complete), then continues
    more = await af.gather(*[task_a(param=value + i) for i in range(1, 3)])
    return {"param": param, "train": df_train, "more": more}


async def main() -> None:
    flow = af.Workflow([task_b(param=1), task_b(param=2)])
    await flow.run()
    print(await flow.outputs(task_b))
    print(await flow.preview())


if __name__ == "__main__":
    asyncio.run(main())
