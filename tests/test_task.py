"""Binding: calling a task makes a Node; parameters are checked and converted before anything runs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import subprocess
import sys
import textwrap

import pytest

import asyncflow as af

from .d6t import get_data, preprocess, train


def test_defaults_positional_and_keyword_bind_the_same_node() -> None:
    assert get_data() == get_data(10) == get_data(n=10)
    assert hash(get_data()) == hash(get_data(n=10))
    assert get_data(3) != get_data(4)
    assert len({get_data(3), get_data(n=3), get_data(4)}) == 2


def test_node_id_lists_all_params_sorted_with_inherited_defaults() -> None:
    assert get_data(n=4).id == "get_data[n=4]"
    assert preprocess().id == "preprocess[do_preprocess=True, n=10]"
    assert train(do_preprocess=False).id == "train[do_preprocess=False, n=10]"
    assert train(do_preprocess=False).params == {"do_preprocess": False, "n": 10}


def test_node_without_params_and_with_string_params() -> None:
    @af.task
    async def report() -> str:
        return "x"

    @af.task
    async def load(name: str) -> str:
        return name

    assert report().id == "report"
    assert load(name="a b").id == "load[name=a b]"


def test_node_holding_nodes_shows_a_short_digest() -> None:
    @af.task
    async def merge(parts: dict) -> int:
        return 0

    node = merge(parts={"a": get_data(1), "b": get_data(2), "c": get_data(3)})
    assert node.id.startswith("merge[parts=<3 nodes ")
    assert node.id.endswith(">]")
    assert node.deps == (get_data(1), get_data(2), get_data(3))
    assert node == merge(parts={"a": get_data(1), "b": get_data(2), "c": get_data(3)})
    assert node != merge(parts={"a": get_data(1), "b": get_data(2), "c": get_data(4)})


@pytest.mark.slow
def test_node_id_and_key_are_identical_across_processes(tmp_path) -> None:
    mod = tmp_path / "pipe_ids.py"
    mod.write_text(
        textwrap.dedent(
            """
            import asyncflow as af
            @af.task
            async def fit(data: str, model: str, alpha: float = 0.5, tags: list[str] = []) -> int:
                return 1
            node = fit(data="a", model="ols", tags=["x", "y"])
            print(node.id, node.key.hex(), node.file_stem())
            """
        )
    )
    outs = {
        subprocess.run(
            [sys.executable, str(mod)], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": seed}
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    assert outs.pop().startswith('fit[alpha=0.5, data=a, model=ols, tags=["x","y"]] ')


def test_unknown_parameter_names_it_and_suggests() -> None:
    with pytest.raises(af.ParameterError, match=r"unknown parameter 'nn'.*did you mean 'n'") as e:
        train(nn=3)
    assert e.value.param == "nn"
    assert e.value.task == "train"


def test_missing_parameter_names_it_and_its_type() -> None:
    @af.task
    async def need(x: int) -> int:
        return x

    with pytest.raises(af.ParameterError, match=r"missing parameter 'x' \(int\)"):
        need()


def test_msgspec_meta_bounds_are_checked_at_binding() -> None:
    from typing import Annotated

    import msgspec

    @af.task
    async def bounded(size: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10,
                      pause: Annotated[float, msgspec.Meta(ge=0, le=30)] = 0.1) -> int:  # fmt: skip
        return size

    assert bounded(size=100).params["size"] == 100
    with pytest.raises(af.ParameterError, match=r"'size' expects int \(ge=1, le=100\), got 101 .*<= 100"):
        bounded(size=101)
    with pytest.raises(af.ParameterError, match=r"'pause' expects float \(ge=0, le=30\), got inf"):
        bounded(pause=float("inf"))
    with pytest.raises(af.ParameterError, match=r"'size' expects int \(ge=1, le=100\), got '0'.*>= 1"):
        bounded.bind((), {"size": "0"}, strict=False)  # the command line's strings too


def test_mistyped_parameter_names_param_type_and_value() -> None:
    with pytest.raises(af.ParameterError, match=r"parameter 'n' expects int, got 'abc' \(str\)") as e:
        get_data(n="abc")
    assert e.value.param == "n"
    with pytest.raises(af.ParameterError, match="parameter 'do_preprocess' expects bool"):
        train(do_preprocess="yes")


def test_too_many_positional_arguments() -> None:
    with pytest.raises(af.ParameterError, match="takes 1 parameter"):
        get_data(1, 2)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Window:
    start: dt.date
    days: int


def test_values_are_converted_by_annotation() -> None:
    @af.task
    async def rich(
        when: dt.date, color: Color, xs: list[int], w: Window, ratio: float = 1.0, tags: tuple[str, ...] = ()
    ) -> int:
        return 0

    node = rich(when=dt.date(2024, 1, 2), color=Color.RED, xs=(1, 2), w=Window(dt.date(2024, 1, 1), 3), ratio=2)
    assert node.params["xs"] == [1, 2]
    assert node.params["ratio"] == 2.0 and isinstance(node.params["ratio"], float)
    assert (
        node.id == "rich[color=red, ratio=2.0, tags=(), w=Window(start=2024-01-01, days=3), when=2024-01-02, xs=[1,2]]"
    )
    # ISO dates and enum values convert from their natural string form...
    assert rich(when="2024-01-02", color="red", xs=[1], w=Window(dt.date(2024, 1, 1), 3)).params["color"] is Color.RED
    # ...but numbers and lists from strings only when asked (the command line does)
    with pytest.raises(af.ParameterError, match="parameter 'xs' expects list"):
        rich(when="2024-01-02", color="red", xs="[1]", w=Window(dt.date(2024, 1, 1), 3))
    loose = rich.bind(
        (), {"when": "2024-01-02", "color": "red", "xs": "[1]", "w": {"start": "2024-01-01", "days": "3"}}, strict=False
    )
    assert loose.params["when"] == dt.date(2024, 1, 2)
    assert loose.params["color"] is Color.RED


def test_product_is_the_cartesian_product() -> None:
    @af.task
    async def fit(data: str, model: str) -> str:
        return data + model

    nodes = fit.product(data=["a", "b"], model=["ols", "logit"])
    assert [n.id for n in nodes] == [
        "fit[data=a, model=ols]",
        "fit[data=a, model=logit]",
        "fit[data=b, model=ols]",
        "fit[data=b, model=logit]",
    ]


def test_depends_forwards_same_named_params_and_fixed_values() -> None:
    @af.task
    async def fixed(raw: list[int] = af.depends(get_data, n=4)) -> int:
        return len(raw)

    assert fixed().deps == (get_data(n=4),)
    assert "n" not in fixed.params  # fixed upstream values are not inherited
    with pytest.raises(af.ParameterError, match="unknown parameter 'n'"):
        fixed(n=3)
    assert train(n=3).deps == (preprocess(n=3),)
    assert preprocess(n=3).deps == (get_data(n=3),)


def test_depends_with_unknown_fixed_parameter_fails_at_binding() -> None:
    @af.task
    async def wrong(raw: list[int] = af.depends(get_data, m=4)) -> int:
        return 0

    with pytest.raises(af.ParameterError, match=r"fixes unknown parameter\(s\) m"):
        wrong()


def test_explicit_node_overrides_a_depends_default_and_is_part_of_identity() -> None:
    node = preprocess(raw=get_data(n=3))
    assert node.deps == (get_data(n=3),)
    assert node != preprocess()
    assert node.id.startswith("preprocess[do_preprocess=True, n=10, raw=<1 node ")


def test_depends_by_name_and_static_cycle_error_names_the_path() -> None:
    @af.task(name="cyc_a")
    async def cyc_a(x: int = af.depends("cyc_b")) -> int:
        return 1

    @af.task(name="cyc_b")
    async def cyc_b(y: int = af.depends("cyc_a")) -> int:
        return 1

    with pytest.raises(af.CycleError, match="cyc_a -> cyc_b -> cyc_a") as e:
        cyc_a()
    assert e.value.path == ["cyc_a", "cyc_b", "cyc_a"]


def test_bad_task_declarations_fail_at_decoration() -> None:
    with pytest.raises(af.ParameterError, match="plain generator"):

        @af.task
        def gen():  # type: ignore[no-untyped-def]
            yield 1

    with pytest.raises(af.ParameterError, match=r"\*args"):

        @af.task
        async def star(*xs: int) -> int:
            return 0

    with pytest.raises(af.ParameterError, match="unknown format 'xml'"):
        af.task(format="xml")(get_data.fn)
    with pytest.raises(af.ParameterError, match="retries"):
        af.task(retries=-1)(get_data.fn)
    with pytest.raises(af.ParameterError, match="timeout"):
        af.task(timeout=0)(get_data.fn)
    with pytest.raises(af.ParameterError, match="limit"):
        af.task(limit=0)(get_data.fn)
    with pytest.raises(af.ParameterError, match="executor"):
        af.task(executor="thread")(get_data.fn)


def test_task_keeps_its_function_and_metadata() -> None:
    assert get_data.fn.__name__ == "get_data"
    assert get_data.__name__ == "get_data"
    assert get_data.name == "get_data"
    assert set(train.params) == {"do_preprocess", "n"}


def test_parameter_that_cannot_be_identified_names_task_and_parameter() -> None:
    @af.task
    async def takes(lock) -> int:  # type: ignore[no-untyped-def]
        return 0

    with pytest.raises(
        af.ParameterError, match="task 'takes': parameter 'lock' = .* cannot be part of a node's identity"
    ):
        takes(lock=object())


def test_process_bodies_defined_inside_a_function_are_refused_at_decoration() -> None:
    with pytest.raises(af.ParameterError, match=r"executor='process'.*define it at module level"):

        @af.task(executor="process")
        def local_process_body() -> int:
            return 1


@pytest.mark.anyio
async def test_forgetting_await_in_a_body_gets_a_hint_pointing_at_the_user_s_line() -> None:
    @af.task(persist=False)
    async def hint_rows(n: int) -> list[int]:
        return list(range(n))

    @af.task(persist=False)
    async def hint_total(n: int) -> int:
        return sum(x for x in hint_rows(n=n))  # the slip: no await

    with pytest.raises(
        af.FlowFailed, match=r"hint_rows\[n=3\] is a node, not its output: `await` it.*test_task.py:\d+"
    ):
        await af.Workflow(hint_total(n=3), store="memory://hint").run()


class Shade(enum.Enum):
    RED = "red"
    GREEN = "green"


@af.task(persist=False)
async def paint(color: Shade) -> str:
    return color.value


def test_enum_and_literal_parameters_list_their_values_when_wrong() -> None:
    with pytest.raises(af.ParameterError, match=r"expects Shade \(one of: red, green\), got 'blue'"):
        paint.bind((), {"color": "blue"}, strict=False)
