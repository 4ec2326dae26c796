"""Filesystems reached through fsspec (object stores and the rest): their sync API in worker
threads, or, for async ones (s3fs, gcsfs...) on asyncio, one instance per event loop awaited
natively, closed and dropped when the loop shuts down. On S3 a target carries its own record as
user metadata, written with it in the same PUT."""

from __future__ import annotations

import asyncio
import base64
import functools
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import anyio.to_thread
import fsspec.asyn
import sniffio

from . import _local
from ._backends import OBJECT_STORES, Backend, LocalBackend, MemoryBackend, SyncFsBackend, loop_resources, tag_of

S3_PART = 8 * 2**20  # multipart upload parts: outputs of 16 MiB and more go up in parts
METADATA_KEY = "afrec"  # an S3 object's user metadata key that holds its own record


def _precondition_failed(e: BaseException) -> bool:
    """A 412 from S3 (s3fs raises it as FileExistsError for If-None-Match, OSError for If-Match)."""
    if isinstance(e, FileExistsError):
        return True
    error = getattr(e.__cause__, "response", {}).get("Error", {})
    return bool(error.get("Code") == "PreconditionFailed")


def _b64(record: bytes) -> str:
    return base64.b64encode(record).decode()


def _unb64(text: str | None) -> bytes | None:
    try:
        return base64.b64decode(text) if text else None
    except ValueError:
        return None


