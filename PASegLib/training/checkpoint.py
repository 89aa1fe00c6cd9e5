"""Checkpoints: atomic writes, safe loading (``torch.load(weights_only=True)``) and clear refusals.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python values:

``{"format": "paseg-checkpoint", "format_version": 1, "paseg_version": str, "kind": "stage1" | "scm",
"networks": {role: {"name": registered network name, "state_dict": …}}, "optimizers": {role: state},
"scalers": {role: state}, "trainer": {epoch counters, best score, …}, "rng": {python, numpy, torch, cuda},
"config": TrainConfig dict}``

Roles are ``"primary"`` (stage 1: the only network) and ``"auxiliary"`` (SCM).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from .. import __version__
from ..atomic import PathLike, atomic_path

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "load_checkpoint", "load_network_weights", "save_checkpoint"]

CHECKPOINT_FORMAT = "paseg-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, damaged, not a PASeg checkpoint, or made for another network."""


def save_checkpoint(path: PathLike, state: Dict[str, Any]) -> Path:
    """Write ``state`` (the layout above, without the format fields) to ``path`` atomically."""
    payload = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "paseg_version": __version__, **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


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
        CheckpointError: the file is missing, truncated/corrupt, holds something other than a PASeg
            checkpoint (e.g. arbitrary pickled objects, refused by ``weights_only=True``), has a newer format,
            or was made for other networks.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, …)
        raise CheckpointError(f"{path}: not a readable PASeg checkpoint (damaged, truncated or unsafe): "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a PASeg checkpoint (no '{CHECKPOINT_FORMAT}' format marker)")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
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
