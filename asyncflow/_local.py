"""Local-disk primitives: plain `os` calls, run in worker threads (and by Dask workers).

A target is published whole or not at all. On Linux it is written to an unnamed file
(`O_TMPFILE`), its record attached as an extended attribute, then linked into place (`linkat`):
no temporary name, no rename, and a killed writer leaves nothing behind. Elsewhere (or when the
filesystem refuses) it goes to a temporary file in the target's folder, then `os.replace`.
Temporary files are named `.~asyncflow-tmp-{pid}-{session}-{n}-{target name}`: a name no target can
ever have (target names never start with a dot), whatever the parameter values.

A target's version tag is `{inode}-{size}-{mtime_ns}` (hex): another write, an edit or a copy gives
another tag.
"""

from __future__ import annotations

import errno
import glob as _glob
import hashlib
import itertools
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from ._faults import fault

TMP_PREFIX = ".~asyncflow-tmp-"
TMP_MAX_AGE = 3600.0  # seconds: a temporary file older than this is a dead writer's leftover
_LEGACY_TMP = re.compile(r"\.asyncflow-tmp-\d+-[0-9a-f]+(-\d+)?$")  # before 0.2: `.{name}.asyncflow-tmp-...`

_SESSION = secrets.token_hex(3)  # temp names: this process's pid and session, then a counter
_counter = itertools.count()


def is_temporary(name: str) -> bool:
    """Whether a file name is one of asyncflow's temporary files (never a target or a record)."""
    return name.startswith(TMP_PREFIX) or (name[:1] == "." and _LEGACY_TMP.search(name) is not None)


def temp_name(folder: str, name: str) -> str:
    """A fresh temporary path in `folder` for a file to be published as `name`."""
    return f"{folder}/{TMP_PREFIX}{os.getpid()}-{_SESSION}-{next(_counter)}-{name}"


def list_folder(folder: str) -> set[str]:
    """Names in `folder` (empty when it does not exist), temporary files left out (and swept)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return set()
    out = set()
    for n in names:
        if n[:1] == "." and is_temporary(n):
            sweep(os.path.join(folder, n))
        else:
            out.add(n)
    return out


def make_store(root: str) -> None:
    """The store's folder, made when missing (a path that cannot be one fails here, before any body
    runs). One that exists but cannot be entered is left to the operations, which name the path."""
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", root)
    except FileNotFoundError:
        os.makedirs(root, exist_ok=True)
    except PermissionError:
        pass


def sweep(path: str) -> None:
    """Remove a temporary file left by a killed writer (old enough that no live one owns it)."""
    try:
        if time.time() - os.stat(path).st_mtime > TMP_MAX_AGE:
            os.unlink(path)
    except OSError:
        pass


def exists(path: str) -> bool:
    """Like os.path.exists, but only "not found" means False: other errors are raised."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    return True


def checksum(path: str) -> str | None:
    """Content hash of the file, or None when it does not exist."""
    h = hashlib.blake2b(digest_size=8)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except FileNotFoundError:
        return None
    return h.hexdigest()


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_with_record(path: str) -> tuple[bytes, str, bytes | None]:
    """A target's bytes, tag and attached record, all from one open file (one version of it)."""
    with open(path, "rb") as f:
        fd = f.fileno()
        tag = tag_of(os.fstat(fd))
        try:
            attached: bytes | None = os.getxattr(fd, ATTRIBUTE)
        except OSError:
            attached = None
        return f.read(), tag, attached


