"""FCN inference speed on CPU for one 48 x 256 x 256 volume, against the machine's fp32 matmul peak.

Issue targets: FCN forward >= 90 % of the fp32 matmul peak; requantize + top-hat + FCN <= 5 s (fp32)
and <= 3 s (bf16) per volume on 2 cores. Measured in one run, so that the peak and the timings share
the machine's conditions (the load average at start and end is written too: on a shared machine the
numbers are noisy, compare rows of one run rather than runs).

Rows of benchmarks/results/inference.csv (long format: case, metric, value, unit, note):
  peak            torch.mm 4096^2 fp32 (and bf16) GFLOP/s, best of several, at start and end
  forward         FLOPs of one 256 x 256 slice (torch.utils.flop_counter) and of the volume
  layout          NCHW vs channels-last, whole slices, chunks of 4 (time extrapolated to the volume)
  chunk           channels-last chunk sizes 1..16 (extrapolated to the volume)
  volume/*        predict_volume on the whole volume: no crop, head crop with the exact margin (64),
                  tighter margins, bf16 autocast; seconds, FLOPs actually run, GFLOP/s, % of peak,
                  % of voxels whose mask agrees with the uncropped fp32 prediction
  pipeline/*      head mask + requantize (FLAIR, T1) + top-hat + FCN, fp32 and bf16
  train           training slices/s with the demo preset's batch and crop (forward, backward, AdamW)
  memory          peak RSS (getrusage maxrss) of a process that only loads and segments the volume

The model is randomly initialised (speed does not depend on weights; agreement figures do, a
random network being far more sensitive to its borders than a trained one).
Run: OMP_NUM_THREADS=2 python benchmarks/bench_inference.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow"))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from wmhflow.fcn import infer, presets, training_data  # noqa: E402
from wmhflow.fcn.model import build_model  # noqa: E402
from wmhflow.fcn.slices import colour_slices, to_input  # noqa: E402
from wmhflow.preprocess.headmask import head_mask_array  # noqa: E402
from wmhflow.preprocess.quantize import requantize_array  # noqa: E402
from wmhflow.preprocess.tophat import area_tophat  # noqa: E402

ROWS: list[dict] = []


def row(case, metric, value, unit, note=""):
    ROWS.append(
        {
            "case": case,
            "metric": metric,
            "value": value if isinstance(value, str) else round(float(value), 4),
            "unit": unit,
            "note": note,
        }
    )
    print(f"{case:28s} {metric:18s} {ROWS[-1]['value']!s:>12} {unit:10s} {note}", flush=True)


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(dtype=torch.float32, n=4096, repeats=5):
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    return 2.0 * n**3 / best_time(lambda: torch.mm(a, b), repeats) / 1e9


_FLOPS = {}


def forward_flops(model, height, width, batch=1, executed=True):
    """FLOPs (2 x multiply-adds) of the network on a batch of height x width slices (as padded).

    ``executed``: what inference runs (side layers folded into the fusion, model.py); else the
    network as the paper draws it (16-map side layers, concatenation, 1x1 fusion).
    """
    key = (height, width, executed)
    if key not in _FLOPS:
        meta = copy.deepcopy(model).to("meta")
        counter = FlopCounterMode(display=False)
        with counter, torch.set_grad_enabled(not executed):
            meta(torch.empty(1, 3, height, width, device="meta"))
        _FLOPS[key] = counter.get_total_flops()
    return _FLOPS[key] * batch


def analytic_flops(height, width, side_maps=16):
    """The same count by hand: every convolution's multiply-adds x 2 (checks the counter)."""
    h, w = height + (-height) % 8, width + (-width) % 8
    convs = [
        (3, 64, 1),
        (64, 64, 1),
        (64, 128, 2),
        (128, 128, 2),
        (128, 256, 4),
        (256, 256, 4),
        (256, 256, 4),
        (256, 512, 8),
        (512, 512, 8),
        (512, 512, 8),
    ]
    macs = sum(cin * cout * 9 * (h // s) * (w // s) for cin, cout, s in convs)
    macs += sum(c * side_maps * 9 * (h // s) * (w // s) for c, s in ((64, 1), (128, 2), (256, 4), (512, 8)))
    macs += 4 * side_maps * 2 * h * w
    return 2 * macs


def synthetic_volume(slices, size, seed=0):
    """Raw FLAIR and T1 (int16, scanner units) and labels of a realistic synthetic head."""
    from wmhflow.synth import Site, synthesize_subject

    site = Site("bench", 0, (size, size, slices), (0.94, 0.94, 3.0), 1000.0, 0.03, 0.2, 1.9)
    flair, t1, ref = synthesize_subject(site, seed)
    return (np.asarray(flair.dataobj), np.asarray(t1.dataobj), np.asarray(ref.dataobj))


def preprocess(flair_raw, t1_raw):
    """What the workflow does between N4 and the FCN: 8-bit requantization and the top-hat."""
    flair = requantize_array(flair_raw, head_mask_array(flair_raw))
    t1 = requantize_array(t1_raw, head_mask_array(t1_raw))
    return {"flair": flair, "t1": t1, "tophat": area_tophat(flair, 25, 1)}


def slice_loop(model, images, chunk, channels_last, amp=None):
    """Whole slices through the network in chunks (no crop, no skipping)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    with torch.inference_mode(), torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        for i in range(0, len(images), chunk):
            x = to_input(images[i : i + chunk]).contiguous(memory_format=fmt)
            model(x)


MEMORY_CHILD = """
import resource, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[3])
from wmhflow.fcn import infer
from wmhflow.fcn.model import build_model


def hwm():  # peak RSS of this process image (MiB); getrusage's maxrss also counts the parent it forked from
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0


torch.set_num_threads(2)
data = np.load(sys.argv[1])
volumes = {k: data[k] for k in data.files}
torch.manual_seed(0)
model = build_model()
before = hwm()
infer.predict_volume(model, volumes, sys.argv[2], "cpu", "fp32")
print(before, hwm(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
"""


def local_peak(case):
    """The fp32 matmul peak right before a case: the machine is shared, its speed drifts."""
    value = matmul_peak(repeats=3)
    row(case, "fp32_peak_before", value, "GFLOP/s", "torch.mm 4096^2, best of 3")
    return value


def load_average():
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--sweep-slices", type=int, default=8, help="slices timed per layout/chunk setting")
    parser.add_argument("--train-iterations", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8 slices of 128 x 128")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/inference.csv"))
    args = parser.parse_args()
    if args.quick:
        args.slices, args.size, args.sweep_slices, args.train_iterations = 8, 128, 4, 2
    torch.set_num_threads(args.threads)
    channels = "flair,t1,tophat"
    row("machine", "threads", args.threads, "", f"torch {torch.__version__}, {os.cpu_count()} cpus")
    row("machine", "load_average", load_average(), "1/5/15 min", "at start")

    peak = matmul_peak()
    row("peak", "fp32_matmul", peak, "GFLOP/s", "torch.mm 4096^2, best of 5")
    row("peak", "bf16_matmul", matmul_peak(torch.bfloat16), "GFLOP/s", "torch.mm 4096^2, best of 5")

    flair_raw, t1_raw, labels = synthetic_volume(args.slices, args.size)
    volumes = preprocess(flair_raw, t1_raw)
    torch.manual_seed(0)
    model = build_model().eval()
    paper_slice = forward_flops(model, args.size, args.size, executed=False)
    per_slice = forward_flops(model, args.size, args.size)
    row(
        "forward",
        "paper_flops_per_slice",
        paper_slice / 1e9,
        "GFLOP",
        f"FlopCounterMode, the paper's layers; by hand {analytic_flops(args.size, args.size) / 1e9:.3f}",
    )
    row(
        "forward",
        "paper_flops_per_volume",
        paper_slice * args.slices / 1e12,
        "TFLOP",
        f"{args.slices} whole {args.size}^2 slices",
    )
    row("forward", "flops_per_slice", per_slice / 1e9, "GFLOP", "as run: side layers folded into the fusion")
    full = per_slice * args.slices
    row("forward", "flops_per_volume", full / 1e12, "TFLOP", "as run; GFLOP/s and % of peak below count these")

    # layouts and chunk sizes on whole slices (a subset, extrapolated to the volume)
    images = colour_slices(volumes, channels)
    middle = args.slices // 2
    sweep = images[middle - args.sweep_slices // 2 : middle - args.sweep_slices // 2 + args.sweep_slices]
    slice_loop(model, sweep[:1], 1, True)  # warm-up
    cases = [("layout/nchw_chunk4", 4, False, None), ("layout/channels_last_chunk4", 4, True, None)]
    cases += [(f"chunk/channels_last_{c}", c, True, None) for c in (1, 2, 8, 16) if c <= len(sweep)]
    cases += [("chunk/channels_last_4_bf16", 4, True, torch.bfloat16)]
    for name, chunk, cl, amp in cases:
        local = local_peak(name)
        seconds = best_time(lambda: slice_loop(model, sweep, chunk, cl, amp), 2)  # noqa: B023 (called here)
        volume_seconds = seconds / len(sweep) * args.slices
        row(name, "seconds_volume", volume_seconds, "s", f"{len(sweep)} slices timed, x {args.slices / len(sweep):g}")
        row(name, "gflop_per_s", full / volume_seconds / 1e9, "GFLOP/s")
        row(
            name,
            "pct_of_peak",
            100 * full / volume_seconds / 1e9 / local,
            "%",
            "of the fp32 matmul peak measured just before",
        )

    # whole-volume inference as the workflow runs it
    def run_volume(name, **kwargs):
        flops = []

        def counting(net, batch, device, amp):
            flops.append(forward_flops(model, batch.shape[2], batch.shape[3], batch.shape[0]))
            return infer._forward(net, batch, device, amp)

        local = local_peak(name)
        start = time.perf_counter()
        prob = infer.predict_volume(model, volumes, channels, "cpu", forward=counting, **kwargs)
        seconds = time.perf_counter() - start
        total = sum(flops)
        row(name, "seconds_volume", seconds, "s", f"batch {kwargs.get('batch_size', 4)}")
        row(name, "tflop_run", total / 1e12, "TFLOP", f"{100 * total / full:.0f}% of the whole-slice volume")
        row(name, "gflop_per_s", total / seconds / 1e9, "GFLOP/s")
        row(
            name,
            "pct_of_peak",
            100 * total / seconds / 1e9 / local,
            "%",
            "of the fp32 matmul peak measured just before",
        )
        return prob, seconds

    reference, _ = run_volume("volume/no_crop_fp32", precision="fp32", crop=False)
    head = volumes["flair"] > 0
    ref_mask = reference >= 0.5

    def agreement(name, prob, note=""):
        row(name, "voxels_agree", 100 * np.mean((prob >= 0.5) == ref_mask), "%", "all voxels vs no_crop_fp32" + note)
        row(name, "head_voxels_agree", 100 * np.mean((prob >= 0.5)[head] == ref_mask[head]), "%", "head voxels")
        row(name, "max_prob_diff", float(np.abs(prob - reference).max()), "", "")

    prob, fp32_seconds = run_volume("volume/crop_exact_fp32", precision="fp32")
    agreement("volume/crop_exact_fp32", prob)
    for margin in (32, 16, 0):
        prob, _ = run_volume(f"volume/crop_margin{margin}_fp32", precision="fp32", crop_margin=margin)
        agreement(f"volume/crop_margin{margin}_fp32", prob)
    prob, bf16_seconds = run_volume("volume/crop_exact_bf16", precision="bf16")
    agreement("volume/crop_exact_bf16", prob)
    prob, _ = run_volume("volume/crop_margin0_bf16", precision="bf16", crop_margin=0)
    agreement("volume/crop_margin0_bf16", prob)

    # the whole per-volume path after N4: head mask + requantize + top-hat + FCN
    for name, precision, margin in (
        ("pipeline/fp32", "fp32", infer.CROP_MARGIN),
        ("pipeline/bf16", "bf16", infer.CROP_MARGIN),
        ("pipeline/fp32_margin0", "fp32", 0),
        ("pipeline/bf16_margin0", "bf16", 0),
    ):
        start = time.perf_counter()
        vols = preprocess(flair_raw, t1_raw)
        pre = time.perf_counter() - start
        infer.predict_volume(model, vols, channels, "cpu", precision, crop_margin=margin)
        total = time.perf_counter() - start
        target = 5.0 if precision == "fp32" else 3.0
        row(name, "seconds_preprocess", pre, "s", "head masks + requantize FLAIR, T1 + top-hat")
        row(name, "seconds_total", total, "s", f"target <= {target:g} s: {'met' if total <= target else 'NOT met'}")

    # training throughput with the demo preset's batch and crop
    demo = presets.PRESETS["demo"]
    train_images = images[np.asarray(head.any(axis=(0, 1)))]
    train_labels = np.ascontiguousarray(
        np.where(labels == 2, training_data.IGNORE, labels).transpose(2, 0, 1)[np.asarray(head.any(axis=(0, 1)))]
    ).astype(np.uint8)
    rng = np.random.default_rng(0)
    sampler = training_data.SliceSampler(train_images, train_labels, demo["crop"], demo["lesion_crop_fraction"], rng)
    torch.manual_seed(0)
    net = build_model().to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=demo["weight_decay"])
    weight = torch.tensor([1.0, demo["class_weight"]])

    def step():
        x_np, y_np = sampler.batch(demo["batch_size"])
        x, y = training_data.random_affine(
            to_input(x_np), torch.from_numpy(y_np.astype(np.int64)), rng, demo["scale_range"], demo["rotation_degrees"]
        )
        loss = torch.nn.functional.cross_entropy(
            net(x.contiguous(memory_format=torch.channels_last)), y, weight=weight, ignore_index=training_data.IGNORE
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(args.train_iterations):
        step()
    seconds = time.perf_counter() - start
    speed = args.train_iterations * demo["batch_size"] / seconds
    row(
        "train/demo",
        "slices_per_s",
        speed,
        "slices/s",
        f"batch {demo['batch_size']}, crop {demo['crop']}, {args.train_iterations} iterations; "
        f"demo's {demo['iterations']} iterations ~ {demo['iterations'] * demo['batch_size'] / speed / 60:.1f} min",
    )

    # peak memory of inference alone, in a fresh process that imports only what inference needs
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "volumes.npz"
        np.savez(path, **volumes)
        result = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD, str(path), channels, str(REPO / "workflow")],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, OMP_NUM_THREADS="2"),
        )
        before, after, maxrss = map(float, result.stdout.split())
    row("memory", "peak_rss_before_fcn", before, "MiB", "fresh process: imports + model + 8-bit volumes (VmHWM)")
    row("memory", "peak_rss_inference", after, "MiB", "same process after predict_volume (fp32, batch 4, crop; VmHWM)")
    row(
        "memory",
        "getrusage_maxrss",
        maxrss,
        "MiB",
        "same, ru_maxrss: includes the benchmark process it was spawned from, so an upper bound",
    )

    row("peak", "fp32_matmul_end", matmul_peak(), "GFLOP/s", "again at the end")
    row("machine", "load_average_end", load_average(), "1/5/15 min", "at end (shared machine: timings are noisy)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case", "metric", "value", "unit", "note"])
        writer.writeheader()
        writer.writerows(ROWS)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
