"""Run statistics and the HTML report."""

from __future__ import annotations

import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import anyio
import pytest

import asyncflow as af

pytestmark = pytest.mark.anyio


@af.task(retries=2)
async def leaf(i: int) -> int:
    await anyio.sleep(0.001 * i)
    return i


@af.task
async def combine(xs: list[int]) -> int:
    await anyio.sleep(0.02)
    return sum(xs)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.cells: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:  # type: ignore[type-arg]
        self.tags.append(tag)
        if tag not in ("meta", "br", "img", "link", "input", "hr"):  # void elements close themselves
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "td":
            self.cells.append(data)


async def _run(store: str) -> af.RunResult:
    flow = af.Workflow(combine(xs=[leaf(i=i) for i in range(12)]), store=store, max_concurrency=3)
    return await flow.run()


async def test_run_statistics(mem_store) -> None:
    result = await _run(mem_store)
    stats = result.stats
    assert stats.ran == 13 and stats.peak_concurrency == 3
    assert stats.throughput == pytest.approx(13 / result.duration)
    assert stats.tasks["leaf"].count == 12
    assert stats.tasks["leaf"].p50 <= stats.tasks["leaf"].p95 <= stats.tasks["leaf"].max
    assert stats.tasks["leaf"].total == pytest.approx(
        sum(r.duration for r in result.records.values() if r.task == "leaf")
    )
    assert stats.tasks["combine"].retries == 0 and stats.tasks["combine"].failures == 0
    assert stats.critical_path[-1].startswith("combine[") and stats.critical_path[0].startswith("leaf[")
    assert 0 < stats.critical_path_time <= result.duration + 0.01


async def test_retries_and_failures_are_counted(mem_store) -> None:
    tries = {"n": 0}

    @af.task(retries=1)
    async def flaky() -> int:
        tries["n"] += 1
        if tries["n"] == 1:
            raise ConnectionError("once")
        return 1

    @af.task
    async def broken() -> int:
        raise ValueError("always")

    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow([flaky(), broken()], store=mem_store).run()
    stats = e.value.result.stats
    assert stats.tasks["flaky"].retries == 1
    assert stats.tasks["broken"].failures == 1


async def test_report_is_one_valid_file_holding_every_node(mem_store, tmp_path) -> None:
    result = await _run(mem_store)
    path = tmp_path / "run.html"
    result.write_report(str(path))
    html = path.read_text()
    parser = _Collect()
    parser.feed(html)
    assert not parser.stack  # every tag closed
    assert {"svg", "table"} <= set(parser.tags)
    for node_id in result.records:
        assert node_id in parser.cells  # the node table lists every node
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched
    assert "<script" not in html


@pytest.mark.slow
def test_report_draws_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    result = anyio.run(_run, f"memory://report-{tmp_path.name}")
    page = tmp_path / "run.html"
    result.write_report(str(page))
    png = tmp_path / "run.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1200,1600",
         page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000  # a real picture, not a blank one


