"""The HTML run report: one self-contained file (inline SVG and CSS; no script, no network)."""

from __future__ import annotations

from html import escape
from typing import Any

MAX_DRAWN = 400  # nodes drawn in the DAG and the timeline; the tables list every node

_COLORS = {"ran": "#3b82f6", "skipped": "#9ca3af", "failed": "#ef4444", "upstream_failed": "#f59e0b",
           "cancelled": "#6b7280"}  # fmt: skip

_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#111}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.figures td{text-align:left}
svg text{font:11px system-ui,sans-serif}
"""


def _dag(records: list[Any]) -> str:
    shown = sorted(records, key=lambda r: (r.status != "failed", r.status != "ran", r.node_id))[:MAX_DRAWN]
    ids = {r.node_id for r in shown}
    depth: dict[str, int] = {}
    by_id = {r.node_id: r for r in shown}

    def level(node_id: str) -> int:  # iterative longest-path depth from the sources
        stack = [(node_id, False)]
        while stack:
            nid, ready = stack.pop()
            if nid in depth:
                continue
            ups = [u for u in by_id[nid].upstream if u in ids]
            if ready or not ups:
                depth[nid] = 1 + max((depth.get(u, 0) for u in ups), default=-1)
            else:
                stack.append((nid, True))
                stack.extend((u, False) for u in ups if u not in depth)
        return depth[node_id]

    columns: dict[int, list[str]] = {}
    for r in shown:
        columns.setdefault(level(r.node_id), []).append(r.node_id)
    w, h, gx, gy = 180, 22, 60, 8
    pos = {
        nid: (col * (w + gx) + 10, row * (h + gy) + 10) for col, nids in columns.items() for row, nid in enumerate(nids)
    }
    width = (max(columns, default=0) + 1) * (w + gx) + 20
    height = max((len(v) for v in columns.values()), default=1) * (h + gy) + 20
    parts = [f'<svg id="dag" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for r in shown:
        x2, y2 = pos[r.node_id]
        for u in r.upstream:
            if u in pos:
                x1, y1 = pos[u]
                parts.append(f'<line x1="{x1 + w}" y1="{y1 + h / 2}" x2="{x2}" y2="{y2 + h / 2}" stroke="#bbb"/>')
    for r in shown:
        x, y = pos[r.node_id]
        label = r.node_id if len(r.node_id) <= 28 else r.node_id[:27] + "…"
        parts.append(
            f'<g class="node" data-id="{escape(r.node_id)}"><title>{escape(r.node_id)} {r.status}</title>'
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="4" fill="{_COLORS.get(r.status, "#999")}"/>'
            f'<text x="{x + 5}" y="{y + 15}" fill="#fff">{escape(label)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _timeline(records: list[Any]) -> tuple[str, str]:
    ran = sorted((r for r in records if r.started > 0), key=lambda r: r.started)
    if not ran:
        return "<p>No node ran.</p>", "<p>No node ran.</p>"
    t0 = ran[0].started
    t1 = max(r.started + r.duration for r in ran)
    span = max(t1 - t0, 1e-9)
    width, row = 900, 14
    drawn = ran[:MAX_DRAWN]
    bars = [
        f'<svg id="timeline" width="{width + 220}" height="{len(drawn) * row + 30}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, r in enumerate(drawn):
        x = 210 + (r.started - t0) / span * width
        bw = max(1.0, r.duration / span * width)
        label = r.node_id if len(r.node_id) <= 32 else r.node_id[:31] + "…"
        bars.append(
            f'<text x="0" y="{i * row + 11}">{escape(label)}</text>'
            f'<rect x="{x:.1f}" y="{i * row + 2}" width="{bw:.1f}" height="{row - 4}" '
            f'fill="{_COLORS.get(r.status, "#999")}"><title>{escape(r.node_id)}: {r.duration:.4f}s</title></rect>'
        )
    bars.append(f'<text x="210" y="{len(drawn) * row + 24}">0 s</text>')
    bars.append(f'<text x="{210 + width - 40}" y="{len(drawn) * row + 24}">{span:.3f} s</text></svg>')
    # concurrency over time: a step line over start (+1) and end (-1) events
    events = sorted([(r.started - t0, 1) for r in ran] + [(r.started + r.duration - t0, -1) for r in ran])
    level, peak, points = 0, 1, [(0.0, 0)]
    for t, d in events:
        points.append((t, level))
        level += d
        points.append((t, level))
        peak = max(peak, level)
    hgt = 160
    coords = " ".join(f"{40 + t / span * width:.1f},{10 + hgt - v / peak * hgt:.1f}" for t, v in points)
    conc = (
        f'<svg id="concurrency" width="{width + 60}" height="{hgt + 40}" xmlns="http://www.w3.org/2000/svg">'
        f'<polyline points="{coords}" fill="none" stroke="#3b82f6" stroke-width="1.5"/>'
        f'<text x="0" y="18">{peak}</text><text x="0" y="{hgt + 10}">0</text>'
        f'<text x="40" y="{hgt + 32}">0 s</text><text x="{width}" y="{hgt + 32}">{span:.3f} s</text></svg>'
    )
    return "".join(bars), conc


def report_html(result: Any) -> str:
    """The report of a `RunResult`."""
    records = list(result.records.values())
    stats = result.stats
    timeline, concurrency = _timeline(records)
    task_rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{t.count}</td><td>{t.total:.4f}</td><td>{t.p50:.4f}</td>"
        f"<td>{t.p95:.4f}</td><td>{t.max:.4f}</td><td>{t.retries}</td><td>{t.failures}</td></tr>"
        for name, t in stats.tasks.items()
    )
    node_rows = "".join(
        f"<tr><td>{escape(r.node_id)}</td><td>{r.status}</td><td>{r.duration:.4f}</td><td>{r.attempts}</td>"
        f"<td>{escape(r.error or '')}</td></tr>"
        for r in records
    )
    note = f"<p>The drawings show {MAX_DRAWN} of {len(records)} nodes; the tables list them all.</p>"
    limits = getattr(result, "limits", {})
    limit_rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{v['size']}</td><td>{v['peak_borrowed']}</td><td>{v['peak_waiting']}</td></tr>"
        for name, v in limits.items()
    )
    limit_table = (
        "<h2>Limits</h2><p>Shared by every run of the event loop: the peaks are all runs' together.</p>"
        '<table id="limits"><tr><th>pool</th><th>size</th><th>peak in use</th><th>peak waiting</th></tr>'
        f"{limit_rows}</table>"
        if limits
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>asyncflow run report</title><style>{_CSS}</style></head>
<body>
<h1>asyncflow run report</h1>
<table class="figures">
<tr><td>wall time</td><td>{stats.wall:.3f} s</td></tr>
<tr><td>nodes</td><td>{len(records)}: {result.ran} ran, {result.skipped} skipped, {result.failed} failed</td></tr>
<tr><td>throughput</td><td>{stats.throughput:.1f} nodes/s</td></tr>
<tr><td>peak concurrency</td><td>{stats.peak_concurrency}</td></tr>
<tr><td>critical path</td><td>{stats.critical_path_time:.3f} s: {escape(" → ".join(stats.critical_path))}</td></tr>
</table>
{note if len(records) > MAX_DRAWN else ""}
<h2>Graph</h2>{_dag(records)}
<h2>Timeline</h2>{timeline}
<h2>Concurrency over time</h2>{concurrency}
<h2>Tasks</h2>
<table id="tasks"><tr><th>task</th><th>count</th><th>total s</th><th>p50 s</th><th>p95 s</th><th>max s</th>
<th>retries</th><th>failures</th></tr>{task_rows}</table>
{limit_table}
<h2>Nodes</h2>
<table id="nodes"><tr><th>node</th><th>status</th><th>duration s</th><th>tries</th><th>error</th></tr>
{node_rows}</table>
</body></html>
"""
