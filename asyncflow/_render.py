"""Text views of a flow: the preview tree, the execution summary, mermaid and dot graphs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._node import Node


def tree(
    roots: list[Node],
    children: Callable[[Node], Iterable[Node]],
    label: Callable[[Node], str],
) -> str:
    """One `id STATUS` line per node and position, drawn as a tree under `roots`.

    A node reached again draws its own line but not its upstream a second time, so shared
    upstream (diamonds) cannot blow the tree up.
    """
    lines: list[str] = []
    expanded: set[Node] = set()
    stack: list[tuple[Node, str, bool]] = [(r, "", i == len(roots) - 1) for i, r in reversed(list(enumerate(roots)))]
    while stack:
        node, prefix, last = stack.pop()
        lines.append(f"{prefix}{'└─ ' if last else '├─ '}{label(node)}")
        if node in expanded:
            continue
        expanded.add(node)
        kids = list(children(node))
        inner = prefix + ("   " if last else "│  ")
        for i in range(len(kids) - 1, -1, -1):
            stack.append((kids[i], inner, i == len(kids) - 1))
    return "\n".join(lines)


def summary(result: Any) -> str:
    """The execution summary block (d6tflow / Luigi style)."""
    recs = list(result.records.values())
    by: dict[str, Counter[str]] = {}
    for r in recs:
        by.setdefault(r.status, Counter())[r.task] += 1
    head = "===== asyncflow execution summary ====="
    out = [head, f"Scheduled {len(recs)} node{'s' if len(recs) != 1 else ''} in {result.duration:.2f}s:"]

    def block(status: str, title: str, one: str | None = None) -> None:
        counts = by.get(status)
        if counts:
            total = sum(counts.values())
            out.append(f"* {total} {one if total == 1 and one else title}:")
            out.extend(f"    - {n} {task}" for task, n in sorted(counts.items()))

    block("ran", "ran")
    block("skipped", "complete ones were encountered (skipped)", "complete one was encountered (skipped)")
    failed = [r for r in recs if r.status == "failed"]
    if failed:
        out.append(f"* {len(failed)} failed:")
        out.extend(f"    - {r.node_id}: {r.error}" for r in failed)
    block("upstream_failed", "not run because an upstream task failed")
    block("cancelled", "cancelled")
    if result.ok:
        out.append(
            "This run succeeded :)"
            if not failed
            else "This run succeeded; failures above were handled by their callers"
        )
    else:
        out.append(f"This run failed :( {len(failed)} task{'s' if len(failed) != 1 else ''} failed")
    out.append("=" * len(head))
    return "\n".join(out)


def mermaid(edges: list[tuple[Node, Node]], nodes: list[Node], status: Callable[[Node], str]) -> str:
    """A mermaid `graph LR` of the flow (upstream --> downstream)."""
    ids = {n: f"n{i}" for i, n in enumerate(nodes)}
    out = ["graph LR"]
    for n in nodes:
        text = f"{n.id} {status(n)}".replace('"', "#quot;")
        out.append(f'    {ids[n]}["{text}"]')
    out.extend(f"    {ids[a]} --> {ids[b]}" for a, b in edges)
    return "\n".join(out)


def dot(edges: list[tuple[Node, Node]], nodes: list[Node], status: Callable[[Node], str]) -> str:
    """A Graphviz `digraph` of the flow."""
    ids = {n: f"n{i}" for i, n in enumerate(nodes)}
    out = ["digraph asyncflow {", "  rankdir=LR;"]
    for n in nodes:
        text = f"{n.id} {status(n)}".replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'  {ids[n]} [label="{text}"];')
    out.extend(f"  {ids[a]} -> {ids[b]};" for a, b in edges)
    out.append("}")
    return "\n".join(out)
