"""The web example (FastAPI + uvicorn) against a real server on 127.0.0.1, over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def _serve(tmp_path: Path, workers: int = 1, **env: str) -> Iterator[tuple[str, Path]]:
    """uvicorn serving the example on 127.0.0.1 (a free port), its store in `tmp_path`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "ran.log"
    env = {**os.environ, "ASYNCFLOW_STORE": str(tmp_path / "data"), "ASYNCFLOW_WEB_LOG": str(log),
           "PYTHONPATH": str(ROOT), **env}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.web.app:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "--workers", str(workers)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
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
    try:
        yield url, log
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with _serve(tmp_path) as served:
        yield served


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
        assert (await client.get(f"/runs/{run_id}")).json()["status"] == "cancelled"
        events = await _events(client, f"/runs/{run_id}/events")
    last = events[-1]
    assert last["kind"] == "FlowFinished" and not last["ok"] and last["cancelled"] and last["duration"] >= 0.3
    assert not any(p.name.startswith("part") for p in (tmp_path / "data").glob("*/*"))  # nothing partial


async def test_bad_requests_get_clear_4xx_as_json_without_server_paths(server, tmp_path) -> None:
    url, _ = server
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def error(status: int, body: Any) -> str:
            r = await (client.post("/runs", json=body) if not isinstance(body, bytes) else
                       client.post("/runs", content=body, headers={"content-type": "application/json"}))  # fmt: skip
            assert r.status_code == status, r.text
            text = r.json()["error"]
            assert str(tmp_path) not in text
            return text  # type: ignore[no-any-return]

        assert "unknown task 'nope'" in await error(404, {"task": "nope"})
        assert "parameter 'user' expects str" in await error(422, {"task": "score", "params": {"user": 3}})
        assert "unknown parameter 'usr'" in await error(422, {"task": "score", "params": {"usr": "ann"}})
        assert "unknown parameter 'bogus'" in await error(422, {"task": "score", "params": {"user": "a", "bogus": 1}})
        assert "'size' expects int (ge=1, le=10000)" in await error(
            422, {"task": "reference", "params": {"size": 4_000_000}}
        )
        assert "'steps'" in await error(422, {"task": "report", "params": {"user": "a", "steps": 20000}})
        assert "'pause'" in await error(422, b'{"task": "report", "params": {"user": "a", "pause": 1e999}}')
        assert "bad request body" in await error(422, {"params": {}})
        for method in (client.get, client.delete):
            r = await method("/runs/unknown")
            assert r.status_code == 404 and "unknown run id" in r.json()["error"]
        # a succeeded run whose target was deleted: 410 and what to do, no path, no bare 500
        done = (await client.post("/runs?wait=true", json={"task": "score", "params": {"user": "gone"}})).json()
        assert done["status"] == "succeeded" and done["output"]["user"] == "gone"
        targets = list((tmp_path / "data" / "score").glob("*user=gone-*"))
        assert len(targets) == 1
        targets[0].unlink()
        r = await client.get(f"/runs/{done['id']}")
        assert r.status_code == 410 and "start it again" in r.json()["error"] and str(tmp_path) not in r.text


def test_finished_runs_are_kept_a_bounded_number_then_answer_410(tmp_path: Path) -> None:
    with _serve(tmp_path, WEB_KEEP_RUNS="3") as (url, _):
        ids = [httpx.post(f"{url}/runs?wait=true", json={"task": "score", "params": {"user": f"k{i}"}},
                          timeout=30).json()["id"] for i in range(5)]  # fmt: skip
        answers = [httpx.get(f"{url}/runs/{run_id}", timeout=30) for run_id in ids]
    assert [r.status_code for r in answers] == [410, 410, 200, 200, 200]
    assert "no longer kept" in answers[0].json()["error"]


def test_a_run_refused_for_capacity_never_runs(tmp_path: Path) -> None:
    with _serve(tmp_path, WEB_MAX_ACTIVE="1") as (url, log):
        slow = httpx.post(f"{url}/runs", json={"task": "report", "params": {"user": "a", "steps": 1, "pause": 2}})
        refused = httpx.post(f"{url}/runs", json={"task": "score", "params": {"user": "refused"}})
        assert slow.status_code == 200
        assert refused.status_code == 503 and "too many runs in progress" in refused.json()["error"]
        time.sleep(0.5)
    assert "score[user=refused]" not in (log.read_text() if log.exists() else "")


def test_two_worker_processes_build_a_shared_node_once(tmp_path: Path) -> None:
    with _serve(tmp_path, workers=2) as (url, log):

        async def main() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:

                async def one(i: int) -> None:
                    r = await client.post("/runs?wait=true", json={"task": "score", "params": {"user": f"w{i}"}})
                    out.append(r.json())

                async with anyio.create_task_group() as tg:
                    for i in range(40):
                        tg.start_soon(one, i)
            return out

        states = anyio.run(main)
        pids = httpx.get(f"{url}/health", timeout=5)  # (still answering)
    assert pids.status_code == 200
    assert all(s["status"] == "succeeded" for s in states) and len(states) == 40, states
    ran = log.read_text().split()
    assert ran.count("reference[size=100]") == 1, ran  # one build for both workers
    assert len([r for r in ran if r.startswith("score[")]) == 40


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
    assert '<span id="status">succeeded</span>' in dom
    assert dom.count("<line ") == 3  # report <- each part: the edges are drawn
    assert all(f"</i>{word}</span>" in dom for word in ("pending", "running", "ran", "failed", "cancelled"))  # legend
