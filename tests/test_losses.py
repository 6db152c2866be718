"""The training losses (wmhflow.fcn.losses): small-lesion weights and the weighted cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from wmhflow.fcn import losses


def test_small_lesion_weights_follow_the_area_of_each_2d_component():
    target = np.zeros((2, 20, 20), np.int64)
    target[0, 2, 2] = 1  # a 1-pixel lesion
    target[0, 10:18, 10:18] = 1  # a 64-pixel lesion
    target[0, 0, 19] = 255  # ignored pixels keep weight 1 (the loss leaves them out)
    target[1, 5:7, 5:7] = 1  # 4 pixels
    weights = losses.small_lesion_weights(target, weight=4.0, small_area=8.0)
    assert weights.shape == target.shape and weights.dtype == np.float32
    assert weights[0, 2, 2] == pytest.approx(5.0)
    assert weights[0, 12, 12] == pytest.approx(1.0 + 4.0 * 8 / 64)
    assert weights[1, 5, 5] == pytest.approx(5.0)
    assert weights[0, 0, 0] == 1.0 and weights[0, 0, 19] == 1.0
    # diagonal neighbours are one 2D component (8-connected), so two diagonal pixels weigh as area 2
    diagonal = np.zeros((1, 5, 5), np.int64)
    diagonal[0, 1, 1] = diagonal[0, 2, 2] = 1
    assert losses.small_lesion_weights(diagonal, 4.0, 8.0)[0, 1, 1] == pytest.approx(5.0)
    assert np.all(losses.small_lesion_weights(target, 0.0, 8.0) == 1.0)


def test_weighted_cross_entropy_reduces_to_torchs_and_shifts_the_balance_to_small_lesions():
    rng = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 20, 20, generator=rng)
    target = torch.zeros(2, 20, 20, dtype=torch.int64)
    target[0, 2, 2] = 1
    target[0, 10:18, 10:18] = 1
    target[1, 0, :5] = 255
    class_weight = torch.tensor([1.0, 2.0])
    plain = F.cross_entropy(logits, target, weight=class_weight, ignore_index=255)
    assert losses.weighted_cross_entropy(logits, target, class_weight).item() == pytest.approx(plain.item())
    ones = torch.ones(target.shape)
    assert losses.weighted_cross_entropy(logits, target, class_weight, ones).item() == pytest.approx(
        plain.item(), rel=1e-5
    )
    # the network misses the 1-pixel lesion only: the small-lesion weight makes that cost more
    confident = torch.stack([(target != 1).float(), (target == 1).float()], 1) * 8.0 - 4.0
    confident[0, :, 2, 2] = torch.tensor([4.0, -4.0])
    weights = torch.from_numpy(losses.small_lesion_weights(target.numpy(), 4.0, 8.0))
    assert (
        losses.weighted_cross_entropy(confident, target, class_weight, weights).item()
        > 2 * losses.weighted_cross_entropy(confident, target, class_weight).item()
    )
