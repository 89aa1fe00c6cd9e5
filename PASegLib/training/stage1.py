"""Stage one of PA-Seg (Sec. III-A): one network trained from the expanded seeds.

Loss per patch (Eq. 11 with the official ramp-up, :class:`~PASegLib.losses.schedule.Stage1LossWeights`)::

    L = (L_pCE + L_pDice) / 2  +  w(t) · (α · L_mCRF + β · L_VM)

``L_pCE``/``L_pDice`` on the labeled voxels (labels 0/1, 2 ignored), the mCRF loss on the z-scored patch
(optionally on the ``crf_downsample_to`` grid, as the official code) and VM over the valid region; ``w(t)``
is the sigmoid ramp-up over ``rampup_epochs`` with ``t`` in (fractional) epochs.

``supervision="full"`` replaces the seeds by the dense labels (the fully supervised upper bound).
"""

from __future__ import annotations

from typing import Dict

import torch

from ..losses import LOSSES, Stage1LossWeights
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
        self.partial_loss = LOSSES.build("partial_ce_dice", ignore_index=2)
        self.crf_loss = LOSSES.build("mcrf", sigma_xy=c.crf_sigma_xy, sigma_intensity=c.crf_sigma_intensity,
                                     radius=c.crf_radius, downsample_to=c.crf_downsample_to)
        self.vm_loss = LOSSES.build("variance")
        self.weights = Stage1LossWeights(alpha=c.alpha, beta=c.beta, rampup_length=c.rampup_epochs)

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
        crf = self.crf_loss(logits, image, valid) if a > 0 else logits.new_zeros(())
        vm = self.vm_loss(logits, image, valid) if b > 0 else logits.new_zeros(())
        loss = terms["loss"] + a * crf + b * vm
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the training loss became {loss.item()} at epoch {epoch_float:.2f}; "
                                     f"lower lr or check the input intensities")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return {"loss": float(loss.detach()), "ce": float(terms["ce"].detach()), "dice": float(terms["dice"].detach()),
                "mcrf": float(crf.detach()), "vm": float(vm.detach())}
