"""FCN inference on one preprocessed subject: every slice, batched, cropped to the head.

Slices without head are skipped and each batch of neighbouring slices is cropped to its head's
bounding box plus a margin, then the probabilities are pasted back into a volume on the FLAIR's grid.
Outside the head (8-bit FLAIR = 0) the probability is 0 by definition, so skipping and cropping
change nothing there. Crop boxes start on multiples of 8 (the network's pooling grid) and, with a
margin of at least :data:`EXACT_MARGIN` pixels (the network's reach), a cropped prediction equals
the uncropped one to rounding; a smaller margin is faster and moves a few voxels near the head's edge.

Runs under ``torch.inference_mode`` in channels-last memory format (fastest for these convolutions on
CPU and GPU alike); bf16 autocast on CUDA (``precision: auto``), on CPU only when asked, since it
moves a few boundary voxels. A CUDA out-of-memory error (and only that) retries with half the batch.

Test-time flips (``tta="flip"``): each slice is also run mirrored left-right and the mirrored output
mirrored back and averaged with the plain one. The mirror is along the voxel axis that runs left-right
in the FLAIR's own affine (:func:`left_right_axis`), never an assumed axis: a left-right mirror shows
the network a brain as plausible as the original (hemispheres are near-symmetric and WMH occur on both
sides), whereas mirroring the anterior-posterior or superior-inferior axis would show it upside-down
anatomy that training (rotations of +-10 degrees) never showed. That the voxel mirror is about the
array's centre rather than the brain's midline does not matter to a fully convolutional network. When
left-right is the slice axis (sagittal slices) no in-plane flip is a mirror of the brain and the flip
is skipped (a warning says so). Several models (an ensemble) are averaged the same way: the mask is
thresholded on the mean probability of every model and flip.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from ..errors import ConfigError, InputError
from ..io import save_like
from ..preprocess.brain_regions import RESTRICT_TO as RESTRICT_TO_MODES
from ..preprocess.quantize import inputs_window, model_window, require_model_window
from .calibration import DEFAULT_THRESHOLD, stored_threshold
from .device import autocast_dtype, pick_device, prepare, set_threads
from .inputs import load_volumes
from .model import load_model
from .postprocess import clean_mask, voxel_volume_mm3
from .slices import colour_slices, to_input

log = logging.getLogger(__name__)

#: pixels a network output depends on, each side (measured: 61 for VGG16 stages 1-4 + side layers,
#: including the bilinear upsampling of the stride-8 side layer), rounded up to the pooling grid
EXACT_MARGIN = 64
#: the default crop margin of the workflow, `wmhflow infer`, `infer-batch` and `segment` (the config
#: schema's segment.crop_margin; tests/test_defaults.py checks they agree): within the network's reach
#: of the head, a few voxels of air only, so near-exact and faster; EXACT_MARGIN gives the uncropped result
CROP_MARGIN = 16
#: slices per forward pass (the config schema's segment.batch_size)
BATCH_SIZE = 8
#: the network's total stride: crop boxes start on multiples of it so that poolings see the same grid
STRIDE = 8


TTA_MODES = ("none", "flip")
#: post-processing defaults: off. On the demo cohort (benchmarks/results/inference_options.csv) a minimum
#: volume traded lesion recall for precision without raising F1 on the test subjects, and no component lay
#: near the head surface; both stay available for cohorts with specks or scalp false positives.
MIN_LESION_MM3 = 0.0
MIN_DEPTH_MM = 15.0
#: segment.restrict_to: where components may be (head: the depth rule only; brain; supratentorial)
RESTRICT_TO = "brain"


def left_right_axis(affine):
    """The in-plane voxel axis (0 or 1) that runs left-right in world space, or None if it is the slice axis.

    From the affine's closest orientation (nibabel's ``io_orientation``: world axis 0 is R-L in RAS),
    so oblique, permuted and LPS-stored grids all get their real left-right axis.
    """
    world_axis = nib.orientations.io_orientation(np.asarray(affine))[:, 0]
    axis = int(np.flatnonzero(world_axis == 0)[0])
    return axis if axis in (0, 1) else None


def _box(mask_any, margin, align, size):
    idx = np.flatnonzero(mask_any)
    if not len(idx):
        return slice(0, 0)
    lo = max(0, int(idx[0]) - margin)
    lo -= lo % align
    hi = min(size, int(idx[-1]) + 1 + margin)
    return slice(lo, hi)


def head_box(flair: np.ndarray, margin: int = 0, align: int = 1):
    """(slices with head, x range, y range) of an 8-bit FLAIR whose 0 means outside the head.

    The box is widened by ``margin`` pixels (within the image) and starts on a multiple of ``align``.
    """
    head = np.asarray(flair) > 0
    slices = np.flatnonzero(head.any(axis=(0, 1)))
    if not len(slices):
        return slices, slice(0, 0), slice(0, 0)
    xs = _box(head.any(axis=(1, 2)), margin, align, head.shape[0])
    ys = _box(head.any(axis=(0, 2)), margin, align, head.shape[1])
    return slices, xs, ys


def _forward(model, batch, device, amp):
    """WMH probabilities (N, H, W) float32 of uint8 colour images (N, 3, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device, non_blocking=True)  # uint8: 4x less to move
    x = to_input(x).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        logits = model(x)
    return torch.softmax(logits.float(), 1)[:, 1].cpu().numpy()


