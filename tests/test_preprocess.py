"""Tests of wmhflow.preprocess: top-hat exactness, T1 alignment, N4, requantization, head mask, CLI verbs.

All volumes are small and synthetic; the whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import subprocess
import time

import nibabel as nib
import numpy as np
import pytest
from conftest import wmhflow_command, write_nifti
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.morphology import area_opening

from wmhflow.errors import InputError
from wmhflow.io import load_nifti, voxels
from wmhflow.preprocess.align import align_t1_to_flair, register_rigid
from wmhflow.preprocess.bias import n4_correct_array
from wmhflow.preprocess.headmask import head_mask_array
from wmhflow.preprocess.quantize import requantize_array
from wmhflow.preprocess.tophat import area_opening_slices, area_tophat
from wmhflow.synth import Site, synthesize_subject

# --------------------------------------------------------------------------------------------------
# Top-hat: our area opening must equal scikit-image's, voxel for voxel.


def skimage_slices(volume, area, connectivity):
    return np.stack([area_opening(volume[:, :, k], area, connectivity) for k in range(volume.shape[2])], axis=2)


def reference_opening(plane, area, connectivity):
    """Area opening by threshold decomposition (the definition), for slices scikit-image refuses (< 3 wide)."""
    structure = ndimage.generate_binary_structure(2, connectivity)
    out = np.zeros(plane.shape, np.int64)
    for h in range(1, int(plane.max()) + 1):
        labels, _ = ndimage.label(plane >= h, structure)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        out += sizes[labels] >= area
    return out.astype(np.uint8)


@st.composite
def uint8_volumes(draw):
    h = draw(st.integers(3, 24))
    w = draw(st.integers(3, 24))
    k = draw(st.integers(1, 3))
    # Few grey levels make plateaus and ties (the hard cases); many make a noise-like image.
    levels = draw(st.sampled_from([2, 3, 5, 256]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    values = rng.integers(0, levels, (h, w, k))
    step = 1 if levels == 256 else draw(st.integers(1, 255 // (levels - 1)))
    return (values * step).astype(np.uint8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(volume=uint8_volumes(), area=st.integers(1, 40), connectivity=st.sampled_from([1, 2]))
def test_area_opening_equals_skimage_on_random_slices(volume, area, connectivity):
    ours = area_opening_slices(volume, area, connectivity)
    np.testing.assert_array_equal(ours, skimage_slices(volume, area, connectivity))


@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("shape", [(1, 1, 2), (1, 30, 2), (30, 1, 1), (2, 17, 3), (17, 2, 2), (2, 2, 1)])
def test_area_opening_on_thin_slices_follows_the_definition(shape, connectivity):
    # scikit-image cannot open slices narrower than 3 pixels; the definition still applies.
    rng = np.random.default_rng(sum(shape))
    volume = (rng.integers(0, 4, shape) * 60).astype(np.uint8)
    for area in (1, 2, 3, 5, 25):
        ours = area_opening_slices(volume, area, connectivity)
        for k in range(shape[2]):
            np.testing.assert_array_equal(ours[:, :, k], reference_opening(volume[:, :, k], area, connectivity))


@pytest.mark.parametrize("connectivity", [1, 2])
def test_area_opening_odd_shapes_and_layouts(connectivity):
    rng = np.random.default_rng(7)
    volume = rng.integers(0, 256, (37, 53, 5), dtype=np.uint8)
    volume[10:20, 10:30] //= 8  # a dark plateau-ish region next to noise
    expected = skimage_slices(volume, 25, connectivity)
    for variant in (
        volume,
        np.asfortranarray(volume),
        np.ascontiguousarray(volume[::-1, :, ::-1])[::-1, :, ::-1],
        volume.transpose(1, 0, 2).copy().transpose(1, 0, 2),
    ):
        for threads in (1, 2):
            np.testing.assert_array_equal(area_opening_slices(variant, 25, connectivity, threads), expected)
    # A strided (non-contiguous) view of a larger array.
    big = np.zeros((74, 106, 10), np.uint8)
    big[::2, ::2, ::2] = volume
    np.testing.assert_array_equal(area_opening_slices(big[::2, ::2, ::2], 25, connectivity), expected)


@pytest.mark.parametrize("value", [0, 1, 137, 255])
def test_area_opening_of_constant_slices(value):
    volume = np.full((20, 31, 3), value, np.uint8)
    for connectivity in (1, 2):
        ours = area_opening_slices(volume, 25, connectivity)
        np.testing.assert_array_equal(ours, volume)
        np.testing.assert_array_equal(ours, skimage_slices(volume, 25, connectivity))
        assert not area_tophat(volume, 25, connectivity).any()


def test_area_opening_of_a_slice_smaller_than_the_area():
    # scikit-image opens a slice with fewer pixels than the threshold to 0 (its whole-slice component is
    # removed too); we do the same, so the top-hat keeps the whole slice.
    volume = np.arange(1, 21, dtype=np.uint8).reshape(4, 5, 1) + 100
    np.testing.assert_array_equal(area_opening_slices(volume, 25, 1), skimage_slices(volume, 25, 1))
    assert not area_opening_slices(volume, 25, 1).any()
    np.testing.assert_array_equal(area_tophat(volume, 25, 1), volume)


def test_area_opening_removes_small_bright_spots_only():
    volume = np.full((40, 40, 1), 10, np.uint8)
    volume[5:9, 5:11, 0] = 200  # 24 px: removed by an area-25 opening
    volume[20:25, 20:25, 0] = 180  # 25 px: kept
    volume[30, 30:33, 0] = 90  # 3 px: removed
    tophat = area_tophat(volume, 25, 1)[:, :, 0]
    assert (tophat[5:9, 5:11] == 190).all()
    assert (tophat[30, 30:33] == 80).all()
    assert tophat.sum() == 190 * 24 + 80 * 3


def test_area_opening_rejects_bad_arguments():
    with pytest.raises(TypeError):
        area_opening_slices(np.zeros((5, 5, 2), np.float32))
    with pytest.raises(ValueError):
        area_opening_slices(np.zeros((5, 5, 2), np.uint8), 25, 3)
    with pytest.raises(ValueError):
        area_opening_slices(np.zeros((5, 5), np.uint8))


@pytest.fixture(scope="module")
def quantized_cohort(small_cohort):
    """The 8-bit FLAIRs of the small synthetic cohort (one per subject)."""
    _, table = small_cohort
    return [requantize_array(voxels(load_nifti(path, "FLAIR"))) for path in table["flair"]]


@pytest.mark.parametrize("connectivity", [1, 2])
def test_area_opening_equals_skimage_on_realistic_slices(quantized_cohort, connectivity):
    for volume in quantized_cohort:
        ours = area_opening_slices(volume, 25, connectivity)
        np.testing.assert_array_equal(ours, skimage_slices(volume, 25, connectivity))
        tophat = area_tophat(volume, 25, connectivity)
        assert tophat.dtype == np.uint8
        np.testing.assert_array_equal(tophat.astype(int), volume.astype(int) - ours)


# --------------------------------------------------------------------------------------------------
# Synthetic subjects without any bias field, on a medium grid (for N4 and registration).

TEST_SITE = Site("Test", 0, (96, 96, 24), (2.0, 2.0, 6.0), 1000.0, 0.02, 0.0, 1.9)


@pytest.fixture(scope="module")
def clean_subject():
    flair, t1, labels = synthesize_subject(TEST_SITE, 3)
    return flair, t1, labels


def smooth_log_field(shape, amplitude=0.5):
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    log_field = 0.3 * x - 0.25 * y + 0.15 * z + 0.2 * x * y
    return (amplitude * log_field / np.abs(log_field).max()).astype(np.float32)


def test_n4_removes_a_known_bias_field(clean_subject):
    flair = clean_subject[0]
    clean = voxels(flair)
    log_field = smooth_log_field(clean.shape)
    biased = clean * np.exp(log_field)
    img = nib.Nifti1Image(biased, flair.affine)
    mask = head_mask_array(biased)
    tissue = mask & (clean > 0.25 * np.percentile(clean[mask], 99))
    corrected, field = n4_correct_array(img, biased, mask, threads=2)
    assert corrected.shape == clean.shape and corrected.dtype == np.float32
    assert np.all(np.isfinite(corrected)) and np.all(field > 0)
    # Residual bias: what is left of the field in corrected / clean (a global scale does not count).
    before = np.std(log_field[tissue])
    after = np.std(np.log(np.maximum(corrected[tissue], 1e-3) / clean[tissue]))
    assert after < 0.5 * before, (before, after)
    # The estimated field follows the applied one.
    assert np.corrcoef(np.log(field[tissue]), log_field[tissue])[0, 1] > 0.9
    # Tissue intensities become more uniform: coefficient of variation of the bright tissue (WM/GM).
    bright = tissue & (clean > np.percentile(clean[tissue], 40)) & (clean < np.percentile(clean[tissue], 90))
    cv = lambda a: float(np.std(a) / np.mean(a))  # noqa: E731
    assert cv(corrected[bright]) < cv(biased[bright])


def test_n4_keeps_an_unbiased_image_nearly_unchanged(clean_subject):
    flair = clean_subject[0]
    clean = voxels(flair)
    mask = head_mask_array(clean)
    tissue = mask & (clean > 0.25 * np.percentile(clean[mask], 99))
    corrected, _ = n4_correct_array(flair, clean, mask, threads=2)
    assert np.std(np.log(np.maximum(corrected[tissue], 1e-3) / clean[tissue])) < 0.05


# --------------------------------------------------------------------------------------------------
# Alignment.


def rigid(degrees_z, translation):
    """A world-space (RAS, mm) rigid transform: rotation about z through the origin, then a shift."""
    a = np.deg2rad(degrees_z)
    m = np.eye(4)
    m[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    m[:3, 3] = translation
    return m


def test_align_passes_through_a_t1_on_the_flair_grid(clean_subject):
    flair, t1, _ = clean_subject
    aligned = align_t1_to_flair(flair, t1, "auto")
    np.testing.assert_array_equal(aligned.affine, flair.affine)
    np.testing.assert_array_equal(np.asarray(aligned.dataobj), voxels(t1))


def test_align_recovers_a_known_rigid_motion(clean_subject):
    flair, t1, _ = clean_subject
    motion = rigid(4.0, [3.0, -4.0, 2.0])
    # The same voxels, but the header says the head was moved: world point x of the FLAIR's head is at
    # motion @ x in the T1. A perfect registration maps FLAIR points x to motion @ x.
    moved = nib.Nifti1Image(voxels(t1), motion @ t1.affine)
    transform, _ = register_rigid(flair, moved)
    brain = np.argwhere(voxels(flair) > 0.3 * np.percentile(voxels(flair), 99))
    world = nib.affines.apply_affine(flair.affine, brain)
    lps = np.array([-1.0, -1.0, 1.0])
    found = np.array([transform.TransformPoint(tuple(float(c) for c in p * lps)) for p in world[::50]]) * lps
    truth = nib.affines.apply_affine(motion, world[::50])
    error = np.linalg.norm(found - truth, axis=1)
    assert error.mean() < 1.0 and error.max() < 2.0, (error.mean(), error.max())
    # And the T1 resampled onto the FLAIR grid is the original T1 again (inside the head).
    aligned = align_t1_to_flair(flair, moved, "auto")
    np.testing.assert_array_equal(aligned.affine, flair.affine)
    inside = head_mask_array(voxels(t1))
    r = np.corrcoef(np.asarray(aligned.dataobj)[inside], voxels(t1)[inside])[0, 1]
    assert r > 0.95


def test_registration_is_reproducible(clean_subject):
    """The same inputs give the same transform: the metric's random samples come from a fixed seed.
    (SimpleITK's seed 0 means "the wall clock": with it, reruns a second apart moved the T1 by up to
    ~1 mm on the small test volumes.)"""
    flair, t1, _ = clean_subject
    moved = nib.Nifti1Image(voxels(t1), rigid(3.0, [2.0, -1.0, 1.0]) @ t1.affine)
    first = np.array(register_rigid(flair, moved)[0].GetInverse().GetParameters())
    time.sleep(1.1)  # a wall-clock seed would change by now
    again = np.array(register_rigid(flair, moved)[0].GetInverse().GetParameters())
    np.testing.assert_allclose(again, first, atol=1e-4)


def test_align_pins_its_threads_for_the_registration_only(clean_subject):
    """``threads`` is the registration's own count: the voxels are those of ITK set globally to that many
    threads, and the caller's global setting is left as it was (the align step's ``--threads`` and
    ``wmhflow segment --kernel-threads`` both go through it)."""
    import SimpleITK as sitk

    flair, t1, _ = clean_subject
    moved = nib.Nifti1Image(voxels(t1), rigid(3.0, [2.0, -1.0, 1.0]) @ t1.affine)
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    pinned = np.asarray(align_t1_to_flair(flair, moved, "auto", threads=1).dataobj)
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        global_one = np.asarray(align_t1_to_flair(flair, moved, "auto").dataobj)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
    np.testing.assert_array_equal(pinned, global_one)


def test_align_never_refuses_a_t1_on_another_grid(clean_subject):
    flair, t1, _ = clean_subject
    moved = nib.Nifti1Image(voxels(t1), rigid(0, [5.0, 0, 0]) @ t1.affine)
    with pytest.raises(InputError, match="affine"):
        align_t1_to_flair(flair, moved, "never")


# --------------------------------------------------------------------------------------------------
# Requantization and head mask.


def test_requantize_window_and_background():
    rng = np.random.default_rng(0)
    data = rng.normal(1000, 200, (30, 30, 6)).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    mask[5:25, 5:25] = True
    data[~mask] = 5000.0  # bright junk outside the head must not matter
    out = requantize_array(data, mask, 2.0, 98.0, "percentile")
    assert out.dtype == np.uint8 and out.shape == data.shape
    assert not out[~mask].any()
    assert out[mask].min() >= 1
    low, high = np.percentile(data[mask], [2.0, 98.0])
    inside = data[mask]
    assert (out[mask][inside <= low] == 1).all()
    assert (out[mask][inside >= high] == 255).all()
    # About 2 % of the head at each end of the window, and a monotonic mapping in between.
    assert abs(np.mean(out[mask] == 255) - 0.02) < 0.01
    order = np.argsort(inside)
    assert (np.diff(out[mask][order].astype(int)) >= 0).all()


def head_of_tissues(scale, fat, seed=0):
    """A 'head' of dark CSF (15 %), tissue (80 %), bright lesions (3 %) and scalp fat (2 %) at ``fat`` x tissue."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(4, size=(40, 40, 8), p=[0.15, 0.80, 0.03, 0.02])
    level = np.array([0.2, 1.0, 1.6, fat])[kind]
    data = (scale * level * rng.normal(1, 0.04, kind.shape)).astype(np.float32)
    return data, kind


