"""Change detection: code, version, input and external changes make exactly the right nodes stale."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog

import asyncflow as af
from asyncflow._fingerprint import code_hash

from .conftest import raw_write

pytestmark = pytest.mark.anyio


def test_code_hash_ignores_comments_docstrings_blank_lines_and_formatting() -> None:
    @af.task
    async def a(x: int) -> int:
        return x + 1

    @af.task
    async def b(x: int) -> int:
        """A docstring."""

        # a comment
        return (x +
                1)  # fmt: skip

    @af.task(version="3", retries=2)
    async def c(x: int) -> int:
        return x + 2

    assert code_hash(a) == code_hash(b)
    assert code_hash(a) != code_hash(c)


def _counter() -> tuple[list[str], Any]:
    ran: list[str] = []
    return ran, ran.append


async def test_body_change_makes_the_task_stale_and_rebuilds_what_changed_below(any_store) -> None:
    ran, note = _counter()

    @af.task
    async def raw_data(n: int = 3) -> list[int]:
        note("raw_data")
        return list(range(n))

    @af.task(name="fit")
    async def fit(data: list[int] = af.depends(raw_data)) -> int:
        note("fit")
        return sum(data)

    @af.task
    async def report(total: int = af.depends("fit")) -> str:
        note("report")
        return f"total={total}"

    flow = af.Workflow(report(), store=any_store)
    await flow.run()
    assert ran == ["raw_data", "fit", "report"]

    @af.task(name="fit")
    async def fit(data: list[int] = af.depends(raw_data)) -> int:  # noqa: F811 - the edited version
        note("fit")
        return sum(data) * 10  # a real change

    ran.clear()
    tree = str(await af.Workflow(report(), store=any_store).preview())
    assert "fit[n=3] STALE (code of fit changed)" in tree
    assert "report[n=3] PENDING (upstream pending)" in tree
    assert "raw_data[n=3] COMPLETE" in tree
    explained = await af.Workflow(report(), store=any_store).explain()
    assert explained == {"report[n=3]": ["upstream pending"], "fit[n=3]": ["code of fit changed"]}
    await af.Workflow(report(), store=any_store).run()
    assert ran == ["fit", "report"]
    assert await af.Workflow(report(), store=any_store).output() == "total=30"


async def test_identical_output_stops_the_rebuild_there(any_store) -> None:
    ran, note = _counter()

    @af.task(name="up")
    async def up() -> list[int]:
        note("up")
        return [1, 2, 3]

    @af.task
    async def down(xs: list[int] = af.depends("up")) -> int:
        note("down")
        return len(xs)

    await af.Workflow(down(), store=any_store).run()

    @af.task(name="up")
    async def up() -> list[int]:  # noqa: F811 - the edited version
        note("up")
        return [x for x in (1, 2, 3)]  # new code, same bytes

    ran.clear()
    result = await af.Workflow(down(), store=any_store).run()
    assert ran == ["up", "down"][:1]
    assert result["down"].status == "skipped"


async def test_version_bump(any_store) -> None:
    ran, note = _counter()

    @af.task(name="model", version="1")
    async def model(k: int = 2) -> int:
        note("model")
        return k

    await af.Workflow(model(), store=any_store).run()

    @af.task(name="model", version="2")
    async def model(k: int = 2) -> int:
        note("model")
        return k

    assert await af.Workflow(model(), store=any_store).explain() == {"model[k=2]": ["version 1 -> 2"]}
    assert "STALE (version 1 -> 2)" in str(await af.Workflow(model(), store=any_store).preview())
    await af.Workflow(model(), store=any_store).run()
    assert ran == ["model", "model"]


async def test_rerun_stale_false_keeps_stale_outputs(store) -> None:
    @af.task(name="kept", version="1")
    async def kept() -> int:
        return 1

    await af.Workflow(kept(), store=store).run()

    @af.task(name="kept", version="2")
    async def kept() -> int:
        return 1

    flow = af.Workflow(kept(), store=store, rerun_stale=False)
    assert str(await flow.preview()) == "└─ kept STALE (kept) (version 1 -> 2)"
    assert (await flow.run()).ran == 0
    assert (await flow.run()).ran == 0
    assert (await af.Workflow(kept(), store=store).run()).ran == 1
    assert (await flow.preview())["kept"] == "COMPLETE"


async def test_parameters_are_identity_not_staleness(store) -> None:
    @af.task
    async def p(n: int) -> int:
        return n

    await af.Workflow(p(n=1), store=store).run()
    assert await af.Workflow(p(n=2), store=store).explain() == {"p[n=2]": ["no target"]}
    assert await af.Workflow(p(n=1), store=store).explain() == {}


async def test_external_input_change_reruns_its_consumers(tmp_path) -> None:
    ran, note = _counter()
    src = tmp_path / "a.csv"
    src.write_text("1,2\n")

    @af.task
    def count(path: str = af.external(str(src))) -> int:
        note("count")
        with open(path) as f:
            return len(f.read().split(","))

    flow = af.Workflow(count(), store=str(tmp_path / "s"))
    await flow.run()
    await flow.run()
    assert ran == ["count"]
    src.write_text("1,2,3\n")
    assert await flow.explain() == {"count": [f"external {src} changed"]}
    await flow.run()
    assert ran == ["count", "count"]
    assert await flow.output() == 3


async def test_check_dependencies_false_judges_a_node_by_itself(store) -> None:
    @af.task(name="base", version="1")
    async def base() -> int:
        return 1

    @af.task
    async def top(b: int = af.depends("base")) -> int:
        return b + 1

    await af.Workflow(top(), store=store).run()

    @af.task(name="base", version="2")
    async def base() -> int:  # noqa: F811 - the edited version
        return 5

    relaxed = af.Workflow(top(), store=store, check_dependencies=False)
    assert (await relaxed.preview())["top"] == "COMPLETE"
    strict = af.Workflow(top(), store=store)
    assert (await strict.preview())["top"] == "PENDING"
    await strict.run()
    assert await strict.output() == 6


async def test_missing_record_makes_the_node_stale_with_a_warning(store) -> None:
    @af.task
    async def lone() -> int:
        return 1

    flow = af.Workflow(lone(), store=store)
    await flow.run()

    folder = os.path.join(store, "lone")
    shutil.rmtree(os.path.join(folder, ".asyncflow"))  # the folder's record segments
    os.removexattr(flow.target().path, "user.asyncflow")  # and the record the target carries
    with structlog.testing.capture_logs() as logs:
        assert str(await flow.preview()) == "└─ lone STALE (no fingerprint record)"
    assert [e["path"] for e in logs if e["log_level"] == "warning"] == [flow.target().path]
    result = await flow.run()
    assert result.ran == 1
    assert (await flow.preview())["lone"] == "COMPLETE"


async def test_unreadable_record_is_rebuilt_with_one_warning_naming_the_path(store) -> None:
    @af.task(persist=False)
    async def kid(i: int) -> int:
        return i

    @af.task
    async def parent() -> int:
        return await kid(i=1)

    flow = af.Workflow(parent(), store=store)
    await flow.run()
    target = flow.target()
    segments = Path(target.path).parent / ".asyncflow"
    (path,) = (str(p) for p in segments.iterdir())
    await raw_write(path, b"{not msgpack")
    os.setxattr(target.path, "user.asyncflow", b"\xff garbage")
    with structlog.testing.capture_logs() as logs:
        tree = await flow.preview()
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [w["path"] for w in warnings] == [path, target.path]  # the segment, then the target rebuilt
    assert tree["parent"] == "STALE"
    assert (await flow.explain())["parent"] == ["no fingerprint record"]
    assert (await flow.run()).ran == 2  # the parent, and the in-memory child it awaits


async def test_dynamic_child_code_change_makes_the_child_stale(any_store) -> None:
    ran, note = _counter()

    @af.task(name="child")
    async def child(x: int) -> int:
        note("child")
        return x * 2

    @af.task
    async def parent(n: int) -> int:
        note("parent")
        return sum(await af.gather(*[child(x=i) for i in range(n)]))

    await af.Workflow(parent(n=2), store=any_store).run()
    assert sorted(ran) == ["child", "child", "parent"]

    @af.task(name="child")
    async def child(x: int) -> int:  # noqa: F811 - the edited version
        note("child")
        return x * 3

    ran.clear()
    flow = af.Workflow(parent(n=2), store=any_store)
    tree = str(await flow.preview())
    assert "parent[n=2] PENDING (upstream pending)" in tree
    assert "child[x=1] STALE (code of child changed)" in tree
    await flow.run()
    assert sorted(ran) == ["child", "child", "parent"]
    assert await flow.output() == 3


async def test_dynamic_child_rebuilt_to_the_same_output_keeps_the_parent(store) -> None:
    ran, note = _counter()

    @af.task(name="leafy", version="1")
    async def leafy(x: int) -> int:
        note("leafy")
        return x

    @af.task
    async def holder() -> int:
        note("holder")
        return await leafy(x=4)

    await af.Workflow(holder(), store=store).run()

    @af.task(name="leafy", version="2")
    async def leafy(x: int) -> int:  # noqa: F811
        note("leafy")
        return x

    ran.clear()
    result = await af.Workflow(holder(), store=store).run()
    assert ran == ["leafy"]
    assert result["holder"].status == "skipped"


PIPELINE = """
import sys
import asyncflow as af

