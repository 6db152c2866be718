"""``wmhflow lesions``: one row per 26-connected lesion of a mask (volume, centroid, probability)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from .io import atomic_output, load_nifti, require_same_grid

COLUMNS = ["subject", "lesion_id", "voxels", "volume_ml", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
           "max_probability", "mean_probability"]


def lesion_table(mask: np.ndarray, affine: np.ndarray, probability=None, subject="") -> pd.DataFrame:
    labels, count = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return pd.DataFrame(columns=COLUMNS)
    index = np.arange(1, count + 1)
    voxels = ndimage.sum_labels(np.ones(labels.shape), labels, index)
    centroids = np.asarray(ndimage.center_of_mass(np.ones(labels.shape), labels, index))
    world = centroids @ affine[:3, :3].T + affine[:3, 3]
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    table = pd.DataFrame({
        "subject": subject, "lesion_id": index, "voxels": voxels.astype(int), "volume_ml": voxels * voxel_ml,
        "centroid_x_mm": world[:, 0], "centroid_y_mm": world[:, 1], "centroid_z_mm": world[:, 2],
    })
    if probability is not None:
        table["max_probability"] = ndimage.maximum(probability, labels, index)
        table["mean_probability"] = ndimage.mean(probability, labels, index)
    else:
        table["max_probability"] = np.nan
        table["mean_probability"] = np.nan
    return table[COLUMNS].sort_values("voxels", ascending=False, kind="stable")


def add_arguments(parser) -> None:
    parser.add_argument("--mask", required=True)
    parser.add_argument("--probseg", help="probability map on the mask's grid")
    parser.add_argument("--subject", default="")
    parser.add_argument("-o", "--output", required=True)


def main(args) -> int:
    mask = load_nifti(args.mask, "mask")
    probability = None
    if args.probseg:
        prob = load_nifti(args.probseg, "probability map")
        require_same_grid(prob, args.probseg, mask, args.mask, "probability map", "mask")
        probability = np.asarray(prob.dataobj, np.float32)
    table = lesion_table(np.asarray(mask.dataobj), mask.affine, probability, args.subject)
    with atomic_output(args.output) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return 0
