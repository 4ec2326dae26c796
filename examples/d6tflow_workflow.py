"""d6tflow's "Running Tasks and Managing Workflows", in asyncflow.

get_data -> preprocess -> train: preview, run, output, reset, check_dependencies, WorkflowMulti,
and a failing task with how its error reads. Runs on the local `./data` store (or ASYNCFLOW_STORE).

    python examples/d6tflow_workflow.py
"""

from __future__ import annotations

import asyncio

import asyncflow as af


@af.task
async def get_data(n: int = 10) -> list[int]:
    """Raw data (a real pipeline would read a file or a database)."""
    return list(range(n))


@af.task(format="pickle")
async def preprocess(raw: list[int] = af.depends(get_data), do_preprocess: bool = True) -> list[int]:
    """Double every value unless told not to."""
    return [x * 2 for x in raw] if do_preprocess else raw


@af.task
async def train(df: list[int] = af.depends(preprocess)) -> dict:
    """'Train a model': here, summary statistics."""
    return {"n": len(df), "total": sum(df), "mean": sum(df) / len(df)}


@af.task
async def evaluate(model: dict = af.depends(train)) -> float:
    """A task with a bug, to show how a failure reads."""
    return model["total"] / (model["n"] - model["n"])  # ZeroDivisionError


async def main() -> None:
    flow = af.Workflow(train, params={"do_preprocess": True})

    print("== preview before running")
    print(await flow.preview())

    print("== run (the execution summary goes to stderr)")
    await flow.run()
    print("== output:", await flow.output())

    print("== preview after running")
    print(await flow.preview())

    print("== reset get_data: everything downstream is pending again (check_dependencies=True)")
    await flow.reset(get_data)
    print(await flow.preview())
    print("== ...but judged by their own targets alone (check_dependencies=False)")
    print(await flow.preview(check_dependencies=False))
    await flow.run()

    print("== WorkflowMulti: one flow per parameter set")
    multi = af.WorkflowMulti(train, {"flow1": {"do_preprocess": False}, "flow2": {"do_preprocess": True}})
    await multi.run()
    print(await multi.output())

    print("== a failing task")
    try:
        await af.Workflow(evaluate()).run()
    except af.FlowFailed as e:
        print("FlowFailed:", e)
        print("cause:", repr(e.__cause__))


if __name__ == "__main__":
    asyncio.run(main())
