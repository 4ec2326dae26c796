"""Output formats: how a task's output becomes bytes in its target and back.

A format is anything with `name`, `ext`, `dumps(value, type)` and `loads(data, type)`. `type` is the
task's return annotation (`typing.Any` when it has none), so JSON and msgpack decode back to
dataclasses, msgspec Structs, datetimes and so on.
"""

from __future__ import annotations

import builtins
import pickle
import typing
from typing import Any, Protocol, runtime_checkable

import msgspec

from ._errors import ParameterError, SerializationError


@runtime_checkable
class Format(Protocol):
    """How outputs are encoded. Implement it to add a format: `@af.task(format=MyFormat())`."""

    name: str
    ext: str

    def dumps(self, value: Any, type: Any) -> bytes:
        """Encode `value`; raise TypeError or ValueError when it cannot be encoded."""
        ...

    def loads(self, data: bytes, type: Any) -> Any:
        """Decode bytes written by `dumps`."""
        ...


def _dec_hook(type: Any, obj: Any) -> Any:
    return obj


class JsonFormat:
    """JSON through msgspec, decoded to the return annotation."""

    name = "json"
    ext = "json"
    _encoder = msgspec.json.Encoder()

    def __init__(self) -> None:
        self._decoders: dict[Any, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_decoders": {}}  # decoders are a cache (and not picklable): made again there

    def _decoder(self, type: Any) -> Any:
        dec = self._decoders.get(type)
        if dec is None:
            try:
                dec = msgspec.json.Decoder(type, dec_hook=_dec_hook)
            except TypeError:
                dec = msgspec.json.Decoder()
            self._decoders[type] = dec
        return dec

    def dumps(self, value: Any, type: Any) -> bytes:
        return self._encoder.encode(value)

    def loads(self, data: bytes, type: Any) -> Any:
        return self._decoder(type).decode(data)


class MsgpackFormat(JsonFormat):
    """MessagePack through msgspec: compact, binary, same types as JSON."""

    name = "msgpack"
    ext = "msgpack"
    _mp_encoder = msgspec.msgpack.Encoder()

    def _decoder(self, type: Any) -> Any:
        dec: Any = self._decoders.get(type)
        if dec is None:
            try:
                dec = msgspec.msgpack.Decoder(type, dec_hook=_dec_hook)
            except TypeError:
                dec = msgspec.msgpack.Decoder()
            self._decoders[type] = dec
        return dec

    def dumps(self, value: Any, type: Any) -> bytes:
        return self._mp_encoder.encode(value)


class PickleFormat:
    """Any picklable Python object (trusted stores only: unpickling runs code)."""

    name = "pickle"
    ext = "pkl"
    exact = True  # what reads back is the value itself: no need to read it back to check

    def dumps(self, value: Any, type: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except RecursionError:
            raise
        except Exception as e:  # PicklingError, AttributeError, or whatever a __reduce__ raises
            raise TypeError(f"{type(e).__name__}: {e}") from e

    def loads(self, data: bytes, type: Any) -> Any:
        return pickle.loads(data)


class TextFormat:
    """A `str`, stored as UTF-8."""

    name = "text"
    ext = "txt"
    exact = True

    def dumps(self, value: Any, type: Any) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"expected str, got {type_name(value)}")
        return value.encode("utf-8")

    def loads(self, data: bytes, type: Any) -> Any:
        return data.decode("utf-8")


class BytesFormat:
    """Raw `bytes`, stored as is."""

    name = "bytes"
    ext = "bin"
    exact = True

    def dumps(self, value: Any, type: Any) -> bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes, got {type_name(value)}")
        return bytes(value)

    def loads(self, data: bytes, type: Any) -> Any:
        return data


class ParquetFormat:
    """A pandas or polars DataFrame as Parquet (needs pandas + pyarrow, or polars)."""

    name = "parquet"
    ext = "parquet"
    exact = True  # (reading a frame back per node would double its cost; parquet keeps frames whole)

    def dumps(self, value: Any, type: Any) -> bytes:
        import io

        buf = io.BytesIO()
        module = getattr(value.__class__, "__module__", "")
        if module.startswith("polars"):
            value.write_parquet(buf)
        elif hasattr(value, "to_parquet"):
            try:
                value.to_parquet(buf)
            except ImportError as e:
                raise TypeError(f"{e}; install pyarrow: pip install pyarrow") from e
        else:
            raise TypeError(f"expected a pandas or polars DataFrame, got {type_name(value)}")
        return buf.getvalue()

    def loads(self, data: bytes, type: Any) -> Any:
        import io

        if "polars" in getattr(type, "__module__", ""):
            import polars

            return polars.read_parquet(io.BytesIO(data))
        try:
            import pandas
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("format 'parquet' needs pandas and pyarrow: pip install pandas pyarrow") from e
        return pandas.read_parquet(io.BytesIO(data))


FORMATS: dict[str, Any] = {
    f.name: f for f in (JsonFormat(), MsgpackFormat(), PickleFormat(), TextFormat(), BytesFormat(), ParquetFormat())
}


def get_format(spec: Any, task: str) -> Format:
    """The format named or given by a task option."""
    if isinstance(spec, str):
        try:
            return FORMATS[spec]  # type: ignore[no-any-return]
        except KeyError:
            raise ParameterError(
                f"task {task!r}: unknown format {spec!r}; use one of {', '.join(sorted(FORMATS))} "
                "or an object implementing af.Format",
                task=task,
                param="format",
            ) from None
    if isinstance(spec, Format):
        return spec
    raise ParameterError(
        f"task {task!r}: format must be a name or an af.Format (with name, ext, dumps, loads), got {spec!r}",
        task=task,
        param="format",
    )


def _non_finite(value: Any) -> bool:
    """Whether a value holds a nan or an infinity (JSON writes them as null)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is float:
            if v != v or v in (float("inf"), float("-inf")):
                return True
        elif isinstance(v, (list, tuple, set, frozenset)):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
            stack.extend(v.keys())
    return False


def encode_output(task: str, fmt: Format, value: Any, type: Any) -> tuple[bytes, Any]:
    """An output's bytes, and the value a later run would read from them (handed downstream now,
    so the first run and the next ones agree). Checked against the return annotation `type`: a
    value that does not match, or does not read back (a nan in JSON...), is a `SerializationError`
    naming the task; nothing is written then."""
    try:
        data = fmt.dumps(value, type)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise SerializationError(task, type_name(value), fmt.name, suggest_format(value, fmt.name), str(e)) from e
    if type is builtins.type(None):
        annotated, expected = "None", "None"
    else:
        annotated = getattr(type, "__name__", str(type).replace("typing.", ""))
        expected = f"a {annotated}"
    mismatch = f"return {expected}, or annotate the task with what it returns"
    if getattr(fmt, "exact", False):
        if isinstance(type, builtins.type) and type is not typing.Any and not isinstance(value, type):
            raise SerializationError(
                task, type_name(value), fmt.name, None, f"the task is annotated to return {annotated}", mismatch
            )
        return data, value
    if fmt.name == "json" and b"null" in data and _non_finite(value):
        raise SerializationError(task, type_name(value), fmt.name, suggest_format(value, fmt.name),
                                 "JSON has no nan or infinity: they would read back as None")  # fmt: skip
    try:
        back = fmt.loads(data, type)
    except msgspec.ValidationError as e:
        raise SerializationError(
            task, type_name(value), fmt.name, None, f"the task is annotated to return {annotated}: {e}", mismatch
        ) from e
    except Exception as e:
        raise SerializationError(
            task, type_name(value), fmt.name, suggest_format(value, fmt.name), f"it does not read back: {e}"
        ) from e
    return data, back


def type_name(value: Any) -> str:
    cls = type(value)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def suggest_format(value: Any, current: str) -> str | None:
    """A built-in format that really encodes `value` (tried, in order of preference), or None."""
    module = getattr(type(value), "__module__", "")
    order = ["text", "bytes"] if isinstance(value, (str, bytes, bytearray)) else []
    if module.startswith(("pandas", "polars")):
        order.append("parquet")
    order += ["json", "msgpack", "pickle"]
    for name in order:
        if name == current:
            continue
        try:
            FORMATS[name].dumps(value, Any)
        except Exception:  # RecursionError included: too deep, or self-referencing
            continue
        return name
    return None


class PartsFormat:
    """The whole output of a task with `outputs=`: a msgpack map of each part encoded by its own
    format (a DataFrame part in parquet, a list in JSON...)."""

    name = "parts"
    ext = "parts"

    def __init__(self, parts: dict[str, Format]) -> None:
        self.parts = parts

    def dumps(self, value: Any, type: Any) -> bytes:
        if not isinstance(value, dict) or set(value) != set(self.parts):
            raise TypeError(f"expected a dict of the parts {', '.join(self.parts)}")
        return msgspec.msgpack.encode({n: f.dumps(value[n], Any) for n, f in self.parts.items()})

    def loads(self, data: bytes, type: Any) -> Any:
        raw = msgspec.msgpack.decode(data, type=dict[str, bytes])
        return {n: f.loads(raw[n], Any) for n, f in self.parts.items()}
