"""Random training patches from prepared cases, with the cases read ahead and the data time of each batch.

The sampler works on in-memory :class:`~PASegLib.data.prepared.PreparedCase` objects or on
:class:`~PASegLib.data.streaming.CachedCase` objects read from the prepared-data cache when needed; the
patches are the same for the same random generator (the generator is only ever drawn from here, in the
trainer's order). numpy only.

A patch is made in two steps: :meth:`PatchSampler.draw` takes every random number of the patch (cheap, in the
caller's order, from the geometry and boxes alone), :meth:`PatchSampler.cut` builds its arrays from the case's
voxels (the costly part, deterministic: it may run in another thread). :meth:`PatchSampler.sample` is both;
:meth:`PatchSampler.draw_batch` draws a whole batch (one set of flips for all its patches with ``batch_flips``).

A common frame (``SamplingSettings.patch_frame`` ``"click"`` or ``"object"``, PSCV's setting): each patch is a
box around one object — of a fixed size centred on its click, or its own box plus a margin — resampled to the
patch size (image linear, label maps nearest), so that every patch of a batch shows its object centred at the
patch's centre voxel ``(P − 1) / 2`` per axis. A ``"click"`` frame of the patch's own extent
(``frame_size_mm`` ``None``) is copied voxel for voxel, its start the nearest voxel to centring the click.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from PASegLib.data.dataset import DatasetError
from PASegLib.data.settings import SamplingSettings, as_sampling_settings

__all__ = ["PatchDraw", "PatchSampler"]


@dataclass(frozen=True)
class PatchDraw:
    """The random choices of one training patch (:meth:`PatchSampler.draw`), enough to cut it.

    Attributes:
        case_index: index of the case in the sampler's cases.
        start: the patch's first voxel ``[i, j, k]`` in the case (negative or beyond the image where it is padded).
        flips: the axes the patch is flipped along, in order.
        point_keep: 0.0 = feed an empty click channel, 1.0 = the click heatmap (``None`` without ``point_channel``).
        jitter_seed: seed of the noise that moves the patch's points (``point_jitter_mm``; ``None``: exact points).
        step: a resampled common frame (``patch_frame`` ``"click"`` / ``"object"``): the case voxels per patch
            voxel along ``[i, j, k]``, patch voxel ``p`` lying at the case's continuous index ``origin + p · step``;
            ``None``: the patch is a copy of the case's voxels from ``start``.
        origin: the case's continuous index ``[i, j, k]`` of patch voxel ``(0, 0, 0)`` of a resampled frame.
    """

    case_index: int
    start: Tuple[int, int, int]
    flips: Tuple[int, ...]
    point_keep: Optional[float] = None
    jitter_seed: Optional[int] = None
    step: Optional[Tuple[float, float, float]] = None
    origin: Optional[Tuple[float, float, float]] = None


class PatchSampler:
    """Random training patches from prepared cases.

    A patch is centred inside a random annotated object's box with probability
    ``config.foreground_crop_probability`` (else anywhere), padded where it leaves the image (padding is
    invalid and unlabeled), then flipped along each of ``config.flip_axes`` with probability 0.5 (drawn per patch,
    or once per batch with ``config.batch_flips``: :meth:`draw_batch`). With ``config.patch_frame`` ``"click"`` or
    ``"object"`` a patch is instead a random object's frame (module docstring), padded the same way. Patches that carry
    the clicks (``point_channel`` or a point loss) move each point by Gaussian noise of σ ``config.point_jitter_mm``
    per axis (mm on the case's grid), drawn anew for every patch (Going to Extremes' per-iteration jitter).
    All randomness comes from the ``numpy.random.Generator`` passed to :meth:`sample` (or :meth:`draw`, whose
    patches :meth:`cut` builds, e.g. in a background thread).

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
        self.point_jitter_mm = float(config.point_jitter_mm)
        self.frame = config.patch_frame
        self.frame_size_mm = None if config.frame_size_mm is None else np.asarray(config.frame_size_mm, dtype=float)
        self.frame_margin_mm = float(config.frame_margin_mm)
        self.batch_flips = bool(config.batch_flips)
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
        """Time the getting of one batch (the ``with`` body: cutting it, or waiting for a background thread that
        cut it) and prefetch the cases of ``upcoming`` (indices of the following batches, in order) meanwhile;
        :meth:`data_wait` then tells the batch's share."""
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

    def batch_seconds(self) -> float:
        """Seconds the last :meth:`timed` batch took to get (0 before any batch)."""
        if self._started is None or self._ready is None:
            return 0.0
        return self._ready - self._started

    def data_wait(self) -> float:
        """Share of the time since the last :meth:`timed` batch began that was spent getting it (waiting for
        cases to be read from the cache, cutting and stacking the patches, or waiting for the thread that does),
        in ``[0, 1]``; 0 before any batch."""
        if self._started is None or self._ready is None:
            return 0.0
        total = time.monotonic() - self._started
        return round(min(1.0, (self._ready - self._started) / total), 4) if total > 0 else 0.0

    # -- patches --------------------------------------------------------------------------------------------
    def sample(self, case_index: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        """Patch of case ``case_index`` (:meth:`draw` then :meth:`cut`): ``image`` float32 ``[1, I, J, K]``,
        ``partial`` uint8 ``[1, I, J, K]`` (0, 1, 2 = unlabeled), ``valid`` uint8 ``[1, I, J, K]`` (1 = inside the
        image) with ``(I, J, K) = patch_size``; plus ``label`` uint8 (dense ground truth, padding 2 = ignored)
        when ``full`` supervision was asked for; ``boxes`` int64 ``[M, 2, 3]``: the M objects' inclusive boxes
        ``(lo, hi)`` in the patch's ``[i, j, k]`` voxels (flipped with the patch; they may extend beyond it); with
        ``point_channel`` / a point loss ``points`` float32 ``[1, I, J, K]`` (the click heatmap,
        :mod:`~PASegLib.data.clickmaps`) and with ``point_channel`` ``point_keep`` ``[1]`` (0 = feed an empty
        click channel); in a mixed cohort ``dense`` ``[1]`` (1 = the case is densely labelled).

        The label maps are uint8 (a training loop converts them on its device: 8× fewer bytes to transfer than
        int64)."""
        return self.cut(self.draw(case_index, rng))

    def draw_flips(self, rng: np.random.Generator) -> Tuple[int, ...]:
        """The axes of ``flip_axes`` to flip along, each with probability 0.5 (one number per axis)."""
        return tuple(axis for axis in self.flip_axes if rng.random() < 0.5)

    def draw_batch(self, indices: Sequence[int], rng: np.random.Generator) -> List[PatchDraw]:
        """The random choices of the patches of the cases ``indices``, in order: :meth:`draw` of each (without
        ``batch_flips``: the same numbers as drawing them one by one), or with ``batch_flips`` one set of flips
        drawn first and shared by every patch of the batch."""
        flips = self.draw_flips(rng) if self.batch_flips else None
        return [self.draw(int(i), rng, flips=flips) for i in indices]

    def draw(self, case_index: int, rng: np.random.Generator, *,
             flips: Optional[Tuple[int, ...]] = None) -> PatchDraw:
        """The random choices of a patch of case ``case_index``: the same numbers, in the same order, as
        :meth:`sample` takes; reads the case's shape, boxes and clicks only (no voxel array of a cached case).
        ``flips``: the batch's flips (:meth:`draw_batch`); ``None`` draws the patch's own."""
        case = self.cases[case_index]
        # a cached case knows its grid from its entry's metadata; an in-memory case from its image
        shape = np.asarray(case.geometry.shape if hasattr(case, "load") else case.image.shape)
        step = origin = None
        if self.frame != "random":
            if not case.boxes:
                raise DatasetError(f"case {case.case_id!r} has no annotated object to centre a {self.frame!r} "
                                   f"patch frame on")
            start, step, origin = self._frame(case, int(rng.integers(len(case.boxes))))
        else:
            if case.boxes and rng.random() < self.fg_probability:
                lo, hi = case.boxes[int(rng.integers(len(case.boxes)))]
                center = np.array([rng.integers(a, b + 1) for a, b in zip(lo, hi)])
            else:
                center = np.array([rng.integers(0, n) for n in shape])
            start = center - self.patch // 2
            # keep the patch inside the image where the image is large enough
            start = np.where(shape >= self.patch, np.clip(start, 0, shape - self.patch), (shape - self.patch) // 2)
        if flips is None:
            flips = self.draw_flips(rng)
        keep = (0.0 if rng.random() < self.point_dropout else 1.0) if self.point_input else None
        # one number from the training generator per patch, whatever the case's point count (cut() draws the
        # noise from it): a resumed run draws the same jitter
        jitter = int(rng.integers(2**63 - 1)) if self.points and self.point_jitter_mm > 0 else None
        return PatchDraw(int(case_index), tuple(int(v) for v in start), tuple(flips), keep, jitter, step, origin)

    def _frame(self, case: Any, n: int) -> Tuple[np.ndarray, Optional[Tuple[float, ...]], Optional[Tuple[float, ...]]]:
        """``(start, step, origin)`` of the common frame of object ``n`` of ``case`` (see :class:`PatchDraw`)."""
        lo, hi = (np.asarray(v, dtype=float) for v in case.boxes[n])
        kinds = getattr(case, "kinds", None)
        kind = kinds[n] if kinds is not None else "seven_points"
        clicks = np.asarray(case.clicks[n], dtype=float).reshape(-1, 3) if n < len(case.clicks) else np.zeros((0, 3))
        spacing = np.asarray(case.geometry.spacing, dtype=float)
        if self.frame == "click":
            # the object's click: F of a seven-point or single-point object, else the middle of its box
            center = clicks[0] if kind in ("seven_points", "single_point") and len(clicks) else (lo + hi) / 2.0
            if self.frame_size_mm is None:  # the patch's own extent: a copy, its centre voxel nearest the click
                start = np.rint(center - (self.patch - 1) / 2.0).astype(int)
                return start, None, None
            extent = self.frame_size_mm / spacing  # case voxels across the frame
        else:
            center = (lo + hi) / 2.0
            extent = hi - lo + 1.0 + 2.0 * self.frame_margin_mm / spacing
        step = extent / self.patch
        origin = center - extent / 2.0 + step / 2.0  # voxel centres: patch voxel (P - 1) / 2 lies at the centre
        return (np.floor(origin).astype(int), tuple(float(v) for v in step), tuple(float(v) for v in origin))

    def cut(self, draw: PatchDraw) -> Dict[str, np.ndarray]:
        """The arrays of the patch ``draw`` describes (see :meth:`sample`); draws no random number, so it may
        run in a background thread while the caller goes on drawing."""
        case = self.cases[draw.case_index]
        if hasattr(case, "load"):
            case = case.load()  # read from the cache (or the prefetch thread) when not in memory
        if draw.step is not None:
            return self._finish(case, draw, *self._resampled(case, draw))
        shape = np.asarray(case.image.shape)
        start = np.asarray(draw.start)
        src = tuple(slice(max(0, s), min(n, s + p)) for s, p, n in zip(start, self.patch, shape))
        dst = tuple(slice(max(0, -s), max(0, -s) + (sl.stop - sl.start)) for s, sl in zip(start, src))
        image = np.zeros(self.patch, dtype=np.float32)
        partial = np.full(self.patch, 2, dtype=np.uint8)
        valid = np.zeros(self.patch, dtype=np.uint8)
        image[dst], partial[dst], valid[dst] = case.image[src], case.partial[src], case.valid[src]
        arrays = {"image": image, "partial": partial, "valid": valid}
        if self.full:
            arrays["label"] = np.full(self.patch, 2, dtype=np.uint8)
            arrays["label"][dst] = case.label[src]
        if self.points:  # the click channel / point-loss target, cut to the patch (clickmaps.py)
            from PASegLib.data.clickmaps import click_heatmap

            arrays["points"] = click_heatmap(self._points(case, draw), self.patch, case.geometry.spacing,
                                             self.point_sigma_mm, offset=start)
        # object boxes in patch coordinates (inclusive; may extend beyond the patch), flipped with the patch
        boxes = np.array([[np.asarray(lo) - start, np.asarray(hi) - start] for lo, hi in case.boxes],
                         dtype=np.int64).reshape(-1, 2, 3)
        return self._finish(case, draw, arrays, boxes)

    def _points(self, case: Any, draw: PatchDraw) -> np.ndarray:
        """The click-channel points ``(P, 3)`` of ``case`` (continuous case indices), jittered as ``draw`` says."""
        from PASegLib.data.clickmaps import positive_points

        points = positive_points(case.clicks, getattr(case, "kinds", None))
        if draw.jitter_seed is not None and len(points):  # Going to Extremes' jitter, in mm → voxels
            noise = np.random.default_rng(draw.jitter_seed).normal(0.0, self.point_jitter_mm, points.shape)
            points = points + noise / np.asarray(case.geometry.spacing, dtype=float)
        return points

    def _resampled(self, case: Any, draw: PatchDraw) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
        """The arrays and boxes of a resampled common frame (image linear, label maps nearest; outside the image:
        image 0, invalid, unlabeled)."""
        from scipy.ndimage import affine_transform

        from PASegLib.data.clickmaps import click_heatmap

        step, origin = np.asarray(draw.step), np.asarray(draw.origin)
        shape = tuple(int(v) for v in self.patch)

        def warp(array: np.ndarray, order: int, cval: float, dtype: Any) -> np.ndarray:
            out = affine_transform(np.asarray(array, dtype=dtype), step, offset=origin, output_shape=shape,
                                   order=order, mode="constant", cval=cval, prefilter=False)
            return out.astype(dtype, copy=False)

        arrays = {"image": warp(case.image, 1, 0.0, np.float32), "partial": warp(case.partial, 0, 2, np.uint8),
                  "valid": warp(case.valid, 0, 0, np.uint8)}
        if self.full:
            arrays["label"] = warp(case.label, 0, 2, np.uint8)
        if self.points:  # the heatmap drawn in the frame: points and σ in patch voxels
            points = (self._points(case, draw) - origin) / step
            arrays["points"] = click_heatmap(points, shape, np.asarray(case.geometry.spacing) * step,
                                             self.point_sigma_mm)
        boxes = np.array([[np.rint((np.asarray(lo) - origin) / step), np.rint((np.asarray(hi) - origin) / step)]
                          for lo, hi in case.boxes], dtype=np.int64).reshape(-1, 2, 3)
        return arrays, boxes

    def _finish(self, case: Any, draw: PatchDraw, arrays: Dict[str, np.ndarray],
                boxes: np.ndarray) -> Dict[str, np.ndarray]:
        """Flip the patch's arrays and boxes as ``draw`` says and add the per-patch flags."""
        for axis in draw.flips:
            arrays = {k: np.flip(a, axis) for k, a in arrays.items()}
            boxes[:, :, axis] = self.patch[axis] - 1 - boxes[:, ::-1, axis]
        out = {**{k: np.ascontiguousarray(a)[None] for k, a in arrays.items()}, "boxes": boxes}
        if self.mixed:
            out["dense"] = np.array([float("dense" in (getattr(case, "kinds", None) or ()))], dtype=np.float32)
        if self.point_input:  # 0: this patch trains the model without clicks (point_channel_dropout)
            out["point_keep"] = np.array([draw.point_keep], dtype=np.float32)
        return out
