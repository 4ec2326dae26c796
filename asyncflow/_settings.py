"""Process-wide defaults: `af.settings`, each overridable by an `ASYNCFLOW_*` environment variable.

Workflow options fall back to these; task options override the workflow for their own nodes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


@dataclass
class Settings:
    """Defaults for every workflow option (see API.md section 5)."""

    store: str = "./data"
    storage_options: dict[str, Any] = field(default_factory=dict)
    max_concurrency: int = 100
    limits: dict[str, int] = field(default_factory=dict)
    check_dependencies: bool = True
    rerun_stale: bool = True
    fail_fast: bool = False
    execution_summary: bool = True
    on_event: Callable[[Any], Any] | None = None
    log_level: str = "WARNING"

    def log_enabled(self, level: int) -> bool:
        """Whether asyncflow's own log lines at `level` are emitted (the host keeps its config)."""
        return level >= _LEVELS.get(str(self.log_level).upper(), 30)


def _from_env(settings: Settings, environ: dict[str, str]) -> Settings:
    for f in fields(settings):
        raw = environ.get(f"ASYNCFLOW_{f.name.upper()}")
        if raw is None or f.name == "on_event":
            continue
        current = getattr(settings, f.name)
        if isinstance(current, bool):
            value: Any = raw.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(current, int):
            value = int(raw)
        elif isinstance(current, dict):
            value = json.loads(raw)
        else:
            value = raw
        setattr(settings, f.name, value)
    return settings


settings = _from_env(Settings(), dict(os.environ))

OPTION_NAMES = frozenset(f.name for f in fields(Settings)) - {"log_level"}
