"""``wmhflow qc``: a subject's QC picture.

The ``--slices`` axial slices with the most lesion (reference or prediction; fewer when fewer slices
have any, the middle slice when none has), in the paper's Fig. 5 colours over the FLAIR: true
positives yellow (1, 1, 0), false negatives green (0, 0.8, 0), false positives red (1, 0, 0).
Without a reference, the outline of the predicted lesions alone, in red.

The voxels are those the metrics score (:mod:`wmhflow.evaluation.metrics`): the mask binarised the same way
(> 0, or >= 0.5 for a floating-point image), reference label 1 as WMH, and the prediction zeroed on
label 2 (other pathology), which is neither true nor false.

Shown as radiologists read axial slices whatever the voxel order on disk: the volume is reoriented
to RAS first, anterior is up, the patient's left on the right of the picture, with the true voxel
aspect ratio. The FLAIR is windowed once for the whole volume (1st to 99.5th percentile of its
non-zero voxels) so slices are comparable, and each voxel covers at least two pixels (drawn with
nearest-neighbour interpolation), so even a one-voxel lesion shows in its pure colour.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from ..evaluation.metrics import binarize_prediction  # noqa: E402
from ..io import atomic_output, label_array, load_nifti, require_same_grid  # noqa: E402

TP, FN, FP = (1.0, 1.0, 0.0), (0.0, 0.8, 0.0), (1.0, 0.0, 0.0)
DPI = 100
PIXELS_PER_VOXEL = 2


def _canonical(img, data):
    """Data reoriented to RAS (i: left->right, j: posterior->anterior), and the voxel sizes."""
    ornt = nib.orientations.io_orientation(img.affine)
    ras = nib.orientations.apply_orientation(data, ornt)
    spacing = np.sqrt((img.affine[:3, :3] ** 2).sum(0))[ornt[:, 0].argsort()]
    return ras, spacing


def window(flair: np.ndarray):
    """(low, high) grey window of a volume: 1st and 99.5th percentiles of its non-zero voxels."""
    values = flair[flair != 0]
    if not values.size:
        return 0.0, 1.0
    low, high = np.percentile(values, [1, 99.5])
    return float(low), float(max(high, low + 1e-6))


def overlay(flair, prediction, reference=None, grey_window=None):
    """RGB image (X, Y, 3) of one slice: Fig. 5 colours, or the predicted outline without reference."""
    low, high = grey_window if grey_window is not None else window(flair)
    grey = np.clip((flair - low) / max(high - low, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if reference is None:
        outline = prediction & ~ndimage.binary_erosion(prediction)
        rgb[outline] = FP
        return rgb
    for mask, colour in ((prediction & reference, TP), (reference & ~prediction, FN), (prediction & ~reference, FP)):
        rgb[mask] = colour
    return rgb


def choose_slices(lesion: np.ndarray, count: int) -> list[int]:
    """The axial slices (last axis) with the most lesion voxels, in slice order."""
    per_slice = lesion.sum(axis=(0, 1))
    candidates = [k for k in np.argsort(-per_slice, kind="stable")[: max(count, 1)] if per_slice[k] > 0]
    return sorted(int(k) for k in candidates) or [lesion.shape[2] // 2]


def qc_figure(flair_path, mask_path, reference_path, output, title="", slices=3):
    flair_img = load_nifti(flair_path, "FLAIR")
    mask_img = load_nifti(mask_path, "mask")
    require_same_grid(mask_img, mask_path, flair_img, flair_path, "mask")
    ref_img = None
    if reference_path:
        ref_img = load_nifti(reference_path, "reference")
        require_same_grid(ref_img, reference_path, flair_img, flair_path, "reference")
    flair, spacing = _canonical(flair_img, np.asarray(flair_img.dataobj, np.float32))
    prediction, _ = _canonical(flair_img, binarize_prediction(np.asarray(mask_img.dataobj)))
    reference = None
    if ref_img is not None:
        ref, _ = _canonical(flair_img, label_array(ref_img, reference_path))
        reference = ref == 1
        prediction = prediction & (ref != 2)
    lesion = prediction | reference if reference is not None else prediction
    chosen = choose_slices(lesion, slices)
    grey_window = window(flair)
    nx, ny = flair.shape[0], flair.shape[1]
    # panel size: at least PIXELS_PER_VOXEL pixels per voxel along each axis (true aspect ratio)
    aspect = spacing[1] / spacing[0]
    panel_w = max(3.0, PIXELS_PER_VOXEL * nx / DPI)
    panel_h = max(3.0, PIXELS_PER_VOXEL * ny * max(aspect, 1.0) / DPI)
    fig, axes = plt.subplots(1, len(chosen), figsize=(max(panel_w * len(chosen), 6.0), panel_h + 0.9), squeeze=False)
    for ax, k in zip(axes[0], chosen):
        rgb = overlay(
            flair[:, :, k], prediction[:, :, k], None if reference is None else reference[:, :, k], grey_window
        )
        # RAS: rows = j reversed (anterior up); columns = i reversed (patient's left on the right)
        ax.imshow(np.transpose(rgb, (1, 0, 2))[::-1, ::-1], aspect=aspect, interpolation="nearest")
        ax.set_title(f"slice {k}", fontsize=9)
        ax.axis("off")
    legend = (
        "yellow: true positive   green: false negative   red: false positive"
        if reference is not None
        else "red: predicted lesion outline (no reference)"
    )
    fig.suptitle(f"{title}\n{legend}" if title else legend, fontsize=10)
    fig.tight_layout()
    with atomic_output(output) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)


def add_arguments(parser) -> None:
    parser.add_argument("--flair", required=True)
    parser.add_argument("--mask", required=True)
    parser.add_argument("--reference", default="", help="reference labels; empty: predicted outline only")
    parser.add_argument("--title", default="")
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("-o", "--output", required=True)


def main(args) -> int:
    qc_figure(args.flair, args.mask, args.reference, args.output, args.title, args.slices)
    return 0
