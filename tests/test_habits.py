"""What the peers' users reach for (issue 20, API.md section 12): readable ids, kept costly tasks,
d6tflow's reset downstream / upstream, outputLoadAll and one flow of a WorkflowMulti, ordering
without data."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import asyncflow as af

pytestmark = pytest.mark.anyio


# readable ids (pytask's `ids`) ---------------------------------------------------------------


@af.task(id="{model}_{data}")
async def fit_model(model: str, data: str, scale: int = 1) -> str:
    return f"{model} on {data} x{scale}"


async def test_an_id_format_gives_readable_ids_and_selects_by_them(store: str) -> None:
    node = fit_model(model="linear_probability", data="data_0")
    assert node.id == "fit_model[linear_probability_data_0]"
    flow = af.Workflow([node, fit_model(model="logit", data="data_1")], store=store)
    result = await flow.run()
    assert set(result.records) == {"fit_model[linear_probability_data_0]", "fit_model[logit_data_1]"}
    assert await flow.output(node) == "linear_probability on data_0 x1"


async def test_two_nodes_with_one_id_in_a_run_are_a_parameter_error_before_any_body(store: str) -> None:
    flow = af.Workflow([fit_model(model="m", data="d"), fit_model(model="m", data="d", scale=2)], store=store)
    with pytest.raises(af.ParameterError, match=r"id 'fit_model\[m_d\]' is given to two nodes of this run.*'scale': 2"):
        await flow.run()
    assert not Path(store, "fit_model").exists()  # nothing ran
    for scale in (1, 2):  # one at a time (a notebook trying values): fine
        assert (await af.Workflow(fit_model(model="m", data="d", scale=scale), store=store).run()).ran == 1


def test_an_id_format_naming_no_parameter_fails_at_decoration() -> None:
    with pytest.raises(af.ParameterError, match=r"id format '\{modl\}' names 'modl', which is not a parameter"):

        @af.task(id="{modl}")
        async def bad_id(model: str) -> str:
            return model


def test_the_command_line_selects_by_the_readable_id(tmp_path: Path) -> None:
    (tmp_path / "pipe.py").write_text(
        textwrap.dedent(
            """
            import asyncflow as af

            @af.task(id="{model}_{data}")
            async def cli_fit(model: str, data: str) -> str:
                return model + data

            flow = af.Workflow([cli_fit(model=m, data=d) for m in ("linear_probability", "logit")
                                for d in ("data_0", "data_1")])
            """
        )
    )
    out = subprocess.run([sys.executable, "-m", "asyncflow", "run", "pipe.py:flow", "-k", "linear_probability_data_0",
                          "--store", str(tmp_path / "s")], cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "s" / "cli_fit").glob("*.json")) == [
        "data=data_0,model=linear_probability"
    ]


# kept costly tasks (pytask's mark.persist) ------------------------------------------------------


async def test_a_task_with_rerun_stale_false_keeps_its_target_when_its_code_changes(store: str) -> None:
    runs = []

    @af.task(rerun_stale=False, version="1")
    async def costly() -> int:
        runs.append(1)
        return 1

    @af.task
    async def uses(x: int = af.depends(costly)) -> int:
        return x + 1

    await af.Workflow(uses(), store=store).run()

    @af.task(rerun_stale=False, version="2")  # its code changed: kept anyway
    async def costly() -> int:
        runs.append(2)
        return 2

    flow = af.Workflow(uses(), store=store)
    shown = str(await flow.preview())
    assert "costly STALE (kept) (code of costly changed; version 1 -> 2)" in shown and "uses COMPLETE" in shown
    assert (await flow.run()).ran == 0 and runs == [1]
    await flow.reset(costly)  # missing: rebuilt
    assert (await flow.run()).ran == 2 and runs == [1, 2]
    assert await flow.output() == 3


async def test_force_rebuilds_a_kept_task(store: str) -> None:
    @af.task(rerun_stale=False, version="1", name="forced_keep")
    async def forced_keep() -> int:
        return 1

    await af.Workflow(forced_keep(), store=store).run()

    @af.task(rerun_stale=False, version="2", name="forced_keep")
    async def forced_keep() -> int:
        return 2

    flow = af.Workflow(forced_keep(), store=store)
    assert (await flow.run(force=[forced_keep])).ran == 1
    assert await flow.output() == 2


# d6tflow's workflow habits -------------------------------------------------------------------


@af.task
async def h_get(n: int = 3) -> list[int]:
    return list(range(n))


@af.task
async def h_prep(data: list[int] = af.depends(h_get)) -> list[int]:
    return [2 * x for x in data]


@af.task
async def h_train(data: list[int] = af.depends(h_prep)) -> int:
    return sum(data)


async def test_reset_downstream_and_upstream(store: str) -> None:
    flow = af.Workflow(h_train(), store=store)
    await flow.run()
    gone = await flow.reset(h_prep, downstream=True)
    assert sorted(p.split("/")[-2] for p in gone) == ["h_prep", "h_train"]
    assert (await flow.preview()).by_id() == {"h_train[n=3]": "PENDING", "h_prep[n=3]": "PENDING",
                                               "h_get[n=3]": "COMPLETE"}  # fmt: skip
    await flow.run()
    gone = await flow.reset(h_prep, upstream=True)
    assert sorted(p.split("/")[-2] for p in gone) == ["h_get", "h_prep"]
    assert (await flow.run()).ran == 2  # h_get and h_prep; h_train's inputs came back the same


async def test_outputs_with_no_argument_loads_every_output_of_the_flow(store: str) -> None:
    flow = af.Workflow(h_train(n=2), store=store)
    await flow.run()
    assert await flow.outputs() == {"h_get[n=2]": [0, 1], "h_prep[n=2]": [0, 2], "h_train[n=2]": 2}


async def test_one_flow_of_a_workflow_multi(store: str) -> None:
    multi = af.WorkflowMulti(h_train, {"flow1": {"n": 1}, "flow2": {"n": 4}}, store=store)
    result = await multi.run(flow="flow1")
    assert isinstance(result, af.RunResult) and result.ran == 3
    assert await multi.output(flow="flow1") == 0
    assert (await multi.preview(flow="flow2"))["h_train[n=4]"] == "PENDING"  # not run
    with pytest.raises(af.ParameterError, match=r"no flow named 'flow3'.*'flow1', 'flow2'"):
        await multi.run(flow="flow3")


# ordering without data (pytask's `after`) ------------------------------------------------------


async def test_after_runs_first_and_passes_nothing(store: str) -> None:
    order: list[str] = []

    @af.task
    async def setup_db(n: int = 1) -> str:
        order.append(f"setup {n}")
        return "ready"

    @af.task(after=[setup_db])
    async def load(n: int) -> int:
        order.append(f"load {n}")
        return n

    flow = af.Workflow([load(n=1), load(n=2)], store=store)
    result = await flow.run()
    assert sorted(order) == ["load 1", "load 2", "setup 1", "setup 2"]  # bound like af.depends: one per n
    assert order.index("setup 1") < order.index("load 1") and order.index("setup 2") < order.index("load 2")
    assert result.ran == 4 and await flow.output(load(n=2)) == 2
    assert "setup_db[n=2]" in (await flow.preview()).by_id()  # shown upstream of load[n=2]
    with pytest.raises(af.ParameterError, match=r"after must be a list of tasks or nodes"):

        @af.task(after=[3])
        async def bad_after() -> int:
            return 1


# the data catalog (pytask's, seed 004) ----------------------------------------------------------


async def test_a_catalog_names_outputs_and_externals_serves_them_as_dependencies_and_loads_them(tmp_path) -> None:
    store = str(tmp_path / "store")
    (tmp_path / "data_0.csv").write_text("1,2,3")

    @af.task
    async def cat_prepare(path: str) -> list[int]:
        return [int(x) for x in Path(path).read_text().split(",")]

    @af.task
    async def cat_fit(values: list[int]) -> int:
        return sum(values)

    catalog = af.Catalog(store=store)
    catalog["raw_0"] = af.external(str(tmp_path / "data_0.csv"))
    catalog["prepared_0"] = cat_prepare(path=catalog["raw_0"])
    catalog["fit_0"] = cat_fit(values=catalog["prepared_0"])  # entries are dependencies
    assert list(catalog) == ["raw_0", "prepared_0", "fit_0"] and "fit_0" in catalog and len(catalog) == 3
    assert await catalog.statuses() == {"raw_0": "COMPLETE", "prepared_0": "PENDING", "fit_0": "PENDING"}
    with pytest.raises(af.TargetError, match=r"catalog entry 'fit_0': no target"):
        await catalog.load("fit_0")  # read-only: never built
    await catalog.workflow().run()
    assert await catalog.load("fit_0") == 6 and await catalog.load("prepared_0") == [1, 2, 3]
    assert await catalog.load("raw_0") == str(tmp_path / "data_0.csv")
    with pytest.raises(af.ParameterError, match=r"no catalog entry 'fit0'; did you mean 'fit_0'\?"):
        catalog["fit0"]
    with pytest.raises(af.ParameterError, match=r"catalog entry 'bad' must be a node"):
        catalog["bad"] = 3  # type: ignore[assignment]


def test_the_catalog_and_show_commands(tmp_path: Path) -> None:
    (tmp_path / "project.py").write_text(
        textwrap.dedent(
            """
            import asyncflow as af

            @af.task
            async def cmd_square(x: int) -> int:
                return x * x

            catalog = af.Catalog()
            catalog["sq_2"] = cmd_square(x=2)
            catalog["sq_3"] = cmd_square(x=3)
            """
        )
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "asyncflow", *args, "--store", str(tmp_path / "s")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip

    assert cli("catalog", "project.py:catalog").stdout.split() == ["sq_2", "PENDING", "sq_3", "PENDING"]
    missing = cli("show", "project.py:catalog", "--entry", "sq_3")
    assert missing.returncode == 1 and "catalog entry 'sq_3': no target" in missing.stderr
    assert cli("run", "project.py:catalog").returncode == 0
    assert cli("catalog", "project.py:catalog").stdout.split() == ["sq_2", "COMPLETE", "sq_3", "COMPLETE"]
    assert cli("show", "project.py:catalog", "--entry", "sq_3").stdout.strip() == "9"
    assert cli("show", "project.py:catalog", "--node", "cmd_square[x=2]").stdout.strip() == "4"
    assert "no node with id 'nope'" in cli("show", "project.py:catalog", "--node", "nope").stderr
    several = cli("show", "project.py:catalog")  # two entries: which one?
    assert several.returncode == 2 and "2 nodes to show" in several.stderr
    assert cli("show", "project.py:catalog", "-k", "x=3").stdout.strip() == "9"
    assert "its catalogs: catalog" in cli("catalog", "project.py:nope").stderr


# several outputs per task (d6tflow's persist=[...]) ---------------------------------------------


async def test_several_outputs_each_its_own_target_loaded_alone_with_early_cut_off(store: str) -> None:
    ran: list[str] = []

    @af.task(outputs={"train": "json", "test": "msgpack"}, name="split_parts", version="1")
    async def split_parts(n: int = 4) -> dict:
        ran.append("split")
        return {"train": list(range(n)), "test": [n]}

    @af.task
    async def fit_on_train(rows: list[int] = af.depends(split_parts, output="train")) -> int:
        ran.append("fit")
        return sum(rows)

    @af.task
    async def check_on_test(rows: list[int] = af.depends(split_parts, output="test")) -> int:
        return len(rows)

    flow = af.Workflow([fit_on_train(n=3), check_on_test(n=3)], store=store)
    await flow.run()
    assert await flow.output(fit_on_train(n=3)) == 3 and ran == ["split", "fit"]
    assert await flow.output(split_parts(n=3)) == {"train": [0, 1, 2], "test": [3]}  # the whole output
    parts = {p.parent.name: p.suffix for p in Path(store).glob("split_parts.*/*.*")}
    assert parts == {"split_parts.train": ".json", "split_parts.test": ".msgpack"}  # own targets, own formats

    @af.task(outputs={"train": "json", "test": "msgpack"}, name="split_parts", version="2")
    async def split_parts(n: int = 4) -> dict:  # the test part changes, train does not
        ran.append("split")
        return {"train": list(range(n)), "test": [n, n]}

    result = await af.Workflow([fit_on_train(n=3), check_on_test(n=3)], store=store).run()
    assert ran == ["split", "fit", "split"]  # fit not rebuilt: its part came back the same
    assert result.records["fit_on_train[n=3]"].status == "skipped"
    assert result.records["check_on_test[n=3]"].status == "ran"  # its part changed


async def test_outputs_mistakes_are_named(store: str) -> None:
    @af.task(outputs=("a", "b"))
    async def two_parts() -> dict:
        return {"a": 1}

    with pytest.raises(af.ParameterError, match=r"task 'two_parts' has no output 'c'; its outputs are a, b"):
        af.depends(two_parts, output="c")
    with pytest.raises(af.ParameterError, match=r"outputs must name distinct parts"):

        @af.task(outputs=("a", "a"))
        async def twice() -> dict:
            return {}

    with pytest.raises(af.FlowFailed, match=r"declares outputs a, b and returned a dict with 'a'") as e:
        await af.Workflow(two_parts(), store=store).run()
    assert isinstance(e.value.__cause__, af.SerializationError)


async def test_catalog_load_of_a_missing_external_and_show_needs_one_node(tmp_path: Path) -> None:
    catalog = af.Catalog(store=str(tmp_path / "s"))
    catalog["raw"] = af.external(str(tmp_path / "nothere.csv"))
    with pytest.raises(af.TargetError, match=r"catalog entry 'raw': no file at .*nothere.csv"):
        await catalog.load("raw")
