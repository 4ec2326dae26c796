"""Fingerprint records on a store: segments, attached records, group commit and compaction.

Each task folder keeps its records in *segments*, `{folder}/.asyncflow/{time}-{pid}-{session}-{n}.seg`, one
file per group commit (the records of every target published while the previous segment was being
written): thousands of targets cost a few dozen record files, not one each. A record is an `Entry`
carrying its target's version tag; it describes that target only while the target has that tag.
Where the store can, each target also carries its own record (an extended attribute locally, user
metadata on S3): a run of a few nodes decides from those, without reading the folder.

Segments accumulate as runs publish; a reader that finds many, or finds them mostly dead (entries
of targets since rewritten or removed), writes one segment of the live entries and deletes those it
read. Only the segments it read go: another process's new segment is never lost, and as entries
are trusted by tag, two segments holding entries for one target never mislead.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time

import anyio
import msgspec

from ._backends import SEGMENT_EXT, SEGMENTS, loop_resources
from ._fingerprint import Entry
from ._log import log
from ._store import Store  # noqa: TC001 - used at run time by the functions below

_encoder = msgspec.msgpack.Encoder()
_segment = msgspec.msgpack.Decoder(list[Entry])
_entry = msgspec.msgpack.Decoder(Entry)
_counter = itertools.count()
_SESSION = secrets.token_hex(3)

ATTACHED_MAX = 3000  # bytes: a record with a larger detail is attached without it (extended attributes are small)
COMPACT_AFTER = 16  # segments in a folder before a reader compacts them


def is_mine(segment: str) -> bool:
    """Whether this process wrote the segment (its name carries the pid and session)."""
    return f"-{os.getpid():x}-{_SESSION}-" in segment


def segment_name() -> str:
    """A new segment's name: time first, so that names sort as they were written."""
    return f"{time.time_ns():016x}-{os.getpid():x}-{_SESSION}-{next(_counter):x}{SEGMENT_EXT}"


def decode_segment(data: bytes, path: str = "") -> list[Entry]:
    """A segment's entries; an unreadable one (damaged outside asyncflow: segments are written
    whole) has none, with a warning naming it: its targets are rebuilt, never trusted."""
    try:
        return _segment.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        log().warning("unreadable fingerprint record segment: rebuilding what it described", path=path)
        return []


def attached_record(entry: Entry) -> bytes:
    """The bytes a target carries as its own record."""
    if len(entry.detail) > ATTACHED_MAX:
        entry = msgspec.structs.replace(entry, detail=msgspec.Raw(b""))
    return _encoder.encode(entry)


def read_attached(data: bytes | None, name: str, tag: str) -> Entry | None:
    """The record a target carries, if it is its own (same name, and the tag it was written with;
    an empty tag where the store cannot know it beforehand: S3 metadata goes with the object)."""
    if not data:
        return None
    try:
        entry = _entry.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if entry.name != name or (entry.tag and entry.tag != tag):
        return None
    return entry if entry.tag else msgspec.structs.replace(entry, tag=tag)


class FolderRecords:
    """A task folder's records as one scan found them: targets with tags, entries by target."""

    __slots__ = ("entries", "generation", "legacy", "older", "segments", "targets", "total")

    def __init__(self, targets: dict[str, str], segments: list[str], legacy: list[str], generation: int) -> None:
        self.targets = targets
        self.segments = segments
        self.legacy = legacy  # asyncflow 0.1's record files: removed as their targets are rebuilt
        self.entries: dict[str, Entry] = {}  # the latest entry per target name
        self.older: dict[str, list[Entry]] = {}  # earlier entries, for the few names with several
        self.total = 0
        self.generation = generation  # the store's count of this process's writes there, when scanned

    def add(self, entry: Entry) -> None:
        name = entry.name
        known = self.entries.get(name)
        if known is not None:
            self.older.setdefault(name, []).append(known)
        self.entries[name] = entry
        self.total += 1

    def record(self, name: str, tag: str) -> Entry | None:
        """The entry describing the target `name` as it is (with tag `tag`), if any."""
        entry = self.entries.get(name)
        if entry is None or entry.tag == tag:
            return entry
        for entry in reversed(self.older.get(name, ())):
            if entry.tag == tag:
                return entry
        return None

    def has_records(self, name: str) -> bool:
        """Whether any entry (of any version of the target) names it."""
        return name in self.entries

    def live(self) -> list[Entry]:
        """The entries that describe a target present (one per target)."""
        out = []
        for name, tag in self.targets.items():
            entry = self.record(name, tag)
            if entry is not None:
                out.append(entry)
        return out


