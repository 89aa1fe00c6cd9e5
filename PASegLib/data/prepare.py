"""Prepare a cohort: cached cases are read, the others prepared by a pool of worker processes (or in this one).

:func:`prepare_cases` first reads which cases the cache already holds (a damaged entry is rebuilt with a
warning naming it), then prepares the others: in this process, or in ``config.prepare_workers`` worker processes
(:class:`concurrent.futures.ProcessPoolExecutor`, started with ``forkserver`` where the platform has it —
PASeg's modules preloaded once in the server, so each worker starts in milliseconds — else ``spawn``;
never ``fork``: a process that imported torch must not be forked). Each worker prepares one case at a time and
writes its cache entry atomically, so two workers never write one entry, and a second trainer sharing the cache
at most rewrites an identical entry; the temporary files of killed workers are recognised by their process id
and removed by the next preparation (:func:`~PASegLib.utils.atomic.remove_stale_temp_files`).

Progress (``on_case(index, total, case_id, cached)``) is reported in the order of ``files``, whatever the
order the workers finish in. Errors are those of the serial preparation, raised in the same words: a case that
fails stops the pool (the running workers abandon their cases at their next check, the queued ones are
cancelled, every worker has exited before the error is raised; the failing case leaves no cache entry); when
several cases fail, the error is that of the first, in order, of those that failed before the pool stopped.
The stop file is checked here while waiting and by the workers between the stages of every case, so a stop is
honoured within seconds; the cases finished before it stay cached, the interrupted ones are not.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from PASegLib.data.cache import DAMAGED, EntryInfo, entry_path, inspect_entry, read_entry, save_entry
from PASegLib.data.dataset import CaseFiles, DatasetError, load_case
from PASegLib.data.prepared import PreparedCase, prepare_case
from PASegLib.data.settings import PrepareSettings, as_prepare_settings
from PASegLib.data.streaming import CachedCase, CaseStore
from PASegLib.jobs.stopping import StopFile, StopRequested
from PASegLib.utils.atomic import PathLike, remove_stale_temp_files

__all__ = ["available_cores", "pool_size", "prepare_cases"]

#: With ``prepare_workers = 0`` (automatic), fewer voxels than this left to prepare are prepared in this
#: process: starting workers would cost more than it saves (la_heart: ~3 million voxels, ~4 s per case).
AUTO_POOL_MIN_VOXELS = 2_000_000
#: Seconds between two looks at the workers and the stop file while waiting.
POLL_S = 0.2
#: The error when a worker process died (the pool cannot tell which case it held).
BROKEN = ("a worker process preparing the cases stopped abruptly (killed, out of memory, or started from a script "
          "that lacks the `if __name__ == \"__main__\":` guard); prepare in this process with prepare_workers=1")


def available_cores() -> int:
    """The number of cores this process may use (its CPU affinity where the platform tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _voxels(files: CaseFiles) -> int:
    from PASegLib.image.io import read_geometry

    try:
        shape = read_geometry(files.image).shape
    except (OSError, ValueError, RuntimeError):  # unreadable: its preparation will say so
        return 0
    return int(shape[0]) * int(shape[1]) * int(shape[2])


def pool_size(setting: int, todo: Sequence[CaseFiles]) -> int:
    """Worker processes for preparing ``todo``: ``setting`` (0 = automatic) capped by the number of cases;
    1 means in this process. Automatic: :func:`available_cores`, or 1 when ``todo`` holds fewer than
    :data:`AUTO_POOL_MIN_VOXELS` voxels in all (read from the image headers)."""
    if len(todo) < 2:
        return 1
    if setting == 0:
        if available_cores() < 2:
            return 1
        total = 0
        for files in todo:  # headers only, until the total is reached
            total += _voxels(files)
            if total >= AUTO_POOL_MIN_VOXELS:
                break
        if total < AUTO_POOL_MIN_VOXELS:
            return 1
        setting = available_cores()
    return max(1, min(setting, len(todo)))


def prepare_files(files: CaseFiles, config: PrepareSettings, stop: Any = None) -> PreparedCase:
    """Load one annotated case and prepare it (:func:`~PASegLib.data.prepared.prepare_case`); ``stop.check()``
    is called between the stages."""
    config = as_prepare_settings(config)
    case = load_case(files, load_label=True, load_annotation=True)
    if case.annotation is None:
        raise DatasetError(f"case {files.case_id!r} has no clicks (<case>.mrk.json or <case>_7points file); "
                           f"annotate it first or use `paseg simulate-clicks`")
    return prepare_case(case, config, stop=stop)


# -- worker processes -----------------------------------------------------------------------------------------
class Abandoned(StopRequested):
    """A worker gave up its case because the pool is being stopped (another case failed, or a stop)."""


_ABORT: Any = None  # the pool's abort event, in a worker process


def _worker_init(abort: Any) -> None:
    global _ABORT
    _ABORT = abort
    try:  # one thread per worker: the workers are the parallelism
        import SimpleITK

        SimpleITK.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    except (ImportError, AttributeError):
        pass


class _WorkerStop:
    def __init__(self, stop: Optional[StopFile]) -> None:
        self.stop = stop

    def check(self) -> None:
        if _ABORT is not None and _ABORT.is_set():
            raise Abandoned("preparation abandoned")
        if self.stop is not None:
            self.stop.check()


def _worker_task(files: CaseFiles, config: PrepareSettings, target: Optional[Path],
                 stop: Optional[StopFile]) -> Optional[PreparedCase]:
    """Prepare one case in a worker: write its entry (``target``) or, without a cache, return it."""
    try:
        guard = _WorkerStop(stop)
        guard.check()
        prepared = prepare_files(files, config, guard)
        if target is None:
            return prepared
        save_entry(target, prepared)
        return None
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001 -- an exception that cannot travel back is sent as its words
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
        raise


def _context() -> Any:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__, "SimpleITK", "scipy.ndimage"])  # imported once, in the server
        return ctx
    return multiprocessing.get_context("spawn")


