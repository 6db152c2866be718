"""Every path and target list the Snakefile needs, computed from the config and the subjects table.

The rule files only call these (Snakemake's linter wants no functions beside rules), and this module
never imports snakemake, so the plan of a cohort can be tested, and inspected, without running it.
"""

from __future__ import annotations

import pandas as pd

from .paths import bids_path

#: (suffix, desc) of the preprocessing artifacts each subject gets.
PREPROCESSED = (("T1w", "aligned"), ("FLAIR", "n4"), ("T1w", "n4"), ("FLAIR", "quant"), ("T1w", "quant"),
                ("FLAIR", "tophat"))
#: the 8-bit inputs of the FCN, by the name train/infer give them.
FCN_INPUTS = {"flair": ("FLAIR", "quant"), "t1": ("T1w", "quant"), "tophat": ("FLAIR", "tophat")}


def prepare_rule_environment(workflow_dir) -> None:
    """Rules call ``wmhflow``: make it the installation running Snakemake, venv activated or not.

    Jobs inherit the environment (also SLURM jobs: sbatch --export=ALL), so they find the same
    ``wmhflow``; with ``--software-deployment-method conda`` the rule's environment is put first on
    PATH by Snakemake and wins, and ``WMHFLOW_SOURCE`` tells the envs/*.yaml files where the package's
    source is (their pip line installs it from there).
    """
    import os
    import sys

    os.environ.setdefault("WMHFLOW_SOURCE", str(workflow_dir))
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + path


