"""Box-tightness prior of the click boxes (PASegLib.losses.box_prior), on tiny tensors with hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PASegLib.losses import LOSSES  # noqa: E402
from PASegLib.losses.box_prior import BoxTightnessLoss, box_tightness_terms  # noqa: E402

BOX = ((1, 1, 1), (4, 4, 4))  # 4×4×4 box in a 6×6×6 patch; central range (shrink 0.5) is {2, 3} on each axis


def _logits(p):
    """Logits [B, 2, I, J, K] (float64) whose softmax foreground probability is ``p [B, I, J, K]``."""
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)


def _line_map():
    """p = 0.1 everywhere, 0.2 on the i-line (j, k) = (2, 2) inside the box."""
    p = torch.full((1, 6, 6, 6), 0.1, dtype=torch.float64)
    p[0, 1:5, 2, 2] = 0.2
    return p


def test_tightness_hand_values():
    terms = BoxTightnessLoss().terms(_logits(_line_map()), [[BOX]])
    # Lines along i at (j, k) ∈ {2,3}²: (2,2) sums 4·0.2 = 0.8 → (1 − 0.8)² = 0.04;
    # the three others sum 0.4 → 0.36.
    t_i = (0.04 + 3 * 0.36) / 4  # 0.28
    # Lines along j at (i, k) ∈ {2,3}²: (2,2) and (3,2) hold one 0.2 voxel: 0.5 → 0.25; the others 0.4 → 0.36.
    t_j = (0.25 + 0.25 + 0.36 + 0.36) / 4  # 0.305
    t_k = t_j  # symmetric
    assert terms["tightness"].item() == pytest.approx((t_i + t_j + t_k) / 3, abs=1e-12)  # 0.29667
    assert terms["tightness"].item() == pytest.approx(0.89 / 3, abs=1e-12)
    assert terms["extent"].item() == 0.0  # every 4×4 slice holds ≥ 1.6 ≥ w = 1
    assert terms["loss"].item() == pytest.approx(0.89 / 3, abs=1e-12)


def test_extent_hand_values_with_min_width_2():
    loss_fn = BoxTightnessLoss(min_width=2.0, extent_weight=0.5)
    terms = loss_fn.terms(_logits(_line_map()), [[BOX]])
    # Tightness with w = 2: 0.8 → (1.2/2)² = 0.36, 0.5 → (1.5/2)² = 0.5625, 0.4 → (1.6/2)² = 0.64.
    t_i = (0.36 + 3 * 0.64) / 4  # 0.57
    t_j = (2 * 0.5625 + 2 * 0.64) / 4  # 0.60125
    assert terms["tightness"].item() == pytest.approx((t_i + 2 * t_j) / 3, abs=1e-12)
    # Slices (whole 4×4 box cross-section) at i ∈ {2, 3}: 15·0.1 + 0.2 = 1.7 → (0.3/2)² = 0.0225 each.
    # At j = 2: 12·0.1 + 4·0.2 = 2.0 → 0; j = 3: 16·0.1 = 1.6 → (0.4/2)² = 0.04. Same across k.
    e = (0.0225 + (0 + 0.04) / 2 + (0 + 0.04) / 2) / 3  # 0.0625 / 3
    assert terms["extent"].item() == pytest.approx(e, abs=1e-12)
    assert terms["loss"].item() == pytest.approx((t_i + 2 * t_j) / 3 + 0.5 * e, abs=1e-12)
    assert loss_fn(_logits(_line_map()), [[BOX]]).item() == pytest.approx(terms["loss"].item(), abs=1e-15)


def test_zero_when_every_central_line_crosses_the_object():
    p = torch.full((1, 6, 6, 6), 1e-4, dtype=torch.float64)
    p[0, 2:4, 2:4, 2:4] = 0.9999  # 2×2×2 object at the box centre: every central line holds ~2 voxels
    terms = BoxTightnessLoss(extent_weight=1.0).terms(_logits(p), [[BOX]])
    assert terms["tightness"].item() == 0.0
    assert terms["extent"].item() == 0.0
    # An object off the centre misses the central lines.
    q = torch.full((1, 6, 6, 6), 1e-4, dtype=torch.float64)
    q[0, 1:3, 1:3, 1:3] = 0.9999
    assert BoxTightnessLoss()(_logits(q), [[BOX]]).item() > 0.1


def test_gradient_raises_probability_on_violated_lines_only():
    logits = _logits(_line_map()).requires_grad_(True)
    loss = BoxTightnessLoss()(logits, [[BOX]])
    loss.backward()
    grad = logits.grad[0, 1]
    on_line = torch.zeros(6, 6, 6, dtype=torch.bool)
    for axis in range(3):  # voxels of the central lines
        index = [slice(2, 4)] * 3
        index[axis] = slice(1, 5)
        on_line[tuple(index)] = True
    assert bool((grad[on_line] < 0).all())  # raising the foreground logit lowers the loss
    assert bool((grad[~on_line] == 0).all())
    assert torch.allclose(logits.grad[0, 0], -grad)  # softmax over two channels
    stepped = (logits.detach() - 0.1 * logits.grad)
    assert BoxTightnessLoss()(stepped, [[BOX]]).item() < loss.item()


def test_box_beyond_the_patch_constrains_only_complete_lines():
    p = torch.full((1, 6, 6, 6), 0.1, dtype=torch.float64)
    p[0, :, :, 0] = 0.25
    box = ((1, 1, -3), (4, 4, 3))  # sticks out of the patch along k (k = -3 … 3)
    # Central k range: centre 0, half 3 → |k| <= 1.5 → {-1, 0, 1} → {0, 1} inside the patch.
    # Lines along i at (j, k) ∈ {2,3}×{0,1}: k = 0 sums 4·0.25 = 1.0 → 0; k = 1 sums 0.4 → 0.36. Mean 0.18.
    # Lines along j at (i, k) ∈ {2,3}×{0,1}: the same, 0.18. Lines along k are cut by the border: none.
    # (If the cut k-lines counted, k = 0…3 would sum 0.55 → 0.2025 and the loss would be 0.1875.)
    assert BoxTightnessLoss()(_logits(p), [[box]]).item() == pytest.approx(0.18, abs=1e-12)
    logits = _logits(p).requires_grad_(True)
    BoxTightnessLoss()(logits, [[box]]).backward()
    assert logits.grad[0, 1, 2, 2, 3].item() == 0.0  # only on a (cut) k-line
    assert logits.grad[0, 1, 2, 2, 1].item() < 0.0
    # Extent: slices across i and j need the whole k range of the box inside the patch → none; across k the
    # slices k ∈ {0, 1} (4×4 box cross-section): 16·0.25 = 4 → 0 and 1.6 → (0.4/2)² = 0.04 with w = 2.
    terms = BoxTightnessLoss(min_width=2.0).terms(_logits(p), [[box]])
    assert terms["extent"].item() == pytest.approx(0.02, abs=1e-12)
    # A box entirely outside the patch constrains nothing.
    assert BoxTightnessLoss()(_logits(p), [[((7, 7, 7), (9, 9, 9))]]).item() == 0.0


def test_invalid_voxels_drop_lines_and_slices_touching_padding():
    valid = torch.ones(1, 1, 6, 6, 6)
    valid[0, 0, 1, 2, 2] = 0  # end voxel of the i-line (2, 2); on no central j- or k-line
    terms = BoxTightnessLoss().terms(_logits(_line_map()), [[BOX]], valid)
    t_i = 0.36  # the three remaining i-lines
    t_j = 0.305
    assert terms["tightness"].item() == pytest.approx((t_i + 2 * t_j) / 3, abs=1e-12)  # 0.97 / 3
    # Extent, w = 2: the slices j = 2 and k = 2 contain the padding voxel and drop out.
    terms = BoxTightnessLoss(min_width=2.0).terms(_logits(_line_map()), [[BOX]], valid)
    assert terms["extent"].item() == pytest.approx((0.0225 + 0.04 + 0.04) / 3, abs=1e-12)
    # All padding: nothing constrained, still attached.
    logits = _logits(_line_map()).requires_grad_(True)
    loss = BoxTightnessLoss(extent_weight=1.0)(logits, [[BOX]], torch.zeros(1, 1, 6, 6, 6))
    loss.backward()
    assert loss.item() == 0.0 and bool((logits.grad == 0).all())


def test_lines_are_pooled_over_boxes_and_samples_per_axis():
    p = torch.full((2, 9, 9, 9), 0.1, dtype=torch.float64)
    small = ((5, 5, 5), (7, 7, 7))  # 3×3×3 box: one central line per axis (centre 6), sum 0.3 → 0.49
    p[0, 1:5, 1:5, 1:5] = 0.3  # the 4×4×4 box of sample 0: every line sums 1.2 → 0
    p[1, 1:5, 1:5, 1:5] = 0.3
    loss = BoxTightnessLoss()(_logits(p), [[BOX, small], []])
    assert loss.item() == pytest.approx(0.49 / 5, abs=1e-12)  # per axis: (4·0 + 1·0.49) / 5 lines
    assert BoxTightnessLoss()(_logits(p), [[BOX], [small]]).item() == pytest.approx(0.49 / 5, abs=1e-12)
    # numpy boxes are accepted as well
    boxes = [np.array([[[1, 1, 1], [4, 4, 4]], [[5, 5, 5], [7, 7, 7]]]), []]
    assert BoxTightnessLoss()(_logits(p), boxes).item() == pytest.approx(0.49 / 5, abs=1e-12)


def test_central_range_rules():
    p = torch.full((1, 12, 12, 12), 0.05, dtype=torch.float64)  # every line violated
    logits = _logits(p).requires_grad_(True)
    # 10-wide box 1…10: centre 5.5, half 4.5; shrink 0.5 keeps |x − 5.5| <= 2.25 → 4…7 (4 lines per axis).
    BoxTightnessLoss()(logits, [[((1, 1, 1), (10, 10, 10))]]).backward()
    touched = (logits.grad[0, 1] != 0)
    assert touched[1:11, 4:8, 4:8].all() and int(touched.sum()) == 10 * 16 * 3 - 3 * 4 * 16 + 64
    # shrink 0 keeps the two voxels nearest the centre (an even width) or the central one (odd width).
    logits.grad = None
    BoxTightnessLoss(shrink=0.0)(logits, [[((1, 1, 1), (10, 10, 10))]]).backward()
    assert int((logits.grad[0, 1, 1:11, 5:7, 5:7] != 0).sum()) == 40
    logits.grad = None
    BoxTightnessLoss(shrink=0.0)(logits, [[((1, 1, 1), (9, 9, 9))]]).backward()
    assert int((logits.grad[0, 1] != 0).sum()) == 3 * 9 - 2


def test_empty_boxes_give_an_attached_zero():
    logits = torch.randn(2, 2, 6, 6, 6, requires_grad=True)
    terms = BoxTightnessLoss(extent_weight=1.0).terms(logits, [[], ()])
    assert all(v.item() == 0.0 for v in terms.values())
    terms["loss"].backward()
    assert logits.grad is not None and bool((logits.grad == 0).all())


def test_float32_under_autocast_and_multiclass():
    logits = torch.randn(1, 3, 6, 6, 6).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = BoxTightnessLoss()(logits, [[BOX]])
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shrink": 1.5}, "shrink must be a number in [0.0, 1.0], got 1.5"),
        ({"min_width": 0}, "min_width must be a finite number > 0.0, got 0"),
        ({"extent_weight": -1.0}, "extent_weight must be a finite number >= 0.0, got -1.0"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError) as err:
        BoxTightnessLoss(**kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize(
    "logits, boxes, valid, message",
    [
        (torch.zeros(2, 6, 6, 6), [[BOX]], None,
         "logits must be a floating-point tensor [B, C, I, J, K], got shape (2, 6, 6, 6)"),
        (torch.zeros(1, 2, 6, 6, 6, dtype=torch.int64), [[BOX]], None,
         "logits must be a floating-point tensor [B, C, I, J, K], got dtype torch.int64 of shape (1, 2, 6, 6, 6)"),
        ([[0.0]], [[BOX]], None, "logits must be a floating-point tensor [B, C, I, J, K], got list"),
        (torch.zeros(1, 1, 6, 6, 6), [[BOX]], None,
         "logits must have C >= 2 channels (softmax logits), got C=1 in shape (1, 1, 6, 6, 6)"),
        (torch.zeros(1, 2, 6, 6, 6), [[BOX]], torch.ones(1, 6, 6, 6),
         "valid must have shape (1, 1, 6, 6, 6), one channel on the grid of logits (1, 2, 6, 6, 6); "
         "got (1, 6, 6, 6)"),
        (torch.zeros(1, 2, 6, 6, 6), [[BOX], []], None, "boxes must have one entry per sample: expected B=1, got 2"),
        (torch.zeros(1, 2, 6, 6, 6), 5, None,
         "boxes must be a sequence of length B=1 (one list of (lo, hi) per sample), got int"),
        (torch.zeros(1, 2, 6, 6, 6), [3], None, "boxes[0] must be a sequence of (lo, hi) boxes, got 3"),
        (torch.zeros(1, 2, 6, 6, 6), [[(1, 2, 3)]], None, "boxes[0][0] must be a pair (lo, hi), got (1, 2, 3)"),
        (torch.zeros(1, 2, 6, 6, 6), [[((1, 1), (4, 4, 4))]], None,
         "boxes[0][0] lo must be 3 integers, got (1, 1)"),
        (torch.zeros(1, 2, 6, 6, 6), [[BOX, ((1, 1, 1), (4, 4.5, 4))]], None,
         "boxes[0][1] hi must be 3 integers, got (4, 4.5, 4)"),
        (torch.zeros(1, 2, 6, 6, 6), [[((1, 5, 1), (4, 4, 4))]], None,
         "boxes[0][0] must have lo <= hi on every axis, got lo=(1, 5, 1), hi=(4, 4, 4)"),
    ],
)
def test_bad_inputs(logits, boxes, valid, message):
    with pytest.raises(ValueError) as err:
        box_tightness_terms(logits, boxes, valid)
    assert str(err.value) == message


def test_registry_build():
    loss_fn = LOSSES.build("box_prior", shrink=0.25, min_width=2.0, extent_weight=0.5)
    assert isinstance(loss_fn, BoxTightnessLoss)
    assert (loss_fn.shrink, loss_fn.min_width, loss_fn.extent_weight) == (0.25, 2.0, 0.5)
    assert "box_prior" in LOSSES.names()
    assert repr(loss_fn) == "BoxTightnessLoss(shrink=0.25, min_width=2.0, extent_weight=0.5)"
