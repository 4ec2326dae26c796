"""Process-wide defaults (`af.settings`, each overridable by an `ASYNCFLOW_*` variable) and `Options`,
a run's options resolved and validated once.

Workflow options fall back to the settings; task options override the workflow for their own nodes.
A bad environment value never breaks `import asyncflow`: it is remembered and raised, naming the
variable and the form it expects, when options are first resolved.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ._errors import ParameterError

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


@dataclass
class Settings:
    """Defaults for every workflow option (API.md section 5), plus `max_threads` (worker threads
    for plain-function bodies, one limiter per event loop shared by every run), `lease_seconds`
    (how long a cross-process lease of a dead holder lasts on object stores) and `log_level`."""

    store: str = "./data"
    storage_options: dict[str, Any] = field(default_factory=dict)
    max_concurrency: int = 100
    limits: dict[str, int] = field(default_factory=dict)
    check_dependencies: bool = True
    rerun_stale: bool = True
    fail_fast: bool = False
    execution_summary: bool = True
    on_event: Callable[[Any], Any] | None = None
    single_flight: str = "store"
    max_threads: int = 100
    lease_seconds: float = 30.0
    log_level: str = "WARNING"

    def log_enabled(self, level: int) -> bool:
        """Whether asyncflow's own log lines at `level` are emitted (the host keeps its config)."""
        return level >= _LEVELS.get(str(self.log_level).upper(), 30)


OPTION_NAMES = frozenset(f.name for f in fields(Settings)) - {"log_level", "max_threads", "lease_seconds"}
"""The options a workflow (and each of its runs) accepts."""

_FORMS = {
    "store": "a folder path or an fsspec URL",
    "storage_options": "a JSON object",
    "max_concurrency": "a positive integer",
    "limits": 'a JSON object of pool names to positive integers, e.g. {"db": 4}',
    "check_dependencies": "true or false",
    "rerun_stale": "true or false",
    "fail_fast": "true or false",
    "execution_summary": "true or false",
    "on_event": "a callable taking one event",
    "single_flight": '"store" (one build per node across the processes sharing the store) or "process"',
    "max_threads": "a positive integer",
    "lease_seconds": "a number of seconds of at least 0.1",
    "log_level": "one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
}


def check_option(name: str, value: Any, where: str = "option") -> Any:
    """`value` if it is valid for option `name`; a `ParameterError` naming it and its form if not."""
    ok: bool
    if name == "store":
        ok = isinstance(value, str) and bool(value.strip())
    elif name in ("storage_options",):
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
    elif name in ("max_concurrency", "max_threads"):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    elif name == "limits":
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1 for k, v in value.items()
        )
    elif name == "on_event":
        ok = value is None or callable(value)
    elif name == "single_flight":
        ok = value in ("store", "process")
    elif name == "lease_seconds":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.1 <= value < float("inf")
    elif name == "log_level":
        ok = isinstance(value, str) and value.upper() in _LEVELS
    elif name in _FORMS:
        ok = isinstance(value, bool)
    else:
        raise ParameterError(
            f"unknown {where} {name!r}; valid: {', '.join(sorted(OPTION_NAMES))}{_suggest(name)}", param=name
        )
    if not ok:
        raise ParameterError(f"{where} {name} must be {_FORMS[name]}, got {value!r}", param=name)
    return value


def _suggest(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(OPTION_NAMES), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_options(options: Mapping[str, Any], where: str = "workflow option") -> dict[str, Any]:
    """Every option of `options` checked (unknown names and bad values are `ParameterError`s)."""
    for name, value in options.items():
        if name not in OPTION_NAMES:
            raise ParameterError(
                f"unknown {where} {name!r}; valid: {', '.join(sorted(OPTION_NAMES))}{_suggest(name)}", param=name
            )
        check_option(name, value, where)
    return dict(options)


@dataclass(frozen=True)
class Options:
    """A run's options, each resolved once (run overrides, then the workflow's, then `af.settings`)
    and validated. `max_concurrency` bounds the bodies of this run only; `max_threads` is the size
    of the thread limiter every run of the event loop shares."""

    store: str
    storage_options: dict[str, Any]
    max_concurrency: int
    limits: dict[str, int]
    check_dependencies: bool
    rerun_stale: bool
    fail_fast: bool
    execution_summary: bool
    on_event: Callable[[Any], Any] | None
    single_flight: str
    max_threads: int
    lease_seconds: float
    log_info: bool
    log_warning: bool

    @classmethod
    def resolve(cls, *layers: Mapping[str, Any]) -> Options:
        """Options from `layers` (first wins), then `af.settings`; raises `ParameterError` for a bad
        value (a bad `ASYNCFLOW_*` variable included)."""
        if settings_errors:
            raise settings_errors[0]
        values: dict[str, Any] = {}
        for name in (*OPTION_NAMES, "max_threads", "lease_seconds"):
            for layer in layers:
                if name in layer:
                    values[name] = check_option(name, layer[name])
                    break
            else:
                values[name] = check_option(name, getattr(settings, name), "af.settings option")
        return cls(**values, log_info=settings.log_enabled(20), log_warning=settings.log_enabled(30))


def _from_env(settings: Settings, environ: Mapping[str, str]) -> tuple[Settings, list[ParameterError]]:
    """`settings` with the `ASYNCFLOW_*` values of `environ` applied; bad ones are returned as errors
    (naming the variable and the expected form) and leave the default in place."""
    errors: list[ParameterError] = []
    for f in fields(settings):
        var = f"ASYNCFLOW_{f.name.upper()}"
        raw = environ.get(var)
        if raw is None or f.name == "on_event":
            continue
        current = getattr(settings, f.name)
        try:
            value: Any
            if isinstance(current, bool):
                text = raw.strip().lower()
                if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError(raw)
                value = text in ("1", "true", "yes", "on")
            elif isinstance(current, int):
                value = int(raw.strip())
            elif isinstance(current, float):
                value = float(raw.strip())
            elif isinstance(current, dict):
                value = json.loads(raw)
            else:
                value = raw
            check_option(f.name, value)
        except (ValueError, RecursionError, ParameterError):
            errors.append(
                ParameterError(f"environment variable {var}={raw!r}: expected {_FORMS[f.name]}", param=f.name)
            )
            continue
        setattr(settings, f.name, value)
    return settings, errors


def from_environment(environ: Mapping[str, str]) -> Settings:
    """Settings from `ASYNCFLOW_*` variables; the first bad one raises `ParameterError` naming it."""
    result, errors = _from_env(Settings(), environ)
    if errors:
        raise errors[0]
    return result


settings, settings_errors = _from_env(Settings(), os.environ)
"""`af.settings`, and the problems found in the environment (raised when options are resolved)."""
