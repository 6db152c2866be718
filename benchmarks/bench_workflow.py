"""The workflow's fixed cost per subject: reprocessing with an existing model, workflow vs one process.

Writes benchmarks/results/workflow_overhead.csv (issue 13). One run, one machine, side by side:

- ``workflow``: ``snakemake --cores 2`` of the ``preprocess`` target and every subject's mask with
  ``model.checkpoint`` set, once per ``preprocess.jobs`` value (per_subject: preprocess_subject + infer,
  2 jobs a subject; per_step: check, align, N4 x2, requantize x2, top-hat, infer, 8 jobs a subject),
  wall time of the whole call / N; per rule, the mean ``s`` and ``max_rss`` of its ``benchmark:`` files.
- ``in_process``: the same chain in this one process, ``wmhflow.segment.segment_subject(...,
  keep_intermediates=True)`` for each subject (imports paid once), then what the workflow makes of each
  mask (lesion table, QC picture, challenge metrics: the finishing job's verbs, called in this process),
  wall / N; per step the timings the function logs (kernel + writing the kept intermediate).
- CPU seconds (user + system) of both, per subject: the workflow runs subjects side by side on the 2
  cores (preprocessing jobs of 1 thread each) where the chain runs them one after another, so the wall
  ratio mixes scheduling gains into the overhead; the CPU ratio is the work each path does.
- ``start_import``: per verb, a fresh ``python -c 'import <verb module>'`` (process start + imports: what
  every job pays before its kernel), and which heavy libraries (torch, SimpleITK, scikit-image, pandas,
  numba) that import pulls in.
- ``tophat_jit``: the top-hat of one volume in a fresh process, twice: a JIT compile would show in the
  first process only if numba's on-disk cache were not used.
- ``io``: writing a realistic FLAIR-sized volume as NIfTI, float32 vs uint8, at nibabel's gzip level
  and at others, and reading it back.

The cohort is realistic-size synthetic (``wmhflow.synth.write_cohort``, not ``small``); the model an
untrained FCN (``build_model``, 16 side maps): its weights change no timing.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_csv import write_rows  # noqa: E402

VERB_MODULES = {
    "check": "wmhflow.checks",
    "align-t1": "wmhflow.preprocess.align",
    "bias-correct": "wmhflow.preprocess.bias",
    "requantize": "wmhflow.preprocess.quantize",
    "tophat": "wmhflow.preprocess.tophat",
    "infer": "wmhflow.fcn.infer",
}
HEAVY = ("torch", "SimpleITK", "skimage", "pandas", "numba", "scipy", "matplotlib")
MODEL_NAME = "bench"


def env_with_venv() -> dict:
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))


def prepare(root: Path, subjects: int, seed: int) -> tuple[pd.DataFrame, Path]:
    from wmhflow.fcn.model import build_model, save_model
    from wmhflow.synth import write_cohort

    table = write_cohort(root / "cohort", subjects=subjects, seed=seed)
    model = save_model(
        root / "bench.pt",
        build_model(side_maps=16),
        {"requantize": "tissue", "name": MODEL_NAME, "channels": "flair,t1,tophat"},
    )
    return table, model


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process (torch's included)
    return usage.ru_utime + usage.ru_stime


def run_workflow(
    root: Path, model: Path, subjects_per_job: int = 1, preprocess_jobs: str = "per_subject"
) -> tuple[float, float, list[dict]]:
    """Wall and CPU seconds of the whole snakemake call, and one row per rule from its benchmark: files."""
    from wmhflow import config as wmh_config
    from wmhflow.plan import Plan
    from wmhflow.workflow_subjects import subjects_for_workflow

    config = {
        "cohort": str(root / "cohort"),
        "results": "out",
        "splits": {"train_per_site": 0.01},
        "model": {"name": MODEL_NAME, "checkpoint": str(model)},
        "segment": {"subjects_per_job": subjects_per_job},
        "preprocess": {"jobs": preprocess_jobs},
    }
    (root / "run.yaml").write_text(json.dumps(config))
    import yaml

    full = yaml.safe_load((REPO / "config.yaml").read_text())
    for key, value in config.items():
        full[key] = dict(full[key], **value) if isinstance(value, dict) else value
    wmh_config.validate(full)
    workdir = root / f"wf-{preprocess_jobs}-{subjects_per_job}"
    workdir.mkdir(exist_ok=True)
    plan = Plan(full, subjects_for_workflow(full, workdir=str(workdir)))
    masks = [plan.mask(s) for s in plan.subjects.index]
    # targets first: --configfile takes every following word
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "preprocess",
        *masks,
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(root / "run.yaml"),
    ]
    dry = subprocess.run(cmd + ["-n", "--quiet", "rules"], capture_output=True, text=True, env=env_with_venv())
    if dry.returncode != 0:
        raise SystemExit(f"snakemake -n failed:\n{dry.stdout[-3000:]}\n{dry.stderr[-3000:]}")
    started, cpu_started = time.perf_counter(), children_cpu_seconds()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env_with_venv())
    wall, cpu = time.perf_counter() - started, children_cpu_seconds() - cpu_started
    if run.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    # The fixed cost of one snakemake call (start, parsing, DAG, end) with nothing left to do: paid once
    # per run, not per subject. On the development machine most of it is the SLURM executor plugin
    # running `scontrol show config` while building its --help text, which waits ~9 s when a SLURM
    # client is installed but no controller answers (a workstation without SLURM, or a cluster, answer
    # at once).
    started = time.perf_counter()
    subprocess.run(cmd, capture_output=True, text=True, env=env_with_venv(), check=True)
    noop = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(["scontrol", "show", "config"], capture_output=True)
    scontrol = time.perf_counter() - started if shutil.which("scontrol") else 0.0
    rows = [{"rule": "(snakemake call, nothing to do)", "s": noop}, {"rule": "(scontrol show config)", "s": scontrol}]
    for rule_dir in sorted((workdir / "out" / "benchmarks").iterdir()):
        files = glob.glob(str(rule_dir / "**" / "*.tsv"), recursive=True)
        frames = pd.concat([pd.read_csv(f, sep="\t") for f in files])
        rule = re.sub(rf"_{MODEL_NAME}$", "", rule_dir.name)
        rows.append(
            {
                "rule": rule,
                "jobs": len(files),
                "s": frames["s"].mean(),
                "max_rss_mb": frames["max_rss"].max(),
                "mean_rss_mb": frames["max_rss"].mean(),
            }
        )
    return wall, cpu, rows


class _StepTimings(logging.Handler):
    """Collects the per-step timings segment_subject logs ("steps {json}")."""

    def __init__(self):
        super().__init__()
        self.runs = []

    def emit(self, record):
        message = record.getMessage()
        if "; steps " in message:
            self.runs.append(json.loads(message.split("; steps ", 1)[1]))


def finish_in_process(made: dict, row, out_dir: Path, slices: int) -> None:
    """What the workflow's finishing job makes of a mask (finish_subject.smk), by the same verbs, here."""
    from wmhflow.cli import run_verb

    subject = f"b{row.subject}"
    steps = {
        "lesions": ["--mask", made["mask"], "--probseg", made["probseg"], f"--subject={subject}"],
        "qc": ["--flair", row.flair, "--mask", made["mask"], f"--reference={row.reference}"]
        + [f"--title=sub-{subject} ({row.site}), model {MODEL_NAME}", "--slices", str(slices)],
        "evaluate": ["--reference", row.reference, "--prediction", made["mask"], f"--subject={subject}"]
        + [f"--site={row.site}", "--split=test", "--model", MODEL_NAME],
    }
    for verb, words in steps.items():
        if run_verb(verb, [*words, "--output", str(out_dir / f"sub-{subject}_{verb}.out")]) != 0:
            raise SystemExit(f"in-process {verb} of sub-{subject} failed")


