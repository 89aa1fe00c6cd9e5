"""Partial CE + Dice (Eq. 3–5), variance minimization (Eq. 9–10) and the stage-1 ramp-up, on tiny tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PASegLib.losses import LOSSES  # noqa: E402
from PASegLib.losses.partial import (  # noqa: E402
    PartialCEDiceLoss,
    partial_ce_dice_terms,
    partial_cross_entropy,
    partial_dice,
)
from PASegLib.losses.schedule import Stage1LossWeights, sigmoid_rampup  # noqa: E402
from PASegLib.losses.variance import (  # noqa: E402
    VarianceMinimizationLoss,
    above_minimum_mask,
    variance_minimization,
)


def _binary_logits(p_fg):
    """Logits [1, 2, n, 1, 1] whose softmax foreground probability is ``p_fg``."""
    p = torch.tensor(p_fg, dtype=torch.float64)
    fg = torch.log(p / (1 - p))
    return torch.stack([torch.zeros_like(fg), fg]).reshape(1, 2, -1, 1, 1)


def _labels(values):
    return torch.tensor(values, dtype=torch.int64).reshape(1, 1, -1, 1, 1)


# ---------------------------------------------------------------- partial CE + Dice


def test_partial_ce_dice_hand_values():
    # p = foreground probabilities; voxel 2 is unlabeled (label 2).
    logits = _binary_logits([0.8, 0.3, 0.6, 0.9])
    labels = _labels([1, 0, 2, 1])
    terms = partial_ce_dice_terms(logits, labels, eps=0.0)
    # Eq. 4 over the 3 labeled voxels: -(log 0.8 + log 0.7 + log 0.9) / 3
    ce = -(math.log(0.8) + math.log(0.7) + math.log(0.9)) / 3
    # Eq. 5: 1 - 2 (0.8 + 0.9) / ((0.64 + 0.09 + 0.81) + (1 + 0 + 1))
    dice = 1 - 2 * (0.8 + 0.9) / ((0.64 + 0.09 + 0.81) + 2.0)
    assert terms["ce"].item() == pytest.approx(ce, abs=1e-12)
    assert terms["dice"].item() == pytest.approx(dice, abs=1e-12)
    assert terms["loss"].item() == pytest.approx((ce + dice) / 2, abs=1e-12)
    assert PartialCEDiceLoss(eps=0.0)(logits, labels).item() == pytest.approx((ce + dice) / 2, abs=1e-12)
    assert partial_cross_entropy(logits, labels).item() == pytest.approx(ce, abs=1e-12)
    assert partial_dice(logits, labels, eps=0.0).item() == pytest.approx(dice, abs=1e-12)


def test_partial_ce_matches_torch_cross_entropy_with_ignore_index():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 5, 4, 3, generator=gen)
    labels = torch.randint(0, 3, (2, 1, 5, 4, 3), generator=gen)
    labels[:, :, 0, 0, 0] = 1  # every sample has labels
    # per-sample mean then batch mean, as documented
    expected = np.mean([
        torch.nn.functional.cross_entropy(logits[b : b + 1], labels[b : b + 1, 0], ignore_index=2).item()
        for b in range(2)
    ])
    assert partial_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_unlabeled_voxels_are_really_ignored():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 2, 6, 5, 3, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (1, 1, 6, 5, 3), generator=gen)
    loss_fn = PartialCEDiceLoss()
    unlabeled = (labels == 2).expand_as(logits)
    changed = logits.clone()
    changed[unlabeled] = torch.randn(int(unlabeled.sum()), generator=gen, dtype=torch.float64) * 10
    assert loss_fn(changed, labels).item() == pytest.approx(loss_fn(logits, labels).item(), abs=1e-12)
    logits.requires_grad_(True)
    loss_fn(logits, labels).backward()
    assert torch.all(logits.grad[unlabeled] == 0)
    assert torch.any(logits.grad[~unlabeled] != 0)


def test_invalid_voxels_act_like_unlabeled():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 2, 6, 5, 3, generator=gen)
    labels = torch.randint(0, 2, (1, 1, 6, 5, 3), generator=gen)
    valid = torch.ones_like(labels, dtype=torch.bool)
    valid[..., 4:, :, :] = False
    as_unlabeled = torch.where(valid, labels, torch.full_like(labels, 2))
    a = partial_ce_dice_terms(logits, labels, valid)
    b = partial_ce_dice_terms(logits, as_unlabeled)
    for key in ("ce", "dice", "loss"):
        assert a[key].item() == pytest.approx(b[key].item(), abs=1e-6)


def test_multiclass_and_background_dice_against_numpy():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 3, 4, 3, 2, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 4, (1, 1, 4, 3, 2), generator=gen)
    labels[labels == 3] = 2  # labels 0, 1 and unlabeled 5 below
    labels[0, 0, 0, 0, 0] = 5
    z = logits.numpy().reshape(3, -1)
    prob = np.exp(z) / np.exp(z).sum(0)
    y = labels.numpy().reshape(-1)
    keep = y != 5
    q = np.eye(3)[y[keep]].T
    p = prob[:, keep]
    ce = -np.mean(np.log(p[y[keep], np.arange(keep.sum())]))
    dice = 1 - 2 * (p * q).sum(1) / ((p**2).sum(1) + (q**2).sum(1))
    fg = partial_ce_dice_terms(logits, labels, ignore_index=5, eps=0.0)
    assert fg["ce"].item() == pytest.approx(ce, abs=1e-12)
    assert fg["dice"].item() == pytest.approx(dice[1:].mean(), abs=1e-12)
    allc = partial_ce_dice_terms(logits, labels, ignore_index=5, include_background=True, eps=0.0)
    assert allc["dice"].item() == pytest.approx(dice.mean(), abs=1e-12)


def test_batch_without_labels_is_zero_and_differentiable():
    logits = torch.randn(2, 2, 3, 3, 2, requires_grad=True)
    labels = torch.full((2, 1, 3, 3, 2), 2)
    terms = PartialCEDiceLoss(eps=0.0).terms(logits, labels)
    assert all(v.item() == 0.0 for v in terms.values())
    terms["loss"].backward()
    assert torch.all(logits.grad == 0)
    # one sample unlabeled: the loss equals the other sample's loss
    labels[1, 0, 0, 0, 0] = 1
    labels[1, 0, 1, 0, 0] = 0
    both = partial_ce_dice_terms(logits, labels)["loss"].item()
    only = partial_ce_dice_terms(logits[1:], labels[1:])["loss"].item()
    assert both == pytest.approx(only, abs=1e-6)


def test_partial_loss_gradcheck():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(1, 2, 3, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = _labels([0, 1, 2, 1, 0, 2, 2, 1, 0, 1, 2, 0]).reshape(1, 1, 3, 2, 2)
    assert torch.autograd.gradcheck(lambda p: partial_ce_dice_terms(p, labels)["loss"], (logits,))


@pytest.mark.parametrize(
    "logits_shape, labels_shape, match",
    [
        ((1, 2, 4, 4, 2), (1, 4, 4, 2), "labels must have shape"),
        ((1, 2, 4, 4, 2), (1, 1, 4, 4, 3), "labels must have shape"),
        ((1, 1, 4, 4, 2), (1, 1, 4, 4, 2), "C >= 2"),
        ((2, 2), (2, 1), "spatial"),
    ],
)
def test_partial_loss_shape_errors(logits_shape, labels_shape, match):
    with pytest.raises(ValueError, match=match):
        PartialCEDiceLoss()(torch.zeros(logits_shape), torch.zeros(labels_shape, dtype=torch.int64))


def test_partial_loss_label_errors():
    logits = torch.zeros(1, 2, 2, 2, 1)
    labels = torch.zeros(1, 1, 2, 2, 1, dtype=torch.int64)
    labels[0, 0, 0, 0, 0] = 3
    with pytest.raises(ValueError, match=r"\[3\]"):
        PartialCEDiceLoss()(logits, labels)
    with pytest.raises(ValueError, match="outside"):
        PartialCEDiceLoss()(logits, torch.full((1, 1, 2, 2, 1), 0.5))
    with pytest.raises(ValueError, match="ignore_index=1"):
        PartialCEDiceLoss(ignore_index=1)(logits, torch.zeros_like(labels))
    with pytest.raises(ValueError, match="valid must have shape"):
        PartialCEDiceLoss()(logits, torch.zeros_like(labels), torch.ones(1, 1, 2, 2, 2))
    with pytest.raises(ValueError, match="eps"):
        PartialCEDiceLoss(eps=-1.0)
    with pytest.raises(ValueError, match="floating-point"):
        PartialCEDiceLoss()(torch.zeros(1, 2, 2, 2, 1, dtype=torch.int64), torch.zeros_like(labels))
    # float labels with integral values are accepted
    assert torch.isfinite(PartialCEDiceLoss()(logits, torch.ones(1, 1, 2, 2, 1)))


# ---------------------------------------------------------------- variance minimization


def _vm_numpy(logits, image, valid):
    total = []
    for b in range(logits.shape[0]):
        z = logits[b].reshape(logits.shape[1], -1)
        p = np.exp(z) / np.exp(z).sum(0)
        x = image[b].reshape(image.shape[1], -1)
        m = valid[b].reshape(-1).astype(bool)
        loss = 0.0
        for c in range(p.shape[0]):
            pc = p[c, m]
            for h in range(x.shape[0]):
                xc = x[h, m]
                u = (xc * pc).sum() / pc.sum()  # Eq. 9
                loss += ((xc - u) ** 2 * pc).sum() / pc.sum() / x.shape[0]  # Eq. 10
        total.append(loss)
    return float(np.mean(total))


def test_vm_hand_value():
    # p = 0.5 everywhere -> u_f = u_b = 1.5; each variance = mean((x - 1.5)^2) = 1.25; sum = 2.5
    logits = torch.zeros(1, 2, 4, 1, 1)
    image = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 1, 4, 1, 1)
    assert variance_minimization(logits, image, eps=0.0).item() == pytest.approx(2.5, abs=1e-6)


def test_vm_matches_numpy_with_valid():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 2, 5, 4, 3, generator=gen, dtype=torch.float64)
    image = torch.randn(2, 1, 5, 4, 3, generator=gen, dtype=torch.float64)
    valid = torch.rand(2, 1, 5, 4, 3, generator=gen) > 0.3
    got = VarianceMinimizationLoss(eps=0.0)(logits, image, valid).item()
    assert got == pytest.approx(_vm_numpy(logits.numpy(), image.numpy(), valid.numpy()), abs=1e-10)
    no_valid = variance_minimization(logits, image, eps=0.0).item()
    expected = _vm_numpy(logits.numpy(), image.numpy(), np.ones((2, 1, 5, 4, 3)))
    assert no_valid == pytest.approx(expected, abs=1e-10)


def test_vm_padding_outside_valid_is_excluded_and_channels_average():
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(1, 2, 4, 4, 2, generator=gen)
    image = torch.randn(1, 1, 4, 4, 2, generator=gen)
    base = variance_minimization(logits, image).item()
    pad_logits = torch.nn.functional.pad(logits, (0, 0, 0, 0, 0, 3), value=5.0)
    pad_image = torch.nn.functional.pad(image, (0, 0, 0, 0, 0, 3), value=-100.0)
    valid = torch.zeros(1, 1, 7, 4, 2, dtype=torch.bool)
    valid[:, :, :4] = True
    assert variance_minimization(pad_logits, pad_image, valid).item() == pytest.approx(base, rel=1e-5)
    two_channels = torch.cat([image, image], dim=1)
    assert variance_minimization(logits, two_channels).item() == pytest.approx(base, rel=1e-6)


def test_vm_gradient_and_empty_valid():
    logits = torch.randn(2, 2, 3, 3, 2, requires_grad=True)
    image = torch.randn(2, 1, 3, 3, 2)
    valid = torch.zeros(2, 1, 3, 3, 2)
    assert variance_minimization(logits, image, valid).item() == 0.0
    valid[1] = 1
    loss = variance_minimization(logits, image, valid)
    assert loss.item() == pytest.approx(variance_minimization(logits[1:], image[1:]).item(), rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[0] == 0) and torch.any(logits.grad[1] != 0)


def test_vm_errors_and_above_minimum_mask():
    logits = torch.zeros(1, 2, 3, 3, 2)
    with pytest.raises(ValueError, match="image must have shape"):
        variance_minimization(logits, torch.zeros(1, 1, 3, 3, 3))
    with pytest.raises(ValueError, match="valid must have shape"):
        variance_minimization(logits, torch.zeros(1, 1, 3, 3, 2), torch.ones(1, 2, 3, 3, 2))
    with pytest.raises(ValueError, match="C >= 2"):
        variance_minimization(torch.zeros(1, 1, 3, 3, 2), torch.zeros(1, 1, 3, 3, 2))
    with pytest.raises(ValueError, match="eps"):
        VarianceMinimizationLoss(eps=-1.0)
    image = torch.tensor([0.0, 0.0, 1.0, 2.0]).reshape(1, 1, 4, 1, 1)
    assert above_minimum_mask(image).reshape(-1).tolist() == [False, False, True, True]


# ---------------------------------------------------------------- schedule and registry


def test_sigmoid_rampup_values():
    assert sigmoid_rampup(0, length=30) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(15, length=30) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(30, length=30) == 1.0
    assert sigmoid_rampup(100, length=30) == 1.0
    assert sigmoid_rampup(-3, length=30) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(7, length=0) == 1.0
    with pytest.raises(ValueError, match="length"):
        sigmoid_rampup(1, length=-1)


def test_stage1_weights_combine():
    weights = Stage1LossWeights()
    assert (weights.alpha, weights.beta, weights.rampup_length) == (1.0, 0.1, 30.0)
    w = math.exp(-1.25)
    assert weights.regularizer_weights(15) == pytest.approx((w, 0.1 * w))
    assert weights.combine(psup=1.0, mcrf=2.0, vm=3.0, epoch=40) == pytest.approx(1.0 + 2.0 + 0.3)
    total = weights.combine(psup=torch.tensor(1.0), mcrf=torch.tensor(2.0), vm=torch.tensor(3.0), epoch=15)
    assert total.item() == pytest.approx(1.0 + w * (2.0 + 0.3))
    with pytest.raises(ValueError, match="beta"):
        Stage1LossWeights(beta=-0.1)


def test_loss_registry():
    assert {"partial_ce_dice", "variance"} <= set(LOSSES.names())
    assert isinstance(LOSSES.build("partial_ce_dice", ignore_index=2), PartialCEDiceLoss)
    assert isinstance(LOSSES.build("variance"), VarianceMinimizationLoss)
    with pytest.raises(ValueError, match="unknown loss"):
        LOSSES.build("nope")
