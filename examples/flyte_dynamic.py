"""Flyte's dynamic task `generate_others`: launch an arbitrary number of tasks decided by an input,
assemble their outputs; and the same by returning nodes (outputs take their place), recursively.

    python examples/flyte_dynamic.py
"""

from __future__ import annotations

import asyncio

import asyncflow as af


@af.task
async def other_task(index: int) -> int:
    return index * index


@af.task
async def generate_others(tasks_count: int):  # type: ignore[no-untyped-def]
    """Generator form: each yielded task runs; its output comes back; the output is the list."""
    for i in range(tasks_count):
        yield other_task(index=i)


@af.task
async def generate_returned(tasks_count: int) -> dict:
    """Return form: a structure of nodes; the output is the same structure with their outputs."""
    return {"squares": [other_task(index=i) for i in range(tasks_count)], "count": tasks_count}


@af.task
async def tree_sum(depth: int) -> int:
    """Recursion: a dynamic task spawning dynamic tasks."""
    if depth == 0:
        return 1
    return sum(await af.gather(tree_sum(depth=depth - 1), tree_sum(depth=depth - 1)))


async def main() -> None:
    flow = af.Workflow([generate_others(tasks_count=5), generate_returned(tasks_count=3), tree_sum(depth=6)])
    await flow.run()
    print("generate_others:", await flow.output(generate_others(tasks_count=5)))
    print("generate_returned:", await flow.output(generate_returned(tasks_count=3)))
    print("tree_sum:", await flow.output(tree_sum(depth=6)))


if __name__ == "__main__":
    asyncio.run(main())
