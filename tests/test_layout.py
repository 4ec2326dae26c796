"""The package's shape: public names, layers, import cycles, private names, module and class sizes.

Every import of every module counts: at module level, inside functions and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import asyncflow as af

PACKAGE = Path(af.__file__).parent

LAYERS = [
    ("L0 leaves", ["_errors", "_settings", "events", "_identity", "_code", "_context", "_faults", "_log"]),
    ("L1 storage", ["_formats", "_concurrent", "_batcher", "_local", "_backends", "_remote", "_store", "_targets"]),
    ("L2 model", ["_registry", "_node", "_params", "_task"]),
    ("L3 graph", ["_graph", "_fingerprint"]),
    ("L4 run", ["_limits", "_pool", "_records", "_leases", "_inventory", "_emitter", "_dask", "_execute", "_scheduler"]),
    ("L5 API", ["_render", "_drawing", "_report", "_select", "_results", "_progress", "_export", "_background", "_workflow",
                "_multi", "_map", "_catalog"]),
    ("L6 surface", ["__init__", "_loading", "cli", "__main__", "testing"]),
]  # fmt: skip
"""A module may import only the modules listed before it (lower layers, or left of it in its own)."""

ORDER = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}
RANK = {m: i for i, m in enumerate(m for _, mods in LAYERS for m in mods)}

TYPE_ONLY_BACK_REFERENCES = {
    ("_node", "_task"): "Node.task is a Task (Task binds nodes, so it imports _node)",
}
"""Deliberate exceptions, httpx style: annotations only, never imported at run time."""

MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300


def _imports(path: Path) -> Iterator[tuple[str, list[str], bool, int]]:
    """(asyncflow module imported, names imported from it, at run time?, line) for every import."""
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for inner in node.body:
                type_only.update(id(n) for n in ast.walk(inner))
    for node in ast.walk(tree):
        runtime = id(node) not in type_only
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from ._x import a, b
                yield node.module.split(".")[0], [a.name for a in node.names], runtime, node.lineno
            elif node.level == 1:  # from . import _x, events
                for a in node.names:
                    yield a.name, [], runtime, node.lineno
            elif node.module and node.module.split(".")[0] == "asyncflow":
                parts = node.module.split(".")
                if len(parts) == 1:
                    for a in node.names:
                        yield (a.name if a.name in RANK else "__init__"), [], runtime, node.lineno
                else:
                    yield parts[1], [a.name for a in node.names], runtime, node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "asyncflow":
                    yield (parts[1] if len(parts) > 1 else "__init__"), [], runtime, node.lineno


def _modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in dir(af) if not n.startswith("_") and type(getattr(af, n)).__name__ != "module"}
    assert sorted(af.__all__) == sorted(public | {"events"})
    assert "TaskStarted" not in af.__all__  # events live in af.events only
    assert af.TaskFailed is not af.events.TaskFailed


def test_every_module_has_a_place_in_the_layers() -> None:
    assert {p.stem for p in _modules()} == set(RANK)


def test_modules_import_only_modules_listed_before_them() -> None:
    wrong = []
    for path in _modules():
        mod = path.stem
        for target, _, runtime, line in _imports(path):
            if RANK[target] < RANK[mod]:
                continue
            if not runtime and (mod, target) in TYPE_ONLY_BACK_REFERENCES:
                continue
            wrong.append(f"{mod}.py:{line} imports {target} ({'run time' if runtime else 'type only'})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycle_at_run_time() -> None:
    graph: dict[str, set[str]] = {p.stem: set() for p in _modules()}
    for path in _modules():
        for target, _, runtime, _ in _imports(path):
            if runtime and target != path.stem:
                graph[path.stem].add(target)
    state: dict[str, int] = {}

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for nxt in sorted(graph[mod]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, mod, nxt]))
            if nxt not in state:
                visit(nxt, [*path, mod])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])


def test_the_type_only_exceptions_are_each_needed() -> None:
    used = {(p.stem, target) for p in _modules() for target, _, runtime, _ in _imports(p) if not runtime}
    upward = {(mod, target) for mod, target in used if RANK[target] >= RANK[mod]}
    assert set(TYPE_ONLY_BACK_REFERENCES) == upward


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """Local names bound to asyncflow modules (`from . import _m`, `import asyncflow._m as m`)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and ((node.level == 1 and not node.module) or node.module == "asyncflow"):
            aliases.update({a.asname or a.name: a.name for a in node.names if a.name in RANK})
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "asyncflow" and len(parts) == 2 and a.asname:
                    aliases[a.asname] = parts[1]
    return aliases


def test_no_private_name_crosses_modules() -> None:
    crossing = []
    for path in _modules():
        for target, names, _, line in _imports(path):
            crossing.extend(f"{path.stem}.py:{line} imports {n} from {target}" for n in names if n.startswith("_"))
        tree = ast.parse(path.read_text())
        aliases = _module_aliases(tree)
        for node in ast.walk(tree):  # _m._x through a module imported whole
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):  # fmt: skip
                crossing.append(f"{path.stem}.py:{node.lineno} uses {node.attr} of {aliases[node.value.id]}")
    assert not crossing, "\n".join(crossing)


def test_the_readme_design_section_draws_these_layers_and_says_who_owns_each_module() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    design = readme[readme.index("## Design") :]
    for title, mods in LAYERS:
        line = next((x for x in design.splitlines() if x.startswith(title)), None)
        assert line is not None, f"{title} missing from the README's Design block"
        words = line.split()[2:]
        assert words[: len(mods)] == mods, f"{title} in the README: {words} != {mods}"
    owners = design[design.index("Who owns what") :]
    unnamed = [m for m in RANK if f"`{m}`" not in owners]
    assert not unnamed, f"the README's 'Who owns what' does not name {unnamed}"


def test_modules_and_classes_stay_small() -> None:
    big = []
    for path in _modules():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            big.append(f"{path.name}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    big.append(f"{path.name}: class {node.name} has {size} lines (at most {MAX_CLASS_LINES})")
    assert not big, "\n".join(big)


def test_the_package_ships_its_type_annotations() -> None:
    assert (PACKAGE / "py.typed").is_file()


def test_the_layer_table_in_the_package_docstring_matches() -> None:
    lines = (af.__doc__ or "").splitlines()
    for title, mods in LAYERS:
        at = next((i for i, x in enumerate(lines) if x.strip().startswith(title)), None)
        assert at is not None, f"{title} missing from asyncflow/__init__.py's docstring"
        words = lines[at].split()[2:]
        for more in lines[at + 1 :]:  # a long layer goes on over indented lines
            if not more.startswith(" " * 12) or not more.strip():
                break
            words += more.split()
        assert words == mods, f"{title} in the docstring: {words} != {mods}"
