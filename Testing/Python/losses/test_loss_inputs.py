"""The losses' shared argument vocabulary and input checks (PASegLib.losses.inputs)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PASegLib.losses import (  # noqa: E402
    LOSSES,
    BoxTightnessLoss,
    ContrastiveVarianceLoss,
    ExtremePointLoss,
    KnowledgeDistillationLoss,
    MultiViewCRFLoss,
    PartialCEDiceLoss,
    SelfCrossMonitoringLoss,
    VarianceMinimizationLoss,
    above_minimum_mask,
    contrastive_variance_terms,
    extreme_point_loss,
    partial_ce_dice_terms,
    variance_minimization,
)
from PASegLib.losses.box_prior import box_tightness_terms  # noqa: E402
from PASegLib.losses.crf import multi_view_crf_loss  # noqa: E402
from PASegLib.losses.distillation import knowledge_distillation, pseudo_labels  # noqa: E402
from PASegLib.losses.inputs import (  # noqa: E402
    check_boxes,
    check_label_values,
    check_logits,
    check_map,
    check_same_shape,
    check_tensor,
    check_valid,
)
from PASegLib.losses.partial import partial_cross_entropy, partial_dice  # noqa: E402
from PASegLib.losses.smoothing import masked_gaussian_smooth  # noqa: E402

#: the tensor arguments a loss may take (options are keyword-only)
VOCABULARY = {"logits", "labels", "valid", "image", "points", "boxes", "student_logits", "teacher_logits",
              "self_teacher_logits", "cross_teacher_logits"}

FUNCTIONS = [
    partial_ce_dice_terms, partial_cross_entropy, partial_dice, variance_minimization, multi_view_crf_loss,
    box_tightness_terms, contrastive_variance_terms, extreme_point_loss, knowledge_distillation, pseudo_labels,
    PartialCEDiceLoss.forward, PartialCEDiceLoss.terms, VarianceMinimizationLoss.forward, MultiViewCRFLoss.forward,
    BoxTightnessLoss.forward, BoxTightnessLoss.terms, ContrastiveVarianceLoss.forward, ContrastiveVarianceLoss.terms,
    ExtremePointLoss.forward, KnowledgeDistillationLoss.forward, SelfCrossMonitoringLoss.forward,
    SelfCrossMonitoringLoss.terms,
]


@pytest.mark.parametrize("fn", FUNCTIONS, ids=[f.__qualname__ for f in FUNCTIONS])
def test_tensor_arguments_use_the_vocabulary(fn):
    params = inspect.signature(fn).parameters.values()
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"]
    assert positional and set(positional) <= VOCABULARY, positional


def _inputs():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 6, 5, 4, generator=gen, dtype=torch.float64)
    image = torch.randn(2, 1, 6, 5, 4, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1, 6, 5, 4), generator=gen)
    valid = torch.rand(2, 1, 6, 5, 4, generator=gen) > 0.2
    points = torch.rand(2, 1, 6, 5, 4, generator=gen, dtype=torch.float64)
    return logits, image, labels, valid, points


def test_keyword_calls_match_positional_calls():
    logits, image, labels, valid, points = _inputs()
    teacher = torch.randn_like(logits)
    boxes = [[((1, 1, 1), (4, 3, 2))], []]
    pairs = [
        (LOSSES.build("partial_ce_dice")(logits=logits, labels=labels, valid=valid),
         PartialCEDiceLoss()(logits, labels, valid)),
        (LOSSES.build("variance")(logits=logits, image=image, valid=valid),
         variance_minimization(logits, image, valid)),
        (LOSSES.build("mcrf", radius=1)(logits=logits, image=image, valid=valid),
         multi_view_crf_loss(logits, image, valid, radius=1)),
        (LOSSES.build("box_prior")(logits=logits, boxes=boxes, valid=valid),
         box_tightness_terms(logits, boxes, valid)["loss"]),
        (LOSSES.build("contrastive_variance")(logits=logits, image=image, valid=valid),
         contrastive_variance_terms(logits, image, valid)["loss"]),
        (LOSSES.build("extreme_point", iterations=2)(logits=logits, points=points, valid=valid),
         extreme_point_loss(logits, points, valid, iterations=2)),
        (LOSSES.build("kd")(student_logits=logits, teacher_logits=teacher), knowledge_distillation(logits, teacher)),
        (LOSSES.build("scm")(student_logits=logits, self_teacher_logits=teacher, cross_teacher_logits=teacher),
         SelfCrossMonitoringLoss()(logits, teacher, teacher)),
    ]
    for by_keyword, by_position in pairs:
        assert torch.equal(by_keyword, by_position)
    assert torch.equal(masked_gaussian_smooth(image, 1.0, valid=valid), masked_gaussian_smooth(image, 1.0, valid))


def test_valid_argument_excludes_voxels_in_every_loss():
    # a valid mask of ones is the same as none
    logits, image, labels, _, points = _inputs()
    ones = torch.ones(2, 1, 6, 5, 4)
    for fn, second in ((partial_ce_dice_terms, labels), (variance_minimization, image),
                       (multi_view_crf_loss, image), (contrastive_variance_terms, image), (extreme_point_loss, points)):
        with_ones, without = fn(logits, second, valid=ones), fn(logits, second)
        if isinstance(with_ones, dict):
            with_ones, without = with_ones["loss"], without["loss"]
        assert with_ones.item() == pytest.approx(without.item(), rel=1e-12), fn.__name__
    assert above_minimum_mask(image).shape == (2, 1, 6, 5, 4)  # usable as `valid`


def _message(fn, *args, **kwargs):
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    return str(err.value)


def test_check_tensor_and_logits_messages():
    assert _message(check_logits, torch.zeros(2, 2, 3)) == (
        "logits must be a floating-point tensor [B, C, I, J, K], got shape (2, 2, 3)")
    assert _message(check_logits, np.zeros((1, 2, 3, 3, 3)), name="student_logits", spatial_dims=None,
                    min_spatial_dims=0) == (
        "student_logits must be a floating-point tensor [B, C, *spatial], got ndarray of shape (1, 2, 3, 3, 3)")
    assert _message(check_logits, torch.zeros(2, 2), spatial_dims=None) == (
        "logits must be a floating-point tensor [B, C, *spatial] with >= 1 spatial axis, got shape (2, 2)")
    assert _message(check_logits, torch.zeros(1, 2, 3, 3, 3, dtype=torch.int32)) == (
        "logits must be a floating-point tensor [B, C, I, J, K], got dtype torch.int32 of shape (1, 2, 3, 3, 3)")
    assert _message(check_logits, torch.zeros(1, 1, 3, 3, 3)) == (
        "logits must have C >= 2 channels (softmax logits), got C=1 in shape (1, 1, 3, 3, 3)")
    assert _message(check_tensor, "image", None, channel="Ch") == (
        "image must be a floating-point tensor [B, Ch, I, J, K], got NoneType")
    check_tensor("image", torch.zeros(1, 1, 2, dtype=torch.int16), spatial_dims=None, floating=False)
    check_logits(torch.zeros(1, 2, 3, 3, 3))


def test_check_map_valid_and_same_shape_messages():
    logits = torch.zeros(1, 2, 3, 3, 2)
    assert _message(check_map, "image", torch.zeros(1, 1, 3, 3, 3), logits, channels=None) == (
        "image must have shape (1, Ch, 3, 3, 2), Ch >= 1 channels on the grid of logits (1, 2, 3, 3, 2); "
        "got (1, 1, 3, 3, 3)")
    assert _message(check_map, "labels", [0, 1], logits) == (
        "labels must have shape (1, 1, 3, 3, 2), one channel on the grid of logits (1, 2, 3, 3, 2); got list")
    assert _message(check_map, "image", torch.zeros(1, 3, 3, 3, 2, dtype=torch.int64), logits, channels=None,
                    floating=True) == "image must be floating point, got dtype torch.int64"
    assert _message(check_valid, torch.ones(1, 2, 3, 3, 2), logits).startswith(
        "valid must have shape (1, 1, 3, 3, 2), one channel on the grid of logits")
    check_valid(None, logits)
    check_valid(torch.ones(1, 1, 3, 3, 2, dtype=torch.bool), logits)
    check_map("image", torch.zeros(1, 4, 3, 3, 2), logits, channels=None)
    assert _message(check_same_shape, "teacher_logits", torch.zeros(1, 2, 3), logits, like_name="student_logits") == (
        "teacher_logits must have shape (1, 2, 3, 3, 2), the shape of student_logits; got (1, 2, 3)")


def test_check_label_values_and_boxes():
    labels = torch.tensor([0, 1, 2, 7]).reshape(1, 1, 4, 1, 1)
    assert _message(check_label_values, labels, n_classes=2, ignore_index=2) == (
        "labels holds values [7] outside {0..1} ∪ {ignore_index=2}")
    check_label_values(labels.clamp(max=2).double(), n_classes=2, ignore_index=2)
    assert check_boxes([[((0, 0, 0), (1, 2, 3))], []], 2) == [[((0, 0, 0), (1, 2, 3))], []]
    assert _message(check_boxes, [[]], 2) == "boxes must have one entry per sample: expected B=2, got 1"


def test_errors_come_before_any_arithmetic():
    logits = torch.zeros(1, 2, 3, 3, 2)
    image = torch.zeros(1, 1, 3, 3, 2)
    bad_valid = torch.ones(1, 1, 3, 3)
    for call in (lambda: PartialCEDiceLoss()(logits, torch.zeros(1, 1, 3, 3, 2), bad_valid),
                 lambda: variance_minimization(logits, image, bad_valid),
                 lambda: multi_view_crf_loss(logits, image, bad_valid),
                 lambda: BoxTightnessLoss()(logits, [[]], bad_valid),
                 lambda: ContrastiveVarianceLoss()(logits, image, bad_valid),
                 lambda: ExtremePointLoss()(logits, image, bad_valid),
                 lambda: masked_gaussian_smooth(image, 0.0, bad_valid)):
        with pytest.raises(ValueError, match=r"^valid must have shape .*; got \(1, 1, 3, 3\)$"):
            call()
