"""The WMH challenge's five metrics, computed the way the organisers' evaluation script does.

Definitions (those of the organisers' ``evaluation.py``, github.com/hjkuijf/wmhchallenge):

- Reference A = voxels labelled 1. Label 2 ("other pathology") is background in A, and the
  prediction is zeroed there *before* anything else (so a predicted blob crossing a label-2 region
  may fall apart into several components, as in the official script).
- Prediction B = voxels > 0 for integer (and boolean) images, >= 0.5 for floating-point ones. The
  dtype is the one after NIfTI scaling (``scl_slope``), as SimpleITK reads it.
  Labels are compared as values, whatever the files' pixel types. The official script thresholds in
  each image's own pixel type, which only does what it means for the challenge's floating-point
  references: ITK casts the thresholds to the pixel type, so with an integer-typed reference the
  label-1 window [0.5, 1.5] becomes [0, 1] (background counted as WMH) and with a uint8 prediction
  the upper bound 1000 wraps to 232 (a 0/255 mask counted as empty; int8 raises). We keep the
  intended definition (label 1; > 0; >= 0.5) and drop the upper bound of 1000, which no mask or
  probability reaches.
- Dice = 2|A∩B| / (|A| + |B|).
- H95: the boundary of a mask is the mask minus its erosion by a 3x3 square in the slice plane only
  (SimpleITK ``BinaryErode`` with radius (1, 1, 0), exactly the organisers' call: its default ball
  kernel of radius 1 *is* the full 3x3 square, and voxels outside the image count as foreground, so
  a lesion touching the image border has no boundary along that border). The slice plane is the
  plane of the first two voxel axes (ITK's x and y), whatever the acquisition plane, as in the
  official script. Boundary voxels become physical points (mm) with the *reference's* geometry
  (the prediction's own header is not used beyond the grid check, as the organisers copy the
  reference's information onto it). The full nibabel affine is used (sform preferred, the project's
  convention for every reader); for an orthonormal direction this is ITK's origin + direction ·
  spacing · index, and distances do not depend on RAS versus LPS. For every boundary point the
  distance to the nearest point of the other boundary (exact KD-tree query, both ways); H95 = the
  larger of the two 95th percentiles (numpy's linear interpolation).
- AVD = |‖A‖ - ‖B‖| / ‖A‖ x 100, with voxel counts.
- Lesions: 3D connected components with 26-connectivity (SimpleITK's ``FullyConnected``).
  Recall = reference lesions touched by B / reference lesions (1 when there is none); precision =
  components of B touching A / components of B (1 when there is none); F1 = 2PR / (P + R), 0 when
  P + R = 0. Touched lesions are counted as the distinct labels inside A∩B, which is the official
  count (distinct labels minus the background) without relying on a background voxel existing.

Where the official script crashes (empty reference: an empty KD-tree, then a division by zero) or
returns NaN (empty prediction: no boundary to measure; both empty: Dice 0/0), these functions return
a defined, finite value and say why in ``remarks``:

=========================  ====  ==========================  =====================  ======  =====
case                       Dice  H95 (mm)                    AVD (%)                recall  F1
=========================  ====  ==========================  =====================  ======  =====
both empty                 1     0                           0                      1       1
empty reference only       0     image diagonal (worst)      100 x ‖B‖ (see below)  1       0
empty prediction only      0     image diagonal (worst)      100 (official)         0       0
=========================  ====  ==========================  =====================  ======  =====

- *both empty*: the prediction is perfect, every metric takes its best value.
- *H95 with one side empty*: no distance exists, so the worst one the image allows is used: the
  largest distance between two voxel centres of the reference grid (its diagonal). Any non-empty
  prediction on that image scores at most this value, so an empty prediction never ranks better
  than a real one, and means and box plots stay finite.
- *AVD with an empty reference*: the denominator is clamped to one voxel, giving 100 x ‖B‖ %:
  at least 100 %, growing with the falsely predicted volume.
- Dice, recall and F1 with one side empty are the official script's own values.
- A non-empty mask without boundary voxels (it fills whole slices up to the image border, which
  the erosion with an outside-as-foreground border never peels) is measured by its own voxels
  instead of failing on an empty point set; ``remarks`` says so.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

KEYS = (
    "dice",
    "h95_mm",
    "avd_pct",
    "lesion_recall",
    "lesion_f1",
    "lesion_precision",
    "tp_voxels",
    "fp_voxels",
    "fn_voxels",
    "reference_ml",
    "predicted_ml",
    "reference_lesions",
    "predicted_lesions",
    "remarks",
)
#: The five challenge metrics, in the challenge's order.
METRICS = KEYS[:5]
_26_CONNECTED = np.ones((3, 3, 3), bool)


def binarize_prediction(prediction: np.ndarray) -> np.ndarray:
    """The challenge's binarisation: > 0 for integer/boolean images, >= 0.5 for floating-point ones."""
    prediction = np.asarray(prediction)
    if np.issubdtype(prediction.dtype, np.floating):
        return prediction >= 0.5
    return prediction > 0


def binarize(reference: np.ndarray, prediction: np.ndarray):
    """(A, B) as the organisers define them: label 1 only, prediction zeroed on label 2."""
    reference = np.asarray(reference)
    if reference.shape != np.shape(prediction):
        raise ValueError(f"prediction shape {np.shape(prediction)} differs from the reference shape {reference.shape}")
    a = reference == 1
    b = binarize_prediction(prediction) & (reference != 2)
    return a, b


