"""Contrastive variance (CV) loss of PSCV (En & Guo, "Annotation by Clicks", Eq. 4–8), in 3D.

Shapes and axis order: ``logits [B, C, I, J, K]`` (``C >= 2``, ``Ŷ = softmax(logits, dim=1)``, computed in
float32 — float64 kept — also under autocast), ``image [B, 1, I, J, K]`` (z-scored; not differentiated
through), optional ``valid [B, 1, I, J, K]`` (non-zero = valid; default: everywhere). ``Ω`` below is the set
of valid voxels of a sample; voxels outside it are left out of ``c``, of ``z`` and of the TV term.

For each sample ``n`` and class ``k``:

* ``c_k^n = Σ_Ω I·Ŷ_k / (Σ_Ω Ŷ_k + eps)`` (Eq. 5);
* ``z_k^n = |I − c_k^n|² · Ŷ_k`` on ``Ω`` and 0 outside, flattened over the ``I·J·K`` voxels (Eq. 4);
* contrastive term ``−log(pos / (pos + neg))`` (Eq. 6–8) with ``pos = exp(cos(z_k^n, z_k^m) / τ)`` and
  ``neg = Σ_{i≠n} Σ_{j≠k} exp(cos(z_k^n, z_j^i) / τ)``, computed as a log-sum-exp.

``loss = weight · contrastive + tv_weight · tv`` where ``contrastive`` is the **mean** over ``(n, k)`` of the
contrastive terms and ``tv`` the **mean** over ``(n, k)`` of the 3D total variation of ``Ŷ_k``: the sum over
the three axes of the mean absolute forward difference along that axis (voxel units, pairs of valid voxels
only; an axis of length 1 adds 0). The paper *sums* over ``n, k`` and integrates ``|∇Ŷ|``; means make the
loss independent of the batch size, class count and patch size, so its weights do not need retuning when
those change (note: the paper's ``μ = 1e-5`` multiplied an integral, so the TV term here is much weaker).

Judgment calls:

* **Positive partner** ``m = (n + 1) mod B``: deterministic, where the paper draws another image at random
  (one that contains class ``k``; every image is assumed to). Training stays reproducible without an extra
  random stream, and over an epoch of shuffled batches every pairing still occurs.
* **B < 2**: there is no other image, so the contrastive term is an exact 0 attached to ``logits``
  (``backward`` works; only TV contributes). Training refuses this case rather than run it silently: a stage-one
  run with ``cv_weight > 0`` and fewer than 2 patches per batch and process stops before it starts
  (:meth:`PASegLib.training.config.TrainConfig.check_trainable`), and the trainer logs the CV loss of every
  iteration before its weight (``cv`` in the ``iteration`` events), so an inactive term shows in the run's events.
* A map ``z`` that is all zero (empty valid region, constant image) has cosine 0 with every map.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from PASegLib.losses.inputs import check_logits, check_map, check_valid
from PASegLib.utils.checks import check_number

__all__ = ["ContrastiveVarianceLoss", "contrastive_variance_terms"]


def _total_variation(prob: torch.Tensor, region: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean over ``(n, k)`` of ``Σ_axes mean |forward difference|`` of ``prob [B, C, I, J, K]``."""
    per_nk = prob.new_zeros(prob.shape[:2])
    for dim in (2, 3, 4):
        length = prob.shape[dim]
        if length < 2:
            continue
        diff = (prob.narrow(dim, 1, length - 1) - prob.narrow(dim, 0, length - 1)).abs()
        if region is None:
            per_nk = per_nk + diff.mean(dim=(2, 3, 4))
        else:
            pair = region.narrow(dim, 1, length - 1) * region.narrow(dim, 0, length - 1)  # [B, 1, ...]
            count = pair.sum(dim=(2, 3, 4)).clamp_min(1.0)  # [B, 1]
            per_nk = per_nk + (diff * pair).sum(dim=(2, 3, 4)) / count
    return per_nk.mean()


