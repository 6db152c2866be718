"""Realistic synthetic cohorts in the WMH-challenge, BIDS or subjects-TSV layout (demo and tests).

Anatomy comes from the MNI152 2009 template and its GM/WM maps that nilearn ships inside its wheel
(nothing is downloaded). Per subject: a random rigid-plus-scaling pose; WMH as periventricular caps
and bands plus deep punctate lesions, with a lesion load that varies from almost none to heavy;
sometimes an "other pathology" region (label 2, a lacunar infarct). FLAIR and T1 intensities follow
tissue signal levels (FLAIR: CSF dark, WM darker than GM, WMH bright; T1: WM bright, WMH hypointense),
then each site applies its own contrast scale, smooth multiplicative bias field and Rician noise on
its own grid, as the three challenge sites differ.

Domain-shifted sites (:data:`SHIFTED_SITES`, for testing generalisation to scanners never seen in
training) change what the three challenge-like sites share: tissue contrast from their own sequence
parameters (TR/TE/TI through the spin-echo / inversion-recovery signal equations and tissue T1, T2, PD
at their field strength) instead of the fixed signal table, thick slices (a Gaussian slice profile
wider than the slice spacing), fainter WMH (lesion tissue only partly WMH-like) with another size and
count distribution, and a smooth non-linear anatomy warp on top of the pose. Their extra random draws
come from a second random stream, so the three original sites give the same subjects voxel for voxel
as before those options existed.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Site:
    name: str  # folder name in the challenge layout (may be nested)
    first_id: int  # challenge-like numbering: ids unique across sites
    shape: tuple  # FLAIR grid (the third axis is the slice axis)
    spacing: tuple  # mm
    scale: float  # scanner intensity scale
    noise: float  # Rician noise sigma, relative to WM signal
    bias: float  # bias field amplitude (log units)
    lesion_contrast: float  # FLAIR WMH / WM signal ratio
    # Domain-shift options; the defaults are the challenge-like sites' behaviour.
    sequence: Sequence | None = None  # None: the fixed SIGNAL table
    slice_thickness: float | None = None  # mm; None: the slice spacing (no extra slice profile)
    lesion_strength: float = 1.0  # 0..1: how far lesion tissue goes from WM towards full WMH
    lesion_size: float = 1.0  # scales deep lesion radii and the periventricular band width
    lesion_count: float = 1.0  # scales the number of deep lesions
    warp_mm: float = 0.0  # amplitude of a smooth non-linear anatomy warp
    pose_degrees: float = 4.0
    pose_scale: float = 0.06


@dataclass(frozen=True)
class Sequence:
    """Acquisition parameters (ms) of the FLAIR (inversion recovery) and the T1-weighted image.

    ``t1_ti`` = 0 means a spin-echo T1 (1.5T style); > 0 an inversion-prepared gradient echo (MPRAGE-like).
    """

    field_t: float = 3.0
    flair_tr: float = 9000.0
    flair_te: float = 120.0
    flair_ti: float = 2500.0
    t1_tr: float = 2000.0
    t1_te: float = 3.0
    t1_ti: float = 900.0


SITES = (
    Site("Utrecht", 0, (240, 240, 48), (0.96, 0.96, 3.0), 900.0, 0.035, 0.25, 1.9),
    Site("Singapore", 50, (256, 232, 48), (1.0, 1.0, 3.0), 1600.0, 0.03, 0.20, 2.0),
    Site("Amsterdam/GE3T", 100, (132, 256, 83), (1.2, 0.98, 3.0), 350.0, 0.045, 0.30, 1.7),
)

# Relative signal per tissue: (FLAIR, T1). Levels follow typical 3T FLAIR / T1-weighted contrasts.
SIGNAL = {
    "wm": (0.55, 1.00),
    "gm": (0.78, 0.62),
    "csf": (0.08, 0.22),
    "scalp": (0.60, 0.85),
    "skull": (0.05, 0.08),
}
LESION_T1 = 0.62  # WMH are hypointense on T1: between GM and WM

#: Tissue relaxation times T1, T2 (ms) and proton density at 1.5 T and 3 T (typical literature values;
#: WMH: longer T1 and T2 than white matter, gliosis and demyelination).
TISSUE = {
    1.5: {
        "wm": (650, 75, 0.69),
        "gm": (1050, 95, 0.80),
        "csf": (4000, 2000, 1.0),
        "wmh": (1050, 160, 0.80),
        "scalp": (260, 80, 0.90),
        "skull": (300, 30, 0.05),
    },
    3.0: {
        "wm": (830, 80, 0.69),
        "gm": (1330, 110, 0.80),
        "csf": (4000, 2000, 1.0),
        "wmh": (1400, 180, 0.80),
        "scalp": (380, 100, 0.90),
        "skull": (400, 30, 0.05),
    },
}

#: Scanners never seen in training: other vendors' sequences, field strengths, grids and lesion looks.
#: 'Shifted15T' is the held-out test site of the accuracy benchmark (never used for any choice);
#: 'Shifted3T' is a second shifted site, the one to validate choices on.
SHIFTED_SITES = (
    # 1.5 T, spin-echo T1 (low GM/WM contrast), thick 5 mm slices at 4 mm spacing, coarse in-plane
    # grid, strong bias and noise, faint and smaller WMH, a different head shape.
    Site(
        "Shifted15T",
        200,
        (192, 192, 36),
        (1.2, 1.2, 4.0),
        2500.0,
        0.06,
        0.40,
        1.0,
        Sequence(1.5, 8000.0, 100.0, 2000.0, 500.0, 15.0, 0.0),
        5.0,
        0.6,
        0.7,
        1.3,
        3.0,
        7.0,
        0.10,
    ),
    # 3 T, another vendor's FLAIR timing and an MPRAGE-like T1, near-isotropic in plane, 4 mm
    # slices at 3.5 mm, moderate noise, somewhat fainter lesions.
    Site(
        "Shifted3T",
        250,
        (224, 256, 42),
        (1.05, 0.9, 3.5),
        600.0,
        0.05,
        0.35,
        1.0,
        Sequence(3.0, 11000.0, 140.0, 2800.0, 2300.0, 3.0, 1000.0),
        4.0,
        0.75,
        0.85,
        1.2,
        2.5,
        6.0,
        0.08,
    ),
)
ALL_SITES = SITES + SHIFTED_SITES


def site_by_name(name: str) -> Site:
    for site in ALL_SITES:
        if site.name == name:
            return site
    raise ValueError(f"unknown synthetic site {name!r} (one of {', '.join(s.name for s in ALL_SITES)})")


def sequence_signals(sequence: Sequence, lesion_strength: float = 1.0) -> dict:
    """Relative (FLAIR, T1) signal per tissue and for WMH from the signal equations, WM T1 = 1.

    FLAIR: inversion recovery PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2). T1-weighted: the same
    with its own TI (MPRAGE-like), or spin echo PD (1 - exp(-TR/T1)) exp(-TE/T2) when TI = 0. Faint
    lesions: lesion tissue T1, T2 and PD part-way (``lesion_strength``) from WM to WMH.
    """
    table = dict(TISSUE[sequence.field_t])
    wm, wmh = np.array(table["wm"], float), np.array(table["wmh"], float)
    table["lesion"] = tuple(wm + lesion_strength * (wmh - wm))

    def ir(t1, t2, pd, tr, te, ti):
        return pd * abs(1 - 2 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)

    def t1w(t1, t2, pd):
        if sequence.t1_ti > 0:
            return ir(t1, t2, pd, sequence.t1_tr, sequence.t1_te, sequence.t1_ti)
        return pd * (1 - np.exp(-sequence.t1_tr / t1)) * np.exp(-sequence.t1_te / t2)

    flair = {k: ir(*v, sequence.flair_tr, sequence.flair_te, sequence.flair_ti) for k, v in table.items()}
    t1 = {k: t1w(*v) for k, v in table.items()}
    # keep the challenge-like sites' scale: FLAIR WM = SIGNAL's 0.55, T1 WM = 1
    return {k: (0.55 * flair[k] / flair["wm"], t1[k] / t1["wm"]) for k in table}


@lru_cache(maxsize=1)
def _atlas():
    """MNI152 2009 tissue maps at 1 mm (from nilearn's wheel) plus derived CSF, ventricles and head."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32) > 0.5
    total = gm + wm
    csf = np.clip(brain.astype(np.float32) - total, 0, 1)
    scale = np.maximum(total + csf, 1.0)
    gm, wm, csf = gm / scale, wm / scale, csf / scale
    # Lateral ventricles: the large CSF body near the centre of the brain.
    centre = np.zeros(brain.shape, bool)
    centre[70:130, 80:170, 75:125] = True
    ventricles, _ = ndimage.label((csf > 0.6) & centre)
    sizes = np.bincount(ventricles.ravel())
    sizes[0] = 0
    ventricles = np.isin(ventricles, np.argsort(sizes)[-2:])
    dist_ventricle = ndimage.distance_transform_edt(~ventricles).astype(np.float32)
    head_dist = ndimage.distance_transform_edt(~brain).astype(np.float32)
    skull = ((head_dist > 0) & (head_dist <= 5)).astype(np.float32)
    scalp = ((head_dist > 5) & (head_dist <= 10)).astype(np.float32)
    return {
        "affine": t1.affine,
        "gm": gm,
        "wm": wm,
        "csf": csf,
        "skull": skull,
        "scalp": scalp,
        "dist_ventricle": dist_ventricle,
    }


def _grid_affine(shape, spacing):
    """A RAS grid centred on the MNI brain centre, with the given voxel spacing."""
    affine = np.diag([*spacing, 1.0])
    centre = np.array([0.0, -18.0, 18.0])  # roughly the centre of the MNI brain box (mm)
    affine[:3, 3] = centre - (np.array(shape) - 1) / 2 * np.array(spacing)
    return affine


def _rotation(rng, degrees):
    ax, ay, az = np.deg2rad(rng.uniform(-degrees, degrees, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _sample(volume, atlas_affine, world_to_atlas, grid_affine, shape, order=1, warp=None):
    """Sample an atlas-space volume on a target grid through a world-space transform.

    ``warp``: an optional displacement (3, *shape) in atlas voxels added to the affine mapping.
    """
    vox_to_atlas_vox = np.linalg.inv(atlas_affine) @ world_to_atlas @ grid_affine
    if warp is None:
        return ndimage.affine_transform(
            volume,
            vox_to_atlas_vox[:3, :3],
            vox_to_atlas_vox[:3, 3],
            output_shape=shape,
            order=order,
            mode="constant",
            cval=0.0,
        )
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = vox_to_atlas_vox[:3, :3].astype(np.float32) @ ijk + vox_to_atlas_vox[:3, 3:4].astype(np.float32)
    coords += warp.reshape(3, -1)
    return ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=0.0).reshape(shape)


def _warp_field(rng, shape, amplitude_mm, control=5):
    """A smooth random displacement (3, *shape) in atlas voxels (1 mm): cubic B-spline of a coarse grid."""
    coarse = rng.normal(0, amplitude_mm / 2, (3, control, control, control)).astype(np.float32)
    factors = [n / control for n in shape]
    return np.stack(
        [ndimage.zoom(c, factors, order=3, mode="nearest")[: shape[0], : shape[1], : shape[2]] for c in coarse]
    )


def _slice_profile(maps, spacing_z, thickness, fine):
    """Average fine sub-slices over a Gaussian slice profile of FWHM ``thickness``, keeping every
    ``fine``-th: the partial-volume blur of thick slices along the slice axis."""
    sigma = thickness / (2 * np.sqrt(2 * np.log(2))) / (spacing_z / fine)
    return {
        k: ndimage.gaussian_filter1d(v, sigma, axis=2, mode="nearest")[:, :, fine // 2 :: fine] for k, v in maps.items()
    }


def _lesions(rng, atlas, load, size=1.0, count=1.0):
    """WMH probability (0..1) and other-pathology mask in atlas space (1 mm)."""
    wm, dist = atlas["wm"], atlas["dist_ventricle"]
    shape = wm.shape
    # Periventricular caps and bands: smooth noise thresholded, favoured close to the ventricles and
    # at the frontal/occipital horns (the extremes along y).
    noise = ndimage.gaussian_filter(rng.standard_normal(tuple(s // 2 for s in shape)).astype(np.float32), 2.5)
    noise = ndimage.zoom(noise, 2, order=1)[: shape[0], : shape[1], : shape[2]]
    noise = np.pad(noise, [(0, s - n) for s, n in zip(shape, noise.shape)])
    noise /= noise.std() + 1e-6
    band = (2.0 + 10.0 * load) * size
    horn = np.zeros(shape, np.float32)
    y = np.arange(shape[1], dtype=np.float32)
    horn += np.exp(-(((y - 150) / 18) ** 2))[None, :, None] + np.exp(-(((y - 85) / 18) ** 2))[None, :, None]
    periventricular = np.exp(-dist / band) * (0.6 + 0.8 * horn)
    field = periventricular * (1.2 + 0.6 * noise) * (wm > 0.4)
    threshold = 0.9 - 0.35 * load
    wmh = np.clip((field - threshold) * 6.0, 0, 1)
    # Deep punctate lesions: small ellipsoids inside deep white matter.
    deep_wm = np.argwhere((wm > 0.85) & (dist > 8))
    for _ in range(rng.poisson((2 + 25 * load) * count)):
        c = deep_wm[rng.integers(len(deep_wm))]
        r = rng.uniform(1.0, 2.5 + 3.0 * load, 3) * size
        lo = np.maximum(c - np.ceil(r).astype(int) - 1, 0)
        hi = np.minimum(c + np.ceil(r).astype(int) + 2, shape)
        zz = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        inside = sum(((z - cc) / rr) ** 2 for z, cc, rr in zip(zz, c, r)) <= 1.0
        region = wmh[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        np.maximum(region, inside.astype(np.float32), out=region)
    other = np.zeros(shape, np.float32)
    if rng.random() < 0.4:  # a lacunar infarct: label 2, dark core on FLAIR
        candidates = np.argwhere((atlas["gm"] + wm > 0.9) & (dist > 12))
        c = candidates[rng.integers(len(candidates))]
        r = rng.uniform(3, 6)
        zz = np.ogrid[: shape[0], : shape[1], : shape[2]]
        other = (sum((z - cc) ** 2 for z, cc in zip(zz, c)) <= r * r).astype(np.float32)
        wmh *= 1 - other
    return wmh, other


def _bias_field(rng, shape, amplitude):
    """A smooth multiplicative field: exp of a few random low-frequency cosines."""
    axes = [np.linspace(0, np.pi, n, dtype=np.float32) for n in shape]
    log_field = np.zeros(shape, np.float32)
    for _ in range(4):
        f = rng.uniform(0.3, 1.2, 3)
        p = rng.uniform(0, 2 * np.pi, 3)
        term = 1.0
        for ax, (fa, pa) in enumerate(zip(f, p)):
            shape_ax = [1, 1, 1]
            shape_ax[ax] = shape[ax]
            term = term * np.cos(fa * axes[ax] + pa).reshape(shape_ax)
        log_field += rng.uniform(-1, 1) * term
    log_field *= amplitude / (np.abs(log_field).max() + 1e-6)
    return np.exp(log_field)


def _rician(rng, signal, sigma):
    return np.sqrt((signal + rng.normal(0, sigma, signal.shape)) ** 2 + rng.normal(0, sigma, signal.shape) ** 2)


def _small(site: Site) -> Site:
    shape = (max(site.shape[0] // 4, 24), max(site.shape[1] // 4, 24), max(site.shape[2] // 4, 10))
    spacing = tuple(s * o / n for s, o, n in zip(site.spacing, site.shape, shape))
    thickness = None if site.slice_thickness is None else site.slice_thickness * spacing[2] / site.spacing[2]
    return replace(site, shape=shape, spacing=spacing, slice_thickness=thickness)


def synthesize_subject(site: Site, seed: int, t1_misaligned=False, t1_own_grid=False):
    """FLAIR, T1 and reference images (nibabel) of one subject."""
    rng = np.random.default_rng(seed)
    shift_rng = np.random.default_rng([seed, 1])  # draws of the domain-shift options only
    atlas = _atlas()
    load = float(np.clip(rng.lognormal(-1.3, 0.8), 0.02, 1.0))  # 0 = nearly none, 1 = heavy
    wmh, other = _lesions(rng, atlas, load, site.lesion_size, site.lesion_count)
    pose = np.eye(4)
    pose[:3, :3] = _rotation(rng, site.pose_degrees) * rng.uniform(1 - site.pose_scale, 1 + site.pose_scale)
    pose[:3, 3] = rng.uniform(-4, 4, 3)
    grid = _grid_affine(site.shape, site.spacing)
    thick = site.slice_thickness is not None and site.slice_thickness > site.spacing[2]
    # thick slices: sample sub-slices 'fine' times denser, blur with the slice profile, decimate
    fine = int(np.ceil(site.spacing[2])) if thick else 1
    sample_shape = (site.shape[0], site.shape[1], site.shape[2] * fine)
    sample_grid = (
        grid
        @ np.diag([1.0, 1.0, 1.0 / fine, 1.0])
        @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -(fine // 2)], [0, 0, 0, 1]], float)
        if thick
        else grid
    )
    warp = _warp_field(shift_rng, sample_shape, site.warp_mm) if site.warp_mm > 0 else None

    def sample_all(t_pose, t_grid, t_shape, t_warp):
        out = {
            k: _sample(atlas[k], atlas["affine"], t_pose, t_grid, t_shape, warp=t_warp)
            for k in ("gm", "wm", "csf", "skull", "scalp")
        }
        out["lesion"] = _sample(wmh, atlas["affine"], t_pose, t_grid, t_shape, warp=t_warp)
        out["infarct"] = _sample(other, atlas["affine"], t_pose, t_grid, t_shape, warp=t_warp)
        return out

    maps = sample_all(pose, sample_grid, sample_shape, warp)
    if thick:
        maps = _slice_profile(maps, site.spacing[2], site.slice_thickness, fine)
    lesion, infarct = maps.pop("lesion"), maps.pop("infarct")
    if site.sequence is None:
        signal_of = {k: v for k, v in SIGNAL.items()}
        lesion_levels = (SIGNAL["wm"][0] * site.lesion_contrast, LESION_T1)
        core_levels = (0.1, 0.25)
    else:
        signals = sequence_signals(site.sequence, site.lesion_strength)
        signal_of = {k: signals[k] for k in SIGNAL}
        lesion_levels = signals["lesion"]
        core_levels = signals["csf"]  # infarct core: CSF-filled cavity

    def contrast(channel, lesion_level):
        signal = sum(maps[k] * signal_of[k][channel] for k in SIGNAL)
        signal = signal * (1 - lesion) + lesion * lesion_level
        core = core_levels[channel]  # infarct core is CSF-like on both
        return signal * (1 - infarct) + infarct * core

    flair = contrast(0, lesion_levels[0])
    bias = _bias_field(rng, site.shape, site.bias)
    flair = _rician(rng, flair * bias, site.noise) * site.scale
    labels = np.where(lesion >= 0.5, 1, 0).astype(np.uint8)
    labels[infarct >= 0.5] = 2

    t1_grid, t1_shape, t1_pose = grid, site.shape, pose
    if t1_own_grid:  # a 1 mm isotropic T1 on its own grid, its header telling the truth
        t1_shape = tuple(int(round(n * s)) for n, s in zip(site.shape, site.spacing))
        t1_grid = _grid_affine(t1_shape, (1.0, 1.0, 1.0))
    if t1_misaligned:  # same header as the FLAIR, but the head moved a little between acquisitions
        move = np.eye(4)
        move[:3, :3] = _rotation(rng, 3.0)
        move[:3, 3] = rng.uniform(-3, 3, 3)
        t1_pose = pose @ move
    if t1_own_grid or t1_misaligned:
        # (a non-linear warp is drawn on the FLAIR's sampling grid: the T1 of its own grid keeps the affine pose)
        maps = sample_all(t1_pose, t1_grid, t1_shape, None)
        lesion, infarct = maps.pop("lesion"), maps.pop("infarct")
        bias = _bias_field(rng, t1_shape, site.bias)
    t1 = contrast(1, lesion_levels[1])
    t1 = _rician(rng, t1 * bias, site.noise) * site.scale * 1.3

    def image(data, affine, dtype):
        img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")  # as scanners write it (BIDS validators warn without units)
        return img

    return (
        image(np.clip(np.round(flair), 0, 32767), grid, np.int16),
        image(np.clip(np.round(t1), 0, 32767), t1_grid, np.int16),
        image(labels, grid, np.uint8),
    )


def _layout_paths(root: Path, layout: str, site: Site, subject_id: int, session: str = ""):
    if layout == "challenge":
        base = root / site.name / str(subject_id)
        return base / "pre/FLAIR.nii.gz", base / "pre/T1.nii.gz", base / "wmh.nii.gz"
    if layout == "bids":
        sub = f"sub-{subject_id}"
        folder = f"{sub}/ses-{session}/anat" if session else f"{sub}/anat"
        name = f"{sub}_ses-{session}" if session else sub
        return (
            root / folder / f"{name}_FLAIR.nii.gz",
            root / folder / f"{name}_T1w.nii.gz",
            root / "derivatives/wmh" / folder / f"{name}_label-WMH_mask.nii.gz",
        )
    if layout == "tsv":
        base = root / "data" / site.name.replace("/", "_") / str(subject_id)
        return base / "flair.nii.gz", base / "t1.nii.gz", base / "wmh.nii.gz"
    raise ValueError(f"unknown layout {layout!r} (challenge, bids or tsv)")


def write_cohort(
    out_dir,
    subjects: int,
    seed: int = 0,
    small: bool = False,
    layout: str = "challenge",
    t1_misaligned: bool = False,
    t1_own_grid: bool = False,
    sessions: int = 0,
    sites=None,
) -> pd.DataFrame:
    """Write ``subjects`` synthetic subjects (round-robin over ``sites``, by default the three
    challenge-like ones; names or :class:`Site` objects) and return their table.

    ``sessions`` > 0 (BIDS layout only): that many sessions per subject (``ses-1``...), each its own
    synthetic scan; one table row per session, with a ``session`` column."""
    if sessions and layout != "bids":
        raise ValueError("sessions need the bids layout")
    from ..io import save_like

    root = Path(out_dir)
    rows = []
    chosen = SITES if not sites else tuple(site_by_name(s) if isinstance(s, str) else s for s in sites)
    counters = {s.name: 0 for s in chosen}
    for i in range(subjects):
        site = chosen[i % len(chosen)]
        subject_id = site.first_id + counters[site.name]
        counters[site.name] += 1
        for s, session in enumerate([str(k + 1) for k in range(sessions)] or [""]):
            flair, t1, ref = synthesize_subject(
                _small(site) if small else site, seed * 100003 + i + 7919 * s, t1_misaligned, t1_own_grid
            )
            paths = _layout_paths(root, layout, site, subject_id, session)
            for img, path in zip((flair, t1, ref), paths):
                save_like(np.asanyarray(img.dataobj), img, path)
            rows.append(
                {
                    "subject": str(subject_id),
                    **({"session": session} if sessions else {}),
                    "site": site.name,
                    "flair": str(paths[0]),
                    "t1": str(paths[1]),
                    "reference": str(paths[2]),
                }
            )
            log.info(
                "synthetic subject %s%s (%s): %d WMH voxels",
                subject_id,
                f" ses-{session}" if session else "",
                site.name,
                int((np.asarray(ref.dataobj) == 1).sum()),
            )
    table = pd.DataFrame(rows)
    if layout == "bids":
        (root / "dataset_description.json").write_text(
            json.dumps({"Name": "wmhflow synthetic cohort", "BIDSVersion": "1.9.0", "DatasetType": "raw"}, indent=2)
        )
        participants = table.drop_duplicates("subject")
        pd.DataFrame({"participant_id": "sub-" + participants["subject"], "site": participants["site"]}).to_csv(
            root / "participants.tsv", sep="\t", index=False
        )
    if layout == "tsv":
        rel = table.copy()
        for column in ("flair", "t1", "reference"):
            rel[column] = [str(Path(p).relative_to(root)) for p in rel[column]]
        rel["split"] = ""
        rel.to_csv(root / "subjects.tsv", sep="\t", index=False)
    return table


def ensure_demo_cohort(path, subjects: int, seed: int) -> Path:
    """The demo cohort at ``path``, generated once (atomically: built beside it, then renamed)."""
    path = Path(path)
    stamp = {"subjects": int(subjects), "seed": int(seed), "generator": 1}
    stamp_file = path / ".wmhflow-demo.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return path
    log.info("generating the demo cohort (%d subjects, seed %d) into %s", subjects, seed, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write_cohort(build, subjects, seed)
        (build / ".wmhflow-demo.json").write_text(json.dumps(stamp))
        if path.exists():
            shutil.rmtree(path)
        build.rename(path)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return path


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--subjects", type=int, default=6, help="number of subjects, spread over 3 sites")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="small grids, for fast tests")
    parser.add_argument("--layout", default="challenge", choices=("challenge", "bids", "tsv"))
    parser.add_argument("--t1-misaligned", action="store_true", help="T1 moved by a small rigid transform")
    parser.add_argument("--t1-own-grid", action="store_true", help="T1 on its own 1 mm isotropic grid")
    parser.add_argument(
        "--sites",
        nargs="+",
        default=None,
        metavar="SITE",
        help="sites to draw from, round robin (default: the three challenge-like sites; "
        f"domain-shifted scanners: {', '.join(s.name for s in SHIFTED_SITES)})",
    )


def main(args) -> int:
    table = write_cohort(
        args.out,
        args.subjects,
        args.seed,
        args.small,
        args.layout,
        args.t1_misaligned,
        args.t1_own_grid,
        sites=args.sites,
    )
    log.info("wrote %d subjects to %s", len(table), args.out)
    return 0
