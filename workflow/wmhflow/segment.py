"""One subject without Snakemake: FLAIR + T1 -> WMH probability map and mask, the whole chain.

The same library functions the workflow's rules call, in the same order and with the same defaults
as config.yaml: T1 onto the FLAIR grid, N4 of both, 8-bit requantization, area-opening top-hat of
the FLAIR, the FCN. Outputs use the workflow's BIDS-derivatives names under ``OUT_DIR/sub-<id>/anat/``
and sit on the FLAIR's voxel grid with its header. Every input is read and checked, and the model
loaded, before anything is written.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .arguments import int_at_least
from .checks import check_images
from .errors import InputError, WmhflowError
from .fcn.calibration import DEFAULT_THRESHOLD
from .io import load_nifti, save_like, voxels
from .paths import bids_path, sidecar_path
from .preprocess.bias import CONTROL_POINTS, ITERATIONS, SHRINK
from .preprocess.quantize import (
    HIGH_PCT,
    LOW_PCT,
    WINDOW,
    add_window_arguments,
    check_window_arguments,
    describe,
    model_window,
)
from .preprocess.tophat import AREA, CONNECTIVITY

log = logging.getLogger(__name__)


def subject_id(flair_path) -> str:
    """An alphanumeric subject id from the FLAIR's path: ``sub-XX`` in it, else its challenge folder."""
    path = Path(flair_path)
    match = re.search(r"sub-([A-Za-z0-9]+)", str(path))
    if match:
        return match.group(1)
    # WMH-challenge layout: <site>/<id>/pre/FLAIR.nii.gz
    for part in reversed(path.parent.parts):
        if part not in ("pre", "orig", "anat") and re.fullmatch(r"[A-Za-z0-9]+", part):
            return part
    return "01"


