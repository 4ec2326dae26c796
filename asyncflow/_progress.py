"""Progress of a command-line run on stderr: a rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from . import events


class Reporter:
    """Progress on stderr: a rich bar on a terminal, plain lines otherwise, nothing when quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.done = self.failed = self.running = self.skipped = 0
        self.started = time.monotonic()
        self.bar: Any = None
        self.task_id: Any = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task_id = self.bar.add_task("starting", total=None)

    def __enter__(self) -> Reporter:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, event: Any) -> None:
        if isinstance(event, events.TaskStarted):
            if event.attempt == 1:
                self.running += 1
        elif isinstance(event, events.TaskSucceeded):
            self.running -= 1
            self.done += 1
            self._line(f"ran {event.node_id} ({event.duration:.3f}s)")
        elif isinstance(event, events.TaskFailed):
            self.running = max(0, self.running - 1)
            self.failed += 1
            self._line(f"failed {event.node_id}: {event.error}")
        elif isinstance(event, events.TaskSkipped):
            self.skipped += 1
        if self.bar is not None:
            elapsed = max(time.monotonic() - self.started, 1e-6)
            finished = self.done + self.failed + self.skipped
            self.bar.update(
                self.task_id,
                description=(
                    f"done {self.done}  running {self.running}  failed {self.failed}  "
                    f"skipped {self.skipped}  {self.done / elapsed:.1f} nodes/s"
                ),
                completed=finished,
                total=finished + self.running,
            )

    def interrupted(self) -> str:
        """What a run stopped by Ctrl-C had done (from the events seen)."""
        return (
            f"asyncflow: interrupted: {self.done} ran, {self.skipped} complete (skipped), {self.failed} failed; "
            f"{self.running} running were cancelled (no partial target is left; run again to go on)"
        )

    def _line(self, text: str) -> None:
        if not self.quiet and self.bar is None:
            print(text, file=sys.stderr, flush=True)
