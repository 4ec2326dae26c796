"""Stores: an fsspec location plus the few operations targets need, never blocking the event loop.

`Store` is a facade: it parses the URL once, picks the backend for its kind (`_backends`), and
turns every failure other than "not found" into one `StorageError` naming the path (only "not
found" means missing). One `Store` per location and options in a process (`get_store`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import fsspec
import msgspec

from ._backends import OBJECT_STORES, Backend, backend_for
from ._errors import ParameterError, StorageError


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
        """Fail early, naming the store, when it cannot be used (missing bucket, denied, down)."""
        try:
            await self.backend.check()
        except FileNotFoundError:
            bucket = self.root.strip("/").split("/", 1)[0]
            raise StorageError(
                f"store {self.url}: bucket {bucket!r} does not exist; create it or fix the store URL", path=self.url
            ) from None
        except Exception as e:
            raise StorageError(f"store {self.url} cannot be used: {type(e).__name__}: {e}", path=self.url) from e

    async def listdir(self, folder: str, then: Callable[[set[str]], Any] | None = None) -> Any:
        """Names of the files directly in `folder` (empty when it does not exist), or what
        `then(names)` makes of them (computed in the worker thread for local disk)."""
        try:
            return await self.backend.listdir(folder, then)
        except Exception as e:
            raise self._failed("list", folder, e) from e

    async def read(self, path: str) -> bytes:
        """The bytes at `path`; FileNotFoundError when missing, StorageError on other failures."""
        try:
            return await self.backend.read(path)
        except FileNotFoundError:
            raise
        except Exception as e:
            raise self._failed("read", path, e) from e

    async def write(self, path: str, data: bytes) -> None:
        """Publish `data` at `path` atomically: whole or not at all, never a partial file."""
        try:
            await self.backend.write(path, data)
        except Exception as e:
            raise self._failed("write", path, e) from e
        self._bump([path])

    async def publish(self, target: str, data: bytes, record: str, record_data: bytes, old_record: str | None) -> None:
        """Publish a target and its fingerprint record: old record out first, then the target,
        then the new record, each atomic. A crash between leaves a target without a record, which
        is rebuilt, never trusted."""
        try:
            await self.backend.publish(target, data, record, record_data, old_record)
        except Exception as e:
            raise self._failed("write", target, e) from e
        self._bump([target])

    async def checksum(self, path: str) -> str | None:
        """A checksum of the file at `path` (content hash locally and in memory, etag / md5 /
        size+mtime on other filesystems), or None when it does not exist."""
        try:
            return await self.backend.checksum(path)
        except Exception as e:
            raise self._failed("check", path, e) from e

    async def delete(self, paths: list[str]) -> None:
        """Remove these files (missing ones are ignored)."""
        if not paths:
            return
        self._bump(paths)
        try:
            await self.backend.delete(paths)
        except Exception as e:
            raise self._failed("delete", paths[0], e) from e

    async def glob(self, pattern: str) -> list[str]:
        """Paths matching a glob pattern, sorted."""
        try:
            return await self.backend.glob(pattern)
        except Exception as e:
            raise self._failed("glob", pattern, e) from e

    async def exists(self, path: str) -> bool:
        """Whether a file is at `path` (errors other than "not found" raise StorageError)."""
        try:
            return await self.backend.exists(path)
        except Exception as e:
            raise self._failed("check", path, e) from e

    @property
    def is_object_store(self) -> bool:
        return self.protocol in OBJECT_STORES


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
