"""Stage one of PA-Seg (Sec. III-A): one network trained from the expanded seeds.

Loss per patch (Eq. 11 with the official ramp-up, :class:`~PASegLib.losses.schedule.Stage1LossWeights`)::

    L = L_data  +  w(t) · (α · L_mCRF + β · L_VM + γ · L_box)

``L_data`` on the labeled voxels (labels 0/1, 2 ignored): ``config.data_term`` ``"official"`` = CE + mean
of the background and foreground Dice, ``"paper"`` = (CE + foreground Dice) / 2. The mCRF loss on the
z-scored patch, Gaussian-smoothed by ``crf_image_sigma`` voxels for the mCRF only (optionally on the
``crf_downsample_to`` grid, as the official code); VM over the valid region; ``L_box`` the optional
box-tightness prior (γ = ``box_prior_weight``). ``w(t)`` is the sigmoid ramp-up over
``config.rampup_length`` epochs (``rampup_fraction`` of the budget, or ``rampup_epochs``), ``t`` in
(fractional) epochs.

Validation adds ``heldout_loss``: the same loss at full weight on each whole held-out case, from the
predicted probabilities (a label-free selection candidate, :mod:`~PASegLib.training.selection`).

``supervision="full"`` replaces the seeds by the dense labels (the fully supervised upper bound).
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from ..losses import LOSSES, Stage1LossWeights
from ..losses.partial import data_term_options
from ..losses.smoothing import masked_gaussian_smooth
from ..networks import build_network
from .engine import Trainer

__all__ = ["Stage1Trainer"]


class Stage1Trainer(Trainer):
    """Stage-one trainer; the network is ``config.network`` (role ``"primary"``)."""

    kind = "stage1"

    def roles(self) -> Dict[str, str]:
        return {"primary": self.config.network}

    def build(self) -> None:
        c = self.config
        net = build_network(c.network, in_channels=1, out_channels=2).to(self.device)
        self.networks["primary"] = net
        self.optimizers["primary"] = self.make_optimizer(net)
        self.scalers["primary"] = self.make_scaler()
        self.partial_loss = LOSSES.build("partial_ce_dice", ignore_index=2, **data_term_options(c.data_term))
        self.crf_loss = LOSSES.build("mcrf", sigma_xy=c.crf_sigma_xy, sigma_intensity=c.crf_sigma_intensity,
                                     radius=c.crf_radius, downsample_to=c.crf_downsample_to)
        self.vm_loss = LOSSES.build("variance")
        self.box_loss = LOSSES.build("box_prior", shrink=c.box_prior_shrink)
        self.weights = Stage1LossWeights(alpha=c.alpha, beta=c.beta, rampup_length=c.rampup_length)

    def regularizers(self, logits: torch.Tensor, image: torch.Tensor, valid: torch.Tensor, boxes, a: float,
                     b: float, g: float) -> Dict[str, torch.Tensor]:
        """``{"mcrf", "vm", "box"}`` of ``logits [B, 2, I, J, K]`` (zeros when their weight ``a``, ``b``, ``g`` is
        0); ``boxes`` per sample the objects' inclusive ``(lo, hi)`` voxel boxes on the logits' grid."""
        zero = logits.new_zeros(())
        box = self.box_loss(logits, boxes, valid) if g > 0 else zero
        crf = zero
        if a > 0:
            crf_image = masked_gaussian_smooth(image, self.config.crf_image_sigma, valid)
            crf = self.crf_loss(logits, crf_image, valid)
        vm = self.vm_loss(logits, image, valid) if b > 0 else zero
        return {"mcrf": crf, "vm": vm, "box": box}

    def train_step(self, batch: Dict[str, torch.Tensor], epoch_float: float) -> Dict[str, float]:
        net, opt, scaler = self.networks["primary"], self.optimizers["primary"], self.scalers["primary"]
        image, partial, valid = batch["image"], batch["partial"], batch["valid"]
        if self.config.supervision == "full":
            partial = batch["label"]  # dense labels: every image voxel labeled (padding stays ignored)
        with torch.autocast(device_type=self.device.type, enabled=self.amp):
            logits = net(image)
        logits = logits.float()
        terms = self.partial_loss.terms(logits, partial)
        a, b = self.weights.regularizer_weights(epoch_float)
        g = self.weights.ramp(epoch_float) * self.config.box_prior_weight
        reg = self.regularizers(logits, image, valid, batch["boxes"], a, b, g)
        loss = terms["loss"] + a * reg["mcrf"] + b * reg["vm"] + g * reg["box"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the training loss became {loss.item()} at epoch {epoch_float:.2f}; "
                                     f"lower lr or check the input intensities")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses = {"loss": float(loss.detach()), "ce": float(terms["ce"].detach()), "dice": float(terms["dice"].detach()),
                  "mcrf": float(reg["mcrf"].detach()), "vm": float(reg["vm"].detach())}
        if g > 0:
            losses["box"] = float(reg["box"].detach())
        return losses

    def validation_terms(self, case, pred: np.ndarray, prob: np.ndarray) -> Dict[str, float]:
        """``heldout_loss``: the stage-one loss at full weight (α, β) of ``prob`` on the whole held-out case."""
        c = self.config
        p = torch.from_numpy(np.clip(prob, 1e-6, 1.0 - 1e-6).astype(np.float32))[None, None]
        logits = torch.log(torch.cat([1.0 - p, p], dim=1))  # softmax(logits) = (1 - p, p)
        image = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))[None, None]
        valid = torch.from_numpy(case.valid.astype(np.float32))[None, None]
        partial = torch.from_numpy(case.partial.astype(np.int64))[None, None]
        partial = torch.where(valid > 0, partial, torch.full_like(partial, 2))
        with torch.no_grad():
            data = self.partial_loss.terms(logits, partial)["loss"]
            boxes = [np.array([[lo, hi] for lo, hi in case.boxes], dtype=np.int64).reshape(-1, 2, 3)]
            reg = self.regularizers(logits, image, valid, boxes, c.alpha, c.beta, c.box_prior_weight)
            total = data + c.alpha * reg["mcrf"] + c.beta * reg["vm"] + c.box_prior_weight * reg["box"]
        return {"heldout_loss": float(total)}
