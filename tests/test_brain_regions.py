"""The template post-processing rule (segment.restrict_to): the MNI regions, the template registration,
the component rule and what a user sees in the mask's sidecar."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import write_nifti

from wmhflow.fcn import infer
from wmhflow.fcn.model import build_model, save_model
from wmhflow.fcn.postprocess import clean_mask
from wmhflow.preprocess import brain_regions as it


def test_region_covers_brainstem_and_cerebellum_but_not_cerebral_white_matter():
    inside = {"pons": (0, -25, -30), "medulla": (0, -40, -50), "cerebellum": (20, -65, -35), "vermis": (0, -60, -20)}
    outside = {
        "periventricular WM": (25, -20, 20),
        "centrum semiovale": (-25, 0, 35),
        "temporal WM": (40, -10, -25),
        "occipital WM": (20, -85, 5),
        "thalamus": (5, -20, 0),
        "frontal horn cap": (-15, 20, 5),
    }
    for name, point in inside.items():
        assert it.infratentorial_mni(*point), name
    for name, point in outside.items():
        assert not it.infratentorial_mni(*point), name


def template_subject(world_to_mni, shape=(80, 96, 40), zooms=(2.0, 2.0, 4.0)):
    """The MNI template seen by a scanner whose world is ``world_to_mni`` away: (8-bit volume, affine)."""
    from nilearn import datasets
    from scipy import ndimage

    template = datasets.load_mni152_template(resolution=1)
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) / 2 * np.array(zooms) + [0.0, -18.0, 18.0]
    vox_to_template = np.linalg.inv(template.affine) @ world_to_mni @ affine
    data = ndimage.affine_transform(
        np.asarray(template.dataobj, np.float32), vox_to_template[:3, :3], vox_to_template[:3, 3], shape, order=1
    )
    return np.clip(data / data.max() * 255, 0, 255).astype(np.uint8), affine


def rotation_z(degrees):
    a = np.deg2rad(degrees)
    m = np.eye(4)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return m


@pytest.fixture(scope="module")
def moved_subject():
    world_to_mni = rotation_z(8.0) @ np.diag([1.1, 1.05, 0.95, 1.0])
    world_to_mni[:3, 3] = [4.0, -6.0, 5.0]
    volume, affine = template_subject(world_to_mni)
    return volume, affine, world_to_mni


def test_template_registration_recovers_a_known_affine(moved_subject):
    volume, affine, world_to_mni = moved_subject
    found, seconds, _ = it.register_template(volume, affine)
    brain = np.argwhere(volume > 60)[::40]
    world = nib.affines.apply_affine(affine, brain)
    error = np.linalg.norm(
        nib.affines.apply_affine(found, world) - nib.affines.apply_affine(world_to_mni, world), axis=1
    )
    assert error.mean() < 2.5 and np.percentile(error, 95) < 4.0, (error.mean(), np.percentile(error, 95))


def test_components_mostly_in_the_region_are_removed():
    mask = np.zeros((30, 30, 10), bool)
    mask[2:6, 2:6, 2:4] = True  # all inside
    mask[10:14, 10:14, 2:4] = True  # a quarter inside: kept
    mask[20:24, 20:24, 2:4] = True  # outside
    region = np.zeros_like(mask)
    region[:8, :8] = True
    region[10:14, 10:11] = True
    cleaned, report = clean_mask(mask, (1.0, 1.0, 1.0), excluded=region)
    assert not cleaned[2:6, 2:6].any() and cleaned[10:14, 10:14, 2:4].all() and cleaned[20:24, 20:24, 2:4].all()
    assert report["removed_outside_region"] == 1 and report["removed_voxels"] == 32
    assert "removed_outside_region" not in clean_mask(mask, (1.0, 1.0, 1.0))[1]


def test_an_implausible_registration_removes_nothing_and_says_so(moved_subject, monkeypatch):
    volume, affine, _ = moved_subject
    monkeypatch.setattr(it, "PLAUSIBLE_SCALE", (1.5, 2.0))
    region, record = infer.excluded_region("brain", {"flair": volume, "t1": volume}, affine)
    assert region is None and record["RestrictTo"].startswith("brain: not applied (template registration scales")
    assert infer.excluded_region("head", {"flair": volume}, affine) == (None, {"RestrictTo": "head"})


def test_each_restriction_removes_its_blobs_in_the_written_mask(tmp_path, moved_subject):
    """The real write path of ``wmhflow infer`` / ``infer-batch`` (after the FCN) on a crafted probability
    map, with the template registered to the subject; the sidecar says what was done."""
    volume, affine, world_to_mni = moved_subject
    to_voxel = np.linalg.inv(world_to_mni @ affine)
    ijk = np.indices(volume.shape).reshape(3, -1).T
    world = nib.affines.apply_affine(affine, ijk)
    prob = np.zeros(volume.shape, np.float32)
    blobs = {}
    for name, mni in (
        ("periventricular", (25.0, -20.0, 20.0)),
        ("pons", (0.0, -25.0, -30.0)),
        ("skull base", (0.0, 12.0, -48.0)),  # below the frontal lobes: sphenoid sinus, outside the brain
    ):
        centre = nib.affines.apply_affine(affine, nib.affines.apply_affine(to_voxel, mni))
        blobs[name] = (np.linalg.norm(world - centre, axis=1) <= 7.0).reshape(volume.shape)
        prob[blobs[name]] = 0.9
    model = save_model(tmp_path / "model.pt", build_model(16, "none"), {"name": "t", "channels": "flair,t1,t1"})
    flair = write_nifti(tmp_path / "flair.nii.gz", volume, affine, np.uint8)
    settings = {
        **dict(device="cpu", precision="fp32", batch_size=8, crop_margin=16, tta="none", threshold=0.5),
        **dict(min_lesion_mm3=0.0, min_depth_mm=0.0),
    }
    kept = {}
    for setting in ("head", "brain", "supratentorial"):
        out = tmp_path / setting
        infer.write_subject(
            {"prob": prob, "seconds": 0.0, "flip_axis": 0},
            [{"name": "t", "channels": "flair,t1,t1"}],
            [model],
            {"flair": volume, "t1": volume},
            nib.load(str(flair)),
            [str(flair)],
            out / "p.nii.gz",
            out / "m.nii.gz",
            dict(settings, restrict_to=setting),
        )
        mask = np.asarray(nib.load(str(out / "m.nii.gz")).dataobj).astype(bool)
        assert all(mask[b].all() or not mask[b].any() for b in blobs.values())  # whole components go
        kept[setting] = {name for name, b in blobs.items() if mask[b].all()}
        sidecar = json.loads((out / "m.json").read_text())
        assert sidecar["RestrictTo"] == setting
        if setting != "head":
            assert sidecar["TemplateRegistrationSeconds"] > 0
            assert sidecar["PostProcessing"]["removed_outside_region"] == 3 - len(kept[setting])
    assert kept == {
        "head": {"periventricular", "pons", "skull base"},
        "brain": {"periventricular", "pons"},
        "supratentorial": {"periventricular"},
    }


def test_a_registration_that_puts_the_brain_outside_the_head_removes_nothing(moved_subject, monkeypatch):
    """A transform off by 30 mm (a registration gone wrong on an odd field of view) leaves the template
    brain partly outside the head: refused, rather than removing true lesions on a misplaced region."""
    volume, affine, world_to_mni = moved_subject
    shifted = world_to_mni.copy()
    shifted[2, 3] += 30.0
    monkeypatch.setattr(it, "register_template", lambda *args, **kwargs: (shifted, 0.1, -1.0))
    with pytest.raises(it.RegistrationImplausible, match="of the registered template brain lies inside the head"):
        it.excluded_region(volume, affine, "brain")
    region, record = infer.excluded_region("supratentorial", {"flair": volume, "t1": volume}, affine)
    assert region is None and record["RestrictTo"].startswith("supratentorial: not applied (only ")
    monkeypatch.setattr(it, "register_template", lambda *args, **kwargs: (world_to_mni, 0.1, -1.0))
    region, record = it.excluded_region(volume, affine, "brain")
    assert record["TemplateBrainInHead"] >= it.MIN_BRAIN_IN_HEAD and region[volume > 100].mean() < 0.01


def test_flair_only_channel_sets_register_the_template_to_the_flair(moved_subject):
    """FLAIR-only models get an empty T1 volume: the template then goes onto the FLAIR."""
    volume, affine, _ = moved_subject
    region, record = infer.excluded_region("brain", {"flair": volume, "t1": np.zeros_like(volume)}, affine)
    assert record["RestrictTo"] == "brain" and region is not None and region[volume > 100].mean() < 0.05
