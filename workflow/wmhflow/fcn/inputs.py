"""The 8-bit network inputs of one subject, read and checked once for training, calibration and inference.

A volume that is not uint8 is refused rather than cast (a cast would silently wrap raw scanner values
around); every volume must share the FLAIR's grid; a channel set that needs a T1 or a top-hat says so.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..io import load_nifti, require_same_grid
from .slices import required_volumes


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
            raise InputError(
                {"flair": flair, "t1": t1, "tophat": tophat}[key],
                f"expected the 8-bit requantized volume, found {data.dtype}",
            )
    return volumes, flair_img