def contrastive_variance_terms(
    logits: torch.Tensor,
    image: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    *,
    weight: float = 0.3,
    temperature: float = 0.07,
    tv_weight: float = 1e-5,
    eps: float = 1e-6,
) -> Dict[str, torch.Tensor]:
    """``{"contrastive", "tv", "loss"}`` of the CV loss (formula and shapes in the module docstring).

    Args:
        logits: ``[B, C, I, J, K]`` raw logits, ``C >= 2``.
        image: ``[B, 1, I, J, K]`` intensities (z-scored).
        valid: optional ``[B, 1, I, J, K]`` mask, non-zero = valid.
        weight: ``λ_cv >= 0``, weight of the contrastive term.
        temperature: ``τ > 0``.
        tv_weight: ``μ >= 0``, weight of the TV term.
        eps: ``>= 0``, added to each class's soft volume before dividing (Eq. 5).

    Returns:
        float32 (float64 for float64 logits) scalars: ``contrastive`` and ``tv`` (unweighted) and
        ``loss = weight · contrastive + tv_weight · tv``.
    """
    weight = check_number("weight", weight, minimum=0.0)
    temperature = check_number("temperature", temperature, minimum=0.0, open_minimum=True)
    tv_weight = check_number("tv_weight", tv_weight, minimum=0.0)
    eps = check_number("eps", eps, minimum=0.0)
    check_logits(logits)
    check_map("image", image, logits)
    check_valid(valid, logits)

    batch, n_classes = logits.shape[:2]
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32  # float32 also under autocast
    prob = torch.softmax(logits.to(dtype), dim=1)  # [B, C, I, J, K]
    x = image.detach().to(dtype).reshape(batch, 1, -1)  # [B, 1, N]
    region = None if valid is None else (valid != 0).to(dtype)  # [B, 1, I, J, K]
    w = prob.reshape(batch, n_classes, -1)
    if region is not None:
        w = w * region.reshape(batch, 1, -1)
    volume = w.sum(dim=2) + eps  # [B, C]
    volume = torch.where(volume > 0, volume, torch.ones_like(volume))  # empty region with eps = 0
    centre = (w * x).sum(dim=2) / volume  # c_k^n (Eq. 5), [B, C]
    z = (x - centre[:, :, None]) ** 2 * w  # z_k^n (Eq. 4), [B, C, N]

    if batch < 2:
        contrastive = prob.sum() * 0.0  # no other image: exact zero attached to the graph
    else:
        unit = F.normalize(z, dim=2, eps=1e-12).reshape(batch * n_classes, -1)
        with torch.autocast(device_type=unit.device.type, enabled=False):  # keep the cosines in float32
            sim = (unit @ unit.t()).reshape(batch, n_classes, batch, n_classes) / temperature
        samples = torch.arange(batch, device=sim.device)
        classes = torch.arange(n_classes, device=sim.device)
        partner = (samples + 1) % batch
        pos = sim[samples[:, None], classes[None, :], partner[:, None], classes[None, :]]  # [B, C]
        other_sample = samples[:, None] != samples[None, :]  # [B, B]: i ≠ n
        other_class = classes[:, None] != classes[None, :]  # [C, C]: j ≠ k
        is_neg = other_sample[:, None, :, None] & other_class[None, :, None, :]  # [B, C, B, C]
        neg = sim.masked_fill(~is_neg, float("-inf")).reshape(batch, n_classes, -1)
        scores = torch.cat([pos[:, :, None], neg], dim=2)  # [B, C, 1 + B·C]
        contrastive = (torch.logsumexp(scores, dim=2) - pos).mean()  # −log(pos / (pos + neg)), Eq. 6

    tv = _total_variation(prob, region)
    return {"contrastive": contrastive, "tv": tv, "loss": weight * contrastive + tv_weight * tv}


class ContrastiveVarianceLoss(nn.Module):
    """PSCV's contrastive variance loss (Eq. 4–8) in 3D: ``forward(logits, image, valid=None)`` → scalar.

    ``loss = weight · mean_{n,k} −log(pos / (pos + neg)) + tv_weight · mean_{n,k} TV(Ŷ_k^n)``; the
    formula, shapes, the positive partner ``m = (n + 1) mod B`` and the ``B < 2`` rule are in the module
    docstring. :meth:`terms` returns ``{"contrastive", "tv", "loss"}``.

    Args:
        weight: ``λ_cv >= 0`` (default 0.3, the paper's best on Synapse, Fig. 4; it used 1e-3 on ACDC).
        temperature: ``τ > 0`` (default 0.07, the paper's setting and best value, Fig. 6).
        tv_weight: ``μ >= 0`` (default 1e-5, the paper's setting, there on an integral rather than a mean).
        eps: ``>= 0``, added to each class's soft volume in ``c_k`` (default 1e-6).

    Example::

        cv = ContrastiveVarianceLoss(weight=0.3, temperature=0.07, tv_weight=1e-5)
        loss = cv(logits, image, valid)   # logits [B, C, I, J, K], image and valid [B, 1, I, J, K]
    """

    def __init__(
        self, *, weight: float = 0.3, temperature: float = 0.07, tv_weight: float = 1e-5, eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.weight = check_number("weight", weight, minimum=0.0)
        self.temperature = check_number("temperature", temperature, minimum=0.0, open_minimum=True)
        self.tv_weight = check_number("tv_weight", tv_weight, minimum=0.0)
        self.eps = check_number("eps", eps, minimum=0.0)

    def terms(
        self, logits: torch.Tensor, image: torch.Tensor, valid: Optional[torch.Tensor] = None
    ) -> Dict[str, torch.Tensor]:
        """``{"contrastive", "tv", "loss"}``; see :func:`contrastive_variance_terms`."""
        return contrastive_variance_terms(logits, image, valid, weight=self.weight, temperature=self.temperature,
                                          tv_weight=self.tv_weight, eps=self.eps)

    def forward(
        self, logits: torch.Tensor, image: torch.Tensor, valid: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Scalar CV loss of logits ``[B, C, I, J, K]``, image and valid ``[B, 1, I, J, K]``."""
        return self.terms(logits, image, valid)["loss"]

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, temperature={self.temperature}, tv_weight={self.tv_weight}, "
                f"eps={self.eps}")
