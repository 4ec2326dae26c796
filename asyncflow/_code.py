"""What a task's code is: its function's normalized source and, transitively, every function,
class, module-level constant and closure value of the user's own code that it refers to.

Normalized source: the AST without docstrings, comments, formatting, decorators or the function's
own name (so renaming a function while keeping `name=` is not a change); the bytecode when there
is no source. "The user's own code" is everything but the standard library, installed packages
(site-packages) and asyncflow: helpers in the same file, in other modules of the project reached
through attributes (`helpers.clean(x)`), classes, constants and closure values. Other tasks and
nodes a body refers to are boundaries: their code is their own fingerprint, and their outputs
reach this task as inputs.

A fingerprint is computed once per task per process and re-validated cheaply on every use: if a
name it read now refers to another object (a notebook cell defining a helper again), it is
computed again.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import os
import sys
import sysconfig
import textwrap
import tokenize
import types
import weakref
from collections.abc import Callable
from typing import Any

import msgspec

from ._identity import HasKey, tagged


class CodeBoundary:
    """A marker: objects whose code is fingerprinted on their own (tasks), never walked into."""

    __slots__ = ()


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]


def _short(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def source_hash(obj: Any) -> str:
    """Hash of a function's (or class's) normalized source; of its bytecode when it has none."""
    try:  # (a wrapper's own code: `inspect.getsource` of a function would follow `__wrapped__`)
        wrapper = isinstance(obj, types.FunctionType) and "__wrapped__" in obj.__dict__
        source = inspect.getsource(obj.__code__ if wrapper else obj)
        tree = ast.parse(textwrap.dedent(source))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                node.decorator_list = []
                if not isinstance(node, ast.ClassDef):
                    node.name = "_"  # renaming a function (with name=... kept) is not a change
                break
        _strip_docstrings(tree)
        return _short(ast.dump(tree, annotate_fields=False, include_attributes=False))
    except (OSError, TypeError, SyntaxError, tokenize.TokenError, UnicodeDecodeError, ValueError):
        # no readable source (exec'd code whose file name is another file, a binary...): its bytecode
        code = getattr(obj, "__code__", None)
        if not isinstance(code, types.CodeType):  # (a class whose metaclass answers any name...)
            return _short(repr(getattr(obj, "__qualname__", type(obj).__qualname__)))
        return _short(repr((code.co_code, _consts(code), code.co_names)))


def _consts(code: types.CodeType) -> tuple[Any, ...]:
    return tuple(_consts(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)


_EXCLUDED = tuple(
    {
        os.path.realpath(p) + os.sep
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (p := sysconfig.get_paths().get(key))
    }
    | {os.path.realpath(os.path.dirname(__file__)) + os.sep}  # asyncflow itself
    | {os.path.realpath(p) + os.sep for p in sys.path if "site-packages" in p or "dist-packages" in p}
)


def is_user_file(filename: str | None) -> bool:
    """Whether code from this file is the user's own (not stdlib, site-packages or asyncflow)."""
    if not filename:
        return False
    if filename.startswith("<"):
        return not filename.startswith("<frozen")  # <ipython-input-...>, <string>: the user's
    return not os.path.realpath(filename).startswith(_EXCLUDED)


def _is_user_module(module: types.ModuleType) -> bool:
    if module.__name__ == "__main__":
        return True
    return is_user_file(getattr(module, "__file__", None))


def _names(code: types.CodeType) -> set[str]:
    """Every global or attribute name the code (and the code nested in it) refers to."""
    out = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            out |= _names(c)
    return out


_STATEMENTS: dict[tuple[str, float], dict[str, str]] = {}


def _assignments(module: types.ModuleType | None) -> dict[str, str]:
    """The source of each top-level assignment of a module, by the names it assigns."""
    path = getattr(module, "__file__", None)
    if not path:
        return {}
    try:
        key = (path, os.stat(path).st_mtime)
    except OSError:
        return {}
    found = _STATEMENTS.get(key)
    if found is None:
        found = {}
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            tree = ast.Module(body=[], type_ignores=[])
        for stmt in tree.body:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(
                stmt, (ast.AnnAssign, ast.AugAssign)) else []  # fmt: skip
            for target in targets:
                for node in ast.walk(target):
                    if isinstance(node, ast.Name):
                        found[node.id] = found.get(node.id, "") + ast.dump(stmt)
        _STATEMENTS[key] = found
    return found


def _constant_hash(value: Any, name: str, module: types.ModuleType | None) -> str:
    """A module-level constant counts by the statement that assigns it (what the user edits;
    the same in every process), or by its value when that statement cannot be found."""
    statement = _assignments(module).get(name)
    return _short(statement) if statement is not None else _value_hash(value)


def _value_hash(value: Any) -> str:
    try:
        return _short(msgspec.json.encode(tagged(value)).decode())
    except Exception:  # (not data: a class, a set of types, an object half made...)
        return _short(_stable_repr(value, 0))


