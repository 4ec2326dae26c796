"""The `asyncflow` command, run for real in subprocesses."""

from __future__ import annotations

import ast
import os
import pty
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocesses: the same on every backend, run once

PIPELINE = """
import datetime as dt
import enum
import sys
import asyncflow as af

class Model(enum.Enum):
    OLS = "ols"
    LOGIT = "logit"

@af.task
async def get_data(n: int = 3, when: dt.date = dt.date(2024, 1, 1)) -> list[int]:
    return list(range(n))

@af.task
async def fit(data: list[int] = af.depends(get_data), model: Model = Model.OLS, scale: float = 1.0,
              tags: list[str] = [], verbose: bool = False) -> dict:
    return {"model": model.value, "total": sum(data) * scale, "tags": tags, "verbose": verbose}

@af.task
async def boom(data: list[int] = af.depends(get_data)) -> int:
    raise ValueError("exploded on purpose")

def fits(n: int = 2):
    return [fit(n=n, model=m) for m in Model]

one = get_data(n=5)
flow = af.Workflow(fit, params={"n": 4})

class Training(af.DAG):
    label = "training"
    tasks = [get_data, fit]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipe.py").write_text(PIPELINE)
    return tmp_path


def af_cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "asyncflow", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,  # never a terminal, even under a developer's `make test`
        timeout=120,
    )


def test_console_script_and_module_are_the_same_command(project: Path) -> None:
    script = Path(sys.executable).parent / "asyncflow"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, cwd=project)
    assert out.returncode == 0 and "preview" in out.stdout and "run" in out.stdout
    assert af_cli(project, "--help").stdout == out.stdout


def test_preview_prints_the_tree_alone_on_stdout(project: Path) -> None:
    out = af_cli(project, "preview", "pipe.py:fit", "-p", "n=2")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "└─ fit[model=ols, n=2, scale=1.0, tags=[], verbose=False, when=2024-01-01] PENDING\n" + (
        "   └─ get_data[n=2, when=2024-01-01] PENDING\n"
    )


def test_run_then_everything_is_complete(project: Path) -> None:
    out = af_cli(project, "run", "pipe.py:fit", "-p", "n=2")
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert "ran get_data[n=2, when=2024-01-01]" in out.stderr  # plain lines: not a terminal
    assert "===== asyncflow execution summary =====" in out.stderr
    assert "data" in os.listdir(project)  # the default ./data store
    again = af_cli(project, "preview", "pipe.py:fit", "-p", "n=2")
    assert again.stdout.count("COMPLETE") == 2
    quiet = af_cli(project, "run", "pipe.py:fit", "-p", "n=2", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_parameters_are_converted_by_their_annotations(project: Path) -> None:
    args = ["-p", "n=4", "-p", "model=logit", "-p", "scale=0.5", "-p", "tags=[\"a\",\"b\"]", "-p", "verbose=1",
            "-p", "when=2024-02-03"]  # fmt: skip
    out = af_cli(project, "list", "pipe.py:fit", *args)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        'fit[model=logit, n=4, scale=0.5, tags=["a","b"], verbose=True, when=2024-02-03]',
        "get_data[n=4, when=2024-02-03]",
    ]
    assert "verbose=False" in af_cli(project, "list", "pipe.py:fit", "-p", "verbose=false").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "pipe.py:fit", "-p", "n=lots"], "parameter 'n' expects int, got 'lots'"),
        (["run", "pipe.py:fit", "-p", "model=probit"], "parameter 'model' expects Model"),
        (["run", "pipe.py:fit", "-p", "nope=1"], "-p nope: task 'fit' has no parameter 'nope'; it accepts"),
        (["run", "pipe.py:nothing"], "no 'nothing' in pipe.py"),
        (
            ["run", "pipe.py:fitss"],
            "it defines: Training, boom, fit, fits, flow, get_data, one; did you mean 'fits'?",
        ),  # functions too
        (["run", "missing.py:fit"], "file not found: missing.py"),
        (["run", "pipe.py"], "TARGET must be path/to/file.py:NAME"),
        (["dag", "nope", "--module", "pipe"], "unknown DAG label 'nope'; known: training"),
        (["run", "pipe.py:fit", "-k", "fit and"], "-k expression 'fit and', column 8: the expression ends too early"),
        (["run", "pipe.py:fit", "-k", "(fit or x"], "column 10: missing ')' to close the '(' of column 1"),
        (["run", "pipe.py:fit", "-k", "fit ols"], "-k expression 'fit ols', column 5: unexpected 'ols'"),
        (["run", "pipe.py:fit", "--max-concurrency", "x"], "'x' is not a valid integer"),
        (["reset", "pipe.py:fit", "--task", "nope", "--yes"], "no task 'nope' in this flow"),
    ],
)
def test_bad_usage_is_one_line_and_exit_status_2(project: Path, args: list[str], message: str) -> None:
    out = af_cli(project, *args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_failing_task_exits_1_with_traceback_then_summary(project: Path) -> None:
    out = af_cli(project, "run", "pipe.py:boom")
    assert out.returncode == 1
    tb = out.stderr.index("Traceback (most recent call last)")
    err = out.stderr.index("ValueError: exploded on purpose", tb)
    summary = out.stderr.index("===== asyncflow execution summary =====")
    assert tb < err < summary
    assert "This run failed" in out.stderr


def test_targets_can_be_nodes_functions_workflows_and_modules(project: Path) -> None:
    assert af_cli(project, "list", "pipe.py:one").stdout == "get_data[n=5, when=2024-01-01]\n"
    fits = af_cli(project, "list", "pipe:fits", "-p", "n=7").stdout.splitlines()
    assert [x for x in fits if x.startswith("fit")] == [
        "fit[model=ols, n=7, scale=1.0, tags=[], verbose=False, when=2024-01-01]",
        "fit[model=logit, n=7, scale=1.0, tags=[], verbose=False, when=2024-01-01]",
    ]
    assert af_cli(project, "list", "pipe.py:flow").stdout.splitlines()[0].startswith("fit[model=ols, n=4")
    assert af_cli(project, "run", "pipe:Training", "-q").returncode == 0


def test_k_selects_nodes_and_their_upstream_only(project: Path) -> None:
    out = af_cli(project, "preview", "pipe:fits", "-p", "n=2", "-k", "LOGIT and not ols")
    assert out.stdout.splitlines() == [
        "└─ fit[model=logit, n=2, scale=1.0, tags=[], verbose=False, when=2024-01-01] PENDING",
        "   └─ get_data[n=2, when=2024-01-01] PENDING",
    ]
    ran = af_cli(project, "run", "pipe:fits", "-p", "n=2", "-k", "logit")
    assert "ran fit[model=logit" in ran.stderr and "model=ols" not in ran.stderr
    after = af_cli(project, "preview", "pipe:fits", "-p", "n=2").stdout
    assert "fit[model=ols, n=2, scale=1.0, tags=[], verbose=False, when=2024-01-01] PENDING" in after
    assert "fit[model=logit, n=2, scale=1.0, tags=[], verbose=False, when=2024-01-01] COMPLETE" in after


def test_reset_deletes_one_tasks_targets(project: Path) -> None:
    af_cli(project, "run", "pipe.py:fit", "-q")
    unasked = af_cli(project, "reset", "pipe.py:fit", "--task", "get_data")  # stdin is no terminal here
    assert unasked.returncode == 2 and "pass --yes to confirm" in unasked.stderr
    out = af_cli(project, "reset", "pipe.py:fit", "--task", "get_data", "--yes")
    assert out.returncode == 0
    assert len(out.stdout.splitlines()) == 1 and "/get_data/" in out.stdout
    tree = af_cli(project, "preview", "pipe.py:fit").stdout
    assert "get_data[n=3, when=2024-01-01] PENDING" in tree


def test_graph_formats(project: Path) -> None:
    mermaid = af_cli(project, "graph", "pipe.py:fit").stdout
    assert mermaid.startswith("graph LR") and mermaid.count("-->") == 1
    dot = af_cli(project, "graph", "pipe.py:fit", "--format", "dot").stdout
    assert dot.startswith("digraph") and dot.count("->") == 1


def test_configuration_from_pyproject_and_environment(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.asyncflow]
            store = "from-config"
            dag_module = "pipe"
            max_concurrency = 2
            """
        )
    )
    sub = project / "sub"
    sub.mkdir()
    (sub / "pipe.py").write_text(PIPELINE)
    out = af_cli(sub, "dag", "training", "-q")  # the module comes from the nearest config
    assert out.returncode == 0, out.stderr
    assert (sub / "from-config").is_dir()
    af_cli(sub, "run", "pipe.py:one", "-q", env={"ASYNCFLOW_STORE": "from-env"})
    assert (sub / "from-env").is_dir()
    af_cli(sub, "run", "pipe.py:one", "-q", "--store", "from-flag", env={"ASYNCFLOW_STORE": "from-env"})
    assert (sub / "from-flag").is_dir()
    (project / "pyproject.toml").write_text("[tool.asyncflow]\nstroe = 'x'\n")
    bad = af_cli(sub, "run", "pipe.py:one")
    assert bad.returncode == 2 and "unknown key(s) in [tool.asyncflow]: stroe" in bad.stderr


