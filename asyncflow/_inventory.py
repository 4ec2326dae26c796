"""The run's inventory of the store: what its task folders hold (one listing each), the
fingerprint records found there, external inputs, and the publication of new targets.

A run asks its inventory whether a target exists and what it was built from; the inventory lists
each folder once and keeps its snapshot current with what the run itself writes. Other runs of
the process writing in the same folder bump the store's generation: a stale snapshot is listed
again before a node is built twice.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from ._code import code_fingerprint
from ._concurrent import run_all
from ._errors import AsyncflowError
from ._fingerprint import (
    Record,
    RecordName,
    code_hash,
    inputs_fingerprint,
    output_hash,
    own_fingerprint,
    parse_record,
    reasons,
    record_name,
    split_names,
)
from ._graph import OK, NodeState
from ._identity import enc_hook, tagged, untagged
from ._log import log
from ._store import Store, store_for_path
from ._targets import Target, store_of
from ._task import REGISTRY, external

if TYPE_CHECKING:
    from ._node import Node


Folder = tuple[Any, str]  # (store key, folder path)


class Inventory:
    """What one run knows of its stores."""

    def __init__(
        self,
        store: str | None,
        storage_options: dict[str, Any] | None,
        check_dependencies: bool,
        new_event: Callable[[], anyio.Event],
    ) -> None:
        self.store_url = store
        self.storage_options = storage_options
        self.check_dependencies = check_dependencies
        self.new_event = new_event
        self._stores: dict[Any, Store] = {}
        self.listings: dict[Folder, set[str] | anyio.Event] = {}
        self.listed_at: dict[Folder, int] = {}  # the store's generation when listed
        self.records: dict[Folder, dict[str, RecordName]] = {}  # fingerprint records, by target name
        self.checked: set[Any] = set()  # stores found usable in this run
        self.warned: set[NodeState] = set()  # records already warned about

    # stores and targets --------------------------------------------------------------------
    def store_of(self, node: Node) -> Store:
        """The store of a node's target in this run (resolved once per task)."""
        store = self._stores.get(node.task)
        if store is None:
            store = self._stores[node.task] = store_of(node, self.store_url, self.storage_options)
        return store

    def target_of(self, node: Node) -> Target | None:
        return Target(node, self.store_of(node)) if node.task.persist else None

    # what exists ----------------------------------------------------------------------------
    async def existence(self, new: list[NodeState]) -> None:
        """Fill `exists` and `record` for new states: one listing per task folder, a check per
        external input; each store is checked once before (a missing bucket fails here)."""
        folders: dict[Folder, Store] = {}
        externals: list[NodeState] = []
        groups: list[tuple[Folder, str, list[NodeState]]] = []
        by_task: dict[Any, list[NodeState]] = {}
        for st in new:
            task = st.node.task
            if task.is_external:
                externals.append(st)
            elif task.persist:
                group = by_task.get(task)
                if group is None:
                    by_task[task] = [st]
                else:
                    group.append(st)
        for task, sts in by_task.items():
            store = self.store_of(sts[0].node)
            k = (store.key, store.join(task.name))
            folders[k] = store
            groups.append((k, "." + task.format.ext, sts))
        for store in folders.values():
            if store.key not in self.checked:
                self.checked.add(store.key)
                await store.check()
        todo = [k for k in folders if k not in self.listings]
        waits = [v for k in folders if isinstance(v := self.listings.get(k), anyio.Event)]
        if todo or externals:
            for k in todo:
                self.listings[k] = self.new_event()
            calls: list[Callable[[], Awaitable[None]]] = [functools.partial(self._list, k, folders[k]) for k in todo]
            calls += [functools.partial(_check_external, st) for st in externals]
            await run_all(calls)
        for w in waits:
            await w.wait()
        for k, ext, sts in groups:
            listing = self.listings.get(k)
            if isinstance(listing, set) and listing:
                records = self.records.get(k, {})
                for st in sts:
                    name = st.node.file_stem() + ext
                    if name in listing:
                        st.exists = True
                        st.record = records.get(name)

    async def _list(self, k: Folder, store: Store) -> None:
        done = self.listings[k]
        try:
            await self._relist(k, store)
        except BaseException:
            del self.listings[k]
            raise
        finally:
            assert isinstance(done, anyio.Event)
            done.set()

    async def _relist(self, k: Folder, store: Store) -> set[str]:
        folder = k[1]
        generation = store.generation.get(folder, 0)
        names, self.records[k] = await store.listdir(folder, split_names)
        self.listings[k] = names
        self.listed_at[k] = generation
        return names  # type: ignore[no-any-return]

    # records --------------------------------------------------------------------------------
    async def read_record(self, st: NodeState) -> Record | None:
        """The record beside a node's target; None (and one warning naming the path) if it is
        missing or unreadable, so that the node is rebuilt rather than trusted."""
        target = self.target_of(st.node)
        if target is None or st.record is None:
            return None
        path = f"{target.folder}/{st.record.name}"
        try:
            return msgspec.json.decode(await target.store.read(path), type=Record)
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError) as e:
            log().warning("unreadable fingerprint record: rebuilding", path=target.store.display(path), error=str(e))
            self.warned.add(st)
            st.record = None
            return None

    async def recorded_children(self, states: list[NodeState], forced: Callable[[Node], bool]) -> list[Any]:
        """The dynamic children recorded by current-looking nodes, as `(state, [child nodes])`: a
        child that changed makes its parent pending, and an unchanged child keeps it complete."""
        out = []
        for st in states:
            rec = st.record
            if rec is None or not rec.has_children or forced(st.node) or rec.own != own_fingerprint(st.node):
                continue
            record = await self.read_record(st)
            if record is None:
                continue
            kids = []
            for described in record.children:
                try:
                    kids.append(rebind(described))
                except (AsyncflowError, LookupError, ValueError, TypeError):
                    continue  # the child's task is gone or changed its parameters: the parent is stale anyway
            out.append((st, kids))
        return out

    async def explain(self, st: NodeState) -> list[str]:
        """Why a surveyed node would run, in words (reads the record of a stale node)."""
        if not st.stale or st.record is None:
            return list(st.reasons or ())
        record = await self.read_record(st)
        current = {d.node.id: d.out_hash for d in st.deps if d.out_hash is not None}
        return reasons(st.node, record, current, st.record.own == own_fingerprint(st.node))

    def unchanged_inputs(self, st: NodeState) -> bool:
        """For a node pending only on its upstream: whether its inputs came out as recorded."""
        if st.record is None or any(d.status not in OK for d in st.deps):
            return False
        if st.record.inputs_fp != inputs_fingerprint(_inputs(list(st.deps))):
            st.stale = True
            st.reasons = ("input changed",)
            return False
        st.out_hash = st.record.output
        return True

    def listing_is_stale(self, target: Target) -> bool:
        """Whether others in this process wrote or deleted in the folder since this run listed it."""
        k = (target.store.key, target.folder)
        return k in self.listed_at and target.store.generation.get(target.folder, 0) != self.listed_at[k]

    async def built_elsewhere(self, st: NodeState, target: Target) -> bool:
        """Whether another run of this process built this node, current (same fingerprint as it
        would have now), since this run decided it had to (re-listing the folder if others wrote
        in it since this run listed it)."""
        k = (target.store.key, target.folder)
        if self.listing_is_stale(target):
            names = await self._relist(k, target.store)
        else:
            listing = self.listings.get(k)
            if st.exists or not isinstance(listing, set):
                return False  # decided from this very listing
            names = listing
        record = self.records.get(k, {}).get(target.name)
        if target.name not in names or record is None or record.own != own_fingerprint(st.node):
            return False
        if self.check_dependencies and record.inputs_fp != inputs_fingerprint(_inputs(list(st.deps))):
            return False
        st.record = record
        st.out_hash = record.output
        return True

    # publication ----------------------------------------------------------------------------
    async def drop_record(self, st: NodeState, target: Target) -> None:
        """Before someone else (a Dask worker) rewrites a target: its old record goes first, so a
        crash in between leaves a target without a record (rebuilt), never a trusted stale one."""
        k = (target.store.key, target.folder)
        old = self.records.get(k, {}).get(target.name) or st.record
        if old is not None:
            await target.store.delete([f"{target.folder}/{old.name}"])
            self.records.get(k, {}).pop(target.name, None)
            st.record = None

    async def publish(
        self, st: NodeState, target: Target, data: bytes | None, kids: list[NodeState], out_hash: str | None = None
    ) -> None:
        """Write the target and its fingerprint record (what it was built from: static upstream
        and finished dynamic children `kids`). With `data` None the target is already written (by
        a Dask worker) and `out_hash` is its output's hash."""
        node = st.node
        inputs = list(st.deps[: len(node.deps)])  # static upstream (recorded children come after)
        inputs.extend(k for k in kids if k.status in OK)
        pairs = _inputs(inputs)
        out = output_hash(data) if data is not None else out_hash
        assert out is not None
        st.out_hash = out
        own = own_fingerprint(node)
        inputs_fp = inputs_fingerprint(pairs)
        children = [describe(k.node) for k in kids]
        record = Record(
            node_id=node.id,
            own=own,
            inputs_fp=inputs_fp,
            output=out,
            code=code_hash(node.task),
            code_parts=code_fingerprint(node.task.fn).parts,
            version=node.task.version,
            inputs={d.node.id: h for d, (_, h) in zip(inputs, pairs, strict=True)},
            children=children,
            built=time.time(),
        )
        name = record_name(target.name, own, inputs_fp, out, bool(children))
        k = (target.store.key, target.folder)
        old = self.records.get(k, {}).get(target.name) or st.record
        old_path = f"{target.folder}/{old.name}" if old is not None and old.name != name else None
        record_bytes = msgspec.json.encode(record, enc_hook=enc_hook)
        if data is not None:
            await target.store.publish(target.fs_path, data, f"{target.folder}/{name}", record_bytes, old_path)
        else:
            await target.store.write(f"{target.folder}/{name}", record_bytes)
        listing = self.listings.get(k)
        if isinstance(listing, set):  # keep this run's snapshot current
            listing.add(target.name)
            parsed = parse_record(name)
            assert parsed is not None
            self.records.setdefault(k, {})[target.name] = parsed
            self.listed_at[k] = self.listed_at.get(k, 0) + 1


