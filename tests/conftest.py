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


S3_BUCKET = "asyncflow-tests"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 protocol server (moto) on 127.0.0.1 and a free port, for the whole session."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(_AWS_ENV)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    fs.mkdir(S3_BUCKET)
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_store(s3_endpoint) -> str:
    """A fresh prefix in the test bucket, with the endpoint in `af.settings.storage_options`."""
    af.settings.storage_options = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    return f"s3://{S3_BUCKET}/test-{uuid.uuid4().hex}"


@pytest.fixture(params=["local", "memory", "async", "s3"])
def any_store(request, tmp_path) -> str:
    """Each test using it runs once per store kind: local disk, memory, an async filesystem (in
    memory), and S3 (s3fs against a local S3 server)."""
    if request.param == "local":
        return str(tmp_path / "store")
    if request.param == "memory":
        return f"memory://test-{uuid.uuid4().hex}"
    if request.param == "s3":
        return request.getfixturevalue("s3_store")
    return f"asyncmem://test-{uuid.uuid4().hex}"


def _fs(url: str):  # type: ignore[no-untyped-def]
    options = dict(af.settings.storage_options) if url.startswith("s3://") else {}
    fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)
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
