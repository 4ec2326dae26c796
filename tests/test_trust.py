"""Never a wrong result (API.md section 10): identity, names, code fingerprints and inputs."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

import asyncflow as af

pytestmark = pytest.mark.anyio


# one node, one identity, one id ----------------------------------------------------------------


@af.task
async def echo(a: Any = None, b: Any = None) -> str:
    return repr((a, b))


def test_values_json_would_blur_are_different_nodes() -> None:
    groups = [
        [float("nan"), float("inf"), float("-inf"), None],
        [(1, 2), [1, 2], {1, 2}, frozenset({1, 2})],
        [b"ab", "YWI="],
        [dt.datetime(2024, 1, 1), "2024-01-01T00:00:00", dt.date(2024, 1, 1), "2024-01-01"],
        [1, 1.0, True, "1"],
        [{1: "one"}, {"1": "one"}],
        [{"$set": ["x", "y"]}, {"x", "y"}, {"$tuple": [1]}, (1,), {"__node__": "ab"}],  # keys that read as tags
        [[leaf_for_ids(i=1), 5], [leaf_for_ids(i=1), 6], {"k": leaf_for_ids(i=1)}],  # values holding nodes
        [Mapping(a={1, 2}), Mapping(a=[1, 2]), {"a": [1, 2]}],  # a dict subclass tags what it holds too
    ]
    for values in groups:
        nodes = [echo(a=v) for v in values]
        assert len({n.key for n in nodes}) == len(values), values
        assert len({n.id for n in nodes}) == len(values), [n.id for n in nodes]
        assert len({n.file_stem() for n in nodes}) == len(values)


@af.task
async def leaf_for_ids(i: int) -> int:
    return i


class Mapping(dict):  # type: ignore[type-arg]
    pass


def test_a_string_that_cannot_be_encoded_is_a_parameter_error() -> None:
    with pytest.raises(af.ParameterError, match="parameter 'a' = .* cannot be part of a node's identity"):
        echo(a="\udcff.csv")  # a file name decoded with surrogateescape


def test_ids_are_unambiguous_and_plain_values_read_as_before() -> None:
    one, two = echo(a="x, b=y", b="z"), echo(a="x", b="y, b=z")
    assert one.id == 'echo[a="x, b=y", b=z]'
    assert two.id == 'echo[a=x, b="y, b=z"]'
    assert echo(a="a b", b="data.csv").id == "echo[a=a b, b=data.csv]"  # nothing to misread: bare
    for misread in ["1", "True", "None", "nan", "-inf", " lead", "trail ", "[1]", "(x)", "2024-01-01", "a'b", ""]:
        assert echo(a=misread).id.startswith('echo[a="'), misread
    assert echo(a=(1, "x")).id == 'echo[a=(1, "x"), b=None]'
    assert echo(a=[1, "x"]).id == 'echo[a=[1,"x"], b=None]'  # plain JSON: as ids always showed it
    assert echo(a="two\nlines").id == 'echo[a="two\\nlines", b=None]'  # one id, one line
    assert echo(a=bytearray(b"ab")) == echo(a=b"ab") and echo(a=bytearray(b"ab")).id == echo(a=b"ab").id
    assert echo(a=[leaf_for_ids(i=1)]).file_stem().startswith("a=_1_node_")  # target names kept as they were


async def test_four_values_are_four_nodes_with_four_targets(any_store) -> None:
    store = any_store
    values = [float("nan"), float("inf"), float("-inf"), None]
    ran = []

    @af.task(format="msgpack")
    async def keep(x: float | None) -> float | None:
        ran.append(x)
        return x

    flow = af.Workflow([keep(x=v) for v in values], store=store)
    result = await flow.run()
    assert result.ran == 4 and len(ran) == 4
    outputs = await flow.outputs(keep)
    assert set(outputs) == {"keep[x=nan]", "keep[x=inf]", "keep[x=-inf]", "keep[x=None]"}
    assert outputs["keep[x=None]"] is None and outputs["keep[x=-inf]"] == float("-inf")


async def test_nodes_with_one_id_before_are_two_records_now(mem_store) -> None:
    flow = af.Workflow([echo(a="x, b=y", b="z"), echo(a="x", b="y, b=z")], store=mem_store)
    result = await flow.run()
    assert len(result.records) == 2 and result.ran == 2


def test_typed_parameters_are_converted_before_identity() -> None:
    @af.task
    async def scaled(n: int, when: dt.date) -> int:
        return n

    cli = scaled.bind((), {"n": "3", "when": "2024-01-02"}, strict=False)
    assert cli == scaled(n=3, when=dt.date(2024, 1, 2))
    assert cli.id == "scaled[n=3, when=2024-01-02]"


# one name, one task ----------------------------------------------------------------------------


def test_two_different_tasks_cannot_share_a_name() -> None:
    @af.task(name="shared_name")
    async def first() -> int:
        return 1

    with pytest.raises(af.ParameterError) as e:

        @af.task(name="shared_name")
        async def second() -> int:
            return 2

    text = str(e.value)
    assert "two different tasks are named 'shared_name'" in text and "name=" in text
    assert f"{__file__}:" in text and text.count("test_trust.py:") == 2  # both definitions, file:line
    assert first.name == "shared_name" and first.fn.__name__ == "first"  # the first one is untouched


def test_tasks_made_by_a_factory_are_not_merged() -> None:
    def make(scale: int) -> af.Task:
        @af.task
        async def scaled_by(x: int) -> int:
            return x * scale

        return scaled_by

    two = make(2)
    with pytest.raises(af.ParameterError, match="two different tasks are named 'scaled_by'"):
        make(10)
    assert two(x=1).task is two

    def make_named(scale: int) -> af.Task:
        @af.task(name=f"scaled_{scale}")
        async def scaled_by(x: int) -> int:
            return x * scale

        return scaled_by

    assert make_named(2)(x=1) != make_named(10)(x=1)  # the fix the error suggests


def _cell(module: types.ModuleType, code: str) -> None:
    exec(compile(textwrap.dedent(code), f"<cell {module.__name__}>", "exec"), module.__dict__)


async def test_a_notebook_cell_run_again_replaces_the_task_everywhere(store) -> None:
    notebook = types.ModuleType("notebook_kernel")
    sys.modules["notebook_kernel"] = notebook
    try:
        _cell(
            notebook,
            """
            import asyncflow as af

            @af.task
            async def nb_data(n: int = 5) -> list[int]:
                return list(range(n))
        """,
        )
        _cell(
            notebook,
            """
            @af.task
            async def nb_train(xs: list[int] = af.depends(nb_data)) -> int:
                return sum(xs)
        """,
        )
        flow = af.Workflow(notebook.nb_train, store=store)
        await flow.run()
        assert await flow.output() == 10
        held = notebook.nb_data
        _cell(
            notebook,
            """
            @af.task
            async def nb_data(n: int = 5) -> list[int]:
                return [x * 2 for x in range(n)]   # the cell, edited and run again
        """,
        )
        assert notebook.nb_data is held  # the same task, now with the new code
        assert (await flow.preview())["nb_data[n=5]"] == "STALE"  # the nodes bound before see it too
        tree = await af.Workflow(notebook.nb_train, store=store).preview()
        assert tree["nb_data[n=5]"] == "STALE" and tree["nb_train[n=5]"] == "PENDING"
        assert tree.reasons[notebook.nb_data(n=5)] == ["code of nb_data changed"]
        await af.Workflow(notebook.nb_train, store=store).run()
        assert await af.Workflow(notebook.nb_train, store=store).output() == 20
    finally:
        del sys.modules["notebook_kernel"]


async def test_a_helper_cell_run_again_is_seen_by_the_workflow_made_before(store) -> None:
    notebook = types.ModuleType("notebook_helpers")
    sys.modules["notebook_helpers"] = notebook
    try:
        _cell(notebook, "import asyncflow as af\ndef nb_clean(x):\n    return x + 1\n")
        _cell(notebook, "@af.task\nasync def nb_cleaned(x: int) -> int:\n    return nb_clean(x)\n")
        flow = af.Workflow(notebook.nb_cleaned(x=1), store=store)  # made once, used in later cells
        await flow.run()
        assert str(await flow.preview()) == "└─ nb_cleaned[x=1] COMPLETE"
        _cell(notebook, "def nb_clean(x):\n    return x + 2\n")
        tree = await flow.preview()
        assert tree.reasons[notebook.nb_cleaned(x=1)] == ["code of helper nb_clean (<cell notebook_helpers>) changed"]
        await flow.run()
        assert await flow.output() == 3
    finally:
        del sys.modules["notebook_helpers"]


def test_two_dags_cannot_share_a_label_but_a_dag_defined_again_replaces() -> None:
    @af.task
    async def dag_step() -> int:
        return 1

    def define() -> type[af.DAG]:
        class LabelledDAG(af.DAG):
            label = "trust-labelled"
            tasks = [dag_step]

        return LabelledDAG

    first = define()
    again = define()  # the same class defined again (a module reloaded)
    assert af.DAG.get("trust-labelled") is again and first is not again
    with pytest.raises(af.ParameterError, match="two different DAGs are named 'trust-labelled'.*label="):

        class OtherDAG(af.DAG):
            label = "trust-labelled"
            tasks = [dag_step]


# code fingerprints are transitive --------------------------------------------------------------

HELPERS = """
FACTOR = 1

