"""Accuracy across scanners (issue 9): held-out subjects of the seen sites and a scanner never seen.

Main protocol (``--protocol seen-and-shifted``): a synthetic cohort with the three challenge-like sites
(``--train-per-site`` training subjects and ``--test-per-site`` test subjects each) plus the
domain-shifted scanner ``Shifted15T`` (``--shifted-test`` subjects; other sequence parameters hence
contrast, voxel size, thick slices, noise, bias, fainter and smaller lesions, anatomy warps: see
``wmhflow.synth``). The model trains on the seen sites' training subjects only, with the training
presets named by ``--presets`` and the channel sets named by ``--channels`` (the paper's ablation),
then every test subject is preprocessed and segmented with the same library calls as
``wmhflow segment`` and scored with ``wmhflow.evaluation.metrics`` (the organisers' definitions).
The held-out shifted site is never used for a choice: ``Shifted3T`` (``--validation-subjects``) is a
second shifted scanner to compare variants on before looking at the held-out site.

``--protocol loso``: leave one seen site out: train on the other two sites' training subjects, test on
the left-out site's test subjects, once per site.

Writes ``benchmarks/results/accuracy.csv`` (one row per test subject and run) and
``benchmarks/results/accuracy.json`` (per run: the five challenge metrics per site and per group with
subject counts, the training's iterations, wall seconds, seconds per iteration and the machine's load
average while training). Rows of earlier runs with other presets / channels are kept, so runs can be
made one after the other. Preprocessed subjects and trained models are cached under ``--work``.

Run: python benchmarks/bench_accuracy.py --presets demo standard [--channels flair,t1,tophat flair,t1,t1]
A variant: ``--tag fade --overrides '{"seed": 1}'`` trains the preset with those settings changed;
``--tag a --ensemble-with b c`` scores the models of runs a, b and c averaged (an ensemble).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow"))

import nibabel as nib  # noqa: E402
import pandas as pd  # noqa: E402

from wmhflow import synth  # noqa: E402
from wmhflow.evaluation.metrics import METRICS, evaluate_arrays  # noqa: E402

log = logging.getLogger("bench_accuracy")
RESULTS = REPO / "benchmarks" / "results"
SEEN = [s.name for s in synth.SITES]
HELD_OUT = "Shifted15T"
VALIDATION = "Shifted3T"


def make_cohort(work: Path, train_per_site: int, test_per_site: int, shifted_test: int, validation: int, seed: int):
    """The benchmark's subjects table (subject, site, group, split, flair, t1, reference), generated once."""
    table_path = work / "cohort.tsv"
    stamp = {
        "train": train_per_site,
        "test": test_per_site,
        "shifted": shifted_test,
        "validation": validation,
        "seed": seed,
        "generator": 2,
    }
    if (
        table_path.is_file()
        and (work / "cohort.json").is_file()
        and json.loads((work / "cohort.json").read_text()) == stamp
    ):
        return pd.read_csv(table_path, sep="\t", dtype=str)
    # seeds far from the demo's (0) so that no benchmark subject is a demo subject
    seen = synth.write_cohort(work / "cohort", 3 * (train_per_site + test_per_site), seed=1000 + seed, sites=SEEN)
    seen["group"] = "seen"
    order = seen.groupby("site").cumcount()
    seen["split"] = np.where(order < train_per_site, "train", "test")
    parts = [seen]
    if shifted_test:
        held = synth.write_cohort(work / "cohort", shifted_test, seed=2000 + seed, sites=[HELD_OUT])
        held["group"], held["split"] = "shifted", "test"
        parts.append(held)
    if validation:
        val = synth.write_cohort(work / "cohort", validation, seed=3000 + seed, sites=[VALIDATION])
        val["group"], val["split"] = "validation", "test"
        parts.append(val)
    table = pd.concat(parts, ignore_index=True)
    table.to_csv(table_path, sep="\t", index=False)
    (work / "cohort.json").write_text(json.dumps(stamp))
    return table


def prep_folder(work: Path, window: str) -> Path:
    """The cache of the 8-bit FLAIR, T1 and top-hat for a requantization window."""
    return work / ("prep" if window == "percentile" else f"prep-{window}")  # 'prep': the first runs' cache


