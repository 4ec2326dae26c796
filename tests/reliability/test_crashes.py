"""Killed processes (SIGKILL at fault points) leave only whole targets; a re-run does exactly the rest."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from asyncflow import _local

pytestmark = pytest.mark.slow

PIPELINE = textwrap.dedent(
    """
    import os, sys
    import asyncflow as af

    LOG = sys.argv[2]

    def note(name):
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (name + "\\n").encode())
        os.close(fd)

    @af.task
    def stage(i: int) -> list[int]:
        note(f"stage[i={i}]")
        return [i] * 1000

    @af.task
    def total(parts: list) -> int:
        note("total")
        return sum(sum(p) for p in parts)

    if __name__ == "__main__":
        root = total(parts=[stage(i=i) for i in range(20)])
        print(af.run(root, store=sys.argv[1], max_concurrency=4))
    """
)


def run_pipeline(
    tmp: Path, fault: str | None = None, source: str = PIPELINE
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    script = tmp / "pipe.py"
    script.write_text(source)
    log = tmp / "ran.log"
    log.write_text("")
    env = {**os.environ, "ASYNCFLOW_EXECUTION_SUMMARY": "false"}
    env.pop("ASYNCFLOW_FAULT", None)
    if fault:
        env["ASYNCFLOW_FAULT"] = fault
    proc = subprocess.run([sys.executable, str(script), str(tmp / "store"), str(log)], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    return proc, log.read_text().split()


def _targets(folder: Path) -> set[str]:
    """The targets in a task folder (record segments and temporary files left out)."""
    return {n for n in os.listdir(folder) if not n.startswith(".")} if folder.exists() else set()


def _stages(names: set[str] | list[str]) -> set[str]:
    """`i=3` for each `stage` target name or log line given."""
    return {n.split("-")[0].replace("stage[", "").rstrip("]") for n in names if "i=" in n}


def test_kill_between_write_and_publish_leaves_no_target(tmp_path: Path) -> None:
    proc, _ = run_pipeline(tmp_path, "after_temp_write:kill:3")
    assert proc.returncode == -9
    killed = proc.stdout.split("FAULT after_temp_write ")[1].strip()
    folder = tmp_path / "store" / "stage"
    assert not os.path.exists(killed)  # the target being written when the process died is not there
    names = os.listdir(folder)
    for temp in (n for n in names if n.startswith(_local.TMP_PREFIX)):  # (none where O_TMPFILE works)
        assert temp[len(_local.TMP_PREFIX) :].split("-", 3)[3] not in names  # no target for any of them
    proc, ran = run_pipeline(tmp_path)  # the next run rebuilds what is missing
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == str(sum(range(20)) * 1000)
    assert "total" in ran and os.path.basename(killed).split("-")[0] in _stages(ran)


def test_kill_mid_run_then_resume_runs_exactly_the_incomplete_nodes(tmp_path: Path) -> None:
    proc, _first = run_pipeline(tmp_path, "after_publish:kill:8")
    assert proc.returncode == -9
    published = proc.stdout.split("FAULT after_publish ")[1].strip()
    assert published.startswith("stage[i=")
    present = _stages(_targets(tmp_path / "store" / "stage"))
    assert 8 <= len(present) < 20  # (publications are batched: a few more may have landed)
    proc, second = run_pipeline(tmp_path)
    assert proc.returncode == 0
    again = [r for r in second if r.startswith("stage")]
    # each target carries its record (an extended attribute): every one present is whole and trusted
    assert len(again) == len(set(again)) == 20 - len(present)
    assert not _stages(again) & present
    assert second[-1] == "total"
    assert proc.stdout.strip().splitlines()[-1] == str(sum(range(20)) * 1000)


def test_kill_between_target_and_record_rebuilds_targets_without_a_record(tmp_path: Path) -> None:
    proc, _ = run_pipeline(tmp_path, "before_record:kill:6")
    assert proc.returncode == -9
    killed = proc.stdout.split("FAULT before_record ")[1].strip()
    folder = tmp_path / "store" / "stage"
    assert os.path.exists(killed)  # in place, its entry in the folder's segments never written
    present = _targets(folder)
    for name in present:  # as on a filesystem without extended attributes: the segments alone tell
        os.removexattr(folder / name, _local.ATTRIBUTE)
    proc, second = run_pipeline(tmp_path)
    assert proc.returncode == 0
    again = _stages([r for r in second if r.startswith("stage")])
    assert _stages([os.path.basename(killed)]) <= again  # a target without a matching record: rebuilt
    assert {f"i={i}" for i in range(20)} - _stages(present) <= again  # and every missing one
    assert len(again) < 20  # the targets whose entries were written are trusted
    assert proc.stdout.strip().splitlines()[-1] == str(sum(range(20)) * 1000)
    proc, third = run_pipeline(tmp_path)
    assert third == []  # now whole and trusted


def test_kill_while_writing_a_segment_keeps_every_target_and_its_record(tmp_path: Path) -> None:
    proc, _ = run_pipeline(tmp_path, "after_segment_write:kill:1")
    assert proc.returncode == -9
    killed = proc.stdout.split("FAULT after_segment_write ")[1].strip()
    assert not os.path.exists(killed)  # the segment being written is not there, not even in part
    present = _stages(_targets(tmp_path / "store" / "stage"))
    assert present  # targets published before their entries reached a segment
    proc, second = run_pipeline(tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == str(sum(range(20)) * 1000)
    again = _stages([r for r in second if r.startswith("stage")])
    assert not again & present  # each carries its record: trusted without the lost segment
    assert again == {f"i={i}" for i in range(20)} - present


def test_leftover_temporary_files_are_ignored_and_swept_by_age(tmp_path: Path) -> None:
    folder = tmp_path / "store" / "stage"
    folder.mkdir(parents=True)
    old = folder / f"{_local.TMP_PREFIX}1-dead-0-i=1-0000000000000000.json"
    legacy = folder / ".i=3-0000000000000000.json.asyncflow-tmp-1-dead00-0"  # written by asyncflow 0.1
    fresh = folder / f"{_local.TMP_PREFIX}2-live-0-i=2-0000000000000000.json"
    old.write_bytes(b"partial")
    legacy.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    long_ago = time.time() - 2 * _local.TMP_MAX_AGE
    os.utime(old, (long_ago, long_ago))
    os.utime(legacy, (long_ago, long_ago))
    proc, ran = run_pipeline(tmp_path)
    assert proc.returncode == 0
    assert len([r for r in ran if r.startswith("stage")]) == 20  # temporaries never count as complete
    assert not old.exists() and not legacy.exists()  # a dead writer's leftover is swept
    assert fresh.exists()  # a live writer's temporary is left alone


def test_two_processes_racing_on_the_same_targets_both_finish_whole(tmp_path: Path) -> None:
    slow = PIPELINE.replace('note(f"stage[i={i}]")', 'note(f"stage[i={i}]"); import time; time.sleep(0.05)')
    script = tmp_path / "pipe.py"
    script.write_text(slow)
    env = {**os.environ, "ASYNCFLOW_EXECUTION_SUMMARY": "false"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "store"), str(tmp_path / f"log{k}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert {o[0].strip().splitlines()[-1] for o in outs} == {str(sum(range(20)) * 1000)}
    proc, ran = run_pipeline(tmp_path, source=slow)
    assert ran == []  # everything whole, current, and trusted by a third process
    assert proc.stdout.strip().splitlines()[-1] == str(sum(range(20)) * 1000)
