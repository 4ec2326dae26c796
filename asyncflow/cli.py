"""The `asyncflow` command: run, preview, reset, graph, list and export flows, and run DAGs by label.

Exit status: 0 on success, 1 when a task failed (its traceback first, then the summary), 2 for bad
usage (one line on stderr saying what is wrong; never a Python traceback). Stdout carries only the
command's output (the preview tree, node ids, a graph); progress, logs and summaries go to stderr.
This is the one module that configures logging (structlog, to stderr).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import tomllib
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import msgspec
import structlog

import asyncflow as af

from ._errors import root_cause
from ._loading import Usage, convert_for, fail, import_module, load_catalog, load_flow, parse_params
from ._log import Stderr
from ._progress import Reporter
from ._render import summary
from ._select import compile_expression

CONFIG_KEYS = {
    "store",
    "storage_options",
    "max_concurrency",
    "limits",
    "check_dependencies",
    "rerun_stale",
    "fail_fast",
    "log_level",
    "dag_module",
}


# configuration ------------------------------------------------------------------------------------


def find_config(start: Path) -> tuple[Path | None, dict[str, Any]]:
    """`[tool.asyncflow]` of the nearest pyproject.toml at or above `start`."""
    for folder in [start, *start.parents]:
        path = folder / "pyproject.toml"
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as e:
                fail(f"{path}: {e}")
            return path, data.get("tool", {}).get("asyncflow", {})
    return None, {}


def apply_config(path: Path | None, config: dict[str, Any]) -> dict[str, Any]:
    """Settings from the file, unless an ASYNCFLOW_* variable says otherwise."""
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        fail(f"{path}: unknown key(s) in [tool.asyncflow]: {', '.join(sorted(unknown))}")
    for key, value in config.items():
        if key != "dag_module" and f"ASYNCFLOW_{key.upper()}" not in os.environ:
            setattr(af.settings, key, value)
    return config


def configure_logging() -> None:
    level = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}.get(
        str(af.settings.log_level).upper(), 30
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=Stderr()),  # type: ignore[arg-type]  # (sys.stderr now)
    )


# targets ------------------------------------------------------------------------------------------


def select(
    flow: af.Workflow, expression: str | None, exact: tuple[str, ...] = (), at: str | None = None
) -> list[af.Node] | None:
    """The nodes matching -k (or with these exact ids, or the one at `N:TASK`: the N-th node of the
    flow, a TASK node, as an exported Airflow task names it), as roots (selected ones upstream of
    other selected ones dropped)."""
    if not expression and not exact and at is None:
        return None
    graph = flow.nodes()
    if at is not None:
        found = re.fullmatch(r"([0-9]+):(.+)", at)
        if found is None or expression or exact:
            fail(f"--node-at takes N:TASK (the N-th node of the flow, a TASK node), alone; got {at!r}")
        index, task = int(found.group(1)), found.group(2)
        node = graph[index] if index < len(graph) else None
        if node is None or node.task.name != task:
            fail(f"--node-at {at}: the flow's graph is not the one exported (its parameters change its "
                 "shape?); export the DAG again with these parameters (-p)")  # fmt: skip
        return [node]
    if exact:
        chosen = [n for n in graph if n.id in exact]
        missing = set(exact) - {n.id for n in chosen}
        if missing:
            fail(f"no node with id {sorted(missing)[0]!r} in this flow (see `asyncflow list`)")
    else:
        matcher = compile_expression(expression or "")
        chosen = [n for n in graph if matcher(n.id)]
        if not chosen:
            fail(f"no node matches -k {expression!r}")
    below: set[af.Node] = set()
    stack = [d for n in chosen for d in n.deps]
    while stack:
        n = stack.pop()
        if n not in below:
            below.add(n)
            stack.extend(n.deps)
    return [n for n in chosen if n not in below]


# commands -----------------------------------------------------------------------------------------


def _flow_options(store: str | None, max_concurrency: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {"execution_summary": False}
    if store:
        options["store"] = store
    if max_concurrency is not None:
        options["max_concurrency"] = max_concurrency
    return options


def _target_args(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("-k", "expression", default=None, help="Only nodes whose id matches (pytest-style).")(fn)
    fn = click.option("--store", default=None, help="Store URL (fsspec), e.g. ./data or s3://bucket/prefix.")(fn)
    fn = click.option("-p", "params", multiple=True, help="A parameter: name=value (repeatable).")(fn)
    return click.argument("target")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.version_option(af.__version__, "--version", "-V", prog_name="asyncflow", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """asyncflow: run async workflows from the shell."""
    if ctx.invoked_subcommand is None:  # `asyncflow` alone: what it can do (not an error)
        click.echo(ctx.get_help())


def _run_flow(
    flow: af.Workflow,
    roots: list[af.Node] | None,
    force: tuple[str, ...],
    force_all: bool,
    quiet: bool,
    report: str | None = None,
) -> int:
    import anyio

    reporter = Reporter(quiet)

    async def go() -> af.RunResult:
        with reporter:
            return await flow.run(roots, force=list(force) or None, force_all=force_all, on_event=reporter)

    try:
        result = anyio.run(go)
    except KeyboardInterrupt:
        print(reporter.interrupted(), file=sys.stderr)
        _leave_abandoned_threads(130)
        return 130
    except af.FlowFailed as e:
        cause = root_cause(e.errors[0]) if e.errors else e
        traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
        print(summary(e.result), file=sys.stderr)
        if report:
            e.result.write_report(report)
        return 1
    if not quiet:
        print(summary(result), file=sys.stderr)
    if report:
        result.write_report(report)
        if not quiet:
            print(f"report: {report}", file=sys.stderr)
    return 0


def _run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--report", default=None, help="Write an HTML report of the run here.")(fn)
    fn = click.option("--node", "nodes", multiple=True, help="Only the node with this exact id (repeatable).")(fn)
    fn = click.option("--node-at", "node_at", default=None, hidden=True)(fn)  # N:TASK (exported Airflow DAGs)
    fn = click.option("--quiet", "-q", is_flag=True, help="No progress and no summary (errors still show).")(fn)
    fn = click.option("--force-all", is_flag=True, help="Rebuild every node.")(fn)
    fn = click.option("--force", multiple=True, help="Rebuild this task's nodes and what depends on them.")(fn)
    return click.option("--max-concurrency", type=int, default=None, help="Task bodies running at once.")(fn)


@cli.command()
@_target_args
@_run_options
def run(target: str, params: tuple[str, ...], store: str | None, expression: str | None,
        max_concurrency: int | None, force: tuple[str, ...], force_all: bool, quiet: bool,
        nodes: tuple[str, ...], node_at: str | None, report: str | None) -> int:  # fmt: skip
    """Run TARGET (what is not complete, and its upstream)."""
    flow = load_flow(target, params, _flow_options(store, max_concurrency))
    return _run_flow(flow, select(flow, expression, nodes, node_at), force, force_all, quiet, report)


@cli.command()
@_target_args
def preview(target: str, params: tuple[str, ...], store: str | None, expression: str | None) -> int:
    """Print TARGET's tree with each node's status (nothing runs)."""
    import anyio

    flow = load_flow(target, params, _flow_options(store, None))
    roots = select(flow, expression)
    print(anyio.run(flow.preview, roots))
    return 0


@cli.command(name="list")
@_target_args
def list_(target: str, params: tuple[str, ...], store: str | None, expression: str | None) -> int:
    """Print the ids of TARGET's nodes, one per line."""
    flow = load_flow(target, params, _flow_options(store, None))
    roots = select(flow, expression)
    for node in flow.nodes(roots):
        print(node.id)
    return 0


