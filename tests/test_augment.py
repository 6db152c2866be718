"""Scanner augmentation, small-lesion sampling, soft-Dice loss and the 'standard' training preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train import MODEL_CONFIG, cohort, files, write_subject  # noqa: F401 (fixture)

from wmhflow.fcn import augment, losses, presets, train, training_data
from wmhflow.fcn.model import load_model
from wmhflow.preprocess.tophat import area_tophat

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def crops(seed=0, n=4, size=40):
    """uint8 colour crops: air border, textured head, a bright FLAIR blob (dark on T1)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 3, size, size), np.uint8)
    images[:, 0, 4:-4, 4:-4] = rng.integers(80, 130, (n, size - 8, size - 8))
    images[:, 1, 4:-4, 4:-4] = rng.integers(130, 190, (n, size - 8, size - 8))
    images[:, 0, 15:20, 15:20] = 230
    images[:, 1, 15:20, 15:20] = 100
    images[:, 2] = area_tophat(images[:, 0].transpose(1, 2, 0), 25).transpose(2, 0, 1)
    return images


@pytest.mark.parametrize("channels", ["flair,t1,tophat", "flair,t1,t1", "flair-3slice"])
def test_intensity_augmentation_keeps_shape_dtype_air_and_is_seeded(channels):
    images = crops()
    if channels == "flair,t1,t1":
        images[:, 2] = images[:, 1]
    if channels == "flair-3slice":
        images[:, 1] = images[:, 2] = images[:, 0]
    settings = {"probability": 1.0}
    out = augment.augment_batch(images, channels, np.random.default_rng(5), settings)
    again = augment.augment_batch(images, channels, np.random.default_rng(5), settings)
    other = augment.augment_batch(images, channels, np.random.default_rng(6), settings)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert np.array_equal(out, again) and not np.array_equal(out, other)
    assert not np.array_equal(out, images)
    head = images[:, :2] > 0  # (the top-hat is 0 inside the head too)
    assert (out[:, :2][~head] == 0).all()  # air stays air
    if channels == "flair,t1,tophat":  # the top-hat follows the augmented FLAIR
        assert (out[:, 0][head[:, 0]] > 0).all()
        np.testing.assert_array_equal(out[:, 2], area_tophat(out[:, 0].transpose(1, 2, 0), 25).transpose(2, 0, 1))
    elif channels == "flair,t1,t1":
        np.testing.assert_array_equal(out[:, 1], out[:, 2])
    else:  # one acquisition: the same draw on the three neighbouring FLAIR slices
        np.testing.assert_array_equal(out[:, 0], out[:, 1])
    # the lesion stays brighter than its surroundings on FLAIR (contrast changed, not inverted)
    assert all(out[i, 0, 16:19, 16:19].mean() > out[i, 0, 6:12, 6:12].mean() for i in range(len(out)))


def test_probability_zero_changes_nothing():
    images = crops()
    assert np.array_equal(
        augment.augment_batch(images, "flair,t1,tophat", np.random.default_rng(0), {"probability": 0.0}), images
    )


def test_scalp_augmentation_brightens_the_rim_not_the_inside():
    """Only the scalp step (every other strength 0): the head's outer rim gets brighter, its inside and
    the air stay; a crop that lies wholly inside the head is left alone (it has no rim)."""
    only_scalp = {k: 0.0 for k in augment.DEFAULTS} | {
        "probability": 1.0,
        "downsample": 1.0,
        "scalp": 0.8,
        "scalp_width": 6.0,
    }
    image = np.zeros((48, 48), np.uint8)
    image[4:-4, 4:-4] = 120
    brighter = []
    for seed in range(8):
        out = augment.augment_image(image, np.random.default_rng(seed), only_scalp)
        assert (out[image == 0] == 0).all() and abs(int(out[24, 24]) - 120) <= 1
        brighter.append(int(out[4, 24]) - 120)
    assert max(brighter) > 20 and min(brighter) >= -1  # half of the draws apply it, up to +80 %
    inside = np.full((32, 32), 120, np.uint8)
    for seed in range(4):
        assert np.array_equal(augment.augment_image(inside, np.random.default_rng(seed), only_scalp), inside)


def test_every_augmentation_strength_can_be_overridden_in_the_config():
    """train.overrides.intensity accepts each key of augment.DEFAULTS (its schema comes from the presets)."""
    from wmhflow.config import validate

    assert set(presets.PRESETS["standard"]["intensity"]) == set(augment.DEFAULTS)
    for key in augment.DEFAULTS:
        config = {"cohort": "demo", "train": {"preset": "standard", "overrides": {"intensity": {key: 0.5}}}}
        assert validate(config)["train"]["overrides"]["intensity"] == {key: 0.5}


