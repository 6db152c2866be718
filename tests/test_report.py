"""Cohort tables, box plots and QC pictures on small hand-made inputs with known answers."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from conftest import write_nifti

from wmhflow.cli import main as cli
from wmhflow.report.aggregate import compare_models, complete_metrics, lesion_volumes, read_tsv, summarize
from wmhflow.report.plots import metric_boxplots
from wmhflow.report.qc import choose_slices, qc_figure

METRICS = ["dice", "h95_mm", "avd_pct", "lesion_recall", "lesion_f1"]


def metrics_table(model="fcn", dice=(0.5, 0.7, 0.9, 0.6), subjects=("1", "2", "3", "4")):
    return pd.DataFrame(
        {
            "subject": list(subjects),
            "site": ["A", "A", "A", "B"][: len(subjects)],
            "split": "test",
            "model": model,
            "dice": list(dice),
            "h95_mm": [1.0, 3.0, 8.0, 4.0][: len(subjects)],
            "avd_pct": [10.0, 20.0, 30.0, 50.0][: len(subjects)],
            "lesion_recall": [0.5, 0.5, 1.0, 0.25][: len(subjects)],
            "lesion_f1": [0.4, 0.6, 0.8, 0.2][: len(subjects)],
        }
    )


# ---------------------------------------------------------------------------- summary (Table 3)
def test_summary_per_site_mean_std_median_and_weighted_average():
    metrics = pd.concat([metrics_table(), metrics_table().assign(subject=["9"] * 4, split="train", dice=0.0)])
    summary = summarize(metrics).set_index("site")
    assert list(summary.index) == ["A", "B", "all sites"]
    a, b, total = summary.loc["A"], summary.loc["B"], summary.loc["all sites"]
    assert (a["subjects"], b["subjects"], total["subjects"]) == (3, 1, 4)  # train rows left out
    assert a["dice_mean"] == pytest.approx(0.7) and a["dice_median"] == pytest.approx(0.7)
    assert a["dice_std"] == pytest.approx(0.2)  # sample std of 0.5, 0.7, 0.9
    assert a["h95_mm_median"] == pytest.approx(3.0) and a["h95_mm_mean"] == pytest.approx(4.0)
    assert b["dice_mean"] == pytest.approx(0.6) and np.isnan(b["dice_std"]) and b["dice_n"] == 1
    # subject-weighted average of the site means: (3 * 0.7 + 1 * 0.6) / 4, not (0.7 + 0.6) / 2
    assert total["dice_mean"] == pytest.approx((3 * 0.7 + 0.6) / 4)
    assert total["avd_pct_mean"] == pytest.approx((3 * 20.0 + 50.0) / 4)
    assert total["dice_median"] == pytest.approx(0.65)
    assert total["dice_std"] == pytest.approx(np.std([0.5, 0.7, 0.9, 0.6], ddof=1))
    assert total["lesion_f1_n"] == 4


def test_summary_weights_use_defined_values_only():
    metrics = metrics_table()
    metrics.loc[0, "h95_mm"] = np.nan  # a hand-edited row: undefined value
    total = summarize(metrics).set_index("site").loc["all sites"]
    assert total["h95_mm_n"] == 3 and total["h95_mm_mean"] == pytest.approx((3.0 + 8.0 + 4.0) / 3)


# ------------------------------------------------------------------------- comparison (Table 2)
def test_comparison_table_with_two_models():
    metrics = pd.concat([metrics_table("fcn"), metrics_table("tophat", dice=(0.6, 0.8, 1.0, 0.8))])
    table = compare_models(metrics).set_index("model")
    assert list(table.index) == ["fcn", "tophat"] and list(table.columns) == ["subjects"] + METRICS
    assert table.loc["fcn", "dice"] == pytest.approx(0.675) and table.loc["tophat", "dice"] == pytest.approx(0.8)
    assert table.loc["fcn", "avd_pct"] == pytest.approx(27.5) and (table["subjects"] == 4).all()
    # a variant evaluated on fewer subjects: both are compared on the subjects they share
    partial = pd.concat([metrics_table("fcn"), metrics_table("tophat", dice=(0.6, 0.8), subjects=("1", "2"))])
    table = compare_models(partial).set_index("model")
    assert (table["subjects"] == 2).all() and table.loc["fcn", "dice"] == pytest.approx(0.6)


def test_complete_metrics_fills_identifiers():
    subjects = pd.DataFrame({"subject": ["1", "2"], "site": ["A", "B"], "split": ["test", "test"]})
    rows = pd.DataFrame({"subject": ["1", "2"], "dice": [0.5, 0.6]})
    table = complete_metrics(rows, subjects, "fcn")
    assert list(table.columns[:4]) == ["subject", "site", "split", "model"]
    assert list(table["site"]) == ["A", "B"] and (table["model"] == "fcn").all()


# ------------------------------------------------------------------------------ lesion volumes
def test_lesion_volumes_lists_segmented_subjects_only():
    subjects = pd.DataFrame(
        {
            "subject": ["1", "2", "3", "4"],
            "site": ["A", "A", "B", "B"],
            "split": ["train", "test", "predict", "predict"],
        }
    )
    lesions = pd.DataFrame({"subject": ["2", "2", "3"], "lesion_id": [1, 2, 1], "volume_ml": [0.5, 0.25, 1.0]})
    table = lesion_volumes(lesions, subjects, "fcn").set_index("subject")
    assert list(table.index) == ["2", "3", "4"]  # train subject 1 was not segmented
    assert table.loc["2", "lesion_volume_ml"] == pytest.approx(0.75) and table.loc["2", "lesion_count"] == 2
    assert table.loc["4", "lesion_volume_ml"] == 0 and table.loc["4", "lesion_count"] == 0
    assert table.loc["3", "split"] == "predict" and (table["model"] == "fcn").all()


def test_aggregate_cli_writes_every_table(tmp_path):
    subjects = pd.DataFrame(
        {
            "subject": ["1", "2", "3", "4", "5"],
            "site": ["A", "A", "A", "B", "B"],
            "split": ["test", "test", "test", "test", "predict"],
            "reference": ["r"] * 4 + [""],
        }
    )
    subjects.to_csv(tmp_path / "subjects.tsv", sep="\t", index=False)
    metric_files = []
    for _, row in metrics_table().iterrows():
        path = tmp_path / f"sub-{row['subject']}_desc-fcn_metrics.tsv"
        row.drop(["site"]).to_frame().T.to_csv(path, sep="\t", index=False)  # site comes from subjects.tsv
        metric_files.append(path)
    lesion_files = []
    for subject, volumes in (("1", [0.5]), ("2", []), ("3", [0.1, 0.2]), ("4", []), ("5", [2.0])):
        path = tmp_path / f"sub-{subject}_desc-fcn_lesions.tsv"
        pd.DataFrame(
            {"subject": subject, "lesion_id": range(1, len(volumes) + 1), "voxels": 1, "volume_ml": volumes}
        ).to_csv(path, sep="\t", index=False)
        lesion_files.append(path)
    out = tmp_path / "group"
    assert (
        cli(
            [
                "aggregate",
                "--metrics",
                *map(str, metric_files),
                "--lesions",
                *map(str, lesion_files),
                "--subjects",
                str(tmp_path / "subjects.tsv"),
                "--model",
                "fcn",
                "--out-dir",
                str(out),
            ]
        )
        == 0
    )
    metrics = read_tsv(out / "metrics.tsv")
    assert len(metrics) == 4 and list(metrics["site"]) == ["A", "A", "A", "B"]
    summary = read_tsv(out / "summary.tsv").set_index("site")
    assert summary.loc["all sites", "dice_mean"] == pytest.approx(0.675)
    volumes = read_tsv(out / "lesion_volumes.tsv").set_index("subject")
    assert list(volumes.index) == ["1", "2", "3", "4", "5"]
    assert volumes.loc["3", "lesion_volume_ml"] == pytest.approx(0.3) and volumes.loc["2", "lesion_count"] == 0
    assert volumes.loc["5", "split"] == "predict" and volumes.loc["5", "lesion_volume_ml"] == pytest.approx(2.0)
    assert len(read_tsv(out / "model_comparison.tsv")) == 1
    # no test subject at all: header-only tables that the plot step can still read
    empty = tmp_path / "empty"
    assert (
        cli(
            [
                "aggregate",
                "--metrics",
                "--lesions",
                "--subjects",
                str(tmp_path / "subjects.tsv"),
                "--model",
                "fcn",
                "--out-dir",
                str(empty),
            ]
        )
        == 0
    )
    assert list(read_tsv(empty / "summary.tsv").columns[:3]) == ["model", "site", "subjects"]
    assert cli(["plot", "--metrics", str(empty / "metrics.tsv"), "-o", str(empty / "box.png")]) == 0
    assert (empty / "box.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -------------------------------------------------------------------------------- box plots
def test_box_plots_are_written_for_one_and_two_models(tmp_path):
    one = tmp_path / "one.png"
    metric_boxplots(metrics_table(), one)
    image = mpimg.imread(one)
    assert one.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[1] > image.shape[0] > 100
    two = tmp_path / "two.png"
    metric_boxplots(pd.concat([metrics_table("fcn"), metrics_table("tophat", dice=(0.6, 0.8, 1.0, 0.8))]), two)
    assert two.stat().st_size > 0


# --------------------------------------------------------------------------------------- QC
def colour_masks(png):
    rgb = mpimg.imread(png)[..., :3]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return {
        "yellow": (r > 0.9) & (g > 0.9) & (b < 0.1),
        "green": (r < 0.1) & (g > 0.7) & (g < 0.9) & (b < 0.1),
        "red": (r > 0.9) & (g < 0.1) & (b < 0.1),
    }


def centre(mask):
    rows, cols = np.nonzero(mask)
    return rows.mean(), cols.mean()


@pytest.mark.parametrize("flip", [False, True], ids=["RAS", "LPS-stored"])
def test_qc_colours_are_where_the_lesions_are(tmp_path, flip):
    shape = (40, 40, 5)
    flair = np.full(shape, 100.0, np.float32)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    ref[28:34, 18:22, 2] = pred[28:34, 18:22, 2] = 1  # patient's right (high x): true positive
    ref[6:12, 18:22, 2] = 1  # patient's left: missed
    pred[18:22, 32:36, 2] = 1  # anterior (high y): false positive
    ref[18:22, 4:8, 2] = 2  # other pathology, predicted: neither true nor false
    pred[18:22, 4:8, 2] = 1
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    if flip:  # the same head stored with i running right-to-left and j anterior-to-posterior
        flair, ref, pred = (v[::-1, ::-1, :].copy() for v in (flair, ref, pred))
        affine = np.array([[-1.0, 0, 0, 39.0], [0, -1.0, 0, 39.0], [0, 0, 3.0, 0], [0, 0, 0, 1]])
    volumes = (("flair", flair), ("ref", ref), ("mask", pred))
    paths = [write_nifti(tmp_path / f"{n}.nii.gz", v, affine) for n, v in volumes]
    out = tmp_path / "qc.png"
    qc_figure(paths[0], paths[2], paths[1], out, title="sub-1", slices=1)
    found = colour_masks(out)
    assert all(found[c].sum() > 20 for c in ("yellow", "green", "red"))
    (y_row, y_col), (g_row, g_col), (r_row, r_col) = (centre(found[c]) for c in ("yellow", "green", "red"))
    assert y_col < g_col  # radiological view: the patient's right on the picture's left
    assert r_row < min(y_row, g_row)  # anterior up
    assert abs(y_row - g_row) < 3
    # the label-2 region is not drawn: red only at the false positive (one cluster above the others)
    red_rows, red_cols = np.nonzero(found["red"])
    assert red_cols.max() - red_cols.min() < (g_col - y_col)


def test_qc_without_reference_draws_the_predicted_outline(tmp_path):
    shape = (30, 30, 6)
    flair = np.random.default_rng(0).uniform(50, 150, shape).astype(np.float32)
    pred = np.zeros(shape, np.float32)
    pred[10:20, 10:20, 4] = 0.9  # a probability map works as a mask too (>= 0.5)
    pred[2, 2, 1] = 0.3  # below 0.5: not a lesion
    paths = [write_nifti(tmp_path / f"{n}.nii.gz", v) for n, v in (("flair", flair), ("mask", pred))]
    out = tmp_path / "qc.png"
    assert (
        cli(
            [
                "qc",
                "--flair",
                str(paths[0]),
                "--mask",
                str(paths[1]),
                "--reference",
                "",
                "--title",
                "sub-2",
                "--slices",
                "3",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    found = colour_masks(out)
    assert found["red"].sum() > 20 and found["yellow"].sum() == 0 and found["green"].sum() == 0
    rows, cols = np.nonzero(found["red"])
    # an outline: the centre of the square is not red
    assert not found["red"][int(rows.mean()), int(cols.mean())]


def test_slices_with_the_most_lesion_are_chosen():
    lesion = np.zeros((5, 5, 8), bool)
    lesion[:3, :3, 6] = True
    lesion[:2, :2, 1] = True
    lesion[0, 0, 4] = True
    assert choose_slices(lesion, 2) == [1, 6]
    assert choose_slices(lesion, 5) == [1, 4, 6]  # only slices with lesion
    assert choose_slices(np.zeros((5, 5, 8), bool), 3) == [4]
