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
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import torch

from .device import autocast_dtype, pick_device, prepare, set_threads
from .errors import InputError
from .io import load_nifti, require_same_grid, save_like
from .model import load_model
from .slices import colour_slices, required_volumes, to_input

log = logging.getLogger(__name__)

#: pixels a network output depends on, each side (measured: 61 for VGG16 stages 1-4 + side layers,
#: including the bilinear upsampling of the stride-8 side layer), rounded up to the pooling grid
EXACT_MARGIN = 64
#: the default crop margin: exact
CROP_MARGIN = EXACT_MARGIN
#: the network's total stride: crop boxes start on multiples of it so that poolings see the same grid
STRIDE = 8


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


def predict_volume(model, volumes: dict, channels: str, device="auto", precision="auto", batch_size=4,
                   crop=True, forward=_forward, crop_margin=CROP_MARGIN) -> np.ndarray:
    """WMH probability (X, Y, Z) float32 for uint8 volumes (X, Y, Z) on one grid.

    ``crop``: skip slices without head and crop each batch to its head box widened by ``crop_margin``
    (False: every slice whole, for reference). ``forward(model, uint8 batch, device, autocast dtype)``
    returns the probabilities of a batch (injectable for tests).
    """
    device = pick_device(device) if isinstance(device, str) else torch.device(device)
    amp = autocast_dtype(device, precision)
    prepare(device)
    model = model.to(device).to(memory_format=torch.channels_last).eval()
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
            ks = slices[done:done + size]
            if crop:
                _, xs, ys = head_box(flair[:, :, ks], int(crop_margin), STRIDE)
            else:
                xs, ys = slice(0, flair.shape[0]), slice(0, flair.shape[1])
            chunk = images[ks][:, :, xs, ys]
            out_of_memory = False
            try:
                out = forward(model, chunk, device, amp)
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
    log.info("FCN on %d of %d slices (%.0f%% of their pixels after cropping) in %.1f s on %s%s", len(slices),
             flair.shape[2], 100.0 * pixels / max(1, len(slices) * flair.shape[0] * flair.shape[1]),
             time.perf_counter() - start, device, " (bf16)" if amp is not None else "")
    return prob


def file_sha256(path) -> str:
    """The checksum sidecars record, so a mask names exactly the model that made it."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_volumes(flair, t1, tophat, channels):
    """The uint8 volumes a channel set needs, checked to share the FLAIR's grid; and the FLAIR image."""
    flair_img = load_nifti(flair, "8-bit FLAIR")
    volumes = {"flair": np.asarray(flair_img.dataobj)}
    for key, path in (("t1", t1), ("tophat", tophat)):
        if key in required_volumes(channels) or (key == "t1" and path):
            if not path:
                raise InputError(flair, f"channels {channels} need a {key} volume")
            img = load_nifti(path, key)
            require_same_grid(img, path, flair_img, flair, key)
            volumes[key] = np.asarray(img.dataobj)
    for key, data in volumes.items():
        if data.dtype != np.uint8:
            raise InputError({"flair": flair, "t1": t1, "tophat": tophat}[key],
                             f"expected the 8-bit requantized volume, found {data.dtype}")
    return volumes, flair_img


def add_arguments(parser) -> None:
    parser.add_argument("--flair", required=True, help="8-bit FLAIR")
    parser.add_argument("--t1", nargs="?", const="", help="8-bit T1 on the FLAIR grid (none: FLAIR-only channels)")
    parser.add_argument("--tophat", help="top-hat of the 8-bit FLAIR")
    parser.add_argument("--model", required=True, help="model.pt written by 'wmhflow train'")
    parser.add_argument("--probseg", required=True, help="output WMH probability (float32)")
    parser.add_argument("--mask", required=True, help="output WMH mask (uint8 0/1)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--crop-margin", type=int, default=CROP_MARGIN,
                        help=f"pixels kept around the head when cropping (>= {EXACT_MARGIN}: same result "
                             f"as no cropping; smaller is faster)")


def main(args) -> int:
    set_threads(args.threads)
    model, meta = load_model(args.model)
    channels = meta.get("channels", "flair,t1,tophat")
    volumes, flair_img = load_volumes(args.flair, args.t1, args.tophat, channels)
    prob = predict_volume(model, volumes, channels, args.device, args.precision, args.batch_size,
                          crop_margin=args.crop_margin)
    inputs = [p for p in (args.flair, args.t1, args.tophat) if p]
    made_by = {"ModelName": meta.get("name"), "ModelChannels": channels, "ModelFile": str(args.model),
               "ModelSHA256": file_sha256(args.model), "CropMargin": args.crop_margin,
               "Precision": args.precision}
    save_like(prob, flair_img, args.probseg, np.float32, sources=inputs,
              Description="WMH probability of the FCN", **made_by)
    save_like((prob >= args.threshold).astype(np.uint8), flair_img, args.mask, np.uint8,
              sources=[args.probseg], Description="WMH mask: probability >= Threshold", Type="Lesion",
              Threshold=args.threshold,
              **made_by)
    settings = {k: v for k, v in vars(args).items()}
    settings.update(channels=channels, model_name=meta.get("name"), wmh_voxels=int((prob >= args.threshold).sum()))
    log.info("settings: %s", json.dumps(settings))
    return 0
