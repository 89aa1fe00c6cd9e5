"""Stage two of PA-Seg (Sec. III-B): Self and Cross Monitoring (SCM) of two different networks.

The primary network ``a`` (``config.network``) and the auxiliary ``b`` (``config.aux_network``) start from
the best checkpoints of their own stage-1 runs. Each has a frozen copy (``a₀``, ``b₀``). For every patch::

    L_a = λ · T² · KL(softmax(z_b₀/T) ‖ softmax(z_a/T)) + (1 − λ) · DiceCE(z_a, argmax z_a₀)     (Eq. 14)
    L_b = λ · T² · KL(softmax(z_a₀/T) ‖ softmax(z_b/T)) + (1 − λ) · DiceCE(z_b, argmax z_b₀)     (Eq. 15)

(:class:`~PASegLib.losses.distillation.SelfCrossMonitoringLoss`; teachers carry no gradient). With
``scm_seed_anchor`` the pseudo label keeps the expanded seeds where they are labeled (PASeg's addition). In a
mixed cohort (dense + weak annotations) a densely labelled case always keeps its dense label in place of the
pseudo label, so SCM is the teacher–student round of mixed supervision (paper 003): the frozen copies teach on
the weakly labelled cases, the dense cases supervise directly. Every ``refresh_every`` epochs the frozen copies
are replaced by the weights of the best validation so far when a label-free criterion selects (the official
code reloads its best checkpoints), else (``selection = "last"``, and before the first validation) by the
current weights.

Model selection: ``config.selection`` on the primary network (:mod:`~PASegLib.training.selection`); the
agreement (Dice) between the primary and the auxiliary predictions on the held-out cases is reported too.
Prediction uses the primary network (``ensemble`` averages both, SCM-E).

Several processes (:mod:`~PASegLib.training.distributed`): both networks train in DistributedDataParallel, each
rank on its share of the global batch; the frozen copies start from the same stage-1 files on every rank and
are refreshed from the same weights (the best weights follow the validation rows gathered to every rank), so
teachers and pseudo labels agree on all ranks.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from PASegLib.losses.distillation import SelfCrossMonitoringLoss
from PASegLib.networks import build_network
from PASegLib.training.checkpoint import CheckpointError, load_checkpoint, load_network_weights
from PASegLib.training.engine import Trainer
from PASegLib.training.selection import criterion_value
from PASegLib.training.validation import hard_dice
from PASegLib.utils.atomic import PathLike

__all__ = ["SCMTrainer", "networks_of_runs"]


def _run_checkpoint(run: Path) -> Path:
    for name in ("best", "last"):
        path = run / "checkpoints" / f"{name}.pt"
        if path.is_file():
            return path
    raise ValueError(f"{run}: no stage-1 checkpoint (checkpoints/best.pt or last.pt); train stage 1 first")


def networks_of_runs(runs: Sequence[PathLike]) -> Tuple[str, str]:
    """Network names ``(primary, auxiliary)`` of two stage-1 run folders (from their ``config.json``)."""
    names = []
    for run in runs:
        path = Path(run) / "config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"--init {run}: not a training run folder ({path}: {exc})") from None
        if config.get("stage") != 1:
            raise ValueError(f"--init {run}: expected a stage-1 run, found stage {config.get('stage')!r}")
        names.append(str(config.get("network")))
    if names[0] == names[1]:
        raise ValueError(f"--init runs must use two different networks, both are {names[0]!r}")
    return names[0], names[1]


def anchored_pseudo_label(partial: torch.Tensor, teacher: torch.Tensor, *, dense: Optional[torch.Tensor] = None,
                          seed_anchor: bool = False) -> Optional[torch.Tensor]:
    """The pseudo label of a batch where labels overrule the frozen copy, or ``None`` (the copy's argmax alone).

    Args:
        partial: labels ``[B, 1, I, J, K]`` (0, 1, 2 = unlabeled).
        teacher: the frozen copy's logits ``[B, 2, I, J, K]``.
        dense: ``[B, 1]``, 1 for a patch of a densely labelled case (a mixed cohort): its labels are kept.
        seed_anchor: keep the labelled voxels of every patch (``scm_seed_anchor``).
    """
    if not seed_anchor and dense is None:
        return None
    keep = partial != 2
    if not seed_anchor:
        keep = keep & (dense[:, :, None, None, None] > 0)
    return torch.where(keep, partial, teacher.argmax(dim=1, keepdim=True))


class SCMTrainer(Trainer):
    """SCM trainer (roles ``"primary"`` and ``"auxiliary"``); ``init_runs`` are the two stage-1 runs."""

    kind = "scm"

    def __init__(self, *args: Any, init_runs: Optional[Sequence[PathLike]] = None, **kwargs: Any) -> None:
        if not init_runs or len(init_runs) != 2:
            raise ValueError("SCM needs init_runs = (stage-1 run of the primary, stage-1 run of the auxiliary)")
        self.init_runs = [Path(r) for r in init_runs]
        self.best_weights: Optional[Dict[str, Dict[str, torch.Tensor]]] = None
        super().__init__(*args, **kwargs)

    def roles(self) -> Dict[str, str]:
        return {"primary": self.config.network, "auxiliary": self.config.aux_network}

    def build(self) -> None:
        c = self.config
        for role, run in zip(("primary", "auxiliary"), self.init_runs):
            name = self.roles()[role]
            net = build_network(name, in_channels=1, out_channels=2).to(self.device)
            path = _run_checkpoint(run)
            data = load_checkpoint(path, map_location=self.device)
            if data.get("kind") != "stage1":
                raise CheckpointError(f"{path}: SCM starts from stage-1 checkpoints, this one is {data.get('kind')!r}")
            entry = data["networks"].get("primary")
            found = entry.get("name") if isinstance(entry, dict) else None
            if found is None:
                raise CheckpointError(f"checkpoint {path} is damaged or from another version: missing "
                                      f"networks.primary")
            if found != name:
                raise CheckpointError(f"{path}: stage-1 run of {found!r}, but the {role} network is {name!r}")
            load_network_weights(net, data["networks"]["primary"], source=path)
            self.networks[role] = net
            self.optimizers[role] = self.make_optimizer(net)
            self.scalers[role] = self.make_scaler()
        self.frozen = {role: self._frozen_copy(net.state_dict(), role) for role, net in self.networks.items()}
        self.loss = SelfCrossMonitoringLoss(lambda_kd=c.scm_lambda, temperature=c.temperature)

    def _frozen_copy(self, weights: Dict[str, torch.Tensor], role: str) -> torch.nn.Module:
        net = copy.deepcopy(self.networks[role])
        net.load_state_dict(weights)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def refresh_frozen(self) -> None:
        """Frozen copies ← the best weights so far (the current weights before any validation)."""
        for role, net in self.networks.items():
            weights = self.best_weights[role] if self.best_weights else net.state_dict()
            self.frozen[role].load_state_dict(weights)

    def on_epoch_end(self, epoch: int) -> None:
        if self.config.refresh_every and epoch % self.config.refresh_every == 0:  # 0: fixed stage-one teachers
            self.refresh_frozen()
            self.emit("refresh", epoch=epoch, source="best" if self.best_weights else "current")

    def train_step(self, batch: Dict[str, torch.Tensor], epoch_float: float) -> Dict[str, torch.Tensor]:
        image = batch["image"]
        with torch.no_grad(), torch.autocast(device_type=self.device.type, enabled=self.amp):
            teacher = {role: net(image).float() for role, net in self.frozen.items()}
        other = {"primary": "auxiliary", "auxiliary": "primary"}
        out: Dict[str, torch.Tensor] = {}
        for role, net in self.trained.items():  # both networks in DistributedDataParallel with several ranks
            opt, scaler = self.optimizers[role], self.scalers[role]
            with torch.autocast(device_type=self.device.type, enabled=self.amp):
                logits = net(image)
            pseudo = anchored_pseudo_label(batch["partial"], teacher[role], dense=batch.get("dense"),
                                           seed_anchor=self.config.scm_seed_anchor)
            terms = self.loss.terms(logits.float(), teacher[role], teacher[other[role]], pseudo_label=pseudo)
            opt.zero_grad(set_to_none=True)
            scaler.scale(terms["loss"]).backward()
            scaler.step(opt)
            scaler.update()
            prefix = "a" if role == "primary" else "b"
            # left on the device: the loop reads them once per logging interval and checks them (check_losses)
            out.update({f"{prefix}_{name}": terms[key].detach()
                        for name, key in (("loss", "loss"), ("self", "self"), ("kd", "kd"))})
        out["loss"] = out["a_loss"].double() + out["b_loss"].double()  # the sum of the two as host floats
        return out

    def check_losses(self, losses: Dict[str, float], epoch_float: float) -> None:
        """A non-finite loss of either network stops the run (``FloatingPointError`` naming the network)."""
        for role, key in (("primary", "a_loss"), ("auxiliary", "b_loss")):
            if not math.isfinite(losses[key]):
                raise FloatingPointError(f"the SCM loss of the {role} network became {losses[key]}")

    def validation_terms(self, case, pred: np.ndarray, prob: np.ndarray) -> Dict[str, float]:
        """Agreement (Dice) between the primary's prediction ``pred`` and the auxiliary network's."""
        return {"agreement": hard_dice(pred, self.predict_mask([self.networks["auxiliary"]], case))}

    def validate(self) -> Optional[Dict[str, float]]:
        result = super().validate()
        if result is None or self.config.selection == "last":
            return result  # the frozen copies are refreshed from the current weights
        value = criterion_value(self.config.selection, result)
        if value is not None and (self.best_score is None or value > self.best_score):
            self.best_weights = {r: {k: v.detach().clone() for k, v in n.state_dict().items()}
                                 for r, n in self.networks.items()}
        return result

    def extra_state(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {"frozen": {r: n.state_dict() for r, n in self.frozen.items()}}
        if self.best_weights is not None:
            state["best_weights"] = self.best_weights
        return state

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        for role, weights in (state.get("frozen") or {}).items():
            self.frozen[role].load_state_dict(weights)
        self.best_weights = state.get("best_weights")
