"""Every example runs end to end, as a user would run it, in a fresh folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocesses: the same on every backend, run once

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "d6tflow_workflow.py": [
        "└─ train[do_preprocess=True, n=10] PENDING",
        "== output: {'n': 10, 'total': 90, 'mean': 9.0}",
        "      └─ get_data[n=10] COMPLETE",
        "{'flow1': {'n': 10, 'total': 45, 'mean': 4.5}, 'flow2': {'n': 10, 'total': 90, 'mean': 9.0}}",
        "FlowFailed: evaluate[do_preprocess=True, n=10] failed: ZeroDivisionError: division by zero",
    ],
    "dynamic_fixed.py": [
        "fixed: [{'param': 'a', 'rows': 1}, {'param': 'b', 'rows': 1}, {'param': 'c', 'rows': 1}]",
        "rows in all csv files: 5",
    ],
    "collector.py": [
        "train_all_models: [{'model': 1, 'score': 3.0}, {'model': 2, 'score': 1.5}]",
        "   ├─ train_model1[alpha=0.5, n=4] COMPLETE",
        "task_aggregator: [[10, 20]]",
    ],
    "fully_dynamic.py": ["'task_b[param=1]': {'param': 1, 'train': 100, 'more': [200, 300]}"],
    "flyte_dynamic.py": [
        "generate_others: [0, 1, 4, 9, 16]",
        "generate_returned: {'squares': [0, 1, 4], 'count': 3}",
        "tree_sum: 64",
    ],
    "gluepy_dag.py": ["└─ output_format_task[days=7] PENDING", "ran=4", "forecast,10.857"],
    "pytask_repetition.py": [
        "12 fits, e.g. fit_model[linear_probability_data_3]",
        "ran=16",
        "17 of 17 catalog entries complete",
        "linear_probability_data_0: {'model': ",
    ],
    "dask_cpu.py": ["ran 201 nodes in", "longest chain: 442"],
}


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_")}
    for attempt in ("first run", "second run (all complete)"):
        proc = subprocess.run(
            [sys.executable, str(EXAMPLES / name)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode == 0, f"{attempt}: {proc.stderr}"
        for line in EXPECTED[name]:
            if attempt == "first run":
                assert line in proc.stdout, f"{line!r} not in output:\n{proc.stdout}"
    assert (tmp_path / "data").is_dir()  # the embedded default: a local ./data store
