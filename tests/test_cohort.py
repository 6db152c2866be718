"""Cohort discovery: three layouts, splits, and every bad input as one clear error."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import wmhflow_command, write_nifti

from wmhflow import cohort
from wmhflow import config as wmh_config
from wmhflow.cli import main as cli
from wmhflow.errors import ConfigError, InputError
from wmhflow.paths import prefix
from wmhflow.workflow_subjects import subjects_for_workflow

SHAPE = (8, 8, 4)


def head(shape=SHAPE):
    """A bright block in dark air: the smallest image the checks take for a head."""
    data = np.zeros(shape, np.float32)
    data[2:-2, 2:-2, :] = 100.0
    return data


def K(subject, session="", **entities):
    """A subject's key in the cohort table: its output prefix."""
    return prefix(subject, session, **entities)


def _subject(dir_, ref=True, images="pre"):
    write_nifti(dir_ / images / "FLAIR.nii.gz", head())
    write_nifti(dir_ / images / "T1.nii.gz", head())
    if ref:
        write_nifti(dir_ / "wmh.nii.gz", np.zeros(SHAPE, np.uint8))


@pytest.fixture
def challenge_tree(tmp_path):
    root = tmp_path / "wmh"
    for sid in (0, 2, 4):
        _subject(root / "Utrecht" / str(sid))
    for sid in (50, 52):
        _subject(root / "Singapore" / str(sid))
    _subject(root / "Amsterdam" / "GE3T" / "100")
    _subject(root / "Amsterdam" / "GE3T" / "101", ref=False)
    return root


def test_challenge_tree_with_nested_site(challenge_tree):
    table = cohort.discover(challenge_tree)
    assert sorted(table["subject"]) == ["0", "100", "101", "2", "4", "50", "52"]
    assert set(table["session"]) == {""}
    assert table.loc[K("100"), "site"] == "Amsterdam/GE3T"
    assert table.loc[K("50"), "site"] == "Singapore"
    assert table.loc[K("101"), "reference"] == ""
    assert table.loc[K("0"), "flair"].endswith("Utrecht/0/pre/FLAIR.nii.gz")


def test_challenge_orig_images(tmp_path):
    _subject(tmp_path / "S" / "7", images="orig")
    assert list(cohort.discover(tmp_path, "challenge", images="orig").index) == [K("7")]
    with pytest.raises(InputError, match="no subjects found"):
        cohort.discover(tmp_path, "challenge", images="pre")


def test_results_inside_cohort_is_never_indexed(challenge_tree):
    results = challenge_tree / "results"
    _subject(results / "Fake" / "999")  # looks like a subject, but it is our own output folder
    table = cohort.discover(challenge_tree, exclude=[results])
    assert "999" not in set(table["subject"])


def test_paths_through_links_are_those_path_resolve_gives(tmp_path):
    """Discovery resolves each folder once, not each file's every folder (cohort._real_file): the paths
    must still be Path.resolve()'s when the cohort, a subject folder or a file is a link."""
    disk = tmp_path / "disk"
    for sid in (1, 2, 3):
        _subject(disk / "cohort" / "Utrecht" / str(sid))
    (tmp_path / "cohort").symlink_to(disk / "cohort")  # the cohort reached through a link
    moved = disk / "moved"
    moved.mkdir()
    flair = disk / "cohort/Utrecht/2/pre/FLAIR.nii.gz"
    flair.rename(moved / "flair.nii.gz")
    flair.symlink_to(moved / "flair.nii.gz")  # a linked file
    images = disk / "cohort/Utrecht/3/pre"
    images.rename(moved / "pre3")
    images.symlink_to(moved / "pre3")  # a linked images folder: os.walk does not enter it
    table = cohort.discover(tmp_path / "cohort", "challenge")
    assert sorted(table["subject"]) == ["1", "2"]
    for key in table.index:
        subject = table.loc[key, "subject"]
        for column, name in (("flair", "pre/FLAIR.nii.gz"), ("t1", "pre/T1.nii.gz"), ("reference", "wmh.nii.gz")):
            assert table.loc[key, column] == str((tmp_path / "cohort/Utrecht" / subject / name).resolve())
    assert table.loc[K("2"), "flair"] == str(moved / "flair.nii.gz")
    (moved / "flair.nii.gz").unlink()  # a dangling link is no file
    with pytest.raises(InputError, match="FLAIR image does not exist"):
        cohort.discover(tmp_path / "cohort", "challenge")


