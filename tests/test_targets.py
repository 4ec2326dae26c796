"""Targets: layout, formats, atomic writes, corrupt and unencodable outputs, bulk completion checks."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import fsspec
import msgspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import asyncflow as af

from .conftest import raw_exists, raw_read, raw_write

pytestmark = pytest.mark.anyio


@dataclasses.dataclass
class Point:
    x: int
    when: dt.datetime


class Model(msgspec.Struct):
    name: str
    weights: list[float]


async def test_target_path_layout(any_store) -> None:
    @af.task
    async def points(n: int, label: str = "a/b") -> list[int]:
        return list(range(n))

    node = points(n=3)
    flow = af.Workflow(node, store=any_store)
    target = flow.target(node)
    assert target is not None
    assert target.name.startswith("label=a_b,n=3-") and target.name.endswith(".json")
    assert len(target.name.split("-")[-1]) == len("0123456789abcdef.json")
    assert target.path.rstrip("/").endswith(f"/points/{target.name}")
    await flow.run()
    assert msgspec.json.decode(await raw_read(target.path)) == [0, 1, 2]


async def test_node_target_uses_settings_store_and_task_store(tmp_path) -> None:
    @af.task(store=str(tmp_path / "own"))
    async def mine() -> int:
        return 1

    @af.task
    async def theirs() -> int:
        return 2

    assert mine().target.path.startswith(str(tmp_path / "own" / "mine"))
    assert theirs().target.path.startswith(os.path.join(af.settings.store, "theirs"))


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("json", [Point(1, dt.datetime(2024, 1, 2, 3, 4, 5))]),
        ("msgpack", Model("m", [0.5, 1.5])),
        ("pickle", {1, 2, 3}),
        ("text", "héllo"),
        ("bytes", b"\x00\x01"),
    ],
)
async def test_formats_round_trip_to_the_return_annotation(any_store, fmt: str, value: Any) -> None:
    typ = type(value) if not isinstance(value, list) else list[Point]

    @af.task(format=fmt)
    async def produce() -> typ:  # type: ignore[valid-type]
        return value

    flow = af.Workflow(produce(), store=any_store)
    await flow.run()
    flow2 = af.Workflow(produce(), store=any_store)  # a fresh workflow reads the target
    assert await flow2.output() == value
    assert flow.target().name.endswith(
        "." + {"json": "json", "msgpack": "msgpack", "pickle": "pkl", "text": "txt", "bytes": "bin"}[fmt]
    )


async def test_custom_format(any_store) -> None:
    class Csv:
        name = "csv"
        ext = "csv"

        def dumps(self, value: Any, type: Any) -> bytes:
            return "\n".join(",".join(map(str, row)) for row in value).encode()

        def loads(self, data: bytes, type: Any) -> Any:
            return [[int(x) for x in line.split(",")] for line in data.decode().splitlines()]

    assert isinstance(Csv(), af.Format)

    @af.task(format=Csv())
    async def table() -> list:
        return [[1, 2], [3, 4]]

    flow = af.Workflow(table(), store=any_store)
    await flow.run()
    assert flow.target().name.endswith(".csv")
    assert await af.Workflow(table(), store=any_store).output() == [[1, 2], [3, 4]]


async def test_persist_false_writes_nothing_and_keeps_the_value_for_this_workflow(store) -> None:
    @af.task(persist=False)
    async def temp() -> int:
        return 5

    flow = af.Workflow(temp(), store=store)
    assert flow.target() is None
    await flow.run()
    assert not os.path.exists(store)
    assert await flow.output() == 5
    with pytest.raises(af.TargetError, match="not persisted"):
        await af.Workflow(temp(), store=store).output()
    assert str(await flow.preview()) == "└─ temp PENDING"


class Opaque:
    """Not JSON, but picklable (a module-level class)."""


async def test_unencodable_output_names_task_type_and_a_format_and_writes_nothing(any_store) -> None:
    @af.task
    async def weird() -> Any:
        return Opaque()

    flow = af.Workflow(weird(), store=any_store)
    with pytest.raises(af.FlowFailed) as e:
        await flow.run()
    err = e.value.__cause__
    assert isinstance(err, af.SerializationError)
    assert err.task == "weird"
    assert err.type_name.endswith("Opaque")
    assert err.suggestion == "pickle"
    assert "format='pickle'" in str(err)
    assert e.value.result["weird"].attempts == 1  # not retried
    assert (await flow.preview())["weird"] == "PENDING"


async def test_corrupt_target_raises_target_error_with_path_and_format(any_store) -> None:
    @af.task
    async def numbers() -> list[int]:
        return [1, 2]

    @af.task
    async def summed(xs: list[int] = af.depends(numbers)) -> int:
        return sum(xs)

    flow = af.Workflow(summed(), store=any_store)
    await flow.run(numbers())
    target = flow.target(numbers())
    await raw_write(target.path, b"\x00garbage{")
    with pytest.raises(af.TargetError) as e:
        await flow.output(numbers())
    assert e.value.path == target.path
    assert e.value.format == "json"
    assert target.path in str(e.value)
    # replaced outside asyncflow: no record describes it, so a run rebuilds it rather than read it
    assert (await flow.explain(numbers())) == {numbers().id: ["target changed outside asyncflow"]}
    await flow.run()
    assert await flow.output() == 3 and await flow.output(numbers()) == [1, 2]


async def test_target_corrupted_in_place_fails_the_run_naming_it(store) -> None:
    @af.task
    async def numbers() -> list[int]:
        return [1, 2]

    @af.task
    async def summed(xs: list[int] = af.depends(numbers)) -> int:
        return sum(xs)

    flow = af.Workflow(summed(), store=store)
    await flow.run(numbers())
    path = flow.target(numbers()).path
    st = os.stat(path)
    with open(path, "r+b") as f:  # bit rot: same file, same size, same times, other bytes
        f.write(b"\x00" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(af.FlowFailed) as f:
        await flow.run()
    assert isinstance(f.value.__cause__, af.TargetError) and path in str(f.value.__cause__)


async def test_missing_target_output_raises_target_error(store) -> None:
    @af.task
    async def never() -> int:
        return 1

    with pytest.raises(af.TargetError, match="no target at .* run the flow"):
        await af.Workflow(never(), store=store).output()


async def test_complete_nodes_are_not_run_again(any_store) -> None:
    runs = []

    @af.task
    async def count(i: int) -> int:
        runs.append(i)
        return i

    nodes = [count(i=i) for i in range(20)]
    first = await af.Workflow(nodes, store=any_store).run()
    second = await af.Workflow(nodes, store=any_store).run()
    assert first.ran == 20 and second.skipped == 20 and second.ran == 0
    assert sorted(runs) == list(range(20))


class CountingFS(MemoryFileSystem):
    """A blocking (non-memory) fsspec filesystem that counts listings and single-file checks."""

    protocol = "countingfs"
    root_marker = "/"
    calls: list[str] = []

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        CountingFS.calls.append("ls")
        return super().ls(path, detail=detail, **kwargs)

    def info(self, path: str, **kwargs: Any) -> Any:
        CountingFS.calls.append("info")
        return super().info(path, **kwargs)


fsspec.register_implementation("countingfs", CountingFS, clobber=True)


async def test_checking_many_nodes_lists_the_task_folder_once() -> None:
    @af.task
    async def listed_item(i: int) -> int:
        return i

    store = "countingfs://bulk"
    nodes = [listed_item(i=i) for i in range(300)]
    await af.Workflow(nodes, store=store).run()
    CountingFS.calls.clear()
    result = await af.Workflow(nodes, store=store).run()
    assert result.skipped == 300
    assert CountingFS.calls == ["ls", "ls"]  # its record segments, then its targets: nothing per node
    preview = await af.Workflow(nodes, store=store).preview()
    assert set(preview.by_id().values()) == {"COMPLETE"}


async def test_failing_body_leaves_no_target(any_store) -> None:
    @af.task
    async def fails() -> int:
        raise RuntimeError("x")

    flow = af.Workflow(fails(), store=any_store)
    with pytest.raises(af.FlowFailed):
        await flow.run()
    assert not await raw_exists(flow.target().path)


@pytest.mark.slow
def _writing_into(pid: int, folder: Any) -> bool:
    """Whether process `pid` has a file open for writing in `folder`: a temporary file, or an
    unnamed one (O_TMPFILE: `/proc/{pid}/fd` shows `{folder}/#{inode} (deleted)`)."""
    if any(n.startswith(".~asyncflow-tmp-") for n in os.listdir(folder)):
        return True
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link.startswith(f"{folder}/") for link in links)


def test_killed_process_mid_write_leaves_no_complete_looking_target(tmp_path) -> None:
    store = tmp_path / "store"
    script = tmp_path / "big.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncflow as af
            @af.task(format="bytes")
            async def big() -> bytes:
                return b"x" * (400 * 1024 * 1024)
            af.run(big(), store={str(store)!r})
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)])
    folder = store / "big"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for the file being written, then kill mid-write
            if folder.exists() and _writing_into(proc.pid, folder):
                break
            if proc.poll() is not None:
                pytest.fail("the writer finished before it could be killed")
            time.sleep(0.001)
        else:
            pytest.fail("no file was being written")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    names = os.listdir(folder)
    assert all(n.startswith(".~asyncflow-tmp-") for n in names)  # no target (none at all with O_TMPFILE)

    @af.task(name="big", format="bytes")
    async def big_again() -> bytes:
        return b"small"

    assert af.run(big_again(), store=str(store)) == b"small"  # the temp file never counted as complete


async def test_parquet_format_round_trips_a_dataframe(any_store) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")

    @af.task(format="parquet")
    async def frame() -> pd.DataFrame:
        return pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})

    flow = af.Workflow(frame(), store=any_store)
    await flow.run()
    assert flow.target().name.endswith(".parquet")
    back = await af.Workflow(frame(), store=any_store).output()
    pd.testing.assert_frame_equal(back, pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))


async def test_json_suggests_parquet_for_a_dataframe(store) -> None:
    pd = pytest.importorskip("pandas")

    @af.task
    async def frame() -> pd.DataFrame:
        return pd.DataFrame({"a": [1]})

    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow(frame(), store=store).run()
    assert e.value.__cause__.suggestion == "parquet"
