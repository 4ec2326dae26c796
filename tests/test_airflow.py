"""The exported Airflow DAG run by a real Apache Airflow (`make airflow` installs 2.10 in its own
virtualenv): `airflow dags test` from another folder, with a PATH that does not hold this project's
virtualenv, as a worker would run it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW = Path(os.environ.get("ASYNCFLOW_TEST_AIRFLOW", ROOT / ".venv-airflow" / "bin" / "airflow"))

MODULE = """
import os
import asyncflow as af

def note(name):
    with open(os.environ["BODY_LOG"], "a") as f:
        f.write(name + "\\n")

@af.task
async def data_task(rows: int = 5) -> list[int]:
    note("data_task")
    return list(range(rows))

@af.task
async def train(data: list[int] = af.depends(data_task), tag: str = "v {{ ds }} {# c #}") -> int:
    note("train")  # (a parameter Airflow's templating would rewrite, were it to see the node id)
    return sum(data)

@af.task
async def evaluate(data: list[int] = af.depends(data_task)) -> int:
    note("evaluate")
    return len(data)

@af.task
async def output_format(model: int = af.depends(train), score: int = af.depends(evaluate)) -> str:
    note("output_format")
    return f"{model}/{score}"

class TrainingDAG(af.DAG):
    label = "my training v2"
    tasks = [data_task, train, evaluate, output_format]
"""


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not AIRFLOW.exists():
        pytest.skip(f"no Airflow at {AIRFLOW}: `make airflow` installs it")
    home = tmp_path_factory.mktemp("airflow")
    (home / "dags").mkdir()
    out = subprocess.run([str(AIRFLOW), "db", "migrate"], env=_airflow_env(home), capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return home


def _airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """A worker's environment: no project virtualenv on PATH, nothing of this test run's."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "AIRFLOW_HOME": str(home), "LANG": "C.UTF-8",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false", "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"), **extra}  # fmt: skip


def _dags_test(home: Path, log: Path, *conf: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    log.write_text("")
    elsewhere = home / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    out = subprocess.run([str(AIRFLOW), "dags", "test", "my_training_v2", *conf], cwd=elsewhere,
                         env=_airflow_env(home, BODY_LOG=str(log)), capture_output=True, text=True, timeout=300)  # fmt: skip
    return out, log.read_text().split()


def test_exported_dag_runs_under_airflow_and_persists(airflow_home: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "gluepy_like.py").write_text(MODULE)
    store = tmp_path / "store"
    dag_file = airflow_home / "dags" / "training.py"
    export = subprocess.run(
        [sys.executable, "-m", "asyncflow", "export", "airflow", "my training v2", "--module", "gluepy_like",
         "--store", str(store), "-o", str(dag_file)],
        cwd=project, capture_output=True, text=True, env={**os.environ, "BODY_LOG": str(tmp_path / "unused")},
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    assert "'my_training_v2': 4 tasks" in export.stderr and str(project) in export.stderr  # it says what it fixed
    tree = ast.parse(dag_file.read_text())
    edges = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.RShift)]
    assert len(edges) == 4  # the graph: data -> train, data -> evaluate, both -> output_format

    log = tmp_path / "bodies.log"
    first, ran = _dags_test(airflow_home, log)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first.stdout.count("Marking task as SUCCESS") + first.stderr.count("Marking task as SUCCESS") >= 4
    assert sorted(ran) == ["data_task", "evaluate", "output_format", "train"]  # each body once
    assert "ran train[rows=5, tag=v {{ ds }} {# c #}]" in first.stdout + first.stderr  # untouched by Jinja
    assert {p.name for p in store.iterdir() if not p.name.startswith(".")} == {
        "data_task", "train", "evaluate", "output_format"}  # fmt: skip

    second, ran = _dags_test(airflow_home, log)
    assert second.returncode == 0 and ran == []  # everything complete in the shared store

    with_conf, ran = _dags_test(airflow_home, log, "-c", '{"rows": 7}')
    assert with_conf.returncode == 0 and sorted(ran) == ["data_task", "evaluate", "output_format", "train"]
    assert "ran data_task[rows=7]" in with_conf.stdout + with_conf.stderr  # dag_run.conf reaches the tasks

    mistyped, ran = _dags_test(airflow_home, log, "-c", '{"rowz": 7}')
    assert mistyped.returncode != 0 and ran == []
    assert "no parameter 'rowz'" in mistyped.stdout + mistyped.stderr and "did you mean 'rows'" in mistyped.stdout
