"""asyncflow embedded in an async web service (FastAPI): runs over HTTP, live events, cancellation,
and a live run page. Runs live in the app's own task group (its lifespan); finished runs are kept
for a while (`WEB_KEEP_RUNS` runs, `WEB_KEEP_SECONDS` seconds), then answer 410.

    uvicorn examples.web.app:app --port 8000 [--workers 4]        (extra `web`: fastapi, uvicorn)

Several workers share one store: a node that requests in different workers need is built once
(asyncflow's single flight across processes), and each worker's runs share its event loop's limits.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape
from typing import Any

import anyio
import msgspec
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel

import asyncflow as af

from . import pipeline

TASKS = {t.name: t for t in (pipeline.reference, pipeline.score, pipeline.report, pipeline.part)}
STORE = os.environ.get("ASYNCFLOW_STORE", "./data")
KEEP_RUNS = int(os.environ.get("WEB_KEEP_RUNS", "1000"))  # finished runs kept (newest first)...
KEEP_SECONDS = float(os.environ.get("WEB_KEEP_SECONDS", "900"))  # ...and for at most this long
MAX_ACTIVE = int(os.environ.get("WEB_MAX_ACTIVE", "2000"))  # runs pending or running at once: then 503


class RunRequest(BaseModel):
    task: str
    params: dict[str, Any] = {}


class Entry:
    __slots__ = ("finished", "flow", "handle")

    def __init__(self, handle: af.RunHandle, flow: af.Workflow) -> None:
        self.handle = handle
        self.flow = flow
        self.finished = 0.0  # when it ended (monotonic), 0 while it runs


class Runs:
    """The runs this worker knows: every active one, and the latest finished ones (bounded)."""

    def __init__(self) -> None:
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.finished: OrderedDict[str, Entry] = OrderedDict()  # in order of ending
        self.seq = itertools.count(1)
        self.issued = 0

    def admit(self) -> None:
        """Room for one more run, or 503 (asked before the run starts: a refused run never runs)."""
        self.prune()
        if len(self.entries) - len(self.finished) >= MAX_ACTIVE:
            raise HTTPException(503, f"too many runs in progress ({MAX_ACTIVE}); try again later")

    def add(self, handle: af.RunHandle, flow: af.Workflow) -> str:
        self.issued = next(self.seq)
        run_id = f"{self.issued:x}-{secrets.token_hex(6)}"
        self.entries[run_id] = Entry(handle, flow)
        return run_id

    def ended(self, run_id: str) -> None:
        entry = self.entries.get(run_id)
        if entry is not None:
            entry.finished = time.monotonic()
            self.finished[run_id] = entry
        self.prune()

    def prune(self) -> None:
        deadline = time.monotonic() - KEEP_SECONDS
        while self.finished:
            run_id, entry = next(iter(self.finished.items()))
            if len(self.finished) <= KEEP_RUNS and entry.finished > deadline:
                break
            del self.finished[run_id], self.entries[run_id]

    def get(self, run_id: str) -> Entry:
        self.prune()
        entry = self.entries.get(run_id)
        if entry is not None:
            return entry
        seq = run_id.split("-", 1)[0]
        if re.fullmatch(r"[0-9a-f]{1,16}", seq) and int(seq, 16) <= self.issued:
            raise HTTPException(410, f"run {run_id} has ended and is no longer kept; start it again")
        raise HTTPException(404, f"unknown run id {run_id!r}")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:  # every run belongs to the app
        app.state.tg = tg
        app.state.runs = Runs()
        gc.freeze()  # what startup imported lives forever: kept out of every full collection's walk
        yield
        tg.cancel_scope.cancel()


app = FastAPI(title="asyncflow web example", lifespan=lifespan)

_PATH = re.compile(r"(?<![\w.])/(?:[^\s:'\"()/]+/)+")  # a server path's folders (the last part stays)


def public(text: str) -> str:
    """An error text without the server's paths (a client has no use for them)."""
    return _PATH.sub("", text)


