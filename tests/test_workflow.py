"""Real snakemake runs of the workflow on tiny synthetic cohorts, in each cohort layout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from wmhflow.paths import bids_path
from wmhflow.synth import write_cohort

REPO = Path(__file__).resolve().parent.parent
PREPROCESSED = [
    ("T1w", "aligned"),
    ("FLAIR", "n4"),
    ("T1w", "n4"),
    ("FLAIR", "quant"),
    ("T1w", "quant"),
    ("FLAIR", "tophat"),
]


def snakemake(workdir, *args, config=()):
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *args,
    ]
    if config:
        cmd += ["--config", *config]  # last: --config takes every following word
    # The venv is NOT on PATH, as when a user runs .venv/bin/snakemake without activating it: the
    # workflow must still find its own `wmhflow`.
    env = dict(
        os.environ,
        PATH=os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent),
    )
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


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
        matches = [
            p
            for p in (tmp_path / "out").glob("sub-*/anat/*_desc-tophat_FLAIR.nii.gz")
            if nib.load(str(p)).shape == flair.shape and np.allclose(nib.load(str(p)).affine, flair.affine, atol=1e-4)
        ]
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


# ------------------------------------------------------------------------------ the whole pipeline
QUICK_CONFIG = """
splits: {train_per_site: 1, seed: 0}
train:
  preset: demo
  overrides: {iterations: 30, validate_every: 15, checkpoint_every: 15, log_every: 10}
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One real run of `snakemake` (all rules, short training) on 6 subjects, one without reference."""
    root = tmp_path_factory.mktemp("pipeline")
    table = write_cohort(root / "in", subjects=6, seed=4, small=True)
    unreferenced = table.iloc[-1]
    Path(unreferenced["reference"]).unlink()
    (root / "quick.yaml").write_text(QUICK_CONFIG + f"cohort: {root / 'in'}\nresults: out\n")
    run = snakemake(root, "--configfile", str(root / "quick.yaml"))
    assert run.returncode == 0, run.stderr[-4000:]
    return root, table, str(unreferenced["subject"])


def _subjects_table(root):
    import pandas as pd

    return pd.read_csv(root / "out/group/subjects.tsv", sep="\t", dtype=str, keep_default_na=False)


@pytest.mark.slow
def test_pipeline_writes_every_artifact_on_the_flair_grid(pipeline):
    root, table, unreferenced = pipeline
    subjects = _subjects_table(root).set_index("subject")
    assert subjects.loc[unreferenced, "split"] == "predict"
    segmented = subjects.index[subjects["split"].isin(["test", "predict"])]
    assert len(segmented) >= 2 and (subjects["split"] == "train").sum() == 3
    for subject in segmented:
        flair = nib.load(subjects.loc[subject, "flair"])
        mask = nib.load(str(bids_path(root / "out", subject, "mask", desc="fcn2d", label="WMH")))
        prob = nib.load(str(bids_path(root / "out", subject, "probseg", desc="fcn2d", label="WMH")))
        assert mask.shape == prob.shape == flair.shape
        assert np.allclose(mask.affine, flair.affine, atol=1e-5) and np.allclose(prob.affine, flair.affine, atol=1e-5)
        assert mask.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
        assert prob.get_data_dtype() == np.float32
        assert bids_path(root / "out", subject, "qc", ".png", desc="fcn2d").is_file()
        assert bids_path(root / "out", subject, "lesions", ".tsv", desc="fcn2d").is_file()
    assert not bids_path(root / "out", unreferenced, "metrics", ".tsv", desc="fcn2d").exists()
    for name in ("model.pt", "config.yaml", "training_log.tsv", "loss_curve.png"):
        assert (root / "out/models/fcn2d" / name).is_file()
    assert (root / "out/logs/train/fcn2d.log").stat().st_size > 0


@pytest.mark.slow
def test_pipeline_results_of_a_challenge_tree_are_a_valid_bids_derivative(pipeline):
    from conftest import bids_errors

    root, _, _ = pipeline
    assert bids_errors(root / "out") == []


@pytest.mark.slow
def test_pipeline_group_tables_cover_every_subject(pipeline):
    import pandas as pd

    root, table, unreferenced = pipeline
    subjects = _subjects_table(root)
    tested = set(subjects.loc[subjects["split"] == "test", "subject"])
    metrics = pd.read_csv(root / "out/group/metrics.tsv", sep="\t", dtype={"subject": str})
    assert set(metrics["subject"]) == tested
    assert {"dice", "h95_mm", "avd_pct", "lesion_recall", "lesion_f1"} <= set(metrics.columns)
    volumes = pd.read_csv(root / "out/group/lesion_volumes.tsv", sep="\t", dtype={"subject": str})
    assert set(volumes["subject"]) == tested | {unreferenced}
    summary = pd.read_csv(root / "out/group/summary.tsv", sep="\t")
    assert len(summary) >= 2


@pytest.mark.slow
def test_pipeline_rerun_has_nothing_to_do(pipeline):
    root, _, _ = pipeline
    run = snakemake(root, "--configfile", str(root / "quick.yaml"), "--dry-run", "--quiet", "rules")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Nothing to be done" in run.stdout + run.stderr


@pytest.mark.slow
def test_pipeline_report_holds_every_table_and_picture(pipeline):
    root, _, _ = pipeline
    run = snakemake(root, "--configfile", str(root / "quick.yaml"), "--report", str(root / "report.html"))
    assert run.returncode == 0, run.stderr[-3000:]
    html = (root / "report.html").read_text(errors="replace")
    for name in (
        "metrics.tsv",
        "summary.tsv",
        "lesion_volumes.tsv",
        "metrics_boxplots.png",
        "loss_curve.png",
        "_qc.png",
        "subjects.tsv",
    ):
        assert name in html, name


@pytest.mark.slow
def test_standalone_segment_equals_the_workflow(pipeline, tmp_path):
    """`wmhflow segment` (no Snakemake) runs the same chain: same top-hat, same probabilities."""
    root, _, _ = pipeline
    subjects = _subjects_table(root).set_index("subject")
    subject = subjects.index[subjects["split"] == "test"][0]
    cmd = [
        sys.executable,
        "-m",
        "wmhflow.cli",
        "segment",
        "--flair",
        subjects.loc[subject, "flair"],
        "--t1",
        subjects.loc[subject, "t1"],
        "--model",
        str(root / "out/models/fcn2d/model.pt"),
        "-o",
        str(tmp_path),
        "--subject",
        subject,
        "--keep-intermediates",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    for suffix, entities in (
        ("FLAIR", {"desc": "tophat"}),
        ("T1w", {"desc": "quant"}),
        ("probseg", {"desc": "fcn2d", "label": "WMH"}),
        ("mask", {"desc": "fcn2d", "label": "WMH"}),
    ):
        ours = nib.load(str(bids_path(tmp_path, subject, suffix, **entities)))
        workflow = nib.load(str(bids_path(root / "out", subject, suffix, **entities)))
        assert np.allclose(ours.affine, workflow.affine)
        np.testing.assert_allclose(
            np.asarray(ours.dataobj), np.asarray(workflow.dataobj), atol=1e-5, err_msg=f"{suffix} {entities}"
        )


@pytest.mark.slow
def test_reprocessing_with_an_existing_model_skips_training(pipeline):
    """model.checkpoint: a cohort segmented again with an existing model, as a second variant beside the
    first: no training, the same masks, and both variants in the comparison table."""
    import pandas as pd

    root, _, _ = pipeline
    model = root / "out/models/fcn2d/model.pt"
    (root / "reprocess.yaml").write_text(
        (root / "quick.yaml").read_text() + f"model: {{name: reused, checkpoint: {model}}}\n"
    )
    run = snakemake(root, "--configfile", str(root / "reprocess.yaml"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert not (root / "out/models/reused").exists()
    assert "rule train:" not in run.stderr and "rule align_t1:" not in run.stderr
    masks = sorted((root / "out").glob("sub-*/anat/*_label-WMH_desc-fcn2d_mask.nii.gz"))
    assert masks
    for mask in masks:
        again = mask.with_name(mask.name.replace("desc-fcn2d", "desc-reused"))
        assert np.array_equal(np.asarray(nib.load(str(mask)).dataobj), np.asarray(nib.load(str(again)).dataobj))
    comparison = pd.read_csv(root / "out/group/model_comparison.tsv", sep="\t")
    assert set(comparison["model"]) == {"fcn2d", "reused"}


@pytest.mark.slow
def test_ensemble_of_two_checkpoints_in_the_workflow(pipeline):
    """model.checkpoint as a list: the rule passes both files; an ensemble of one model twice gives that
    model's masks, and each mask's JSON sidecar names both files and the threshold used."""
    import json

    root, _, _ = pipeline
    model = root / "out/models/fcn2d/model.pt"
    (root / "ensemble.yaml").write_text(
        (root / "quick.yaml").read_text() + f"model: {{name: twice, checkpoint: [{model}, {model}]}}\n"
    )
    run = snakemake(root, "--configfile", str(root / "ensemble.yaml"))
    assert run.returncode == 0, run.stderr[-3000:]
    masks = sorted((root / "out").glob("sub-*/anat/*_label-WMH_desc-fcn2d_mask.nii.gz"))
    assert masks
    for mask in masks:
        twice = mask.with_name(mask.name.replace("desc-fcn2d", "desc-twice"))
        assert np.array_equal(np.asarray(nib.load(str(mask)).dataobj), np.asarray(nib.load(str(twice)).dataobj))
        record = json.loads(twice.with_name(twice.name.replace(".nii.gz", ".json")).read_text())
        single = json.loads(mask.with_name(mask.name.replace(".nii.gz", ".json")).read_text())
        assert record["ModelFiles"] == [str(model), str(model)] and record["Threshold"] == single["Threshold"]


def _chromium():
    """Debian's headless Chromium; installed with apt-get when missing (CI runs as root)."""
    import shutil

    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium, and no root apt-get to install it")
    install = subprocess.run(
        ["apt-get", "install", "-y", "-q", "chromium"],
        capture_output=True,
        text=True,
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
    )
    if install.returncode != 0:  # a stale package index: refresh it once
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        install = subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"],
            capture_output=True,
            text=True,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )
    assert install.returncode == 0, install.stderr[-2000:]
    return shutil.which("chromium")


@pytest.mark.slow
def test_pipeline_report_renders_in_a_headless_browser(pipeline, tmp_path):
    root, _, _ = pipeline
    report = root / "browser_report.html"
    run = snakemake(root, "--configfile", str(root / "quick.yaml"), "--report", str(report))
    assert run.returncode == 0, run.stderr[-3000:]
    # Flags for a sandbox without network (see the project's notes on headless Chromium).
    dom = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    # The categories exist only once the report's JavaScript has rendered its navigation.
    for category in ("Cohort", "Metrics", "Lesions", "QC", "Training"):
        assert f">{category}<" in dom.stdout, category
