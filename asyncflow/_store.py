"""Stores: an fsspec location plus the few operations targets need, never blocking the event loop.

`Store` is a facade: it parses the URL once, picks the backend for its kind (`_backends`), and
turns every failure other than "not found" into one `StorageError` naming the path (only "not
found" means missing). One `Store` per location and options in a process (`get_store`).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import fsspec
import msgspec

from ._backends import SEGMENTS, Backend, Scan
from ._errors import ParameterError, StorageError
from ._remote import backend_for

T = TypeVar("T")


def store_key(url: str, storage_options: dict[str, Any] | None) -> tuple[str, str, bytes]:
    """What identifies a store: protocol, root path and options (the one way stores are keyed)."""
    protocol, _, rest = url.partition("://") if "://" in url else ("file", "", url)
    if protocol in ("file", "local"):
        protocol = "file"
        root = os.path.abspath(os.path.expanduser(rest)).rstrip("/") or "/"
    else:
        root = filesystem_class(protocol, url)._strip_protocol(url).rstrip("/") or "/"
    return protocol, root, msgspec.json.encode(storage_options or {}, order="deterministic")


_HINTS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}


def filesystem_class(protocol: str, url: str) -> Any:
    """fsspec's filesystem class for a protocol; a `ParameterError` naming the store otherwise."""
    try:
        return fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        package = _HINTS.get(protocol, "the package fsspec names")
        raise ParameterError(
            f"store {url!r} needs {package}, which is not installed: pip install {package} ({e})", param="store"
        ) from None
    except ValueError:
        raise ParameterError(
            f"store {url!r}: fsspec knows no protocol {protocol!r}; use a folder path, memory://..., s3://... "
            "(or register the filesystem with fsspec)",
            param="store",
        ) from None


