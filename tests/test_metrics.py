"""The challenge metrics: hand-built cases whose answers are worked out by hand, property tests, and
an independent re-implementation of the organisers' SimpleITK procedure as an oracle."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage
from scipy.spatial import cKDTree

from wmhflow.evaluation.metrics import KEYS, boundary, evaluate_arrays, image_diagonal
from wmhflow.io import to_sitk

EYE = np.eye(4)


def rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique(angles, spacing, origin=(10.0, -20.0, 5.0)):
    affine = np.eye(4)
    affine[:3, :3] = rotation(*angles) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


# ------------------------------------------------------------------------- Dice, AVD, counts
def test_dice_avd_and_voxel_counts():
    ref = np.zeros((10, 10, 3), np.uint8)
    pred = np.zeros_like(ref)
    ref[2:6, 2:6, 1] = 1  # 16 voxels
    pred[2:6, 2:4, 1] = 1  # 8 voxels, all inside
    pred[8, 8, 2] = 1  # one false positive voxel
    m = evaluate_arrays(ref, pred, np.diag([1.0, 1.0, 2.0, 1.0]))
    assert list(m) == list(KEYS)
    assert m["dice"] == pytest.approx(2 * 8 / (16 + 9))
    assert m["avd_pct"] == pytest.approx(7 / 16 * 100)
    assert (m["tp_voxels"], m["fp_voxels"], m["fn_voxels"]) == (8, 1, 8)
    assert m["reference_ml"] == pytest.approx(16 * 2 / 1000) and m["predicted_ml"] == pytest.approx(9 * 2 / 1000)
    assert (m["reference_lesions"], m["predicted_lesions"]) == (1, 2)
    assert m["remarks"] == ""


def test_label_two_is_ignored_in_reference_and_prediction():
    ref = np.zeros((8, 8, 3), np.uint8)
    ref[1:3, 1:3, 1] = 1
    ref[5:7, 5:7, 1] = 2
    pred = (ref > 0).astype(np.uint8)  # also predicts the other-pathology region
    m = evaluate_arrays(ref, pred, EYE)
    assert m["dice"] == 1.0 and m["fp_voxels"] == 0 and m["predicted_lesions"] == 1 and m["avd_pct"] == 0
    assert m["h95_mm"] == 0 and m["lesion_f1"] == 1


def test_label_two_splits_a_predicted_component_before_counting():
    ref = np.zeros((12, 5, 3), np.uint8)
    ref[0:3, 2, 1] = 1
    ref[5, :, :] = 2  # a wall of other pathology across the predicted bar
    pred = np.zeros_like(ref)
    pred[0:10, 2, 1] = 1  # one bar: zeroed at x=5, it becomes x=0..4 (touching) and x=6..9 (not)
    m = evaluate_arrays(ref, pred, EYE)
    assert m["predicted_lesions"] == 2 and m["lesion_precision"] == 0.5 and m["lesion_recall"] == 1
    assert m["lesion_f1"] == pytest.approx(2 * 0.5 / 1.5)
    assert (m["tp_voxels"], m["fp_voxels"]) == (3, 2 + 4)


def test_float_predictions_threshold_at_one_half_and_integers_above_zero():
    ref = np.zeros((6, 6, 3), np.uint8)
    ref[2, 2, 1] = ref[3, 3, 1] = ref[4, 4, 1] = 1
    prob = np.zeros(ref.shape, np.float32)
    prob[2, 2, 1], prob[3, 3, 1], prob[4, 4, 1] = 0.5, 0.49, 1.0
    assert evaluate_arrays(ref, prob, EYE)["tp_voxels"] == 2
    assert evaluate_arrays(ref, prob.astype(np.float64), EYE)["tp_voxels"] == 2
    labels = np.zeros(ref.shape, np.int16)
    labels[2, 2, 1], labels[3, 3, 1], labels[4, 4, 1] = 3, 1, -1  # > 0 counts, negative does not
    assert evaluate_arrays(ref, labels, EYE)["tp_voxels"] == 2
    assert evaluate_arrays(ref, labels > 0, EYE)["tp_voxels"] == 2  # boolean: an integer mask
    # the same 0.3 is a lesion in an integer image? no: integers cannot hold it; in a float image it is not
    weak = np.zeros(ref.shape, np.float32)
    weak[2, 2, 1] = 0.3
    assert evaluate_arrays(ref, weak, EYE)["predicted_lesions"] == 0


# ------------------------------------------------------------------------------ boundary, H95
def test_boundary_is_in_plane_with_outside_as_foreground():
    mask = np.zeros((5, 5, 3), bool)
    mask[:, :, 1] = True  # a full slice touching every image border
    assert not boundary(mask).any()  # outside counts as foreground: nothing erodes
    mask = np.zeros((7, 7, 3), bool)
    mask[1:6, 1:6, :] = True  # a 5x5 square on every slice: in-plane erosion leaves the 3x3 core
    edge = boundary(mask)
    assert edge[:, :, 1].sum() == 25 - 9 and edge[:, :, 0].sum() == 16  # slices do not erode each other


def test_boundary_erosion_is_the_full_three_by_three_square():
    # a diagonal neighbour alone decides: a 4-connected (cross) erosion would keep (2, 2) inside
    mask = np.zeros((7, 7, 1), bool)
    mask[1:6, 1:6, 0] = True
    mask[1, 1, 0] = False
    assert boundary(mask)[2, 2, 0]


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(bool, st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 4))))
def test_boundary_equals_scipy_in_plane_erosion_with_foreground_border(mask):
    square = np.zeros((3, 3, 3), bool)
    square[:, :, 1] = True
    expected = mask & ~ndimage.binary_erosion(mask, structure=square, border_value=1)
    assert np.array_equal(boundary(mask), expected)


def test_lesion_touching_the_image_border_has_no_boundary_along_the_border():
    ref = np.zeros((8, 8, 1), np.uint8)
    ref[0:3, 0:3, 0] = 1  # a 3x3 lesion in the image corner
    pred = np.zeros_like(ref)
    pred[0, 0, 0] = 1  # the corner voxel only
    # reference boundary: only the two inner sides (5 voxels), not the 4 voxels along the border
    assert set(map(tuple, np.argwhere(boundary(ref.astype(bool))))) == {
        (2, 0, 0),
        (2, 1, 0),
        (2, 2, 0),
        (0, 2, 0),
        (1, 2, 0),
    }
    ref_to_pred = np.sort([2, 2, math.sqrt(5), math.sqrt(5), math.sqrt(8)])
    expected = max(ref_to_pred[3] + 0.8 * (ref_to_pred[4] - ref_to_pred[3]), 2.0)  # linear 95th percentile
    m = evaluate_arrays(ref, pred, EYE)
    assert m["h95_mm"] == pytest.approx(expected)
    assert m["lesion_recall"] == 1 and m["lesion_f1"] == 1


def test_h95_in_mm_with_anisotropic_spacing():
    ref = np.zeros((20, 20, 5), np.uint8)
    pred = np.zeros_like(ref)
    ref[5, 5, 2] = 1
    pred[5, 8, 2] = 1  # 3 voxels along j
    affine = np.diag([0.5, 2.0, 3.0, 1.0])
    assert evaluate_arrays(ref, pred, affine)["h95_mm"] == pytest.approx(6.0)
    pred[5, 8, 2], pred[5, 5, 4] = 0, 1  # 2 slices apart
    assert evaluate_arrays(ref, pred, affine)["h95_mm"] == pytest.approx(6.0)
    pred[5, 5, 4], pred[9, 5, 2] = 0, 1  # 4 voxels along i
    assert evaluate_arrays(ref, pred, affine)["h95_mm"] == pytest.approx(2.0)


def test_h95_uses_an_oblique_direction_and_the_95th_percentile():
    affine = oblique((0.2, -0.4, np.deg2rad(30)), (2.0, 1.0, 1.5))
    ref = np.zeros((30, 30, 3), np.uint8)
    pred = np.zeros_like(ref)
    ref[10, 10, 1] = 1
    pred[10, 10, 1] = 1
    pred[14, 10, 1] = 1  # 4 voxels along i = 8 mm, whatever the rotation
    # distances ref->pred: [0]; pred->ref: [0, 8] -> 95th percentile (linear) = 0.95 * 8
    assert evaluate_arrays(ref, pred, affine)["h95_mm"] == pytest.approx(0.95 * 8.0)
    pred[14, 10, 1], pred[10, 13, 2] = 0, 1  # 3 along j (3 mm) and 1 along k (1.5 mm)
    assert evaluate_arrays(ref, pred, affine)["h95_mm"] == pytest.approx(0.95 * math.hypot(3.0, 1.5))


def test_h95_with_a_sheared_affine_uses_the_full_matrix():
    affine = np.array([[1.0, 0.5, 0, 0], [0, 1.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    ref = np.zeros((10, 10, 3), np.uint8)
    pred = np.zeros_like(ref)
    ref[2, 2, 1] = pred[2, 6, 1] = 1  # 4 voxels along j = (2, 4) mm
    assert evaluate_arrays(ref, pred, affine)["h95_mm"] == pytest.approx(math.hypot(2.0, 4.0))


# --------------------------------------------------------------------------------- lesions
def test_lesions_are_26_connected_and_counted_both_ways():
    ref = np.zeros((10, 10, 5), np.uint8)
    ref[1, 1, 1] = ref[2, 2, 2] = 1  # corner neighbours (26- but not 18-connected): one lesion
    ref[7, 7, 2] = 1  # a second lesion, missed
    pred = np.zeros_like(ref)
    pred[2, 2, 2] = 1  # touches lesion 1
    pred[5, 0, 4] = 1  # a false detection
    m = evaluate_arrays(ref, pred, EYE)
    assert (m["reference_lesions"], m["predicted_lesions"]) == (2, 2)
    assert m["lesion_recall"] == 0.5 and m["lesion_precision"] == 0.5
    assert m["lesion_f1"] == pytest.approx(0.5)


def test_lesion_f1_with_unequal_precision_and_recall():
    ref = np.zeros((20, 5, 1), np.uint8)
    ref[0, 0, 0] = ref[4, 0, 0] = ref[8, 0, 0] = ref[12, 0, 0] = 1  # 4 lesions
    pred = np.zeros_like(ref)
    pred[0, 0, 0] = 1  # 1 of 4 detected, 1 of 1 detections true
    m = evaluate_arrays(ref, pred, EYE)
    assert (m["lesion_recall"], m["lesion_precision"]) == (0.25, 1.0)
    assert m["lesion_f1"] == pytest.approx(2 * 0.25 / 1.25)


# ------------------------------------------------------------------------------ edge cases
def test_edge_cases_have_defined_values_and_reasons():
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    empty = np.zeros((5, 5, 3), np.uint8)
    diagonal = math.sqrt(4**2 + 8**2 + 6**2)
    assert image_diagonal(empty.shape, affine) == pytest.approx(diagonal)
    some = empty.copy()
    some[2, 2, 1] = some[2, 3, 1] = 1
    both = evaluate_arrays(empty, empty, affine)
    assert [both[k] for k in KEYS[:6]] == [1, 0, 0, 1, 1, 1] and "empty" in both["remarks"]
    no_ref = evaluate_arrays(empty, some, affine)
    assert no_ref["dice"] == 0 and no_ref["h95_mm"] == pytest.approx(diagonal) and no_ref["avd_pct"] == 200
    assert no_ref["lesion_recall"] == 1 and no_ref["lesion_precision"] == 0 and no_ref["lesion_f1"] == 0
    assert "empty reference" in no_ref["remarks"] and no_ref["fp_voxels"] == 2
    no_pred = evaluate_arrays(some, empty, affine)
    assert no_pred["dice"] == 0 and no_pred["h95_mm"] == pytest.approx(diagonal) and no_pred["avd_pct"] == 100
    assert no_pred["lesion_recall"] == 0 and no_pred["lesion_precision"] == 1 and no_pred["lesion_f1"] == 0
    assert "empty prediction" in no_pred["remarks"] and no_pred["fn_voxels"] == 2
    # a prediction only on label 2 is an empty prediction
    ref = some.copy()
    ref[0, 0, 0] = 2
    on_two = np.zeros_like(ref)
    on_two[0, 0, 0] = 1
    assert "empty prediction" in evaluate_arrays(ref, on_two, affine)["remarks"]
    for m in (both, no_ref, no_pred):
        assert all(math.isfinite(m[k]) for k in KEYS[:6])


def test_diagonal_of_an_oblique_grid_is_its_longest_corner_to_corner_distance():
    affine = oblique((0.3, 0.1, 0.7), (1.0, 1.0, 1.0))
    affine[:3, :3] = affine[:3, :3] @ np.array([[1, 0.4, 0], [0, 1, 0], [0, 0, 1]])  # sheared too
    shape = (6, 4, 3)
    corners = np.array([[i, j, k] for i in (0, 5) for j in (0, 3) for k in (0, 2)], float) @ affine[:3, :3].T
    longest = max(np.linalg.norm(p - q) for p in corners for q in corners)
    assert image_diagonal(shape, affine) == pytest.approx(longest)


def test_mask_filling_whole_slices_is_measured_by_its_voxels():
    ref = np.zeros((4, 4, 5), np.uint8)
    ref[:, :, 1] = 1  # whole slice: no in-plane boundary (outside counts as foreground)
    pred = np.zeros_like(ref)
    pred[:, :, 3] = 1
    m = evaluate_arrays(ref, pred, np.diag([1.0, 1.0, 2.0, 1.0]))
    assert m["h95_mm"] == pytest.approx(4.0) and "no in-plane boundary" in m["remarks"]


# -------------------------------------------------------------------------- property tests
masks = hnp.arrays(
    np.uint8, st.tuples(st.integers(3, 8), st.integers(3, 8), st.integers(1, 4)), elements=st.integers(0, 2)
)
angles = st.tuples(*[st.floats(-np.pi, np.pi)] * 3)
spacings = st.tuples(st.floats(0.3, 3.0), st.floats(0.3, 3.0), st.floats(0.5, 5.0))


@settings(max_examples=40, deadline=None)
@given(masks, angles, spacings)
def test_perfect_prediction(reference, angle, spacing):
    affine = oblique(angle, spacing)
    for perfect in (
        (reference == 1).astype(np.uint8),
        (reference == 1).astype(np.float32),
        np.where(reference == 2, 7, reference).astype(np.int16),
    ):  # label 2 predicted too
        m = evaluate_arrays(reference, perfect, affine)
        assert (m["dice"], m["h95_mm"], m["avd_pct"], m["lesion_recall"], m["lesion_f1"]) == (1, 0, 0, 1, 1)
        assert m["fp_voxels"] == m["fn_voxels"] == 0


@settings(max_examples=40, deadline=None)
@given(masks, masks, spacings)
def test_dice_and_h95_are_symmetric(first, second, spacing):
    shape = tuple(min(a, b) for a, b in zip(first.shape, second.shape))
    a = (first[: shape[0], : shape[1], : shape[2]] == 1).astype(np.uint8)
    b = (second[: shape[0], : shape[1], : shape[2]] == 1).astype(np.uint8)
    affine = np.diag(list(spacing) + [1.0])
    forward, backward = evaluate_arrays(a, b, affine), evaluate_arrays(b, a, affine)
    assert forward["dice"] == pytest.approx(backward["dice"])
    assert forward["h95_mm"] == pytest.approx(backward["h95_mm"])
    assert 0 <= forward["dice"] <= 1 and 0 <= forward["lesion_f1"] <= 1 and forward["h95_mm"] >= 0


# ------------------------------------------------------ oracle: the organisers' procedure, in ITK
def official(reference, prediction, affine):
    """The organisers' steps (getImages, getDSC, getHausdorff, getAVD, getLesionDetection) written
    again with SimpleITK on images carrying the reference's geometry; non-degenerate cases only."""
    ref_nib = nib.Nifti1Image(reference.astype(np.float32), affine)
    # floating-point, as the challenge's wmh.nii.gz: the official [0.5, 1.5] window, cast to an
    # integer pixel type, would become [0, 1] and make the background WMH
    test = to_sitk(ref_nib, reference, np.float32)
    result = to_sitk(ref_nib, prediction, prediction.dtype)
    a = sitk.BinaryThreshold(test, 0.5, 1.5, 1, 0)
    keep = sitk.BinaryThreshold(test, 1.5, 2.5, 0, 1)
    masked = sitk.Mask(result, keep)
    low = 1 if "integer" in masked.GetPixelIDTypeAsString() else 0.5
    b = sitk.BinaryThreshold(masked, low, 1000, 1, 0)
    arr_a, arr_b = sitk.GetArrayFromImage(a).astype(bool), sitk.GetArrayFromImage(b).astype(bool)
    dice = 2 * (arr_a & arr_b).sum() / (arr_a.sum() + arr_b.sum())
    points = []
    for image in (a, b):
        edge = sitk.GetArrayFromImage(sitk.Subtract(image, sitk.BinaryErode(image, (1, 1, 0))))
        points.append(
            np.array([a.TransformIndexToPhysicalPoint([int(v) for v in idx[::-1]]) for idx in np.argwhere(edge)])
        )
    d_ab = cKDTree(points[1]).query(points[0])[0]
    d_ba = cKDTree(points[0]).query(points[1])[0]
    h95 = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    avd = abs(int(arr_a.sum()) - int(arr_b.sum())) / arr_a.sum() * 100
    cc = sitk.ConnectedComponentImageFilter()
    cc.SetFullyConnected(True)
    cc_a, cc_b = cc.Execute(a), cc.Execute(b)
    hit_a = sitk.GetArrayFromImage(sitk.Multiply(cc_a, sitk.Cast(b, sitk.sitkUInt32)))
    hit_b = sitk.GetArrayFromImage(sitk.Multiply(cc_b, sitk.Cast(a, sitk.sitkUInt32)))
    recall = (len(np.unique(hit_a)) - 1) / (len(np.unique(sitk.GetArrayFromImage(cc_a))) - 1)
    precision = (len(np.unique(hit_b)) - 1) / (len(np.unique(sitk.GetArrayFromImage(cc_b))) - 1)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return dice, h95, avd, recall, f1


@settings(max_examples=60, deadline=None)
@given(masks, st.data(), angles, spacings, st.booleans())
def test_matches_the_organisers_procedure(reference, data, angle, spacing, probabilities):
    if probabilities:
        prediction = data.draw(hnp.arrays(np.float32, reference.shape, elements=st.sampled_from([0.0, 0.2, 0.5, 0.9])))
    else:
        prediction = data.draw(hnp.arrays(np.uint8, reference.shape, elements=st.integers(0, 3)))
    a = reference == 1
    b = (prediction >= (0.5 if probabilities else 1)) & (reference != 2)
    # the official script needs both masks non-empty with a boundary, and background in the image
    assume(boundary(a).any() and boundary(b).any() and not (a | b).all())
    affine = oblique(angle, spacing)
    ours = evaluate_arrays(reference, prediction, affine)
    expected = official(reference, prediction, affine)
    got = tuple(ours[k] for k in KEYS[:5])
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-6)
