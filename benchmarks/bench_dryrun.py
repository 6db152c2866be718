"""How long `snakemake -n` takes to plan a large cohort (target: 1,000 subjects in <= 10 s).

Writes benchmarks/results/dryrun.csv. The cohort is a WMH-challenge tree of tiny but real NIfTI files:
planning reads only file names, so voxel content does not matter here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def fake_cohort(root: Path, subjects: int) -> None:
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
    sites = ["Utrecht", "Singapore", "Amsterdam/GE3T"]
    for i in range(subjects):
        subject_dir = root / sites[i % 3] / str(i)
        (subject_dir / "pre").mkdir(parents=True)
        for name in ("pre/FLAIR.nii.gz", "pre/T1.nii.gz", "wmh.nii.gz"):
            nib.save(img, str(subject_dir / name))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/dryrun.csv"))
    args = parser.parse_args()
    rows = []
    for n in args.subjects:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            fake_cohort(tmp / "cohort", n)
            cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "all", "-s", str(REPO / "Snakefile"),
                   "--directory", str(tmp), "--config", f"cohort={tmp / 'cohort'}", "results=results",
                   "model={name: fcn2d, checkpoint: " + str(tmp / "model.pt") + "}"]
            (tmp / "model.pt").write_bytes(b"")  # planning only: the file must exist, not be valid
            start = time.perf_counter()
            run = subprocess.run(cmd, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if run.returncode != 0:
                print(run.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append({"subjects": n, "seconds": round(seconds, 2), "target_seconds": 10})
            print(f"snakemake -n, {n} subjects: {seconds:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
