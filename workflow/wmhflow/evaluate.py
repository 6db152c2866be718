"""``wmhflow evaluate``: score a segmentation against a reference, the WMH challenge's way."""

from __future__ import annotations

import json
import sys

import pandas as pd

from .io import atomic_output
from .metrics import KEYS, evaluate_files

ID_COLUMNS = ("subject", "site", "split", "model")


def add_arguments(parser) -> None:
    parser.add_argument("--reference", required=True, help="reference labels (0, 1 WMH, 2 other pathology)")
    parser.add_argument("--prediction", required=True, help="mask (> 0) or probability map (>= 0.5), same grid")
    for column in ID_COLUMNS:
        parser.add_argument(f"--{column}", help=f"{column} column of the output row")
    parser.add_argument("-o", "--output", help="write the TSV row here (default: standard output)")
    parser.add_argument("--json", action="store_true", help="JSON instead of TSV")


def main(args) -> int:
    scores = evaluate_files(args.reference, args.prediction)
    row = {c: getattr(args, c) for c in ID_COLUMNS if getattr(args, c) is not None}
    row.update(scores)
    if args.json:
        text = json.dumps({k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}, indent=2) + "\n"
    else:
        text = pd.DataFrame([row], columns=list(row)).to_csv(sep="\t", index=False, na_rep="NaN")
    if args.output:
        with atomic_output(args.output) as tmp:
            tmp.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