def test_export_airflow_mirrors_the_graph(project: Path) -> None:
    out = af_cli(project, "export", "airflow", "training", "--module", "pipe", "-p", "n=4", "--retries", "5")
    assert out.returncode == 0, out.stderr
    tree = ast.parse(out.stdout)
    tasks = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "PythonOperator"]
    assert len(tasks) == 2
    edges = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.RShift)]
    assert len(edges) == 1
    assert "partial(run_node, '0:get_data', 'get_data[n=4, when=2024-01-01]')" in out.stdout
    assert "PARAMS = {'n': '4'}" in out.stdout and '"retries": 5' in out.stdout
    assert f'PYTHON = os.environ.get("ASYNCFLOW_PYTHON", {sys.executable!r})' in out.stdout
    assert repr(str(project / "data")) in out.stdout  # the store, absolute
    assert "found from" in out.stderr and "PYTHONPATH" in out.stderr  # `pipe` resolves from here only: said
    node_run = af_cli(project, "run", "pipe:Training", "-p", "n=4", "--node-at", "0:get_data")
    assert node_run.returncode == 0 and "ran get_data" in node_run.stderr and "ran fit" not in node_run.stderr
    moved = af_cli(project, "run", "pipe:Training", "-p", "n=4", "--node-at", "0:fit")
    assert moved.returncode == 2 and "not the one exported" in moved.stderr
    for typo in ("", "1", "x:y", "-1:get_data", "²:get_data"):
        bad = af_cli(project, "run", "pipe:Training", "--node-at", typo)
        assert bad.returncode == 2 and "--node-at takes N:TASK" in bad.stderr, (typo, bad.stderr)
    both = af_cli(project, "run", "pipe:Training", "--node-at", "0:get_data", "-k", "fit")
    assert both.returncode == 2 and "alone" in both.stderr
    bad_id = af_cli(project, "export", "airflow", "training", "--module", "pipe", "--dag-id", "x y")
    assert (
        bad_id.returncode == 2 and "--dag-id 'x y': Airflow takes letters" in bad_id.stderr and "'x_y'" in bad_id.stderr
    )


