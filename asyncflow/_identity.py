"""Node identity: canonical parameter bytes, digests and readable ids, identical across processes.

Identity never touches storage. A node is its task name plus its parameters encoded canonically
(msgspec JSON with keys and fields sorted); the digest of those bytes names its target.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import re
from typing import Any

import msgspec


class HasKey:
    """Anything identified by a digest (nodes): encoded as that digest inside parameters."""

    __slots__ = ()
    key: bytes  # the 16-byte identity digest (a slot of the subclass)


def enc_hook(obj: Any) -> Any:
    """msgspec hook for parameter values: a node is its digest, a set is sorted."""
    if isinstance(obj, HasKey):
        return {"__node__": obj.key.hex()}
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    raise TypeError(f"{type(obj).__name__} cannot be a parameter value (not encodable)")


_encoder = msgspec.json.Encoder(enc_hook=enc_hook, order="sorted")


def canonical(params: dict[str, Any]) -> bytes:
    """Deterministic bytes for a parameter dict (nodes inside replaced by their digests)."""
    return _encoder.encode(params)


def digest(name: str, params: dict[str, Any]) -> bytes:
    """16-byte identity digest of a task name and its canonical parameters."""
    h = hashlib.blake2b(name.encode(), digest_size=16)
    h.update(b"\0")
    h.update(_encoder.encode(params))
    return h.digest()


def collection_digest(keys: list[bytes]) -> str:
    """Short digest shown for a parameter that holds nodes."""
    return hashlib.blake2b(b"".join(keys), digest_size=3).hexdigest()


def show_value(value: Any, nodes: list[Any] | None = None) -> str:
    """Readable form of one parameter value inside a node id."""
    if nodes:
        n = len(nodes)
        return f"<{n} node{'s' if n != 1 else ''} {collection_digest([x.key for x in nodes])}>"
    if isinstance(value, str):
        return value
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    try:
        return _encoder.encode(value).decode()
    except TypeError:
        return repr(value)


def node_id(name: str, shown: list[tuple[str, str]]) -> str:
    """`name[k=v, ...]` over already-formatted (name, value) pairs, sorted by name."""
    if not shown:
        return name
    return f"{name}[{', '.join(f'{k}={v}' for k, v in sorted(shown))}]"


_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")


def file_stem(shown: list[tuple[str, str]], key: bytes, limit: int = 80) -> str:
    """`{readable params}-{hash}`: a file name stem that is safe on every store."""
    readable = _UNSAFE.sub("_", ",".join(f"{k}={v}" for k, v in sorted(shown)))[:limit]
    return f"{readable}-{key.hex()[:16]}" if readable else key.hex()[:16]
