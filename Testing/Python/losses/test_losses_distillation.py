"""Knowledge distillation (Eq. 12–13) and Self and Cross Monitoring (Eq. 14–15) on tiny tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from PASegLib.losses import LOSSES  # noqa: E402
from PASegLib.losses.crf import MultiViewCRFLoss  # noqa: E402
from PASegLib.losses.distillation import (  # noqa: E402
    KnowledgeDistillationLoss,
    SelfCrossMonitoringLoss,
    knowledge_distillation,
    pseudo_labels,
)

LN3 = math.log(3.0)


def _voxels(*logit_pairs):
    """Logits [1, 2, n, 1, 1] (float64) from per-voxel (background, foreground) logit pairs."""
    return torch.tensor(logit_pairs, dtype=torch.float64).T.reshape(1, 2, -1, 1, 1)


def _kl(q, p):
    return sum(qc * math.log(qc / pc) for qc, pc in zip(q, p))


# ---------------------------------------------------------------- KD: hand-computed values


def test_kd_hand_value_with_temperature_squared():
    # Voxel 1: student (0, 0) → p = (1/2, 1/2) at any T; teacher (0, 4 ln 3) / 4 → q = (1/4, 3/4).
    # Voxel 2: student (0, 4 ln 3) → p = (1/4, 3/4); teacher (0, 0) → q = (1/2, 1/2).
    student = _voxels((0.0, 0.0), (0.0, 4 * LN3))
    teacher = _voxels((0.0, 4 * LN3), (0.0, 0.0))
    kl1 = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    kl2 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    expected = 16.0 * (kl1 + kl2) / 2  # T² · mean over the 2 voxels
    assert knowledge_distillation(student, teacher, temperature=4.0).item() == pytest.approx(expected, abs=1e-12)
    assert KnowledgeDistillationLoss(4.0)(student, teacher).item() == pytest.approx(expected, abs=1e-12)
    assert KnowledgeDistillationLoss(4.0, reduction="sum")(student, teacher).item() == pytest.approx(
        16.0 * (kl1 + kl2), abs=1e-12)
    per_voxel = KnowledgeDistillationLoss(4.0, reduction="none")(student, teacher)
    assert per_voxel.shape == (1, 2, 1, 1)
    np.testing.assert_allclose(per_voxel.reshape(-1).numpy(), [16 * kl1, 16 * kl2], atol=1e-12)


def test_kd_temperature_scaling_is_t_squared():
    # The same softened distributions at T = 1 (logits / 4) give the loss without the factor 16.
    student = _voxels((0.0, 0.0), (0.0, 4 * LN3))
    teacher = _voxels((0.0, 4 * LN3), (0.0, 0.0))
    at_t4 = knowledge_distillation(student, teacher, temperature=4.0)
    at_t1 = knowledge_distillation(student / 4, teacher / 4, temperature=1.0)
    assert at_t4.item() == pytest.approx(16.0 * at_t1.item(), rel=1e-12)
    # T = 1 on voxel 1 alone is the plain KL(q ‖ p).
    assert knowledge_distillation(_voxels((0.0, 0.0)), _voxels((0.0, LN3)), temperature=1.0).item() == (
        pytest.approx(_kl((0.25, 0.75), (0.5, 0.5)), abs=1e-12))


def test_kd_matches_numpy_multiclass_any_spatial_rank():
    gen = torch.Generator().manual_seed(0)
    for shape in [(2, 3), (2, 3, 5), (2, 3, 4, 3, 2)]:
        s = torch.randn(*shape, generator=gen, dtype=torch.float64) * 3
        t = torch.randn(*shape, generator=gen, dtype=torch.float64) * 3
        sn, tn = s.numpy() / 2.5, t.numpy() / 2.5
        p = np.exp(sn) / np.exp(sn).sum(1, keepdims=True)
        q = np.exp(tn) / np.exp(tn).sum(1, keepdims=True)
        expected = 2.5**2 * (q * np.log(q / p)).sum(1).mean()
        got = knowledge_distillation(s, t, temperature=2.5)
        assert got.dtype == torch.float64
        assert got.item() == pytest.approx(expected, rel=1e-10)


def test_kd_zero_when_student_equals_teacher_and_float32():
    logits = torch.randn(2, 2, 4, 3, 2, generator=torch.Generator().manual_seed(1)) * 5
    loss = KnowledgeDistillationLoss()(logits, logits.clone())
    assert loss.dtype == torch.float32
    assert abs(loss.item()) < 1e-6
    assert KnowledgeDistillationLoss()(logits.half(), logits.half()).dtype == torch.float32


def test_kd_positive_and_extreme_logits_finite():
    student = _voxels((0.0, 0.0), (200.0, -200.0))
    teacher = _voxels((-300.0, 300.0), (0.0, 0.0))
    loss = knowledge_distillation(student, teacher, temperature=1.0)
    assert math.isfinite(loss.item()) and loss.item() > 0


# ---------------------------------------------------------------- KD: gradients


def test_kd_teacher_gets_no_gradient():
    gen = torch.Generator().manual_seed(2)
    student = torch.randn(1, 2, 4, 3, 2, generator=gen, requires_grad=True)
    teacher = torch.randn(1, 2, 4, 3, 2, generator=gen, requires_grad=True)
    KnowledgeDistillationLoss()(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and torch.any(student.grad != 0)


def test_kd_gradient_matches_direct_formula():
    # ∂L/∂z = T (p − q) / (B·N) with p, q the tempered softmaxes.
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(2, 3, 4, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 2, generator=gen, dtype=torch.float64)
    temperature = 4.0
    knowledge_distillation(student, teacher, temperature=temperature).backward()
    p = torch.softmax(student.detach() / temperature, dim=1)
    q = torch.softmax(teacher / temperature, dim=1)
    n_voxels = 2 * 4 * 2
    torch.testing.assert_close(student.grad, temperature * (p - q) / n_voxels, rtol=1e-10, atol=1e-14)
    tiny_teacher = teacher[:1, :, :2, 0]  # [1, 3, 2]
    assert torch.autograd.gradcheck(lambda s: knowledge_distillation(s, tiny_teacher, temperature=2.0),
                                    (student.detach()[:1, :, :2, 0].clone().requires_grad_(),), fast_mode=True)


# ---------------------------------------------------------------- SCM: combination of the terms


def _dice_ce_by_hand(student, labels):
    """CE (mean over voxels) + mean over (b, c) of 1 − (2 Σ p y + 1e-5) / (Σ p + Σ y + 1e-5)."""
    logits = student.detach().numpy()
    b, c = logits.shape[:2]
    flat = logits.reshape(b, c, -1)
    prob = np.exp(flat) / np.exp(flat).sum(1, keepdims=True)
    y = labels.numpy().reshape(b, -1)
    onehot = np.stack([(y == k) for k in range(c)], axis=1).astype(np.float64)
    ce = -np.mean(np.log((prob * onehot).sum(1)))
    dice = 1 - (2 * (prob * onehot).sum(2) + 1e-5) / (prob.sum(2) + onehot.sum(2) + 1e-5)
    return ce + dice.mean()


@pytest.fixture
def scm_inputs():
    gen = torch.Generator().manual_seed(4)
    student = torch.randn(2, 2, 5, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    self_teacher = torch.randn(2, 2, 5, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    cross_teacher = torch.randn(2, 2, 5, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    return student, self_teacher, cross_teacher


def test_scm_lambda_weights_kd_and_reduces_to_each_term(scm_inputs):
    student, self_teacher, cross_teacher = scm_inputs
    self_term = _dice_ce_by_hand(student, self_teacher.detach().argmax(1))
    kd_term = knowledge_distillation(student, cross_teacher, temperature=4.0).item()
    for lam, expected in [(0.0, self_term), (1.0, kd_term), (0.5, 0.5 * kd_term + 0.5 * self_term),
                          (0.25, 0.25 * kd_term + 0.75 * self_term)]:
        terms = SelfCrossMonitoringLoss(lambda_kd=lam).terms(student, self_teacher, cross_teacher)
        assert terms["loss"].item() == pytest.approx(expected, rel=1e-9), lam
        assert terms["self"].item() == pytest.approx(self_term, rel=1e-9)
        assert terms["kd"].item() == pytest.approx(kd_term, rel=1e-12)
    default = SelfCrossMonitoringLoss()
    assert (default.lambda_kd, default.temperature) == (0.5, 4.0)
    assert default(student, self_teacher, cross_teacher).item() == pytest.approx(0.5 * (kd_term + self_term))


def test_scm_zero_weight_term_is_left_out(scm_inputs):
    student, self_teacher, cross_teacher = scm_inputs
    broken = torch.full_like(cross_teacher, float("nan"))
    assert math.isfinite(SelfCrossMonitoringLoss(lambda_kd=0.0)(student, self_teacher, broken).item())


def test_scm_gradients_only_reach_the_student(scm_inputs):
    student, self_teacher, cross_teacher = scm_inputs
    SelfCrossMonitoringLoss()(student, self_teacher, cross_teacher).backward()
    assert self_teacher.grad is None and cross_teacher.grad is None
    assert torch.any(student.grad != 0)


def test_scm_pseudo_label_argument_and_helper(scm_inputs):
    student, self_teacher, cross_teacher = scm_inputs
    labels = pseudo_labels(self_teacher)
    assert labels.shape == (2, 1, 5, 4, 3) and labels.dtype == torch.int64 and not labels.requires_grad
    assert torch.equal(pseudo_labels(_voxels((1.0, 1.0), (0.0, 2.0))).reshape(-1), torch.tensor([0, 1]))
    scm = SelfCrossMonitoringLoss()
    a = scm.terms(student, self_teacher, cross_teacher)["loss"]
    b = scm.terms(student, None, cross_teacher, pseudo_label=labels)["loss"]
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


# ---------------------------------------------------------------- errors and registry


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf"), True, "4"])
def test_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        KnowledgeDistillationLoss(temperature)
    with pytest.raises(ValueError, match="temperature"):
        SelfCrossMonitoringLoss(temperature=temperature)


def test_bad_inputs_name_the_argument():
    s = torch.zeros(1, 2, 3, 3, 3)
    with pytest.raises(ValueError, match=r"^teacher_logits must have shape \(1, 2, 3, 3, 3\), the shape of "
                                         r"student_logits; got \(1, 2, 3, 3, 2\)$"):
        knowledge_distillation(s, torch.zeros(1, 2, 3, 3, 2))
    with pytest.raises(ValueError, match="student_logits.*C >= 2"):
        knowledge_distillation(torch.zeros(1, 1, 3), torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match="student_logits.*floating"):
        knowledge_distillation(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match=r"^teacher_logits must be a floating-point tensor \[B, C, \*spatial\], "
                                         r"got ndarray of shape \(1, 2, 3, 3, 3\)$"):
        knowledge_distillation(s, np.zeros((1, 2, 3, 3, 3)))
    with pytest.raises(ValueError, match="reduction"):
        KnowledgeDistillationLoss(reduction="batchmean")
    with pytest.raises(ValueError, match="cross_teacher_logits must have shape"):
        SelfCrossMonitoringLoss()(s, s, torch.zeros(1, 2, 3, 3, 4))
    with pytest.raises(ValueError, match="self_teacher_logits must have shape"):
        SelfCrossMonitoringLoss()(s, torch.zeros(2, 2, 3, 3, 3), s)
    with pytest.raises(ValueError, match=r"pseudo_label must have shape \(1, 1, 3, 3, 3\), one channel on the grid of "
                                         r"student_logits \(1, 2, 3, 3, 3\); got \(1, 3, 3, 3\)"):
        SelfCrossMonitoringLoss().terms(s, None, s, pseudo_label=torch.zeros(1, 3, 3, 3))
    for bad in (-0.1, 1.5, float("nan"), None):
        with pytest.raises(ValueError, match="lambda_kd"):
            SelfCrossMonitoringLoss(lambda_kd=bad)
    with pytest.raises(ValueError, match="lambda_ce"):
        SelfCrossMonitoringLoss(lambda_ce=-1.0)


def test_registry_builds_stage2_losses_and_mcrf():
    assert {"kd", "scm", "mcrf", "partial_ce_dice", "variance"} <= set(LOSSES.names())
    kd = LOSSES.build("kd", temperature=2.0)
    assert isinstance(kd, KnowledgeDistillationLoss) and kd.temperature == 2.0
    scm = LOSSES.build("scm", lambda_kd=1.0)
    assert isinstance(scm, SelfCrossMonitoringLoss) and scm.lambda_kd == 1.0
    assert isinstance(LOSSES.build("mcrf", radius=2), MultiViewCRFLoss)
    assert "temperature=2.0" in repr(kd) and "lambda_kd=1.0" in repr(scm)