def _stable_repr(value: Any, depth: int) -> str:
    """A text for a value that is the same in every process: sets sorted, objects by their type
    where their repr would show an address (or fails)."""
    try:
        if depth > 20:
            return "..."
        if isinstance(value, (set, frozenset)):
            return "{" + ", ".join(sorted(_stable_repr(v, depth + 1) for v in value)) + "}"
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(_stable_repr(v, depth + 1) for v in value) + "]"
        if isinstance(value, dict):
            pairs = (f"{_stable_repr(k, depth + 1)}: {_stable_repr(v, depth + 1)}" for k, v in value.items())
            return "{" + ", ".join(pairs) + "}"
        if isinstance(value, type):
            return f"{value.__module__}.{value.__qualname__}"
        text = repr(value)
        return text if " at 0x" not in text else type(value).__qualname__
    except Exception:
        return type(value).__qualname__


def _file(obj: Any) -> str:
    try:
        return os.path.basename(inspect.getsourcefile(obj) or obj.__code__.co_filename)
    except (TypeError, AttributeError):
        return "?"


class CodeFingerprint:
    """A task function's code fingerprint: `total`, and `parts` ({label: hash}) for the reasons."""

    __slots__ = ("checked", "checks", "parts", "total")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.checked = epoch[0]
        self.parts: dict[str, str] = {}
        self.checks: list[tuple[Any, str, Any]] = []  # (namespace or cell, name, the object read, weakly)
        _Walk(self).function(fn, "")
        own = self.parts[""]
        if len(self.parts) == 1:
            self.total = own  # no helpers: the same fingerprint as before helpers counted
        else:
            self.total = _short(repr(sorted(self.parts.items())))

    def read(self, where: Any, name: str, obj: Any) -> None:
        """Remember that `name` in `where` (a namespace or a closure cell) was `obj`. Weakly when it
        can be: a fingerprint must not keep tasks or functions alive."""
        try:
            self.checks.append((where, name, weakref.ref(obj)))
        except TypeError:
            self.checks.append((where, name, _Strong(obj)))

    def valid(self) -> bool:
        """Whether every name read still refers to the same object."""
        for where, name, ref in self.checks:
            if isinstance(where, tuple):  # (the function, weakly; the index of its closure cell)
                fn = where[0]()
                try:
                    current = fn.__closure__[where[1]].cell_contents if fn is not None else _GONE
                except (ValueError, IndexError, TypeError):  # an emptied cell
                    return False
            else:
                current = where.get(name, _GONE)
            if current is not ref():
                return False
        return True


_GONE = object()


