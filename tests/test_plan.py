"""The workflow's plan (output names and targets) without Snakemake."""

from __future__ import annotations

import json
import os
import sys

import pandas as pd
import pytest

from wmhflow.errors import ConfigError
from wmhflow.paths import prefix
from wmhflow.plan import Plan, prepare_rule_environment


def _plan(tmp_path, checkpoint=None, name="fcn2d", channels="flair,t1,tophat", t1=("t1", "t2", "t3", "t4")):
    labels = ["01", "02", "03", "04"]
    subjects = pd.DataFrame(
        {
            "subject": labels,
            "session": "",
            "site": ["A", "A", "B", "B"],
            "flair": ["f1", "f2", "f3", "f4"],
            "t1": list(t1),
            "reference": ["r1", "r2", "r3", ""],
            "split": ["train", "test", "test", "predict"],
        },
        index=pd.Index([prefix(s) for s in labels], name="prefix"),
    )
    config = {
        "results": str(tmp_path / "results"),
        "model": {"name": name, "checkpoint": checkpoint, "channels": channels},
    }
    return Plan(config, subjects)


def test_targets_follow_the_splits(tmp_path):
    plan = _plan(tmp_path)
    assert len(plan.preprocess_targets()) == 4 * 6
    assert plan.subjects_in("test", "predict") == ["sub-02/anat/sub-02", "sub-03/anat/sub-03", "sub-04/anat/sub-04"]
    assert [p.split("/")[-1] for p in plan.metrics_files()] == [
        "sub-02_desc-fcn2d_metrics.tsv",
        "sub-03_desc-fcn2d_metrics.tsv",
    ]
    assert len(plan.lesion_files()) == 3 and len(plan.segment_targets()) == 6
    assert plan.training_inputs("reference") == ["r1"]
    assert plan.training_inputs("tophat")[0].endswith("sub-01/anat/sub-01_space-FLAIR_desc-tophat_FLAIR.nii.gz")
    assert plan.mask("sub-02/ses-1/anat/sub-02_ses-1").endswith(
        "sub-02/ses-1/anat/sub-02_ses-1_space-FLAIR_label-WMH_desc-fcn2d_mask.nii.gz"
    )


def test_flair_only_plan_has_no_t1_step_and_accepts_subjects_without_t1(tmp_path):
    plan = _plan(tmp_path, channels="flair-3slice", t1=("", "", "t3", ""))
    assert len(plan.preprocess_targets()) == 4 * 3
    assert not any("T1w" in p for p in plan.all_targets())
    assert plan.training_inputs("t1") == [] and plan.fcn_input("t1") == []


def test_a_subject_without_t1_stops_a_plan_that_needs_one(tmp_path):
    with pytest.raises(ConfigError, match=r"model.channels.*sub-02 has none.*flair-3slice"):
        _plan(tmp_path, t1=("t1", "", "t3", "t4"))


