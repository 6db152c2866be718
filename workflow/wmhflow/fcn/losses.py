"""The training losses: cross-entropy (optionally weighted towards small lesions) and soft Dice.

Both are voxel sums, so a lesion counts in proportion to its size: a 1-voxel lesion weighs 1/500 of
a 500-voxel one, while the challenge's lesion recall and F1 count every lesion once. On the accuracy
benchmark every lesion the standard model missed on the seen sites had at most 7 voxels (most of them
a single voxel). ``small_lesion_weight`` w gives each WMH pixel of a 2D lesion component of
area a (pixels, 8-connected in the slice the network sees) the cross-entropy weight
``1 + w * min(1, small_lesion_area / a)``: components up to ``small_lesion_area`` pixels weigh 1 + w,
large ones tend to 1. The sum is normalised by the summed weights, as torch's class-weighted
cross-entropy is, so w changes the balance between pixels, not the loss's scale.
Component sizes come from scipy.ndimage.label on the batch's labels (a few 96x96 crops: ~1 ms).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

_8_CONNECTED = np.ones((3, 3), bool)


def small_lesion_weights(target: np.ndarray, weight: float, small_area: float) -> np.ndarray:
    """Per-pixel weights (float32, the shape of ``target``: batch x H x W) of the WMH pixels (label 1)
    by the area of their 2D component; 1 elsewhere."""
    target = np.asarray(target)
    out = np.ones(target.shape, np.float32)
    if weight <= 0:
        return out
    for k in range(target.shape[0]):
        labels, count = ndimage.label(target[k] == 1, structure=_8_CONNECTED)
        if not count:
            continue
        area = np.bincount(labels.ravel(), minlength=count + 1).astype(np.float32)
        per_component = 1.0 + float(weight) * np.minimum(1.0, float(small_area) / np.maximum(area, 1.0))
        per_component[0] = 1.0
        out[k] = per_component[labels]
    return out


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor, pixel_weight=None, ignore_index: int = 255
):
    """Cross-entropy averaged with class weights and optional per-pixel weights (ignored pixels left out).

    Without ``pixel_weight`` it is ``F.cross_entropy(logits, target, weight=class_weight)``.
    """
    if pixel_weight is None:
        return F.cross_entropy(logits.float(), target, weight=class_weight, ignore_index=ignore_index)
    per_pixel = F.cross_entropy(logits.float(), target, reduction="none", ignore_index=ignore_index)
    keep = target != ignore_index
    weights = class_weight[torch.where(keep, target, 0)] * pixel_weight * keep
    return (per_pixel * weights).sum() / weights.sum().clamp_min(1e-12)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, eps: float = 1.0):
    """1 - soft Dice of the WMH class over the whole batch (pixels labelled ``ignore_index`` left out).

    ``eps`` keeps the loss defined (and ~0) on batches without any WMH that predict none.
    """
    prob = torch.softmax(logits.float(), 1)[:, 1]
    keep = (target != ignore_index).float()
    truth = (target == 1).float()
    inter = (prob * truth * keep).sum()
    total = (prob * keep).sum() + truth.sum()
    return 1.0 - (2.0 * inter + eps) / (total + eps)
