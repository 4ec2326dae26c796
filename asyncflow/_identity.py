"""Node identity: canonical parameter bytes, digests and readable ids, identical across processes.

Identity never touches storage. A node is its task name plus its parameters encoded canonically
*with their types*: msgspec JSON with keys sorted, where every value JSON cannot tell apart is
tagged (`{"$tuple": [...]}`, `{"$set": [...]}`, `{"$bytes": "..."}`, `{"$float": "nan"}`,
`{"$datetime": "..."}`, `{"$map": [[k, v], ...]}` for non-string keys, `{"$enum": [...]}`,
`{"$obj": [type, fields]}`; a dict whose keys could read as a tag, `$...` or `__node__`, is
`{"$dict": {...}}`), and nodes inside are their digests. Plain JSON values (strings,
numbers, booleans, None, lists, string-keyed dicts) encode exactly as before tagging existed, so
their targets keep their names. The digest of those bytes names a node's target.

Ids are readable and unambiguous: a string is shown bare unless it could be misread (it holds
`, = [ ] "` or `'` or a character that does not print, has spaces at an end, starts with `( { <`,
or reads as a number, a boolean, None or a date), then it is quoted; a value holding nodes shows
their count and a digest of the whole value; two different nodes never share an id.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import hashlib
import math
import re
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec


class HasKey:
    """Anything identified by a digest (nodes): encoded as that digest inside parameters."""

    __slots__ = ()
    key: bytes  # the 16-byte identity digest (a slot of the subclass)


_PLAIN_TYPES = frozenset({str, int, bool, type(None)})
_encoder = msgspec.json.Encoder(order="sorted")


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def tagged(value: Any, node: Any = None) -> Any:
    """`value` as plain JSON data in which every type JSON would blur is tagged; a node is its
    digest, or what `node(n)` makes of it."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if t is list:
        return [tagged(v, node) for v in value]
    if t is dict:
        if all(type(k) is str for k in value):
            plain = {k: tagged(v, node) for k, v in value.items()}
            if any(k[:1] == "$" or k == "__node__" for k in value):  # keys that read as tags: escaped
                return {"$dict": plain}
            return plain
        pairs = [[tagged(k, node), tagged(v, node)] for k, v in value.items()]
        return {"$map": sorted(pairs, key=lambda p: _encoder.encode(p[0]))}
    if isinstance(value, HasKey):
        return {"__node__": value.key.hex()} if node is None else {"$node": node(value)}
    if t is tuple:
        return {"$tuple": [tagged(v, node) for v in value]}
    if t is set or t is frozenset:
        items = [tagged(v, node) for v in value]
        return {"$set" if t is set else "$frozenset": sorted(items, key=_encoder.encode)}
    if t is bytes or t is bytearray:
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, enum.Enum):
        return {"$enum": [_type_name(value), tagged(value.value)]}
    if t is _dt.datetime:
        return {"$datetime": value.isoformat()}
    if t is _dt.date:
        return {"$date": value.isoformat()}
    if t is _dt.time:
        return {"$time": value.isoformat()}
    if t is _dt.timedelta:
        return {"$timedelta": [value.days, value.seconds, value.microseconds]}
    if t is decimal.Decimal:
        return {"$decimal": str(value)}
    if t is uuid.UUID:
        return {"$uuid": str(value)}
    if isinstance(value, _dt.datetime):  # subclasses (pandas' Timestamp...)
        return {"$datetime": value.isoformat()}
    if isinstance(value, _dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, int | float | str | tuple | list | dict):  # subclasses (namedtuples...): the
        if hasattr(value, "_asdict"):  # base value, tagged as any other (a set inside stays a set)
            fields: Any = value._asdict()
        elif isinstance(value, dict):
            fields = dict(value)
        elif isinstance(value, (list, tuple)):
            fields = list(value)
        else:
            fields = next(base(value) for base in (bool, int, float, str) if isinstance(value, base))
        return {"$obj": [_type_name(value), tagged(fields, node)]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"$obj": [_type_name(value), tagged(fields)]}
    if isinstance(value, msgspec.Struct):
        return {"$obj": [_type_name(value), tagged({f: getattr(value, f) for f in value.__struct_fields__})]}
    raise TypeError(f"{type(value).__name__} cannot be a parameter value (not encodable)")


