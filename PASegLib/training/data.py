"""Training data: clicks → partial labels on the training grid, a disk cache, the split, the patch sampler.

Each annotated case is prepared once (:func:`prepare_case`): seeds are expanded at the image's own
resolution (where ε and λ were tuned), then image, partial labels, valid region and (when present) the
dense label are resampled to the training grid (:func:`~PASegLib.preprocess.resampled_geometry`; linear for
the image, nearest for label maps) and the image is z-scored inside the valid region. Prepared cases are
cached as ``.npz`` files keyed by a hash of the input files (path, size, mtime) and of every setting that
changes them, so a second run (or the second network of the pipeline) skips the expansion; a damaged entry
(truncated, not a zip, missing or inconsistent arrays) is rebuilt with a warning naming it, and temporary files
that killed writers left in the cache are removed when preparation starts. A stop file
(:class:`~PASegLib.training.stopping.StopFile`) is checked before every case and between the stages of one;
a stop raises :class:`~PASegLib.training.stopping.StopRequested` before the case's cache entry is written
(entries are written atomically, so the cache never holds a partial one). numpy only.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import __version__
from ..annotations import CaseAnnotation, object_box
from ..atomic import PathLike, atomic_path, remove_stale_temp_files
from ..dataset import Case, CaseFiles, DatasetError, load_case
from ..geometry import ImageGeometry
from ..image_io import Volume
from ..preprocess import normalize_intensities, resample_to_shape, resampled_geometry
from ..seeds.expansion import expand_seeds, valid_region_mask
from .config import TrainConfig
from .stopping import StopFile

__all__ = ["PatchSampler", "PreparedCase", "prepare_case", "prepare_cases", "preprocess_image", "split_cases"]


@dataclass
class PreparedCase:
    """One case on the training grid. Arrays are ``[i, j, k]`` on ``geometry``.

    Attributes:
        case_id: the case name.
        image: float32 z-scored intensities (0 outside the valid region).
        partial: uint8 partial labels (0 background, 1 foreground, 2 unlabeled).
        valid: bool valid region.
        clicks: per object, float64 ``(7, 3)`` continuous indices on the training grid: row 0 the foreground
            click, rows 1–6 the background clicks.
        boxes: per object, the inclusive voxel box ``(lo, hi)`` of its background clicks on the training grid.
        label: optional uint8 binary ground truth (for information only, never used for training/selection).
        geometry: the training grid.
        source_geometry: the image's own grid.
    """

    case_id: str
    image: np.ndarray
    partial: np.ndarray
    valid: np.ndarray
    clicks: List[np.ndarray]
    boxes: List[Tuple[np.ndarray, np.ndarray]]
    label: Optional[np.ndarray]
    geometry: ImageGeometry
    source_geometry: ImageGeometry


def _object_clicks(annotation: CaseAnnotation, geometry: ImageGeometry) -> List[np.ndarray]:
    out = []
    for obj in annotation.objects:
        points = np.vstack([np.asarray(obj.foreground, dtype=float)[None, :], obj.background_array()])
        out.append(geometry.world_to_index(points))
    return out


def preprocess_image(image: Volume, config: TrainConfig) -> Tuple[np.ndarray, np.ndarray, ImageGeometry]:
    """Image → network input, as in training: ``(z-scored float32 [I', J', K'], valid bool, training grid)``.

    The valid region (``config.expansion["valid_region"]``) is computed on the raw image, both are resampled
    to ``config.target_spacing_mm`` and the image is z-scored inside the valid region (0 outside).
    """
    valid = valid_region_mask(np.asarray(image.array, dtype=np.float32), config.expansion_config)
    grid = resampled_geometry(image.geometry, config.target_spacing_mm)
    arr = resample_to_shape(image.array, grid.shape, order=1)
    valid = resample_to_shape(valid.astype(np.uint8), grid.shape, order=0).astype(bool)
    arr, _, _ = normalize_intensities(arr, valid)
    return arr, valid, grid


def prepare_case(case: Case, config: TrainConfig, *, stop: Optional[StopFile] = None) -> PreparedCase:
    """Expand the clicks of a loaded, annotated ``case`` and resample everything to the training grid.

    ``stop`` is checked between the stages (valid region, seed expansion, resampling); a stop raises
    :class:`~PASegLib.training.stopping.StopRequested`.
    """
    if case.annotation is None or not case.annotation.objects:
        raise DatasetError(f"case {case.case_id!r} has no annotation (clicks); annotate it or leave it out")
    check = stop.check if stop is not None else (lambda: None)
    expansion = config.expansion_config
    source = case.image.geometry
    check()
    valid = valid_region_mask(np.asarray(case.image.array, dtype=np.float32), expansion)
    check()
    partial = expand_seeds(case.image, case.annotation, config=expansion, valid_mask=valid)
    check()
    image, valid, grid = preprocess_image(case.image, config)
    check()
    partial = resample_to_shape(partial, grid.shape, order=0)
    label = None
    if case.label is not None:
        label = resample_to_shape((np.asarray(case.label.array) > 0).astype(np.uint8), grid.shape, order=0)
    boxes = [object_box(obj, grid) for obj in case.annotation.objects]
    return PreparedCase(case.case_id, image, partial.astype(np.uint8), valid, _object_clicks(case.annotation, grid),
                        boxes, label, grid, source)


def _file_key(path: Optional[Path]) -> List:
    if path is None:
        return [None]
    stat = os.stat(path)
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def _cache_key(files: CaseFiles, config: TrainConfig) -> str:
    parts = {
        "version": __version__,
        "files": [_file_key(p) for p in (files.image, files.label, files.markups, files.seven_points)],
        "expansion": config.expansion,
        "target_spacing_mm": config.target_spacing_mm,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _save(path: Path, case: PreparedCase) -> None:
    meta = {"case_id": case.case_id, "geometry": case.geometry.to_dict(),
            "source_geometry": case.source_geometry.to_dict(), "n_objects": len(case.clicks)}
    arrays = {"image": case.image, "partial": case.partial, "valid": case.valid,
              "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for n, (clicks, (lo, hi)) in enumerate(zip(case.clicks, case.boxes)):
        arrays[f"clicks_{n}"], arrays[f"box_{n}"] = clicks, np.stack([lo, hi])
    if case.label is not None:
        arrays["label"] = case.label
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


#: What reading a damaged cache entry can raise (truncated or foreign zip, missing arrays, bad metadata).
_DAMAGED = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, zipfile.BadZipFile)


def _load(path: Path) -> PreparedCase:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        n = int(meta["n_objects"])
        boxes = [(data[f"box_{i}"][0], data[f"box_{i}"][1]) for i in range(n)]
        case = PreparedCase(
            meta["case_id"], data["image"], data["partial"], data["valid"], [data[f"clicks_{i}"] for i in range(n)],
            boxes, data["label"] if "label" in data else None, ImageGeometry.from_dict(meta["geometry"]),
            ImageGeometry.from_dict(meta["source_geometry"]))
    arrays = [case.image, case.partial, case.valid] + ([case.label] if case.label is not None else [])
    if any(a.shape != case.geometry.shape for a in arrays) or any(c.shape != (7, 3) for c in case.clicks):
        raise ValueError("arrays do not match the recorded grid")
    return case


def prepare_cases(
    files: Sequence[CaseFiles],
    config: TrainConfig,
    *,
    cache_dir: Optional[PathLike] = None,
    on_case: Optional[Callable[[int, int, str, bool], None]] = None,
    stop: Optional[StopFile] = None,
) -> List[PreparedCase]:
    """Prepare (or read from ``cache_dir``) every case of ``files``; ``on_case(index, total, case_id, cached)``.

    ``stop`` is checked before every case and inside :func:`prepare_case`; the cases finished before a stop
    are in the cache (when there is one), the interrupted one is not.

    Raises:
        DatasetError: a case has no clicks or an unreadable/invalid file (the message names it).
        StopRequested: the stop file appeared.
    """
    out = []
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        remove_stale_temp_files(cache)  # the cache may be shared: only those of writers that are gone
    for index, case_files in enumerate(files):
        if stop is not None:
            stop.check()
        cached = False
        target = cache / f"{case_files.case_id}-{_cache_key(case_files, config)}.npz" if cache else None
        prepared = None
        if target is not None and target.is_file():
            try:
                prepared, cached = _load(target), True
            except _DAMAGED as exc:  # a damaged cache entry is rebuilt, never trusted
                print(f"warning: {target}: damaged prepared-data cache entry ({type(exc).__name__}: "
                      f"{str(exc)[:120]}); rebuilding it", file=sys.stderr)
        if prepared is None:
            case = load_case(case_files, load_label=True, load_annotation=True)
            if case.annotation is None:
                raise DatasetError(f"case {case_files.case_id!r} has no clicks (<case>.mrk.json or "
                                   f"<case>_7points file); annotate it first or use `paseg simulate-clicks`")
            prepared = prepare_case(case, config, stop=stop)
            if target is not None:
                _save(target, prepared)
        out.append(prepared)
        if on_case is not None:
            on_case(index, len(files), case_files.case_id, cached)
    return out


def split_cases(case_ids: Sequence[str], *, validation_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """Deterministic ``(train_ids, validation_ids)`` split (sorted lists).

    ``round(fraction·n)`` cases (at least 1 when ``fraction > 0`` and ``n >= 2``, always leaving one to train)
    are drawn with ``numpy.random.default_rng(seed)``.
    """
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("case ids must be unique")
    n_val = 0
    if validation_fraction > 0 and len(ids) >= 2:
        n_val = min(len(ids) - 1, max(1, int(round(validation_fraction * len(ids)))))
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    return [i for i in ids if i not in val], val


class PatchSampler:
    """Random training patches from prepared cases.

    A patch is centred inside a random annotated object's box with probability
    ``config.foreground_crop_probability`` (else anywhere), padded where it leaves the image (padding is
    invalid and unlabeled), then flipped along each of ``config.flip_axes`` with probability 0.5.
    All randomness comes from the ``numpy.random.Generator`` passed to :meth:`sample`.
    """

    def __init__(self, cases: Sequence[PreparedCase], config: TrainConfig) -> None:
        if not cases:
            raise ValueError("no training case: the training set is empty")
        self.cases = list(cases)
        self.patch = np.asarray(config.patch_size, dtype=int)
        self.fg_probability = float(config.foreground_crop_probability)
        self.flip_axes = tuple(config.flip_axes)
        self.full = config.supervision == "full"
        if self.full:
            missing = [c.case_id for c in self.cases if c.label is None]
            if missing:
                raise DatasetError(f"full supervision needs <case>_label files; missing for {', '.join(missing)}")

    def sample(self, case_index: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        """Patch of case ``case_index``: ``image`` float32 ``[1, I, J, K]``, ``partial`` int64 ``[1, I, J, K]``,
        ``valid`` float32 ``[1, I, J, K]`` with ``(I, J, K) = patch_size``; plus ``label`` int64 (dense ground
        truth, padding 2 = ignored) when ``full`` supervision was asked for; ``boxes`` int64 ``[M, 2, 3]``: the
        M objects' inclusive boxes ``(lo, hi)`` in the patch's ``[i, j, k]`` voxels (flipped with the patch;
        they may extend beyond it)."""
        case = self.cases[case_index]
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
        # object boxes in patch coordinates (inclusive; may extend beyond the patch), flipped with the patch
        boxes = np.array([[np.asarray(lo) - start, np.asarray(hi) - start] for lo, hi in case.boxes],
                         dtype=np.int64).reshape(-1, 2, 3)
        for axis in self.flip_axes:
            if rng.random() < 0.5:
                arrays = {k: np.flip(a, axis) for k, a in arrays.items()}
                boxes[:, :, axis] = self.patch[axis] - 1 - boxes[:, ::-1, axis]
        return {**{k: np.ascontiguousarray(a)[None] for k, a in arrays.items()}, "boxes": boxes}
