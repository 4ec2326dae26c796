"""Fingerprint records describe the very target present (issue 15): racing writers of other
versions, hand edits, resets, crashes between a target and its record, and stores written by
asyncflow 0.1, on local disk, in memory and on S3."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import fsspec
import msgspec
import pytest

import asyncflow as af
from asyncflow import _local, _records
from asyncflow._store import get_store
from asyncflow.testing import fault

from .conftest import raw_write

pytestmark = pytest.mark.anyio

STORES = ["local", "memory", "s3"]


@pytest.fixture(params=STORES)
def each_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    if request.param == "memory":
        return request.getfixturevalue("mem_store")  # type: ignore[no-any-return]
    return request.getfixturevalue("s3_store")  # type: ignore[no-any-return]


def _ls(fs: Any, path: str) -> list[str]:
    return fs.ls(path, detail=False, refresh=True) if fs.protocol[0] == "s3" else fs.ls(path, detail=False)  # type: ignore[no-any-return]


def _segments(fs: Any, path: str) -> list[str]:
    return [p for p in _ls(fs, path) if p.endswith(".seg")]  # (not the lock file)


def _fs(url: str) -> tuple[Any, str]:
    options = dict(af.settings.storage_options) if url.startswith("s3://") else {}
    return fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)  # type: ignore[no-any-return]


async def _entries(url: str, task: str) -> dict[str, Any]:
    """The record entries of a task folder, by target name (read as asyncflow reads them)."""
    store = get_store(url, af.settings.storage_options if url.startswith("s3://") else {})
    return dict((await _records.load_entries(store, store.join(task))).entries)


# racing writers ------------------------------------------------------------------------------

RACER = textwrap.dedent(
    """
    import sys, time
    import asyncflow as af

    store, version, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])

    @af.task(version=version)
    def raced(i: int) -> str:
        time.sleep(0.001 * (i % 4))
        return f"{version}:{i}"

    nodes = [raced(i=i) for i in range(16)]
    wrong = 0
    for _ in range(rounds):
        outputs = af.run(nodes, store=store, execution_summary=False)
        wrong += sum(out != f"{version}:{i}" for i, out in enumerate(outputs))
    print("WRONG", wrong)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_two_processes_of_other_versions_racing_serve_only_their_own_outputs(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = request.getfixturevalue("s3_store") if kind == "s3" else str(tmp_path / "store")
    env = {**os.environ, "ASYNCFLOW_EXECUTION_SUMMARY": "false"}  # (with the S3 server's credentials)
    env.pop("ASYNCFLOW_FAULT", None)
    if kind == "s3":
        env["AWS_ENDPOINT_URL_S3"] = af.settings.storage_options["client_kwargs"]["endpoint_url"]
    script = tmp_path / "racer.py"
    script.write_text(RACER)

    def start(version: str, rounds: int) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(script), store, version, str(rounds)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip

    racers = [start("1", 6), start("2", 6)]
    outs = [p.communicate(timeout=180) for p in racers]
    assert [p.returncode for p in racers] == [0, 0], outs
    assert [o.strip().splitlines()[-1] for o, _ in outs] == ["WRONG 0", "WRONG 0"], outs  # while racing, too
    for version in ("1", "2", "1"):  # afterwards: each reader gets its own version's outputs
        proc = start(version, 2)
        out, err = proc.communicate(timeout=120)
        assert out.strip().splitlines()[-1] == "WRONG 0", (out, err)


async def test_a_target_replaced_between_decision_and_read_is_rebuilt(each_store: str) -> None:
    runs: list[int] = []

    @af.task
    async def replaced(i: int) -> int:
        runs.append(i)
        return i

    @af.task
    async def consumer(xs: list[int]) -> int:
        return sum(xs)

    nodes = [replaced(i=i) for i in range(3)]
    flow = af.Workflow(consumer(xs=nodes), store=each_store)
    await flow.run(nodes)
    victim = flow.target(nodes[1]).path
    fs, path = _fs(victim)

    def overwrite(_: str) -> None:  # another writer, after this run decided the targets complete
        fs.pipe_file(path, b"1000")

    runs.clear()
    with fault("after_plan", overwrite):
        await flow.run()
    assert runs == [1]  # the replaced one is rebuilt, not read
    assert await flow.output() == 0 + 1 + 2
    assert await flow.output(nodes[1]) == 1


async def test_a_target_replaced_by_another_version_is_stale_until_rebuilt(each_store: str) -> None:
    @af.task(version="1")
    async def versioned(i: int) -> str:
        return f"v1:{i}"

    nodes = [versioned(i=i) for i in range(20)]
    await af.Workflow(nodes, store=each_store).run()

    @af.task(version="2")
    async def versioned(i: int) -> str:
        return f"v2:{i}"

    nodes = [versioned(i=i) for i in range(20)]
    assert (await af.Workflow(nodes, store=each_store).run()).ran == 20

    @af.task(version="1")
    async def versioned(i: int) -> str:
        return f"v1:{i}"

    nodes = [versioned(i=i) for i in range(20)]
    flow = af.Workflow(nodes, store=each_store)
    explained = await flow.explain()
    assert all("version 2 -> 1" in why for why in explained.values()) and len(explained) == 20
    assert (await flow.run()).ran == 20
    assert [await flow.output(n) for n in nodes] == [f"v1:{i}" for i in range(20)]
    assert (await flow.run()).ran == 0


# targets edited or replaced by hand ----------------------------------------------------------


async def test_a_target_replaced_by_hand_is_stale_and_rebuilt(each_store: str) -> None:
    runs: list[int] = []

    @af.task
    async def handmade(i: int) -> int:
        runs.append(i)
        return i

    nodes = [handmade(i=i) for i in range(3)]
    flow = af.Workflow(nodes, store=each_store)
    await flow.run()
    await raw_write(flow.target(nodes[2]).path, b"42")  # valid JSON, the right type: still not trusted
    assert (await flow.preview(nodes[2]))["handmade[i=2]"] == "STALE"
    assert (await flow.explain(nodes[2])) == {"handmade[i=2]": ["target changed outside asyncflow"]}
    runs.clear()
    await flow.run()
    assert runs == [2] and await flow.output(nodes[2]) == 2
    assert (await flow.run()).ran == 0


async def test_a_target_edited_in_place_is_noticed(store: str) -> None:
    """pandas' `to_csv`, `open(path, "w")`: the same file (inode), other bytes or times."""

    @af.task
    async def edited() -> int:
        return 1

    flow = af.Workflow(edited(), store=store)
    await flow.run()
    path = flow.target().path
    time.sleep(0.02)  # (later than the filesystem's timestamp granularity, as any hand edit is)
    with open(path, "r+b") as f:  # same size, same inode
        f.write(b"7")
    assert (await flow.explain()) == {"edited": ["target changed outside asyncflow"]}
    assert (await flow.run()).ran == 1 and await flow.output() == 1


# reset ----------------------------------------------------------------------------------------


async def test_reset_leaves_no_record_of_the_targets_it_deleted(each_store: str) -> None:
    @af.task
    async def resettable(i: int) -> int:
        return i

    nodes = [resettable(i=i) for i in range(20)]
    flow = af.Workflow(nodes, store=each_store)
    await flow.run()
    names = {flow.target(n).path.rsplit("/", 1)[1] for n in nodes}
    assert set(await _entries(each_store, "resettable")) == names
    deleted = await flow.reset(resettable)
    assert len(deleted) == 20
    assert (await _entries(each_store, "resettable")) == {}
    assert (await flow.run()).ran == 20


async def test_reset_of_one_node_keeps_the_others_records(each_store: str) -> None:
    @af.task
    async def kept(i: int) -> int:
        return i

    nodes = [kept(i=i) for i in range(3)]
    flow = af.Workflow(nodes, store=each_store)
    await flow.run()
    assert await flow.reset(nodes[0]) == [flow.target(nodes[0]).path]
    assert len(await _entries(each_store, "kept")) == 2
    assert (await flow.run()).ran == 1


# a crash between a target and its record ------------------------------------------------------


async def test_a_failure_between_target_and_record_never_leaves_a_trusted_target_without_one(
    each_store: str,
) -> None:
    runs: list[int] = []

    @af.task
    async def torn(i: int) -> int:
        runs.append(i)
        return i

    flow = af.Workflow(torn(i=1), store=each_store)
    with fault("before_record", OSError("power cut")), pytest.raises(af.FlowFailed):
        await flow.run()
    assert (await _entries(each_store, "torn")) == {}  # the target is there, its entry in the segments is not
    runs.clear()
    await flow.run()
    carries_its_record = not each_store.startswith("memory://")  # an extended attribute, S3 metadata
    assert runs == ([] if carries_its_record else [1])
    assert await flow.output() == 1


def test_without_extended_attributes_or_o_tmpfile_the_segments_alone_tell(tmp_path: Path, monkeypatch) -> None:
    def refused(*args: object) -> None:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", refused)
    monkeypatch.setattr(_local, "_linkat", [None])  # the portable way: temporary file, then rename

    runs: list[int] = []

    @af.task
    async def portable(i: int) -> int:
        runs.append(i)
        return i

    nodes = [portable(i=i) for i in range(3)]
    store = str(tmp_path / "store")
    assert af.run(nodes, store=store) == [0, 1, 2]
    assert sorted(os.listdir(tmp_path / "store" / "portable"))[0] == ".asyncflow"  # no temporary left
    assert len(os.listdir(tmp_path / "store" / "portable")) == 4
    assert af.run(nodes, store=store) == [0, 1, 2] and sorted(runs) == [0, 1, 2]  # trusted from the segments


# compaction -----------------------------------------------------------------------------------


async def test_many_segments_are_compacted_into_one_and_nothing_is_forgotten(each_store: str) -> None:
    @af.task
    async def compacted(i: int) -> int:
        return i

    n = _records.COMPACT_AFTER + 4
    for i in range(n):  # one run per node: one segment each
        await af.Workflow(compacted(i=i), store=each_store).run()
    fs, path = _fs(f"{each_store}/compacted/.asyncflow")
    assert len(_segments(fs, path)) == n
    nodes = [compacted(i=i) for i in range(n)]
    assert (await af.Workflow(nodes, store=each_store).run()).ran == 0  # a folder scan, which compacts
    left = _segments(fs, path)
    assert len(left) == 1
    assert len(await _entries(each_store, "compacted")) == n
    assert (await af.Workflow(nodes, store=each_store).run()).ran == 0


@pytest.mark.parametrize("kind", ["local", "memory"])  # (where a write waits on a thread, and where none does)
async def test_nodes_published_together_share_segments(kind: str, tmp_path: Path, mem_store: str) -> None:
    each_store = str(tmp_path / "store") if kind == "local" else mem_store

    @af.task
    async def together(i: int) -> int:
        return i

    nodes = [together(i=i) for i in range(300)]
    assert (await af.Workflow(nodes, store=each_store, max_concurrency=50).run()).ran == 300
    fs, path = _fs(f"{each_store}/together/.asyncflow")
    assert len(_segments(fs, path)) <= 300 // 10  # group commit, also where a write never waits (memory)
    assert len(await _entries(each_store, "together")) == 300


# the previous layout --------------------------------------------------------------------------


async def test_a_store_of_the_previous_layout_is_rebuilt_once_and_tidied(each_store: str) -> None:
    runs: list[int] = []

    @af.task
    async def legacy(i: int) -> int:
        runs.append(i)
        return i

    nodes = [legacy(i=i) for i in range(20)]
    flow = af.Workflow(nodes, store=each_store)
    if "://" not in each_store:
        os.makedirs(f"{each_store}/legacy")
    for n in nodes:  # as asyncflow 0.1 left them: the target, and a record file beside it
        target = flow.target(n)
        await raw_write(target.path, msgspec.json.encode(n.params["i"]))
        folder, name = target.path.rsplit("/", 1)
        record = f"{folder}/.{name}.afrec-{'a' * 12}-{'b' * 12}-{'c' * 16}"
        await raw_write(record, b'{"node_id": "old"}')
    assert set(map(tuple, (await flow.explain()).values())) == {("no fingerprint record",)}
    assert (await flow.run()).ran == 20  # rebuilt once: 0.1's records are never trusted
    assert (await flow.run()).ran == 0
    fs, path = _fs(f"{each_store}/legacy")
    names = [p.rsplit("/", 1)[1] for p in _ls(fs, path)]
    assert not [n for n in names if ".afrec-" in n]  # their record files are gone
    assert sorted(runs) == list(range(20))
