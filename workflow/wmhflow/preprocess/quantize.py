"""Requantization to 8 bits (paper §2.2): which intensity window of the head maps onto 1..255.

The paper does not say how its window was chosen. Two windows, both computed inside the head mask
(values map linearly onto 1..255 and are clipped; outside the head is 0, so that 0 means "no head"
for every later step: cropping to the head, skipping empty slices):

- ``tissue`` (the default): from the ``low_pct`` percentile to twice the head's tissue peak (the
  mode of its intensity histogram, the brain parenchyma), so the tissue peak lands at mid-grey (~128)
  on every scanner. What lies above it, lesions in FLAIR, keeps its contrast *relative to tissue*.
- ``percentile``: from the ``low_pct`` to the ``high_pct`` percentile of the head (wmhflow 0.1).
  Its top is set by whatever is brightest: lesions on one scanner, scalp fat on another (the T1's
  99.8th percentile is 1.8x its tissue peak on the challenge-like synthetic sites, 3-4.7x on the
  shifted ones), so the same tissue gets other grey levels on other scanners and a model trained on
  one misreads the next (benchmarks/bench_accuracy.py: the shifted sites).

Scanner intensity scales differ by orders of magnitude between sites, and the extreme values (fat,
flow artefacts, noise in air) would squeeze brain contrast into a few grey levels of a min-max window.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..errors import InputError
from ..io import load_nifti, require_same_grid, save_like, voxels
from .headmask import head_mask_array

log = logging.getLogger(__name__)

WINDOWS = ("tissue", "percentile")
WINDOW = "tissue"
LOW_PCT = 0.5
HIGH_PCT = 99.8
#: the tissue window ends at this multiple of (tissue peak - low): the peak lands at mid-grey
TISSUE_SPAN = 2.0
#: the tissue peak is sought between these percentiles of the head: below lie CSF, skull and air at
#: the head's rim (dark in FLAIR and T1 alike), above only the brightest tail (fat, vessels, lesions)
PEAK_SEARCH_PCT = (20.0, 99.5)


def tissue_peak(values: np.ndarray) -> float:
    """The mode of a smoothed histogram of ``values`` between :data:`PEAK_SEARCH_PCT` percentiles.

    Hand-written rather than a kernel density estimate (scipy.stats.gaussian_kde): a 256-bin histogram
    smoothed by 2 bins gives the same peak on millions of voxels in milliseconds.
    """
    values = np.asarray(values, np.float32)
    low, high = np.percentile(values, PEAK_SEARCH_PCT)
    if not high > low:
        return float(low)
    counts, edges = np.histogram(values, bins=256, range=(float(low), float(high)))
    peak = int(np.argmax(gaussian_filter1d(counts.astype(np.float64), 2.0)))
    return float((edges[peak] + edges[peak + 1]) / 2)


def head_window(
    data: np.ndarray, mask: np.ndarray, low_pct: float = LOW_PCT, high_pct: float = HIGH_PCT, window: str = WINDOW
) -> tuple[float, float]:
    """The intensity window (low, high) that maps onto 1..255, from the voxels inside the head."""
    if window not in WINDOWS:
        raise ValueError(f"window {window!r} is not one of {', '.join(WINDOWS)}")
    values = np.asarray(data, np.float32)[np.asarray(mask, bool)]
    if window == "tissue":
        low = float(np.percentile(values, low_pct))
        high = low + TISSUE_SPAN * (tissue_peak(values) - low)
    else:
        low, high = (float(v) for v in np.percentile(values, [low_pct, high_pct]))
    return low, high if high > low else low + 1.0


def requantize_array(
    data: np.ndarray,
    mask: np.ndarray | None = None,
    low_pct: float = LOW_PCT,
    high_pct: float = HIGH_PCT,
    window: str = WINDOW,
) -> np.ndarray:
    data = np.asarray(data, dtype=np.float32)
    mask = head_mask_array(data) if mask is None else np.asarray(mask, bool)
    if not mask.any():
        return np.zeros(data.shape, np.uint8)
    low, high = head_window(data, mask, low_pct, high_pct, window)
    scaled = 1.0 + (data - low) * (254.0 / (high - low))
    out = np.clip(np.rint(scaled), 1, 255).astype(np.uint8)
    out[~mask] = 0
    return out


def requantize(
    img, mask=None, low_pct: float = LOW_PCT, high_pct: float = HIGH_PCT, window: str = WINDOW
) -> np.ndarray:
    """The 8-bit version of a nibabel image (uint8 array on its grid)."""
    return requantize_array(voxels(img), mask, low_pct, high_pct, window)


def describe(window: str, low_pct: float, high_pct: float) -> dict:
    """The sidecar fields that say how a volume was requantized (read back by training and inference)."""
    fields = {"RequantizeMethod": window, "RequantizeLowPercentile": low_pct}
    if window == "percentile":
        fields["RequantizeHighPercentile"] = high_pct
    else:
        fields["RequantizeTissueSpan"] = TISSUE_SPAN
    return fields


#: models saved before the window was recorded were trained on percentile-window volumes
LEGACY_MODEL_WINDOW = "percentile"


def volume_window(path) -> str | None:
    """How an 8-bit volume was requantized, from its JSON sidecar; None when nothing says so."""
    import json

    from ..paths import sidecar_path

    sidecar = sidecar_path(path)
    try:
        fields = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if "RequantizeMethod" in fields:
        return str(fields["RequantizeMethod"])
    return "percentile" if "RequantizePercentiles" in fields else None  # sidecars of wmhflow 0.1


def inputs_window(paths) -> str | None:
    """The one window the sidecars of ``paths`` name (None if none does); mixed windows are an error."""
    named = {}
    for path in paths:
        window = volume_window(path) if path else None
        if window is not None:
            named.setdefault(window, path)
    if len(named) > 1:
        (first, a), (second, b) = list(named.items())[:2]
        raise InputError(
            b,
            f"requantized with the {second} window, but {a} with the {first} window: "
            "training needs one window for all volumes",
        )
    return next(iter(named), None)


def model_window(meta: dict) -> str:
    """The window of the volumes a model was trained on ('unknown' when its inputs had no sidecars)."""
    return str(meta.get("requantize", LEGACY_MODEL_WINDOW))


def require_model_window(meta: dict, model_path, window: str | None, volume_path) -> None:
    """Stop when a volume was requantized otherwise than the volumes the model learnt from.

    The two windows put the same tissue at other grey levels: a model fed the other one does not fail,
    it segments wrongly (on the synthetic benchmark, Dice fell to near 0 on shifted scanners).
    """
    trained = model_window(meta)
    if window is None or trained == "unknown" or window == trained:
        return
    raise InputError(
        volume_path,
        f"requantized with the {window} window, but model {model_path} was trained on "
        f"{trained}-window volumes: set requantize.window: {trained} "
        f"(wmhflow segment: --window {trained}) and preprocess again",
    )


def add_window_arguments(parser, default: str = WINDOW) -> None:
    choices = WINDOWS + (("auto",) if default == "auto" else ())
    parser.add_argument(
        "--window",
        default=default,
        choices=choices,
        help="tissue: the head's tissue peak at mid-grey; percentile: between two percentiles"
        + ("; auto: the one the model was trained with" if default == "auto" else ""),
    )
    parser.add_argument("--low-pct", type=float, default=LOW_PCT)
    parser.add_argument("--high-pct", type=float, default=HIGH_PCT, help="top of the percentile window")


def check_window_arguments(args, path) -> None:
    if not 0 <= args.low_pct < args.high_pct <= 100:
        raise InputError(path, f"percentiles must satisfy 0 <= low < high <= 100, got {args.low_pct}, {args.high_pct}")


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True, help="bias-corrected volume")
    parser.add_argument("--output", required=True, help="8-bit volume to write")
    parser.add_argument("--mask-from", help="compute the head mask from this image (default: the input)")
    add_window_arguments(parser)
    parser.add_argument("--role", default="image", help="FLAIR or T1, for messages")


def main(args) -> int:
    check_window_arguments(args, args.output)
    img = load_nifti(args.input, args.role)
    mask = None
    if args.mask_from:
        mask_img = load_nifti(args.mask_from, "mask image")
        require_same_grid(mask_img, args.mask_from, img, args.input, "mask image", args.role)
        mask = head_mask_array(voxels(mask_img))
    data = voxels(img)
    mask = head_mask_array(data) if mask is None else mask
    out = requantize_array(data, mask, args.low_pct, args.high_pct, args.window)
    window = head_window(data, mask, args.low_pct, args.high_pct, args.window) if mask.any() else None
    save_like(
        out,
        img,
        args.output,
        np.uint8,
        sources=[args.input] + ([args.mask_from] if args.mask_from else []),
        Description=f"requantized to 8 bits: the head's {args.window} window onto 1..255, 0 outside the head",
        **describe(args.window, args.low_pct, args.high_pct),
        RequantizeWindow=window,
    )
    log.info("%s: 8-bit %s window %s of the head", args.output, args.window, window)
    return 0
