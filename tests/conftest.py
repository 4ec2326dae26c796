"""Shared fixtures: every test gets its own stores, settings restored afterwards, and runs on the
anyio backend named by ASYNCFLOW_TEST_BACKEND (asyncio by default; `make test` also runs trio)."""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Iterator

import fsspec
import pytest
from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
from fsspec.implementations.memory import MemoryFileSystem

import asyncflow as af

BACKEND = os.environ.get("ASYNCFLOW_TEST_BACKEND", "asyncio")


@pytest.fixture
def anyio_backend() -> str:
    return BACKEND


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch) -> Iterator[None]:
    saved = copy.copy(af.settings.__dict__)
    af.settings.store = str(tmp_path / "default-store")
    af.settings.execution_summary = False
    monkeypatch.chdir(tmp_path)
    yield
    af.settings.__dict__.clear()
    af.settings.__dict__.update(saved)


@pytest.fixture
def store(tmp_path) -> str:
    """A fresh local-disk store."""
    return str(tmp_path / "store")


@pytest.fixture
def mem_store() -> str:
    """A fresh in-memory store."""
    return f"memory://test-{uuid.uuid4().hex}"


class AsyncMemoryFS(AsyncFileSystemWrapper):
    """An async fsspec filesystem (like s3fs or gcsfs) over the memory store: exercises the native
    async path on asyncio and the sync-instance-in-threads path on trio."""

    protocol = "asyncmem"
    root_marker = "/"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(MemoryFileSystem(), *args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):  # type: ignore[no-untyped-def]
        return MemoryFileSystem._strip_protocol(path.replace("asyncmem://", "memory://"))


fsspec.register_implementation("asyncmem", AsyncMemoryFS, clobber=True)


@pytest.fixture(params=["local", "memory", "async"])
def any_store(request, tmp_path) -> str:
    """Each test using it runs once per store kind: local disk, memory, an async filesystem."""
    if request.param == "local":
        return str(tmp_path / "store")
    if request.param == "memory":
        return f"memory://test-{uuid.uuid4().hex}"
    return f"asyncmem://test-{uuid.uuid4().hex}"


def _fs(url: str):  # type: ignore[no-untyped-def]
    fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    return fs, path


async def raw_read(url: str) -> bytes:
    """Read a file behind asyncflow's back (from a thread: some filesystems refuse the loop)."""
    import anyio.to_thread

    def read() -> bytes:
        fs, path = _fs(url)
        return fs.cat_file(path)

    return await anyio.to_thread.run_sync(read)


async def raw_write(url: str, data: bytes) -> None:
    import anyio.to_thread

    def write() -> None:
        fs, path = _fs(url)
        fs.pipe_file(path, data)

    await anyio.to_thread.run_sync(write)


async def raw_exists(url: str) -> bool:
    import anyio.to_thread

    def exists() -> bool:
        fs, path = _fs(url)
        return fs.exists(path)

    return await anyio.to_thread.run_sync(exists)
