"""Single flight across processes: who builds a node when several processes share a store.

Before a body runs, its run takes the node's lease; a process that finds it taken waits (backing
off: it never hammers the store) and, once it gets the lease, looks at the target again: built by
the holder, it is used, not rebuilt. Two kinds, by store:

- Local disk: a kernel record lock on one byte of one of the store's `.asyncflow/locks-*` files
  (the file and byte chosen by the task and target name). No file per node, one system call to take or give back, and
  the kernel releases it the moment its holder dies, however it dies: nothing expires, nothing to
  clean up. (Processes must see one kernel's locks: one machine, or an NFS with working locks.)
- S3: an object `.asyncflow/{target}.lease` made by a conditional PUT (`If-None-Match: *`): only one
  writer can create it. Its holder rewrites it every third of `lease_seconds` while the body runs;
  one older than `lease_seconds` belongs to a dead holder and is taken over. Leases given back are
  deleted together a moment later (one request per 1,000); a waiter also looks at the target
  while it waits, and uses it once built.

Other stores (memory: one process's; other fsspec filesystems: no atomic create) have single flight
within a process only.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from . import _local
from ._log import log

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._targets import Target

_GIVEN_BACK: set[str] = set()  # this process's S3 leases given back, not yet deleted (anyone here may retake them)
FIRST_WAIT = 0.01  # seconds before a waiter looks again; doubled each time, up to MAX_WAIT
MAX_WAIT = 0.5
_HOLDER = f"{os.getpid()}-{secrets.token_hex(4)}".encode()


class Lease:
    """A node's lease, held by this process until `release()`."""

    __slots__ = ("content", "elsewhere", "etag", "fd", "offset", "path", "renewed", "renewing", "target")

    def __init__(self, target: Target, fd: int = -1, offset: int = 0, path: str = "", elsewhere: bool = False) -> None:
        self.target = target
        self.elsewhere = elsewhere  # no lease: another process built the node while this one waited
        self.fd = fd
        self.offset = offset
        self.path = path
        self.etag = ""  # an S3 lease object's ETag: renewals and takeovers are conditional on it
        self.content = b""  # what this holder wrote in it
        self.renewing: anyio.CancelScope | None = None
        self.renewed: anyio.Event | None = None  # set once its renewal has stopped (nothing in flight)

    def release(self, later: list[Lease]) -> None:
        """Give the lease back (an S3 lease object goes to `later`, deleted when the run ends)."""
        if self.renewing is not None:
            self.renewing.cancel()
        if self.fd >= 0:
            _local.unlock(self.fd, self.offset)
        elif self.path:
            _GIVEN_BACK.add(self.path)
            later.append(self)


Built = Callable[[], Awaitable[bool]]
"""Whether the node's target is now there, built by another process for what this run needs."""

FLUSH_AFTER = 0.05  # seconds: S3 leases given back meanwhile are deleted together (one request per 1,000)


class RunLeases:
    """A run's leases: taken before a body runs (`single_flight="store"`), given back after it."""

    __slots__ = ("enabled", "flushing", "released", "seconds", "tg")

    def __init__(self, enabled: bool, seconds: float) -> None:
        self.enabled = enabled
        self.seconds = seconds
        self.released: list[Lease] = []  # S3 leases given back, about to be deleted
        self.flushing = False
        self.tg: TaskGroup | None = None  # the run's, while its pool works

    async def take(self, target: Target, built: Built) -> Lease | None:
        """The node's lease, once this process has it (None where the store has none); one marked
        `elsewhere` when `built()` says another process built the node while this one waited. With
        a lease, look at the target again before building: it may have been built since this run
        listed it."""
        if not self.enabled:
            return None
        how = target.store.backend.lease_kind()
        if how == "lock":
            return await _lock(target)
        if how == "object":
            assert self.tg is not None, "a run's leases are taken while its pool works"
            return await _object(target, self.seconds, self.tg, built)
        return None

    def give_back(self, lease: Lease) -> None:
        lease.release(self.released)
        if self.released and not self.flushing and self.tg is not None:
            self.flushing = True
            self.tg.start_soon(self._flush_soon)

    async def _flush_soon(self) -> None:
        await anyio.sleep(FLUSH_AFTER)
        self.flushing = False
        await self.drop()

    async def drop(self) -> None:
        """Delete the lease objects given back (best effort: one left behind only expires)."""
        if not self.released:
            return
        for lease in self.released:  # no renewal still in flight could put a deleted lease back
            if lease.renewed is not None:
                await lease.renewed.wait()
        by_store: dict[object, list[Lease]] = {}
        for lease in self.released:
            if lease.path in _GIVEN_BACK:  # (not retaken by another run meanwhile)
                _GIVEN_BACK.discard(lease.path)
                by_store.setdefault(lease.target.store.key, []).append(lease)
        self.released = []
        for leases in by_store.values():
            try:
                await leases[0].target.store.delete([lease.path for lease in leases])
            except Exception as e:
                log().warning("leases could not be deleted; they expire", count=len(leases), error=str(e))


