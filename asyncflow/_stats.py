"""Run statistics: what people benchmarking a fan-out want to know about how a run went."""

from __future__ import annotations

from typing import Any

import msgspec


class TaskStats(msgspec.Struct, frozen=True):
    """Durations (seconds) of one task's nodes that ran, and their retries and failures."""

    count: int
    total: float
    p50: float
    p95: float
    max: float
    retries: int
    failures: int


class RunStats(msgspec.Struct, frozen=True):
    """A run's figures: `critical_path` is the chain of node ids that set its length."""

    wall: float
    ran: int
    throughput: float  # nodes run per second of wall time
    peak_concurrency: int
    tasks: dict[str, TaskStats]
    critical_path: list[str]
    critical_path_time: float


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def run_stats(records: list[Any], wall: float, peak: int) -> RunStats:
    """Statistics over a run's `NodeRecord`s."""
    by_task: dict[str, list[Any]] = {}
    for r in records:
        by_task.setdefault(r.task, []).append(r)
    tasks = {}
    for name, recs in sorted(by_task.items()):
        durations = sorted(r.duration for r in recs if r.status in ("ran", "failed"))
        tasks[name] = TaskStats(
            count=len(durations),
            total=sum(durations),
            p50=_quantile(durations, 0.5),
            p95=_quantile(durations, 0.95),
            max=durations[-1] if durations else 0.0,
            retries=sum(max(0, r.attempts - 1) for r in recs),
            failures=sum(r.status == "failed" for r in recs),
        )
    ran = sum(1 for r in records if r.status == "ran")
    path, span = critical_path(records)
    return RunStats(wall, ran, ran / wall if wall > 0 else 0.0, peak, tasks, path, span)


def critical_path(records: list[Any]) -> tuple[list[str], float]:
    """From the node that finished last, back through the upstream node that finished last before
    it: the chain that set the run's length, and its span in seconds."""
    ran = {r.node_id: r for r in records if r.started > 0}
    if not ran:
        return [], 0.0
    end = max(ran.values(), key=lambda r: r.started + r.duration)
    path = [end]
    seen = {end.node_id}
    while True:
        ups = [ran[u] for u in path[-1].upstream if u in ran and u not in seen]
        if not ups:
            break
        nxt = max(ups, key=lambda r: r.started + r.duration)
        seen.add(nxt.node_id)
        path.append(nxt)
    path.reverse()
    span = (end.started + end.duration) - path[0].started
    return [r.node_id for r in path], span
