"""Training time of the ``standard`` preset against ``demo``, side by side in one run (issue 9's budget).

The budget is "at most 30 minutes on 2 CPU cores of a machine without AVX-512". A bare time measured
on this shared machine says little, so both presets train the same few iterations on the accuracy
benchmark's training subjects, alternating (demo, standard, demo, standard, ...) so that both see the
same load, and the result is the ratio of their seconds per iteration (from the training log's
slices per second, warm-up interval dropped). The standard preset's full-length time is then the
ratio x its iterations / the demo's iterations x the demo's measured full-length training time on a
quiet machine (given with ``--demo-quiet-seconds``, from README).

Needs the benchmark's cache (``bench_accuracy.py`` run once; ``--work``). Writes
benchmarks/results/train_time.csv (one row per repetition and preset) and train_time.json.

Run: python benchmarks/bench_train_time.py --iterations 60 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_accuracy  # noqa: E402
import pandas as pd  # noqa: E402


def timed_training(preset, rows, iterations, threads, log_every) -> dict:
    from wmhflow.fcn.presets import PRESETS
    from wmhflow.fcn.train import train

    overrides = {
        "iterations": iterations,
        "log_every": log_every,
        "validation_subjects": 0,
        "checkpoint_every": iterations,
        "validate_every": iterations,
    }
    # keep the preset's phase proportions but fit them into the short run
    overrides["phases"] = [dict(PRESETS[preset]["phases"][0], iterations=iterations)]
    out = Path(tempfile.mkdtemp(prefix=f"train-time-{preset}-"))
    cpu = os.times()
    tic = time.perf_counter()
    try:
        log_rows = train(
            [r["flair"] for r in rows],
            [r["t1"] for r in rows],
            [r["tophat"] for r in rows],
            [r["reference"] for r in rows],
            out,
            {"name": "fcn2d", "channels": "flair,t1,tophat"},
            {"preset": preset, "overrides": overrides},
            "cpu",
            threads,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    wall = time.perf_counter() - tic
    after = os.times()
    batch = PRESETS[preset]["batch_size"]
    speeds = [row[3] for row in log_rows[1:]]  # slices per second; the first interval holds the warm-up
    return {
        "preset": preset,
        "iterations": iterations,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(after.user - cpu.user + after.system - cpu.system, 1),
        "seconds_per_iteration": round(batch / float(np.mean(speeds)), 3),
        "load_average": round(os.getloadavg()[0], 2),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "accuracy"))
    parser.add_argument("--results", default=str(bench_accuracy.RESULTS))
    parser.add_argument(
        "--demo-quiet-seconds",
        type=float,
        default=424.0,
        help="the demo preset's full-length training time on a quiet machine (README: 7 min 04 s)",
    )
    args = parser.parse_args(argv)
    from wmhflow.fcn.presets import PRESETS

    work = Path(args.work)
    cohort = pd.read_csv(work / "cohort.tsv", sep="\t", dtype=str)
    rows = [
        {**r._asdict(), **bench_accuracy.preprocess(r, work, "tissue")}
        for r in cohort.itertuples()
        if r.split == "train"
    ]
    measured = []
    for repeat in range(args.repeats):
        for preset in ("demo", "standard"):
            result = timed_training(preset, rows, args.iterations, args.threads, args.log_every)
            measured.append(
                {"repeat": repeat, **result, "cpu": bench_accuracy._cpu_name(), "avx512": bench_accuracy._has_avx512()}
            )
            print(measured[-1], flush=True)
    frame = pd.DataFrame(measured)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    frame.to_csv(results / "train_time.csv", index=False)
    per_iteration = frame.groupby("preset")["seconds_per_iteration"].median()
    ratio = float(per_iteration["standard"] / per_iteration["demo"])
    estimate = ratio * PRESETS["standard"]["iterations"] / PRESETS["demo"]["iterations"] * args.demo_quiet_seconds
    summary = {
        "standard_over_demo_per_iteration": round(ratio, 3),
        "standard_quiet_estimate_seconds": round(estimate, 0),
        "standard_quiet_estimate_3x_slower_machine_seconds": round(3 * estimate, 0),
        "demo_quiet_seconds": args.demo_quiet_seconds,
        "iterations": args.iterations,
        "repeats": args.repeats,
    }
    (results / "train_time.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
