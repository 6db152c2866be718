"""Where and how the network runs: CUDA when present, bf16 autocast where it is safe, thread count."""

from __future__ import annotations

import os

import torch

from ..errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked), else CPU; asking for CUDA without one is an error."""
    requested = str(requested or "auto").strip().lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise ConfigError("device", f"{requested!r} is not auto, cpu, cuda or cuda:<index>") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError("device", f"{requested!r} is not auto, cpu, cuda or cuda:<index>")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device", "CUDA was asked for but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                "device", f"{requested} asked for, but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    return device


def autocast_dtype(device: torch.device, precision: str = "auto"):
    """The autocast dtype: bf16 on CUDA with bf16 support ('auto'), bf16 when asked, else None (fp32).

    On the CPU 'auto' means fp32: bf16 is faster there only on CPUs with bf16 instructions, and it
    moves a few boundary voxels, so it is used only when asked for.
    """
    if precision not in PRECISIONS:
        raise ConfigError("precision", f"{precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def prepare(device: torch.device) -> None:
    """Backend settings for fixed-size batches: let cuDNN pick its fastest convolution algorithms."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
