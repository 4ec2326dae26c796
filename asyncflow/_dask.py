"""`af.DaskExecutor`: task bodies on a dask.distributed cluster (extra `dask`).

The scheduler stays on the event loop; bodies run on the workers, submitted through the
asynchronous client. A worker writes the task's target itself through fsspec (so the store must be
shared: local disk for a local cluster, S3 for a real one) and sends back only its output hash; the
scheduler then writes the fingerprint record. With no address, a `LocalCluster` on 127.0.0.1 lives
as long as the run that uses it.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import AsyncGenerator
from typing import Any

import anyio

from . import _context, _local
from ._errors import ParameterError
from ._fingerprint import output_hash
from ._formats import encode_output
from ._identity import HasKey


class Published:
    """What a worker sends back once it has written the target: the output's hash."""

    __slots__ = ("out_hash",)

    def __init__(self, out_hash: str) -> None:
        self.out_hash = out_hash


class DaskExecutor:
    """Run bodies on a dask.distributed cluster: `af.task(executor=af.DaskExecutor(...))`.

    `address` is a scheduler's address; without one a `LocalCluster` is started on 127.0.0.1
    (`cluster_options` go to it: `n_workers=2`, `threads_per_worker=1`, `processes=True` by
    default) when a run first needs it, and closed when that run ends.
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
        future = client.submit(remote_call, task.fn.__module__, task.fn.__qualname__, kwargs, where, pure=False)
        try:
            kind, payload = await future
        except BaseException:
            with anyio.CancelScope(shield=True):  # a cancelled run cancels its futures
                await future.cancel()
            raise
        return Published(payload) if kind == "published" else payload

    async def close(self) -> None:
        """At the end of a run: close the local cluster this executor started (and its client). A
        client to a cluster at `address` stays connected for the next runs on this event loop."""
        if self._cluster is None:
            return
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        with anyio.CancelScope(shield=True):
            if client is not None:
                await client.close()
            if cluster is not None:
                await cluster.close()


async def _closer(client: Any) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.close()


def remote_call(module: str, qualname: str, kwargs: dict[str, Any], where: Any) -> tuple[str, Any]:
    """On the worker: run the body, write the target if there is one, send back little."""
    if module == "__main__":  # a script's tasks: spawned workers know its module as __mp_main__
        import sys

        module = "__mp_main__" if "__mp_main__" in sys.modules else module
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    task = obj
    fn = task.fn
    if inspect.isasyncgenfunction(fn):
        raise ParameterError(
            f"task {task.name!r} yields nodes, which a Dask worker cannot run: return the nodes instead "
            "(or run the task locally)",
            task=task.name,
        )
    token = _context.remote.set(task.name)
    try:
        value = asyncio.run(fn(**kwargs)) if inspect.iscoroutinefunction(fn) else fn(**kwargs)
    finally:
        _context.remote.reset(token)
    if where is None or _holds_nodes(value):
        return "value", value  # the local scheduler resolves returned nodes and writes the target
    path, storage_options, kind = where
    data, _ = encode_output(task.name, task.format, value, task.return_type)
    if kind == "local":
        _local.write_atomic(path, data)
    else:
        import fsspec

        fs, fs_path = fsspec.core.url_to_fs(path, **storage_options)
        fs.pipe_file(fs_path, data)  # one PUT: whole or nothing
    return "published", output_hash(data)


def _holds_nodes(value: Any) -> bool:
    if isinstance(value, HasKey):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_nodes(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_nodes(v) for v in value.values())
    return False
