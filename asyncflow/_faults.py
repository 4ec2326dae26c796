"""Fault points: named places where tests make asyncflow crash, fail or wait, deterministically.

In-process, tests put a callable in `HOOKS[point]`. In a subprocess, the environment variable
`ASYNCFLOW_FAULT=point:action[:n]` arms one: at the n-th time (default 1) the point is reached,
`kill` prints `FAULT point detail` and SIGKILLs the process, `raise` raises OSError. Points:
`after_temp_write` (a local target is written, not yet linked or renamed into place),
`after_segment_write` (the same for a folder's record segment),
`before_publish`, `before_record` (a target is in place, with the record it carries where the store
attaches them, its entry in the folder's segments not yet written), `after_publish` (a target and
its record are in place), `after_plan` (before any body runs).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

HOOKS: dict[str, Callable[[str], None]] = {}


def fault(point: str, detail: str = "") -> None:
    """Reached `point`: run its hook, if a test armed one (a dict lookup otherwise)."""
    hook = HOOKS.get(point)
    if hook is not None:
        hook(detail)


def _arm_from_environment() -> None:
    spec = os.environ.get("ASYNCFLOW_FAULT")
    if not spec:
        return
    point, _, rest = spec.partition(":")
    action, _, nth = rest.partition(":")
    if action not in ("kill", "raise") or not (nth or "1").isdigit():  # a test's typo: said, never fatal
        print(f"asyncflow: ignored ASYNCFLOW_FAULT={spec!r} (expected point:kill|raise[:n])", file=sys.stderr)
        return
    remaining = [int(nth or 1)]

    def hook(detail: str) -> None:
        remaining[0] -= 1
        if remaining[0] > 0:
            return
        print(f"FAULT {point} {detail}", flush=True)
        sys.stderr.flush()
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(f"fault injected at {point}")

    HOOKS[point] = hook


_arm_from_environment()
