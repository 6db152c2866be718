"""Inference options: test-time flips along the image's own left-right axis, ensembles, the threshold
chosen on validation subjects and stored with the model, and post-processing in physical units."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, write_nifti
from test_infer import head_volumes, lps_permuted_affine, oblique_affine

from wmhflow import segment
from wmhflow.errors import ConfigError, InputError
from wmhflow.evaluation.metrics import evaluate_arrays
from wmhflow.fcn import calibration, infer, train
from wmhflow.fcn.model import build_model, load_model, save_model
from wmhflow.fcn.postprocess import clean_mask

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(model, volumes, **kwargs):
    return infer.predict_volume(model, volumes, "flair,t1,tophat", device="cpu", precision="fp32", **kwargs)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model().eval()


def mirror_symmetric(model, dim=-1):
    """A copy of ``model`` whose every kernel is symmetric along ``dim``: a network that commutes with
    mirroring its input along that image axis (when pooling windows map onto pooling windows)."""
    import copy

    sym = copy.deepcopy(model)
    with torch.no_grad():
        for module in sym.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.copy_(0.5 * (module.weight + module.weight.flip(dim)))
    return sym


# ------------------------------------------------------------------------------------ flips
def test_left_right_axis_comes_from_the_affine():
    assert infer.left_right_axis(np.diag([1.0, 1.0, 3.0, 1.0])) == 0
    assert infer.left_right_axis(np.diag([-0.9, 1.0, 3.0, 1.0])) == 0  # LAS: still axis 0, whichever sign
    assert infer.left_right_axis(oblique_affine()) == 0  # 17 degrees in plane: closest to R-L
    assert infer.left_right_axis(lps_permuted_affine()) == 1  # j runs right -> left
    sagittal = np.zeros((4, 4))
    sagittal[0, 2], sagittal[1, 0], sagittal[2, 1], sagittal[3, 3] = 1.0, 1.0, 1.0, 1.0
    assert infer.left_right_axis(sagittal) is None  # left-right is the slice axis: no in-plane mirror


@pytest.mark.parametrize("axis", [0, 1])
def test_flip_averages_the_mirrored_pass_along_the_given_axis(net, axis):
    volumes = head_volumes((40, 32, 3), centre=(20, 16), radii=(12, 9), seed=11)
    ramp = np.linspace(0.1, 0.9, volumes["flair"].shape[axis], dtype=np.float32)

    def along(axis_):  # a "network" whose output depends on position along one image axis only
        def forward(model, batch, device, amp):
            shape = [1, 1, 1]
            shape[1 + axis_] = -1
            full = np.broadcast_to(ramp.reshape(shape) if axis_ == axis else 0.5, (len(batch),) + batch.shape[2:])
            return np.ascontiguousarray(full, np.float32)

        return forward

    head = volumes["flair"] > 0
    plain = run(net, volumes, crop=False, forward=along(axis))
    flipped = run(net, volumes, crop=False, forward=along(axis), tta="flip", flip_axis=axis)
    expected = np.where(head, 0.5, 0.0)  # ramp and mirrored ramp average to the middle
    np.testing.assert_allclose(flipped, expected, atol=1e-6)
    assert np.abs(plain - flipped)[head].max() > 0.2
    # mirroring the other axis leaves a function of this axis alone unchanged
    other = run(net, volumes, crop=False, forward=along(axis), tta="flip", flip_axis=1 - axis)
    np.testing.assert_allclose(other, plain, atol=1e-6)


def test_flip_equals_plain_for_a_mirror_symmetric_network_and_differs_otherwise(net):
    # 40 x 32 in plane: multiples of 8, so the mirrored pooling windows are the same windows
    volumes = head_volumes((40, 32, 3), centre=(20, 16), radii=(13, 10), seed=12)
    symmetric = mirror_symmetric(net, dim=-1)  # kernels symmetric along the slice's second axis
    plain = run(symmetric, volumes, crop=False)
    flipped = run(symmetric, volumes, crop=False, tta="flip", flip_axis=1)
    np.testing.assert_allclose(flipped, plain, atol=2e-5)
    # the ordinary network is not mirror-symmetric: its flipped average differs
    ordinary = run(net, volumes, crop=False)
    assert np.abs(run(net, volumes, crop=False, tta="flip", flip_axis=1) - ordinary).max() > 1e-3
    # head cropping changes nothing in this: flips of cropped batches average the same way
    cropped = run(symmetric, volumes, tta="flip", flip_axis=1, crop_margin=infer.EXACT_MARGIN)
    np.testing.assert_allclose(cropped, plain, atol=2e-5)


def test_flip_is_skipped_when_left_right_is_the_slice_axis(net, caplog):
    volumes = head_volumes((24, 24, 2), centre=(12, 12), radii=(7, 7), seed=13)
    calls = []

    def counting(model, batch, device, amp):
        calls.append(len(batch))
        return infer._forward(model, batch, device, amp)

    plain = run(net, volumes, forward=counting)
    n_plain = len(calls)
    skipped = run(net, volumes, forward=counting, tta="flip", flip_axis=None)
    assert len(calls) == 2 * n_plain and np.array_equal(plain, skipped)
    assert "flip skipped" in caplog.text
    run(net, volumes, forward=counting, tta="flip", flip_axis=0)
    assert len(calls) == 4 * n_plain  # two passes per batch when flipping
    with pytest.raises(ConfigError, match="segment.tta"):
        run(net, volumes, tta="rotate")


# --------------------------------------------------------------------------------- ensembles
def test_ensemble_averages_the_models(net):
    volumes = head_volumes((32, 32, 3), centre=(16, 16), radii=(10, 10), seed=14)
    torch.manual_seed(1)
    other = build_model().eval()
    a, b = run(net, volumes), run(other, volumes)
    np.testing.assert_allclose(run([net, other], volumes), (a + b) / 2, atol=1e-6)
    np.testing.assert_allclose(run([net, net], volumes), a, atol=1e-6)


def write_subject(directory, volumes, affine=None):
    affine = np.diag([0.9, 1.1, 3.0, 1.0]) if affine is None else affine
    return {k: write_nifti(Path(directory) / f"{k}.nii.gz", v, affine, np.uint8) for k, v in volumes.items()}


def parse_infer(argv):
    parser = argparse.ArgumentParser()
    infer.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def infer_files(paths, models, out, *extra):
    args = parse_infer(
        [
            "--flair",
            paths["flair"],
            "--t1",
            paths["t1"],
            "--tophat",
            paths["tophat"],
            "--model",
            *models,
            "--probseg",
            out / "p.nii.gz",
            "--mask",
            out / "m.nii.gz",
            "--device",
            "cpu",
            "--threads",
            "1",
            # these 'heads' are ~12 mm across: the default depth rule would drop every voxel
            *(() if "--min-depth-mm" in extra else ("--min-depth-mm", "0")),
            *extra,
        ]
    )
    assert infer.main(args) == 0
    prob = np.asarray(nib.load(str(out / "p.nii.gz")).dataobj)
    mask = np.asarray(nib.load(str(out / "m.nii.gz")).dataobj)
    return prob, mask, json.loads((out / "m.json").read_text())


def test_ensemble_of_two_identical_checkpoints_equals_one(tmp_path, net):
    volumes = head_volumes((36, 28, 4), centre=(17, 14), radii=(12, 9), seed=15)
    paths = write_subject(tmp_path / "in", volumes)
    first = save_model(tmp_path / "a.pt", net, {"requantize": "tissue", "name": "a", "channels": "flair,t1,tophat"})
    second = save_model(tmp_path / "b.pt", net, {"requantize": "tissue", "name": "b", "channels": "flair,t1,tophat"})
    prob1, mask1, record1 = infer_files(paths, [first], tmp_path / "one")
    prob2, mask2, record2 = infer_files(paths, [first, second], tmp_path / "two")
    np.testing.assert_allclose(prob2, prob1, atol=1e-6)
    assert np.array_equal(mask1, mask2)
    assert record2["ModelFiles"] == [str(first), str(second)] and record2["Models"] == ["a", "b"]
    assert record1["ModelFiles"] == [str(first)]


def test_ensemble_of_other_channel_sets_is_refused(tmp_path, net):
    first = save_model(tmp_path / "a.pt", net, {"requantize": "tissue", "name": "a", "channels": "flair,t1,tophat"})
    second = save_model(tmp_path / "b.pt", net, {"requantize": "tissue", "name": "b", "channels": "flair-3slice"})
    with pytest.raises(InputError, match="b.pt.*channels"):
        infer.load_models([first, second])


# ------------------------------------------------------------------------------- threshold
def test_threshold_chooser_finds_the_known_optimum():
    # 100 lesion voxels: 60 at p 0.8, 40 at p 0.3; background: 20 at 0.6, 1000 at 0.2, and a label-2
    # region at 0.9 that must not count. Dice: t in (0.6, 0.8]: 0.75; (0.3, 0.6]: 0.667;
    # (0.2, 0.3]: 200/220 = 0.909 (best, at 0.25 and 0.30: the tie goes to 0.30, nearest 0.5); <= 0.2: 0.16
    prob = np.zeros((40, 40, 4), np.float32)
    ref = np.zeros(prob.shape, np.uint8)
    flat_p, flat_r = prob.reshape(-1), ref.reshape(-1)
    flat_p[:60], flat_r[:60] = 0.8, 1
    flat_p[60:100], flat_r[60:100] = 0.3, 1
    flat_p[100:120] = 0.6
    flat_p[120:1120] = 0.2
    flat_p[1120:1400], flat_r[1120:1400] = 0.9, 2
    chosen = calibration.choose_threshold([prob], [ref])
    assert chosen["threshold"] == 0.3
    assert chosen["dice"] == pytest.approx(200 / 220)
    assert chosen["dice_at_0.5"] == pytest.approx(120 / 180)
    # the curve agrees with the challenge's own Dice at every threshold
    for t, d in zip(chosen["grid"], calibration.dice_curve(prob, ref)):
        assert d == pytest.approx(evaluate_arrays(ref, (prob >= t).astype(np.uint8), np.eye(4))["dice"])
    # two subjects: the mean per-subject Dice decides (the second one's best cut is 0.7)
    prob2 = np.where(np.arange(prob.size).reshape(prob.shape) < 50, 0.75, 0.65).astype(np.float32)
    ref2 = (np.arange(prob.size).reshape(prob.shape) < 50).astype(np.uint8)
    both = calibration.choose_threshold([prob, prob2], [ref, ref2])
    curves = (calibration.dice_curve(prob, ref) + calibration.dice_curve(prob2, ref2)) / 2
    assert both["dice"] == pytest.approx(curves.max())
    with pytest.raises(ValueError):
        calibration.choose_threshold([], [])


def calibrated(net, path, thresholds):
    return save_model(
        path,
        net,
        {
            "requantize": "tissue",
            "name": "c",
            "channels": "flair,t1,tophat",
            "calibration": {"criterion": calibration.CRITERION, "subjects": 1, "thresholds": thresholds},
        },
    )


def test_stored_threshold_round_trips_and_is_used(tmp_path, net):
    volumes = head_volumes((36, 28, 4), centre=(17, 14), radii=(12, 9), seed=16)
    paths = write_subject(tmp_path / "in", volumes)
    model = calibrated(net, tmp_path / "c.pt", {"none": 0.35, "flip": 0.65})
    _, meta = load_model(model)
    assert calibration.stored_threshold(meta, "none") == 0.35 and calibration.stored_threshold(meta, "flip") == 0.65
    prob, mask, record = infer_files(paths, [model], tmp_path / "auto", "--threshold", "auto")
    assert record["Threshold"] == 0.35 and "calibrated" in record["ThresholdSource"]
    assert np.array_equal(mask, prob >= 0.35) and not np.array_equal(prob >= 0.35, prob >= 0.5)
    prob, mask, record = infer_files(paths, [model], tmp_path / "flip", "--tta", "flip", "--threshold", "auto")
    assert record["Threshold"] == 0.65 and record["TestTimeAugmentation"] == "flip" and record["FlipVoxelAxis"] == 0
    assert np.array_equal(mask, prob >= 0.65)
    prob, mask, record = infer_files(paths, [model], tmp_path / "set", "--threshold", "0.42")
    assert record["Threshold"] == 0.42 and "explicitly" in record["ThresholdSource"]
    assert np.array_equal(mask, prob >= 0.42)
    _, _, record = infer_files(paths, [model], tmp_path / "default")  # the default: 0.5, not the stored one
    assert record["Threshold"] == 0.5
    old = save_model(tmp_path / "old.pt", net, {"requantize": "tissue", "name": "old", "channels": "flair,t1,tophat"})
    _, _, record = infer_files(paths, [old], tmp_path / "old", "--threshold", "auto")
    assert record["Threshold"] == 0.5 and "no calibrated" in record["ThresholdSource"]
    other = calibrated(net, tmp_path / "d.pt", {"none": 0.45, "flip": 0.65})
    _, _, record = infer_files(paths, [model, other], tmp_path / "ens", "--threshold", "auto")
    assert record["Threshold"] == pytest.approx(0.40)  # an ensemble: the mean of its members'


def test_bad_threshold_is_a_config_error():
    assert infer.parse_threshold("auto") is None and infer.parse_threshold(None) is None
    assert infer.parse_threshold("0.3") == 0.3
    for bad in ("high", "0", "1.5"):
        with pytest.raises(ConfigError, match="segment.threshold"):
            infer.parse_threshold(bad)


def test_calibration_runs_inference_on_validation_files(tmp_path, net):
    volumes = head_volumes((36, 28, 4), centre=(17, 14), radii=(12, 9), seed=17)
    paths = write_subject(tmp_path / "in", volumes)
    reference = (volumes["flair"] > 200).astype(np.uint8)
    ref_path = write_nifti(tmp_path / "in/ref.nii.gz", reference, np.diag([0.9, 1.1, 3.0, 1.0]), np.uint8)
    result = train.calibrate_model(
        net, [(paths["flair"], paths["t1"], paths["tophat"], ref_path)], "flair,t1,tophat", "cpu"
    )
    assert set(result["thresholds"]) == {"none", "flip"} and result["subjects"] == 1
    prob = run(net, volumes)
    expected = calibration.choose_threshold([prob], [reference])
    assert result["thresholds"]["none"] == expected["threshold"]
    assert train.calibrate_model(net, [], "flair,t1,tophat") is None


# --------------------------------------------------------------------------- post-processing
def test_min_lesion_size_is_a_volume_in_mm3_on_anisotropic_voxels():
    mask = np.zeros((20, 20, 10), bool)
    mask[2:5, 2, 2] = True  # 3 voxels in a row
    mask[10, 10, 5] = mask[11, 11, 6] = True  # 2 voxels touching at a corner: one 26-connected component
    mask[15:18, 15:18, 2:5] = True  # 27 voxels
    thick = (0.5, 0.5, 4.0)  # 1 mm^3 voxels
    cleaned, report = clean_mask(mask, thick, min_lesion_mm3=2.5)
    assert report["components"] == 3 and report["removed_small"] == 1  # only the 2-voxel (2 mm^3) pair
    assert cleaned[2:5, 2, 2].all() and not cleaned[10, 10, 5] and report["removed_voxels"] == 2
    cleaned, report = clean_mask(mask, thick, min_lesion_mm3=3.5)
    assert report["removed_small"] == 2 and cleaned.sum() == 27
    # the same voxels on 1 x 1 x 3 mm voxels (3 mm^3 each): 9, 6 and 81 mm^3, so 6.5 removes only the pair
    cleaned, report = clean_mask(mask, (1.0, 1.0, 3.0), min_lesion_mm3=6.5)
    assert report["removed_small"] == 1 and not cleaned[10, 10, 5] and cleaned[2:5, 2, 2].all()
    cleaned, report = clean_mask(mask, (1.0, 1.0, 3.0), min_lesion_mm3=0)
    assert np.array_equal(cleaned, mask) and report["removed_voxels"] == 0


def test_superficial_components_are_removed_by_physical_depth():
    head = np.zeros((40, 40, 12), bool)
    head[5:35, 5:35, 1:11] = True
    mask = np.zeros(head.shape, bool)
    mask[6, 20, 6] = True  # 2 voxels (x 1 mm) inside the head's side surface: scalp
    mask[20, 20, 6] = True  # in the middle: 15 mm from the side, 5 slices (x 3 mm) from top and bottom
    mask[20, 20, 2] = True  # 2 slices from the bottom surface: 6 mm deep on 3 mm slices, 2 mm if isotropic
    deep_slices = (1.0, 1.0, 3.0)
    cleaned, report = clean_mask(mask, deep_slices, head, min_depth_mm=5.0)
    assert report["removed_superficial"] == 1 and not cleaned[6, 20, 6] and cleaned[20, 20, 2] and cleaned[20, 20, 6]
    cleaned, report = clean_mask(mask, (1.0, 1.0, 1.0), head, min_depth_mm=5.0)
    assert report["removed_superficial"] == 2 and not cleaned[20, 20, 2] and cleaned[20, 20, 6]
    with pytest.raises(ValueError, match="head"):
        clean_mask(mask, deep_slices, None, min_depth_mm=5.0)


def test_infer_applies_post_processing_with_the_headers_voxel_size(tmp_path, net):
    volumes = head_volumes((36, 28, 4), centre=(17, 14), radii=(12, 9), seed=18)
    paths = write_subject(tmp_path / "in", volumes, np.diag([0.9, 1.1, 3.0, 1.0]))
    model = save_model(tmp_path / "m.pt", net, {"requantize": "tissue", "name": "m", "channels": "flair,t1,tophat"})
    prob, mask, record = infer_files(paths, [model], tmp_path / "plain", "--threshold", "0.5")
    size = 0.9 * 1.1 * 3.0
    expected, report = clean_mask(prob >= 0.5, (0.9, 1.1, 3.0), volumes["flair"] > 0, 5 * size, 4.0)
    _, cleaned, record = infer_files(
        paths,
        [model],
        tmp_path / "clean",
        "--threshold",
        "0.5",
        "--min-lesion-mm3",
        str(5 * size),
        "--min-depth-mm",
        "4",
    )
    assert np.array_equal(cleaned, expected) and record["PostProcessing"] == report
    assert record["MinLesionVolume_mm3"] == pytest.approx(5 * size)
    with pytest.raises(ConfigError, match="min_lesion_mm3"):
        infer_files(paths, [model], tmp_path / "bad", "--min-lesion-mm3", "-1")
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------ configuration
def test_cli_defaults_equal_the_schema_and_config_defaults():
    schema = yaml.safe_load((REPO / "workflow/wmhflow/schemas/config.schema.yaml").read_text())
    segment_schema = schema["properties"]["segment"]["properties"]
    config = yaml.safe_load((REPO / "config.yaml").read_text())["segment"]
    for module, required in (
        (infer, ["--flair", "f", "--model", "m", "--probseg", "p", "--mask", "k"]),
        (segment, ["--flair", "f", "--model", "m", "-o", "o"]),
    ):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        args = parser.parse_args(required)
        for key in ("tta", "threshold", "min_lesion_mm3", "min_depth_mm", "restrict_to"):
            assert getattr(args, key) == segment_schema[key]["default"] == config[key], (module.__name__, key)


def test_config_accepts_a_list_of_checkpoints_and_command_line_thresholds(tmp_path, net):
    from wmhflow import config as wmh_config

    first = save_model(tmp_path / "a.pt", net, {"requantize": "tissue", "name": "a"})
    second = save_model(tmp_path / "b.pt", net, {"requantize": "tissue", "name": "b"})
    config = wmh_config.validate(
        {"cohort": "demo", "results": str(tmp_path / "r"), "model": {"checkpoint": [str(first), str(second)]}}
    )
    assert config["model"]["checkpoint"] == [str(first), str(second)] and config["segment"]["threshold"] == 0.5
    with pytest.raises(ConfigError, match=r"model.checkpoint.*missing.pt"):
        wmh_config.validate(
            {
                "cohort": "demo",
                "results": str(tmp_path / "r"),
                "model": {"checkpoint": [str(first), str(tmp_path / "missing.pt")]},
            }
        )
    # --config 'segment={threshold: 0.3}' reaches the schema as the string '0.3'
    for given, expected in (("0.3", 0.3), ("auto", "auto"), ("null", None)):
        config = wmh_config.validate(
            {"cohort": "demo", "results": str(tmp_path / "r"), "segment": {"threshold": given}}
        )
        assert config["segment"]["threshold"] == expected
    for bad in ("high", "1.5", 0):
        with pytest.raises(ConfigError, match="segment.threshold"):
            wmh_config.validate({"cohort": "demo", "results": str(tmp_path / "r"), "segment": {"threshold": bad}})
