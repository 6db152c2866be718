"""Put the T1 on the FLAIR's voxel grid: pass it through when it is already there, else register.

Registration is rigid (6 parameters: T1 and FLAIR are the same head, minutes apart) with Mattes
mutual information (the contrasts differ), multi-resolution, initialised on the image centres; the
T1 is then resampled (linear) onto the FLAIR grid, so every later step works voxel by voxel.
"""

from __future__ import annotations

import logging
import time

import nibabel as nib
import numpy as np

from ..arguments import int_at_least
from ..errors import InputError
from ..io import from_sitk, itk_threads, load_nifti, require_same_grid, same_grid, save_like, to_sitk

log = logging.getLogger(__name__)
MODES = ("auto", "always", "never")
#: ITK's multi-resolution smoothing needs 4 voxels along every axis of both images (measured: 3 crash).
REGISTRATION_MIN_VOXELS = 4


def require_registrable(img, path, role: str) -> None:
    """Refuse, naming the file, an image too thin for the rigid registration (instead of an ITK trace)."""
    shape = tuple(int(n) for n in img.shape[:3])
    for axis, n in enumerate(shape):
        if n < REGISTRATION_MIN_VOXELS:
            raise InputError(
                path,
                f"{role} has {n} voxels along axis {axis} (shape {shape}): registering the T1 "
                f"onto the FLAIR needs at least {REGISTRATION_MIN_VOXELS}; give a T1 on the "
                "FLAIR's grid",
            )


def mattes_registration(sampling: float, seed: int, iterations: int, smoothing_mm, fixed_mask=None):
    """The ImageRegistrationMethod wmhflow's registrations share: Mattes MI (32 bins) on a random
    ``sampling`` share of the fixed voxels, linear interpolation, regular-step gradient descent with
    scales from physical shift, shrink factors 4, 2, 1 with ``smoothing_mm`` per level."""
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # a fixed seed, so the same inputs give the same transform; not 0, which SimpleITK reads as
    # sitkWallClock (a new seed every second: reruns moved the T1 by up to ~1 mm)
    reg.SetMetricSamplingPercentage(sampling, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=iterations, gradientMagnitudeTolerance=1e-6
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel(list(smoothing_mm))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


def register_rigid(flair, t1, seed: int = 1):
    """The SimpleITK rigid transform mapping FLAIR physical points to T1 physical points."""
    import SimpleITK as sitk

    fixed, moving = to_sitk(flair), to_sitk(t1)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    reg = mattes_registration(0.2, seed, 200, (2.0, 1.0, 0.0))
    reg.SetInitialTransform(initial, inPlace=False)
    transform = reg.Execute(fixed, moving)
    return transform, reg.GetMetricValue()


def resample_to(flair, t1, transform) -> np.ndarray:
    import SimpleITK as sitk

    out = sitk.Resample(to_sitk(t1), to_sitk(flair), transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return from_sitk(out)


def align_t1_to_flair(flair, t1, mode: str = "auto", t1_path="T1", flair_path="FLAIR", threads: int = 0):
    """The T1 on the FLAIR's exact grid (a nibabel image with the FLAIR's affine and header).

    ``threads``: ITK's threads for the registration and resampling (0: ITK's default, all cores); the
    registered voxels depend on it, so the workflow pins it (``preprocess.threads``).
    """
    if mode not in MODES:
        raise ValueError(f"align mode {mode!r} is not one of {MODES}")
    on_grid = same_grid(t1, flair)
    if mode == "never":
        require_same_grid(t1, t1_path, flair, flair_path, "T1 (align_t1: never)")
    if on_grid and mode != "always":
        log.info("T1 already on the FLAIR grid: passed through")
        # Kept in its own (natural) type: an int16 T1 stays int16, half the bytes of float32 to write,
        # compress and read again in the next step, and the same values (N4 reads it as float32).
        data = np.asanyarray(t1.dataobj)
        if not np.issubdtype(data.dtype, np.integer):
            data = data.astype(np.float32)
    else:
        require_registrable(flair, flair_path, "FLAIR")
        require_registrable(t1, t1_path, "T1")
        start = time.perf_counter()
        with itk_threads(threads):
            transform, metric = register_rigid(flair, t1)
            data = resample_to(flair, t1, transform).astype(np.float32)  # interpolated: real-valued
        log.info(
            "rigid T1->FLAIR registration and resampling in %.1f s, Mattes MI %.4f, transform %s",
            time.perf_counter() - start,
            metric,
            transform,
        )
    header = flair.header.copy()
    header.set_data_dtype(data.dtype)
    return nib.Nifti1Image(data, flair.affine, header)


def add_arguments(parser) -> None:
    parser.add_argument("--flair", required=True)
    parser.add_argument("--t1", required=True)
    parser.add_argument("--output", required=True, help="T1 on the FLAIR grid")
    parser.add_argument(
        "--mode",
        default="auto",
        choices=MODES,
        help="auto: register only when the grids differ; always; never: require the same grid",
    )
    parser.add_argument("--threads", type=int_at_least(0), default=0, help="0: all cores")


def main(args) -> int:
    flair = load_nifti(args.flair, "FLAIR")
    t1 = load_nifti(args.t1, "T1")
    aligned = align_t1_to_flair(flair, t1, args.mode, args.t1, args.flair, args.threads)
    save_like(
        np.asanyarray(aligned.dataobj),
        flair,
        args.output,
        sources=[args.t1, args.flair],
        SpatialReference=args.flair,
        Description="T1 on the FLAIR's voxel grid",
        AlignMode=args.mode,
        Registered=not (args.mode != "always" and same_grid(flair, t1)),
    )
    return 0
