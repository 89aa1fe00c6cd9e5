"""Prepared cases: clicks → partial labels on the training grid, the image as the network sees it; the split.

Each annotated case is prepared once (:func:`prepare_case`): seeds are expanded at the image's own
resolution (where ε and λ were tuned), then image, partial labels, valid region and (when present) the
dense label are resampled to the training grid (:func:`~PASegLib.image.resample.resampled_geometry`; linear for
the image, nearest for label maps) and the image is z-scored inside the valid region. A stop file
(:class:`~PASegLib.jobs.stopping.StopFile`) is checked between the stages of one case; a stop raises
:class:`~PASegLib.jobs.stopping.StopRequested`.

The rest of the training data lives in one module per concern:

* :mod:`PASegLib.data.cache` — the prepared-data cache (uncompressed ``.npz`` entries keyed by a hash of
  the input files and of every setting that changes them, written atomically, memory-mapped when read; a
  damaged entry is rebuilt with a warning naming it);
* :mod:`PASegLib.data.prepare` — :func:`prepare_cases`: a cohort prepared by a pool of worker processes
  (``TrainConfig.prepare_workers``) or in this process, with progress per case and errors naming the case;
* :mod:`PASegLib.data.streaming` — :class:`CachedCase` / :class:`CaseStore`: cases read from the cache when
  needed, a bounded in-memory LRU (``TrainConfig.cache_mb``) and a prefetch thread;
* :mod:`PASegLib.data.sampler` — :class:`PatchSampler`: random training patches.

Soft pseudo labels (a teacher's foreground probability, ``<pseudo_labels>/<case>_soft.nii.gz``, float on the
image's grid; mixed supervision, :mod:`PASegLib.pipeline.teacher_student`) travel in the same uint8 partial map:
values ``SOFT_FIRST … 255`` encode the probability ``(v − SOFT_FIRST) / SOFT_STEPS`` (:func:`encode_soft_labels`,
steps of 1/252; 0, 1 and 2 keep their meaning, so padding stays unlabeled and a dense case's hard labels stay
hard). Stage one trains such voxels with a cross-entropy with soft targets (``TrainConfig.soft_label_weight``);
label-free validation counts only the voxels labelled 0 or 1.

numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from PASegLib.annotation.model import CaseAnnotation
from PASegLib.annotation.validation import object_box
from PASegLib.data.dataset import Case, DatasetError
from PASegLib.data.settings import PrepareSettings, as_prepare_settings
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import Volume
from PASegLib.image.resample import normalize_intensities, resample_to_shape, resampled_geometry
from PASegLib.jobs.stopping import StopFile
from PASegLib.seeds.expansion import valid_region_mask
from PASegLib.seeds.pseudo_labels import pseudo_label_map

__all__ = ["SOFT_FIRST", "SOFT_STEPS", "PreparedCase", "decode_soft_labels", "dense_label_of", "encode_soft_labels",
           "label_box", "prepare_case", "preprocess_image", "split_cases"]

#: the first partial-map value that encodes a soft label (0, 1, 2 are background, foreground, unlabeled)
SOFT_FIRST = 3
#: soft labels are encoded in this many steps: value ``SOFT_FIRST + round(p · SOFT_STEPS)`` (up to 255)
SOFT_STEPS = 255 - SOFT_FIRST


def encode_soft_labels(probability: np.ndarray) -> np.ndarray:
    """uint8 partial-map codes ``SOFT_FIRST + round(p · SOFT_STEPS)`` of foreground probabilities ``p`` (any shape,
    finite, in ``[0, 1]``; values within 1e-3 outside are clipped, others refused with ``ValueError``)."""
    p = np.asarray(probability, dtype=np.float64)
    if not np.all(np.isfinite(p)) or p.size and (p.min() < -1e-3 or p.max() > 1.0 + 1e-3):
        finite = p[np.isfinite(p)]
        span = f"[{finite.min():.4g}, {finite.max():.4g}]" if finite.size else "no finite value"
        raise ValueError(f"soft labels must be finite probabilities in [0, 1]; got values in {span}"
                         f"{'' if np.all(np.isfinite(p)) else ' and non-finite ones'}")
    return (SOFT_FIRST + np.rint(np.clip(p, 0.0, 1.0) * SOFT_STEPS)).astype(np.uint8)


def decode_soft_labels(partial: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(soft, probability)`` of a partial map: bool where a value encodes a soft label (``>= SOFT_FIRST``) and the
    float32 foreground probability there (0 elsewhere)."""
    arr = np.asarray(partial)
    soft = arr >= SOFT_FIRST
    prob = np.where(soft, (arr.astype(np.float32) - SOFT_FIRST) / SOFT_STEPS, 0.0).astype(np.float32)
    return soft, prob


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
        kinds: per object its annotation kind (:mod:`PASegLib.annotation.kinds`); ``None`` = all seven points.
            For the other kinds ``clicks`` holds the object's points in its kind's label order (``(P, 3)``;
            none for a dense object) and ``boxes`` the kind's box (a dense object: the label's extent).
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
    kinds: Optional[List[str]] = None


def _object_clicks(annotation: CaseAnnotation, geometry: ImageGeometry) -> List[np.ndarray]:
    """Per object its points (seven points: F then R L A P I S) as continuous indices ``(P, 3)`` on ``geometry``."""
    out = []
    for obj in annotation.objects:
        points = list(obj.points().values())
        out.append(geometry.world_to_index(np.stack(points)) if points else np.zeros((0, 3)))
    return out


