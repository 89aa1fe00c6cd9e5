"""The training loop shared by stage one and SCM: schedule, progress events, validation, checkpoints, resume.

Run folder (``run_dir``)::

    config.json          the TrainConfig (written before the first iteration)
    split.json           training / validation case ids
    checkpoints/last.pt  written atomically every ``checkpoint_every`` epochs, at the end and on stop
    checkpoints/best.pt  the weights ``config.selection`` picks: the last epoch's (default) or the validation
                         epoch best by a label-free criterion
    history.json         every progress event (losses per iteration, validation scores)
    loss_curves.png      per-epoch mean losses and the validation score
    model.json           summary of a finished run (network, best score/epoch, date, version, checkpoint)
    STOP                 create this file to make the trainer save and exit with :data:`EXIT_STOPPED`
                         (protocol: :mod:`PASegLib.jobs.stopping`)
    .paseg-lock          held while a trainer writes here (:mod:`PASegLib.jobs.lock`)

The loop is iteration-exact: the stop file is checked before every iteration (an epoch's case order is drawn
after the check of its first one) and every sliding window of a validation round, and a checkpoint holds the
epoch, the position inside it, its case order, every RNG state, optimizer and scaler states, the best score and
the history, so ``resume`` continues exactly where the run stopped (bit-identical to an uninterrupted run in
deterministic mode on CPU), at an epoch boundary too. A stop
during a validation round abandons the round and saves the epoch boundary with ``epoch_end_pending``: the
resumed run redoes that validation round and the rest of the epoch's end (``on_epoch_end``, checkpoint)
before its next iteration (validation draws no random numbers, so nothing else changes).

Several processes (``paseg train --nproc-per-node N``, ``torchrun``): every rank runs this loop on its share of
each global batch; rank 0 alone writes and reports, and decides when to stop (:mod:`.distributed`).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from PASegLib.data.prepared import PreparedCase
from PASegLib.data.sampler import PatchSampler
from PASegLib.jobs.events import emit
from PASegLib.jobs.stopping import EXIT_STOPPED, STOP_FILE, StopFile, StopRequested
from PASegLib.training import distributed
from PASegLib.training.checkpoint import (
    CheckpointError,
    check_resume_state,
    load_checkpoint,
    load_network_weights,
    save_checkpoint,
)
from PASegLib.training.config import TrainConfig
from PASegLib.training.runtime import capture_rng, describe_device, restore_rng, seed_everything
from PASegLib.training.validation import ValidationMixin, label_diagnostics
from PASegLib.utils.atomic import atomic_write_json
from PASegLib.utils.version import __version__

__all__ = ["EXIT_STOPPED", "STOP_FILE", "Trainer", "label_diagnostics"]


class Trainer(ValidationMixin):
    """Base trainer. Subclasses define the networks and one optimisation step.

    Hooks: :meth:`roles` (role → network name), :meth:`build` (networks, optimizers), :meth:`train_step`,
    :meth:`selection_networks`, :meth:`validation_terms`, :meth:`extra_state` / :meth:`load_extra_state`,
    :meth:`on_epoch_end`.

    Args:
        config: the run's settings.
        run_dir: the run folder (created).
        train_cases: prepared training cases.
        val_cases: prepared held-out cases for label-free selection (may be empty).
        device: torch device.
        stream: where progress lines go (default stdout).
        stop: the stop file(s) to honour (default ``run_dir/STOP``).
        resume_hint: how to continue after a stop, for the ``stopped`` message (default "continue with --resume").
    """

    kind = "base"

    def __init__(self, config: TrainConfig, run_dir: Path, train_cases: Sequence[PreparedCase],
                 val_cases: Sequence[PreparedCase], *, device: torch.device, stream: Any = None,
                 stop: Optional[StopFile] = None, resume_hint: str = "continue with --resume") -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.train_cases, self.val_cases = list(train_cases), list(val_cases)
        self.device = device
        self.stream = stream
        self.stop = stop if stop is not None else StopFile(self.run_dir / STOP_FILE)
        self.resume_hint = resume_hint
        self.sampler = PatchSampler(self.train_cases, config)
        self.iterations_per_epoch = config.iterations_per_epoch or max(len(self.train_cases),
                                                                       config.min_iterations_per_epoch)
        self.total_iterations = config.epochs * self.iterations_per_epoch
        self.amp = bool(config.amp and device.type == "cuda")
        self.rng = np.random.default_rng(config.seed)
        seed_everything(config.seed, deterministic=config.deterministic)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.networks: Dict[str, torch.nn.Module] = {}
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        self.scalers: Dict[str, Any] = {}
        self.dist = distributed.context()  # rank, world size (several processes: :mod:`.distributed`)
        distributed.check_batch_size(config.batch_size)
        self.build()
        #: the networks as trained (DistributedDataParallel wrappers with several processes, else the same)
        self.trained = distributed.wrap_networks(self.networks, device)
        self.epoch = 0  # completed epochs
        self.position = 0  # iterations done inside the current epoch
        self.global_step = 0
        self.order: List[int] = []
        self.epoch_end_pending = False  # stopped inside the validation round of epoch ``self.epoch``
        self.best_score: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.history: List[Dict[str, Any]] = []
        self.train_seconds = 0.0  # wall-clock training time summed over sessions (resumes), up to now
        self._session_clock: Optional[float] = None

    # -- hooks ------------------------------------------------------------------------------------------
    def roles(self) -> Dict[str, str]:
        raise NotImplementedError

    def build(self) -> None:
        raise NotImplementedError

    def train_step(self, batch: Dict[str, torch.Tensor], epoch_float: float) -> Dict[str, float]:
        raise NotImplementedError

    def selection_networks(self) -> List[torch.nn.Module]:
        return [self.networks["primary"]]

    def extra_state(self) -> Dict[str, Any]:
        return {}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, epoch: int) -> None:
        pass

    # -- helpers for subclasses -------------------------------------------------------------------------
    def make_optimizer(self, net: torch.nn.Module) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(net.parameters(), lr=c.lr, momentum=c.momentum, nesterov=c.nesterov and c.momentum > 0,
                               weight_decay=c.weight_decay)

    def make_scaler(self) -> Any:
        return torch.amp.GradScaler("cuda", enabled=self.amp)

    def learning_rate(self) -> float:
        """Poly decay ``lr · (1 − step/total)^power`` (per iteration)."""
        return self.config.lr * (1.0 - self.global_step / max(self.total_iterations, 1)) ** self.config.poly_power

    def emit(self, event: str, **fields: Any) -> Dict[str, Any]:
        if not self.dist.is_main:  # rank 0 alone reports (and keeps the history)
            return {"event": event, **fields}
        record = emit(event, stream=self.stream, **fields)
        if event in ("iteration", "validation"):
            self.history.append(record)
        return record

    # -- state ------------------------------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "networks": {r: {"name": n, "state_dict": self.networks[r].state_dict()} for r, n in self.roles().items()},
            "optimizers": {r: o.state_dict() for r, o in self.optimizers.items()},
            "scalers": {r: s.state_dict() for r, s in self.scalers.items()},
            "trainer": {"epoch": self.epoch, "position": self.position, "global_step": self.global_step,
                        "order": list(self.order), "epoch_end_pending": self.epoch_end_pending,
                        "best_score": self.best_score, "best_epoch": self.best_epoch,
                        "history": json.dumps(self.history), "extra": self.extra_state(),
                        "train_seconds": self.tick()},
            "rng": capture_rng(self.rng),
            "config": self.config.to_dict(),
        }

    def load_state(self, path: Path) -> None:
        """Load checkpoint ``path`` to resume (all fields checked first: a :class:`CheckpointError` names the field)."""
        data = load_checkpoint(path, expected_networks=self.roles(), map_location=self.device)
        t = check_resume_state(data, path, roles=list(self.roles()), epochs=self.config.epochs,
                               iterations_per_epoch=self.iterations_per_epoch, batch_size=self.config.batch_size,
                               train_cases=len(self.train_cases))
        for role in self.roles():
            load_network_weights(self.networks[role], data["networks"][role], source=path)
        parts = [(f"optimizers.{r}", o.load_state_dict, data["optimizers"][r]) for r, o in self.optimizers.items()]
        parts += [(f"scalers.{r}", s.load_state_dict, data["scalers"][r]) for r, s in self.scalers.items()
                  if data["scalers"].get(r)]
        parts += [("trainer.extra", self.load_extra_state, t.get("extra") or {}),
                  ("rng", lambda state: restore_rng(state, self.rng), data["rng"])]
        for field, load, state in parts:
            try:
                load(state)
            except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise CheckpointError(f"checkpoint {path} is damaged or from another version: {field} does not "
                                      f"load ({first[:200]})") from None
        self.epoch, self.position, self.global_step, self.history = t["epoch"], t["position"], t["global_step"], \
            t["history"]
        self.order, self.epoch_end_pending = [int(i) for i in t["order"]], bool(t.get("epoch_end_pending", False))
        self.best_score, self.best_epoch, self.train_seconds = t["best_score"], t["best_epoch"], \
            float(t.get("train_seconds", 0.0))

    def tick(self) -> float:
        """Add the time since the last tick of this session to :attr:`train_seconds`; return the total.

        Time between the last checkpoint and a kill is not counted: a resume redoes (and counts) that work.
        """
        now = time.monotonic()
        if self._session_clock is not None:
            self.train_seconds += now - self._session_clock
        self._session_clock = now
        return round(self.train_seconds, 3)

    def checkpoint_path(self, name: str) -> Path:
        return self.run_dir / "checkpoints" / f"{name}.pt"

    def save(self, name: str) -> Path:
        path = self.checkpoint_path(name)
        distributed.on_main(lambda: save_checkpoint(path, self.state()))  # rank 0 writes; the others wait for it
        self.emit("checkpoint", path=str(path), epoch=self.epoch)
        return path

    def write_history(self) -> None:
        distributed.on_main(self._write_history)

    def _write_history(self) -> None:
        atomic_write_json(self.run_dir / "history.json", {"events": self.history})
        from PASegLib.training.curves import write_loss_curves

        write_loss_curves(self.run_dir / "loss_curves.png", self.history)

    # -- loop -------------------------------------------------------------------------------------------
    def _new_order(self) -> List[int]:
        needed = self.iterations_per_epoch * self.config.batch_size
        order: List[int] = []
        while len(order) < needed:
            order.extend(int(i) for i in self.rng.permutation(len(self.train_cases)))
        return order[:needed]

    def _batch(self) -> Dict[str, Any]:
        bs = self.config.batch_size
        idx = self.order[self.position * bs:(self.position + 1) * bs]
        # the next cases of the epoch are read from the cache meanwhile; the batch's data time is measured
        with self.sampler.timed(upcoming=self.order[(self.position + 1) * bs:]):
            patches = [self.sampler.sample(i, self.rng) for i in idx]
            batch: Dict[str, Any] = {k: torch.from_numpy(np.stack([p[k] for p in patches])).to(self.device,
                                                                                             non_blocking=True)
                                     for k in patches[0] if k != "boxes"}
            batch["boxes"] = [p["boxes"] for p in patches]  # per sample [M, 2, 3] (objects differ in number)
        return batch

    def run(self, *, resume: bool = False, on_iteration: Optional[Callable[[Trainer], None]] = None,
            clear_stale_stop: bool = True) -> int:
        """Train to the end (exit 0) or until the stop file appears (saves, exit :data:`EXIT_STOPPED`).

        ``clear_stale_stop=False``: the caller already removed a stale stop file (at the start of its session,
        :func:`~PASegLib.training.launch.train_from_dataset`); a stop file present now was asked for since.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if clear_stale_stop and self.dist.is_main:
            self.stop.clear_stale()
        if resume:
            self.load_state(self.checkpoint_path("last"))
        self._session_clock = time.monotonic()
        self.emit("start", total_iterations=self.total_iterations, epochs=self.config.epochs,
                  iteration=self.global_step, run_dir=str(self.run_dir), device=describe_device(self.device),
                  train_cases=len(self.train_cases), validation_cases=len(self.val_cases), resumed=resume,
                  **({"processes": self.dist.world_size} if self.dist.active else {}))
        for net in self.networks.values():
            net.train()
        started, done_here = time.monotonic(), 0
        try:
            if self.epoch_end_pending:  # stopped inside a validation round: redo that epoch's end first
                self._end_epoch()
            while self.epoch < self.config.epochs:
                while self.position < self.iterations_per_epoch:
                    if distributed.agree(self.stop.requested):  # rank 0 looks, every rank stops here
                        return self._stopped("training")
                    if self.position == 0:  # drawn after the stop check: a stop here saves the RNG before the draw
                        self.order = self._new_order()
                    lr = self.learning_rate()
                    for opt in self.optimizers.values():
                        for group in opt.param_groups:
                            group["lr"] = lr
                    batch = self._batch() if not self.dist.active else distributed.shard_batch(self)
                    losses = self.train_step(batch, self.epoch + self.position / self.iterations_per_epoch)
                    losses = distributed.mean_losses(losses)  # several processes: the global batch's loss
                    self.position += 1
                    self.global_step += 1
                    done_here += 1
                    rate = (time.monotonic() - started) / done_here
                    self.emit("iteration", epoch=self.epoch + 1, iteration=self.global_step,
                              total_iterations=self.total_iterations, losses=losses, lr=lr,
                              eta_s=rate * (self.total_iterations - self.global_step),
                              data_wait=self.sampler.data_wait())
                    if on_iteration is not None:
                        on_iteration(self)
                self.epoch += 1
                self.position = 0
                self.epoch_end_pending = True
                self._end_epoch()
        except StopRequested:
            return self._stopped("validating")
        if self.best_epoch is None:  # selection "last" (or no validation case): the last weights are selected
            self.best_epoch = self.epoch
            self.save("best")
        self.write_summary()
        self.emit("done", best_score=self.best_score, best_epoch=self.best_epoch, run_dir=str(self.run_dir),
                  train_seconds=self.tick())
        return 0

    def _end_epoch(self) -> None:
        """The end of epoch ``self.epoch``: validation round, :meth:`on_epoch_end`, periodic checkpoint."""
        last = self.epoch == self.config.epochs
        if last or self.epoch % self.config.validate_every == 0:
            self._validation_round()
        self.epoch_end_pending = False
        self.on_epoch_end(self.epoch)  # after validation: SCM refreshes from the newest best weights
        if last or self.epoch % self.config.checkpoint_every == 0:
            self.save("last")
            self.write_history()

    def _stopped(self, phase: str) -> int:
        """Save ``last`` at the current position, remove the stop file, emit ``stopped``; :data:`EXIT_STOPPED`."""
        for net in self.networks.values():  # a validation round may have been left in eval mode
            net.train()
        path = self.save("last")
        self.write_history()
        if self.dist.is_main:
            self.stop.consume()
        if phase == "validating":
            epoch, where = self.epoch, f"in the validation round of epoch {self.epoch} (redone on --resume)"
        else:
            epoch, where = self.epoch + 1, f"at iteration {self.global_step}/{self.total_iterations}"
        self.emit("stopped", phase=phase, epoch=epoch, iteration=self.global_step, checkpoint=str(path),
                  message=f"stopped {where}; checkpoint saved: {self.resume_hint}")
        return EXIT_STOPPED

    def write_summary(self) -> None:
        distributed.on_main(self._write_summary)

    def _write_summary(self) -> None:
        atomic_write_json(self.run_dir / "model.json", {
            "network": self.roles()["primary"], "networks": self.roles(), "stage": self.config.stage,
            "kind": self.kind, "best_score": self.best_score, "best_epoch": self.best_epoch,
            "epochs": self.config.epochs, "train_seconds": self.tick(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "paseg_version": __version__, "checkpoint": "checkpoints/best.pt", "config": "config.json",
            "train_cases": [c.case_id for c in self.train_cases],
            "validation_cases": [c.case_id for c in self.val_cases],
            **({"processes": self.dist.world_size} if self.dist.active else {}),
        })