@pytest.mark.slow
def test_cli_writes_a_report(tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text(
        "import asyncflow as af\n@af.task\nasync def one(i: int = 1) -> int:\n    return i\n"
    )
    out = subprocess.run([sys.executable, "-m", "asyncflow", "run", "p.py:one", "--report", "r.html"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "one[i=1]" in (tmp_path / "r.html").read_text()


@af.task(persist=False)
async def rep_leaf(i: int) -> int:
    await anyio.sleep(0.002)
    if i == 3:
        raise ValueError("three")
    return i


@af.task(persist=False)
async def rep_total(parts: list[int]) -> int:
    return sum(parts)


@af.task(persist=False)
async def rep_region_summary(region: str, year: int = 2024) -> str:
    return region


async def _report_of(nodes: list[af.Node], tmp_path: Path, name: str) -> str:
    try:
        result = await af.Workflow(nodes, max_concurrency=8, execution_summary=False).run()
    except af.FlowFailed as e:
        result = e.result
    path = tmp_path / f"{name}.html"
    result.write_report(str(path))
    return path.read_text()


@pytest.mark.parametrize("n", [5, 200, 10_000])
async def test_report_reads_at_every_size(n: int, tmp_path: Path) -> None:
    import re

    nodes = [rep_total(parts=[rep_leaf(i=i) for i in range(n - 1)])]
    html = await _report_of(nodes, tmp_path, f"r{n}")
    figures = re.search(r"<td>nodes</td><td>(\d+): ([^<]+)</td>", html)
    assert figures is not None
    counts = [int(w.split()[0]) for w in figures.group(2).split(", ")]
    assert int(figures.group(1)) == n == sum(counts)  # the figures add up
    assert "1 failed" in figures.group(2) and "1 upstream failed" in figures.group(2)
    boxes = re.findall(r'<g class="node" data-id="([^"]+)"', html)
    if n <= 60:
        assert len(boxes) == n  # a box per node
    else:
        assert sorted(boxes) == [f"rep_leaf x{n - 1}", "rep_total x1"]  # a box per task
        assert f"{n - 2} ran, 1 failed" in html
    assert "legend-item" in html and "upstream failed</span>" in html  # a legend of the statuses shown
    table = re.findall(r"<tr><td>(rep_leaf\[i=\d+\])</td>", html)
    assert table[:3] == ["rep_leaf[i=0]", "rep_leaf[i=1]", "rep_leaf[i=2]"] and len(table) == n - 1  # natural
    axes = re.findall(r'<svg id="(timeline|concurrency)".*?<line x1="([\d.]+)" y1="[\d.]+" x2="([\d.]+)" y2', html)
    assert len(axes) == 2 and axes[0][1:] == axes[1][1:]  # one time axis for both charts
    peak = int(re.search(r'data-peak="(\d+)"', html).group(1))  # type: ignore[union-attr]
    header = int(re.search(r"<td>peak concurrency</td><td>(\d+) bodies", html).group(1))  # type: ignore[union-attr]
    assert header <= 8 and header <= peak <= 3 * 8  # bodies hold slots; their writes may overlap (said)


async def test_report_boxes_tell_similar_nodes_apart(tmp_path: Path) -> None:
    import re

    regions = ["north-east", "north-west", "south-east", "south-west"]
    html = await _report_of([rep_region_summary(region=r) for r in regions], tmp_path, "similar")
    lines = re.findall(r'<g class="node" data-id="[^"]+"[^>]*><rect[^>]*/><text[^>]*>([^<]*)</text>'
                       r'<text[^>]*>([^<]*)</text>', html)  # fmt: skip
    assert len(lines) == 4 and len({second for _, second in lines}) == 4  # no two boxes read alike
    assert all(first == "rep_region_summary" for first, _ in lines)


@pytest.mark.parametrize("engine", ["igraph", "built-in"])
def test_the_dag_drawing_keeps_layers_and_routes_long_edges_around_boxes(engine: str, monkeypatch) -> None:
    import re

    from asyncflow import _drawing

    if engine == "igraph":
        pytest.importorskip("igraph")
    else:
        monkeypatch.setattr(_drawing, "_sugiyama", lambda ids, ups: None)
    nodes = [(n, n, "ran") for n in ("a", "b", "c", "d")]
    edges = [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d")]  # a -> c skips b's column
    svg = _drawing.dag_svg(nodes, edges)
    boxes = {m.group(1): (float(m.group(2)), float(m.group(3)))
             for m in re.finditer(r'data-id="(\w)".*?<rect x="([\d.]+)" y="([\d.]+)"', svg)}  # fmt: skip
    xs = sorted({x for x, _ in boxes.values()})
    assert [boxes[n][0] for n in "abcd"] == xs  # one column per longest-path layer, upstream on the left
    assert len(set(boxes.values())) == 4  # no two boxes at one place
    if engine == "igraph":
        bend = re.search(r'<polyline points="([^"]+)"', svg)
        assert bend is not None  # a -> c bends through a slot of its own in b's column
        ys = [float(p.split(",")[1]) for p in bend.group(1).split()]
        assert all(abs(y - (boxes["b"][1] + _drawing.BOX_H / 2)) > 1 for y in ys[1:-1])  # not through b's box