def boundary(mask: np.ndarray) -> np.ndarray:
    """Mask minus its in-plane 3x3 erosion (SimpleITK BinaryErode, radius (1, 1, 0), as the organisers;
    voxels outside the image count as foreground)."""
    import SimpleITK as sitk

    mask = np.asarray(mask, bool)
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)))
    eroded = sitk.BinaryErode(image, (1, 1, 0))
    return mask & ~sitk.GetArrayFromImage(eroded).transpose(2, 1, 0).astype(bool)


def nib_points(ijk: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Voxel indices to world coordinates (mm); distances are the same in RAS and ITK's LPS."""
    return np.asarray(ijk, float) @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def image_diagonal(shape, affine: np.ndarray) -> float:
    """The largest distance (mm) between two voxel centres of a grid: its longest diagonal."""
    extent = np.asarray(shape[:3], float) - 1
    matrix = np.asarray(affine)[:3, :3]
    return float(
        max(
            np.linalg.norm(matrix @ (extent * np.array((1.0,) + signs)))
            for signs in itertools.product((1.0, -1.0), repeat=2)
        )
    )


def _boundary_points(mask: np.ndarray, affine: np.ndarray):
    """(points in mm, True when the mask had no boundary voxel and its own voxels stand in)."""
    edge = boundary(mask)
    fallback = not edge.any()
    return nib_points(np.argwhere(mask if fallback else edge), affine), fallback


def h95(a: np.ndarray, b: np.ndarray, affine: np.ndarray) -> float:
    """Modified Hausdorff distance (95th percentile, mm) between the boundaries of two non-empty masks."""
    return _h95(a, b, affine)[0]


def _h95(a, b, affine):
    points_a, fallback_a = _boundary_points(a, affine)
    points_b, fallback_b = _boundary_points(b, affine)
    a_to_b = cKDTree(points_b).query(points_a, k=1)[0]
    b_to_a = cKDTree(points_a).query(points_b, k=1)[0]
    distance = float(max(np.percentile(a_to_b, 95, method="linear"), np.percentile(b_to_a, 95, method="linear")))
    remarks = [
        f"{name} has no in-plane boundary (fills whole slices): its voxels used for H95"
        for name, used in (("reference", fallback_a), ("prediction", fallback_b))
        if used
    ]
    return distance, remarks


def lesion_scores(a: np.ndarray, b: np.ndarray):
    """(recall, precision, f1, reference lesions, predicted lesions) with 26-connected components."""
    labels_a, n_a = ndimage.label(a, structure=_26_CONNECTED)
    labels_b, n_b = ndimage.label(b, structure=_26_CONNECTED)
    overlap = a & b
    recall = 1.0 if n_a == 0 else len(np.unique(labels_a[overlap])) / n_a
    precision = 1.0 if n_b == 0 else len(np.unique(labels_b[overlap])) / n_b
    f1 = 0.0 if recall + precision == 0 else 2 * precision * recall / (precision + recall)
    return recall, precision, f1, int(n_a), int(n_b)


def evaluate_arrays(reference: np.ndarray, prediction: np.ndarray, affine: np.ndarray) -> dict:
    """Every metric of one subject (keys :data:`KEYS`, in that order); ``affine`` is the reference's."""
    a, b = binarize(reference, prediction)
    size_a, size_b = int(a.sum()), int(b.sum())
    tp = int((a & b).sum())
    remarks = []
    if size_a == 0 and size_b == 0:
        dice, distance, avd = 1.0, 0.0, 0.0
        remarks.append("reference and prediction empty: perfect agreement (Dice 1, H95 0, AVD 0)")
    elif size_a == 0:
        diagonal = image_diagonal(a.shape, affine)
        dice, distance, avd = 0.0, diagonal, 100.0 * size_b
        remarks.append(f"empty reference: H95 set to the image diagonal ({diagonal:.2f} mm), AVD relative to one voxel")
    elif size_b == 0:
        diagonal = image_diagonal(a.shape, affine)
        dice, distance, avd = 0.0, diagonal, 100.0
        remarks.append(f"empty prediction: H95 set to the image diagonal ({diagonal:.2f} mm)")
    else:
        dice = 2.0 * tp / (size_a + size_b)
        distance, notes = _h95(a, b, affine)
        remarks.extend(notes)
        avd = abs(size_a - size_b) / size_a * 100.0
    recall, precision, f1, n_a, n_b = lesion_scores(a, b)
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    values = (
        dice,
        distance,
        avd,
        recall,
        f1,
        precision,
        tp,
        size_b - tp,
        size_a - tp,
        size_a * voxel_ml,
        size_b * voxel_ml,
        n_a,
        n_b,
        "; ".join(remarks),
    )
    return dict(zip(KEYS, values))


def evaluate_files(reference_path, prediction_path) -> dict:
    """Every metric of one reference/prediction pair of NIfTI files (prediction on the reference grid).

    Stricter than the official script, which only compares image sizes and then copies the
    reference's geometry onto the prediction: a prediction whose affine differs (by more than
    :data:`wmhflow.io.GRID_ATOL`) is refused, since it would be scored against the wrong voxels.
    Reference labels must be whole numbers among 0, 1, 2.
    """
    from ..io import label_array, load_nifti, require_same_grid

    reference = load_nifti(reference_path, "reference")
    prediction = load_nifti(prediction_path, "prediction")
    require_same_grid(prediction, prediction_path, reference, reference_path, "prediction", "reference")
    ref = label_array(reference, reference_path)
    return evaluate_arrays(ref, np.asarray(prediction.dataobj), reference.affine)
