"""``wmhflow evaluate``: score a segmentation against a reference, the WMH challenge's way.

Output: one TSV row with a header (or, with ``--json``, one JSON object): the identifying columns
given (``subject``, ``site``, ``split``, ``model``), then the five challenge metrics ``dice``,
``h95_mm``, ``avd_pct``, ``lesion_recall``, ``lesion_f1``, then ``lesion_precision``, the voxel
counts ``tp_voxels``, ``fp_voxels``, ``fn_voxels``, the volumes ``reference_ml``, ``predicted_ml``,
the lesion counts ``reference_lesions``, ``predicted_lesions`` and ``remarks`` (why an edge case
got the value it got; empty otherwise). Definitions and edge cases: :mod:`wmhflow.evaluation.metrics`.

A prediction that is not on the reference's voxel grid (shape and affine), an unreadable file or
an unknown reference label is one line on stderr and exit code 2; nothing is written then.
"""

from __future__ import annotations

import json
import logging
import math
import sys

import pandas as pd

from ..io import atomic_output
from .metrics import evaluate_files

ID_COLUMNS = ("subject", "session", "site", "split", "model")
log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--reference", required=True, help="reference labels (0, 1 WMH, 2 other pathology)")
    parser.add_argument("--prediction", required=True, help="mask (> 0) or probability map (>= 0.5), same grid")
    for column in ID_COLUMNS:
        parser.add_argument(f"--{column}", help=f"{column} column of the output row")
    parser.add_argument("-o", "--output", help="write the TSV row here (default: standard output)")
    parser.add_argument("--json", action="store_true", help="JSON instead of TSV")


def _json_value(value):
    """JSON has no NaN/Infinity: such a value (none is produced today) becomes null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def format_row(row: dict, as_json: bool = False) -> str:
    if as_json:
        return json.dumps({k: _json_value(v) for k, v in row.items()}, indent=2) + "\n"
    return pd.DataFrame([row], columns=list(row)).to_csv(sep="\t", index=False, na_rep="NaN")


def main(args) -> int:
    scores = evaluate_files(args.reference, args.prediction)
    row = {c: getattr(args, c) for c in ID_COLUMNS if getattr(args, c) is not None}
    row.update(scores)
    log.info(
        "Dice %.4f, H95 %.2f mm, AVD %.2f %%, lesion recall %.3f, lesion F1 %.3f%s",
        scores["dice"],
        scores["h95_mm"],
        scores["avd_pct"],
        scores["lesion_recall"],
        scores["lesion_f1"],
        f" ({scores['remarks']})" if scores["remarks"] else "",
    )
    text = format_row(row, args.json)
    if args.output:
        with atomic_output(args.output) as tmp:
            tmp.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