def test_splits_per_site_count_fraction_and_reproducible(challenge_tree):
    table = cohort.discover(challenge_tree)
    one = cohort.assign_splits(table, train_per_site=1, seed=3)
    assert one.groupby("site")["split"].apply(lambda s: (s == "train").sum()).to_dict() == {
        "Amsterdam/GE3T": 1,
        "Singapore": 1,
        "Utrecht": 1,
    }
    assert one.loc[K("101"), "split"] == "predict"  # no reference
    assert one.equals(cohort.assign_splits(table, train_per_site=1, seed=3))
    frac = cohort.assign_splits(table, train_per_site=0.5, seed=0)
    assert (frac[frac.site == "Utrecht"].split == "train").sum() == 2  # round(0.5 * 3) = 2
    seeds = {tuple(cohort.assign_splits(table, 1, seed=s).split) for s in range(8)}
    assert len(seeds) > 1


def test_bids_dataset_with_sessions_sites_and_references(tmp_path):
    root = tmp_path / "bids"
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    pd.DataFrame({"participant_id": ["sub-01", "sub-02"], "site": ["A", "B"]}).to_csv(
        root / "participants.tsv", sep="\t", index=False
    )
    for anat in (root / "sub-01/anat", root / "sub-02/ses-1/anat", root / "sub-02/ses-2/anat"):
        stem = "_".join(p for p in anat.parent.relative_to(root).parts)
        write_nifti(anat / f"{stem}_FLAIR.nii.gz", np.ones(SHAPE))
        write_nifti(anat / f"{stem}_T1w.nii.gz", np.ones(SHAPE))
    write_nifti(root / "derivatives/wmh/sub-01/anat/sub-01_label-WMH_mask.nii.gz", np.zeros(SHAPE))
    write_nifti(root / "derivatives/wmh/sub-02/ses-2/anat/sub-02_ses-2_label-WMH_mask.nii.gz", np.zeros(SHAPE))
    pattern = "derivatives/wmh/sub-{subject}/{session}anat/sub-{subject}_{session_}label-WMH_mask.nii.gz"
    table = cohort.discover(root, bids_reference=pattern)
    assert sorted(table.index) == [
        "sub-01/anat/sub-01",
        "sub-02/ses-1/anat/sub-02_ses-1",
        "sub-02/ses-2/anat/sub-02_ses-2",
    ]
    assert list(table["subject"]) == ["01", "02", "02"] and list(table["session"]) == ["", "1", "2"]
    assert table.loc[K("02", "1"), "site"] == "B"
    assert table.loc[K("01"), "reference"].endswith("sub-01_label-WMH_mask.nii.gz")
    assert table.loc[K("02", "1"), "reference"] == ""
    assert table.loc[K("02", "2"), "reference"] != ""


def test_bids_entities_kept_two_flairs_each_processed_and_nii_read(tmp_path, caplog):
    anat = tmp_path / "bids/sub-01/ses-a/anat"
    write_nifti(anat / "sub-01_ses-a_acq-ax_run-2_FLAIR.nii", np.ones(SHAPE))  # .nii, not .nii.gz
    write_nifti(anat / "sub-01_ses-a_acq-sag_FLAIR.nii.gz", np.ones(SHAPE))
    write_nifti(anat / "sub-01_ses-a_T1w.nii.gz", np.ones(SHAPE))
    caplog.set_level("INFO")
    table = cohort.discover(tmp_path / "bids")
    assert sorted(table.index) == [K("01", "a", acq="ax", run="2"), K("01", "a", acq="sag")]
    assert K("01", "a", acq="ax", run="2") == "sub-01/ses-a/anat/sub-01_ses-a_acq-ax_run-2"
    assert set(table["t1"]) == {str((anat / "sub-01_ses-a_T1w.nii.gz").resolve())}
    assert "2 FLAIR images" in caplog.text and "each processed" in caplog.text
    write_nifti(anat / "sub-01_ses-a_acq-x_T1w.nii.gz", np.ones(SHAPE))  # two T1w, neither matching
    with pytest.raises(InputError, match="several T1w images"):
        cohort.discover(tmp_path / "bids")


