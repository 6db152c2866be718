"""A head mask (not a brain mask): the region N4 and the 8-bit window are computed in.

Otsu's threshold on a lightly smoothed image separates head from air in FLAIR and T1 alike; a closing
bridges the dark skull, filling holes brings back the dark CSF and the largest component drops noise
specks and ghosts outside the head.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def head_mask_array(data: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_otsu  # here: a verb's --help and import stay free of it

    data = np.asarray(data, dtype=np.float32)
    if not np.any(data > data.min()):
        return np.zeros(data.shape, bool)
    smooth = ndimage.gaussian_filter(data, sigma=(1.0, 1.0, 0.5))
    # Otsu on the lower part of the histogram: bright lesions and scalp fat must not pull it up.
    values = smooth[smooth > np.percentile(smooth, 1)]
    threshold = threshold_otsu(np.clip(values, None, np.percentile(values, 99)))
    mask = smooth > threshold * 0.5
    # Close in plane. scipy erodes from outside the volume (border_value 0), which would eat the mask
    # wherever the head touches the field of view (common in-plane for 2D FLAIR): pad, close, crop.
    pad = 5
    padded = np.pad(mask, ((pad, pad), (pad, pad), (0, 0)))
    padded = ndimage.binary_closing(padded, structure=np.ones((5, 5, 1), bool), iterations=2)
    mask = padded[pad:-pad, pad:-pad, :]
    for k in range(mask.shape[2]):  # fill per slice: thick-slice volumes have few slices to close in 3D
        mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == np.argmax(sizes)
    return mask
