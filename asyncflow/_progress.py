"""Progress of a command-line run on stderr: a rich bar on a terminal, plain lines otherwise.

The bar's total is what the run planned (it grows when dynamic children appear) plus the complete
nodes it met; it shows done/total, the rate, an ETA and the failures so far, and log lines (and a
body's prints) scroll above it. Its last frame is the run's final count, as the summary says.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from . import events


class Reporter:
    """Progress on stderr: a rich bar on a terminal, plain lines otherwise, nothing when quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.done = self.failed = self.running = self.skipped = self.upstream_failed = 0
        self.planned = 0  # nodes the run will run (or fail), as it plans them
        self.started = time.monotonic()
        self.bar: Any = None
        self.task_id: Any = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                redirect_stdout=True,
                redirect_stderr=True,  # log lines and prints go above the bar, never onto it
            )
            self.task_id = self.bar.add_task("planning", total=None)

    def __enter__(self) -> Reporter:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self._refresh(final=True)
            self.bar.stop()

    def asyncflow_planned(self, n: int) -> None:
        """The run planned `n` more nodes to run (asked by the run: see `_emitter.Emitter.planned`)."""
        self.planned += n
        self._refresh()

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
            if event.reason == "complete":
                self.skipped += 1
            else:
                self.upstream_failed += 1
        self._refresh()

    def _refresh(self, final: bool = False) -> None:
        if self.bar is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        finished = self.done + self.failed + self.upstream_failed + self.skipped
        parts = [f"ran {self.done}"]
        if not final:
            parts.append(f"running {self.running}")
        parts.append(f"failed {self.failed}")
        if self.upstream_failed:
            parts.append(f"upstream failed {self.upstream_failed}")
        parts.append(f"skipped {self.skipped}")
        total = max(self.planned + self.skipped, finished)
        if final and finished < total:  # the run ended before them (fail_fast, Ctrl-C): cancelled
            parts.append(f"cancelled {total - finished}")
            finished = total
        parts.append(f"{self.done / elapsed:.1f}/s")
        self.bar.update(self.task_id, description="  ".join(parts), completed=finished, total=total or None,
                        refresh=final)  # fmt: skip

    def interrupted(self) -> str:
        """What a run stopped by Ctrl-C had done (from the events seen)."""
        return (
            f"asyncflow: interrupted: {self.done} ran, {self.skipped} complete (skipped), {self.failed} failed; "
            f"{self.running} running were cancelled (no partial target is left; run again to go on)"
        )

    def _line(self, text: str) -> None:
        if not self.quiet and self.bar is None:
            print(text, file=sys.stderr, flush=True)
