"""``wmhflow plot``: box plots of each challenge metric per site (the paper's Fig. 6).

One panel per metric (Dice, H95, AVD, lesion recall, lesion F1), one box per site over the
``--split`` subjects (default ``test``), with the mean marked. With several model variants in the
table, each site gets one box per variant side by side, coloured by variant with a legend. A table
without any subject of that split still gives a picture (empty panels, saying so), so the workflow
never fails on a cohort without test subjects.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_output  # noqa: E402
from .aggregate import read_tsv  # noqa: E402

LABELS = {
    "dice": "Dice ↑",
    "h95_mm": "H95 (mm) ↓",
    "avd_pct": "AVD (%) ↓",
    "lesion_recall": "Lesion recall ↑",
    "lesion_f1": "Lesion F1 ↑",
}


def metric_boxplots(metrics: pd.DataFrame, path, split: str = "test") -> None:
    table = metrics[metrics["split"] == split] if split and "split" in metrics and len(metrics) else metrics
    sites = sorted(table["site"].dropna().unique()) if len(table) else []
    models = sorted(table["model"].dropna().unique()) if len(table) and "model" in table else [""]
    width = 0.8 / max(len(models), 1)
    colours = plt.get_cmap("tab10")
    panel_width = max(3.2, 1.0 + 0.5 * len(sites) * len(models))
    fig, axes = plt.subplots(1, len(LABELS), figsize=(panel_width * len(LABELS), 3.8))
    for ax, (metric, label) in zip(axes, LABELS.items()):
        for m, model in enumerate(models if metric in table else []):
            chosen = table if not model else table[table["model"] == model]
            data = [pd.to_numeric(chosen.loc[chosen["site"] == s, metric], errors="coerce").dropna() for s in sites]
            positions = np.arange(len(sites)) + (m - (len(models) - 1) / 2) * width
            keep = [i for i, d in enumerate(data) if len(d)]
            if not keep:
                continue
            boxes = ax.boxplot(
                [data[i] for i in keep],
                positions=positions[keep],
                widths=width * 0.85,
                showmeans=True,
                patch_artist=True,
                manage_ticks=False,
                medianprops={"color": "black"},
            )
            for patch in boxes["boxes"]:
                patch.set_facecolor(colours(m % 10))
                patch.set_alpha(0.6)
        ax.set_xticks(np.arange(len(sites)), sites, rotation=30, ha="right")
        if not sites:
            ax.text(
                0.5,
                0.5,
                f"no {split} subject" if split else "no subject",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    if len(models) > 1:
        handles = [plt.Rectangle((0, 0), 1, 1, facecolor=colours(m % 10), alpha=0.6) for m in range(len(models))]
        fig.legend(handles, models, loc="lower center", ncol=len(models), title="model", frameon=False)
    names = ", ".join(m for m in models if m) or "none"
    fig.suptitle(f"Challenge metrics per site ({split or 'all'} subjects; model {names})")
    fig.tight_layout(rect=(0, 0.12 if len(models) > 1 else 0, 1, 1))
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def add_arguments(parser) -> None:
    parser.add_argument("--metrics", required=True, help="group/metrics.tsv")
    parser.add_argument("--split", default="test")
    parser.add_argument("-o", "--output", required=True)


def main(args) -> int:
    metrics = read_tsv(args.metrics)
    metric_boxplots(metrics, args.output, args.split)
    return 0
