"""segment.subjects_per_job: chunks of subjects in one segment job (wmhflow.fcn.infer_batch,
wmhflow.staging, the rules).

Real files throughout: 8-bit NIfTI volumes, an untrained tiny FCN saved as a model file, and real
Snakemake runs for the workflow part.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import wmhflow_command, write_nifti
from test_workflow import snakemake

from wmhflow.errors import ConfigError
from wmhflow.fcn.infer_batch import Subject, run_chunk, subjects_of, write_threads
from wmhflow.paths import prefix, sidecar_path
from wmhflow.plan import Plan
from wmhflow.staging import SubjectNotSegmented, place, read_status, staged_path

SETTINGS = {
    "device": "cpu",
    "precision": "fp32",
    "batch_size": 4,
    "crop_margin": 16,
    "tta": "none",
    "threshold": "0.5",
    "min_lesion_mm3": 0.0,
    "min_depth_mm": 0.0,
}


# ------------------------------------------------------------------------------ the plan's chunks
def _plan(tmp_path, labels, per_job):
    subjects = pd.DataFrame(
        {"subject": labels, "session": "", "site": "A", "flair": "f", "t1": "t", "reference": "", "split": "predict"},
        index=pd.Index([prefix(s) for s in labels], name="prefix"),
    )
    config = {
        "results": str(tmp_path / "results"),
        "model": {"name": "fcn2d", "checkpoint": "m.pt"},
        "segment": {"subjects_per_job": per_job},
    }
    return Plan(config, subjects)


def test_chunks_cover_every_subject_once_and_stay_put_when_subjects_are_added(tmp_path):
    labels = [f"{i:02d}" for i in range(7)]
    plan = _plan(tmp_path, labels, 3)
    chunks = plan.segment_chunks
    assert list(chunks) == ["chunk-0000", "chunk-0001", "chunk-0002"]
    assert [len(m) for m in chunks.values()] == [3, 3, 1]
    assert sorted(s for m in chunks.values() for s in m) == sorted(plan.subjects.index)
    grown = _plan(tmp_path, labels + ["07", "08", "09"], 3).segment_chunks
    assert {c: m for c, m in grown.items() if c in ("chunk-0000", "chunk-0001")} == {
        c: m for c, m in chunks.items() if c in ("chunk-0000", "chunk-0001")
    }
    assert plan.segment_chunk_of["sub-06/anat/sub-06"] == "chunk-0002"
    inputs = plan.chunk_files("tophat")(type("W", (), {"chunk": "chunk-0001"}))
    assert [Path(p).name for p in inputs] == [f"sub-0{i}_space-FLAIR_desc-tophat_FLAIR.nii.gz" for i in (3, 4, 5)]
    assert plan.chunk_status("chunk-0001").endswith("chunks/infer_batch/fcn2d/chunk-0001.tsv")
    assert plan.chunk_status_of(type("W", (), {"subject": "sub-06/anat/sub-06"})) == plan.chunk_status("chunk-0002")
    with pytest.raises(ConfigError, match="sub-99/anat/sub-99 is not a test or predict subject"):
        plan.chunk_status_of(type("W", (), {"subject": "sub-99/anat/sub-99"}))


def test_subjects_per_job_defaults_to_chunks_of_8_and_is_checked():
    import yaml

    from wmhflow.config import validate

    config = yaml.safe_load((Path(__file__).resolve().parent.parent / "config.yaml").read_text())
    validate(config)
    assert config["segment"]["subjects_per_job"] == 8
    config["segment"]["subjects_per_job"] = 65
    with pytest.raises(ConfigError, match=r"segment.subjects_per_job.*maximum of 64"):
        validate(config)


def test_chunk_lists_must_have_one_entry_per_subject():
    with pytest.raises(ConfigError, match="--mask.*2 value"):
        subjects_of(["a", "b", "c"], ["f1", "f2", "f3"], [], ["p1", "p2", "p3"], ["q1", "q2", "q3"], ["m1", "m2"])


# ------------------------------------------------------------------------------ infer-batch in the library
def _subject(root: Path, label: str, seed: int) -> Subject:
    rng = np.random.default_rng(seed)
    head = np.zeros((40, 40, 5), bool)
    head[6:34, 8:32, :] = True
    key = prefix(label)
    files = {}
    for name, scale in (("FLAIR_quant", 120), ("T1w_quant", 90), ("FLAIR_tophat", 20)):
        data = np.where(head, rng.integers(1, scale, head.shape), 0).astype(np.uint8)
        suffix, desc = name.split("_")
        files[name] = str(write_nifti(root / f"{key}_space-FLAIR_desc-{desc}_{suffix}.nii.gz", data))
    out = root / f"{key}_space-FLAIR_label-WMH_desc-tiny"
    return Subject(
        key,
        files["FLAIR_quant"],
        files["T1w_quant"],
        files["FLAIR_tophat"],
        f"{out}_probseg.nii.gz",
        f"{out}_mask.nii.gz",
    )


def _infer_alone(subject: Subject, model, probseg, mask):
    cmd = wmhflow_command() + [
        "infer",
        "--flair",
        subject.flair,
        "--t1",
        subject.t1,
        "--tophat",
        subject.tophat,
        "--model",
        str(model),
        "--probseg",
        str(probseg),
        "--mask",
        str(mask),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--batch-size",
        "4",
        "--crop-margin",
        "16",
        "--threshold",
        "0.5",
        "--min-depth-mm",
        "0",
        "--threads",
        "1",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def _sidecar(path) -> dict:
    record = json.loads(sidecar_path(path).read_text())
    for wall_time in ("FCNSeconds", "TemplateRegistrationSeconds"):  # different in every run
        record.pop(wall_time, None)
    return record


def test_a_chunk_writes_what_infer_writes_and_a_bad_subject_only_fails_itself(tmp_path, tiny_model):
    root = tmp_path / "results"
    subjects = [_subject(root, label, seed) for seed, label in enumerate(["01", "02", "03"])]
    Path(subjects[1].tophat).write_bytes(b"not a NIfTI file")
    staging, status = tmp_path / "staged", tmp_path / "chunk-0000.tsv"
    rows = run_chunk(subjects, [str(tiny_model)], SETTINGS, staging, status)
    assert [r["status"] for r in rows] == ["done", "failed", "done"]
    assert subjects[1].tophat in rows[1]["error"] and "not a readable NIfTI" in rows[1]["error"]
    assert [r["status"] for r in read_status(status)] == ["done", "failed", "done"]
    for good in (subjects[0], subjects[2]):
        place(status, good.key, staging, good.probseg, good.mask)
        ours = {p: (np.asarray(nib.load(p).dataobj), _sidecar(p)) for p in (good.probseg, good.mask)}
        _infer_alone(good, tiny_model, good.probseg, good.mask)  # the same paths, one `wmhflow infer`
        for path, (data, sidecar) in ours.items():
            assert np.array_equal(data, np.asarray(nib.load(path).dataobj))
            # the same sidecars, Sources included, although written in the staging folder first
            assert sidecar == _sidecar(path)
        assert ours[good.mask][1]["Sources"] == [f"bids::{Path(good.probseg).relative_to(root).as_posix()}"]
    with pytest.raises(SubjectNotSegmented, match=r"sub-02: segmentation failed .*not a readable NIfTI"):
        place(status, subjects[1].key, staging, subjects[1].probseg, subjects[1].mask)
    assert not Path(subjects[1].mask).exists()

    # fixed input: the chunk again segments only that subject
    fixed = _subject(root, "02", 1)
    before = {s.key: Path(staging / s.key / Path(s.mask).name).stat().st_mtime_ns for s in (subjects[0], subjects[2])}
    rows = run_chunk(subjects, [str(tiny_model)], SETTINGS, staging, status)
    assert [r["status"] for r in rows] == ["cached", "done", "cached"]
    assert before == {
        s.key: Path(staging / s.key / Path(s.mask).name).stat().st_mtime_ns for s in (subjects[0], subjects[2])
    }
    place(status, fixed.key, staging, fixed.probseg, fixed.mask)
    assert nib.load(fixed.mask).shape == (40, 40, 5)
    # another setting is another result: nothing is reused
    rows = run_chunk(subjects, [str(tiny_model)], dict(SETTINGS, threshold="0.3"), staging, status)
    assert [r["status"] for r in rows] == ["done"] * 3


def test_several_writers_write_the_same_files_and_keep_a_failure_to_its_subject(tmp_path, tiny_model):
    # On a GPU a chunk post-processes and writes several subjects side by side (write_threads); the
    # files, the status rows and their order must be those of one writer.
    root = tmp_path / "results"
    subjects = [_subject(root, label, seed) for seed, label in enumerate(["01", "02", "03", "04", "05"])]
    Path(subjects[1].t1).write_bytes(b"not a NIfTI file")
    staged = {}
    for writers in (1, 3):
        staging, status = tmp_path / f"staged-{writers}", tmp_path / f"chunk-{writers}.tsv"
        rows = run_chunk(subjects, [str(tiny_model)], SETTINGS, staging, status, writers=writers)
        assert [r["subject"] for r in rows] == [s.key for s in subjects]
        assert [r["status"] for r in rows] == ["done", "failed", "done", "done", "done"]
        staged[writers] = {
            (s.key, kind): np.asarray(nib.load(staged_path(staging, s.key, getattr(s, kind))).dataobj)
            for s in subjects
            if s is not subjects[1]
            for kind in ("probseg", "mask")
        }
    assert staged[1].keys() == staged[3].keys()
    assert all(np.array_equal(staged[1][k], staged[3][k]) for k in staged[1])
    assert write_threads("cpu", 8) == 1  # on a CPU the FCN has every thread


def test_infer_batch_command_reports_a_missing_model_in_one_line(tmp_path):
    s = _subject(tmp_path, "01", 0)
    cmd = wmhflow_command() + [
        "infer-batch",
        "--subjects",
        s.key,
        "--flair",
        s.flair,
        "--t1",
        s.t1,
        "--tophat",
        s.tophat,
        "--probseg",
        s.probseg,
        "--mask",
        s.mask,
        "--model",
        str(tmp_path / "none.pt"),
        "--staging",
        str(tmp_path / "st"),
        "--status",
        str(tmp_path / "c.tsv"),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 2 and f"{tmp_path / 'none.pt'}: model file does not exist" in run.stderr
    assert not (tmp_path / "c.tsv").exists()


# ------------------------------------------------------------------------------ the workflow
@pytest.fixture(scope="module")
def chunked_run(tmp_path_factory, tiny_model):
    """3 small subjects reprocessed with one model as two variants: one job per subject, and chunks of 2
    (targets: the masks, so no evaluation or cohort tables; chunked, the job that places a mask also
    writes its lesion table and QC picture)."""
    from wmhflow.synth import write_cohort

    root = tmp_path_factory.mktemp("chunked")
    table = write_cohort(root / "in", subjects=3, seed=5, small=True)
    base = f"cohort: {root / 'in'}\nresults: out\nsplits: {{train_per_site: 0.01}}\n"
    for name, per_job in (("single", 1), ("chunked", 2)):
        (root / f"{name}.yaml").write_text(
            base + f"model: {{name: {name}, checkpoint: {tiny_model}}}\nsegment: {{subjects_per_job: {per_job}}}\n"
        )
    for name in ("single", "chunked"):
        run = snakemake(root, *_mask_targets(table, name), "--configfile", str(root / f"{name}.yaml"))
        assert run.returncode == 0, run.stderr[-4000:]
    return root, table


def _mask_targets(table, name) -> list[str]:
    return [f"out/sub-{s}/anat/sub-{s}_space-FLAIR_label-WMH_desc-{name}_mask.nii.gz" for s in table["subject"]]


def _masks(root, name):
    return sorted((root / "out").glob(f"sub-*/anat/*_label-WMH_desc-{name}_mask.nii.gz"))


@pytest.mark.slow
def test_chunked_run_gives_the_masks_of_one_job_per_subject(chunked_run):
    root, _ = chunked_run
    single, chunked = _masks(root, "single"), _masks(root, "chunked")
    assert len(single) == len(chunked) == 3
    for a, b in zip(single, chunked):
        assert np.array_equal(np.asarray(nib.load(str(a)).dataobj), np.asarray(nib.load(str(b)).dataobj))
        sa, sb = _sidecar(a), _sidecar(b)
        assert json.dumps(sa).replace("desc-single", "desc-chunked") == json.dumps(sb).replace('"single"', '"chunked"')
    tables = sorted((root / "out/chunks/infer_batch/chunked").glob("chunk-*.tsv"))
    assert [len(read_status(t)) for t in tables] == [2, 1]
    assert not (root / "out/chunks/segment_single").exists()
    status = pd.read_csv(root / "out/group/status.tsv", sep="\t")
    assert not (status["status"] == "failed").any()


@pytest.mark.slow
def test_a_failing_subject_leaves_the_others_and_a_rerun_redoes_only_it(chunked_run):
    root, table = chunked_run
    config, targets = str(root / "chunked.yaml"), _mask_targets(table, "chunked")
    tophats = sorted((root / "out").glob("sub-*/anat/*_desc-tophat_FLAIR.nii.gz"))
    first = read_status(root / "out/chunks/infer_batch/chunked/chunk-0000.tsv")[0]["subject"]
    bad = next(p for p in tophats if p.name.startswith(Path(first).name + "_"))
    good = bad.read_bytes()
    bad.write_bytes(good[:200])  # an unreadable input after preprocessing
    run = snakemake(root, *targets, "--keep-going", "--configfile", config)
    label = Path(first).name
    assert run.returncode != 0
    assert (
        f"{label}  failed  finish_subject  wmhflow place-segmentation: error: {label}: segmentation failed"
        in run.stderr
    )
    assert f"{bad.relative_to(root)}: tophat is not a readable NIfTI" in run.stderr
    masks = _masks(root, "chunked")
    assert len(masks) == 2 and not any(m.name.startswith(label + "_") for m in masks)
    status = pd.read_csv(root / "out/group/status.tsv", sep="\t", dtype=str)
    assert list(status.loc[status["status"] == "failed", "subject"]) == [label.removeprefix("sub-")]

    bad.write_bytes(good)  # fixed (newer than the chunk's table, as a replaced input is)
    run = snakemake(root, *targets, "--configfile", config)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["subject"]: r["status"] for r in read_status(root / "out/chunks/infer_batch/chunked/chunk-0000.tsv")}
    assert rows.pop(first) == "done" and set(rows.values()) == {"cached"}
    assert len(_masks(root, "chunked")) == 3
    single = {m.name.split("_")[0]: m for m in _masks(root, "single")}
    fixed = next(m for m in _masks(root, "chunked") if m.name.startswith(label + "_"))
    assert np.array_equal(np.asarray(nib.load(str(fixed)).dataobj), np.asarray(nib.load(str(single[label])).dataobj))


@pytest.mark.parametrize("verb", ["infer-batch", "place-segmentation"])
def test_the_chunk_verbs_import_no_heavy_library_before_they_run(verb):
    """place-segmentation runs once per subject: no torch, no pandas (status table through csv)."""
    from test_job_overhead import _heavy_after

    from wmhflow.cli import VERBS

    assert _heavy_after(f"import {VERBS[verb][0]}") == []