class Store:
    """One storage location (an fsspec URL plus options)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.storage_options = dict(storage_options or {})
        self.key = store_key(url, self.storage_options)
        self.protocol, self.root, _ = self.key
        cls = filesystem_class(self.protocol, url)
        if self.protocol == "file":
            kind = "local"
        elif self.protocol == "memory":
            kind = "memory"
        elif getattr(cls, "async_impl", False):
            kind = "async"
        else:
            kind = "sync"
        self.kind = kind
        self.backend: Backend = backend_for(kind)(self.key, cls, self.storage_options, self.protocol, self.root)
        self.url = self.root if kind == "local" else f"{self.protocol}://{self.root.lstrip('/')}"
        # Writes and deletes this process made, per folder: a run whose listing predates other
        # runs' writes re-checks a target before building it.
        self.generation: dict[str, int] = {}
        self._lock_fds: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"<Store {self.url}>"

    # paths ----------------------------------------------------------------------------------
    def join(self, *parts: str) -> str:
        """A path inside the store."""
        base = "" if self.root == "/" else self.root
        return "/".join([base, *parts]) if base or self.kind != "local" else "/" + "/".join(parts)

    def display(self, path: str) -> str:
        """A path as the user would type it (with the protocol when not local)."""
        return path if self.kind == "local" else f"{self.protocol}://{path.lstrip('/')}"

    def _failed(self, doing: str, path: str, e: BaseException) -> StorageError:
        return StorageError(f"cannot {doing} {self.display(path)}: {type(e).__name__}: {e}", path=path)

    def _bump(self, paths: list[str]) -> None:
        for folder in {p.rsplit("/", 1)[0] for p in paths}:
            self.generation[folder] = self.generation.get(folder, 0) + 1

    # operations -----------------------------------------------------------------------------
    async def check(self) -> None:
        """Fail early, naming the store, when it cannot be used (missing bucket, denied, down; a
        local folder that cannot be made), before any body runs."""
        try:
            await self.backend.check()
        except FileNotFoundError as e:
            if self.kind == "local":  # the folder could not be made
                raise StorageError(f"store {self.url} cannot be used: {type(e).__name__}: {e}", path=self.url) from e
            bucket = self.root.strip("/").split("/", 1)[0]
            raise StorageError(
                f"store {self.url}: bucket {bucket!r} does not exist; create it or fix the store URL", path=self.url
            ) from None
        except Exception as e:
            raise StorageError(f"store {self.url} cannot be used: {type(e).__name__}: {e}", path=self.url) from e

    async def _do(self, doing: str, path: str, call: Awaitable[T]) -> T:
        """Await a backend call; any failure but "not found" becomes a StorageError naming `path`."""
        try:
            return await call
        except FileNotFoundError:
            raise
        except Exception as e:
            raise self._failed(doing, path, e) from e

    async def scan(self, folder: str) -> Scan:
        """A task folder: its targets with their version tags, its record segments, and the record
        files of asyncflow 0.1 (empty when the folder does not exist)."""
        return await self._do("list", folder, self.backend.scan(folder))

    async def probe(self, path: str) -> tuple[str, bytes | None] | None:
        """One target's version tag and the record attached to it, or None when it is missing."""
        return await self._do("check", path, self.backend.probe(path))

    async def read(self, path: str) -> bytes:
        """The bytes at `path`; FileNotFoundError when missing, StorageError on other failures."""
        return await self._do("read", path, self.backend.read(path))

    async def read_with_record(self, path: str) -> tuple[bytes, str, bytes | None]:
        """A target's bytes with the version tag and attached record of what was read."""
        return await self._do("read", path, self.backend.read_with_record(path))

    async def write(self, path: str, data: bytes) -> None:
        """Publish `data` at `path` atomically: whole or not at all, never a partial file."""
        await self._do("write", path, self.backend.write(path, data))
        self._bump([path])

    async def publish(self, path: str, data: bytes, attach: Callable[[str], bytes | None] | None = None) -> str:
        """Publish a target atomically, with `attach(tag)` as its attached record where the store
        keeps one (an extended attribute, S3 object metadata); the written target's version tag."""
        tag = await self._do("write", path, self.backend.publish(path, data, attach))
        self._bump([path])
        return tag

    async def attach(self, path: str, record: bytes) -> bool:
        """Attach a record to a target already written (by a Dask worker); False where impossible."""
        return await self._do("write", path, self.backend.attach(path, record))

    async def write_segment(self, folder: str, name: str, data: bytes) -> None:
        """Write a record segment of a task folder."""
        await self._do("write", f"{folder}/{SEGMENTS}/{name}", self.backend.write_segment(folder, name, data))

    async def segment_names(self, folder: str) -> list[str]:
        """The record segments of a task folder, without listing its targets."""
        return await self._do("list", f"{folder}/{SEGMENTS}", self.backend.segment_names(folder))

    async def read_segments(self, folder: str, names: list[str]) -> list[tuple[str, bytes]]:
        """Record segments of a task folder, as (name, bytes); the ones gone meanwhile left out."""
        return await self._do("read", f"{folder}/{SEGMENTS}", self.backend.read_segments(folder, names))

    async def delete_segments(self, folder: str, names: list[str]) -> None:
        """Remove record segments (superseded by a compacted one)."""
        await self._do("delete", f"{folder}/{SEGMENTS}", self.backend.delete_segments(folder, names))

    # leases (`_leases`) ---------------------------------------------------------------------
    async def lock_file(self, shard: int) -> int:
        """One of the open lock files of a local store (made on first use, in `{store}/.asyncflow/`;
        kept open for the process's life: a node's lease is then one system call, no thread hop)."""
        fd = self._lock_fds.get(shard)
        if fd is None:
            fd = self._lock_fds[shard] = await self._do(
                "lock", f"{self.root}/{SEGMENTS}", self.backend.lock_file(self.root, shard)
            )
        return fd

    async def create_exclusive(self, path: str, data: bytes) -> str | None:
        """Create `path` only if nothing is there (a conditional PUT): its ETag, or None."""
        return await self._do("write", path, self.backend.create_exclusive(path, data))

    async def replace_if(self, path: str, data: bytes, etag: str) -> str | None:
        """Overwrite `path` only if it still has `etag` (a conditional PUT): the new ETag, or None."""
        return await self._do("write", path, self.backend.replace_if(path, data, etag))

    async def age(self, path: str) -> tuple[float, str] | None:
        """Seconds since `path` was written and its ETag; None if it is missing."""
        return await self._do("check", path, self.backend.age(path))

    async def checksum(self, path: str) -> str | None:
        """A checksum of the file at `path` (content hash locally and in memory, etag / md5 /
        size+mtime on other filesystems), or None when it does not exist."""
        return await self._do("check", path, self.backend.checksum(path))

    async def delete(self, paths: list[str]) -> None:
        """Remove these files (missing ones are ignored)."""
        if not paths:
            return
        self._bump(paths)
        await self._do("delete", paths[0], self.backend.delete(paths))

    async def glob(self, pattern: str) -> list[str]:
        """Paths matching a glob pattern, sorted."""
        return await self._do("glob", pattern, self.backend.glob(pattern))

    async def exists(self, path: str) -> bool:
        """Whether a file is at `path` (errors other than "not found" raise StorageError)."""
        return await self._do("check", path, self.backend.exists(path))


_STORES: dict[tuple[str, str, bytes], Store] = {}


def get_store(url: str, storage_options: dict[str, Any] | None = None) -> Store:
    """The shared `Store` for a URL and options (one per location per process)."""
    k = store_key(url, storage_options)
    store = _STORES.get(k)
    if store is None:
        store = _STORES[k] = Store(url, storage_options)
    return store


def store_for_path(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Store, str]:
    """The store of a single file URL's folder, and the file's path in it (for `af.external`)."""
    if "://" in url:
        protocol, _, rest = url.partition("://")
        folder = rest.rsplit("/", 1)[0] if "/" in rest else rest
        store = get_store(f"{protocol}://{folder}", storage_options)
        return store, store.backend.fs_class._strip_protocol(url)
    path = os.path.abspath(url)
    return get_store(os.path.dirname(path), storage_options), path
