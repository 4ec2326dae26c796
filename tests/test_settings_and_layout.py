"""Settings from the environment, the public surface, the layering, and host logging untouched."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import structlog

import asyncflow as af
from asyncflow._settings import Settings, _from_env

pytestmark = pytest.mark.anyio

PACKAGE = Path(af.__file__).parent

LAYERS = {
    "_errors": 0, "_settings": 0, "events": 0, "_identity": 0, "_context": 0, "_faults": 0,
    "_formats": 1, "_node": 1, "_task": 1,
    "_store": 2, "_targets": 2,
    "_graph": 3, "_fingerprint": 3,
    "_dask": 4, "_execute": 4, "_pool": 4, "_scheduler": 4,
    "_render": 5, "_select": 5, "_export": 5, "_stats": 5, "_report": 5, "_background": 5, "_workflow": 5, "_map": 5,
    "__init__": 6, "__main__": 6, "cli": 6,
}  # fmt: skip


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in dir(af) if not n.startswith("_")}
    assert sorted(af.__all__) == sorted(public - {"annotations"})
    assert "TaskStarted" not in af.__all__  # events live in af.events only
    assert af.TaskFailed is not af.events.TaskFailed


def test_modules_import_only_from_lower_layers() -> None:
    for path in PACKAGE.glob("*.py"):
        mod = path.stem
        tree = ast.parse(path.read_text())
        top_level = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
        for node in top_level:
            if node.level == 1 and node.module:
                target = node.module.split(".")[0]
                assert LAYERS[target] <= LAYERS[mod], f"{mod} imports {target} (a higher layer)"
                if LAYERS[target] == LAYERS[mod]:
                    assert target != mod


def test_environment_variables_set_defaults() -> None:
    s = _from_env(
        Settings(),
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