def _open_temp(path: str) -> tuple[str, int]:
    """A new temporary file beside `path` (its folder made when missing): its name and fd."""
    folder, name = os.path.split(path)
    tmp = temp_name(folder, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        return tmp, os.open(tmp, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return tmp, os.open(tmp, flags, 0o666)


def write_atomic(path: str, data: bytes, point: str = "after_temp_write") -> None:
    """Publish `data` at `path`: a temporary file in the same folder, then an atomic rename
    (`point` names the fault point between the two)."""
    tmp, fd = _open_temp(path)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        fault(point, path)
        os.replace(tmp, path)  # atomic: the target appears whole or not at all
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


SEGMENTS = ".asyncflow"  # the subfolder of a task folder that holds its record segments (and leases)
SEGMENT_EXT = ".seg"  # what else is there: the lock file, S3 leases, temporary files
ATTRIBUTE = "user.asyncflow"  # the extended attribute that holds a target's own record
LEGACY_RECORD = ".afrec-"  # asyncflow 0.1 wrote one record file per target, `.{target}.afrec-...`


def tag_of(st: os.stat_result) -> str:
    """A file's version tag."""
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


def scan(folder: str) -> tuple[dict[str, str], list[str], list[str]]:
    """A task folder: its targets with their tags, its record segments, and asyncflow 0.1's record
    files (temporary files left out, and swept when old). Segments are listed first: each entry
    they hold then describes a target already there to list (see `_records._rewrite`)."""
    segments = segment_names(folder)
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        return {}, [], []
    targets: dict[str, str] = {}
    legacy: list[str] = []
    with entries:
        for e in entries:
            n = e.name
            if n[0] == ".":
                if n == SEGMENTS:
                    continue
                if is_temporary(n):
                    sweep(e.path)
                elif LEGACY_RECORD in n:
                    legacy.append(n)
                continue
            try:
                targets[n] = tag_of(e.stat())
            except FileNotFoundError:  # deleted meanwhile
                pass
    return targets, segments, legacy


def probe(path: str) -> tuple[str, bytes | None] | None:
    """A target's tag and its attached record (None when it has none), or None when it is missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    try:
        attached: bytes | None = os.getxattr(path, ATTRIBUTE)
    except OSError:  # no record attached, or no extended attributes here
        attached = None
    return tag_of(st), attached


def attach(path: str, value: bytes) -> bool:
    """Attach a record to a file already in place (a Dask worker wrote it); False if refused."""
    try:
        os.setxattr(path, ATTRIBUTE, value)
        return True
    except OSError:
        return False


_linkat: list[Any] = []  # [the libc linkat function], or [None] once it is known not to work here


def _libc_linkat() -> Any:
    if not _linkat:
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).linkat
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            _linkat.append(fn if hasattr(os, "O_TMPFILE") else None)
        except (OSError, AttributeError):
            _linkat.append(None)
    return _linkat[0]


_AT_FDCWD, _AT_SYMLINK_FOLLOW = -100, 0x400


def _link(fd: int, path: str) -> int:
    """Give the unnamed file `fd` the name `path` (0), or the errno."""
    import ctypes

    fn = _libc_linkat()
    if fn(_AT_FDCWD, f"/proc/self/fd/{fd}".encode(), _AT_FDCWD, os.fsencode(path), _AT_SYMLINK_FOLLOW) == 0:
        return 0
    return ctypes.get_errno()


def publish(path: str, data: bytes, attach: Callable[[str], bytes | None] | None = None) -> str:
    """Publish `data` at `path` atomically, with `attach(tag)` as its attached record (when the
    filesystem keeps extended attributes); the written file's tag."""
    folder = os.path.dirname(path)
    if _libc_linkat() is not None:
        try:
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
        except OSError:  # O_TMPFILE refused by this filesystem: the portable way
            return _publish_renamed(path, data, attach)
        try:
            tag = _fill(fd, data, attach)
            fault("after_temp_write", path)
            error = _link(fd, path)
            if error == errno.EEXIST:  # replacing a target: link under a temporary name, then rename
                tmp = temp_name(folder, os.path.basename(path))
                error = _link(fd, tmp)
                if error == 0:
                    try:
                        os.replace(tmp, path)
                    except BaseException:
                        delete([tmp])
                        raise
            if error:
                if error in (errno.EXDEV, errno.ENOENT, errno.EPERM, errno.EOPNOTSUPP, errno.EINVAL):
                    _linkat[:] = [None]  # linking an unnamed file does not work here: never again
                    return _publish_renamed(path, data, attach)
                raise OSError(error, os.strerror(error), path)
            return tag
        finally:
            os.close(fd)
    return _publish_renamed(path, data, attach)


def _fill(fd: int, data: bytes, attach: Callable[[str], bytes | None] | None) -> str:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    tag = tag_of(os.fstat(fd))
    if attach is not None:
        value = attach(tag)
        if value is not None:
            try:
                os.setxattr(fd, ATTRIBUTE, value)
            except OSError:  # no extended attributes here (or too big): the segments alone say it
                pass
    return tag


def _publish_renamed(path: str, data: bytes, attach: Callable[[str], bytes | None] | None) -> str:
    tmp, fd = _open_temp(path)
    try:
        try:
            tag = _fill(fd, data, attach)
        finally:
            os.close(fd)
        fault("after_temp_write", path)
        os.replace(tmp, path)  # atomic: the target appears whole or not at all (the inode, so the tag, stays)
    except BaseException:
        delete([tmp])
        raise
    return tag


def write_segment(folder: str, name: str, data: bytes) -> None:
    """Write a record segment (atomically: a segment is read whole or not at all)."""
    write_atomic(os.path.join(folder, SEGMENTS, name), data, "after_segment_write")


def segment_names(folder: str) -> list[str]:
    try:
        names = os.listdir(os.path.join(folder, SEGMENTS))
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(SEGMENT_EXT) and not is_temporary(n))


def read_segments(folder: str, names: list[str]) -> list[tuple[str, bytes]]:
    """The segments that are still there, as (name, bytes)."""
    out = []
    for n in names:
        try:
            out.append((n, read(os.path.join(folder, SEGMENTS, n))))
        except FileNotFoundError:  # compacted away meanwhile
            pass
    return out


def delete(paths: list[str]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def glob(pattern: str) -> list[str]:
    return sorted(_glob.glob(pattern))


# cross-process single flight: kernel record locks ---------------------------------------------

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: single flight within a process only
    fcntl = None  # type: ignore[assignment]

HAS_LOCKS = fcntl is not None
LOCK_FILE = "locks"  # in the store's own `.asyncflow/`: `locks-{shard}`, one byte of one per target
LOCK_SHARDS = 16  # the kernel keeps a file's record locks in a list: shorter lists, cheaper locks
_lock_fds: dict[str, int] = {}  # open for the process's life: closing any fd of a file drops all its locks
_lock_guard = threading.Lock()


def lock_file(root: str, shard: int) -> int:
    """The open lock file of a store (made on first use, in `{root}/.asyncflow/`: task folders are
    not touched before a target is published). Blocking: call from a thread."""
    path = os.path.join(root, SEGMENTS, f"{LOCK_FILE}-{shard:x}")
    with _lock_guard:
        fd = _lock_fds.get(path)
        if fd is None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = _lock_fds[path] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    return fd


def lock_offset(name: str) -> int:
    """Where a target's byte is in the lock file (from `task/target name`: every process agrees)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") >> 2


_held: set[tuple[int, int]] = set()  # (fd, offset) taken by this process (record locks are per process)


def try_lock(fd: int, offset: int) -> bool:
    """Take the byte at `offset`, if no other process, and no other thread or event loop of this
    one, holds it. Never blocks (one system call): the kernel releases it when the process ends,
    however it ends."""
    with _lock_guard:
        if (fd, offset) in _held:
            return False
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        _held.add((fd, offset))
        return True


def unlock(fd: int, offset: int) -> None:
    with _lock_guard:
        _held.discard((fd, offset))
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
