"""Peak memory and wall time of every per-subject rule's command at two image sizes (issue 13).

Writes benchmarks/results/resources.csv: for each rule, the command the rule runs (``wmhflow <verb>``,
the rule's arguments and threads) under GNU time, on a realistic synthetic subject (2D FLAIR, 3 mm
slices, ~2.8 Mvoxels) and on the same subject resampled to 1 mm slices (3x the voxels, the size of a
3D FLAIR); then per rule the straight line peak RSS = fixed + per-Mvoxel x Mvoxels through the two
points. The rules' ``mem_mb``/``runtime`` defaults (workflow/rules/*.smk, config.yaml, docs/cluster.md)
are derived from these lines.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_csv import write_rows  # noqa: E402


def resample_slices(src: Path, dst: Path, factor: int) -> None:
    """The volume with ``factor`` times as many (thinner) slices: linear along the slice axis."""
    from scipy.ndimage import zoom

    from wmhflow.io import load_nifti, save_like

    img = load_nifti(src)
    data = np.asarray(img.dataobj, np.float32)
    fine = zoom(data, (1, 1, factor), order=1)
    affine = img.affine.copy()
    affine[:3, 2] /= factor
    header = img.header.copy()
    header.set_data_shape(fine.shape)
    like = nib.Nifti1Image(np.zeros(fine.shape, np.int16), affine, header)
    like.set_qform(affine, code=1)
    like.set_sform(affine, code=1)
    save_like(np.round(fine).astype(np.int16), like, dst)


def measure(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one command, from GNU time."""
    run = subprocess.run(["/usr/bin/time", "-f", "RESOURCES %M %e", *cmd], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
    line = [x for x in run.stderr.splitlines() if x.startswith("RESOURCES ")][-1]
    kb, seconds = line.split()[1:]
    return int(kb) / 1024, float(seconds)


def rule_commands(d: Path, flair: Path, t1: Path, model: Path) -> dict:
    w = str(Path(sys.executable).parent / "wmhflow")
    o = {
        name: str(d / f"{name}.nii.gz")
        for name in ("aligned", "n4_flair", "n4_t1", "quant_flair", "quant_t1", "tophat", "probseg", "mask")
    }
    return {  # the rules' commands, in order, with their threads (profiles/local: rule threads)
        "check_subject": [
            w,
            "check",
            "--subject",
            "x",
            "--flair",
            str(flair),
            f"--t1={t1}",
            "--output",
            str(d / "check.json"),
        ],
        "align_t1": [w, "align-t1", "--flair", str(flair), "--t1", str(t1), "--output", o["aligned"], "--threads", "2"],
        "bias_correct_FLAIR": [
            w,
            "bias-correct",
            "--input",
            str(flair),
            "--output",
            o["n4_flair"],
            "--role",
            "FLAIR",
            "--threads",
            "2",
        ],
        "bias_correct_T1w": [
            w,
            "bias-correct",
            "--input",
            o["aligned"],
            "--output",
            o["n4_t1"],
            "--role",
            "T1w",
            "--threads",
            "2",
        ],
        "requantize_FLAIR": [
            w,
            "requantize",
            "--input",
            o["n4_flair"],
            "--output",
            o["quant_flair"],
            "--role",
            "FLAIR",
        ],
        "requantize_T1w": [w, "requantize", "--input", o["n4_t1"], "--output", o["quant_t1"], "--role", "T1w"],
        "tophat": [w, "tophat", "--input", o["quant_flair"], "--output", o["tophat"]],
        "segment": [
            w,
            "infer",
            "--flair",
            o["quant_flair"],
            "--t1",
            o["quant_t1"],
            "--tophat",
            o["tophat"],
            "--model",
            str(model),
            "--probseg",
            o["probseg"],
            "--mask",
            o["mask"],
            "--device",
            "cpu",
            "--batch-size",
            "8",
            "--crop-margin",
            "16",
            "--threads",
            "2",
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/resources.csv"))
    args = parser.parse_args()
    from wmhflow.fcn.model import build_model, save_model
    from wmhflow.synth import write_cohort

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        row = write_cohort(root / "cohort", subjects=1, seed=args.seed).iloc[0]
        model = save_model(
            root / "m.pt",
            build_model(side_maps=16),
            {"requantize": "tissue", "name": "m", "channels": "flair,t1,tophat"},
        )
        sizes = {"2d_3mm": (Path(row.flair), Path(row.t1))}
        fine = root / "fine"
        fine.mkdir()
        resample_slices(Path(row.flair), fine / "flair.nii.gz", 3)
        resample_slices(Path(row.t1), fine / "t1.nii.gz", 3)
        sizes["1mm_slices"] = (fine / "flair.nii.gz", fine / "t1.nii.gz")
        for size, (flair, t1) in sizes.items():
            work = root / f"work_{size}"
            work.mkdir()
            mvoxels = float(np.prod(nib.load(str(flair)).shape[:3])) / 1e6
            for rule, cmd in rule_commands(work, flair, t1, model).items():
                rss, wall = measure(cmd)
                rows.append(
                    {
                        "rule": rule,
                        "size": size,
                        "mvoxels": round(mvoxels, 2),
                        "max_rss_mb": round(rss, 1),
                        "wall_s": round(wall, 2),
                    }
                )
                print(rows[-1], flush=True)
    by_rule = {}
    for r in rows:
        by_rule.setdefault(r["rule"], []).append(r)
    for rule, (small, large) in by_rule.items():
        per_mvoxel = (large["max_rss_mb"] - small["max_rss_mb"]) / (large["mvoxels"] - small["mvoxels"])
        fixed = small["max_rss_mb"] - per_mvoxel * small["mvoxels"]
        rows.append(
            {
                "rule": rule,
                "size": "fit",
                "fixed_mb": round(fixed, 1),
                "per_mvoxel_mb": round(per_mvoxel, 1),
                "wall_s_per_mvoxel": round(large["wall_s"] / large["mvoxels"], 2),
            }
        )
        print(rows[-1])
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