@cli.command()
@_target_args
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="The drawing language: Mermaid (Markdown, GitHub) or Graphviz dot.",
)
def graph(target: str, params: tuple[str, ...], store: str | None, expression: str | None, fmt: str) -> int:
    """Print TARGET's graph as mermaid or dot, with statuses."""
    import anyio

    flow = load_flow(target, params, _flow_options(store, None))
    tree = anyio.run(flow.preview, select(flow, expression))
    print(tree.mermaid() if fmt == "mermaid" else tree.dot())
    return 0


@cli.command()
@_target_args
@click.option("--task", "task_name", required=True, help="The task whose targets to delete.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def reset(target: str, params: tuple[str, ...], store: str | None, expression: str | None,
          task_name: str, yes: bool) -> int:  # fmt: skip
    """Delete the targets of one task's nodes in TARGET's flow."""
    import anyio

    flow = load_flow(target, params, _flow_options(store, None))
    roots = select(flow, expression)
    nodes = [n for n in flow.nodes(roots) if n.task.name == task_name]
    if not nodes:
        names = sorted({n.task.name for n in flow.nodes()})
        fail(f"no task {task_name!r} in this flow; its tasks: {', '.join(names)}")
    if not yes:
        if not sys.stdin.isatty():  # nobody to ask: never delete unasked
            fail(f"reset would delete the targets of {len(nodes)} {task_name} node(s): pass --yes to confirm")
        if not click.confirm(f"Delete the targets of {len(nodes)} {task_name} node(s)?"):
            print("nothing deleted", file=sys.stderr)
            return 0
    for path in anyio.run(flow.reset, nodes):
        print(path)
    return 0


