"""How each kind of filesystem is driven; a `Store` chooses one backend when it is made.

- `LocalBackend`: plain `os` calls (no fsspec overhead), batched into worker threads.
- `MemoryBackend`: fsspec's memory filesystem, inline (dict operations; nothing blocks).
- `AsyncFsspecBackend`: s3fs, gcsfs... on asyncio: one instance per event loop, awaited natively.
- `ThreadFsspecBackend`: any other filesystem (and async ones under trio): its sync API in threads.

Backends raise what the filesystem raises; the `Store` facade turns every failure other than
"not found" into one `StorageError`. Per-event-loop resources (thread batchers, async clients)
live in a run variable and are closed, and dropped, when their loop shuts down: nothing keeps a
finished loop alive.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import os
from collections.abc import AsyncGenerator, Callable
from typing import Any

import anyio.lowlevel
import anyio.to_thread
import sniffio

from . import _local
from ._batcher import ThreadBatcher

S3_PART = 8 * 2**20  # multipart upload parts: outputs of 16 MiB and more go up in parts
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"})

_LOOP_RESOURCES: anyio.lowlevel.RunVar[dict[Any, Any]] = anyio.lowlevel.RunVar("asyncflow_store_resources")


def loop_resources() -> dict[Any, Any]:
    """This event loop's per-store resources (made on first use)."""
    try:
        return _LOOP_RESOURCES.get()
    except LookupError:
        table: dict[Any, Any] = {}
        _LOOP_RESOURCES.set(table)
        return table


