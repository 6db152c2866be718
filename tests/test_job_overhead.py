"""What every workflow job pays before its kernel: imports on each verb's path, numba's JIT cache.

Each job is a fresh ``wmhflow <verb>`` process (benchmarks/bench_workflow.py measures the cost), so a
verb must not import what it does not use, and the top-hat must load its numba kernel from the
on-disk cache instead of compiling it again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from wmhflow.cli import VERBS
from wmhflow.io import load_nifti, save_like
from wmhflow.preprocess.align import align_t1_to_flair

HEAVY = ("torch", "pandas", "SimpleITK", "skimage", "numba", "matplotlib")
#: verb -> the heavy libraries importing its module may pull in (the rest come at run time, if used)
ALLOWED = {
    "check": (),
    "align-t1": (),
    "bias-correct": (),
    "requantize": (),
    "tophat": (),
    "evaluate": ("pandas",),
    "lesions": ("pandas",),
    "infer": ("torch",),
}


def _heavy_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint('heavy:', *(m for m in {HEAVY!r} if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()[-1].split()[1:]  # the last line: after anything the code printed


@pytest.mark.parametrize("verb", sorted(ALLOWED))
def test_importing_a_verb_pulls_in_only_the_libraries_it_needs(verb):
    found = _heavy_after(f"import {VERBS[verb][0]}")
    assert set(found) <= set(ALLOWED[verb]), f"wmhflow {verb} imports {found}"


def test_a_preprocessing_verbs_help_imports_no_torch_simpleitk_numba_or_pandas():
    code = "from wmhflow.cli import main\ntry:\n    main(['requantize', '--help'])\nexcept SystemExit:\n    pass"
    assert _heavy_after(code) == []


@pytest.mark.slow
def test_the_tophat_kernel_is_compiled_once_and_loaded_from_the_disk_cache_after(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    stats = (
        "import json, numpy as np\n"
        "from wmhflow.preprocess.tophat import area_tophat, warm_kernel_cache\n"
        "from wmhflow.preprocess._area_opening import open_slices\n"
        "{work}\n"
        "s = open_slices.stats\n"
        "print(json.dumps([sum(s.cache_hits.values()), sum(s.cache_misses.values())]))"
    )

    def run(work):
        done = subprocess.run([sys.executable, "-c", stats.format(work=work)], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])

    hits, misses = run("warm_kernel_cache()")
    assert misses == 2 and hits == 0  # a fresh cache: both layouts compiled (and written to disk)
    volume = np.random.default_rng(0).integers(0, 255, (20, 16, 3), dtype=np.uint8)
    # the two layouts a job meets: a volume read by nibabel (Fortran order) and one computed in memory
    hits, misses = run(
        f"v = np.array({volume.tolist()}, np.uint8)\n"
        "area_tophat(np.asfortranarray(v), 5)\narea_tophat(np.ascontiguousarray(v), 5)"
    )
    assert misses == 0 and hits >= 1, (hits, misses)  # loaded from disk: no JIT in this process


def test_a_t1_on_the_flair_grid_is_passed_through_in_its_own_integer_type(tmp_path):
    rng = np.random.default_rng(1)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    flair = nib.Nifti1Image(rng.integers(0, 900, (12, 10, 5)).astype(np.int16), affine)
    t1 = nib.Nifti1Image(rng.integers(0, 900, (12, 10, 5)).astype(np.int16), affine)
    for img, name in ((flair, "flair.nii.gz"), (t1, "t1.nii.gz")):
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        nib.save(img, str(tmp_path / name))
    from wmhflow.cli import main

    out = tmp_path / "aligned.nii.gz"
    assert (
        main(
            [
                "align-t1",
                "--flair",
                str(tmp_path / "flair.nii.gz"),
                "--t1",
                str(tmp_path / "t1.nii.gz"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    written = nib.load(str(out))
    assert written.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), np.asanyarray(t1.dataobj))
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out))).dtype == np.int16  # SimpleITK reads it too
    # a float T1 (e.g. already scaled) stays float32
    t1_float = nib.Nifti1Image(np.asanyarray(t1.dataobj).astype(np.float64) / 7, affine, t1.header)
    assert align_t1_to_flair(load_nifti(tmp_path / "flair.nii.gz"), t1_float).get_data_dtype() == np.float32
    save_like(np.zeros((12, 10, 5)), flair, tmp_path / "unused.nii.gz")  # save_like still takes any dtype


def test_every_per_subject_rule_asks_for_at_least_its_measured_peak_at_256_cubed():
    """The rules' mem_mb defaults stay above the measured line (benchmarks/results/resources.csv) at the
    size they are documented for (docs/cluster.md): lowering one below it is a job killed for memory."""
    import re
    from pathlib import Path

    import pandas as pd
    import yaml

    repo = Path(__file__).resolve().parent.parent
    fits = pd.read_csv(repo / "benchmarks/results/resources.csv").query("size == 'fit'").set_index("rule")
    rules = "".join((repo / "workflow/rules" / name).read_text() for name in ("check.smk", "preprocess.smk"))
    asked = {name: int(mem) for name, mem in re.findall(r"^rule (\w+):.*?mem_mb=(\d+)", rules, re.S | re.M)}
    asked["segment"] = yaml.safe_load((repo / "config.yaml").read_text())["segment"]["mem_mb"]
    mvoxels = 256**3 / 1e6
    for rule, fit in fits.iterrows():
        name = re.sub(r"_(FLAIR|T1w)$", "", rule)
        peak = fit["fixed_mb"] + fit["per_mvoxel_mb"] * mvoxels
        assert asked[name] >= peak * 1.2, f"{name}: mem_mb {asked[name]} < measured peak {peak:.0f} MB x 1.2"