@cli.command(name="catalog")
@click.argument("target")
@click.option("--store", default=None, help="Store URL (fsspec), e.g. ./data or s3://bucket/prefix.")
def catalog_(target: str, store: str | None) -> int:
    """List the entries of the af.Catalog TARGET (file.py:NAME) with their status."""
    import anyio

    statuses = anyio.run(load_catalog(target, _flow_options(store, None)).statuses)
    width = max(map(len, statuses), default=0)
    for name, status in statuses.items():
        print(f"{name:<{width}}  {status}")
    return 0


@cli.command()
@_target_args
@click.option("--node", "node_id", default=None, help="The node whose output to print (its id).")
@click.option("--entry", default=None, help="With a catalog TARGET: the entry whose output to print.")
def show(target: str, params: tuple[str, ...], store: str | None, expression: str | None,
         node_id: str | None, entry: str | None) -> int:  # fmt: skip
    """Print an output (read, never built): TARGET's own (one node, or the one -k selects), --node
    ID's, or --entry NAME's (a catalog's)."""
    import anyio

    if entry is not None and (node_id is not None or expression is not None):
        fail("--entry names a catalog entry: give it alone (no --node, no -k)")
    if entry is not None:
        value = anyio.run(load_catalog(target, _flow_options(store, None)).load, entry)
    else:
        flow = load_flow(target, params, _flow_options(store, None))
        if node_id is not None:
            found = [n for n in flow.nodes() if n.id == node_id]
        else:
            found = select(flow, expression) or flow.roots
        if not found:
            fail(f"no node with id {node_id!r}; try `asyncflow list {target}`")
        if len(found) > 1:
            fail(f"{len(found)} nodes to show ({found[0].id}, ...): pick one with --node ID, -k or --entry NAME")
        value = anyio.run(flow.output, found[0])
    try:
        print(msgspec.json.format(msgspec.json.encode(value)).decode())
    except (TypeError, msgspec.EncodeError):
        print(repr(value))
    return 0


def _load_dag(label: str, module: str | None, config: dict[str, Any]) -> tuple[str, type[af.DAG]]:
    """The DAG registered under `label` once its module (--module, or dag_module in the config)
    is imported; an unknown label is a usage error listing the known ones."""
    name = module or config.get("dag_module")
    if not name:
        fail("no DAG module: pass --module M or set dag_module in [tool.asyncflow]")
    import_module(str(name))
    return str(name), af.DAG.get(label)


@cli.command()
@click.argument("label")
@click.option("--module", "-m", default=None, help="The module defining the DAGs.")
@click.option("-p", "params", multiple=True, help="A parameter: name=value (repeatable).")
@click.option("--store", default=None, help="Store URL (fsspec), e.g. ./data or s3://bucket/prefix.")
@click.option("-k", "expression", default=None, help="Only nodes whose id matches (pytest-style).")
@_run_options
@click.pass_obj
def dag(config: dict[str, Any], label: str, module: str | None, params: tuple[str, ...], store: str | None,
        expression: str | None, max_concurrency: int | None, force: tuple[str, ...], force_all: bool,
        quiet: bool, nodes: tuple[str, ...], node_at: str | None, report: str | None) -> int:  # fmt: skip
    """Run the DAG registered under LABEL (Gluepy's `manage.py dag LABEL`)."""
    _, cls = _load_dag(label, module, config)
    flow = af.Workflow(list(cls.tasks), convert_for(list(cls.tasks), parse_params(params)),
                       **_flow_options(store, max_concurrency))  # fmt: skip
    return _run_flow(flow, select(flow, expression, nodes, node_at), force, force_all, quiet, report)


@cli.group()
def export() -> None:
    """Export a DAG for another orchestrator."""


