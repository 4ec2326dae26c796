"""pytask's "Scaling tasks": repeat tasks over dimensions without nested loops, with readable ids.

python examples/pytask_repetition.py
"""

from __future__ import annotations

import asyncio
import enum
import random

import asyncflow as af


class Model(enum.Enum):
    OLS = "ols"
    LOGIT = "logit"
    LINEAR_PROBABILITY = "linear_probability"


@af.task
async def prepare_data(data: str, n: int = 50) -> list[float]:
    rng = random.Random(data)
    return [rng.random() for _ in range(n)]


@af.task
async def fit_model(model: Model, values: list[float] = af.depends(prepare_data)) -> dict:
    factor = {Model.OLS: 1.0, Model.LOGIT: 0.5, Model.LINEAR_PROBABILITY: 0.25}[model]
    return {"model": model.value, "estimate": round(sum(values) / len(values) * factor, 4)}


def fits() -> list[af.Node]:
    """Every estimation: 4 data sets x 3 models. From the shell, one of them and what it needs:

    asyncflow run examples/pytask_repetition.py:fits -k "linear_probability and data_0"
    """
    return fit_model.product(data=["data_0", "data_1", "data_2", "data_3"], model=list(Model))


async def main() -> None:
    estimations = fits()
    print(len(estimations), "fits, e.g.", estimations[0].id)
    flow = af.Workflow(estimations)
    result = await flow.run()
    print(result)
    estimates = await flow.outputs(fit_model)
    for node_id in sorted(estimates)[:3]:
        print(node_id, estimates[node_id])


if __name__ == "__main__":
    asyncio.run(main())
