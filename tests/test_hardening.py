"""Hostile inputs, one class at a time: headers, geometry, signal, labels, subjects TSVs, config, files.

Each case asserts the exit code, that the one-line message names the file (or config key) and the
problem, and that nothing is written. The workflow-level cases (check step first, --keep-going,
status table, paths with spaces) are in test_hardening_workflow.py.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import write_nifti

from wmhflow import cohort, io
from wmhflow import config as wmh_config
from wmhflow.cli import main as cli
from wmhflow.errors import ConfigError, InputError
from wmhflow.paths import prefix

SHAPE = (12, 12, 6)


def head(shape=SHAPE, value=100.0):
    data = np.zeros(shape, np.float32)
    data[2:-2, 2:-2, :] = value
    data[4:6, 4:6, :] = 2 * value  # some contrast inside
    return data


def with_codes(path, data, affine, qcode, scode, sform=None):
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=qcode)
    img.set_sform(affine if sform is None else sform, code=scode)
    nib.save(img, str(path))
    return path


def run_check(tmp_path, capsys, flair, t1=None, reference=None):
    """`wmhflow check` in process: (exit code, stderr lines, whether the output was written)."""
    out = tmp_path / "checks" / "sub-x.json"
    argv = ["check", "--subject", "x", "--flair", str(flair), "--output", str(out)]
    if t1:
        argv += ["--t1", str(t1)]
    if reference:
        argv += ["--reference", str(reference)]
    code = cli(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if ": error:" in line]
    return code, lines, out.exists()


@pytest.fixture
def good(tmp_path):
    flair = write_nifti(tmp_path / "flair.nii.gz", head())
    t1 = write_nifti(tmp_path / "t1.nii.gz", head(value=50.0))
    labels = np.zeros(SHAPE, np.uint8)
    labels[5, 5, 2] = 1
    labels[3, 3, 3] = 2
    reference = write_nifti(tmp_path / "wmh.nii.gz", labels)
    return flair, t1, reference


def test_a_good_subject_passes_and_is_described(tmp_path, capsys, good):
    code, lines, written = run_check(tmp_path, capsys, *good)
    assert code == 0 and lines == [] and written
    import json

    summary = json.loads((tmp_path / "checks/sub-x.json").read_text())
    assert summary["reference"]["wmh_voxels"] == 1 and summary["flair"]["orientation"] == "RAS"


# ---------------------------------------------------------------------------------- headers
def test_no_orientation_codes_is_refused_not_guessed(tmp_path, capsys, good):
    flair = with_codes(tmp_path / "nocodes.nii.gz", head(), np.diag([1.0, 1.0, 3.0, 1.0]), 0, 0)
    code, lines, written = run_check(tmp_path, capsys, flair, good[1])
    assert code == 2 and not written and len(lines) == 1
    assert f"{flair}: FLAIR has no orientation (qform_code = sform_code = 0)" in lines[0]


def test_outputs_never_claim_a_scanner_frame_the_input_lacked(tmp_path):
    """save_like on an in-memory image without codes keeps them 0 (unknown), never 1."""
    like = nib.Nifti1Image(head(), None)
    out = io.save_like(head(), like, tmp_path / "o.nii.gz")
    back = nib.load(str(out))
    assert int(back.header["qform_code"]) == 0 and int(back.header["sform_code"]) == 0


def test_qform_differing_from_sform_is_logged_once_and_the_sform_wins(tmp_path, caplog):
    sform = np.diag([1.0, 1.0, 3.0, 1.0])
    qform = sform.copy()
    qform[0, 3] = 7.0  # the two disagree by 7 mm
    path = with_codes(tmp_path / "both.nii.gz", head(), qform, 1, 2, sform=sform)
    with caplog.at_level(logging.WARNING, logger="wmhflow.io"):
        img = io.load_nifti(path, "FLAIR")
        io.load_nifti(path, "FLAIR")
    notes = [r.getMessage() for r in caplog.records if "qform and sform differ" in r.getMessage()]
    assert len(notes) == 1 and str(path) in notes[0] and "differ by up to 7 mm" in notes[0]
    np.testing.assert_allclose(img.affine, sform)
    out = nib.load(str(io.save_like(head(), img, tmp_path / "out.nii.gz")))
    np.testing.assert_allclose(out.get_qform(), sform, atol=1e-5)
    np.testing.assert_allclose(out.get_sform(), sform, atol=1e-5)
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (1, 2)


def test_only_a_qform_is_a_valid_orientation(tmp_path, capsys, good):
    affine = np.diag([-1.0, 1.0, 3.0, 1.0])
    flair = with_codes(tmp_path / "qonly.nii.gz", head(), affine, 1, 0)
    reference = with_codes(tmp_path / "qonly_wmh.nii.gz", np.zeros(SHAPE, np.uint8), affine, 1, 0)
    code, lines, written = run_check(tmp_path, capsys, flair, good[1], reference)
    assert code == 0 and written


# --------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(
    "shape, affine, problem",
    [
        ((12, 12, 1), None, "1 voxel(s) along axis 2 (shape (12, 12, 1)): a single slice"),
        ((1, 12, 6), None, "1 voxel(s) along axis 0"),
        (SHAPE, np.diag([1.0, 1.0, 192.0, 1.0]), "voxel size 192 mm along axis 2"),
        (SHAPE, np.diag([0.001, 1.0, 3.0, 1.0]), "voxel size 0.001 mm along axis 0"),
    ],
)
def test_degenerate_geometry_is_refused_before_n4(tmp_path, capsys, good, shape, affine, problem):
    flair = write_nifti(tmp_path / "bad_flair.nii.gz", head(shape), affine)
    code, lines, written = run_check(tmp_path, capsys, flair, good[1])
    assert code == 2 and not written and len(lines) == 1
    assert f"{flair}: FLAIR" in lines[0] and problem in lines[0]


def test_implausible_t1_voxels_name_the_t1(tmp_path, capsys, good):
    t1 = write_nifti(tmp_path / "t1_192.nii.gz", head(), np.diag([192.0, 1.0, 1.0, 1.0]))
    code, lines, _ = run_check(tmp_path, capsys, good[0], t1)
    assert code == 2 and f"{t1}: T1 voxel size 192 mm" in lines[0]


def test_too_thin_to_register_onto_is_refused_at_the_check_and_by_align(tmp_path, capsys):
    flair = write_nifti(tmp_path / "thin.nii.gz", head((12, 12, 3)))
    t1 = write_nifti(tmp_path / "t1_own_grid.nii.gz", head((10, 10, 8), 50.0), np.diag([1.2, 1.2, 1.0, 1.0]))
    code, lines, _ = run_check(tmp_path, capsys, flair, t1)
    assert code == 2 and f"{flair}: FLAIR has 3 voxels along axis 2" in lines[0] and "needs at least 4" in lines[0]
    out = tmp_path / "aligned.nii.gz"
    assert cli(["align-t1", "--flair", str(flair), "--t1", str(t1), "--output", str(out)]) == 2
    assert "FLAIR has 3 voxels along axis 2" in capsys.readouterr().err and not out.exists()
    on_grid = write_nifti(tmp_path / "t1_on_grid.nii.gz", head((12, 12, 3), 50.0))
    assert run_check(tmp_path, capsys, flair, on_grid)[0] == 0  # no registration needed: fine


# ------------------------------------------------------------------------------------ signal
@pytest.mark.parametrize(
    "data, problem",
    [
        (np.zeros(SHAPE, np.float32), "is constant (every voxel is 0)"),
        (np.full(SHAPE, 417.0, np.float32), "is constant (every voxel is 417)"),
    ],
)
def test_blank_or_constant_flair_is_refused(tmp_path, capsys, good, data, problem):
    flair = write_nifti(tmp_path / "blank.nii.gz", data)
    code, lines, written = run_check(tmp_path, capsys, flair, good[1])
    assert code == 2 and not written and f"{flair}: FLAIR {problem}" in lines[0]


def test_blank_t1_and_t1_that_is_the_flair(tmp_path, capsys, good):
    t1 = write_nifti(tmp_path / "blank_t1.nii.gz", np.zeros(SHAPE, np.float32))
    code, lines, _ = run_check(tmp_path, capsys, good[0], t1)
    assert code == 2 and f"{t1}: T1 is constant" in lines[0]
    code, lines, _ = run_check(tmp_path, capsys, good[0], good[0])
    assert code == 2 and f"{good[0]}: T1 is the FLAIR file itself" in lines[0]


def test_segment_verb_refuses_a_blank_flair_before_loading_anything_else(tmp_path, capsys):
    flair = write_nifti(tmp_path / "blank.nii.gz", np.zeros(SHAPE, np.float32))
    code = cli(["segment", "--flair", str(flair), "--model", str(tmp_path / "none.pt"), "-o", str(tmp_path / "o")])
    assert code == 2 and f"{flair}: FLAIR is constant" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------ labels
def _labels(tmp_path, name, value, dtype=np.float32, shape=SHAPE, affine=None):
    data = np.zeros(shape, dtype)
    data[5, 5, 2] = value
    return write_nifti(tmp_path / name, data, affine)


@pytest.mark.parametrize(
    "name, value, dtype, problem",
    [
        ("wmh255.nii.gz", 255, np.uint8, "unknown label value(s) [255] in the reference"),
        ("wmh_neg.nii.gz", -1, np.int8, "unknown label value(s) [-1] in the reference"),
        (
            "fuzzy.nii.gz",
            0.7,
            np.float32,
            "reference is not a label image: 1 voxel(s) are not whole numbers (e.g. 0.7)",
        ),
    ],
)
def test_bad_reference_labels_are_refused_by_check(tmp_path, capsys, good, name, value, dtype, problem):
    reference = _labels(tmp_path, name, value, dtype)
    code, lines, written = run_check(tmp_path, capsys, good[0], good[1], reference)
    assert code == 2 and not written and len(lines) == 1 and f"{reference}: {problem}" in lines[0]


def test_reference_that_is_an_image_or_off_the_grid(tmp_path, capsys, good):
    code, lines, _ = run_check(tmp_path, capsys, good[0], good[1], good[0])  # the FLAIR as reference
    assert code == 2 and f"{good[0]}: unknown label value(s) [100, 200]" in lines[0]
    shifted = np.diag([1.0, 1.0, 3.0, 1.0])
    shifted[0, 3] = 5.0
    off = _labels(tmp_path, "off.nii.gz", 1, np.uint8, affine=shifted)
    code, lines, _ = run_check(tmp_path, capsys, good[0], good[1], off)
    assert code == 2 and f"{off}: reference voxel-to-world affine differs from the FLAIR's" in lines[0]
    small = _labels(tmp_path, "small.nii.gz", 1, np.uint8, shape=(12, 12, 5))
    code, lines, _ = run_check(tmp_path, capsys, good[0], good[1], small)
    assert code == 2 and f"{small}: reference shape (12, 12, 5) differs from the FLAIR shape" in lines[0]


def test_every_verb_reading_a_reference_uses_the_same_label_check(tmp_path, capsys, good):
    """evaluate used to refuse 0.7 while train rounded it to 1 and qc drew 255."""
    from wmhflow.fcn.training_data import load_training_subject

    fuzzy = _labels(tmp_path, "fuzzy.nii.gz", 0.7)
    wmh255 = _labels(tmp_path, "wmh255.nii.gz", 255, np.uint8)
    mask = write_nifti(tmp_path / "mask.nii.gz", np.zeros(SHAPE, np.uint8))
    for reference, problem in ((fuzzy, "not a label image"), (wmh255, "unknown label value(s) [255]")):
        assert cli(["evaluate", "--reference", str(reference), "--prediction", str(mask)]) == 2
        assert f"{reference}: " in capsys.readouterr().err
        png = tmp_path / "qc.png"
        assert (
            cli(["qc", "--flair", str(good[0]), "--mask", str(mask), "--reference", str(reference), "-o", str(png)])
            == 2
        )
        assert problem in capsys.readouterr().err and not png.exists()
        eight = write_nifti(tmp_path / "q.nii.gz", head().astype(np.uint8))
        with pytest.raises(
            InputError, match=problem.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")
        ):
            load_training_subject(eight, eight, eight, reference, "flair,t1,tophat")


# ------------------------------------------------------------------------------ subjects TSV
HEADER = "subject\tsite\tflair\tt1\treference\tsplit"


@pytest.fixture
def tsv_files(tmp_path, good):
    flair, t1, reference = good
    return tmp_path / "subjects.tsv", f"a\tX\t{flair.name}\t{t1.name}\t{reference.name}\ttest"


def test_trailing_tabs_from_a_spreadsheet_keep_every_column_in_place(tsv_files, good):
    tsv, row = tsv_files
    tsv.write_text(f"{HEADER}\t\n{row}\t\n")  # what spreadsheet exports write
    table = cohort.discover(tsv).set_index("subject")
    assert list(table.index) == ["a"] and table.loc["a", "site"] == "X"
    assert table.loc["a", "flair"] == str(good[0].resolve()) and table.loc["a", "reference"] == str(good[2].resolve())


def test_bom_crlf_and_blank_lines_are_read(tsv_files, good):
    tsv, row = tsv_files
    tsv.write_bytes(("\ufeff" + HEADER + "\r\n\r\n" + row + "\r\n\t\t\r\n").encode("utf-8"))
    table = cohort.discover(tsv).set_index("subject")
    assert list(table.index) == ["a"] and table.loc["a", "split"] == "test"


@pytest.mark.parametrize(
    "content, problem",
    [
        ("", "subjects TSV is empty"),
        ("\n\n", "subjects TSV is empty"),
        (HEADER + "\n", "has a header but no rows"),
        (
            HEADER + "\n{row}\textra.nii.gz\n",
            "line 2 has 7 fields but the header has 6 (subject, site, flair, t1, "
            "reference, split): extra field(s) from 'extra.nii.gz' on",
        ),
        (HEADER + "\n{row}\nb\tX\tf.nii.gz\n", "line 3 has 3 fields but the header has 6"),
        ("subject\tflair\tflair\tt1\n", "column(s) flair appear more than once"),
        ("subject,site,flair,t1\n", "must be tab-separated"),
        ("subject\tsite\tt1\n", "lacks column(s) flair"),
    ],
)
def test_malformed_subjects_tsv_is_one_line_naming_the_file(tsv_files, content, problem):
    tsv, row = tsv_files
    tsv.write_text(content.format(row=row))
    with pytest.raises(InputError) as err:
        cohort.discover(tsv)
    assert str(err.value).startswith(f"{tsv}: ") and problem in str(err.value)


def test_subjects_tsv_that_is_not_utf8(tsv_files):
    tsv, row = tsv_files
    tsv.write_bytes((HEADER + "\n" + row.replace("X", "Zürich") + "\n").encode("latin-1"))
    with pytest.raises(InputError, match="is not UTF-8 text"):
        cohort.discover(tsv)


def test_discover_check_catches_what_the_shifted_tsv_hid(tmp_path, tsv_files, capsys):
    tsv, row = tsv_files
    tsv.write_text(f"{HEADER}\n{row}\n")
    assert cli(["discover", "--cohort", str(tsv), "--check", "-o", str(tmp_path / "t.tsv")]) == 0
    blank = write_nifti(tmp_path / "flair.nii.gz", np.zeros(SHAPE, np.float32))
    assert cli(["discover", "--cohort", str(tsv), "--check", "-o", str(tmp_path / "t2.tsv")]) == 2
    assert f"{blank}: FLAIR is constant" in capsys.readouterr().err and not (tmp_path / "t2.tsv").exists()


def test_empty_tsv_through_the_cli_is_one_line(tmp_path, capsys):
    empty = tmp_path / "subjects.tsv"
    empty.write_bytes(b"")
    assert cli(["discover", "--cohort", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{empty}: subjects TSV is empty" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ config
def _config(**changes):
    config = {"cohort": "demo", "results": "results"}
    config.update(changes)
    return config


@pytest.mark.parametrize(
    "changes, key, problem",
    [
        ({"tophatt": {"area": 3}}, "tophatt", "unknown key; did you mean 'tophat'?"),
        ({"train": {"overrides": {"iteratons": 5}}}, "train.overrides.iteratons", "did you mean 'iterations'?"),
        (
            {"train": {"overrides": {"phases": [{"iterations": 5, "lr": 0.1, "momentun": 0.9}]}}},
            "train.overrides.phases.0.momentun",
            "unknown key",
        ),
        ({"tophat": {"area": 25.0}}, "tophat.area", "25.0 is not of type integer"),
        ({"tophat": {"area": "25.5"}}, "tophat.area", "25.5 is not of type integer"),
        ({"segment": {"device": "gpu"}}, "segment.device", "'gpu' is not auto, cpu, cuda"),
        ({"train": {"device": "cuda0"}}, "train.device", "is not auto, cpu, cuda"),
        (
            {"requantize": {"low_percentile": 99.0, "high_percentile": 1.0}},
            "requantize",
            "low_percentile (99.0) must be below high_percentile (1.0)",
        ),
        ({"train": {"overrides": {"optimizer": "rmsprop"}}}, "train.overrides.optimizer", "'rmsprop' is not one of"),
        ({"train": {"overrides": {"iterations": 0}}}, "train.overrides.iterations", "less than the minimum"),
        ({"splits": {"train_per_site": "four"}}, "splits.train_per_site", "'four' is not of type number"),
        (
            {"model": {"checkpoint": "/nowhere/model.pt"}},
            "model.checkpoint",
            "/nowhere/model.pt: model file does not exist",
        ),
        (
            {"model": {"pretrained": "/nowhere/vgg.pth"}},
            "model.pretrained",
            "is not none, torchvision or an existing file",
        ),
    ],
)
def test_config_mistakes_name_the_key(changes, key, problem):
    with pytest.raises(ConfigError) as err:
        wmh_config.validate(_config(**changes))
    assert str(err.value).startswith(f"config '{key}': ") and problem in str(err.value)


def test_command_line_strings_are_read_as_yaml_where_the_schema_wants_more():
    """snakemake --config 'tophat={area: 30}' arrives as {'area': '30'} (YAML BaseLoader)."""
    config = wmh_config.validate(
        _config(
            tophat={"area": "30"},
            bias_correction={"shrink": ["4", "4", "1"]},
            train={"overrides": {"iterations": "5", "class_weight": "1.5"}},
            model={"checkpoint": "null"},
            splits={"train_per_site": "0.5"},
        )
    )
    assert config["tophat"] == {"area": 30, "connectivity": 1}
    assert config["bias_correction"]["shrink"] == [4, 4, 1]
    assert config["train"]["overrides"] == {"iterations": 5, "class_weight": 1.5}
    assert config["model"]["checkpoint"] is None and config["splits"]["train_per_site"] == 0.5
    assert config["bids_reference"] == "" and config["segment"]["device"] == "auto"  # defaults filled


def test_overrides_schema_is_the_training_presets():
    """One source of truth: wmhflow.fcn.presets (no torch) decide the accepted overrides."""
    from wmhflow.fcn.presets import OPTIONAL_SETTINGS, PRESETS

    assert wmh_config.training_presets() == PRESETS
    schema = wmh_config.overrides_schema()
    assert set(schema["properties"]) == {k for preset in PRESETS.values() for k in preset} | set(OPTIONAL_SETTINGS)
    wmh_config.validate(_config(train={"overrides": {"weight_average": {"start": 0, "every": 10}}}))
    with pytest.raises(ConfigError, match="weight_average"):
        wmh_config.validate(_config(train={"overrides": {"weight_average": {"start": 0, "every": 0}}}))
    with pytest.raises(ConfigError, match="weight_average"):
        wmh_config.validate(_config(train={"overrides": {"weight_average": {"from": 600}}}))
    wmh_config.validate(_config(train={"overrides": {"members": 3}}))
    with pytest.raises(ConfigError, match="'train.overrides.members': 0 is less than the minimum of 1"):
        wmh_config.validate(_config(train={"overrides": {"members": 0}}))
    for preset in PRESETS.values():  # every preset is itself a valid set of overrides
        wmh_config.validate(_config(train={"overrides": dict(preset)}))
    extended = {"x": {"iterations": 1, "new_setting": 0.5}}
    assert "new_setting" in wmh_config.overrides_schema(extended)["properties"]
    assert wmh_config.overrides_schema(extended)["properties"]["new_setting"]["type"] == "number"


def test_the_shipped_config_is_valid():
    import yaml
    from conftest import REPO

    wmh_config.validate(yaml.safe_load((REPO / "config.yaml").read_text()))


def test_planning_without_training_subjects_or_model(tmp_path):
    import pandas as pd

    from wmhflow.plan import Plan

    subjects = pd.DataFrame(
        {"site": ["A"], "flair": ["f"], "t1": ["t"], "reference": [""], "split": ["predict"]},
        index=pd.Index(["01"], name="subject"),
    )
    plan = Plan({"results": str(tmp_path), "model": {"name": "fcn2d", "checkpoint": None}}, subjects)
    with pytest.raises(ConfigError, match="config 'model.checkpoint': no subject of this cohort is in split 'train'"):
        plan.require_model_source()
    Plan({"results": str(tmp_path), "model": {"name": "fcn2d", "checkpoint": "m.pt"}}, subjects).require_model_source()


# -------------------------------------------------------------------------------- filesystem
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_permissions_of_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        table = tmp_path / "t.tsv"
        with io.atomic_output(table) as tmp:
            tmp.write_text("x")
        volume = io.save_like(head(), nib.Nifti1Image(head(), np.eye(4)), tmp_path / "v.nii.gz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(table.stat().st_mode) == mode and stat.S_IMODE(volume.stat().st_mode) == mode


def test_results_below_a_file_is_a_planning_error(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ConfigError, match=r"config 'results': .*afile is a file, not a folder"):
        wmh_config.require_writable_results(tmp_path / "afile" / "results")
    wmh_config.require_writable_results(tmp_path / "new" / "deeper")  # creatable: fine


def test_a_directory_named_like_an_image(tmp_path, capsys, good):
    folder = tmp_path / "dir.nii.gz"
    folder.mkdir()
    code, lines, _ = run_check(tmp_path, capsys, good[0], folder)
    assert code == 2 and f"{folder}: T1 path is not a file" in lines[0]


def test_rule_names_in_profiles_are_checked():
    from wmhflow.config import check_rule_names

    check_rule_names({"infer": "set-resources", "infer_batch": "set-resources"}, ["infer", "train"])
    with pytest.raises(ConfigError, match="'segment_chunk' is not a rule of this workflow: the rule is now named"):
        check_rule_names({"segment_chunk": "set-resources"}, ["infer", "train"])
    with pytest.raises(ConfigError, match=r"'trian' is not a rule of this workflow; did you mean 'train'\?"):
        check_rule_names({"trian": "set-threads"}, ["infer", "train"])


# ------------------------------------------------------------------------------- status table
def test_status_table_from_the_plan_and_the_logs(tmp_path):
    import pandas as pd

    from wmhflow.plan import Plan
    from wmhflow.status import status_table

    keys = [prefix(s) for s in ("01", "02", "03", "04", "05")]
    subjects = pd.DataFrame(
        {
            "subject": ["01", "02", "03", "04", "05"],
            "session": [""] * 5,
            "site": ["A"] * 5,
            "flair": ["f"] * 5,
            "t1": ["t"] * 5,
            "reference": ["r", "r", "", "", ""],
            "split": ["train", "test", "predict", "predict", "predict"],
        },
        index=pd.Index(keys, name="prefix"),
    )
    plan = Plan({"results": str(tmp_path / "results"), "model": {"name": "fcn2d", "checkpoint": None}}, subjects)
    for target in [plan.check_file(keys[0])] + [t for t in plan.preprocess_targets() if "sub-01" in t]:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text("")
    failing = Path(plan.log("bias_correct_FLAIR", keys[1]))
    failing.parent.mkdir(parents=True, exist_ok=True)
    failing.write_text("12:00:00 INFO start\nwmhflow bias-correct: error: /data/02.nii.gz: FLAIR is broken\n")
    crashed = Path(plan.log("tophat", keys[3]))
    crashed.parent.mkdir(parents=True, exist_ok=True)
    crashed.write_text("Traceback (most recent call last):\n  File x\nMemoryError: out of memory\n")
    # a rule whose output depends on the model logs under logs/<rule>/<model>/; its step is the rule
    inferred = Path(plan.model_log("infer", keys[4]))
    assert inferred == tmp_path / "results/logs/infer/fcn2d" / f"{keys[4]}.log"
    inferred.parent.mkdir(parents=True, exist_ok=True)
    inferred.write_text("wmhflow infer: error: /data/05_tophat.nii.gz: tophat is not a readable NIfTI\n")
    train = Path(plan.train_log())
    assert train == tmp_path / "results/logs/train/fcn2d.log"
    train.parent.mkdir(parents=True)
    train.write_text("wmhflow train: error: config 'train': no slices\n")
    table = status_table(plan).set_index("subject")
    assert table.loc["01", "status"] == "done" and table.loc["01", "outputs"] == "7/7"
    assert tuple(table.loc["02", ["status", "step"]]) == ("failed", "bias_correct_FLAIR")
    assert table.loc["02", "reason"] == "wmhflow bias-correct: error: /data/02.nii.gz: FLAIR is broken"
    assert (
        tuple(table.loc["03", ["status", "step"]]) == ("blocked", "train") and "no slices" in table.loc["03", "reason"]
    )
    assert tuple(table.loc["04", ["status", "reason"]]) == ("failed", "MemoryError: out of memory")
    assert tuple(table.loc["05", ["status", "step"]]) == ("failed", "infer") and "tophat" in table.loc["05", "reason"]


def test_status_names_the_chunk_mate_that_holds_back_a_subjects_segmentation(tmp_path):
    """segment.subjects_per_job > 1: one job segments a chunk, so a subject whose preprocessing failed
    keeps its chunk-mates from being segmented; they are 'blocked', naming it, not silently incomplete."""
    import pandas as pd

    from wmhflow.plan import Plan
    from wmhflow.status import status_table

    names = ["01", "02", "03", "04"]
    subjects = pd.DataFrame(
        {
            "subject": names,
            "session": [""] * 4,
            "site": ["A"] * 4,
            "flair": ["f"] * 4,
            "t1": ["t"] * 4,
            "reference": ["r"] * 4,
            "split": ["test"] * 4,
        },
        index=pd.Index([prefix(s) for s in names], name="prefix"),
    )
    config = {"results": str(tmp_path / "results"), "model": {"name": "fcn2d", "checkpoint": "m.pt"}}
    plan = Plan(dict(config, segment={"subjects_per_job": 2}), subjects)
    assert list(plan.segment_chunks.values()) == [[prefix("01"), prefix("02")], [prefix("03"), prefix("04")]]
    failing = Path(plan.log("preprocess_subject", prefix("01")))
    failing.parent.mkdir(parents=True)
    failing.write_text("wmhflow bias-correct: error: /data/01.nii.gz: FLAIR is broken\n")
    table = status_table(plan).set_index("subject")
    assert tuple(table.loc["01", ["status", "step"]]) == ("failed", "preprocess_subject")
    assert tuple(table.loc["02", ["status", "step"]]) == ("blocked", "preprocess_subject")
    assert (
        table.loc["02", "reason"]
        == "chunk-0000 waits for sub-01: wmhflow bias-correct: error: /data/01.nii.gz: FLAIR is broken"
    )
    # the other chunk does not wait for it
    assert set(table.loc[["03", "04"], "status"]) == {"incomplete"}
    # one job per subject: nobody waits for anybody
    one = status_table(Plan(dict(config, segment={"subjects_per_job": 1}), subjects)).set_index("subject")
    assert one.loc["02", "status"] == "incomplete"
