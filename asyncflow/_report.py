"""The HTML run report: one self-contained file (inline SVG and CSS; no script, no network)."""

from __future__ import annotations

from html import escape
from typing import Any

from ._drawing import COLOURS, GROUP_BEYOND, css, dag_svg, fit, legend, natural

_ONE_ROW_EACH = GROUP_BEYOND  # beyond, the timeline draws a lane per task (as the graph a box per task)
MAX_LANES = 64  # rows of one task's lane

_STATUSES = ("ran", "skipped", "failed", "upstream_failed", "cancelled")

_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#111}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.figures td{text-align:left}
svg text{font:11px system-ui,sans-serif}.scroll{overflow:auto;max-height:640px;border:1px solid #eee}
"""

# one time axis for the timeline and the concurrency chart: the same left margin and width
_X0, _WIDTH = 230, 860


def _dag(records: list[Any]) -> str:
    nodes = [(r.node_id, r.task, r.status) for r in sorted(records, key=lambda r: natural(r.node_id))]
    edges = [(u, r.node_id) for r in records for u in r.upstream]
    present = [s for s in _STATUSES if any(r.status == s for r in records)]
    return f'<p class="legend">{legend(present)}</p><div class="scroll">{dag_svg(nodes, edges)}</div>'


def _axis(span: float, y: int) -> str:
    """Ticks under a chart of `span` seconds drawn from `_X0` over `_WIDTH` pixels."""
    step = 10 ** len(str(int(span * 1000))) / 10_000 if span > 0 else 1.0  # a power of ten below span
    while span / step > 10:
        step *= 2
    ticks, t = [], 0.0
    while t <= span + 1e-12:
        x = _X0 + t / span * _WIDTH
        ticks.append(f'<line x1="{x:.1f}" y1="{y - 4}" x2="{x:.1f}" y2="{y}" stroke="#999"/>'
                     f'<text x="{x:.1f}" y="{y + 12}" text-anchor="middle">{t:g} s</text>')  # fmt: skip
        t = round(t + step, 9)
    return f'<line x1="{_X0}" y1="{y - 4}" x2="{_X0 + _WIDTH}" y2="{y - 4}" stroke="#999"/>' + "".join(ticks)


def _timeline(records: list[Any]) -> tuple[str, str, int]:
    ran = sorted((r for r in records if r.started > 0), key=lambda r: (r.started, natural(r.node_id)))
    if not ran:
        return "<p>No node ran.</p>", "<p>No node ran.</p>", 0
    t0 = ran[0].started
    span = max(max(r.started + r.duration for r in ran) - t0, 1e-9)
    row = 14
    rows = _rows(ran)
    bottom = len(rows) * row + 8
    bars = [f'<svg id="timeline" width="{_X0 + _WIDTH + 40}" height="{bottom + 24}" '
            'xmlns="http://www.w3.org/2000/svg">']  # fmt: skip
    for i, (label, lane) in enumerate(rows):
        if label:
            bars.append(f'<text x="0" y="{i * row + 11}">{escape(fit(label, 36))}</text>')
        for r in lane:
            x = _X0 + (r.started - t0) / span * _WIDTH
            bw = max(1.0, r.duration / span * _WIDTH)
            bars.append(f'<rect x="{x:.1f}" y="{i * row + 2}" width="{bw:.1f}" height="{row - 4}" '
                        f'fill="{COLOURS.get(r.status, "#999")}" stroke="#fff" stroke-width="0.5">'
                        f"<title>{escape(r.node_id)}: {r.duration:.4f}s</title></rect>")  # fmt: skip
    bars.append(_axis(span, bottom + 4) + "</svg>")
    # nodes in progress over time (a body, or its output being written): +1 at a start, -1 at an end
    events = sorted([(r.started - t0, 1) for r in ran] + [(r.started + r.duration - t0, -1) for r in ran])
    level, peak, points = 0, 1, [(0.0, 0)]
    for t, d in events:
        points.append((t, level))
        level += d
        points.append((t, level))
        peak = max(peak, level)
    hgt = 160
    coords = " ".join(f"{_X0 + t / span * _WIDTH:.1f},{10 + hgt - v / peak * hgt:.1f}" for t, v in points)
    grid = "".join(
        f'<line x1="{_X0}" y1="{y:.1f}" x2="{_X0 + _WIDTH}" y2="{y:.1f}" stroke="#eee"/>'
        f'<text x="{_X0 - 6}" y="{y + 4:.1f}" text-anchor="end">{v}</text>'
        for v in sorted({0, peak // 2, peak})
        for y in [10 + hgt - v / peak * hgt]
    )
    conc = (
        f'<svg id="concurrency" data-peak="{peak}" width="{_X0 + _WIDTH + 40}" height="{hgt + 44}" '
        f'xmlns="http://www.w3.org/2000/svg">{grid}'
        f'<polyline points="{coords}" fill="none" stroke="#3b82f6" stroke-width="1.5"/>{_axis(span, hgt + 24)}</svg>'
    )
    return "".join(bars), conc, peak


def _rows(ran: list[Any]) -> list[tuple[str, list[Any]]]:
    """Timeline rows: one per node up to `_ONE_ROW_EACH` nodes; beyond, one lane per task, its
    nodes packed into as few rows as overlap allows (the lane's height shows its concurrency)."""
    if len(ran) <= _ONE_ROW_EACH:
        return [(r.node_id, [r]) for r in ran]
    out: list[tuple[str, list[Any]]] = []
    tasks: dict[str, list[Any]] = {}
    for r in ran:
        tasks.setdefault(r.task, []).append(r)
    for task, runs in tasks.items():
        lanes: list[list[Any]] = []
        for r in runs:  # (by start)
            lane = next((ln for ln in lanes if ln[-1].started + ln[-1].duration <= r.started), None)
            if lane is None:
                lanes.append([r])
            else:
                lane.append(r)
        out += [(f"{task} x{len(runs)}" if i == 0 else "", lane) for i, lane in enumerate(lanes[:MAX_LANES])]
        if len(lanes) > MAX_LANES:  # said, never silently dropped
            hidden = sum(len(lane) for lane in lanes[MAX_LANES:])
            out.append((f"(+{hidden} more {task}: {len(lanes)} rows)", []))
    return out


def _counts(records: list[Any]) -> str:
    """`N: a ran, b skipped, c failed, ...`: every status that occurred, adding up to N."""
    by = {s: sum(1 for r in records if r.status == s) for s in _STATUSES}
    words = [f"{by[s]} {s.replace('_', ' ')}" for s in _STATUSES if by[s] or s in ("ran", "skipped", "failed")]
    return f"{len(records)}: {', '.join(words)}"


def report_html(result: Any) -> str:
    """The report of a `RunResult`."""
    records = list(result.records.values())
    stats = result.stats
    timeline, concurrency, peak_progress = _timeline(records)
    task_rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{t.count}</td><td>{t.total:.4f}</td><td>{t.p50:.4f}</td>"
        f"<td>{t.p95:.4f}</td><td>{t.max:.4f}</td><td>{t.retries}</td><td>{t.failures}</td></tr>"
        for name, t in stats.tasks.items()
    )
    node_rows = "".join(
        f"<tr><td>{escape(r.node_id)}</td><td>{r.status}</td><td>{r.duration:.4f}</td><td>{r.attempts}</td>"
        f"<td>{escape(r.error or '')}</td></tr>"
        for r in sorted(records, key=lambda r: natural(r.node_id))
    )
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
<html lang="en"><head><meta charset="utf-8"><title>asyncflow run report</title><style>{_CSS}{css()}</style></head>
<body>
<h1>asyncflow run report</h1>
<table class="figures">
<tr><td>wall time</td><td>{stats.wall:.3f} s</td></tr>
<tr><td>nodes</td><td>{_counts(records)}</td></tr>
<tr><td>throughput</td><td>{stats.throughput:.1f} nodes/s</td></tr>
<tr><td>peak concurrency</td><td>{stats.peak_concurrency} bodies at once (the run's slots); with their outputs being
written, up to {peak_progress} nodes in progress (the chart)</td></tr>
<tr><td>critical path</td><td>{stats.critical_path_time:.3f} s: {escape(" → ".join(stats.critical_path))}</td></tr>
</table>
<h2>Graph</h2>{_dag(records)}
<h2>Timeline</h2>{timeline}
<h2>Nodes in progress over time</h2>
<p>A node is in progress from its start to its output written (bodies hold a slot; writes overlap them).</p>
{concurrency}
<h2>Tasks</h2>
<table id="tasks"><tr><th>task</th><th>count</th><th>total s</th><th>p50 s</th><th>p95 s</th><th>max s</th>
<th>retries</th><th>failures</th></tr>{task_rows}</table>
{limit_table}
<h2>Nodes</h2>
<table id="nodes"><tr><th>node</th><th>status</th><th>duration s</th><th>tries</th><th>error</th></tr>
{node_rows}</table>
</body></html>
"""