async def _read_entries(store: Store, folder: str, view: FolderRecords) -> None:
    """Every segment's entries into `view`. A segment compacted away meanwhile (another run) is
    replaced by what the folder holds now: listed again, once, and the new segments read."""
    found = await store.read_segments(folder, view.segments)
    if len(found) < len(view.segments):
        again = [n for n in await store.segment_names(folder) if n not in set(view.segments)]
        found.extend(await store.read_segments(folder, again))
        view.segments = [n for n, _ in found]
    for name, data in found:
        for entry in decode_segment(data, store.display(f"{folder}/{SEGMENTS}/{name}")):
            view.add(entry)


async def scan(store: Store, folder: str, with_records: bool = True) -> FolderRecords:
    """One scan of a task folder: targets and tags, and (`with_records`) every segment's entries.
    Compacts the segments when there are many, or when most of their entries are dead."""
    generation = store.generation.get(folder, 0)
    targets, segments, legacy = await store.scan(folder)
    view = FolderRecords(targets, segments, legacy, generation)
    if with_records and segments:
        await _read_entries(store, folder, view)
        if len(view.segments) > 1 and (len(view.segments) > COMPACT_AFTER or view.total > 2 * len(targets) + 64):
            live = view.live()
            if len(view.segments) > COMPACT_AFTER or view.total > 2 * len(live) + 64:
                await _rewrite(store, folder, live, view.segments)
    if with_records and legacy:  # asyncflow 0.1's record files, once their targets are rebuilt (or gone)
        done = [
            n
            for n in legacy
            if _legacy_target(n) not in targets or view.record(_legacy_target(n), targets[_legacy_target(n)])
        ]
        if done:
            await store.delete([f"{folder}/{n}" for n in done])
    return view


def _legacy_target(name: str) -> str:
    """The target an asyncflow 0.1 record file `.{target}.afrec-{fingerprints}` describes."""
    return name[1:].rsplit(".afrec-", 1)[0]


async def load_entries(store: Store, folder: str) -> FolderRecords:
    """Every segment's entries of a folder, without listing its targets (for the few nodes of a
    small run whose targets carry no record of their own)."""
    generation = store.generation.get(folder, 0)
    view = FolderRecords({}, await store.segment_names(folder), [], generation)
    await _read_entries(store, folder, view)
    return view


async def _rewrite(store: Store, folder: str, live: list[Entry], read: list[str]) -> None:
    """One segment of the live entries, then the segments they came from removed (in that order:
    a crash between leaves duplicates, never a loss). Safe beside other writers: the segments were
    listed before the targets, so every entry read describes a target the listing could see (a
    target published later has its entry in a later segment, which stays)."""
    if live:
        await store.write_segment(folder, segment_name(), _encoder.encode(live))
    await store.delete_segments(folder, read)


async def forget(store: Store, folder: str, names: set[str]) -> None:
    """Remove the entries of these targets (their targets were deleted: `reset`)."""
    _, segments, legacy = await store.scan(folder)
    if legacy:
        gone = [n for n in legacy if _legacy_target(n) in names]
        await store.delete([f"{folder}/{n}" for n in gone])
    if not segments:
        return
    keep: list[Entry] = []
    dropped = False
    for name, data in await store.read_segments(folder, segments):
        for entry in decode_segment(data, store.display(f"{folder}/{SEGMENTS}/{name}")):
            if entry.name in names:
                dropped = True
            else:
                keep.append(entry)
    if dropped:
        await _rewrite(store, folder, keep, segments)


class _Pending:
    __slots__ = ("entry", "error", "written")

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.written = False
        self.error: BaseException | None = None


class RecordLog:
    """Group commit of one folder's records: `add` returns once the entry is in a written segment;
    entries added while a segment is being written go together into the next one."""

    def __init__(self, store: Store, folder: str) -> None:
        self.store = store
        self.folder = folder
        self.pending: list[_Pending] = []
        self.writing: anyio.Event | None = None

    async def add(self, entry: Entry) -> None:
        mine = _Pending(entry)
        self.pending.append(mine)
        while not mine.written:
            if self.writing is not None:
                await self.writing.wait()
                continue
            self.writing = anyio.Event()
            error: BaseException | None = None
            # let the publishers of this moment add theirs first: where a write does not wait
            # (memory), each entry would otherwise be a segment of its own
            await anyio.lowlevel.cancel_shielded_checkpoint()
            batch, self.pending = self.pending, []
            try:
                with anyio.CancelScope(shield=True):  # it holds other publishers' entries too
                    data = _encoder.encode([p.entry for p in batch])
                    await self.store.write_segment(self.folder, segment_name(), data)
            except BaseException as e:
                error = e
            finally:
                for p in batch:
                    p.written, p.error = True, error
                writing, self.writing = self.writing, None
                writing.set()
        if mine.error is not None:
            raise mine.error


def record_log(store: Store, folder: str) -> RecordLog:
    """The record log of a folder on this event loop (shared by every run of the loop)."""
    resources = loop_resources()
    key = ("records", store.key, folder)
    log = resources.get(key)
    if log is None:
        log = resources[key] = RecordLog(store, folder)
    return log
