"""Cohort tables: every subject's metrics, per-site summaries (the paper's Table 3), lesion volumes,
and a model comparison (the paper's Table 2) when several model variants were run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_output

log = logging.getLogger(__name__)
METRICS = ["dice", "h95_mm", "avd_pct", "lesion_recall", "lesion_f1"]


def read_tables(paths) -> pd.DataFrame:
    frames = [pd.read_csv(p, sep="\t", dtype={"subject": str, "site": str}) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summarize(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per model and site: mean, std, median of each metric; plus 'all sites', the subject-weighted
    average over sites (= the mean over all subjects), as the paper's Table 3."""
    table = metrics[metrics["split"] == split] if split and "split" in metrics else metrics
    rows = []
    for model, by_model in table.groupby("model", sort=True):
        groups = [(site, g) for site, g in by_model.groupby("site", sort=True)] + [("all sites", by_model)]
        for site, group in groups:
            row = {"model": model, "site": site, "subjects": len(group)}
            for metric in METRICS:
                values = pd.to_numeric(group[metric], errors="coerce")
                row[f"{metric}_mean"] = values.mean()
                row[f"{metric}_std"] = values.std(ddof=1) if values.count() > 1 else np.nan
                row[f"{metric}_median"] = values.median()
            rows.append(row)
    return pd.DataFrame(rows)


def compare_models(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """One row per model variant, the mean of each metric over its subjects (the paper's Table 2)."""
    table = metrics[metrics["split"] == split] if split and "split" in metrics else metrics
    return table.groupby("model", sort=True)[METRICS].mean(numeric_only=True).reset_index()


def lesion_volumes(lesion_tables: pd.DataFrame, subjects: pd.DataFrame, model: str) -> pd.DataFrame:
    """Total lesion volume and count per subject, subjects without any lesion included."""
    if len(lesion_tables):
        per = lesion_tables.groupby("subject").agg(lesion_volume_ml=("volume_ml", "sum"),
                                                   lesion_count=("lesion_id", "count"))
    else:
        per = pd.DataFrame(columns=["lesion_volume_ml", "lesion_count"])
    out = subjects[["subject", "site", "split"]].copy()
    out["model"] = model
    out = out.merge(per, left_on="subject", right_index=True, how="left")
    out["lesion_volume_ml"] = out["lesion_volume_ml"].fillna(0.0)
    out["lesion_count"] = out["lesion_count"].fillna(0).astype(int)
    return out


def write_tsv(frame: pd.DataFrame, path) -> None:
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g", na_rep="NaN")


def add_arguments(parser) -> None:
    parser.add_argument("--metrics", nargs="*", default=[], help="per-subject metrics TSVs")
    parser.add_argument("--lesions", nargs="*", default=[], help="per-subject lesion TSVs")
    parser.add_argument("--subjects", required=True, help="subjects TSV (subject, site, split)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--split", default="test", help="split the summary is computed on")
    parser.add_argument("--out-dir", required=True, help="group/ folder")


def main(args) -> int:
    out_dir = Path(args.out_dir)
    metrics = read_tables(args.metrics)
    subjects = pd.read_csv(args.subjects, sep="\t", dtype=str)
    write_tsv(metrics, out_dir / "metrics.tsv")
    write_tsv(summarize(metrics, args.split) if len(metrics) else pd.DataFrame(), out_dir / "summary.tsv")
    write_tsv(compare_models(metrics, args.split) if len(metrics) else pd.DataFrame(), out_dir / "model_comparison.tsv")
    write_tsv(lesion_volumes(read_tables(args.lesions), subjects, args.model), out_dir / "lesion_volumes.tsv")
    log.info("group tables of %d evaluated subjects written to %s", len(metrics), out_dir)
    return 0
