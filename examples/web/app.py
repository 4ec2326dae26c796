"""asyncflow embedded in an async web service (FastAPI): runs over HTTP, live events, cancellation,
and a live run page. Runs live in the app's own task group (its lifespan).

    uvicorn examples.web.app:app --port 8000        (extra `web`: fastapi, uvicorn)
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape
from typing import Any

import anyio
import msgspec
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel

import asyncflow as af

from . import pipeline

TASKS = {t.name: t for t in (pipeline.reference, pipeline.score, pipeline.report, pipeline.part)}
STORE = os.environ.get("ASYNCFLOW_STORE", "./data")


class RunRequest(BaseModel):
    task: str
    params: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:  # every run belongs to the app
        app.state.tg = tg
        app.state.runs = {}
        yield
        tg.cancel_scope.cancel()


app = FastAPI(title="asyncflow web example", lifespan=lifespan)


def _run(run_id: str) -> tuple[af.RunHandle, af.Workflow]:
    try:
        return app.state.runs[run_id]  # type: ignore[no-any-return]
    except KeyError:
        raise HTTPException(404, f"unknown run id {run_id!r}") from None


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/runs")
async def start_run(body: RunRequest) -> dict[str, str]:
    task = TASKS.get(body.task)
    if task is None:
        raise HTTPException(404, f"unknown task {body.task!r}; known: {', '.join(sorted(TASKS))}")
    try:
        node = task.bind((), dict(body.params), strict=False)  # the task's own binding validates
    except af.ParameterError as e:
        raise HTTPException(422, str(e)) from None
    flow = af.Workflow(node, store=STORE, execution_summary=False)
    run_id = uuid.uuid4().hex
    app.state.runs[run_id] = (flow.start(app.state.tg), flow)
    return {"id": run_id}


@app.get("/runs/{run_id}")
async def get_run(run_id: str) -> dict[str, Any]:
    run, flow = _run(run_id)
    out = run.snapshot()
    if run.status == "succeeded":
        out["output"] = await flow.output()
    return out


@app.delete("/runs/{run_id}")
async def cancel_run(run_id: str) -> dict[str, Any]:
    run, _ = _run(run_id)
    run.cancel()
    with anyio.move_on_after(1):
        await run.wait()
    return run.snapshot()


@app.get("/runs/{run_id}/events")
async def run_events(run_id: str) -> StreamingResponse:
    run, _ = _run(run_id)

    async def stream() -> AsyncIterator[bytes]:
        async for event in run.events():  # from the start, then live, until FlowFinished
            yield b"data: " + msgspec.json.encode(event) + b"\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>run {run_id}</title><style>
body{{font:14px system-ui,sans-serif;margin:24px}} .node{{display:inline-block;margin:4px;padding:6px 10px;
border-radius:6px;background:#e5e7eb}} .node[data-status=running]{{background:#fde68a}}
.node[data-status=ran]{{background:#86efac}} .node[data-status=skipped]{{background:#cbd5e1}}
.node[data-status=failed]{{background:#fca5a5}}</style></head><body>
<h1>run {run_id}: <span id="status">{status}</span></h1><div id="graph">{nodes}</div>
<script>
const byId = new Map([...document.querySelectorAll('.node')].map(e => [e.dataset.id, e]));
function node(id) {{
  if (!byId.has(id)) {{ const e = document.createElement('span'); e.className = 'node'; e.dataset.id = id;
    e.dataset.status = 'pending'; e.textContent = id;
    document.getElementById('graph').appendChild(e); byId.set(id, e); }}
  return byId.get(id);
}}
const status = {{TaskStarted: 'running', TaskSucceeded: 'ran', TaskSkipped: 'skipped', TaskFailed: 'failed'}};
const source = new EventSource({events_url});
source.onmessage = (m) => {{
  const e = JSON.parse(m.data);
  if (e.kind === 'FlowFinished') {{ document.getElementById('status').textContent = e.ok ? 'done' : 'failed';
    source.close(); return; }}
  const el = node(e.node_id);
  el.dataset.status = status[e.kind] || 'pending';
  el.dataset.history = (el.dataset.history || 'pending') + ' ' + el.dataset.status;  // what it went through
}};
</script></body></html>"""


@app.get("/runs/{run_id}/graph", response_class=HTMLResponse)
async def run_graph(run_id: str) -> str:
    """The run's DAG with each node's live status (updated from the event stream; no CDN)."""
    run, flow = _run(run_id)
    preview = await flow.preview()
    nodes = "".join(
        f'<span class="node" data-id="{escape(n.id)}" data-status="pending">{escape(n.id)}</span>'
        for n in preview.nodes
    )
    return PAGE.format(run_id=run_id, status=run.status, nodes=nodes, events_url=json.dumps(f"/runs/{run_id}/events"))