def scale(x):
    return x * FACTOR
"""

PIPE = """
import sys
import asyncflow as af
import helpers

OFFSET = 0

def clean(x):
    return x + 1

class Shifter:
    def shift(self, x):
        return x

@af.task
def total(n: int = 3) -> int:
    return sum(helpers.scale(Shifter().shift(clean(i))) for i in range(n)) + OFFSET
"""


class Project:
    """A pipeline and a helper module in a folder, run by separate `asyncflow` processes."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "project"
        self.dir.mkdir()
        (self.dir / "helpers.py").write_text(HELPERS)
        (self.dir / "pipe.py").write_text(PIPE)
        self.store = tmp / "store"

    def edit(self, file: str, old: str, new: str) -> None:
        path = self.dir / file
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))

    def cli(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "asyncflow", *args, "pipe.py:total", "--store", str(self.store)],
                              cwd=self.dir, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def output(self) -> int:
        code = f"import asyncflow as af, pipe; print(af.run(pipe.total(), store={str(self.store)!r}))"
        out = subprocess.run([sys.executable, "-c", code], cwd=self.dir, capture_output=True, text=True,
                             env={**os.environ, "ASYNCFLOW_EXECUTION_SUMMARY": "false"}, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_editing_what_a_task_calls_makes_it_stale_naming_what_changed(tmp_path: Path) -> None:
    p = Project(tmp_path)
    assert p.output() == 6
    assert p.cli("preview") == "└─ total[n=3] COMPLETE"
    p.edit("pipe.py", "return x + 1", "return x + 2")  # a helper in the same file
    assert p.cli("preview") == "└─ total[n=3] STALE (code of helper clean (pipe.py) changed)"
    assert p.output() == 9
    p.edit("pipe.py", "OFFSET = 0", "OFFSET = 10")  # a module-level constant
    assert p.cli("preview") == "└─ total[n=3] STALE (constant OFFSET (pipe.py) changed)"
    assert p.output() == 19
    p.edit("helpers.py", "return x * FACTOR", "return x * FACTOR * 2")  # another user module
    assert p.cli("preview") == "└─ total[n=3] STALE (code of helper scale (helpers.py) changed)"
    assert p.output() == 28
    p.edit("helpers.py", "FACTOR = 1", "FACTOR = 3")  # a constant that helper reads
    assert "constant FACTOR (helpers.py) changed" in p.cli("preview")
    assert p.output() == 64
    p.edit("pipe.py", "return x\n", "return x + 0\n")  # a method of a class it uses
    assert p.cli("preview") == "└─ total[n=3] STALE (code of class Shifter (pipe.py) changed)"
    p.edit("pipe.py", "def clean(x):", "def clean(x):\n    # a comment only")
    assert p.output() == 64 and p.cli("preview") == "└─ total[n=3] COMPLETE"  # (rebuilt once for Shifter)


def test_closure_values_count_and_installed_code_does_not() -> None:
    from asyncflow._code import code_fingerprint

    def make(limit: int) -> Any:
        async def capped(x: int) -> int:
            import json

            return min(x, limit) + len(json.dumps(x)) + len(os.sep)

        return capped

    a, b, c = code_fingerprint(make(1)), code_fingerprint(make(2)), code_fingerprint(make(1))
    assert a.total != b.total and a.total == c.total
    assert set(a.parts) == {
        "",
        "closure value limit of test_closure_values_count_and_installed_code_does_not.<locals>.make.<locals>.capped",
    }


REACHED = {  # what a task reaches only through a value, a default, a table, a base or a wrapper
    "a helper's default value": (
        {"pipe.py": "K = 1\ndef clean(x, k=K):\n    return x + k\n"},
        "K = 1", "K = 2", "defaults of helper clean (pipe.py)",
    ),
    "a method of a module-level instance": (
        {"pipe.py": "class Cleaner:\n    def clean(self, x):\n        return x + 1\nCLEAN = Cleaner().clean\n"
                    "CLEANER = Cleaner()\ndef clean(x):\n    return CLEANER.clean(x)\n"},
        "x + 1", "x + 2", "class Cleaner (pipe.py)",
    ),
    "a callable instance": (
        {"pipe.py": "class Norm:\n    def __call__(self, x):\n        return x + 1\nclean = Norm()\n"},
        "x + 1", "x + 2", "class Norm (pipe.py)",
    ),
    "a function in a dispatch table": (
        {"pipe.py": "def one(x):\n    return x + 1\nOPS = {'one': one}\ndef clean(x):\n    return OPS['one'](x)\n"},
        "x + 1", "x + 2", "helper one (pipe.py)",
    ),
    "a base class in another module": (
        {"base.py": "class Base:\n    def f(self, x):\n        return x + 1\n",
         "pipe.py": "import base\nclass Child(base.Base):\n    pass\ndef clean(x):\n    return Child().f(x)\n"},
        "x + 1", "x + 2", "class Base (base.py)",
    ),
    "a decorator's wrapper": (
        {"pipe.py": "import functools\ndef plus(f):\n    @functools.wraps(f)\n    def wrapper(x):\n"
                    "        return f(x) + 100\n    return wrapper\n@plus\ndef clean(x):\n    return x\n"},
        "+ 100", "+ 200", "helper clean (pipe.py)",
    ),
    "one of two lambdas": (
        {"pipe.py": "SCALE = lambda x: x * 2\nSHIFT = lambda x: x + 1\ndef clean(x):\n    return SHIFT(SCALE(x))\n"},
        "x + 1", "x + 5", "helper <lambda> (pipe.py:2)",
    ),
}  # fmt: skip


def _fingerprint_of(folder: Path, files: dict[str, str], tag: str) -> dict[str, str]:
    """The code parts of a task calling `pipe.clean`, the modules imported afresh from `folder`."""
    from asyncflow._code import code_fingerprint

    for name, text in files.items():
        (folder / name).write_text(text)
    for name in files:
        sys.modules.pop(name[:-3], None)
    sys.path.insert(0, str(folder))
    try:
        import pipe  # type: ignore[import-not-found]

        async def reaching(x: int) -> int:
            return pipe.clean(x)  # type: ignore[no-any-return]

        return dict(code_fingerprint(reaching).parts)
    finally:
        sys.path.remove(str(folder))
        for name in files:
            sys.modules.pop(name[:-3], None)


@pytest.mark.parametrize("case", list(REACHED))
def test_code_reached_through_values_defaults_tables_bases_and_wrappers_counts(tmp_path: Path, case: str) -> None:
    files, old, new, label = REACHED[case]
    before = _fingerprint_of(tmp_path, files, "before")
    edited = {name: text.replace(old, new) for name, text in files.items()}
    assert edited != files
    after = _fingerprint_of(tmp_path, edited, "after")
    assert [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)] == [label]


