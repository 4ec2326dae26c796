"""One live definition per name: tasks by name, DAGs by label.

A second, different definition under a name still in use is an error naming both (file:line);
the same definition given again (a notebook cell run again, `importlib.reload`) replaces the
first one in place, so that everything holding it sees the new code.
"""

from __future__ import annotations

import gc
import inspect
import weakref
from collections.abc import Callable
from typing import Any

from ._code import source_hash
from ._errors import ParameterError


def _site(obj: Any) -> str:
    """`file:line` where a function or class is defined."""
    code = getattr(obj, "__code__", None)
    if code is not None:
        return f"{code.co_filename}:{code.co_firstlineno}"
    try:
        return f"{inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]}"
    except (OSError, TypeError):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"


def _values_of(fn: Any) -> list[Any]:
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:
            cells.append(None)
    return [cells, fn.__defaults__, fn.__kwdefaults__]


def redefines(old: Any, new: Any) -> bool:
    """Whether `new` is the same definition as `old` given again (a notebook cell run again,
    `importlib.reload`): same module and qualified name, and new code or the same closure values.
    Same code with other closure values is a factory's second product: another task."""
    if (old.__module__, old.__qualname__) != (new.__module__, new.__qualname__):
        return False
    if not hasattr(old, "__code__") or not hasattr(new, "__code__"):
        return True  # two classes (DAGs) defined at the same place
    if source_hash(old) != source_hash(new):
        return True
    try:
        return bool(_values_of(old) == _values_of(new))
    except Exception:  # values that cannot be compared: not the same
        return False


class Registry:
    """One live definition per name (tasks by name, DAGs by label): a second, different one under
    a name still in use is an error naming both; the same definition given again replaces the
    first one *in place*, so that everything holding it (af.depends, nodes, DAGs) sees it."""

    def __init__(self, what: str, option: str) -> None:
        self.what = what  # "task" / "DAG"
        self.option = option  # the option that renames: "name" / "label"
        self._live: dict[str, weakref.ref[Any]] = {}

    def get(self, name: str) -> Any:
        ref = self._live.get(name)
        return ref() if ref is not None else None

    def names(self) -> list[str]:
        return sorted(n for n, ref in self._live.items() if ref() is not None)

    def adopt(self, name: str, obj: Any, definition: Callable[[Any], Any], replace: Callable[[Any, Any], Any]) -> Any:
        """Register `obj` under `name` and return the live object: `obj`, or what `replace(old,
        obj)` makes of a redefinition (tasks: the old object, updated in place)."""
        old = self.get(name)
        if old is not None and old is not obj:
            if redefines(definition(old), definition(obj)):
                live = replace(old, obj)
                self._live[name] = weakref.ref(live)
                return live
            first = _site(definition(old))
            del old  # (or the collection below could never free it)
            gc.collect()  # the first one may be garbage kept by a reference cycle
            if self.get(name) is not None:
                raise ParameterError(
                    f"two different {self.what}s are named {name!r}: {first} and {_site(definition(obj))}; "
                    f"give one of them another {self.option}=...",
                    task=name if self.what == "task" else None,
                    param=self.option,
                )
        self._live[name] = weakref.ref(obj)
        return obj


TASKS = Registry("task", "name")
"""Live tasks by name."""
