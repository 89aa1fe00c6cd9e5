"""Stage-2 losses of PA-Seg: knowledge distillation (Eq. 12–13) and Self and Cross Monitoring (Eq. 14–15).

Shapes and conventions (see :mod:`PASegLib`):

* ``student_logits``, ``teacher_logits``: raw logits ``[B, C, *spatial]`` (``spatial`` = ``I, J, K`` for
  volumes, any number of spatial axes, including none), ``C >= 2``, same shape. Probabilities are a softmax
  over the channel axis ``C`` (axis 1). PA-Seg uses ``C = 2`` (background, foreground).
* ``pseudo_label``: a dense label map ``[B, 1, *spatial]`` (int64 class indices), by default the channel
  argmax of a network's frozen copy (:func:`pseudo_labels`).

Knowledge distillation (:class:`KnowledgeDistillationLoss`). With ``q = softmax(teacher / T)`` and
``p = softmax(student / T)`` over the channels of each voxel ``i``::

    L_KD = T² · (1 / (B·N)) · Σ_b Σ_i Σ_c q_{b,c,i} · (log q_{b,c,i} − log p_{b,c,i})

i.e. ``KL(q ‖ p)`` per voxel, summed over the classes, averaged over all ``B·N`` voxels of the batch
(``N`` = number of spatial positions), multiplied by ``T²`` (Hinton et al.: keeps the gradient magnitude
independent of ``T``). For ``C = 2`` the per-voxel class sum is the binary KL of the paper's soft foreground
probabilities ``p̃`` (Eq. 12); Eq. 13 prints only its foreground term, the official code (``kl_div`` with
``reduction="batchmean"`` on logits reshaped to ``[B·N, C]``) sums both classes and divides by the voxel
count, exactly as here. The teacher is detached inside: no gradient ever reaches it. The gradient with
respect to the student logits is ``∂L/∂z_{b,c,i} = T · (p_{b,c,i} − q_{b,c,i}) / (B·N)``.

Self and Cross Monitoring (:class:`SelfCrossMonitoringLoss`), for one network ``θ^a`` with its own frozen
copy ``θ^a_0`` and the other network's frozen copy ``θ^b_0`` (Eq. 14; Eq. 15 swaps ``a`` and ``b``)::

    L_θa = λ · L_KD(student = θ^a, teacher = θ^b_0) + (1 − λ) · L_self(θ^a, argmax θ^a_0)

``λ`` (``lambda_kd``, default 0.5) weights the **cross distillation** term and ``1 − λ`` the self-training
term, as in the paper (Fig. 9: λ = 0 is self-training only, λ = 1 is distillation only) and in the official
code (``--weight_kd``). ``L_self`` is MONAI's :class:`monai.losses.DiceCELoss` with ``softmax=True``,
``to_onehot_y=True``, ``include_background=True``: cross-entropy (mean over voxels) + soft Dice
``1 − (2 Σ p·y + 1e-5) / (Σ p + Σ y + 1e-5)`` averaged over samples and classes. This is the official
self-training loss (its ``DC_CE``: CE + Dice over all classes with a ``Σp + Σq`` denominator), up to the
smoothing constants. The project's :class:`~PASegLib.losses.partial.PartialCEDiceLoss` is *not* used here:
pseudo labels are dense (every voxel labeled), and Eq. 5's squared denominator, its foreground-only Dice and
its ``/2`` would change the balance against the KD term.

Arithmetic is float32 (float64 inputs stay float64), also under autocast. No valid-region mask: the official
code has none either (padded voxels are background in the image, the pseudo label and both predictions).
"""

from __future__ import annotations

import math
import numbers
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from PASegLib.losses.inputs import check_logits, check_map, check_same_shape
from PASegLib.utils.checks import check_number

__all__ = [
    "KnowledgeDistillationLoss",
    "SelfCrossMonitoringLoss",
    "knowledge_distillation",
    "pseudo_labels",
]

_REDUCTIONS = ("mean", "sum", "none")


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return float(temperature)


