"""A run's events: built only when someone listens, handed to `on_event` (sync or async).

A callback that raises is dropped for the rest of the run (the run's work goes on) and the run
then fails with `FlowFailed` naming it: an event stream that silently stopped would look like a
hung run, and a task failure it is not.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Coroutine
from typing import Any

import anyio
import msgspec

from . import events as ev
from ._errors import describe, root_cause
from ._graph import FAILED, UPSTREAM_FAILED, NodeState
from ._identity import enc_hook

_PLAIN = frozenset({str, int, float, bool, type(None)})


def _has(obj: Any, name: str) -> bool:
    return obj is not None and inspect.getattr_static(obj, name, None) is not None


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """An event's parameters as plain data (a copy: a listener may keep or change it)."""
    for v in params.values():
        if type(v) not in _PLAIN:
            return msgspec.to_builtins(params, enc_hook=enc_hook)  # type: ignore[no-any-return]
    return dict(params)


class Emitter:
    """Builds and hands over one run's events; `callback` is None when nobody listens."""

    __slots__ = ("callback", "failure", "started", "told")

    def __init__(self, callback: Any) -> None:
        self.callback = callback  # (sync or async: `tell` calls it, and hands back what is to await)
        self.failure: tuple[str, BaseException] | None = None  # (message, exception) of a callback that raised
        # A running node's id and parameters, encoded for its TaskStarted and reused by its last
        # event: a fan-in's parameters (a list of 10,000 nodes) are encoded once, not per event.
        self.started: dict[NodeState, tuple[str, Any]] = {}
        # a listener that wants the planned total (looked up statically first: a mock answers any name)
        self.told = getattr(callback, "asyncflow_planned", None) if _has(callback, "asyncflow_planned") else None

    def planned(self, n: int) -> None:
        """`n` more nodes will run (or fail): told to a listener that asks (the command line's
        progress bar, for its total), never built as an event."""
        if self.told is not None:
            self.told(n)

    async def emit(self, event: Any) -> None:
        """Hand `event` to the callback (awaited when it is async)."""
        pending = self.tell(event)
        if pending is not None:
            await pending

    def tell(self, event: Any) -> Coroutine[Any, Any, None] | None:
        """Call the callback with `event`; what is left to await when it is async (None for a
        plain function: the common case costs no coroutine)."""
        callback = self.callback
        if callback is None:
            return None
        try:
            result = callback(event)
        except BaseException as e:
            self._failed(callback, event, e)
            return None
        return self._finish(callback, event, result) if hasattr(result, "__await__") else None

    async def _finish(self, callback: Any, event: Any, result: Any) -> None:
        try:
            await result
        except BaseException as e:
            self._failed(callback, event, e)

    def _failed(self, callback: Any, event: Any, e: BaseException) -> None:
        if isinstance(e, (KeyboardInterrupt, anyio.get_cancelled_exc_class())):
            raise e
        self.callback = None
        if self.failure is None:
            name = getattr(callback, "__qualname__", None) or repr(callback)
            self.failure = (
                f"on_event callback {name} raised {describe(e)} on a {type(event).__name__} event; "
                "the run went on without it",
                e,
            )

    def node(self, cls: Any, st: NodeState, **fields: Any) -> Coroutine[Any, Any, None]:
        """Build a node event of class `cls`; awaiting the result emits it (one coroutine, not two)."""
        return self.emit(self.build(cls, st, **fields))

    def node_now(self, cls: Any, st: NodeState, **fields: Any) -> Coroutine[Any, Any, None] | None:
        """Build and hand over a node event; what is left to await (an async callback's), or None."""
        return self.tell(self.build(cls, st, **fields))

    def id_of(self, st: NodeState) -> str:
        """A running node's id, as its TaskStarted event gave it (made once for events and logs)."""
        known = self.started.get(st)
        return known[0] if known is not None else st.node.make_id()

    def build(self, cls: Any, st: NodeState, **fields: Any) -> Any:
        if cls is ev.TaskStarted or cls is ev.TaskRetrying:
            known = self.started.get(st)
            if known is None:
                known = self.started[st] = (st.node.make_id(), _plain(st.node.params))
        else:  # its last event
            known = self.started.pop(st, None)
            if known is None:
                known = (st.node.make_id(), _plain(st.node.params))
        node_id, params = known
        return cls(node_id=node_id, task=st.node.task.name, params=params, timestamp=time.time(), **fields)

    def ended(self, s: NodeState) -> Any:
        """The event for a state that ended other than DONE (failed, skipped, cancelled)."""
        error = s.error
        if s.status == FAILED:
            cause = root_cause(error) if error else None
            return self.build(
                ev.TaskFailed, s, error=describe(error) if error else "", error_type=type(cause).__name__,
                duration=s.duration,
            )  # fmt: skip
        if s.status == UPSTREAM_FAILED:
            return self.build(ev.TaskSkipped, s, reason="upstream failed")
        return self.build(ev.TaskSkipped, s, reason=s.status.name.lower())