@pytest.mark.parametrize("scale", [1.0, 370.0])
def test_tissue_window_puts_tissue_at_mid_grey_whatever_the_scalp(scale):
    """The tissue window: tissue ~128 and lesions at the same grey level whether the scalp fat is
    1.5x or 4x as bright as tissue; the percentile window moves both with the fat."""
    levels = {}
    for fat in (1.5, 4.0):
        data, kind = head_of_tissues(scale, fat)
        mask = np.ones(data.shape, bool)
        tissue = requantize_array(data, mask, window="tissue")
        percentile = requantize_array(data, mask, window="percentile")
        levels[fat] = [float(np.median(v[kind == k])) for v in (tissue, percentile) for k in (1, 2)]
    (t_tissue, t_lesion, p_tissue, p_lesion), (t_tissue4, t_lesion4, p_tissue4, p_lesion4) = levels[1.5], levels[4.0]
    assert abs(t_tissue - 128) <= 6 and abs(t_tissue4 - 128) <= 6
    assert abs(t_lesion - t_lesion4) <= 3 and 200 <= t_lesion <= 235
    assert p_tissue - p_tissue4 > 40 and p_lesion - p_lesion4 > 60  # the percentile window follows the fat


def test_window_sidecars_training_and_inference_agree(tmp_path):
    """The window is read back from the 8-bit volumes' sidecars: one window for a training set, and a
    model refuses volumes of the other window (an old model's are percentile)."""
    from wmhflow.io import save_like
    from wmhflow.preprocess.quantize import describe, inputs_window, require_model_window, volume_window

    data, _ = head_of_tissues(1.0, 2.0)
    like = nib.Nifti1Image(data, np.eye(4))
    paths = {}
    for window in ("tissue", "percentile"):
        paths[window] = save_like(
            requantize_array(data, window=window),
            like,
            tmp_path / f"{window}.nii.gz",
            np.uint8,
            sources=[tmp_path / "n4.nii.gz"],
            **describe(window, 0.5, 99.8),
        )
    bare = save_like(requantize_array(data), like, tmp_path / "bare.nii.gz", np.uint8)
    assert volume_window(paths["tissue"]) == "tissue" and volume_window(bare) is None
    assert inputs_window([paths["tissue"], bare, None]) == "tissue"
    with pytest.raises(InputError, match="percentile.nii.gz: requantized with the percentile window, but .*tissue"):
        inputs_window([paths["tissue"], paths["percentile"]])
    require_model_window({"requantize": "tissue"}, "m.pt", "tissue", paths["tissue"])
    require_model_window({"requantize": "unknown"}, "m.pt", "percentile", paths["percentile"])
    with pytest.raises(
        InputError,
        match=r"tissue.nii.gz: .*model old.pt was trained on percentile-window .*"
        r"requantize.window: percentile",
    ):
        require_model_window({}, "old.pt", "tissue", paths["tissue"])


