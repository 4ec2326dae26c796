"""d6tflow "Fixed Dynamic": requirements built from a fixed list of parameters, or from a glob of files.

python examples/dynamic_fixed.py
"""

from __future__ import annotations

import asyncio
import csv
import glob
import os

import asyncflow as af


@af.task
async def task_input(param: str) -> dict:
    return {"param": param, "rows": len(param)}


@af.task
async def task_yield_fixed(inputs: dict) -> list[dict]:
    """`inputs` holds nodes; the body receives their outputs in the same dict."""
    return [inputs[k] for k in sorted(inputs)]


@af.task
def read_csv(path: str) -> list[dict]:
    """A plain function: blocking file I/O runs in a worker thread, never on the event loop."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@af.task
async def concat(tables: dict) -> int:
    return sum(len(rows) for rows in tables.values())


async def main() -> None:
    fixed = task_yield_fixed(inputs={s: task_input(param=s) for s in ["a", "b", "c"]})
    print(await af.Workflow(fixed).preview())
    await af.Workflow(fixed).run()
    print("fixed:", await af.Workflow(fixed).output())

    files = concat(tables={p: read_csv(path=p) for p in sorted(glob.glob("csv-inputs/*.csv"))})
    await af.Workflow(files).run()
    print("rows in all csv files:", await af.Workflow(files).output())


def make_csv_files() -> None:
    """Something else produces these files: a glob decides how many inputs the flow has."""
    os.makedirs("csv-inputs", exist_ok=True)
    for name, n in (("one", 2), ("two", 3)):
        with open(f"csv-inputs/{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["x"])
            w.writerows([[i] for i in range(n)])


if __name__ == "__main__":
    make_csv_files()
    asyncio.run(main())
