"""A DAG drawn in layers, as SVG: the run report's graph and the web example's live run page.

Layers as `dot` does them, by igraph's Sugiyama layout (extra `report`: layering, crossing
minimisation, each node placed near its neighbours); without igraph, a built-in one: each node in
the column of its longest upstream path, the order within each column from the barycentre of its
neighbours, swept a few times. Beyond `group_beyond` nodes the drawing shows one box
per task, with its count and statuses, so 10,000 nodes stay readable. Ids sort naturally
(`leaf[i=2]` before `leaf[i=10]`); a box shows its task, then its parameters on a second line (a
line too long for the box keeps its start and its end). Each box is `<g class="node" data-id=...
data-status=...>`, coloured by the CSS of `css()`, so a page can change a status live.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape
from typing import Any

COLOURS = {
    "pending": "#e5e7eb",
    "running": "#fde68a",
    "ran": "#86efac",
    "skipped": "#cbd5e1",
    "complete": "#cbd5e1",
    "stale": "#c4b5fd",
    "missing": "#f3f4f6",
    "failed": "#fca5a5",
    "upstream_failed": "#fdba74",
    "cancelled": "#d1d5db",
}
_WORST = ["failed", "upstream_failed", "cancelled", "running", "pending", "missing", "stale", "ran", "skipped",
          "complete"]  # fmt: skip
BOX_W, BOX_H, GAP_X, GAP_Y = 200, 34, 56, 12
GROUP_BEYOND = 60  # nodes: beyond, a box per task
_CHARS = 28  # characters that fit on a line of a box


def natural(text: str) -> list[Any]:
    """Sort key: `leaf[i=2]` before `leaf[i=10]`."""
    # a number by its length, then its digits: numeric order without int() (ids may hold 5,000 digits)
    return [
        (0, len(p.lstrip("0")), p.lstrip("0"), p) if p.isdigit() else (1, 0, p, p)
        for p in re.split(r"(\d+)", text)
        if p
    ]


def css() -> str:
    """The colours of the statuses, for the page that shows the drawing."""
    return "".join(f'g.node[data-status="{s}"] rect{{fill:{c}}}' for s, c in COLOURS.items()) + (
        "g.node rect{stroke:#6b7280;stroke-width:1}g.node text{font:12px system-ui,sans-serif;fill:#111}"
    )


def legend(statuses: Iterable[str]) -> str:
    """An HTML legend of these statuses' colours."""
    return "".join(
        f'<span class="legend-item"><i style="display:inline-block;width:12px;height:12px;border-radius:3px;'
        f'vertical-align:-1px;margin:0 4px 0 12px;background:{COLOURS.get(s, "#999")};border:1px solid #6b7280">'
        f"</i>{escape(s.replace('_', ' '))}</span>"
        for s in statuses
    )


def fit(text: str, width: int = _CHARS) -> str:
    """`text` in `width` characters: its start and its end, the middle elided."""
    if len(text) <= width:
        return text
    head = width // 3
    return text[:head] + "…" + text[-(width - head - 1) :]