def test_requantize_constant_and_empty():
    assert not requantize_array(np.zeros((8, 8, 3), np.float32)).any()
    data = np.full((8, 8, 3), 7.0, np.float32)
    out = requantize_array(data, np.ones(data.shape, bool))
    assert out.dtype == np.uint8 and (out == 1).all()


def test_head_mask_on_a_synthetic_head(small_cohort):
    _, table = small_cohort
    for flair_path, ref_path in zip(table["flair"][:3], table["reference"][:3]):
        flair = voxels(load_nifti(flair_path))
        labels = np.asarray(nib.load(ref_path).dataobj)
        mask = head_mask_array(flair)
        assert mask.dtype == bool and mask.shape == flair.shape
        assert mask[labels > 0].all()  # every lesion is in the head
        assert 0.1 < mask.mean() < 0.8
        assert not mask[0, 0, :].any() and not mask[-1, -1, :].any()  # corners are air
        assert ndimage.label(mask)[1] == 1
        # Brighter inside than outside.
        assert flair[mask].mean() > 5 * flair[~mask].mean()


def test_head_mask_keeps_a_head_touching_the_field_of_view():
    # An ellipsoidal "head" wider than the grid in-plane: the mask must reach the grid's edges.
    i, j, k = np.meshgrid(np.arange(40), np.arange(50), np.arange(6), indexing="ij")
    head = ((i - 19.5) / 22) ** 2 + ((j - 24.5) / 20) ** 2 <= 1.0
    rng = np.random.default_rng(1)
    data = np.where(head, 500.0, 0.0) + rng.normal(0, 5, head.shape)
    mask = head_mask_array(np.abs(data).astype(np.float32))
    assert mask[head].mean() > 0.99
    assert mask[0, 20:30].all() and mask[-1, 20:30].all()


