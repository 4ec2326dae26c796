"""Local-disk primitives: plain `os` calls, run in worker threads (and by Dask workers).

Temporary files are named `.~asyncflow-tmp-{pid}-{session}-{n}-{target name}`: a name no target
and no record can ever have (target names never start with a dot, record names never with `.~`),
whatever the parameter values. A write goes to a temporary file in the target's folder, then
`os.replace` (atomic on POSIX): the target appears whole or not at all.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import itertools
import os
import re
import secrets
import time

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


def write_atomic(path: str, data: bytes) -> None:
    """Publish `data` at `path`: a temporary file in the same folder, then an atomic rename."""
    folder, name = os.path.split(path)
    tmp = temp_name(folder, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        fault("after_temp_write", path)
        os.replace(tmp, path)  # atomic: the target appears whole or not at all
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_plain(path: str, data: bytes) -> None:
    """Write a small file in place (for files whose torn content reads as "absent", never as valid)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def publish(target: str, data: bytes, record: str, record_data: bytes, old_record: str | None) -> None:
    """Old record out, target in atomically, new record written: in one thread call."""
    if old_record is not None:  # first: a target without its record is never trusted
        delete([old_record])
    write_atomic(target, data)
    # The record's decisions are in its name; a content cut short by a crash is unreadable, which
    # means "rebuild", never "trust": so it needs no temporary file and rename.
    write_plain(record, record_data)


def delete(paths: list[str]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def glob(pattern: str) -> list[str]:
    return sorted(_glob.glob(pattern))
