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

The loop is iteration-exact: the stop file is checked before every iteration and every sliding window of a
validation round, and a checkpoint holds the epoch, the position inside it, its case order, every RNG state,
optimizer and scaler states, the best score and the history, so ``resume`` continues exactly where the run
stopped (bit-identical to an uninterrupted run in deterministic mode on CPU), at an epoch boundary too. A stop
during a validation round abandons the round and saves the epoch boundary with ``epoch_end_pending``: the
resumed run redoes that validation round and the rest of the epoch's end (``on_epoch_end``, checkpoint)
before its next iteration (validation draws no random numbers, so nothing else changes).

Keeping the device busy:

* **Batches ahead.** Before an iteration trains, the loop draws the next iteration's patches (and, at an
  epoch's last iteration, the next epoch's case order) from its generator and a background thread cuts them
  (:mod:`.batches`): pinned memory on CUDA, label maps sent as uint8. The draws keep the order of cutting every
  batch in the loop, and a checkpoint saves the generator's state from before the drawn-ahead batch, so the
  patches and a resume are exactly those of the synchronous loop (``prefetch=False``).
* **One read of the losses per interval.** ``train_step`` returns its loss terms as tensors on the device; the
  loop stacks them and reads every ``log_every`` iterations all the terms of the interval with one transfer
  (``.tolist()``), then checks that they are finite (:meth:`Trainer.check_losses`: a non-finite loss raises
  ``FloatingPointError``, before any checkpoint can hold its weights) and emits the ``iteration`` events
  (one per iteration, with its own losses). The interval is 1 on the CPU (a read costs nothing there) and
  :data:`CUDA_LOG_EVERY` on a GPU, and the pending losses are always read at the end of an epoch, before a
  checkpoint and when training stops. On CUDA the SGD step is fused and takes the gradient scaler's
  non-finite flag on the device (no host read per step).