def _sessions_table():
    rows = [
        {"subject": s, "session": t, "site": "A", "flair": "f", "t1": "t", "reference": "r", "split": ""}
        for s in ("01", "02", "03")
        for t in ("1", "2")
    ]
    return pd.DataFrame(rows, index=[K(r["subject"], r["session"]) for r in rows])


def test_participant_and_session_selection():
    table = _sessions_table()
    assert set(cohort.select(table, participant_label="sub-01,02")["subject"]) == {"01", "02"}
    assert set(cohort.select(table, exclude_participant_label=["sub-03"])["subject"]) == {"01", "02"}
    chosen = cohort.select(table, exclude_participant_label="03", session_label=["ses-2"])
    assert list(chosen.index) == [K("01", "2"), K("02", "2")]
    assert len(cohort.select(table)) == 6
    with pytest.raises(ConfigError, match=r"'participant_label': not in the cohort: sub-07, sub-09"):
        cohort.select(table, participant_label="01,07,sub-09")
    with pytest.raises(ConfigError, match=r"'exclude_session_label': not in the cohort: ses-5"):
        cohort.select(table, exclude_session_label="5")
    with pytest.raises(ConfigError, match="leaves no subject"):
        cohort.select(table, exclude_session_label="1,2")


def test_splits_keep_a_subjects_sessions_together():
    table = _sessions_table()
    for seed in range(5):
        split = cohort.assign_splits(table, train_per_site=1, seed=seed)
        assert split.groupby("subject")["split"].nunique().max() == 1
        assert (split["split"] == "train").sum() == 2


def test_subjects_tsv_relative_paths_and_given_splits(tmp_path):
    write_nifti(tmp_path / "d/a_flair.nii.gz", np.ones(SHAPE))
    write_nifti(tmp_path / "d/a_t1.nii.gz", np.ones(SHAPE))
    write_nifti(tmp_path / "d/a_wmh.nii.gz", np.zeros(SHAPE))
    write_nifti(tmp_path / "d/b_flair.nii.gz", np.ones(SHAPE))
    write_nifti(tmp_path / "d/b_t1.nii.gz", np.ones(SHAPE))
    tsv = tmp_path / "subjects.tsv"
    tsv.write_text(
        "subject\tsite\tflair\tt1\treference\tsplit\n"
        "a\tX\td/a_flair.nii.gz\td/a_t1.nii.gz\td/a_wmh.nii.gz\ttest\n"
        "b\tX\td/b_flair.nii.gz\td/b_t1.nii.gz\t\t\n"
    )
    table = cohort.assign_splits(cohort.discover(tsv))
    assert table.loc[K("a"), "split"] == "test"  # the TSV's split wins
    assert table.loc[K("b"), "split"] == "predict"
    assert table.loc[K("a"), "flair"] == str((tmp_path / "d/a_flair.nii.gz").resolve())


@pytest.mark.parametrize(
    "line, problem",
    [
        ("a\tX\td/a_flair.nii.gz\td/a_t1.nii.gz\t\tvalidation\n", "line 2, split"),
        ("a-1\tX\td/a_flair.nii.gz\td/a_t1.nii.gz\t\t\n", "line 2, subject"),
        ("a\tX\td/a_flair.mha\td/a_t1.nii.gz\t\t\n", "line 2, flair"),
    ],
)
def test_subjects_tsv_rows_checked_by_schema(tmp_path, line, problem):
    tsv = tmp_path / "subjects.tsv"
    tsv.write_text("subject\tsite\tflair\tt1\treference\tsplit\n" + line)
    with pytest.raises(InputError, match=problem) as err:
        cohort.discover(tsv)
    assert str(tsv) in str(err.value)