class _Strong:
    """A reference to an object that takes no weak reference (numbers, strings, tuples...)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __call__(self) -> Any:
        return self.obj


def _label(kind: str, obj: Any) -> str:
    """`helper clean (pipe.py)`: what a reason names; a lambda with its line (several share a name)."""
    where = _file(obj)
    if obj.__name__ == "<lambda>" and hasattr(obj, "__code__"):
        where = f"{where}:{obj.__code__.co_firstlineno}"
    return f"{kind} {obj.__qualname__} ({where})"


_CONTAINERS = (list, tuple, set, frozenset, dict)
_CONTAINER_ITEMS = 1000  # at most this many items of a constant container are looked into


class _Walk:
    """One traversal of what a task function reaches, in a fixed order (names sorted), so that
    the same code gives the same parts in every process."""

    def __init__(self, fp: CodeFingerprint) -> None:
        self.fp = fp
        self.seen: set[int] = set()
        self.depth = 0  # containers within containers looked into

    def part(self, label: str, obj: Any, value: str) -> None:
        """Add a part; a label another object has with another hash (two `util.py`) gets its module and line."""
        if self.fp.parts.get(label, value) != value:
            code = getattr(obj, "__code__", None)
            label = f"{label} [{getattr(obj, '__module__', '?')}:{code.co_firstlineno if code else '?'}]"
        self.fp.parts[label] = value

    def function(self, fn: Any, label: str, part: bool = True) -> None:
        if id(fn) in self.seen or not hasattr(fn, "__code__"):
            return
        self.seen.add(id(fn))
        if part:
            self.part(label, fn, source_hash(fn))
        code = fn.__code__
        names = _names(code)
        namespace = fn.__globals__
        module = sys.modules.get(namespace.get("__name__", ""))
        for name in sorted(names):
            if name in namespace:
                obj = namespace[name]
                self.fp.read(namespace, name, obj)
                self.visit(obj, name, names, f"constant {name} ({_file(fn)})", module)
        for i, (name, cell) in enumerate(zip(code.co_freevars, fn.__closure__ or (), strict=False)):
            try:
                obj = cell.cell_contents
            except ValueError:  # not yet bound
                continue
            self.fp.read((weakref.ref(fn), i), name, obj)  # (cells take no weak reference)
            self.visit(obj, name, names, f"closure value {name} of {fn.__qualname__}")
        wrapped = getattr(fn, "__wrapped__", None)  # a decorator's wrapper: the function it wraps too
        if wrapped is not None:
            self.visit(wrapped, "__wrapped__", names, f"closure value __wrapped__ of {fn.__qualname__}")
        if label:  # a helper's default values (a task's are its parameters, in the node's key)
            defaults = [*(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values()]
            for value in defaults:
                self.visit(value, "", names, "", None, values=False)
            values = [v for v in defaults if not _walked(v)]
            if values:
                self.part(f"defaults of {label}", fn, _value_hash(values))

    def visit(
        self,
        obj: Any,
        name: str,
        names: set[str],
        constant_label: str,
        module: types.ModuleType | None = None,
        values: bool = True,
    ) -> None:
        """Take in what `obj` brings: a module's attributes the code reads, a function's or class's
        code, the class of an instance, the code inside a container; and (with `values`) a plain
        value as a constant. An object that fails when looked at (a proxy outside its context...)
        counts by its type: a fingerprint never fails a task."""
        try:
            self._visit(obj, name, names, constant_label, module, values)
        except Exception:
            if values and constant_label:
                self.part(constant_label, obj, _short(type(obj).__qualname__))

    def _visit(
        self, obj: Any, name: str, names: set[str], constant_label: str, module: types.ModuleType | None, values: bool
    ) -> None:
        if isinstance(obj, (CodeBoundary, HasKey)) or id(obj) in self.seen:
            return
        if isinstance(obj, types.ModuleType):
            if _is_user_module(obj):
                self.seen.add(id(obj))
                for attr in sorted(names & set(vars(obj))):  # the attributes this code may reach: helpers.clean
                    value = vars(obj)[attr]
                    self.fp.read(vars(obj), attr, value)
                    self.visit(value, attr, names, f"constant {obj.__name__}.{attr} ({_file(obj)})", obj)
            return
        if isinstance(obj, functools.partial):
            self.seen.add(id(obj))
            self.visit(obj.func, name, names, constant_label)
            self.part(f"{constant_label} arguments", obj, _value_hash([list(obj.args), obj.keywords]))
            return
        if isinstance(obj, (types.FunctionType, types.MethodType)):
            target = getattr(obj, "__func__", obj)
            code = getattr(target, "__code__", None)
            if code is not None and is_user_file(code.co_filename):
                self.function(target, _label("helper", target))
            elif hasattr(target, "__wrapped__"):  # a library's decorator around the user's function
                self.visit(target.__wrapped__, name, names, constant_label, module, values)
            return
        if isinstance(obj, type):
            self._class(obj)
            return
        mine = False  # an instance of a class of the user's
        if isinstance(obj, _CONTAINERS):
            try:
                items = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else list(obj)
            except Exception:  # a container of the user's that cannot be iterated: its value alone
                items = []
            if len(items) <= 2 * _CONTAINER_ITEMS and self.depth < 3:  # a dispatch table: the code it holds
                self.seen.add(id(obj))
                self.depth += 1
                for item in items:
                    if _walked(item) or isinstance(item, _CONTAINERS):
                        self.visit(item, name, names, constant_label, module, values=False)
                self.depth -= 1
        elif not isinstance(obj, (str, bytes, int, float, complex, bool)) and obj is not None:
            mine = self._class(type(obj))  # an instance (a callable one too): its class's code
            wrapped = inspect.getattr_static(obj, "__wrapped__", None)
            if wrapped is not None:
                self.visit(wrapped, name, names, constant_label, module, values=False)
        if values and (mine or not (callable(obj) or inspect.isroutine(obj))):
            self.part(constant_label, obj, _constant_hash(obj, name, module) if module else _value_hash(obj))

    def _class(self, cls: type) -> bool:
        """A class of the user's: its source (methods included), what its methods reach, and its
        own bases (a base class in another module edited is a change too). Whether it is the user's."""
        mine = False
        for klass in cls.__mro__:
            if not _is_user_module(sys.modules.get(klass.__module__, types.ModuleType("?"))):
                continue
            mine = True
            if id(klass) in self.seen:
                continue
            self.seen.add(id(klass))
            self.part(f"class {klass.__qualname__} ({_file(klass)})", klass, source_hash(klass))
            for member in vars(klass).values():  # what its methods reach (their source is in the class's)
                fn = getattr(member, "__func__", getattr(member, "fget", member))
                if isinstance(fn, types.FunctionType):
                    self.function(fn, "", part=False)
        return mine


def _walked(value: Any) -> bool:
    """Whether a value is code (walked into) rather than data (hashed as a value)."""
    return isinstance(value, types.ModuleType) or callable(value)  # (classes, functions, partials...)


_CACHE: weakref.WeakKeyDictionary[Any, CodeFingerprint] = weakref.WeakKeyDictionary()
epoch = [0]
"""Bumped by every planning pass: a fingerprint is re-validated once per pass, not once per node."""


def new_epoch() -> None:
    """A planning pass starts: fingerprints are re-validated (once each) when next used."""
    epoch[0] += 1


def code_fingerprint(fn: Callable[..., Any]) -> CodeFingerprint:
    """The fingerprint of a task function's code, computed once and re-validated once per pass."""
    fp = _CACHE.get(fn)
    if fp is not None and fp.checked == epoch[0]:
        return fp
    if fp is None or not fp.valid():
        fp = _CACHE[fn] = CodeFingerprint(fn)
    fp.checked = epoch[0]
    return fp
