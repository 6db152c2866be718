"""Shared pytest fixtures: tiny real NIfTI files and synthetic cohorts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent

# Workflow rules call the `wmhflow` command: the one installed beside the Python running the tests,
# even when its environment is not activated.
_BIN = os.path.dirname(sys.executable)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


def write_nifti(path, data, affine=None, dtype=None):
    """Write a small real NIfTI (qform = sform) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data if dtype is None else np.asarray(data).astype(dtype))
    affine = np.diag([1.0, 1.0, 3.0, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


@pytest.fixture
def nifti_writer():
    return write_nifti


def wmhflow_command():
    """The wmhflow CLI of the Python running the tests (works without the venv on PATH)."""
    return [sys.executable, "-m", "wmhflow.cli"]


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory):
    """A small realistic synthetic cohort (challenge layout), shared by the tests of a session."""
    from wmhflow.synth import write_cohort

    out = tmp_path_factory.mktemp("cohort")
    table = write_cohort(out, subjects=6, seed=1, small=True)
    return out, table


def pytest_collection_modifyitems(config, items):
    """The real-SLURM test runs last: once its cluster is stopped, every later `snakemake` call would
    wait ~9 s in the SLURM executor plugin's import for a controller that no longer answers."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is not None)


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    # Two cores are shared by everything in CI: keep BLAS/torch from oversubscribing them.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))


@pytest.fixture
def one_torch_thread():
    """Two cores are shared by everything: one torch thread per test, restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def bids_validator_issues(dataset) -> list[dict]:
    """Issues of the official BIDS validator (bids-validator-deno, the `test` extra) on a folder."""
    import json
    import subprocess

    exe = Path(sys.executable).parent / "bids-validator-deno"
    run = subprocess.run([str(exe), str(dataset), "--json"], capture_output=True, text=True)
    assert run.stdout.strip(), run.stderr[-2000:]
    return json.loads(run.stdout)["issues"]["issues"]


def bids_errors(dataset) -> list[str]:
    return [
        f"{i['code']} {i.get('subCode', '')} {i.get('location', '')}"
        for i in bids_validator_issues(dataset)
        if i["severity"] == "error"
    ]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained 4-map FCN model file (tissue window, 3 channels): the chunk and batch tests' model."""
    import torch

    from wmhflow.fcn.model import build_model, save_model

    torch.manual_seed(0)
    return save_model(
        tmp_path_factory.mktemp("model") / "tiny.pt",
        build_model(side_maps=4),
        {"requantize": "tissue", "name": "tiny", "channels": "flair,t1,tophat"},
    )
