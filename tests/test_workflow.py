"""The Workflow object (d6tflow's), WorkflowMulti, DAGs, af.run, external inputs, events and logs."""

from __future__ import annotations

import json
import os
from typing import Any

import msgspec
import pytest
import structlog

import asyncflow as af
from asyncflow import events

from .d6t import get_data, preprocess, train

pytestmark = pytest.mark.anyio


TREE_PENDING = """\
└─ train[do_preprocess=True, n=10] PENDING
   └─ preprocess[do_preprocess=True, n=10] PENDING
      └─ get_data[n=10] PENDING"""


async def test_preview_run_and_preview_again(any_store) -> None:
    flow = af.Workflow(train, params={"do_preprocess": True}, store=any_store)
    assert str(await flow.preview()) == TREE_PENDING
    result = await flow.run()
    assert (result.ran, result.skipped, result.failed) == (3, 0, 0)
    assert str(await flow.preview()) == TREE_PENDING.replace("PENDING", "COMPLETE")
    assert await flow.output() == {"n": 10, "total": 90}
    again = await flow.run()
    assert (again.ran, again.skipped) == (0, 1)  # the complete root answers for its upstream


async def test_reset_and_check_dependencies(any_store) -> None:
    store = any_store
    flow = af.Workflow(train, params={"do_preprocess": True}, store=store)
    await flow.run()
    deleted = await flow.reset(get_data)
    assert len(deleted) == 1 and deleted[0].endswith(".json") and "/get_data/" in deleted[0]
    assert str(await flow.preview()) == TREE_PENDING.replace("PENDING\n", "PENDING (upstream pending)\n")
    assert await flow.explain() == {
        "train[do_preprocess=True, n=10]": ["upstream pending"],
        "preprocess[do_preprocess=True, n=10]": ["upstream pending"],
        "get_data[n=10]": ["no target"],
    }
    relaxed = await flow.preview(check_dependencies=False)
    assert str(relaxed) == "\n".join(
        [
            "└─ train[do_preprocess=True, n=10] COMPLETE",
            "   └─ preprocess[do_preprocess=True, n=10] COMPLETE",
            "      └─ get_data[n=10] PENDING",
        ]
    )
    quick = await af.Workflow(train, params={"do_preprocess": True}, store=store, check_dependencies=False).run()
    assert quick.ran == 0
    full = await flow.run()
    assert full.ran == 1  # get_data came out identical: what is below it stays (early cut-off)
    assert full.skipped == 2


async def test_force_reruns_a_task_and_everything_downstream(any_store) -> None:
    store = any_store
    flow = af.Workflow(train(), store=store)
    await flow.run()
    forced = await flow.run(force=[preprocess])
    assert sorted(r.task for r in forced.records.values() if r.status == "ran") == ["preprocess", "train"]
    assert forced["get_data[n=10]"].status == "skipped"
    everything = await flow.run(force_all=True)
    assert everything.ran == 3


async def test_output_outputs_and_target(store) -> None:
    flow = af.Workflow([train(n=2), train(n=3)], store=store)
    await flow.run()
    assert await flow.outputs(get_data) == {"get_data[n=2]": [0, 1], "get_data[n=3]": [0, 1, 2]}
    assert await flow.output(train(n=3)) == {"n": 3, "total": 6}
    with pytest.raises(af.ParameterError, match="use flow.outputs"):
        await flow.output(get_data)
    t = flow.target(get_data(n=2))
    assert t.path.startswith(os.path.join(store, "get_data", "n=2-"))
    assert await t.exists()
    assert await t.load() == [0, 1]


async def test_run_a_single_task_of_the_flow(store) -> None:
    flow = af.Workflow(train, params={"do_preprocess": False}, store=store)
    result = await flow.run(preprocess)
    assert result.ran == 2
    assert await flow.output(preprocess) == list(range(10))
    assert (await flow.preview())["train[do_preprocess=False, n=10]"] == "PENDING"


def test_run_from_synchronous_code(store) -> None:
    assert af.run(train(do_preprocess=False), store=store) == {"n": 10, "total": 45}
    assert af.run([get_data(n=1), get_data(n=2)], store=store) == [[0], [0, 1]]
    assert af.run(get_data, store=store) == list(range(10))
    assert af.run(af.Workflow(train(n=1), store=store)) == {"n": 1, "total": 0}


async def test_run_inside_a_running_loop_runs_on_its_own_loop_on_asyncio_and_is_an_error_on_trio() -> None:
    import sniffio

    if sniffio.current_async_library() == "asyncio":  # a notebook cell: the flow runs in a thread
        assert af.run(get_data(), execution_summary=False) == await af.Workflow(get_data()).output()
        return
    with pytest.raises(RuntimeError, match=r"inside a running trio event loop; use `await flow.run\(\)`"):
        af.run(get_data())


async def test_failure_message_leads_with_task_exception_and_location(store, capsys) -> None:
    @af.task
    async def divide(d: list[int] = af.depends(get_data)) -> float:
        return 1 / 0

    flow = af.Workflow(divide(), store=store, execution_summary=True)
    with pytest.raises(af.FlowFailed) as e:
        await flow.run()
    msg = str(e.value).splitlines()[0]
    assert msg.startswith("divide[n=10] failed: ZeroDivisionError: division by zero (")
    assert msg.endswith(f"{__file__}:{divide.fn.__code__.co_firstlineno + 2})")
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    assert e.value.result.failed == 1 and e.value.result.ran == 1
    err = capsys.readouterr().err
    assert "===== asyncflow execution summary =====" in err
    assert "* 1 ran:" in err and "- 1 get_data" in err
    assert "* 1 failed:" in err and "divide[n=10]: ZeroDivisionError: division by zero" in err


