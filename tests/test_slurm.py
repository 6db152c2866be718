"""The whole workflow on a REAL single-node SLURM cluster (tests/slurm/local_slurm.sh), with
profiles/slurm (+ profiles/ci-slurm): GPU rules in partition gpu with a (fake) GPU, CPU rules in
partition cpu without one, preprocessing one job per subject, and masks equal to a local run's
given the same model file.

Needs root (the fixture installs Debian's slurm packages with apt-get if missing and starts the
daemons without systemd); skipped otherwise. Takes several minutes on 2 cores.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from wmhflow.paths import bids_path
from wmhflow.synth import write_cohort

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "slurm" / "local_slurm.sh"
PROFILES = REPO / "profiles"
MODEL = "fcn2d"
SUBJECTS = 6
TIMEOUT_S = 1800  # the whole SLURM run; took about 8 min on 2 shared cores
PREPROCESS_RULES = {"check_subject", "align_t1", "bias_correct", "requantize", "tophat"}


def _fixture(action, timeout=600):
    return subprocess.run(["bash", str(FIXTURE), action], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm_cluster():
    """Start the test cluster for this module; always stop its daemons afterwards."""
    if os.geteuid() != 0:
        pytest.skip("SLURM test needs root (installs Debian's slurm packages, starts slurmctld/slurmd)")
    if (
        shutil.which("apt-get") is None
        and shutil.which("slurmctld") is None
        and not Path("/usr/sbin/slurmctld").exists()
    ):
        pytest.skip("SLURM test needs apt-get to install slurmctld slurmd slurm-client munge")
    t0 = time.monotonic()
    try:
        start = _fixture("start")
        if start.returncode == 4:
            pytest.skip(f"SLURM packages missing and no apt-get: {start.stderr.strip()}")
        assert start.returncode == 0, f"local_slurm.sh start failed:\n{start.stdout}\n{start.stderr}"
        print(f"[slurm] cluster up after {time.monotonic() - t0:.0f} s")
        yield
    finally:
        stop = _fixture("stop", timeout=120)
        print(f"[slurm] cluster stopped (rc {stop.returncode}); fixture total {time.monotonic() - t0:.0f} s")


def _env():
    env = dict(os.environ)
    # the venv's python/wmhflow first on PATH; sbatch --export=ALL hands PATH on to every job
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def _snakemake(workdir, *args, timeout):
    cmd = [
        "timeout",
        "-s",
        "INT",
        "-k",
        "60",
        str(timeout),
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        *args,
    ]
    with open(Path(workdir).parent / f"{Path(workdir).name}.log", "w") as log:
        run = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=_env())
    return run.returncode, (Path(workdir).parent / f"{Path(workdir).name}.log").read_text()


def _scontrol_jobs(workdir):
    """SLURM's own record of every job run in workdir: `scontrol show job -d` (the cluster keeps finished
    jobs for MinJobAge = 3600 s), one dict of Key=Value fields per job. JOB_GRES is what the job was
    allocated (gpu:1, or (null)); TRES lists GPUs only with accounting (slurmdbd)."""
    out = subprocess.run(["scontrol", "show", "job", "-d", "-o"], capture_output=True, text=True, check=True).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("WorkDir") == str(workdir):
            jobs.append(fields)
    return jobs


def _sacct_jobs(job_ids):
    """sacct's record (partition, allocated TRES) of these jobs, or None without accounting."""
    run = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "--format=JobID,Partition,AllocTRES,State"],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        return None
    return {row.split("|")[0]: row.split("|") for row in run.stdout.splitlines() if row}


def _diagnostics(workdir, log_text):
    slurm_logs = sorted((Path(workdir) / ".snakemake" / "slurm_logs").rglob("*.log"))
    tails = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in slurm_logs[-5:])
    queue = subprocess.run(
        ["squeue", "-a", "-t", "all", "-o", "%i %P %j %T %R %k"], capture_output=True, text=True
    ).stdout
    return f"{log_text[-6000:]}\n--- squeue\n{queue[-3000:]}\n{tails}"


