"""Simulated clicks of every annotation kind from a ground-truth mask, as the experiments of the papers simulate them.

For every object (a connected component of the mask, or only the largest):

* the foreground point is the object voxel nearest the object's centroid, moved by a random jitter of up to
  ``fg_jitter`` × the object's half extent per index axis, and always kept inside the object;
* the background point of each side starts at the foreground point, is moved along that side's index axis
  to ``margin`` voxels beyond the object's extreme voxel on that side (``margin`` drawn uniformly from
  ``margin_mm`` converted to voxels, at least one voxel), and is moved on the two other axes by a random
  offset of up to ``bg_jitter`` × the object's half extent (a radiologist does not click exactly in line
  with the centre); everything is clipped to the image.

The result is reproducible for a given ``seed`` and case: :func:`simulate_clicks` draws a case's clicks from its
own random stream (:func:`case_rng`: ``seed`` and the case id), so two cases of one cohort get different margins
and jitters, and a case gets the same clicks whatever the cohort's order and whichever other cases it holds.
``legacy_shared_stream`` restores the old behaviour (every case drawn from ``seed`` alone, the same draws on
every case), with which the committed results made before the per-case streams were produced.

Click noise (``click_noise_mm`` > 0): once an object's clicks are placed, every point (a seven-point's F and six
background clicks, the extreme points, the single point's F and B, the box's two corners) is displaced by a
random 3D offset drawn from the case's stream after all its objects' clicks (so the noise-free clicks are those
of ``click_noise_mm`` 0), and kept inside the image (clipped to the centres of its border voxels). The point is
not snapped to a voxel centre. A person's error is kept: F may leave a small object and a background click may
land inside the object, which is what the pipeline must survive. Only a placement that the annotation checks
(:func:`~PASegLib.annotation.validation.validate_object`) refuse — two points in one voxel, a click on the wrong
side of F, a box under 3 voxels — is drawn again, as a person re-places a click the module refuses.

That is :func:`simulate_object` (the PA-Seg simulation). The other kinds, for one object given as a boolean mask
``[i, j, k]`` (:func:`simulate_kind_object`):

* ``extreme_points`` — towards each side (R, L, A, P, I, S, tied to an index axis by
  :func:`~PASegLib.annotation.model.side_axis`) a voxel of the object's outermost slice along that axis (its extent),
  drawn at random among those slice voxels that lie on the object's boundary; with ``extreme_jitter_mm`` > 0 the
  point is drawn among the boundary voxels whose index along the axis is within that distance (and within a
  quarter of the object's extent) of the extent (a radiologist's click lands near, not exactly on, the extreme
  voxel). Jitter 0: exactly at the extent. An object less than 2 voxels thick along an axis has no two distinct
  extremes there; :func:`simulate_clicks` leaves such specks out for this kind.
* ``box`` — the object's index box grown on each side by a margin drawn from ``box_margin_mm`` (a loose box,
  along the image's index axes: on an oblique image an oriented box whose voxel box is exactly that),
  clipped to the image; stored as its two LPS corners.
* ``single_point`` — ``F`` a voxel drawn uniformly among the object's voxels at least one voxel from its boundary
  (anywhere inside, not only at the centre; the whole object when it is thinner); with
  ``single_point_background`` a ``B`` voxel drawn uniformly among the voxels whose distance to the object lies
  in ``background_distance_mm``.
* ``dense`` — no click: the object's label is the annotation.

numpy/scipy only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from PASegLib.annotation.kinds import FOREGROUND, SIDES
from PASegLib.annotation.model import AnnotationError, CaseAnnotation, ObjectAnnotation, side_axis
from PASegLib.annotation.validation import validate_object
from PASegLib.image.geometry import ImageGeometry

CLICK_NOISE_KINDS = ("gaussian", "uniform")
NOISE_TRIES = 100  # redraws of a noisy object before giving up (the object is too small for the noise)


def case_rng(seed: int, case_id: Optional[str] = None, *, legacy_shared_stream: bool = False) -> np.random.Generator:
    """The random stream of one case's simulated clicks: ``numpy.random.default_rng([seed, h])`` with ``h`` the
    first 8 bytes of the SHA-256 of the UTF-8 ``case_id`` (independent of ``PYTHONHASHSEED``, of the cohort's
    order and of the other cases). ``case_id`` ``None`` (one mask, no cohort) or ``legacy_shared_stream``: the
    stream of ``seed`` alone, the same for every case (PASeg's behaviour before the per-case streams)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if case_id is None or legacy_shared_stream:
        return np.random.default_rng(int(seed))
    if not isinstance(case_id, str) or not case_id:
        raise ValueError(f"case_id must be a non-empty string, got {case_id!r}")
    digest = hashlib.sha256(case_id.encode("utf-8")).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


@dataclass(frozen=True)
class ClickSimulationConfig:
    """Parameters of :func:`simulate_clicks`.

    Attributes:
        margin_mm: range ``(low, high)`` in mm of the distance between an object's extreme voxel and the
            background point beyond it.
        fg_jitter: foreground jitter as a fraction of the object's half extent (0 = nearest to centroid).
        bg_jitter: off-axis jitter of background points as a fraction of the object's half extent.
        min_size: components smaller than this many voxels are ignored.
        largest_only: annotate only the largest component.
        kind: the annotation kind to simulate (:mod:`PASegLib.annotation.kinds`); the other kinds are simulated
            by :func:`simulate_kind_object` with the settings below.
        extreme_jitter_mm: extreme points: how far inside the object's extent (mm along the side's axis) the
            click may land, on the object's boundary (0 = exactly at the extent).
        box_margin_mm: box: range ``(low, high)`` in mm of the margin added on each side (a loose box).
        single_point_background: single point: also place PSCV's one background click ``B``.
        background_distance_mm: single point: range ``(low, high)`` of the distance (mm) of ``B`` to the object.
        click_noise_mm: click noise (mm, >= 0; 0 = exact clicks): the size of the random 3D offset added to every
            simulated point. ``"gaussian"``: each of the three axes drawn with sigma = ``click_noise_mm`` / sqrt(3),
            so the root-mean-square displacement (3D distance) is ``click_noise_mm``; ``"uniform"``: uniform in the
            ball of radius ``click_noise_mm`` (RMS distance sqrt(3/5) × ``click_noise_mm``).
        click_noise: the offset's distribution, ``"gaussian"`` or ``"uniform"``.
        legacy_shared_stream: draw every case's clicks from ``seed`` alone (the same random draws on every case:
            the same margins and jitters), as PASeg did before the per-case streams. The committed results of
            ``docs/results/accuracy_cpu.json``, ``protocols_cpu.json`` and ``review_queue_cpu.json`` (and those of
            the older benchmarks) were produced with it; their benchmarks set it to keep reproducing them.
    """

    margin_mm: Tuple[float, float] = (2.0, 10.0)
    fg_jitter: float = 0.1
    bg_jitter: float = 0.3
    min_size: int = 10
    largest_only: bool = False
    kind: str = "seven_points"
    extreme_jitter_mm: float = 2.0
    box_margin_mm: Tuple[float, float] = (2.0, 10.0)
    single_point_background: bool = True
    background_distance_mm: Tuple[float, float] = (5.0, 20.0)
    click_noise_mm: float = 0.0
    click_noise: str = "gaussian"
    legacy_shared_stream: bool = False

    def __post_init__(self) -> None:
        from PASegLib.annotation.kinds import get_kind

        get_kind(self.kind)
        noise = self.click_noise_mm
        if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)) \
                or not (np.isfinite(noise) and noise >= 0):
            raise ValueError(f"click_noise_mm must be a finite number of mm >= 0, got {self.click_noise_mm!r}")
        if self.click_noise not in CLICK_NOISE_KINDS:
            raise ValueError(f"click_noise must be one of {', '.join(CLICK_NOISE_KINDS)}, got {self.click_noise!r}")
        if not isinstance(self.legacy_shared_stream, bool):
            raise ValueError(f"legacy_shared_stream must be True or False, got {self.legacy_shared_stream!r}")
        for name in ("box_margin_mm", "background_distance_mm"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {getattr(self, name)!r}")
        if not (self.extreme_jitter_mm >= 0 and np.isfinite(self.extreme_jitter_mm)):
            raise ValueError(f"extreme_jitter_mm must be >= 0, got {self.extreme_jitter_mm!r}")
        lo, hi = self.margin_mm
        if not 0 <= lo <= hi:
            raise ValueError(f"margin_mm must be (low, high) with 0 <= low <= high, got {self.margin_mm!r}")
        for name in ("fg_jitter", "bg_jitter"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.min_size < 1:
            raise ValueError(f"min_size must be >= 1 voxel, got {self.min_size!r}")


def mask_objects(mask: np.ndarray, *, min_size: int = 10, largest_only: bool = False) -> List[np.ndarray]:
    """Connected components (26-connectivity) of a binary mask ``[i, j, k]`` as boolean masks, largest first."""
    from scipy import ndimage

    labels, n = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")
    keep = [int(c) + 1 for c in order if sizes[c] >= min_size]
    if largest_only:
        keep = keep[:1]
    return [labels == c for c in keep]


def simulate_object(
    component: np.ndarray,
    geometry: ImageGeometry,
    *,
    name: str,
    rng: np.random.Generator,
    config: ClickSimulationConfig,
) -> ObjectAnnotation:
    """Seven simulated clicks for one object given as a boolean mask ``[i, j, k]`` on ``geometry``."""
    voxels = np.argwhere(component)
    if len(voxels) == 0:
        raise ValueError(f"object {name!r}: the component is empty")
    shape = np.asarray(geometry.shape)
    lo, hi = voxels.min(axis=0), voxels.max(axis=0)
    half = (hi - lo) / 2.0
    centroid = voxels.mean(axis=0)
    fg = voxels[np.argmin(((voxels - centroid) ** 2).sum(axis=1))]
    if config.fg_jitter > 0:
        for _ in range(100):
            cand = np.rint(fg + rng.uniform(-1, 1, 3) * config.fg_jitter * half).astype(int)
            if np.all((cand >= 0) & (cand < shape)) and component[tuple(cand)]:
                fg = cand
                break
    spacing = np.asarray(geometry.spacing)
    background = {}
    for side in SIDES:
        axis, sign = side_axis(geometry)[side]
        point = fg.astype(float).copy()
        margin = max(1, int(round(rng.uniform(*config.margin_mm) / spacing[axis])))
        point[axis] = (hi[axis] if sign > 0 else lo[axis]) + sign * margin
        for other in range(3):
            if other != axis:
                point[other] += rng.uniform(-1, 1) * config.bg_jitter * half[other]
        point = np.clip(np.rint(point), 0, shape - 1)
        background[side] = geometry.index_to_world(point)
    return ObjectAnnotation(name, geometry.index_to_world(fg.astype(float)), background)


def simulate_clicks(
    mask: np.ndarray,
    geometry: ImageGeometry,
    *,
    seed: int = 0,
    config: ClickSimulationConfig = ClickSimulationConfig(),
    name_prefix: str = "tumor",
    case_id: Optional[str] = None,
) -> CaseAnnotation:
    """Simulate the clicks of ``config.kind`` (default seven) per object of a ground-truth ``mask`` ``[i, j, k]``
    (nonzero = object); a ``dense`` case is one dense object.

    The draws come from :func:`case_rng` (``seed``, ``case_id``, ``config.legacy_shared_stream``): give the
    ``case_id`` of every case of a cohort so that each case gets its own clicks; without it (a single mask) the
    stream is that of ``seed`` alone. ``config.click_noise_mm`` > 0 then displaces every point (module docstring).

    Objects are named ``"<name_prefix> 1"``, ``"<name_prefix> 2"`` … from the largest. Raises ``ValueError``
    when the mask has no component of at least ``config.min_size`` voxels, or when an object is too small for
    the click noise (no noisy placement passes the annotation checks in :data:`NOISE_TRIES` draws).
    """
    arr = np.asarray(mask)
    if arr.shape != geometry.shape:
        raise ValueError(f"mask shape {arr.shape} does not match geometry shape {geometry.shape}")
    components = mask_objects(arr, min_size=config.min_size, largest_only=config.largest_only)
    if not components:
        raise ValueError(f"mask has no object of at least {config.min_size} voxels to simulate clicks for")
    rng = case_rng(seed, case_id, legacy_shared_stream=config.legacy_shared_stream)
    if config.kind == "dense":  # one dense object: the whole label
        return CaseAnnotation([ObjectAnnotation(f"{name_prefix} 1", kind="dense")])
    if config.kind == "extreme_points":  # a speck thinner than 2 voxels on an axis has no two extremes there
        components = [c for c in components if min(np.ptp(np.argwhere(c), axis=0)) >= 1]
        if not components:
            raise ValueError("mask has no object at least 2 voxels thick along every axis to place extreme points on")
    if config.kind != "seven_points":
        objects = [simulate_kind_object(c, geometry, name=f"{name_prefix} {n}", kind=config.kind, rng=rng,
                                        config=config) for n, c in enumerate(components, start=1)]
    else:
        objects = [simulate_object(c, geometry, name=f"{name_prefix} {n}", rng=rng, config=config)
                   for n, c in enumerate(components, start=1)]
    if config.click_noise_mm > 0:  # after every object's clicks: the noise-free clicks are those of noise 0
        objects = [noisy_object(o, geometry, rng=rng, noise_mm=float(config.click_noise_mm), kind=config.click_noise)
                   for o in objects]
    return CaseAnnotation(objects)


# -- click noise ------------------------------------------------------------------------------------------------
def click_offsets(rng: np.random.Generator, n: int, *, noise_mm: float, kind: str = "gaussian") -> np.ndarray:
    """``n`` random 3D offsets ``(n, 3)`` in mm: ``"gaussian"`` with sigma ``noise_mm / sqrt(3)`` per axis (RMS
    length ``noise_mm``), ``"uniform"`` uniform in the ball of radius ``noise_mm``."""
    if not (np.isfinite(noise_mm) and noise_mm >= 0):
        raise ValueError(f"noise_mm must be a finite number of mm >= 0, got {noise_mm!r}")
    if kind == "gaussian":
        return rng.normal(0.0, noise_mm / np.sqrt(3.0), size=(n, 3))
    if kind == "uniform":
        direction = rng.normal(size=(n, 3))
        direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
        return direction * (noise_mm * rng.uniform(size=(n, 1)) ** (1.0 / 3.0))
    raise ValueError(f"click noise kind must be one of {', '.join(CLICK_NOISE_KINDS)}, got {kind!r}")


def noisy_object(obj: ObjectAnnotation, geometry: ImageGeometry, *, rng: np.random.Generator, noise_mm: float,
                 kind: str = "gaussian") -> ObjectAnnotation:
    """``obj`` with every point displaced by :func:`click_offsets` and clipped to the image (continuous LPS
    positions, inside the centres of the border voxels); redrawn while the annotation checks refuse it (at most
    :data:`NOISE_TRIES` times, then ``ValueError`` naming the object and the noise). A dense object is returned
    as it is."""
    points = obj.points()
    if not points or noise_mm == 0:
        return obj
    labels = list(points)
    world = np.stack([points[label] for label in labels])
    top = np.asarray(geometry.shape, dtype=float) - 1.0
    for _ in range(NOISE_TRIES):
        index = geometry.world_to_index(world + click_offsets(rng, len(labels), noise_mm=noise_mm, kind=kind))
        moved: Dict[str, np.ndarray] = dict(zip(labels, geometry.index_to_world(np.clip(index, 0.0, top))))
        candidate = _with_points(obj, moved)
        try:
            validate_object(candidate, geometry)
        except AnnotationError:
            continue
        return candidate
    raise ValueError(f"object {obj.name!r} ({obj.kind}): no placement with {kind} click noise of {noise_mm:g} mm "
                     f"passes the annotation checks in {NOISE_TRIES} draws; the object is too small for this noise")


def _with_points(obj: ObjectAnnotation, moved: Dict[str, np.ndarray]) -> ObjectAnnotation:
    fg = moved.get(FOREGROUND) if obj.foreground is not None else None
    background = {label: moved[label] for label in obj.background}
    marks = {label: moved[label] for label in obj.marks}
    return ObjectAnnotation(obj.name, fg, background, kind=obj.kind, marks=marks, label_file=obj.label_file,
                            axes=obj.axes)


# -- the other annotation kinds -------------------------------------------------------------------------------
def _boundary(component: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return component & ~ndimage.binary_erosion(component, border_value=0)


def _extreme_points(component, geometry, rng, jitter_mm: float):
    voxels = np.argwhere(component)
    boundary = _boundary(component)
    spacing = np.asarray(geometry.spacing, dtype=float)
    marks = {}
    for side, (axis, sign) in side_axis(geometry).items():
        extent = voxels[:, axis].max() if sign > 0 else voxels[:, axis].min()
        # within the jitter, and within a quarter of the object's extent (so the click stays on its side)
        length = int(voxels[:, axis].max() - voxels[:, axis].min())
        reach = min(int(np.floor(jitter_mm / spacing[axis] + 1e-9)), length // 4)
        depth = sign * (extent - voxels[:, axis])  # 0 on the extreme slice, > 0 inwards
        near = voxels[depth <= reach]
        near = near[boundary[tuple(near.T)]]
        point = near[int(rng.integers(len(near)))]
        marks[side] = geometry.index_to_world(point.astype(float))
    return marks


def _box(component, geometry, rng, margin_mm: Tuple[float, float]):
    voxels = np.argwhere(component)
    lo, hi = voxels.min(axis=0).astype(float), voxels.max(axis=0).astype(float)
    spacing = np.asarray(geometry.spacing, dtype=float)
    shape = np.asarray(geometry.shape) - 1
    lo = np.clip(lo - np.rint(rng.uniform(*margin_mm, 3) / spacing), 0, shape)
    hi = np.clip(hi + np.rint(rng.uniform(*margin_mm, 3) / spacing), 0, shape)
    # along the image's index axes (as the Slicer module draws it): its voxel box is exactly lo..hi, also on an
    # oblique image (ObjectAnnotation stores an axis-aligned one as its smallest and largest LPS corner)
    return {"lo": geometry.index_to_world(lo), "hi": geometry.index_to_world(hi)}, geometry.direction_matrix


def _single_point(component, geometry, rng, background: bool, distance_mm: Tuple[float, float]):
    from scipy import ndimage

    inner = ndimage.binary_erosion(component, border_value=0)
    candidates = np.argwhere(inner if inner.any() else component)
    fg = candidates[int(rng.integers(len(candidates)))]
    bg = {}
    if background:
        spacing = np.asarray(geometry.spacing, dtype=float)
        grow = np.ceil(distance_mm[1] / spacing).astype(int) + 1
        vox = np.argwhere(component)
        lo = np.maximum(vox.min(axis=0) - grow, 0)
        hi = np.minimum(vox.max(axis=0) + grow + 1, component.shape)
        crop = tuple(slice(a, b) for a, b in zip(lo, hi))
        dist = ndimage.distance_transform_edt(~component[crop], sampling=spacing)
        ring = np.argwhere((dist >= distance_mm[0]) & (dist <= distance_mm[1]))
        if len(ring) == 0:
            raise ValueError(f"no background voxel lies {distance_mm[0]:g}–{distance_mm[1]:g} mm from the object "
                             "inside the image; lower background_distance_mm")
        bg = {"B": geometry.index_to_world((ring[int(rng.integers(len(ring)))] + lo).astype(float))}
    return geometry.index_to_world(fg.astype(float)), bg


def simulate_kind_object(component: np.ndarray, geometry: ImageGeometry, *, name: str, kind: str,
                         rng: np.random.Generator, config) -> ObjectAnnotation:
    """One simulated object of ``kind`` (not ``seven_points``) for the boolean mask ``component`` ``[i, j, k]``
    on ``geometry``; ``config`` is a :class:`~PASegLib.annotation.simulation.ClickSimulationConfig`."""
    if not np.any(component):
        raise ValueError(f"object {name!r}: the component is empty")
    if kind == "extreme_points":
        return ObjectAnnotation(name, kind=kind, marks=_extreme_points(component, geometry, rng,
                                                                       config.extreme_jitter_mm))
    if kind == "box":
        marks, axes = _box(component, geometry, rng, config.box_margin_mm)
        return ObjectAnnotation(name, kind=kind, marks=marks, axes=axes)
    if kind == "single_point":
        fg, bg = _single_point(component, geometry, rng, config.single_point_background,
                               config.background_distance_mm)
        return ObjectAnnotation(name, fg, bg, kind=kind)
    if kind == "dense":
        return ObjectAnnotation(name, kind="dense")
    raise ValueError(f"simulate_kind_object: unknown or seven-point kind {kind!r}")
