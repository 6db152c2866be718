"""The conda environments in envs/ agree with pyproject.toml and hold what their rules import.

Static checks (no conda needed): every package an environment lists is a dependency of
pyproject.toml with the same version range (conda-forge names mapped to PyPI's), python matches
requires-python, wmhflow itself comes from the source tree, and each environment contains every
third-party package that the wmhflow modules of its rules import (followed through wmhflow's own
imports, including those inside functions).
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
ENVS = REPO / "envs"
RULES = REPO / "workflow" / "rules"
PACKAGE_ROOT = REPO / "workflow"
ENV_NAMES = ["preprocess", "torch", "report"]
SOURCE_LINE = "--editable ${WMHFLOW_SOURCE}"

#: conda-forge name -> PyPI name, where they differ (after canonicalize_name)
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
#: import name -> PyPI name, for when the distribution is not installed where the tests run
IMPORT_TO_PYPI = {
    "skimage": "scikit-image",
    "yaml": "pyyaml",
    "SimpleITK": "simpleitk",
    "dip": "diplib",
    "diplib": "diplib",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
}


def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pyproject_dependencies() -> dict[str, SpecifierSet]:
    """Runtime dependencies and those of the optional extras (not wmhflow's own extras, nor the
    workflow/test tools), by canonical name."""
    project = pyproject()
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra, entries in project.get("optional-dependencies", {}).items():
        if extra in ("workflow", "slurm", "test", "dev", "docs"):
            continue
        reqs += [Requirement(r) for r in entries if canonicalize_name(Requirement(r).name) != "wmhflow"]
    deps: dict[str, SpecifierSet] = {}
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name not in deps or deps[name] == req.specifier, f"pyproject.toml: {name} twice, with other versions"
        deps[name] = req.specifier
    return deps


def parse_conda_spec(spec: str) -> tuple[str, SpecifierSet]:
    """'numpy >=1.26,<3' -> ('numpy', SpecifierSet('>=1.26,<3')); conda's '=1.2' means '1.2.*'."""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*$", spec)
    assert m, spec
    name, version = m.group(1), m.group(2).replace(" ", "")
    if re.match(r"^=[^=]", version):
        version = "==" + version[1:] + ".*"
    elif version and re.match(r"^[0-9]", version):
        version = "==" + version
    return canonicalize_name(name), SpecifierSet(version)


def load_env(name):
    return yaml.safe_load((ENVS / f"{name}.yaml").read_text())


def env_packages(env) -> tuple[dict[str, SpecifierSet], list[str]]:
    """{pypi name: specifier} of the conda and pip packages (python, pip excluded), and the pip lines."""
    packages, pip_lines = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_lines = list(dep.get("pip", []))
            continue
        name, spec = parse_conda_spec(dep)
        if name in ("python", "pip"):
            continue
        name = CONDA_TO_PYPI.get(name, name)
        assert name not in packages, f"{name} listed twice"
        packages[name] = spec
    for line in pip_lines:
        if line.startswith("-"):
            continue
        req = Requirement(line)
        packages[canonicalize_name(req.name)] = req.specifier
    return packages, pip_lines


# ------------------------------------------------------------------- rules -> verbs -> imports
def step_command_verbs() -> dict[str, str]:
    """{step function: the wmhflow verb its command line starts with} from workflow/rules/step_commands.smk."""
    text = (RULES / "step_commands.smk").read_text()
    return dict(re.findall(r"^def (\w+_step)\(.*?\n\s+return \(?\s*f?\"([a-z][a-z0-9-]*) ", text, flags=re.M | re.S))


def verbs_in(text: str, step_verbs: dict[str, str]) -> set[str]:
    """The verbs a rule's text calls: literal `wmhflow VERB`, and step_commands.smk's `NAME_step(` calls."""
    literal = set(re.findall(r"wmhflow\s+([a-z][a-z0-9-]*)", text))
    return literal | {step_verbs[name] for name in re.findall(r"\b(\w+_step)\(", text) if name in step_verbs}


def rules_by_env() -> dict[str, dict[str, set[str]]]:
    """{env name: {rule: {wmhflow verbs its shell command calls}}} from workflow/rules/*.smk, following the
    step commands of step_commands.smk, also when a rule file gathers them in a list before its rules."""
    found: dict[str, dict[str, set[str]]] = {}
    step_verbs = step_command_verbs()
    for smk in sorted(RULES.glob("*.smk")):
        blocks = re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M)
        preamble = "" if re.match(r"rule \w+:", blocks[0]) else blocks[0]
        preamble_names = set(re.findall(r"^([A-Z][A-Z0-9_]*) =", preamble, flags=re.M))
        for block in blocks:
            head = re.match(r"rule (\w+):", block)
            if not head:
                continue
            env = re.search(r"^\s+conda:\s*\n\s+[\"'](?:\.\./)*envs/(\w+)\.yaml[\"']", block, re.M)
            if not env:
                continue
            verbs = verbs_in(block, step_verbs)
            if any(re.search(rf"\b{name}\b", block) for name in preamble_names):
                verbs |= verbs_in(preamble, step_verbs)
            found.setdefault(env.group(1), {})[head.group(1)] = verbs
    return found


