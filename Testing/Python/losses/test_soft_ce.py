"""Cross-entropy with soft targets (``PASegLib.losses.soft_ce``): hand values, its gradient, the one-hot case,
the valid mask and the argument checks."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from PASegLib.losses import LOSSES, SoftCrossEntropyLoss, soft_cross_entropy  # noqa: E402


def _two_voxels():
    # voxel 0: logits (0, 0) -> p = (1/2, 1/2); voxel 1: logits (0, log 3) -> p = (1/4, 3/4)
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]], dtype=torch.float64).T.reshape(1, 2, 2, 1, 1)
    targets = torch.tensor([0.3, 1.0], dtype=torch.float64).reshape(1, 1, 2, 1, 1)  # foreground probabilities
    return logits, targets


def test_hand_values_of_the_foreground_probability_form():
    logits, targets = _two_voxels()
    # voxel 0: -(0.7 log 1/2 + 0.3 log 1/2) = log 2; voxel 1: -(0 log 1/4 + 1 log 3/4) = log 4/3
    expected = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(expected, abs=1e-12)
    valid = torch.tensor([0, 1]).reshape(1, 1, 2, 1, 1)
    assert soft_cross_entropy(logits, targets, valid).item() == pytest.approx(math.log(4.0 / 3.0), abs=1e-12)
    both = torch.cat([1.0 - targets, targets], dim=1)  # the same targets, one channel per class
    assert soft_cross_entropy(logits, both).item() == pytest.approx(expected, abs=1e-12)


def test_gradient_is_p_minus_t_over_the_counted_voxels():
    logits, targets = _two_voxels()
    logits.requires_grad_(True)
    valid = torch.ones(1, 1, 2, 1, 1)
    soft_cross_entropy(logits, targets, valid).backward()
    p = torch.tensor([[0.5, 0.25], [0.5, 0.75]], dtype=torch.float64)  # [class, voxel]
    t = torch.tensor([[0.7, 0.0], [0.3, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(logits.grad.reshape(2, 2), (p - t) / 2)
    assert torch.autograd.gradcheck(lambda z: soft_cross_entropy(z, targets, valid), (logits.detach().clone()
                                                                                    .requires_grad_(True),))


def test_one_hot_targets_give_the_ordinary_cross_entropy_and_torch_agrees():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 3, 2)
    labels = torch.randint(0, 3, (2, 4, 3, 2))
    onehot = torch.nn.functional.one_hot(labels, 3).permute(0, 4, 1, 2, 3).float()
    torch.testing.assert_close(soft_cross_entropy(logits, onehot), torch.nn.functional.cross_entropy(logits, labels))
    soft = torch.softmax(torch.randn(2, 3, 4, 3, 2), dim=1)
    torch.testing.assert_close(soft_cross_entropy(logits, soft), torch.nn.functional.cross_entropy(logits, soft))


def test_no_counted_voxel_gives_an_attached_zero_and_the_registry_builds_it():
    logits, targets = _two_voxels()
    logits.requires_grad_(True)
    loss = LOSSES.build("soft_ce")(logits, targets, torch.zeros(1, 1, 2, 1, 1))
    assert isinstance(LOSSES.build("soft_ce"), SoftCrossEntropyLoss)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_bad_arguments_are_named():
    logits, targets = _two_voxels()
    with pytest.raises(ValueError, match="targets must have shape"):
        soft_cross_entropy(logits, targets[:, :, :1])
    with pytest.raises(ValueError, match="targets must be floating point"):
        soft_cross_entropy(logits, (targets > 0.5).long())
    with pytest.raises(ValueError, match="one channel are the foreground probability of two classes"):
        soft_cross_entropy(torch.zeros(1, 3, 2, 1, 1), targets.float())
    with pytest.raises(ValueError, match="valid must have shape"):
        soft_cross_entropy(logits, targets, torch.ones(1, 2, 1, 1))
