"""Single flight across processes (issue 16): processes sharing a store build each node once; a
lease whose holder died is taken over; `single_flight="process"` turns the cross-process part off.
Real processes, on local disk and on S3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import asyncflow as af

pytestmark = pytest.mark.anyio

FLOW = textwrap.dedent(
    """
    import os, sys, time
    import asyncflow as af

    store, log, mode = sys.argv[1], sys.argv[2], sys.argv[3]

    def note(what):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{what}\\n".encode())
        os.close(fd)

    @af.task
    async def sf_leaf(i: int) -> int:
        note(f"leaf {i} {os.getpid()}")
        time.sleep(0.002)
        return i

    @af.task
    async def sf_pair(i: int, a: int = af.depends(sf_leaf)) -> int:
        note(f"pair {i} {os.getpid()}")
        return a * 10

    @af.task
    def sf_slow(k: int) -> str:  # a thread body: the loop keeps renewing the lease
        note(f"slow {k} {os.getpid()}")
        time.sleep(float(os.environ.get("SF_SLEEP", "0.5")))
        return f"slow {k}"

    if mode == "fan":
        nodes = [sf_pair(i=i) for i in range(20)]  # 40 nodes: 20 leaves, 20 pairs
        out = af.run(nodes, store=store, execution_summary=False)
        assert out == [10 * i for i in range(20)], out
    else:
        out = af.run(sf_slow(k=1), store=store, execution_summary=False, single_flight=mode)
        assert out == "slow 1", out
    print("OK")
    """
)


def _env(store: str, request: pytest.FixtureRequest, **extra: str) -> dict[str, str]:
    env = {**os.environ, "ASYNCFLOW_EXECUTION_SUMMARY": "false", **extra}
    env.pop("ASYNCFLOW_FAULT", None)
    if store.startswith("s3://"):
        env["AWS_ENDPOINT_URL_S3"] = af.settings.storage_options["client_kwargs"]["endpoint_url"]
    return env


def _store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("s3_store") if kind == "s3" else str(tmp_path / "store")  # type: ignore[no-any-return]


def _start(tmp_path: Path, store: str, log: Path, mode: str, env: dict[str, str]) -> subprocess.Popen[str]:
    script = tmp_path / "flow.py"
    if not script.exists():
        script.write_text(FLOW)
    return subprocess.Popen([sys.executable, str(script), store, str(log), mode], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_four_processes_build_a_shared_flow_once(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store, log = _store(kind, tmp_path, request), tmp_path / "ran.log"
    env = _env(store, request)
    procs = [_start(tmp_path, store, log, "fan", env) for _ in range(4)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    ran = [" ".join(line.split()[:2]) for line in _lines(log)]
    assert sorted(ran) == sorted({*ran}) and len(ran) == 40, ran  # 40 bodies in all, each once


def _wait_for(log: Path, prefix: str, count: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while sum(line.startswith(prefix) for line in _lines(log)) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{prefix!r} never reached {count} in {_lines(log)}")
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_killed_holder_s_lease_is_taken_over(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store, log = _store(kind, tmp_path, request), tmp_path / "ran.log"
    lease = "2"  # seconds (S3 adds one: its timestamps are whole seconds)
    holder = _start(tmp_path, store, log, "store", _env(store, request, SF_SLEEP="60", ASYNCFLOW_LEASE_SECONDS=lease))
    try:
        _wait_for(log, "slow 1", 1)  # the holder is in the body, holding the lease
        waiter = _start(
            tmp_path, store, log, "store", _env(store, request, SF_SLEEP="0", ASYNCFLOW_LEASE_SECONDS=lease)
        )
        time.sleep(4)
        assert waiter.poll() is None and len(_lines(log)) == 1  # it waits while the holder lives (renewed)
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=10)
        _, err = waiter.communicate(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate(timeout=10)
    assert waiter.returncode == 0, err
    assert len(_lines(log)) == 2  # the waiter took over and built it
    again = subprocess.run([sys.executable, str(tmp_path / "flow.py"), store, str(log), "store"],
                           env=_env(store, request), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert len(_lines(log)) == 2  # and what it built is complete for everyone


@pytest.mark.slow
def test_single_flight_process_lets_each_process_build(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store, log = str(tmp_path / "store"), tmp_path / "ran.log"
    env = _env(store, request, SF_SLEEP="1")
    procs = [_start(tmp_path, store, log, "process", env) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(_lines(log)) == 2  # both built it: no lease across processes


async def test_a_bad_single_flight_value_is_named(store: str) -> None:
    @af.task
    async def sf_one() -> int:
        return 1

    with pytest.raises(af.ParameterError, match=r"single_flight must be .*\"store\".*\"process\".*got 'disk'"):
        await af.Workflow(sf_one(), store=store, single_flight="disk").run()


def test_two_event_loops_of_one_process_build_a_node_once(tmp_path: Path) -> None:
    import threading

    ran: list[int] = []

    @af.task(name="sf_threads")
    def sf_threads() -> int:
        ran.append(1)
        time.sleep(0.3)
        return 7

    outs: list[int] = []

    def one() -> None:
        outs.append(af.run(sf_threads(), store=str(tmp_path / "store"), execution_summary=False))

    threads = [threading.Thread(target=one) for _ in range(2)]  # af.run from threads: two loops
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outs == [7, 7] and ran == [1]  # record locks are per process: the lease is per loop too


async def test_an_s3_lease_is_taken_over_by_one_process_only(s3_store: str) -> None:
    from asyncflow._store import get_store

    store = get_store(s3_store, af.settings.storage_options)
    path = store.join("sf_takeover", ".asyncflow", "x.lease")
    first = await store.create_exclusive(path, b"dead holder")
    assert first is not None and await store.create_exclusive(path, b"another") is None  # one creator
    seen = await store.age(path)
    assert seen is not None
    _, etag = seen
    taker = await store.replace_if(path, b"taker 1", etag)  # both saw the dead holder's lease...
    late = await store.replace_if(path, b"taker 2", etag)  # ...only the first takes it over
    assert taker is not None and late is None
    assert await store.replace_if(path, b"taker 1", taker) is not None  # its holder renews it
