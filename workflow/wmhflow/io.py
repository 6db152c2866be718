"""NIfTI reading and writing that keeps the FLAIR's grid and header, with atomic writes.

Every volume of the pipeline is read through :func:`load_nifti` (so a bad file fails the same way
everywhere) and every output volume is written through :func:`save_like` (so it lands on the exact
voxel grid and header of the image it derives from, with qform and sform agreeing).

Header policy (one for every verb):
- qform_code = sform_code = 0: the file says nothing about orientation, and nibabel's fallback
  affine (built from the voxel sizes, first axis flipped) is a guess that can swap left and right.
  Such an image is refused with one line naming it; wmhflow never writes a scanner frame it guessed.
- qform and sform both set but different: the sform wins (nibabel's choice, and wmhflow's everywhere,
  also when converting to SimpleITK); the log says so once per file, with how far they differ.
- Geometry: every axis needs at least :data:`MIN_AXIS_VOXELS` voxels (N4, the head mask and the
  in-plane top-hat need a volume, not a slice) and voxel sizes between :data:`VOXEL_MM_RANGE` mm
  (beyond it, the header's units or pixdims are wrong, e.g. 192 mm).
"""

from __future__ import annotations

import gzip
import logging
import zlib
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from .atomic import atomic_output  # noqa: F401 (every verb's atomic writes; here for its old callers)
from .errors import InputError

#: Grids whose affines differ by less than this (mm, and unitless for the direction part) match.
GRID_ATOL = 1e-3
#: The smallest number of voxels along any axis of a volume wmhflow processes.
MIN_AXIS_VOXELS = 2
#: Plausible voxel sizes of a brain MRI, in mm (from sub-0.1 mm nowhere near; thick slices up to ~10 mm).
VOXEL_MM_RANGE = (0.05, 15.0)
#: The labels of a reference: 0 background, 1 WMH, 2 other pathology (the WMH challenge's).
LABELS = (0, 1, 2)
LABEL_MEANING = "expected 0 background, 1 WMH, 2 other pathology"

log = logging.getLogger(__name__)
_SFORM_NOTED: set[str] = set()  # files whose qform/sform disagreement was already logged


