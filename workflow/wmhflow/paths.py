"""BIDS-derivatives style output names, built in one place (rules, CLI and tests all use it)."""

from __future__ import annotations

from pathlib import Path


def bids_name(subject: str, suffix: str, ext: str = ".nii.gz", **entities) -> str:
    """``sub-<subject>[_<key>-<value>...]_<suffix><ext>``; entities with value None are left out.

    Entities keep the order given, e.g. ``bids_name("01", "mask", desc="fcn2d", label="WMH")``
    gives ``sub-01_desc-fcn2d_label-WMH_mask.nii.gz``.
    """
    parts = [f"sub-{subject}"] + [f"{k}-{v}" for k, v in entities.items() if v is not None]
    return "_".join(parts + [suffix]) + ext


def bids_path(root, subject: str, suffix: str, ext: str = ".nii.gz", datatype: str = "anat", **entities) -> Path:
    """``<root>/sub-<subject>/<datatype>/`` + :func:`bids_name`."""
    return Path(root) / f"sub-{subject}" / datatype / bids_name(subject, suffix, ext, **entities)
