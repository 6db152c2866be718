"""The challenge metrics on hand-built cases whose answers are worked out by hand."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import wmhflow_command, write_nifti
from wmhflow.metrics import boundary, evaluate_arrays

EYE = np.eye(4)


def test_dice_avd_and_voxel_counts():
    ref = np.zeros((10, 10, 3), np.uint8)
    pred = np.zeros_like(ref)
    ref[2:6, 2:6, 1] = 1  # 16 voxels
    pred[2:6, 2:4, 1] = 1  # 8 voxels, all inside
    m = evaluate_arrays(ref, pred, np.diag([1.0, 1.0, 2.0, 1.0]))
    assert m["dice"] == pytest.approx(2 * 8 / (16 + 8))
    assert m["avd_pct"] == pytest.approx(50.0)
    assert (m["tp_voxels"], m["fp_voxels"], m["fn_voxels"]) == (8, 0, 8)
    assert m["reference_ml"] == pytest.approx(16 * 2 / 1000) and m["predicted_ml"] == pytest.approx(8 * 2 / 1000)


def test_label_two_is_ignored_in_reference_and_prediction():
    ref = np.zeros((8, 8, 3), np.uint8)
    ref[1:3, 1:3, 1] = 1
    ref[5:7, 5:7, 1] = 2
    pred = (ref > 0).astype(np.uint8)  # also predicts the other-pathology region
    m = evaluate_arrays(ref, pred, EYE)
    assert m["dice"] == 1.0 and m["fp_voxels"] == 0 and m["predicted_lesions"] == 1


def test_float_predictions_threshold_at_one_half_and_integers_above_zero():
    ref = np.zeros((6, 6, 3), np.uint8)
    ref[2, 2, 1] = ref[3, 3, 1] = 1
    prob = np.zeros(ref.shape, np.float32)
    prob[2, 2, 1], prob[3, 3, 1] = 0.5, 0.49
    assert evaluate_arrays(ref, prob, EYE)["tp_voxels"] == 1
    labels = np.zeros(ref.shape, np.int16)
    labels[2, 2, 1], labels[3, 3, 1] = 3, 1
    assert evaluate_arrays(ref, labels, EYE)["tp_voxels"] == 2


def test_boundary_is_in_plane_with_outside_as_foreground():
    mask = np.zeros((5, 5, 3), bool)
    mask[:, :, 1] = True  # a full slice touching every image border
    edge = boundary(mask)
    # outside counts as foreground: nothing erodes at the image border, so no boundary at all
    assert not edge.any()
    mask = np.zeros((7, 7, 3), bool)
    mask[1:6, 1:6, :] = True  # a 5x5 square on every slice: in-plane erosion leaves the 3x3 core
    edge = boundary(mask)
    assert edge[:, :, 1].sum() == 25 - 9 and edge[:, :, 0].sum() == 16  # slices do not erode each other


def test_h95_in_mm_with_anisotropic_spacing():
    ref = np.zeros((20, 20, 5), np.uint8)
    pred = np.zeros_like(ref)
    ref[5, 5, 2] = 1
    pred[5, 8, 2] = 1  # 3 voxels along j
    affine = np.diag([0.5, 2.0, 3.0, 1.0])
    assert evaluate_arrays(ref, pred, affine)["h95_mm"] == pytest.approx(6.0)
    pred[5, 8, 2], pred[5, 5, 4] = 0, 1  # 2 slices apart
    assert evaluate_arrays(ref, pred, affine)["h95_mm"] == pytest.approx(6.0)


def test_h95_uses_an_oblique_direction_and_the_95th_percentile():
    angle = np.deg2rad(30)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]) @ np.diag([2.0, 1.0, 1.0])
    ref = np.zeros((30, 30, 3), np.uint8)
    pred = np.zeros_like(ref)
    ref[10, 10, 1] = 1
    pred[10, 10, 1] = 1
    pred[14, 10, 1] = 1  # 4 voxels along i = 8 mm, whatever the rotation
    # distances ref->pred: [0]; pred->ref: [0, 8] -> 95th percentile (linear) = 0.95 * 8
    assert evaluate_arrays(ref, pred, affine)["h95_mm"] == pytest.approx(0.95 * 8.0)


def test_lesions_are_26_connected_and_counted_both_ways():
    ref = np.zeros((10, 10, 5), np.uint8)
    ref[1, 1, 1] = ref[2, 2, 2] = 1  # diagonal neighbours: one lesion
    ref[7, 7, 2] = 1  # a second lesion, missed
    pred = np.zeros_like(ref)
    pred[2, 2, 2] = 1  # touches lesion 1
    pred[5, 0, 4] = 1  # a false detection
    m = evaluate_arrays(ref, pred, EYE)
    assert (m["reference_lesions"], m["predicted_lesions"]) == (2, 2)
    assert m["lesion_recall"] == 0.5 and m["lesion_precision"] == 0.5
    assert m["lesion_f1"] == pytest.approx(0.5)


def test_edge_cases_have_defined_values_and_reasons():
    empty = np.zeros((5, 5, 3), np.uint8)
    some = empty.copy()
    some[2, 2, 1] = 1
    both = evaluate_arrays(empty, empty, EYE)
    assert (both["dice"], both["h95_mm"], both["avd_pct"], both["lesion_recall"], both["lesion_f1"]) == (1, 0, 0, 1, 1)
    no_ref = evaluate_arrays(empty, some, EYE)
    assert no_ref["dice"] == 0 and math.isnan(no_ref["h95_mm"]) and math.isnan(no_ref["avd_pct"])
    assert no_ref["lesion_recall"] == 1 and no_ref["lesion_precision"] == 0 and no_ref["lesion_f1"] == 0
    assert "empty reference" in no_ref["remarks"]
    no_pred = evaluate_arrays(some, empty, EYE)
    assert no_pred["dice"] == 0 and math.isnan(no_pred["h95_mm"]) and no_pred["avd_pct"] == 100
    assert no_pred["lesion_recall"] == 0 and no_pred["lesion_precision"] == 1 and "empty prediction" in no_pred["remarks"]


masks = hnp.arrays(np.uint8, st.tuples(st.integers(3, 8), st.integers(3, 8), st.integers(1, 4)),
                   elements=st.integers(0, 2))


@settings(max_examples=40, deadline=None)
@given(masks, st.floats(0.3, 3.0), st.floats(0.5, 4.0))
def test_perfect_prediction_and_symmetry(reference, spacing, thickness):
    affine = np.diag([spacing, spacing, thickness, 1.0])
    perfect = evaluate_arrays(reference, (reference == 1).astype(np.uint8), affine)
    assert perfect["dice"] == 1 and perfect["avd_pct"] == 0
    assert perfect["lesion_recall"] == 1 and perfect["lesion_f1"] == 1
    assert perfect["h95_mm"] == 0
    wmh = (reference == 1).astype(np.uint8)
    other = np.roll(wmh, 1, axis=0)
    forward = evaluate_arrays(wmh, other, affine)["dice"]
    backward = evaluate_arrays(other, wmh, affine)["dice"]
    assert forward == pytest.approx(backward)
    assert 0 <= evaluate_arrays(reference, other, affine)["lesion_f1"] <= 1


def test_evaluate_cli_tsv_json_and_grid_errors(tmp_path):
    ref = np.zeros((8, 8, 3), np.uint8)
    ref[2:4, 2:4, 1] = 1
    write_nifti(tmp_path / "ref.nii.gz", ref)
    write_nifti(tmp_path / "pred.nii.gz", (ref == 1).astype(np.float32) * 0.9)
    run = subprocess.run(wmhflow_command() + ["evaluate", "--reference", str(tmp_path / "ref.nii.gz"),
                         "--prediction", str(tmp_path / "pred.nii.gz"), "--subject", "7", "--json"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    scores = json.loads(run.stdout)
    assert scores["subject"] == "7" and scores["dice"] == 1.0
    out = tmp_path / "m.tsv"
    run = subprocess.run(wmhflow_command() + ["evaluate", "--reference", str(tmp_path / "ref.nii.gz"),
                         "--prediction", str(tmp_path / "pred.nii.gz"), "-o", str(out)], capture_output=True, text=True)
    assert run.returncode == 0 and out.read_text().splitlines()[0].startswith("dice\th95_mm\tavd_pct")
    write_nifti(tmp_path / "small.nii.gz", np.zeros((8, 8, 2), np.uint8))
    bad_out = tmp_path / "bad.tsv"
    run = subprocess.run(wmhflow_command() + ["evaluate", "--reference", str(tmp_path / "ref.nii.gz"),
                         "--prediction", str(tmp_path / "small.nii.gz"), "-o", str(bad_out)], capture_output=True, text=True)
    assert run.returncode == 2 and not bad_out.exists()
    assert run.stderr.strip().count("\n") == 0 and "small.nii.gz: prediction shape (8, 8, 2) differs" in run.stderr
    labels = ref.copy()
    labels[0, 0, 0] = 5
    write_nifti(tmp_path / "ref5.nii.gz", labels)
    run = subprocess.run(wmhflow_command() + ["evaluate", "--reference", str(tmp_path / "ref5.nii.gz"),
                         "--prediction", str(tmp_path / "pred.nii.gz")], capture_output=True, text=True)
    assert run.returncode == 2 and "ref5.nii.gz: unknown label value(s) [5]" in run.stderr
