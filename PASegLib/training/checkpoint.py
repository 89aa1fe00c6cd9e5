"""Checkpoints: atomic writes, safe loading (``torch.load(weights_only=True)``) and clear refusals.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python values:

``{"format": "paseg-checkpoint", "format_version": 1, "paseg_version": str, "kind": "stage1" | "scm",
"networks": {role: {"name": registered network name, "state_dict": …}}, "optimizers": {role: state},
"scalers": {role: state}, "trainer": {epoch counters, best score, …}, "rng": {python, numpy, torch, cuda},
"config": TrainConfig dict}``

Roles are ``"primary"`` (stage 1: the only network) and ``"auxiliary"`` (SCM).

Writing goes through a file object of ours, so that a failed write (disk full, quota, read-only, I/O error) is
raised as the ``OSError`` the system gave, naming the checkpoint, instead of torch's "unexpected pos"
``RuntimeError``. Resuming checks every field of the training state first (:func:`check_resume_state`): a
damaged, tampered or foreign state is refused naming the file and the field.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import torch

from PASegLib.utils.atomic import PathLike, atomic_path
from PASegLib.utils.version import __version__

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "check_resume_state", "load_checkpoint", "load_network_weights",
           "save_checkpoint"]

CHECKPOINT_FORMAT = "paseg-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, damaged, not a PASeg checkpoint, or made for another network."""


def save_checkpoint(path: PathLike, state: Dict[str, Any]) -> Path:
    """Write ``state`` (the layout above, without the format fields) to ``path`` atomically."""
    payload = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "paseg_version": __version__, **state}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            sink = _Sink(handle)
            try:
                torch.save(payload, sink)
            except RuntimeError as exc:
                if sink.error is not None:  # the system's error, which torch reports as "unexpected pos …"
                    raise sink.error from None
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise OSError(f"{path}: the checkpoint could not be written ({first})") from None
    return Path(path)


class _Sink(io.RawIOBase):
    """A writable file object for ``torch.save`` that keeps the ``OSError`` of a failed write."""

    def __init__(self, handle: Any) -> None:
        super().__init__()
        self.handle, self.error = handle, None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        if self.handle.closed:  # the object is closed when collected, after the file
            return
        try:
            self.handle.flush()
        except OSError as exc:
            self.error = exc
            raise


def load_checkpoint(
    path: PathLike,
    *,
    expected_networks: Optional[Mapping[str, str]] = None,
    map_location: Any = "cpu",
) -> Dict[str, Any]:
    """Load a checkpoint safely and check it.

    Args:
        path: the checkpoint file.
        expected_networks: role → network name that the caller is about to load the weights into;
            a different or missing network raises :class:`CheckpointError` naming both.
        map_location: as ``torch.load``.

    Raises:
        CheckpointError: the file is missing or not a regular file (e.g. a folder), truncated/corrupt, holds
            something other than a PASeg checkpoint (e.g. arbitrary pickled objects, refused by
            ``weights_only=True``), has a newer format, or was made for other networks.
    """
    path = Path(path)
    if not path.is_file():
        if os.path.lexists(path):
            what = "a folder" if path.is_dir() else "a broken link" if path.is_symlink() else "not a regular file"
            raise CheckpointError(f"{path} is {what}, not a checkpoint file")
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, …)
        raise CheckpointError(f"{path}: not a readable PASeg checkpoint (damaged, truncated or unsafe): "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a PASeg checkpoint (no '{CHECKPOINT_FORMAT}' format marker)")
    version = data.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise CheckpointError(f"{path}: format_version must be a non-negative integer, got {_show(version)} "
                              f"(the file is damaged or not a PASeg checkpoint)")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {data.get('format_version')} is newer than this PASegLib "
                              f"({__version__}, format {FORMAT_VERSION}); update PASegLib")
    networks = data.get("networks")
    if not isinstance(networks, dict) or not networks:
        raise CheckpointError(f"{path}: checkpoint holds no network weights")
    if expected_networks:
        for role, name in expected_networks.items():
            found = networks.get(role, {}).get("name") if isinstance(networks.get(role), dict) else None
            if found != name:
                raise CheckpointError(f"{path}: checkpoint was made for network {found!r} as {role}, not {name!r}; "
                                      f"use a checkpoint of a {name} run (or train/predict with {found})")
    return data