class _Pool:
    """The worker processes of one preparation; :meth:`close` leaves none behind."""

    def __init__(self, workers: int) -> None:
        ctx = _context()
        self.abort = ctx.Event()
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                            initargs=(self.abort,))
        self.futures: Dict[int, Future] = {}

    def result(self, index: int, stop: Optional[StopFile]) -> Optional[PreparedCase]:
        """The result of case ``index``, watching the stop file and the other cases while waiting; a failure
        of any case raises (after :meth:`close` with ``abandon``) the error of the first failed case."""
        future = self.futures[index]
        while True:
            if stop is not None and stop.requested():
                self.close(abandon=True)
                stop.check()
            failed = [f for f in self.futures.values() if f.done() and not f.cancelled() and f.exception()]
            if failed:
                self.close(abandon=True)
                errors = [f.exception() for i, f in sorted(self.futures.items())
                          if f.done() and not f.cancelled() and f.exception() is not None]
                real = [e for e in errors if not isinstance(e, Abandoned)]
                first = (real or errors)[0]
                if isinstance(first, BrokenProcessPool):
                    raise RuntimeError(BROKEN) from None
                raise first
            if future.done():
                return future.result()
            wait([f for f in self.futures.values() if not f.done()], timeout=POLL_S, return_when=FIRST_COMPLETED)

    def close(self, *, abandon: bool) -> None:
        """Stop the workers (``abandon``: running cases give up at their next check, queued ones are cancelled)
        and wait until every worker process has exited."""
        if abandon:
            self.abort.set()
        self.executor.shutdown(wait=True, cancel_futures=abandon)


