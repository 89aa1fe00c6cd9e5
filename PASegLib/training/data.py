"""Training data: clicks → partial labels on the training grid, the split; the cache, sampler and streaming.

Each annotated case is prepared once (:func:`prepare_case`): seeds are expanded at the image's own
resolution (where ε and λ were tuned), then image, partial labels, valid region and (when present) the
dense label are resampled to the training grid (:func:`~PASegLib.preprocess.resampled_geometry`; linear for
the image, nearest for label maps) and the image is z-scored inside the valid region. A stop file
(:class:`~PASegLib.training.stopping.StopFile`) is checked between the stages of one case; a stop raises
:class:`~PASegLib.training.stopping.StopRequested`.

The rest of the training data lives in one module per concern, and its names are importable from here too:

* :mod:`PASegLib.training.cache` — the prepared-data cache (uncompressed ``.npz`` entries keyed by a hash of
  the input files and of every setting that changes them, written atomically, memory-mapped when read; a
  damaged entry is rebuilt with a warning naming it);
* :mod:`PASegLib.training.prepare` — :func:`prepare_cases`: a cohort prepared by a pool of worker processes
  (``TrainConfig.prepare_workers``) or in this process, with progress per case and errors naming the case;
* :mod:`PASegLib.training.streaming` — :class:`CachedCase` / :class:`CaseStore`: cases read from the cache when
  needed, a bounded in-memory LRU (``TrainConfig.cache_mb``) and a prefetch thread;
* :mod:`PASegLib.training.sampler` — :class:`PatchSampler`: random training patches.

numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

import numpy as np

from ..annotations import CaseAnnotation, object_box
from ..dataset import Case, DatasetError
from ..geometry import ImageGeometry
from ..image_io import Volume
from ..preprocess import normalize_intensities, resample_to_shape, resampled_geometry
from ..seeds.expansion import expand_seeds, valid_region_mask
from .config import TrainConfig
from .stopping import StopFile

if TYPE_CHECKING:
    from .prepare import prepare_cases
    from .sampler import PatchSampler
    from .streaming import CachedCase, CaseStore

__all__ = ["CachedCase", "CaseStore", "PatchSampler", "PreparedCase", "prepare_case", "prepare_cases",
           "preprocess_image", "split_cases"]

#: names defined in the modules split off this one (imported on first use: they import this module)
_MOVED = {"PatchSampler": "sampler", "prepare_cases": "prepare", "CachedCase": "streaming", "CaseStore": "streaming"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"{__package__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