@dataclass(frozen=True)
class ChainSettings:
    """Every setting of the standalone chain, with the workflow's defaults (config.yaml)."""

    align_mode: str = "auto"
    shrink: tuple = tuple(SHRINK)
    iterations: tuple = tuple(ITERATIONS)
    control_points: int = CONTROL_POINTS
    low_pct: float = LOW_PCT
    high_pct: float = HIGH_PCT
    #: the requantization window; "auto" = the one the model was trained with
    window: str = "auto"
    area: int = AREA
    connectivity: int = CONNECTIVITY
    device: str = "auto"
    precision: str = "auto"
    #: None = infer's defaults (imported with torch only when the chain runs)
    batch_size: int | None = None
    crop_margin: int | None = None
    #: "auto" (the model's calibrated one) or a probability
    threshold: float | str = DEFAULT_THRESHOLD
    tta: str = "none"
    #: None = infer's defaults
    min_lesion_mm3: float | None = None
    min_depth_mm: float | None = None
    restrict_to: str | None = None
    #: torch's threads (wmhflow segment sets them; 0: all cores)
    threads: int = 0
    #: N4's and the registration's threads: their voxels depend on it, so it is fixed (the workflow's
    #: preprocess.threads default) rather than the machine's cores; the same files as the workflow
    kernel_threads: int = 1
    keep_intermediates: bool = False

    @classmethod
    def from_arguments(cls, args) -> ChainSettings:
        """The settings of ``wmhflow segment``'s parsed flags (one flag per field, ``--align`` for align_mode)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls(align_mode=args.align, **{k: v for k, v in values.items() if k != "align_mode"})


def segment_subject(flair_path, t1_path, model_path, out_dir, subject=None, settings=None) -> dict:
    """Run the chain for one subject; returns {artifact name: path written}.

    ``model_path``: one model file or a list (an ensemble). ``settings``: a :class:`ChainSettings`
    (None: the defaults); ``tta``, ``min_lesion_mm3``, ``min_depth_mm``, ``restrict_to`` as
    ``wmhflow infer``'s.
    """
    from .fcn import infer
    from .preprocess.align import align_t1_to_flair
    from .preprocess.bias import n4_correct_array
    from .preprocess.quantize import requantize_array
    from .preprocess.tophat import area_tophat

    c = settings or ChainSettings()
    align_mode, shrink, iterations, control_points = c.align_mode, c.shrink, c.iterations, c.control_points
    low_pct, high_pct, window, area, connectivity = c.low_pct, c.high_pct, c.window, c.area, c.connectivity
    device, precision, threshold, tta = c.device, c.precision, c.threshold, c.tta
    keep_intermediates = c.keep_intermediates
    batch_size = infer.BATCH_SIZE if c.batch_size is None else c.batch_size
    crop_margin = infer.CROP_MARGIN if c.crop_margin is None else c.crop_margin
    min_lesion_mm3 = infer.MIN_LESION_MM3 if c.min_lesion_mm3 is None else float(c.min_lesion_mm3)
    min_depth_mm = infer.MIN_DEPTH_MM if c.min_depth_mm is None else float(c.min_depth_mm)
    restrict_to = infer.RESTRICT_TO if c.restrict_to is None else c.restrict_to

    subject = subject or subject_id(flair_path)
    if not re.fullmatch(r"[A-Za-z0-9]+", subject):
        raise InputError(flair_path, f"subject id {subject!r} must be alphanumeric (BIDS label)")
    problems = check_images(flair_path, t1_path)[1]  # the workflow's check step, for this one subject
    if problems:
        raise WmhflowError("; ".join(problems))
    flair = load_nifti(flair_path, "FLAIR")
    t1 = load_nifti(t1_path, "T1") if t1_path else None
    model_paths = infer.model_files(model_path)
    models, metas = infer.load_models(model_paths)
    meta = metas[0]
    channels = meta.get("channels", "flair,t1,tophat")
    threshold, threshold_source = infer.resolve_threshold(threshold, metas, tta)
    if window == "auto":
        window = next((w for w in map(model_window, metas) if w != "unknown"), WINDOW)
    infer.require_models_window(model_paths, metas, window, flair_path)
    if t1 is None and "t1" in channels:
        raise InputError(flair_path, f"the model's channels {channels} need a T1 (--t1)")
    timings, volumes, written = {}, {}, {}

    def step(name, started):
        timings[name] = round(time.perf_counter() - started, 2)
        log.info("%s done in %.1f s", name, timings[name])

    def keep(data, suffix, desc, dtype):
        if keep_intermediates:
            written[f"{desc}_{suffix}"] = str(
                save_like(data, flair, bids_path(out_dir, subject, suffix, desc=desc), dtype)
            )

    started = time.perf_counter()
    if t1 is not None:
        aligned_img = align_t1_to_flair(flair, t1, align_mode, t1_path, flair_path, c.kernel_threads)
        keep(np.asanyarray(aligned_img.dataobj), "T1w", "aligned", aligned_img.get_data_dtype())  # as the rule
        aligned = voxels(aligned_img)
        step("align_t1", started)
    chains = [("flair", "FLAIR", voxels(flair))] + ([("t1", "T1w", aligned)] if t1 is not None else [])
    for key, suffix, data in chains:
        started = time.perf_counter()
        corrected, _ = n4_correct_array(flair, data, None, shrink, iterations, control_points, c.kernel_threads)
        keep(corrected, suffix, "n4", np.float32)
        step(f"bias_correct_{suffix}", started)
        started = time.perf_counter()
        volumes[key] = requantize_array(
            corrected, None, low_pct, high_pct, window
        )  # head mask of `corrected`, as the rule
        keep(volumes[key], suffix, "quant", np.uint8)
        step(f"requantize_{suffix}", started)
    started = time.perf_counter()
    volumes["tophat"] = area_tophat(volumes["flair"], area, connectivity)
    keep(volumes["tophat"], "FLAIR", "tophat", np.uint8)
    step("tophat", started)
    if "t1" not in volumes:  # FLAIR-only channel sets never read it
        volumes["t1"] = np.zeros_like(volumes["flair"])
    started = time.perf_counter()
    flip_axis = infer.left_right_axis(flair.affine) if tta == "flip" else None
    prob = infer.predict_volume(
        models, volumes, channels, device, precision, batch_size, crop_margin=crop_margin, tta=tta, flip_axis=flip_axis
    )
    step("fcn", started)
    name = meta.get("name") or "fcn2d"
    made_by = dict(
        infer.model_provenance(model_paths, metas, channels),
        ModelName=name,
        N4Shrink=list(shrink),
        N4Iterations=list(iterations),
        **describe(window, low_pct, high_pct),
        TophatArea=area,
        TophatConnectivity=connectivity,
        CropMargin=crop_margin,
    )
    sources = [flair_path] + ([t1_path] if t1_path else [])
    probseg_path = bids_path(out_dir, subject, "probseg", label="WMH", desc=name)
    written["probseg"] = str(
        save_like(
            prob,
            flair,
            probseg_path,
            np.float32,
            sources=sources,
            Description="WMH probability of the FCN (wmhflow segment)",
            **made_by,
        )
    )
    zooms = flair.header.get_zooms()[:3]
    region, region_record = infer.excluded_region(restrict_to, volumes, flair.affine)
    mask, report = infer.make_mask(prob, volumes["flair"], zooms, threshold, min_lesion_mm3, min_depth_mm, region)
    record = infer.inference_record(
        model_paths,
        metas,
        tta,
        flip_axis,
        threshold,
        threshold_source,
        min_lesion_mm3,
        min_depth_mm,
        report,
        mask,
        zooms,
        timings["fcn"],
    )
    mask_path = bids_path(out_dir, subject, "mask", label="WMH", desc=name)
    written["mask"] = str(
        save_like(
            mask,
            flair,
            mask_path,
            np.uint8,
            sources=sources,
            Description="WMH mask: probability >= Threshold, then post-processing",
            Type="Lesion",
            **made_by,
            **record,
            **region_record,
        )
    )
    written["mask_json"] = str(sidecar_path(mask_path))
    volume_ml = record["WMHVolume_mL"]
    log.info(
        "sub-%s: %.2f mL of WMH (threshold %.2f: %s); steps %s",
        subject,
        volume_ml,
        threshold,
        threshold_source,
        json.dumps(timings),
    )
    return written


def add_arguments(parser) -> None:
    from .fcn.infer import add_network_arguments, add_postprocessing_arguments

    parser.add_argument("--flair", required=True, help="FLAIR NIfTI (the output grid)")
    parser.add_argument("--t1", help="T1 NIfTI (any grid: registered onto the FLAIR when needed)")
    parser.add_argument(
        "--model",
        required=True,
        nargs="+",
        help="model.pt written by 'wmhflow train' / the workflow; several: an ensemble",
    )
    parser.add_argument("-o", "--out-dir", required=True, help="outputs go to OUT_DIR/sub-<id>/anat/")
    parser.add_argument("--subject", help="subject id (default: from the FLAIR's path)")
    parser.add_argument("--align", default="auto", choices=("auto", "always", "never"))
    parser.add_argument("--shrink", type=int, nargs=3, default=SHRINK, metavar=("I", "J", "K"))
    parser.add_argument("--iterations", type=int, nargs="+", default=ITERATIONS)
    parser.add_argument("--control-points", type=int, default=CONTROL_POINTS)
    add_window_arguments(parser, default="auto")
    parser.add_argument("--area", type=int, default=AREA)
    parser.add_argument("--connectivity", type=int, default=CONNECTIVITY, choices=(1, 2))
    add_network_arguments(parser)
    add_postprocessing_arguments(parser)
    parser.add_argument(
        "--keep-intermediates", action="store_true", help="also write the aligned, N4, 8-bit and top-hat volumes"
    )
    parser.add_argument("--threads", type=int, default=0, help="0: all cores")
    parser.add_argument(
        "--kernel-threads",
        type=int_at_least(1),
        default=1,
        help="threads of N4 and the registration, whose voxels depend on it (the workflow's preprocess.threads)",
    )


def main(args) -> int:
    from .fcn.device import set_threads
    from .fcn.infer import check_postprocessing_arguments

    check_postprocessing_arguments(args)
    check_window_arguments(args, args.flair)
    set_threads(args.threads or None)
    written = segment_subject(
        args.flair, args.t1, args.model, args.out_dir, args.subject, ChainSettings.from_arguments(args)
    )
    for name, path in written.items():
        print(f"{name}\t{path}")
    return 0
