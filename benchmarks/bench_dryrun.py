"""How long `snakemake -n` takes to plan a large cohort (target: 1,000 subjects in <= 10 s).

Writes benchmarks/results/dryrun.csv. The cohort is a WMH-challenge tree or a BIDS dataset (two
sessions per subject) of tiny but real NIfTI files: planning reads only file names, so voxel content
does not matter here. For a BIDS cohort it also times BIDS discovery alone with wmhflow's glob
(``cohort.discover``) and, when installed, with pybids (``BIDSLayout`` + ``get``) and bids2table:
the measurement behind the choice documented in ``cohort._bids``.
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


def fake_bids(root: Path, subjects: int, sessions: int = 2) -> None:
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "bench", "BIDSVersion": "1.10.0"}')
    for i in range(subjects):
        for t in range(1, sessions + 1):
            anat = root / f"sub-{i}" / f"ses-{t}" / "anat"
            anat.mkdir(parents=True)
            for suffix in ("FLAIR", "T1w"):
                nib.save(img, str(anat / f"sub-{i}_ses-{t}_{suffix}.nii.gz"))
            ref = root / "derivatives/wmh" / f"sub-{i}" / f"ses-{t}" / "anat"
            ref.mkdir(parents=True)
            nib.save(img, str(ref / f"sub-{i}_ses-{t}_label-WMH_mask.nii.gz"))


def time_bids_discovery(root: Path) -> list[dict]:
    """Seconds to list (subject, session, FLAIR) of a BIDS dataset with each parser available."""
    from wmhflow import cohort

    def glob():
        return len(cohort.discover(root, "bids"))

    def pybids():
        import bids

        layout = bids.BIDSLayout(str(root), validate=False, derivatives=False)
        return len(layout.get(suffix="FLAIR", extension=[".nii.gz", ".nii"], return_type="filename"))

    def bids2table():
        import bids2table as b2t

        return len(b2t.index_dataset(root))  # bids2table 2.x: one arrow table row per file

    rows = []
    for name, parse in (("wmhflow glob", glob), ("pybids", pybids), ("bids2table", bids2table)):
        start = time.perf_counter()
        try:
            found = parse()
        except ImportError:
            print(f"{name}: not installed, skipped")
            continue
        except Exception as exc:  # a parser that cannot read the dataset is a result too
            print(f"{name}: failed ({type(exc).__name__}: {exc})")
            continue
        seconds = time.perf_counter() - start
        rows.append({"what": f"BIDS discovery, {name}", "seconds": round(seconds, 2), "found": found})
        print(f"{name}: {found} entries in {seconds:.2f} s")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 5,000 and 10,000: cohort scale (issue 13); ~3 and ~6 x the 1,000-subject time if planning is linear
    parser.add_argument("--subjects", type=int, nargs="+", default=[100, 1000, 5000, 10000])
    parser.add_argument("--layout", choices=("challenge", "bids"), default="challenge")
    parser.add_argument("--snakefile", default=str(REPO / "Snakefile"),
                        help="another checkout's Snakefile, to compare versions side by side (put its "
                             "workflow/ first on PYTHONPATH)")
    parser.add_argument("--label", default="", help="a name for this version in the CSV")
    parser.add_argument("--out", help="default: benchmarks/results/dryrun.csv (dryrun_bids.csv for bids)")
    args = parser.parse_args()
    rows = []
    for n in args.subjects:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if args.layout == "bids":
                fake_bids(tmp / "cohort", n)
                for row in time_bids_discovery(tmp / "cohort"):
                    rows.append({"layout": "bids", "subjects": n, **row})
            else:
                fake_cohort(tmp / "cohort", n)
            cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "all", "-s", args.snakefile,
                   "--directory", str(tmp), "--config", f"cohort={tmp / 'cohort'}", "results=results",
                   "model={name: fcn2d, checkpoint: " + str(tmp / "model.pt") + "}"]
            (tmp / "model.pt").write_bytes(b"")  # planning only: the file must exist, not be valid
            start = time.perf_counter()
            run = subprocess.run(cmd, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if run.returncode != 0:
                print(run.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append({"layout": args.layout, "subjects": n, "what": f"snakemake -n {args.label}".strip(), "seconds": round(seconds, 2),
                         "ms_per_subject": round(1000 * seconds / n, 1), "target_seconds": 10})
            print(f"snakemake -n, {args.layout}, {n} subjects: {seconds:.1f} s")
    out = Path(args.out or REPO / f"benchmarks/results/dryrun{'_bids' if args.layout == 'bids' else ''}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