def masked_metrics(probability, volumes, reference, labels, cut, depth, region) -> dict:
    """The organisers' metrics of the mask ``wmhflow infer`` makes from ``probability`` (its
    ``make_mask``: cut, depth rule, ``region`` excluded) against ``labels`` of ``reference`` (nibabel)."""
    from wmhflow.fcn.infer import make_mask

    zooms = reference.header.get_zooms()[:3]
    mask, _ = make_mask(probability, volumes["flair"], zooms, cut, min_depth_mm=depth, excluded=region)
    return evaluate_arrays(labels, mask, reference.affine)


def preprocess(row, work: Path, window: str) -> dict:
    """8-bit FLAIR, T1 and top-hat of one subject: the chain of ``wmhflow segment``.

    The N4-corrected volumes are cached apart from the 8-bit ones, so that the requantization window
    (``--window``) can be compared without running N4 again.
    """
    from wmhflow.io import load_nifti, save_like, voxels
    from wmhflow.preprocess.align import align_t1_to_flair
    from wmhflow.preprocess.bias import n4_correct_array
    from wmhflow.preprocess.quantize import requantize_array
    from wmhflow.preprocess.tophat import area_tophat

    prep = prep_folder(work, window)
    out = {k: prep / f"{row.subject}_{k}.nii.gz" for k in ("flair", "t1", "tophat")}
    if all(p.is_file() for p in out.values()):
        return {k: str(p) for k, p in out.items()}
    flair = load_nifti(row.flair, "FLAIR")
    corrected = {k: work / "prep-n4" / f"{row.subject}_{k}.nii.gz" for k in ("t1", "flair")}
    if not all(p.is_file() for p in corrected.values()):
        t1 = voxels(align_t1_to_flair(flair, load_nifti(row.t1, "T1"), "auto", row.t1, row.flair))
        for key, data in (("t1", t1), ("flair", voxels(flair))):  # FLAIR last: it marks a complete subject
            save_like(n4_correct_array(flair, data)[0], flair, corrected[key], np.float32)
    volumes = {
        key: requantize_array(np.asarray(nib.load(corrected[key]).dataobj, np.float32), window=window)
        for key in ("flair", "t1")
    }
    volumes["tophat"] = area_tophat(volumes["flair"])
    for key in ("t1", "tophat", "flair"):  # FLAIR last: its presence marks a complete subject
        save_like(volumes[key], flair, out[key], np.uint8)
    return {k: str(p) for k, p in out.items()}


def model_dir_name(run: str) -> str:
    """The folder under work/models of a run's model."""
    return run.replace("|", "_").replace(",", "-").replace("/", "_")


