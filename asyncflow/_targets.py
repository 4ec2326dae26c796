"""Targets: where a node's output lives, `{store}/{task}/{readable params}-{hash}.{ext}`, and how it
is read and written through the task's format.

A target knows its owner only through the small `Owner` protocol below (a node satisfies it), so
storage sits below the model: nothing here imports nodes or tasks.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._errors import TargetError
from ._formats import Format, encode_output
from ._settings import settings
from ._store import Store, get_store


class OwnerTask(Protocol):
    """The task options a target reads."""

    name: str
    format: Format
    store: str | None
    storage_options: dict[str, Any]
    persist: bool

    @property
    def return_type(self) -> Any: ...


class Owner(Protocol):
    """What a target needs of its node."""

    @property
    def task(self) -> OwnerTask: ...

    @property
    def id(self) -> str: ...

    def file_stem(self) -> str: ...


class Target:
    """A node's output location: `path` (as a URL), `store`, `folder` and `name` inside it."""

    __slots__ = ("folder", "name", "node", "store")

    def __init__(self, node: Owner, store: Store) -> None:
        self.node = node
        self.store = store
        self.folder = store.join(node.task.name)
        self.name = f"{node.file_stem()}.{node.task.format.ext}"

    @property
    def fs_path(self) -> str:
        """The path inside the filesystem (no protocol)."""
        return f"{self.folder}/{self.name}"

    @property
    def path(self) -> str:
        """The full location, as a user would pass it to fsspec."""
        return self.store.display(self.fs_path)

    @property
    def format(self) -> str:
        """The name of the task's format."""
        return self.node.task.format.name

    def __repr__(self) -> str:
        return f"<Target {self.path}>"

    def __fspath__(self) -> str:
        return self.path

    async def exists(self) -> bool:
        """Whether the target file exists (fresh check, no listing cache)."""
        return await self.store.exists(self.fs_path)

    def encode(self, value: Any) -> bytes:
        """The output as bytes, or `SerializationError` (nothing is written)."""
        return self.publishable(value)[0]

    def publishable(self, value: Any) -> tuple[bytes, Any]:
        """The output's bytes and the value a later run would read back from them, checked against
        the return annotation; `SerializationError` (nothing is written) when it cannot be."""
        task = self.node.task
        return encode_output(task.name, task.format, value, task.return_type)

    def decode(self, data: bytes) -> Any:
        """Bytes back to the output; `TargetError` naming path and format when they do not decode."""
        task = self.node.task
        try:
            return task.format.loads(data, task.return_type)
        except Exception as e:
            raise TargetError(
                f"corrupt target {self.path} (format {task.format.name}): {type(e).__name__}: {e}; "
                f"delete it (flow.reset) to rebuild it",
                path=self.path,
                format=task.format.name,
            ) from e

    async def load(self) -> Any:
        """Read and decode the output; `TargetError` when missing or corrupt."""
        try:
            data = await self.store.read(self.fs_path)
        except FileNotFoundError:
            raise self._missing() from None
        return self.decode(data)

    async def read_with_record(self) -> tuple[bytes, str, bytes | None]:
        """The target's bytes, with the version tag and attached record of what was read (so that
        a reader can tell it read the version it decided to trust); `TargetError` when missing."""
        try:
            return await self.store.read_with_record(self.fs_path)
        except FileNotFoundError:
            raise self._missing() from None

    def _missing(self) -> TargetError:
        return TargetError(
            f"no target at {self.path} for {self.node.id}; run the flow to build it", path=self.path, format=self.format
        )


def store_of(node: Owner, url: str | None, storage_options: dict[str, Any] | None) -> Store:
    """The store a node's target lives in: the task's own, else the workflow's, else the settings'."""
    task = node.task
    if task.store is not None:
        return get_store(task.store, task.storage_options or storage_options or settings.storage_options)
    return get_store(
        url or settings.store, storage_options if storage_options is not None else settings.storage_options
    )


def target_for(node: Owner, url: str | None, storage_options: dict[str, Any] | None) -> Target | None:
    """The node's target under a workflow's store, or None when the task does not persist."""
    if not node.task.persist:
        return None
    return Target(node, store_of(node, url, storage_options))
