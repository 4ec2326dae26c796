"""Plain functions in worker processes (`executor="process"`)."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

import asyncflow as af

pytestmark = pytest.mark.anyio


@af.task(executor="process")
def pid_and_square(x: int) -> list[int]:
    return [os.getpid(), x * x]


async def test_process_executor_runs_the_body_in_another_process(store) -> None:
    flow = af.Workflow([pid_and_square(x=3)], store=store)
    await flow.run()
    pid, sq = await flow.output()
    assert sq == 9
    assert pid != os.getpid()


@af.task(persist=False)
async def pe_make_lock() -> Any:
    return threading.Lock()


@af.task(executor="process")  # (a process body is imported by name: at module level)
def pe_use(lock: Any = af.depends(pe_make_lock)) -> int:
    return 1


async def test_process_executor_rejects_unpicklable_arguments(store) -> None:
    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow(pe_use(), store=store).run()
    cause = e.value.__cause__
    assert isinstance(cause, af.ParameterError)
    assert "'pe_use' runs in a process, but its arguments cannot be pickled" in str(cause)


@af.task(executor="process")
def returns_a_lock() -> Any:
    return threading.Lock()


async def test_process_executor_names_an_unpicklable_output(store) -> None:
    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow(returns_a_lock(), store=store).run()
    cause = e.value.__cause__
    assert isinstance(cause, af.SerializationError)
    assert cause.task == "returns_a_lock" and "lock" in cause.type_name.lower()
    assert "cannot be pickled to come back" in str(cause)
    assert cause.suggestion is None and "return a picklable value (or run it in a thread)" in str(cause)
    assert "format=" not in str(cause)  # no format helps: the output comes back pickled first