def load_network_weights(net: torch.nn.Module, entry: Mapping[str, Any], *, source: PathLike) -> None:
    """Load ``entry["state_dict"]`` strictly into ``net``; a shape/key mismatch raises :class:`CheckpointError`."""
    try:
        net.load_state_dict(entry["state_dict"], strict=True)
    except (KeyError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{source}: weights do not fit network {entry.get('name')!r} "
                              f"(different settings or architecture): {first}") from None


def _damaged(path: Any, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is damaged or from another version: {what}")


def _entry(mapping: Any, key: str, field: str, path: Any) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise _damaged(path, f"missing {field}")
    return mapping[key]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _integer(value: Any, field: str, path: Any, low: int, high: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _damaged(path, f"{field} is {_show(value)}, expected an integer from {low} to {high}{why}")
    return value


def check_resume_state(data: Mapping[str, Any], path: Any, *, roles: Sequence[str], epochs: int,
                       iterations_per_epoch: int, batch_size: int, train_cases: int) -> Dict[str, Any]:
    """Check the training state of a checkpoint before a resume loads it; returns ``trainer`` with ``history``
    parsed.

    Every field the resume needs must be present (``networks``/``optimizers`` of every role, ``scalers``,
    ``trainer.epoch``/``position``/``global_step``/``order``/``best_score``/``best_epoch``/``history``, ``rng``)
    and possible for the run: ``0 <= epoch <=`` the epochs of the checkpoint's own config (and of the resumed
    run: ``epochs``), ``0 <= position < iterations_per_epoch`` (0 after the last epoch and with
    ``epoch_end_pending``), ``global_step = epoch · iterations_per_epoch + position``, the case
    order a list of training-case indices (of the epoch's length inside an epoch), ``best_epoch <= epoch``.

    Raises:
        CheckpointError: naming ``path`` and the missing or impossible field.
    """
    for role in roles:
        _entry(_entry(data, "networks", "networks", path), role, f"networks.{role}", path)
        _entry(_entry(data, "optimizers", "optimizers", path), role, f"optimizers.{role}", path)
    if not isinstance(_entry(data, "scalers", "scalers", path), Mapping):
        raise _damaged(path, "scalers is not a mapping")
    t = _entry(data, "trainer", "trainer", path)
    if not isinstance(t, Mapping):
        raise _damaged(path, "trainer is not a mapping")
    t = dict(t)
    for key in ("epoch", "position", "global_step", "order", "best_score", "best_epoch", "history"):
        _entry(t, key, f"trainer.{key}", path)
    for key in ("python", "numpy", "torch"):
        _entry(_entry(data, "rng", "rng", path), key, f"rng.{key}", path)
    saved = data.get("config", {}).get("epochs") if isinstance(data.get("config"), Mapping) else None
    saved = saved if isinstance(saved, int) and not isinstance(saved, bool) and saved >= 1 else epochs
    epoch = _integer(t["epoch"], "trainer.epoch", path, 0, saved, f" (the run's epochs: {saved})")
    if epoch > epochs:
        raise CheckpointError(f"checkpoint {path} was saved after epoch {epoch}, but the run is now set to {epochs} "
                              f"epochs; resume with --epochs {epoch} or more")
    last = iterations_per_epoch - 1 if epoch < saved and not t.get("epoch_end_pending") else 0
    position = _integer(t["position"], "trainer.position", path, 0, last,
                        f" (iterations per epoch: {iterations_per_epoch})")
    expected = epoch * iterations_per_epoch + position
    _integer(t["global_step"], "trainer.global_step", path, expected, expected,
             f" (epoch {epoch} · {iterations_per_epoch} iterations + position {position})")
    order = t["order"]
    if not isinstance(order, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < train_cases for i in order):
        raise _damaged(path, f"trainer.order must list training-case indices from 0 to {train_cases - 1}")
    if position > 0 and len(order) != iterations_per_epoch * batch_size:
        raise _damaged(path, f"trainer.order holds {len(order)} entries, expected {iterations_per_epoch * batch_size}")
    if t["best_epoch"] is not None:
        _integer(t["best_epoch"], "trainer.best_epoch", path, 0, epoch)
    score = t["best_score"]
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                              or not math.isfinite(score)):
        raise _damaged(path, f"trainer.best_score is {_show(score)}, expected a finite number or null")
    seconds = t.get("train_seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
        raise _damaged(path, f"trainer.train_seconds is {_show(seconds)}, expected a number >= 0")
    try:
        history = json.loads(t["history"]) if isinstance(t["history"], str) else None
    except ValueError:
        history = None
    if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
        raise _damaged(path, "trainer.history is not a JSON list of progress events")
    t["history"] = history
    return t