def label_box(label: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Inclusive voxel box of a label's foreground (the whole grid when empty)."""
    idx = np.argwhere(label > 0)
    if len(idx) == 0:
        return np.zeros(3, dtype=int), np.asarray(label.shape) - 1
    return idx.min(axis=0), idx.max(axis=0)


def dense_label_of(case: Case) -> Optional[np.ndarray]:
    """The dense label of a ``dense`` case: its object's ``label_file`` (next to the annotation file, checked
    against the image grid) or the case's ``<case>_label``; ``None`` for other cases."""
    obj = next((o for o in case.annotation.objects if o.kind == "dense"), None)
    if obj is None:
        return None
    if obj.label_file is None:
        if case.label is None:
            raise DatasetError(f"case {case.case_id!r} is annotated as dense but has no <case>_label file")
        return np.asarray(case.label.array)
    from PASegLib.image.io import read_image

    path = Path(obj.label_file)
    if not path.is_absolute() and case.annotation_path is not None:
        path = Path(case.annotation_path).parent / path
    label = read_image(path, role="label")
    mismatch = case.image.geometry.mismatch(label.geometry)
    if mismatch:
        raise DatasetError(f"{path}: dense label geometry differs from the image of case {case.case_id!r} "
                           f"({mismatch})")
    return np.asarray(label.array)


def _override(case_id: str, folder: Optional[str], geometry: ImageGeometry) -> Optional[np.ndarray]:
    """``<folder>/<case>_pseudo.nii.gz`` (a previous round's labels), else ``<folder>/<case>_soft.nii.gz`` (a
    teacher's soft labels, encoded by :func:`encode_soft_labels`), checked against the image grid."""
    if folder is None:
        return None
    from PASegLib.image.io import read_image

    path = Path(folder) / f"{case_id}_pseudo.nii.gz"
    soft = Path(folder) / f"{case_id}_soft.nii.gz"
    if not path.is_file() and soft.is_file():
        vol = read_image(soft, role="soft label")
        mismatch = geometry.mismatch(vol.geometry)
        if mismatch:
            raise DatasetError(f"{soft}: soft-label geometry differs from the image ({mismatch})")
        try:
            return encode_soft_labels(vol.array)
        except ValueError as exc:
            raise DatasetError(f"{soft}: {exc}") from None
    if not path.is_file():
        return None

    vol = read_image(path, role="pseudo label")
    mismatch = geometry.mismatch(vol.geometry)
    if mismatch:
        raise DatasetError(f"{path}: pseudo-label geometry differs from the image ({mismatch})")
    arr = np.asarray(vol.array)
    if not np.isin(arr, (0, 1, 2)).all():
        raise DatasetError(f"{path}: pseudo labels must be 0 (background), 1 (foreground) or 2 (unlabeled)")
    return arr.astype(np.uint8)


def preprocess_image(image: Volume, config: PrepareSettings) -> Tuple[np.ndarray, np.ndarray, ImageGeometry]:
    """Image → network input, as in training: ``(z-scored float32 [I', J', K'], valid bool, training grid)``.

    The valid region (``config.expansion["valid_region"]``) is computed on the raw image, both are resampled
    to ``config.target_spacing_mm`` and the image is z-scored inside the valid region (0 outside).
    """
    config = as_prepare_settings(config)
    valid = valid_region_mask(np.asarray(image.array, dtype=np.float32), config.expansion_config)
    grid = resampled_geometry(image.geometry, config.target_spacing_mm)
    arr = resample_to_shape(image.array, grid.shape, order=1)
    valid = resample_to_shape(valid.astype(np.uint8), grid.shape, order=0).astype(bool)
    arr, _, _ = normalize_intensities(arr, valid)
    return arr, valid, grid


def prepare_case(case: Case, config: PrepareSettings, *, stop: Optional[StopFile] = None) -> PreparedCase:
    """Turn the annotation of a loaded ``case`` into partial labels (:func:`~PASegLib.seeds.pseudo_labels.
    pseudo_label_map`: each object by its kind; ``config.pseudo_labels`` replaces them by a previous round's)
    and resample everything to the training grid.

    ``stop`` is checked between the stages (valid region, seed expansion, resampling); a stop raises
    :class:`~PASegLib.jobs.stopping.StopRequested`.
    """
    config = as_prepare_settings(config)
    if case.annotation is None or not case.annotation.objects:
        raise DatasetError(f"case {case.case_id!r} has no annotation (clicks); annotate it or leave it out")
    check = stop.check if stop is not None else (lambda: None)
    expansion = config.expansion_config
    source = case.image.geometry
    check()
    valid = valid_region_mask(np.asarray(case.image.array, dtype=np.float32), expansion)
    check()
    dense = dense_label_of(case)
    partial = _override(case.case_id, config.pseudo_labels, source)
    if partial is None:
        try:
            partial = pseudo_label_map(case.image, case.annotation, expansion=expansion, valid_mask=valid,
                                       random_walker=config.random_walker, dense_label=dense,
                                       point_radius_mm=config.point_radius_mm)
        except ValueError as exc:  # e.g. a random walker without background seeds: name the case
            where = case.annotation_path or case.case_id
            raise DatasetError(f"{where}: cannot make the training labels of case {case.case_id!r}: {exc}") from None
    check()
    image, valid, grid = preprocess_image(case.image, config)
    check()
    partial = resample_to_shape(partial, grid.shape, order=0)
    label = None
    if case.label is not None:
        label = resample_to_shape((np.asarray(case.label.array) > 0).astype(np.uint8), grid.shape, order=0)
    kinds = [obj.kind for obj in case.annotation.objects]
    boxes = [object_box(obj, grid) if obj.kind != "dense" else label_box(partial == 1)
             for obj in case.annotation.objects]
    return PreparedCase(case.case_id, image, partial.astype(np.uint8), valid, _object_clicks(case.annotation, grid),
                        boxes, label, grid, source, None if set(kinds) == {"seven_points"} else kinds)


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
