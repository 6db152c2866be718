"""``wmhflow aggregate``: the cohort tables under ``group/``.

- ``metrics.tsv``: every evaluated subject's row of ``wmhflow evaluate`` (subject, site, split,
  model, the five metrics, voxel counts, volumes, lesion counts, remarks), concatenated. Identifying
  columns missing from a row are filled in: ``model`` from ``--model``, ``site`` and ``split``
  from the subjects table (``site`` "unknown" for a subject it does not list).
- ``summary.tsv`` (the paper's Table 3): per model and site, for each metric the mean, standard
  deviation (ddof = 1; NaN for a single value), median and ``_n``, the number of subjects with a
  defined value; ``subjects`` counts the site's subjects. A last row per model, site ``all sites``,
  is the subject-weighted average of the site means, Σ n_site · mean_site / Σ n_site (per metric,
  with n_site its defined values), which is the mean over all the model's subjects; its std and
  median are over all those subjects. Only the ``--split`` subjects count (default ``test``).
  The metrics never produce NaN (see :mod:`wmhflow.evaluation.metrics`), so ``_n`` equals ``subjects`` unless
  an input row was edited by hand.
- ``model_comparison.tsv`` (the paper's Table 2): one row per model variant found in the metrics
  tables, with ``subjects`` and the mean of each metric. When the variants were not all evaluated on
  the same subjects, only the subjects every variant has are compared (logged), so the rows differ
  by model and not by cohort.
- ``lesion_volumes.tsv``: one row per segmented subject (test and predict alike, with a reference
  or not): subject, site, split, model, total lesion volume (mL) and lesion count from the lesion
  tables. A subject whose lesion table is empty has volume 0 and count 0; subjects that were not
  segmented (train) are not listed. The segmented subjects are the ones whose lesion tables were
  given, known by the ``subject`` column or, for an empty table, by the ``sub-<id>_`` file name.

Every table is written even when there is nothing to summarise (a header only), so downstream
steps (``wmhflow plot``) always find a readable file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..evaluation.metrics import KEYS, METRICS
from ..io import atomic_output
from ..paths import GROUP_FILES, subject_session

log = logging.getLogger(__name__)
METRICS = list(METRICS)
ID_COLUMNS = ["subject", "site", "split", "model"]
_TEXT = {c: str for c in ID_COLUMNS + ["session", "remarks"]}
SUMMARY_COLUMNS = ["model", "site", "subjects"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "median", "n")]
VOLUME_COLUMNS = ["subject", "site", "split", "model", "lesion_volume_ml", "lesion_count"]
_SESSION_MARK = "_ses-"


def fold_sessions(frame: pd.DataFrame) -> pd.DataFrame:
    """One id per row for the functions below: ``subject`` becomes ``<subject>_ses-<session>`` where
    there is a session (and the session column goes); :func:`unfold_sessions` undoes it for writing."""
    if "session" not in frame or not len(frame):
        return frame.drop(columns="session", errors="ignore")
    frame = frame.copy()
    session = frame["session"].fillna("").astype(str)
    frame["subject"] = (
        frame["subject"].astype(str).where(session == "", frame["subject"].astype(str) + _SESSION_MARK + session)
    )
    return frame.drop(columns="session")


def unfold_sessions(frame: pd.DataFrame) -> pd.DataFrame:
    """``subject`` and ``session`` columns again (session "" for none), session second."""
    frame = frame.copy()
    parts = frame["subject"].astype(str).str.split(_SESSION_MARK, n=1, expand=True) if len(frame) else None
    frame["subject"] = parts[0] if parts is not None else frame["subject"]
    session = parts[1].fillna("") if parts is not None and parts.shape[1] > 1 else ""
    frame.insert(1, "session", session)
    return frame


def read_tsv(path) -> pd.DataFrame:
    """A TSV with text identifier columns; an empty file is an empty table."""
    try:
        return pd.read_csv(path, sep="\t", dtype=_TEXT, keep_default_na=True)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a readable TSV table ({type(exc).__name__}: {exc})") from None


def read_tables(paths) -> pd.DataFrame:
    frames = [f for f in (read_tsv(p) for p in paths) if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def complete_metrics(metrics: pd.DataFrame, subjects: pd.DataFrame | None = None, model: str = "") -> pd.DataFrame:
    """Metrics rows with every identifying column (filled in where missing), ids first."""
    table = metrics.copy()
    if not len(table):
        return pd.DataFrame(columns=ID_COLUMNS + list(KEYS))
    if "subject" not in table:
        raise ValueError("metrics tables need a 'subject' column (wmhflow evaluate --subject)")
    lookup = subjects.set_index("subject") if subjects is not None and "subject" in subjects else None
    for column in ("site", "split"):
        known = table[column] if column in table else pd.Series(np.nan, index=table.index, dtype=object)
        if lookup is not None and column in lookup:
            known = known.fillna(table["subject"].map(lookup[column]))
        table[column] = known
    table["site"] = table["site"].fillna("unknown")  # grouped by site: no row may fall out of the summary
    table["model"] = table["model"].fillna(model) if "model" in table else model
    return table[ID_COLUMNS + [c for c in table.columns if c not in ID_COLUMNS]]


def _in_split(metrics: pd.DataFrame, split: str) -> pd.DataFrame:
    return metrics[metrics["split"] == split] if split and "split" in metrics else metrics


def summarize(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per model and site: mean, std, median and count of each metric; plus 'all sites', the
    subject-weighted average of the site means (the paper's Table 3)."""
    table = _in_split(metrics, split)
    rows = []
    for model, by_model in table.groupby("model", sort=True):
        site_rows = []
        for site, group in by_model.groupby("site", sort=True):
            row = {"model": model, "site": site, "subjects": len(group)}
            for metric in METRICS:
                values = pd.to_numeric(group[metric], errors="coerce").dropna()
                row[f"{metric}_mean"] = values.mean() if len(values) else np.nan
                row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
                row[f"{metric}_median"] = values.median() if len(values) else np.nan
                row[f"{metric}_n"] = len(values)
            site_rows.append(row)
        total = {"model": model, "site": "all sites", "subjects": len(by_model)}
        for metric in METRICS:
            weights = np.array([r[f"{metric}_n"] for r in site_rows], float)
            means = np.array([r[f"{metric}_mean"] for r in site_rows], float)
            values = pd.to_numeric(by_model[metric], errors="coerce").dropna()
            total[f"{metric}_mean"] = (
                float(np.sum(weights[weights > 0] * means[weights > 0]) / weights.sum()) if weights.sum() else np.nan
            )
            total[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
            total[f"{metric}_median"] = values.median() if len(values) else np.nan
            total[f"{metric}_n"] = int(weights.sum())
        rows.extend(site_rows + [total])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def compare_models(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """One row per model variant: subjects and the mean of each metric (the paper's Table 2), over
    the subjects every variant was evaluated on."""
    table = _in_split(metrics, split)
    columns = ["model", "subjects"] + METRICS
    if not len(table):
        return pd.DataFrame(columns=columns)
    per_model = {m: set(g["subject"]) for m, g in table.groupby("model", sort=True)}
    common = set.intersection(*per_model.values())
    if any(s != common for s in per_model.values()):
        log.warning("model variants were evaluated on different subjects: comparing on the %d they share", len(common))
        table = table[table["subject"].isin(common)]
    rows = []
    for model in per_model:
        group = table[table["model"] == model]
        row = {"model": model, "subjects": len(group)}
        row.update({m: pd.to_numeric(group[m], errors="coerce").mean() for m in METRICS})
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def read_lesion_tables(paths):
    """(all lesion rows, the subjects these tables are of), subjects in the order of the paths."""
    frames, subjects = [], []
    for path in paths:
        frame = fold_sessions(read_tsv(path))
        found = subject_session(Path(path).name)
        named = (found[0] + (_SESSION_MARK + found[1] if found[1] else "")) if found else None
        if len(frame):
            if "subject" not in frame or frame["subject"].isna().all():
                if named is None:
                    raise InputError(path, "lesion table without a subject column or a sub-<id>_ file name")
                frame["subject"] = named
            subjects.extend(frame["subject"].dropna().unique())
            frames.append(frame)
        elif named is not None:
            subjects.append(named)
        else:
            raise InputError(path, "empty lesion table without a sub-<id>_ file name: whose is it?")
    lesions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["subject", "volume_ml"])
    return lesions, list(dict.fromkeys(subjects))


def lesion_volumes(lesion_tables: pd.DataFrame, subjects: pd.DataFrame, model: str, segmented=None) -> pd.DataFrame:
    """Total lesion volume and count per segmented subject, subjects without any lesion included.

    ``segmented``: the subjects to list (default: those of ``subjects`` in the test or predict
    split, the ones the workflow segments)."""
    if segmented is None:
        chosen = subjects[subjects["split"].isin(["test", "predict"])] if "split" in subjects else subjects
        segmented = list(chosen["subject"])
    if len(lesion_tables):
        per = lesion_tables.groupby("subject").agg(
            lesion_volume_ml=("volume_ml", "sum"), lesion_count=("volume_ml", "size")
        )
    else:
        per = pd.DataFrame(columns=["lesion_volume_ml", "lesion_count"])
    info = subjects.set_index("subject") if "subject" in subjects else pd.DataFrame()
    rows = []
    for subject in segmented:
        rows.append(
            {
                "subject": subject,
                "site": info.at[subject, "site"] if subject in info.index and "site" in info else np.nan,
                "split": info.at[subject, "split"] if subject in info.index and "split" in info else np.nan,
                "model": model,
                "lesion_volume_ml": float(per.at[subject, "lesion_volume_ml"]) if subject in per.index else 0.0,
                "lesion_count": int(per.at[subject, "lesion_count"]) if subject in per.index else 0,
            }
        )
    return pd.DataFrame(rows, columns=VOLUME_COLUMNS)


def write_tsv(frame: pd.DataFrame, path) -> None:
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g", na_rep="NaN")


def add_arguments(parser) -> None:
    parser.add_argument("--metrics", nargs="*", default=[], help="per-subject metrics TSVs (any model variants)")
    parser.add_argument("--lesions", nargs="*", default=[], help="per-subject lesion TSVs")
    parser.add_argument("--subjects", required=True, help="subjects TSV (subject, site, split)")
    parser.add_argument("--model", required=True, help="model of the lesion tables (and of metrics rows without one)")
    parser.add_argument("--split", default="test", help="split the summary is computed on")
    parser.add_argument("--out-dir", required=True, help="group/ folder")


def main(args) -> int:
    out_dir = Path(args.out_dir)
    subjects = read_tsv(args.subjects)
    if "subject" not in subjects:
        raise InputError(args.subjects, "subjects table without a 'subject' column")
    subjects = fold_sessions(subjects)
    metrics = complete_metrics(fold_sessions(read_tables(args.metrics)), subjects, args.model)
    lesions, segmented = read_lesion_tables(args.lesions)
    # everything is read and checked before anything is written
    write_tsv(unfold_sessions(metrics), out_dir / GROUP_FILES["metrics"])
    write_tsv(summarize(metrics, args.split), out_dir / GROUP_FILES["summary"])
    write_tsv(compare_models(metrics, args.split), out_dir / GROUP_FILES["comparison"])
    volumes = lesion_volumes(lesions, subjects, args.model, segmented)
    write_tsv(unfold_sessions(volumes), out_dir / GROUP_FILES["volumes"])
    log.info(
        "group tables of %d evaluated and %d segmented subject(s) written to %s", len(metrics), len(segmented), out_dir
    )
    return 0
