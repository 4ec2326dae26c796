"""One asyncflow error, never a bare group: whatever goes wrong, the caller can `except af.<Error>`
and read what happened (exit statuses for the command line)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import asyncflow as af
from asyncflow import events, testing

from ..conftest import BACKEND

pytestmark = pytest.mark.anyio


class Abort(BaseException):
    """A user's BaseException subclass (not an Exception)."""


@pytest.mark.parametrize("code", ["SystemExit(0)", "SystemExit(3)", "Abort('stop')"])
@pytest.mark.parametrize("executor", ["async", "thread"])
async def test_a_body_raising_a_base_exception_is_a_task_failure(store, code: str, executor: str) -> None:
    name = f"quits_{executor}_{''.join(c for c in code if c.isalnum())}"  # one task per case

    def make() -> BaseException:
        return eval(code)  # a fresh exception each time (a shared one would keep its traceback alive)

    if executor == "async":

        @af.task(name=name)
        async def quits() -> int:
            raise make()

    else:

        @af.task(name=name)
        def quits() -> int:
            raise make()

    @af.task(name=f"fine_{name}")
    async def fine(i: int) -> int:
        return i

    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow([quits(), fine(i=1), fine(i=2)], store=store).run()
    assert repr(e.value.__cause__) == repr(eval(code))
    assert (e.value.result.failed, e.value.result.ran) == (1, 2)  # the other branches went on


def _script(tmp: Path, body: str) -> Path:
    path = tmp / "pipe.py"
    path.write_text(textwrap.dedent(body))
    return path


def _cli(tmp: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asyncflow", *args], capture_output=True, text=True, cwd=tmp,
                          timeout=60, **kwargs)  # fmt: skip


@pytest.mark.parametrize("code", [0, 4])
def test_the_cli_exits_1_when_a_body_calls_sys_exit(tmp_path: Path, code: int) -> None:
    script = _script(
        tmp_path,
        f"""
        import sys, asyncflow as af

        @af.task
        async def quits() -> int:
            sys.exit({code})
    """,
    )
    proc = _cli(tmp_path, "run", f"{script}:quits", "--store", str(tmp_path / "s"))
    assert proc.returncode == 1, proc.stderr
    assert "SystemExit" in proc.stderr


