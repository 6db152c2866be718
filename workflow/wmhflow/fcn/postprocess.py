"""Post-processing of a WMH mask, each step for a stated reason, in physical units.

- **Components below a minimum volume** (``min_lesion_mm3``): a 2D network fires on single bright
  voxels (noise, vessels, partial-volume rims) that no rater labels as WMH; each such speck costs a
  false-positive lesion in lesion precision/F1. The size is a volume in mm³ from the header's voxel
  size, so one setting means the same on a 1 mm isotropic and a 0.9 x 0.9 x 3 mm grid.
- **Components outside the brain** (``min_depth_mm``): there is no brain mask in the chain, but WMH
  lie in the cerebral white matter, well inside the head. A component none of whose voxels is at least
  ``min_depth_mm`` inside the head (the 8-bit FLAIR's non-zero region, physical distance to its
  surface) is scalp, skull marrow, orbit or a ghost, never a WMH. 0 turns a step off.
- **Components outside the brain, or below the tentorium** (``excluded``, a region from
  :mod:`wmhflow.preprocess.brain_regions`, ``segment.restrict_to``): deep in the head but outside the
  brain (pituitary, sphenoid sinus, clivus) some scanners' FLAIR is bright and a 2D network fires there;
  a component with more than half its voxels in the region goes.

Components are 26-connected, as the challenge counts lesions (:mod:`wmhflow.evaluation.metrics`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_26_CONNECTED = np.ones((3, 3, 3), bool)


def voxel_volume_mm3(zooms) -> float:
    return float(np.prod([float(z) for z in tuple(zooms)[:3]]))


def clean_mask(
    mask: np.ndarray,
    zooms,
    head: np.ndarray | None = None,
    min_lesion_mm3: float = 0.0,
    min_depth_mm: float = 0.0,
    excluded: np.ndarray | None = None,
):
    """(cleaned mask, report) for a binary mask on a grid of voxel size ``zooms`` (mm).

    ``head``: the head's voxels (needed when ``min_depth_mm`` > 0). ``excluded``: where no WMH can be
    (outside the brain, or also below the tentorium; None: the rule is off). The report counts the
    components removed by each rule and their voxels.
    """
    mask = np.asarray(mask, bool)
    report = {"components": 0, "removed_small": 0, "removed_superficial": 0, "removed_voxels": 0}
    if excluded is not None:
        report["removed_outside_region"] = 0
    if not mask.any() or (min_lesion_mm3 <= 0 and min_depth_mm <= 0 and excluded is None):
        report["components"] = int(ndimage.label(mask, structure=_26_CONNECTED)[1]) if mask.any() else 0
        return mask.copy(), report
    labels, count = ndimage.label(mask, structure=_26_CONNECTED)
    report["components"] = int(count)
    index = np.arange(1, count + 1)
    drop = np.zeros(count + 1, bool)
    if min_lesion_mm3 > 0:
        volume = np.bincount(labels.ravel(), minlength=count + 1)[1:] * voxel_volume_mm3(zooms)
        small = volume < float(min_lesion_mm3)
        drop[1:] |= small
        report["removed_small"] = int(small.sum())
    if min_depth_mm > 0:
        if head is None:
            raise ValueError("min_depth_mm needs the head mask")
        # distance (mm, anisotropic voxels) from each head voxel to the nearest voxel outside the head
        depth = ndimage.distance_transform_edt(np.asarray(head, bool), sampling=[float(z) for z in tuple(zooms)[:3]])
        deepest = ndimage.maximum(depth, labels, index)
        superficial = np.asarray(deepest) < float(min_depth_mm)
        report["removed_superficial"] = int((superficial & ~drop[1:]).sum())
        drop[1:] |= superficial
    if excluded is not None:
        outside = ndimage.sum_labels(np.asarray(excluded, bool), labels, index)
        size = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        mostly_outside = np.asarray(outside) > 0.5 * size
        report["removed_outside_region"] = int((mostly_outside & ~drop[1:]).sum())
        drop[1:] |= mostly_outside
    cleaned = mask & ~drop[labels]
    report["removed_voxels"] = int(mask.sum() - cleaned.sum())
    return cleaned, report
