"""A non-editable install works: the wheel carries everything the package reads at run time (the
config and subjects-TSV schemas among them), in a fresh virtual environment, for the CLI and for
planning a run with the repository's Snakefile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(cmd, **kwargs):
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_cli_and_plans_a_run(tmp_path, small_cohort):
    # built from a copy of what the wheel is made of: setuptools writes build/ into the source folder
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "workflow" / "wmhflow", source / "workflow" / "wmhflow", ignore=shutil.ignore_patterns("__pycache__")
    )
    wheels = tmp_path / "wheels"
    # no build isolation: setuptools comes from the test environment (nothing to download)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(source),
        ]
    )
    (wheel,) = wheels.glob("wmhflow-*.whl")
    fresh = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", str(fresh)])
    python = fresh / "bin" / "python"
    # the CPU build of torch first, as `make install` does: the project's range would pull a CUDA build
    _run([str(python), "-m", "pip", "install", "--quiet", "torch==2.13.0"])
    _run([str(python), "-m", "pip", "install", "--quiet", f"{wheel}[workflow]"])

    env = dict(os.environ, PATH=f"{fresh / 'bin'}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    where = _run(
        [str(python), "-c", "import wmhflow.config as c; print(c.__file__); print(c.SCHEMA_PATH.is_file())"],
        cwd=tmp_path,
        env=env,
    ).stdout.split()
    assert where[0].startswith(str(fresh)) and where[1] == "True", where  # the wheel's copy, not the source tree
    assert "check" in _run([str(fresh / "bin" / "wmhflow"), "--help"], env=env).stdout

    cohort, _ = small_cohort
    workdir = tmp_path / "run"
    workdir.mkdir()
    plan = _run(
        [
            str(fresh / "bin" / "snakemake"),
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--cores",
            "1",
            "--dry-run",
            "--quiet",
            "rules",
            "--config",
            f"cohort={cohort}",
            "splits={train_per_site: 1}",
        ],
        env=env,
        cwd=workdir,
    )
    assert "infer" in plan.stdout and "train" in plan.stdout, plan.stdout