Several processes (``paseg train --nproc-per-node N``, ``torchrun``): every rank runs this loop on its share of
each global batch; rank 0 alone writes and reports, and decides when to stop (:mod:`.distributed`).
"""

from __future__ import annotations

import inspect
import json
import math
import time
from dataclasses import dataclass
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
from PASegLib.training.batches import BatchAhead, BatchMaker
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

__all__ = ["CUDA_LOG_EVERY", "EXIT_STOPPED", "STOP_FILE", "Trainer", "label_diagnostics"]

#: iterations between two reads of the losses from a CUDA device (one host–device synchronisation each)
CUDA_LOG_EVERY = 10
#: whether this torch's SGD has the fused implementation (it takes the gradient scaler's flags on the device)
_SGD_FUSED = "fused" in inspect.signature(torch.optim.SGD.__init__).parameters


@dataclass
class _PendingLosses:
    """The loss terms of one iteration still on the device, and its event's other fields."""

    keys: List[str]
    values: torch.Tensor  # float64 [len(keys)] on the device
    epoch_float: float
    fields: Dict[str, Any]


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
        log_every: iterations between two reads of the losses from the device (``None``: 1 on the CPU,
            :data:`CUDA_LOG_EVERY` on CUDA); each read is one host–device synchronisation.
        prefetch: cut the next batch in a background thread while the current one trains (``False``: cut
            every batch in the loop; the patches are the same).
    """

    kind = "base"

    def __init__(self, config: TrainConfig, run_dir: Path, train_cases: Sequence[PreparedCase],
                 val_cases: Sequence[PreparedCase], *, device: torch.device, stream: Any = None,
                 stop: Optional[StopFile] = None, resume_hint: str = "continue with --resume",
                 log_every: Optional[int] = None, prefetch: bool = True) -> None:
        if log_every is not None and (isinstance(log_every, bool) or not isinstance(log_every, int)
                                      or log_every < 1):
            raise ValueError(f"log_every must be an integer >= 1 or None, got {log_every!r}")
        self.config = config
        self.run_dir = Path(run_dir)
        self.train_cases, self.val_cases = list(train_cases), list(val_cases)
        self.device = device
        self.stream = stream
        self.stop = stop if stop is not None else StopFile(self.run_dir / STOP_FILE)
        self.resume_hint = resume_hint
        self.sampler = PatchSampler(self.train_cases, config)
        self.log_every = log_every if log_every is not None else (CUDA_LOG_EVERY if device.type == "cuda" else 1)
        self.prefetch = bool(prefetch)
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
        config.check_trainable(world_size=self.dist.world_size)  # e.g. PSCV's contrastive term at one patch
        self.batches = BatchMaker(self.sampler, device, rank=self.dist.rank, world_size=self.dist.world_size,
                                  background=self.prefetch)
        self._ahead: Optional[BatchAhead] = None  # the next iteration's batch, drawn and being cut
        self._pending: List[_PendingLosses] = []  # losses of the iterations not read from the device yet
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

    def train_step(self, batch: Dict[str, torch.Tensor], epoch_float: float) -> Dict[str, torch.Tensor]:
        """One optimisation step on ``batch``; returns the loss terms to report as 0-d tensors (left on the
        device: the loop reads them, :meth:`check_losses`)."""
        raise NotImplementedError

    def check_losses(self, losses: Dict[str, float], epoch_float: float) -> None:
        """Raise ``FloatingPointError`` when the iteration's ``losses`` (read from the device, at fractional epoch
        ``epoch_float``) hold a non-finite training loss."""
        value = losses.get("loss")
        if value is not None and not math.isfinite(value):
            raise FloatingPointError(f"the training loss became {value} at epoch {epoch_float:.2f}")

    def selection_networks(self) -> List[torch.nn.Module]:
        return [self.networks["primary"]]

    def extra_state(self) -> Dict[str, Any]:
        return {}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, epoch: int) -> None:
        pass

    # -- helpers for subclasses -------------------------------------------------------------------------
    @property
    def fused_sgd(self) -> bool:
        """Whether the SGD steps are fused (CUDA, with a torch that has it): one kernel per step, and with AMP
        the gradient scaler's inf/NaN flag stays on the device instead of being read before every step."""
        return self.device.type == "cuda" and _SGD_FUSED

    def make_optimizer(self, net: torch.nn.Module) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(net.parameters(), lr=c.lr, momentum=c.momentum, nesterov=c.nesterov and c.momentum > 0,
                               weight_decay=c.weight_decay, **({"fused": True} if self.fused_sgd else {}))

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
            "rng": self._rng_state(),
            "config": self.config.to_dict(),
        }

    def _rng_state(self) -> Dict[str, Any]:
        """:func:`capture_rng`, with the numpy generator as it was before the batch drawn ahead (if any): the run
        resumes before that batch's iteration and draws it again."""
        state = capture_rng(self.rng)
        if self._ahead is not None:
            state["numpy"] = self._ahead.rng_state
        return state

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
        for opt in self.optimizers.values():  # a checkpoint of another device: this device's SGD implementation
            for group in opt.param_groups:
                group["fused"] = True if self.fused_sgd else None

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
        self.flush_losses()  # the history of the checkpoint holds every iteration trained
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

    def _cases_of(self, order: Sequence[int], position: int) -> Sequence[int]:
        bs = self.config.batch_size
        return order[position * bs:(position + 1) * bs]

    def _batch(self) -> Dict[str, Any]:
        """The batch of the current iteration on the device (drawn ahead and cut in the background, or drawn
        and cut now); then draws the next iteration's batch and starts cutting it."""
        bs = self.config.batch_size
        # the next cases of the epoch are read from the cache meanwhile; the wait for the batch is measured
        with self.sampler.timed(upcoming=self.order[(self.position + 1) * bs:]):
            ahead = self._ahead
            if ahead is not None and ahead.key == (self.epoch, self.position):
                self._ahead = None
                host = ahead.future.result()
            else:
                self._drop_ahead()
                host = self.batches.cut(self.batches.draw(self._cases_of(self.order, self.position), self.rng))
            batch = self.batches.to_device(host)
        self._draw_ahead()
        return batch

    def _epoch_order(self) -> List[int]:
        """The case order of the epoch starting now: drawn ahead with its first batch, or drawn now."""
        ahead = self._ahead
        if ahead is not None and ahead.key == (self.epoch, 0) and ahead.order is not None:
            return ahead.order
        self._drop_ahead()
        return self._new_order()

    def _drop_ahead(self) -> None:
        """Forget the batch drawn ahead (if any), the generator back to where its draws began."""
        if self._ahead is not None:
            self.rng.bit_generator.state = self._ahead.rng_state
            self._ahead = None

    def _draw_ahead(self) -> None:
        """Draw the next iteration's batch (the next epoch's case order first at an epoch's last iteration) and
        start cutting it in the background (nothing after the last iteration or without ``prefetch``)."""
        if not self.prefetch:
            return
        epoch, position = self.epoch, self.position + 1
        if position == self.iterations_per_epoch:
            epoch, position = epoch + 1, 0
        if epoch >= self.config.epochs:
            return
        state = self.rng.bit_generator.state
        order = self._new_order() if position == 0 else None
        draws = self.batches.draw(self._cases_of(order if order is not None else self.order, position), self.rng)
        self._ahead = BatchAhead((epoch, position), order, state, self.batches.start(draws))

    def _log_losses(self, losses: Dict[str, torch.Tensor], epoch_float: float, **fields: Any) -> None:
        """Keep the iteration's loss terms on the device; read them every :attr:`log_every` iterations."""
        keys = list(losses)
        values = torch.stack([torch.as_tensor(losses[k], dtype=torch.float64, device=self.device).detach().reshape(())
                              for k in keys])  # tensors already there stay (a float would be uploaded)
        self._pending.append(_PendingLosses(keys, values, epoch_float, fields))
        if len(self._pending) >= self.log_every:
            self.flush_losses()

    def _read_pending(self) -> List[Dict[str, float]]:
        """The pending iterations' losses as floats: one device → host transfer for all of them."""
        values = torch.cat([p.values for p in self._pending]).tolist()
        out, at = [], 0
        for p in self._pending:
            out.append(dict(zip(p.keys, values[at:at + len(p.keys)])))
            at += len(p.keys)
        return out

    def flush_losses(self) -> None:
        """Read the pending losses from the device (one transfer), check them (:meth:`check_losses`) and emit their
        ``iteration`` events, in order (several processes: the global batch's mean losses)."""
        if not self._pending:
            return
        pending, read = self._pending, self._read_pending()
        self._pending = []
        for p, losses in zip(pending, read):
            losses = distributed.mean_losses(losses)  # several processes: the global batch's loss
            self.check_losses(losses, p.epoch_float)
            fields = dict(p.fields)
            self.emit("iteration", epoch=fields.pop("epoch"), iteration=fields.pop("iteration"),
                      total_iterations=fields.pop("total_iterations"), losses=losses, **fields)

    def _check_pending(self) -> None:
        """This rank's pending losses checked (no event, no collective): after an error, a non-finite loss of an
        earlier iteration is reported as the cause."""
        if self._pending:
            pending, self._pending = self._pending, []
            try:
                read = [dict(zip(p.keys, p.values.tolist())) for p in pending]
            except Exception:  # noqa: BLE001 -- the device failed too: the step's own error is the one to report
                return
            for p, losses in zip(pending, read):
                self.check_losses(losses, p.epoch_float)

    def run(self, *, resume: bool = False, on_iteration: Optional[Callable[[Trainer], None]] = None,
            clear_stale_stop: bool = True) -> int:
        """Train to the end (exit 0) or until the stop file appears (saves, exit :data:`EXIT_STOPPED`).

        ``clear_stale_stop=False``: the caller already removed a stale stop file (at the start of its session,
        :func:`~PASegLib.training.launch.train_from_dataset`); a stop file present now was asked for since.
        """
        try:
            return self._run(resume=resume, on_iteration=on_iteration, clear_stale_stop=clear_stale_stop)
        finally:
            self.batches.close()

    def _run(self, *, resume: bool, on_iteration: Optional[Callable[[Trainer], None]],
             clear_stale_stop: bool) -> int:
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
                    if self.position == 0:  # drawn after the stop check, or ahead (a stop saves the state before)
                        self.order = self._epoch_order()
                    lr = self.learning_rate()
                    for opt in self.optimizers.values():
                        for group in opt.param_groups:
                            group["lr"] = lr
                    batch = self._batch()
                    epoch_float = self.epoch + self.position / self.iterations_per_epoch
                    try:
                        losses = self.train_step(batch, epoch_float)
                    except Exception:
                        self._check_pending()  # a non-finite loss of an earlier iteration is the cause
                        raise
                    self.position += 1
                    self.global_step += 1
                    done_here += 1
                    rate = (time.monotonic() - started) / done_here
                    self._log_losses(losses, epoch_float, epoch=self.epoch + 1, iteration=self.global_step,
                                     total_iterations=self.total_iterations, lr=lr,
                                     eta_s=rate * (self.total_iterations - self.global_step),
                                     data_wait=self.sampler.data_wait())
                    if on_iteration is not None:
                        on_iteration(self)
                self.flush_losses()
                self.epoch += 1
                self.position = 0
                self.epoch_end_pending = True
                self._end_epoch()
        except StopRequested:
            return self._stopped("validating")
        self.flush_losses()
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