@export.command()
@click.argument("label")
@click.option("--module", "-m", default=None, help="The module defining the DAGs (dotted, or a file).")
@click.option("--output", "-o", default=None, help="Write here instead of stdout.")
@click.option("--store", default=None, help="The store every task uses (default: config, then settings).")
@click.option("--python", "python", default=None, help="The interpreter with asyncflow (default: this one).")
@click.option("-p", "params", multiple=True, help="A parameter: name=value (repeatable), fixed in the DAG.")
@click.option("--retries", type=click.IntRange(0), default=2, show_default=True, help="Airflow retries per task.")
@click.option("--dag-id", default=None, help="The Airflow dag_id (default: the label, made valid).")
@click.pass_obj
def airflow(config: dict[str, Any], label: str, module: str | None, output: str | None, store: str | None,
            python: str | None, params: tuple[str, ...], retries: int, dag_id: str | None) -> int:  # fmt: skip
    """An Airflow DAG file: one task per node, each running `asyncflow dag` for that node, with the
    interpreter, the module and the store fixed so that it runs wherever Airflow runs it."""
    from ._export import Deployment, airflow_dag, airflow_name

    if dag_id is not None and airflow_name(dag_id) != dag_id:
        fail(f"--dag-id {dag_id!r}: Airflow takes letters, digits, _ . and - only; e.g. {airflow_name(dag_id)!r}")
    name, cls = _load_dag(label, module, config)
    raw = parse_params(params)
    flow = af.Workflow(list(cls.tasks), convert_for(list(cls.tasks), raw))
    target, pythonpath, where = _module_reference(name)
    url = store or str(af.settings.store)
    if "://" not in url:
        url = os.path.abspath(url)
    interpreter = _interpreter(python)
    if url.startswith("memory:"):
        fail(f"--store {url}: a memory store lives in one process; each Airflow task runs in its own: "
             "give a store every worker reaches (a shared folder, s3://...)")  # fmt: skip
    how = Deployment(dag_id=dag_id or airflow_name(label), module=target, python=interpreter, store=url,
                     storage_options=dict(af.settings.storage_options), params=raw, retries=retries,
                     pythonpath=pythonpath, project=os.getcwd())  # fmt: skip
    text = airflow_dag(label, how, flow.nodes())
    if output:
        Path(output).write_text(text)
    else:
        print(text, end="")
    tasks = sum(1 for n in flow.nodes() if not n.task.is_external)
    print(f"asyncflow: Airflow DAG {how.dag_id!r}: {tasks} tasks, store {url}, python {how.python}, "
          f"module {target}{where}" + (f" -> {output}" if output else ""), file=sys.stderr)  # fmt: skip
    return 0


def _interpreter(python: str | None) -> str:
    """The absolute path of the Python the exported tasks run (a name is looked up on PATH)."""
    import shutil

    if python is None:
        return os.path.abspath(sys.executable)
    found = shutil.which(python) if os.sep not in python else (python if os.access(python, os.X_OK) else None)
    if found is None:
        fail(f"--python {python}: no such interpreter (give a path, or a name on PATH)")
    return os.path.abspath(found)


def _module_reference(name: str) -> tuple[str, str, str]:
    """How a worker finds the DAG's module: (reference, a folder for PYTHONPATH or "", a remark)."""
    import importlib.util

    if name.endswith(".py") or "/" in name or os.sep in name:
        path = os.path.abspath(name)
        return path, "", " (a file path: every Airflow worker must see it)"
    cwd = os.getcwd()
    saved = sys.path[:]
    try:
        sys.path[:] = [p for p in sys.path if p not in ("", ".", cwd)]
        top = name.partition(".")[0]
        elsewhere = sys.modules.pop(top, None)
        try:
            found = importlib.util.find_spec(top) is not None
        finally:
            if elsewhere is not None:
                sys.modules[top] = elsewhere
    finally:
        sys.path[:] = saved
    if found:
        return name, "", ""
    return name, cwd, f" (found from {cwd} only: added to PYTHONPATH; every worker must see it, or install it)"


def _leave_abandoned_threads(status: int) -> None:
    """After Ctrl-C, exit at once even if thread bodies are still running (a thread cannot be
    stopped, and Python would wait for it): their targets are never published, so nothing is lost."""
    if any(t.is_alive() and not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    try:
        path, config = find_config(Path.cwd())
        apply_config(path, config)
        configure_logging()
        status = cli.main(args=args, prog_name="asyncflow", standalone_mode=False, obj=config)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, KeyboardInterrupt):
            print("asyncflow: interrupted", file=sys.stderr)
            return 130
        print("asyncflow: aborted", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asyncflow: interrupted", file=sys.stderr)
        return 130
    except (Usage, click.UsageError, af.ParameterError, af.CycleError) as e:  # bad usage: one line
        text = e.format_message() if isinstance(e, click.UsageError) else str(e)
        print(f"asyncflow: error: {text}", file=sys.stderr)
        return 2
    except (af.MissingInputError, af.StorageError, af.TargetError) as e:  # the data, not the usage
        print(f"asyncflow: {e}", file=sys.stderr)
        return 1
    return status if isinstance(status, int) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
