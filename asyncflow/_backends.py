"""How each kind of filesystem is driven; a `Store` chooses one backend when it is made.

- `LocalBackend`: plain `os` calls (no fsspec overhead), batched into worker threads.
- `MemoryBackend`: fsspec's memory filesystem, inline (dict operations; nothing blocks).
- `_remote.AsyncFsspecBackend`: s3fs, gcsfs... on asyncio: one instance per event loop, awaited natively.
- `_remote.ThreadFsspecBackend`: any other filesystem (and async ones under trio): its sync API in threads.

Each backend gives a few primitives (list with details, read, put, write, delete, info); the record
operations (`scan` a task folder with each target's version tag, `probe` one target and the
record attached to it, `publish` a target and learn its tag, record segments) are built on them,
and local disk has its own (`_local`). Backends raise what the filesystem raises; the `Store`
facade turns every failure other than "not found" into one `StorageError`.

Per-event-loop resources (thread batchers, async clients) live in a run variable and are closed,
and dropped, when their loop shuts down: nothing keeps a finished loop alive.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import os
from collections.abc import Callable
from typing import Any

import anyio.lowlevel
import anyio.to_thread

from . import _local
from ._batcher import ThreadBatcher
from ._concurrent import run_all

OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"})
SEGMENTS = _local.SEGMENTS
SEGMENT_EXT = _local.SEGMENT_EXT

Scan = tuple[dict[str, str], list[str], list[str]]
"""A task folder: `{target name: version tag}`, record segment names, asyncflow 0.1 record names."""

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


def tag_of(info: dict[str, Any]) -> str:
    """A file's version tag from fsspec's info: its etag (or md5, crc) when there is one, else its
    size and times."""
    for k in ("ETag", "etag", "md5Hash", "md5", "checksum", "crc32c"):
        if info.get(k):
            return str(info[k]).strip('"')
    stamp: Any = info.get("mtime") or info.get("created") or info.get("LastModified")
    if hasattr(stamp, "timestamp"):  # a datetime from `info`, where `ls` may give a float
        stamp = stamp.timestamp()
    return f"{info.get('size')}-{stamp}"


def scan_entries(entries: list[dict[str, Any]]) -> tuple[dict[str, str], list[str]]:
    """A listing with details as targets with their tags, and asyncflow 0.1's record files."""
    targets: dict[str, str] = {}
    legacy: list[str] = []
    for e in entries:
        name = _name_of(e["name"])
        if name[:1] == ".":
            if _local.LEGACY_RECORD in name and not _local.is_temporary(name):
                legacy.append(name)
        elif e.get("type", "file") != "directory":
            targets[name] = tag_of(e)
    return targets, legacy


