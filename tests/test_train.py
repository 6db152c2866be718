"""Training: it learns on a tiny synthetic cohort, resumes to the same model, writes its config, log
and loss curve beside the model; configuration presets, data loading, sampling and augmentation."""

from __future__ import annotations

import argparse
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import write_nifti

from wmhflow.errors import ConfigError, InputError
from wmhflow.fcn import infer, presets, train, training_data
from wmhflow.fcn.model import build_model, load_model
from wmhflow.preprocess.tophat import area_tophat

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SHAPE = (48, 44, 6)


def write_subject(directory, seed, shape=SHAPE):
    """An 8-bit 'head' with textured tissue and bright FLAIR blobs (the lesions, label 1; dark on T1),
    one label-2 region, an empty first slice; top-hat from the real area opening."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    head2d = ((x - shape[0] / 2) / (shape[0] * 0.42)) ** 2 + ((y - shape[1] / 2) / (shape[1] * 0.42)) ** 2 <= 1
    flair = np.zeros(shape, np.uint8)
    t1 = np.zeros(shape, np.uint8)
    labels = np.zeros(shape, np.uint8)
    for k in range(1, shape[2]):
        flair[..., k][head2d] = rng.integers(70, 130, int(head2d.sum()))
        t1[..., k][head2d] = rng.integers(120, 190, int(head2d.sum()))
        for _ in range(rng.integers(1, 4)):
            cx, cy = rng.integers(12, shape[0] - 12), rng.integers(12, shape[1] - 12)
            r = rng.uniform(1.5, 3.5)
            blob = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
            flair[..., k][blob] = rng.integers(215, 250, int(blob.sum()))
            t1[..., k][blob] = rng.integers(90, 110, int(blob.sum()))
            labels[..., k][blob] = 1
    labels[5:8, 5:8, 2] = 2  # "other pathology": ignored in the loss
    tophat = area_tophat(flair, 25)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    paths = {}
    for key, data in (("flair", flair), ("t1", t1), ("tophat", tophat), ("reference", labels)):
        paths[key] = write_nifti(directory / f"{key}.nii.gz", data, affine, np.uint8)
    return paths


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_cohort")
    return [write_subject(root / f"s{i}", seed=10 + i) for i in range(4)]  # 3 for training, 1 held out


def files(subjects):
    return [[str(s[k]) for s in subjects] for k in ("flair", "t1", "tophat", "reference")]


def tiny_config(iterations, **extra):
    overrides = {
        "iterations": iterations,
        "batch_size": 2,
        "crop": 24,
        "lesion_crop_fraction": 0.5,
        "optimizer": "adam",
        "phases": [{"iterations": iterations, "lr": 1e-3, "momentum": 0.9}],
        "validate_every": 3,
        "checkpoint_every": 4,
        "log_every": 2,
        "seed": 3,
        "validation_subjects": 1,
    }
    overrides.update(extra)
    return {"preset": "custom", "overrides": overrides}


MODEL_CONFIG = {"name": "tiny", "channels": "flair,t1,tophat", "side_maps": 16, "pretrained": "none"}


def dice(prob, reference):
    pred, ref = prob >= 0.5, reference == 1
    return 2.0 * (pred & ref).sum() / max(1, pred.sum() + ref.sum())


# ---------------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_short_training_lowers_loss_and_beats_untrained_model(tmp_path, cohort):
    config = tiny_config(
        60,
        batch_size=4,
        crop=32,
        lesion_crop_fraction=0.7,
        class_weight=3.0,
        validate_every=30,
        log_every=10,
        checkpoint_every=30,
    )
    out = tmp_path / "model"
    rows = train.train(*files(cohort[:3]), out, MODEL_CONFIG, config, device="cpu", threads=1)
    losses = [r[1] for r in rows]
    assert len(rows) == 6 and [r[0] for r in rows] == [10, 20, 30, 40, 50, 60]
    assert np.mean(losses[-2:]) < 0.6 * losses[0], losses
    model, meta = load_model(out / "model.pt")
    assert meta["channels"] == "flair,t1,tophat" and meta["iterations"] == 60

    held_out = cohort[3]
    volumes = {k: np.asarray(nib.load(str(held_out[k])).dataobj) for k in ("flair", "t1", "tophat")}
    reference = np.asarray(nib.load(str(held_out["reference"])).dataobj)
    torch.manual_seed(3)  # the untrained start of the same seeded run
    untrained = build_model()
    trained_dice = dice(infer.predict_volume(model, volumes, meta["channels"], "cpu", "fp32"), reference)
    untrained_dice = dice(infer.predict_volume(untrained, volumes, meta["channels"], "cpu", "fp32"), reference)
    print(f"losses {losses}; held-out Dice trained {trained_dice:.3f}, untrained {untrained_dice:.3f}")
    assert trained_dice > max(0.3, untrained_dice + 0.2), (trained_dice, untrained_dice)


# ------------------------------------------------------------------------------------ outputs
@pytest.fixture(scope="module")
def short_run(tmp_path_factory, cohort):
    out = tmp_path_factory.mktemp("short") / "model"
    rows = train.train(*files(cohort[:3]), out, MODEL_CONFIG, tiny_config(6), device="cpu", threads=1)
    return out, rows


def test_config_log_and_curve_beside_the_model(short_run):
    out, rows = short_run
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"] == MODEL_CONFIG
    assert saved["train"]["preset"] == "custom"
    resolved = saved["train"]["resolved"]
    assert resolved["iterations"] == 6 and resolved["crop"] == 24 and resolved["seed"] == 3
    assert resolved["weight_decay"] == presets.PRESETS["demo"]["weight_decay"]  # custom: the demo base
    log_table = pd.read_csv(out / "training_log.tsv", sep="\t")
    assert list(log_table.columns) == ["iteration", "loss", "lr", "slices_per_s", "val_dice"]
    assert log_table["iteration"].tolist() == [2, 4, 6]
    assert np.isfinite(log_table["loss"]).all() and (log_table["slices_per_s"] > 0).all()
    assert log_table["val_dice"].notna().tolist() == [False, False, True]  # every 3rd iteration + the last
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "checkpoints" / "last.pt").is_file()
    _, meta = load_model(out / "model.pt")
    assert meta["train"] == resolved and meta["name"] == "tiny"


def test_threshold_calibrated_on_the_validation_subject_is_stored(short_run, cohort):
    from wmhflow.fcn import calibration

    out, _ = short_run
    _, meta = load_model(out / "model.pt")
    stored = meta["calibration"]
    assert stored["subjects"] == 1 and set(stored["thresholds"]) == {"none", "flip"}
    model, _ = load_model(out / "model.pt")
    held = cohort[0]  # validation_subjects 1: the first training subject never trains the weights
    volumes = {k: np.asarray(nib.load(str(held[k])).dataobj) for k in ("flair", "t1", "tophat")}
    reference = np.asarray(nib.load(str(held["reference"])).dataobj)
    prob = infer.predict_volume(model, volumes, meta["channels"], "cpu", "auto", 8)
    assert stored["thresholds"]["none"] == calibration.choose_threshold([prob], [reference])["threshold"]
    assert calibration.stored_threshold(meta, "none") == stored["thresholds"]["none"]


def test_resume_gives_the_same_model(tmp_path, cohort, short_run):
    straight, straight_rows = short_run
    out = tmp_path / "resumed"
    # stop at 3: not a checkpoint_every (4) multiple, nor a log_every (2) multiple
    partial = train.train(*files(cohort[:3]), out, MODEL_CONFIG, tiny_config(6), device="cpu", threads=1, stop_after=3)
    assert [r[0] for r in partial] == [2] and not (out / "model.pt").exists()
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=False)["iteration"] == 3
    rows = train.train(*files(cohort[:3]), out, MODEL_CONFIG, tiny_config(6), device="cpu", threads=1)
    a, _ = load_model(straight / "model.pt")
    b, _ = load_model(out / "model.pt")
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    assert [r[0] for r in rows] == [r[0] for r in straight_rows]
    np.testing.assert_allclose([r[1] for r in rows], [r[1] for r in straight_rows], rtol=1e-5)


def test_weight_average_ships_the_mean_of_the_last_weights_and_resumes(tmp_path, cohort):
    config = tiny_config(6, weight_average={"start": 4, "every": 1})  # the weights after iterations 5 and 6
    out = tmp_path / "swa"
    train.train(*files(cohort[:3]), out, MODEL_CONFIG, config, device="cpu", threads=1, stop_after=5)
    after5 = torch.load(out / "checkpoints" / "last.pt", weights_only=False)["model"]
    train.train(*files(cohort[:3]), out, MODEL_CONFIG, config, device="cpu", threads=1)  # resumes at 5
    after6 = torch.load(out / "checkpoints" / "last.pt", weights_only=False)["model"]
    shipped, meta = load_model(out / "model.pt")
    assert meta["train"]["weight_average"] == {"start": 4, "every": 1}
    changed = 0
    for key, value in shipped.state_dict().items():
        torch.testing.assert_close(value, (after5[key] + after6[key]) / 2, rtol=0, atol=1e-6, msg=key)
        changed += not torch.equal(after5[key], after6[key])
    assert changed > 0  # the two snapshots differ, so the mean is neither of them
    straight = tmp_path / "straight"
    train.train(*files(cohort[:3]), straight, MODEL_CONFIG, config, device="cpu", threads=1)
    for key, value in load_model(straight / "model.pt")[0].state_dict().items():
        torch.testing.assert_close(shipped.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    with pytest.raises(ConfigError, match="weight_average"):
        train._weight_averaging(dict(presets.PRESETS["demo"], weight_average={"start": 600}))


def test_checkpoint_of_other_settings_is_ignored(tmp_path, cohort, caplog):
    out = tmp_path / "m"
    train.train(*files(cohort[:2]), out, MODEL_CONFIG, tiny_config(4), device="cpu", threads=1, stop_after=2)
    rows = train.train(*files(cohort[:2]), out, MODEL_CONFIG, tiny_config(4, seed=4), device="cpu", threads=1)
    assert "ignoring" in caplog.text
    assert [r[0] for r in rows] == [2, 4]


def test_cli_main(tmp_path, cohort):
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    flair, t1, tophat, reference = files(cohort[:2])
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            "--flair",
            *flair,
            "--t1",
            *t1,
            "--tophat",
            *tophat,
            "--reference",
            *reference,
            "--config-json",
            json.dumps({"model": MODEL_CONFIG, "train": tiny_config(2)}),
            "--out-dir",
            str(out),
            "--device",
            "cpu",
            "--threads",
            "1",
        ]
    )
    assert train.main(args) == 0
    assert {p.name for p in out.iterdir()} >= {"model.pt", "config.yaml", "training_log.tsv", "loss_curve.png"}


# ------------------------------------------------------------------------------ configuration
def test_presets_and_overrides():
    demo = presets.resolve_config({})
    assert demo == presets.PRESETS["demo"]
    paper = presets.resolve_config({"preset": "paper"})
    assert paper["batch_size"] == 20 and paper["iterations"] == 150000
    assert [p["momentum"] for p in paper["phases"]] == [0.99, 0.999]
    short = presets.resolve_config({"preset": "demo", "overrides": {"iterations": 60}})
    assert [p["iterations"] for p in short["phases"]] == [45, 15]  # stretched proportionally
    one = presets.resolve_config({"preset": "demo", "overrides": {"iterations": 1}})
    assert sum(p["iterations"] for p in one["phases"]) == 1 and all(p["iterations"] >= 1 for p in one["phases"])
    with pytest.raises(ConfigError, match="preset"):
        presets.resolve_config({"preset": "fast"})
    assert presets.PRESETS["demo"]["iterations"] == 600  # resolve_config must not modify the presets


def test_phase_schedule():
    phases = [{"iterations": 3, "lr": 1.0}, {"iterations": 2, "lr": 0.1}]
    assert [train._phase_at(phases, i)["lr"] for i in range(6)] == [1.0, 1.0, 1.0, 0.1, 0.1, 0.1]


def test_bad_optimizer_and_inputs(tmp_path, cohort):
    with pytest.raises(ConfigError, match="optimizer"):
        train._make_optimizer(build_model(side_maps=2), dict(presets.PRESETS["demo"], optimizer="rmsprop"))
    flair, t1, tophat, reference = files(cohort[:2])
    with pytest.raises(ConfigError, match="same number"):
        train.train(flair, t1[:1], tophat, reference, tmp_path / "x", MODEL_CONFIG, tiny_config(2), device="cpu")


# ----------------------------------------------------------------------------------------- data
def test_load_training_subject(tmp_path, cohort):
    s = cohort[0]
    images, labels = training_data.load_training_subject(
        s["flair"], s["t1"], s["tophat"], s["reference"], "flair,t1,tophat"
    )
    assert images.shape == (SHAPE[2] - 1, 3, SHAPE[0], SHAPE[1])  # the empty first slice is dropped
    assert labels.shape == (SHAPE[2] - 1, SHAPE[0], SHAPE[1])
    ref = np.asarray(nib.load(str(s["reference"])).dataobj)
    assert set(np.unique(labels)) <= {0, 1, training_data.IGNORE}
    assert np.array_equal(labels[1] == training_data.IGNORE, ref[:, :, 2] == 2)
    assert np.array_equal(labels == 1, ref[:, :, 1:].transpose(2, 0, 1) == 1)

    bad = write_nifti(tmp_path / "ref3.nii.gz", np.where(ref == 2, 3, ref), np.diag([1.0, 1.0, 3.0, 1.0]))
    with pytest.raises(InputError, match="unknown label"):
        training_data.load_training_subject(s["flair"], s["t1"], s["tophat"], bad, "flair,t1,tophat")
    flair16 = np.asarray(nib.load(str(s["flair"])).dataobj).astype(np.int16) * 100
    raw = write_nifti(tmp_path / "raw.nii.gz", flair16, np.diag([1.0, 1.0, 3.0, 1.0]))
    with pytest.raises(InputError, match="8-bit"):
        training_data.load_training_subject(raw, s["t1"], s["tophat"], s["reference"], "flair,t1,tophat")


def test_sampler_crops_and_lesion_centring():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 3, 40, 30), dtype=np.uint8)
    labels = np.zeros((5, 40, 30), np.uint8)
    labels[2, 30:33, 3:6] = 1
    sampler = training_data.SliceSampler(images, labels, 16, 1.0, rng)
    x, y = sampler.batch(6)
    assert x.shape == (6, 3, 16, 16) and y.shape == (6, 16, 16)
    assert all((y[i] == 1).any() for i in range(6))  # every crop centred near a lesion pixel
    whole = training_data.SliceSampler(images, labels, 0, 0.0, rng).batch(2)
    assert whole[0].shape == (2, 3, 40, 30)
    big = training_data.SliceSampler(images, labels, 64, 0.5, rng).batch(2)  # crop larger than the slice
    assert big[0].shape == (2, 3, 40, 30)


def test_augment_keeps_labels_and_air():
    rng = np.random.default_rng(0)
    from wmhflow.fcn.slices import to_input

    images = np.zeros((2, 3, 32, 32), np.uint8)
    images[:, :, 8:24, 8:24] = 200
    labels = np.zeros((2, 32, 32), np.int64)
    labels[:, 12:20, 12:20] = 1
    labels[:, 8:10, 8:10] = training_data.IGNORE
    x, y = training_data.random_affine(to_input(images), torch.from_numpy(labels), rng, [0.8, 1.2], 30.0)
    assert x.shape == (2, 3, 32, 32) and y.shape == (2, 32, 32) and y.dtype == torch.int64
    assert set(torch.unique(y).tolist()) <= {0, 1, training_data.IGNORE}
    air = float(to_input(np.zeros(1, np.uint8))[0])
    torch.testing.assert_close(x[:, :, 0, 0], torch.full((2, 3), air))  # corners stay air
    same_x, same_y = training_data.random_affine(to_input(images), torch.from_numpy(labels), rng, [1.0, 1.0], 0.0)
    torch.testing.assert_close(same_x, to_input(images), atol=1e-4, rtol=0)
    assert torch.equal(same_y, torch.from_numpy(labels))


def test_members_train_one_network_per_seed_and_ship_their_mean(tmp_path, cohort):
    """members 2: two networks from seeds 3 and 4 in one file, each the network a single training with
    that seed makes; the file's output is their mean probability; an interrupted second member resumes."""
    out = tmp_path / "pair"
    partial = train.train(*files(cohort[:3]), out, MODEL_CONFIG, tiny_config(4, members=2), "cpu", 1, stop_after=6)
    assert [r[0] for r in partial] == [2, 4, 6]  # the second member's iterations numbered 5..8
    assert (out / "checkpoints" / "member-0" / "last.pt").is_file() and not (out / "model.pt").exists()
    rows = train.train(*files(cohort[:3]), out, MODEL_CONFIG, tiny_config(4, members=2), "cpu", 1)
    assert [r[0] for r in rows] == [2, 4, 6, 8]
    ensemble, meta = load_model(out / "model.pt")
    assert meta["members"] == 2 and meta["iterations"] == 8 and ensemble.n_members == 2
    assert set(meta["calibration"]["thresholds"]) == {"none", "flip"}
    singles = []
    for seed in (3, 4):
        single_dir = tmp_path / f"seed{seed}"
        train.train(*files(cohort[:3]), single_dir, MODEL_CONFIG, tiny_config(4, seed=seed), "cpu", 1)
        singles.append(load_model(single_dir / "model.pt")[0])
    for member, single in zip(ensemble.members, singles):
        for key, value in single.state_dict().items():
            torch.testing.assert_close(member.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    held = cohort[3]
    volumes = {k: np.asarray(nib.load(str(held[k])).dataobj) for k in ("flair", "t1", "tophat")}
    both = infer.predict_volume(ensemble, volumes, meta["channels"], "cpu", "auto", 8)
    apart = infer.predict_volume(singles, volumes, meta["channels"], "cpu", "auto", 8)
    np.testing.assert_allclose(both, apart, atol=1e-5)
    assert not np.allclose(*(infer.predict_volume(s, volumes, meta["channels"], "cpu", "auto", 8) for s in singles))
    with pytest.raises(ConfigError, match="members"):
        train._members(dict(presets.PRESETS["demo"], members=0))