def _name_of(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


class Backend(abc.ABC):
    """The operations targets need, on one filesystem; publishing defaults to three atomic steps."""

    kind = ""

    def __init__(self, key: Any, fs_class: Any, storage_options: dict[str, Any], protocol: str, root: str) -> None:
        self.key = key
        self.fs_class = fs_class
        self.storage_options = storage_options
        self.protocol = protocol
        self.root = root

    @abc.abstractmethod
    async def listdir(self, folder: str, then: Callable[[set[str]], Any] | None = None) -> Any:
        """Names in `folder` (empty when missing; temporaries left out), or `then(names)`."""

    @abc.abstractmethod
    async def read(self, path: str) -> bytes:
        """The bytes at `path` (FileNotFoundError when missing)."""

    @abc.abstractmethod
    async def write(self, path: str, data: bytes) -> None:
        """Publish `data` at `path` atomically: whole or not at all."""

    @abc.abstractmethod
    async def delete(self, paths: list[str]) -> None:
        """Remove these files; missing ones are ignored."""

    @abc.abstractmethod
    async def info(self, path: str) -> dict[str, Any]:
        """fsspec's info of `path` (FileNotFoundError when missing)."""

    @abc.abstractmethod
    async def glob(self, pattern: str) -> list[str]:
        """Paths matching `pattern`, sorted."""

    async def publish(self, target: str, data: bytes, record: str, record_data: bytes, old: str | None) -> None:
        if old is not None:  # first: a target without its record is never trusted
            await self.delete([old])
        await self.write(target, data)
        await self.write(record, record_data)

    async def exists(self, path: str) -> bool:
        try:
            await self.info(path)
        except FileNotFoundError:
            return False
        return True

    async def checksum(self, path: str) -> str | None:
        """etag / md5 / crc when the filesystem has one, else a hash of size and times."""
        try:
            info = await self.info(path)
        except FileNotFoundError:
            return None
        for k in ("ETag", "etag", "md5Hash", "md5", "checksum", "crc32c"):
            if info.get(k):
                return str(info[k]).strip('"')
        stamp = repr((info.get("size"), info.get("mtime"), info.get("LastModified")))
        return hashlib.blake2b(stamp.encode(), digest_size=8).hexdigest()

    async def check(self) -> None:
        """Raise when the store cannot be used (object stores: the bucket must answer)."""
        if self.protocol in OBJECT_STORES:
            await self.info(self.root.strip("/").split("/", 1)[0])

    def fs_options(self, asynchronous: bool) -> dict[str, Any]:
        """Options for our own filesystem instances: not shared with other code (fsspec's instance
        cache), no listings cache (other processes write here too), and for S3 few retries, so
        that an unreachable endpoint fails fast instead of in a retry storm."""
        opts: dict[str, Any] = {"skip_instance_cache": True, **self.storage_options}
        if getattr(self.fs_class, "async_impl", False):
            opts.setdefault("use_listings_cache", False)
            if self.protocol in ("s3", "s3a"):
                opts.setdefault(
                    "config_kwargs", {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 5}
                )
        if asynchronous:
            opts["asynchronous"] = True
        return opts


class LocalBackend(Backend):
    """Local disk through `os` in batched worker threads (group commit)."""

    kind = "local"

    def _batcher(self) -> ThreadBatcher:
        resources = loop_resources()
        batcher = resources.get(self.key)
        if batcher is None:
            batcher = resources[self.key] = ThreadBatcher()
        return batcher

    async def listdir(self, folder: str, then: Callable[[set[str]], Any] | None = None) -> Any:
        if then is None:
            return await self._batcher().call(_local.list_folder, folder)
        return await self._batcher().call(_then, then, folder)  # computed in the worker thread

    async def read(self, path: str) -> bytes:
        return await self._batcher().call(_local.read, path)  # type: ignore[no-any-return]

    async def write(self, path: str, data: bytes) -> None:
        await self._batcher().call(_local.write_atomic, path, data)

    async def publish(self, target: str, data: bytes, record: str, record_data: bytes, old: str | None) -> None:
        await self._batcher().call(_local.publish, target, data, record, record_data, old)

    async def delete(self, paths: list[str]) -> None:
        await self._batcher().call(_local.delete, paths)

    async def exists(self, path: str) -> bool:
        return await self._batcher().call(_local.exists, path)  # type: ignore[no-any-return]

    async def checksum(self, path: str) -> str | None:
        return await self._batcher().call(_local.checksum, path)  # type: ignore[no-any-return]

    async def glob(self, pattern: str) -> list[str]:
        return await self._batcher().call(_local.glob, pattern)  # type: ignore[no-any-return]

    async def info(self, path: str) -> dict[str, Any]:
        st = await self._batcher().call(os.stat, path)
        return {"name": path, "size": st.st_size, "mtime": st.st_mtime, "type": "file"}

    async def check(self) -> None:
        return None


def _then(then: Callable[[set[str]], Any], folder: str) -> Any:
    return then(_local.list_folder(folder))


class _SyncFs(Backend):
    """Shared by the backends that hold one synchronous fsspec instance."""

    _fs: Any = None

    def sync_fs(self) -> Any:
        if self._fs is None:
            self._fs = self.fs_class(**self.fs_options(False))
        return self._fs

    def _names(self, entries: list[str]) -> set[str]:
        return {n for n in map(_name_of, entries) if not _local.is_temporary(n)}


class MemoryBackend(_SyncFs):
    """fsspec's memory filesystem, driven inline: every call is a dict operation."""

    kind = "memory"

    def sync_fs(self) -> Any:
        if self._fs is None:
            self._fs = self.fs_class()
        return self._fs

    async def listdir(self, folder: str, then: Callable[[set[str]], Any] | None = None) -> Any:
        try:
            names = self._names(self.sync_fs().ls(folder, detail=False))
        except FileNotFoundError:
            names = set()
        return names if then is None else then(names)

    async def read(self, path: str) -> bytes:
        return self.sync_fs().cat_file(path)  # type: ignore[no-any-return]

    async def write(self, path: str, data: bytes) -> None:
        self.sync_fs().pipe_file(path, data)  # one synchronous call: nothing sees it half-done

    async def delete(self, paths: list[str]) -> None:
        fs = self.sync_fs()
        for p in paths:
            if fs.exists(p):
                fs.rm_file(p)

    async def info(self, path: str) -> dict[str, Any]:
        return self.sync_fs().info(path)  # type: ignore[no-any-return]

    async def exists(self, path: str) -> bool:
        return self.sync_fs().exists(path)  # type: ignore[no-any-return]

    async def checksum(self, path: str) -> str | None:
        fs = self.sync_fs()
        return hashlib.blake2b(fs.cat_file(path), digest_size=8).hexdigest() if fs.exists(path) else None

    async def glob(self, pattern: str) -> list[str]:
        return sorted(self.sync_fs().glob(pattern))


class ThreadFsspecBackend(_SyncFs):
    """A blocking fsspec filesystem (or an async one under trio): its sync API in worker threads."""

    kind = "sync"

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=_thread_limiter())

    async def listdir(self, folder: str, then: Callable[[set[str]], Any] | None = None) -> Any:
        fs = self.sync_fs()
        fs.invalidate_cache(folder)
        try:
            names = self._names(await self._call(fs.ls, folder, False))
        except FileNotFoundError:
            names = set()
        return names if then is None else then(names)

    async def read(self, path: str) -> bytes:
        return await self._call(self.sync_fs().cat_file, path)  # type: ignore[no-any-return]

    async def write(self, path: str, data: bytes) -> None:
        if self.protocol in OBJECT_STORES:  # one PUT: whole or nothing
            await self._call(self.sync_fs().pipe_file, path, data)
        else:
            await self._call(_write_then_move, self.sync_fs(), path, data)

    async def delete(self, paths: list[str]) -> None:
        try:
            await self._call(self.sync_fs().rm, paths)
        except FileNotFoundError:
            pass

    async def info(self, path: str) -> dict[str, Any]:
        return await self._call(self.sync_fs().info, path)  # type: ignore[no-any-return]

    async def glob(self, pattern: str) -> list[str]:
        return sorted(await self._call(self.sync_fs().glob, pattern))


