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

Validation adds ``heldout_loss`` when the selection rule is ``"heldout_loss"`` (or ``validation_heldout_loss``):
the same loss at full weight on each whole held-out case, from the predicted probabilities, on the training device
(a label-free selection candidate, :mod:`~PASegLib.training.selection`; the other rules do not need it, and it
costs seconds per case on a CPU).

``supervision="full"`` replaces the seeds by the dense labels (the fully supervised upper bound).

The other annotation protocols add PSCV's contrastive variance loss (``cv_weight``), Going to Extremes' point loss
(``point_loss_weight``) and the click channel (``point_channel``: the network takes ``[image, click heatmap]``,
the heatmap emptied for a ``point_channel_dropout`` share of the patches; :mod:`~PASegLib.data.clickmaps`).
With ``click_map = "box"`` the click channel is the patch's box mask instead (mixed supervision's teacher,
paper 003): each object box of the patch (a dense case's: its label's extent) grown on each side by a margin drawn
from ``box_channel_margin_mm`` (from a generator seeded by the run's seed, the rank, the global step and the
patch's slot, so a resumed run draws the same margins), 1 inside, 0 outside; validation gets the prepared case's
boxes as they are. Mixed supervision's student trains the voxels of soft pseudo labels with a cross-entropy with soft
targets (``soft_label_weight``, reported as ``soft_ce``; :mod:`~PASegLib.training.objective`).
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import torch

from PASegLib.losses import Stage1LossWeights
from PASegLib.networks import build_network
from PASegLib.training.engine import Trainer
from PASegLib.training.objective import Stage1Objective

__all__ = ["Stage1Trainer"]


class Stage1Trainer(Trainer):
    """Stage-one trainer; the network is ``config.network`` (role ``"primary"``)."""

    kind = "stage1"

    def roles(self) -> Dict[str, str]:
        return {"primary": self.config.network}

    def build(self) -> None:
        c = self.config
        net = build_network(c.network, in_channels=2 if c.point_channel else 1, out_channels=2).to(self.device)
        self.networks["primary"] = net
        self.optimizers["primary"] = self.make_optimizer(net)
        self.scalers["primary"] = self.make_scaler()
        self.objective = Stage1Objective(c)
        self.weights = Stage1LossWeights(alpha=c.alpha, beta=c.beta, rampup_length=c.rampup_length)
        # the box channel's margins (mm) in voxels of the training grid: its spacing (the median over the cases when
        # their grids differ, i.e. without target_spacing_mm)
        spacing = np.median([np.asarray(case.geometry.spacing, dtype=float) for case in self.train_cases], axis=0)
        self.box_margin_voxels = np.asarray(c.box_channel_margin_mm, dtype=float)[:, None] / spacing[None, :]

    def box_channel(self, boxes, shape, *, grow: bool) -> torch.Tensor:
        """The box channel ``[b, 1, I, J, K]`` (float32, on the device) of a batch's ``boxes`` (per patch ``[M, 2, 3]``
        inclusive voxel boxes in the patch's ``[i, j, k]``) on patches of ``shape``; ``grow``: each side grown by a
        margin drawn from ``box_channel_margin_mm`` (rounded to voxels)."""
        from PASegLib.data.clickmaps import box_mask

        low, high = self.box_margin_voxels
        masks = []
        for slot, patch_boxes in enumerate(boxes):
            patch_boxes = np.asarray(patch_boxes, dtype=np.int64).reshape(-1, 2, 3).copy()
            if grow and np.any(high > 0) and len(patch_boxes):
                rng = np.random.default_rng([self.config.seed, self.dist.rank, self.global_step, slot])
                margin = np.rint(rng.uniform(low, high, size=(len(patch_boxes), 2, 3))).astype(np.int64)
                patch_boxes[:, 0] -= margin[:, 0]
                patch_boxes[:, 1] += margin[:, 1]
            masks.append(box_mask(patch_boxes, shape))
        return torch.from_numpy(np.stack(masks)[:, None]).to(self.device)

    def train_step(self, batch: Dict[str, torch.Tensor], epoch_float: float) -> Dict[str, torch.Tensor]:
        # the trained wrapper: DistributedDataParallel averages the gradients over the ranks
        net, opt, scaler = self.trained["primary"], self.optimizers["primary"], self.scalers["primary"]
        image, partial, valid = batch["image"], batch["partial"], batch["valid"]
        if self.config.supervision == "full":
            partial = batch["label"]  # dense labels: every image voxel labeled (padding stays ignored)
        inputs = image
        if self.config.point_channel:  # the click channel, empty for the patches drawn without clicks
            clicks = batch["points"] if self.config.click_map == "heatmap" else \
                self.box_channel(batch["boxes"], tuple(image.shape[2:]), grow=True)
            inputs = torch.cat([image, clicks * batch["point_keep"][:, :, None, None, None]], dim=1)
        with torch.autocast(device_type=self.device.type, enabled=self.amp):
            logits = net(inputs)
        logits = logits.float()
        a, b = self.weights.regularizer_weights(epoch_float)
        g = self.weights.ramp(epoch_float) * self.config.box_prior_weight
        terms = self.objective.terms(logits, partial, image, valid, batch["boxes"], a=a, b=b, g=g,
                                     points=batch.get("points"))
        opt.zero_grad(set_to_none=True)
        scaler.scale(terms["loss"]).backward()
        scaler.step(opt)
        scaler.update()
        # left on the device: the loop reads them once per logging interval and checks them (check_losses)
        losses = {k: terms[k].detach() for k in ("loss", "ce", "dice", "mcrf", "vm")}
        if g > 0:
            losses["box"] = terms["box"].detach()
        soft = self.config.soft_label_weight if self.objective.soft is not None else 0.0
        for key, weight in (("cv", self.config.cv_weight), ("point", self.config.point_loss_weight), ("soft_ce", soft)):
            if weight > 0:
                losses[key] = terms[key].detach()
        return losses

    def click_channel(self, case) -> Optional[np.ndarray]:
        """The click channel of a held-out case: the base trainer's heatmap, or with ``click_map = "box"`` the box
        mask of the prepared case's boxes (as given: no margin)."""
        if not self.config.point_channel or self.config.click_map == "heatmap":
            return super().click_channel(case)
        from PASegLib.data.clickmaps import box_mask

        return box_mask(case.boxes, case.image.shape)

    def check_losses(self, losses: Dict[str, float], epoch_float: float) -> None:
        """A non-finite training loss stops the run (``FloatingPointError``)."""
        if not math.isfinite(losses["loss"]):
            raise FloatingPointError(f"the training loss became {losses['loss']} at epoch {epoch_float:.2f}; "
                                     f"lower lr or check the input intensities")

    def validation_terms(self, case, pred: np.ndarray, prob: np.ndarray) -> Dict[str, float]:
        """``heldout_loss`` (only with ``selection = "heldout_loss"`` or ``validation_heldout_loss``): the stage-one
        objective at full weight of ``prob`` on the whole held-out case, computed on the training device."""
        if self.config.selection != "heldout_loss" and not self.config.validation_heldout_loss:
            return {}
        return {"heldout_loss": self.objective.of_probability(case, prob, device=self.device)["loss"]}
