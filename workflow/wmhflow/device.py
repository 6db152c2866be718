"""Where and how the network runs: CUDA when present, bf16 autocast where it is safe, thread count."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked), else CPU; asking for CUDA without one is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", "CUDA was asked for but no CUDA device is available")
    return torch.device(requested)


def autocast_dtype(device: torch.device, precision: str = "auto"):
    """The autocast dtype: bf16 on CUDA with bf16 support ('auto'), bf16 when asked, else None (fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