def dag_svg(
    nodes: list[tuple[str, str, str]],
    edges: list[tuple[str, str]],
    group_beyond: int = GROUP_BEYOND,
    style: bool = False,
) -> str:
    """`nodes` as (id, task, status), `edges` as (upstream id, downstream id): the layered drawing
    (with `style`, the colours inside it). Its box size and row step are in `data-box-w`,
    `data-box-h` and `data-step` (a live page adds boxes for nodes the plan did not show)."""
    if len(nodes) > group_beyond:
        nodes, edges = _grouped(nodes, edges)
    ids = [n[0] for n in nodes]
    known = set(ids)
    ups: dict[str, list[str]] = {i: [] for i in ids}
    downs: dict[str, list[str]] = {i: [] for i in ids}
    for u, d in dict.fromkeys(edges):
        if u in known and d in known and u != d:
            ups[d].append(u)
            downs[u].append(d)
    laid = _sugiyama(ids, ups)
    places, bends = laid or (
        {
            nid: (c, float(r))
            for c, col in enumerate(_order(_layers(ids, ups), ups, downs))
            for r, nid in enumerate(col)
        },
        {},
    )

    def at(c: int, r: float) -> tuple[int, int]:
        return 10 + c * (BOX_W + GAP_X), 10 + round(r * (BOX_H + GAP_Y))

    pos = {nid: at(c, r) for nid, (c, r) in places.items()}
    rows = [r for _, r in places.values()] + [r for bs in bends.values() for _, r in bs]
    width = 20 + (max((c for c, _ in places.values()), default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    height = 20 + round((max(rows, default=0) + 1) * (BOX_H + GAP_Y)) - GAP_Y
    parts = [
        f'<svg id="dag" width="{width}" height="{height}" data-extra="{width}" data-box-w="{BOX_W}" '
        f'data-box-h="{BOX_H}" data-step="{BOX_H + GAP_Y}" xmlns="http://www.w3.org/2000/svg">'
        + (f"<style>{css()}</style>" if style else "")
        + '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#6b7280"/></marker></defs>'
    ]
    for d, us in ups.items():
        x2, y2 = pos[d]
        for u in us:
            x1, y1 = pos[u]
            points = [(x1 + BOX_W, y1 + BOX_H / 2)]
            for c, r in bends.get((u, d), ()):  # through its own slot in each column it crosses
                bx, by = at(c, r)
                points += [(bx, by + BOX_H / 2), (bx + BOX_W, by + BOX_H / 2)]
            points.append((x2, y2 + BOX_H / 2))
            if len(points) == 2:
                parts.append(f'<line x1="{points[0][0]}" y1="{points[0][1]}" x2="{x2}" y2="{y2 + BOX_H / 2}" '
                             'stroke="#9ca3af" marker-end="url(#arrow)"/>')  # fmt: skip
            else:
                drawn = " ".join(f"{x},{y}" for x, y in points)
                parts.append(f'<polyline points="{drawn}" fill="none" stroke="#9ca3af" marker-end="url(#arrow)"/>')
    for nid, task, status in nodes:
        x, y = pos[nid]
        first, second = _lines(nid, task)
        title = nid
        if "\n" in status:  # a group: "worst status\nsummary"
            status, second = status.split("\n", 1)
            first, title = nid, f"{nid}: {second}"
        text = f'<text x="{x + 8}" y="{y + 14}">{escape(fit(first))}</text>' + (
            f'<text x="{x + 8}" y="{y + 28}" style="font-size:11px">{escape(fit(second, _CHARS))}</text>'
            if second
            else ""
        )
        parts.append(f'<g class="node" data-id="{escape(nid)}" data-task="{escape(task)}" data-status="{status}">'
                     f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6"/>{text}'
                     f"<title>{escape(title)}</title></g>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _lines(node_id: str, task: str) -> tuple[str, str]:
    """A box's two lines: the task, then the parameters (what tells its nodes apart)."""
    if node_id.startswith(task + "[") and node_id.endswith("]"):
        return task, node_id[len(task) + 1 : -1]
    return node_id, ""


def _grouped(nodes: list[tuple[str, str, str]], edges: list[tuple[str, str]]) -> tuple[list[Any], list[Any]]:
    """One box per task: `task xN`, its worst status, and how many of each."""
    task_of = {nid: task for nid, task, _ in nodes}
    counts: dict[str, dict[str, int]] = {}
    for _, task, status in nodes:
        by = counts.setdefault(task, {})
        by[status] = by.get(status, 0) + 1
    out = []
    for task, by in counts.items():
        worst = min(by, key=lambda s: _WORST.index(s) if s in _WORST else len(_WORST))
        summary = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(by.items(), key=lambda kv: -kv[1]))
        out.append((f"{task} x{sum(by.values())}", task, f"{worst}\n{summary}"))
    label = {t: f"{t} x{sum(by.values())}" for t, by in counts.items()}
    grouped = {(label[task_of[u]], label[task_of[d]]) for u, d in edges if u in task_of and d in task_of}
    return out, sorted(grouped)


def _sugiyama(
    ids: list[str], ups: dict[str, list[str]]
) -> tuple[dict[str, tuple[int, float]], dict[tuple[str, str], list[tuple[int, float]]]] | None:
    """(column, row) of each node by igraph's Sugiyama layout, and for each edge that spans several
    columns the places it bends at (a slot of its own in each column it crosses, so it passes no
    box); None without igraph."""
    try:
        import igraph  # type: ignore[import-untyped]
    except ImportError:
        return None
    depth = _layers(ids, ups)
    names: list[Any] = sorted(ids, key=natural)  # (its starting order)
    index = {nid: i for i, nid in enumerate(names)}
    layers = [depth[nid] for nid in names]
    edges: list[tuple[int, int]] = []
    chains: dict[tuple[str, str], list[int]] = {}
    for d, us in ups.items():
        for u in us:
            at = index[u]
            chain = chains[(u, d)] = []
            for layer in range(depth[u] + 1, depth[d]):  # a bend point in each column crossed
                names.append((u, d, layer))
                layers.append(layer)
                edges.append((at, len(names) - 1))
                at = len(names) - 1
                chain.append(at)
            edges.append((at, index[d]))
    coords = igraph.Graph(n=len(names), edges=edges, directed=True).layout_sugiyama(layers=layers).coords
    places = {nid: (depth[nid], float(coords[i][0])) for i, nid in enumerate(names[: len(ids)])}
    bends = {e: [(layers[i], float(coords[i][0])) for i in chain] for e, chain in chains.items()}
    return places, bends


def _layers(ids: list[str], ups: dict[str, list[str]]) -> dict[str, int]:
    """Each node's column: the length of its longest upstream path (iterative: deep chains are fine)."""
    depth: dict[str, int] = {}
    opened: set[str] = set()  # (a cycle, which a plan cannot have, would end here, not loop)
    for start in ids:
        stack = [(start, False)]
        while stack:
            nid, ready = stack.pop()
            if nid in depth:
                continue
            if ready:
                depth[nid] = 1 + max((depth.get(u, -1) for u in ups[nid]), default=-1)
            elif nid not in opened:
                opened.add(nid)
                stack.append((nid, True))
                stack.extend((u, False) for u in ups[nid] if u not in depth)
    return depth


def _order(depth: dict[str, int], ups: dict[str, list[str]], downs: dict[str, list[str]]) -> list[list[str]]:
    """Columns, each ordered by the barycentre of its neighbours (four sweeps, natural order first)."""
    columns: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for nid in sorted(depth, key=natural):
        columns[depth[nid]].append(nid)
    for sweep in range(4):
        forward = sweep % 2 == 0
        order = range(1, len(columns)) if forward else range(len(columns) - 2, -1, -1)
        for c in order:
            near = ups if forward else downs
            index = {nid: i for i, nid in enumerate(columns[c - 1 if forward else c + 1])}
            here = {nid: i for i, nid in enumerate(columns[c])}

            def centre(nid: str, near: dict[str, list[str]] = near, index: dict[str, int] = index,
                       here: dict[str, int] = here) -> float:  # fmt: skip
                ns = [index[n] for n in near[nid] if n in index]
                return sum(ns) / len(ns) if ns else float(here[nid])

            columns[c].sort(key=centre)
    return columns
