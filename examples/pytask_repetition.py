"""pytask's "Scaling tasks" (seed 004): one data set, four specifications of it, three models
fitted to each, organised around a data catalog, with readable ids to select an estimation.

python examples/pytask_repetition.py
asyncflow catalog examples/pytask_repetition.py:catalog          every entry and its status
asyncflow run examples/pytask_repetition.py:fits -k linear_probability_data_0
asyncflow show examples/pytask_repetition.py:catalog --entry linear_probability_data_0
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import random
from pathlib import Path

import asyncflow as af

DATA = Path("data.csv")  # the project's one data set, read as an external file
if not DATA.exists():  # (this example stands in for the project's data: made once when missing)
    _rng = random.Random(0)
    DATA.write_text("\n".join(f"{_rng.gauss(1, 0.5):.4f}" for _ in range(200)))
DATA_NAMES = ["data_0", "data_1", "data_2", "data_3"]  # its four specifications


class Model(enum.Enum):
    OLS = "ols"
    LOGIT = "logit"
    LINEAR_PROBABILITY = "linear_probability"


@af.task(id="{data}")  # prepare_data[data_0]
def prepare_data(data: str, source: str) -> list[float]:  # reads a file: a plain function (a thread)
    """One specification: a subsample of the data set, drawn by the specification's name."""
    values = [float(x) for x in Path(source).read_text().split()]
    rng = random.Random(data)
    return rng.sample(values, k=len(values) // 2)


@af.task(id="{model}_{data}")  # fit_model[linear_probability_data_0]
async def fit_model(model: Model, data: str, values: list[float]) -> dict:
    factor = {Model.OLS: 1.0, Model.LOGIT: 0.5, Model.LINEAR_PROBABILITY: 0.25}[model]
    return {"model": model.value, "data": data, "estimate": round(sum(values) / len(values) * factor, 4)}


# the data catalog: a name for every piece of data the project makes or reads
catalog = af.Catalog()
catalog["data"] = af.external(str(DATA))
for name in DATA_NAMES:
    catalog[f"prepared_{name}"] = prepare_data(data=name, source=catalog["data"])
ESTIMATIONS = {
    f"{model.value}_{name}": {"model": model, "data": name} for name, model in itertools.product(DATA_NAMES, Model)
}
for estimation, spec in ESTIMATIONS.items():  # entries are dependencies: the prepared data by its name
    catalog[estimation] = fit_model(**spec, values=catalog[f"prepared_{spec['data']}"])


def fits() -> list[af.Node]:
    """Every estimation (4 specifications x 3 models): the 12 fits and what they need."""
    return [catalog[estimation] for estimation in ESTIMATIONS]


async def main() -> None:
    estimations = fits()
    print(len(estimations), "fits, e.g.", estimations[-1].id)
    result = await af.Workflow(estimations).run()
    print(result)
    statuses = await catalog.statuses()
    print(sum(s == "COMPLETE" for s in statuses.values()), "of", len(statuses), "catalog entries complete")
    print("linear_probability_data_0:", await catalog.load("linear_probability_data_0"))


if __name__ == "__main__":
    asyncio.run(main())
