"""Per-subject results of a chunk job (``wmhflow infer-batch``): staged, fingerprinted, then placed.

A chunk job segments several subjects, but Snakemake deletes every declared output of a failed job.
So a chunk job declares one file only, its status table (one row per subject: done, cached or failed,
and why), and never fails for one subject; each subject's files go to a staging folder of their own,
with a fingerprint (the inputs' sizes and modification times, the model files', the settings) written
last. ``wmhflow place-segmentation`` (the first step of each subject's finish_subject job) then puts a subject's staged
files at their BIDS paths, or fails with one line naming the subject and why it was not segmented.

The staging folder is the chunk jobs' cache: a chunk job skips a subject whose staged files carry the
fingerprint it would write now, so running a chunk again (a fixed input, subjects added to it, a job
killed at its time limit) segments only the subjects that need it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import shutil
from pathlib import Path

from .errors import InputError, WmhflowError
from .paths import prefix_label, sidecar_path

log = logging.getLogger(__name__)
STATUS_COLUMNS = ["subject", "status", "error", "seconds"]
FINGERPRINT = "fingerprint.json"


class SubjectNotSegmented(WmhflowError):
    """A subject of a chunk has no segmentation to place (its chunk job recorded why)."""


def staged_dir(staging, subject) -> Path:
    """One subject's staging folder (``subject``: its key, e.g. sub-01/anat/sub-01)."""
    return Path(staging) / subject


def staged_path(staging, subject, final) -> Path:
    """Where a chunk job writes the file that is placed at ``final``."""
    return staged_dir(staging, subject) / Path(final).name


def staged_files(staging, subject, probseg, mask) -> dict[Path, Path]:
    """staged -> final path of each file a subject's segmentation consists of, images after their
    sidecars (an image never exists without its sidecar)."""
    finals = [sidecar_path(probseg), Path(probseg), sidecar_path(mask), Path(mask)]
    return {staged_path(staging, subject, f): Path(f) for f in finals}


def _stat(path) -> list:
    info = os.stat(path)
    return [str(path), info.st_size, info.st_mtime_ns]


def fingerprint(inputs, model_paths, settings: dict, named_as) -> dict:
    """What a staged segmentation was made from; equal fingerprints give identical files."""
    record = {
        "inputs": [_stat(p) for p in inputs if p],
        "models": [_stat(p) for p in model_paths],
        "settings": settings,
        "named_as": [str(p) for p in named_as],
    }
    return json.loads(json.dumps(record, default=str))  # the form it has once read back from disk


def is_cached(staging, subject, probseg, mask, current: dict) -> bool:
    """True when the subject's staged files are complete and were made from exactly ``current``."""
    stamp = staged_dir(staging, subject) / FINGERPRINT
    if not stamp.is_file() or not all(p.is_file() for p in staged_files(staging, subject, probseg, mask)):
        return False
    try:
        return json.loads(stamp.read_text()) == current
    except (OSError, json.JSONDecodeError):
        return False


def forget(staging, subject) -> None:
    """Invalidate a subject's staged files before they are rewritten (a crash leaves no valid stamp)."""
    with contextlib.suppress(FileNotFoundError):
        (staged_dir(staging, subject) / FINGERPRINT).unlink()


def stamp(staging, subject, current: dict) -> None:
    from .atomic import atomic_output

    with atomic_output(staged_dir(staging, subject) / FINGERPRINT) as tmp:
        tmp.write_text(json.dumps(current, indent=1) + "\n")


def write_status(path, rows: list[dict]) -> None:
    """The chunk's status table (the csv module, not pandas: the placing jobs start fast)."""
    from .atomic import atomic_output

    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, STATUS_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: " ".join(str(row.get(key, "")).split()) for key in STATUS_COLUMNS} for row in rows)


def read_status(path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            rows = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"chunk status table is not readable ({exc})") from None
    missing = [c for c in STATUS_COLUMNS if c not in columns]
    if missing:
        raise InputError(path, f"chunk status table lacks column(s) {', '.join(missing)}")
    return rows


def _place(staged: Path, final: Path) -> None:
    """Put a staged file at ``final`` atomically: a hard link (no copy, and the staged file stays the
    cache), or a copy where the file system has no hard links or staging is on another one."""
    from .atomic import atomic_output

    with atomic_output(final) as tmp:
        os.unlink(tmp)
        try:
            os.link(staged, tmp)
        except OSError:
            shutil.copyfile(staged, tmp)


def place(status_table, subject, staging, probseg, mask) -> None:
    """Put one subject's staged segmentation at its final paths, or raise naming the subject and why."""
    label = prefix_label(subject)
    rows = [r for r in read_status(status_table) if r["subject"] == str(subject)]
    if not rows:
        raise SubjectNotSegmented(
            f"{label}: not in its chunk's status table {status_table}; run again "
            f"(if it persists: snakemake --forcerun {status_table})"
        )
    row = rows[-1]
    if row["status"] == "failed":
        raise SubjectNotSegmented(f"{label}: segmentation failed ({status_table}): {row['error']}")
    files = staged_files(staging, subject, probseg, mask)
    absent = [str(p) for p in files if not p.is_file()]
    if absent:
        raise SubjectNotSegmented(
            f"{label}: staged file {absent[0]} is missing although {status_table} says "
            f"{row['status']}; run again with --forcerun {status_table}"
        )
    for staged, final in files.items():
        _place(staged, final)
    log.info("%s: placed %d files from %s", label, len(files), staged_dir(staging, subject))


# ------------------------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("--status", required=True, help="the chunk job's status table (TSV)")
    parser.add_argument("--subject", required=True, help="the subject's key, e.g. sub-01/anat/sub-01")
    parser.add_argument("--staging", required=True, help="the chunk jobs' staging folder")
    parser.add_argument("--probseg", required=True, help="where the WMH probability goes")
    parser.add_argument("--mask", required=True, help="where the WMH mask goes (its JSON sidecar beside it)")


def main(args) -> int:
    place(args.status, args.subject, args.staging, args.probseg, args.mask)
    return 0