class Plan:
    """Output names and targets of one workflow run (one model variant over one cohort)."""

    def __init__(self, config: dict, subjects: pd.DataFrame):
        self.config = config
        self.subjects = subjects
        self.results = str(config["results"])
        self.model = config["model"]["name"]
        self.model_dir = f"{self.results}/models/{self.model}"
        self.group = f"{self.results}/group"

    # ------------------------------------------------------------------------------ names
    def out(self, subject, suffix, ext=".nii.gz", **entities) -> str:
        return str(bids_path(self.results, subject, suffix, ext, **entities))

    def log(self, rule_name, subject="{subject}") -> str:
        return f"{self.results}/logs/{rule_name}/sub-{subject}.log"

    def bench(self, rule_name, subject="{subject}") -> str:
        return f"{self.results}/benchmarks/{rule_name}/sub-{subject}.tsv"

    def check_file(self, subject="{subject}") -> str:
        """The check step's output, outside the subject's BIDS folder (it is not a derivative)."""
        return f"{self.results}/checks/sub-{subject}.json"

    def subject_logs(self, subject) -> list[str]:
        """Every rule log of one subject (the check step's first), for the status table."""
        from pathlib import Path

        logs = sorted(str(p) for p in Path(self.results).glob(f"logs/*/sub-{subject}.log"))
        first = self.log("check_subject", subject)
        return ([first] if first in logs else []) + [p for p in logs if p != first]

    def train_log(self) -> str:
        return f"{self.results}/logs/train/{self.model}.log"

    def status_file(self) -> str:
        return f"{self.group}/status.tsv"

    def subject_column(self, column):
        """Input or params function: one column of the subject's row (flair, t1, site, split...)."""
        return lambda wildcards: self.subjects.loc[wildcards.subject, column]

    def subjects_in(self, *splits) -> list[str]:
        return [s for s in self.subjects.index if self.subjects.loc[s, "split"] in splits]

    def n4_input(self, wildcards) -> str:
        """The FLAIR as given, the T1 once aligned onto the FLAIR grid."""
        if wildcards.modality == "FLAIR":
            return self.subjects.loc[wildcards.subject, "flair"]
        return self.out(wildcards.subject, "T1w", desc="aligned")

    # ------------------------------------------------------------------------------ model
    @property
    def trains_model(self) -> bool:
        return not self.config["model"].get("checkpoint")

    def model_file(self):
        """The model(s) the segment rule uses: config model.checkpoint (a file or a list of files, an
        ensemble), or the one trained here."""
        checkpoint = self.config["model"].get("checkpoint")
        if isinstance(checkpoint, (list, tuple)):
            return [str(c) for c in checkpoint]
        return checkpoint or f"{self.model_dir}/model.pt"

    def segment_params(self) -> dict:
        """The inference settings of config 'segment' as the rule passes them to ``wmhflow infer``."""
        segment = self.config.get("segment", {})
        threshold = segment.get("threshold", "auto")
        return {"tta": segment.get("tta", "none"), "threshold": "auto" if threshold is None else threshold,
                "min_lesion_mm3": segment.get("min_lesion_mm3", 0), "min_depth_mm": segment.get("min_depth_mm", 0)}

    def require_model_source(self) -> None:
        """A run that segments needs a model: trained here from 'train' subjects, or model.checkpoint."""
        from .errors import ConfigError

        if self.trains_model and self.subjects_in("test", "predict") and not self.subjects_in("train"):
            raise ConfigError("model.checkpoint", "no subject of this cohort is in split 'train' (none has a "
                                                  "reference, or the TSV's split column says so) and no model is "
                                                  "given: set model.checkpoint to an existing model.pt, or add "
                                                  "subjects with a reference")

    def training_inputs(self, kind: str) -> list[str]:
        train = self.subjects_in("train")
        if kind == "reference":
            return [self.subjects.loc[s, "reference"] for s in train]
        suffix, desc = FCN_INPUTS[kind]
        return [self.out(s, suffix, desc=desc) for s in train]

    def mask(self, subject="{subject}") -> str:
        return self.out(subject, "mask", desc=self.model, label="WMH")

    def mask_sidecar(self, subject="{subject}") -> str:
        """The JSON beside the mask: threshold, flips, models and post-processing that made it."""
        return self.out(subject, "mask", ".json", desc=self.model, label="WMH")

    def probseg(self, subject="{subject}") -> str:
        return self.out(subject, "probseg", desc=self.model, label="WMH")

    # ------------------------------------------------------------------------------ targets
    def preprocess_targets(self) -> list[str]:
        return [self.out(s, suffix, desc=desc) for s in self.subjects.index for suffix, desc in PREPROCESSED]

    def model_targets(self) -> list[str]:
        if not self.trains_model:
            return []
        return [f"{self.model_dir}/{name}" for name in ("model.pt", "training_log.tsv", "loss_curve.png")]

    def segment_targets(self) -> list[str]:
        return [path for s in self.subjects_in("test", "predict") for path in (self.probseg(s), self.mask(s))]

    def metrics_files(self) -> list[str]:
        return [self.out(s, "metrics", ".tsv", desc=self.model) for s in self.subjects_in("test")]

    def lesion_files(self) -> list[str]:
        return [self.out(s, "lesions", ".tsv", desc=self.model) for s in self.subjects_in("test", "predict")]

    def other_variant_metrics(self) -> list[str]:
        """Metrics files that earlier runs of other model variants left in results/ (the comparison table)."""
        from pathlib import Path

        mine = set(self.metrics_files())
        found = Path(self.results).glob("sub-*/anat/sub-*_desc-*_metrics.tsv")
        return sorted(str(p) for p in found if str(p) not in mine and p.parent.parent.name[4:] in self.subjects.index)

    def evaluate_targets(self) -> list[str]:
        return self.metrics_files() + self.lesion_files()

    def report_targets(self) -> list[str]:
        tables = [f"{self.group}/{name}" for name in ("metrics.tsv", "summary.tsv", "lesion_volumes.tsv",
                                                       "model_comparison.tsv", "metrics_boxplots.png")]
        return tables + [self.out(s, "qc", ".png", desc=self.model) for s in self.subjects_in("test", "predict")]

    def all_targets(self) -> list[str]:
        return (self.preprocess_targets() + self.model_targets() + self.segment_targets()
                + self.evaluate_targets() + self.report_targets())
