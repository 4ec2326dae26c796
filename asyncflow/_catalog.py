"""The data catalog (pytask's, seed 004): names for nodes' outputs and for external files.

Why: a project with many repetitions of its tasks refers to data by name (`catalog["prepared_0"]`)
rather than by the call that makes it; the same names then serve as dependencies, to load results,
and to list what exists (`asyncflow catalog`). An entry is a node: using it as a parameter makes
it a dependency like any other node.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from ._errors import ParameterError, TargetError
from ._node import Node
from ._settings import check_options
from ._workflow import Workflow


class Catalog:
    """Named nodes: `catalog["raw"] = af.external("data.csv")`, `catalog["fit_0"] = fit(data="d0")`.

    Workflow options (`store=`, `storage_options=`...) given here apply to `load` and `statuses`.
    """

    def __init__(self, **options: Any) -> None:
        self._entries: dict[str, Node] = {}
        self._options = check_options(options)

    def __setitem__(self, name: str, node: Node) -> None:
        if not isinstance(name, str) or not name:
            raise ParameterError(f"a catalog entry's name must be a non-empty string, got {name!r}", param="name")
        if not isinstance(node, Node):
            raise ParameterError(
                f"catalog entry {name!r} must be a node (a task called with its parameters, or af.external(path)), "
                f"got {type(node).__name__}",
                param=name,
            )
        self._entries[name] = node

    def __getitem__(self, name: str) -> Node:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ParameterError(f"no catalog entry {name!r}{hint}", param=str(name)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, Node]]:
        return list(self._entries.items())

    def with_options(self, **options: Any) -> Catalog:
        """The same entries with these workflow options too (the command line's `--store`)."""
        other = Catalog(**{**self._options, **options})
        other._entries = dict(self._entries)
        return other

    def workflow(self, **options: Any) -> Workflow:
        """A workflow of every entry (to run them all: `await catalog.workflow().run()`)."""
        return Workflow(list(dict.fromkeys(self._entries.values())), **{**self._options, **options})

    async def load(self, name: str) -> Any:
        """An entry's output, read from its target: never built (a missing one is an `af.TargetError`
        naming the entry). An external entry gives its path."""
        node = self[name]
        flow = Workflow(node, **self._options)
        if node.task.is_external and (await flow.preview())[node] == "MISSING":
            url = str(node.params["url"])
            raise TargetError(f"catalog entry {name!r}: no file at {url}", path=url)
        try:
            return await flow.output()
        except TargetError as e:
            raise TargetError(f"catalog entry {name!r}: {e}", path=e.path) from None

    async def statuses(self) -> dict[str, str]:
        """`{name: COMPLETE | PENDING | STALE | MISSING}` for every entry (nothing runs)."""
        if not self._entries:
            return {}
        preview = await self.workflow().preview()
        return {name: preview[node] for name, node in self._entries.items()}
