"""Rule all names only Plan.all_rule_inputs(): the DAG must still hold the job of every target."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from snakemake.utils import update_config
from test_workflow import snakemake

from wmhflow.plan import Plan
from wmhflow.workflow_subjects import subjects_for_workflow


def _cohort(root, subjects=7, without_reference=(0, 4)):
    """A WMH-challenge tree of tiny files (planning reads names only); two subjects without a reference
    (split predict), the others train or test."""
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
    for i in range(subjects):
        folder = root / ("Utrecht", "Singapore")[i % 2] / str(i)
        (folder / "pre").mkdir(parents=True)
        names = ["pre/FLAIR.nii.gz", "pre/T1.nii.gz"] + ([] if i in without_reference else ["wmh.nii.gz"])
        for name in names:
            nib.save(img, str(folder / name))


def _jobs(run) -> dict[str, int]:
    assert run.returncode == 0, run.stderr[-3000:]
    table = (run.stdout + run.stderr).split("Job stats:")[1]
    counts = re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)
    return {rule: int(n) for rule, n in counts if rule not in ("all", "total")}


def planning_config(root, **setting) -> dict:
    """The mixed test cohort (_cohort) in root, an empty model file, one training subject a site; writes the
    config to root/run.yaml and returns it. ``setting``: top-level keys that replace the defaults."""
    if not (root / "cohort").exists():
        _cohort(root / "cohort")
    (root / "model.pt").write_bytes(b"")  # planning only: it must exist, not be valid
    config = {
        "cohort": str(root / "cohort"),
        "results": "results",
        "splits": {"train_per_site": 1},
        "model": {"name": "fcn2d", "checkpoint": str(root / "model.pt")},
        **setting,
    }
    (root / "run.yaml").write_text(yaml.safe_dump(config))
    return config


@pytest.mark.slow
@pytest.mark.parametrize(
    "setting",
    [
        {},
        {"segment": {"subjects_per_job": 1}},
        {"preprocess": {"jobs": "per_step"}},
        {"model": {"name": "fcn2d", "channels": "flair-3slice"}},
        {"model": {"name": "fcn2d", "checkpoint": None}},  # trained here
    ],
)
def test_rule_all_plans_the_jobs_of_every_target(tmp_path, setting):
    config = planning_config(tmp_path, **setting)
    plan = Plan(*_plan_inputs(config, tmp_path))
    assert set(plan.all_rule_inputs()) <= set(plan.all_targets())
    options = ("--configfile", str(tmp_path / "run.yaml"), "-n", "--quiet", "rules")
    by_all = _jobs(snakemake(tmp_path, *options))
    by_targets = _jobs(snakemake(tmp_path, *plan.all_targets(), *options))
    assert by_all == by_targets
    # a mixed cohort: the test subjects' finishing jobs also evaluate, the predict subjects' do not
    assert by_all["finish_test_subject"] == len(plan.subjects_in("test")) == 3
    assert by_all["finish_subject"] == len(plan.subjects_in("predict")) == 2
    assert "evaluate" not in by_all


def _plan_inputs(config, workdir):
    """(config, subjects) as the Snakefile makes them: config.yaml updated by the run's config file, with
    the merge Snakemake applies to --configfile."""
    full = yaml.safe_load((Path(__file__).resolve().parent.parent / "config.yaml").read_text())
    update_config(full, config)
    return full, subjects_for_workflow(full, workdir=workdir)