def _check_logits(name: str, logits: object) -> None:
    check_logits(logits, name=name, spatial_dims=None, min_spatial_dims=0)


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor, teacher_name: str) -> None:
    _check_logits("student_logits", student_logits)
    _check_logits(teacher_name, teacher_logits)
    check_same_shape(teacher_name, teacher_logits, student_logits, like_name="student_logits")


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def knowledge_distillation(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 4.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``T² · KL(softmax(teacher / T) ‖ softmax(student / T))`` (Eq. 13); see the module docstring.

    Args:
        student_logits: ``[B, C, *spatial]``, ``C >= 2``; receives the gradient.
        teacher_logits: same shape; detached (no gradient flows into it, even if it requires grad).
        temperature: ``T > 0`` (paper: 4); ``T = 1`` is the plain softmax.
        reduction: ``"mean"`` (default): mean over the ``B·N`` voxels of the per-voxel KL (summed over
            classes) times ``T²``; ``"sum"``: the sum over voxels instead; ``"none"``: the per-voxel map
            ``[B, *spatial]`` (already times ``T²``).

    Returns:
        float32 (float64 for float64 ``student_logits``) scalar, or ``[B, *spatial]`` for ``"none"``.

    Raises:
        ValueError: bad ``temperature`` or ``reduction``; inputs not floating tensors ``[B, C, ...]`` with
            ``C >= 2`` or of different shapes.
    """
    t = _check_temperature(temperature)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    _check_pair(student_logits, teacher_logits, "teacher_logits")
    dtype = _compute_dtype(student_logits)
    log_p = F.log_softmax(student_logits.to(dtype) / t, dim=1)
    log_q = F.log_softmax(teacher_logits.detach().to(dtype) / t, dim=1)
    # q · (log q − log p); log_q is finite, so a q that underflows to 0 contributes exactly 0.
    per_voxel = (log_q.exp() * (log_q - log_p)).sum(dim=1) * (t * t)  # [B, *spatial]
    if reduction == "none":
        return per_voxel
    return per_voxel.sum() if reduction == "sum" else per_voxel.mean()


def pseudo_labels(logits: torch.Tensor) -> torch.Tensor:
    """Hard pseudo labels ``argmax_C(logits)`` as int64 ``[B, 1, *spatial]``, detached (``Ŷ`` of Eq. 14–15).

    Ties go to the lowest class index (``torch.argmax``), i.e. background for ``C = 2``.
    """
    _check_logits("logits", logits)
    return logits.detach().argmax(dim=1, keepdim=True)


class KnowledgeDistillationLoss(nn.Module):
    """Temperature-scaled KD loss ``T² · KL(softmax(teacher/T) ‖ softmax(student/T))`` (PA-Seg Eq. 12–13).

    ``forward(student_logits, teacher_logits)`` with logits ``[B, C, *spatial]`` (same shape, ``C >= 2``)
    returns the scalar mean over all ``B·N`` voxels of the per-voxel KL (summed over classes) times ``T²``
    (``reduction="mean"``; ``"sum"`` sums over voxels, ``"none"`` returns ``[B, *spatial]``). The teacher
    is detached inside. See :func:`knowledge_distillation` and the module docstring.

    Args:
        temperature: ``T > 0``; the paper's default is 4.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example::

        kd = KnowledgeDistillationLoss(temperature=4.0)
        loss = kd(student(x), frozen_other(x))   # logits [1, 2, 128, 128, 48]
    """

    def __init__(self, temperature: float = 4.0, *, reduction: str = "mean") -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """KD loss of ``student_logits`` towards the (detached) ``teacher_logits``, both ``[B, C, *spatial]``."""
        return knowledge_distillation(
            student_logits, teacher_logits, temperature=self.temperature, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}"


class SelfCrossMonitoringLoss(nn.Module):
    """Loss of one SCM network (Eq. 14–15): ``λ · L_KD + (1 − λ) · L_self``.

    ``forward(student_logits, self_teacher_logits, cross_teacher_logits)``:

    * ``student_logits`` ``[B, C, *spatial]``: the network being trained (``θ^a``); gets the gradient.
    * ``self_teacher_logits``: its own frozen copy (``θ^a_0``); ``argmax`` gives the pseudo label of
      ``L_self`` (MONAI ``DiceCELoss``, see the module docstring).
    * ``cross_teacher_logits``: the other network's frozen copy (``θ^b_0``); its temperature-softened
      softmax is the KD target.

    Both teachers are detached inside. For the auxiliary network call it again with the roles swapped
    (Eq. 15). A term whose weight is exactly 0 (``λ = 0`` or ``λ = 1``) is left out of the sum, so the loss
    is then exactly the other term; :meth:`terms` still reports both for logging.

    Args:
        lambda_kd: ``λ ∈ [0, 1]``, the weight of the cross-distillation term (paper and official default 0.5).
        temperature: KD temperature ``T > 0`` (default 4).
        lambda_dice, lambda_ce: weights of the Dice and CE parts inside ``L_self`` (MONAI ``DiceCELoss``;
            both 1 as the official ``DC_CE``).

    Example::

        scm = SelfCrossMonitoringLoss(lambda_kd=0.5, temperature=4.0)
        with torch.no_grad():
            za0, zb0 = frozen_a(x), frozen_b(x)
        loss_a = scm(net_a(x), za0, zb0)   # Eq. 14
        loss_b = scm(net_b(x), zb0, za0)   # Eq. 15
    """

    def __init__(
        self,
        *,
        lambda_kd: float = 0.5,
        temperature: float = 4.0,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
    ) -> None:
        super().__init__()
        check_number("lambda_kd", lambda_kd, minimum=0, maximum=1)
        for name, value in (("lambda_dice", lambda_dice), ("lambda_ce", lambda_ce)):
            check_number(name, value, minimum=0)
        from monai.losses import DiceCELoss  # lazy: importing PASegLib.losses must not import MONAI

        self.lambda_kd = float(lambda_kd)
        self.kd = KnowledgeDistillationLoss(temperature)
        self.self_loss = DiceCELoss(
            include_background=True, to_onehot_y=True, softmax=True,
            lambda_dice=float(lambda_dice), lambda_ce=float(lambda_ce),
        )  # fmt: skip

    @property
    def temperature(self) -> float:
        """The KD temperature ``T``."""
        return self.kd.temperature

    def terms(
        self,
        student_logits: torch.Tensor,
        self_teacher_logits: Optional[torch.Tensor],
        cross_teacher_logits: torch.Tensor,
        *,
        pseudo_label: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """``{"self": L_self, "kd": L_KD, "loss": λ·L_KD + (1−λ)·L_self}`` (float32/float64 scalars).

        ``pseudo_label`` (``[B, 1, *spatial]`` class indices) may be given instead of recomputing
        :func:`pseudo_labels` of ``self_teacher_logits`` (then ``self_teacher_logits`` may be ``None``).
        """
        _check_pair(student_logits, cross_teacher_logits, "cross_teacher_logits")
        if pseudo_label is None:
            if self_teacher_logits is None:
                raise ValueError("self_teacher_logits is None and no pseudo_label was given")
            _check_pair(student_logits, self_teacher_logits, "self_teacher_logits")
            pseudo_label = pseudo_labels(self_teacher_logits)
        else:
            check_map("pseudo_label", pseudo_label, student_logits, like_name="student_logits")
            pseudo_label = pseudo_label.detach()
        dtype = _compute_dtype(student_logits)
        self_term = self.self_loss(student_logits.to(dtype), pseudo_label.to(dtype))
        kd_term = self.kd(student_logits, cross_teacher_logits)
        if self.lambda_kd == 0.0:
            loss = self_term
        elif self.lambda_kd == 1.0:
            loss = kd_term
        else:
            loss = self.lambda_kd * kd_term + (1.0 - self.lambda_kd) * self_term
        return {"self": self_term, "kd": kd_term, "loss": loss}

    def forward(
        self,
        student_logits: torch.Tensor,
        self_teacher_logits: torch.Tensor,
        cross_teacher_logits: torch.Tensor,
    ) -> torch.Tensor:
        """Scalar Eq. 14 loss; all three logits ``[B, C, *spatial]`` of the same shape."""
        return self.terms(student_logits, self_teacher_logits, cross_teacher_logits)["loss"]

    def extra_repr(self) -> str:
        return f"lambda_kd={self.lambda_kd}, temperature={self.temperature}"