def _averaged(models, chunk, device, amp, forward, flip_axis):
    """Mean probability (N, H, W) over the models and, when ``flip_axis`` is set, their mirrored passes."""
    total = None
    for model in models:
        passes = [forward(model, chunk, device, amp)]
        if flip_axis is not None:  # mirror the slice's axis flip_axis (chunk axis 2 + flip_axis) and back
            mirrored = forward(model, np.flip(chunk, 2 + flip_axis), device, amp)
            passes.append(np.flip(mirrored, 1 + flip_axis))
        for out in passes:
            total = out.astype(np.float32) if total is None else total + out
    return total / (len(models) * (2 if flip_axis is not None else 1))


def predict_volume(
    model,
    volumes: dict,
    channels: str,
    device="auto",
    precision="auto",
    batch_size=BATCH_SIZE,
    crop=True,
    forward=_forward,
    crop_margin=EXACT_MARGIN,
    tta="none",
    flip_axis=None,
) -> np.ndarray:
    """WMH probability (X, Y, Z) float32 for uint8 volumes (X, Y, Z) on one grid.

    ``model``: one network or a list of them (an ensemble: probabilities averaged). ``crop``: skip
    slices without head and crop each batch to its head box widened by ``crop_margin`` (False: every
    slice whole, for reference). ``tta``: "none" or "flip" (also run each slice mirrored along voxel
    axis ``flip_axis``, 0 or 1, the left-right axis from :func:`left_right_axis`; None skips the flip).
    ``forward(model, uint8 batch, device, autocast dtype)`` returns the probabilities of a batch
    (injectable for tests).
    """
    if tta not in TTA_MODES:
        raise ConfigError("segment.tta", f"{tta!r} is not one of {', '.join(TTA_MODES)}")
    if tta == "flip" and flip_axis is None:
        log.warning("test-time flip skipped: left-right is the slice axis of this grid, no in-plane mirror")
    flip_axis = None if tta == "none" else flip_axis
    if flip_axis not in (None, 0, 1):
        raise ValueError(f"flip_axis must be 0, 1 or None, got {flip_axis!r}")
    device = pick_device(device) if isinstance(device, str) else torch.device(device)
    amp = autocast_dtype(device, precision)
    prepare(device)
    models = [
        m.to(device).to(memory_format=torch.channels_last).eval()
        for m in (model if isinstance(model, (list, tuple)) else [model])
    ]
    flair = np.asarray(volumes["flair"])
    head = flair > 0
    prob = np.zeros(flair.shape, np.float32)
    if crop:
        slices = np.flatnonzero(head.any(axis=(0, 1)))
    else:
        slices = np.arange(flair.shape[2])
    if not head.any():
        log.warning("no head found in the FLAIR: empty segmentation")
        return prob
    images = colour_slices(volumes, channels)  # (Z, 3, X, Y) uint8, neighbours intact for flair-3slice
    start, done, size, pixels = time.perf_counter(), 0, max(1, int(batch_size)), 0
    with torch.inference_mode():
        while done < len(slices):
            ks = slices[done : done + size]
            if crop:
                _, xs, ys = head_box(flair[:, :, ks], int(crop_margin), STRIDE)
            else:
                xs, ys = slice(0, flair.shape[0]), slice(0, flair.shape[1])
            chunk = images[ks][:, :, xs, ys]
            out_of_memory = False
            try:
                out = _averaged(models, chunk, device, amp, forward, flip_axis)
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                out_of_memory = True
            if out_of_memory:  # recover outside the except clause, so the failed batch can be freed
                size = max(1, size // 2)
                log.warning("CUDA out of memory: retrying with batches of %d slices", size)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            for j, k in enumerate(ks):
                prob[xs, ys, k] = out[j]
            done += len(ks)
            pixels += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    prob[~head] = 0.0
    networks = sum(getattr(m, "n_members", 1) for m in models)  # a model file may hold an ensemble
    passes = networks * (2 if flip_axis is not None else 1)
    log.info(
        "FCN on %d of %d slices (%.0f%% of their pixels after cropping) in %.1f s on %s%s; %d pass(es) "
        "per slice (%d network(s)%s)",
        len(slices),
        flair.shape[2],
        100.0 * pixels / max(1, len(slices) * flair.shape[0] * flair.shape[1]),
        time.perf_counter() - start,
        device,
        " (bf16)" if amp is not None else "",
        passes,
        networks,
        f", flipped along voxel axis {flip_axis}" if flip_axis is not None else "",
    )
    return prob


_SHA256: dict[tuple, str] = {}  # (path, size, mtime): a chunk job names the same model in every sidecar


def file_sha256(path) -> str:
    """The checksum sidecars record, so a mask names exactly the model that made it."""
    import hashlib
    import os

    info = os.stat(path)
    key = (str(path), info.st_size, info.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = _sha256(path, hashlib.sha256())
    return _SHA256[key]


def _sha256(path, digest) -> str:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_files(paths) -> list:
    """One model file or several (an ensemble, as model.checkpoint may name) as a list; None: none."""
    if paths is None:
        return []
    if isinstance(paths, (str, bytes, Path)) or not hasattr(paths, "__iter__"):
        return [paths]
    return list(paths)


def load_models(paths):
    """(models, metas) of one or several model files; an ensemble must share its input channels."""
    paths = model_files(paths)
    if not paths:
        raise ConfigError("model.checkpoint", "no model file given")
    models, metas = [], []
    for path in paths:
        model, meta = load_model(path)
        channels = meta.get("channels", "flair,t1,tophat")
        if metas and channels != metas[0].get("channels", "flair,t1,tophat"):
            raise InputError(
                path,
                f"model channels {channels} differ from those of {paths[0]} "
                f"({metas[0].get('channels', 'flair,t1,tophat')}): an ensemble needs one channel set",
            )
        models.append(model)
        metas.append(meta)
    return models, metas


def require_models_window(paths, metas, window, volume_path) -> None:
    """Every model of an ensemble must have learnt from volumes requantized like these."""
    for path, meta in zip(model_files(paths), metas):
        require_model_window(meta, path, window, volume_path)


def require_checkpoint_window(checkpoints, window: str) -> None:
    """Before a run reprocesses a cohort with existing models: each was trained on volumes of ``window``.

    Checked once, when the run starts (the workflow's onstart), so that a model of the other window
    stops the run before hours of preprocessing rather than at every subject's segmentation.
    """
    for path in model_files(checkpoints):
        trained = model_window(load_model(path)[1])
        if trained not in ("unknown", window):
            raise ConfigError(
                "requantize.window",
                f"{window}, but model {path} was trained on {trained}-window volumes: set requantize.window: {trained}",
            )


def parse_threshold(value):
    """None ("auto": the model's calibrated threshold) or a probability in (0, 1)."""
    if value is None or str(value).strip().lower() in ("auto", "none", "null", ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError("segment.threshold", f"{value!r} is neither 'auto' nor a number") from None
    if not 0.0 < number < 1.0:
        raise ConfigError("segment.threshold", f"{number} is not strictly between 0 and 1")
    return number


def resolve_threshold(setting, metas, tta: str):
    """(threshold, where it comes from): an explicit setting wins; else the models' calibrated one.

    An ensemble uses the mean of its members' calibrated thresholds; a model file without calibration
    (older files, or trained without validation subjects) gives the conventional 0.5.
    """
    explicit = parse_threshold(setting)
    if explicit is not None:
        return explicit, "set explicitly (segment.threshold / --threshold)"
    stored = [stored_threshold(meta, tta) for meta in metas]
    if any(value is None for value in stored):
        return DEFAULT_THRESHOLD, "default 0.5 (the model file stores no calibrated threshold)"
    value = float(np.mean(stored))
    return value, (
        f"calibrated on the validation subjects (tta {tta})"
        if len(stored) == 1
        else f"mean of the {len(stored)} models' calibrated thresholds (tta {tta})"
    )


def make_mask(
    prob,
    flair_8bit,
    zooms,
    threshold,
    min_lesion_mm3=MIN_LESION_MM3,
    min_depth_mm=MIN_DEPTH_MM,
    excluded=None,
):
    """(uint8 mask, post-processing report) of a probability map: threshold, then :func:`clean_mask`.

    ``excluded``: the region :func:`excluded_region` gives (None: no template rule)."""
    mask, report = clean_mask(
        np.asarray(prob) >= threshold,
        zooms,
        np.asarray(flair_8bit) > 0,
        float(min_lesion_mm3),
        float(min_depth_mm),
        excluded,
    )
    return mask.astype(np.uint8), report


def excluded_region(setting: str, volumes: dict, affine):
    """(region or None, sidecar record) for ``segment.restrict_to``: head (None), brain or supratentorial.

    The template is registered to the 8-bit T1 (the MNI152 template is a T1), to the FLAIR when the
    model has no T1 channel. A registration that fails or has an implausible scale leaves the region out
    (nothing is removed) and says so in the sidecar and the log, rather than dropping lesions on a
    misplaced region.
    One ITK thread: the transform depends on the thread count, and the same files must come out of
    every machine and profile (as for N4, ``preprocess.threads``).
    """
    if setting == "head":
        return None, {"RestrictTo": "head"}
    from ..preprocess.brain_regions import excluded_region as register_region

    volume = volumes.get("t1")
    if volume is None or not np.any(volume):  # FLAIR-only channel sets get an empty T1
        volume = volumes["flair"]
    try:
        region, record = register_region(np.asarray(volume), affine, setting, threads=1)
    except RuntimeError as err:  # RegistrationImplausible, or ITK's own failure on an odd grid
        log.warning("restrict_to %s not applied, no component removed by it: %s", setting, err)
        return None, {"RestrictTo": f"{setting}: not applied ({err})"}
    return region, {"RestrictTo": setting, **record}


def model_provenance(model_paths, metas, channels) -> dict:
    """Sidecar keys naming the model(s) that made an image: one value, or a list for an ensemble."""
    files = [str(p) for p in model_paths]
    sums = [file_sha256(p) for p in files]
    one = len(files) == 1
    return {
        "ModelName": metas[0].get("name"),
        "ModelChannels": channels,
        "ModelFile": files[0] if one else files,
        "ModelSHA256": sums[0] if one else sums,
    }


def inference_record(
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
    seconds,
) -> dict:
    """What made a mask, for the JSON sidecar beside it (BIDS derivatives: Sources and parameters)."""
    return {
        "ModelFiles": [str(p) for p in model_paths],
        "Models": [m.get("name") for m in metas],
        "TestTimeAugmentation": tta,
        "FlipVoxelAxis": flip_axis,
        "Threshold": threshold,
        "ThresholdSource": threshold_source,
        "MinLesionVolume_mm3": float(min_lesion_mm3),
        "MinDepth_mm": float(min_depth_mm),
        "PostProcessing": report,
        "WMHVolume_mL": float(np.count_nonzero(mask) * voxel_volume_mm3(zooms) / 1000.0),
        "FCNSeconds": round(float(seconds), 2),
    }


def add_postprocessing_arguments(parser) -> None:
    """The flags ``wmhflow infer`` and ``wmhflow segment`` share (defaults = the config schema's)."""
    parser.add_argument(
        "--tta",
        default="none",
        choices=TTA_MODES,
        help="test-time augmentation: none, or flip (also the left-right mirror; 2x the FCN time)",
    )
    parser.add_argument(
        "--threshold",
        default=DEFAULT_THRESHOLD,
        help="probability from which a voxel is WMH (default 0.5); auto: the one stored with "
        "the model (chosen on its validation subjects), 0.5 for models without one",
    )
    parser.add_argument(
        "--min-lesion-mm3",
        type=float,
        default=MIN_LESION_MM3,
        help="remove 26-connected components smaller than this volume (mm^3; 0: keep all)",
    )
    parser.add_argument(
        "--min-depth-mm",
        type=float,
        default=MIN_DEPTH_MM,
        help="remove components with no voxel this deep inside the head (mm; 0: off)",
    )
    parser.add_argument(
        "--restrict-to",
        default=RESTRICT_TO,
        choices=RESTRICT_TO_MODES,
        help="head: no template rule; brain: remove components mostly outside the brain; supratentorial: "
        "also in the brainstem and cerebellum (an MNI152 template registered to the T1 by an affine)",
    )


def add_arguments(parser) -> None:
    parser.add_argument("--flair", required=True, help="8-bit FLAIR")
    parser.add_argument("--t1", nargs="?", const="", help="8-bit T1 on the FLAIR grid (none: FLAIR-only channels)")
    parser.add_argument("--tophat", help="top-hat of the 8-bit FLAIR")
    parser.add_argument(
        "--model",
        required=True,
        nargs="+",
        help="model.pt written by 'wmhflow train'; several: an ensemble (probabilities averaged)",
    )
    parser.add_argument("--probseg", required=True, help="output WMH probability (float32)")
    parser.add_argument("--mask", required=True, help="output WMH mask (uint8 0/1), with a JSON sidecar beside it")
    add_inference_arguments(parser)


def add_inference_arguments(parser) -> None:
    """The settings flags ``wmhflow infer`` and ``wmhflow infer-batch`` share."""
    add_network_arguments(parser)
    add_postprocessing_arguments(parser)
    parser.add_argument("--threads", type=int, default=None)


def add_network_arguments(parser) -> None:
    """How the FCN runs: the flags of ``infer``, ``infer-batch`` and the standalone ``segment``."""
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument(
        "--crop-margin",
        type=int,
        default=CROP_MARGIN,
        help=f"pixels kept around the head when cropping (>= {EXACT_MARGIN}: same result "
        f"as no cropping; smaller is faster)",
    )


def check_postprocessing_arguments(args) -> None:
    for key, value in (("min_lesion_mm3", args.min_lesion_mm3), ("min_depth_mm", args.min_depth_mm)):
        if not np.isfinite(value) or value < 0:
            raise ConfigError(f"segment.{key}", f"{value} must be a number >= 0")
    parse_threshold(args.threshold)


def infer_subject(
    models, metas, model_paths, volumes, flair_img, inputs, probseg, mask_path, settings, named_as=None
) -> dict:
    """Segment one subject with loaded models and write its probseg, mask and their JSON sidecars.

    ``settings``: device, precision, batch_size, crop_margin, tta, threshold, min_lesion_mm3,
    min_depth_mm (the ``wmhflow infer`` flags). ``named_as``: (probseg, mask) the files will be placed
    at when they are written elsewhere first (``wmhflow infer-batch`` stages them): the sidecars name
    their sources as seen from there, so a placed file is byte for byte what ``wmhflow infer`` writes.
    Returns what the log line and the settings record need.
    """
    predicted = predict_subject(models, metas, volumes, flair_img, settings)
    return write_subject(
        predicted, metas, model_paths, volumes, flair_img, inputs, probseg, mask_path, settings, named_as
    )


def predict_subject(models, metas, volumes, flair_img, settings) -> dict:
    """The FCN part of :func:`infer_subject` (a GPU's part: ``infer-batch`` overlaps it with the writing
    of the previous subject): the probability map, the pass's seconds and its flip axis."""
    s = settings
    channels = metas[0].get("channels", "flair,t1,tophat")
    flip_axis = left_right_axis(flair_img.affine)
    started = time.perf_counter()
    prob = predict_volume(
        models,
        volumes,
        channels,
        s["device"],
        s["precision"],
        s["batch_size"],
        crop_margin=s["crop_margin"],
        tta=s["tta"],
        flip_axis=flip_axis,
    )
    return {"prob": prob, "seconds": time.perf_counter() - started, "flip_axis": flip_axis}


def write_subject(
    predicted, metas, model_paths, volumes, flair_img, inputs, probseg, mask_path, settings, named_as=None
) -> dict:
    """The CPU part of :func:`infer_subject` after the FCN: threshold, post-processing, the four files."""
    s, prob, seconds, flip_axis = settings, predicted["prob"], predicted["seconds"], predicted["flip_axis"]
    channels = metas[0].get("channels", "flair,t1,tophat")
    threshold, source = resolve_threshold(s["threshold"], metas, s["tta"])
    zooms = flair_img.header.get_zooms()[:3]
    region, region_record = excluded_region(s.get("restrict_to", RESTRICT_TO), volumes, flair_img.affine)
    mask, report = make_mask(prob, volumes["flair"], zooms, threshold, s["min_lesion_mm3"], s["min_depth_mm"], region)
    record = inference_record(
        model_paths,
        metas,
        s["tta"],
        flip_axis if s["tta"] == "flip" else None,
        threshold,
        source,
        s["min_lesion_mm3"],
        s["min_depth_mm"],
        report,
        mask,
        zooms,
        seconds,
    )
    made_by = dict(
        model_provenance(model_paths, metas, channels), CropMargin=s["crop_margin"], Precision=s["precision"]
    )
    final_probseg, final_mask = named_as or (probseg, mask_path)
    save_like(
        prob,
        flair_img,
        probseg,
        np.float32,
        sources=inputs,
        named_as=final_probseg,
        Description="WMH probability of the FCN",
        **made_by,
    )
    # the mask's source is the probseg where it will be read (final_probseg); its spatial reference is
    # read from the probseg sidecar just written (SpatialReference=probseg), which names the FLAIR
    save_like(
        mask,
        flair_img,
        mask_path,
        np.uint8,
        sources=[final_probseg],
        named_as=final_mask,
        Description="WMH mask: probability >= Threshold, then post-processing",
        Type="Lesion",
        **made_by,
        **record,
        **region_record,
        **({"SpatialReference": str(probseg)} if named_as else {}),
    )
    log.info(
        "threshold %.2f (%s); post-processing removed %d small, %d superficial and %d out-of-region "
        "component(s), %d voxels",
        threshold,
        source,
        report["removed_small"],
        report["removed_superficial"],
        report.get("removed_outside_region", 0),
        report["removed_voxels"],
    )
    return {"channels": channels, "threshold_used": threshold, "wmh_voxels": int(mask.sum()), "fcn_seconds": seconds}


def settings_of(args) -> dict:
    """The inference settings of parsed ``wmhflow infer`` / ``infer-batch`` flags."""
    return {
        key: getattr(args, key)
        for key in (
            "device",
            "precision",
            "batch_size",
            "crop_margin",
            "tta",
            "threshold",
            "min_lesion_mm3",
            "min_depth_mm",
            "restrict_to",
        )
    }


def main(args) -> int:
    check_postprocessing_arguments(args)
    set_threads(args.threads)
    models, metas = load_models(args.model)
    channels = metas[0].get("channels", "flair,t1,tophat")
    resolve_threshold(args.threshold, metas, args.tta)  # a bad threshold stops before any volume is read
    volumes, flair_img = load_volumes(args.flair, args.t1, args.tophat, channels)
    require_models_window(args.model, metas, inputs_window([args.flair, args.t1]), args.flair)
    inputs = [p for p in (args.flair, args.t1, args.tophat) if p]
    done = infer_subject(
        models, metas, args.model, volumes, flair_img, inputs, args.probseg, args.mask, settings_of(args)
    )
    settings = dict(
        vars(args),
        channels=channels,
        model_names=[m.get("name") for m in metas],
        threshold_used=done["threshold_used"],
        wmh_voxels=done["wmh_voxels"],
    )
    log.info("settings: %s", json.dumps(settings))
    return 0
