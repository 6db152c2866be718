"""preprocess.jobs: per_chunk: one job (rule preprocess_batch, `wmhflow preprocess-batch`) preprocesses a
segmentation chunk; the other modes' rules are unchanged."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from test_plan_targets import _jobs, planning_config
from test_workflow import snakemake

from wmhflow.config import validate
from wmhflow.errors import ConfigError, WmhflowError
from wmhflow.paths import sidecar_path
from wmhflow.preprocess.batch import outputs_of, split_subjects
from wmhflow.staging import read_status
from wmhflow.synth import write_cohort

#: the commit the per_chunk mode was built on: the other modes' rules must plan exactly its commands
BEFORE = "801383b"
#: every file a subject's preprocessing writes (beside its check file)
PER_STEP = [
    ("T1w", "aligned"),
    ("T1w", "n4"),
    ("T1w", "quant"),
    ("FLAIR", "n4"),
    ("FLAIR", "quant"),
    ("FLAIR", "tophat"),
]


def test_words_split_per_subject_and_outputs_are_the_steps_output_values():
    words = ["sub-01/anat/sub-01", "check", "--output", "c.json", "::", "tophat", "--output=t.nii.gz"]
    subjects = split_subjects([*words, ":::", "sub-02/anat/sub-02", "tophat", "--output", "u.nii.gz"])
    assert subjects == [
        ("sub-01/anat/sub-01", [["check", "--output", "c.json"], ["tophat", "--output=t.nii.gz"]]),
        ("sub-02/anat/sub-02", [["tophat", "--output", "u.nii.gz"]]),
    ]
    assert outputs_of(subjects[0][1]) == ["c.json", "t.nii.gz"]
    for bad in ([], ["sub-01"], [*words, ":::"], [":::", *words]):
        with pytest.raises(WmhflowError):
            split_subjects(bad)


def test_per_chunk_needs_segmentation_chunks():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["preprocess"]["jobs"] = "per_chunk"
    validate(config)  # the default: chunks of 8
    config["segment"]["subjects_per_job"] = 1
    with pytest.raises(ConfigError, match=r"preprocess.jobs.*per_chunk.*subjects_per_job is 1") as error:
        validate(config)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------ planning
def _planning_config(root, **setting) -> str:
    """test_plan_targets' planning cohort and config, in chunks of 2; the config file's path."""
    planning_config(root, **{"segment": {"subjects_per_job": 2}, **setting})
    return str(root / "run.yaml")


@pytest.mark.slow
def test_per_chunk_plans_one_preprocessing_job_per_chunk(tmp_path):
    # 7 subjects, 1 train per site (2), 5 segmented: chunks of 2 are 3 chunks
    trained = {"model": {"name": "fcn2d", "checkpoint": None}, "preprocess": {"jobs": "per_chunk"}}
    jobs = _jobs(snakemake(tmp_path, "--configfile", _planning_config(tmp_path, **trained), "-n", "--quiet", "rules"))
    assert jobs["preprocess_batch"] == jobs["infer_batch"] == 3
    assert jobs["preprocess_subject"] == 2  # the training subjects
    jobs = _jobs(
        snakemake(tmp_path, "preprocess", "--configfile", str(tmp_path / "run.yaml"), "-n", "--quiet", "rules")
    )
    assert jobs == {"preprocess_batch": 3, "preprocess_subject": 2, "preprocess": 1}
    # with a given model: the same jobs as per_subject but for the segmented subjects' preprocessing
    given = tmp_path / "given"
    given.mkdir()
    single_run = snakemake(given, "--configfile", _planning_config(given), "-n", "-p")
    config = _planning_config(given, preprocess={"jobs": "per_chunk"})
    chunk_run = snakemake(given, "--configfile", config, "-n", "-p")
    per_subject, per_chunk = _jobs(single_run), _jobs(chunk_run)
    assert per_subject.pop("preprocess_subject") == 7 and "preprocess_batch" not in per_subject
    assert per_chunk.pop("preprocess_batch") == 3 and per_chunk.pop("preprocess_subject") == 2
    assert per_chunk == per_subject
    # a chunk job runs, per subject, the very words of that subject's preprocess_subject command
    singles = {}
    for words in _shell_words(single_run, "steps"):
        steps = words[2 : words.index(">")]
        if steps[0] != "check":  # a finish_subject job
            continue
        singles[steps[steps.index("--subject") + 1]] = steps
    batched = {}
    for words in _shell_words(chunk_run, "preprocess-batch"):
        for key, steps in split_subjects(words[4 : words.index(">")]):
            batched[key] = [word for number, step in enumerate(steps) for word in (["::"] if number else []) + step]
    assert len(batched) == 5 and batched == {key: singles[key] for key in batched}

    config = _planning_config(tmp_path / "one", preprocess={"jobs": "per_chunk"}, segment={"subjects_per_job": 1})
    run = snakemake(tmp_path / "one", "--configfile", config, "-n")
    assert run.returncode != 0
    assert (
        "config 'preprocess.jobs': per_chunk preprocesses each segmentation chunk in one job" in run.stdout + run.stderr
    )


def _shell_words(run, verb) -> list[list[str]]:
    """The words of every planned `wmhflow <verb> ...` command (`snakemake -n -p`)."""
    lines = (run.stdout + run.stderr).splitlines()
    commands = [line.removeprefix("Shell command: ") for line in lines if line.startswith("Shell command: wmhflow")]
    return [shlex.split(c) for c in commands if c.split()[1] == verb]


def _commands(run) -> list[tuple[str, ...]]:
    """Each planned job's rule, input, output and shell command (`snakemake -n -p`), sorted."""
    assert run.returncode == 0, run.stderr[-3000:]
    jobs, current = [], None
    for line in (run.stdout + run.stderr).splitlines():
        if line.startswith(("rule ", "localrule ")):
            current = [line]
            jobs.append(current)
        elif current is not None and line.startswith(("    input:", "    output:", "    params:", "Shell command:")):
            current.append(line)
    return sorted(map(tuple, jobs))


