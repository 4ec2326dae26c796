"""d6tflow's collector (`TaskAggregator`): a task that yields other tasks, with inherited parameters.

python examples/collector.py
"""

from __future__ import annotations

import asyncio

import asyncflow as af


@af.task
async def get_data(n: int = 5) -> list[int]:
    return list(range(n))


@af.task
async def train_model1(data: list[int] = af.depends(get_data), alpha: float = 0.1) -> dict:
    return {"model": 1, "score": sum(data) * alpha}


@af.task
async def train_model2(data: list[int] = af.depends(get_data), alpha: float = 0.1) -> dict:
    return {"model": 2, "score": max(data) * alpha}


@af.task
async def train_all_models(n: int = 5, alpha: float = 0.1):  # type: ignore[no-untyped-def]
    """Yields its children; each yield gets the child's output back; the output is the list."""
    yield train_model1(n=n, alpha=alpha)
    yield train_model2(n=n, alpha=alpha)


@af.task
async def train(data: list[int] = af.depends(get_data), do_preprocess: bool = True) -> int:
    return sum(x * 2 for x in data) if do_preprocess else sum(data)


@af.task
async def task_aggregator():  # type: ignore[no-untyped-def]
    """Run the workflow with several parameter sets at once."""
    yield [train(do_preprocess=False), train(do_preprocess=True)]


async def main() -> None:
    flow = af.Workflow(train_all_models(n=4, alpha=0.5))
    await flow.run()
    print("train_all_models:", await flow.output())
    print(await flow.preview())  # the yielded children now show under their parent
    agg = af.Workflow(task_aggregator())
    await agg.run()
    print("task_aggregator:", await agg.output())


if __name__ == "__main__":
    asyncio.run(main())
