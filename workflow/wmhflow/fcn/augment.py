"""Training-time augmentation for scanner differences.

Scanners differ in contrast (sequence timing), residual bias after N4, noise, in-plane resolution and
slice thickness (partial volume that makes lesions fainter). The 8-bit slices a model sees already
went through N4 and the 8-bit window, so the augmentation acts on those 8-bit images, per sample
and per modality (FLAIR and T1 independently), inside the head only (0 = air stays 0):

- contrast: a random gamma curve and a small window shift/scale (another sequence's contrast),
- scalp: the head's outer rim brightened (fat without fat suppression: a FLAIR or T1 whose scalp is as
  bright as lesions; on the synthetic shifted scanners it drew false positives along the whole rim),
- bias: a smooth multiplicative field of a few random low-frequency cosines (what N4 leaves),
- noise: Gaussian noise of random strength,
- resolution: Gaussian blur, or down- then up-sampling by a random factor (coarser voxels),
- slice thickness: the slice blended with its two neighbours (partial volume along the slice axis),
  done by :class:`wmhflow.fcn.training_data.SliceSampler`, which knows the neighbours.

The top-hat channel is recomputed from the augmented FLAIR (same area opening as preprocessing), so it
stays what inference would compute from such a FLAIR. Labels are never changed by these operations.
Every random draw comes from the ``numpy.random.Generator`` passed in: the same seed gives the same
batch. Libraries: scipy.ndimage for blurs and zooms, the project's area top-hat.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: defaults of the 'intensity' settings (probabilities per sample and strengths)
DEFAULTS = {
    "probability": 0.8,  # chance that a sample is augmented at all
    "gamma": 0.35,  # log-gamma drawn in [-g, g]
    "window": 0.1,  # window shift and log-scale in [-w, w]
    "bias": 0.3,  # bias field amplitude (log units), drawn in [0, b]
    "noise": 0.04,  # Gaussian noise sigma (fraction of 255), drawn in [0, n]
    "blur": 1.0,  # Gaussian blur sigma (pixels), drawn in [0, s]; half of the samples
    "downsample": 2.0,  # resolution factor in [1, d]; the other half
    "scalp": 0.8,  # rim brightening: factor in [1, 1 + s] on the outer rim, half of the samples
    "scalp_width": 6.0,  # rim width in pixels (~ mm at ~1 mm in-plane), drawn in [2, w]
}


def _bias_field(rng, height, width, amplitude):
    y = np.linspace(0, np.pi, height, dtype=np.float32)[:, None]
    x = np.linspace(0, np.pi, width, dtype=np.float32)[None, :]
    log_field = np.zeros((height, width), np.float32)
    for _ in range(3):
        fy, fx = rng.uniform(0.3, 1.5, 2)
        py, px = rng.uniform(0, 2 * np.pi, 2)
        log_field += rng.uniform(-1, 1) * np.cos(fy * y + py) * np.cos(fx * x + px)
    log_field *= amplitude / (np.abs(log_field).max() + 1e-6)
    return np.exp(log_field)


def augment_image(image: np.ndarray, rng, settings=None) -> np.ndarray:
    """One 8-bit modality image (H, W) -> an augmented 8-bit image; air (0) stays 0."""
    s = dict(DEFAULTS, **(settings or {}))
    head = image > 0
    if not head.any():
        return image.copy()
    x = image.astype(np.float32) / 255.0
    gamma = float(np.exp(rng.uniform(-s["gamma"], s["gamma"])))
    x = np.power(x, gamma)
    if s["scalp"] > 0 and rng.random() < 0.5 and not head.all():  # a crop inside the head has no rim
        # the head's own rim only: distance to the crop's air; a crop edge inside the head is no rim
        width = rng.uniform(2.0, max(s["scalp_width"], 2.0))
        depth = ndimage.distance_transform_edt(head)
        x = x * (1.0 + rng.uniform(0, s["scalp"]) * np.exp(-((depth / width) ** 2)))
    shift, log_scale = rng.uniform(-s["window"], s["window"], 2)
    x = (x - 0.5) * float(np.exp(log_scale)) + 0.5 + shift
    x = x * _bias_field(rng, *x.shape, rng.uniform(0, s["bias"]))
    if rng.random() < 0.5:
        sigma = rng.uniform(0, s["blur"])
        if sigma > 0.1:
            x = ndimage.gaussian_filter(np.where(head, x, 0), sigma) / np.maximum(
                ndimage.gaussian_filter(head.astype(np.float32), sigma), 1e-3
            )
    else:
        factor = rng.uniform(1.0, s["downsample"])
        if factor > 1.1:
            small = ndimage.zoom(np.where(head, x, 0), 1 / factor, order=1, mode="nearest")
            x = ndimage.zoom(small, np.array(x.shape) / np.array(small.shape), order=1, mode="nearest")
            x = x[: image.shape[0], : image.shape[1]]
            x = np.pad(x, [(0, image.shape[0] - x.shape[0]), (0, image.shape[1] - x.shape[1])], mode="edge")
    x = x + rng.normal(0, rng.uniform(0, s["noise"]), x.shape).astype(np.float32)
    out = np.clip(np.rint(x * 255.0), 1, 255).astype(np.uint8)
    out[~head] = 0
    return out


def augment_batch(images: np.ndarray, channels: str, rng, settings=None, tophat_area: int = 25) -> np.ndarray:
    """Augment uint8 colour crops (N, 3, H, W) for a channel set; returns a new uint8 array.

    FLAIR and T1 get independent draws; ``flair,t1,t1`` keeps its two T1 channels equal; the top-hat
    of ``flair,t1,tophat`` is recomputed from the augmented FLAIR; ``flair-3slice`` applies one draw
    (the same seed) to its three neighbouring FLAIR slices so they stay one acquisition.
    """
    from ..preprocess.tophat import area_tophat

    s = dict(DEFAULTS, **(settings or {}))
    out = images.copy()
    for i in range(len(images)):
        if rng.random() >= s["probability"]:
            continue
        if channels == "flair-3slice":
            seed = int(rng.integers(2**31))
            for c in range(3):
                out[i, c] = augment_image(images[i, c], np.random.default_rng(seed), s)
            continue
        out[i, 0] = augment_image(images[i, 0], rng, s)
        out[i, 1] = augment_image(images[i, 1], rng, s)
        if channels == "flair,t1,t1":
            out[i, 2] = out[i, 1]
        elif channels == "flair,t1,tophat":
            out[i, 2] = area_tophat(out[i, 0][:, :, None], tophat_area)[:, :, 0]
    return out
