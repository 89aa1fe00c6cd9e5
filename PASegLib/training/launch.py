"""Start or resume a training run on a dataset folder (what ``paseg train`` and the pipeline call).

Stopping (:mod:`PASegLib.training.stopping`): a ``RUN_DIR/STOP`` present when the session starts is stale and
removed; one that appears later is honoured in every phase. During data preparation nothing has been
trained in this session, so nothing is saved: the cases prepared so far stay in the cache, the run folder
keeps ``config.json``/``split.json`` (a fresh run) or its unchanged checkpoint (a resumed run), the command
prints a ``stopped`` event (``phase`` ``"preparing"``) and exits with ``EXIT_STOPPED``. The same command
(or ``--resume``) then starts or continues the run.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..atomic import PathLike, atomic_write_json
from ..dataset import DatasetError, list_cases, select_cases
from ..progress_events import emit
from .config import TrainConfig, load_run_config
from .stopping import EXIT_STOPPED, STOP_FILE, StopFile, StopRequested

__all__ = ["RESUMABLE_CHANGES", "merge_resume_config", "train_from_dataset"]

#: Settings that may change when a run is resumed (everything else must match the saved config.json).
RESUMABLE_CHANGES = ("epochs", "device", "num_threads", "amp", "validate_every", "checkpoint_every")


def merge_resume_config(saved: TrainConfig, requested: Optional[TrainConfig], *, source: PathLike) -> TrainConfig:
    """The config to resume with: ``saved`` plus the allowed changes of ``requested``.

    Raises:
        ValueError: ``requested`` differs from ``saved`` in a setting outside :data:`RESUMABLE_CHANGES`.
    """
    if requested is None:
        return saved
    a, b = saved.to_dict(), requested.to_dict()
    differing = sorted(k for k in a if a[k] != b[k] and k not in RESUMABLE_CHANGES)
    if differing:
        raise ValueError(f"--resume continues the run of {source} with its own settings; these differ: "
                         f"{', '.join(f'{k} (saved {a[k]!r}, given {b[k]!r})' for k in differing)}")
    return saved.replace(**{k: b[k] for k in RESUMABLE_CHANGES})


def train_from_dataset(
    dataset: PathLike,
    run_dir: PathLike,
    config: Optional[TrainConfig] = None,
    *,
    annotations_dir: Optional[PathLike] = None,
    case_ids: Optional[Sequence[str]] = None,
    resume: bool = False,
    cache_dir: Optional[PathLike] = None,
    init_runs: Optional[Sequence[PathLike]] = None,
    stream: Any = None,
    on_iteration: Optional[Callable[[Any], None]] = None,
) -> int:
    """Train a stage-1 (``config.stage == 1``) or SCM (``2``) model on the annotated cases of ``dataset``.

    Args:
        dataset: dataset folder (``<case>_image.<ext>`` with ``<case>.mrk.json`` or ``<case>_7points`` clicks).
        run_dir: the run folder (see :mod:`PASegLib.training.engine`); must be new (or hold only a run that
            was stopped before its first checkpoint) unless ``resume``.
        config: settings (default :class:`TrainConfig`); with ``resume`` only :data:`RESUMABLE_CHANGES` apply.
        annotations_dir: folder of ``<case>.mrk.json`` files (overrides those in ``dataset``).
        case_ids: restrict to these cases.
        resume: continue from ``run_dir/checkpoints/last.pt`` (a run stopped before its first checkpoint
            starts from the beginning with its saved ``config.json``).
        cache_dir: prepared-data cache (default ``run_dir/cache``); share it between runs on one dataset.
        init_runs: stage 2 only: the stage-1 run folders of the primary and the auxiliary network.
        stream: where progress lines go (default stdout).
        on_iteration: callback after every iteration (tests use it to create the stop file).

    Returns:
        0 when finished, :data:`~PASegLib.training.stopping.EXIT_STOPPED` when stopped by the stop file.

    Raises:
        ValueError: bad dataset, no annotated case, an existing run without ``resume``, a missing run with
            ``resume``, incompatible settings or checkpoints; the message names the input.
    """
    import torch  # noqa: F401  (fail early with ImportError when torch is missing)

    from .data import prepare_cases, split_cases
    from .runtime import resolve_device

    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise ValueError(f"--out {run} exists and is not a folder")
    stop = StopFile(run / STOP_FILE)
    stop.clear_stale()  # before the first progress event: a STOP written after it is honoured
    has_checkpoint = (run / "checkpoints" / "last.pt").is_file()
    if resume:
        if not (run / "config.json").is_file():
            raise ValueError(f"--resume: {run} holds no run to resume (needs config.json and checkpoints/last.pt)")
        config = merge_resume_config(load_run_config(run / "config.json"), config, source=run / "config.json")
        if not has_checkpoint:
            print(f"note: {run} was stopped before its first checkpoint; training starts from the beginning",
                  file=sys.stderr)
    else:
        config = config or TrainConfig()
        if (run / "checkpoints").exists() or (run / "model.json").exists():
            raise ValueError(f"{run} already holds a training run; use --resume to continue it or another --out")
    device = resolve_device(config.device)
    files = list_cases(dataset, annotations_dir=annotations_dir)
    files = select_cases(files, case_ids)
    annotated = [f for f in files if f.has_annotation]
    if not annotated:
        raise DatasetError(f"{dataset}: no case has clicks (<case>.mrk.json or <case>_7points); annotate cases "
                           f"in Slicer or run `paseg simulate-clicks`")
    if config.stage == 2 and (not init_runs or len(init_runs) != 2):
        raise ValueError("stage 2 needs --init RUN_PRIMARY RUN_AUXILIARY (the two stage-1 runs)")

    created = not run.exists()
    restart = resume and not has_checkpoint  # a run stopped before training: start it with its saved settings
    try:
        if (resume and has_checkpoint) or (restart and (run / "split.json").is_file()):
            split = _read_split(run)
        else:
            train_ids, val_ids = split_cases([f.case_id for f in annotated],
                                             validation_fraction=config.validation_fraction, seed=config.seed)
            split = {"train": train_ids, "validation": val_ids}
        by_id = {f.case_id: f for f in annotated}
        missing = [c for c in split["train"] + split["validation"] if c not in by_id]
        if missing:
            raise DatasetError(f"{dataset}: case(s) of the run's split are missing or lost their clicks: "
                               f"{', '.join(missing)}")
        cache = Path(cache_dir) if cache_dir is not None else run / "cache"
        if not resume or restart:  # saved before preparation: a run stopped there can be resumed or restarted
            _check_init_runs(config, init_runs)
            config.save(run / "config.json")
            atomic_write_json(run / "split.json", split)

        def report(index: int, total: int, case_id: str, cached: bool) -> None:
            emit("prepare", stream=stream, index=index + 1, total=total, case=case_id, cached=cached)

        ordered = [by_id[c] for c in split["train"] + split["validation"]]
        emit("phase", stream=stream, phase="preparing", total=len(ordered))
        try:
            prepared = prepare_cases(ordered, config, cache_dir=cache, on_case=report, stop=stop)
        except StopRequested:
            return _stopped_in_preparation(run, stop, stream, resumed=resume and not restart)
        train_cases, val_cases = prepared[: len(split["train"])], prepared[len(split["train"]):]
        trainer = _make_trainer(config, run, train_cases, val_cases, device, stream, init_runs)
    except BaseException:
        if created and not resume:  # bad input leaves nothing behind
            shutil.rmtree(run, ignore_errors=True)
        raise
    return trainer.run(resume=resume and not restart, on_iteration=on_iteration, clear_stale_stop=False)


def _check_init_runs(config: TrainConfig, init_runs: Optional[Sequence[PathLike]]) -> None:
    """Stage 2: the two ``--init`` runs are stage-1 runs of two different networks (checked before any file
    of the new run is written; the checkpoints themselves are checked when the trainer loads them)."""
    if config.stage == 2:
        from .scm import networks_of_runs

        networks_of_runs(init_runs)


def _stopped_in_preparation(run: Path, stop: StopFile, stream: Any, *, resumed: bool) -> int:
    """A stop during data preparation: nothing to save; say so and return :data:`EXIT_STOPPED`."""
    stop.consume()
    if resumed:
        message = ("stopped during data preparation; checkpoints/last.pt is unchanged: continue with --resume "
                   "(the prepared cases are cached)")
    else:
        message = ("stopped during data preparation, before training started: nothing to save; run the same "
                   "command again (or add --resume) to start (the prepared cases are cached)")
    checkpoint = run / "checkpoints" / "last.pt"
    emit("stopped", stream=stream, phase="preparing", epoch=0, iteration=None,
         checkpoint=str(checkpoint) if resumed else None, message=message)
    return EXIT_STOPPED


def _read_split(run: Path) -> dict:
    import json

    try:
        split = json.loads((run / "split.json").read_text(encoding="utf-8"))
        return {"train": list(split["train"]), "validation": list(split["validation"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{run / 'split.json'}: unreadable case split ({exc})") from None


def _make_trainer(config, run, train_cases, val_cases, device, stream, init_runs):
    if config.stage == 1:
        from .stage1 import Stage1Trainer

        return Stage1Trainer(config, run, train_cases, val_cases, device=device, stream=stream)
    from .scm import SCMTrainer

    return SCMTrainer(config, run, train_cases, val_cases, device=device, stream=stream, init_runs=init_runs)