def describe(node: Node) -> dict[str, Any]:
    """A node as data a record keeps, from which `rebind` makes it again in a later process: its
    task name and its parameters, type-tagged, nodes among them described the same way."""
    return {"task": node.task.name, "params": {k: tagged(v, describe) for k, v in node.params.items()}}


def rebind(described: Any) -> Node:
    """The node a record's description names (the form of asyncflow 0.1, `[task, params]`, too)."""
    if isinstance(described, (list, tuple)):  # asyncflow 0.1: (task name, plain params)
        name, params = described
    else:
        name, params = described["task"], untagged(described["params"], rebind)
    if name == "external" and set(params) <= {"url", "glob"}:
        return external(**params)
    task = REGISTRY.get(name)
    if task is None:
        raise LookupError(name)
    return task.bind((), dict(params), strict=False)  # type: ignore[no-any-return]


def out_hash_of(st: NodeState) -> str:
    """The hash of a finished node's output (computed for in-memory outputs when asked)."""
    if st.out_hash is None:
        try:
            st.out_hash = output_hash(msgspec.msgpack.encode(st.output))
        except (TypeError, ValueError, RecursionError):  # not encodable: treat as changed every time
            st.out_hash = output_hash(repr(time.perf_counter_ns()).encode())
    return st.out_hash


def _inputs(deps: list[NodeState]) -> list[tuple[bytes, str]]:
    return [(d.node.key, out_hash_of(d)) for d in deps]


async def _check_external(st: NodeState) -> None:
    url = st.node.params["url"]
    mode = st.node.params.get("glob")
    store, path = store_for_path(url)
    pattern = mode is True or (mode is None and any(c in url for c in "*?[") and not await store.exists(path))
    paths = await store.glob(path) if pattern else [path]
    sums = [await store.checksum(p) for p in paths]
    found = [(p, c) for p, c in zip(paths, sums, strict=True) if c is not None]
    st.exists = bool(found)
    st.output = [store.display(p) for p, _ in found] if len(paths) != 1 or path != paths[0] else url
    st.out_hash = output_hash(repr(found).encode()) if found else None
