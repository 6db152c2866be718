"""How long `snakemake -n` takes to plan a large cohort, and where the time goes.

Writes benchmarks/results/dryrun.csv (or --out). With ``--old <checkout>`` (e.g. a ``git worktree`` of an
earlier commit) every cohort is planned by both versions, alternating old/new ``--repeats`` times on
the same files, and the CSV gets their ratio: the side-by-side measurement issue 13 asks for. With
``--profile <json>`` the planning of the first cohort size also runs once under cProfile (each version)
and the JSON gets the top entries, grouped into Snakemake's phases and wmhflow's own code. The cohort
is a WMH-challenge tree or a BIDS dataset (two
sessions per subject) of tiny but real NIfTI files: planning reads only file names, so voxel content
does not matter here. For a BIDS cohort it also times BIDS discovery alone with wmhflow's glob
(``cohort.discover``) and, when installed, with pybids (``BIDSLayout`` + ``get``) and bids2table:
the measurement behind the choice documented in ``cohort._bids``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def checkout_label(checkout: Path) -> str:
    run = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return run.stdout.strip() or checkout.name


def slurm_plugin_import_seconds() -> float | None:
    """What every snakemake call pays before planning when the SLURM executor plugin is installed (its
    import runs `scontrol show config`, ~9 s when a SLURM client finds no controller); None: not installed."""
    code = (
        "import time, importlib.util as u; t = time.perf_counter(); "
        "m = u.find_spec('snakemake_executor_plugin_slurm'); m and __import__(m.name); "
        "print(time.perf_counter() - t if m else -1)"
    )
    seconds = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout or -1)
    return None if seconds < 0 else round(seconds, 2)


def plan_command(snakefile: Path, tmp: Path, quiet: bool = True, settings: tuple = ()) -> list[str]:
    """``settings``: more KEY=VALUE words for --config (e.g. a mode only the new version has)."""
    return [
        "-m",
        "snakemake",
        "-n",
        *(["--quiet"] if quiet else []),
        "all",
        "-s",
        str(snakefile),
        "--directory",
        str(tmp),
        "--config",
        f"cohort={tmp / 'cohort'}",
        "results=results",
        "model={name: fcn2d, checkpoint: " + str(tmp / "model.pt") + "}",
        *settings,
    ]


def time_plan(checkout: Path, tmp: Path, settings: tuple = ()) -> tuple[float, float]:
    """(wall, CPU) seconds of one `snakemake -n` of the cohort in tmp by the checkout's Snakefile and
    wmhflow. CPU time (user + system) moves less than wall time when others load the machine."""
    env = {**os.environ, "PYTHONPATH": str(checkout / "workflow")}  # its own wmhflow, not the installed one
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, *plan_command(checkout / "Snakefile", tmp, settings=settings)],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise RuntimeError(f"{checkout}: snakemake -n failed:\n{run.stderr[-3000:]}")
    return seconds, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


#: where a profile entry belongs, by the first pattern its function's file:line(name) matches
PHASES = (
    ("SLURM executor plugin import (scontrol)", "snakemake_executor_plugin_slurm/__init__.py:1(<module>)"),
    ("parsing the Snakefile (our global code, target lists)", "Snakefile:1(<module>)"),
    ("DAG: jobs, their inputs and dependencies", "dag.py:1159(update)"),
    ("DAG: which jobs must run (existence, mtimes)", "dag.py:1411(update_needrun)"),
    ("DAG: conda environment of every job", "dag.py:380(update_conda_envs)"),
    ("DAG: directory outputs check", "dag.py:315(check_directory_outputs)"),
    ("dry-run printing of every job (log_info)", "jobs.py:1061(log_info)"),
    ("  of which: resources of every job (expand_resources)", "rules.py:1066(expand_resources)"),
    ("  of which: shell command formatted 3x a job", "jobs.py:615(shellcmd)"),
    ("input/params/resource functions via Snakemake (apply_input_function)", "rules.py:659(apply_input_function)"),
    ("wmhflow's own code, own time (input/params functions, target lists, cohort)", "/wmhflow/"),
)


def profile_plan(checkout: Path, tmp: Path, top: int = 25, settings: tuple = ()) -> dict:
    import pstats

    stats_file = tmp / "plan.prof"
    env = {**os.environ, "PYTHONPATH": str(checkout / "workflow")}
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(stats_file),
            *plan_command(checkout / "Snakefile", tmp, settings=settings),
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    wall = time.perf_counter() - start
    stats = pstats.Stats(str(stats_file)).stats
    entries = []
    for (file, line, name), (_, calls, own, cumulative, _) in stats.items():
        entries.append(
            {
                "function": f"{file.split('site-packages/')[-1]}:{line}({name})",
                "calls": calls,
                "own_s": round(own, 3),
                "cumulative_s": round(cumulative, 3),
            }
        )
    total = max(e["cumulative_s"] for e in entries)
    phases = {}
    for phase, pattern in PHASES:
        matching = [e for e in entries if pattern in e["function"]]
        if pattern.endswith("/"):  # a package: its functions' own time (they nest)
            phases[phase] = round(sum(e["own_s"] for e in matching), 2)
        else:
            phases[phase] = round(max((e["cumulative_s"] for e in matching), default=0.0), 2)
    return {
        "checkout": checkout_label(checkout),
        "profiled_wall_s": round(wall, 1),
        "profiled_total_s": total,
        "note": "cProfile roughly doubles the run time; the shares, not the seconds, carry over",
        "phases_cumulative_s": phases,
        "top_by_own_time": sorted(entries, key=lambda e: -e["own_s"])[:top],
        "top_by_cumulative_time": sorted(entries, key=lambda e: -e["cumulative_s"])[:top],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 5,000 and 10,000: cohort scale (issue 13); ~3 and ~6 x the 1,000-subject time if planning is linear
    parser.add_argument("--subjects", type=int, nargs="+", default=[100, 1000, 5000, 10000])
    parser.add_argument("--layout", choices=("challenge", "bids"), default="challenge")
    parser.add_argument(
        "--old",
        type=Path,
        help="another checkout (a git worktree of an earlier commit) to plan "
        "the same cohorts with, alternating with this one",
    )
    parser.add_argument("--repeats", type=int, default=1, help="old/new pairs per cohort size (with --old)")
    parser.add_argument(
        "--profile",
        type=Path,
        help="also profile the planning of the first cohort size once "
        "(each version); write the top entries to this JSON",
    )
    parser.add_argument(
        "--new-config",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="more --config words for this version only (a setting the old one lacks), e.g. "
        "'preprocess={jobs: per_chunk}'; recorded in the CSV",
    )
    parser.add_argument("--out", help="default: benchmarks/results/dryrun.csv (dryrun_bids.csv for bids)")
    args = parser.parse_args()
    versions = [("new", REPO)] + ([("old", args.old.resolve())] if args.old else [])
    settings = {"new": tuple(args.new_config), "old": ()}
    labels = {name: checkout_label(path) for name, path in versions}
    slurm_import = slurm_plugin_import_seconds()
    print(f"SLURM executor plugin import: {slurm_import} s (paid by every call, both versions)")
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
            (tmp / "model.pt").write_bytes(b"")  # planning only: the file must exist, not be valid
            if args.profile and n == args.subjects[0]:
                report = {
                    "subjects": n,
                    "layout": args.layout,
                    "slurm_plugin_import_s": slurm_import,
                    **{name: profile_plan(checkout, tmp, settings=settings[name]) for name, checkout in versions},
                }
                args.profile.parent.mkdir(parents=True, exist_ok=True)
                args.profile.write_text(json.dumps(report, indent=1) + "\n")
                print(f"wrote {args.profile}")
            times = {name: [] for name, _ in versions}
            cpu = {name: [] for name, _ in versions}
            for repeat in range(args.repeats if args.old else 1):
                # old first in odd pairs, new first in even ones: neither always gets the warmer cache
                for name, checkout in versions[::-1] if repeat % 2 == 0 else versions:
                    seconds, cpu_seconds = time_plan(checkout, tmp, settings[name])
                    times[name].append(seconds)
                    cpu[name].append(cpu_seconds)
                    rows.append(
                        {
                            "layout": args.layout,
                            "subjects": n,
                            "what": f"snakemake -n {name} ({labels[name]})"
                            + (f" --config {' '.join(settings[name])}" if settings[name] else ""),
                            "run": repeat + 1,
                            "seconds": round(seconds, 2),
                            "cpu_seconds": round(cpu_seconds, 2),
                            "ms_per_subject": round(1000 * seconds / n, 1),
                            "slurm_plugin_import_s": slurm_import,
                        }
                    )
                    print(
                        f"snakemake -n, {args.layout}, {n} subjects, {name} ({labels[name]}): {seconds:.1f} s "
                        f"({cpu_seconds:.1f} s CPU)"
                    )
            if args.old:
                old, new = min(times["old"]), min(times["new"])
                old_cpu, new_cpu = min(cpu["old"]), min(cpu["new"])
                rows.append(
                    {
                        "layout": args.layout,
                        "subjects": n,
                        "what": "ratio old/new (best of each)",
                        "seconds": round(old / new, 2),
                        "cpu_seconds": round(old_cpu / new_cpu, 2),
                        "slurm_plugin_import_s": slurm_import,
                    }
                )
                print(f"  {n} subjects: old/new = {old / new:.2f}x wall, {old_cpu / new_cpu:.2f}x CPU")
    out = Path(args.out or REPO / f"benchmarks/results/dryrun{'_bids' if args.layout == 'bids' else ''}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
