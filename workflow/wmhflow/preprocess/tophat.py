"""The area-opening top-hat of the 8-bit FLAIR (paper §2.1-2.2), slice by slice.

An area opening removes every bright connected component (of every upper level set) smaller than
``area`` pixels, without moving any other contour; FLAIR minus its opening (the top-hat) keeps
exactly those small bright structures: small lesions stand out, large ones vanish.

Definition (the one of ``skimage.morphology.area_opening``, which this module reproduces voxel for
voxel, checked by tests/test_preprocess.py and benchmarks/bench_tophat.py): for a pixel ``p`` the
opening is the highest level ``h <= f(p)`` at which the connected component of ``{f >= h}`` holding
``p`` has at least ``area`` pixels (components with area < ``area`` are removed), or 0 if there is
none — which happens only when the whole slice has fewer than ``area`` pixels (scikit-image then
returns zeros; DIPlib would return the slice minimum). Connectivity 1 is 4-neighbour, 2 is
8-neighbour. Plateaus need no special care: a level set component is a set of pixels, whatever order
its equal-valued pixels are met in.

Why our own numba kernel (``_area_opening.py``) instead of DIPlib or scikit-image: both build and
filter a full max-tree per slice through a generic n-D code path; DIPlib's ``AreaOpening`` took about
3 ms per 256x232 slice (~11x faster than scikit-image), far from the ≥70x the pipeline asks for.
A first numba version, the union-find area opening of Meijster & Wilkinson (2002) over pixels sorted
by grey level, was exact but only ~30x: it visits pixels in grey-level order, i.e. all over the
slice, and is bound by cache misses and mispredicted branches. The kernel kept is a flooding max-tree
(Salembier's hierarchical queue with the component stack of Nistér & Stewénius) that walks the image
like a flood fill (good locality, O(1) 256-bucket queue for 8-bit data), computes node areas on the
way and applies the area filter on the finished tree: ~2.5x faster again than the union-find. Pixels
at the slice minimum (two thirds of a FLAIR slice are 0 outside the head) are never flooded, so the
work scales with the head, not the grid. Slices are split among threads (the kernel releases the
GIL). The kernel is compiled once and cached on disk (``cache=True``): a fresh installation pays
~2-5 s on the first call, later processes only load it (benchmarks/bench_tophat.py reports both).
The slice axis is the third voxel axis, as everywhere in wmhflow.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import InputError
from ..io import load_nifti, save_like

log = logging.getLogger(__name__)
#: the paper's N = 25 pixels, 4-connected (the config schema's tophat.area and tophat.connectivity)
AREA = 25
CONNECTIVITY = 1


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def area_opening_slices(
    volume: np.ndarray, area: int = AREA, connectivity: int = CONNECTIVITY, threads: int | None = None
) -> np.ndarray:
    """2D area opening of every slice along the third axis (uint8 in, uint8 out).

    Equal to ``skimage.morphology.area_opening(volume[:, :, k], area, connectivity)`` for every k.
    ``threads``: slices are split among this many threads (default: the CPUs this process may use).
    """
    volume = np.asarray(volume)
    if volume.dtype != np.uint8:
        raise TypeError(f"area opening expects 8-bit data, got {volume.dtype}")
    if volume.ndim != 3:
        raise ValueError(f"area opening expects a 3D volume (slices on the third axis), got {volume.ndim}D")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (4-connected) or 2 (8-connected), got {connectivity}")
    area = int(area)
    out = np.empty_like(volume)
    if volume.size == 0:
        return out
    # Slices first; inside a slice put the axis with the smaller stride last (memory order). The
    # opening is symmetric in the two in-plane axes, so transposing the slice changes nothing.
    src, dst = np.moveaxis(volume, 2, 0), np.moveaxis(out, 2, 0)
    if abs(src.strides[1]) < abs(src.strides[2]):
        src, dst = src.transpose(0, 2, 1), dst.transpose(0, 2, 1)
    from ._area_opening import open_slices as kernel  # numba: imported only when needed

    slices = src.shape[0]
    threads = _default_threads() if not threads or threads < 1 else int(threads)
    threads = min(threads, slices)
    if threads == 1:
        kernel(src, dst, 0, slices, area, connectivity == 2)
        return out
    bounds = np.linspace(0, slices, threads + 1).round().astype(int)
    with ThreadPoolExecutor(threads) as pool:
        jobs = [
            pool.submit(kernel, src, dst, int(a), int(b), area, connectivity == 2)
            for a, b in zip(bounds[:-1], bounds[1:])
            if b > a
        ]
        for job in jobs:
            job.result()
    return out


def warm_kernel_cache() -> None:
    """Compile the numba kernel into its on-disk cache now, for both layouts it meets.

    Run once after installing (``make install`` does): otherwise every one of the first top-hat jobs
    running side by side compiles the kernel itself (seconds each, benchmarks/bench_workflow.py), and
    only later jobs load it from the cache. NIfTI data read by nibabel is in Fortran order (the
    kernel sees C-contiguous slices), arrays computed in memory in C order (strided slices); numba
    compiles and caches one version per layout.
    """
    for order in ("F", "C"):
        area_opening_slices(np.zeros((4, 4, 2), np.uint8, order=order), 2, 1, threads=1)


def area_tophat(
    volume: np.ndarray, area: int = AREA, connectivity: int = CONNECTIVITY, threads: int | None = None
) -> np.ndarray:
    """FLAIR minus its per-slice area opening (uint8, >= 0 since an opening never exceeds its input)."""
    volume = np.asarray(volume)
    return volume - area_opening_slices(volume, area, connectivity, threads)


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True, help="8-bit (requantized) FLAIR")
    parser.add_argument("--output", required=True, help="top-hat volume to write (uint8)")
    parser.add_argument("--area", type=int, default=AREA, help="area threshold in pixels (the paper's N = 25)")
    parser.add_argument(
        "--connectivity",
        type=int,
        default=CONNECTIVITY,
        choices=(1, 2),
        help="1: 4-connected pixels, 2: 8-connected (scikit-image's meaning)",
    )
    parser.add_argument("--threads", type=int, default=0, help="threads over slices (0: all usable CPUs)")


def main(args) -> int:
    if args.area < 1:
        raise InputError(args.input, f"area must be at least 1 pixel, got {args.area}")
    img = load_nifti(args.input, "8-bit FLAIR")
    data = np.asarray(img.dataobj)  # scaled: a uint8 file with a scale factor is not 8-bit data
    if img.get_data_dtype() != np.uint8 or data.dtype != np.uint8:
        raise InputError(
            args.input,
            f"top-hat needs the 8-bit requantized FLAIR, found {img.get_data_dtype()} data read as {data.dtype}",
        )
    start = time.perf_counter()
    tophat = area_tophat(data, args.area, args.connectivity, args.threads)
    save_like(
        tophat,
        img,
        args.output,
        np.uint8,
        sources=[args.input],
        Description="per-slice area-opening top-hat (image minus its area opening)",
        TophatArea=args.area,
        TophatConnectivity=args.connectivity,
    )
    log.info(
        "area top-hat (area %d, connectivity %d) in %.2f s: %d voxels > 0",
        args.area,
        args.connectivity,
        time.perf_counter() - start,
        int(np.count_nonzero(tophat)),
    )
    return 0
