"""The asyncflow exception tree.

    AsyncflowError
    ├── ParameterError       a task was bound with unknown, missing or mistyped parameters
    ├── CycleError           a task depends on itself, statically or while running
    ├── MissingInputError    an `af.external` input does not exist
    ├── TargetError          a target is missing, corrupt or unreadable
    ├── SerializationError   an output its format cannot encode
    ├── StorageError         the store itself failed (denied, unreachable, full)
    ├── TaskFailed           one node failed; its exception is the `__cause__`
    └── FlowFailed           a run had failures; carries the `RunResult`

Every error names what it is about (task, parameter, node id or path) and, where one is obvious,
ends with the fix.
"""

from __future__ import annotations

import os
import traceback
from typing import Any


class AsyncflowError(Exception):
    """Base class of every error asyncflow raises on purpose."""


class ParameterError(AsyncflowError, TypeError):
    """A task was bound with an unknown, missing or mistyped parameter, or declared badly."""

    def __init__(self, message: str, *, task: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.task = task
        self.param = param


class CycleError(AsyncflowError):
    """A dependency cycle: `path` lists the node ids (or task names) from start back to start."""

    def __init__(self, path: list[str]) -> None:
        self.path = list(path)
        super().__init__("dependency cycle: " + " -> ".join(self.path))


class MissingInputError(AsyncflowError):
    """External inputs that a run needs do not exist."""

    def __init__(self, paths: list[str], needed_by: list[str] | None = None) -> None:
        self.paths = list(paths)
        self.needed_by = list(needed_by or [])
        who = f" (needed by {', '.join(self.needed_by)})" if self.needed_by else ""
        super().__init__(
            f"missing external input{'s' if len(paths) > 1 else ''}: {', '.join(self.paths)}{who}; "
            "create the file(s) or fix the path before running"
        )


class TargetError(AsyncflowError):
    """A target could not be read: missing, corrupt, or not in the expected format."""

    def __init__(self, message: str, *, path: str, format: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.format = format


class SerializationError(AsyncflowError):
    """A task's output cannot be encoded by its format; nothing was written. `suggestion` is a
    built-in format that can encode it, or None when none can."""

    def __init__(
        self, task: str, type_name: str, format: str, suggestion: str | None, cause: str, fix: str | None = None
    ) -> None:
        self.task = task
        self.type_name = type_name
        self.format = format
        self.suggestion = suggestion
        fix = fix or (
            f"use @af.task(format={suggestion!r}) or return a {format}-encodable value"
            if suggestion
            else "no built-in format can encode it: return plain data (or give the task an af.Format of your own)"
        )
        super().__init__(
            f"task {task!r} returned {'an' if type_name[:1].lower() in 'aeiou' else 'a'} {type_name}, which format "
            f"{format!r} cannot encode ({cause}); {fix}"
        )


class StorageError(AsyncflowError, OSError):
    """The store failed for a reason other than "not there" (denied, unreachable, full)."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _origin(exc: BaseException) -> str:
    """`file:line` of the innermost frame of the user's code that raised `exc` (asyncflow's own
    frames skipped: a user wants the line of theirs that did it), or '' when unknown."""
    tb = exc.__traceback__
    if tb is None:
        return ""
    frames = traceback.extract_tb(tb)
    mine = [f for f in frames if not f.filename.startswith(_PACKAGE)]
    if not mine and isinstance(exc, AsyncflowError):  # asyncflow's own check: its message says it all
        return ""
    frame = (mine or frames)[-1]
    return f"{frame.filename}:{frame.lineno}"


def root_cause(exc: BaseException) -> BaseException:
    """The user's exception beneath a chain of `TaskFailed` (and nested runs' `FlowFailed`) wrappers."""
    while isinstance(exc, (TaskFailed, FlowFailed)) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def describe(exc: BaseException) -> str:
    """`Type: message (file:line)` of the root cause, for messages and summaries."""
    cause = root_cause(exc)
    where = _origin(cause)
    text = f"{type(cause).__name__}: {cause}"
    return f"{text} ({where})" if where else text


class TaskFailed(AsyncflowError):
    """A node failed. `node_id` names it; the task's own exception is `__cause__`."""

    def __init__(self, node_id: str, cause: BaseException) -> None:
        self.node_id = node_id
        super().__init__(f"{node_id} failed: {describe(cause)}")
        self.__cause__ = cause


class FlowFailed(AsyncflowError):
    """A run finished with failures. `result` is its `RunResult`; `errors` its `TaskFailed`s.

    The first failing task's exception is the `__cause__` and leads the message. A failure that is
    no task's (an `on_event` callback that raised) comes first, as `problem` and as the cause.
    """

    def __init__(self, result: Any, errors: list[TaskFailed], problem: tuple[str, BaseException] | None = None) -> None:
        self.result = result
        self.errors = list(errors)
        self.problem = problem
        lines = [problem[0]] if problem else []
        if self.errors:
            first = self.errors[0]
            lines.append(str(first) if not problem else f"and task failure(s): {first}")
            if len(self.errors) > 1:
                lines.append(f"and {len(self.errors) - 1} more failure(s):")
                lines.extend(f"  - {e}" for e in self.errors[1:])
        super().__init__("\n".join(lines) or "the run failed")
        self.__cause__ = problem[1] if problem else root_cause(self.errors[0]) if self.errors else None