def train_model(
    name,
    preset,
    channels,
    train_rows,
    work: Path,
    threads: int,
    iterations=None,
    from_checkpoint=False,
    window="tissue",
    overrides=None,
):
    """Train (or reuse) one model; returns (model path, timing dict). ``overrides``: training settings
    over the preset's (a variant under test, named by ``--tag``)."""
    from wmhflow.fcn.train import train

    out_dir = work / "models" / name
    timing_file = out_dir / "timing.json"
    if (out_dir / "model.pt").is_file() and timing_file.is_file():
        return out_dir / "model.pt", json.loads(timing_file.read_text())
    if from_checkpoint:
        return checkpoint_model(out_dir, preset, channels, window)
    train_config = {"preset": preset, "overrides": dict(overrides or {})}
    if iterations:
        train_config["overrides"]["iterations"] = int(iterations)
    load_before = os.getloadavg()
    cpu_before = os.times()
    tic = time.perf_counter()
    rows = train(
        [r["flair"] for r in train_rows],
        [r["t1"] for r in train_rows],
        [r["tophat"] for r in train_rows],
        [r["reference"] for r in train_rows],
        out_dir,
        {"name": "fcn2d", "channels": channels},
        train_config,
        "auto",
        threads,
    )
    seconds = time.perf_counter() - tic
    cpu_after = os.times()
    done = int(rows[-1][0]) if rows else 0
    timing = {
        "iterations": done,
        "train_seconds": round(seconds, 1),
        "seconds_per_iteration": round(seconds / max(done, 1), 3),
        "process_cpu_seconds": round((cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system), 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "threads": threads,
        "cpu": _cpu_name(),
        "avx512": _has_avx512(),
    }
    # CPU share this process got: cpu seconds / (wall seconds x threads); below 1 = contention
    timing["cpu_share_of_threads"] = round(timing["process_cpu_seconds"] / max(seconds * threads, 1e-9), 2)
    timing_file.write_text(json.dumps(timing, indent=2))
    return out_dir / "model.pt", timing


def checkpoint_model(out_dir: Path, preset, channels, window):
    """The model of an unfinished training (its last checkpoint), written as model_partial.pt.

    For a machine too loaded to finish a preset before a deadline: the timing says how far it got.
    """
    import torch

    from wmhflow.fcn.model import build_model, save_model
    from wmhflow.fcn.presets import resolve_config

    state = torch.load(out_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    model = build_model(16, "none")
    model.load_state_dict(state["model"])
    settings = resolve_config({"preset": preset})
    path = save_model(
        out_dir / "model_partial.pt",
        model,
        {
            "name": "fcn2d",
            "channels": channels,
            "train": settings,
            "requantize": window,
            "iterations": state["iteration"],
        },
    )
    rows = state["rows"]
    batch = int(settings["batch_size"])
    seconds = 0.0
    previous = 0
    for it, _, _, speed, _ in rows:  # time of each logged interval: iterations x batch / slices per s
        seconds += (it - previous) * batch / max(speed, 1e-9)
        previous = it
    timing = {
        "iterations": int(state["iteration"]),
        "of_iterations": int(settings["iterations"]),
        "partial": True,
        "train_seconds": round(seconds, 1),
        "seconds_per_iteration": round(seconds / max(previous, 1), 3),
        "load_average_at_scoring": [round(x, 2) for x in os.getloadavg()],
        "cpu": _cpu_name(),
        "avx512": _has_avx512(),
    }
    return path, timing


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def score(
    model_path,
    test_rows,
    threads,
    depths=(0.0,),
    thresholds=("auto",),
    ttas=("none",),
    save_probabilities=None,
    restrict_tos=("head",),
) -> dict[tuple, list[dict]]:
    """Segment and score each test subject with the model (a list: an ensemble, probabilities averaged as
    ``wmhflow infer`` averages them): {(tta, threshold, min_depth_mm): rows}.

    One FCN pass per subject and test-time augmentation serves every post-processing variant.
    ``thresholds``: "auto" (the model's calibrated one for that augmentation, as ``wmhflow infer``
    uses it) or numbers. ``ttas``: "none" and/or "flip" (``segment.tta``). ``save_probabilities``: a
    folder to keep each subject's probability map in (``<tta>/<subject>.npy``, float16), so that
    post-processing variants can be compared later without another FCN pass. ``restrict_tos``: head,
    brain and/or supratentorial (``segment.restrict_to``; one template registration per subject each).
    """
    from wmhflow.fcn.device import set_threads
    from wmhflow.fcn.infer import excluded_region, left_right_axis, predict_volume, resolve_threshold
    from wmhflow.fcn.model import load_model

    set_threads(threads)
    paths = model_path if isinstance(model_path, list) else [model_path]
    models, metas = zip(*(load_model(p) for p in paths))
    model = list(models) if len(models) > 1 else models[0]
    channels = metas[0].get("channels", "flair,t1,tophat")
    cuts = {(tta, spec): resolve_threshold(spec, list(metas), tta)[0] for tta in ttas for spec in thresholds}
    log.info("thresholds %s", cuts)
    variants = [(t, s, d, i) for t in ttas for s in thresholds for d in depths for i in restrict_tos]
    out = {variant: [] for variant in variants}
    for r in test_rows:
        volumes = {k: np.asarray(nib.load(r[k]).dataobj) for k in ("flair", "t1", "tophat")}
        flip_axis = left_right_axis(nib.load(r["flair"]).affine)
        ref = nib.load(r["reference"])
        labels = np.rint(np.asarray(ref.dataobj, np.float32)).astype(np.int16)
        regions = {where: excluded_region(where, volumes, ref.affine)[0] for where in restrict_tos}
        for tta in ttas:
            prob = predict_volume(
                model, volumes, channels, "auto", "auto", 8, crop_margin=16, tta=tta, flip_axis=flip_axis
            )
            if save_probabilities:
                kept = Path(save_probabilities) / tta / f"{r['subject']}.npy"
                kept.parent.mkdir(parents=True, exist_ok=True)
                np.save(kept, prob.astype(np.float16))
            for spec, depth, where in [(s, d, i) for t, s, d, i in out if t == tta]:
                cut = cuts[tta, spec]
                metrics = masked_metrics(prob, volumes, ref, labels, cut, depth, regions[where])
                out[tta, spec, depth, where].append(
                    {
                        "subject": r["subject"],
                        "site": r["site"],
                        "group": r["group"],
                        "tta": tta,
                        "threshold": cut,
                        **metrics,
                    }
                )
                log.info(
                    "%s %s (tta %s, threshold %s, min depth %g mm, restrict to %s): "
                    "Dice %.3f H95 %.1f AVD %.1f recall %.2f F1 %.2f",
                    r["site"],
                    r["subject"],
                    tta,
                    spec,
                    depth,
                    where,
                    metrics["dice"],
                    metrics["h95_mm"],
                    metrics["avd_pct"],
                    metrics["lesion_recall"],
                    metrics["lesion_f1"],
                )
    return out


def summarise(frame: pd.DataFrame) -> dict:
    """Mean of each challenge metric (over subjects) per site and per group, with subject counts."""
    summary = {}
    for key, by in (("per_site", "site"), ("per_group", "group")):
        summary[key] = {
            name: {"subjects": int(len(g)), **{m: round(float(g[m].mean()), 4) for m in METRICS}}
            for name, g in frame.groupby(by)
        }
    return summary


def record_run(
    run, rows, preset, channels, protocol, window, depth, train_subjects, timing, csv_path, json_path, overrides=None
):
    """Replace the run's rows in the CSV and its summary in the JSON; print the per-group means."""
    scored = pd.DataFrame(rows)
    for i, (key, value) in enumerate(
        (("run", run), ("preset", preset), ("channels", channels), ("protocol", protocol))
    ):
        scored.insert(i, key, value)
    old = pd.read_csv(csv_path) if csv_path.is_file() else pd.DataFrame()
    if len(old):
        old = old[old["run"] != run]
    pd.concat([old, scored], ignore_index=True).to_csv(csv_path, index=False)
    summary = json.loads(json_path.read_text()) if json_path.is_file() else {}
    summary[run] = {
        "preset": preset,
        "channels": channels,
        "protocol": protocol,
        "window": window,
        "min_depth_mm": depth,
        "train_subjects": train_subjects,
        "overrides": overrides or {},
        "timing": timing,
        **summarise(scored),
    }
    json_path.write_text(json.dumps(summary, indent=2))
    for group, values in summary[run]["per_group"].items():
        print(
            f"{run:60s} {group:14s} n={values['subjects']:2d} " + " ".join(f"{m}={values[m]:.3f}" for m in METRICS),
            flush=True,
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["demo", "standard"])
    parser.add_argument("--channels", nargs="+", default=["flair,t1,tophat"])
    parser.add_argument("--protocol", choices=("seen-and-shifted", "loso"), default="seen-and-shifted")
    parser.add_argument("--train-per-site", type=int, default=4)
    parser.add_argument("--test-per-site", type=int, default=3)
    parser.add_argument("--shifted-test", type=int, default=3)
    parser.add_argument("--validation-subjects", type=int, default=3, help=f"subjects of {VALIDATION}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=None, help="override the presets' iterations (smoke runs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "accuracy"))
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument(
        "--window",
        default="tissue",
        choices=("tissue", "percentile"),
        help="requantization window (wmhflow.preprocess.quantize); percentile: the first runs'",
    )
    parser.add_argument(
        "--min-depth-mm",
        type=float,
        nargs="+",
        default=[0.0],
        help="post-processing depths to score (wmhflow.fcn.postprocess); one FCN pass for all",
    )
    parser.add_argument(
        "--thresholds",
        nargs="+",
        default=["auto"],
        help="mask thresholds to score: auto (the model's calibrated one) and/or numbers",
    )
    parser.add_argument(
        "--tta",
        nargs="+",
        default=["none"],
        choices=("none", "flip"),
        help="test-time augmentations to score (segment.tta); one FCN pass each",
    )
    parser.add_argument("--tag", default="", help="suffix of the run's name (e.g. a variant under test)")
    parser.add_argument(
        "--restrict-to",
        nargs="+",
        default=["head"],
        choices=("head", "brain", "supratentorial"),
        help="segment.restrict_to variants to score (brain: components mostly outside the brain removed; "
        "supratentorial: also brainstem and cerebellum)",
    )
    parser.add_argument(
        "--save-probabilities",
        default=None,
        help="folder to keep each test subject's probability map in (<tta>/<subject>.npy), for post-processing sweeps",
    )
    parser.add_argument(
        "--overrides",
        type=json.loads,
        default={},
        help="JSON of training settings over the preset's (train.overrides), for a variant; name it with --tag",
    )
    parser.add_argument(
        "--ensemble-with",
        nargs="+",
        default=[],
        help="tags of runs already trained (same preset and channels): score the run's model averaged with theirs",
    )
    parser.add_argument(
        "--from-checkpoint",
        action="store_true",
        help="score the last checkpoint of a training that has not finished (marked partial)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from wmhflow.fcn.device import set_threads

    set_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cohort = make_cohort(
        work, args.train_per_site, args.test_per_site, args.shifted_test, args.validation_subjects, args.seed
    )
    rows = []
    tic = time.perf_counter()
    for r in cohort.itertuples():
        rows.append({**r._asdict(), **preprocess(r, work, args.window)})
    log.info("preprocessed %d subjects in %.0f s", len(rows), time.perf_counter() - tic)
    runs = []
    if args.protocol == "loso":
        for left_out in SEEN:
            train_rows = [r for r in rows if r["split"] == "train" and r["site"] != left_out and r["group"] == "seen"]
            test_rows = [dict(r, group="left-out site") for r in rows if r["site"] == left_out and r["split"] == "test"]
            runs.append((f"loso-{left_out.replace('/', '_')}", train_rows, test_rows))
    else:
        train_rows = [r for r in rows if r["split"] == "train"]
        runs.append(("main", train_rows, [r for r in rows if r["split"] == "test"]))

    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = results_dir / "accuracy.csv", results_dir / "accuracy.json"
    for preset in args.presets:
        for channels in args.channels:
            for protocol_name, train_rows, test_rows in runs:
                tags = ([] if args.window == "percentile" else [f"window-{args.window}"]) + (
                    [args.tag] if args.tag else []
                )
                run = "|".join([preset, channels, protocol_name, *tags])
                name = model_dir_name(run)
                log.info("run %s: training on %d subjects", run, len(train_rows))
                model_path, timing = train_model(
                    name,
                    preset,
                    channels,
                    train_rows,
                    work,
                    args.threads,
                    args.iterations,
                    args.from_checkpoint,
                    args.window,
                    args.overrides,
                )
                if args.ensemble_with:
                    window_tags = tags[:-1] if args.tag else tags
                    members = [
                        work
                        / "models"
                        / model_dir_name("|".join([preset, channels, protocol_name, *window_tags, other]))
                        / "model.pt"
                        for other in args.ensemble_with
                    ]
                    missing = [str(m) for m in members if not m.is_file()]
                    if missing:
                        raise SystemExit(f"--ensemble-with: no trained model at {', '.join(missing)}")
                    model_path = [model_path, *members]
                    run = run + "|ensemble-" + "+".join(args.ensemble_with)
                scored = score(
                    model_path,
                    test_rows,
                    args.threads,
                    args.min_depth_mm,
                    args.thresholds,
                    args.tta,
                    args.save_probabilities,
                    args.restrict_to,
                )
                for (tta, spec, depth, where), variant_rows in scored.items():
                    variant = (
                        run
                        + (f"|tta-{tta}" if tta != "none" else "")
                        + (f"|threshold-{spec}" if spec != "auto" else "")
                        + (f"|depth-{depth:g}mm" if depth else "")
                        + (f"|restrict-{where}" if where != "head" else "")
                    )
                    record_run(
                        variant,
                        variant_rows,
                        preset,
                        channels,
                        protocol_name,
                        args.window,
                        depth,
                        len(train_rows),
                        timing,
                        csv_path,
                        json_path,
                        args.overrides,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
