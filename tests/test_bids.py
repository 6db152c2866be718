"""results/ as a BIDS derivative dataset: real Snakemake runs checked by the official BIDS validator."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest
from conftest import bids_errors
from test_workflow import snakemake

from wmhflow.fcn.model import build_model, save_model
from wmhflow.synth import write_cohort

pytestmark = pytest.mark.slow


def _tiny_model(path, channels):
    """An untrained FCN: what is checked here is the dataset, not the segmentation (training costs minutes)."""
    return save_model(path, build_model(side_maps=4), {"requantize": "tissue", "name": "tiny", "channels": channels})


def _run(root, cohort, model, **extra):
    config = {
        "cohort": str(cohort),
        "results": "out",
        "splits": {"train_per_site": 0.01},
        "model": {"name": "tiny", "checkpoint": str(model), "channels": extra.pop("channels")},
        **extra,
    }
    (root / "run.yaml").write_text(json.dumps(config))
    return snakemake(root, "--configfile", str(root / "run.yaml"))


@pytest.fixture(scope="module")
def sessions_run(tmp_path_factory):
    """3 subjects x 2 sessions in BIDS, sub-100 excluded with exclude_participant_label."""
    root = tmp_path_factory.mktemp("bids_sessions")
    table = write_cohort(root / "in", subjects=3, seed=5, small=True, layout="bids", sessions=2)
    model = _tiny_model(root / "tiny.pt", "flair,t1,tophat")
    run = _run(root, root / "in", model, channels="flair,t1,tophat", exclude_participant_label="sub-100")
    assert run.returncode == 0, run.stderr[-4000:]
    return root, table


def test_bids_run_with_sessions_is_a_valid_derivative_dataset(sessions_run):
    root, _ = sessions_run
    assert bids_errors(root / "out") == []
    description = json.loads((root / "out/dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"


def test_sessions_give_session_folders_and_columns_and_the_excluded_subject_is_absent(sessions_run):
    root, table = sessions_run
    out = root / "out"
    assert sorted(p.name for p in out.glob("sub-*")) == ["sub-0", "sub-50"]
    for sub in ("sub-0", "sub-50"):
        assert sorted(p.name for p in (out / sub).glob("ses-*")) == ["ses-1", "ses-2"]
    assert (out / "sub-50/ses-2/anat/sub-50_ses-2_space-FLAIR_label-WMH_desc-tiny_mask.nii.gz").is_file()
    for name in ("subjects.tsv", "metrics.tsv", "lesion_volumes.tsv"):
        group = pd.read_csv(out / "group" / name, sep="\t", dtype=str, keep_default_na=False)
        assert {"subject", "session"} <= set(group.columns), name
        assert sorted(zip(group["subject"], group["session"])) == [("0", "1"), ("0", "2"), ("50", "1"), ("50", "2")]
    lesions = pd.read_csv(out / "sub-0/ses-2/anat/sub-0_ses-2_desc-tiny_lesions.tsv", sep="\t", dtype=str)
    assert list(lesions.columns[:2]) == ["subject", "session"]


def test_sidecars_name_their_sources_and_parameters(sessions_run):
    root, _ = sessions_run
    anat = root / "out/sub-0/ses-1/anat"
    raw_flair = "bids:raw:sub-0/ses-1/anat/sub-0_ses-1_FLAIR.nii.gz"
    n4 = json.loads((anat / "sub-0_ses-1_space-FLAIR_desc-n4_FLAIR.json").read_text())
    assert n4["Sources"] == [raw_flair] and n4["SpatialReference"] == raw_flair
    assert n4["N4Shrink"] == [8, 8, 1] and n4["N4Iterations"] == [10, 10, 10]
    quant = json.loads((anat / "sub-0_ses-1_space-FLAIR_desc-quant_T1w.json").read_text())
    assert quant["Sources"] == ["bids::sub-0/ses-1/anat/sub-0_ses-1_space-FLAIR_desc-n4_T1w.nii.gz"]
    assert quant["SpatialReference"] == raw_flair  # the T1 is on the FLAIR's grid
    low, high = quant["RequantizeWindow"]
    assert quant["RequantizeMethod"] == "tissue" and quant["RequantizeLowPercentile"] == 0.5 and low < high
    tophat = json.loads((anat / "sub-0_ses-1_space-FLAIR_desc-tophat_FLAIR.json").read_text())
    assert (tophat["TophatArea"], tophat["TophatConnectivity"]) == (25, 1)
    mask = json.loads((anat / "sub-0_ses-1_space-FLAIR_label-WMH_desc-tiny_mask.json").read_text())
    import hashlib

    assert mask["ModelSHA256"] == hashlib.sha256((root / "tiny.pt").read_bytes()).hexdigest()
    assert mask["Threshold"] == 0.5 and mask["ModelName"] == "tiny"
    for sidecar in (root / "out").glob("sub-*/ses-*/anat/*.json"):  # every image has one, every source exists
        assert Path(str(sidecar).removesuffix(".json") + ".nii.gz").is_file()
        for uri in json.loads(sidecar.read_text())["Sources"]:
            dataset, rel = uri.split(":")[1:]
            assert (root / ("in" if dataset == "raw" else "out") / rel).is_file(), uri
    images = list((root / "out").glob("sub-*/ses-*/anat/*.nii.gz"))
    assert len(images) == 4 * 8 and all(Path(str(p).removesuffix(".nii.gz") + ".json").is_file() for p in images)


def test_flair_only_cohort_runs_without_t1(tmp_path):
    """flair-3slice: subjects without a T1 are accepted and no T1 rule runs; the dataset is valid."""
    table = write_cohort(tmp_path / "in", subjects=2, seed=6, small=True, layout="bids")
    for t1 in table["t1"]:
        Path(t1).unlink()
    model = _tiny_model(tmp_path / "tiny.pt", "flair-3slice")
    run = _run(tmp_path, tmp_path / "in", model, channels="flair-3slice")
    assert run.returncode == 0, run.stderr[-4000:]
    out = tmp_path / "out"
    assert not list(out.rglob("*T1w*")) and not (out / "logs/align_t1").exists()
    masks = sorted(out.glob("sub-*/anat/*_label-WMH_desc-tiny_mask.nii.gz"))
    assert len(masks) == 2 and all(nib.load(str(m)).get_data_dtype() == "uint8" for m in masks)
    assert bids_errors(out) == []
    # the same cohort with the paper's channels is a planning error naming the subject
    run = _run(tmp_path, tmp_path / "in", model, channels="flair,t1,tophat")
    assert run.returncode != 0
    assert "needs a T1, and sub-0, sub-50 have none: use model.channels flair-3slice" in run.stderr


def test_unknown_participant_label_is_a_planning_error(tmp_path):
    write_cohort(tmp_path / "in", subjects=2, seed=6, small=True, layout="bids")
    run = snakemake(tmp_path, "-n", config=[f"cohort={tmp_path / 'in'}", "participant_label=sub-0,sub-77"])
    assert run.returncode != 0 and "'participant_label': not in the cohort: sub-77" in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()
