"""``wmhflow evaluate`` and ``wmhflow lesions`` on real NIfTI files."""

from __future__ import annotations

import io
import json
import math
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import wmhflow_command, write_nifti

from wmhflow.cli import main as cli
from wmhflow.evaluation.lesions import COLUMNS, lesion_table
from wmhflow.evaluation.metrics import KEYS

AFFINE = np.array([[0.9, 0, 0, -40.0], [0, 1.1, 0, -50.0], [0, 0, 3.0, -10.0], [0, 0, 0, 1]])


def run(*args):
    return subprocess.run(wmhflow_command() + [str(a) for a in args], capture_output=True, text=True)


@pytest.fixture
def pair(tmp_path):
    ref = np.zeros((10, 10, 4), np.uint8)
    ref[2:4, 2:4, 1] = 1  # 4 voxels
    ref[7, 7, 2] = 1  # a second lesion, missed
    ref[0:2, 8:10, 3] = 2  # other pathology, predicted: ignored
    pred = np.zeros(ref.shape, np.float32)
    pred[2:4, 2:4, 1] = 0.9
    pred[0:2, 8:10, 3] = 0.8
    pred[5, 5, 1] = 0.4  # below 0.5: not a lesion
    return write_nifti(tmp_path / "wmh.nii.gz", ref, AFFINE), write_nifti(tmp_path / "result.nii.gz", pred, AFFINE)


def test_cli_prints_a_tsv_row_and_json(pair):
    ref, pred = pair
    tsv = run("evaluate", "--reference", ref, "--prediction", pred, "--subject", "07", "--site", "Utrecht")
    assert tsv.returncode == 0, tsv.stderr
    header, row = tsv.stdout.splitlines()
    assert header.split("\t") == ["subject", "site", *KEYS]
    table = pd.read_csv(io.StringIO(tsv.stdout), sep="\t", dtype={"subject": str})
    assert table.loc[0, "subject"] == "07" and table.loc[0, "dice"] == pytest.approx(2 * 4 / (5 + 4))
    assert table.loc[0, "lesion_recall"] == 0.5 and table.loc[0, "lesion_f1"] == pytest.approx(2 / 3)
    assert table.loc[0, "avd_pct"] == pytest.approx(20.0)
    assert table.loc[0, "reference_ml"] == pytest.approx(5 * 0.9 * 1.1 * 3 / 1000)
    as_json = run("evaluate", "--reference", ref, "--prediction", pred, "--json")
    assert as_json.returncode == 0, as_json.stderr
    scores = json.loads(as_json.stdout)
    assert list(scores) == list(KEYS) and scores["tp_voxels"] == 4 and scores["fn_voxels"] == 1
    assert scores["h95_mm"] == pytest.approx(table.loc[0, "h95_mm"])
    assert scores["remarks"] == ""


def test_cli_refuses_a_prediction_on_another_grid_with_one_line(pair, tmp_path):
    ref, _ = pair
    moved = AFFINE.copy()
    moved[0, 3] += 2.0  # same shape, shifted by 2 mm
    write_nifti(tmp_path / "moved.nii.gz", np.zeros((10, 10, 4), np.uint8), moved)
    out = tmp_path / "m.tsv"
    result = run("evaluate", "--reference", ref, "--prediction", tmp_path / "moved.nii.gz", "-o", out)
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "moved.nii.gz: prediction voxel-to-world affine differs from the reference's" in result.stderr