_SIMPLE_TAGS: dict[str, Any] = {
    "$float": float,
    "$bytes": base64.b64decode,
    "$datetime": _dt.datetime.fromisoformat,
    "$date": _dt.date.fromisoformat,
    "$time": _dt.time.fromisoformat,
    "$timedelta": lambda v: _dt.timedelta(*v),
    "$decimal": decimal.Decimal,
    "$uuid": uuid.UUID,
}


def untagged(value: Any, node: Any) -> Any:
    """The value `tagged` described, with `node(description)` for nodes; `ValueError` for what
    cannot be made again from data alone (enums, objects of other types)."""
    if isinstance(value, list):
        return [untagged(v, node) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag in _SIMPLE_TAGS:
            return _SIMPLE_TAGS[tag](inner)
        if tag == "$tuple":
            return tuple(untagged(v, node) for v in inner)
        if tag in ("$set", "$frozenset"):
            items = [untagged(v, node) for v in inner]
            return set(items) if tag == "$set" else frozenset(items)
        if tag == "$map":
            return {untagged(k, node): untagged(v, node) for k, v in inner}
        if tag == "$dict":
            return {k: untagged(v, node) for k, v in inner.items()}
        if tag == "$node":
            return node(inner)
        if tag in ("$enum", "$obj", "__node__"):
            raise ValueError(f"a {tag[1:]} cannot be made again from a record")
    return {k: untagged(v, node) for k, v in value.items()}


def canonical(params: dict[str, Any]) -> bytes:
    """Deterministic, type-tagged bytes for a parameter dict (nodes replaced by their digests)."""
    for v in params.values():
        if type(v) not in _PLAIN_TYPES:
            break
    else:
        return _encoder.encode(params)  # the common case: strings, ints, booleans, None
    return _encoder.encode({k: tagged(v) for k, v in params.items()})


def digest(name: str, params: dict[str, Any]) -> bytes:
    """16-byte identity digest of a task name and its canonical parameters."""
    h = hashlib.blake2b(name.encode(), digest_size=16)
    h.update(b"\0")
    h.update(canonical(params))
    return h.digest()


def enc_hook(obj: Any) -> Any:
    """msgspec hook for parameters in events and records: a node is its digest, a set is sorted."""
    if isinstance(obj, HasKey):
        return {"__node__": obj.key.hex()}
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    raise TypeError(f"{type(obj).__name__} cannot be a parameter value (not encodable)")


_events_encoder = msgspec.json.Encoder(enc_hook=enc_hook, order="sorted")


def collection_digest(keys: list[bytes]) -> str:
    """Short digest of the nodes a parameter holds, in its target's file name (as it always was)."""
    return hashlib.blake2b(b"".join(keys), digest_size=3).hexdigest()


def _value_digest(value: Any) -> str:
    """Digest of a whole parameter value that holds nodes (the nodes and everything around them)."""
    t = type(value)
    if (t is list or t is tuple) and all(isinstance(v, HasKey) for v in value):  # a list of nodes (a
        h = hashlib.blake2b(b"$tuple" if t is tuple else b"$list", digest_size=6)  # fan-in): its keys,
        for v in value:  # without encoding a million of them
            h.update(v.key)
        return h.hexdigest()
    return hashlib.blake2b(_encoder.encode(tagged(value)), digest_size=6).hexdigest()


# readable ids ----------------------------------------------------------------------------------

_FAST_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_./@+\- ]*")
_WORDS = frozenset({"True", "False", "None"})
_NUMBER_WORDS = frozenset({"nan", "inf", "infinity", "+inf", "-inf", "+nan", "-nan"})
_NEVER_BARE = frozenset(",=[]\"'")