# -- the cohort -----------------------------------------------------------------------------------------------
def _cached_entry(target: Path) -> Optional[EntryInfo]:
    if not target.is_file():
        return None
    try:
        return inspect_entry(target)
    except DAMAGED as exc:  # a damaged cache entry is rebuilt, never trusted
        print(f"warning: {target}: damaged prepared-data cache entry ({type(exc).__name__}: {str(exc)[:120]}); "
              f"rebuilding it", file=sys.stderr)
        return None


def prepare_cases(
    files: Sequence[CaseFiles],
    config: PrepareSettings,
    *,
    cache_dir: Optional[PathLike] = None,
    on_case: Optional[Callable[[int, int, str, bool], None]] = None,
    stop: Optional[StopFile] = None,
    lazy: bool = False,
    workers: Optional[int] = None,
) -> List[Union[PreparedCase, CachedCase]]:
    """Prepare (or read from ``cache_dir``) every case of ``files``; ``on_case(index, total, case_id, cached)``.

    Args:
        files: the cases, in the order of the result and of the progress reports.
        config: the preparation settings (``expansion``, ``target_spacing_mm``), ``prepare_workers`` and
            ``cache_mb``.
        cache_dir: the prepared-data cache (:mod:`PASegLib.data.cache`); ``None``: nothing is cached.
        on_case: progress, once per case in the order of ``files``.
        stop: checked before every case, between the stages of each and while waiting for the workers.
        lazy: return :class:`~PASegLib.data.streaming.CachedCase` objects read from the cache when needed
            (through one :class:`~PASegLib.data.streaming.CaseStore` holding at most ``config.cache_mb``);
            without a ``cache_dir`` the cases are in memory as with ``lazy=False``.
        workers: worker processes (default ``config.prepare_workers``; see :func:`pool_size`).

    Returns:
        One case per entry of ``files``: :class:`~PASegLib.data.prepared.PreparedCase` (arrays in memory) or,
        with ``lazy``, :class:`~PASegLib.data.streaming.CachedCase`.

    Raises:
        DatasetError: a case has no clicks or an unreadable/invalid file (the message names it).
        StopRequested: the stop file appeared (the cases finished before are in the cache, when there is one).
    """
    config = as_prepare_settings(config)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        remove_stale_temp_files(cache)  # the cache may be shared: only those of writers that are gone
    lazy = lazy and cache is not None
    limit = None if config.cache_mb is None else int(config.cache_mb * 2**20)
    store = CaseStore(limit_bytes=limit) if lazy else None
    targets = [entry_path(cache, f, config) if cache is not None else None for f in files]
    found: Dict[int, EntryInfo] = {}
    for index, target in enumerate(targets):
        if stop is not None:
            stop.check()
        info = _cached_entry(target) if target is not None else None
        if info is not None:
            found[index] = info
    todo = [i for i in range(len(files)) if i not in found]
    size = pool_size(config.prepare_workers if workers is None else workers, [files[i] for i in todo])
    pool = _Pool(size) if size > 1 else None
    out: List[Union[PreparedCase, CachedCase]] = []
    try:
        if pool is not None:
            for i in todo:
                pool.futures[i] = pool.executor.submit(_worker_task, files[i], config, targets[i], stop)
        for index, case_files in enumerate(files):
            if stop is not None:
                stop.check()
            prepared: Optional[PreparedCase] = None
            info = found.get(index)
            if info is None:
                if pool is not None:
                    prepared = pool.result(index, stop)
                else:
                    prepared = prepare_files(case_files, config, stop)
                    if targets[index] is not None:
                        save_entry(targets[index], prepared)
                if targets[index] is not None and (lazy or prepared is None):
                    info = inspect_entry(targets[index])
            if store is not None:
                out.append(CachedCase(case_files.case_id, info, store))
            else:
                out.append(prepared if prepared is not None else read_entry(info, case_files.case_id))
            if on_case is not None:
                on_case(index, len(files), case_files.case_id, index in found)
    except BaseException:
        if pool is not None:
            pool.close(abandon=True)
        raise
    if pool is not None:
        pool.close(abandon=False)
    return out