async def _lock(target: Target) -> Lease:
    offset = _local.lock_offset(f"{target.folder.rsplit('/', 1)[-1]}/{target.name}")
    fd = await target.store.lock_file(offset % _local.LOCK_SHARDS)
    delay = FIRST_WAIT
    while not _local.try_lock(fd, offset):
        await anyio.sleep(delay)
        delay = min(delay * 2, MAX_WAIT)
    return Lease(target, fd=fd, offset=offset)


def lease_path(target: Target) -> str:
    return f"{target.folder}/{_local.SEGMENTS}/{target.name}.lease"


async def _object(target: Target, lease_seconds: float, tg: TaskGroup, built: Built) -> Lease:
    store = target.store
    path = lease_path(target)
    mine = _HOLDER + b"-" + secrets.token_hex(8).encode()  # this very lease: its ETag is its MD5
    delay = FIRST_WAIT
    while True:
        with anyio.CancelScope(shield=True):  # a PUT that succeeded is a lease held: never lose one
            etag = await store.create_exclusive(path, mine)
        if etag is not None:
            break
        seen = await store.age(path)
        if seen is None:
            continue  # released meanwhile: try again at once
        age, theirs = seen
        if theirs.strip('"') == hashlib.md5(mine).hexdigest():  # our own PUT, retried by the client
            etag = theirs
            break
        if path in _GIVEN_BACK or age > lease_seconds + 1:  # given back here, or its holder died (S3
            with anyio.CancelScope(shield=True):  # times are whole seconds): take it over, only if
                etag = await store.replace_if(path, mine, theirs)  # nobody else did meanwhile
            if etag is not None:
                if path not in _GIVEN_BACK:
                    log().warning("lease of a dead holder taken over", path=store.display(path), age=round(age, 1))
                _GIVEN_BACK.discard(path)
                break
            continue
        if await built():
            return Lease(target, elsewhere=True)  # the holder built it (its lease not deleted yet)
        await anyio.sleep(delay)
        delay = min(delay * 2, MAX_WAIT)
    lease = Lease(target, path=path)
    lease.etag, lease.content = etag, mine
    lease.renewing, lease.renewed = anyio.CancelScope(), anyio.Event()
    tg.start_soon(_renew, lease, lease_seconds)
    return lease


async def _renew(lease: Lease, lease_seconds: float) -> None:
    """Keep an S3 lease fresh while its body runs: a conditional rewrite (a holder that lost it,
    its loop stalled past the interval, stops instead of overwriting the new holder's)."""
    assert lease.renewing is not None
    assert lease.renewed is not None
    store = lease.target.store
    try:
        with lease.renewing:
            while True:
                await anyio.sleep(lease_seconds / 3)
                try:
                    etag = await store.replace_if(lease.path, lease.content, lease.etag)
                except Exception as e:  # the store is down: the body goes on, the next try may work
                    log().warning("lease renewal failed", path=store.display(lease.path), error=str(e))
                    continue
                if etag is None:
                    log().warning("lease lost to another process", path=store.display(lease.path))
                    return
                lease.etag = etag
    finally:
        lease.renewed.set()
