"""Per-subject QC picture: the slices with the most lesion, in the paper's Fig. 5 colours over the
FLAIR (true positives yellow, false negatives green, false positives red), or the predicted outline
alone when there is no reference. Shown as radiologists read axial slices: anterior up, the
patient's left on the right of the picture, with the true voxel aspect ratio."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from ..io import atomic_output, load_nifti, require_same_grid  # noqa: E402

TP, FN, FP = (1.0, 1.0, 0.0), (0.0, 0.8, 0.0), (1.0, 0.0, 0.0)


def _canonical(img, data):
    """Data reoriented to RAS (i: left->right, j: posterior->anterior), and the voxel sizes."""
    ornt = nib.orientations.io_orientation(img.affine)
    ras = nib.orientations.apply_orientation(data, ornt)
    spacing = np.sqrt((img.affine[:3, :3] ** 2).sum(0))[ornt[:, 0].argsort()]
    return ras, spacing


def overlay(flair, prediction, reference=None):
    """RGB image (X, Y, 3) of one slice."""
    low, high = np.percentile(flair, [1, 99.5]) if flair.any() else (0, 1)
    grey = np.clip((flair - low) / max(high - low, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if reference is None:
        outline = prediction & ~ndimage.binary_erosion(prediction)
        rgb[outline] = FP
        return rgb
    for mask, colour in ((prediction & reference, TP), (reference & ~prediction, FN), (prediction & ~reference, FP)):
        rgb[mask] = colour
    return rgb


def qc_figure(flair_path, mask_path, reference_path, output, title="", slices=3):
    flair_img = load_nifti(flair_path, "FLAIR")
    mask_img = load_nifti(mask_path, "mask")
    require_same_grid(mask_img, mask_path, flair_img, flair_path, "mask")
    flair, spacing = _canonical(flair_img, np.asarray(flair_img.dataobj, np.float32))
    prediction, _ = _canonical(flair_img, np.asarray(mask_img.dataobj) > 0)
    reference = None
    if reference_path:
        ref_img = load_nifti(reference_path, "reference")
        require_same_grid(ref_img, reference_path, flair_img, flair_path, "reference")
        ref, _ = _canonical(flair_img, np.asarray(ref_img.dataobj))
        reference = ref == 1
        prediction = prediction & (ref != 2)
    lesion = prediction | reference if reference is not None else prediction
    per_slice = lesion.sum(axis=(0, 1))
    chosen = sorted(np.argsort(per_slice)[::-1][:slices]) if per_slice.any() else [flair.shape[2] // 2]
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.6 * len(chosen), 4.2), squeeze=False)
    for ax, k in zip(axes[0], chosen):
        rgb = overlay(flair[:, :, k], prediction[:, :, k], None if reference is None else reference[:, :, k])
        # RAS: rows = j reversed (anterior up); columns = i reversed (patient's left on the right)
        ax.imshow(np.transpose(rgb, (1, 0, 2))[::-1, ::-1], aspect=spacing[1] / spacing[0], interpolation="nearest")
        ax.set_title(f"slice {k}")
        ax.axis("off")
    legend = "yellow: TP  green: FN  red: FP" if reference is not None else "red: predicted outline"
    fig.suptitle(f"{title}\n{legend}", fontsize=10)
    fig.tight_layout()
    with atomic_output(output) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def add_arguments(parser) -> None:
    parser.add_argument("--flair", required=True)
    parser.add_argument("--mask", required=True)
    parser.add_argument("--reference", default="")
    parser.add_argument("--title", default="")
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("-o", "--output", required=True)


def main(args) -> int:
    qc_figure(args.flair, args.mask, args.reference, args.output, args.title, args.slices)
    return 0