@pytest.mark.slow
def test_a_fingerprint_is_the_same_in_every_process_whatever_the_hash_seed(tmp_path: Path) -> None:
    for name, text in {"pipe.py": REACHED["one of two lambdas"][0]["pipe.py"] + "import a.util, b.util\n"
                       "def both(x, accepted={int, float, 'auto', 'none'}):\n"  # a default set of types and strings
                       "    return a.util.clean(x) + b.util.clean(x)\n"}.items():  # fmt: skip
        (tmp_path / name).write_text(text)
    for pkg, body in (("a", "x + 1"), ("b", "x * 10")):  # two helpers of one name in two files of one name
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
        (tmp_path / pkg / "util.py").write_text(f"def clean(x):\n    return {body}\n")
    code = ("from asyncflow._code import code_fingerprint; import pipe\n"
            "async def t(x: int) -> int:\n    return pipe.clean(x) + pipe.both(x)\n"
            "print(code_fingerprint(t).total)")  # fmt: skip

    def total_under(seed: int) -> str:
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                              check=True, env=env).stdout  # fmt: skip

    totals = {total_under(seed) for seed in range(4)}
    assert len(totals) == 1, totals


def test_what_cannot_be_looked_at_counts_by_its_type_and_never_fails_the_task(tmp_path: Path) -> None:
    from asyncflow._code import code_fingerprint

    (tmp_path / "odd.py").write_text(textwrap.dedent("""
        import dataclasses

        @dataclasses.dataclass
        class Cfg:
            a: int
            cache: dict = dataclasses.field(init=False, repr=False)  # never set

        class Registry(type):
            def __getattr__(cls, name):  # answers any name, __code__ and __wrapped__ too
                return f"<{name}>"

        class Settings(metaclass=Registry):
            pass

        class Proxy:
            @property
            def __class__(self):
                raise RuntimeError("working outside of request context")

        class Unsized(list):
            def __len__(self):
                raise RuntimeError("no length")

        request, rows = Proxy(), Unsized([1])

        def helper(x, cfg=Cfg(1)):
            return x + cfg.a + len(Settings.anything) + len(str(type(request))) + len(rows[:])
    """))  # fmt: skip
    sys.path.insert(0, str(tmp_path))
    try:
        import odd  # type: ignore[import-not-found]

        async def reads_odd_things(x: int) -> int:
            return odd.helper(x)  # type: ignore[no-any-return]

        parts = code_fingerprint(reads_odd_things).parts
        assert {"helper helper (odd.py)", "class Settings (odd.py)", "constant request (odd.py)"} <= set(parts)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("odd", None)


