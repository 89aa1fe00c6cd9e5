"""Input checks shared by the losses of issue 13 (contrastive variance, extreme point)."""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["check_logits_and_maps"]


def check_logits_and_maps(logits: torch.Tensor, valid: Optional[torch.Tensor], **maps: torch.Tensor) -> None:
    """``ValueError`` naming the input unless ``logits`` is floating-point ``[B, C >= 2, I, J, K]`` and ``valid``
    (optional) and every one-channel map of ``maps`` (e.g. ``image=…``) is ``[B, 1, I, J, K]``."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 5 or not logits.is_floating_point():
        raise ValueError(f"logits must be floating-point [B, C, I, J, K], got shape "
                         f"{tuple(getattr(logits, 'shape', ()))}")
    if logits.shape[1] < 2:
        raise ValueError(f"logits must have C >= 2 channels (softmax logits), got C={logits.shape[1]}")
    expected = (logits.shape[0], 1, *logits.shape[2:])
    for name, value in maps.items():
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected:
            raise ValueError(f"{name} must have shape {expected} (one channel), got "
                             f"{tuple(getattr(value, 'shape', ()))}")
    if valid is not None and (not isinstance(valid, torch.Tensor) or tuple(valid.shape) != expected):
        raise ValueError(f"valid must have shape {expected}, got {tuple(getattr(valid, 'shape', ()))}")
