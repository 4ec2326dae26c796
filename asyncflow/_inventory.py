"""The run's inventory of the store: what its task folders hold, the fingerprint records that
describe their targets, external inputs, and the publication of new targets.

A run of many nodes of a task scans the task's folder once (every target's version tag, every
record segment); a run of a few probes each target alone (its tag and the record it carries), so
that its cost and memory follow the nodes it touches, not the size of the folder. Writes of other
runs of the process in a folder bump the store's generation: a node is then checked again before
it is built twice.
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
from ._faults import fault
from ._fingerprint import (
    OUTSIDE,
    Detail,
    Entry,
    code_hash,
    inputs_fingerprint,
    output_hash,
    own_fingerprint,
    reasons,
)
from ._graph import OK, NodeState
from ._identity import tagged, untagged
from ._log import log
from ._records import FolderRecords, attached_record, is_mine, load_entries, read_attached, record_log, scan
from ._store import Store, store_for_path
from ._targets import Target, store_of
from ._task import REGISTRY, external

if TYPE_CHECKING:
    from ._node import Node


Folder = tuple[Any, str]  # (store key, folder path)
FOREIGN_FRESH = 0.25  # seconds an answer of `others_published` is reused for a folder (once yes, always yes)
SMALL = 16  # a run with at most this many nodes of a task probes their targets instead of scanning the folder
_detail = msgspec.msgpack.Encoder()


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
        self.folders: dict[Folder, FolderRecords | anyio.Event] = {}  # scanned folders (or being scanned)
        self.foreign: dict[str, tuple[float, bool] | anyio.Event] = {}  # folder -> (when, others wrote records)
        self.entries: dict[Folder, FolderRecords] = {}  # segments read for probed folders
        self.probed: dict[Folder, int] = {}  # folders decided by probes: the store's generation then
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
        """Fill `exists` and `record` for new states: a scan per task folder with many of them, a
        probe per target for a few, a check per external input; each store is checked once before
        (a missing bucket fails here)."""
        by_task: dict[Any, list[NodeState]] = {}
        for st in new:
            sts = by_task.get(st.node.task)
            if sts is None:
                by_task[st.node.task] = [st]
            else:
                sts.append(st)
        by_folder: dict[Folder, tuple[Store, str, list[NodeState]]] = {}
        externals: list[NodeState] = []
        for task, sts in by_task.items():
            if task.is_external:
                externals.extend(sts)
            elif task.persist:
                store = self.store_of(sts[0].node)
                k = (store.key, store.join(task.name))
                by_folder[k] = (store, k[1], sts)
        for store, _, _ in by_folder.values():
            if store.key not in self.checked:
                self.checked.add(store.key)
                await store.check()
        calls: list[Callable[[], Awaitable[Any]]] = [functools.partial(_check_external, st) for st in externals]
        waits: list[anyio.Event] = []
        scanned: list[tuple[Folder, list[NodeState]]] = []
        for k, (store, folder, sts) in by_folder.items():
            known = self.folders.get(k)
            if isinstance(known, anyio.Event):
                waits.append(known)
                scanned.append((k, sts))
            elif known is not None:
                scanned.append((k, sts))
            elif len(sts) <= SMALL:
                self.probed.setdefault(k, store.generation.get(folder, 0))
                calls.extend(functools.partial(self._probe, st, store, k) for st in sts)
            else:
                self.folders[k] = self.new_event()
                calls.append(functools.partial(self._scan, k, store))
                scanned.append((k, sts))
        await run_all(calls) if calls else None
        for w in waits:
            await w.wait()
        for k, sts in scanned:
            view = self.folders.get(k)
            if not isinstance(view, FolderRecords):
                continue
            lost: list[NodeState] = []
            ext = "." + sts[0].node.task.format.ext
            targets, record = view.targets, view.record
            for st in sts:
                name = st.node.file_stem() + ext  # (the target's name: see Target)
                tag = targets.get(name)
                if tag is not None:
                    st.exists = True
                    st.record = record(name, tag)
                    if st.record is None:
                        lost.append(st)
            if lost:  # targets whose segment entry is missing: they may carry their own record
                store = self.store_of(lost[0].node)
                await run_all([functools.partial(self._probe, st, store, k) for st in lost])

    async def _scan(self, k: Folder, store: Store) -> None:
        scanning = self.folders[k]
        try:
            self.folders[k] = await scan(store, k[1])
        except BaseException:
            del self.folders[k]
            raise
        finally:
            assert isinstance(scanning, anyio.Event)
            scanning.set()

    async def _probe(self, st: NodeState, store: Store, k: Folder) -> None:
        """One target's existence and record, from the target alone when it carries its record."""
        target = self.target_of(st.node)
        assert target is not None
        found = await store.probe(target.fs_path)
        if found is None:
            st.exists = False
            st.record = None
            return
        tag, attached = found
        st.exists = True
        entry = read_attached(attached, target.name, tag)
        if entry is None:  # no record of its own: the folder's segments tell (or it is not asyncflow's)
            view = await self._entries(k, store)
            entry = view.record(target.name, tag) or (OUTSIDE if view.has_records(target.name) else None)
        st.record = entry

    async def _entries(self, k: Folder, store: Store) -> FolderRecords:
        view = self.folders.get(k)
        if isinstance(view, FolderRecords):
            return view
        known = self.entries.get(k)
        if known is None:
            known = self.entries[k] = await load_entries(store, k[1])
        return known

    # records --------------------------------------------------------------------------------
    async def read_record(self, st: NodeState) -> Detail | None:
        """What a node's target was built from, in full; None (and one warning naming the target)
        when it cannot be read, so that the node is rebuilt rather than trusted."""
        entry = st.record
        target = self.target_of(st.node)
        if target is None or entry is None or entry is OUTSIDE:
            return None
        detail: Detail | None = entry.details()
        if detail is None and not entry.detail:  # attached without its detail (too big): the segments have it
            store = self.store_of(st.node)
            view = await self._entries((store.key, target.folder), store)
            full = view.record(target.name, entry.tag)
            detail = full.details() if full is not None else None
        if detail is None:  # (an entry of another version cannot explain this one)
            log().warning("unreadable fingerprint record: rebuilding", path=target.path)
            self.warned.add(st)
            st.record = None
        return detail

    async def recorded_children(self, states: list[NodeState], forced: Callable[[Node], bool]) -> list[Any]:
        """The dynamic children recorded by current-looking nodes, as `(state, [child nodes])`: a
        child that changed makes its parent pending, and an unchanged child keeps it complete."""
        out = []
        for st in states:
            rec = st.record
            if rec is None or rec is OUTSIDE or not rec.children or forced(st.node):
                continue
            if rec.own != own_fingerprint(st.node):
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
        if not st.stale or st.record is None or st.record is OUTSIDE:
            return list(st.reasons or ())
        record = await self.read_record(st)
        current = {d.node.id: d.out_hash for d in st.deps if d.out_hash is not None}
        return reasons(st.node, record, current, st.record is not None and st.record.own == own_fingerprint(st.node))

    def unchanged_inputs(self, st: NodeState) -> bool:
        """For a node pending only on its upstream: whether its inputs came out as recorded."""
        rec = st.record
        if rec is None or rec is OUTSIDE or any(d.status not in OK for d in st.deps):
            return False
        if rec.inputs_fp != inputs_fingerprint(_inputs(list(st.deps))):
            st.stale = True
            st.reasons = ("input changed",)
            return False
        st.out_hash = rec.output
        return True

    async def read_trusted(self, st: NodeState, target: Target) -> tuple[bool, Any]:
        """`(True, output)` read from the target of a node found complete, if what is read is what
        this run trusted (the very version, or one built from the same fingerprint); `(False,
        None)`, with a warning, when another writer replaced it meanwhile: it must be rebuilt."""
        rec = st.record
        if rec is None:
            return True, await target.load()
        data, tag, attached = await target.read_with_record()
        if tag != rec.tag:
            entry = read_attached(attached, target.name, tag)
            if entry is None or rec is OUTSIDE or entry.own != rec.own or entry.inputs_fp != rec.inputs_fp:
                log().warning("target replaced by another writer while in use: rebuilding", path=target.path)
                return False, None
            st.record = entry
        return True, target.decode(data)

    def _changed_since(self, target: Target) -> bool:
        """Whether this process wrote or deleted in the folder since this run looked at it."""
        k = (target.store.key, target.folder)
        view = self.folders.get(k)
        seen = view.generation if isinstance(view, FolderRecords) else self.probed.get(k)
        return seen is None or target.store.generation.get(target.folder, 0) != seen

    async def built_elsewhere(self, st: NodeState, target: Target, anyone: bool = False) -> bool:
        """Whether another run of this process (`anyone`: of any process) built this node, current
        (same fingerprint as it would have now), since this run decided it had to."""
        if not anyone and not self._changed_since(target):
            return False  # decided from what is there now
        found = await target.store.probe(target.fs_path)
        if found is None:
            return False
        tag, attached = found
        entry = read_attached(attached, target.name, tag)
        if entry is None:
            k = (target.store.key, target.folder)
            self.entries.pop(k, None)
            entry = (await load_entries(target.store, target.folder)).record(target.name, tag)
        if entry is None or entry.own != own_fingerprint(st.node):
            return False
        if self.check_dependencies and entry.inputs_fp != inputs_fingerprint(_inputs(list(st.deps))):
            return False
        st.record = entry
        st.out_hash = entry.output
        return True

    # publication ----------------------------------------------------------------------------
    async def publish(
        self, st: NodeState, target: Target, data: bytes | None, kids: list[NodeState], out_hash: str | None = None
    ) -> None:
        """Write the target, then its record (what it was built from: static upstream and finished
        dynamic children `kids`), the record attached to the target too where the store can. With
        `data` None the target is already written (by a Dask worker) and `out_hash` is its output's
        hash. A crash between the two leaves a target without a record: rebuilt, never trusted."""
        node = st.node
        inputs = list(st.deps[: len(node.deps)])  # static upstream (recorded children come after)
        inputs.extend(k for k in kids if k.status in OK)
        pairs = _inputs(inputs)
        out = output_hash(data) if data is not None else out_hash
        assert out is not None
        st.out_hash = out
        children = [describe(k.node) for k in kids]
        detail = Detail(
            node_id=node.id,
            code=code_hash(node.task),
            version=node.task.version,
            inputs={d.node.id: h for d, (_, h) in zip(inputs, pairs, strict=True)},
            children=children,
            code_parts=code_fingerprint(node.task.fn).parts,
            built=time.time(),
        )
        base = Entry(
            target.name, "", own_fingerprint(node), inputs_fingerprint(pairs), out, bool(children),
            msgspec.Raw(_detail.encode(detail)),
        )  # fmt: skip

        def attach(tag: str) -> bytes:
            return attached_record(msgspec.structs.replace(base, tag=tag))

        store = target.store
        if data is not None:
            tag = await store.publish(target.fs_path, data, attach)
        else:
            found = await store.probe(target.fs_path)
            if found is None:
                raise FileNotFoundError(target.path)
            tag = found[0]
            await store.attach(target.fs_path, attach(tag))
        entry = msgspec.structs.replace(base, tag=tag)
        fault("before_record", target.path)
        await record_log(store, target.folder).add(entry)
        k = (store.key, target.folder)
        view = self.folders.get(k)
        if isinstance(view, FolderRecords):  # keep this run's view current
            view.targets[target.name] = tag
            view.add(entry)
            view.generation = store.generation.get(target.folder, 0)
        elif k in self.probed:
            self.probed[k] = store.generation.get(target.folder, 0)


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


async def others_published(inv: Inventory, target: Target) -> bool:
    """Whether another process may have published in the target's folder since this run
    looked: a record segment written by another process that this run's scan did not see.
    (A process publishes a target's record before giving its lease back, so after taking a
    lease this answers for every node of the folder with one listing, at most every 50 ms.)"""
    view = inv.folders.get((target.store.key, target.folder))
    if not isinstance(view, FolderRecords):
        return True  # decided by probes, not a scan: look at the target itself
    seen = inv.foreign.get(target.folder)
    while isinstance(seen, anyio.Event):  # another node of this run is listing it: share the answer
        await seen.wait()
        seen = inv.foreign.get(target.folder)
    if seen is not None and (seen[1] or time.monotonic() - seen[0] < FOREIGN_FRESH):
        return seen[1]
    listing = inv.foreign[target.folder] = inv.new_event()
    try:
        names = await target.store.segment_names(target.folder)
        known = set(view.segments)
        inv.foreign[target.folder] = (time.monotonic(), any(not is_mine(n) and n not in known for n in names))
    except BaseException:
        inv.foreign.pop(target.folder, None)
        raise
    finally:
        listing.set()
    return inv.foreign[target.folder][1]  # type: ignore[index]