@app.exception_handler(HTTPException)
async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
    return JSONResponse({"error": public(str(e.detail))}, status_code=e.status_code)


@app.exception_handler(RequestValidationError)
async def _bad_body(request: Request, e: RequestValidationError) -> JSONResponse:
    where = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
    return JSONResponse({"error": f"bad request body: {where}"}, status_code=422)


@app.exception_handler(Exception)
async def _internal(request: Request, e: Exception) -> JSONResponse:
    return JSONResponse({"error": f"internal error ({type(e).__name__})"}, status_code=500)


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/runs")
async def start_run(body: RunRequest, wait: bool = False) -> dict[str, Any]:
    """Start a run; its id at once, or with `?wait=true` its final state (with several workers a
    run's state lives in the worker that started it: waiting needs no second request)."""
    task = TASKS.get(body.task)
    if task is None:
        raise HTTPException(404, f"unknown task {body.task!r}; known: {', '.join(sorted(TASKS))}")
    try:  # the task's own binding: unknown names, types and bounds (msgspec Meta) -> 422 naming them
        node = task.bind((), dict(body.params))
    except af.ParameterError as e:
        raise HTTPException(422, str(e)) from None
    flow = af.Workflow(node, store=STORE, execution_summary=False)
    runs: Runs = app.state.runs
    runs.admit()
    handle = flow.start(app.state.tg)
    run_id = runs.add(handle, flow)
    app.state.tg.start_soon(_forget_when_done, runs, run_id, handle)
    if wait:
        await handle.wait()
        return {"id": run_id, **(await get_run(run_id))}
    return {"id": run_id}


async def _forget_when_done(runs: Runs, run_id: str, handle: af.RunHandle) -> None:
    await handle.wait()
    runs.ended(run_id)


@app.get("/runs/{run_id}")
async def get_run(run_id: str) -> dict[str, Any]:
    entry = app.state.runs.get(run_id)
    out = entry.handle.snapshot()
    if "error" in out:
        out["error"] = public(out["error"])
    if entry.handle.status == "succeeded":
        try:
            out["output"] = await entry.flow.output()
        except (af.TargetError, FileNotFoundError):
            raise HTTPException(410, f"the output of run {run_id} is no longer in the store; start it again") from None
    return out


@app.delete("/runs/{run_id}")
async def cancel_run(run_id: str) -> dict[str, Any]:
    handle = app.state.runs.get(run_id).handle
    handle.cancel()
    with anyio.move_on_after(5):
        await handle.wait()
    return handle.snapshot()


@app.get("/runs/{run_id}/events")
async def run_events(run_id: str) -> StreamingResponse:
    handle = app.state.runs.get(run_id).handle

    async def stream() -> AsyncIterator[bytes]:
        async for event in handle.events():  # from the start, then live, until FlowFinished
            yield b"data: " + msgspec.json.encode(event) + b"\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


# the live run page ------------------------------------------------------------------------------