def run_in_process(root: Path, table: pd.DataFrame, model: Path) -> tuple[float, float, dict]:
    import yaml

    from wmhflow.fcn.device import set_threads
    from wmhflow.segment import ChainSettings, segment_subject

    slices = yaml.safe_load((REPO / "config.yaml").read_text())["report"]["qc_slices"]

    set_threads(2)
    handler = _StepTimings()
    logger = logging.getLogger("wmhflow.segment")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    started, cpu_started = time.perf_counter(), own_cpu_seconds()
    finishing = 0.0
    for row in table.itertuples():
        made = segment_subject(
            row.flair,
            row.t1,
            str(model),
            root / "inproc",
            subject=f"b{row.subject}",
            settings=ChainSettings(keep_intermediates=True, threads=2),
        )
        finish_started = time.perf_counter()
        finish_in_process(made, row, root / "inproc", slices)
        finishing += time.perf_counter() - finish_started
    wall, cpu = time.perf_counter() - started, own_cpu_seconds() - cpu_started
    logger.removeHandler(handler)
    steps = pd.DataFrame(handler.runs).mean().to_dict()
    steps["lesions_qc_evaluate"] = finishing / len(table)
    return wall, cpu, steps


def time_imports() -> list[dict]:
    rows = []
    probe = (
        "import sys, time; t = time.perf_counter(); import {module}; "
        "print(time.perf_counter() - t, ','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    for verb, module in VERB_MODULES.items():
        started = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-c", probe.format(module=module, heavy=HEAVY)], capture_output=True, text=True, check=True
        )
        wall = time.perf_counter() - started
        import_s, heavy = run.stdout.split(maxsplit=1) if " " in run.stdout.strip() else (run.stdout, "")
        # the whole command as a job runs it (console script, argument parsing), without the kernel
        started = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "wmhflow"), verb, "--help"], capture_output=True, check=True)
        help_s = time.perf_counter() - started
        rows.append(
            {
                "verb": verb,
                "module": module,
                "process_s": round(wall, 3),
                "import_s": round(float(import_s), 3),
                "help_s": round(help_s, 3),
                "heavy_imports": heavy.strip(),
            }
        )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    rows.append({"verb": "(bare python)", "module": "", "process_s": round(time.perf_counter() - started, 3)})
    return rows


