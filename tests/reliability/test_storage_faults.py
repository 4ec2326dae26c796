"""Storage failures (disk full, permission denied) surface as errors naming the path, never as
"missing", and leave no target and no temporary file behind."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import sys
    import asyncflow as af

    @af.task(format="bytes")
    async def big() -> bytes:
        return b"x" * (1024 * 1024)

    try:
        af.run(big(), store=sys.argv[1], execution_summary=False)
    except af.FlowFailed as e:
        print(type(e.__cause__).__name__, e.__cause__)
        sys.exit(1)
    """
)


def _run(tmp: Path, store: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    script = tmp / "big.py"
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), str(store)], capture_output=True, text=True, timeout=60,
                          **kwargs)  # type: ignore[call-overload]  # fmt: skip


def test_disk_full_is_a_storage_error_and_leaves_nothing(tmp_path: Path) -> None:
    def small_disk() -> None:  # the file-size limit stands in for a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    store = tmp_path / "store"
    out = _run(tmp_path, store, preexec_fn=small_disk)
    assert out.returncode == 1, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("StorageError cannot write ")
    assert "File too large" in last and str(store / "big") in out.stdout
    assert os.listdir(store / "big") == []  # no target, and the temporary file was removed


@pytest.mark.skipif(shutil.which("capsh") is None or os.geteuid() != 0, reason="needs capsh, run as root")
def test_permission_denied_is_a_storage_error(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "big").mkdir(parents=True)
    (store / "big").chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    script = tmp_path / "big.py"
    script.write_text(SCRIPT)
    # root ignores file modes: drop the capabilities that let it
    cmd = f"{sys.executable} {script} {store}"
    out = subprocess.run(
        ["capsh", "--drop=cap_dac_override,cap_dac_read_search,cap_fowner", "--", "-c", cmd],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("StorageError cannot write ")
    assert "Permission denied" in last


def test_an_unusable_local_store_fails_before_any_body(tmp_path: Path) -> None:
    import anyio

    import asyncflow as af

    ran: list[int] = []

    @af.task
    async def never_runs(i: int) -> int:
        ran.append(i)
        return i

    (tmp_path / "a_file").write_text("not a folder")
    for store in ("/proc/asyncflow-nope", str(tmp_path / "a_file" / "store")):
        flow = af.Workflow([never_runs(i=i) for i in range(20)], store=store, execution_summary=False)
        with pytest.raises(af.StorageError, match=rf"store {store} cannot be used"):
            anyio.run(flow.run)
    assert ran == []
