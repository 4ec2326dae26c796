"""Bad input fails early and clearly: parameters, cycles, unserialisable outputs."""

from __future__ import annotations

import os

import anyio
import pytest

import asyncflow as af

pytestmark = pytest.mark.anyio


async def test_bad_parameters_fail_before_anything_runs_or_is_written(store) -> None:
    ran = []

    @af.task
    async def fit(alpha: float, n: int = 3) -> float:
        ran.append(1)
        return alpha * n

    with pytest.raises(af.ParameterError, match="parameter 'alpha' expects float, got 'high'"):
        await af.Workflow([fit(alpha=1.0), fit(alpha="high")], store=store).run()
    assert ran == []
    assert not os.path.exists(store)

    @af.task
    async def spawner() -> float:
        return await fit(alpha=0.5, n="many")  # a dynamic child bound badly: fails at the spawn site

    with pytest.raises(af.FlowFailed) as e:
        await af.Workflow(spawner(), store=store).run()
    assert isinstance(e.value.__cause__, af.ParameterError)
    assert "spawner failed" in str(e.value)
    assert ran == []


async def test_cycles_raise_with_their_path_and_never_hang(store) -> None:
    @af.task(name="cyc_x")
    async def x(v: int = af.depends("cyc_y")) -> int:
        return v

    @af.task(name="cyc_y")
    async def y(v: int = af.depends("cyc_x")) -> int:
        return v

    with pytest.raises(af.CycleError) as e:
        x()
    assert e.value.path == ["cyc_x", "cyc_y", "cyc_x"]

    @af.task
    async def a(i: int) -> int:
        return await b(i=i)

    @af.task
    async def b(i: int) -> int:
        return await a(i=i)

    with anyio.fail_after(10), pytest.raises(af.FlowFailed) as f:
        await af.Workflow(a(i=1), store=store).run()
    assert isinstance(f.value.__cause__, af.CycleError)
    assert f.value.__cause__.path == ["b[i=1]", "a[i=1]", "b[i=1]"]


async def test_unserialisable_output_is_not_retried_and_writes_nothing(store) -> None:
    tries = []

    @af.task(retries=3)
    async def lock() -> object:
        tries.append(1)
        return anyio.Lock()

    flow = af.Workflow(lock(), store=store)
    with pytest.raises(af.FlowFailed) as e:
        await flow.run()
    assert isinstance(e.value.__cause__, af.SerializationError)
    assert tries == [1]
    assert not os.path.exists(os.path.join(store, "lock"))
