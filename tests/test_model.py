"""The FCN of the paper (§2.3): shapes, VGG16 weights loading, initialisation, determinism, and the
colour images it sees (slices.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wmhflow.errors import ConfigError, InputError
from wmhflow.fcn import model as wm
from wmhflow.fcn.slices import INPUT_STD, colour_slices, required_volumes, to_input

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# torchvision's vgg16().features: convolution index -> (in, out) channels (stage 5 included: a real
# file has it, the FCN ignores it)
TORCHVISION_VGG16_CONVS = {
    0: (3, 64),
    2: (64, 64),
    5: (64, 128),
    7: (128, 128),
    10: (128, 256),
    12: (256, 256),
    14: (256, 256),
    17: (256, 512),
    19: (512, 512),
    21: (512, 512),
    24: (512, 512),
    26: (512, 512),
    28: (512, 512),
}
USED = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21]  # conv1_1 .. conv4_3


def torchvision_state_dict(seed=0, with_classifier=True):
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for index, (cin, cout) in TORCHVISION_VGG16_CONVS.items():
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen)
        state[f"features.{index}.bias"] = torch.randn(cout, generator=gen)
    if with_classifier:  # small stand-ins for the classifier: present in the file, ignored
        state["classifier.0.weight"] = torch.randn(8, 8, generator=gen)
        state["classifier.0.bias"] = torch.randn(8, generator=gen)
    return state


# ------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("batch,height,width", [(1, 37, 53), (3, 37, 53), (2, 8, 8), (1, 5, 7), (2, 64, 40)])
def test_output_shape_any_size(batch, height, width):
    net = wm.build_model().eval()
    with torch.inference_mode():
        out = net(torch.randn(batch, 3, height, width))
    assert out.shape == (batch, 2, height, width)
    assert torch.isfinite(out).all()


def test_channels_last_same_as_nchw():
    torch.manual_seed(0)
    net = wm.build_model().eval()
    x = torch.randn(2, 3, 37, 53)
    with torch.inference_mode():
        a = net(x)
        b = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b.contiguous(), rtol=1e-4, atol=1e-4)


def test_architecture_is_vgg16_stages_1_to_4_with_side_layers():
    net = wm.build_model(side_maps=16)
    convs = [(i, m) for i, m in enumerate(net.features) if isinstance(m, torch.nn.Conv2d)]
    assert [i for i, _ in convs] == USED
    assert [(m.in_channels, m.out_channels) for _, m in convs] == [TORCHVISION_VGG16_CONVS[i] for i in USED]
    pools = [i for i, m in enumerate(net.features) if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == [4, 9, 16]  # three poolings: stage 4 is at 1/8 resolution
    assert [(s.in_channels, s.out_channels, s.kernel_size) for s in net.side] == [
        (64, 16, (3, 3)),
        (128, 16, (3, 3)),
        (256, 16, (3, 3)),
        (512, 16, (3, 3)),
    ]
    assert (net.fuse.in_channels, net.fuse.out_channels, net.fuse.kernel_size) == (64, 2, (1, 1))


def test_padding_does_not_leak_into_the_image():
    """The crop back from the padded size keeps the top-left: a 37x53 image predicts the same as its
    copy inside a larger image whose extra rows/columns replicate the border (what the padding does)."""
    torch.manual_seed(1)
    net = wm.build_model().eval()
    x = torch.randn(1, 3, 37, 53)
    padded = torch.nn.functional.pad(x, (0, 3, 0, 3), mode="replicate")  # 40 x 56, no padding needed
    with torch.inference_mode():
        torch.testing.assert_close(net(x), net(padded)[..., :37, :53], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ ImageNet weights
def test_torchvision_state_dict_loads_into_used_layers(tmp_path):
    state = torchvision_state_dict()
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    net = wm.build_model(pretrained=str(path))
    own = net.state_dict()
    for index in USED:
        for kind in ("weight", "bias"):
            key = f"features.{index}.{kind}"
            assert torch.equal(own[key], state[key]), key
    assert "features.24.weight" not in own  # stage 5 is not part of the FCN


def test_pretrained_keeps_side_layers_he_initialised(tmp_path):
    path = tmp_path / "vgg16.pth"
    torch.save(torchvision_state_dict(), path)
    torch.manual_seed(3)
    a = wm.build_model(pretrained=str(path))
    torch.manual_seed(3)
    b = wm.build_model()
    for key in b.state_dict():
        if key.startswith(("side.", "fuse.")):
            assert torch.equal(a.state_dict()[key], b.state_dict()[key]), key


def test_torchvision_hub_file_is_found_and_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    torch.hub.set_dir(str(tmp_path / "torch" / "hub"))

    def no_download(*args, **kwargs):
        raise AssertionError("must not download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(ConfigError, match="vgg16-397923af.pth"):
        wm.build_model(pretrained="torchvision")
    path = wm.torchvision_weights_path()
    path.parent.mkdir(parents=True)
    state = torchvision_state_dict(seed=5)
    torch.save(state, path)
    net = wm.build_model(pretrained="torchvision")
    assert torch.equal(net.state_dict()["features.21.weight"], state["features.21.weight"])


def test_wrong_shape_file_gives_clear_error(tmp_path):
    state = torchvision_state_dict()
    state["features.10.weight"] = torch.randn(256, 64, 3, 3)  # wrong input channels
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(InputError) as info:
        wm.build_model(pretrained=str(path))
    message = str(info.value)
    assert str(path) in message and "features.10.weight" in message
    assert "(256, 64, 3, 3)" in message and "(256, 128, 3, 3)" in message


@pytest.mark.parametrize("problem", ["missing", "batchnorm", "not_a_dict", "garbage"])
def test_foreign_files_give_clear_errors(tmp_path, problem):
    path = tmp_path / "foreign.pth"
    state = torchvision_state_dict(with_classifier=False)
    if problem == "missing":
        del state["features.21.weight"]
        torch.save(state, path)
    elif problem == "batchnorm":  # vgg16_bn numbers its layers differently
        torch.save({f"features.{i * 3 // 2}.weight": v for i, (k, v) in enumerate(state.items())}, path)
    elif problem == "not_a_dict":
        torch.save(torch.zeros(3), path)
    else:
        path.write_bytes(b"not a torch file")
    with pytest.raises((InputError, ConfigError)) as info:
        wm.build_model(pretrained=str(path))
    assert str(path) in str(info.value) or "model.pretrained" in str(info.value)


def test_missing_pretrained_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        wm.build_model(pretrained=str(tmp_path / "nope.pth"))


# ------------------------------------------------------------------------------- initialisation
def test_pretrained_none_is_he_initialised():
    torch.manual_seed(0)
    net = wm.build_model(pretrained="none")
    for name, conv in (
        [(f"features.{i}", net.features[i]) for i in USED]
        + [(f"side.{i}", s) for i, s in enumerate(net.side)]
        + [("fuse", net.fuse)]
    ):
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        expected = (2.0 / fan_out) ** 0.5  # kaiming normal, fan_out, ReLU gain
        std = conv.weight.detach().std().item()
        tolerance = 0.15 if conv.weight.numel() > 1000 else 0.4  # the fuse layer has only 128 weights
        assert abs(std / expected - 1) < tolerance, (name, std, expected)
        assert abs(conv.weight.detach().mean().item()) < 0.2 * expected, name
        assert torch.count_nonzero(conv.bias) == 0, name


@pytest.mark.parametrize("none", [None, "", "none"])
def test_pretrained_none_spellings(none):
    assert isinstance(wm.build_model(pretrained=none), wm.VGGFCN)


# --------------------------------------------------------------------------------- determinism
def test_seeded_builds_are_equal_and_seeds_differ():
    torch.manual_seed(7)
    a = wm.build_model().state_dict()
    torch.manual_seed(7)
    b = wm.build_model().state_dict()
    torch.manual_seed(8)
    c = wm.build_model().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])


def test_same_input_twice_gives_identical_output():
    torch.manual_seed(0)
    net = wm.build_model().eval()
    x = torch.randn(2, 3, 37, 53)
    with torch.inference_mode():
        assert torch.equal(net(x), net(x.clone()))


def test_save_and_load_model_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = wm.build_model(side_maps=8).eval()
    path = wm.save_model(
        tmp_path / "m" / "model.pt", net, {"requantize": "tissue", "name": "x", "channels": "flair,t1,t1"}
    )
    loaded, meta = wm.load_model(path)
    assert meta["channels"] == "flair,t1,t1" and meta["side_maps"] == 8 and "wmhflow_version" in meta
    assert not loaded.training
    x = torch.randn(1, 3, 24, 24)
    with torch.inference_mode():
        assert torch.equal(net(x), loaded(x))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match="not a wmhflow model file"):
        wm.load_model(bad)
    with pytest.raises(InputError, match="does not exist"):
        wm.load_model(tmp_path / "none.pt")


# ---------------------------------------------------------------------------- colour images
def _volumes(shape=(6, 5, 4), seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.integers(0, 256, shape, dtype=np.uint8) for k in ("flair", "t1", "tophat")}


def test_colour_slices_flair_t1_tophat():
    v = _volumes()
    images = colour_slices(v, "flair,t1,tophat")
    assert images.shape == (4, 3, 6, 5) and images.dtype == np.uint8
    for k in range(4):
        assert np.array_equal(images[k, 0], v["flair"][:, :, k])
        assert np.array_equal(images[k, 1], v["t1"][:, :, k])
        assert np.array_equal(images[k, 2], v["tophat"][:, :, k])


def test_colour_slices_flair_t1_t1():
    v = _volumes()
    images = colour_slices(v, "flair,t1,t1")
    for k in range(4):
        assert np.array_equal(images[k, 0], v["flair"][:, :, k])
        assert np.array_equal(images[k, 1], v["t1"][:, :, k])
        assert np.array_equal(images[k, 2], v["t1"][:, :, k])


def test_colour_slices_flair_3slice():
    v = _volumes()
    images = colour_slices({"flair": v["flair"]}, "flair-3slice")
    f = v["flair"]
    for k in range(4):
        below, above = max(k - 1, 0), min(k + 1, 3)  # ends repeat the edge slice
        assert np.array_equal(images[k, 0], f[:, :, below])
        assert np.array_equal(images[k, 1], f[:, :, k])
        assert np.array_equal(images[k, 2], f[:, :, above])


def test_required_volumes():
    assert required_volumes("flair,t1,tophat") == {"flair", "t1", "tophat"}
    assert required_volumes("flair,t1,t1") == {"flair", "t1"}
    assert required_volumes("flair-3slice") == {"flair"}
    with pytest.raises(ValueError, match="not one of"):
        required_volumes("t1,flair")


def test_to_input_centres_by_127():
    values = np.array([[[[0, 127, 255]]]], np.uint8)
    x = to_input(values)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, torch.tensor([[[[-127.0, 0.0, 128.0]]]]) / INPUT_STD)
    assert -2.3 < x.min() and x.max() < 2.3  # about the range of ImageNet-normalised inputs
    assert torch.equal(to_input(torch.from_numpy(values)), x)  # tensors (e.g. already on a GPU) too


def test_inference_folds_side_layers_into_the_fusion_same_function():
    torch.manual_seed(4)
    net = wm.build_model()
    for module in (net.side[2], net.fuse):  # non-zero biases too
        torch.nn.init.normal_(module.bias)
    x = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        assert isinstance(net._folded_sides(), list)
    paper = net(x)  # autograd on: side layers, upsampling, concatenation, 1x1 fusion
    assert paper.requires_grad
    with torch.inference_mode():
        folded = net(x)
    torch.testing.assert_close(folded, paper.detach(), rtol=1e-4, atol=1e-4)
