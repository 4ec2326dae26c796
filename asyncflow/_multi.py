"""`WorkflowMulti`: the same task over several parameter sets, one `Workflow` per set (d6tflow's
WorkflowMulti), given as `{name: params}`, a grid `{parameter: [values...]}` or a list of dicts."""

from __future__ import annotations

import functools
import itertools
from typing import TYPE_CHECKING, Any

from ._concurrent import run_all
from ._errors import FlowFailed, ParameterError
from ._identity import show_value
from ._workflow import FORCE_REACHED, Workflow, check_forced_reached, did_you_mean, forced_task_names

if TYPE_CHECKING:
    from ._task import Task


class WorkflowMulti:
    """The same task over several parameter sets; every method answers `{name: ...}`.

    `params` is `{name: params}` (d6tflow's form), a grid `{parameter: [values...]}` (one flow per
    combination, named by its values: `"model=lr,scale=1"`), or a list of parameter dicts (named by
    their values too). Anything else, or a mix, is a `ParameterError`."""

    def __init__(self, task: Task, params: dict[str, Any] | list[dict[str, Any]], **options: Any) -> None:
        self.workflows = {name: Workflow(task, p, **options) for name, p in _flow_params(task, params).items()}

    def flow(self, name: str) -> Workflow:
        """One of the flows, by name."""
        try:
            return self.workflows[name]
        except KeyError:
            raise ParameterError(
                f"no flow named {name!r} in this WorkflowMulti; it has {', '.join(map(repr, self.workflows))}",
                param="flow",
            ) from None

    async def _each(self, method: str, *args: Any, flow: str | None = None, **kwargs: Any) -> Any:
        """`method` on every flow (`{name: answer}`), or on the one named `flow` (its answer alone)."""
        if flow is not None:
            return await getattr(self.flow(flow), method)(*args, **kwargs)
        out: dict[str, Any] = {}
        errors: list[FlowFailed] = []

        async def one(name: str, flow: Workflow) -> None:
            try:
                out[name] = await getattr(flow, method)(*args, **kwargs)
            except FlowFailed as e:
                errors.append(e)

        await run_all([functools.partial(one, name, flow) for name, flow in self.workflows.items()])
        if errors:
            problem = next((e.problem for e in errors if e.problem is not None), None)  # a callback's
            raise FlowFailed(errors[0].result, [x for e in errors for x in e.errors], problem)
        return {name: out[name] for name in self.workflows}

    async def run(self, what: Any = None, *, flow: str | None = None, **kwargs: Any) -> Any:
        """`{name: RunResult}`, or the one flow's RunResult with `flow="name"`."""
        if flow is not None or not kwargs.get("force"):
            return await self._each("run", what, flow=flow, **kwargs)
        reached: set[str] = set()
        token = FORCE_REACHED.set(reached)  # `force=` names what one flow at least must reach
        try:
            out = await self._each("run", what, **kwargs)
        finally:
            FORCE_REACHED.reset(token)
        first = next(iter(self.workflows.values()))
        check_forced_reached(forced_task_names(kwargs["force"], first), reached)
        return out

    async def preview(self, what: Any = None, *, flow: str | None = None, **kwargs: Any) -> Any:
        return await self._each("preview", what, flow=flow, **kwargs)

    async def reset(self, what: Any = None, *, flow: str | None = None, **kwargs: Any) -> Any:
        return await self._each("reset", what, flow=flow, **kwargs)

    async def output(self, what: Any = None, *, flow: str | None = None) -> Any:
        return await self._each("output", what, flow=flow)

    async def outputs(self, what: Any = None, *, flow: str | None = None) -> Any:
        return await self._each("outputs", what, flow=flow)


def _label(params: dict[str, Any]) -> str:
    """A flow's name from its values, shown as ids show them (`model=lr,n=10`; quoted when a value
    could be misread), so that two parameter sets never get one name."""
    return ",".join(f"{k}={show_value(v)}" for k, v in params.items()) or "defaults"


def _by_label(sets: list[dict[str, Any]], what: str) -> dict[str, dict[str, Any]]:
    named: dict[str, dict[str, Any]] = {}
    for p in sets:
        label = _label(p)
        if label in named:
            raise ParameterError(f"WorkflowMulti: {what} gives the flow {label!r} twice ({named[label]!r} and {p!r})")
        named[label] = dict(p)
    return named


def _flow_params(task: Task, params: Any) -> dict[str, dict[str, Any]]:
    """`WorkflowMulti`'s parameter sets by flow name, from any of its three forms."""
    form = "WorkflowMulti takes {name: params}, a grid {parameter: [values...]} or a list of parameter dicts"
    if isinstance(params, (list, tuple)):
        if not params or not all(isinstance(p, dict) for p in params):
            raise ParameterError(f"{form}; got a list holding {params!r}")
        return _by_label(list(params), "the list")
    if not isinstance(params, dict) or not params:
        raise ParameterError(f"{form}; got {params!r}")
    values = list(params.values())
    if all(isinstance(v, dict) for v in values):
        return {str(name): dict(p) for name, p in params.items()}
    if all(isinstance(v, (list, tuple)) for v in values):
        accepted = sorted(task.params)
        for name in params:
            if name not in accepted:
                raise ParameterError(
                    f"WorkflowMulti grid: {task.name!r} has no parameter {name!r}; it accepts "
                    f"{', '.join(accepted) or 'no parameters'}{did_you_mean(name, accepted)} "
                    "(for named flows give {name: {param: value}})",
                    task=task.name,
                    param=name,
                )
        if any(not v for v in values):
            raise ParameterError("WorkflowMulti grid: every parameter needs at least one value")
        combos = [dict(zip(params, combo, strict=True)) for combo in itertools.product(*values)]
        return _by_label(combos, "the grid")
    odd = next(((k, v) for k, v in params.items() if not isinstance(v, (dict, list, tuple))), None)
    if odd is not None:
        raise ParameterError(
            f"WorkflowMulti: {odd[0]!r} maps to {odd[1]!r}, neither a flow's parameters (a dict) nor a grid's values "
            f"(a list); a grid of one value is {{{odd[0]!r}: [{odd[1]!r}]}}, one flow is af.Workflow(task, params)",
            param=str(odd[0]),
        )
    raise ParameterError(
        f"{form}: {params!r} mixes parameter sets and value lists (ambiguous); give all values as dicts "
        "(named flows) or all as lists (a grid)"
    )