class ThreadFsspecBackend(SyncFsBackend):
    """A blocking fsspec filesystem (or an async one under trio): its sync API in worker threads."""

    kind = "sync"

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=_thread_limiter())

    async def ls(self, folder: str) -> list[dict[str, Any]]:
        fs = self.sync_fs()
        fs.invalidate_cache(folder)
        try:
            return await self._call(fs.ls, folder, detail=True)  # type: ignore[no-any-return]
        except FileNotFoundError:
            return []

    async def read(self, path: str) -> bytes:
        return await self._call(self.sync_fs().cat_file, path)  # type: ignore[no-any-return]

    async def write(self, path: str, data: bytes) -> None:
        if self.protocol in OBJECT_STORES:  # one PUT: whole or nothing
            await self._call(self.sync_fs().pipe_file, path, data)
        else:
            await self._call(_write_then_move, self.sync_fs(), path, data)

    async def put_with_record(self, path: str, data: bytes, record: bytes) -> str | None:
        if self.protocol not in ("s3", "s3a"):
            return None
        out = await self._call(self.sync_fs().pipe_file, path, data, Metadata={METADATA_KEY: _b64(record)})
        return str(out["ETag"]).strip('"') if isinstance(out, dict) and out.get("ETag") else None

    async def head(self, path: str) -> tuple[str, bytes | None]:
        if self.protocol in ("s3", "s3a"):  # one HEAD: the ETag and the attached record together
            fs = self.sync_fs()
            bucket, key, _ = fs.split_path(path)
            out = await self._call(fs.call_s3, "head_object", Bucket=bucket, Key=key)
            return str(out["ETag"]).strip('"'), _unb64((out.get("Metadata") or {}).get(METADATA_KEY))
        return await super().head(path)

    async def read_small(self, path: str) -> bytes:
        if self.protocol not in ("s3", "s3a"):
            return await self.read(path)
        fs = self.sync_fs()  # (its own loop: one GET, no size request first)
        return await self._call(fsspec.asyn.sync, fs.loop, fs._cat_file, path, max_concurrency=1)  # type: ignore[no-any-return]

    def lease_kind(self) -> str | None:
        return "object" if self.protocol in ("s3", "s3a") else None

    async def _s3(self, method: str, path: str, **kwargs: Any) -> Any:
        """One S3 request about `path` (through the sync client in a thread)."""
        fs = self.sync_fs()
        bucket, key, _ = fs.split_path(path)
        return await self._call(fs.call_s3, method, Bucket=bucket, Key=key, **kwargs)

    async def create_exclusive(self, path: str, data: bytes) -> str | None:
        try:
            out = await self._s3("put_object", path, Body=data, IfNoneMatch="*")
        except FileExistsError:  # 412 Precondition Failed: another holder's
            return None
        return str(out["ETag"])

    async def replace_if(self, path: str, data: bytes, etag: str) -> str | None:
        try:
            out = await self._s3("put_object", path, Body=data, IfMatch=etag)
        except FileNotFoundError:  # gone
            return None
        except OSError as e:
            if _precondition_failed(e):  # 412: someone else's now
                return None
            raise
        return str(out["ETag"])

    async def age(self, path: str) -> tuple[float, str] | None:
        try:
            out = await self._s3("head_object", path)
        except FileNotFoundError:
            return None
        return time.time() - out["LastModified"].timestamp(), str(out["ETag"])

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

    async def ls(self, folder: str) -> list[dict[str, Any]]:
        fs = self.native()
        if fs is None:
            return await super().ls(folder)
        try:
            return await fs._ls(folder, detail=True, refresh=True)  # type: ignore[no-any-return]
        except FileNotFoundError:
            return []

    async def read(self, path: str) -> bytes:
        fs = self.native()
        return await (fs._cat_file(path) if fs is not None else super().read(path))

    async def read_with_record(self, path: str) -> tuple[bytes, str, bytes | None]:
        fs = self.native()
        if fs is None or self.protocol not in ("s3", "s3a"):
            return await super().read_with_record(path)
        bucket, key, _ = fs.split_path(path)  # one GET: the bytes, the ETag and the metadata of one version
        out = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        try:
            data = await out["Body"].read()
        finally:
            out["Body"].close()
        return data, str(out["ETag"]).strip('"'), _unb64((out.get("Metadata") or {}).get(METADATA_KEY))

    async def read_small(self, path: str) -> bytes:
        fs = self.native()
        if fs is None or self.protocol not in ("s3", "s3a"):
            return await super().read_small(path)
        return await fs._cat_file(path, max_concurrency=1)  # type: ignore[no-any-return]  # (no size request first)

    def _put_options(self) -> dict[str, Any]:
        # One PUT, or a multipart upload (aborted on error) that appears only when complete.
        return {"chunksize": S3_PART} if self.protocol in ("s3", "s3a") else {}

    async def write(self, path: str, data: bytes) -> None:
        fs = self.native()
        if fs is None:
            return await super().write(path, data)
        await fs._pipe_file(path, data, **self._put_options())
        return None

    async def put_with_record(self, path: str, data: bytes, record: bytes) -> str | None:
        fs = self.native()
        if fs is None:
            return await super().put_with_record(path, data, record)
        if self.protocol not in ("s3", "s3a"):
            return None
        out = await fs._pipe_file(path, data, Metadata={METADATA_KEY: _b64(record)}, **self._put_options())
        return str(out["ETag"]).strip('"') if isinstance(out, dict) and out.get("ETag") else None

    async def head(self, path: str) -> tuple[str, bytes | None]:
        fs = self.native()
        if fs is None:
            return await super().head(path)
        if self.protocol in ("s3", "s3a"):
            bucket, key, _ = fs.split_path(path)
            try:
                out = await fs._call_s3("head_object", Bucket=bucket, Key=key)
            except FileNotFoundError:
                raise
            return str(out["ETag"]).strip('"'), _unb64((out.get("Metadata") or {}).get(METADATA_KEY))
        return tag_of(await fs._info(path)), None

    async def delete(self, paths: list[str]) -> None:
        fs = self.native()
        if fs is None:
            return await super().delete(paths)
        try:
            await fs._rm(paths)
        except FileNotFoundError:
            pass
        return None

    async def _s3(self, method: str, path: str, **kwargs: Any) -> Any:
        fs = self.native()
        if fs is None:
            return await super()._s3(method, path, **kwargs)
        bucket, key, _ = fs.split_path(path)
        return await fs._call_s3(method, Bucket=bucket, Key=key, **kwargs)

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