def test_head_mask_of_a_blank_image():
    assert not head_mask_array(np.zeros((10, 10, 4), np.float32)).any()
    assert not head_mask_array(np.full((10, 10, 4), 3.0, np.float32)).any()


# --------------------------------------------------------------------------------------------------
# CLI verbs on real NIfTI files.

AFFINE = np.array([[-0.9, 0.0, 0.0, 60.0], [0.0, 1.1, 0.0, -80.0], [0.0, 0.0, 3.0, -20.0], [0, 0, 0, 1]])


def run_cli(*args):
    return subprocess.run([*wmhflow_command(), *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory, small_cohort):
    """A realistic small FLAIR/T1 pair (float and 8-bit) plus bad files, all real NIfTI."""
    _, table = small_cohort
    root = tmp_path_factory.mktemp("cli")
    flair = load_nifti(table["flair"][1])
    t1 = load_nifti(table["t1"][1])
    data = voxels(flair)
    files = {
        "flair": write_nifti(root / "flair.nii.gz", data, AFFINE, np.float32),
        "t1": write_nifti(root / "t1.nii.gz", voxels(t1), AFFINE, np.float32),
        "quant": write_nifti(root / "quant.nii.gz", requantize_array(data), AFFINE, np.uint8),
        "missing": root / "missing.nii.gz",
        "4d": write_nifti(root / "four_d.nii.gz", np.ones((8, 8, 4, 2), np.float32), AFFINE),
    }
    nan = data.copy()
    nan[3, 4, 5] = np.nan
    files["nan"] = write_nifti(root / "nan.nii.gz", nan, AFFINE, np.float32)
    return root, files


VERB_CASES = {
    "tophat": (["--input", "{in}", "--output", "{out}", "--area", "25", "--connectivity", "1"], "quant"),
    "requantize": (
        ["--input", "{in}", "--output", "{out}", "--role", "FLAIR", "--low-pct", "0.5", "--high-pct", "99.8"],
        "flair",
    ),
    "bias-correct": (
        [
            "--input",
            "{in}",
            "--output",
            "{out}",
            "--role",
            "FLAIR",
            "--shrink",
            "4",
            "4",
            "1",
            "--iterations",
            "10",
            "10",
            "--control-points",
            "4",
            "--threads",
            "2",
        ],
        "flair",
    ),
    "align-t1": (["--flair", "{flair}", "--t1", "{in}", "--output", "{out}", "--mode", "auto", "--threads", "2"], "t1"),
}


def verb_args(verb, inp, out, files):
    template, _ = VERB_CASES[verb]
    return [a.format(**{"in": inp, "out": out, "flair": files["flair"]}) for a in template]


@pytest.mark.parametrize("verb", list(VERB_CASES))
def test_cli_verb_writes_on_the_input_grid(verb, cli_inputs):
    root, files = cli_inputs
    source = files[VERB_CASES[verb][1]]
    out = root / f"out-{verb}.nii.gz"
    run = run_cli(verb, *verb_args(verb, source, out, files))
    assert run.returncode == 0, run.stderr
    img, like = nib.load(str(out)), nib.load(str(source))
    assert img.shape == like.shape
    np.testing.assert_allclose(img.affine, like.affine, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-5)
    data = np.asarray(img.dataobj)
    assert np.all(np.isfinite(data))
    if verb in ("tophat", "requantize"):
        assert img.get_data_dtype() == np.uint8
    if verb == "tophat":
        quant = np.asarray(like.dataobj)
        np.testing.assert_array_equal(data, quant - skimage_slices(quant, 25, 1))
    if verb == "align-t1":  # same grid: passed through
        np.testing.assert_allclose(data, np.asarray(like.dataobj), rtol=1e-6)
    assert sorted(p.name for p in root.glob(f".out-{verb}*")) == []  # no temporary file left


BAD_INPUTS = {"missing": "does not exist", "4d": "3D volume", "nan": "NaN"}


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
@pytest.mark.parametrize("verb", list(VERB_CASES))
def test_cli_verb_bad_input_is_one_line_and_exit_2(verb, bad, cli_inputs):
    root, files = cli_inputs
    out = root / f"bad-{verb}-{bad}.nii.gz"
    run = run_cli(verb, *verb_args(verb, files[bad], out, files))
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"wmhflow {verb}: error: {files[bad]}: "), lines[0]
    assert BAD_INPUTS[bad] in lines[0]
    assert not out.exists()
    assert not list(root.glob(f".bad-{verb}-{bad}*"))


