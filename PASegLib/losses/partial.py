"""Partially supervised loss of PA-Seg stage 1 (paper Eq. 3–5): cross-entropy + Dice on labeled voxels only.

Shapes and conventions (see :mod:`PASegLib`):

* ``logits``: raw network outputs ``[B, C, *spatial]`` (``spatial`` = ``I, J, K`` for volumes, ITK index
  order), ``C >= 2``, turned into probabilities with a softmax over the channel axis. PA-Seg uses ``C = 2``
  (background, foreground); then ``p_i`` of the paper is ``softmax(logits)[:, 1]``.
* ``labels``: partial label map ``[B, 1, *spatial]`` holding ``0 = background``, ``1 = foreground`` (more
  generally ``0 … C-1``) and ``ignore_index`` (default ``2``, the official PA-Seg encoding) for unlabeled
  voxels. Integer or integral floating dtype.
* ``valid``: optional ``[B, 1, *spatial]`` valid-region mask (non-zero = valid). Voxels outside it (e.g.
  padding added by a data loader) are treated as unlabeled.

For sample ``b`` with labeled set ``Ω_L`` (``labels != ignore_index`` and inside ``valid``):

* ``L_pce = 1/|Ω_L| Σ_{i∈Ω_L} −log p_{i, y_i}`` — for ``C = 2`` this is exactly Eq. 4.
* ``L_pdc = mean_c [1 − 2 Σ_{i∈Ω_L} p_{i,c} q_{i,c} / (Σ_{i∈Ω_L} (p_{i,c}² + q_{i,c}²) + eps)]``, ``q``
  the one-hot labels. The mean runs over the foreground classes ``c = 1 … C-1`` (``include_background=False``,
  the default) or over all classes. For ``C = 2`` without background this is exactly Eq. 5 (``eps`` only
  guards the division; ``eps = 0`` gives the paper's formula).
* ``L_psup = (L_pce + L_pdc) / 2`` (Eq. 3, ``combine="mean"``, the default) or ``L_pce + L_pdc``
  (``combine="sum"``).

The official PA-Seg code trains with ``combine="sum", include_background=True`` (CE + the mean of the
background and foreground Dice, not halved): :data:`DATA_TERMS` names both settings (``"paper"``, as Eq. 3–5
are printed, and ``"official"``) and :func:`data_term_options` maps a name to the keyword arguments.

A sample whose labeled voxels are all background has ``L_pdc = 1`` with zero gradient (its Dice numerator is
0), exactly as Eq. 5; its cross-entropy term still trains the background.

Each term is computed per sample and averaged over the samples that have at least one labeled voxel (as
the official implementation does; with the paper's batch size 1 this is the plain formula). A batch with no
labeled voxel at all gives zero losses that are still connected to ``logits`` (``backward`` works, all
gradients zero). All arithmetic is in float32 (float64 if ``logits`` is float64), also under autocast. The
losses are unitless (cross-entropy in nats, Dice in ``[0, 1]``).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from PASegLib.losses.inputs import check_label_values, check_logits, check_map, check_valid

__all__ = ["DATA_TERMS", "PartialCEDiceLoss", "data_term_options", "partial_ce_dice_terms", "partial_cross_entropy",
           "partial_dice"]

#: named data terms: keyword arguments of :func:`partial_ce_dice_terms` / :class:`PartialCEDiceLoss`
DATA_TERMS: Dict[str, Dict[str, object]] = {
    "paper": {"include_background": False, "combine": "mean"},  # Eq. 3-5 as printed
    "official": {"include_background": True, "combine": "sum"},  # the official code: CE + mean(bg, fg) Dice
}
_COMBINE = ("mean", "sum")


def data_term_options(name: str) -> Dict[str, object]:
    """Keyword arguments (``include_background``, ``combine``) of the data term ``name`` (``"paper"`` or
    ``"official"``)."""
    if name not in DATA_TERMS:
        raise ValueError(f"data_term must be one of {', '.join(DATA_TERMS)}, got {name!r}")
    return dict(DATA_TERMS[name])


def _check_inputs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    valid: Optional[torch.Tensor],
    ignore_index: int,
    check_labels: bool,
) -> None:
    check_logits(logits, spatial_dims=None)
    n_classes = logits.shape[1]
    check_map("labels", labels, logits)
    check_valid(valid, logits)
    if 0 <= ignore_index < n_classes:
        raise ValueError(f"ignore_index={ignore_index} collides with a class index (C={n_classes})")
    if check_labels:
        check_label_values(labels, n_classes=n_classes, ignore_index=ignore_index)


def partial_ce_dice_terms(
    logits: torch.Tensor,
    labels: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    *,
    ignore_index: int = 2,
    include_background: bool = False,
    combine: str = "mean",
    eps: float = 1e-6,
    check_labels: bool = True,
) -> Dict[str, torch.Tensor]:
    """Partial cross-entropy, partial Dice and their mean (Eq. 3–5) on labeled voxels.

    Args:
        logits: raw network outputs ``[B, C, *spatial]``, ``C >= 2`` (softmax over ``C``, axis 1).
        labels: partial labels ``[B, 1, *spatial]``: ``0 … C-1`` or ``ignore_index``.
        valid: optional ``[B, 1, *spatial]`` valid region (non-zero = valid); outside counts as unlabeled.
        ignore_index: label value of unlabeled voxels (PA-Seg: 2); must not be a class index.
        include_background: average the Dice over all classes instead of the foreground ones only.
        combine: ``"mean"`` (``loss = (L_pce + L_pdc) / 2``, Eq. 3) or ``"sum"`` (``L_pce + L_pdc``).
        eps: added to the Dice denominator (``>= 0``).
        check_labels: verify the label values (one device sync); raise ``ValueError`` if any is invalid.

    Returns:
        ``{"ce": L_pce, "dice": L_pdc, "loss": L_psup}``, float32 (or float64) scalars.

    Raises:
        ValueError: a bad option, or an input of the wrong type, dtype or shape (see
            :mod:`PASegLib.losses.inputs`), or (``check_labels``) a label value outside the classes.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if combine not in _COMBINE:
        raise ValueError(f"combine must be 'mean' or 'sum', got {combine!r}")
    _check_inputs(logits, labels, valid, ignore_index, check_labels)
    batch, n_classes = logits.shape[:2]
    # float32 at least (also under autocast); float64 is kept, e.g. for gradcheck.
    z = (logits if logits.dtype == torch.float64 else logits.float()).reshape(batch, n_classes, -1)
    y = labels.reshape(batch, 1, -1)  # [B, 1, N]
    labeled = y != ignore_index
    if valid is not None:
        labeled = labeled & (valid.reshape(batch, 1, -1) != 0)
    weight = labeled.to(z.dtype)  # [B, 1, N]
    safe_labels = torch.where(labeled, y, torch.zeros_like(y)).long()

    log_prob = F.log_softmax(z, dim=1)
    n_labeled = weight.sum(dim=(1, 2))  # [B]
    has_labels = n_labeled > 0
    # Partial cross-entropy (Eq. 4): mean of -log p_{y_i} over Ω_L.
    nll = -log_prob.gather(1, safe_labels)  # [B, 1, N]
    ce_per_sample = (nll * weight).sum(dim=(1, 2)) / n_labeled.clamp_min(1.0)

    # Partial Dice (Eq. 5) with the p² + q² denominator, per class, over Ω_L.
    prob = log_prob.exp() * weight  # zero outside Ω_L
    onehot = torch.zeros_like(z).scatter_(1, safe_labels, 1.0) * weight
    intersection = (prob * onehot).sum(dim=2)  # [B, C]
    denominator = (prob * prob).sum(dim=2) + onehot.sum(dim=2) + eps  # q² = q for one-hot
    # A sample without labeled voxels has a 0 denominator when eps = 0; keep it finite (it is dropped below).
    denominator = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    dice_per_class = 1.0 - 2.0 * intersection / denominator
    if not include_background:
        dice_per_class = dice_per_class[:, 1:]
    dice_per_sample = dice_per_class.mean(dim=1)

    # Average over the samples that have labeled voxels, without a device sync; an all-unlabeled batch
    # gives exact zeros that remain attached to the graph.
    counted = has_labels.to(z.dtype)
    n_counted = counted.sum().clamp_min(1.0)
    ce = (ce_per_sample * counted).sum() / n_counted
    dice = (dice_per_sample * counted).sum() / n_counted
    return {"ce": ce, "dice": dice, "loss": 0.5 * (ce + dice) if combine == "mean" else ce + dice}


