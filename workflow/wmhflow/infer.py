"""FCN inference on one preprocessed subject: every slice, batched, cropped to the head.

Slices without head are skipped and the others are cropped to the head's bounding box (the same box
for all slices), then the probabilities are pasted back into a volume on the FLAIR's grid. Runs under
``torch.inference_mode`` in channels-last memory format (fastest for these convolutions on CPU and
GPU alike); bf16 autocast on CUDA (``precision: auto``), on CPU only when asked, since it moves a few
boundary voxels. A CUDA out-of-memory error retries the chunk with half the batch.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import torch

from .device import autocast_dtype, pick_device, set_threads
from .errors import InputError
from .io import atomic_output, load_nifti, require_same_grid, save_like
from .model import load_model
from .slices import colour_slices, required_volumes, to_input

log = logging.getLogger(__name__)


def head_box(flair: np.ndarray):
    """(slices with head, x range, y range) of an 8-bit FLAIR whose 0 means outside the head."""
    head = flair > 0
    slices = np.flatnonzero(head.any(axis=(0, 1)))
    if not len(slices):
        return slices, slice(0, 0), slice(0, 0)
    xs = np.flatnonzero(head.any(axis=(1, 2)))
    ys = np.flatnonzero(head.any(axis=(0, 2)))
    return slices, slice(xs[0], xs[-1] + 1), slice(ys[0], ys[-1] + 1)


def _forward(model, batch, device, amp):
    x = to_input(batch).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        logits = model(x)
    return torch.softmax(logits.float(), 1)[:, 1].cpu().numpy()


def predict_volume(model, volumes: dict, channels: str, device="auto", precision="auto", batch_size=4,
                   crop=True, forward=_forward) -> np.ndarray:
    """WMH probability (X, Y, Z) float32 for uint8 volumes (X, Y, Z) on one grid."""
    device = pick_device(device) if isinstance(device, str) else device
    amp = autocast_dtype(device, precision)
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    flair = volumes["flair"]
    prob = np.zeros(flair.shape, np.float32)
    if crop:
        slices, xs, ys = head_box(flair)
    else:
        slices, xs, ys = np.arange(flair.shape[2]), slice(None), slice(None)
    if not len(slices):
        log.warning("no head found in the FLAIR: empty segmentation")
        return prob
    images = colour_slices({k: v[xs, ys] for k, v in volumes.items()}, channels)[slices]
    start, done, size = time.perf_counter(), 0, int(batch_size)
    with torch.inference_mode():
        while done < len(slices):
            chunk = images[done:done + size]
            try:
                out = forward(model, chunk, device, amp)
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                size = max(1, size // 2)
                log.warning("CUDA out of memory: retrying with batches of %d slices", size)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            for j, k in enumerate(slices[done:done + len(chunk)]):
                prob[xs, ys, k] = out[j]
            done += len(chunk)
    log.info("FCN on %d slices (%d x %d) in %.1f s on %s%s", len(slices), images.shape[2], images.shape[3],
             time.perf_counter() - start, device, " (bf16)" if amp is not None else "")
    return prob


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
    parser.add_argument("--t1", help="8-bit T1 on the FLAIR grid")
    parser.add_argument("--tophat", help="top-hat of the 8-bit FLAIR")
    parser.add_argument("--model", required=True, help="model.pt written by 'wmhflow train'")
    parser.add_argument("--probseg", required=True, help="output WMH probability (float32)")
    parser.add_argument("--mask", required=True, help="output WMH mask (uint8 0/1)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=None)


def main(args) -> int:
    set_threads(args.threads)
    model, meta = load_model(args.model)
    channels = meta.get("channels", "flair,t1,tophat")
    volumes, flair_img = load_volumes(args.flair, args.t1, args.tophat, channels)
    prob = predict_volume(model, volumes, channels, args.device, args.precision, args.batch_size)
    save_like(prob, flair_img, args.probseg, np.float32)
    save_like((prob >= args.threshold).astype(np.uint8), flair_img, args.mask, np.uint8)
    settings = {k: v for k, v in vars(args).items()}
    settings.update(channels=channels, model_name=meta.get("name"), wmh_voxels=int((prob >= args.threshold).sum()))
    log.info("settings: %s", json.dumps(settings))
    return 0