def test_cli_errors_in_process(pair, tmp_path, capsys):
    ref, pred = pair
    write_nifti(tmp_path / "small.nii.gz", np.zeros((10, 10, 3), np.uint8), AFFINE)
    assert cli(["evaluate", "--reference", str(ref), "--prediction", str(tmp_path / "small.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "small.nii.gz: prediction shape (10, 10, 3) differs from the reference" in err
    labels = np.zeros((10, 10, 4), np.uint8)
    labels[0, 0, 0] = 5
    write_nifti(tmp_path / "ref5.nii.gz", labels, AFFINE)
    assert cli(["evaluate", "--reference", str(tmp_path / "ref5.nii.gz"), "--prediction", str(pred)]) == 2
    assert "ref5.nii.gz: unknown label value(s) [5]" in capsys.readouterr().err
    assert cli(["evaluate", "--reference", str(tmp_path / "nothing.nii.gz"), "--prediction", str(pred)]) == 2
    assert "nothing.nii.gz: reference file does not exist" in capsys.readouterr().err


def test_cli_writes_the_row_and_handles_an_empty_reference(pair, tmp_path, capsys):
    ref, pred = pair
    out = tmp_path / "sub-1_metrics.tsv"
    assert (
        cli(
            [
                "evaluate",
                "--reference",
                str(ref),
                "--prediction",
                str(pred),
                "--subject",
                "1",
                "--site",
                "A",
                "--split",
                "test",
                "--model",
                "fcn",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    table = pd.read_csv(out, sep="\t", dtype={"subject": str})
    assert list(table.columns[:4]) == ["subject", "site", "split", "model"] and len(table) == 1
    # a float reference with labels 0.0/2.0 only: empty reference, defined values, valid JSON
    write_nifti(
        tmp_path / "empty.nii.gz", np.where(np.arange(400).reshape(10, 10, 4) < 5, 2.0, 0.0), AFFINE, dtype=np.float32
    )
    assert cli(["evaluate", "--reference", str(tmp_path / "empty.nii.gz"), "--prediction", str(pred), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["dice"] == 0 and scores["lesion_recall"] == 1 and "empty reference" in scores["remarks"]
    assert all(isinstance(scores[k], float) and math.isfinite(scores[k]) for k in KEYS[:5])


# ---------------------------------------------------------------------------------- lesions
def test_lesion_table_values():
    mask = np.zeros((10, 10, 6), np.uint8)
    mask[1:3, 1:3, 1] = 1  # 4 voxels, centroid (1.5, 1.5, 1)
    mask[6, 6, 3] = mask[7, 7, 4] = 1  # corner neighbours: one 26-connected lesion, centroid (6.5, 6.5, 3.5)
    mask[6:9, 1, 5] = 1  # 3 voxels, centroid (7, 1, 5)
    prob = np.where(mask > 0, 0.6, 0.1).astype(np.float32)
    prob[2, 2, 1] = 0.95
    table = lesion_table(mask, AFFINE, prob, subject="3")
    assert list(table.columns) == COLUMNS
    assert list(table["lesion_id"]) == [1, 2, 3] and list(table["voxels"]) == [4, 3, 2]
    voxel_ml = 0.9 * 1.1 * 3 / 1000
    assert table["volume_ml"].tolist() == pytest.approx([4 * voxel_ml, 3 * voxel_ml, 2 * voxel_ml])
    first = table.iloc[0]
    assert (first["centroid_x_mm"], first["centroid_y_mm"], first["centroid_z_mm"]) == pytest.approx(
        (1.5 * 0.9 - 40, 1.5 * 1.1 - 50, 1 * 3.0 - 10)
    )
    assert first["max_probability"] == pytest.approx(0.95)
    assert first["mean_probability"] == pytest.approx((0.95 + 3 * 0.6) / 4)
    last = table.iloc[2]
    assert (last["centroid_x_mm"], last["centroid_y_mm"], last["centroid_z_mm"]) == pytest.approx(
        (6.5 * 0.9 - 40, 6.5 * 1.1 - 50, 3.5 * 3.0 - 10)
    )
    assert (table["subject"] == "3").all()


def test_lesion_table_binarises_like_the_metrics_and_without_probability():
    prob = np.zeros((5, 5, 2), np.float32)
    prob[1, 1, 0], prob[3, 3, 1] = 0.7, 0.3  # a probability map given as the mask: only 0.7 counts
    table = lesion_table(prob, np.eye(4))
    assert len(table) == 1 and table.loc[0, "voxels"] == 1 and math.isnan(table.loc[0, "max_probability"])
    empty = lesion_table(np.zeros((5, 5, 2), np.uint8), np.eye(4))
    assert list(empty.columns) == COLUMNS and len(empty) == 0


def test_lesions_cli_writes_the_table(tmp_path, capsys):
    mask = np.zeros((10, 10, 4), np.uint8)
    mask[2:4, 2:4, 1] = 1
    prob = mask * 0.8
    write_nifti(tmp_path / "mask.nii.gz", mask, AFFINE)
    write_nifti(tmp_path / "prob.nii.gz", prob.astype(np.float32), AFFINE)
    out = tmp_path / "sub-1_lesions.tsv"
    assert (
        cli(
            [
                "lesions",
                "--mask",
                str(tmp_path / "mask.nii.gz"),
                "--probseg",
                str(tmp_path / "prob.nii.gz"),
                "--subject",
                "1",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    table = pd.read_csv(out, sep="\t", dtype={"subject": str})
    assert table.loc[0, "subject"] == "1" and table.loc[0, "voxels"] == 4
    assert table.loc[0, "max_probability"] == pytest.approx(0.8, abs=1e-6)
    write_nifti(tmp_path / "none.nii.gz", np.zeros((10, 10, 4), np.uint8), AFFINE)
    assert cli(["lesions", "--mask", str(tmp_path / "none.nii.gz"), "-o", str(tmp_path / "none.tsv")]) == 0
    assert (tmp_path / "none.tsv").read_text().strip().split("\t") == COLUMNS
    write_nifti(tmp_path / "other.nii.gz", np.zeros((10, 10, 3), np.float32), AFFINE)
    assert (
        cli(
            [
                "lesions",
                "--mask",
                str(tmp_path / "mask.nii.gz"),
                "--probseg",
                str(tmp_path / "other.nii.gz"),
                "-o",
                str(tmp_path / "x.tsv"),
            ]
        )
        == 2
    )
    assert "other.nii.gz: probability map shape" in capsys.readouterr().err and not (tmp_path / "x.tsv").exists()