def bare(s: str) -> bool:
    """Whether a string can be shown unquoted in an id without being misread."""
    if _FAST_BARE.fullmatch(s) is not None and s[-1] != " ":
        return s not in _WORDS and s.lower() not in _NUMBER_WORDS
    if not s or s != s.strip() or s[0] in "({<" or any(c in _NEVER_BARE for c in s) or s in _WORDS:
        return False
    if not s.isprintable():  # a newline, a tab: one id per line stays one line
        return False
    if s.endswith(")") and "(" in s:  # reads as an object, e.g. Point(x=1)
        return False
    try:
        float(s)
        return False
    except ValueError:
        pass
    for kind in (_dt.datetime, _dt.date, _dt.time):
        try:
            kind.fromisoformat(s)
            return False
        except ValueError:
            pass
    return True


def _quote(s: str) -> str:
    return _encoder.encode(s).decode()


def _is_json(value: Any) -> bool:
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return math.isfinite(value)
    if t is list:
        return all(_is_json(v) for v in value)
    if t is dict:
        return all(type(k) is str and _is_json(v) for k, v in value.items())
    return False


def _inner(value: Any) -> str:
    """A value inside a container: strings always quoted."""
    return _quote(value) if type(value) is str else show_value(value)


def show_value(value: Any, nodes: Sequence[Any] | None = None) -> str:
    """Readable, unambiguous form of one parameter value inside a node id."""
    if nodes:
        n = len(nodes)
        if value is nodes[0]:  # the value is the node itself (a chain's `prev=node`): its own digest
            return f"<1 node {value.key.hex()[:12]}>"
        return f"<{n} node{'s' if n != 1 else ''} {_value_digest(value)}>"
    t = type(value)
    if t is bytearray:  # the same node as those bytes
        value, t = bytes(value), bytes
    if t is str:
        return value if bare(value) else _quote(value)
    if t is bool or t is int or t is float or value is None:
        return repr(value)
    if t is _dt.datetime or t is _dt.date or t is _dt.time:
        return str(value.isoformat())
    if _is_json(value):
        return _encoder.encode(value).decode()  # compact JSON, as ids have always shown lists and dicts
    if isinstance(value, enum.Enum):
        return f"<{type(value).__name__}.{value.name}>"
    if t is tuple:
        items = [_inner(v) for v in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if t is list:
        return f"[{', '.join(_inner(v) for v in value)}]"
    if t is set or t is frozenset:
        items = sorted(_inner(v) for v in value)
        inner = "{" + ", ".join(items) + "}" if items else ""
        return inner or "set()" if t is set else f"frozenset({inner})"
    if t is dict:
        items = sorted(f"{_inner(k)}: {_inner(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ", ".join(f"{f.name}={_inner(getattr(value, f.name))}" for f in dataclasses.fields(value))
        return f"{t.__name__}({fields})"
    if isinstance(value, msgspec.Struct):
        fields = ", ".join(f"{f}={_inner(getattr(value, f))}" for f in value.__struct_fields__)
        return f"{t.__name__}({fields})"
    return repr(value)  # bytes b'..', Decimal('1.5'), UUID('...'), timedelta(...)


def node_id(name: str, shown: list[tuple[str, str]]) -> str:
    """`name[k=v, ...]` over already-formatted (name, value) pairs, sorted by name."""
    if not shown:
        return name
    return f"{name}[{', '.join(f'{k}={v}' for k, v in sorted(shown))}]"


def stem_value(value: Any, nodes: Sequence[Any] | None = None) -> str:
    """The readable form of a value in a target's file name: the same as before ids quoted
    strings, so that targets of unchanged identities keep their names."""
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
        return _events_encoder.encode(value).decode()
    except TypeError:
        return repr(value)


_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")


def file_stem(shown: list[tuple[str, str]], key: bytes, limit: int = 80) -> str:
    """`{readable params}-{hash}`: a file name stem that is safe on every store."""
    readable = _UNSAFE.sub("_", ",".join(f"{k}={v}" for k, v in sorted(shown)))[:limit]
    return f"{readable}-{key.hex()[:16]}" if readable else key.hex()[:16]