def test_progress_bar_on_a_terminal(project: Path) -> None:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncflow", "run", "pipe.py:fit", "-p", "n=9"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**os.environ, "COLUMNS": "150"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(60) == 0
    proc.stdout.close()  # type: ignore[union-attr]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))  # colours out
    assert "execution summary" in text
    assert "ran get_data" not in text  # on a terminal: the bar, not plain lines
    assert "2/2 ran 2  failed 0  skipped 0" in text  # the last frame: the final count


SLOW = """
import asyncio, structlog
import asyncflow as af

@af.task(persist=False)
async def leaf(i: int) -> int:
    await asyncio.sleep(0.15)
    if i == 6:
        structlog.get_logger().warning("a body says something")
    return i

@af.task(persist=False)
async def more(n: int = 4) -> int:
    return sum(await af.gather(*[leaf(i=100 + k) for k in range(n)]))

@af.task(persist=False)
async def root(parts: list[int], extra: int = af.depends(more)) -> int:
    return sum(parts) + extra

flow = root(parts=[leaf(i=i) for i in range(40)])
"""


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_progress_bar_seen_in_tmux(tmp_path: Path) -> None:
    """What a person sees in a terminal while a run goes: done/total of what was planned (growing
    when dynamic children appear), rate, ETA, a log line above the bar; then the final count."""
    (tmp_path / "slow.py").write_text(SLOW)
    session = f"af{os.getpid()}"
    root = Path(__file__).resolve().parent.parent  # the asyncflow under test, whatever tmux's environment
    command = (f"PYTHONPATH={shlex.quote(str(root))} {shlex.quote(sys.executable)} -m asyncflow run slow.py:flow "
               "--max-concurrency 4; sleep 30")  # fmt: skip
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "50", "-c", str(tmp_path),
                    command], check=True)  # fmt: skip
    frames: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pane = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
            frames.append(pane)
            if "execution summary" in pane:
                break
            time.sleep(0.1)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    bars = [line for pane in frames for line in pane.splitlines() if re.search(r"\d+/\d+ ran", line)]
    totals = {int(m.group(1)) for m in (re.search(r"\d+/(\d+) ran", b) for b in bars) if m}
    assert 42 in totals and 46 in totals  # 40 leaves, more, root; then more's 4 children
    assert any("running 4" in b and "ETA" in b and "/s" in b for b in bars)  # mid-run: rate and ETA
    last = frames[-1].splitlines()
    assert any(line.strip().startswith("━") and "46/46 ran 46  failed 0  skipped 0" in line for line in last)
    logged = [line for line in last if "a body says something" in line]
    assert logged and "━" not in logged[0]  # the log line sits above the bar, on a line of its own
    assert "Scheduled 46 nodes" in frames[-1] and "46 ran" in frames[-1]  # the summary agrees