class Backend(abc.ABC):
    """The operations targets need, on one filesystem."""

    kind = ""

    def __init__(self, key: Any, fs_class: Any, storage_options: dict[str, Any], protocol: str, root: str) -> None:
        self.key = key
        self.fs_class = fs_class
        self.storage_options = storage_options
        self.protocol = protocol
        self.root = root

    # primitives -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def ls(self, folder: str) -> list[dict[str, Any]]:
        """fsspec's detailed listing of `folder` (empty when missing)."""

    @abc.abstractmethod
    async def read(self, path: str) -> bytes:
        """The bytes at `path` (FileNotFoundError when missing)."""

    async def read_small(self, path: str) -> bytes:
        """`read`, for a file known to be small (one request where the store would ask its size)."""
        return await self.read(path)

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

    async def put_with_record(self, path: str, data: bytes, record: bytes) -> str | None:
        """Write `data` at `path` with `record` attached, returning its tag; None when this store
        attaches no records (then `publish` writes and asks for the tag)."""
        return None

    async def head(self, path: str) -> tuple[str, bytes | None]:
        """A file's tag and its attached record (FileNotFoundError when missing)."""
        return tag_of(await self.info(path)), None

    async def read_with_record(self, path: str) -> tuple[bytes, str, bytes | None]:
        """A target's bytes, its tag and its attached record, of one version where the store can
        tell (FileNotFoundError when missing)."""
        tag, attached = await self.head(path)
        return await self.read(path), tag, attached

    # built on them --------------------------------------------------------------------------
    async def scan(self, folder: str) -> Scan:
        """A task folder's targets with their tags, its record segments, asyncflow 0.1's records
        (segments listed first: see `_records._rewrite`)."""
        segments = await self.segment_names(folder)
        targets, legacy = scan_entries(await self.ls(folder))
        return targets, segments, legacy

    async def probe(self, path: str) -> tuple[str, bytes | None] | None:
        """One target's tag and attached record, or None when it is missing."""
        try:
            return await self.head(path)
        except FileNotFoundError:
            return None

    async def publish(self, path: str, data: bytes, attach: Callable[[str], bytes | None] | None) -> str:
        """Publish a target atomically (its record attached where the store can: `attach(tag)`);
        the tag of what was written."""
        record = attach("") if attach is not None else None
        if record is not None:
            tag = await self.put_with_record(path, data, record)
            if tag is not None:
                return tag
        await self.write(path, data)
        return tag_of(await self.info(path))

    async def attach(self, path: str, record: bytes) -> bool:
        """Attach a record to a file already in place; False where the store cannot."""
        return False

    # leases (`_leases`) ---------------------------------------------------------------------
    def lease_kind(self) -> str | None:
        """ "lock" (kernel record locks), "object" (an object made by a conditional PUT), or None:
        this store has single flight within a process only."""
        return None

    async def lock_file(self, root: str, shard: int) -> int:
        raise TypeError(f"{self.protocol} stores take no record locks (lease_kind() is {self.lease_kind()!r})")

    async def create_exclusive(self, path: str, data: bytes) -> str | None:
        """Create `path` only if nothing is there: its ETag, or None if something is."""
        raise TypeError(f"{self.protocol} stores have no conditional writes (lease_kind() is {self.lease_kind()!r})")

    async def replace_if(self, path: str, data: bytes, etag: str) -> str | None:
        """Overwrite `path` only if it still has `etag`: the new ETag, or None if it changed."""
        raise TypeError(f"{self.protocol} stores have no conditional writes (lease_kind() is {self.lease_kind()!r})")

    async def age(self, path: str) -> tuple[float, str] | None:
        """Seconds since `path` was last written, and its ETag; None if it is missing."""
        raise TypeError(f"{self.protocol} stores keep no lease objects (lease_kind() is {self.lease_kind()!r})")

    async def write_segment(self, folder: str, name: str, data: bytes) -> None:
        await self.write(f"{folder}/{SEGMENTS}/{name}", data)

    async def segment_names(self, folder: str) -> list[str]:
        names = (_name_of(e["name"]) for e in await self.ls(f"{folder}/{SEGMENTS}"))
        return sorted(n for n in names if n.endswith(_local.SEGMENT_EXT) and not _local.is_temporary(n))

    async def read_segments(self, folder: str, names: list[str]) -> list[tuple[str, bytes]]:
        """The segments still there, as (name, bytes), read a few at a time."""
        found: dict[str, bytes] = {}

        async def one(name: str) -> None:
            try:
                found[name] = await self.read_small(f"{folder}/{SEGMENTS}/{name}")
            except FileNotFoundError:  # compacted away meanwhile
                pass

        for i in range(0, len(names), 16):
            await run_all([functools.partial(one, n) for n in names[i : i + 16]])
        return [(n, found[n]) for n in names if n in found]

    async def delete_segments(self, folder: str, names: list[str]) -> None:
        if names:
            await self.delete([f"{folder}/{SEGMENTS}/{n}" for n in names])

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

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._batcher().call(fn, *args)

    async def ls(self, folder: str) -> list[dict[str, Any]]:  # pragma: no cover - scan is local's own
        targets, _, _ = await self.scan(folder)
        return [{"name": f"{folder}/{n}", "type": "file"} for n in targets]

    async def scan(self, folder: str) -> Scan:
        return await self._run(_local.scan, folder)  # type: ignore[no-any-return]

    async def probe(self, path: str) -> tuple[str, bytes | None] | None:
        return await self._run(_local.probe, path)  # type: ignore[no-any-return]

    async def publish(self, path: str, data: bytes, attach: Callable[[str], bytes | None] | None) -> str:
        return await self._run(_local.publish, path, data, attach)  # type: ignore[no-any-return]

    def lease_kind(self) -> str | None:
        return "lock" if _local.HAS_LOCKS else None

    async def lock_file(self, root: str, shard: int) -> int:
        return await self._run(_local.lock_file, root, shard)  # type: ignore[no-any-return]

    async def attach(self, path: str, record: bytes) -> bool:
        return await self._run(_local.attach, path, record)  # type: ignore[no-any-return]

    async def write_segment(self, folder: str, name: str, data: bytes) -> None:
        await self._run(_local.write_segment, folder, name, data)

    async def read_segments(self, folder: str, names: list[str]) -> list[tuple[str, bytes]]:
        return await self._run(_local.read_segments, folder, names)  # type: ignore[no-any-return]

    async def segment_names(self, folder: str) -> list[str]:
        return await self._run(_local.segment_names, folder)  # type: ignore[no-any-return]

    async def read(self, path: str) -> bytes:
        return await self._run(_local.read, path)  # type: ignore[no-any-return]

    async def read_with_record(self, path: str) -> tuple[bytes, str, bytes | None]:
        return await self._run(_local.read_with_record, path)  # type: ignore[no-any-return]

    async def write(self, path: str, data: bytes) -> None:
        await self._run(_local.write_atomic, path, data)

    async def delete(self, paths: list[str]) -> None:
        await self._run(_local.delete, paths)

    async def exists(self, path: str) -> bool:
        return await self._run(_local.exists, path)  # type: ignore[no-any-return]

    async def checksum(self, path: str) -> str | None:
        return await self._run(_local.checksum, path)  # type: ignore[no-any-return]

    async def glob(self, pattern: str) -> list[str]:
        return await self._run(_local.glob, pattern)  # type: ignore[no-any-return]

    async def info(self, path: str) -> dict[str, Any]:
        st = await self._run(os.stat, path)
        return {"name": path, "size": st.st_size, "mtime": st.st_mtime, "type": "file"}

    async def check(self) -> None:
        await self._run(_local.make_store, self.root)


