"""Tests of wmhflow.synth: determinism, site grids, labels, layouts and the T1 options."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from wmhflow.synth import SITES, Site, _grid_affine, _layout_paths, _small, synthesize_subject, write_cohort

#: The three WMH-challenge sites: FLAIR grid (slice axis last) and voxel size in mm.
CHALLENGE_GRIDS = {
    "Utrecht": ((240, 240, 48), (0.96, 0.96, 3.0)),
    "Singapore": ((256, 232, 48), (1.0, 1.0, 3.0)),
    "Amsterdam/GE3T": ((132, 256, 83), (1.2, 0.98, 3.0)),
}


#: A tiny site for the T1 options (a 1 mm T1 on its own grid stays small).
TINY = Site("Tiny", 0, (24, 24, 10), (4.0, 4.0, 6.0), 500.0, 0.03, 0.2, 1.8)


def test_same_seed_same_subject_other_seed_other_subject(small_cohort):
    _, table = small_cohort  # write_cohort(subjects=6, seed=1, small=True): subject i has seed 100003 + i
    again = synthesize_subject(_small(SITES[1]), 1 * 100003 + 1)
    row = table.set_index("subject").loc["50"]
    for img, path in zip(again, (row.flair, row.t1, row.reference)):
        written = nib.load(path)
        np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(written.dataobj))
        np.testing.assert_allclose(img.affine, written.affine, atol=1e-6)
    other = table.set_index("subject").loc["51"]  # same site, next seed
    assert not np.array_equal(np.asarray(nib.load(other.flair).dataobj), np.asarray(again[0].dataobj))


def test_sites_have_the_challenge_grids():
    assert {s.name: (s.shape, s.spacing) for s in SITES} == CHALLENGE_GRIDS
    assert len({s.first_id for s in SITES}) == 3
    for site in SITES:
        affine = _grid_affine(site.shape, site.spacing)
        np.testing.assert_allclose(nib.affines.voxel_sizes(affine), site.spacing)
        # The grid is centred on the brain: the centre voxel sits near the MNI brain centre.
        centre = nib.affines.apply_affine(affine, (np.array(site.shape) - 1) / 2)
        np.testing.assert_allclose(centre, [0.0, -18.0, 18.0], atol=1e-6)


def test_small_sites_keep_the_field_of_view():
    for site in SITES:
        small = _small(site)
        assert all(n >= m for n, m in zip(small.shape, (24, 24, 10)))
        assert all(n < full for n, full in zip(small.shape[:2], site.shape[:2]))
        np.testing.assert_allclose(np.multiply(small.shape, small.spacing), np.multiply(site.shape, site.spacing))
        assert (small.name, small.scale, small.noise) == (site.name, site.scale, site.noise)


def test_cohort_images_grids_dtypes_and_labels(small_cohort):
    _, table = small_cohort
    assert list(table.columns) == ["subject", "site", "flair", "t1", "reference"]
    assert list(table["site"]) == [s.name for s in SITES] * 2  # round robin over the sites
    assert list(table["subject"]) == ["0", "50", "100", "1", "51", "101"]
    sites = {s.name: _small(s) for s in SITES}
    labels_seen = set()
    for row in table.itertuples():
        site = sites[row.site]
        flair, t1, ref = (nib.load(p) for p in (row.flair, row.t1, row.reference))
        for img in (flair, t1, ref):
            assert img.shape == site.shape
            np.testing.assert_allclose(img.header.get_zooms(), site.spacing, rtol=1e-5)
            np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-5)
            np.testing.assert_allclose(img.affine, flair.affine, atol=1e-5)
        assert flair.get_data_dtype() == np.int16 and t1.get_data_dtype() == np.int16
        assert ref.get_data_dtype() == np.uint8
        f, t, lab = np.asarray(flair.dataobj), np.asarray(t1.dataobj), np.asarray(ref.dataobj)
        assert f.min() >= 0 and t.min() >= 0
        assert set(np.unique(lab)) <= {0, 1, 2}
        labels_seen |= set(np.unique(lab).tolist())
        if (lab == 1).sum() >= 5:  # WMH: bright on FLAIR, darker than white matter on T1
            head = f > np.percentile(f, 60)
            assert f[lab == 1].mean() > 1.2 * np.median(f[head])
            assert t[lab == 1].mean() < np.percentile(t, 99)
    assert {0, 1} <= labels_seen


@pytest.mark.parametrize("layout", ["bids", "tsv"])
def test_layouts(tmp_path, layout):
    table = write_cohort(tmp_path, subjects=3, seed=2, small=True, layout=layout)
    assert list(table["site"]) == [s.name for s in SITES]
    for row in table.itertuples():
        for column in ("flair", "t1", "reference"):
            assert (tmp_path / getattr(row, column)).is_file()
    if layout == "bids":
        assert list(table["flair"]) == [str(tmp_path / f"sub-{s}/anat/sub-{s}_FLAIR.nii.gz") for s in table["subject"]]
        assert (tmp_path / "derivatives/wmh/sub-50/anat/sub-50_label-WMH_mask.nii.gz").is_file()
        description = json.loads((tmp_path / "dataset_description.json").read_text())
        assert description["BIDSVersion"] and description["DatasetType"] == "raw"
        participants = pd.read_csv(tmp_path / "participants.tsv", sep="\t", dtype=str)
        assert list(participants["participant_id"]) == ["sub-0", "sub-50", "sub-100"]
        assert list(participants["site"]) == [s.name for s in SITES]
    else:
        subjects = pd.read_csv(tmp_path / "subjects.tsv", sep="\t", dtype=str, keep_default_na=False)
        assert list(subjects.columns) == ["subject", "site", "flair", "t1", "reference", "split"]
        assert not any(p.startswith("/") for p in subjects["flair"])  # relative to the TSV
        assert "data/Amsterdam_GE3T/100/flair.nii.gz" in list(subjects["flair"])
        assert set(subjects["split"]) == {""}


def test_challenge_layout(small_cohort):
    root, table = small_cohort
    assert (root / "Amsterdam/GE3T/100/pre/FLAIR.nii.gz").is_file()
    assert (root / "Utrecht/0/pre/T1.nii.gz").is_file()
    assert (root / "Singapore/51/wmh.nii.gz").is_file()
    assert list(table["flair"])[0] == str(root / "Utrecht/0/pre/FLAIR.nii.gz")


def test_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        _layout_paths(tmp_path, "zip", SITES[0], 0)


def head_centroid(t1):
    data = np.asarray(t1.dataobj, float)
    head = data > 0.5 * np.percentile(data, 99)
    return nib.affines.apply_affine(t1.affine, np.argwhere(head).mean(axis=0))


def test_misaligned_t1_is_on_the_flair_grid_but_moved():
    flair, t1, _ = synthesize_subject(TINY, 9)
    flair_m, t1_m, _ = synthesize_subject(TINY, 9, t1_misaligned=True)
    np.testing.assert_array_equal(np.asarray(flair.dataobj), np.asarray(flair_m.dataobj))  # same FLAIR
    np.testing.assert_array_equal(t1_m.affine, flair_m.affine)  # the header does not tell
    assert t1_m.shape == flair_m.shape
    a, b = np.asarray(t1.dataobj, float).ravel(), np.asarray(t1_m.dataobj, float).ravel()
    assert np.corrcoef(a, b)[0, 1] < 0.97  # the head moved
    shift = np.linalg.norm(head_centroid(t1) - head_centroid(t1_m))
    assert shift < 12.0  # by a small rigid motion (a few mm, a few degrees)


def test_t1_on_its_own_grid():
    flair, t1, ref = synthesize_subject(TINY, 4, t1_own_grid=True)
    expected = tuple(int(round(n * s)) for n, s in zip(TINY.shape, TINY.spacing))
    assert t1.shape == expected
    np.testing.assert_allclose(nib.affines.voxel_sizes(t1.affine), 1.0)
    assert flair.shape == ref.shape == TINY.shape
    # Both grids cover the same field of view around the same centre.
    centre = lambda img: nib.affines.apply_affine(img.affine, (np.array(img.shape) - 1) / 2)  # noqa: E731
    np.testing.assert_allclose(centre(t1), centre(flair), atol=1e-6)


# ------------------------------------------------------------------------------ domain-shifted sites
def test_shifted_sites_differ_in_grid_slices_contrast_and_lesions():
    from wmhflow.synth import SHIFTED_SITES, SIGNAL, sequence_signals, site_by_name

    seen_spacings = {s.spacing for s in SITES}
    for site in SHIFTED_SITES:
        assert site.spacing not in seen_spacings and site.spacing[2] > 3.0  # coarser slices than any seen site
        assert site.slice_thickness > site.spacing[2] and site.warp_mm > 0 and site.sequence is not None
        assert site.first_id not in {s.first_id for s in SITES}
        assert site_by_name(site.name) is site
        signals = sequence_signals(site.sequence, site.lesion_strength)
        flair = {k: v[0] for k, v in signals.items()}
        assert flair["csf"] < flair["wm"] < flair["gm"] < flair["lesion"]  # still a FLAIR
        assert signals["lesion"][1] < 1.0  # WMH hypointense to WM on T1
    held_out = sequence_signals(site_by_name("Shifted15T").sequence, site_by_name("Shifted15T").lesion_strength)
    # a spin-echo T1 at 1.5 T: far weaker GM/WM contrast than the seen sites' table; fainter WMH on FLAIR
    assert held_out["gm"][1] > 0.8 > SIGNAL["gm"][1]
    assert held_out["lesion"][0] / held_out["wm"][0] < min(s.lesion_contrast for s in SITES)
    with pytest.raises(ValueError, match="unknown synthetic site"):
        site_by_name("Nowhere")


def test_shifted_site_is_reproducible_and_has_thick_slices():
    from dataclasses import replace

    from wmhflow.synth import site_by_name

    site = _small(site_by_name("Shifted15T"))
    flair, t1, ref = synthesize_subject(site, 4)
    again = synthesize_subject(site, 4)
    for a, b in zip((flair, t1, ref), again):
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    assert flair.shape == site.shape
    np.testing.assert_allclose(flair.header.get_zooms(), site.spacing, rtol=1e-5)
    # the slice profile makes neighbouring slices alike: compare with the same subject on thin slices
    thin = synthesize_subject(replace(site, slice_thickness=None), 4)[0]

    def neighbour_correlation(img):
        data = np.asarray(img.dataobj, np.float32)
        head = (data[:, :, :-1] > 0) & (data[:, :, 1:] > 0)
        return np.corrcoef(data[:, :, :-1][head], data[:, :, 1:][head])[0, 1]

    assert neighbour_correlation(flair) > neighbour_correlation(thin) + 0.02


def test_write_cohort_with_named_sites(tmp_path):
    table = write_cohort(tmp_path, 2, seed=3, small=True, sites=["Shifted3T"])
    assert list(table["site"]) == ["Shifted3T", "Shifted3T"] and list(table["subject"]) == ["250", "251"]
    with pytest.raises(ValueError, match="unknown synthetic site"):
        write_cohort(tmp_path / "x", 1, sites=["Nowhere"])