def _thread_limiter() -> anyio.CapacityLimiter:
    """The limiter for blocking filesystem calls on this event loop (not the host's default one)."""
    resources = loop_resources()
    limiter = resources.get("fs-threads")
    if limiter is None:
        limiter = resources["fs-threads"] = anyio.CapacityLimiter(16)
    return limiter


def _write_then_move(fs: Any, path: str, data: bytes) -> None:
    folder, name = path.rsplit("/", 1)
    tmp = _local.temp_name(folder, name)
    fs.pipe_file(tmp, data)
    try:
        fs.mv(tmp, path)
    except BaseException:
        try:
            fs.rm_file(tmp)
        except Exception:
            pass
        raise


class AsyncFsspecBackend(ThreadFsspecBackend):
    """An async filesystem (s3fs, gcsfs...): awaited natively on asyncio, through threads on trio."""

    kind = "async"

    def native(self) -> Any | None:
        """This asyncio loop's instance, or None on other backends (threads then).

        One per store and event loop, reused by every run on that loop (a client costs ~50 ms
        to make); closed, and dropped, when the loop shuts down."""
        if sniffio.current_async_library() != "asyncio":
            return None
        resources = loop_resources()
        fs = resources.get(self.key)
        if fs is None:
            opts = self.fs_options(True)
            if self.protocol in ("s3", "s3a") and "session" not in opts:
                opts["session"] = _aio_session()
            fs = resources[self.key] = self.fs_class(**opts)
            keeper = _keeper(fs, resources, self.key)
            # Started, it is an async generator the loop finalizes (closing the client) at shutdown.
            resources[(self.key, "keeper")] = (keeper, asyncio.get_running_loop().create_task(anext(keeper)))
        return fs

    async def listdir(self, folder: str, then: Callable[[set[str]], Any] | None = None) -> Any:
        fs = self.native()
        if fs is None:
            return await super().listdir(folder, then)
        try:
            names = self._names(await fs._ls(folder, detail=False, refresh=True))
        except FileNotFoundError:
            names = set()
        return names if then is None else then(names)

    async def read(self, path: str) -> bytes:
        fs = self.native()
        return await (fs._cat_file(path) if fs is not None else super().read(path))

    async def write(self, path: str, data: bytes) -> None:
        fs = self.native()
        if fs is None:
            return await super().write(path, data)
        # One PUT, or a multipart upload (aborted on error) that appears only when complete.
        extra = {"chunksize": S3_PART} if self.protocol in ("s3", "s3a") else {}
        await fs._pipe_file(path, data, **extra)
        return None

    async def delete(self, paths: list[str]) -> None:
        fs = self.native()
        if fs is None:
            return await super().delete(paths)
        try:
            await fs._rm(paths)
        except FileNotFoundError:
            pass
        return None

    async def info(self, path: str) -> dict[str, Any]:
        fs = self.native()
        return await (fs._info(path) if fs is not None else super().info(path))

    async def glob(self, pattern: str) -> list[str]:
        fs = self.native()
        return sorted(await fs._glob(pattern)) if fs is not None else await super().glob(pattern)


_AIO_SESSION: Any = None


def _aio_session() -> Any:
    """One aiobotocore session for the process: it loads the service models once, not per client."""
    global _AIO_SESSION
    if _AIO_SESSION is None:
        import aiobotocore.session

        _AIO_SESSION = aiobotocore.session.AioSession()
    return _AIO_SESSION


async def _keeper(fs: Any, resources: dict[Any, Any], key: Any) -> AsyncGenerator[None, None]:
    """Closes `fs` when its event loop shuts down (asyncio.run, anyio.run, uvicorn... finalize the
    async generators still alive then), and forgets it: the loop can then be collected."""
    try:
        yield
    finally:
        resources.pop(key, None)
        resources.pop((key, "keeper"), None)
        await close_fs(fs)


async def close_fs(fs: Any) -> None:
    """Close an async filesystem's client session (s3fs, gcsfs, http); best effort."""
    try:
        creator = getattr(fs, "_s3creator", None)
        if creator is not None:  # s3fs
            await creator.__aexit__(None, None, None)
            return
        session = getattr(fs, "_session", None)
        if session is not None and hasattr(session, "close"):
            result = session.close()
            if hasattr(result, "__await__"):
                await result
    except Exception:  # closing must never hide the run's own outcome
        pass


def backend_for(kind: str) -> type[Backend]:
    """The backend class for a store kind."""
    return {"local": LocalBackend, "memory": MemoryBackend, "async": AsyncFsspecBackend}.get(kind, ThreadFsspecBackend)
