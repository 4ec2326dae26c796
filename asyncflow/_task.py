"""`@af.task`: describe a function as a task; calling it binds a `Node` (nothing runs).

Decoration validates the options and the function at once; the parameter specification
(annotations, defaults, `af.depends` wiring and inherited parameters) is built on first use so
that forward references (`af.depends("name")`) resolve.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import itertools
import re
import reprlib
import sys
import typing
from collections.abc import Callable
from typing import Any

from ._code import CodeBoundary
from ._errors import CycleError, ParameterError
from ._formats import Format, PartsFormat, get_format
from ._identity import canonical
from ._node import Node
from ._params import MISSING, Depends, Param, Spec, after_nodes, check_after, check_id, check_id_format, check_outputs
from ._registry import TASKS

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_SIMPLE = (int, str, float, bool)

REGISTRY = TASKS  # tasks by name: for af.depends("name"), recorded dynamic children, the command line


_building: list[str] = []


class Task(CodeBoundary):
    """A function described as a task. Call it to bind a `Node`; `task.fn` is the function.

    Made by `@af.task`; a task defined again (the same module and qualified name with new code)
    updates the existing object in place."""

    is_external = False  # only the task behind `af.external`
    revision = 0  # how many times it was defined again

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        format: str | Format = "json",
        store: str | None = None,
        storage_options: dict[str, Any] | None = None,
        persist: bool = True,
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        limit: str | int | None = None,
        version: str | None = None,
        executor: Any = None,
        rerun_stale: bool | None = None,
        id: str | None = None,
        after: list[Any] | tuple[Any, ...] = (),
        outputs: tuple[str, ...] | list[str] | dict[str, str | Format] | None = None,
        _localns: dict[str, Any] | None = None,
    ) -> None:
        self.fn = fn
        self._localns = _localns  # where the task was defined: resolves string annotations of local types
        self.name = fn.__name__ if name is None else name
        functools.update_wrapper(self, fn)
        where = self.name
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name) or len(self.name.encode()) > 255:
            raise ParameterError(
                f"task name {self.name!r} must be 1 to 255 letters, digits, '_', '.' or '-' (starting with a letter, "
                "a digit or '_'): it names the task's folder in the store; pass name=...",
                task=where,
                param="name",
            )
        if inspect.isasyncgenfunction(fn):
            self.kind = "asyncgen"
        elif inspect.iscoroutinefunction(fn):
            self.kind = "async"
        elif inspect.isgeneratorfunction(fn):
            raise ParameterError(f"task {where!r} is a plain generator; make it `async def` to yield nodes", task=where)
        elif callable(fn):
            self.kind = "sync"
        else:
            raise ParameterError(f"@af.task needs a function, got {fn!r}")
        self.format = get_format(format, where)
        self.store = store
        self.storage_options = dict(storage_options or {})
        self.persist = _check(where, "persist", persist, bool)
        self.retries = _check(where, "retries", retries, int, minimum=0)
        self.retry_delay = float(_check(where, "retry_delay", retry_delay, (int, float), minimum=0))
        self.timeout = None if timeout is None else float(_check(where, "timeout", timeout, (int, float)))
        if self.timeout is not None and self.timeout <= 0:
            raise ParameterError(f"task {where!r}: timeout must be > 0 seconds", task=where, param="timeout")
        if limit is not None and not (isinstance(limit, str) or (isinstance(limit, int) and limit > 0)):
            raise ParameterError(
                f"task {where!r}: limit must be a pool name or a positive int, got {limit!r}", task=where, param="limit"
            )
        self.limit = limit
        self.version = None if version is None else str(version)
        self.executor = _check_executor(where, executor, self.kind, fn)
        # None: the workflow's `rerun_stale`; False keeps this task's stale targets (pytask's mark.persist)
        self.rerun_stale = None if rerun_stale is None else _check(where, "rerun_stale", rerun_stale, bool)
        self.id_format = check_id_format(where, id, fn)
        self.after = check_after(where, after)
        self.outputs = check_outputs(where, outputs, self.format)  # part -> its format, or None
        if self.outputs is not None:  # the whole output: each part in its own format, side by side
            self.format = PartsFormat(self.outputs)
        self._parts: dict[str, Task] = {}
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise ParameterError(
                    f"task {where!r}: *args / **kwargs are not supported; name each parameter", task=where
                )
        self._spec: Spec | None = None
        self._return: Any = _UNKNOWN

    def _replaced_by(self, new: Task) -> Task:
        revision = self.revision
        self.__dict__.clear()
        self.__dict__.update(new.__dict__)
        self.revision = revision + 1
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return _reduce(self)  # (to a Dask worker and back)

    def live(self) -> Task:
        """Register this task under its name; returns the live task (this one, or the one it
        replaces, updated in place). `ParameterError` when another task holds the name."""
        return REGISTRY.adopt(self.name, self, lambda t: t.fn, lambda old, new: old._replaced_by(new))  # type: ignore[no-any-return]

    # specification --------------------------------------------------------------------------
    @property
    def spec(self) -> Spec:
        if self._spec is None:
            self._spec = self._build_spec()
        return self._spec

    def _build_spec(self) -> Spec:
        if self.name in _building:
            raise CycleError([*_building[_building.index(self.name) :], self.name])
        _building.append(self.name)
        try:
            try:
                # with extras: `Annotated[int, msgspec.Meta(ge=1, le=100)]` bounds are checked at binding
                hints = typing.get_type_hints(self.fn, localns=self._localns, include_extras=True)
            except Exception:  # unresolvable annotations: keep them unchecked
                hints = {}
            own = [
                Param(q.name, hints.get(q.name, Any), q.default, self.name)
                for q in inspect.signature(self.fn).parameters.values()
            ]
            names = {p.name for p in own}
            inherited: dict[str, Param] = {}
            for p in own:
                if isinstance(p.default, Depends):
                    up = p.default.resolve_task(self.name)
                    for q in up.spec.accepts.values():
                        if q.name not in names and q.name not in p.default.fixed:
                            inherited.setdefault(q.name, q)
                    unknown = set(p.default.fixed) - set(up.spec.accepts)
                    if unknown:
                        raise ParameterError(
                            f"task {self.name!r}: af.depends({up.name}) fixes unknown parameter(s) "
                            f"{', '.join(sorted(unknown))}; {up.name} accepts "
                            f"{', '.join(sorted(up.spec.accepts)) or 'none'}",
                            task=self.name,
                            param=p.name,
                        )
            return Spec(own, inherited)
        finally:
            _building.pop()

    @property
    def return_type(self) -> Any:
        """The output type formats decode to (`Any` when unannotated or for generators)."""
        if self._return is _UNKNOWN:
            ret: Any = Any
            if self.kind != "asyncgen":
                try:
                    ret = typing.get_type_hints(self.fn, localns=self._localns).get("return", Any)
                except Exception:
                    ret = Any
                if ret is None:
                    ret = type(None)  # `-> None`: the output must be None
            self._return = ret
        return self._return

    # binding --------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Node:
        return self.bind(args, kwargs, strict=True)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any], strict: bool = True) -> Node:
        """Bind parameters to a Node; `strict=False` also converts strings (the command line)."""
        spec = self.spec
        if args:
            if len(args) > len(spec.own):
                raise ParameterError(
                    f"task {self.name!r} takes {len(spec.own)} parameter(s), {len(args)} given positionally",
                    task=self.name,
                )
            for p, v in zip(spec.own, args, strict=False):
                if p.name in kwargs:
                    raise ParameterError(
                        f"task {self.name!r}: parameter {p.name!r} given twice", task=self.name, param=p.name
                    )
                kwargs[p.name] = v
        params: dict[str, Any] = {}
        if spec.simple:
            for p in spec.own:
                v = kwargs.pop(p.name, MISSING)
                if v is MISSING:
                    v = p.default
                    if v is MISSING:
                        raise self._missing(p, kwargs)
                    params[p.name] = v
                else:
                    params[p.name] = v if type(v) is p.annotation else p.convert(v, strict)
            if kwargs:
                raise self._unknown(kwargs)
            return self._node(params, params)
        body: dict[str, Any] = {}
        for p in spec.own:
            v = kwargs.pop(p.name, MISSING)
            if v is MISSING:
                v = p.default
                if v is MISSING:
                    raise self._missing(p, kwargs)
                if isinstance(v, Depends):
                    continue  # wired below, once every plain value is known
                body[p.name] = v
                if p.name not in spec.wired:
                    params[p.name] = v
            elif isinstance(v, Depends):
                body[p.name] = v
            else:
                params[p.name] = body[p.name] = p.convert(v, strict)
        for name, q in spec.inherited.items():
            v = kwargs.pop(name, MISSING)
            if v is MISSING:
                if q.default is MISSING:
                    raise self._missing(q, kwargs)
                if isinstance(q.default, Depends):
                    continue
                v = q.default
            else:
                v = q.convert(v, strict)
            params[name] = v
        if kwargs:
            raise self._unknown(kwargs)
        for p in spec.own:
            dep = body.get(p.name, p.default) if p.name not in params else None
            if isinstance(dep, Depends):
                up = dep.resolve_task(self.name)
                forwarded = {k: params[k] for k in up.spec.accepts if k in params and k not in dep.fixed}
                forwarded.update(dep.fixed)
                node = up.bind((), forwarded, strict)
                body[p.name] = node
                if p.name in body and p.default is not dep:
                    params[p.name] = node  # an explicit override is part of the identity
        return self._node(params, {p.name: body[p.name] for p in spec.own})

    def _node(self, params: dict[str, Any], args: dict[str, Any]) -> Node:
        try:
            node = Node(self, params, args)
        except (TypeError, RecursionError, UnicodeEncodeError):  # (a lone surrogate in a string)
            for name, value in params.items():  # find the culprit for the message
                try:
                    canonical({name: value})
                except (TypeError, RecursionError, UnicodeEncodeError) as e:
                    raise ParameterError(
                        f"task {self.name!r}: parameter {name!r} = {reprlib.repr(value)} cannot be part of a "
                        f"node's identity ({e}); pass plain data (numbers, strings, lists, dicts, dates, "
                        "dataclasses...), not nested too deep nor holding itself",
                        task=self.name,
                        param=name,
                    ) from None
            raise
        if self.id_format is not None:
            check_id(self, node)
        return node

    def part(self, name: str, who: str) -> Task:
        """The task `{task}.{part}` of one of `outputs`: that part, its own target and format."""
        if self.outputs is None or name not in self.outputs:
            have = f"its outputs are {', '.join(self.outputs)}" if self.outputs else "it has one output"
            raise ParameterError(f"{who}: task {self.name!r} has no output {name!r}; {have}", task=self.name,
                                 param="output")  # fmt: skip
        if name not in self._parts:
            self._parts[name] = _part_task(self, name, self.outputs[name])
        return self._parts[name]

    def after_nodes(self, node: Node) -> list[Node]:
        return after_nodes(self, node)

    def _missing(self, p: Param, rest: dict[str, Any]) -> ParameterError:
        unknown = {k: v for k, v in rest.items() if k not in self.spec.accepts}
        if unknown:  # a mistyped name is why one is missing: say that ("usr": did you mean "user"?)
            return self._unknown(unknown)
        return ParameterError(
            f"task {self.name!r}: missing parameter {p.name!r} ({p.type_text})", task=self.name, param=p.name
        )

    def _unknown(self, extra: dict[str, Any]) -> ParameterError:
        name = sorted(extra)[0]
        accepts = sorted(self.spec.accepts)
        close = difflib.get_close_matches(name, accepts, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ParameterError(
            f"task {self.name!r}: unknown parameter {name!r} (value {extra[name]!r}); "
            f"it accepts {', '.join(accepts) or 'no parameters'}{hint}",
            task=self.name,
            param=name,
        )

    def product(self, **dimensions: list[Any]) -> list[Node]:
        """Nodes over the cartesian product of the given value lists (pytask's flattened loops)."""
        names = list(dimensions)
        return [self(**dict(zip(names, combo, strict=True))) for combo in itertools.product(*dimensions.values())]

    def annotation(self, name: str) -> Any:
        """The annotation of a parameter the task accepts (`Any` when it has none)."""
        p = self.spec.accepts.get(name)
        return p.annotation if p is not None else Any

    @property
    def params(self) -> dict[str, Param]:
        """Every parameter a caller may pass: own (not `af.depends`) and inherited."""
        return dict(self.spec.accepts)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


def _check(task: str, option: str, value: Any, types: Any, minimum: float | None = None) -> Any:
    if isinstance(value, bool) and types is not bool:
        raise ParameterError(f"task {task!r}: {option} must be a number, got {value!r}", task=task, param=option)
    if not isinstance(value, types):
        raise ParameterError(f"task {task!r}: bad {option} {value!r}", task=task, param=option)
    if minimum is not None and value < minimum:
        raise ParameterError(f"task {task!r}: {option} must be >= {minimum}, got {value!r}", task=task, param=option)
    return value


def _check_executor(task: str, executor: Any, kind: str, fn: Any) -> Any:
    if executor is None:
        return "async" if kind in ("async", "asyncgen") else "thread"
    if executor in ("async", "thread", "process"):
        if executor == "async" and kind == "sync":
            raise ParameterError(
                f"task {task!r} is a plain function: use executor='thread' or 'process' (or make it async def)",
                task=task,
                param="executor",
            )
        if executor == "process" and "<locals>" in getattr(fn, "__qualname__", ""):
            raise ParameterError(
                f"task {task!r} runs in another process (executor='process'), which imports it by name: "
                "define it at module level, not inside a function",
                task=task,
                param="executor",
            )
        if executor in ("thread", "process") and kind != "sync":
            raise ParameterError(
                f"task {task!r} is async: executor={executor!r} only applies to plain functions",
                task=task,
                param="executor",
            )
        return executor
    if hasattr(executor, "run"):
        return executor
    raise ParameterError(
        f"task {task!r}: executor must be 'async', 'thread', 'process' or an executor object, got {executor!r}",
        task=task,
        param="executor",
    )


@typing.overload
def task(fn: Callable[..., Any], /) -> Task: ...


@typing.overload
def task(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    format: str | Format = "json",
    store: str | None = None,
    storage_options: dict[str, Any] | None = None,
    persist: bool = True,
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    limit: str | int | None = None,
    version: str | None = None,
    executor: Any = None,
    rerun_stale: bool | None = None,
    id: str | None = None,
    after: list[Any] | tuple[Any, ...] = (),
    outputs: tuple[str, ...] | list[str] | dict[str, str | Format] | None = None,
) -> Callable[[Callable[..., Any]], Task]: ...


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Describe a function as a task: `@af.task` or `@af.task(format=..., retries=..., ...)`."""
    if fn is None:
        return lambda f: Task(f, _localns=_caller_locals(), **options).live()
    if not callable(fn):
        raise ParameterError(f"@af.task needs a function, got {fn!r}; options go by keyword: @af.task(name=...)")
    return Task(fn, _localns=_caller_locals(), **options).live()


_UNKNOWN: Any = object()  # a return type not yet looked up

_NOT_PICKLED = frozenset({"_spec", "_return", "_localns", "_parts"})


def _reduce(task: Task) -> tuple[Any, ...]:
    """A task pickled: the live task of that name where there is one (the scheduler gets its own object
    back from a Dask worker), else a copy made from its state (a worker without the module, the body
    travelling by value); caches and executor objects stay home."""
    state = {k: v for k, v in task.__dict__.items() if k not in _NOT_PICKLED}
    if not isinstance(task.executor, str):
        state["executor"] = "async" if task.kind == "async" else "thread"
    return _unpickled_task, (type(task), task.name, state)


def _unpickled_task(cls: type[Task], name: str, state: dict[str, Any]) -> Task:
    live = REGISTRY.get(name)
    if live is not None:
        return live  # type: ignore[no-any-return]
    task = cls.__new__(cls)
    task.__dict__.update(state, _spec=None, _return=_UNKNOWN, _localns=None, _parts={})
    return task  # (not registered: a copy, for running its body and binding its nodes)


def _part_task(parent: Task, name: str, fmt: Format) -> Task:
    async def part(whole: Any = Depends(parent, {})) -> Any:
        return whole[name]

    part.__qualname__ = f"{parent.fn.__qualname__}.<output {name}>"
    part.__module__ = parent.fn.__module__
    return Task(part, name=f"{parent.name}.{name}", format=fmt, store=parent.store,
                storage_options=parent.storage_options).live()  # fmt: skip


def _caller_locals() -> dict[str, Any] | None:
    """Locals of the scope that applies the decorator, when it is a function (not a module)."""
    frame = sys._getframe(2)
    if frame.f_locals is frame.f_globals:
        return None
    return dict(frame.f_locals)


class ExternalTask(Task):
    """The task behind `af.external`: a file something else produces; never run, never persisted."""

    is_external = True

    def __init__(self) -> None:
        async def external(url: str, glob: bool | None = None) -> Any:
            return url

        super().__init__(external, name="external", persist=False)


EXTERNAL = ExternalTask()


def external(url: str, *, glob: bool | None = None) -> Node:
    """A node for a file (or glob) produced elsewhere: complete when it exists; its output is the
    path, or the sorted list of paths for a glob.

    `glob=None` (the default): a path that exists is that very file, whatever characters it holds
    (`sales[2024].csv`); only when no such file exists is a path with `*`, `?` or `[` a pattern.
    `glob=True` always matches a pattern, `glob=False` never does."""
    if not isinstance(url, str) or not url:
        raise ParameterError(f"af.external() needs a path or URL string, got {url!r}")
    if glob not in (None, True, False):
        raise ParameterError(f"af.external(): glob must be True, False or None, got {glob!r}", param="glob")
    params: dict[str, Any] = {"url": url} if glob is None else {"glob": glob, "url": url}
    return Node(EXTERNAL, params, dict(params))
