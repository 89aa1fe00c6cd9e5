"""Start or resume a training run on a dataset folder (what ``paseg train`` and the pipeline call).

Stopping (:mod:`PASegLib.jobs.stopping`): a ``RUN_DIR/STOP`` present when the session starts is stale and
removed; one that appears later is honoured in every phase. During data preparation nothing has been
trained in this session, so nothing is saved: the cases prepared so far stay in the cache, the run folder
keeps ``config.json``/``split.json`` (a fresh run) or its unchanged checkpoint (a resumed run), the command
prints a ``stopped`` event (``phase`` ``"preparing"``) and exits with ``EXIT_STOPPED``. The same command
(or ``--resume``) then starts or continues the run.

One trainer per run folder: the folder is locked (:mod:`PASegLib.jobs.lock`) for the whole session; a second
trainer (or a second ``--resume``) is refused naming the process that holds it, and a lock left by a killed
trainer is taken over with a note. Holding the lock, the session removes the temporary files that killed
writers left in the run folder and its ``checkpoints/`` (and in the cache, those whose writer is gone).

A ``checkpoints/`` that is not a folder, or a ``checkpoints/last.pt`` / ``best.pt`` that is not a file (a folder,
a broken link, a device), is refused naming it before anything in the run folder changes.

A run that ended before its first ``checkpoints/last.pt`` (stopped, crashed or killed during preparation or its
first epochs) holds nothing to continue: the same command starts it again from the beginning (with or without
``--resume``), replacing what the abandoned attempt left (``checkpoints/``, ``history.json``,
``loss_curves.png``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from PASegLib.data.dataset import DatasetError, list_cases, select_cases
from PASegLib.jobs.events import emit
from PASegLib.jobs.lock import FolderLock
from PASegLib.jobs.stopping import EXIT_ERROR, EXIT_STOPPED, STOP_FILE, StopFile, StopRequested
from PASegLib.training import distributed
from PASegLib.training.config import TrainConfig, load_run_config
from PASegLib.utils.atomic import PathLike, atomic_write_json, remove_stale_temp_files
from PASegLib.utils.requirements import check_supported_versions

__all__ = ["RESUMABLE_CHANGES", "check_checkpoint_paths", "follow", "make_trainer", "merge_resume_config",
           "prepare_for_rank", "train_from_dataset", "train_on_ranks"]

#: How to continue a stopped ``paseg train`` (the pipeline passes its own).
DEFAULT_HINT = "continue with --resume"
#: Settings that may change when a run is resumed (everything else must match the saved config.json).
RESUMABLE_CHANGES = ("epochs", "device", "num_threads", "amp", "validate_every", "checkpoint_every",
                     "prepare_workers", "cache_mb", "prefetch_cases")


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
    stop_also: Sequence[PathLike] = (),
    resume_hint: str = DEFAULT_HINT,
) -> int:
    """Train a stage-1 (``config.stage == 1``) or SCM (``2``) model on the annotated cases of ``dataset``.

    Args:
        dataset: dataset folder (``<case>_image.<ext>`` with ``<case>.mrk.json`` or ``<case>_7points`` clicks).
        run_dir: the run folder (see :mod:`PASegLib.training.engine`); must be new (or hold only a run that
            ended before its first checkpoint) unless ``resume``. Locked while the function runs.
        config: settings (default :class:`TrainConfig`); with ``resume`` only :data:`RESUMABLE_CHANGES` apply.
        annotations_dir: folder of ``<case>.mrk.json`` files (overrides those in ``dataset``).
        case_ids: restrict to these cases.
        resume: continue from ``run_dir/checkpoints/last.pt`` (a run that ended before its first checkpoint
            starts from the beginning with its saved ``config.json``).
        cache_dir: prepared-data cache (default ``run_dir/cache``); share it between runs on one dataset.
        init_runs: stage 2 only: the stage-1 run folders of the primary and the auxiliary network.
        stream: where progress lines go (default stdout).
        on_iteration: callback after every iteration (tests use it to create the stop file).
        stop_also: further stop files honoured in every phase (the pipeline's ``DIR/STOP``; never removed as
            stale here).
        resume_hint: how to continue after a stop, for the ``stopped`` message.

    Returns:
        0 when finished, :data:`~PASegLib.jobs.stopping.EXIT_STOPPED` when stopped by the stop file.

    Raises:
        ValueError: a torch or MONAI older than :mod:`PASegLib.utils.requirements`' floors, bad dataset, no
            annotated case, an existing run without ``resume``, a missing run with ``resume``, the run folder in
            use by another process (:class:`~PASegLib.jobs.lock.FolderLockedError`), incompatible settings,
            damaged checkpoints or checkpoint paths that are not files; the message names the input.
    """
    import torch  # noqa: F401  (fail early with ImportError when torch is missing)

    check_supported_versions()  # a torch or MONAI older than PASeg's floors: say so before anything is written
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise ValueError(f"--out {run} exists and is not a folder")
    if resume and not (run / "config.json").is_file():
        raise ValueError(f"--resume: {run} holds no run to resume (needs config.json and checkpoints/last.pt); "
                         f"start it without --resume")
    created = not run.exists()
    lock = FolderLock(run, purpose="paseg train")
    lock.acquire()  # before anything is read or removed: another trainer's STOP or files are not ours
    try:
        return _train_locked(dataset, run, config, created=created, annotations_dir=annotations_dir,
                             case_ids=case_ids, resume=resume, cache_dir=cache_dir, init_runs=init_runs,
                             stream=stream, on_iteration=on_iteration, stop_also=stop_also, resume_hint=resume_hint)
    except BaseException:
        lock.release()
        if created and not resume and not (run / "config.json").is_file():  # bad input leaves nothing behind
            shutil.rmtree(run, ignore_errors=True)
        raise
    finally:
        lock.release()


def _train_locked(dataset: PathLike, run: Path, config: Optional[TrainConfig], *, created: bool, annotations_dir,
                  case_ids, resume: bool, cache_dir, init_runs, stream, on_iteration, stop_also,
                  resume_hint: str) -> int:
    """:func:`train_from_dataset` once the run folder is locked."""
    from PASegLib.data.prepare import prepare_cases
    from PASegLib.data.prepared import split_cases

    check_checkpoint_paths(run)  # before anything changes: a folder named last.pt is not an abandoned attempt
    for folder in (run, run / "checkpoints"):
        remove_stale_temp_files(folder, owned=True)  # ours while locked: left by killed writers
    stop = StopFile(run / STOP_FILE, also=stop_also)
    stop.clear_stale()  # before the first progress event: a STOP written after it is honoured
    has_checkpoint = (run / "checkpoints" / "last.pt").is_file()
    abandoned = not has_checkpoint and not (run / "model.json").is_file() and (
        (run / "config.json").is_file() or (run / "checkpoints").exists())
    if resume:
        if not (run / "config.json").is_file():
            raise ValueError(f"--resume: {run} holds no run to resume (needs config.json and checkpoints/last.pt)")
        config = merge_resume_config(load_run_config(run / "config.json"), config, source=run / "config.json")
    else:
        config = config or TrainConfig()
        if has_checkpoint or (run / "model.json").exists():
            raise ValueError(f"{run} already holds a training run; use --resume to continue it or another --out")
    config.check_trainable(world_size=distributed.context().world_size)  # before anything is prepared or written
    if abandoned:
        print(f"note: {run} ended before its first checkpoint (stopped, crashed or killed); training starts from "
              f"the beginning", file=sys.stderr)
    device = distributed.rank_device(config.device)  # several processes: this rank's GPU (or the CPU)
    files = list_cases(dataset, annotations_dir=annotations_dir)
    files = select_cases(files, case_ids)
    annotated = [f for f in files if f.has_annotation]
    if not annotated:
        raise DatasetError(f"{dataset}: no case has clicks (<case>.mrk.json or <case>_7points); annotate cases "
                           f"in Slicer or run `paseg simulate-clicks`")
    if config.stage == 2 and (not init_runs or len(init_runs) != 2):
        raise ValueError("stage 2 needs --init RUN_PRIMARY RUN_AUXILIARY (the two stage-1 runs)")

    restart = resume and not has_checkpoint  # a run that ended before training: start it with its saved settings
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
            if abandoned:
                _forget_attempt(run)
            config.save(run / "config.json")
            atomic_write_json(run / "split.json", split)

        def report(index: int, total: int, case_id: str, cached: bool) -> None:
            emit("prepare", stream=stream, index=index + 1, total=total, case=case_id, cached=cached)

        ordered = [by_id[c] for c in split["train"] + split["validation"]]
        emit("phase", stream=stream, phase="preparing", total=len(ordered))
        try:
            prepared = prepare_cases(ordered, config, cache_dir=cache, on_case=report, stop=stop,
                                     lazy=config.cache_mb is not None)
        except StopRequested:
            return _stopped_in_preparation(run, stop, stream, resumed=resume and not restart, hint=resume_hint)
        train_cases, val_cases = prepared[: len(split["train"])], prepared[len(split["train"]):]
        # several processes: the other ranks read the prepared cases from the cache and train alongside
        distributed.publish_plan(run=run, files=ordered, n_train=len(split["train"]), config=config.to_dict(),
                                 cache=cache, resume=resume and not restart, init_runs=init_runs,
                                 resume_hint=resume_hint)
        trainer = make_trainer(config, run, train_cases, val_cases, device, stream, init_runs, stop=stop,
                                resume_hint=resume_hint)
    except BaseException:
        if created and not resume:  # bad input leaves nothing behind
            for name in ("config.json", "split.json"):
                (run / name).unlink(missing_ok=True)
        raise
    return trainer.run(resume=resume and not restart, on_iteration=on_iteration, clear_stale_stop=False)


def _kind_of(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        return f"a broken link (to {os.readlink(path)})"
    return "a folder" if path.is_dir() else "not a regular file"


def check_checkpoint_paths(run: PathLike) -> None:
    """Refuse a run folder whose ``checkpoints`` is not a folder or whose ``checkpoints/last.pt`` / ``best.pt``
    exists but is not a file (a folder, a broken link, a device): training reads its state from there and
    replaces those files, so it would otherwise start from scratch or fail after training.

    Raises:
        ValueError: naming the path and what it is.
    """
    folder = Path(run) / "checkpoints"
    if os.path.lexists(folder) and not folder.is_dir():
        raise ValueError(f"{folder} is {_kind_of(folder)}, not the run's checkpoint folder; move it away, then run "
                         f"the command again")
    for name in ("last.pt", "best.pt"):
        path = folder / name
        if os.path.lexists(path) and not path.is_file():
            raise ValueError(f"{path} is {_kind_of(path)}, not a checkpoint file (training reads its state from "
                             f"checkpoints/last.pt and writes both files); move it away, then run the command again")


def _forget_attempt(run: Path) -> None:
    """Remove what an attempt that ended before its first ``last.pt`` left (its ``best.pt`` is not this run's)."""
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    for name in ("history.json", "loss_curves.png"):
        (run / name).unlink(missing_ok=True)


def _check_init_runs(config: TrainConfig, init_runs: Optional[Sequence[PathLike]]) -> None:
    """Stage 2: the two ``--init`` runs are stage-1 runs of two different networks (checked before any file
    of the new run is written; the checkpoints themselves are checked when the trainer loads them)."""
    if config.stage == 2:
        from PASegLib.training.scm import networks_of_runs

        networks_of_runs(init_runs)


def _stopped_in_preparation(run: Path, stop: StopFile, stream: Any, *, resumed: bool, hint: str) -> int:
    """A stop during data preparation: nothing to save; say so and return :data:`EXIT_STOPPED`."""
    stop.consume()
    if resumed:
        message = f"stopped during data preparation; checkpoints/last.pt is unchanged: {hint}"
    elif hint == DEFAULT_HINT:
        message = ("stopped during data preparation, before training started: nothing to save; run the same "
                   "command again (or add --resume) to start")
    else:
        message = f"stopped during data preparation, before training started: nothing to save; {hint}"
    checkpoint = run / "checkpoints" / "last.pt"
    emit("stopped", stream=stream, phase="preparing", epoch=0, iteration=None,
         checkpoint=str(checkpoint) if resumed else None, message=f"{message} (the prepared cases are cached)")
    return EXIT_STOPPED


def _read_split(run: Path) -> dict:
    import json

    try:
        split = json.loads((run / "split.json").read_text(encoding="utf-8"))
        return {"train": list(split["train"]), "validation": list(split["validation"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{run / 'split.json'}: unreadable case split ({exc})") from None


def prepare_for_rank(files: Sequence[Any], config: TrainConfig, cache: Path) -> list:
    """The prepared cases on a rank other than 0 (:func:`follow`): rank 0 has just
    prepared them into ``cache``, so they are read from it as rank 0 reads them (no progress events)."""
    from PASegLib.data.prepare import prepare_cases

    return prepare_cases(files, config, cache_dir=cache, lazy=config.cache_mb is not None)


def make_trainer(config, run, train_cases, val_cases, device, stream, init_runs, **options):
    if config.stage == 1:
        from PASegLib.training.stage1 import Stage1Trainer

        return Stage1Trainer(config, run, train_cases, val_cases, device=device, stream=stream, **options)
    from PASegLib.training.scm import SCMTrainer

    return SCMTrainer(config, run, train_cases, val_cases, device=device, stream=stream, init_runs=init_runs,
                      **options)


def follow(*, prepare: Callable[..., List[Any]], make_trainer: Callable[..., Any], stream: Any,
           on_iteration: Optional[Callable[[Any], None]] = None) -> int:
    """A rank other than 0: wait for rank 0's plan, read the prepared cases (``prepare(files, config, cache)``,
    from the cache rank 0 filled), build the trainer and train; returns the exit code of the run."""
    message = distributed.broadcast_object(None)
    if message["kind"] == "error":
        raise SystemExit(EXIT_ERROR)  # rank 0 reports it
    if message["kind"] == "exit":
        return int(message["code"])
    config = TrainConfig.from_dict(message["config"])
    run = Path(message["run"])
    prepared = prepare(message["files"], config, Path(message["cache"]))
    n = message["n_train"]
    trainer = make_trainer(config, run, prepared[:n], prepared[n:], distributed.rank_device(config.device), stream,
                           message["init_runs"], stop=StopFile(run / STOP_FILE), resume_hint=message["resume_hint"])
    return trainer.run(resume=message["resume"], on_iteration=on_iteration, clear_stale_stop=False)


def train_on_ranks(start: Callable[[], int], *, stream: Any = None,
                   on_iteration: Optional[Callable[[Any], None]] = None) -> int:
    """Run a training session on this rank: ``start()`` (e.g. :func:`~PASegLib.training.launch.train_from_dataset`)
    on rank 0 and in a single process; :func:`follow` on the other ranks. When rank 0's session ends before
    training (a stop during data preparation, an error) the other ranks are released with its exit code."""
    if not distributed.context().active:
        return start()
    if not distributed.context().is_main:
        return follow(prepare=prepare_for_rank, make_trainer=make_trainer, stream=stream, on_iteration=on_iteration)
    distributed.expect_plan()
    try:
        code = start()
    except BaseException as exc:
        distributed.release_followers(error=exc)
        raise
    distributed.release_followers(code=code)
    return code
