"""``RUN_DIR/stopped.json``: a stopped training run that the user chose to use as it is ("use the last weights").

A finished run has ``model.json`` (written by ``paseg train`` at its end); ``model.json`` means "finished" to
``paseg run`` (which skips finished steps), to the Slicer module's model list and to outside scripts, so a stopped
run never gets one. Instead the record ``stopped.json`` names the checkpoint to predict with and where training
stopped::

    {"checkpoint": "checkpoints/stopped-epoch3.pt", "epoch": 3, "iteration": 120, "network": "unet3d", "stage": 1,
     "created": "2026-…", "stopped": true, "paseg_version": "…"}

The checkpoint it names is a snapshot of ``checkpoints/last.pt`` taken when the record is written
(``checkpoints/stopped-epoch<N>.pt``, a hard link where the file system allows, else a copy): resuming the run
rewrites ``last.pt``, and the model listed "stopped at epoch N" must keep predicting with the weights of epoch N.

``paseg predict RUN_DIR`` without ``--checkpoint`` predicts with that checkpoint when the run has no
``model.json`` (:func:`prediction_checkpoint`). Resuming the run (``paseg train --resume``) leaves the record; once
the run finishes its ``model.json`` takes precedence.

stdlib only.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Optional

from PASegLib.utils.atomic import PathLike, atomic_path, atomic_write_json

__all__ = ["STOPPED_RECORD", "prediction_checkpoint", "read_stopped_record", "write_stopped_record"]

#: The record's name inside the run folder.
STOPPED_RECORD = "stopped.json"


def write_stopped_record(run_dir: PathLike, *, epoch: Optional[int], iteration: Optional[int],
                         checkpoint: PathLike = "checkpoints/last.pt", snapshot: bool = True) -> Dict[str, Any]:
    """Write ``RUN_DIR/stopped.json`` (atomically) for the stopped run ``run_dir``; returns the record.

    Args:
        run_dir: a run folder of ``paseg train`` (``config.json`` names its network and stage).
        epoch: the epoch (1-based) training stopped in; ``iteration``: the global iteration (1-based).
        checkpoint: the checkpoint to predict with, relative to ``run_dir`` (or absolute inside it).
        snapshot: record a snapshot of ``checkpoint`` beside it (``stopped-epoch<N>.pt``, else
            ``stopped-iteration<M>.pt``, else ``stopped-last.pt``; a hard link, else a copy) rather than the file
            itself, which a resumed run rewrites.

    Raises:
        ValueError: ``run_dir`` finished (has ``model.json``: use it as it is), has no ``config.json``, or the
            checkpoint does not exist (nothing was trained before the stop).
    """
    run = Path(run_dir)
    if (run / "model.json").is_file():
        raise ValueError(f"{run} finished (model.json): use it as it is, no stopped record is needed")
    try:
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{run} is not a training run folder (config.json cannot be read: {exc})") from None
    path = Path(checkpoint)
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(run.resolve())
        except ValueError:
            raise ValueError(f"checkpoint {checkpoint} is not inside the run folder {run}") from None
    if not (run / path).is_file():
        raise ValueError(f"{run}: no checkpoint {path} (the run stopped before its first checkpoint: resume it)")
    if snapshot:
        label = f"epoch{int(epoch)}" if epoch is not None else \
            f"iteration{int(iteration)}" if iteration is not None else path.stem
        copy = path.with_name(f"stopped-{label}{path.suffix}")
        if copy != path:
            _snapshot(run / path, run / copy)
            path = copy
    import PASegLib

    record = {"checkpoint": path.as_posix(), "epoch": None if epoch is None else int(epoch),
              "iteration": None if iteration is None else int(iteration), "network": config.get("network"),
              "stage": int(config.get("stage", 1)), "created": datetime.now().isoformat(timespec="seconds"),
              "stopped": True, "paseg_version": PASegLib.__version__}
    atomic_write_json(run / STOPPED_RECORD, record)
    return record


def _snapshot(source: Path, dest: Path) -> None:
    """``dest`` holds the weights ``source`` holds now (a hard link: no space used; a copy where links are not
    possible), written atomically; ``source`` is later replaced as a whole (atomic checkpoint writes), so the
    link keeps the old weights."""
    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)


def read_stopped_record(run_dir: PathLike) -> Optional[Dict[str, Any]]:
    """``RUN_DIR/stopped.json``, or ``None`` when there is none.

    Raises:
        ValueError: the record exists but cannot be read, or names no checkpoint file of the run.
    """
    path = Path(run_dir) / STOPPED_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("checkpoint"), str):
        raise ValueError(f"{path}: names no checkpoint")
    if not (Path(run_dir) / record["checkpoint"]).is_file():
        raise ValueError(f"{path}: its checkpoint {record['checkpoint']} does not exist")
    return record


def prediction_checkpoint(run_dir: PathLike, requested: Optional[str]) -> str:
    """The checkpoint ``paseg predict`` uses: ``requested`` when given; else the one ``stopped.json`` names when
    the run has no ``model.json``; else ``"best"``."""
    if requested:
        return requested
    run = Path(run_dir)
    if run.is_dir() and not (run / "model.json").is_file():
        record = read_stopped_record(run)
        if record is not None:
            return str(run / record["checkpoint"])
    return "best"
