"""Export a DAG for other orchestrators (Gluepy's promise): an Airflow DAG file in which each
asyncflow node is one Airflow task running `asyncflow dag LABEL --module MODULE` for that node.

What the file fixes at export, so that it works where Airflow runs it (a worker, a temporary
folder, a PATH without the project's virtualenv): the interpreter that has asyncflow, the module
by a reference that resolves from anywhere, and the store every task reads and writes. Node ids
never pass through Airflow's templating: each task names its node by position in the graph.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._node import Node

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def airflow_name(text: str, limit: int = 250) -> str:
    """`text` as an Airflow dag or task id (letters, digits, `_ . -`; at most `limit` characters)."""
    return _UNSAFE.sub("_", text).strip("_.-")[:limit] or "asyncflow"


def _task_ids(nodes: list[Node]) -> dict[Node, str]:
    """Airflow task ids, unique."""
    out: dict[Node, str] = {}
    used: set[str] = set()
    for node in nodes:
        base = airflow_name(node.id, 230)
        tid = base
        if tid in used:
            tid = f"{base}_{hashlib.blake2b(node.key, digest_size=4).hexdigest()}"
        used.add(tid)
        out[node] = tid
    return out


@dataclass
class Deployment:
    """What the exported file fixes: see `asyncflow export airflow --help`."""

    dag_id: str
    module: str  # dotted, or an absolute file path: the DAG is found by its label once it is imported
    python: str
    store: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    retries: int = 2
    pythonpath: str = ""  # a folder the module is found in only from there ("" when installed)
    project: str = ""  # the folder the export ran in: the tasks' working folder where it exists


_HEADER = '''"""An Airflow DAG written by `asyncflow export airflow`.

Each Airflow task runs one asyncflow node, `PYTHON -m asyncflow dag LABEL -m MODULE --node-at N:TASK`, on
STORE, which every worker must reach (complete nodes are skipped: retries and re-runs are cheap).
ASYNCFLOW_PYTHON, ASYNCFLOW_STORE and ASYNCFLOW_STORAGE_OPTIONS in a worker's environment override
what was fixed at export. Parameters given when the DAG is triggered (dag_run.conf) are passed on
as `-p name=value` (strings as they are, other values as JSON).
"""

# the asyncflow DAG {label!r} of {module!r}

import json
import os
import subprocess
from datetime import datetime, timedelta
from functools import partial

from airflow import DAG
from airflow.exceptions import AirflowFailException

try:  # Airflow 3 keeps it in the standard provider
    from airflow.providers.standard.operators.python import PythonOperator
except ImportError:  # Airflow 2
    from airflow.operators.python import PythonOperator

PYTHON = os.environ.get("ASYNCFLOW_PYTHON", {python!r})
LABEL = {label!r}
MODULE = {module!r}
STORE = os.environ.get("ASYNCFLOW_STORE", {store!r})
STORAGE_OPTIONS = os.environ.get("ASYNCFLOW_STORAGE_OPTIONS", {storage_options!r})
PARAMS = {params!r}  # fixed at export (-p); dag_run.conf overrides them
PYTHONPATH = {pythonpath!r}
PROJECT = {project!r}


def run_node(position, node_id, **context):
    """Run one asyncflow node in a subprocess; its output goes to this task's log."""
    dag_run = context.get("dag_run")
    conf = (dag_run.conf if dag_run is not None else None) or {{}}
    params = {{**PARAMS, **{{k: v if isinstance(v, str) else json.dumps(v) for k, v in conf.items()}}}}
    command = [PYTHON, "-m", "asyncflow", "dag", LABEL, "--module", MODULE, "--store", STORE, "--node-at", position]
    for name, value in params.items():
        command += ["-p", f"{{name}}={{value}}"]
    env = {{**os.environ, "ASYNCFLOW_STORAGE_OPTIONS": STORAGE_OPTIONS, "PYTHONUNBUFFERED": "1"}}
    if PYTHONPATH:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PYTHONPATH, env.get("PYTHONPATH")) if p)
    print("asyncflow node", node_id, flush=True)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=PROJECT if PROJECT and os.path.isdir(PROJECT) else None)
    for line in proc.stdout:
        print(line, end="", flush=True)
    status = proc.wait()
    if status == 2:  # bad usage (a mistyped parameter...): trying again would not help
        raise AirflowFailException(f"asyncflow node {{node_id}}: bad usage (exit status 2), see above")
    if status != 0:
        raise RuntimeError(f"asyncflow node {{node_id}} failed (exit status {{status}})")


with DAG(
    dag_id={dag_id!r},
    start_date=datetime(2024, 1, 1),
    schedule=None,
    catchup=False,
    tags=["asyncflow"],
    default_args={{"retries": {retries}, "retry_delay": timedelta(seconds=30)}},
) as dag:
    tasks = {{}}
'''


def airflow_dag(label: str, how: Deployment, nodes: list[Node]) -> str:
    """The text of a standalone Airflow DAG file mirroring the flow's graph (`nodes`: the flow's
    nodes in their order, which `--node-at` positions refer to)."""
    import json

    position = {node: i for i, node in enumerate(nodes)}
    nodes = [n for n in nodes if not n.task.is_external]
    ids = _task_ids(nodes)
    text = _HEADER.format(
        dag_id=how.dag_id,
        label=label,
        module=how.module,
        python=how.python,
        store=how.store,
        storage_options=json.dumps(how.storage_options),
        params=how.params,
        pythonpath=how.pythonpath,
        project=how.project,
        retries=int(how.retries),
    )
    lines = [text.rstrip("\n")]
    for node in nodes:
        at = f"{position[node]}:{node.task.name}"
        lines.append(f"    tasks[{ids[node]!r}] = PythonOperator(task_id={ids[node]!r}, "
                     f"python_callable=partial(run_node, {at!r}, {node.id!r}))")  # fmt: skip
    for node in nodes:
        for dep in node.deps:
            if dep in ids:
                lines.append(f"    tasks[{ids[dep]!r}] >> tasks[{ids[node]!r}]")
    return "\n".join(lines) + "\n"
