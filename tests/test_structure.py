"""The package's import graph: stage packages in layers, no import cycles (lazy imports included), and
the modules planning needs stay free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "workflow" / "wmhflow"


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_of(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str:
    """The deepest known module of a dotted name (``wmhflow.fcn.infer.predict`` -> ``wmhflow.fcn.infer``)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> set[str]:
    """Every wmhflow module ``module`` imports, at module level or inside functions."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {_resolve(a.name) for a in node.names if a.name.startswith("wmhflow")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").startswith("wmhflow"):
                target = node.module
            else:
                continue
            for alias in node.names:  # "from . import staging" imports a module
                found.add(_resolve(f"{target}.{alias.name}"))
    found.discard(module)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def _stage(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_no_import_cycles():
    """A cycle, even through a lazy import, means two modules are one job split in two."""
    state: dict[str, int] = {}

    def visit(module, trail):
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(target) :] + [target]))
            if target not in state:
                visit(target, trail + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


#: stage -> the stages and top-level modules it must never import (the layers of docs/developing.md)
FORBIDDEN = {
    "preprocess": {"fcn", "evaluation", "report", "synth", "cohort", "plan", "segment", "workflow_subjects"},
    "evaluation": {"fcn", "preprocess", "report", "synth", "cohort", "plan", "segment", "workflow_subjects"},
    "fcn": {"evaluation", "report", "synth", "cohort", "plan", "segment", "workflow_subjects"},
    "cohort": {"synth", "fcn", "evaluation", "report", "plan", "workflow_subjects"},
    "synth": {"cohort", "fcn", "evaluation", "report", "plan", "workflow_subjects"},
    "io": {"preprocess", "fcn", "evaluation", "report", "synth", "cohort", "plan"},
}


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_stages_import_only_downwards(stage):
    wrong = sorted(
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        if _stage(m) == stage
        for t in targets
        if _stage(t) in FORBIDDEN[stage]
    )
    assert not wrong, wrong


def test_planning_modules_do_not_import_torch():
    """Every snakemake call (and every job) parses the Snakefile: the modules it imports, the config
    schema with the training presets' keys, and the plan must not pay for torch (~2 s)."""
    code = (
        "import sys; import wmhflow.config as c, wmhflow.plan, wmhflow.workflow_subjects, wmhflow.status; "
        "c.schema(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
