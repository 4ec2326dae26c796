"""Export a DAG for other orchestrators (Gluepy's promise): an Airflow DAG file in which each
asyncflow node is one Airflow task running `asyncflow run MODULE:DAG --node ID`."""

from __future__ import annotations

import hashlib
import re
import shlex
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._node import Node

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _task_ids(nodes: list[Node]) -> dict[Node, str]:
    """Airflow task ids (letters, digits, `_ . -`; at most 250 characters), unique."""
    out: dict[Node, str] = {}
    used: set[str] = set()
    for node in nodes:
        base = _UNSAFE.sub("_", node.id).strip("_")[:230] or "node"
        tid = base
        if tid in used:
            tid = f"{base}_{hashlib.blake2b(node.key, digest_size=4).hexdigest()}"
        used.add(tid)
        out[node] = tid
    return out


def airflow_dag(label: str, module: str, dag: Any, nodes: list[Node]) -> str:
    """The text of a standalone Airflow DAG file mirroring the flow's graph."""
    nodes = [n for n in nodes if not n.task.is_external]
    ids = _task_ids(nodes)
    target = f"{module}:{dag.__name__}"
    lines = [
        f'"""Airflow DAG for the asyncflow DAG {label!r} ({target}), written by `asyncflow export airflow`.',
        "",
        "Each task runs one asyncflow node; complete nodes are skipped, so retries and re-runs are cheap.",
        '"""',
        "",
        "from datetime import datetime",
        "",
        "from airflow import DAG",
        "from airflow.operators.bash import BashOperator",
        "",
        "with DAG(",
        f"    dag_id={label!r},",
        "    start_date=datetime(2024, 1, 1),",
        "    schedule=None,",
        "    catchup=False,",
        '    tags=["asyncflow"],',
        ") as dag:",
        "    tasks = {}",
    ]
    for node in nodes:
        command = f"asyncflow run {shlex.quote(target)} --node {shlex.quote(node.id)} --quiet"
        lines.append(f"    tasks[{ids[node]!r}] = BashOperator(task_id={ids[node]!r}, bash_command={command!r})")
    for node in nodes:
        for dep in node.deps:
            if dep in ids:
                lines.append(f"    tasks[{ids[dep]!r}] >> tasks[{ids[node]!r}]")
    return "\n".join(lines) + "\n"
