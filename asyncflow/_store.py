"""Stores: an fsspec location plus the few operations targets need, never blocking the event loop.

How each kind of filesystem is driven:
- local disk: plain `os` calls (no fsspec overhead), batched into worker threads so that thousands
  of small reads and writes cost a few thread hops rather than one each; writes go to a temporary
  file in the same folder, then `os.replace` (atomic on POSIX).
- memory: inline (dict operations; nothing blocks); a write publishes the full bytes in one call.
- async filesystems (s3fs, gcsfs, ...) on asyncio: a per-event-loop instance, awaited natively.
- any other filesystem (and async ones under trio): its sync API in worker threads.
Only "not found" means missing; any other failure is a `StorageError`, never read as "missing".
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import fsspec
import msgspec
import sniffio

from ._errors import StorageError
from ._faults import fault

TMP_MARK = ".asyncflow-tmp-"
S3_PART = 8 * 2**20  # multipart upload parts: outputs of 16 MiB and more go up in parts
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"}

_PENDING, _RUNNING, _DONE = 0, 1, 2


class _Item:
    __slots__ = ("args", "done", "error", "fn", "result", "state")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.state = _PENDING
        self.done: anyio.Event | None = None  # its batch's end, once it is in one
        self.result: Any = None
        self.error: BaseException | None = None


def _run_batch(batch: list[_Item]) -> None:
    for it in batch:
        try:
            it.result = it.fn(*it.args)
        except BaseException as e:  # handed back to the caller on the loop
            it.error = e


class ThreadBatcher:
    """Runs small blocking calls in worker threads, many per thread hop (group commit).

    A caller that finds a free batch slot leads: it takes what is queued and runs it in one
    thread call; the others wait until a batch ends, then either find their call done or lead.
    At most `max_batches` thread calls at once. Why: one thread hop costs ~100 µs, as much as
    writing a small file; batching makes thousands of small writes cost a few hops.
    """

    def __init__(self, max_batches: int = 2, max_size: int = 128) -> None:
        self.max_batches = max_batches
        self.max_size = max_size
        self.pending: deque[_Item] = deque()
        self.running = 0
        self._slot_free: anyio.Event | None = None  # set when a batch ends, for queued callers

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        item = _Item(fn, args)
        self.pending.append(item)
        try:
            while item.state != _DONE:
                if item.state == _RUNNING:
                    assert item.done is not None
                    await item.done.wait()
                elif self.running < self.max_batches:
                    await self._lead()
                else:
                    if self._slot_free is None:
                        self._slot_free = anyio.Event()
                    await self._slot_free.wait()
        except BaseException:
            # Cancelled while queued: a queued call must never run late.
            if item.state == _PENDING:
                self.pending.remove(item)
            raise
        if item.error is not None:
            raise item.error
        return item.result

    async def _lead(self) -> None:
        self.running += 1
        batch: list[_Item] = []
        try:
            # Let the tasks that are ready right now queue their calls too: one hop for all.
            await anyio.lowlevel.checkpoint()
            n = min(len(self.pending), self.max_size)
            batch = [self.pending.popleft() for _ in range(n)]
            done = anyio.Event()
            for it in batch:
                it.state = _RUNNING
                it.done = done
            if batch:
                await anyio.to_thread.run_sync(_run_batch, batch)
        finally:
            self.running -= 1
            for it in batch:
                it.state = _DONE
            if batch:
                done.set()
            slot_free, self._slot_free = self._slot_free, None
            if slot_free is not None:
                slot_free.set()


# local-disk primitives (run in worker threads) -------------------------------------------------


TMP_MAX_AGE = 3600.0  # seconds: a temporary file older than this is a dead writer's leftover


def _local_list(folder: str) -> set[str]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return set()
    out = set()
    for n in names:
        if TMP_MARK in n:
            _sweep(os.path.join(folder, n))
        else:
            out.add(n)
    return out


def _sweep(path: str) -> None:
    """Remove a temporary file left by a killed writer (old enough that no live one owns it)."""
    try:
        if time.time() - os.stat(path).st_mtime > TMP_MAX_AGE:
            os.unlink(path)
    except OSError:
        pass


def _local_exists(path: str) -> bool:
    """Like os.path.exists, but only "not found" means False: other errors are raised."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    return True


