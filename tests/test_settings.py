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
