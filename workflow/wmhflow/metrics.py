"""The WMH challenge's five metrics, computed the way the organisers' evaluation script does.

Reference A = voxels labelled 1; label 2 ("other pathology") is background in A and the prediction is
zeroed there. Prediction B = mask > 0 for integer images, >= 0.5 for floating-point ones.
- Dice = 2|A∩B| / (|A| + |B|).
- H95: the boundary of a mask is the mask minus its binary erosion with radius (1, 1, 0) — in the slice
  plane only, voxels outside the image counting as foreground — done with SimpleITK's BinaryErode
  exactly as the organisers do; boundary voxels become physical points (mm) with the reference's
  geometry; distances to the nearest point of the other boundary (KD-tree), both ways; H95 = the
  larger of the two 95th percentiles (linear interpolation).
- AVD = |‖A‖ - ‖B‖| / ‖A‖ x 100 (voxel counts).
- Lesions: 3D connected components with 26-connectivity. Recall = reference lesions touched by B /
  reference lesions (1 when there is none); precision = components of B touching A / components of B
  (1 when there is none); F1 = 2PR / (P + R) (0 when P + R = 0).

Where the official script crashes (empty reference: division by zero) or returns NaN (empty
prediction: no boundary to measure), these functions return defined values and say why in ``remarks``:
- both empty: Dice 1, H95 0, AVD 0 (the prediction is perfect);
- empty reference only: Dice 0, H95 NaN (no reference boundary), AVD NaN (no volume to divide by);
- empty prediction only: Dice 0, H95 NaN (no predicted boundary), AVD 100.
A non-empty mask without boundary voxels (it fills whole slices up to the image border) is measured
by its own voxels instead of failing.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

KEYS = ("dice", "h95_mm", "avd_pct", "lesion_recall", "lesion_f1", "lesion_precision", "tp_voxels",
        "fp_voxels", "fn_voxels", "reference_ml", "predicted_ml", "reference_lesions", "predicted_lesions",
        "remarks")
_26_CONNECTED = np.ones((3, 3, 3), bool)


def binarize(reference: np.ndarray, prediction: np.ndarray):
    """(A, B) as the organisers define them: label 1 only, prediction zeroed on label 2."""
    reference = np.asarray(reference)
    prediction = np.asarray(prediction)
    a = reference == 1
    if np.issubdtype(prediction.dtype, np.floating):
        b = prediction >= 0.5
    else:
        b = prediction > 0
    b &= reference != 2
    return a, b


def boundary(mask: np.ndarray) -> np.ndarray:
    """Mask minus its in-plane erosion (SimpleITK BinaryErode, radius (1, 1, 0), as the organisers)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)))
    eroded = sitk.BinaryErode(image, (1, 1, 0))
    return (mask & ~sitk.GetArrayFromImage(eroded).transpose(2, 1, 0).astype(bool))


def h95(a: np.ndarray, b: np.ndarray, affine: np.ndarray) -> float:
    """Modified Hausdorff distance (95th percentile, mm) between the boundaries of two non-empty masks."""
    points_a = nib_points(np.argwhere(_boundary_or_mask(a)), affine)
    points_b = nib_points(np.argwhere(_boundary_or_mask(b)), affine)
    a_to_b = cKDTree(points_b).query(points_a, k=1)[0]
    b_to_a = cKDTree(points_a).query(points_b, k=1)[0]
    return float(max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)))


def _boundary_or_mask(mask: np.ndarray) -> np.ndarray:
    """The boundary; a mask that fills whole slices to the image border has none (outside counts as
    foreground), where the official script fails on an empty point set: its voxels stand in."""
    edge = boundary(mask)
    return edge if edge.any() else mask


def nib_points(ijk: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Voxel indices to world coordinates (mm); distances are the same in RAS and ITK's LPS."""
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def lesion_scores(a: np.ndarray, b: np.ndarray):
    """(recall, precision, f1, reference lesions, predicted lesions) with 26-connected components."""
    labels_a, n_a = ndimage.label(a, structure=_26_CONNECTED)
    labels_b, n_b = ndimage.label(b, structure=_26_CONNECTED)
    recall = 1.0 if n_a == 0 else len(np.unique(labels_a[b & a])) / n_a
    precision = 1.0 if n_b == 0 else len(np.unique(labels_b[a & b])) / n_b
    f1 = 0.0 if recall + precision == 0 else 2 * precision * recall / (precision + recall)
    return recall, precision, f1, n_a, n_b


def evaluate_arrays(reference: np.ndarray, prediction: np.ndarray, affine: np.ndarray) -> dict:
    """Every metric of one subject (keys :data:`KEYS`, in that order)."""
    a, b = binarize(reference, prediction)
    size_a, size_b = int(a.sum()), int(b.sum())
    tp = int((a & b).sum())
    remarks = []
    if size_a == 0 and size_b == 0:
        dice, distance, avd = 1.0, 0.0, 0.0
        remarks.append("reference and prediction empty: perfect agreement")
    elif size_a == 0:
        dice, distance, avd = 0.0, math.nan, math.nan
        remarks.append("empty reference: H95 and AVD undefined")
    elif size_b == 0:
        dice, distance, avd = 0.0, math.nan, 100.0
        remarks.append("empty prediction: H95 undefined")
    else:
        dice = 2.0 * tp / (size_a + size_b)
        distance = h95(a, b, affine)
        avd = abs(size_a - size_b) / size_a * 100.0
    recall, precision, f1, n_a, n_b = lesion_scores(a, b)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    values = (dice, distance, avd, recall, f1, precision, tp, size_b - tp, size_a - tp, size_a * voxel_ml,
              size_b * voxel_ml, n_a, n_b, "; ".join(remarks))
    return dict(zip(KEYS, values))


def evaluate_files(reference_path, prediction_path) -> dict:
    """Every metric of one reference/prediction pair of NIfTI files (prediction on the reference grid)."""
    from .errors import InputError
    from .io import load_nifti, require_same_grid

    reference = load_nifti(reference_path, "reference")
    prediction = load_nifti(prediction_path, "prediction")
    require_same_grid(prediction, prediction_path, reference, reference_path, "prediction", "reference")
    ref = np.asarray(reference.dataobj)
    if np.issubdtype(ref.dtype, np.floating) and not np.all(ref == np.round(ref)):
        raise InputError(reference_path, "reference labels must be whole numbers (0, 1, 2)")
    unknown = set(np.unique(ref).astype(int).tolist()) - {0, 1, 2}
    if unknown:
        raise InputError(reference_path, f"unknown label value(s) {sorted(unknown)[:5]} "
                                         f"(expected 0 background, 1 WMH, 2 other pathology)")
    return evaluate_arrays(np.rint(ref).astype(np.int16), np.asarray(prediction.dataobj), reference.affine)
