"""Subjects per second of a segment chunk when the FCN is fast (as on a GPU): one writer against several.

Writes benchmarks/results/chunk_writers.csv (issue 13, item 3). In a chunk (``wmhflow infer-batch``)
the FCN runs in the main thread while writer threads post-process and write the previous subjects:
the template registration of ``segment.restrict_to: brain``, the depth rule, gzip. On a GPU the FCN of
a subject takes a fraction of a second and that CPU part seconds, so with one writer the GPU waits;
``write_threads`` gives a GPU job every CPU but one as writers. There is no GPU here: the FCN pass is
replaced by the probability maps a trained model gave these subjects (``bench_accuracy.py
--save-probabilities``), i.e. an infinitely fast GPU, so what is measured is the rest of the chunk
(reading, post-processing with the real maps, registration, writing). Both variants run alternately on
the same subjects (the accuracy benchmark's test subjects: realistic volumes) in one process,
``--repeats`` times; the CSV has each run's seconds per subject and their ratio.

    python benchmarks/bench_chunk_writers.py --probabilities PROBS/flip --writers 1 2 --repeats 2
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "benchmarks"))

import pandas as pd  # noqa: E402
from bench_accuracy import prep_folder  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probabilities", required=True, help="folder of <subject>.npy maps (--save-probabilities)")
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2], help="in rising order")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--restrict-to", default="brain", choices=("head", "brain"))
    parser.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "accuracy"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "chunk_writers.csv"))
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    import wmhflow.fcn.infer as infer
    from wmhflow.fcn.device import set_threads
    from wmhflow.fcn.infer_batch import Subject, run_chunk
    from wmhflow.fcn.model import build_model, save_model

    set_threads(1)
    prep = prep_folder(Path(args.work), "tissue")
    maps = Path(args.probabilities)
    cohort = pd.read_csv(Path(args.work) / "cohort.tsv", sep="\t", dtype={"subject": str})
    keys = [k for k in cohort.subject if (maps / f"{k}.npy").is_file()][: args.subjects]

    if len(keys) < args.subjects:
        raise SystemExit(f"{maps}: maps of {len(keys)} subjects, {args.subjects} asked for")
    # every subject succeeds, and a chunk runs their FCN passes in their order, one after another
    in_chunk_order = itertools.cycle(keys)

    def infinitely_fast_gpu(models, metas, volumes, flair_img, settings):
        subject = next(in_chunk_order)
        flip_axis = infer.left_right_axis(flair_img.affine)
        return {"prob": np.load(maps / f"{subject}.npy").astype(np.float32), "seconds": 0.0, "flip_axis": flip_axis}

    infer.predict_subject = infinitely_fast_gpu  # the chunk imports it from there when it runs
    settings = {
        "device": "cpu",
        "precision": "fp32",
        "batch_size": 8,
        "crop_margin": 16,
        "tta": "none",
        "threshold": "0.5",
        "min_lesion_mm3": 0.0,
        "min_depth_mm": 15.0,
        "restrict_to": args.restrict_to,
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = save_model(
            tmp / "tiny.pt", build_model(side_maps=4), {"requantize": "tissue", "channels": "flair,t1,tophat"}
        )
        for repeat in range(args.repeats):
            for writers in args.writers:
                out = tmp / f"run-{repeat}-{writers}"
                subjects = [
                    Subject(
                        f"sub-{k}",
                        str(prep / f"{k}_flair.nii.gz"),
                        str(prep / f"{k}_t1.nii.gz"),
                        str(prep / f"{k}_tophat.nii.gz"),
                        str(out / f"sub-{k}_probseg.nii.gz"),
                        str(out / f"sub-{k}_mask.nii.gz"),
                    )
                    for k in keys
                ]
                started, cpu = time.perf_counter(), time.process_time()
                result = run_chunk(subjects, [str(model)], settings, out / "staged", out / "status.tsv", writers)
                wall = time.perf_counter() - started
                assert all(r["status"] == "done" for r in result), result
                rows.append(
                    {
                        "repeat": repeat,
                        "writers": writers,
                        "subjects": len(subjects),
                        "restrict_to": args.restrict_to,
                        "seconds_per_subject": round(wall / len(subjects), 3),
                        "cpu_seconds_per_subject": round((time.process_time() - cpu) / len(subjects), 3),
                        "cpus": os.cpu_count(),
                        "load_average": round(os.getloadavg()[0], 2),
                        # the process's peak so far: the first repeat's rows (writers in rising order)
                        # show what each writer adds
                        "peak_rss_mb_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                    }
                )
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    one = table[table.writers == min(args.writers)].set_index("repeat").seconds_per_subject
    table["speedup_vs_fewest_writers"] = [round(one[r.repeat] / r.seconds_per_subject, 3) for r in table.itertuples()]
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
