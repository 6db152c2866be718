"""Box plots of each metric per site (the paper's Fig. 6)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_output  # noqa: E402

LABELS = {"dice": "Dice ↑", "h95_mm": "H95 (mm) ↓", "avd_pct": "AVD (%) ↓", "lesion_recall": "Lesion recall ↑",
          "lesion_f1": "Lesion F1 ↑"}


def metric_boxplots(metrics: pd.DataFrame, path, split: str = "test") -> None:
    table = metrics[metrics["split"] == split] if split and "split" in metrics and len(metrics) else metrics
    sites = sorted(table["site"].unique()) if len(table) else []
    fig, axes = plt.subplots(1, len(LABELS), figsize=(3.2 * len(LABELS), 3.6))
    for ax, (metric, label) in zip(axes, LABELS.items()):
        data = [pd.to_numeric(table.loc[table["site"] == s, metric], errors="coerce").dropna() for s in sites]
        if sites:
            ax.boxplot(data, tick_labels=sites, showmeans=True)
            ax.tick_params(axis="x", rotation=30)
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    models = ", ".join(sorted(table["model"].unique())) if len(table) else "no evaluated subject"
    fig.suptitle(f"Challenge metrics per site ({split} subjects; model {models})")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def add_arguments(parser) -> None:
    parser.add_argument("--metrics", required=True, help="group/metrics.tsv")
    parser.add_argument("--split", default="test")
    parser.add_argument("-o", "--output", required=True)


def main(args) -> int:
    metrics = pd.read_csv(args.metrics, sep="\t", dtype={"subject": str, "site": str})
    metric_boxplots(metrics, args.output, args.split)
    return 0
