"""The web example (FastAPI + uvicorn) against a real server on 127.0.0.1, over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "ran.log"
    env = {**os.environ, "ASYNCFLOW_STORE": str(tmp_path / "data"), "ASYNCFLOW_WEB_LOG": str(log),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.web.app:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"server did not start: {proc.stdout.read().decode() if proc.stdout else ''}")
        time.sleep(0.1)
    yield url, log
    proc.terminate()
    proc.wait(10)
    if proc.stdout:
        proc.stdout.close()


async def _events(client: httpx.AsyncClient, url: str) -> list[dict]:
    out = []
    async with client.stream("GET", url) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


async def test_200_concurrent_runs_share_upstream_and_the_app_keeps_answering(server) -> None:
    url, log = server
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=300)) as client:
        ids: list[str] = []

        async def post(i: int) -> None:
            r = await client.post("/runs", json={"task": "score", "params": {"user": f"u{i}"}})
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])

        async def health() -> None:
            for _ in range(10):
                t = time.perf_counter()
                assert (await client.get("/health")).status_code == 200
                latencies.append(time.perf_counter() - t)
                await anyio.sleep(0.02)

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(post, i)
            tg.start_soon(health)
        for run_id in ids:
            with anyio.fail_after(30):
                while (state := (await client.get(f"/runs/{run_id}")).json())["status"] in ("pending", "running"):
                    await anyio.sleep(0.05)
            assert state["status"] == "succeeded", state
            assert state["output"]["user"].startswith("u")
    ran = log.read_text().split()
    assert ran.count("reference[size=100]") == 1  # the shared upstream ran once for 200 runs
    assert len([r for r in ran if r.startswith("score[")]) == 200
    # the loop is never blocked for long: a hang bound, not a speed figure (latency is in benchmarks/)
    assert len(latencies) == 10 and max(latencies) < 10, latencies


async def test_event_stream_is_complete_and_ordered_even_for_a_late_client(server) -> None:
    url, _ = server
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        run_id = (await client.post("/runs", json={"task": "report", "params": {"user": "ev", "pause": 0.05}})).json()[
            "id"
        ]
        live = await _events(client, f"/runs/{run_id}/events")
        late = await _events(client, f"/runs/{run_id}/events")  # connects after the end: replay
    assert live == late
    assert live[-1]["kind"] == "FlowFinished" and live[-1]["ok"]
    for node in {e["node_id"] for e in live if "node_id" in e}:
        kinds = [e["kind"] for e in live if e.get("node_id") == node]
        assert kinds == ["TaskStarted", "TaskSucceeded"], (node, kinds)
    ts = [e["timestamp"] for e in live]
    assert ts == sorted(ts)


async def test_cancel_stops_the_run_promptly(server, tmp_path) -> None:
    url, _ = server
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        body = {"task": "report", "params": {"user": "slow", "steps": 4, "pause": 30}}
        run_id = (await client.post("/runs", json=body)).json()["id"]
        await anyio.sleep(0.3)
        t = time.perf_counter()
        r = await client.delete(f"/runs/{run_id}")
        assert time.perf_counter() - t < 10  # a hang bound: the body sleeps 30 s
        assert r.json()["status"] == "cancelled"
        events = await _events(client, f"/runs/{run_id}/events")
    assert events[-1]["kind"] == "FlowFinished" and not events[-1]["ok"]
    assert not any(p.name.startswith("part") for p in (tmp_path / "data").glob("*/*"))  # nothing partial


async def test_bad_requests_get_clear_4xx(server) -> None:
    url, _ = server
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.post("/runs", json={"task": "nope"})
        assert r.status_code == 404 and "unknown task 'nope'" in r.json()["detail"]
        r = await client.post("/runs", json={"task": "score", "params": {"user": 3}})
        assert r.status_code == 422 and "parameter 'user' expects str" in r.json()["detail"]
        r = await client.post("/runs", json={"task": "score", "params": {"user": "a", "bogus": 1}})
        assert r.status_code == 422 and "unknown parameter 'bogus'" in r.json()["detail"]
        assert (await client.get("/runs/unknown")).status_code == 404
        assert (await client.delete("/runs/unknown")).status_code == 404


async def test_a_client_that_disconnects_does_not_disturb_the_run(server) -> None:
    url, _ = server
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        run_id = (await client.post("/runs", json={"task": "report", "params": {"user": "dc", "pause": 0.2}})).json()[
            "id"
        ]
        async with client.stream("GET", f"/runs/{run_id}/events") as response:
            async for _ in response.aiter_lines():
                break  # gone after the first line
        with anyio.fail_after(10):
            while (state := (await client.get(f"/runs/{run_id}")).json())["status"] == "running":
                await anyio.sleep(0.05)
    assert state["status"] == "succeeded" and state["output"] == [0, 1, 2]


def test_graph_page_draws_every_node_and_follows_the_run_in_chromium(server, tmp_path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    url, _ = server
    run_id = httpx.post(f"{url}/runs", json={"task": "report", "params": {"user": "page", "pause": 0.5}}).json()["id"]
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", "--virtual-time-budget=10000",
         f"{url}/runs/{run_id}/graph"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    nodes = [line for line in dom.split('class="node"')[1:]]
    assert len(nodes) == 4  # report and its three parts: one element each
    assert all('data-status="ran"' in n for n in nodes)
    assert all("pending running ran" in n for n in nodes)  # each went through running, live
    assert '<span id="status">done</span>' in dom
