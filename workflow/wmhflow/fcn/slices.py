"""The 2D colour images the FCN sees (paper §2.3) and the way back to 3D.

A slice is the third voxel axis. Channel sets: ``flair,t1,tophat`` (the paper), ``flair,t1,t1`` (its
"2D without top-hat") and ``flair-3slice`` (FLAIR slices k-1, k, k+1: its "3D-like" input).
"""

from __future__ import annotations

import numpy as np

CHANNEL_SETS = ("flair,t1,tophat", "flair,t1,t1", "flair-3slice")


def required_volumes(channels: str) -> set[str]:
    if channels not in CHANNEL_SETS:
        raise ValueError(f"channels {channels!r} is not one of {', '.join(CHANNEL_SETS)}")
    return {"flair-3slice": {"flair"}, "flair,t1,t1": {"flair", "t1"}}.get(channels, {"flair", "t1", "tophat"})


def colour_slices(volumes: dict, channels: str) -> np.ndarray:
    """uint8 (Z, 3, X, Y): one colour image per slice of the (X, Y, Z) uint8 volumes."""
    required_volumes(channels)
    flair = np.asarray(volumes["flair"], np.uint8)
    if channels == "flair-3slice":
        padded = np.concatenate([flair[:, :, :1], flair, flair[:, :, -1:]], axis=2)
        stack = [padded[:, :, :-2], padded[:, :, 1:-1], padded[:, :, 2:]]
    else:
        third = volumes["tophat"] if channels == "flair,t1,tophat" else volumes["t1"]
        stack = [flair, np.asarray(volumes["t1"], np.uint8), np.asarray(third, np.uint8)]
    return np.ascontiguousarray(np.stack(stack, 0).transpose(3, 0, 1, 2))


#: 8-bit value 0..255 -> (value - 127) / INPUT_STD. The paper centres by -127 for Caffe's VGG16, whose
#: ImageNet weights expect 0..255 inputs; torchvision's VGG16 weights expect inputs divided by the
#: ImageNet standard deviation (about 0.226 x 255 = 58), and so does a He-initialised network.
INPUT_STD = 58.0


def to_input(batch):
    """Centre 8-bit colour images by -127 (the paper) and scale them as torchvision's VGG16 expects."""
    import torch  # here, so that planning (wmhflow.plan asks required_volumes) does not import torch

    tensor = torch.as_tensor(batch)
    return (tensor.to(torch.float32) - 127.0) / INPUT_STD
