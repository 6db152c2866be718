"""The training data: each subject's colour slices and labels, the random crops drawn from them, and
their random scaling, rotation and flips (paper §2.3's augmentation).

Label 2 ("other pathology") becomes :data:`IGNORE`: the loss skips it, as the challenge skips it in
scoring. The intensity augmentations for scanner differences are :mod:`wmhflow.fcn.augment`'s.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..io import label_array, load_nifti, require_same_grid
from .inputs import load_volumes
from .slices import colour_slices, to_input

#: label of the pixels the loss ignores (label 2, and nothing else)
IGNORE = 255


def load_training_subject(flair, t1, tophat, reference, channels):
    """Colour slices (Z, 3, X, Y) uint8 and labels (Z, X, Y) uint8 (255 = ignored) of one subject."""
    volumes, flair_img = load_volumes(flair, t1, tophat, channels)
    ref_img = load_nifti(reference, "reference")
    require_same_grid(ref_img, reference, flair_img, flair, "reference")
    labels = label_array(ref_img, reference)  # never rounds a fuzzy reference into labels
    labels = np.where(labels == 2, IGNORE, labels).astype(np.uint8)
    images = colour_slices(volumes, channels)
    labels = np.ascontiguousarray(labels.transpose(2, 0, 1))
    has_head = volumes["flair"].reshape(-1, volumes["flair"].shape[2]).max(0) > 0
    return images[has_head], labels[has_head]


class SliceSampler:
    """Random training crops, centred on a lesion for a fraction of them.

    ``lesion_sampling``: 'pixel' picks a lesion pixel uniformly (large lesions dominate); 'component'
    picks a 2D lesion component uniformly, then a pixel in it, so small lesions are seen as often as
    large ones. ``slice_mix`` (a probability) blends a crop with the same crop of its neighbouring
    slices of the same subject (weight up to 1/2): the partial volume of thicker slices.
    ``subject_of`` (one subject index per slice) keeps that blend within a subject.
    """

    def __init__(
        self, images, labels, crop, lesion_fraction, rng, lesion_sampling="pixel", slice_mix=0.0, subject_of=None
    ):
        self.images, self.labels = images, labels
        self.crop, self.lesion_fraction, self.rng = crop, lesion_fraction, rng
        self.lesion_pixels = np.argwhere(labels == 1)  # (slice, x, y)
        self.slice_mix = float(slice_mix)
        self.subject_of = np.zeros(len(images), int) if subject_of is None else np.asarray(subject_of)
        self.components = None
        if lesion_sampling == "component" and len(self.lesion_pixels):
            from scipy import ndimage

            in_plane = np.zeros((3, 3, 3), bool)
            in_plane[1] = True  # 8-connected within a slice, never across slices
            ids, _ = ndimage.label(labels == 1, in_plane)
            pixel_ids = ids[tuple(self.lesion_pixels.T)]
            order = np.argsort(pixel_ids, kind="stable")
            self.lesion_pixels = self.lesion_pixels[order]
            _, starts, counts = np.unique(pixel_ids[order], return_index=True, return_counts=True)
            self.components = (starts, counts)

    def _lesion_pixel(self):
        if self.components is None:
            return self.lesion_pixels[self.rng.integers(len(self.lesion_pixels))]
        starts, counts = self.components
        c = self.rng.integers(len(starts))
        return self.lesion_pixels[starts[c] + self.rng.integers(counts[c])]

    def _mixed(self, k, xs, ys):
        image = self.images[k, :, xs, ys]
        if self.slice_mix <= 0 or self.rng.random() >= self.slice_mix:
            return image
        weight = self.rng.uniform(0.0, 0.5)
        neighbours = [
            j if 0 <= j < len(self.images) and self.subject_of[j] == self.subject_of[k] else k for j in (k - 1, k + 1)
        ]
        blend = (1 - weight) * image.astype(np.float32)
        for j in neighbours:
            blend += weight / 2 * self.images[j, :, xs, ys].astype(np.float32)
        return np.clip(np.rint(blend), 0, 255).astype(np.uint8)

    def batch(self, size):
        n, _, height, width = self.images.shape
        crop_h = min(self.crop or height, height)
        crop_w = min(self.crop or width, width)
        xs, ys = [], []
        for _ in range(size):
            if len(self.lesion_pixels) and self.rng.random() < self.lesion_fraction:
                k, cx, cy = self._lesion_pixel()
                x0 = int(
                    np.clip(cx - crop_h // 2 + self.rng.integers(-crop_h // 4, crop_h // 4 + 1), 0, height - crop_h)
                )
                y0 = int(
                    np.clip(cy - crop_w // 2 + self.rng.integers(-crop_w // 4, crop_w // 4 + 1), 0, width - crop_w)
                )
            else:
                k = self.rng.integers(n)
                x0 = int(self.rng.integers(0, height - crop_h + 1))
                y0 = int(self.rng.integers(0, width - crop_w + 1))
            xs.append(self._mixed(k, slice(x0, x0 + crop_h), slice(y0, y0 + crop_w)))
            ys.append(self.labels[k, x0 : x0 + crop_h, y0 : y0 + crop_w])
        return np.stack(xs), np.stack(ys)


def stack_subjects(subjects):
    """One array of slices for subjects of different grids: pad every slice to the largest size."""
    height = max(s[0].shape[2] for s in subjects)
    width = max(s[0].shape[3] for s in subjects)
    images, labels = [], []
    for img, lab in subjects:
        ph, pw = height - img.shape[2], width - img.shape[3]
        images.append(np.pad(img, ((0, 0), (0, 0), (0, ph), (0, pw))))
        labels.append(np.pad(lab, ((0, 0), (0, ph), (0, pw))))  # padding is background, like air
    return np.concatenate(images), np.concatenate(labels)


def random_affine(x: torch.Tensor, y: torch.Tensor, rng, scale_range, rotation_degrees, flip=False):
    """Random scaling and rotation per sample: bilinear for images, nearest for labels.

    ``flip``: also mirror half of the samples along the slice's first axis (left-right in the
    usual RAS-like grids), the brain being roughly symmetric.
    """
    n = x.shape[0]
    if flip:
        mirror = torch.from_numpy(rng.random(n) < 0.5)
        x = torch.where(mirror[:, None, None, None], x.flip(2), x)
        y = torch.where(mirror[:, None, None], y.flip(1), y)
    angles = np.deg2rad(rng.uniform(-rotation_degrees, rotation_degrees, n))
    scales = rng.uniform(scale_range[0], scale_range[1], n)
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0] = np.cos(angles) / scales
    theta[:, 0, 1] = -np.sin(angles) / scales
    theta[:, 1, 0] = np.sin(angles) / scales
    theta[:, 1, 1] = np.cos(angles) / scales
    grid = F.affine_grid(torch.from_numpy(theta), list(x.shape), align_corners=False)
    # Outside the slice is air, 0 in 8-bit units: shift so that air is 0 while resampling.
    air = float(to_input(np.zeros(1, np.uint8))[0])
    x = F.grid_sample(x - air, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + air
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return x, y[:, 0].long()