# every input counts ----------------------------------------------------------------------------


async def test_inputs_awaited_inside_a_body_are_recorded_and_checked(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    data = tmp_path / "rows.csv"
    data.write_text("1\n2\n")
    runs: list[str] = []

    @af.task
    async def rooted() -> int:
        return 100

    @af.task(version="1")
    async def shifted(x: int) -> int:
        runs.append("shifted")
        return x + 1

    @af.task
    async def reads() -> int:
        runs.append("reads")
        path = await af.external(str(data))  # an input found while running
        with open(path) as f:
            base = sum(int(line) for line in f)
        return base + await shifted(x=await rooted())  # a child whose parameters came from a node

    flow = af.Workflow(reads(), store=store)
    await flow.run()
    assert await flow.output() == 3 + 101
    runs.clear()
    assert (await af.Workflow(reads(), store=store).run()).ran == 0

    data.write_text("5\n")  # the external file is edited
    assert "STALE" in str(await af.Workflow(reads(), store=store).preview())
    await af.Workflow(reads(), store=store).run()
    assert runs == ["reads"] and await flow.output() == 5 + 101

    @af.task(version="2")
    async def shifted(x: int) -> int:  # noqa: F811 - the dynamic child, changed
        runs.append("shifted")
        return x + 2

    runs.clear()
    await af.Workflow(reads(), store=store).run()
    assert sorted(runs) == ["reads", "shifted"] and await flow.output() == 5 + 102


async def test_a_child_given_a_node_as_parameter_is_an_input_with_that_node(any_store) -> None:
    store = any_store

    @af.task(version="1")
    async def base_value() -> int:
        return 10

    @af.task
    async def plus_one(x: int) -> int:
        return x + 1

    @af.task
    async def parent() -> int:
        return await plus_one(x=base_value())  # the child's parameter holds a node

    flow = af.Workflow(parent(), store=store)
    await flow.run()
    assert await flow.output() == 11

    @af.task(version="2")
    async def base_value() -> int:  # noqa: F811 - the node inside the child's parameters, changed
        return 20

    assert "STALE" in str(await af.Workflow(parent(), store=store).preview())
    await af.Workflow(parent(), store=store).run()
    assert await flow.output() == 21


async def test_items_mapped_inside_a_body_are_inputs_too(store) -> None:
    @af.task(version="1")
    async def mapped(x: int) -> int:
        return x

    @af.task
    async def mapper(n: int) -> int:
        return sum([y async for y in af.map(mapped, range(n))])

    await af.Workflow(mapper(n=4), store=store).run()

    @af.task(version="2")
    async def mapped(x: int) -> int:  # noqa: F811
        return x * 10

    await af.Workflow(mapper(n=4), store=store).run()
    assert await af.Workflow(mapper(n=4), store=store).output() == 60


# what a body receives is what a later run reads ------------------------------------------------


async def test_downstream_gets_on_the_first_run_what_later_runs_read(any_store) -> None:
    store = any_store
    seen: list[Any] = []

    @af.task
    async def table() -> dict:
        return {1: "one", 2: (3, 4)}

    @af.task
    async def typed_table() -> dict[int, str]:
        return {1: "one"}

    @af.task
    async def use(t: dict = af.depends(table), u: dict = af.depends(typed_table)) -> int:
        seen.append((t, u))
        return len(t)

    await af.Workflow(use(), store=store).run()
    await af.Workflow(use(), store=store).run(force=[use])
    assert seen[0] == seen[1] == ({"1": "one", "2": [3, 4]}, {1: "one"})


@pytest.mark.parametrize(
    ("fmt", "annotation", "value", "suggestion"),
    [("json", "int", "'x'", None), ("json", "float", "float('nan')", "msgpack"), ("json", "Any", "float('inf')", "msgpack"),
     ("pickle", "int", "'x'", None), ("json", "None", "5", None)],
)  # fmt: skip
async def test_outputs_that_do_not_match_or_cannot_read_back_are_refused(
    store, fmt, annotation, value, suggestion
) -> None:
    namespace: dict[str, Any] = {"af": af, "Any": Any}
    exec(textwrap.dedent(f"""
        @af.task(format={fmt!r}, name="refused_{fmt}_{annotation}")
        async def refused() -> {annotation}:
            return {value}
    """), namespace)  # fmt: skip
    flow = af.Workflow(namespace["refused"](), store=store)
    with pytest.raises(af.FlowFailed) as e:
        await flow.run()
    cause = e.value.__cause__
    assert isinstance(cause, af.SerializationError) and cause.task == f"refused_{fmt}_{annotation}"
    assert cause.suggestion == suggestion
    assert not await flow.target().exists()  # nothing written


# names the user types are checked --------------------------------------------------------------


async def test_force_with_an_unknown_task_is_an_error_naming_the_flow_s_tasks(mem_store) -> None:
    @af.task
    async def leaf_for_force() -> int:
        return 1

    flow = af.Workflow(leaf_for_force(), store=mem_store)
    with pytest.raises(af.ParameterError, match="force names an unknown task 'leef_for_force'; this flow's tasks: "
                       "leaf_for_force; did you mean 'leaf_for_force'"):  # fmt: skip
        await flow.run(force=["leef_for_force"])
    await flow.run(force=["leaf_for_force"])

    @af.task
    async def elsewhere() -> int:
        return 2

    for outside in ("elsewhere", elsewhere, elsewhere()):  # a task of no node of this flow: nothing rebuilt
        with pytest.raises(af.ParameterError, match="force names 'elsewhere', which this run never reached"):
            await flow.run(force=[outside])

    @af.task
    async def maybe_awaits(deep: bool, broken: bool = False) -> int:
        if broken:
            raise ValueError("broken before awaiting its child")
        return await elsewhere() if deep else 0

    with pytest.raises(af.FlowFailed):  # a failure says more than an unreached name
        await af.Workflow(maybe_awaits(deep=True, broken=True), store=mem_store).run(force=["elsewhere"])
    multi = af.WorkflowMulti(maybe_awaits, {"deep": [False, True]}, store=mem_store)
    results = await multi.run(force=["elsewhere"])  # one flow reached it (dynamically): fine
    assert results["deep=True"].ran == 2
    with pytest.raises(af.ParameterError, match="force names 'elsewhere', which this run never reached"):
        await af.WorkflowMulti(maybe_awaits, {"deep": [False]}, store=mem_store).run(force=["elsewhere"])


def test_the_cli_refuses_a_mistyped_force(tmp_path: Path) -> None:
    (tmp_path / "pipe.py").write_text("import asyncflow as af\n@af.task\nasync def leaf() -> int:\n    return 1\n")
    proc = subprocess.run([sys.executable, "-m", "asyncflow", "run", "pipe.py:leaf", "--store", str(tmp_path / "s"),
                           "--force", "leef"], cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (
        proc.returncode == 2
        and "force names an unknown task 'leef'" in proc.stderr
        and "did you mean 'leaf'" in proc.stderr
    )
    assert not (tmp_path / "s").exists()  # refused before anything ran


async def test_workflow_multi_takes_names_a_grid_or_a_list(mem_store) -> None:
    @af.task
    async def gridded(model: str = "lr", scale: int = 1) -> str:
        return f"{model}*{scale}"

    grid = af.WorkflowMulti(gridded, {"model": ["lr", "gb"], "scale": [1, 2]}, store=mem_store)
    assert list(grid.workflows) == ["model=lr,scale=1", "model=lr,scale=2", "model=gb,scale=1", "model=gb,scale=2"]
    await grid.run()
    assert (await grid.output())["model=gb,scale=2"] == "gb*2"
    listed = af.WorkflowMulti(gridded, [{"model": "x"}, {"scale": 3}], store=mem_store)
    assert list(listed.workflows) == ["model=x", "scale=3"]
    named = af.WorkflowMulti(gridded, {"flow1": {"model": "a"}}, store=mem_store)
    assert list(named.workflows) == ["flow1"]
    with pytest.raises(af.ParameterError, match="no parameter 'modle'.*did you mean 'model'"):
        af.WorkflowMulti(gridded, {"modle": ["lr"]})
    with pytest.raises(af.ParameterError, match="ambiguous"):
        af.WorkflowMulti(gridded, {"flow1": {"model": "a"}, "scale": [1]})
    with pytest.raises(af.ParameterError, match="workflow parameter 'scal' is not accepted by gridded"):
        af.WorkflowMulti(gridded, {"flow1": {"scal": 2}})
    tricky = af.WorkflowMulti(gridded, {"model": ["x,scale=1", "x"], "scale": [1, 2]})  # names never collide
    assert list(tricky.workflows) == ['model="x,scale=1",scale=1', 'model="x,scale=1",scale=2', "model=x,scale=1",
                                      "model=x,scale=2"]  # fmt: skip
    with pytest.raises(af.ParameterError, match="the list gives the flow 'model=x' twice"):
        af.WorkflowMulti(gridded, [{"model": "x"}, {"model": "x"}])
    with pytest.raises(
        af.ParameterError, match=r"'model' maps to 'lr', neither.*a grid of one value is \{'model': \['lr'\]\}"
    ):
        af.WorkflowMulti(gridded, {"model": "lr"})


# paths -----------------------------------------------------------------------------------------


async def test_an_existing_file_is_that_file_whatever_characters_it_has(tmp_path: Path) -> None:
    os.chdir(tmp_path)
    Path("sales[2024].csv").write_text("literal")

    @af.task
    async def sales(path: Any = af.external("sales[2024].csv")) -> str:
        return Path(path).read_text() if isinstance(path, str) else "glob:" + ",".join(path)

    store = str(tmp_path / "s")
    flow = af.Workflow(sales(), store=store)
    await flow.run()
    assert await flow.output() == "literal"
    Path("sales2.csv").write_text("other")  # matches the pattern, but the literal file exists
    await flow.run(force_all=True)
    assert await flow.output() == "literal"
    Path("sales[2024].csv").unlink()  # no literal file: now it is a pattern
    await flow.run(force_all=True)
    assert (await flow.output()).startswith("glob:") and "sales2.csv" in await flow.output()
    with pytest.raises(af.MissingInputError):
        await af.Workflow(sales(path=af.external("sales[2024].csv", glob=False)), store=store).run()


async def test_parameter_values_never_make_a_target_look_temporary(tmp_path: Path) -> None:
    @af.task
    async def named(label: str) -> str:
        return label

    store = str(tmp_path / "s")
    labels = ["x.asyncflow-tmp-1-abc-0", ".~asyncflow-tmp-9-9-9-y", "~tilde", ".dot"]
    flow = af.Workflow([named(label=v) for v in labels], store=store)
    assert (await flow.run()).ran == 4
    again = await af.Workflow([named(label=v) for v in labels], store=store).run()
    assert again.skipped == 4  # every target counts as one, not as a temporary file
    for name in os.listdir(tmp_path / "s" / "named"):
        assert not name.startswith(".~")
