"""S3 for real: s3fs against a local S3 server (moto) on 127.0.0.1, awaited on the event loop."""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

import anyio
import anyio.to_thread
import pytest

import asyncflow as af
from asyncflow import _records

from .conftest import S3_BUCKET, raw_exists

pytestmark = pytest.mark.anyio

s3fs = pytest.importorskip("s3fs")


class Requests:
    """Counts the S3 requests s3fs sends (by operation name)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        original = s3fs.S3FileSystem._call_s3

        async def spy(fs: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
            self.calls.append(method if isinstance(method, str) else getattr(method, "__name__", str(method)))
            return await original(fs, method, *args, **kwargs)

        monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", spy)


@af.task
async def s3_item(i: int) -> int:
    return i


async def test_store_url_and_options_on_the_workflow(s3_endpoint) -> None:
    store = f"s3://{S3_BUCKET}/opts-{uuid.uuid4().hex}"
    flow = af.Workflow(s3_item(i=1), store=store, storage_options={"client_kwargs": {"endpoint_url": s3_endpoint}})
    await flow.run()
    assert flow.target().path.startswith(f"{store}/s3_item/i=1-")
    assert await flow.output() == 1


async def test_the_usual_aws_environment_variables_work(s3_endpoint, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    store = f"s3://{S3_BUCKET}/env-{uuid.uuid4().hex}"
    flow = af.Workflow(s3_item(i=2), store=store)
    await flow.run()
    assert await flow.output() == 2


@pytest.mark.skipif(os.environ.get("ASYNCFLOW_TEST_BACKEND", "asyncio") != "asyncio", reason="asyncio only")
async def test_s3fs_is_awaited_on_the_loop_never_in_threads(s3_store, monkeypatch) -> None:
    hops = []
    original = anyio.to_thread.run_sync

    async def counting(*args: Any, **kwargs: Any) -> Any:
        hops.append(args[0])
        return await original(*args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    flow = af.Workflow([s3_item(i=i) for i in range(20)], store=s3_store)
    await flow.run()
    await flow.run()
    assert await flow.outputs(s3_item) == {f"s3_item[i={i}]": i for i in range(20)}
    assert hops == []


async def test_a_target_written_elsewhere_is_seen(s3_store) -> None:
    runs = []

    @af.task(name="counted_item")
    async def counted(i: int) -> int:
        runs.append(i)
        return i

    await af.Workflow(counted(i=1), store=s3_store).run()  # lists the folder
    other = af.Workflow(counted(i=2), store=s3_store)
    target = other.target()
    # another process publishes i=2 (target and record) by copying what asyncflow would write
    await af.Workflow(counted(i=2), store=f"{s3_store}-elsewhere").run()
    src = af.Workflow(counted(i=2), store=f"{s3_store}-elsewhere").target()
    fs = s3fs.S3FileSystem(client_kwargs=af.settings.storage_options["client_kwargs"], skip_instance_cache=True)
    for path in await anyio.to_thread.run_sync(fs.ls, src.folder):
        await anyio.to_thread.run_sync(fs.copy, path, f"{target.folder}/{path.rsplit('/', 1)[1]}")
    runs.clear()
    result = await other.run()
    assert runs == []
    assert result.skipped == 1


async def test_bulk_completion_lists_instead_of_asking_per_node(s3_store, monkeypatch) -> None:
    nodes = [s3_item(i=i) for i in range(1000)]
    await af.Workflow(nodes, store=s3_store).run()
    segments = len(await _raw_ls(f"{s3_store}/s3_item/.asyncflow"))
    assert 1 <= segments <= 40  # one per group commit, not one per node
    requests = Requests(monkeypatch)
    result = await af.Workflow(nodes, store=s3_store).run()
    assert result.skipped == 1000
    # one bucket check, the record segments listed and read, the targets listed 1,000 a page:
    # nothing per node (a run compacts the segments when there are more than 16)
    assert "head_object" not in requests.calls
    assert requests.calls.count("list_objects_v2") == 3 and requests.calls.count("get_object") == segments
    if segments > _records.COMPACT_AFTER:
        assert len(await _raw_ls(f"{s3_store}/s3_item/.asyncflow")) == 1


async def test_a_small_run_in_a_big_prefix_asks_about_its_own_nodes_only(s3_store, monkeypatch) -> None:
    await af.Workflow([s3_item(i=i) for i in range(200)], store=s3_store).run()
    requests = Requests(monkeypatch)
    result = await af.Workflow([s3_item(i=7), s3_item(i=1000)], store=s3_store).run()
    assert (result.skipped, result.ran) == (1, 1)
    # the complete node decided from its own object's head (its ETag and attached record), the new one
    # from a head that says "missing": no listing of the 200 objects, no record segment read
    assert "list_objects_v2" not in requests.calls and "get_object" not in requests.calls, requests.calls
    assert requests.calls.count("head_object") <= 3 and len(requests.calls) <= 8, requests.calls


async def _raw_ls(url: str) -> list[str]:
    fs = s3fs.S3FileSystem(client_kwargs=af.settings.storage_options["client_kwargs"], skip_instance_cache=True)
    return await anyio.to_thread.run_sync(lambda: fs.ls(url.removeprefix("s3://"), refresh=True))


@pytest.mark.skipif(os.environ.get("ASYNCFLOW_TEST_BACKEND", "asyncio") != "asyncio", reason="asyncio only")
async def test_a_cancelled_large_upload_leaves_no_object(s3_store, monkeypatch) -> None:
    started = anyio.Event()
    release = anyio.Event()
    original = s3fs.S3FileSystem._call_s3

    async def slow_parts(fs: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        if method == "upload_part":
            started.set()
            await release.wait()
        return await original(fs, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", slow_parts)

    @af.task(format="bytes")
    async def big() -> bytes:
        return os.urandom(20 * 1024 * 1024)  # a multipart upload (parts of 8 MiB)

    flow = af.Workflow(big(), store=s3_store)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(flow.run)
            await started.wait()
            assert not await raw_exists(flow.target().path)  # not visible while parts go up
            tg.cancel_scope.cancel()
    assert not await raw_exists(flow.target().path)
    release.set()
    await flow.run()  # and a whole upload appears only once complete
    assert len(await flow.output()) == 20 * 1024 * 1024


async def test_a_failing_upload_leaves_no_object(s3_store, monkeypatch) -> None:
    original = s3fs.S3FileSystem._call_s3

    async def broken(fs: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        if method in ("put_object", "upload_part"):
            raise ConnectionResetError("network went away mid-upload")
        return await original(fs, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", broken)
    flow = af.Workflow(s3_item(i=5), store=s3_store)
    with pytest.raises(af.FlowFailed) as e:
        await flow.run()
    assert isinstance(e.value.__cause__, af.StorageError)
    monkeypatch.undo()
    assert not await raw_exists(flow.target().path)


async def test_missing_bucket_fails_before_any_body(s3_endpoint) -> None:
    ran = []

    @af.task
    async def never() -> int:
        ran.append(1)
        return 1

    store = "s3://no-such-bucket/x"
    flow = af.Workflow(never(), store=store, storage_options={"client_kwargs": {"endpoint_url": s3_endpoint}})
    with pytest.raises(af.StorageError, match=r"store s3://no-such-bucket/x: bucket 'no-such-bucket' does not exist"):
        await flow.run()
    assert ran == []


async def test_unreachable_endpoint_fails_fast_before_any_body(s3_endpoint) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ran = []

    @af.task
    async def never() -> int:
        ran.append(1)
        return 1

    flow = af.Workflow(
        never(),
        store=f"s3://{S3_BUCKET}/x",
        storage_options={"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}},
    )
    t0 = time.monotonic()
    with pytest.raises(af.StorageError, match=rf"store s3://{S3_BUCKET}/x cannot be used: .*127.0.0.1:{port}"):
        await flow.run()
    assert time.monotonic() - t0 < 20  # no retry storm
    assert ran == []


async def test_denied_credentials_fail_before_any_body(s3_endpoint, monkeypatch) -> None:
    import moto.settings

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the server now checks keys
    ran = []

    @af.task
    async def never() -> int:
        ran.append(1)
        return 1

    flow = af.Workflow(
        never(),
        store=f"s3://{S3_BUCKET}/denied-{uuid.uuid4().hex}",
        storage_options={"client_kwargs": {"endpoint_url": s3_endpoint}, "key": "nobody", "secret": "wrong"},
    )
    with pytest.raises(af.StorageError, match=r"cannot be used: .*(denied|InvalidAccessKeyId|Forbidden|403)"):
        await flow.run()
    assert ran == []


async def test_storage_options_from_the_environment(s3_endpoint, monkeypatch) -> None:
    import json

    from asyncflow._settings import from_environment

    opts = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    settings = from_environment({"ASYNCFLOW_STORAGE_OPTIONS": json.dumps(opts), "ASYNCFLOW_STORE": "s3://b/p"})
    assert settings.storage_options == opts
    assert settings.store == "s3://b/p"
