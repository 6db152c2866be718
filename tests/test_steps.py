"""`wmhflow steps` (several verbs in one process) and preprocess.jobs: per_subject vs per_step."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import wmhflow_command
from test_workflow import PREPROCESSED, snakemake

from wmhflow.errors import WmhflowError
from wmhflow.paths import bids_path
from wmhflow.steps import split_steps
from wmhflow.synth import write_cohort


def test_split_steps():
    assert split_steps(["check", "--flair", "a b", "::", "tophat", "--input", "x"]) == [
        ["check", "--flair", "a b"],
        ["tophat", "--input", "x"],
    ]
    for words in ([], ["::"], ["check", "::"], ["::", "check"], ["check", "::", "::", "tophat"]):
        with pytest.raises(WmhflowError, match="separated by '::'"):
            split_steps(words)


def _steps(*words):
    return subprocess.run([*wmhflow_command(), "steps", *words], capture_output=True, text=True)


def test_steps_run_in_order_and_stop_at_the_first_failure(small_cohort, tmp_path):
    _, table = small_cohort
    flair, t1 = table.loc[0, "flair"], table.loc[0, "t1"]
    n4, quant, tophat = (tmp_path / f"{name}.nii.gz" for name in ("n4", "quant", "tophat"))
    words = [
        *["check", "--subject", "01", "--flair", flair, "--t1", t1, "--output", str(tmp_path / "check.json")],
        *["::", "bias-correct", "--input", flair, "--output", str(n4), "--role", "FLAIR"],
        *["::", "requantize", "--input", str(n4), "--output", str(quant), "--role", "FLAIR"],
        *["::", "tophat", "--input", str(quant), "--output", str(tophat)],
    ]
    run = _steps(*words)
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "check.json").read_text())["status"] == "ok"
    # the same files as the verbs run one by one
    alone = tmp_path / "alone.nii.gz"
    assert subprocess.run([*wmhflow_command(), "tophat", "--input", str(quant), "--output", str(alone)]).returncode == 0
    np.testing.assert_array_equal(np.asarray(nib.load(alone).dataobj), np.asarray(nib.load(tophat).dataobj))
    for number, verb in enumerate(("check", "bias-correct", "requantize", "tophat"), 1):
        assert f"step {number} of 4 ({verb}) done in" in run.stderr, run.stderr

    # the second step fails: its one error line and exit code are the job's; the third never runs
    missing = tmp_path / "no such FLAIR.nii.gz"
    later = tmp_path / "never.nii.gz"
    run = _steps(
        "check",
        "--subject",
        "01",
        "--flair",
        flair,
        "::",
        "requantize",
        "--input",
        str(missing),
        "--output",
        str(tmp_path / "q.nii.gz"),
        "::",
        "tophat",
        "--input",
        str(quant),
        "--output",
        str(later),
    )
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if ": error:" in line]
    assert len(errors) == 1 and errors[0].startswith("wmhflow requantize: error:") and str(missing) in errors[0]
    assert "step 2 of 3 (requantize) failed; the steps after it did not run" in run.stderr
    assert not later.exists() and not (tmp_path / "q.nii.gz").exists()


def test_steps_refuses_unknown_verbs_before_running_any():
    run = _steps("check", "--subject", "01", "--flair", "x", "::", "tophatt", "--input", "y")
    assert run.returncode == 2
    assert "wmhflow steps: error: 'tophatt' is not a verb steps can run" in run.stderr
    assert "step 1" not in run.stderr


@pytest.mark.slow
def test_per_subject_and_per_step_jobs_write_the_same_files(tmp_path):
    """One job per subject (default) and one job per step: same preprocessed volumes, headers, sidecars,
    also when a profile gives the per-step N4 and registration jobs more CPUs (set-threads): N4's voxels
    depend on its thread count, so the commands pass preprocess.threads, not the job's CPUs."""
    cohort = tmp_path / "cohort"
    write_cohort(cohort, subjects=2, seed=4, small=True)
    outputs = {}
    for mode in ("per_subject", "per_step"):
        workdir = tmp_path / mode
        workdir.mkdir()
        config = [f"cohort={cohort}", "results=out", f"preprocess={{jobs: {mode}}}"]
        more_cpus = ["--set-threads", "bias_correct=2", "align_t1=2"] if mode == "per_step" else []
        run = snakemake(workdir, "preprocess", "-p", *more_cpus, config=config)
        assert run.returncode == 0, run.stderr[-3000:]
        commands = [line for line in run.stdout.splitlines() + run.stderr.splitlines() if "--control-points" in line]
        assert commands and all("--threads 1 " in c + " " for c in commands), commands
        rules = {p.name for p in (workdir / "out/logs").iterdir()}
        expected = (
            {"preprocess_subject"}
            if mode == "per_subject"
            else {
                "check_subject",
                "align_t1",
                "bias_correct_FLAIR",
                "bias_correct_T1w",
                "requantize_FLAIR",
                "requantize_T1w",
                "tophat",
            }
        )
        assert rules == expected, rules
        outputs[mode] = workdir / "out"
    subjects = sorted(p.name.removeprefix("sub-") for p in outputs["per_step"].glob("sub-*"))
    assert len(subjects) == 2
    for subject in subjects:
        for suffix, desc in PREPROCESSED:
            one, other = (bids_path(outputs[m], subject, suffix, desc=desc) for m in ("per_subject", "per_step"))
            a, b = nib.load(one), nib.load(other)
            assert a.get_data_dtype() == b.get_data_dtype()
            np.testing.assert_array_equal(a.affine, b.affine)
            np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj), err_msg=str(one))
            sidecar = Path(str(one).removesuffix(".nii.gz") + ".json")
            if sidecar.exists():
                assert sidecar.read_text() == Path(str(other).removesuffix(".nii.gz") + ".json").read_text()
