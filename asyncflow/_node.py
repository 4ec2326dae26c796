"""Node: a task bound to its parameters. Hashable and equal by identity (task + canonical params).

A node describes work; it does no I/O by itself. `await node` asks the run executing the current
body (through `_context`) or, outside any run, the default runner (a small run on `af.settings`).
"""

from __future__ import annotations

import enum
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

from . import _context
from ._errors import ParameterError, TargetError
from ._identity import HasKey, bare, digest, file_stem, node_id, show_value, stem_value
from ._targets import Target, target_for

if TYPE_CHECKING:  # a type-only back reference (listed in the layering test): a node's task
    from ._task import Task


def iter_nodes(value: Any) -> Iterator[Node]:
    """The nodes inside a value: the value itself, or nested in lists, tuples and dict values, in
    order (iterative, and each container visited once: deep or self-referencing values are fine)."""
    if isinstance(value, Node):
        yield value
        return
    if not isinstance(value, (list, tuple, dict)):
        return
    seen = {id(value)}
    stack = [iter(value.values() if isinstance(value, dict) else value)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, Node):
                yield item
            elif isinstance(item, (list, tuple, dict)) and id(item) not in seen:
                seen.add(id(item))
                stack.append(iter(item.values() if isinstance(item, dict) else item))
                break
        else:
            stack.pop()


def has_nodes(value: Any) -> bool:
    """Whether `value` is or holds a node."""
    for _ in iter_nodes(value):
        return True
    return False


def replace_nodes(value: Any, output_of: Any) -> Any:
    """`value` with every node replaced by `output_of(node)`, keeping the structure."""
    if isinstance(value, Node):
        return output_of(value)
    if isinstance(value, list):
        return [replace_nodes(v, output_of) for v in value]
    if isinstance(value, tuple):
        items = [replace_nodes(v, output_of) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, dict):
        return {k: replace_nodes(v, output_of) for k, v in value.items()}
    return value


class Node(HasKey):
    """A task bound to parameters.

    `params` are the identity parameters (own, inherited, explicit nodes; defaults included);
    `args` are what the body receives, nodes still in place of their outputs.
    """

    __slots__ = ("_deps", "_id", "_stem", "args", "key", "own_code", "own_fp", "params", "task")

    task: Task
    params: dict[str, Any]
    args: dict[str, Any]

    def __init__(self, task: Task, params: dict[str, Any], args: dict[str, Any]) -> None:
        self.task = task
        self.params = params
        self.args = args
        self.key = digest(task.name, params)  # 16 bytes: task name + canonical parameters
        self._id: str | None = None
        self._deps: tuple[Node, ...] | None = None
        self._stem: str | None = None
        self.own_fp: str | None = None  # own fingerprint (code, version, params), made when first asked
        self.own_code: Any = None  # the task's code fingerprint own_fp was made from

    # identity -----------------------------------------------------------------------------
    def __hash__(self) -> int:
        return hash(self.key)  # bytes cache their hash: nothing to store per node

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return isinstance(other, Node) and other.key == self.key

    def _shown(self, show: Any = show_value) -> list[tuple[str, str]]:
        out = []
        for k, v in self.params.items():
            t = type(v)
            if t is int or t is bool:
                out.append((k, repr(v)))
            elif t is str and show is stem_value:
                out.append((k, v))
            elif t is Node:  # an upstream node (a chain's step): no walk for the nodes inside
                out.append((k, show(v, (v,))))
            elif isinstance(v, enum.Enum) and show is show_value and self.task.annotation(k) is t:
                out.append((k, show(v.value)))  # a member of the parameter's own enum: its value says it all
            else:
                nodes = list(iter_nodes(v)) if isinstance(v, (Node, list, tuple, dict)) else None
                out.append((k, show(v, nodes)))
        return out

    @property
    def id(self) -> str:
        """`name[k=v, ...]` over all parameters, sorted; readable and stable across processes."""
        if self._id is None:
            self._id = self.make_id()
        return self._id

    def make_id(self) -> str:
        """The id, without keeping it (a million cached ids would cost ~60 MB)."""
        if self._id is not None:
            return self._id
        params = self.params
        fmt = getattr(self.task, "id_format", None)
        if fmt is not None:  # `@af.task(id="{model}_{data}")`: fit_model[linear_probability_data_0]
            shown = {k: v.value if isinstance(v, enum.Enum) else v for k, v in params.items()}  # members: their value
            return f"{self.task.name}[{fmt.format(**shown)}]"
        if len(params) == 1:
            ((k, v),) = params.items()
            t = type(v)
            if t is int or t is bool:
                return f"{self.task.name}[{k}={v!r}]"
            if t is str:
                return f"{self.task.name}[{k}={v if bare(v) else show_value(v)}]"
        return node_id(self.task.name, self._shown())

    def file_stem(self) -> str:
        """The target's file name without extension: `{readable params}-{hash}`."""
        if self._stem is None:
            self._stem = file_stem(self._shown(stem_value), self.key)
        return self._stem

    def __repr__(self) -> str:
        return f"<Node {self.id}>"

    def __iter__(self) -> Any:  # the usual slip: `for row in upstream(...)` without `await`
        raise TypeError(f"{self.make_id()} is a node, not its output: `await` it in a body (`rows = await ...`)")

    def __getitem__(self, key: Any) -> Any:
        raise TypeError(f"{self.make_id()} is a node, not its output: `await` it in a body before indexing it")

    def __str__(self) -> str:
        return self.id

    # graph --------------------------------------------------------------------------------
    @property
    def deps(self) -> tuple[Node, ...]:
        """The static dependencies: nodes among the arguments, in order, without repeats; then the
        task's `after=` nodes (done first, their outputs not passed)."""
        if self._deps is None:
            seen: dict[Node, None] = {}
            for v in self.args.values():
                if isinstance(v, Node):
                    seen[v] = None
                elif isinstance(v, (list, tuple, dict)):
                    for n in iter_nodes(v):
                        seen[n] = None
            if getattr(self.task, "after", None):
                for n in self.task.after_nodes(self):
                    seen[n] = None
            self._deps = tuple(seen)
        return self._deps

    # storage ------------------------------------------------------------------------------
    @property
    def target(self) -> Target | None:
        """Where the output lives under the task's store or `af.settings.store`; None if not persisted."""
        return target_for(self, None, None)

    async def complete(self) -> bool:
        """Whether the output exists and is current (upstream too, under `check_dependencies`)."""
        return await _context.default_runner().is_complete(self)

    async def load(self) -> Any:
        """Read the output from the target; `af.TargetError` when missing or corrupt."""
        if not self.task.persist:
            if self.task.is_external:
                return self.params["url"]
            raise TargetError(f"{self.id} is not persisted (persist=False): nothing to load; await it", path="")
        target = self.target
        assert target is not None
        return await target.load()

    def __await__(self) -> Generator[Any, None, Any]:
        return _resolve(self).__await__()


async def _resolve(value: Any) -> Any:
    frame = _context.current.get()
    if frame is not None:
        return await frame.run.resolve(value, frame.state)
    remote = _context.remote.get()
    if remote is not None:
        raise ParameterError(
            f"task {remote!r} runs on a Dask worker, where `await node` cannot reach the scheduler: "
            "return the nodes instead (their outputs take their place), or run the task locally",
            task=remote,
        )
    return await _context.default_runner().resolve(value)


async def gather(*nodes: Node) -> list[Any]:
    """Run several nodes at once (from a body or anywhere) and return their outputs in order."""
    return await _resolve(list(nodes))  # type: ignore[no-any-return]
