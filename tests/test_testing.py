"""`asyncflow.testing`: what users get to test their own pipelines."""

from __future__ import annotations

import os
import subprocess
import sys

import anyio
import pytest

import asyncflow as af
from asyncflow import events, testing

pytestmark = pytest.mark.anyio


@af.task
async def t_square(i: int) -> int:
    return i * i


@af.task
async def t_total(parts: list[int]) -> int:
    return sum(parts)


async def test_memory_stores_are_fresh_and_empty() -> None:
    a, b = testing.memory_store(), testing.memory_store()
    assert a != b and a.startswith("memory://")
    await af.Workflow(t_square(i=2), store=a).run()
    result = await af.Workflow(t_square(i=2), store=b).run()
    assert result.ran == 1  # nothing of `a` is seen in `b`


async def test_the_event_recorder_keeps_every_event_in_order() -> None:
    recorder = testing.EventRecorder()
    flow = af.Workflow(
        t_total(parts=[t_square(i=i) for i in range(3)]), store=testing.memory_store(), on_event=recorder
    )
    await flow.run()
    assert recorder.kinds()[-1] == "FlowFinished"
    assert sorted(recorder.node_ids()[:3]) == ["t_square[i=0]", "t_square[i=1]", "t_square[i=2]"]
    assert recorder.node_ids()[-1].startswith("t_total[")
    assert len(recorder.of(events.TaskSucceeded)) == len(recorder.of("TaskSucceeded")) == 4
    recorder.clear()
    await flow.run()
    assert recorder.kinds() == ["TaskSkipped", "FlowFinished"]


async def test_instant_retries_record_the_backoff_without_waiting() -> None:
    tries = []

    @af.task(retries=3, retry_delay=30)
    async def flaky() -> int:
        tries.append(1)
        if len(tries) < 4:
            raise ConnectionError("not yet")
        return 1

    with anyio.fail_after(5), testing.instant_retries() as delays:
        await af.Workflow(flaky(), store=testing.memory_store()).run()
    assert delays == [30.0, 60.0, 120.0]


async def test_a_fault_point_raises_where_it_is_armed_and_only_in_its_block(tmp_path) -> None:
    store = str(tmp_path / "s")
    with testing.fault("before_publish", OSError("disk gone")) as seen, pytest.raises(af.FlowFailed) as e:
        await af.Workflow(t_square(i=3), store=store).run()
    assert seen == ["t_square[i=3]"]
    assert isinstance(e.value.__cause__, OSError)
    folder = tmp_path / "s" / "t_square"
    assert not folder.exists() or os.listdir(folder) == []  # nothing written
    result = await af.Workflow(t_square(i=3), store=store).run()  # disarmed after the block
    assert result.ran == 1


async def test_a_fault_point_may_call_back(tmp_path) -> None:
    reached: list[str] = []
    with testing.fault("after_plan", reached.append):
        await af.Workflow(t_square(i=4), store=str(tmp_path / "s")).run()
    assert reached == ["t_square[i=4]"]
    with pytest.raises(ValueError, match="unknown fault point 'before_body'"), testing.fault("before_body", OSError):
        pass


def test_fault_environment_kills_a_child_process_at_its_point(tmp_path) -> None:
    script = tmp_path / "pipe.py"
    script.write_text(
        "import sys, asyncflow as af\n"
        "@af.task\nasync def leaf(i: int) -> int:\n    return i\n"
        "af.run([leaf(i=i) for i in range(5)], store=sys.argv[1], execution_summary=False)\n"
    )
    env = {**os.environ, **testing.fault_environment("after_publish", "kill", nth=2)}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "s")], env=env, capture_output=True, text=True)
    assert proc.returncode == -9
    assert "FAULT after_publish leaf[i=" in proc.stdout
    with pytest.raises(ValueError, match="'kill' or 'raise'"):
        testing.fault_environment("after_publish", "explode")
