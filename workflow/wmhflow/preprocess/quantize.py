"""Requantization to 8 bits (paper §2.2), with a robust window computed inside the head.

The window runs from the ``low_pct`` to the ``high_pct`` percentile of the voxels inside the head
mask: scanner intensity scales differ by orders of magnitude between sites, and the extreme values
(fat, flow artefacts, noise in air) would otherwise squeeze brain contrast into a few grey levels.
Values map linearly onto 1..255 inside the head and are clipped; outside the head is 0, so that 0
means "no head" for every later step (cropping to the head, skipping empty slices).
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError
from ..io import load_nifti, require_same_grid, save_like, voxels
from .headmask import head_mask_array

log = logging.getLogger(__name__)


def head_window(data: np.ndarray, mask: np.ndarray, low_pct: float, high_pct: float) -> tuple[float, float]:
    """The intensity window (the two percentiles' values within the head) that maps onto 1..255."""
    low, high = np.percentile(np.asarray(data, np.float32)[np.asarray(mask, bool)], [low_pct, high_pct])
    return float(low), float(high) if high > low else float(low) + 1.0


def requantize_array(data: np.ndarray, mask: np.ndarray | None = None, low_pct: float = 0.5,
                     high_pct: float = 99.8) -> np.ndarray:
    data = np.asarray(data, dtype=np.float32)
    mask = head_mask_array(data) if mask is None else np.asarray(mask, bool)
    if not mask.any():
        return np.zeros(data.shape, np.uint8)
    low, high = head_window(data, mask, low_pct, high_pct)
    scaled = 1.0 + (data - low) * (254.0 / (high - low))
    out = np.clip(np.rint(scaled), 1, 255).astype(np.uint8)
    out[~mask] = 0
    return out


def requantize(img, mask=None, low_pct: float = 0.5, high_pct: float = 99.8) -> np.ndarray:
    """The 8-bit version of a nibabel image (uint8 array on its grid)."""
    return requantize_array(voxels(img), mask, low_pct, high_pct)


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True, help="bias-corrected volume")
    parser.add_argument("--output", required=True, help="8-bit volume to write")
    parser.add_argument("--mask-from", help="compute the head mask from this image (default: the input)")
    parser.add_argument("--low-pct", type=float, default=0.5)
    parser.add_argument("--high-pct", type=float, default=99.8)
    parser.add_argument("--role", default="image", help="FLAIR or T1, for messages")


def main(args) -> int:
    if not 0 <= args.low_pct < args.high_pct <= 100:
        raise InputError(args.output, f"percentiles must satisfy 0 <= low < high <= 100, got {args.low_pct}, {args.high_pct}")
    img = load_nifti(args.input, args.role)
    mask = None
    if args.mask_from:
        mask_img = load_nifti(args.mask_from, "mask image")
        require_same_grid(mask_img, args.mask_from, img, args.input, "mask image", args.role)
        mask = head_mask_array(voxels(mask_img))
    data = voxels(img)
    mask = head_mask_array(data) if mask is None else mask
    out = requantize_array(data, mask, args.low_pct, args.high_pct)
    window = head_window(data, mask, args.low_pct, args.high_pct) if mask.any() else None
    save_like(out, img, args.output, np.uint8, sources=[args.input] + ([args.mask_from] if args.mask_from else []),
              Description="requantized to 8 bits: the head's percentile window onto 1..255, 0 outside the head",
              RequantizePercentiles=[args.low_pct, args.high_pct], RequantizeWindow=window)
    log.info("%s: 8-bit window on the %.1f-%.1f percentiles of the head", args.output, args.low_pct, args.high_pct)
    return 0
