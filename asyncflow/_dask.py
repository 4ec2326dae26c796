"""`af.DaskExecutor`: task bodies on a dask.distributed cluster (extra `dask`).

The scheduler stays on the event loop; bodies run on the workers, submitted through the
asynchronous client. A worker writes the task's target itself through fsspec (so the store must be
shared: local disk for a local cluster, S3 for a real one) and sends back only its output hash; the
scheduler then writes the fingerprint record. With no address, a `LocalCluster` on 127.0.0.1 lives
as long as the runs that use it.

Workers need asyncflow and the installed packages the bodies import, not the user's own code: the
body travels by value (cloudpickle) and the modules of the user's that it uses are uploaded to the
workers (see `ship_by_value`), so a script's tasks run on a cluster started with `dask worker` and
no setup.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import pickle
import sys
import types
from collections.abc import AsyncGenerator
from typing import Any

import anyio

from . import _context, _local
from ._code import is_user_file
from ._errors import ParameterError
from ._fingerprint import output_hash
from ._formats import encode_output
from ._identity import HasKey
from ._params import check_parts


class Published:
    """What a worker sends back once it has written the target: the output's hash."""

    __slots__ = ("out_hash",)

    def __init__(self, out_hash: str) -> None:
        self.out_hash = out_hash


class DaskExecutor:
    """Run bodies on a dask.distributed cluster: `af.task(executor=af.DaskExecutor(...))`.

    `address` is a scheduler's address; without one a `LocalCluster` is started on 127.0.0.1
    (`cluster_options` go to it: `n_workers=2`, `threads_per_worker=1`, `processes=True` by
    default) when a run first needs it, and closed when the last run using it ends.
    """

    writes_targets = True

    def __init__(self, address: str | None = None, **cluster_options: Any) -> None:
        self.address = address
        self.cluster_options = cluster_options
        self._client: Any = None
        self._cluster: Any = None
        self._connecting: anyio.Event | None = None
        self._loop: Any = None
        self._closer: Any = None
        self._bodies: dict[Any, Body] = {}
        self._uploaded: dict[tuple[str, int], anyio.Event] = {}
        self._versions: dict[str, tuple[str, int]] = {}  # this run's look at the uploaded files
        self._runs = 0  # runs using it now: the last one to end closes a local cluster
        self._pending: list[_Job] = []  # bodies waiting to be submitted together
        self._flushing: asyncio.Future[None] | None = None
        self._chunks: set[asyncio.Future[None]] = set()  # (the loop keeps only weak references)

    async def _connect(self) -> Any:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            return self._client
        if self._connecting is not None:  # another body of this run is connecting: wait for it
            await self._connecting.wait()
            return await self._connect()
        self._connecting = anyio.Event()
        try:
            try:
                from distributed import Client, LocalCluster
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError("af.DaskExecutor needs dask.distributed: pip install asyncflow[dask]") from e
            if self.address is None:
                options = {"n_workers": 2, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
                           "dashboard_address": ":0", **self.cluster_options}  # fmt: skip
                self._cluster = await LocalCluster(asynchronous=True, **options)  # type: ignore[no-untyped-call]
                self._client = await Client(self._cluster, asynchronous=True)  # type: ignore[no-untyped-call]
            else:
                self._client = await Client(self.address, asynchronous=True)  # type: ignore[no-untyped-call]
                # Kept for the next runs on this loop, closed when the loop shuts down (asyncio
                # finalizes the async generators still alive then).
                closer = _closer(self._client)
                self._closer = (closer, asyncio.get_running_loop().create_task(anext(closer)))
            self._loop = asyncio.get_running_loop()
            self._uploaded = {}
        finally:
            connecting, self._connecting = self._connecting, None
            connecting.set()
        return self._client

    async def run(self, task: Any, kwargs: dict[str, Any], target: Any = None) -> Any:
        """Submit one body; returns its value, or `Published` when the worker wrote `target`."""
        client = await self._connect()
        where = None
        if target is not None:
            where = (target.path, target.store.storage_options, target.store.kind)
        body = self._bodies.get(task)
        if body is None or body.fn is not task.fn:  # one per task and code: dask keeps the pickled function
            body = self._bodies[task] = Body(task, by_value=self.address is not None)
        for path in body.uploads:  # (once per client and version of the file; workers joining later get it too)
            key = self._versions.get(path)
            if key is None:  # its version looked at once a run, not per body
                key = self._versions[path] = (path, os.stat(path).st_mtime_ns)
            done = self._uploaded.get(key)
            if done is None:  # the first body to need it uploads it; the others wait for that
                done = self._uploaded[key] = anyio.Event()
                try:
                    await client.upload_file(path)  # imported (again) on every worker
                except BaseException:
                    del self._uploaded[key]
                    raise
                finally:
                    done.set()
            await done.wait()
        frame = _context.current.get()  # the run submitting it: runs never share a Dask task
        job = _Job(body, kwargs, where, id(frame.run) if frame is not None else 0, task.timeout is not None)
        self._pending.append(job)
        if self._flushing is None:
            self._flushing = asyncio.ensure_future(self._flush_soon(client))
        try:
            kind, payload = await job.result
        except asyncio.CancelledError:  # a cancelled run cancels its Dask tasks
            if job in self._pending:
                self._pending.remove(job)
            elif job.chunk is not None and all(j.result.cancelled() for j in job.chunk.jobs):
                with anyio.CancelScope(shield=True):
                    await job.chunk.future.cancel()
            raise
        return Published(payload) if kind == "published" else payload

    async def _flush_soon(self, client: Any) -> None:
        """Submit the bodies that became ready together as a few Dask tasks (chunks) sized to the
        workers: a Dask task costs milliseconds of scheduling, a sub-millisecond body much less."""
        try:
            seen = -1
            for _ in range(_GATHER_TURNS):  # until a turn of the loop brings no more bodies
                if len(self._pending) == seen:
                    break
                seen = len(self._pending)
                await asyncio.sleep(0)
        finally:
            jobs, self._pending, self._flushing = self._pending, [], None
        try:
            threads = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()) or 1
            for group in _groups(jobs):
                size = min(_MAX_CHUNK, max(1, -(-len(group) // (2 * threads))))  # about two a worker thread
                for k in range(0, len(group), size):
                    self._submit(client, _Chunk(group[k : k + size]))
        except Exception as e:  # (a closed client...): every body not submitted fails with it, none hangs
            for j in jobs:
                if j.chunk is None and not j.result.done():
                    j.result.set_exception(e)

    def _submit(self, client: Any, chunk: _Chunk) -> None:
        chunk.future = client.submit(_run_chunk, [(j.body, j.kwargs, j.where) for j in chunk.jobs], pure=False)
        for j in chunk.jobs:
            j.chunk = chunk
        self._chunks.add(task := asyncio.ensure_future(chunk.collect()))
        task.add_done_callback(self._chunks.discard)

    def open(self) -> None:
        """A run starts using this executor (each run that did calls `close` when it ends)."""
        self._runs += 1

    async def close(self) -> None:
        """At the end of a run: close the local cluster this executor started (and its client),
        once no other run of it is still using them. A client to a cluster at `address` stays
        connected for the next runs on this event loop."""
        self._versions = {}  # the next run looks at the user's files again (edited in a notebook...)
        self._runs = max(0, self._runs - 1)
        if self._cluster is None or self._runs:
            return
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        with anyio.CancelScope(shield=True):
            if client is not None:
                await client.close()
            if cluster is not None:
                await cluster.close()


_GATHER_TURNS = 20  # loop turns at most that a first ready body waits for others to join it
_MAX_CHUNK = 256  # bodies in one Dask task at most


class _Job:
    """One body to run on the cluster, and where its result arrives."""

    __slots__ = ("alone", "body", "chunk", "kwargs", "result", "run", "where")

    def __init__(self, body: Body, kwargs: dict[str, Any], where: Any, run: int, alone: bool) -> None:
        self.body = body
        self.kwargs = kwargs
        self.where = where
        self.run = run  # which run submitted it
        self.alone = alone  # a body with a timeout: its clock must not run while others' bodies do
        self.result: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self.chunk: _Chunk | None = None


class _Chunk:
    """Bodies that travel as one Dask task; each gets its own result, or its own exception."""

    __slots__ = ("future", "jobs")

    def __init__(self, jobs: list[_Job]) -> None:
        self.jobs = jobs
        self.future: Any = None

    async def collect(self) -> None:
        try:
            results = await self.future
        except BaseException as e:  # the whole chunk failed (a killed worker...): each body did
            for j in self.jobs:
                if j.result.done():
                    continue
                if isinstance(e, asyncio.CancelledError):
                    j.result.cancel()
                else:
                    j.result.set_exception(e)
            return
        for j, (kind, payload) in zip(self.jobs, results, strict=True):
            if j.result.done():
                continue
            if kind == "error":
                j.result.set_exception(payload)
            elif kind == "pickled":
                j.result.set_result(("value", pickle.loads(payload)))
            else:
                j.result.set_result((kind, payload))


def _groups(jobs: list[_Job]) -> list[list[_Job]]:
    """The jobs that may share Dask tasks: by run, and a body with a timeout alone."""
    groups: dict[int, list[_Job]] = {}
    alone: list[list[_Job]] = []
    for j in jobs:
        if j.alone:
            alone.append([j])
        else:
            groups.setdefault(j.run, []).append(j)
    return [*groups.values(), *alone]


def _run_chunk(items: list[tuple[Body, dict[str, Any], Any]]) -> list[tuple[str, Any]]:
    """On a worker: run each body of a chunk; what a body raises (SystemExit and its own
    BaseExceptions too) is its own result, with its traceback (tblib pickles it), and a result
    that cannot travel back is its own error: the others go on."""
    import cloudpickle  # type: ignore[import-untyped]

    out: list[tuple[str, Any]] = []
    for body, kwargs, where in items:
        try:
            kind, payload = body(kwargs, where)
            if kind == "value":  # pickled here, once: one that cannot travel fails alone
                kind, payload = "pickled", cloudpickle.dumps(payload)
            out.append((kind, payload))
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            out.append(("error", _travelling(e, body.name)))
    return out


def _travelling(e: BaseException, task: str) -> BaseException:
    """`e` as it can go back to the scheduler: with its traceback, or, when it cannot be pickled,
    a RuntimeError naming it."""
    import cloudpickle
    from tblib import pickling_support  # type: ignore[import-untyped]

    pickling_support.install(e)
    try:
        cloudpickle.dumps(e)
        return e
    except Exception as why:
        return RuntimeError(
            f"task {task!r} raised {type(e).__name__}: {e} (it cannot travel back from the worker: {why})"
        )


async def _closer(client: Any) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.close()


class Body:
    """A task's body as it travels to a worker: the function and what writing its output needs.

    To a cluster at an address the body travels by value, with the modules of the user's it uses
    (see `ship_by_value`). A `LocalCluster`'s workers import it by name, as the scheduler's side
    does (they share its folder and path): nothing of the user's code is copied, so everything
    pickles as it does locally (msgspec Structs included, which cloudpickle cannot rebuild by value).
    """

    def __init__(self, task: Any, by_value: bool = True) -> None:
        self.uploads = ship_by_value(task.fn) if by_value else []  # modules the workers import instead
        self.by_value = by_value
        self.name = task.name
        self.fn = task.fn
        self.format = task.format
        self.return_type = task.return_type
        self.outputs = task.outputs
        self.filename = task.fn.__code__.co_filename

    def __reduce__(self) -> tuple[Any, ...]:
        if self.by_value:
            return _body_from_state, (self.__dict__,)
        return _body_by_name, (self.fn.__module__, self.fn.__qualname__)

    def _restore_file_names(self) -> None:
        """Code pickled by value has lost its file name: the module's functions get theirs back, so
        that a failure says file:line as it does locally."""
        fn = self.fn
        for f in (fn, *getattr(fn, "__globals__", {}).values()):
            code = getattr(f, "__code__", None)
            if code is not None and code.co_filename == "<dynamic-code>" and f.__module__ == fn.__module__:
                f.__code__ = code.replace(co_filename=self.filename)

    def __call__(self, kwargs: dict[str, Any], where: Any) -> tuple[str, Any]:
        """On the worker: run the body, write the target if there is one, send back little."""
        fn = self.fn
        if inspect.isasyncgenfunction(fn):
            raise ParameterError(
                f"task {self.name!r} yields nodes, which a Dask worker cannot run: return the nodes instead "
                "(or run the task locally)",
                task=self.name,
            )
        token = _context.remote.set(self.name)
        try:
            value = asyncio.run(fn(**kwargs)) if inspect.iscoroutinefunction(fn) else fn(**kwargs)
        finally:
            _context.remote.reset(token)
        if where is None or _holds_nodes(value):
            return "value", value  # the local scheduler resolves returned nodes and writes the target
        path, storage_options, kind = where
        if self.outputs is not None:
            check_parts(self, value)  # a dict of exactly its declared parts, said as locally
        data, _ = encode_output(self.name, self.format, value, self.return_type)
        if kind == "local":
            _local.write_atomic(path, data)
        else:
            import fsspec

            fs, fs_path = fsspec.core.url_to_fs(path, **storage_options)
            fs.pipe_file(fs_path, data)  # one PUT: whole or nothing
        return "published", output_hash(data)


def _body_from_state(state: dict[str, Any]) -> Body:
    body = Body.__new__(Body)
    body.__dict__.update(state)
    body._restore_file_names()
    return body


def _body_by_name(module: str, qualname: str) -> Body:
    """On a worker that can import the task's module (a LocalCluster's): the task, found by name."""
    if module == "__main__":  # a script's tasks: spawned workers know its module as __mp_main__
        module = "__mp_main__" if "__mp_main__" in sys.modules else module
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return Body(obj, by_value=False)


def _user_module(module: types.ModuleType | None) -> bool:
    """A module of the user's own (a script, a file beside it), not one installed where workers have it."""
    if module is None or module.__name__ == "__main__" or module.__name__.startswith("cloudpickle"):
        return False  # (__main__ is always pickled by value)
    return isinstance(getattr(module, "__file__", None), str) and is_user_file(module.__file__)


def ship_by_value(fn: Any) -> list[str]:
    """How the user's code reaches a cluster's workers: the modules of the user's that `fn` uses
    (through its globals, and theirs, to any depth). Top-level module files are returned, their
    dependencies first, to be uploaded to the workers and imported there by name (their tracebacks
    keep file:line; msgspec Structs, which cloudpickle cannot rebuild by value, work); the rest
    (modules inside packages of the user's) are marked to be pickled by value. The script itself
    (`__main__`) always travels by value."""
    import cloudpickle

    def used(module: Any) -> list[types.ModuleType]:
        found = [v if isinstance(v, types.ModuleType) else sys.modules.get(getattr(v, "__module__", "") or "")
                 for v in list(getattr(module, "__dict__", module).values())]  # fmt: skip
        found += [sys.modules.get(name) for name in _imports(module)]  # (`from deeper import CONST` too)
        return [m for m in found if m is not None and _user_module(m)]

    order: list[str] = []
    seen: set[str] = set()

    def visit(module: types.ModuleType) -> None:  # dependencies first (post-order)
        seen.add(module.__name__)
        for dep in used(module):
            if dep.__name__ not in seen:
                visit(dep)
        if "." not in module.__name__ and str(module.__file__).endswith(".py"):
            order.append(str(module.__file__))
        else:
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:  # not importable by name here: pickled by value already
                pass

    home = sys.modules.get(fn.__module__)
    for module in [home, *used(getattr(fn, "__globals__", {}))]:
        if module is not None and _user_module(module) and module.__name__ not in seen:
            visit(module)
    return order


def _imports(module: Any) -> list[str]:
    """The modules a module's source imports (by name), or none when it has no readable source."""
    import ast

    try:
        with open(module.__file__, "rb") as f:
            tree = ast.parse(f.read())
    except (AttributeError, TypeError, OSError, SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def _holds_nodes(value: Any) -> bool:
    if isinstance(value, HasKey):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_nodes(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_nodes(v) for v in value.values())
    return False
