"""Cross-entropy with soft targets: the student's loss on the teacher's soft pseudo labels (paper 003, Eq. 4).

Shapes and axis order: ``logits [B, C, I, J, K]`` (``C >= 2``; ``p = softmax(logits, dim=1)``, computed in
float32 — float64 kept — also under autocast), ``targets`` either ``[B, 1, I, J, K]`` — the foreground probability
``t`` of a two-class problem (``C = 2``; the class probabilities are ``(1 − t, t)``) — or ``[B, C, I, J, K]`` — one
probability per class, summing to 1 at each voxel — and an optional ``valid [B, 1, I, J, K]`` (non-zero = the
voxel counts). Targets are not differentiated through (they are a teacher's output), and their values are not
checked (that would read a flag from the device at every step): the caller keeps them in ``[0, 1]``.

With ``V`` the counted voxels of the whole batch::

    L_soft = (1 / |V|) · Σ_{(b, i) ∈ V} −Σ_c t_{b,c,i} · log p_{b,c,i}

(nats per voxel; ``∂L/∂z_{b,c,i} = (p_{b,c,i} − t_{b,c,i}) / |V|``). With one-hot targets it is the ordinary
cross-entropy; with the teacher's softmax output it is paper 003's ``−log p(ỹ^w | x^w)`` for soft labels ỹ^w
(after Hinton et al.'s distillation at temperature 1). The mean runs over the voxels of the batch, not per sample:
a patch holding few counted voxels weighs little. A batch without counted voxels gives an exact zero attached to
``logits`` (``backward`` works, all gradients zero).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from PASegLib.losses.inputs import check_logits, check_map, check_valid

__all__ = ["SoftCrossEntropyLoss", "soft_cross_entropy"]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                       valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Scalar ``L_soft`` (module docstring) of ``logits [B, C, I, J, K]``, ``targets [B, 1 | C, I, J, K]`` and the
    optional ``valid [B, 1, I, J, K]``.

    Raises:
        ValueError: naming the argument: logits not floating point ``[B, C >= 2, …]``, targets not floating point or
            not on the logits' grid, one target channel with ``C != 2``, a bad ``valid``.
    """
    check_logits(logits, spatial_dims=None, min_spatial_dims=1)
    n_classes = logits.shape[1]
    if isinstance(targets, torch.Tensor) and targets.ndim == logits.ndim and targets.shape[1] == 1:
        if n_classes != 2:
            raise ValueError(f"targets with one channel are the foreground probability of two classes; logits have "
                             f"C = {n_classes}: give targets [B, {n_classes}, …] (one probability per class)")
        check_map("targets", targets, logits, channels=1, floating=True)
    else:
        check_map("targets", targets, logits, channels=n_classes, floating=True)
    check_valid(valid, logits)
    z = logits if logits.dtype == torch.float64 else logits.float()
    t = targets.detach().to(z.dtype)
    if t.shape[1] == 1:
        t = torch.cat([1.0 - t, t], dim=1)
    per_voxel = -(t * F.log_softmax(z, dim=1)).sum(dim=1, keepdim=True)  # [B, 1, …]
    if valid is None:
        return per_voxel.mean()
    weight = (valid != 0).to(z.dtype)
    # an empty V: 0 / 1 — an exact zero, still attached to logits
    return (per_voxel * weight).sum() / weight.sum().clamp_min(1.0)


class SoftCrossEntropyLoss(nn.Module):
    """Cross-entropy with soft targets: ``forward(logits, targets, valid=None)`` → scalar ``L_soft``.

    Shapes and rules in the module docstring. No settings: the caller weights the result.

    Example::

        loss = SoftCrossEntropyLoss()(logits, soft_foreground, valid)   # [B, 2, I, J, K], [B, 1, …], [B, 1, …]
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scalar ``L_soft`` of logits ``[B, C, I, J, K]``, targets ``[B, 1 | C, I, J, K]``, valid ``[B, 1, …]``."""
        return soft_cross_entropy(logits, targets, valid)
