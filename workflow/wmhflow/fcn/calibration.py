"""The mask threshold, chosen on held-out validation subjects and stored with the model.

A network's probabilities are not calibrated the same way on every cohort or after every schedule:
0.5 is a convention, not the best cut. Training holds out its validation subjects (they never train
the weights), so their probability maps tell which threshold gives the masks that agree best with the
references. The criterion is the challenge's headline metric: the **mean per-subject Dice** (label 2
ignored, as the organisers score it) over a grid of thresholds; ties go to the threshold nearest 0.5,
so a flat curve keeps the convention. The choice is made for each test-time augmentation (the
averaged flips are smoother, so their best cut differs) and stored in the model's metadata under
``calibration``; inference reads it unless a threshold is set explicitly.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

#: thresholds tried: 0.05, 0.10, ..., 0.95
THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))
CRITERION = "mean per-subject Dice over the validation subjects (label 2 ignored); ties: nearest 0.5"
#: threshold of a model without calibration (older model files, or trained without validation subjects)
DEFAULT_THRESHOLD = 0.5


def dice_curve(probability: np.ndarray, reference: np.ndarray, grid=THRESHOLD_GRID) -> np.ndarray:
    """Dice of ``probability >= t`` against reference label 1, for every t of ``grid``.

    Counts come from sorted probabilities (one sort instead of a pass over the volume per threshold).
    Label 2 is ignored as in :func:`wmhflow.evaluation.metrics.binarize`: predictions there do not count.
    """
    probability, reference = np.asarray(probability), np.asarray(reference)
    if probability.shape != reference.shape:
        raise ValueError(f"probability shape {probability.shape} differs from the reference shape {reference.shape}")
    scored = reference != 2
    lesion = np.sort(probability[reference == 1].ravel())
    every = np.sort(probability[scored].ravel())
    grid = np.asarray(grid, np.float32)
    true_positive = len(lesion) - np.searchsorted(lesion, grid, side="left")  # p >= t
    predicted = len(every) - np.searchsorted(every, grid, side="left")
    total = predicted + len(lesion)
    return np.where(total == 0, 1.0, 2.0 * true_positive / np.maximum(total, 1))


def choose_threshold(probabilities, references, grid=THRESHOLD_GRID) -> dict:
    """The grid threshold maximising the mean per-subject Dice of ``probabilities`` vs ``references``.

    Returns ``{"threshold", "dice" (mean at it), "dice_at_0.5", "subjects", "grid", "mean_dice"}``.
    """
    probabilities, references = list(probabilities), list(references)
    if not probabilities or len(probabilities) != len(references):
        raise ValueError("threshold calibration needs as many (>= 1) probability maps as references")
    grid = [float(t) for t in grid]
    curves = np.stack([dice_curve(p, r, grid) for p, r in zip(probabilities, references)])
    mean = curves.mean(0)
    # highest mean Dice; among (near-)equal ones the threshold closest to the conventional 0.5
    best = max(range(len(grid)), key=lambda i: (round(float(mean[i]), 6), -abs(grid[i] - 0.5)))
    half = float(np.mean([dice_curve(p, r, [0.5])[0] for p, r in zip(probabilities, references)]))
    return {
        "threshold": grid[best],
        "dice": float(mean[best]),
        "dice_at_0.5": half,
        "subjects": len(probabilities),
        "grid": grid,
        "mean_dice": [round(float(d), 4) for d in mean],
    }


def stored_threshold(meta: dict, tta: str):
    """The threshold a model's metadata stores for a test-time augmentation, or None."""
    value = ((meta or {}).get("calibration") or {}).get("thresholds", {}).get(tta)
    return None if value is None else float(value)