def test_ctrl_c_cancels_the_run_cleanly_prints_what_finished_and_exits_130(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    script = _script(
        tmp_path,
        f"""
        import time, anyio, asyncflow as af

        @af.task
        async def quick(i: int) -> int:
            return i

        @af.task
        async def slow(i: int) -> int:
            open({str(marker)!r}, "a").write("x")
            await anyio.sleep(60)
            return i

        @af.task
        def slow_thread(i: int) -> int:  # a thread cannot be stopped: the process does not wait for it
            open({str(marker)!r}, "a").write("x")
            time.sleep(60)
            return i

        def flow():
            return [quick(i=i) for i in range(3)] + [slow(i=i) for i in range(3)] + [slow_thread(i=0)]
    """,
    )
    proc = subprocess.Popen([sys.executable, "-m", "asyncflow", "run", f"{script}:flow", "--store",
                             str(tmp_path / "s"), "--max-concurrency", "10"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    seen = []
    while sum(line.startswith("ran quick") for line in seen) < 3:  # progress lines, one per node done
        seen.append(proc.stderr.readline())
    deadline = time.monotonic() + 30
    while (not marker.exists() or len(marker.read_text()) < 4) and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 130, err
    assert "interrupted: 3 ran" in err and "4 running were cancelled" in err
    assert sorted(os.listdir(tmp_path / "s" / "quick"))[-3:] and not (tmp_path / "s" / "slow").exists()
    assert not (tmp_path / "s" / "slow_thread").exists()


def test_a_body_raising_keyboard_interrupt_stops_the_run_with_it(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        import sys, anyio, asyncflow as af

        @af.task
        async def interrupted() -> int:
            raise KeyboardInterrupt

        for backend in ("asyncio", "trio"):
            flow = af.Workflow(interrupted(), store="memory://ki", execution_summary=False)
            try:
                anyio.run(flow.run, backend=backend)
            except KeyboardInterrupt:
                print("KeyboardInterrupt on", backend)
    """,
    )
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "s")], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.stdout.split("\n")[:2] == ["KeyboardInterrupt on asyncio", "KeyboardInterrupt on trio"], proc.stderr


async def test_several_unreadable_task_folders_are_one_storage_error(tmp_path: Path) -> None:
    @af.task
    async def left() -> int:
        return 1

    @af.task
    async def right() -> int:
        return 2

    @af.task
    async def both(a: int = af.depends(left), b: int = af.depends(right)) -> int:
        return a + b

    store = tmp_path / "s"
    store.mkdir()
    (store / "left").write_text("a file where a folder should be")
    (store / "right").write_text("a file where a folder should be")
    with pytest.raises(af.StorageError) as e:
        await af.Workflow(both(), store=str(store)).run()
    assert e.value.path.startswith((str(store / "left"), str(store / "right")))  # (a few nodes: probed)
    assert "Not a directory" in str(e.value) and e.value.path in str(e.value)


async def test_upstream_targets_deleted_after_planning_are_a_target_error_naming_the_path(store) -> None:
    @af.task
    async def up(i: int) -> int:
        return i

    @af.task
    async def down(parts: list[int]) -> int:
        return sum(parts)

    ups = [up(i=i) for i in range(4)]
    await af.Workflow(ups, store=store).run()
    flow = af.Workflow(down(parts=ups), store=store)
    paths = [flow.target(u).path for u in ups]

    def delete_all(_: str) -> None:
        for p in paths:
            os.unlink(p)

    with testing.fault("after_plan", delete_all), pytest.raises(af.FlowFailed) as e:
        await flow.run()
    cause = e.value.__cause__
    assert isinstance(cause, af.TargetError)
    assert cause.path in paths and cause.path in str(cause)


EVENT_KINDS = ["TaskStarted", "TaskSucceeded", "TaskSkipped", "TaskFailed", "TaskRetrying", "FlowFinished"]


@pytest.mark.parametrize("kind", EVENT_KINDS)
async def test_an_on_event_callback_that_raises_fails_the_run_naming_it(store, kind: str) -> None:
    tries: list[int] = []

    @af.task
    async def done_before() -> int:
        return 0

    @af.task(retries=1)
    async def flaky() -> int:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("once")
        return 1

    @af.task
    async def broken() -> int:
        raise ValueError("always")

    await af.Workflow(done_before(), store=store).run()

    def listener(event: events.Event) -> None:
        if type(event).__name__ == kind:
            raise RuntimeError(f"listener broke on {kind}")

    flow = af.Workflow([done_before(), flaky(), broken()], store=store, on_event=listener)
    with testing.instant_retries(), pytest.raises(af.FlowFailed) as e:
        await flow.run()
    assert f"on_event callback {listener.__qualname__} raised RuntimeError: listener broke on {kind}" in str(e.value)
    assert isinstance(e.value.__cause__, RuntimeError)
    assert await flow.output(flaky()) == 1  # the run's own work was done and published


async def test_a_callback_that_raises_is_named_by_workflow_multi_too(store) -> None:
    @af.task
    async def per_flow(n: int) -> int:
        return n

    def listener(event: events.Event) -> None:
        raise RuntimeError("listener broke")

    multi = af.WorkflowMulti(per_flow, {"n": [1, 2]}, store=store, on_event=listener)
    with pytest.raises(af.FlowFailed) as e:
        await multi.run()
    assert f"on_event callback {listener.__qualname__} raised RuntimeError: listener broke" in str(e.value)
    assert isinstance(e.value.__cause__, RuntimeError)


async def test_an_async_callback_that_raises_is_named_too(mem_store) -> None:
    @af.task
    async def one() -> int:
        return 1

    async def listener(event: events.Event) -> None:
        raise LookupError("gone")

    with pytest.raises(af.FlowFailed, match="on_event callback .*listener raised LookupError: gone"):
        await af.Workflow(one(), store=mem_store, on_event=listener).run()


async def test_outputs_no_format_can_encode_are_serialization_errors_with_an_honest_suggestion(store) -> None:
    loop: list[Any] = []
    loop.append(loop)
    deep: list[Any] = []
    inner = deep
    for _ in range(100_000):
        inner.append([])
        inner = inner[0]

    @af.task
    async def cyclic() -> list:
        return loop

    @af.task
    async def too_deep() -> list:
        return deep

    @af.task(format="pickle")
    async def a_function() -> Any:
        return lambda: 1

    for node, suggestion in ((cyclic(), "pickle"), (too_deep(), None), (a_function(), None)):
        with pytest.raises(af.FlowFailed) as e:
            await af.Workflow(node, store=store).run()
        cause = e.value.__cause__
        assert isinstance(cause, af.SerializationError), cause
        assert cause.suggestion == suggestion
        if suggestion is None:
            assert "no built-in format can encode it" in str(cause)
        assert not (Path(store) / node.task.name).exists() or not os.listdir(Path(store) / node.task.name)


@pytest.mark.parametrize("name", ["x" * 256, "a/b", "a\0b", "ends\n", "", ".hidden", "..", "é"])
def test_task_names_that_cannot_be_a_folder_fail_at_decoration(name: str) -> None:
    async def body() -> int:
        return 1

    with pytest.raises(af.ParameterError, match="task name .* must be 1 to 255"):
        af.task(name=name)(body)
    af.task(name="x" * 255)(body)  # the longest that fits


def test_a_bad_environment_value_never_breaks_the_import_but_stops_the_run(tmp_path: Path) -> None:
    env = {**os.environ, "ASYNCFLOW_MAX_CONCURRENCY": "abc"}
    imported = subprocess.run([sys.executable, "-c", "import asyncflow"], env=env, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    script = _script(
        tmp_path,
        """
        import asyncflow as af

        @af.task
        async def one() -> int:
            return 1
    """,
    )
    proc = _cli(tmp_path, "run", f"{script}:one", "--store", str(tmp_path / "s"), env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "asyncflow: error: environment variable ASYNCFLOW_MAX_CONCURRENCY='abc': expected a positive integer"
    )
    api = subprocess.run([sys.executable, "-c", f"import asyncflow as af, sys; sys.path.insert(0, {str(tmp_path)!r})\n"
                          "import pipe\ntry:\n    af.run(pipe.one())\nexcept af.ParameterError as e:\n    print(e)"],
                         env=env, capture_output=True, text=True)  # fmt: skip
    assert "ASYNCFLOW_MAX_CONCURRENCY='abc'" in api.stdout, api.stderr


@pytest.mark.parametrize("kind", EVENT_KINDS)
@pytest.mark.parametrize("raised", ["SystemExit(2)", "Abort('x')"])
async def test_an_on_event_callback_raising_a_base_exception_is_named_too(store, kind: str, raised: str) -> None:
    tries: list[int] = []

    @af.task(name=f"done_first_{kind}")
    async def done_first() -> int:
        return 0

    @af.task(retries=1, name=f"flaky_again_{kind}")
    async def flaky_again() -> int:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("once")
        return 1

    @af.task(name=f"broken_again_{kind}")
    async def broken_again() -> int:
        raise ValueError("always")

    await af.Workflow(done_first(), store=store).run()

    def listener(event: events.Event) -> None:
        if type(event).__name__ == kind:
            raise eval(raised)

    flow = af.Workflow([done_first(), flaky_again(), broken_again()], store=store, on_event=listener)
    with testing.instant_retries(), pytest.raises(af.FlowFailed) as e:
        await flow.run()
    assert f"on_event callback {listener.__qualname__} raised" in str(e.value)
    assert repr(e.value.__cause__) == repr(eval(raised))


async def test_a_background_run_whose_callback_raises_ends_and_says_so(mem_store) -> None:
    import anyio

    @af.task
    async def bg_one() -> int:
        return 1

    def listener(event: events.Event) -> None:
        raise SystemExit(1)

    async with anyio.create_task_group() as tg:
        handle = af.Workflow(bg_one(), store=mem_store).start(tg, on_event=listener)
        with anyio.fail_after(5):
            await handle.wait()
    assert handle.status == "failed" and "on_event callback" in str(handle.error)


@pytest.mark.parametrize("raised", ["GeneratorExit()", "SystemExit(3)"])
async def test_odd_base_exceptions_of_a_body_are_its_failure(mem_store, raised: str) -> None:
    @af.task(name=f"odd_{''.join(c for c in raised if c.isalnum())}")
    async def odd() -> int:
        raise eval(raised)

    @af.task(name=f"sibling_{''.join(c for c in raised if c.isalnum())}")
    async def sibling() -> int:
        return 1

    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow([odd(), sibling()], store=mem_store).run()
    assert type(e.value.__cause__).__name__ == raised.split("(")[0] and e.value.result.ran == 1


@pytest.mark.skipif(BACKEND != "asyncio", reason="a CancelledError nobody asked for is an asyncio thing")
async def test_a_cancelled_error_a_body_raises_by_itself_is_its_failure(mem_store) -> None:
    import asyncio

    @af.task(persist=False)
    async def victim() -> int:
        future = asyncio.get_running_loop().create_future()
        future.cancel()  # cancelled by someone else
        await future  # raises CancelledError here, while nobody cancels the run
        return 0

    @af.task(persist=False)
    async def bystander(i: int) -> int:
        await asyncio.sleep(0.01)
        return i

    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow([victim(), *[bystander(i=i) for i in range(3)]], store=mem_store).run()
    assert isinstance(e.value.__cause__, asyncio.CancelledError)
    assert e.value.result.ran == 3 and e.value.result.cancelled == 0  # the others went on


def test_a_process_body_that_exits_fails_alone(tmp_path: Path) -> None:
    (tmp_path / "proc_tasks.py").write_text(
        textwrap.dedent("""
        import sys
        import asyncflow as af

        @af.task(executor="process")
        def quits(code: int) -> int:
            sys.exit(code)

        @af.task(executor="process")
        def works(i: int) -> int:
            return i * 2
    """)
    )
    script = _script(
        tmp_path,
        """
        import anyio, asyncflow as af
        import proc_tasks  # (found through PYTHONPATH, by the worker processes too)

        async def main():
            out = {}
            async def one(name, nodes):
                try:
                    await af.Workflow(nodes, store="memory://p", execution_summary=False).run()
                    out[name] = "ok"
                except af.FlowFailed as e:
                    out[name] = type(e.__cause__).__name__
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, "quitter", [proc_tasks.quits(code=3)])
                tg.start_soon(one, "innocent", [proc_tasks.works(i=i) for i in range(4)])
            await one("next", [proc_tasks.works(i=i) for i in range(10, 14)])
            print(sorted(out.items()))

        if __name__ == "__main__":
            anyio.run(main)
    """,
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}  # the worker processes import the tasks too
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=env)  # fmt: skip
    assert proc.stdout.strip() == "[('innocent', 'ok'), ('next', 'ok'), ('quitter', 'SystemExit')]", proc.stderr


def test_a_thread_body_raising_keyboard_interrupt_fails_and_the_process_exits(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        import asyncflow as af

        @af.task
        def interrupts() -> int:
            raise KeyboardInterrupt

        try:
            af.run(interrupts(), store="memory://k", execution_summary=False)
        except af.FlowFailed as e:
            print("failed:", type(e.__cause__).__name__)
    """,
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert proc.stdout.strip() == "failed: RuntimeError" and proc.returncode == 0, proc.stderr


def test_bad_stores_and_environment_values_are_clear_errors(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        import asyncflow as af

        @af.task
        async def one() -> int:
            return 1
    """,
    )
    for store, words in (("nosuch://x", "fsspec knows no protocol 'nosuch'"), ("gs://b/x", "needs gcsfs")):
        proc = _cli(tmp_path, "run", f"{script}:one", "--store", store)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        with pytest.raises(af.ParameterError, match=words):
            af.run(_bare_store(store))
    deep = "[" * 30_000 + "]" * 30_000
    for env in ({"ASYNCFLOW_FAULT": "after_plan:kill:x"}, {"ASYNCFLOW_STORAGE_OPTIONS": '{"a": ' + deep + "}"}):
        proc = subprocess.run([sys.executable, "-c", "import asyncflow"], capture_output=True, text=True,
                              env={**os.environ, **env})  # fmt: skip
        assert proc.returncode == 0, proc.stderr


def _bare_store(store: str) -> Any:
    @af.task(name="bare_store_probe")
    async def probe() -> int:
        return 1

    return af.Workflow(probe(), store=store)