def partial_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, valid: Optional[torch.Tensor] = None, *, ignore_index: int = 2
) -> torch.Tensor:
    """``L_pce`` (Eq. 4) alone; arguments as :func:`partial_ce_dice_terms`."""
    return partial_ce_dice_terms(logits, labels, valid, ignore_index=ignore_index)["ce"]


def partial_dice(
    logits: torch.Tensor,
    labels: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    *,
    ignore_index: int = 2,
    include_background: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``L_pdc`` (Eq. 5) alone; arguments as :func:`partial_ce_dice_terms`."""
    return partial_ce_dice_terms(
        logits, labels, valid, ignore_index=ignore_index, include_background=include_background, eps=eps
    )["dice"]


class PartialCEDiceLoss(nn.Module):
    """``L_psup = (L_pce + L_pdc) / 2`` of PA-Seg (Eq. 3–5), computed on labeled voxels only.

    ``forward(logits, labels, valid=None)`` returns the scalar loss; :meth:`terms` returns
    ``{"ce", "dice", "loss"}`` so a trainer can log each term. Shapes, label encoding and the multi-class
    generalisation are described in the module docstring.

    Args:
        ignore_index: label value of unlabeled voxels (PA-Seg: 2).
        include_background: average the Dice over all classes (default: foreground classes, as Eq. 5).
        combine: ``"mean"`` (Eq. 3, default) or ``"sum"`` (the official code's CE + Dice).
        eps: added to the Dice denominator (``>= 0``).
        check_labels: verify label values on every call (costs one device sync).

    Example::

        loss_fn = PartialCEDiceLoss()
        logits = net(image)                      # [1, 2, 128, 128, 48]
        loss = loss_fn(logits, partial_labels)   # partial_labels in {0, 1, 2}, [1, 1, 128, 128, 48]
    """

    def __init__(
        self,
        *,
        ignore_index: int = 2,
        include_background: bool = False,
        combine: str = "mean",
        eps: float = 1e-6,
        check_labels: bool = True,
    ) -> None:
        super().__init__()
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if combine not in _COMBINE:
            raise ValueError(f"combine must be 'mean' or 'sum', got {combine!r}")
        self.combine = combine
        self.ignore_index = int(ignore_index)
        self.include_background = bool(include_background)
        self.eps = float(eps)
        self.check_labels = bool(check_labels)

    def terms(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: Optional[torch.Tensor] = None
    ) -> Dict[str, torch.Tensor]:
        """``{"ce": L_pce, "dice": L_pdc, "loss": L_psup}`` of ``logits [B, C, *spatial]``, partial ``labels``
        and ``valid`` ``[B, 1, *spatial]``."""
        return partial_ce_dice_terms(
            logits,
            labels,
            valid,
            ignore_index=self.ignore_index,
            include_background=self.include_background,
            combine=self.combine,
            eps=self.eps,
            check_labels=self.check_labels,
        )

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Scalar ``L_psup`` of ``logits [B, C, *spatial]``, ``labels`` and ``valid`` ``[B, 1, *spatial]``."""
        return self.terms(logits, labels, valid)["loss"]

    def extra_repr(self) -> str:
        return (f"ignore_index={self.ignore_index}, include_background={self.include_background}, "
                f"combine={self.combine!r}, eps={self.eps}")