def load_nifti(path, role: str = "image", check_finite: bool = True) -> nib.Nifti1Image:
    """Load a 3D NIfTI and check it; every problem is an :class:`InputError` naming the file.

    A 4D image whose 4th axis has length 1 is squeezed to 3D; any other 4D image is refused.
    ``role`` ("FLAIR", "T1", "reference", ...) only words the error messages.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, f"{role} file does not exist")
    if not path.is_file():
        raise InputError(path, f"{role} path is not a file")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError) as exc:
        raise InputError(path, f"{role} is not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"{role} must be a 3D volume, found shape {tuple(data.shape)}")
    if min(data.shape) < 1:
        raise InputError(path, f"{role} is empty, shape {tuple(data.shape)}")
    if check_finite and np.issubdtype(data.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise InputError(path, f"{role} has {bad} NaN or infinite voxel(s)")
    _check_orientation(img, path, role)
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-12:
        raise InputError(path, f"{role} has a degenerate or non-finite affine")
    check_geometry(data.shape, img.affine, path, role)
    header = img.header.copy()
    header.set_data_shape(data.shape)
    return nib.Nifti1Image(data, img.affine, header)


def _check_orientation(img, path, role: str) -> None:
    """The header policy on orientation codes (see the module docstring)."""
    header = img.header
    if "qform_code" not in header:  # not a NIfTI (e.g. ANALYZE): no orientation at all
        raise InputError(path, f"{role} is not a NIfTI-1/2 file: it has no orientation; convert it to NIfTI")
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if qcode == 0 and scode == 0:
        raise InputError(
            path,
            f"{role} has no orientation (qform_code = sform_code = 0): left and right are "
            "unknown and wmhflow will not guess them; set the header's qform/sform from the scanner data",
        )
    if qcode > 0 and scode > 0 and str(path) not in _SFORM_NOTED:
        qform, sform = header.get_qform(), header.get_sform()
        worst = float(np.max(np.abs(qform - sform)))
        if worst > GRID_ATOL:
            _SFORM_NOTED.add(str(path))
            log.warning(
                "%s: qform and sform differ by up to %.4g mm; the sform (code %d) is used, and every "
                "output carries it in both",
                path,
                worst,
                scode,
            )


def check_geometry(shape, affine, path, role: str = "image") -> None:
    """Refuse a volume wmhflow cannot process: an axis of fewer than 2 voxels, implausible voxel sizes."""
    shape = tuple(int(n) for n in shape[:3])
    for axis, n in enumerate(shape):
        if n < MIN_AXIS_VOXELS:
            raise InputError(
                path,
                f"{role} has {n} voxel(s) along axis {axis} (shape {shape}): a single slice "
                f"or line is not a volume; wmhflow needs at least {MIN_AXIS_VOXELS} per axis",
            )
    sizes = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    low, high = VOXEL_MM_RANGE
    for axis, size in enumerate(sizes):
        if not low <= size <= high:
            shown = ", ".join(f"{v:.4g}" for v in sizes)
            raise InputError(
                path,
                f"{role} voxel size {size:.4g} mm along axis {axis} (sizes {shown} mm) is not "
                f"plausible for a brain MRI ({low}-{high} mm): check the header's pixdim and units",
            )


def label_array(img, path, role: str = "reference") -> np.ndarray:
    """The voxels of a label image as int16, refused unless every value is one of :data:`LABELS`.

    The one label check of every verb (check, discover --check, train, evaluate, qc): a fuzzy or
    probabilistic reference (0.7) is not silently rounded, and 255 or -1 are not silently drawn.
    """
    data = np.asarray(img.dataobj)
    if np.issubdtype(data.dtype, np.floating):
        fractional = data[data != np.round(data)]
        if fractional.size:
            raise InputError(
                path,
                f"{role} is not a label image: {fractional.size} voxel(s) are not whole numbers "
                f"(e.g. {float(fractional.flat[0]):.4g}); {LABEL_MEANING}",
            )
    values = np.unique(data)
    unknown = sorted(set(values.astype(np.int64).tolist()) - set(LABELS))
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InputError(path, f"unknown label value(s) {unknown[:5]}{more} in the {role} ({LABEL_MEANING})")
    return data.astype(np.int16)


def voxels(img: nib.Nifti1Image, dtype=np.float32) -> np.ndarray:
    """The voxel array of a loaded image (scaling applied), as ``dtype``."""
    return np.asarray(img.dataobj, dtype=dtype)


def same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image, atol: float = GRID_ATOL) -> bool:
    """True when two images share shape and voxel-to-world affine (within ``atol``)."""
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=atol)


def require_same_grid(img, path, like, like_path, role: str, like_role: str = "FLAIR") -> None:
    """Raise an :class:`InputError` on ``path`` unless ``img`` is on the grid of ``like``."""
    if img.shape[:3] != like.shape[:3]:
        raise InputError(
            path, f"{role} shape {img.shape[:3]} differs from the {like_role} shape {like.shape[:3]} ({like_path})"
        )
    if not np.allclose(img.affine, like.affine, atol=GRID_ATOL):
        worst = float(np.max(np.abs(img.affine - like.affine)))
        raise InputError(
            path, f"{role} voxel-to-world affine differs from the {like_role}'s ({like_path}) by up to {worst:.4g}"
        )


def save_like(
    data: np.ndarray, like: nib.Nifti1Image, path, dtype=None, sources=None, named_as=None, **parameters
) -> Path:
    """Write ``data`` atomically on the grid of ``like``: same shape, affine and header.

    With ``sources`` (the input files), the image's BIDS JSON sidecar is written first (its
    ``Sources`` as BIDS URIs and the keyword ``parameters``), so an image never exists without it.
    ``named_as``: the path the image will be moved to, when ``path`` is a staging place (the URIs are
    those seen from there).

    qform and sform are both set to ``like``'s affine with ``like``'s codes (one code standing in
    for a missing other), so no reader can place the output differently from the image it came from.
    An in-memory ``like`` without any code keeps codes 0: an unknown orientation is carried as
    unknown, never declared scanner space.
    """
    data = np.asarray(data)
    if data.shape != like.shape[:3]:
        raise ValueError(f"data shape {data.shape} differs from the template grid {like.shape[:3]}")
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    header = like.header.copy()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape)
    out = nib.Nifti1Image(data, like.affine, header)
    qcode = int(like.header["qform_code"]) or int(like.header["sform_code"])
    scode = int(like.header["sform_code"]) or qcode
    out.set_qform(like.affine, code=qcode)
    out.set_sform(like.affine, code=scode)
    out.header.set_slope_inter(None, None)  # write raw values: no rescaling of masks or 8-bit data
    path = Path(path)
    if sources is not None:
        from .paths import write_sidecar

        write_sidecar(path, sources, named_as=named_as, **parameters)
    with atomic_output(path) as tmp:
        nib.save(out, str(tmp))
    return path


@contextmanager
def itk_threads(threads: int):
    """ITK's global thread count set to ``threads`` (0: left as it is) for the block, then restored.

    N4's inner B-spline fit and the registration take the global count, not a filter's own, and their
    voxels depend on it in the last float bits: the chain pins it so the files do not depend on the machine.
    """
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    if threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


# ITK uses LPS world coordinates, NIfTI/nibabel RAS: the first two world axes flip sign.
_LPS = np.diag([-1.0, -1.0, 1.0])


def to_sitk(img: nib.Nifti1Image, data: np.ndarray | None = None, dtype=np.float32):
    """A SimpleITK image with the voxels and physical geometry of a nibabel image.

    Converting here (instead of letting SimpleITK re-read the file) guarantees that both libraries
    see the same affine: ITK would otherwise prefer the qform where nibabel prefers the sform.
    """
    import SimpleITK as sitk

    arr = voxels(img, dtype) if data is None else np.asarray(data, dtype=dtype)
    affine = img.affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = _LPS @ (affine[:3, :3] / spacing)
    origin = _LPS @ affine[:3, 3]
    image = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection([float(d) for d in direction.ravel()])
    return image


def from_sitk(image) -> np.ndarray:
    """The voxel array of a SimpleITK image in nibabel's (i, j, k) order."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)
