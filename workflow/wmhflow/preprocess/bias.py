"""N4 bias-field correction (SimpleITK), fast: fit on a shrunken image, apply at full resolution.

N4 is fitted on the image shrunk by ``shrink`` inside the head mask, then the B-spline log-bias field
is evaluated on the full-resolution grid (``GetLogBiasFieldAsImage``) and divided out. Shrinking in
plane only (the default (4, 4, 1)) keeps the few thick slices of a 2D FLAIR; benchmarks/bench_n4.py
measures settings against SimpleITK's default full-resolution N4 on a known bias field.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..io import from_sitk, load_nifti, save_like, to_sitk, voxels
from .headmask import head_mask_array

log = logging.getLogger(__name__)


def n4_correct_array(img, data=None, mask=None, shrink=(4, 4, 1), iterations=(10, 10, 10),
                     control_points=4, threads: int = 0):
    """Corrected voxels (float32) and the full-resolution bias field, on the grid of ``img``."""
    import SimpleITK as sitk

    data = voxels(img) if data is None else np.asarray(data, np.float32)
    mask = head_mask_array(data) if mask is None else np.asarray(mask, bool)
    # N4 works on log intensities: keep every voxel strictly positive.
    offset = 1.0 - min(float(data.min()), 0.0)
    image = to_sitk(img, data + offset)
    mask_image = to_sitk(img, mask.astype(np.uint8), dtype=np.uint8)
    shrink = [max(1, min(int(f), n // 4 or 1)) for f, n in zip(shrink, data.shape)]
    small = sitk.Shrink(image, shrink)
    small_mask = sitk.Shrink(mask_image, shrink)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetNumberOfControlPoints([int(control_points)] * 3)
    if threads:
        n4.SetNumberOfThreads(int(threads))
    n4.Execute(small, small_mask)
    field = np.exp(from_sitk(n4.GetLogBiasFieldAsImage(image))).astype(np.float32)
    corrected = (data + offset) / field - offset
    return corrected.astype(np.float32), field


def n4_correct(img, mask=None, shrink=(4, 4, 1), iterations=(10, 10, 10), control_points=4, threads=0):
    """The N4-corrected image (float32, same grid and header as ``img``)."""
    import nibabel as nib

    corrected, _ = n4_correct_array(img, None, mask, shrink, iterations, control_points, threads)
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    return nib.Nifti1Image(corrected, img.affine, header)


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--role", default="image", help="FLAIR or T1, for messages")
    parser.add_argument("--shrink", type=int, nargs=3, default=(4, 4, 1), metavar=("I", "J", "K"))
    parser.add_argument("--iterations", type=int, nargs="+", default=(10, 10, 10),
                        help="iterations per fitting level (one number per level)")
    parser.add_argument("--control-points", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="0: all cores")


def main(args) -> int:
    img = load_nifti(args.input, args.role)
    start = time.perf_counter()
    corrected, field = n4_correct_array(img, None, None, args.shrink, args.iterations, args.control_points,
                                        args.threads)
    save_like(corrected, img, args.output, np.float32)
    log.info("N4 of %s in %.1f s (shrink %s, iterations %s); bias field range %.2f-%.2f", args.input,
             time.perf_counter() - start, tuple(args.shrink), tuple(args.iterations), field.min(), field.max())
    return 0