async def test_summary_can_be_turned_off(store, capsys) -> None:
    await af.Workflow(get_data(), store=store, execution_summary=True).run()
    assert "execution summary" in capsys.readouterr().err
    await af.Workflow(get_data(), store=store, execution_summary=True).run(execution_summary=False)
    assert capsys.readouterr().err == ""


async def test_unknown_workflow_option() -> None:
    with pytest.raises(af.ParameterError, match="unknown workflow option.*max_concurency"):
        af.Workflow(get_data(), max_concurency=3)


async def test_workflow_multi(store) -> None:
    multi = af.WorkflowMulti(train, {"flow1": {"do_preprocess": False}, "flow2": {"do_preprocess": True}}, store=store)
    results = await multi.run()
    assert set(results) == {"flow1", "flow2"}
    assert results["flow1"]["train[do_preprocess=False, n=10]"].status == "ran"
    assert await multi.output() == {"flow1": {"n": 10, "total": 45}, "flow2": {"n": 10, "total": 90}}
    previews = await multi.preview()
    assert all("PENDING" not in str(p) for p in previews.values())
    assert set((await multi.outputs(preprocess))["flow2"]) == {"preprocess[do_preprocess=True, n=10]"}
    await multi.reset(train)
    assert "PENDING" in str((await multi.preview())["flow1"])


async def test_external_inputs_missing_fail_before_any_body_runs(tmp_path) -> None:
    ran = []

    @af.task
    async def load(path: str = af.external(str(tmp_path / "in.csv"))) -> str:
        ran.append(1)
        with open(path) as f:
            return f.read()

    @af.task
    async def other() -> int:
        ran.append(2)
        return 1

    flow = af.Workflow([other(), load()], store=str(tmp_path / "s"))
    assert "MISSING" in str(await flow.preview())
    with pytest.raises(af.MissingInputError) as e:
        await flow.run()
    assert e.value.paths == [str(tmp_path / "in.csv")]
    assert "load" in str(e.value)
    assert ran == []
    (tmp_path / "in.csv").write_text("a,b\n")
    await flow.run()
    assert await flow.output(load()) == "a,b\n"


async def test_external_glob_gives_the_matching_paths(tmp_path) -> None:
    for name in ("b.csv", "a.csv", "skip.txt"):
        (tmp_path / name).write_text(name)

    @af.task
    async def files(paths: list[str] = af.external(str(tmp_path / "*.csv"))) -> list[str]:
        return [os.path.basename(p) for p in paths]

    flow = af.Workflow(files(), store=str(tmp_path / "s"))
    await flow.run()
    assert await flow.output() == ["a.csv", "b.csv"]


async def test_events_in_order_and_encodable(store) -> None:
    seen: list[Any] = []

    async def on_event(e: Any) -> None:  # async callbacks are awaited
        seen.append(e)

    await af.Workflow(preprocess(), store=store, on_event=on_event).run()
    kinds = [(type(e).__name__, getattr(e, "node_id", None)) for e in seen]
    assert kinds == [
        ("TaskStarted", "get_data[n=10]"),
        ("TaskSucceeded", "get_data[n=10]"),
        ("TaskStarted", "preprocess[do_preprocess=True, n=10]"),
        ("TaskSucceeded", "preprocess[do_preprocess=True, n=10]"),
        ("FlowFinished", None),
    ]
    wire = json.loads(msgspec.json.encode(seen[2]))
    assert wire["kind"] == "TaskStarted"
    assert wire["params"] == {"do_preprocess": True, "n": 10}
    assert msgspec.json.decode(msgspec.json.encode(seen[-1]), type=events.Event) == seen[-1]
    skipped: list[Any] = []
    await af.Workflow(preprocess(), store=store, on_event=skipped.append).run()
    assert [type(e).__name__ for e in skipped] == ["TaskSkipped", "FlowFinished"]
    assert skipped[0].reason == "complete"


async def test_failure_events(store) -> None:
    seen: list[Any] = []

    @af.task
    async def bad() -> int:
        raise ValueError("v")

    @af.task
    async def after(x: int = af.depends(bad)) -> int:
        return x

    with pytest.raises(af.FlowFailed):
        await af.Workflow(after(), store=store, on_event=seen.append).run()
    names = [type(e).__name__ for e in seen]
    assert names == ["TaskStarted", "TaskFailed", "TaskSkipped", "FlowFinished"]
    assert seen[1].error_type == "ValueError"
    assert seen[2].reason == "upstream failed"
    assert seen[3].ok is False


async def test_log_lines_inside_bodies_are_bound_to_the_node_id(store) -> None:
    @af.task
    async def chatty(i: int) -> int:
        structlog.get_logger().info("working", step=i)
        return i

    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await af.Workflow([chatty(i=1), chatty(i=2)], store=store).run()
    mine = sorted((e["node_id"], e["step"]) for e in logs if e["event"] == "working")
    assert mine == [("chatty[i=1]", 1), ("chatty[i=2]", 2)]


async def test_dag_runs_its_tasks_by_label(store) -> None:
    class TrainingDAG(af.DAG):
        label = "training-test"
        tasks = [get_data, preprocess, train]

    assert af.DAG.get("training-test") is TrainingDAG
    result = await TrainingDAG(store=store).run()
    assert result.ran == 3
    with pytest.raises(af.ParameterError, match="unknown DAG label 'nope'; known: .*training-test"):
        af.DAG.get("nope")


async def test_mermaid_and_dot(store) -> None:
    preview = await af.Workflow(train(), store=store).preview()
    m = preview.mermaid()
    assert m.startswith("graph LR") and m.count("-->") == 2 and "get_data[n=10] PENDING" in m
    d = preview.dot()
    assert d.startswith("digraph") and d.count("->") == 2