def time_tophat_jit(quant_path: Path, workdir: Path) -> list[dict]:
    rows = []
    code = (
        "import time; from wmhflow.io import load_nifti; import numpy as np; "
        f"from wmhflow.preprocess.tophat import area_tophat; d = np.asarray(load_nifti({str(quant_path)!r}).dataobj); "
        "t = time.perf_counter(); area_tophat(d, 25, 1); print(time.perf_counter() - t)"
    )
    for attempt in (1, 2):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=workdir)
        rows.append({"process": attempt, "tophat_s": round(float(run.stdout.strip()), 3)})
    return rows


def time_io(flair_path: Path, workdir: Path) -> list[dict]:
    import nibabel as nib

    from wmhflow.io import load_nifti

    img = load_nifti(flair_path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    as_uint8 = np.clip(data / max(float(data.max()), 1e-6) * 255, 0, 255).astype(np.uint8)
    rows = []
    default_level = nib.openers.Opener.default_compresslevel
    for dtype, volume in (("float32", data), ("uint8", as_uint8)):
        for level in sorted({default_level, 1, 6, 9}):
            path = workdir / f"io_{dtype}_{level}.nii.gz"
            nib.openers.Opener.default_compresslevel = level
            try:
                started = time.perf_counter()
                nib.save(nib.Nifti1Image(volume, img.affine), str(path))
                write_s = time.perf_counter() - started
            finally:
                nib.openers.Opener.default_compresslevel = default_level
            started = time.perf_counter()
            np.asarray(nib.load(str(path)).dataobj)
            read_s = time.perf_counter() - started
            rows.append(
                {
                    "dtype": dtype,
                    "gzip_level": level,
                    "nibabel_default": level == default_level,
                    "write_s": round(write_s, 3),
                    "read_s": round(read_s, 3),
                    "mb": round(path.stat().st_size / 1e6, 2),
                    "shape": "x".join(map(str, volume.shape)),
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--label", default="", help="a word for this code version (before / after)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/workflow_overhead.csv"))
    parser.add_argument("--keep", help="work in this directory and keep it (default: a temporary one)")
    parser.add_argument(
        "--subjects-per-job",
        type=int,
        nargs="+",
        default=[1],
        help="segment.subjects_per_job of the workflow runs (chunked segmentation), side by side",
    )
    parser.add_argument(
        "--preprocess-jobs",
        nargs="+",
        default=["per_subject", "per_step"],
        choices=("per_subject", "per_step", "per_chunk"),
        help="preprocess.jobs of the workflow runs, side by side (one run each)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        table, model = prepare(root, args.subjects, args.seed)
        print(f"{args.subjects} subjects, {table.iloc[0]['flair']}")
        runs = {
            (mode, per_job): run_workflow(root, model, per_job, mode)
            for mode in args.preprocess_jobs
            for per_job in args.subjects_per_job
        }
        ip_wall, ip_cpu, steps = run_in_process(root, table, model)
        n = args.subjects
        rows = []
        for (mode, per_job), (wf_wall, wf_cpu, rule_rows) in runs.items():
            call = rule_rows[0]["s"]
            common = {"label": args.label, "preprocess_jobs": mode, "subjects_per_job": per_job}
            rows += [
                {**common, "part": "per_subject", "name": "workflow", "s": round(wf_wall / n, 2)},
                {**common, "part": "ratio", "name": "workflow/in_process", "s": round(wf_wall / ip_wall, 3)},
                # at cohort scale the call's fixed cost is spread over many subjects: what is left per subject
                {
                    **common,
                    "part": "per_subject",
                    "name": "workflow less one call's fixed cost",
                    "s": round((wf_wall - call) / n, 2),
                },
                {
                    **common,
                    "part": "ratio",
                    "name": "(workflow less call's fixed cost)/in_process",
                    "s": round((wf_wall - call) / ip_wall, 3),
                },
                {**common, "part": "cpu_per_subject", "name": "workflow", "s": round(wf_cpu / n, 2)},
                {**common, "part": "ratio", "name": "CPU workflow/in_process", "s": round(wf_cpu / ip_cpu, 3)},
            ]
            for rule in rule_rows[:2]:
                rows.append({**common, "part": "snakemake_call", "name": rule["rule"], "s": round(rule["s"], 2)})
            for rule in rule_rows[2:]:
                rows.append(
                    {
                        **common,
                        "part": "rule_job",
                        "name": rule["rule"],
                        "s": round(rule["s"], 2),
                        "jobs": rule["jobs"],
                        "max_rss_mb": round(rule["max_rss_mb"], 1),
                        "mean_rss_mb": round(rule["mean_rss_mb"], 1),
                    }
                )
        rows.append({"label": args.label, "part": "per_subject", "name": "in_process", "s": round(ip_wall / n, 2)})
        rows.append({"label": args.label, "part": "cpu_per_subject", "name": "in_process", "s": round(ip_cpu / n, 2)})
        for step, seconds in steps.items():
            rows.append({"label": args.label, "part": "in_process_step", "name": step, "s": round(seconds, 2)})
        for imp in time_imports():
            rows.append(
                {"label": args.label, "part": "start_import", "name": imp.pop("verb"), "s": imp.pop("process_s"), **imp}
            )
        quant = next((root / "inproc").glob("sub-*/anat/*desc-quant_FLAIR.nii.gz"))
        for jit in time_tophat_jit(quant, root):
            rows.append(
                {
                    "label": args.label,
                    "part": "tophat_fresh_process",
                    "name": f"process {jit['process']}",
                    "s": jit["tophat_s"],
                }
            )
        for io_row in time_io(Path(table.iloc[0]["flair"]), root):
            rows.append(
                {
                    "label": args.label,
                    "part": "io",
                    "name": f"{io_row['dtype']} gzip {io_row['gzip_level']}",
                    "s": io_row["write_s"],
                    **io_row,
                }
            )
        frame = pd.DataFrame(rows)
        print(frame.to_string())
        out = Path(args.out)
        if out.exists() and args.label:  # keep the other labels' rows: before and after side by side
            old = pd.read_csv(out)
            frame = pd.concat([old[old["label"] != args.label], frame])
        write_rows(frame.to_dict("records"), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