def test_cli_tophat_refuses_a_float_image(cli_inputs):
    root, files = cli_inputs
    out = root / "tophat-float.nii.gz"
    run = run_cli("tophat", "--input", files["flair"], "--output", out)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert "8-bit" in run.stderr and not out.exists()


def test_cli_requantize_mask_from_another_grid_and_bad_n4_settings(cli_inputs, tmp_path):
    root, files = cli_inputs
    other = write_nifti(tmp_path / "other.nii.gz", np.ones((8, 8, 4), np.float32), AFFINE)
    out = tmp_path / "quant.nii.gz"
    run = run_cli("requantize", "--input", files["flair"], "--output", out, "--mask-from", other)
    assert run.returncode == 2 and run.stderr.startswith(f"wmhflow requantize: error: {other}: ")
    assert not out.exists()
    run = run_cli("bias-correct", "--input", files["flair"], "--output", out, "--control-points", "3")
    assert run.returncode == 2 and "control-points" in run.stderr and not out.exists()


def test_cli_align_never_with_a_t1_on_another_grid(cli_inputs, tmp_path):
    root, files = cli_inputs
    t1 = write_nifti(
        tmp_path / "t1_other.nii.gz", voxels(load_nifti(files["t1"])), rigid(0, [4, 0, 0]) @ AFFINE, np.float32
    )
    out = tmp_path / "aligned.nii.gz"
    run = run_cli("align-t1", "--flair", files["flair"], "--t1", t1, "--output", out, "--mode", "never")
    assert run.returncode == 2
    assert run.stderr.startswith(f"wmhflow align-t1: error: {t1}: ")
    assert not out.exists()
