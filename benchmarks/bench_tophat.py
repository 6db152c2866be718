"""Area-opening top-hat: our numba kernel vs scikit-image (and DIPlib) per 2D slice, same output?

Target (issue): identical output to ``skimage.morphology.area_opening`` and ≥ 70x faster per volume.
Writes benchmarks/results/tophat.csv: for a realistic 8-bit FLAIR (a full-size synthetic Singapore
subject, 256x232x48, requantized like the pipeline does) and a random-noise volume (256x256x48),
per connectivity: seconds per volume for scikit-image (slice loop), DIPlib ``AreaOpening`` (the
previous implementation), ours with 1 and 2 threads, the ratio to scikit-image and whether the output
is identical. Timings are the minimum over repeats, interleaved so that a busy machine slows all
contenders alike (the machine is shared: the 1-minute load average is recorded in each row). Two more
rows give the cost of the first call in a fresh process: with numba's on-disk cache cold (compile)
and warm (load), including ``import numba``.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_tophat.py`` (about 2-4 minutes on two cores).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_csv import write_rows

REPO = Path(__file__).resolve().parent.parent


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def realistic_volume(seed: int = 7) -> np.ndarray:
    from wmhflow.preprocess.quantize import requantize
    from wmhflow.synth import SITES, synthesize_subject

    flair, _, _ = synthesize_subject(SITES[1], seed)  # Singapore: 256 x 232 x 48, 1 x 1 x 3 mm
    return np.asfortranarray(requantize(flair))  # nibabel hands volumes over in Fortran order


def skimage_opening(volume, area, connectivity):
    from skimage.morphology import area_opening

    return np.stack([area_opening(volume[:, :, k], area, connectivity) for k in range(volume.shape[2])], axis=2)


def diplib_opening(volume, area, connectivity):
    import diplib as dip

    return np.stack(
        [
            np.asarray(dip.AreaOpening(dip.Image(np.ascontiguousarray(volume[:, :, k])), None, area, connectivity))
            for k in range(volume.shape[2])
        ],
        axis=2,
    )


def first_call_seconds(cold: bool) -> float:
    """Seconds for import + first call in a fresh process (numba cache in a fresh folder when ``cold``)."""
    code = (
        "import time; t = time.perf_counter(); import numpy as np; "
        "from wmhflow.preprocess.tophat import area_opening_slices; "
        "area_opening_slices(np.zeros((32, 32, 2), np.uint8)); print(time.perf_counter() - t)"
    )
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if cold:
            env["NUMBA_CACHE_DIR"] = cache
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(run.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3, help="scikit-image runs per case (ours: 10x more)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/tophat.csv"))
    args = parser.parse_args()

    from wmhflow.preprocess.tophat import area_opening_slices

    rng = np.random.default_rng(0)
    volumes = {
        "synthetic FLAIR (Singapore, 8-bit)": realistic_volume(),
        "random noise": np.asfortranarray(rng.integers(0, 256, (256, 256, 48), dtype=np.uint8)),
    }
    area_opening_slices(np.zeros((8, 8, 2), np.uint8))  # compile or load the kernel before timing
    rows = []
    for name, volume in volumes.items():
        for connectivity in (1, 2):
            times = {"skimage": [], "diplib": [], 1: [], 2: []}
            reference = None
            for _ in range(args.repeats):
                start = time.perf_counter()
                reference = skimage_opening(volume, args.area, connectivity)
                times["skimage"].append(time.perf_counter() - start)
                start = time.perf_counter()
                dip_out = diplib_opening(volume, args.area, connectivity)
                times["diplib"].append(time.perf_counter() - start)
                for _ in range(10):
                    for threads in (1, 2):
                        start = time.perf_counter()
                        area_opening_slices(volume, args.area, connectivity, threads)
                        times[threads].append(time.perf_counter() - start)
            exact = {
                threads: bool(np.array_equal(area_opening_slices(volume, args.area, connectivity, threads), reference))
                for threads in (1, 2)
            }
            sk, dp = min(times["skimage"]), min(times["diplib"])
            for threads in (1, 2):
                ours = min(times[threads])
                rows.append(
                    {
                        "volume": name,
                        "shape": "x".join(map(str, volume.shape)),
                        "area": args.area,
                        "connectivity": connectivity,
                        "threads": threads,
                        "skimage_s": round(sk, 4),
                        "diplib_s": round(dp, 4),
                        "ours_s": round(ours, 5),
                        "ratio_vs_skimage": round(sk / ours, 1),
                        "ratio_diplib_vs_skimage": round(sk / dp, 1),
                        "exact": exact[threads],
                        "diplib_exact": bool(np.array_equal(dip_out, reference)),
                        "load_1min": load1(),
                    }
                )
                print(
                    f"{name}, connectivity {connectivity}, {threads} thread(s): scikit-image {sk:.3f} s, "
                    f"DIPlib {dp:.3f} s, ours {ours * 1e3:.1f} ms = {sk / ours:.0f}x, exact {exact[threads]} "
                    f"(load {load1():.1f})",
                    flush=True,
                )
    for label, cold in (
        ("first call in a fresh process, numba cache cold (compile)", True),
        ("first call in a fresh process, numba cache warm", False),
    ):
        seconds = first_call_seconds(cold)
        rows.append(
            {
                "volume": label,
                "shape": "32x32x2",
                "area": 25,
                "connectivity": 1,
                "threads": "",
                "skimage_s": "",
                "diplib_s": "",
                "ours_s": round(seconds, 3),
                "ratio_vs_skimage": "",
                "ratio_diplib_vs_skimage": "",
                "exact": "",
                "diplib_exact": "",
                "load_1min": load1(),
            }
        )
        print(f"{label}: {seconds:.2f} s", flush=True)
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
