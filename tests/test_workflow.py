"""Real snakemake runs of the workflow on tiny synthetic cohorts, in each cohort layout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from wmhflow.paths import bids_path
from wmhflow.synth import write_cohort

REPO = Path(__file__).resolve().parent.parent
PREPROCESSED = [("T1w", "aligned"), ("FLAIR", "n4"), ("T1w", "n4"), ("FLAIR", "quant"), ("T1w", "quant"),
                ("FLAIR", "tophat")]


def snakemake(workdir, *args, config=()):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args]
    if config:
        cmd += ["--config", *config]  # last: --config takes every following word
    return subprocess.run(cmd, capture_output=True, text=True)


def test_lint_is_clean(tmp_path):
    cohort = tmp_path / "cohort"
    write_cohort(cohort, subjects=3, seed=0, small=True)
    run = snakemake(tmp_path, "--lint", config=[f"cohort={cohort}"])
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["challenge", "bids", "tsv"])
def test_preprocessing_runs_in_each_layout(tmp_path, layout):
    cohort = tmp_path / "in"
    table = write_cohort(cohort, subjects=3, seed=2, small=True, layout=layout)
    source = cohort / "subjects.tsv" if layout == "tsv" else cohort
    run = snakemake(tmp_path, "preprocess", config=[f"cohort={source}", "results=out"])
    assert run.returncode == 0, run.stderr[-4000:]
    done = sorted(p.name.split("_")[0] for p in (tmp_path / "out").glob("sub-*"))
    assert len(done) == len(table) == 3
    for subject_dir in (tmp_path / "out").glob("sub-*"):
        subject = subject_dir.name.removeprefix("sub-")
        for suffix, desc in PREPROCESSED:
            path = bids_path(tmp_path / "out", subject, suffix, desc=desc)
            assert path.is_file(), path
        quant = nib.load(str(bids_path(tmp_path / "out", subject, "FLAIR", desc="quant")))
        assert quant.get_data_dtype() == np.uint8
        assert (tmp_path / "out" / "logs").is_dir() and (tmp_path / "out" / "benchmarks").is_dir()
    # outputs sit on each subject's own FLAIR grid
    for _, row in table.iterrows():
        flair = nib.load(row["flair"])
        matches = [p for p in (tmp_path / "out").glob("sub-*/anat/*_desc-tophat_FLAIR.nii.gz")
                   if nib.load(str(p)).shape == flair.shape and np.allclose(nib.load(str(p)).affine, flair.affine, atol=1e-4)]
        assert matches, f"no top-hat on the grid of {row['flair']}"


@pytest.mark.slow
def test_corrupt_input_fails_with_one_line_and_no_output(tmp_path):
    cohort = tmp_path / "in"
    table = write_cohort(cohort, subjects=3, seed=3, small=True)
    bad = Path(table["flair"].iloc[0])
    bad.write_bytes(bad.read_bytes()[:300])
    run = snakemake(tmp_path, "preprocess", "--keep-going", config=[f"cohort={cohort}", "results=out"])
    assert run.returncode != 0
    logs = "\n".join(p.read_text() for p in (tmp_path / "out/logs").rglob("*.log"))
    assert f"{bad}: FLAIR is not a readable NIfTI" in logs
    subject = str(table["subject"].iloc[0])
    assert not list((tmp_path / "out").glob(f"sub-{subject}/anat/*.nii.gz"))
