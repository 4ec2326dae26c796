"""A task's parameters: each one's annotation and default, `af.depends` wiring, and the
specification binding follows (own parameters, inherited ones, defaults holding nodes)."""

from __future__ import annotations

import enum
import inspect
import re
import string
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from ._code import CodeBoundary
from ._errors import ParameterError, SerializationError
from ._formats import Format, get_format
from ._node import Node, has_nodes
from ._registry import TASKS

MISSING: Any = inspect.Parameter.empty


class Depends:
    """`af.depends(task, **fixed)` as a parameter default: the upstream node, bound on the fly;
    with `output="train"`, one part of a task with several outputs."""

    __slots__ = ("fixed", "output", "task")

    def __init__(self, task: Any, fixed: dict[str, Any], output: str | None = None) -> None:
        self.task = task  # a Task, or a task's name
        self.fixed = fixed
        self.output = output

    def resolve_task(self, who: str) -> Any:
        """The upstream task (by name: the live task of that name); its part's task with `output`."""
        task = self._task(who)
        return task if self.output is None else task.part(self.output, who)

    def _task(self, who: str) -> Any:
        if isinstance(self.task, CodeBoundary):
            return self.task
        try:
            task = TASKS.get(self.task)
            if task is None:
                raise KeyError(self.task)
            return task
        except KeyError:
            raise ParameterError(
                f"task {who!r} depends on {self.task!r}, which is not a known task; "
                "define it (import its module) first",
                task=who,
            ) from None

    def __eq__(self, other: object) -> bool:  # the same wiring (a definition given again is the same)
        return (
            isinstance(other, Depends)
            and (self.task is other.task or self.task == other.task)
            and (self.fixed == other.fixed and self.output == other.output)
        )

    def __hash__(self) -> int:
        return hash((id(self.task) if not isinstance(self.task, str) else self.task, self.output))

    def __repr__(self) -> str:
        name = self.task if isinstance(self.task, str) else self.task.name
        return f"af.depends({name})" if self.output is None else f"af.depends({name}, output={self.output!r})"


def depends(task: Any, *, output: str | None = None, **fixed: Any) -> Any:
    """Declare a static dependency as a parameter default.

    The body receives the upstream's output (with `output="train"`, only that part of a task with
    `outputs=`). The upstream is bound with the caller's parameters of the same names plus
    `fixed`; its parameters that the caller does not declare are inherited.
    """
    if not isinstance(task, (CodeBoundary, str)):
        raise ParameterError(f"af.depends() takes a task (or a task name), got {task!r}")
    if output is not None and not isinstance(task, str):
        getattr(task, "part")(output, "af.depends()")  # noqa: B009 - a part it has: checked now, at definition
    return Depends(task, fixed, output)


class Param:
    """One parameter of a task: name, annotation and default (`af.depends` or a value)."""

    __slots__ = ("annotation", "default", "name", "owner")

    def __init__(self, name: str, annotation: Any, default: Any, owner: str) -> None:
        self.name = name
        self.annotation = annotation
        self.default = default
        self.owner = owner

    @property
    def type_text(self) -> str:
        a = self.annotation
        if a is Any:
            return "any"
        if typing.get_origin(a) is typing.Annotated:  # the type, then its bounds: "int (ge=1, le=100)"
            base, *extras = typing.get_args(a)
            bounds = [
                repr(m).removeprefix("msgspec.Meta(").removesuffix(")") for m in extras if isinstance(m, msgspec.Meta)
            ]
            text = base.__name__ if isinstance(base, type) else str(base).replace("typing.", "")
            return f"{text} ({', '.join(bounds)})" if bounds else text
        return a.__name__ if isinstance(a, type) else str(a).replace("typing.", "")

    def convert(self, value: Any, strict: bool = True) -> Any:
        """`value` checked and converted to the annotation; ParameterError names the parameter."""
        ann = self.annotation
        if ann is Any or type(value) is ann:
            return value
        if isinstance(value, (Node, list, tuple, dict)) and has_nodes(value):
            return value  # nodes stand for outputs: their type is checked when produced
        try:
            try:
                return msgspec.convert(value, ann, strict=strict, from_attributes=True)
            except msgspec.ValidationError as first:
                if strict or not isinstance(value, str):
                    raise
                try:
                    return msgspec.json.decode(value, type=ann)  # lists, dicts... as JSON text
                except msgspec.DecodeError:  # not JSON either: say what the text was checked against
                    raise first from None
        except (msgspec.ValidationError, msgspec.DecodeError, TypeError) as e:
            raise ParameterError(
                f"task {self.owner!r}: parameter {self.name!r} expects {self.type_text}{self._choices()}, "
                f"got {value!r} ({type(value).__name__}): {e}",
                task=self.owner,
                param=self.name,
            ) from None

    def _choices(self) -> str:
        """` (one of: ols, logit)` for an enum or a Literal: the values a user may give."""
        ann = self.annotation
        if isinstance(ann, type) and issubclass(ann, enum.Enum):
            return f" (one of: {', '.join(str(m.value) for m in ann)})"
        if typing.get_origin(ann) is typing.Literal:
            return f" (one of: {', '.join(map(str, typing.get_args(ann)))})"
        return ""