@pytest.mark.slow
@pytest.mark.parametrize(
    "setting",
    [
        {},  # per_subject, chunks of 2
        {"preprocess": {"jobs": "per_step"}},
        {"segment": {"subjects_per_job": 1}},
        {"model": {"name": "fcn2d", "checkpoint": None}},  # trained here
    ],
)
def test_the_other_modes_plan_the_commands_they_planned_before(tmp_path, setting):
    """Snakemake reruns a job whose shell template or params changed: per_subject and per_step must plan
    byte for byte the commands, inputs and outputs of the workflow before per_chunk existed."""
    before = tmp_path / "before"
    before.mkdir()
    files = ["Snakefile", "config.yaml", "workflow/rules", "workflow/report", "envs", "profiles"]
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE, *files], capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"no git history of {BEFORE}: {archive.stderr.decode()[-200:]}")
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
    work = tmp_path / "work"
    work.mkdir()
    config = _planning_config(work, **setting)
    options = ("--configfile", config, "-n", "-p", "--forceall")
    now = _commands(snakemake(work, *options))
    then = _commands(subprocess_snakemake(before / "Snakefile", work, *options))
    assert len(now) > 10 and now == then
    # and the shell: templates themselves (Snakemake's code trigger compares their text)
    templates = {name: _templates(snakefile, work, config) for name, snakefile in (("now", REPO), ("then", before))}
    assert len(templates["now"]) > 5 and templates["now"] == templates["then"]


SHELL_TEMPLATES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
snakefile, workdir, config = map(Path, sys.argv[1:])
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(cores=1), config_settings=ConfigSettings(configfiles=[config]),
        snakefile=snakefile, workdir=workdir,
    )._workflow
    print(json.dumps({rule.name: rule.shellcmd for rule in workflow.rules if rule.shellcmd}))
"""


def _templates(root, workdir, config) -> dict[str, str]:
    """{rule: its shell: template} of the Snakefile in ``root``, loaded as Snakemake loads it."""
    import sys

    run = subprocess.run(
        [sys.executable, "-c", SHELL_TEMPLATES, str(Path(root) / "Snakefile"), str(workdir), config],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


def subprocess_snakemake(snakefile, workdir, *args):
    """test_workflow.snakemake with another Snakefile (its package stays this checkout's)."""
    import os
    import sys

    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))


# ------------------------------------------------------------------------------ real runs
def _config(root, cohort, model, jobs) -> Path:
    path = root / f"{jobs}.yaml"
    path.write_text(
        f"cohort: {cohort}\nresults: out\nsplits: {{train_per_site: 0.01}}\n"
        f"model: {{name: m, checkpoint: {model}}}\nsegment: {{subjects_per_job: 2}}\npreprocess: {{jobs: {jobs}}}\n"
    )
    return path


def _targets(table) -> list[str]:
    return [f"out/sub-{s}/anat/sub-{s}_space-FLAIR_label-WMH_desc-m_mask.nii.gz" for s in table["subject"]]


def _files(out: Path, label: str) -> list[Path]:
    anat = out / f"sub-{label}/anat"
    return [anat / f"sub-{label}_space-FLAIR_desc-{desc}_{suffix}.nii.gz" for suffix, desc in PER_STEP] + [
        out / f"checks/sub-{label}/anat/sub-{label}.json"
    ]


@pytest.fixture(scope="module")
def both_modes(tmp_path_factory, tiny_model):
    """3 test subjects (chunks of 2) preprocessed per chunk and per subject, up to their masks."""
    root = tmp_path_factory.mktemp("prepchunk")
    table = write_cohort(root / "in", subjects=3, seed=5, small=True)
    runs = {}
    for jobs in ("per_chunk", "per_subject"):
        (root / jobs).mkdir()
        config = _config(root, root / "in", tiny_model, jobs)
        runs[jobs] = snakemake(root / jobs, *_targets(table), "--configfile", str(config))
        assert runs[jobs].returncode == 0, runs[jobs].stderr[-4000:]
    return root, table, runs