COLOURS = {
    "pending": "#e5e7eb",
    "running": "#fde68a",
    "ran": "#86efac",
    "skipped": "#cbd5e1",
    "failed": "#fca5a5",
    "cancelled": "#d1d5db",
}  # fmt: skip  (the drawing's own, for the legend)

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>run {run_id}</title><style>
body{{font:14px system-ui,sans-serif;margin:24px}} svg text{{font:12px system-ui,sans-serif}}
.legend span{{display:inline-block;margin-right:12px}} .legend i{{display:inline-block;width:12px;height:12px;
margin-right:4px;border-radius:3px;vertical-align:-1px}}</style></head><body>
<h1>run {run_id}: <span id="status">{status}</span></h1>
<p class="legend">{legend}</p>
<div id="drawing">{svg}</div>
<script>
const seen = new Map();  // node id -> [status, history]: kept across redrawings
let byId = new Map(), extra = 0;
function index() {{
  byId = new Map([...document.querySelectorAll('g.node')].map(g => [g.dataset.id, g]));
  extra = 0;
  for (const [id, [st, history]] of seen) {{ const g = node(id); g.dataset.status = st; g.dataset.history = history; }}
}}
function node(id) {{  // a dynamic child the plan did not show yet: drawn in a column of its own
  if (!byId.has(id)) {{
    const svg = document.querySelector('#drawing svg');
    const g = document.createElementNS('http://www.w3.org/2000/svg', 'g');
    const x = +svg.dataset.extra, step = +svg.dataset.step, w = +svg.dataset.boxW, h = +svg.dataset.boxH;
    const y = 10 + extra++ * step;
    g.setAttribute('class', 'node'); g.dataset.id = id; g.dataset.status = 'pending';
    g.innerHTML = `<rect x="${{x}}" y="${{y}}" width="${{w}}" height="${{h}}" rx="6"/>` +
      `<text x="${{x + 8}}" y="${{y + 21}}"></text><title></title>`;
    g.querySelector('text').textContent = id.length > 28 ? id.slice(0, 27) + '\u2026' : id;
    g.querySelector('title').textContent = id;
    svg.appendChild(g); byId.set(id, g);
    svg.setAttribute('width', x + w + 10);
    svg.setAttribute('height', Math.max(+svg.getAttribute('height'), y + step));
  }}
  return byId.get(id);
}}
index();
const status = {{TaskStarted: 'running', TaskSucceeded: 'ran', TaskSkipped: 'skipped', TaskFailed: 'failed'}};
const source = new EventSource({events_url});
source.onmessage = async (m) => {{
  const e = JSON.parse(m.data);
  if (e.kind === 'FlowFinished') {{
    source.close();
    for (const [id, v] of seen) if (v[0] === 'running') seen.set(id, ['cancelled', v[1] + ' cancelled']);
    document.getElementById('status').textContent = e.cancelled ? 'cancelled' : (e.ok ? 'succeeded' : 'failed');
    const r = await fetch({svg_url});  // drawn again: the dynamic children it found, with their edges
    if (r.ok) {{ document.getElementById('drawing').innerHTML = await r.text(); }}
    index();
    return;
  }}
  if (!(e.kind in status)) return;  // TaskRetrying: it stays running
  const before = seen.get(e.node_id) || ['pending', 'pending'];
  seen.set(e.node_id, [status[e.kind], before[1] + ' ' + status[e.kind]]);  // what it went through
  const g = node(e.node_id);
  [g.dataset.status, g.dataset.history] = seen.get(e.node_id);
}};
</script></body></html>"""


@app.get("/runs/{run_id}/graph", response_class=HTMLResponse)
async def run_graph(run_id: str) -> str:
    """The run's DAG drawn in layers, upstream on the left, a legend, each node's status live from
    the event stream (replayed from the start, so a finished run shows its final states). No CDN."""
    entry = app.state.runs.get(run_id)
    legend = "".join(f'<span><i style="background:{c}"></i>{s}</span>' for s, c in COLOURS.items())
    return PAGE.format(run_id=escape(run_id), status=entry.handle.status, legend=legend,
                       svg=await _drawing(entry.flow),
                       events_url=json.dumps(f"/runs/{run_id}/events"),
                       svg_url=json.dumps(f"/runs/{run_id}/graph.svg"))  # fmt: skip


@app.get("/runs/{run_id}/graph.svg")
async def run_drawing(run_id: str) -> HTMLResponse:
    """The drawing alone, as the store knows the run now (dynamic children included once built)."""
    return HTMLResponse(await _drawing(app.state.runs.get(run_id).flow), media_type="image/svg+xml")


async def _drawing(flow: af.Workflow) -> str:
    """The run's graph as the store knows it now, drawn in layers as asyncflow's run report does."""
    return (await flow.preview()).svg()