def test_pytask_example_selects_one_estimation(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "pytask_repetition.py"
    sel = "linear_probability_data_0"  # the seed's own command line: pytask -k linear_probability_data_0
    listed = af_cli(tmp_path, "list", f"{example}:fits", "-k", sel).stdout.splitlines()
    assert listed[:2] == ["fit_model[linear_probability_data_0]", "prepare_data[data_0]"]
    assert listed[2].startswith("external[") and len(listed) == 3  # the data set
    out = af_cli(tmp_path, "run", f"{example}:fits", "-k", sel)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("\nran ") + out.stderr.startswith("ran ") == 2
    shown = af_cli(tmp_path, "show", f"{example}:catalog", "--entry", sel)
    assert shown.returncode == 0 and '"model": "linear_probability"' in shown.stdout


def test_force_and_force_all(project: Path) -> None:
    af_cli(project, "run", "pipe.py:fit", "-q")
    forced = af_cli(project, "run", "pipe.py:fit", "--force", "fit")
    assert "ran fit[" in forced.stderr and "ran get_data" not in forced.stderr
    everything = af_cli(project, "run", "pipe.py:fit", "--force-all")
    assert "ran fit[" in everything.stderr and "ran get_data" in everything.stderr
    nothing = af_cli(project, "run", "pipe.py:fit", "--max-concurrency", "1")
    assert "ran " not in nothing.stderr and nothing.returncode == 0


def test_asyncflow_alone_shows_help_and_version_is_known(tmp_path: Path) -> None:
    alone = af_cli(tmp_path)
    assert alone.returncode == 0 and "Commands:" in alone.stdout and "run" in alone.stdout
    import asyncflow

    version = af_cli(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"asyncflow {asyncflow.__version__}"


def test_every_option_of_every_command_says_what_it_does() -> None:
    import click

    from asyncflow.cli import cli

    def commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
        out: list[tuple[str, click.Command]] = []
        for name, cmd in group.commands.items():
            out.append((f"{prefix} {name}", cmd))
            if isinstance(cmd, click.Group):
                out += commands(cmd, f"{prefix} {name}")
        return out

    silent = [f"{where} {p.opts[0]}" for where, cmd in commands(cli, "asyncflow") for p in cmd.params
              if isinstance(p, click.Option) and not p.hidden and not p.help]  # fmt: skip
    assert not silent


def test_export_finds_a_dag_by_label_wherever_its_class_lives(tmp_path: Path) -> None:
    """A package whose DAG class is defined in a submodule (imported by the package), with a
    factory-made class name: the exported tasks find the DAG by its label, from another folder."""
    pkg = tmp_path / "proj" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import dags\n")
    (pkg / "dags.py").write_text(textwrap.dedent("""
        import asyncflow as af

        @af.task
        async def pkg_step(n: int = 2) -> int:
            return n * 21

        One = type("Made", (af.DAG,), {"label": "pkg dag", "tasks": [pkg_step]})
    """))  # fmt: skip
    out = af_cli(tmp_path / "proj", "export", "airflow", "pkg dag", "--module", "mypkg",
                 "--store", str(tmp_path / "store"), "--python", "python3")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "LABEL = 'pkg dag'" in out.stdout and "MODULE = 'mypkg'" in out.stdout
    assert f"PYTHONPATH = {str(tmp_path / 'proj')!r}" in out.stdout  # found from that folder only: said
    assert "/python3" in out.stdout and f"{tmp_path}/proj/python3" not in out.stdout  # looked up on PATH
    (tmp_path / "elsewhere").mkdir()
    ran = subprocess.run([sys.executable, "-m", "asyncflow", "dag", "pkg dag", "--module", "mypkg", "--store",
                          str(tmp_path / "store"), "--node-at", "0:pkg_step"], cwd=tmp_path / "elsewhere",
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path / "proj")})  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "store" / "pkg_step").is_dir()
    bad = af_cli(tmp_path / "proj", "export", "airflow", "pkg dag", "--module", "mypkg", "--store", "memory://x")
    assert bad.returncode == 2 and "a memory store lives in one process" in bad.stderr
    nope = af_cli(tmp_path / "proj", "export", "airflow", "pkg dag", "--module", "mypkg", "--python", "nopython9")
    assert nope.returncode == 2 and "--python nopython9: no such interpreter" in nope.stderr