def _module_file(name: str) -> Path | None:
    base = PACKAGE_ROOT.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def third_party_imports(module: str, seen: set[str] | None = None) -> set[str]:
    """Top-level names of the non-wmhflow modules that `module` imports anywhere in its code,
    following wmhflow's own imports (and its parent packages' __init__)."""
    seen = set() if seen is None else seen
    if module in seen:
        return set()
    seen.add(module)
    path = _module_file(module)
    if path is None:
        return set()
    found: set[str] = set()
    if "." in module:
        found |= third_party_imports(module.rsplit(".", 1)[0], seen)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "wmhflow":
                    found |= third_party_imports(alias.name, seen)
                else:
                    found.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            elif node.module.split(".")[0] == "wmhflow":
                base = node.module
            else:
                found.add(node.module.split(".")[0])
                continue
            found |= third_party_imports(base, seen)
            for alias in node.names:
                found |= third_party_imports(f"{base}.{alias.name}", seen)
    return {name for name in found if name not in sys.stdlib_module_names and name != "__future__"}


def import_to_distribution(name: str) -> str:
    dists = metadata.packages_distributions().get(name)
    if dists:
        return canonicalize_name(dists[0])
    return canonicalize_name(IMPORT_TO_PYPI.get(name, name))


def verb_modules() -> dict[str, str]:
    from wmhflow.cli import VERBS

    return {verb: module for verb, (module, _) in VERBS.items()}


# ------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_file_is_well_formed(name):
    env = load_env(name)
    assert env["channels"][0] == "conda-forge", env["channels"]
    assert "defaults" not in env["channels"]
    specs = [d for d in env["dependencies"] if isinstance(d, str)]
    python = [parse_conda_spec(d)[1] for d in specs if parse_conda_spec(d)[0] == "python"]
    assert python == [SpecifierSet(pyproject()["requires-python"])], f"python must be {pyproject()['requires-python']}"
    assert any(parse_conda_spec(d)[0] == "pip" for d in specs), "pip is needed for the pip section"
    _, pip_lines = env_packages(env)
    assert SOURCE_LINE in pip_lines, f"envs/{name}.yaml must install wmhflow itself: '{SOURCE_LINE}' under pip"


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_packages_are_pyproject_dependencies_with_the_same_versions(name):
    deps = pyproject_dependencies()
    packages, _ = env_packages(load_env(name))
    assert packages, f"envs/{name}.yaml lists no package"
    for package, spec in packages.items():
        assert package in deps, f"envs/{name}.yaml: {package} is not a dependency in pyproject.toml"
        assert spec == deps[package], f"envs/{name}.yaml: {package} '{spec}' but pyproject.toml says '{deps[package]}'"


def test_every_env_is_used_by_a_rule_and_exists():
    used = rules_by_env()
    assert set(used) == set(ENV_NAMES), f"rules use {sorted(used)}; envs/ has {ENV_NAMES}"
    for name in used:
        assert (ENVS / f"{name}.yaml").is_file()


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_holds_everything_its_rules_import(name):
    rules = rules_by_env().get(name, {})
    assert rules, f"no rule uses envs/{name}.yaml"
    without_verb = [rule for rule, verbs in rules.items() if not verbs]
    assert not without_verb, f"rules {without_verb} use envs/{name}.yaml but call no `wmhflow <verb>`"
    modules = verb_modules()
    packages, _ = env_packages(load_env(name))
    deps = pyproject_dependencies()
    missing = {}
    for rule, verbs in sorted(rules.items()):
        for verb in sorted(verbs):
            assert verb in modules, f"rule {rule} calls unknown verb 'wmhflow {verb}'"
            for imported in sorted(third_party_imports(modules[verb])):
                dist = import_to_distribution(imported)
                assert dist in deps, f"{modules[verb]} imports {imported} ({dist}), not a pyproject dependency"
                if dist not in packages:
                    missing.setdefault(dist, set()).add(f"{rule} (wmhflow {verb})")
    assert not missing, f"envs/{name}.yaml lacks " + "; ".join(
        f"{dist}, imported by {', '.join(sorted(r))}" for dist, r in sorted(missing.items())
    )


def test_rule_verbs_follow_the_shared_step_commands():
    # the preprocessing rules build their shell: from step_commands.smk's functions, not literal text
    verbs = {rule: v for rules in rules_by_env().values() for rule, v in rules.items()}
    assert step_command_verbs()["align_t1_step"] == "align-t1"
    assert verbs["bias_correct"] == {"bias-correct"}
    assert verbs["preprocess_subject"] >= {"check", "align-t1", "bias-correct", "requantize", "tophat"}


def test_import_scan_sees_function_level_imports():
    # the scan must follow imports inside functions (torch, numba and matplotlib are imported lazily)
    assert "torch" in third_party_imports("wmhflow.fcn.train")
    assert "numba" in third_party_imports("wmhflow.preprocess.tophat")
    assert "torch" not in third_party_imports("wmhflow.preprocess.bias")
