"""Inference: outputs on the FLAIR's exact grid and header, cropping/skipping that change nothing,
CUDA out-of-memory retries, and the device/precision choices (GPU paths checked by construction)."""

from __future__ import annotations

import argparse
import subprocess

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import wmhflow_command, write_nifti

from wmhflow.errors import ConfigError, InputError
from wmhflow.fcn import device as wd
from wmhflow.fcn import infer
from wmhflow.fcn.model import build_model, save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def head_volumes(shape, centre, radii, seed=0, empty=()):
    """uint8 FLAIR/T1/top-hat with an elliptic 'head' (0 outside) and a few bright 'lesions'."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(n) for n in shape[:2]], indexing="ij")
    flair = np.zeros(shape, np.uint8)
    t1 = np.zeros(shape, np.uint8)
    for k in range(shape[2]):
        if k in empty:
            continue
        shrink = 1.0 - 0.15 * abs(k - shape[2] / 2) / shape[2]  # the head narrows towards the ends
        inside = sum(((g - c) / (r * shrink)) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
        flair[..., k][inside] = rng.integers(60, 140, int(inside.sum()))
        t1[..., k][inside] = rng.integers(90, 200, int(inside.sum()))
        spot = tuple(int(c + rng.integers(-2, 3)) for c in centre)
        flair[spot[0] - 1 : spot[0] + 2, spot[1] - 1 : spot[1] + 2, k] = 240
    tophat = np.where(flair > 200, flair - 120, 0).astype(np.uint8)
    return {"flair": flair, "t1": t1, "tophat": tophat}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model().eval()


def run(net, volumes, channels="flair,t1,tophat", **kwargs):
    return infer.predict_volume(net, volumes, channels, device="cpu", precision="fp32", **kwargs)


# ------------------------------------------------------------------------- cropping and skipping
@pytest.mark.parametrize("channels", ["flair,t1,tophat", "flair-3slice"])
def test_head_cropped_prediction_equals_uncropped(net, channels):
    # head far from the borders, box starting off the pooling grid: the crop really crops
    volumes = head_volumes((200, 208, 4), centre=(100, 112), radii=(11, 13), seed=1, empty=(0,))
    _, xs, ys = infer.head_box(volumes["flair"], infer.EXACT_MARGIN, infer.STRIDE)
    assert xs.start % 8 == 0 and ys.start % 8 == 0
    assert (xs.stop - xs.start) * (ys.stop - ys.start) < 0.7 * 200 * 208
    cropped = run(net, volumes, channels, batch_size=2)
    whole = run(net, volumes, channels, crop=False)
    assert cropped.shape == whole.shape == (200, 208, 4)
    np.testing.assert_allclose(cropped, whole, atol=1e-4, rtol=0)
    assert np.array_equal(cropped >= 0.5, whole >= 0.5)
    assert np.all(cropped[volumes["flair"] == 0] == 0)  # outside the head: 0 by definition


def test_small_crop_margin_still_fills_the_head(net):
    volumes = head_volumes((48, 40, 3), centre=(24, 20), radii=(12, 10), seed=2)
    prob = run(net, volumes, crop_margin=0)
    assert prob.shape == (48, 40, 3) and prob.dtype == np.float32
    assert np.all((prob >= 0) & (prob <= 1))
    assert np.all(prob[volumes["flair"] == 0] == 0)


def test_empty_slices_are_skipped_but_output_is_full_size(net):
    volumes = head_volumes((40, 36, 6), centre=(20, 18), radii=(10, 9), seed=3, empty=(0, 3, 5))
    seen = []

    def spy(model, batch, device, amp):
        seen.append(len(batch))
        return infer._forward(model, batch, device, amp)

    prob = run(net, volumes, batch_size=4, forward=spy)
    assert sum(seen) == 3  # slices 1, 2, 4
    assert prob.shape == (40, 36, 6)
    assert np.all(prob[:, :, [0, 3, 5]] == 0)
    np.testing.assert_allclose(prob, run(net, volumes, crop=False), atol=1e-4)


def test_no_head_at_all_gives_empty_prediction(net):
    volumes = {k: np.zeros((16, 16, 3), np.uint8) for k in ("flair", "t1", "tophat")}
    prob = run(net, volumes, forward=lambda *a: pytest.fail("nothing to segment"))
    assert prob.shape == (16, 16, 3) and not prob.any()


def test_head_box():
    flair = np.zeros((30, 40, 5), np.uint8)
    flair[11:20, 17:25, 1:4] = 9
    slices, xs, ys = infer.head_box(flair)
    assert list(slices) == [1, 2, 3] and (xs, ys) == (slice(11, 20), slice(17, 25))
    _, xs, ys = infer.head_box(flair, margin=4, align=8)
    assert (xs, ys) == (slice(0, 24), slice(8, 29))
    _, xs, ys = infer.head_box(flair, margin=100, align=8)
    assert (xs, ys) == (slice(0, 30), slice(0, 40))


# ------------------------------------------------------------------------------ determinism, OOM
def test_predictions_are_deterministic(net):
    volumes = head_volumes((40, 36, 4), centre=(20, 18), radii=(10, 9), seed=4)
    assert np.array_equal(run(net, volumes), run(net, volumes))


def test_cuda_out_of_memory_retries_with_smaller_batches(net):
    volumes = head_volumes((40, 36, 7), centre=(20, 18), radii=(10, 9), seed=5)
    sizes = []

    def small_gpu(model, batch, device, amp):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return infer._forward(model, batch, device, amp)

    prob = run(net, volumes, batch_size=8, forward=small_gpu, crop_margin=infer.EXACT_MARGIN)
    assert sizes[:3] == [7, 4, 2] and max(sizes[3:]) <= 2  # 8 slices asked, 7 present: halved twice
    assert sum(sizes[2:]) == 7
    np.testing.assert_allclose(prob, run(net, volumes, batch_size=8), atol=1e-4)


def test_out_of_memory_with_single_slices_is_raised(net):
    volumes = head_volumes((24, 24, 2), centre=(12, 12), radii=(6, 6))

    def no_memory(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        run(net, volumes, batch_size=4, forward=no_memory)


def test_other_errors_are_not_retried(net):
    volumes = head_volumes((24, 24, 2), centre=(12, 12), radii=(6, 6))
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")  # CPU OOM: no halving

    with pytest.raises(RuntimeError, match="DefaultCPUAllocator"):
        run(net, volumes, batch_size=4, forward=broken)
    assert len(calls) == 1


def test_forward_runs_in_inference_mode_channels_last_eval(net):
    volumes = head_volumes((24, 24, 2), centre=(12, 12), radii=(6, 6))
    checks = []

    def spy(model, batch, device, amp):
        checks.append(
            (
                torch.is_inference_mode_enabled(),
                model.training,
                amp,
                device.type,
                model.features[0].weight.is_contiguous(memory_format=torch.channels_last),
            )
        )
        return infer._forward(model, batch, device, amp)

    net.train()
    infer.predict_volume(net, volumes, "flair,t1,tophat", device="cpu", precision="auto", forward=spy)
    assert checks and all(c == (True, False, None, "cpu", True) for c in checks)
    checks.clear()
    infer.predict_volume(net, volumes, "flair,t1,tophat", device="auto", precision="bf16", forward=spy)
    assert checks and all(c == (True, False, torch.bfloat16, "cpu", True) for c in checks)


def test_bf16_on_cpu_when_asked_agrees_with_fp32(net):
    volumes = head_volumes((40, 36, 3), centre=(20, 18), radii=(10, 9), seed=6)
    fp32 = run(net, volumes)
    bf16 = infer.predict_volume(net, volumes, "flair,t1,tophat", device="cpu", precision="bf16")
    assert bf16.dtype == np.float32 and np.all((bf16 >= 0) & (bf16 <= 1))
    head = volumes["flair"] > 0
    assert np.mean((bf16 >= 0.5)[head] == (fp32 >= 0.5)[head]) > 0.9


# --------------------------------------------------------------------------- device / precision
def test_pick_device(monkeypatch):
    if not torch.cuda.is_available():  # this machine: auto -> CPU
        assert wd.pick_device("auto") == torch.device("cpu")
    assert wd.pick_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "mps0"):
        with pytest.raises(ConfigError, match="device"):
            wd.pick_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert wd.pick_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA device"):
        wd.pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert wd.pick_device("auto") == torch.device("cuda")  # CUDA is picked whenever present
    assert wd.pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="only 1"):
        wd.pick_device("cuda:1")


def test_autocast_dtype(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert wd.autocast_dtype(cpu, "auto") is None  # fp32 on the CPU unless asked
    assert wd.autocast_dtype(cpu, "fp32") is None
    assert wd.autocast_dtype(cpu, "bf16") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert wd.autocast_dtype(cuda, "auto") is torch.bfloat16
    assert wd.autocast_dtype(cuda, "fp32") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert wd.autocast_dtype(cuda, "auto") is None
    with pytest.raises(ConfigError, match="precision"):
        wd.autocast_dtype(cpu, "fp16")


def test_prepare_sets_cudnn_benchmark_only_for_cuda(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    wd.prepare(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    wd.prepare(torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is True


# ------------------------------------------------------------------------------ files and headers
def oblique_affine():
    angle = np.deg2rad(17.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ tilt @ np.diag([0.9, 1.1, 3.0])
    affine[:3, 3] = [-20.5, 31.0, -12.25]
    return affine


def lps_permuted_affine():
    # voxel axes: i -> anterior-posterior (P), j -> superior-inferior... an LPS-like, permuted order
    affine = np.zeros((4, 4))
    affine[0, 1] = -1.0  # j runs right -> left
    affine[1, 0] = -1.2  # i runs anterior -> posterior
    affine[2, 2] = 2.5  # k runs inferior -> superior
    affine[:3, 3] = [40.0, 30.0, -10.0]
    affine[3, 3] = 1.0
    return affine


def write_subject(tmp_path, volumes, affine, codes=(1, 1)):
    paths = {}
    for key, data in volumes.items():
        path = write_nifti(tmp_path / f"{key}.nii.gz", data, affine, np.uint8)
        if codes != (1, 1):
            img = nib.load(str(path))
            img.set_qform(affine, code=codes[0])
            img.set_sform(affine, code=codes[1])
            nib.save(img, str(path))
        paths[key] = path
    return paths


def parse(argv):
    parser = argparse.ArgumentParser()
    infer.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, net):
    return save_model(
        tmp_path_factory.mktemp("model") / "model.pt",
        net,
        {"requantize": "tissue", "name": "t", "channels": "flair,t1,tophat"},
    )


@pytest.mark.parametrize(
    "affine,codes", [(oblique_affine(), (1, 1)), (lps_permuted_affine(), (2, 4))], ids=["oblique", "lps-permuted"]
)
def test_outputs_on_the_exact_flair_grid_and_header(tmp_path, net, model_file, affine, codes):
    volumes = head_volumes((36, 28, 5), centre=(17, 14), radii=(12, 9), seed=7, empty=(4,))
    paths = write_subject(tmp_path, volumes, affine, codes)
    out = tmp_path / "out"
    args = parse(
        [
            "--flair",
            paths["flair"],
            "--t1",
            paths["t1"],
            "--tophat",
            paths["tophat"],
            "--model",
            model_file,
            "--probseg",
            out / "p.nii.gz",
            "--mask",
            out / "m.nii.gz",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--min-depth-mm",
            "0",
        ]
    )  # a 12 mm 'head'
    assert infer.main(args) == 0
    flair = nib.load(str(paths["flair"]))
    expected = run(net, volumes)
    for name, dtype in (("p.nii.gz", np.float32), ("m.nii.gz", np.uint8)):
        img = nib.load(str(out / name))
        assert img.shape == flair.shape
        np.testing.assert_array_equal(img.affine, flair.affine)
        for form in ("qform", "sform"):
            matrix, code = getattr(img, f"get_{form}")(coded=True)
            ref_matrix, ref_code = getattr(flair, f"get_{form}")(coded=True)
            np.testing.assert_allclose(matrix, ref_matrix, atol=1e-5)
            assert code == ref_code
        np.testing.assert_allclose(img.header.get_zooms(), flair.header.get_zooms(), rtol=1e-6)
        assert img.get_data_dtype() == dtype
        assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(flair.affine)
    prob = np.asarray(nib.load(str(out / "p.nii.gz")).dataobj)
    mask = np.asarray(nib.load(str(out / "m.nii.gz")).dataobj)
    np.testing.assert_allclose(prob, expected, atol=1e-5)  # voxel for voxel: no reorientation
    assert np.array_equal(mask, (prob >= 0.5).astype(np.uint8))
    assert not prob[:, :, 4].any()


def test_bad_inputs_fail_before_writing(tmp_path, model_file):
    volumes = head_volumes((20, 20, 3), centre=(10, 10), radii=(6, 6))
    paths = write_subject(tmp_path, volumes, np.eye(4))
    out = tmp_path / "out"
    common = ["--model", model_file, "--probseg", out / "p.nii.gz", "--mask", out / "m.nii.gz", "--device", "cpu"]
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    other_grid = write_nifti(tmp_path / "t1_shifted.nii.gz", volumes["t1"], shifted, np.uint8)
    raw = write_nifti(tmp_path / "raw.nii.gz", volumes["flair"].astype(np.int16) * 10, np.eye(4))
    cases = [
        (["--flair", paths["flair"], "--t1", other_grid, "--tophat", paths["tophat"]], "affine differs"),
        (["--flair", raw, "--t1", paths["t1"], "--tophat", paths["tophat"]], "8-bit"),
        (["--flair", paths["flair"], "--t1", paths["t1"]], "need a tophat"),
    ]
    for argv, problem in cases:
        with pytest.raises(InputError, match=problem):
            infer.main(parse(argv + common))
    with pytest.raises(ConfigError, match="device"):
        infer.main(
            parse(["--flair", paths["flair"], "--t1", paths["t1"], "--tophat", paths["tophat"]] + common[:-1] + ["gpu"])
        )
    assert not out.exists() or not any(out.iterdir())


def test_cli_one_line_error(tmp_path, model_file):
    volumes = head_volumes((20, 20, 3), centre=(10, 10), radii=(6, 6))
    paths = write_subject(tmp_path, volumes, np.eye(4))
    result = subprocess.run(
        wmhflow_command()
        + [
            "infer",
            "--flair",
            str(paths["flair"]),
            "--t1",
            str(paths["t1"]),
            "--model",
            str(model_file),
            "--probseg",
            str(tmp_path / "p.nii.gz"),
            "--mask",
            str(tmp_path / "m.nii.gz"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "need a tophat" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "p.nii.gz").exists()
