"""Fixed cost per subject of segmentation: one segment job per subject against chunks of subjects.

Writes benchmarks/results/chunked.csv (issue 13, item 3). One run, one machine, side by side: a small
synthetic cohort is preprocessed once, then every subject is segmented with an existing model through
the workflow twice, as two model variants (same model file, so the same masks): ``segment.subjects_per_job``
1 (one ``wmhflow infer`` job per subject) and N (one ``wmhflow infer-batch`` job per N subjects, plus a
local placing job per subject). For each: the wall time of the snakemake call minus that of the same
call with nothing left to do (planning, start and end are paid once per call, not per subject), per
subject; the FCN's own seconds per subject (``FCNSeconds`` of the masks' sidecars); their difference,
the fixed cost per subject (process start, imports, model load, reading and writing, scheduling).

On 2 CPU cores the FCN of a small subject takes about a second, so the fixed cost shows as it would on
a GPU, where the FCN of a real volume takes about as long. GPU-seconds per subject need a GPU machine.

    nice -n 10 python benchmarks/bench_chunked.py --subjects 8 --per-job 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_csv import write_rows  # noqa: E402


def env_with_venv() -> dict:
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))


def snakemake(workdir: Path, configfile: Path, *targets) -> float:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *targets,
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(configfile),
    ]
    started = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env_with_venv())
    if run.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{run.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--per-job", type=int, default=8, help="subjects_per_job of the chunked variant")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/chunked.csv"))
    args = parser.parse_args()

    import pandas as pd
    import torch

    from wmhflow.fcn.model import build_model, save_model
    from wmhflow.synth import write_cohort

    with tempfile.TemporaryDirectory(prefix="bench_chunked_") as tmp:
        root = Path(tmp)
        table = write_cohort(root / "cohort", subjects=args.subjects, seed=args.seed, small=True)
        torch.manual_seed(0)
        model = save_model(
            root / "model.pt",
            build_model(side_maps=16),
            {"requantize": "tissue", "name": "bench", "channels": "flair,t1,tophat"},
        )
        base = {"cohort": str(root / "cohort"), "results": "out", "splits": {"train_per_site": 0.01}}
        variants = {"single": 1, "chunked": args.per_job}
        configs = {}
        for name, per_job in variants.items():
            configs[name] = root / f"{name}.json"
            configs[name].write_text(
                json.dumps(
                    dict(base, model={"name": name, "checkpoint": str(model)}, segment={"subjects_per_job": per_job})
                )
            )
        preprocess_s = snakemake(root, configs["single"], "preprocess")
        rows = []
        for name, per_job in variants.items():
            # only the masks: evaluation, lesion tables and QC are the same jobs in both variants
            targets = [
                f"out/sub-{s}/anat/sub-{s}_space-FLAIR_label-WMH_desc-{name}_mask.nii.gz" for s in table["subject"]
            ]
            wall = snakemake(root, configs[name], *targets)
            noop = snakemake(root, configs[name], *targets)
            masks = sorted((root / "out").glob(f"sub-*/anat/*_label-WMH_desc-{name}_mask.json"))
            fcn = [json.loads(m.read_text())["FCNSeconds"] for m in masks]
            n = len(masks)
            # the infer (or infer_batch) jobs' own wall time, from their benchmark: files; the rest of
            # the call is Snakemake's scheduling and, chunked, the local placing jobs
            job_files = list((root / "out/benchmarks").glob(f"infer*/{name}/**/*.tsv"))
            jobs_s = sum(float(pd.read_csv(f, sep="\t")["s"].iloc[0]) for f in job_files)
            rows.append(
                {
                    "variant": name,
                    "subjects_per_job": per_job,
                    "subjects": n,
                    "wall_s": round(wall, 2),
                    "call_overhead_s": round(noop, 2),
                    "wall_per_subject_s": round((wall - noop) / n, 2),
                    "fcn_per_subject_s": round(sum(fcn) / n, 2),
                    "fixed_per_subject_s": round((wall - noop - sum(fcn)) / n, 2),
                    "gpu_rule_jobs": len(job_files),
                    "gpu_rule_s_per_subject": round(jobs_s / n, 2),
                    "rest_per_subject_s": round((wall - noop - jobs_s) / n, 2),
                }
            )
        one = rows[0]["fixed_per_subject_s"]
        for row in rows:
            row["fixed_vs_one_per_job"] = round(row["fixed_per_subject_s"] / one, 3) if one else None
            row["preprocess_s"] = round(preprocess_s, 1)
            row["cpu_cores"] = os.cpu_count()
    for row in rows:
        print(row)
    write_rows(rows, args.out)


if __name__ == "__main__":
    main()