def test_workflow_on_slurm_gpu_partition_and_same_masks_as_local(slurm_cluster, tmp_path):
    t_start = time.monotonic()
    cohort = tmp_path / "cohort"
    write_cohort(cohort, subjects=SUBJECTS, seed=11, small=True)
    # CI overrides of config.yaml: this cohort, 1 training subject per site (3 train, 3 test), a very
    # short training, and memory requests that fit a small CI runner (the node offers what it has)
    ci_config = tmp_path / "ci_config.yaml"
    ci_config.write_text(
        yaml.safe_dump(
            {
                "cohort": str(cohort),
                "splits": {"train_per_site": 1, "seed": 0},
                "train": {"preset": "demo", "overrides": {"iterations": 20}, "mem_mb": 2000, "runtime": 30},
                "segment": {"mem_mb": 2000},
            }
        )
    )

    # ---------------------------------------------------------------- 1. everything on SLURM
    slurm_dir = tmp_path / "slurm"
    slurm_dir.mkdir()
    t0 = time.monotonic()
    rc, log_text = _snakemake(
        slurm_dir,
        "--profile",
        str(PROFILES / "slurm"),
        "--profile",
        str(PROFILES / "ci-slurm"),
        "--configfile",
        str(ci_config),
        timeout=TIMEOUT_S,
    )
    t_slurm = time.monotonic() - t0
    print(f"[slurm] workflow on SLURM: rc {rc} after {t_slurm:.0f} s")
    assert rc == 0, _diagnostics(slurm_dir, log_text)
    assert "SLURM run ID" in log_text, log_text[:3000]

    results = slurm_dir / "results"
    subjects = pd.read_csv(results / "group" / "subjects.tsv", sep="\t", dtype=str, index_col=0)
    # the table's index is each acquisition's output prefix; bids_path wants the subject label
    test_subjects = sorted(subjects.loc[subjects["split"] == "test", "subject"])
    assert len(test_subjects) == 3 and (subjects["split"] == "train").sum() == 3, subjects
    model_file = results / "models" / MODEL / "model.pt"
    assert model_file.is_file()

    # ---------------------------------------------------------------- 2. SLURM's own records
    jobs = _scontrol_jobs(slurm_dir)
    assert jobs, "no SLURM job of this run in `scontrol show job`"
    summary = [
        (j["JobId"], j.get("Partition"), j.get("Comment"), j.get("TRES"), j.get("JOB_GRES"), j.get("JobState"))
        for j in jobs
    ]
    print("[slurm] jobs:\n" + "\n".join(map(str, summary)))
    by_rule = {}
    for j in jobs:
        # the plugin's comment: rule_<rule>[_wildcards_<w>] or, for a group, rule_<group>_<rules...>;
        # a group name holds the subject's prefix (sub-X/anat/sub-X): not only word characters
        m = re.match(r"rule_(train|infer|preprocess_\S+?|[a-z_]+?)(?:_wildcards_.*)?$", j.get("Comment", ""))
        assert m, j
        name = m.group(1)
        key = "preprocess" if name.startswith("preprocess_") else name
        by_rule.setdefault(key, []).append(j)
    assert all(j["JobState"] == "COMPLETED" for j in jobs), summary

    assert len(by_rule.get("train", [])) == 1, summary
    # segmentation (segment.subjects_per_job, default 8): one GPU job per chunk of test subjects
    chunk = yaml.safe_load((REPO / "config.yaml").read_text())["segment"]["subjects_per_job"]
    gpu_jobs = by_rule["train"] + by_rule.get("infer_batch", [])
    assert len(by_rule.get("infer_batch", [])) == -(-len(test_subjects) // chunk), summary
    assert "infer" not in by_rule, summary
    for j in gpu_jobs:
        assert j["Partition"] == "gpu", j
        assert j["JOB_GRES"] == "gpu:1", j  # one (fake) GPU was allocated to the job
    cpu_jobs = [j for key, js in by_rule.items() if key not in ("train", "infer_batch") for j in js]
    assert cpu_jobs
    for j in cpu_jobs:
        assert j["Partition"] == "cpu", j
        assert j["JOB_GRES"] == "(null)" and "gpu" not in j["TRES"] + j.get("TresPerJob", ""), j

    # preprocessing (preprocess.jobs: per_subject): one job per subject, no separate per-step jobs
    assert len(by_rule.get("preprocess", [])) == SUBJECTS, summary
    assert not PREPROCESS_RULES & set(by_rule), summary
    for j in by_rule["preprocess"]:
        assert j["Comment"].startswith("rule_preprocess_subject"), j
        assert "cpu=1," in j["TRES"], j  # preprocess.threads (default 1)

    # with accounting (local_slurm.sh --accounting), sacct must tell the same story
    acct = _sacct_jobs([j["JobId"] for j in jobs])
    print(f"[slurm] checked {len(jobs)} jobs in scontrol's records" + ("" if acct is None else " and sacct's"))
    if acct is not None:
        for j in jobs:
            row = acct[j["JobId"]]
            assert row[1] == j["Partition"], (row, j)
            assert ("gres/gpu=1" in row[2]) == (j in gpu_jobs), (row, j)

    # ---------------------------------------------------------------- 3. same model, local run
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    local_config = tmp_path / "local_config.yaml"
    local_config.write_text(yaml.safe_dump({"model": {"checkpoint": str(model_file)}}))
    targets = [str(bids_path("results", s, "mask", desc=MODEL, label="WMH")) for s in test_subjects]
    t0 = time.monotonic()
    rc, local_log = _snakemake(
        local_dir,
        *targets,
        "--profile",
        str(PROFILES / "local"),
        "--cores",
        "2",
        "--configfile",
        str(ci_config),
        str(local_config),
        timeout=1200,
    )
    t_local = time.monotonic() - t0
    print(f"[slurm] local segmentation with the SLURM-trained model: rc {rc} after {t_local:.0f} s")
    assert rc == 0, local_log[-6000:]
    assert not (local_dir / "results" / "models").exists()  # nothing trained locally

    for s in test_subjects:
        for kind in ("mask", "probseg"):
            a = nib.load(str(bids_path(results, s, kind, desc=MODEL, label="WMH")))
            b = nib.load(str(bids_path(local_dir / "results", s, kind, desc=MODEL, label="WMH")))
            assert np.allclose(a.affine, b.affine)
            va, vb = np.asarray(a.dataobj), np.asarray(b.dataobj)
            if kind == "mask":
                assert np.array_equal(va, vb), f"sub-{s}: {int((va != vb).sum())} mask voxels differ"
            else:
                assert np.allclose(va, vb, atol=1e-5), f"sub-{s}: probseg differs by {np.abs(va - vb).max()}"
    print(f"[slurm] test total {time.monotonic() - t_start:.0f} s (SLURM run {t_slurm:.0f} s, local {t_local:.0f} s)")
