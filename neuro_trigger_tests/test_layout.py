"""The house's layout: imports go one way, as docs/architecture.md promises.

Every import of the package is read as text (ast), imports inside functions too, since they tie two
modules together just the same. Two rules: no module imports another that (directly or around a
circle) imports it back, and no package imports one above it in LAYERS.
"""
from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

import pytest

from neuro_trigger import REPO_ROOT

# top to bottom: a module may import from its own layer or any below it
LAYERS = ("cli", "sweep", "runner", "training", "judge", "fpga", "run", "config", "data", "base")
CLI_MODULES = {"neuro_trigger.main", "neuro_trigger.evaluate", "neuro_trigger.compare", "neuro_trigger.export"}
MAX_LINES = 400


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `package` (a package is named by its __init__)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports. `from pkg import mod` counts as importing
    `pkg.mod` (not the package's __init__) where `pkg.mod` is a module."""
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in files]
                targets.update(subs if len(subs) == len(node.names) else [base, *subs])
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Import circles, one at a time: each found circle's first edge is cut and the search goes on."""
    graph = {k: set(v) for k, v in graph.items()}
    found = []
    while True:
        try:
            graphlib.TopologicalSorter(graph).prepare()
            return found
        except graphlib.CycleError as error:
            cycle = tuple(error.args[1])  # its first node repeated at its end
            found.append(cycle[:-1])
            a, b = next((a, b) for a, b in zip(cycle, cycle[1:], strict=False) if b in graph[a] or a in graph[b])
            graph[a].discard(b) if b in graph[a] else graph[b].discard(a)


def layer_of(module: str) -> str:
    if module in CLI_MODULES:
        return "cli"
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (REPO_ROOT / "neuro_trigger" / parts[1]).is_dir()):
        return parts[1]
    return "base"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return [f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)})" for a, targets in sorted(graph.items())
            for b in sorted(targets) if rank[layer_of(b)] < rank[layer_of(a)]]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(module_files(REPO_ROOT / "neuro_trigger"))


def test_no_two_modules_import_each_other(graph: dict[str, set[str]]) -> None:
    assert circles(graph) == []


def test_every_package_imports_only_downwards(graph: dict[str, set[str]]) -> None:
    assert {layer_of(m) for m in graph} <= set(LAYERS), "a new package needs its place in LAYERS"
    assert upward_imports(graph) == []


def test_no_module_past_the_length_of_one_job() -> None:
    long = {name: n for name, path in module_files(REPO_ROOT / "neuro_trigger").items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_the_checks_find_a_circle_and_an_upward_import(tmp_path: Path) -> None:
    """The rules above must be able to fail: a made-up package with a circle through a function's import."""
    pkg = tmp_path / "neuro_trigger"
    (pkg / "run").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "run" / "__init__.py").write_text("")
    (pkg / "run" / "a.py").write_text("from neuro_trigger.run import b\n")
    (pkg / "run" / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "run" / "c.py").write_text("import neuro_trigger.run.a\nfrom neuro_trigger.errors import X\n")
    (pkg / "errors.py").write_text("from neuro_trigger.run.c import Y\n")
    made = import_graph(module_files(pkg))
    assert made["neuro_trigger.run.b"] == {"neuro_trigger.run.c"}
    found = circles(made)
    assert len(found) == 2 and {m for c in found for m in c} == {
        "neuro_trigger.run.a", "neuro_trigger.run.b", "neuro_trigger.run.c", "neuro_trigger.errors"}
    assert upward_imports({"neuro_trigger.errors": {"neuro_trigger.run.c"}}) == [
        "neuro_trigger.errors (base) imports neuro_trigger.run.c (run)"]


def test_notebooks_old_import_paths_reach_the_one_copy_of_the_code() -> None:
    """`train`, `resume`, `evaluate` and `compare` from where notebooks imported them before the layout step."""
    from neuro_trigger.judge.comparison import compare
    from neuro_trigger.judge.evaluation import evaluate
    from neuro_trigger.run import comparison as old_comparison
    from neuro_trigger.run import evaluation as old_evaluation
    from neuro_trigger.runner.api import resume, train
    from neuro_trigger.training import experts as old_experts

    assert old_evaluation.evaluate is evaluate and old_comparison.compare is compare
    assert old_experts.train is train and old_experts.resume is resume
    with pytest.raises(AttributeError):
        old_experts.run_expert  # noqa: B018 - only what a notebook calls is forwarded


def test_the_architecture_doc_names_every_module_and_no_other() -> None:
    """docs/architecture.md's rooms table matches the tree: each module by its path, or in its package's row."""
    doc = (REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = [line for line in doc.splitlines() if line.startswith("|")]
    package = REPO_ROOT / "neuro_trigger"
    missing = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if path.name == "__init__.py" and rel != "__init__.py":
            continue
        in_package_row = any(f"`{path.parent.relative_to(package).as_posix()}/`" in row and path.stem in row
                             for row in rows)
        if rel not in doc and f"neuro_trigger/{rel}" not in doc and not in_package_row:
            missing.append(rel)
    assert missing == []
    named = set(re.findall(r"`(?:neuro_trigger/)?((?:[a-z_]+/)*[a-z_]+\.py)`", doc))
    assert sorted(n for n in named if not n.startswith("neuro_trigger_tests/") and not (package / n).is_file()) == []
