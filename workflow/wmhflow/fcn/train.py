"""Training the FCN on the slices of the training subjects (paper §2.3), resumable and seeded.

Loss: softmax cross-entropy over pixels (the paper's multinomial logistic loss), averaged over the
pixels of a batch; label 2 ("other pathology") is ignored, as the challenge ignores it in scoring.
The data (slices, crops, random scaling and rotation): :mod:`wmhflow.fcn.training_data`.

The presets and their settings: :mod:`wmhflow.fcn.presets`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import ConfigError
from ..io import atomic_output, label_array, load_nifti
from ..paths import MODEL_FILES
from ..preprocess.quantize import inputs_window
from . import calibration
from .augment import augment_batch
from .device import autocast_dtype, pick_device, prepare, set_threads
from .inputs import load_volumes
from .losses import small_lesion_weights, soft_dice_loss, weighted_cross_entropy
from .model import FCNEnsemble, build_model, save_model
from .presets import resolve_config
from .slices import to_input
from .training_data import IGNORE, SliceSampler, load_training_subject, random_affine, stack_subjects

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ evaluation
@torch.inference_mode()
def slice_dice(model, images, labels, device, batch=8, amp=None) -> float:
    """Dice of the WMH class over a set of whole slices (label 2 ignored), run as inference runs."""
    model.eval()
    inter = total = 0
    for i in range(0, len(images), batch):
        x = to_input(torch.from_numpy(images[i : i + batch]).to(device)).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            pred = model(x).argmax(1).cpu().numpy()
        ref = labels[i : i + batch]
        keep = ref != IGNORE
        inter += int(((pred == 1) & (ref == 1) & keep).sum())
        total += int(((pred == 1) & keep).sum() + (ref == 1).sum())
    model.train()
    return 1.0 if total == 0 else 2.0 * inter / total


# ------------------------------------------------------------------------------------- training
def _phase_at(phases, iteration):
    done = 0
    for phase in phases:
        done += int(phase["iterations"])
        if iteration < done:
            return phase
    return phases[-1]


def _make_optimizer(model, settings):
    first = settings["phases"][0]
    if settings["optimizer"] == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=first["lr"], momentum=first["momentum"], weight_decay=settings["weight_decay"]
        )
    if settings["optimizer"] == "adam":
        return torch.optim.AdamW(model.parameters(), lr=first["lr"], weight_decay=settings["weight_decay"])
    raise ConfigError("train.optimizer", f"{settings['optimizer']!r} is not sgd or adam")


def _weight_averaging(settings):
    """(first iteration averaged, every how many iterations), or None when the preset keeps the last weights.

    ``weight_average: {"start": i, "every": k}`` averages the weights seen after iterations i+k, i+2k, ...
    with equal weight (stochastic weight averaging, Izmailov et al. 2018): the low-lr end of a short
    schedule wanders between nearby minima, and their mean is flatter, costing nothing at inference.
    """
    spec = settings.get("weight_average")
    if not spec:
        return None
    start, every = int(spec.get("start", 0)), int(spec.get("every", 1))
    if every < 1 or not 0 <= start < int(settings["iterations"]):
        raise ConfigError(
            "train.overrides.weight_average",
            f"start {start} must lie in [0, iterations={settings['iterations']}) and every {every} be >= 1",
        )
    return start, every


def _save_checkpoint(path, model, optimizer, iteration, rng, rows, signature, running=(0.0, 0), averaged=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        torch.save(
            {
                "model": model.state_dict(),
                "averaged": None if averaged is None else averaged.state_dict(),
                "optimizer": optimizer.state_dict(),
                "iteration": iteration,
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "rows": rows,
                "running": list(running),
                "signature": signature,
            },
            tmp,
        )


def _write_log(out_dir: Path, rows):
    import pandas as pd

    with atomic_output(out_dir / MODEL_FILES["log"]) as tmp:
        pd.DataFrame(rows, columns=["iteration", "loss", "lr", "slices_per_s", "val_dice"]).to_csv(
            tmp, sep="\t", index=False
        )


def _plot_curve(out_dir: Path, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(its, [r[1] for r in rows], label="training loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    val = [(r[0], r[4]) for r in rows if r[4] == r[4] and r[4] is not None]
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val), "o-", color="tab:orange", label="validation Dice")
        ax2.set_ylabel("validation Dice")
        ax2.set_ylim(0, 1)
    ax.set_title("FCN training")
    fig.tight_layout()
    with atomic_output(out_dir / MODEL_FILES["curve"]) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _shipped(model, averaged):
    """The network training hands on: the weight average once it holds a snapshot, else the last weights."""
    if averaged is not None and int(averaged.n_averaged) > 0:
        return averaged.module
    return model


def _members(settings) -> int:
    """How many networks the model file holds (``members``; 1: one network)."""
    members = int(settings.get("members", 1))
    if members < 1:
        raise ConfigError("train.overrides.members", f"{members} must be at least 1")
    return members


def train(
    flairs,
    t1s,
    tophats,
    references,
    out_dir,
    model_config: dict,
    train_config: dict,
    device="auto",
    threads=None,
    stop_after=None,
):
    """Train, checkpointing under ``out_dir/checkpoints`` and resuming from there; returns the log rows.

    With ``members`` > 1 the model file holds that many networks, each trained with ``iterations`` of
    its own from seed ``seed + k`` on the same subjects, averaged at inference (:class:`FCNEnsemble`)
    and calibrated together; the log numbers their iterations one after the other.
    ``stop_after`` ends the run early after that many iterations (as an interruption would), leaving
    a checkpoint: used to test that resuming gives the same model as an uninterrupted run.
    """
    set_threads(threads)
    settings = resolve_config(train_config)
    averaging = _weight_averaging(settings)  # a bad setting stops before any volume is read
    members = _members(settings)
    out_dir = Path(out_dir)
    channels = model_config.get("channels", "flair,t1,tophat")
    t1s = [t for t in t1s if t] or [None] * len(flairs)
    if not (len(flairs) == len(t1s) == len(tophats) == len(references)) or not flairs:
        raise ConfigError("train", "training needs the same number (>= 1) of FLAIR, T1, top-hat and reference files")
    window = inputs_window(list(flairs) + list(t1s)) or "unknown"  # before any work: one window for all
    subjects = [load_training_subject(*files, channels) for files in zip(flairs, t1s, tophats, references)]
    n_val = min(int(settings["validation_subjects"]), len(subjects) - 1)
    val_subjects, fit_subjects = subjects[:n_val], subjects[n_val:]
    images, labels = stack_subjects(fit_subjects)
    subject_of = np.repeat(np.arange(len(fit_subjects)), [len(s[0]) for s in fit_subjects])
    val_images, val_labels = stack_subjects(val_subjects) if val_subjects else (None, None)
    log.info(
        "training on %d slices of %d subjects (%d lesion pixels), validating on %d subjects%s",
        len(images),
        len(fit_subjects),
        int((labels == 1).sum()),
        len(val_subjects),
        f"; {members} networks, one after the other" if members > 1 else "",
    )
    dev = pick_device(device)
    signature = json.dumps(
        {"settings": settings, "model": model_config, "inputs": list(map(str, flairs))}, sort_keys=True
    )
    data = (images, labels, subject_of, val_images, val_labels)
    total = int(settings["iterations"])
    networks, rows = [], []
    for member in range(members):
        # one network: checkpoints/last.pt as ever; several: checkpoints/member-<k>/last.pt each
        checkpoint = out_dir / "checkpoints" / (f"member-{member}" if members > 1 else "") / "last.pt"
        offset = member * total  # the log numbers the members' iterations one after the other
        stop = None if stop_after is None else stop_after - offset
        if stop is not None and stop <= 0:
            return rows
        network, member_rows, finished = _fit(
            settings, model_config, data, dev, checkpoint, signature, int(settings["seed"]) + member, averaging, stop
        )
        rows += [[r[0] + offset, *r[1:]] for r in member_rows]
        if not finished:
            return rows
        networks.append(network)
    model = networks[0] if members == 1 else FCNEnsemble(networks)
    meta = {
        "name": model_config.get("name", "fcn2d"),
        "channels": channels,
        "train": settings,
        "model": model_config,
        "iterations": total * members,
        # inference refuses volumes requantized with another window (wmhflow.preprocess.quantize)
        "requantize": window,
    }
    # The mask threshold, chosen on the held-out validation subjects and stored with the model.
    meta["calibration"] = calibrate_model(model, list(zip(flairs, t1s, tophats, references))[:n_val], channels, dev)
    model = model.to("cpu").to(memory_format=torch.contiguous_format)
    save_model(out_dir / MODEL_FILES["model"], model, meta)
    with atomic_output(out_dir / MODEL_FILES["config"]) as tmp:
        tmp.write_text(
            yaml.safe_dump({"model": model_config, "train": dict(train_config, resolved=settings)}, sort_keys=False)
        )
    _write_log(out_dir, rows)
    _plot_curve(out_dir, rows)
    return rows


def _fit(settings, model_config, data, dev, checkpoint, signature, seed, averaging, stop_after):
    """(network, log rows, finished) of one network trained from ``seed``, resumed from ``checkpoint``."""
    images, labels, subject_of, val_images, val_labels = data
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    channels = model_config.get("channels", "flair,t1,tophat")
    sampler = SliceSampler(
        images,
        labels,
        int(settings["crop"]),
        float(settings["lesion_crop_fraction"]),
        rng,
        settings.get("lesion_sampling", "pixel"),
        float(settings.get("slice_mix", 0.0)),
        subject_of,
    )
    intensity = settings.get("intensity")  # None / {}: no intensity augmentation (the demo and paper presets)
    use_dice = settings.get("loss", "ce") == "ce+dice"
    small_weight = float(settings.get("small_lesion_weight", 0.0))  # wmhflow.fcn.losses
    small_area = float(settings.get("small_lesion_area", 8.0))

    model = build_model(int(model_config.get("side_maps", 16)), model_config.get("pretrained", "none"))
    model = model.to(dev).to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(model, settings)
    # torch's own SWA container (equal-weight running mean, n_averaged kept in its state for resuming);
    # VGG16 has no batch norm, so no statistics need recomputing after averaging.
    averaged = torch.optim.swa_utils.AveragedModel(model) if averaging else None
    weight = torch.tensor([1.0, float(settings["class_weight"])], device=dev)
    amp = autocast_dtype(dev, "auto")
    prepare(dev)

    iteration, rows, running, seen = 0, [], 0.0, 0
    if checkpoint.is_file():
        # on the CPU: the RNG state must stay a CPU tensor; load_state_dict moves the rest to the device
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("signature") != signature:
            log.warning("ignoring %s: it was made with other settings or inputs", checkpoint)
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if averaged is not None and state.get("averaged") is not None:
                averaged.load_state_dict(state["averaged"])
            iteration, rows = state["iteration"], state["rows"]
            running, seen = state.get("running", (0.0, 0))
            rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["torch_rng"])
            log.info("resuming from %s at iteration %d", checkpoint, iteration)
    total = int(settings["iterations"])
    model.train()
    tic = time.perf_counter()
    while iteration < total:
        phase = _phase_at(settings["phases"], iteration)
        for group in optimizer.param_groups:
            group["lr"] = phase["lr"]
            if "momentum" in group:
                group["momentum"] = phase["momentum"]
        x_np, y_np = sampler.batch(int(settings["batch_size"]))
        if intensity:
            x_np = augment_batch(x_np, channels, rng, intensity)
        x, y = random_affine(
            to_input(x_np),
            torch.from_numpy(y_np.astype(np.int64)),
            rng,
            settings["scale_range"],
            settings["rotation_degrees"],
            bool(settings.get("flip", False)),
        )
        pixel_weight = None
        if small_weight > 0:  # after the affine: the weights follow the labels the network is scored on
            pixel_weight = torch.from_numpy(small_lesion_weights(y.numpy(), small_weight, small_area)).to(dev)
        x = x.to(dev).contiguous(memory_format=torch.channels_last)
        y = y.to(dev)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
        loss = weighted_cross_entropy(logits, y, weight, pixel_weight, IGNORE)
        if use_dice:
            loss = loss + float(settings.get("dice_weight", 1.0)) * soft_dice_loss(logits, y, IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        iteration += 1
        if averaging and iteration > averaging[0] and (iteration - averaging[0]) % averaging[1] == 0:
            averaged.update_parameters(model)
        running += loss.item()
        seen += 1
        last = iteration == total
        if iteration % int(settings["log_every"]) == 0 or last:
            elapsed = time.perf_counter() - tic
            speed = seen * int(settings["batch_size"]) / max(elapsed, 1e-9)
            val = float("nan")
            if val_images is not None and (iteration % int(settings["validate_every"]) == 0 or last):
                val = slice_dice(_shipped(model, averaged), val_images, val_labels, dev, amp=amp)
            rows.append([iteration, running / seen, phase["lr"], speed, val])
            eta = (total - iteration) * int(settings["batch_size"]) / max(speed, 1e-9)
            log.info(
                "iteration %d/%d  loss %.4f  %.1f slices/s  ETA %.0f s%s",
                iteration,
                total,
                running / seen,
                speed,
                eta,
                "" if math.isnan(val) else f"  validation Dice {val:.3f}",
            )
            running, seen, tic = 0.0, 0, time.perf_counter()
        stopping = stop_after is not None and iteration >= stop_after and not last
        if iteration % int(settings["checkpoint_every"]) == 0 or last or stopping:
            _save_checkpoint(checkpoint, model, optimizer, iteration, rng, rows, signature, (running, seen), averaged)
        if stopping:
            log.info("stopping early at iteration %d (checkpoint kept)", iteration)
            return model, rows, False
    return _shipped(model, averaged), rows, True


def calibrate_model(model, subjects, channels, device="cpu", tta_modes=("none", "flip")) -> dict | None:
    """Thresholds for each test-time augmentation, from the validation subjects' files
    (:mod:`wmhflow.fcn.calibration`).

    ``subjects``: (8-bit FLAIR, T1, top-hat, reference) paths, as training reads them. Inference runs
    exactly as ``wmhflow infer`` runs it (head cropping, the flip along the image's own left-right
    axis). None when there is no validation subject.
    """
    from .infer import left_right_axis, predict_volume

    subjects = list(subjects)
    if not subjects:
        log.info("no validation subject: the model keeps the default threshold %.2f", calibration.DEFAULT_THRESHOLD)
        return None
    volumes, references = [], []
    for flair, t1, tophat, reference in subjects:
        vols, flair_img = load_volumes(flair, t1, tophat, channels)
        volumes.append((vols, left_right_axis(flair_img.affine)))
        references.append(label_array(load_nifti(reference, "reference"), reference))  # the one label check
    result = {"criterion": calibration.CRITERION, "subjects": len(subjects), "thresholds": {}}
    for mode in tta_modes:
        probabilities = [
            predict_volume(model, vols, channels, device, "auto", 8, tta=mode, flip_axis=axis) for vols, axis in volumes
        ]
        chosen = calibration.choose_threshold(probabilities, references)
        result["thresholds"][mode] = chosen["threshold"]
        result[mode] = {k: chosen[k] for k in ("threshold", "dice", "dice_at_0.5", "grid", "mean_dice")}
        log.info(
            "calibration (tta %s) on %d validation subject(s): threshold %.2f, Dice %.3f (%.3f at 0.5)",
            mode,
            len(subjects),
            chosen["threshold"],
            chosen["dice"],
            chosen["dice_at_0.5"],
        )
    return result


def add_arguments(parser) -> None:
    parser.add_argument("--flair", nargs="+", required=True, help="8-bit FLAIRs of the training subjects")
    parser.add_argument("--t1", nargs="*", default=[], help="8-bit T1s, same order (none for FLAIR-only channels)")
    parser.add_argument("--tophat", nargs="+", required=True, help="top-hats, same order")
    parser.add_argument("--reference", nargs="+", required=True, help="reference labels, same order")
    parser.add_argument("--config-json", required=True, help='JSON {"model": {...}, "train": {...}}')
    parser.add_argument("--out-dir", required=True, help="models/<name>/")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)


def main(args) -> int:
    config = json.loads(args.config_json)
    train(
        args.flair,
        args.t1,
        args.tophat,
        args.reference,
        args.out_dir,
        config.get("model", {}),
        config.get("train", {}),
        args.device,
        args.threads,
    )
    return 0