def test_soft_dice_loss():
    target = torch.zeros(2, 32, 32, dtype=torch.long)
    target[:, 8:16, 8:16] = 1
    target[:, 0:2, 0:2] = training_data.IGNORE
    sure = (target == 1).float() * 2 - 1
    perfect = torch.stack([-sure * 30, sure * 30], 1)
    assert losses.soft_dice_loss(perfect, target).item() < 1e-3
    assert losses.soft_dice_loss(-perfect, target).item() > 0.99
    half = torch.zeros(2, 2, 32, 32)  # p = 0.5 everywhere: Dice well below 1
    assert 0.5 < losses.soft_dice_loss(half, target).item() < 1.0
    # ignored pixels do not count, whatever is predicted there
    flipped = perfect.clone()
    flipped[:, :, 0:2, 0:2] = perfect[:, :, 0:2, 0:2].flip(1)
    assert losses.soft_dice_loss(flipped, target).item() == pytest.approx(losses.soft_dice_loss(perfect, target).item())
    # no lesion anywhere and none predicted: ~0, defined
    empty = torch.zeros(1, 16, 16, dtype=torch.long)
    assert (
        losses.soft_dice_loss(
            torch.stack([torch.full((1, 16, 16), 30.0), torch.full((1, 16, 16), -30.0)], 1), empty
        ).item()
        < 1e-3
    )


def test_component_sampling_draws_small_lesions_as_often_as_large():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 255, (3, 3, 64, 64), dtype=np.uint8)
    labels = np.zeros((3, 64, 64), np.uint8)
    labels[0, 5:35, 5:35] = 1  # one large lesion: 900 pixels
    labels[1, 50, 50] = 1  # one single-pixel lesion
    per_pixel = training_data.SliceSampler(images, labels, 8, 1.0, np.random.default_rng(1))
    per_component = training_data.SliceSampler(images, labels, 8, 1.0, np.random.default_rng(1), "component")
    small_pixel = sum(per_pixel._lesion_pixel()[0] == 1 for _ in range(400))
    small_component = sum(per_component._lesion_pixel()[0] == 1 for _ in range(400))
    assert small_pixel < 10 and 150 < small_component < 250
    x, y = per_component.batch(5)
    assert x.shape == (5, 3, 8, 8) and all((y[i] == 1).any() for i in range(5))


def test_slice_mix_blends_neighbours_of_the_same_subject_only():
    images = np.zeros((4, 3, 8, 8), np.uint8)
    images[:, :, 1:-1, 1:-1] = np.array([40, 80, 120, 160], np.uint8)[:, None, None, None]
    labels = np.zeros((4, 8, 8), np.uint8)
    sampler = training_data.SliceSampler(
        images, labels, 0, 0.0, np.random.default_rng(0), slice_mix=1.0, subject_of=[0, 0, 1, 1]
    )
    mixed = [sampler._mixed(1, slice(None), slice(None))[0, 4, 4] for _ in range(50)]
    assert all(40 <= v <= 80 for v in mixed) and any(v < 80 for v in mixed)  # slice 2 is another subject
    assert sampler.batch(3)[0].dtype == np.uint8


def test_standard_preset_validates_and_trains_on_cpu(tmp_path, cohort):  # noqa: F811
    import jsonschema
    import yaml
    from conftest import REPO

    schema = yaml.safe_load((REPO / "workflow/wmhflow/schemas/config.schema.yaml").read_text())
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["train"]["preset"] = "standard"
    jsonschema.validate(config, schema)
    standard = presets.resolve_config({"preset": "standard"})
    assert standard["loss"] == "ce+dice" and standard["intensity"] and standard["lesion_sampling"] == "component"
    assert sum(p["iterations"] for p in standard["phases"]) == standard["iterations"]
    with pytest.raises(Exception, match="loss"):
        presets.resolve_config({"preset": "standard", "overrides": {"loss": "focal"}})

    flair, t1, tophat, reference = files(cohort[:3])
    overrides = {
        "iterations": 3,
        "batch_size": 2,
        "crop": 24,
        "validate_every": 3,
        "log_every": 1,
        "checkpoint_every": 3,
    }
    rows = train.train(
        flair,
        t1,
        tophat,
        reference,
        tmp_path / "m",
        MODEL_CONFIG,
        {"preset": "standard", "overrides": overrides},
        device="cpu",
    )
    assert [r[0] for r in rows] == [1, 2, 3] and all(np.isfinite(r[1]) for r in rows)
    model, meta = load_model(tmp_path / "m" / "model.pt")
    assert meta["train"]["loss"] == "ce+dice" and meta["iterations"] == 3
    assert meta["train"]["small_lesion_weight"] == standard["small_lesion_weight"] > 0  # the weighted loss ran
