"""Score probability maps that ``bench_accuracy.py --save-probabilities`` kept, at several cuts, without
another FCN pass: one model's maps, or the mean of several models' maps (what an ensemble's inference
computes: ``model.checkpoint: [a.pt, b.pt]`` or ``train.overrides.members``).

Each test subject of the benchmark's cohort (``--work``, as ``bench_accuracy.py`` left it) is masked with
the same ``make_mask`` call as ``wmhflow infer`` (depth rule, components outside the registered template
brain removed) and scored with the organisers' metrics. A diagnosis of what a cut or an averaging does;
no choice is made on the test subjects.

Run: python benchmarks/sweep_probabilities.py --members PROBS_A PROBS_B --cuts 0.5 0.8 0.9 --out sweep.csv
(PROBS_*: folders given to ``--save-probabilities``, holding ``<tta>/<subject>.npy``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow"))

import nibabel as nib  # noqa: E402
import pandas as pd  # noqa: E402
from bench_accuracy import masked_metrics, prep_folder  # noqa: E402

from wmhflow.fcn.infer import excluded_region  # noqa: E402

METRICS = ["dice", "h95_mm", "avd_pct", "lesion_recall", "lesion_f1"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", required=True, help="probability folders; several: their mean")
    parser.add_argument("--cuts", nargs="+", type=float, default=[0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    parser.add_argument("--tta", default="flip", help="the subfolder of the maps: none or flip")
    parser.add_argument("--min-depth-mm", type=float, default=15.0)
    parser.add_argument("--restrict-to", default="brain", choices=("head", "brain", "supratentorial"))
    parser.add_argument("--window", default="tissue", choices=("tissue", "percentile"), help="as bench_accuracy's")
    parser.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "accuracy"))
    parser.add_argument("--out", required=True, help="CSV: one row per test subject and cut")
    args = parser.parse_args(argv)
    work = Path(args.work)
    cohort = pd.read_csv(work / "cohort.tsv", sep="\t", dtype={"subject": str})
    prep = prep_folder(work, args.window)
    rows = []
    for r in cohort[cohort.split == "test"].itertuples():
        volumes = {k: np.asarray(nib.load(prep / f"{r.subject}_{k}.nii.gz").dataobj) for k in ("flair", "t1", "tophat")}
        reference = nib.load(r.reference)
        labels = np.rint(np.asarray(reference.dataobj, np.float32)).astype(np.int16)
        region = excluded_region(args.restrict_to, volumes, reference.affine)[0]
        maps = [np.load(Path(m) / args.tta / f"{r.subject}.npy").astype(np.float32) for m in args.members]
        probability = np.mean(maps, axis=0)
        group = "seen sites" if r.group == "seen" else r.site
        for cut in args.cuts:
            metrics = masked_metrics(probability, volumes, reference, labels, cut, args.min_depth_mm, region)
            rows.append({"subject": r.subject, "group": group, "cut": cut, **metrics})
    table = pd.DataFrame(rows)
    table.insert(0, "members", " + ".join(Path(m).name for m in args.members))
    table.to_csv(args.out, index=False)
    summary = table.groupby(["group", "cut"])[METRICS].mean().round(3)
    summary["subjects"] = table.groupby(["group", "cut"]).size()
    print(summary.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