def test_dataset_description_names_code_config_and_source(tmp_path):
    plan = _plan(tmp_path)
    (tmp_path / "cohort").mkdir()
    plan.write_dataset_files(tmp_path / "cohort")
    description = json.loads((tmp_path / "results/dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "wmhflow"
    assert description["DatasetLinks"]["raw"] == (tmp_path / "cohort").as_uri()
    assert "sha256" in description["GeneratedBy"][0]["Description"]
    ignored = (tmp_path / "results/.bidsignore").read_text().split()
    assert {"/group", "/logs", "/models", "/benchmarks", "/checks"} <= set(ignored)
    other = _plan(tmp_path, name="other")
    other.write_dataset_files(tmp_path / "cohort")  # another configuration: another checksum
    assert json.loads((tmp_path / "results/dataset_description.json").read_text()) != description
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
    session = tmp_path / "results/sub-02/ses-1/anat/sub-02_ses-1_desc-notophat_metrics.tsv"  # not in the cohort
    session.parent.mkdir(parents=True)
    session.write_text("x\n")
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


def test_per_job_lookups_return_the_subjects_table_values(tmp_path):
    """The input/params functions Snakemake calls per job read the table's values (dicts built once)."""
    plan = _plan(tmp_path, channels="flair-3slice", t1=("t1", "", "t3", ""))

    class Wildcards:
        def __init__(self, subject, modality="FLAIR"):
            self.subject, self.modality = subject, modality

    for key, row in plan.subjects.iterrows():
        for column in ("flair", "t1", "reference", "site", "split", "subject", "session"):
            assert plan.subject_column(column)(Wildcards(key)) == row[column]
        assert plan.optional_subject_file("t1")(Wildcards(key)) == (row["t1"] or [])
        assert plan.n4_input(Wildcards(key)) == row["flair"]
        assert plan.n4_input(Wildcards(key, "T1w")) == plan.out(key, "T1w", desc="aligned")
    assert plan.subjects_in("train", "test") == ["sub-01/anat/sub-01", "sub-02/anat/sub-02", "sub-03/anat/sub-03"]


def test_output_names_are_the_bids_names_whatever_order_they_are_asked_in(tmp_path):
    from wmhflow.paths import derivative_name

    plan = _plan(tmp_path)
    kinds = [
        ("FLAIR", ".nii.gz", {"desc": "n4"}),
        ("T1w", ".nii.gz", {"desc": "n4"}),
        ("mask", ".nii.gz", {"label": "WMH", "desc": "fcn2d"}),
        ("mask", ".nii.gz", {"desc": "fcn2d", "label": "WMH"}),
        ("metrics", ".tsv", {"desc": "fcn2d"}),
        ("qc", ".png", {"desc": "x"}),
        ("lesions", ".tsv", {}),
    ]
    for key in list(plan.subjects.index) + ["sub-9/ses-2/anat/sub-9_ses-2_acq-ax"]:
        for suffix, ext, entities in kinds + kinds[::-1]:  # the second pass reads the cached name parts
            assert (
                plan.out(key, suffix, ext, **entities)
                == f"{plan.results}/{derivative_name(key, suffix, ext, **entities)}"
            )
    with pytest.raises(ValueError, match="unknown BIDS entity"):
        plan.out("sub-01/anat/sub-01", "FLAIR", foo="bar")


def test_rules_spell_no_output_path_themselves():
    """Every output, log and benchmark name comes from the Plan (or its short names out/log/bench):
    a path typed into a rule file would be a second spelling that Plan's targets do not follow."""
    import re
    from pathlib import Path

    rules = Path(__file__).resolve().parent.parent / "workflow" / "rules"
    typed = re.compile(r"""f?["'][^"'\n]*(\{RESULTS\}|\{GROUP\}|model_dir\}|/logs/|/benchmarks/|group/)""")
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(rules.glob("*.smk"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if typed.search(line) and not line.lstrip().startswith("#")
    ]
    assert not found, found


def test_one_log_scheme():
    """A rule's logs and benchmarks sit under its own name: logs/<rule>/[<model>/]... A name glued
    together from the rule and the model (log(f"infer_{MODEL}")) would be a second scheme."""
    import re
    from pathlib import Path

    rules = Path(__file__).resolve().parent.parent / "workflow" / "rules"
    glued = re.compile(r"""\b(log|bench|model_log|model_bench)\(f["']""")
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(rules.glob("*.smk"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if glued.search(line)
    ]
    assert not found, found


def test_each_rule_is_named_after_the_verb_it_runs():
    """Rule infer runs `wmhflow infer`, bias_correct_FLAIR runs `wmhflow bias-correct`: the rule's
    name starts with its verb, so a log folder or a SLURM job name says which command ran."""
    import re
    from pathlib import Path

    rules = Path(__file__).resolve().parent.parent / "workflow" / "rules"
    mismatched = []
    for path in sorted(rules.glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", path.read_text(), re.MULTILINE):
            verbs = re.findall(r"wmhflow ([a-z][a-z0-9-]*)", body)
            if verbs == ["steps"]:  # several verbs in one job (preprocess_subject): named for what they make
                continue
            if verbs and not name.startswith(verbs[0].replace("-", "_")):
                mismatched.append(f"{path.name}: rule {name} runs wmhflow {verbs[0]}")
    assert not mismatched, mismatched
