"""Settings from the environment, options checked once, and host logging untouched."""

from __future__ import annotations

import pytest
import structlog

import asyncflow as af
from asyncflow._settings import from_environment

pytestmark = pytest.mark.anyio


def test_environment_variables_set_defaults() -> None:
    s = from_environment(
        {
            "ASYNCFLOW_STORE": "memory://env",
            "ASYNCFLOW_MAX_CONCURRENCY": "7",
            "ASYNCFLOW_FAIL_FAST": "true",
            "ASYNCFLOW_LIMITS": '{"db": 2}',
        },
    )
    assert (s.store, s.max_concurrency, s.fail_fast, s.limits) == ("memory://env", 7, True, {"db": 2})


async def test_settings_are_workflow_defaults(mem_store) -> None:
    @af.task
    async def x() -> int:
        return 1

    af.settings.store = mem_store
    af.settings.max_concurrency = 3
    flow = af.Workflow(x())
    assert flow.option("max_concurrency") == 3
    await flow.run()
    assert flow.target().path.startswith(mem_store)


async def test_a_run_does_not_reconfigure_the_hosts_logging(store) -> None:
    @af.task
    async def quiet() -> int:
        return 1

    before = structlog.get_config()
    await af.Workflow(quiet(), store=store).run()
    assert structlog.get_config() == before


async def test_workflow_options_are_checked_when_the_workflow_is_made() -> None:
    @af.task
    async def one() -> int:
        return 1

    with pytest.raises(af.ParameterError, match="max_concurrency must be a positive integer, got 0"):
        af.Workflow(one(), max_concurrency=0)
    with pytest.raises(af.ParameterError, match="max_concurrency must be a positive integer, got True"):
        af.Workflow(one(), max_concurrency=True)
    with pytest.raises(af.ParameterError, match=r"limits must be .*got \{'db': -1\}"):
        af.Workflow(one(), limits={"db": -1})
    with pytest.raises(
        af.ParameterError, match="unknown workflow option 'max_concurency'.*did you mean 'max_concurrency'"
    ):
        af.Workflow(one(), max_concurency=3)
    with pytest.raises(af.ParameterError, match="fail_fast must be true or false"):
        await af.Workflow(one(), store="memory://x").run(fail_fast="yes")


async def test_a_bad_setting_is_named_when_a_run_resolves_it(mem_store) -> None:
    @af.task
    async def one() -> int:
        return 1

    af.settings.max_concurrency = "lots"  # type: ignore[assignment]
    with pytest.raises(af.ParameterError, match="af.settings option max_concurrency must be a positive integer"):
        await af.Workflow(one(), store=mem_store).run()


def test_bad_environment_values_name_the_variable_and_the_form() -> None:
    cases = {
        "ASYNCFLOW_MAX_CONCURRENCY": ("many", "a positive integer"),
        "ASYNCFLOW_LIMITS": ("{db: 4}", "a JSON object of pool names to positive integers"),
        "ASYNCFLOW_STORAGE_OPTIONS": ("[1, 2]", "a JSON object"),
        "ASYNCFLOW_FAIL_FAST": ("maybe", "true or false"),
        "ASYNCFLOW_MAX_THREADS": ("0", "a positive integer"),
    }
    for var, (raw, form) in cases.items():
        with pytest.raises(af.ParameterError) as e:
            from_environment({var: raw})
        assert f"environment variable {var}={raw!r}: expected {form}" in str(e.value)