LOG = sys.argv[2]

def note(name):
    with open(LOG, "a") as f:
        f.write(name + "\\n")

@af.task(version="1")
def get_data(n: int = 4) -> list[int]:
    note("get_data")
    return list(range(n))

@af.task
def fit(data: list[int] = af.depends(get_data)) -> int:
    # the model
    note("fit")
    return sum(data)

@af.task
def report(total: int = af.depends(fit), path: str = af.external(sys.argv[3])) -> str:
    note("report")
    with open(path) as f:
        return f.read().strip() + str(total)

if __name__ == "__main__":
    af.run(report(), store=sys.argv[1])
"""


class Pipeline:
    """A pipeline file edited between separate processes, with a log of which bodies ran."""

    def __init__(self, tmp: Path) -> None:
        self.file = tmp / "pipeline.py"
        self.store = tmp / "store"
        self.log = tmp / "ran.log"
        self.input = tmp / "label.txt"
        self.input.write_text("total=")
        self.file.write_text(PIPELINE)

    def edit(self, old: str, new: str) -> None:
        text = self.file.read_text()
        assert old in text
        self.file.write_text(text.replace(old, new))

    def run(self) -> list[str]:
        self.log.write_text("")
        subprocess.run(
            [sys.executable, str(self.file), str(self.store), str(self.log), str(self.input)],
            check=True,
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "ASYNCFLOW_EXECUTION_SUMMARY": "false"},
        )
        return self.log.read_text().split()


@pytest.mark.slow
def test_edits_between_processes_rebuild_exactly_what_they_affect(tmp_path) -> None:
    p = Pipeline(tmp_path)
    assert p.run() == ["get_data", "fit", "report"]
    assert p.run() == []

    p.edit("# the model", "# the model, summed")  # a comment
    p.edit('    note("fit")\n', '\n    note("fit")  # noted\n\n')  # blank lines, another comment
    assert p.run() == []

    p.edit("return sum(data)", "return sum(data) * 2")  # a body edit that changes the output
    assert p.run() == ["fit", "report"]

    p.edit("return sum(data) * 2", "return 2 * sum(data)")  # new code, byte-identical output
    assert p.run() == ["fit"]

    p.edit('@af.task(version="1")', '@af.task(version="2")')  # a version bump, same data
    assert p.run() == ["get_data"]

    p.input.write_text("sum=")  # the external input changes
    assert p.run() == ["report"]
