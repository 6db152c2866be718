"""The workflow's plan (output names and targets) without Snakemake."""

from __future__ import annotations

import os
import sys

import pandas as pd

from wmhflow.plan import Plan, prepare_rule_environment


def _plan(tmp_path, checkpoint=None, name="fcn2d"):
    subjects = pd.DataFrame(
        {"site": ["A", "A", "B", "B"], "flair": ["f1", "f2", "f3", "f4"], "t1": ["t1", "t2", "t3", "t4"],
         "reference": ["r1", "r2", "r3", ""], "split": ["train", "test", "test", "predict"]},
        index=pd.Index(["01", "02", "03", "04"], name="subject"))
    config = {"results": str(tmp_path / "results"), "model": {"name": name, "checkpoint": checkpoint}}
    return Plan(config, subjects)


def test_targets_follow_the_splits(tmp_path):
    plan = _plan(tmp_path)
    assert len(plan.preprocess_targets()) == 4 * 6
    assert plan.subjects_in("test", "predict") == ["02", "03", "04"]
    assert [p.split("/")[-1] for p in plan.metrics_files()] == ["sub-02_desc-fcn2d_metrics.tsv",
                                                                "sub-03_desc-fcn2d_metrics.tsv"]
    assert len(plan.lesion_files()) == 3 and len(plan.segment_targets()) == 6
    assert plan.training_inputs("reference") == ["r1"]
    assert plan.training_inputs("tophat")[0].endswith("sub-01/anat/sub-01_desc-tophat_FLAIR.nii.gz")
    assert plan.model_file().endswith("models/fcn2d/model.pt") and plan.model_targets()
    assert set(plan.all_targets()) >= set(plan.report_targets())


def test_an_existing_model_means_no_training(tmp_path):
    plan = _plan(tmp_path, checkpoint="/models/m.pt")
    assert plan.model_file() == "/models/m.pt" and plan.model_targets() == []
    assert not any("models/" in p for p in plan.all_targets())


def test_other_variants_metrics_are_found_but_not_this_one(tmp_path):
    plan = _plan(tmp_path)
    for subject, variant in (("02", "fcn2d"), ("02", "notophat"), ("03", "notophat"), ("99", "notophat")):
        path = tmp_path / "results" / f"sub-{subject}" / "anat" / f"sub-{subject}_desc-{variant}_metrics.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    found = [p.split("/")[-1] for p in plan.other_variant_metrics()]
    assert found == ["sub-02_desc-notophat_metrics.tsv", "sub-03_desc-notophat_metrics.tsv"]  # 99: not in cohort


def test_rule_environment_puts_this_python_first(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("WMHFLOW_SOURCE", raising=False)
    prepare_rule_environment(tmp_path)
    assert os.environ["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert os.environ["WMHFLOW_SOURCE"] == str(tmp_path)
    prepare_rule_environment(tmp_path)  # idempotent
    assert os.environ["PATH"].count(os.path.dirname(sys.executable)) == 1