class SyncFsBackend(Backend):
    """Shared by the backends that hold one synchronous fsspec instance (a base: `_remote` too)."""

    _fs: Any = None

    def sync_fs(self) -> Any:
        if self._fs is None:
            self._fs = self.fs_class(**self.fs_options(False))
        return self._fs


class MemoryBackend(SyncFsBackend):
    """fsspec's memory filesystem, driven inline: every call is a dict operation."""

    kind = "memory"

    def sync_fs(self) -> Any:
        if self._fs is None:
            self._fs = self.fs_class()
        return self._fs

    async def ls(self, folder: str) -> list[dict[str, Any]]:
        try:
            return self.sync_fs().ls(folder, detail=True)  # type: ignore[no-any-return]
        except FileNotFoundError:
            return []

    async def read(self, path: str) -> bytes:
        return self.sync_fs().cat_file(path)  # type: ignore[no-any-return]

    async def write(self, path: str, data: bytes) -> None:
        self.sync_fs().pipe_file(path, data)  # one synchronous call: nothing sees it half-done

    async def delete(self, paths: list[str]) -> None:
        fs = self.sync_fs()
        for p in paths:
            if await self.exists(p):
                fs.rm_file(p)

    def _file(self, path: str) -> Any:
        """The file at `path`, or None: one dict lookup (fsspec's `info` and `exists` first look
        for a folder of that name among all the keys)."""
        fs = self.sync_fs()
        return fs.store.get(fs._strip_protocol(path))

    async def info(self, path: str) -> dict[str, Any]:
        file = self._file(path)
        if file is not None:
            return {"name": path, "size": file.size, "type": "file", "created": getattr(file, "created", None)}
        return self.sync_fs().info(path)  # type: ignore[no-any-return]

    async def head(self, path: str) -> tuple[str, bytes | None]:
        file = self._file(path)  # targets are files: no folder scan when missing
        if file is None:
            raise FileNotFoundError(path)
        return tag_of({"size": file.size, "created": getattr(file, "created", None)}), None

    async def exists(self, path: str) -> bool:
        return self._file(path) is not None or self.sync_fs().exists(path)

    async def checksum(self, path: str) -> str | None:
        fs = self.sync_fs()
        return hashlib.blake2b(fs.cat_file(path), digest_size=8).hexdigest() if fs.exists(path) else None

    async def glob(self, pattern: str) -> list[str]:
        return sorted(self.sync_fs().glob(pattern))
