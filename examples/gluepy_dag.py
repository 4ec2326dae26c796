"""Gluepy's DAGs: a class with a label and a task list, run by its label; tasks hand data over through
storage (targets), so any step can be re-run alone.

    python examples/gluepy_dag.py
"""

from __future__ import annotations

import asyncio

import asyncflow as af


@af.task
async def data_task(days: int = 7) -> list[dict]:
    return [{"day": d, "units": 10 + d % 3} for d in range(days)]


@af.task(format="pickle")
async def forecast_training_task(rows: list[dict] = af.depends(data_task)) -> dict:
    mean = sum(r["units"] for r in rows) / len(rows)
    return {"kind": "mean", "value": mean}


@af.task
async def forecast_test_task(model: dict = af.depends(forecast_training_task)) -> float:
    return round(model["value"], 3)


@af.task(format="text")
async def output_format_task(score: float = af.depends(forecast_test_task)) -> str:
    return f"forecast,{score}\n"


class TrainingDAG(af.DAG):
    label = "training"
    tasks = [data_task, forecast_training_task, forecast_test_task, output_format_task]


async def main() -> None:
    dag = af.DAG.get("training")()
    print(await dag.preview())
    result = await dag.run()
    print(result)
    print(await dag.workflow.output(output_format_task), end="")


if __name__ == "__main__":
    asyncio.run(main())