class Spec:
    """A task's parameters resolved: own params in order, depends wiring, inherited params."""

    __slots__ = ("accepts", "depends", "inherited", "names", "own", "simple", "wired")

    def __init__(self, own: list[Param], inherited: dict[str, Param]) -> None:
        self.own = own
        self.names = [p.name for p in own]
        self.depends = [p for p in own if isinstance(p.default, Depends)]
        self.inherited = inherited
        self.accepts: dict[str, Param] = {p.name: p for p in own if not isinstance(p.default, Depends)}
        self.accepts.update(inherited)
        # Defaults holding nodes (`af.external(...)`, a node) are wiring, like `af.depends`: part
        # of the task's definition, so not of each node's parameters unless overridden.
        self.wired = {p.name for p in own if p.default is not MISSING and has_nodes(p.default)}
        self.simple = not self.depends and not inherited and not self.wired


# task options over parameters: readable ids, ordering -------------------------------------------


_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # a part name: part of a task name

ID_FORMATS = [0]  # how many tasks were defined with `id=` (a run checks ids only when there are some)


def check_id_format(task: str, fmt: str | None, fn: Callable[..., Any]) -> str | None:
    """`id="{model}_{data}"`: a format over the task's own parameters (checked at decoration)."""
    if fmt is None:
        return None
    ID_FORMATS[0] += 1
    if not isinstance(fmt, str) or not fmt.strip():
        raise ParameterError(f"task {task!r}: id must be a format string such as '{{model}}_{{data}}', got {fmt!r}",
                             task=task, param="id")  # fmt: skip
    signature = inspect.signature(fn).parameters
    names = set(signature)
    if any(isinstance(p.default, Depends) for p in signature.values()):
        return fmt  # it may name parameters inherited from upstream: checked when a node is bound
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(fmt) if f is not None]
    except ValueError as e:
        raise ParameterError(f"task {task!r}: id format {fmt!r} is malformed: {e}", task=task, param="id") from None
    for field in fields:
        name = re.split(r"[.\[!:]", field, maxsplit=1)[0]
        if name not in names:
            raise ParameterError(
                f"task {task!r}: id format {fmt!r} names {name or field!r}, which is not a parameter; "
                f"it has {', '.join(sorted(names)) or 'none'}",
                task=task,
                param="id",
            )
    return fmt


def check_id(task: Any, node: Node) -> None:
    """With `id=`: the format can be filled from the node's parameters (checked at binding)."""
    try:
        node.make_id()
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as e:
        raise ParameterError(
            f"task {task.name!r}: id format {task.id_format!r} cannot be filled from {node.params!r}: "
            f"{type(e).__name__}: {e}",
            task=task.name,
            param="id",
        ) from None


def after_nodes(task: Any, node: Node) -> list[Node]:
    """The nodes `after=` names for `node`: a node as given, a task bound with `node`'s parameters
    of the same names (as `af.depends` does)."""
    p = node.params
    try:
        return [a if isinstance(a, Node) else a.bind((), {k: p[k] for k in p if k in a.spec.accepts})
                for a in task.after]  # fmt: skip
    except ParameterError as e:
        raise ParameterError(f"{node.make_id()} (after=): {e}", task=task.name, param="after") from None


def check_after(task: str, after: Any) -> tuple[Any, ...]:
    """`after=[setup_db, node, ...]` (or one of them): tasks or nodes done first (no data passed)."""
    items = tuple(after) if isinstance(after, (list, tuple)) else (after,)
    if items is None or not all(isinstance(a, (CodeBoundary, Node)) for a in items):
        raise ParameterError(
            f"task {task!r}: after must be a list of tasks or nodes, got {after!r}", task=task, param="after"
        )
    return items


# several outputs per task -----------------------------------------------------------------------


def check_outputs(task: str, outputs: Any, default: Format) -> dict[str, Format] | None:
    """`outputs=("train", "test")` (the task's format for each) or `{"train": "parquet", ...}`."""
    if outputs is None:
        return None
    pairs = list(outputs.items()) if isinstance(outputs, dict) else [(o, default) for o in outputs] \
        if isinstance(outputs, (list, tuple)) else None  # fmt: skip
    if (
        not pairs
        or not all(isinstance(n, str) and _PART.fullmatch(n) for n, _ in pairs)
        or len({n for n, _ in pairs}) != len(pairs)
    ):
        raise ParameterError(
            f"task {task!r}: outputs must name distinct parts, e.g. outputs=('train', 'test'), got {outputs!r}",
            task=task,
            param="outputs",
        )
    return {n: get_format(f, task) for n, f in pairs}


def check_parts(task: Any, value: Any) -> None:
    """A task with `outputs=` returns a dict of exactly those parts."""
    parts = task.outputs
    assert parts is not None
    if not isinstance(value, dict) or set(value) != set(parts):
        got = f"a dict with {', '.join(map(repr, value))}" if isinstance(value, dict) else f"a {type(value).__name__}"
        raise SerializationError(task.name, type(value).__name__, "outputs", None,
                                 f"it declares outputs {', '.join(parts)} and returned {got}",
                                 fix=f"return {{{', '.join(f'{p!r}: ...' for p in parts)}}}")  # fmt: skip