def _then(then: Callable[[Any], Any], fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return then(fn(*args))
    except OSError as e:
        raise StorageError(f"cannot list {args[0] if args else ''}: {type(e).__name__}: {e}", path=str(args[0])) from e


def _local_checksum(path: str) -> str | None:
    h = hashlib.blake2b(digest_size=8)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except FileNotFoundError:
        return None
    return h.hexdigest()


def _local_publish(target: str, data: bytes, record: str, record_data: bytes, old_record: str | None) -> None:
    if old_record is not None:  # first: a target without its record is never trusted
        _local_delete([old_record])
    _local_write(target, data)
    # The record's decisions are in its name; a content cut short by a crash is unreadable, which
    # means "rebuild", never "trust": so it needs no temporary file and rename.
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        os.write(fd, record_data)
    finally:
        os.close(fd)


def _local_read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


_SESSION = secrets.token_hex(3)  # temp names: this process's pid and session, then a counter
_counter = itertools.count()


def _local_write(path: str, data: bytes) -> None:
    folder, name = os.path.split(path)
    tmp = f"{folder}/.{name}{TMP_MARK}{os.getpid()}-{_SESSION}-{next(_counter)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        fault("after_temp_write", path)
        os.replace(tmp, path)  # atomic: the target appears whole or not at all
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _local_delete(paths: list[str]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _local_glob(pattern: str) -> list[str]:
    import glob

    return sorted(glob.glob(pattern))


class Store:
    """One storage location (an fsspec URL plus options)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.storage_options = dict(storage_options or {})
        protocol, _, rest = url.partition("://") if "://" in url else ("file", "", url)
        if protocol in ("file", "local"):
            protocol = "file"
            rest = os.path.abspath(os.path.expanduser(rest))
        self.protocol = protocol
        cls = fsspec.get_filesystem_class(protocol)
        self.root = cls._strip_protocol(url if protocol != "file" else rest).rstrip("/") or "/"
        if protocol == "file":
            self.kind = "local"
        elif protocol == "memory":
            self.kind = "memory"
        elif getattr(cls, "async_impl", False):
            self.kind = "async"
        else:
            self.kind = "sync"
        self._cls = cls
        self.url = self.root if protocol == "file" else f"{protocol}://{self.root.lstrip('/')}"
        self.key = (protocol, self.root, msgspec.json.encode(self.storage_options, order="deterministic"))
        self._sync_fs: Any = None
        self._async_fs: dict[int, Any] = {}
        self._batcher = ThreadBatcher()
        # Writes and deletes this process made, per folder: a run whose listing predates other
        # runs' writes re-checks a target before building it.
        self.generation: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<Store {self.url}>"

    # paths ----------------------------------------------------------------------------------
    def join(self, *parts: str) -> str:
        base = self.root if self.root != "/" else ""
        return "/".join([base, *parts]) if base or self.kind != "local" else "/" + "/".join(parts)

    def display(self, path: str) -> str:
        """A path as the user would type it (with the protocol when not local)."""
        if self.kind == "local":
            return path
        return f"{self.protocol}://{path.lstrip('/')}"

    # filesystem instances -------------------------------------------------------------------
    def _options(self, asynchronous: bool) -> dict[str, Any]:
        """Options for our own filesystem instances: not shared with other code (fsspec's instance
        cache), no listings cache (other processes write here too), and for S3 few retries, so
        that an unreachable endpoint fails fast instead of in a retry storm."""
        opts: dict[str, Any] = {"skip_instance_cache": True, **self.storage_options}
        if self.kind == "async":
            opts.setdefault("use_listings_cache", False)
            if self.protocol in ("s3", "s3a"):
                opts.setdefault(
                    "config_kwargs", {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 5}
                )
        if asynchronous:
            opts["asynchronous"] = True
        return opts

    def sync_fs(self) -> Any:
        if self._sync_fs is None:
            self._sync_fs = self._cls(**self._options(False)) if self.kind != "memory" else self._cls()
        return self._sync_fs

    def _native(self) -> Any | None:
        """An asynchronous instance for the running asyncio loop, or None (use threads).

        One per store and event loop, reused by every run on that loop (a client costs ~50 ms
        to make); its session is closed when the loop shuts down."""
        if self.kind != "async" or sniffio.current_async_library() != "asyncio":
            return None
        import asyncio

        loop = asyncio.get_running_loop()
        per_loop = _LOOP_FS.get(loop)
        if per_loop is None:
            per_loop = _LOOP_FS[loop] = {}
        fs = per_loop.get(self.key)
        if fs is None:
            opts = self._options(True)
            if self.protocol in ("s3", "s3a") and "session" not in opts:
                opts["session"] = _aio_session()
            fs = per_loop[self.key] = self._cls(**opts)
            keeper = _keeper(fs)
            # Started, it is an async generator the loop finalizes (closing the session) at shutdown.
            per_loop[(self.key, "keeper")] = (keeper, loop.create_task(keeper.asend(None)))
        return fs

    async def check(self) -> None:
        """Fail early, naming the store, when it cannot be used (missing bucket, denied, down)."""
        if self.kind not in ("async", "sync") or self.protocol not in _OBJECT_STORES:
            return
        bucket = self.root.strip("/").split("/", 1)[0]
        try:
            fs = self._native()
            if fs is not None:
                await fs._info(bucket)
            else:
                await anyio.to_thread.run_sync(self.sync_fs().info, bucket)
        except FileNotFoundError:
            raise StorageError(
                f"store {self.url}: bucket {bucket!r} does not exist; create it or fix the store URL", path=self.url
            ) from None
        except Exception as e:
            raise StorageError(f"store {self.url} cannot be used: {type(e).__name__}: {e}", path=self.url) from e

    async def _thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._batcher.call(fn, *args)

    # operations -----------------------------------------------------------------------------
    async def listdir(self, folder: str, then: Callable[[set[str]], Any] | None = None) -> Any:
        """Names of the files directly in `folder` (empty when it does not exist), or what
        `then(names)` makes of them (computed in the worker thread for local disk)."""
        if then is None:
            return await self._listdir(folder)
        if self.kind == "local":
            return await self._thread(_then, then, _local_list, folder)
        return then(await self._listdir(folder))

    async def _listdir(self, folder: str) -> set[str]:
        try:
            if self.kind == "local":
                return await self._thread(_local_list, folder)  # type: ignore[no-any-return]
            if self.kind == "memory":
                entries = self.sync_fs().ls(folder, detail=False)
            else:
                fs = self._native()
                if fs is not None:
                    entries = await fs._ls(folder, detail=False, refresh=True)
                else:
                    sfs = self.sync_fs()
                    sfs.invalidate_cache(folder)
                    entries = await self._thread(sfs.ls, folder, False)
        except FileNotFoundError:
            return set()
        except Exception as e:
            raise StorageError(f"cannot list {self.display(folder)}: {type(e).__name__}: {e}", path=folder) from e
        out = set()
        for p in entries:
            name = p.rstrip("/").rsplit("/", 1)[-1]
            if TMP_MARK not in name:
                out.add(name)
        return out

    async def read(self, path: str) -> bytes:
        """The bytes at `path`; FileNotFoundError when missing, StorageError on other failures."""
        try:
            if self.kind == "local":
                return await self._thread(_local_read, path)  # type: ignore[no-any-return]
            if self.kind == "memory":
                return self.sync_fs().cat_file(path)  # type: ignore[no-any-return]
            fs = self._native()
            if fs is not None:
                return await fs._cat_file(path)  # type: ignore[no-any-return]
            return await self._thread(self.sync_fs().cat_file, path)  # type: ignore[no-any-return]
        except FileNotFoundError:
            raise
        except Exception as e:
            raise StorageError(f"cannot read {self.display(path)}: {type(e).__name__}: {e}", path=path) from e

    def _bump(self, paths: list[str]) -> None:
        for folder in {p.rsplit("/", 1)[0] for p in paths}:
            self.generation[folder] = self.generation.get(folder, 0) + 1

    async def write(self, path: str, data: bytes) -> None:
        """Publish `data` at `path` atomically: whole or not at all, never a partial file."""
        await self._write(path, data)
        self._bump([path])

    async def _write(self, path: str, data: bytes) -> None:
        try:
            if self.kind == "local":
                await self._thread(_local_write, path, data)
            elif self.kind == "memory":
                self.sync_fs().pipe_file(path, data)  # one synchronous call: nothing sees it half-done
            else:
                fs = self._native()
                if fs is not None:
                    # One PUT, or a multipart upload (aborted on error) that appears only when complete.
                    extra = {"chunksize": S3_PART} if self.protocol in ("s3", "s3a") else {}
                    await fs._pipe_file(path, data, **extra)
                elif self.protocol in _OBJECT_STORES:
                    await self._thread(self.sync_fs().pipe_file, path, data)
                else:
                    await self._thread(_sync_write_then_move, self.sync_fs(), path, data)
        except Exception as e:
            raise StorageError(f"cannot write {self.display(path)}: {type(e).__name__}: {e}", path=path) from e

    async def publish(self, target: str, data: bytes, record: str, record_data: bytes, old_record: str | None) -> None:
        """Publish a target and its fingerprint record: old record out first, then the target,
        then the new record, each atomic. A crash between leaves a target without a record, which
        is rebuilt, never trusted."""
        try:
            if self.kind == "local":
                await self._thread(_local_publish, target, data, record, record_data, old_record)
            else:
                if old_record is not None:
                    await self._delete([old_record])
                await self._write(target, data)
                await self._write(record, record_data)
        except StorageError:
            raise
        except Exception as e:
            raise StorageError(f"cannot write {self.display(target)}: {type(e).__name__}: {e}", path=target) from e
        self._bump([target])

    async def checksum(self, path: str) -> str | None:
        """A checksum of the file at `path` (content hash locally, etag / md5 / size+mtime on other
        filesystems), or None when it does not exist."""
        try:
            if self.kind == "local":
                return await self._thread(_local_checksum, path)  # type: ignore[no-any-return]
            if self.kind == "memory":
                fs = self.sync_fs()
                return hashlib.blake2b(fs.cat_file(path), digest_size=8).hexdigest() if fs.exists(path) else None
            fs = self._native()
            info = await fs._info(path) if fs is not None else await self._thread(self.sync_fs().info, path)
        except FileNotFoundError:
            return None
        except Exception as e:
            raise StorageError(f"cannot check {self.display(path)}: {type(e).__name__}: {e}", path=path) from e
        for k in ("ETag", "etag", "md5Hash", "md5", "checksum", "crc32c"):
            if info.get(k):
                return str(info[k]).strip('"')
        return hashlib.blake2b(
            repr((info.get("size"), info.get("mtime"), info.get("LastModified"))).encode(), digest_size=8
        ).hexdigest()

    async def delete(self, paths: list[str]) -> None:
        """Remove these files (missing ones are ignored)."""
        if not paths:
            return
        self._bump(paths)
        await self._delete(paths)

    async def _delete(self, paths: list[str]) -> None:
        try:
            if self.kind == "local":
                await self._thread(_local_delete, paths)
            elif self.kind == "memory":
                fs = self.sync_fs()
                for p in paths:
                    if fs.exists(p):
                        fs.rm_file(p)
            else:
                fs = self._native()
                if fs is not None:
                    await fs._rm(paths)
                else:
                    await self._thread(self.sync_fs().rm, paths)
        except FileNotFoundError:
            pass
        except Exception as e:
            raise StorageError(f"cannot delete under {self.url}: {type(e).__name__}: {e}", path=paths[0]) from e

    async def glob(self, pattern: str) -> list[str]:
        """Paths matching a glob pattern, sorted."""
        try:
            if self.kind == "local":
                return await self._thread(_local_glob, pattern)  # type: ignore[no-any-return]
            if self.kind == "memory":
                return sorted(self.sync_fs().glob(pattern))
            fs = self._native()
            if fs is not None:
                return sorted(await fs._glob(pattern))
            return sorted(await self._thread(self.sync_fs().glob, pattern))
        except Exception as e:
            raise StorageError(f"cannot glob {pattern}: {type(e).__name__}: {e}", path=pattern) from e

    async def exists(self, path: str) -> bool:
        """Whether a file is at `path` (errors other than "not found" raise StorageError)."""
        try:
            if self.kind == "local":
                return await self._thread(_local_exists, path)  # type: ignore[no-any-return]
            if self.kind == "memory":
                return self.sync_fs().exists(path)  # type: ignore[no-any-return]
            fs = self._native()
            if fs is not None:
                await fs._info(path)
            else:
                await self._thread(self.sync_fs().info, path)
            return True
        except FileNotFoundError:
            return False
        except Exception as e:
            raise StorageError(f"cannot check {self.display(path)}: {type(e).__name__}: {e}", path=path) from e


def _sync_write_then_move(fs: Any, path: str, data: bytes) -> None:
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/.{name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    fs.pipe_file(tmp, data)
    try:
        fs.mv(tmp, path)
    except BaseException:
        try:
            fs.rm_file(tmp)
        except Exception:
            pass
        raise


_LOOP_FS: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()
_AIO_SESSION: Any = None


def _aio_session() -> Any:
    """One aiobotocore session for the process: it loads the service models once, not per client."""
    global _AIO_SESSION
    if _AIO_SESSION is None:
        import aiobotocore.session

        _AIO_SESSION = aiobotocore.session.AioSession()
    return _AIO_SESSION


async def _keeper(fs: Any) -> AsyncIterator[None]:
    """Closes `fs` when its event loop shuts down: asyncio (asyncio.run, anyio.run, uvicorn...)
    finalizes the async generators still alive then."""
    try:
        yield
    finally:
        await _close(fs)


async def _close(fs: Any) -> None:
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


_STORES: dict[tuple[str, str], Store] = {}


def get_store(url: str, storage_options: dict[str, Any] | None = None) -> Store:
    """The shared `Store` for a URL and options (one per location per process)."""
    k = (
        os.path.abspath(url) if "://" not in url else url,
        msgspec.json.encode(storage_options or {}, order="deterministic").decode(),
    )
    store = _STORES.get(k)
    if store is None:
        store = _STORES[k] = Store(url, storage_options)
    return store


def store_for_path(url: str) -> tuple[Store, str]:
    """The store and path of a single file URL (for `af.external`)."""
    if "://" in url:
        protocol, _, rest = url.partition("://")
        folder = rest.rsplit("/", 1)[0] if "/" in rest else rest
        store = get_store(f"{protocol}://{folder}")
        return store, store._cls._strip_protocol(url)
    path = os.path.abspath(url)
    return get_store(os.path.dirname(path)), path
