"""Where WMH can be, from an affine registration of the MNI152 template: the brain, and within it the
part above the tentorium; for the post-processing rule ``segment.restrict_to``.

Why: the depth rule (``min_depth_mm``) knows only the head. Deep inside the head but outside the brain,
the pituitary, the sphenoid sinus and the clivus look bright on some scanners' FLAIR, and a 2D network
fires there: on the accuracy benchmark's validation scanner those were the largest false positives
(144-198 voxels centred at MNI (0, 2, -29) mm), while every true lesion component lay inside the brain.
``supratentorial`` also leaves out the brainstem and cerebellum, where the pons often looks bright and
SVD WMH burden is not read (BIANCA and UBO Detector restrict it the same way, with a template registered
to the subject).

The template and its brain mask are nilearn's MNI152 2009 (in its wheel: offline on CI and clusters).
The tentorium is defined geometrically in MNI millimetres because the installed packages carry no
labelled atlas (nilearn's atlases need a download). The template is registered to the subject's 8-bit
T1 (or FLAIR) with SimpleITK: an affine, Mattes mutual information, evaluated inside the template's
brain only (the subject still has its skull and scalp). A registration whose scale is implausible is
refused (:class:`RegistrationImplausible`), so the caller keeps every component rather than dropping
lesions on a misplaced region.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..io import itk_threads, to_sitk
from .align import mattes_registration

log = logging.getLogger(__name__)

RESTRICT_TO = ("head", "brain", "supratentorial")
#: the affine's scale per axis must lie in this range (a head is 0.75-1.3 x the template's size)
PLAUSIBLE_SCALE = (0.7, 1.4)
#: a registration that puts the brain partly outside the head is wrong (1.000 on the benchmark's subjects)
MIN_BRAIN_IN_HEAD = 0.97
TEMPLATE_MM = 2
_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


class RegistrationImplausible(RuntimeError):
    """The template registration gave an affine no head can have (the rule is then not applied)."""


def infratentorial_mni(x, y, z) -> np.ndarray:
    """True where MNI152 coordinates (mm, RAS) lie in the brainstem or the cerebellum.

    Read off the MNI152 2009 template's sagittal slices: the tentorium runs ~5 mm below the straight
    sinus at the midline (z = -5 mm at y = -60, falling ~3.5 mm per 10 mm towards the torcula) and
    drops ~6 mm per 10 mm laterally (z ~ -20 mm at x = 25 mm), over the cerebellum behind y = -40 mm;
    the brainstem below the midbrain (z < -12 mm) is a midline box in front of it. The temporal lobes,
    lateral and in front of y = -40 mm, are outside both parts.
    """
    x, y, z = (np.asarray(a, np.float32) for a in (x, y, z))
    tentorium = -5.0 - 0.6 * np.abs(x) + 0.35 * np.minimum(0.0, y + 60.0)
    cerebellum = (y < -40.0) & (z < tentorium)
    brainstem = (np.abs(x) < 15.0) & (y > -45.0) & (y < -5.0) & (z < -12.0)
    return cerebellum | brainstem


@lru_cache(maxsize=1)
def _template():
    """MNI152 2009 T1 (nilearn's wheel, offline) and its brain mask on a 2 mm grid, as SimpleITK images,
    and the 1 mm brain mask (bool array, affine) the region is read from.

    2 mm: half the registration's time of the 1 mm template for the same region (measured on three
    synthetic subjects: region Dice 0.92-0.99 between the two).
    """
    import SimpleITK as sitk
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    brain = datasets.load_mni152_brain_mask(resolution=1)
    t1 = to_sitk(nib.Nifti1Image(np.asarray(t1.dataobj, np.float32), t1.affine))
    mask = to_sitk(nib.Nifti1Image((np.asarray(brain.dataobj) > 0.5).astype(np.uint8), brain.affine), dtype=np.uint8)
    size = [n // TEMPLATE_MM for n in t1.GetSize()]
    identity = sitk.Transform()
    t1 = sitk.Resample(t1, size, identity, sitk.sitkLinear, t1.GetOrigin(), [float(TEMPLATE_MM)] * 3, t1.GetDirection())
    mask = sitk.Resample(sitk.Cast(mask, sitk.sitkUInt8), t1, identity, sitk.sitkNearestNeighbor)
    return t1, mask, (np.asarray(brain.dataobj) > 0.5, brain.affine)


def register_template(volume: np.ndarray, affine: np.ndarray, threads: int = 1, seed: int = 1):
    """(4x4 RAS affine mapping the subject's world mm to MNI mm, seconds, metric) for a subject volume.

    ``threads``: ITK's threads (the transform depends on them, so they are pinned, as N4's are).
    """
    import SimpleITK as sitk

    started = time.perf_counter()
    template, brain, _ = _template()
    subject = to_sitk(nib.Nifti1Image(np.asarray(volume, np.float32), affine))
    with itk_threads(threads):
        # template = fixed, so that its brain mask restricts the metric to the brain (the subject keeps
        # skull, scalp and neck); the result maps template points to subject points
        initial = sitk.CenteredTransformInitializer(
            template, subject, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.GEOMETRY
        )
        reg = mattes_registration(0.05, seed, 150, (4.0, 2.0, 1.0), fixed_mask=brain)
        reg.SetInitialTransform(initial, inPlace=False)
        transform = reg.Execute(template, subject)
    metric = reg.GetMetricValue()
    affine_t = sitk.AffineTransform(sitk.CompositeTransform(transform).GetNthTransform(0))
    # template (LPS) -> subject (LPS): q = A (p - c) + c + t; invert and turn into RAS on both sides
    a = np.array(affine_t.GetMatrix()).reshape(3, 3)
    c, t = np.array(affine_t.GetCenter()), np.array(affine_t.GetTranslation())
    template_to_subject_lps = np.eye(4)
    template_to_subject_lps[:3, :3] = a
    template_to_subject_lps[:3, 3] = c + t - a @ c
    flip = np.diag([*_RAS_TO_LPS, 1.0])
    subject_to_mni = flip @ np.linalg.inv(template_to_subject_lps) @ flip
    scales = np.linalg.svd(a, compute_uv=False)
    if scales.min() < PLAUSIBLE_SCALE[0] or scales.max() > PLAUSIBLE_SCALE[1]:
        raise RegistrationImplausible(
            f"template registration scales {np.round(scales, 2).tolist()} outside {list(PLAUSIBLE_SCALE)}"
        )
    return subject_to_mni, time.perf_counter() - started, float(metric)


def excluded_region(volume: np.ndarray, affine: np.ndarray, restrict_to: str, threads: int = 1):
    """(bool array on the volume's grid: where no WMH can be, record for the sidecar) for ``restrict_to``
    brain (outside the template's brain mask) or supratentorial (also the brainstem and cerebellum)."""
    if restrict_to not in RESTRICT_TO[1:]:
        raise ValueError(f"restrict_to {restrict_to!r} is not one of {RESTRICT_TO[1:]}")
    subject_to_mni, seconds, metric = register_template(volume, affine, threads)
    ijk = np.indices(volume.shape[:3], dtype=np.float32).reshape(3, -1)
    to_mni = (subject_to_mni @ np.asarray(affine, np.float64)).astype(np.float32)
    mni = to_mni[:3, :3] @ ijk + to_mni[:3, 3:4]
    brain, brain_affine = _template()[2]
    to_mask = np.linalg.inv(brain_affine)
    index = np.rint(to_mask[:3, :3] @ mni + to_mask[:3, 3:4]).astype(np.int64)
    within = np.all((index >= 0) & (index < np.array(brain.shape)[:, None]), axis=0)
    in_brain = np.zeros(index.shape[1], bool)
    in_brain[within] = brain[index[0, within], index[1, within], index[2, within]]
    in_brain = in_brain.reshape(volume.shape[:3])
    head = np.asarray(volume) > 0  # 8-bit volumes are 0 outside the head; fill dark CSF per slice
    for k in range(head.shape[2]):
        head[:, :, k] = ndimage.binary_fill_holes(head[:, :, k])
    brain_in_head = float(head[in_brain].mean()) if in_brain.any() else 0.0
    if brain_in_head < MIN_BRAIN_IN_HEAD:
        raise RegistrationImplausible(
            f"only {brain_in_head:.0%} of the registered template brain lies inside the head "
            f"(at least {MIN_BRAIN_IN_HEAD:.0%} expected)"
        )
    excluded = ~in_brain.ravel()
    if restrict_to == "supratentorial":
        excluded |= infratentorial_mni(*mni)
    excluded = excluded.reshape(volume.shape[:3])
    log.info(
        "MNI152 template registered in %.1f s (Mattes MI %.3f): %d voxels outside the %s",
        seconds,
        metric,
        int(excluded.sum()),
        restrict_to,
    )
    record = {
        "TemplateRegistrationSeconds": round(seconds, 2),
        "TemplateMetric": round(metric, 4),
        "TemplateBrainInHead": round(brain_in_head, 4),
    }
    return excluded, record