@pytest.mark.slow
def test_per_chunk_writes_the_files_of_per_subject(both_modes):
    root, table, runs = both_modes
    chunk, single = root / "per_chunk/out", root / "per_subject/out"
    assert {p.name for p in (chunk / "logs").iterdir()} == {"preprocess_batch", "infer_batch", "finish_subject"}
    assert "preprocess_subject" in {p.name for p in (single / "logs").iterdir()}
    assert [len(read_status(t)) for t in sorted((chunk / "chunks/preprocess_batch").glob("*.tsv"))] == [2, 1]
    masks = [
        f"sub-{s}/anat/sub-{s}_space-FLAIR_label-WMH_desc-m_{kind}.nii.gz"
        for s in table["subject"]
        for kind in ("mask", "probseg")
    ]
    for label in table["subject"]:
        for a, b in zip(
            _files(chunk, label) + [chunk / m for m in masks], _files(single, label) + [single / m for m in masks]
        ):
            if a.suffix == ".json":
                assert json.loads(a.read_text()) == json.loads(b.read_text())
                continue
            one, other = nib.load(a), nib.load(b)
            assert one.get_data_dtype() == other.get_data_dtype()
            np.testing.assert_array_equal(one.affine, other.affine)
            np.testing.assert_array_equal(np.asarray(one.dataobj), np.asarray(other.dataobj), err_msg=str(a))
            if sidecar_path(a).exists():
                sidecar = json.loads(sidecar_path(a).read_text())
                sidecar.pop("FCNSeconds", None), sidecar.pop("TemplateRegistrationSeconds", None)
                theirs = json.loads(sidecar_path(b).read_text())
                theirs.pop("FCNSeconds", None), theirs.pop("TemplateRegistrationSeconds", None)
                assert sidecar == theirs, a
    log = (chunk / "logs/preprocess_batch/chunk-0000.log").read_text()
    assert "chunk done: 2 preprocessed, 0 failed" in log


@pytest.mark.slow
def test_a_failing_subject_loses_its_files_and_only_it_fails(both_modes, tmp_path, tiny_model):
    root, table, _ = both_modes
    cohort = tmp_path / "in"
    shutil.copytree(root / "in", cohort)
    keys = [r["subject"] for r in read_status(root / "per_chunk/out/chunks/preprocess_batch/chunk-0000.tsv")]
    bad, good = (Path(k).name.removeprefix("sub-") for k in keys)
    raw_t1 = Path(table.loc[table["subject"] == bad, "t1"].iloc[0].replace(str(root / "in"), str(cohort)))
    raw_t1.write_bytes(b"not a NIfTI file")
    # an earlier run's files of the subject, stale now: they must not survive its failed preprocessing
    work = tmp_path / "work"
    stale = _files(work / "out", bad)
    for made, path in zip(_files(root / "per_chunk/out", bad), stale):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(made, path)
    config = _config(tmp_path, cohort, tiny_model, "per_chunk")
    targets = [t for t in _targets(table) if f"sub-{bad}_" in t or f"sub-{good}_" in t]
    run = snakemake(work, *targets, "--keep-going", "--configfile", str(config))
    assert run.returncode != 0

    assert not [p for p in stale if p.exists()]
    for path in _files(work / "out", good):
        assert path.is_file(), path
    anat = work / "out" / f"sub-{good}/anat"
    for name in ("space-FLAIR_label-WMH_desc-m_mask.nii.gz", "desc-m_lesions.tsv", "desc-m_qc.png"):
        assert (anat / f"sub-{good}_{name}").is_file()
    assert not (work / "out" / f"sub-{bad}/anat/sub-{bad}_space-FLAIR_label-WMH_desc-m_mask.nii.gz").exists()

    rows = {Path(r["subject"]).name: r for r in read_status(work / "out/chunks/preprocess_batch/chunk-0000.tsv")}
    assert rows[f"sub-{good}"]["status"] == "done" and rows[f"sub-{bad}"]["status"] == "failed"
    reason = rows[f"sub-{bad}"]["error"]
    assert reason.startswith("wmhflow check: error:") and str(raw_t1) in reason, reason
    # its finishing job fails naming it and why; the summary says so too
    finish_log = (work / f"out/logs/finish_subject/m/sub-{bad}/anat/sub-{bad}.log").read_text()
    assert (
        f"sub-{bad}: segmentation failed" in finish_log and "preprocessing failed: wmhflow check: error:" in finish_log
    )
    assert f"sub-{bad}  failed  preprocess_batch  {reason}" in run.stderr
    status = pd.read_csv(work / "out/group/status.tsv", sep="\t", dtype=str).set_index("subject")
    assert status.loc[bad, "status"] == "failed" and status.loc[bad, "step"] == "preprocess_batch"
    assert status.loc[bad, "reason"] == reason
    assert status.loc[good, "status"] == "done"  # not blocked by its chunk-mate
    chunk_log = (work / "out/logs/preprocess_batch/chunk-0000.log").read_text()
    assert f"sub-{bad}: failed in" in chunk_log and f"sub-{good}: done in" in chunk_log


def test_the_chunk_verb_imports_no_heavy_library_before_it_runs():
    from test_job_overhead import _heavy_after

    from wmhflow.cli import VERBS

    assert _heavy_after(f"import {VERBS['preprocess-batch'][0]}") == []
