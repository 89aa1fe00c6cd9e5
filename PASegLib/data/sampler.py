"""Random training patches from prepared cases, with the cases read ahead and the data time of each batch.

The sampler works on in-memory :class:`~PASegLib.data.prepared.PreparedCase` objects or on
:class:`~PASegLib.data.streaming.CachedCase` objects read from the prepared-data cache when needed; the
patches are the same for the same random generator (the generator is only ever drawn from here, in the
trainer's order). numpy only.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from PASegLib.data.dataset import DatasetError
from PASegLib.data.settings import SamplingSettings, as_sampling_settings

__all__ = ["PatchSampler"]


class PatchSampler:
    """Random training patches from prepared cases.

    A patch is centred inside a random annotated object's box with probability
    ``config.foreground_crop_probability`` (else anywhere), padded where it leaves the image (padding is
    invalid and unlabeled), then flipped along each of ``config.flip_axes`` with probability 0.5.
    All randomness comes from the ``numpy.random.Generator`` passed to :meth:`sample`.

    With cases read from the cache (:class:`~PASegLib.data.streaming.CachedCase`), :meth:`timed` starts
    loading the next ``config.prefetch_cases`` distinct cases of the epoch order in the background while the
    current batch is cut and trained.
    """

    def __init__(self, cases: Sequence[Any], config: SamplingSettings) -> None:
        config = as_sampling_settings(config)
        if not cases:
            raise ValueError("no training case: the training set is empty")
        self.cases = list(cases)
        self.patch = np.asarray(config.patch_size, dtype=int)
        self.fg_probability = float(config.foreground_crop_probability)
        self.flip_axes = tuple(config.flip_axes)
        self.full = config.supervision == "full"
        self.points = bool(config.point_channel or config.point_loss_weight > 0)
        self.point_input = bool(config.point_channel)
        self.point_sigma_mm = float(config.point_sigma_mm)
        self.point_dropout = float(config.point_channel_dropout)
        #: a mixed cohort: patches say whether their case is densely labelled (SCM keeps those labels)
        self.mixed = any("dense" in (getattr(c, "kinds", None) or ()) for c in self.cases)
        self.lookahead = int(config.prefetch_cases)
        self.store = next((c.store for c in self.cases if hasattr(c, "store")), None)
        self._started: Optional[float] = None
        self._ready: Optional[float] = None
        if self.full:
            missing = [c.case_id for c in self.cases if not getattr(c, "has_label", c.label is not None)]
            if missing:
                raise DatasetError(f"full supervision needs <case>_label files; missing for {', '.join(missing)}")

    # -- read-ahead and data time ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def timed(self, *, upcoming: Sequence[int] = ()) -> Iterator[None]:
        """Time the building of one batch (the ``with`` body) and prefetch the cases of ``upcoming`` (indices of
        the following batches, in order) meanwhile; :meth:`data_wait` then tells the batch's share."""
        self._started, self._ready = time.monotonic(), None
        if self.store is not None and self.lookahead > 0:
            ahead: List[Any] = []
            for i in upcoming:
                case = self.cases[i]
                if hasattr(case, "store") and case not in ahead:
                    ahead.append(case)
                    if len(ahead) == self.lookahead:
                        break
            self.store.prefetch(ahead)
        yield
        self._ready = time.monotonic()

    def data_wait(self) -> float:
        """Share of the time since the last :meth:`timed` batch began that was spent building it (waiting for
        cases to be read from the cache, cutting and stacking the patches), in ``[0, 1]``; 0 before any batch."""
        if self._started is None or self._ready is None:
            return 0.0
        total = time.monotonic() - self._started
        return round(min(1.0, (self._ready - self._started) / total), 4) if total > 0 else 0.0

    # -- patches --------------------------------------------------------------------------------------------
    def sample(self, case_index: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        """Patch of case ``case_index``: ``image`` float32 ``[1, I, J, K]``, ``partial`` int64 ``[1, I, J, K]``,
        ``valid`` float32 ``[1, I, J, K]`` with ``(I, J, K) = patch_size``; plus ``label`` int64 (dense ground
        truth, padding 2 = ignored) when ``full`` supervision was asked for; ``boxes`` int64 ``[M, 2, 3]``: the
        M objects' inclusive boxes ``(lo, hi)`` in the patch's ``[i, j, k]`` voxels (flipped with the patch;
        they may extend beyond it); with ``point_channel`` / a point loss ``points`` float32 ``[1, I, J, K]`` (the
        click heatmap, :mod:`~PASegLib.data.clickmaps`) and with ``point_channel`` ``point_keep`` ``[1]`` (0 =
        feed an empty click channel); in a mixed cohort ``dense`` ``[1]`` (1 = the case is densely labelled)."""
        case = self.cases[case_index]
        if hasattr(case, "load"):
            case = case.load()  # read from the cache (or the prefetch thread) when not in memory
        shape = np.asarray(case.image.shape)
        if case.boxes and rng.random() < self.fg_probability:
            lo, hi = case.boxes[int(rng.integers(len(case.boxes)))]
            center = np.array([rng.integers(a, b + 1) for a, b in zip(lo, hi)])
        else:
            center = np.array([rng.integers(0, n) for n in shape])
        start = center - self.patch // 2
        # keep the patch inside the image where the image is large enough
        start = np.where(shape >= self.patch, np.clip(start, 0, shape - self.patch), (shape - self.patch) // 2)
        src = tuple(slice(max(0, s), min(n, s + p)) for s, p, n in zip(start, self.patch, shape))
        dst = tuple(slice(max(0, -s), max(0, -s) + (sl.stop - sl.start)) for s, sl in zip(start, src))
        image = np.zeros(self.patch, dtype=np.float32)
        partial = np.full(self.patch, 2, dtype=np.int64)
        valid = np.zeros(self.patch, dtype=np.float32)
        image[dst], partial[dst], valid[dst] = case.image[src], case.partial[src], case.valid[src]
        arrays = {"image": image, "partial": partial, "valid": valid}
        if self.full:
            arrays["label"] = np.full(self.patch, 2, dtype=np.int64)
            arrays["label"][dst] = case.label[src]
        if self.points:  # the click channel / point-loss target, cut to the patch (clickmaps.py)
            from PASegLib.data.clickmaps import click_heatmap, positive_points

            arrays["points"] = click_heatmap(positive_points(case.clicks, getattr(case, "kinds", None)), self.patch,
                                             case.geometry.spacing, self.point_sigma_mm, offset=start)
        # object boxes in patch coordinates (inclusive; may extend beyond the patch), flipped with the patch
        boxes = np.array([[np.asarray(lo) - start, np.asarray(hi) - start] for lo, hi in case.boxes],
                         dtype=np.int64).reshape(-1, 2, 3)
        for axis in self.flip_axes:
            if rng.random() < 0.5:
                arrays = {k: np.flip(a, axis) for k, a in arrays.items()}
                boxes[:, :, axis] = self.patch[axis] - 1 - boxes[:, ::-1, axis]
        out = {**{k: np.ascontiguousarray(a)[None] for k, a in arrays.items()}, "boxes": boxes}
        if self.mixed:
            out["dense"] = np.array([float("dense" in (getattr(case, "kinds", None) or ()))], dtype=np.float32)
        if self.point_input:  # 0: this patch trains the model without clicks (point_channel_dropout)
            out["point_keep"] = np.array([0.0 if rng.random() < self.point_dropout else 1.0], dtype=np.float32)
        return out
