"""A user's typed pipeline: `mypy --strict` on it must pass (make test checks it), so that the
annotations asyncflow ships (py.typed) work for the people who use it."""

from __future__ import annotations

import asyncflow as af


@af.task
async def get_data(n: int = 10) -> list[int]:
    return list(range(n))


@af.task(format="pickle", retries=2, retry_delay=0.5, version="2")
async def preprocess(raw: list[int] = af.depends(get_data), double: bool = True) -> list[int]:
    return [x * 2 for x in raw] if double else raw


@af.task
def total(xs: list[int] = af.depends(preprocess)) -> int:
    return sum(xs)


async def main() -> int:
    node: af.Node = total(n=3)
    flow = af.Workflow(node, store="memory://typed")
    result: af.RunResult = await flow.run()
    assert result.ok
    tree: af.Preview = await flow.preview()
    print(tree)
    out = await flow.output()
    return int(out)


def sync() -> list[int]:
    values: list[int] = af.run(get_data(n=2), store="memory://typed")
    return values
