"""Atomic output files, in a module of its own: jobs that only move files (``wmhflow place-segmentation``)
write atomically without importing numpy and nibabel (``wmhflow.io`` re-exports it)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.png``) so writers that infer the
    format from the name work; on any exception the temporary file is removed and nothing appears.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    # mkstemp creates the file 0600; the output must get what the user's umask gives any new file
    # (e.g. 0644 under umask 022), or nobody else in the lab can read the results.
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask: from /proc on Linux (read-only, thread-safe), else set and restore it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
