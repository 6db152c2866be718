"""Hostile cohorts through real Snakemake runs: the check step first, --keep-going, the status table,
paths with spaces, planning errors naming the config key, command-line config forms."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from test_workflow import PREPROCESSED, snakemake

from wmhflow.paths import bids_path, prefix
from wmhflow.synth import write_cohort

#: the rule whose job checks a subject (preprocess.jobs: per_subject, the default; its first step)
CHECK_RULE = "preprocess_subject"


def _save(img, data, path, qcode=1, scode=1, affine=None, sform=None):
    affine = img.affine if affine is None else affine
    out = nib.Nifti1Image(np.asarray(data), affine)
    out.set_qform(affine, code=qcode)
    out.set_sform(affine if sform is None else sform, code=scode)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(path))
    return path


def hostile_cohort(root: Path):
    """Two good subjects, one good with qform != sform, and one bad subject per defect, in a subjects TSV
    exported from a spreadsheet (a trailing tab on every line, CRLF), everything below paths with spaces."""
    table = write_cohort(root / "synthetic data", subjects=2, seed=5, small=True)
    flair_img, t1_img, ref_img = (nib.load(table.loc[0, c]) for c in ("flair", "t1", "reference"))
    flair, t1 = np.asarray(flair_img.dataobj, np.float32), np.asarray(t1_img.dataobj, np.float32)
    ref = np.asarray(ref_img.dataobj, np.float32)
    bad = root / "bad inputs"
    rows = [
        (s, table.loc[i, "site"], table.loc[i, "flair"], table.loc[i, "t1"], table.loc[i, "reference"], "train")
        for i, s in enumerate(table["subject"])
    ]
    f0, t0 = table.loc[0, "flair"], table.loc[0, "t1"]
    shifted = flair_img.affine.copy()
    shifted[0, 3] += 6.0
    rows.append(
        (
            "qformsform",
            "Z",
            str(
                _save(
                    flair_img,
                    flair,
                    bad / "qs" / "FLAIR q!=s.nii.gz",
                    qcode=1,
                    scode=1,
                    affine=shifted,
                    sform=flair_img.affine,
                )
            ),
            t0,
            "",
            "",
        )
    )
    ref255 = np.where(ref == 1, 255, ref)
    expected = {  # subject: (file, problem)
        "nocodes": (_save(flair_img, flair, bad / "nocodes" / "FLAIR.nii.gz", 0, 0), "FLAIR has no orientation"),
        "oneslice": (_save(flair_img, flair[:, :, 5:6], bad / "oneslice" / "FLAIR.nii.gz"), "a single slice"),
        "blank": (_save(flair_img, np.zeros_like(flair), bad / "blank" / "FLAIR.nii.gz"), "FLAIR is constant"),
        "voxel192": (
            _save(t1_img, t1, bad / "voxel192" / "T1.nii.gz", affine=np.diag([192.0, 1.0, 1.0, 1.0])),
            "T1 voxel size 192 mm",
        ),
        "t1isflair": (Path(f0), "T1 is the FLAIR file itself"),
        "label255": (
            _save(ref_img, ref255.astype(np.uint8), bad / "label255" / "wmh.nii.gz"),
            "unknown label value(s) [255]",
        ),
        "fuzzy": (_save(ref_img, ref * 0.7, bad / "fuzzy" / "wmh.nii.gz"), "reference is not a label image"),
        "offgrid": (
            _save(ref_img, ref, bad / "offgrid" / "wmh.nii.gz", affine=shifted),
            "reference voxel-to-world affine differs from the FLAIR's",
        ),
        "truncated": (bad / "truncated" / "T1.nii.gz", "T1 is not a readable NIfTI"),
    }
    (bad / "truncated").mkdir(parents=True)
    (bad / "truncated" / "T1.nii.gz").write_bytes(Path(t0).read_bytes()[:400])
    for subject, (path, _) in expected.items():
        files = {"flair": f0, "t1": t0, "reference": ""}
        role = (
            "reference"
            if "wmh" in path.name
            else ("t1" if subject in ("voxel192", "t1isflair", "truncated") else "flair")
        )
        files[role] = str(path)
        rows.append((subject, "Z", files["flair"], files["t1"], files["reference"], ""))
    lines = ["subject\tsite\tflair\tt1\treference\tsplit"] + ["\t".join(map(str, r)) for r in rows]
    tsv = root / "subjects from a spreadsheet.tsv"
    tsv.write_bytes("".join(line + "\t\r\n" for line in lines).encode())
    return tsv, list(table["subject"]) + ["qformsform"], expected


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "a lab share"
    tsv, good, expected = hostile_cohort(root)
    (root / "run config.yaml").write_text(f"cohort: {tsv}\nresults: {root / 'my results'}\n")
    old = os.umask(0o022)
    try:
        run = snakemake(root, "--configfile", str(root / "run config.yaml"), "--keep-going", "preprocess")
    finally:
        os.umask(old)
    return root, root / "my results", good, expected, run


@pytest.mark.slow
def test_bad_subjects_stop_at_the_check_and_good_ones_finish(hostile_run):
    root, results, good, expected, run = hostile_run
    assert run.returncode != 0  # some subjects failed
    for subject in good:
        for suffix, desc in PREPROCESSED:
            path = bids_path(results, subject, suffix, desc=desc)
            assert path.is_file(), (path, run.stderr[-3000:])
            assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by the lab under umask 022
    for subject, (path, problem) in expected.items():
        assert not (results / f"sub-{subject}").exists(), subject
        assert not (results / "checks" / f"{prefix(subject)}.json").exists()
        written = [p for p in results.rglob(f"*sub-{subject}*") if p.is_file()]
        # only the log and benchmark of the subject's preprocessing job (it stopped at its first step,
        # the check): logs/preprocess_subject/sub-X/anat/sub-X.log
        assert all(p.relative_to(results).parts[1] == CHECK_RULE for p in written), written
        log = (results / "logs" / CHECK_RULE / f"{prefix(subject)}.log").read_text()
        assert "step 1 of 7 (check) failed; the steps after it did not run" in log, log
        errors = [line for line in log.splitlines() if ": error:" in line]
        assert len(errors) == 1 and f"{path}: " in errors[0] and problem in errors[0], (subject, log)


@pytest.mark.slow
def test_qform_differing_from_sform_is_processed_on_the_sform_and_said_once(hostile_run):
    root, results, _, _, _ = hostile_run
    log = (results / "logs" / CHECK_RULE / f"{prefix('qformsform')}.log").read_text()
    assert log.count("qform and sform differ by up to 6 mm; the sform (code 1) is used") == 1
    flair = nib.load(str(next((root / "bad inputs/qs").glob("*.nii.gz"))))
    out = nib.load(str(bids_path(results, "qformsform", "FLAIR", desc="tophat")))
    np.testing.assert_allclose(out.get_qform(), flair.get_sform(), atol=1e-4)
    np.testing.assert_allclose(out.get_sform(), flair.get_sform(), atol=1e-4)


@pytest.mark.slow
def test_the_error_line_and_the_status_table_reach_the_terminal(hostile_run):
    root, results, good, expected, run = hostile_run
    assert "workflow specific profile" in run.stderr and "profiles/default" in run.stderr
    path, problem = expected["blank"]
    # show-failed-logs (profiles/default) and the end-of-run summary both print the one-line reason
    assert run.stderr.count(f"{path}: FLAIR is constant") >= 2
    # 'done' means every output of the whole plan: the 'predict' subject qformsform still lacks its
    # segmentation after this preprocessing-only run
    assert f"wmhflow: {len(good) - 1} of {len(good) + len(expected)} subjects finished" in run.stderr
    status = pd.read_csv(results / "group/status.tsv", sep="\t", dtype=str, keep_default_na=False).set_index("subject")
    assert set(status.index) == set(good) | set(expected)
    for subject in good[:-1]:
        assert status.loc[subject, "status"] == "done"
    # its segmentation is also held back: one job segments a chunk of 8 subjects (segment.subjects_per_job),
    # and the bad subjects of its chunk have no preprocessed volumes; the table names one of them
    row = status.loc["qformsform"]
    assert (row["status"], row["step"], row["outputs"]) == ("blocked", CHECK_RULE, "7/11"), dict(row)
    assert row["reason"].startswith("chunk-0000 waits for sub-") and ": error: " in row["reason"], row["reason"]
    for subject, (path, problem) in expected.items():
        row = status.loc[subject]
        assert (row["status"], row["step"]) == ("failed", CHECK_RULE)
        assert f"{path}: " in row["reason"] and problem in row["reason"]
    # the same table at any time from the verb, from the run's own config file
    verb = subprocess.run(
        [sys.executable, "-m", "wmhflow.cli", "status", "--configfile", str(root / "run config.yaml")],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert verb.returncode == 1, verb.stderr
    again = pd.read_csv(pd.io.common.StringIO(verb.stdout), sep="\t", dtype=str, keep_default_na=False)
    assert again.set_index("subject")["status"].to_dict() == status["status"].to_dict()


# ------------------------------------------------------------------------------ planning errors
@pytest.fixture(scope="module")
def small_tsv(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    write_cohort(root / "in", subjects=2, seed=6, small=True, layout="tsv")
    return root, root / "in" / "subjects.tsv"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["tophatt={area: 3}"], "config 'tophatt': unknown key; did you mean 'tophat'?"),
        (["tophat={area: 25.0}"], "config 'tophat.area': 25.0 is not of type integer"),
    ],
)  # every other config case: test_hardening.py::test_config_mistakes_name_the_key, without Snakemake
def test_config_mistakes_stop_planning_naming_the_key(small_tsv, extra, message):
    root, tsv = small_tsv
    run = snakemake(root, "-n", "preprocess", "--config", f"cohort={tsv}", *extra)
    assert run.returncode != 0 and message in run.stdout + run.stderr
    assert not (root / "results").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--set-resources", "segment:mem_mb=9000"],
            "config 'set-resources (profile or command line)': 'segment' is not a rule of this workflow: "
            "the rule is now named 'infer'",
        ),
        (["--set-threads", "infr=1"], "'infr' is not a rule of this workflow; did you mean 'infer'?"),
    ],
)
def test_a_profile_naming_no_rule_stops_planning(small_tsv, extra, message):
    """Snakemake itself ignores per-rule settings of a rule that does not exist: a GPU job would then
    go to the default partition with the default memory, and nobody would know."""
    root, tsv = small_tsv
    run = snakemake(root, "-n", "preprocess", "--config", f"cohort={tsv}", *extra)
    assert run.returncode != 0 and message in run.stdout + run.stderr
    fine = snakemake(root, "-n", "preprocess", "--config", f"cohort={tsv}", "--set-resources", "infer_batch:mem_mb=1")
    assert fine.returncode == 0, fine.stderr[-2000:]  # the other segmentation mode's rule is known


def test_command_line_config_forms_reach_the_rules(small_tsv):
    root, tsv = small_tsv
    run = snakemake(
        root,
        "-n",
        "-p",
        "preprocess",
        "--config",
        f"cohort={tsv}",
        "tophat={area: 30}",
        "bias_correction={shrink: [4, 4, 1]}",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "--area 30 --connectivity 1" in run.stdout and "--shrink 4 4 1" in run.stdout


def test_no_training_subject_and_no_model_is_a_planning_error(small_tsv):
    root, tsv = small_tsv
    lines = tsv.read_text().splitlines()
    cut = tsv.with_name("predict only.tsv")
    cut.write_text("\n".join([lines[0]] + [line.rsplit("\t", 2)[0] + "\t\tpredict" for line in lines[1:]]) + "\n")
    run = snakemake(root, "-n", "--config", f"cohort={cut}")
    assert run.returncode != 0
    assert "config 'model.checkpoint': no subject of this cohort is in split 'train'" in run.stdout + run.stderr


def test_a_model_of_the_other_requantization_window_stops_the_run_before_any_job(small_tsv):
    """An existing model trained on percentile-window volumes (every wmhflow 0.1 model), reprocessing
    with the default tissue window: the run stops at its start naming the key, before preprocessing."""
    from wmhflow.fcn.model import build_model, save_model

    root, tsv = small_tsv
    old = save_model(root / "old model.pt", build_model(side_maps=4), {"name": "old", "channels": "flair,t1,tophat"})
    run = snakemake(root, "preprocess", "--config", f"cohort={tsv}", f"model={{checkpoint: '{old}'}}")
    said = run.stdout + run.stderr
    assert run.returncode != 0
    assert (
        f"config 'requantize.window': tissue, but model {old} was trained on percentile-window volumes: "
        "set requantize.window: percentile"
    ) in said
    assert not list((root / "results").glob("sub-*"))  # no job ran
    run = snakemake(
        root,
        "-n",
        "preprocess",
        "--config",
        f"cohort={tsv}",
        f"model={{checkpoint: '{old}'}}",
        "requantize={window: percentile}",
    )
    assert run.returncode == 0, run.stderr[-2000:]
