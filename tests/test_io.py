"""NIfTI reading/writing: clear errors, exact geometry, atomic writes, nibabel <-> SimpleITK agreement."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write_nifti

from wmhflow import io
from wmhflow.errors import InputError


def oblique_affine():
    angle = np.deg2rad(12)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-0.9, 1.1, 3.0])  # flipped first axis: not RAS
    affine[:3, 3] = [80.0, -100.0, -40.0]
    return affine


def test_load_checks_each_problem_with_the_file_name(tmp_path):
    with pytest.raises(InputError, match="missing.nii.gz: FLAIR file does not exist"):
        io.load_nifti(tmp_path / "missing.nii.gz", "FLAIR")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(InputError, match="corrupt.nii.gz: T1 is not a readable NIfTI"):
        io.load_nifti(corrupt, "T1")
    truncated = tmp_path / "truncated.nii.gz"
    write_nifti(truncated, np.random.default_rng(0).random((20, 20, 20)))
    truncated.write_bytes(truncated.read_bytes()[:400])
    with pytest.raises(InputError, match="truncated.nii.gz: FLAIR is not a readable NIfTI"):
        io.load_nifti(truncated, "FLAIR")
    four_d = write_nifti(tmp_path / "4d.nii.gz", np.zeros((4, 4, 4, 2)))
    with pytest.raises(InputError, match=r"must be a 3D volume, found shape \(4, 4, 4, 2\)"):
        io.load_nifti(four_d)
    nan = np.zeros((4, 4, 4), np.float32)
    nan[1, 2, 3] = np.inf
    with pytest.raises(InputError, match="1 NaN or infinite voxel"):
        io.load_nifti(write_nifti(tmp_path / "nan.nii.gz", nan))


def test_singleton_4d_is_squeezed(tmp_path):
    img = io.load_nifti(write_nifti(tmp_path / "s.nii.gz", np.ones((4, 5, 6, 1))))
    assert img.shape == (4, 5, 6)


def test_save_like_keeps_grid_header_and_qform_equals_sform(tmp_path):
    affine = oblique_affine()
    src = tmp_path / "flair.nii.gz"
    img = nib.Nifti1Image(np.zeros((6, 7, 5), np.int16), affine)
    img.set_qform(affine, code=1)
    img.set_sform(np.eye(4), code=0)  # an sform left unset by the scanner software
    nib.save(img, str(src))
    like = io.load_nifti(src)
    out = io.save_like(np.ones((6, 7, 5)), like, tmp_path / "sub/out.nii.gz", dtype=np.uint8)
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_allclose(back.affine, like.affine, atol=1e-5)
    np.testing.assert_allclose(back.get_qform(), back.get_sform(), atol=1e-5)
    assert int(back.header["qform_code"]) > 0 and int(back.header["sform_code"]) > 0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError, match="differs from the template grid"):
        io.save_like(np.ones((6, 7, 4)), like, tmp_path / "bad.nii.gz")
    assert not (tmp_path / "bad.nii.gz").exists()


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "table.tsv"
    with pytest.raises(RuntimeError):
        with io.atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer crashed")
    assert list(tmp_path.iterdir()) == []
    with io.atomic_output(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


def test_sitk_conversion_matches_simpleitk_reading_the_file(tmp_path):
    data = np.random.default_rng(1).random((6, 7, 5)).astype(np.float32)
    path = write_nifti(tmp_path / "o.nii.gz", data, oblique_affine())
    mine = io.to_sitk(io.load_nifti(path))
    theirs = sitk.ReadImage(str(path))
    np.testing.assert_allclose(mine.GetOrigin(), theirs.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mine.GetSpacing(), theirs.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(mine.GetDirection(), theirs.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mine), sitk.GetArrayFromImage(theirs))
    np.testing.assert_array_equal(io.from_sitk(mine), data)
    # the same voxel lands on the same physical point in both libraries
    ijk = (2, 3, 4)
    ras = oblique_affine() @ np.array([*ijk, 1.0])
    lps = mine.TransformIndexToPhysicalPoint(ijk)
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-4)


def test_require_same_grid_names_both_files(tmp_path):
    a = io.load_nifti(write_nifti(tmp_path / "a.nii.gz", np.zeros((4, 4, 4))))
    b = io.load_nifti(write_nifti(tmp_path / "b.nii.gz", np.zeros((4, 4, 4)), np.diag([1, 1, 2.0, 1])))
    assert io.same_grid(a, a) and not io.same_grid(a, b)
    with pytest.raises(
        InputError, match=r"b.nii.gz: reference voxel-to-world affine differs from the FLAIR's \(.*a.nii.gz\)"
    ):
        io.require_same_grid(b, tmp_path / "b.nii.gz", a, tmp_path / "a.nii.gz", "reference")
