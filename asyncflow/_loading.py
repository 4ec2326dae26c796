"""What a command-line TARGET names (`path/to/file.py:NAME` or `package.module:NAME`): the module
imported, the object found, and the Workflow (or Catalog) it stands for, with `-p` strings
converted by the tasks' own annotations. Bad usage is a `Usage` error: one line, exit status 2."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import msgspec

import asyncflow as af


class Usage(Exception):
    """Bad usage: one line, exit status 2."""


def fail(message: str) -> NoReturn:
    raise Usage(message)


def import_module(spec: str) -> Any:
    """A file (`path/to/x.py`) or a module (`pkg.mod`), with the current directory on sys.path."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        path = Path(spec).resolve()
        if not path.is_file():
            fail(f"file not found: {spec}")
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))  # so worker processes can import it too
        name = path.stem
        if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path)
        assert module_spec is not None
        assert module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as e:
        if e.name and spec.startswith(e.name):
            fail(f"module not found: {spec}")
        raise


def split_target(target: str) -> tuple[str, str]:
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        fail(f"TARGET must be path/to/file.py:NAME or package.module:NAME, got {target!r}")
    return where, name


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"-p takes name=value, got {pair!r}")
        out[name.strip()] = value
    return out


def convert_for(tasks: list[af.Task], raw: dict[str, str]) -> dict[str, Any]:
    """Command-line strings converted by the annotation of the first task that takes them."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        param = next((t.params[name] for t in tasks if name in t.params), None)
        if param is None:
            import difflib

            known = sorted({p for t in tasks for p in t.params})
            close = difflib.get_close_matches(name, known, n=1)
            who = (
                f"task {tasks[0].name!r}" if len(tasks) == 1 else "the tasks " + ", ".join(repr(t.name) for t in tasks)
            )
            verb = "has" if len(tasks) == 1 else "have"
            fail(f"-p {name}: {who} {verb} no parameter {name!r}; {'it accepts' if len(tasks) == 1 else 'they accept'} "
                 f"{', '.join(known) or 'none'}"
                 + (f"; did you mean {close[0]!r}?" if close else ""))  # fmt: skip
        out[name] = param.convert(value, strict=False)
    return out


def call_with_strings(fn: Callable[..., Any], raw: dict[str, str]) -> Any:
    """Call a plain function with -p values converted by its annotations."""
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in sig.parameters:
            fail(f"{fn.__name__}() has no parameter {name!r}; it takes {', '.join(sig.parameters) or 'none'}")
        ann = hints.get(name, Any)
        try:
            kwargs[name] = value if ann in (Any, str) else msgspec.convert(value, ann, strict=False)
        except msgspec.ValidationError as e:
            fail(f"parameter {name!r} of {fn.__name__}() expects {getattr(ann, '__name__', ann)}: {e}")
    return fn(**kwargs)


def as_nodes(value: Any, what: str) -> list[af.Node]:
    if isinstance(value, af.Node):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, af.Node) for v in value):
        return list(value)
    fail(f"{what} is not a node or a list of nodes (got {type(value).__name__})")


def load_flow(target: str, params: tuple[str, ...], options: dict[str, Any]) -> af.Workflow:
    """The Workflow a TARGET names: a task (bound with -p), a node, nodes, a function, a Workflow or a DAG."""
    where, name = split_target(target)
    module = import_module(where)
    try:
        obj = getattr(module, name)
    except AttributeError:
        found = sorted(k for k, v in vars(module).items() if not k.startswith("_") and (
            isinstance(v, (af.Task, af.Workflow, af.Node, af.Catalog)) or _is_dag(v)
            or (inspect.isfunction(v) and v.__module__ == module.__name__)))  # fmt: skip
        close = difflib.get_close_matches(name, found, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        fail(f"no {name!r} in {where}; it defines: {', '.join(found) or 'no tasks'}{hint}")
    raw = parse_params(params)
    if isinstance(obj, af.Task):
        return af.Workflow(obj.bind((), convert_for([obj], raw), strict=False), **options)
    if isinstance(obj, type) and issubclass(obj, af.DAG):
        return af.Workflow(list(obj.tasks), convert_for(list(obj.tasks), raw), **options)
    if isinstance(obj, af.Workflow):
        if raw:
            fail(f"{name} is a Workflow: its parameters are fixed; -p does not apply")
        return obj.with_options(**options)
    if isinstance(obj, af.Catalog):
        return obj.workflow(**options)
    if isinstance(obj, (af.Node, list, tuple)):
        if raw:
            fail(f"{name} is already bound: -p does not apply")
        return af.Workflow(as_nodes(obj, name), **options)
    if callable(obj):
        return af.Workflow(as_nodes(call_with_strings(obj, raw), f"{name}(...)"), **options)
    fail(f"{name} in {where} is a {type(obj).__name__}: expected a task, nodes, a function, a Workflow or a DAG")


def load_catalog(target: str, options: dict[str, Any]) -> af.Catalog:
    where, name = split_target(target)
    module = import_module(where)
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, af.Catalog))
        fail(f"no {name!r} in {where}; its catalogs: {', '.join(found) or 'none'}")
    obj = getattr(module, name)
    if not isinstance(obj, af.Catalog):
        fail(f"{target} is a {type(obj).__name__}, not an af.Catalog")
    return obj.with_options(**options)


def _is_dag(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, af.DAG) and value is not af.DAG