def test_missing_t1_duplicate_ids_and_train_without_reference(tmp_path, challenge_tree):
    (challenge_tree / "Utrecht/0/pre/T1.nii.gz").unlink()  # accepted here; a plan needing T1 refuses it
    assert cohort.discover(challenge_tree).loc[K("0"), "t1"] == ""
    dup = tmp_path / "dup"
    _subject(dup / "A" / "1")
    _subject(dup / "B" / "1")
    with pytest.raises(InputError, match="duplicate subject id"):
        cohort.discover(dup)
    table = cohort.discover(dup / "A")
    table.loc[K("1"), ["reference", "split"]] = ["", "train"]
    with pytest.raises(InputError, match="split 'train' but has no reference"):
        cohort.assign_splits(table)


def test_results_folder_equal_to_cohort_is_refused(challenge_tree):
    config = wmh_config.validate({"cohort": str(challenge_tree), "results": str(challenge_tree)})
    with pytest.raises(ConfigError, match="input cohort's own folder"):
        subjects_for_workflow(config)


def test_check_finds_corrupt_4d_nan_grid_and_labels(challenge_tree):
    (challenge_tree / "Utrecht/0/pre/FLAIR.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    write_nifti(challenge_tree / "Utrecht/2/pre/T1.nii.gz", np.ones(SHAPE + (3,)))
    nan = np.ones(SHAPE, np.float32)
    nan[0, 0, 0] = np.nan
    write_nifti(challenge_tree / "Utrecht/4/pre/FLAIR.nii.gz", nan)
    write_nifti(challenge_tree / "Singapore/50/wmh.nii.gz", np.zeros((8, 8, 5), np.uint8))
    labels = np.zeros(SHAPE, np.uint8)
    labels[1, 1, 1] = 7
    write_nifti(challenge_tree / "Singapore/52/wmh.nii.gz", labels)
    table = cohort.assign_splits(cohort.discover(challenge_tree))
    found = {s: cohort.check_subject(s, row) for s, row in table.iterrows()}
    assert "not a readable NIfTI" in found[K("0")][0]
    assert "must be a 3D volume" in found[K("2")][0]
    assert "NaN" in found[K("4")][0]
    assert "shape (8, 8, 5) differs from the FLAIR shape" in found[K("50")][0]
    assert "unknown label value(s) [7]" in found[K("52")][0]
    assert found[K("100")] == [] and found[K("101")] == []


def test_discover_cli_selects_participants_as_the_workflow_does(tmp_path, challenge_tree, capsys):
    out = tmp_path / "chosen.tsv"
    assert cli(["discover", "--cohort", str(challenge_tree), "--participant-label", "sub-50", "0", "-o", str(out)]) == 0
    table = pd.read_csv(out, sep="\t", dtype=str)
    assert sorted(table["subject"]) == ["0", "50"]
    out = tmp_path / "rest.tsv"
    assert cli(["discover", "--cohort", str(challenge_tree), "--exclude-participant-label", "50", "-o", str(out)]) == 0
    rest = pd.read_csv(out, sep="\t", dtype=str)
    assert "50" not in set(rest["subject"]) and len(rest) == 6
    typo = tmp_path / "typo.tsv"
    assert cli(["discover", "--cohort", str(challenge_tree), "--participant-label", "99", "-o", str(typo)]) == 2
    assert "--participant-label: not in the cohort: sub-99" in capsys.readouterr().err
    assert not typo.exists()


def test_discover_cli_writes_table_and_check_fails_cleanly(tmp_path, challenge_tree):
    out = tmp_path / "subjects.tsv"
    run = subprocess.run(
        wmhflow_command() + ["discover", "--cohort", str(challenge_tree), "--check", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    table = pd.read_csv(out, sep="\t", dtype=str)
    assert len(table) == 7 and set(table["split"]) == {"train", "predict"}
    write_nifti(challenge_tree / "Singapore/50/wmh.nii.gz", np.zeros((8, 8, 5), np.uint8))
    out2 = tmp_path / "again.tsv"
    run = subprocess.run(
        wmhflow_command() + ["discover", "--cohort", str(challenge_tree), "--check", "-o", str(out2)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "Singapore/50/wmh.nii.gz: reference shape" in run.stderr
    assert not out2.exists()
