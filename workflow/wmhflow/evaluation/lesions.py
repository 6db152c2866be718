"""``wmhflow lesions``: one row per 26-connected lesion of a mask (volume, centroid, probability).

Columns: ``subject``; ``lesion_id`` (1 = the largest lesion, then by decreasing size, ties in
voxel scan order); ``voxels``; ``volume_ml`` (voxels x voxel volume from the affine); the centroid
``centroid_{x,y,z}_mm`` (mean voxel position mapped by the mask's affine: the NIfTI world, RAS+,
scanner coordinates in mm); ``max_probability`` and ``mean_probability`` of the probability map
over the lesion's voxels (NaN without ``--probseg``).

The mask is binarised as the metrics binarise a prediction (> 0 for integer images, >= 0.5 for
floating-point ones) and split with 26-connectivity, so these lesions are the "predicted
components" the lesion F1 counts (without the label-2 zeroing, which needs a reference). A mask
without lesions gives a table with the header only.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import ndimage

from ..io import atomic_output, load_nifti, require_same_grid
from .metrics import binarize_prediction

COLUMNS = [
    "subject",
    "session",
    "lesion_id",
    "voxels",
    "volume_ml",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "max_probability",
    "mean_probability",
]
log = logging.getLogger(__name__)


def lesion_table(mask: np.ndarray, affine: np.ndarray, probability=None, subject="", session="") -> pd.DataFrame:
    """One row per 26-connected component of ``mask`` (columns :data:`COLUMNS`)."""
    labels, count = ndimage.label(binarize_prediction(mask), structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return pd.DataFrame(columns=COLUMNS)
    index = np.arange(1, count + 1)
    ones = np.ones(labels.shape, np.float32)
    voxels = np.rint(ndimage.sum_labels(ones, labels, index)).astype(int)
    centroids = np.asarray(ndimage.center_of_mass(ones, labels, index), float).reshape(count, 3)
    affine = np.asarray(affine, float)
    world = centroids @ affine[:3, :3].T + affine[:3, 3]
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    table = pd.DataFrame(
        {
            "subject": subject,
            "session": session,
            "voxels": voxels,
            "volume_ml": voxels * voxel_ml,
            "centroid_x_mm": world[:, 0],
            "centroid_y_mm": world[:, 1],
            "centroid_z_mm": world[:, 2],
        }
    )
    if probability is not None:
        probability = np.asarray(probability, np.float64)
        table["max_probability"] = ndimage.maximum(probability, labels, index)
        table["mean_probability"] = ndimage.mean(probability, labels, index)
    else:
        table["max_probability"] = np.nan
        table["mean_probability"] = np.nan
    table = table.sort_values("voxels", ascending=False, kind="stable").reset_index(drop=True)
    table["lesion_id"] = np.arange(1, count + 1)
    return table[COLUMNS]


def add_arguments(parser) -> None:
    parser.add_argument("--mask", required=True, help="WMH mask (> 0; probabilities >= 0.5)")
    parser.add_argument("--probseg", help="probability map on the mask's grid")
    parser.add_argument("--subject", default="")
    parser.add_argument("--session", default="", help="session label (column 'session'; empty for none)")
    parser.add_argument("-o", "--output", required=True)


def main(args) -> int:
    mask = load_nifti(args.mask, "mask")
    probability = None
    if args.probseg:
        prob = load_nifti(args.probseg, "probability map")
        require_same_grid(prob, args.probseg, mask, args.mask, "probability map", "mask")
        probability = np.asarray(prob.dataobj, np.float32)
    table = lesion_table(np.asarray(mask.dataobj), mask.affine, probability, args.subject, args.session)
    with atomic_output(args.output) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    log.info("%d lesion(s), %.3f mL in total", len(table), float(table["volume_ml"].sum()) if len(table) else 0.0)
    return 0
