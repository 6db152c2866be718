"""Inference options measured on a trained model: test-time flips, the calibrated threshold, the
minimum lesion volume, the minimum depth in the head, and ensembles, with their cost.

Input: a finished workflow run (``--results``: the demo cohort by default, as ``make demo`` leaves
it) with its model; optionally more model files (``--ensemble-with``) trained on the same training
subjects with other seeds. Every option is scored with the challenge's metrics on the run's *test*
subjects, and post-processing settings are also scored on the *validation* subject(s) the training
held out (the first ``validation_subjects`` of the training list), where defaults are chosen: the test
subjects only report. A model file written before calibration existed is calibrated here exactly as
training does it (:func:`wmhflow.fcn.train.calibrate_model` on the validation subjects).

Timings (FCN seconds per subject, CPU) of one model without flips, with flips, and of the ensemble
are measured side by side in one run and reported as ratios too.

Rows of benchmarks/results/inference_options.csv: case, split, subjects, tta, models, threshold,
min_lesion_mm3, min_depth_mm, dice, h95_mm, avd_pct, lesion_recall, lesion_f1, note.
Run: OMP_NUM_THREADS=2 python benchmarks/bench_inference_options.py --results /path/to/run/results
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from results_csv import write_rows

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow"))

MIN_SIZES = (0, 3, 6, 10, 15, 25)
MIN_DEPTHS = (0, 5, 10, 15)


def main(argv=None) -> int:
    import pandas as pd
    import torch

    from wmhflow.evaluation.metrics import METRICS, evaluate_arrays
    from wmhflow.fcn import infer, train
    from wmhflow.fcn.inputs import load_volumes
    from wmhflow.fcn.model import load_model
    from wmhflow.io import load_nifti
    from wmhflow.paths import bids_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(REPO / "results"))
    parser.add_argument("--model", default="fcn2d")
    parser.add_argument("--ensemble-with", nargs="*", default=[], help="more model files for the ensemble rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-test-subjects", type=int, default=None, help="score only the first N test subjects")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/inference_options.csv"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = Path(args.results)
    subjects = pd.read_csv(results / "group/subjects.tsv", sep="\t", dtype=str, keep_default_na=False)
    model_path = results / "models" / args.model / "model.pt"
    model, meta = load_model(model_path)
    channels = meta.get("channels", "flair,t1,tophat")
    n_val = int(meta.get("train", {}).get("validation_subjects", 1))
    train_ids = subjects.loc[subjects["split"] == "train", "subject"].tolist()
    val_ids, test_ids = train_ids[:n_val], subjects.loc[subjects["split"] == "test", "subject"].tolist()
    test_ids = test_ids[: args.max_test_subjects]
    rows = []

    def files(subject):
        row = subjects.set_index("subject").loc[subject]
        return (
            str(bids_path(results, subject, "FLAIR", desc="quant")),
            str(bids_path(results, subject, "T1w", desc="quant")),
            str(bids_path(results, subject, "FLAIR", desc="tophat")),
            row["reference"],
        )

    cal = meta.get("calibration") or train.calibrate_model(model, [files(s) for s in val_ids], channels, "cpu")
    others = [load_model(p) for p in args.ensemble_with]
    for other, other_meta in others:
        if not other_meta.get("calibration"):
            other_meta["calibration"] = train.calibrate_model(other, [files(s) for s in val_ids], channels, "cpu")
    ensemble_threshold = {
        mode: float(np.mean([cal["thresholds"][mode]] + [m["calibration"]["thresholds"][mode] for _, m in others]))
        for mode in ("none", "flip")
    }

    def load(subject):
        flair, t1, tophat, reference = files(subject)
        volumes, flair_img = load_volumes(flair, t1, tophat, channels)
        ref = np.rint(np.asarray(load_nifti(reference, "reference").dataobj, np.float32)).astype(np.int16)
        return volumes, flair_img, ref

    configs = [("one model", [model], "none"), ("one model", [model], "flip")]
    if others:
        configs += [
            (f"ensemble of {1 + len(others)}", [model] + [m for m, _ in others], mode) for mode in ("none", "flip")
        ]
    probabilities, seconds = {}, {}
    for split, ids in (("validation", val_ids), ("test", test_ids)):
        for subject in ids:
            volumes, flair_img, ref = load(subject)
            axis = infer.left_right_axis(flair_img.affine)
            for name, models, mode in configs:
                started = time.perf_counter()
                prob = infer.predict_volume(
                    models, volumes, channels, "cpu", "fp32", 8, crop_margin=16, tta=mode, flip_axis=axis
                )
                if split == "test":
                    seconds.setdefault((name, mode), []).append(time.perf_counter() - started)
                probabilities[(split, subject, name, mode)] = (prob, volumes["flair"], flair_img, ref)

    def score(split, ids, name, mode, threshold, min_mm3, min_depth, case, note=""):
        values = []
        for subject in ids:
            prob, flair, img, ref = probabilities[(split, subject, name, mode)]
            mask, _ = infer.make_mask(prob, flair, img.header.get_zooms()[:3], threshold, min_mm3, min_depth)
            values.append(evaluate_arrays(ref, mask, img.affine))
        frame = pd.DataFrame(values)
        row = {
            "case": case,
            "split": split,
            "subjects": len(ids),
            "tta": mode,
            "models": name,
            "threshold": round(threshold, 3),
            "min_lesion_mm3": min_mm3,
            "min_depth_mm": min_depth,
        }
        row.update({k: round(float(frame[k].mean()), 4) for k in METRICS})
        row["note"] = note
        rows.append(row)
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        return row

    for name, _, mode in configs:
        calibrated = ensemble_threshold[mode] if name.startswith("ensemble") else cal["thresholds"][mode]
        for label, threshold in (("threshold 0.5", 0.5), ("calibrated threshold", calibrated)):
            for split, ids in (("validation", val_ids), ("test", test_ids)):
                score(split, ids, name, mode, threshold, 0, 0, f"{label}")
    # post-processing sweeps: one model, each tta, calibrated threshold; chosen on the validation subjects
    for mode in ("none", "flip"):
        for split, ids in (("validation", val_ids), ("test", test_ids)):
            for size in MIN_SIZES[1:]:
                score(split, ids, "one model", mode, cal["thresholds"][mode], size, 0, "min lesion volume")
            for depth in MIN_DEPTHS[1:]:
                score(split, ids, "one model", mode, cal["thresholds"][mode], 0, depth, "min depth in head")
    base = seconds[("one model", "none")]
    for (name, mode), values in seconds.items():
        rows.append(
            {
                "case": "cost",
                "split": "test",
                "subjects": len(values),
                "tta": mode,
                "models": name,
                "note": f"FCN {np.mean(values):.2f} s per subject (CPU, {args.threads} threads), "
                f"{np.mean(values) / np.mean(base):.2f}x one model without flips",
            }
        )
        print(rows[-1], flush=True)
    rows.append(
        {
            "case": "calibration",
            "split": "validation",
            "subjects": len(val_ids),
            "note": f"thresholds {cal['thresholds']} ({cal['criterion']})",
        }
    )
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
