"""Prepared cases read from the cache when they are needed: a bounded in-memory LRU and a prefetch thread.

Training memory does not grow with the cohort: :func:`~PASegLib.data.prepare.prepare_cases` (``lazy=True``)
returns one :class:`CachedCase` per case, which holds only what the entry's metadata says (clicks, boxes,
geometries, a few hundred bytes) and reads its voxel arrays from its cache entry
(:func:`~PASegLib.data.cache.read_entry`) when they are first needed. The :class:`CaseStore` shared by the
cases of a run keeps the most recently used loaded cases in memory up to ``limit_bytes``
(:attr:`TrainConfig.cache_mb <PASegLib.training.config.TrainConfig>`), evicting the least recently used ones.

Loading overlaps computation: before each training batch the patch sampler asks the store to
:meth:`~CaseStore.prefetch` the next cases of the epoch's order; one background thread reads them (the copy
out of the memory-mapped file releases the GIL) while the main thread trains. Patches themselves are still
cut in the main thread from the trainer's random generator, in the trainer's order, so the patches (and a
deterministic run's losses) are exactly those of the in-memory path: prefetching only changes *when* a case's
arrays are read, never which values are drawn.

Bound: the store holds at most ``limit_bytes`` of loaded cases (a single case larger than the limit is held
alone); beyond that, memory holds the cases of the batch being cut and at most one case being loaded.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import numpy as np

from PASegLib.data.cache import DAMAGED, EntryInfo, read_entry
from PASegLib.data.prepared import PreparedCase

__all__ = ["CachedCase", "CaseStore"]


class CaseStore:
    """Loaded prepared cases, least recently used evicted beyond ``limit_bytes``; loads in a background thread.

    Args:
        limit_bytes: most bytes of voxel arrays held (``None``: no limit).

    Attributes:
        wait_seconds: time the callers of :meth:`get` spent waiting for loads (summed; reset by the caller).
        loads: number of entries read so far.
        peak_bytes: the most bytes held at once.
    """

    def __init__(self, *, limit_bytes: Optional[int]) -> None:
        self.limit_bytes = limit_bytes
        self._held: OrderedDict[str, PreparedCase] = OrderedDict()
        self._sizes: Dict[str, int] = {}
        self._loading: Dict[str, Future] = {}
        self._lock = threading.Lock()
        self._executor: Optional[ThreadPoolExecutor] = None
        self.wait_seconds = 0.0
        self.loads = 0
        self.peak_bytes = 0

    @property
    def held_bytes(self) -> int:
        """Bytes of the voxel arrays held now."""
        with self._lock:
            return sum(self._sizes.values())

    def held(self) -> List[str]:
        """Case ids held now, least recently used first."""
        with self._lock:
            return [c.case_id for c in self._held.values()]

    def _load(self, case: CachedCase) -> PreparedCase:
        try:
            loaded = read_entry(case.info, case.case_id)
        except DAMAGED as exc:
            raise RuntimeError(f"prepared-data cache entry {case.info.path} of case {case.case_id!r} changed or was "
                               f"removed during the run ({type(exc).__name__}: {str(exc)[:120]}); run the command "
                               f"again to prepare it anew") from None
        key = case.key
        with self._lock:
            self.loads += 1
            self._loading.pop(key, None)
            self._held[key] = loaded
            self._held.move_to_end(key)
            self._sizes[key] = case.nbytes
            self._evict(keep=key)
        return loaded

    def _evict(self, *, keep: str) -> None:
        """Drop least recently used cases until the held bytes fit the limit (``keep`` stays). Lock held."""
        if self.limit_bytes is not None:
            total = sum(self._sizes.values())
            for key in list(self._held):
                if total <= self.limit_bytes:
                    break
                if key != keep:
                    total -= self._sizes.pop(key)
                    del self._held[key]
        self.peak_bytes = max(self.peak_bytes, sum(self._sizes.values()))

    def get(self, case: CachedCase) -> PreparedCase:
        """``case`` loaded: from memory, from the prefetch thread (waiting for it) or read now."""
        key = case.key
        with self._lock:
            loaded = self._held.get(key)
            if loaded is not None:
                self._held.move_to_end(key)
                return loaded
            pending = self._loading.get(key)
        started = time.monotonic()
        try:
            return pending.result() if pending is not None else self._load(case)
        finally:
            self.wait_seconds += time.monotonic() - started

    def prefetch(self, cases: Sequence[CachedCase]) -> None:
        """Start loading ``cases`` (those neither held nor loading) in the background thread, in this order."""
        for case in cases:
            key = case.key
            with self._lock:
                if key in self._held or key in self._loading:
                    continue
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paseg-prefetch")
                self._loading[key] = self._executor.submit(self._load, case)

    def close(self) -> None:
        """Drop every held case and stop the background thread (after its current load)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        with self._lock:
            self._held.clear()
            self._sizes.clear()
            self._loading.clear()


class CachedCase:
    """A prepared case whose voxel arrays are read from its cache entry when needed (through its store).

    It reads like a :class:`~PASegLib.data.prepared.PreparedCase`: ``case_id``, ``clicks``, ``boxes``,
    ``geometry``, ``source_geometry`` are held; ``image``, ``partial``, ``valid``, ``label`` are the arrays of
    :meth:`load` (``[I, J, K]`` on ``geometry``).
    """

    def __init__(self, case_id: str, info: EntryInfo, store: CaseStore) -> None:
        self.case_id = case_id
        self.info = info
        self.store = store
        self.clicks = info.clicks
        self.kinds = info.kinds
        self.boxes = info.boxes
        self.geometry = info.geometry
        self.source_geometry = info.source_geometry
        self.has_label = info.has_label
        self.nbytes = info.nbytes
        self.key = str(info.path)

    def __repr__(self) -> str:
        return f"CachedCase({self.case_id!r}, {str(self.info.path)!r})"

    def load(self) -> PreparedCase:
        """The case with its arrays in memory (held by the store while it is recently used)."""
        return self.store.get(self)

    @property
    def image(self) -> np.ndarray:
        return self.load().image

    @property
    def partial(self) -> np.ndarray:
        return self.load().partial

    @property
    def valid(self) -> np.ndarray:
        return self.load().valid

    @property
    def label(self) -> Optional[np.ndarray]:
        return self.load().label if self.has_label else None
