# Shared by every rule file: config validation, the subjects table, output paths, wildcard constraints.
import sys

import pandas as pd
from snakemake.utils import validate

from wmhflow.paths import bids_path
from wmhflow import cohort as wmh_cohort


# Rules call the `wmhflow` command of the installation running snakemake, activated venv or not
# (with --software-deployment-method conda, the rule's environment comes first on PATH instead).
_bin = os.path.dirname(sys.executable)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")

validate(config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))

RESULTS = config["results"]

# One row per subject: site, flair, t1, reference (may be empty), split (train | test | predict).
SUBJECTS = wmh_cohort.subjects_for_workflow(config, workdir=os.getcwd())


wildcard_constraints:
    subject="[A-Za-z0-9]+",
    model="[A-Za-z0-9]+",


def out(subject, suffix, ext=".nii.gz", **entities):
    """An output path under results/ (BIDS-derivatives style); used by every rule."""
    return str(bids_path(RESULTS, subject, suffix, ext, **entities))


def log(rule_name, subject="{subject}"):
    return f"{RESULTS}/logs/{rule_name}/sub-{subject}.log"


def bench(rule_name, subject="{subject}"):
    return f"{RESULTS}/benchmarks/{rule_name}/sub-{subject}.tsv"


def subject_file(column):
    """Input function: the subject's raw file from the subjects table."""

    def _get(wildcards):
        return SUBJECTS.loc[wildcards.subject, column]

    return _get


def subjects_in(*splits):
    return [s for s in SUBJECTS.index if SUBJECTS.loc[s, "split"] in splits]


def subjects_with_reference():
    return [s for s in SUBJECTS.index if SUBJECTS.loc[s, "reference"]]
