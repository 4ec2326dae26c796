"""asyncflow's own log lines: through structlog as the host configured it, or, when nobody
configured structlog, to stderr (structlog's default prints to stdout, which is a script's output).
asyncflow never configures structlog itself (only the command line does)."""

from __future__ import annotations

import sys
from typing import Any

import structlog


class Stderr:
    """Whatever `sys.stderr` is when a line is written (test runners and notebooks replace it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_fallback = structlog.wrap_logger(structlog.PrintLogger(file=Stderr()))  # type: ignore[arg-type]


def log() -> Any:
    """The logger for asyncflow's lines."""
    return structlog.get_logger("asyncflow") if structlog.is_configured() else _fallback
