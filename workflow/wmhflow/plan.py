"""Every path and target list the Snakefile needs, computed from the config and the subjects table.

The rule files only call these (Snakemake's linter wants no functions beside rules), and this module
never imports snakemake, so the plan of a cohort can be tested, and inspected, without running it.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path

import pandas as pd

from .errors import ConfigError
from .fcn.slices import required_volumes
from .paths import GROUP_FILES, MODEL_FILES, derivative_name, prefix_label, sidecar_path

#: (suffix, desc) of the preprocessing artifacts each subject gets.
PREPROCESSED = (
    ("T1w", "aligned"),
    ("FLAIR", "n4"),
    ("T1w", "n4"),
    ("FLAIR", "quant"),
    ("T1w", "quant"),
    ("FLAIR", "tophat"),
)
#: results/README.md (BIDS recommends a README in every dataset).
README = """# wmhflow outputs

White matter hyperintensity segmentations (model `{model}`, channels `{channels}`) of the dataset named
in dataset_description.json (DatasetLinks.raw), made by wmhflow after Xu et al., MICCAI WMH Challenge
2017. Every image is on its FLAIR's voxel grid (space-FLAIR); its JSON sidecar names its Sources and
the parameters that made it. group/ holds the cohort tables, models/ the trained models, logs/ and
benchmarks/ each job's log and resource use (not BIDS, listed in .bidsignore).
"""
#: the BIDS version the derivative dataset follows (BIDS URIs in Sources need >= 1.9).
BIDS_VERSION = "1.10.0"
#: results/ entries that are not BIDS: the validator is told to skip them (.bidsignore). The
#: per-subject metrics, lesion tables and QC pictures stay beside the masks they describe (users
#: look for them there) but have no BIDS suffix, so they are listed too. Folders are written without
#: a trailing slash: bids-validator 3.0.2 does not match "group/" against the folder group/.
NOT_BIDS = (
    "/group",
    "/models",
    "/logs",
    "/benchmarks",
    "/checks",
    "/chunks",
    "/report.html",
    "/report",
    "*_metrics.tsv",
    "*_lesions.tsv",
    "*_qc.png",
)
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
        self._columns: dict[str, dict] = {}  # column name -> {subject key: value} (see column())
        self._name_tails: dict[tuple, str] = {}  # (suffix, ext, entities) -> "_<entities>_<suffix><ext>"
        self.results = str(config["results"])
        self.model = config["model"]["name"]
        self.model_dir = f"{self.results}/models/{self.model}"
        self.group = f"{self.results}/group"
        self.channels = config["model"].get("channels", "flair,t1,tophat")
        self.needs_t1 = "t1" in required_volumes(self.channels)
        if self.needs_t1:
            self._require_t1()

    def _require_t1(self) -> None:
        t1 = self.subjects["t1"] if "t1" in self.subjects else pd.Series("", index=self.subjects.index)
        missing = [self.label(p) for p in self.subjects.index[t1.fillna("") == ""]]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            verb = "has" if len(missing) == 1 else "have"
            raise ConfigError(
                "model.channels",
                f"{self.channels} needs a T1, and {shown} {verb} none: use "
                f"model.channels flair-3slice (FLAIR only), or leave them out "
                f"with exclude_participant_label",
            )

    # ------------------------------------------------------------------------------ names
    # A subject's key (the rules' {subject} wildcard) is its output prefix, e.g.
    # sub-01/ses-2/anat/sub-01_ses-2 (wmhflow.paths.prefix): folders and name in one value.
    def out(self, subject, suffix, ext=".nii.gz", **entities) -> str:
        # The name after the prefix is the same for every subject: built once per kind of output, as
        # target lists of a large cohort call this ~10 times a subject.
        key = (suffix, ext, *entities.items())
        if key not in self._name_tails:
            self._name_tails[key] = derivative_name("", suffix, ext, **entities)
        return f"{self.results}/{subject}{self._name_tails[key]}"

    def log(self, rule_name, subject="{subject}") -> str:
        return f"{self.results}/logs/{rule_name}/{subject}.log"

    def bench(self, rule_name, subject="{subject}") -> str:
        return f"{self.results}/benchmarks/{rule_name}/{subject}.tsv"

    # One log scheme: logs/<rule>/[<model>/]<subject>.log for per-subject rules (the model's folder only
    # for rules whose output depends on the model), logs/<rule>/<model>.log for a rule run once per
    # model; benchmarks/ alike. The rule is always the first folder, the model always the second part.
    def model_log(self, rule_name, subject="{subject}") -> str:
        """The log of a per-subject rule whose output depends on the model (infer, evaluate, ...)."""
        return self.log(f"{rule_name}/{self.model}", subject)

    def model_bench(self, rule_name, subject="{subject}") -> str:
        return self.bench(f"{rule_name}/{self.model}", subject)

    label = staticmethod(prefix_label)  # sub-01_ses-2 (the file-name part of a key), for messages and titles

    def check_file(self, subject="{subject}") -> str:
        """The check step's output, outside the subject's BIDS folder (it is not a derivative)."""
        return f"{self.results}/checks/{subject}.json"

    def subject_logs(self, subject) -> list[str]:
        """Every rule log of one subject (the check step's first), for the status table."""
        from pathlib import Path

        root = Path(self.results)
        folders = ("*", f"*/{self.model}")  # logs/<rule>/ and logs/<rule>/<model>/
        logs = sorted(str(p) for folder in folders for p in root.glob(f"logs/{folder}/{subject}.log"))
        first = self.log("preprocess_subject" if self.preprocess_per_subject else "check_subject", subject)
        return ([first] if first in logs else []) + [p for p in logs if p != first]

    def cohort_log(self, rule_name) -> str:
        """The log of a rule that runs once per run (per model variant), not per subject."""
        return self.log(rule_name, self.model)

    def cohort_bench(self, rule_name) -> str:
        return self.bench(rule_name, self.model)

    def train_log(self) -> str:
        return self.cohort_log("train")

    def model_output(self, role) -> str:
        """A file of the model trained by this run, by its role in :data:`wmhflow.paths.MODEL_FILES`."""
        return f"{self.model_dir}/{MODEL_FILES[role]}"

    def group_file(self, role) -> str:
        """A cohort table or plot under results/group/, by its role in :data:`wmhflow.paths.GROUP_FILES`."""
        return f"{self.group}/{GROUP_FILES[role]}"

    def status_file(self) -> str:
        return self.group_file("status")

    def column(self, name) -> dict:
        """{subject key: value} of one column of the subjects table, built once per column.

        Snakemake calls the rules' input and params functions once per job (about 11 per subject): a
        dict lookup there costs well under a microsecond, where ``DataFrame.loc`` costs ~50 us and
        dominated our share of planning a large cohort (benchmarks/results/dryrun_profile.json).
        """
        if name not in self._columns:
            self._columns[name] = self.subjects[name].to_dict()
        return self._columns[name]

    def subject_column(self, column):
        """Input or params function: one column of the subject's row (flair, t1, site, split...)."""
        values = self.column(column)
        return lambda wildcards: values[wildcards.subject]

    def optional_subject_file(self, column):
        """Input function for a file a subject may lack (a FLAIR-only subject's T1): [] when there is none,
        which Snakemake takes as no input (an empty string it refuses)."""
        values = self.column(column)
        return lambda wildcards: values[wildcards.subject] or []

    @cached_property
    def _test_references(self) -> dict:
        references = self.column("reference")
        return {s: references[s] for s in self.subjects_in("test")}

    def test_reference(self, wildcards) -> str:
        """Input function of rule finish_test_subject: a test subject's reference; for any other subject a
        path no rule makes and no file has, so that Snakemake takes rule finish_subject for it
        (finish_subject.smk says why)."""
        reference = self._test_references.get(wildcards.subject)
        return reference if reference else f"{self.results}/.wmhflow/{wildcards.subject}: not a test subject"

    def subject_options(self, *columns):
        """Params function: ``--<column>=<value>`` of the subject's row for each column (``{params.x:q}``
        quotes each). One function a job instead of one per value: Snakemake inspects and calls each
        params function of every job while planning (README, "Planning")."""
        values = [(column, self.column(column)) for column in columns]
        return lambda wildcards: [f"--{column}={by_subject[wildcards.subject]}" for column, by_subject in values]

    def qc_options(self, wildcards) -> list[str]:
        """Params function of ``wmhflow qc``: the subject's reference (may be empty) and the picture's title,
        e.g. 'sub-01_ses-2 (Utrecht), model fcn2d'."""
        subject = wildcards.subject
        title = f"{self.label(subject)} ({self.column('site')[subject]}), model {self.model}"
        return [f"--reference={self.column('reference')[subject]}", f"--title={title}"]

    def subjects_in(self, *splits) -> list[str]:
        return [s for s, split in self.column("split").items() if split in splits]

    @property
    def preprocess_jobs(self) -> str:
        """preprocess.jobs: per_subject, per_step or per_chunk (docs/cluster.md)."""
        return self.config.get("preprocess", {}).get("jobs", "per_subject")

    @property
    def preprocess_per_subject(self) -> bool:
        """A subject's check and preprocessing steps in one job (rule preprocess_subject), not one per step.
        per_chunk too: its subjects outside the segment chunks (training, validation) keep that rule."""
        return self.preprocess_jobs != "per_step"

    @property
    def preprocess_per_chunk(self) -> bool:
        """preprocess.jobs: per_chunk: one job (rule preprocess_batch) preprocesses a segment chunk."""
        return self.preprocess_jobs == "per_chunk"

    def n4_input(self, wildcards) -> str:
        """The FLAIR as given, the T1 once aligned onto the FLAIR grid."""
        if wildcards.modality == "FLAIR":
            return self.column("flair")[wildcards.subject]
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
        return checkpoint or self.model_output("model")

    def segment_params(self) -> dict:
        """The inference settings of config 'segment' as the rule passes them to ``wmhflow infer``."""
        segment = self.config.get("segment", {})
        threshold = segment.get("threshold", "auto")
        return {
            "tta": segment.get("tta", "none"),
            "threshold": "auto" if threshold is None else threshold,
            "min_lesion_mm3": segment.get("min_lesion_mm3", 0),
            "min_depth_mm": segment.get("min_depth_mm", 0),
            "restrict_to": segment.get("restrict_to", "brain"),
        }

    def require_model_source(self) -> None:
        """A run that segments needs a model: trained here from 'train' subjects, or model.checkpoint."""
        from .errors import ConfigError

        if self.trains_model and self.subjects_in("test", "predict") and not self.subjects_in("train"):
            raise ConfigError(
                "model.checkpoint",
                "no subject of this cohort is in split 'train' (none has a "
                "reference, or the TSV's split column says so) and no model is "
                "given: set model.checkpoint to an existing model.pt, or add "
                "subjects with a reference",
            )

    def training_inputs(self, kind: str) -> list[str]:
        train = self.subjects_in("train")
        if kind == "reference":
            return [self.column("reference")[s] for s in train]
        if kind == "t1" and not self.needs_t1:
            return []
        suffix, desc = FCN_INPUTS[kind]
        return [self.out(s, suffix, desc=desc) for s in train]

    def fcn_input(self, kind: str, subject="{subject}") -> list[str]:
        """The 8-bit volume of one FCN input, or none when the channel set does not use it."""
        if kind == "t1" and not self.needs_t1:
            return []
        suffix, desc = FCN_INPUTS[kind]
        return [self.out(subject, suffix, desc=desc)]

    def mask(self, subject="{subject}") -> str:
        return self.out(subject, "mask", label="WMH", desc=self.model)

    def mask_sidecar(self, subject="{subject}") -> str:
        """The JSON beside the mask: threshold, flips, models and post-processing that made it."""
        return str(sidecar_path(self.mask(subject)))

    def probseg(self, subject="{subject}") -> str:
        return self.out(subject, "probseg", label="WMH", desc=self.model)

    # ------------------------------------------------------------------------------ chunked segmentation
    # segment.subjects_per_job > 1: one GPU job (rule infer_batch, `wmhflow infer-batch`) segments a chunk
    # of subjects into a staging folder and writes the chunk's status table; each subject's finish_subject
    # job (`wmhflow place-segmentation` its first step) then puts its files at probseg()/mask() (docs/cluster.md).
    @property
    def subjects_per_job(self) -> int:
        return int(self.config.get("segment", {}).get("subjects_per_job", 1))

    @cached_property
    def segment_chunks(self) -> dict[str, list[str]]:
        """chunk-0000 -> its subjects: the segmented subjects in table order, subjects_per_job at a time.
        By position, so subjects added at the end of the table change only the last chunk(s)."""
        subjects, size = self.subjects_in("test", "predict"), max(1, self.subjects_per_job)
        return {f"chunk-{i // size:04d}": subjects[i : i + size] for i in range(0, len(subjects), size)}

    @cached_property
    def segment_chunk_of(self) -> dict[str, str]:
        return {s: chunk for chunk, members in self.segment_chunks.items() for s in members}

    def chunk_dir(self) -> str:
        return f"{self.results}/chunks/infer_batch/{self.model}"

    def chunk_status(self, chunk="{chunk}") -> str:
        """A chunk job's declared output: one row per subject (done | cached | failed, and why)."""
        return f"{self.chunk_dir()}/{chunk}.tsv"

    def chunk_staging(self) -> str:
        """Where chunk jobs write each subject's files before they are placed (not a declared output, so
        a failed or killed chunk job keeps the subjects it finished)."""
        return f"{self.chunk_dir()}/staged"

    def chunk_files(self, kind):
        """Input or params function of rule infer_batch: per subject of the chunk, in order, its ``kind``
        (flair, t1, tophat: the 8-bit inputs; probseg, mask: where its files are placed; subject: keys)."""

        def files(wildcards):
            members = self.segment_chunks[wildcards.chunk]
            if kind == "subject":
                return list(members)
            if kind in ("probseg", "mask"):
                return [getattr(self, kind)(s) for s in members]
            return [path for s in members for path in self.fcn_input(kind, s)]

        return files

    # preprocess.jobs: per_chunk: one job (rule preprocess_batch, `wmhflow preprocess-batch`) preprocesses a
    # segment chunk's subjects, writing their files at the paths preprocess_subject writes, undeclared; it
    # declares only this table (one row per subject: done | failed, and why), as infer_batch does.
    def preprocess_chunk_status(self, chunk="{chunk}") -> str:
        return f"{self.results}/chunks/preprocess_batch/{chunk}.tsv"

    def preprocess_chunk_inputs(self, column):
        """Input function of rule preprocess_batch: the raw ``column`` (flair, t1) of the chunk's subjects
        that have one."""
        values = self.column(column) if column in self.subjects else {}

        def files(wildcards):
            return [values[s] for s in self.segment_chunks[wildcards.chunk] if values.get(s)]

        return files

    def chunk_status_of(self, wildcards) -> str:
        """Input function of the per-subject rule that places its files: the status table of its chunk."""
        chunk = self.segment_chunk_of.get(wildcards.subject)
        if chunk is None:  # e.g. a training subject's mask asked for as a target
            raise ConfigError(
                "segment.subjects_per_job",
                f"{wildcards.subject} is not a test or predict subject, and with chunked "
                "segmentation only those are segmented (set subjects_per_job: 1 to segment it)",
            )
        return self.chunk_status(chunk)

    # ------------------------------------------------------------------------------ targets
    def preprocess_targets(self) -> list[str]:
        steps = [(suffix, desc) for suffix, desc in PREPROCESSED if self.needs_t1 or suffix != "T1w"]
        return [self.out(s, suffix, desc=desc) for s in self.subjects.index for suffix, desc in steps]

    def preprocess_rule_inputs(self) -> list[str]:
        """Rule ``preprocess``'s input: :meth:`preprocess_targets`; with per_chunk the chunks' status tables
        instead of their subjects' files (which no rule declares), and the others' files."""
        if not self.preprocess_per_chunk:
            return self.preprocess_targets()
        steps = [(suffix, desc) for suffix, desc in PREPROCESSED if self.needs_t1 or suffix != "T1w"]
        chunked = self.segment_chunk_of
        others = [
            self.out(s, suffix, desc=desc) for s in self.subjects.index if s not in chunked for suffix, desc in steps
        ]
        return [self.preprocess_chunk_status(c) for c in self.segment_chunks] + others

    def model_targets(self) -> list[str]:
        if not self.trains_model:
            return []
        return [self.model_output(role) for role in ("model", "log", "curve")]

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
        keys = set(self.subjects.index)
        found = Path(self.results).glob("sub-*/**/sub-*_desc-*_metrics.tsv")
        return sorted(
            str(p)
            for p in found
            if str(p) not in mine and p.relative_to(self.results).as_posix().split("_desc-")[0] in keys
        )

    def evaluate_targets(self) -> list[str]:
        return self.metrics_files() + self.lesion_files()

    def report_targets(self) -> list[str]:
        tables = [self.group_file(role) for role in ("metrics", "summary", "volumes", "comparison", "boxplots")]
        return tables + [self.out(s, "qc", ".png", desc=self.model) for s in self.subjects_in("test", "predict")]

    # ------------------------------------------------------------------------------ the dataset
    def dataset_description(self, cohort_root) -> dict:
        """results/dataset_description.json: a BIDS derivative dataset naming its code and source."""
        from . import __version__

        checksum = hashlib.sha256(json.dumps(self.config, sort_keys=True, default=str).encode()).hexdigest()
        source = Path(cohort_root).resolve()
        source = source if source.is_dir() else source.parent  # a subjects TSV: its folder
        return {
            "Name": f"wmhflow WMH segmentation ({self.model})",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "wmhflow",
                    "Version": __version__,
                    "Description": f"model {self.model} ({self.channels}); configuration sha256 {checksum}",
                }
            ],
            "SourceDatasets": [{"URL": source.as_uri()}],
            "DatasetLinks": {"raw": source.as_uri()},
        }

    def write_dataset_files(self, cohort_root) -> None:
        """dataset_description.json and .bidsignore, rewritten only when their content changes
        (called by the Snakefile's onstart, before any job writes a sidecar that refers to them)."""
        from .io import atomic_output

        root = Path(self.results)
        files = {
            "dataset_description.json": json.dumps(self.dataset_description(cohort_root), indent=2) + "\n",
            ".bidsignore": "\n".join(NOT_BIDS) + "\n",
            "README.md": README.format(model=self.model, channels=self.channels),
        }
        for name, text in files.items():
            path = root / name
            if not path.is_file() or path.read_text() != text:
                with atomic_output(path) as tmp:
                    tmp.write_text(text)

    def all_targets(self) -> list[str]:
        return (
            self.preprocess_targets()
            + self.model_targets()
            + self.segment_targets()
            + self.evaluate_targets()
            + self.report_targets()
        )

    def all_rule_inputs(self) -> list[str]:
        """Rule ``all``'s input: the fewest of :meth:`all_targets` whose jobs pull in the jobs of every other.

        Every other target is made by a job these depend on (a segmented subject's lesion table, an input
        of the cohort tables, comes from the job that places or reads its mask, which needs its
        preprocessing; the model files and a training subject's preprocessing, whose jobs nothing else
        may need, are named). Snakemake looks up the job of every input file of ``all``: at 10,000
        subjects 11 names a subject are ~110,000 lookups, these ~1 (README, "Planning"). Missing
        outputs of a job in the DAG still make it run; the status table counts all_targets().
        """
        segmented = set(self.subjects_in("test", "predict"))
        steps = [(suffix, desc) for suffix, desc in PREPROCESSED if self.needs_t1 or suffix != "T1w"]
        unsegmented = [s for s in self.subjects.index if s not in segmented]
        tables = [self.group_file(role) for role in ("metrics", "summary", "volumes", "comparison", "boxplots")]
        return (
            [self.out(s, suffix, desc=desc) for s in unsegmented for suffix, desc in steps]
            + self.model_targets()
            + tables
        )
