"""Seed expansion: seven clicks per object → partial label map (0 = background, 1 = foreground, 2 = unlabeled).

PA-Seg §III-A.2 with the official code's choices:

* **background** Ω_B = voxels outside every object's box (the inclusive voxel box spanned by its six
  background points) ∪ voxels outside the valid region (e.g. the zero voxels of a skull-stripped image);
* **foreground** Ω_F = voxels of the box (and of the valid region) whose geodesic distance from the object's
  foreground click is below ``epsilon × D_max``, where ``D_max`` is the largest geodesic distance in the box's
  valid voxels. The geodesic distance is computed on the **raw** intensities of the box crop with GeodisTK's
  graph and step cost (see :mod:`PASegLib.seeds.geodesic`), so ``epsilon`` and ``lamb`` keep the paper's meaning;
* everything else inside the boxes is unlabeled (2).

``extent="auto"`` replaces the ε rule by a label-free, per-object one: foreground = box voxels geodesically
closer to the foreground click than to the background clicks and box faces, on contrast-normalised
intensities (:mod:`PASegLib.seeds.extent` says what and why; ``docs/BENCHMARKS.md`` has the numbers).
``backend="geodistk"`` computes the distance with GeodisTK itself (4 raster iterations unless
``max_iterations`` says otherwise; with ``smooth_sigma_mm=0`` this reproduces the official pseudo labels).

Optionally (``smooth_sigma_mm > 0``) the intensities are smoothed with a Gaussian before the geodesic
transform. This is PASeg's addition, not the official code's: with quantised images (e.g. 8-bit MRI) many
neighbours have *equal* intensities, and GeodisTK's step cost ``s / ((1 - λ) + λ / (|ΔI| + 1e-5))`` is then
≈ 0, so the distance leaks for free along flat paths; smoothing breaks those ties and the noise. The default
is chosen from the benchmark in ``docs/BENCHMARKS.md``; ``smooth_sigma_mm=0`` reproduces the official code.

Several objects: every box is unlabeled first, then every object's foreground is added; a voxel in any
object's foreground is foreground even when it lies in another object's box.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import numpy as np

from PASegLib.annotation.model import CaseAnnotation
from PASegLib.annotation.validation import object_box
from PASegLib.image.io import Volume
from PASegLib.utils.checks import dataclass_from_dict

BACKGROUND, FOREGROUND, UNLABELED = 0, 1, 2
VALID_REGIONS = ("all", "nonzero", "above_threshold")
EXTENTS = ("fixed", "auto")
BACKENDS = ("numpy", "torch", "geodistk")
FILLS = ("none", "random_walker")
#: the fill's settings, left out of :meth:`ExpansionConfig.cache_dict` while ``fill="none"`` (cache keys unchanged)
FILL_FIELDS = ("fill", "fill_margin", "fill_bg_radius_mm")


@dataclass(frozen=True)
class ExpansionConfig:
    """Parameters of :func:`expand_seeds`.

    Attributes:
        epsilon: expansion threshold ε ∈ [0, 1]: foreground where distance < ε·D_max (0 = the click only);
            used when ``extent="fixed"``.
        extent: ``"fixed"`` (the ε rule above) or ``"auto"`` (chosen per object from the image and the
            clicks, no label, ``epsilon`` unused; see :mod:`PASegLib.seeds.extent`).
        lamb: GeodisTK's λ ∈ [0, 1]: 0 = Euclidean, 1 = purely intensity-driven.
        valid_region: ``"all"``; ``"nonzero"`` (voxels above the image minimum are valid, as the official
            code does for skull-stripped BraTS); ``"above_threshold"`` (voxels > ``valid_threshold``).
        valid_threshold: intensity threshold for ``"above_threshold"``.
        max_iterations: raster-scan sweeps; ``None`` iterates to convergence (exact shortest paths), or
            for ``backend="geodistk"`` runs the official 4 iterations.
        smooth_sigma_mm: Gaussian pre-smoothing (mm) of the intensities used by the geodesic; 0 = raw.
        backend: ``"numpy"``, ``"torch"`` (torch also runs on a GPU, see ``device``) or ``"geodistk"`` (the
            paper's compiled GeodisTK, when installed).
        device: torch device for ``backend="torch"`` (e.g. ``"cuda"``); ignored by numpy.
        fill: ``"random_walker"`` (the default: the seeds grown over the click box by the random walker, an
            uncertain band left unlabelled: :mod:`PASegLib.seeds.seed_fill`; used by
            :func:`~PASegLib.seeds.pseudo_labels.pseudo_label_map`, not by :func:`expand_seeds` itself) or
            ``"none"`` (the plain expanded seeds). The default since it trained better on 12 tuning cases drawn
            from la_heart's training cases (stage one Dice 0.786 against 0.739, ``docs/results/accuracy_v3_cpu.json``);
            run folders saved before it existed resume with ``"none"``
            (:func:`~PASegLib.training.config.load_run_config`).
        fill_margin: the fill's uncertain band: box voxels whose probability is within this of 0.5 stay
            unlabelled, in [0, 0.5). 0.35: on 30 la_heart training cases the labelled voxels of the box are right
            in 97 % (95 % at 0.2, whose labels cover more of the object), see ``docs/BENCHMARKS.md``.
        fill_bg_radius_mm: the fill's background seeds inside the box: a ball of this radius (mm) around each
            background click (2 mm: the simulated clicks lie 2–10 mm beyond the object; 4 mm measured the same).
    """

    epsilon: float = 0.175
    lamb: float = 0.5
    valid_region: str = "all"
    valid_threshold: Optional[float] = None
    max_iterations: Optional[int] = None
    smooth_sigma_mm: float = 1.0
    backend: str = "numpy"
    device: Optional[str] = None
    extent: str = "fixed"
    fill: str = "random_walker"
    fill_margin: float = 0.35
    fill_bg_radius_mm: float = 2.0

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}")
        if not 0.0 <= float(self.fill_margin) < 0.5:
            raise ValueError(f"fill_margin must be in [0, 0.5), got {self.fill_margin!r}")
        if not (np.isfinite(float(self.fill_bg_radius_mm)) and float(self.fill_bg_radius_mm) >= 0.0):
            raise ValueError(f"fill_bg_radius_mm must be a finite number >= 0, got {self.fill_bg_radius_mm!r}")
        if self.extent not in EXTENTS:
            raise ValueError(f"extent must be one of {EXTENTS}, got {self.extent!r}")
        if not 0.0 <= float(self.epsilon) <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon!r}")
        if not 0.0 <= float(self.lamb) <= 1.0:
            raise ValueError(f"lamb must be in [0, 1], got {self.lamb!r}")
        if self.valid_region not in VALID_REGIONS:
            raise ValueError(f"valid_region must be one of {VALID_REGIONS}, got {self.valid_region!r}")
        if self.valid_region == "above_threshold" and self.valid_threshold is None:
            raise ValueError("valid_region='above_threshold' needs valid_threshold")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1 or None, got {self.max_iterations!r}")
        if not float(self.smooth_sigma_mm) >= 0.0:
            raise ValueError(f"smooth_sigma_mm must be >= 0, got {self.smooth_sigma_mm!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "geodistk":
            from PASegLib.seeds.extent import GEODISTK_INSTALL, geodistk_available

            if not geodistk_available():
                raise ValueError(
                    f"backend 'geodistk' needs the GeodisTK package, which is not installed; "
                    f"install it with: {GEODISTK_INSTALL}"
                )
            if self.device is not None:
                raise ValueError(f"device is only used with backend='torch', got device={self.device!r}")

    def to_dict(self) -> Dict[str, Any]:
        """Every setting (``fill`` included, so that a saved config says which labels it trained on)."""
        return asdict(self)

    def cache_dict(self) -> Dict[str, Any]:
        """The settings that make a prepared case: :meth:`to_dict` without the ``fill*`` keys while
        ``fill="none"`` (the plain seeds' cache entries keep the keys they had before the fill existed), with the
        reach cap of ``extent="auto"`` (entries prepared by the rule before the cap are not reused)."""
        data = self.to_dict()
        if self.fill == "none":
            for key in FILL_FIELDS:
                data.pop(key)
        if self.extent == "auto":  # the label-free rule's version: its reach cap changed what it prepares
            from PASegLib.seeds.extent import REACH_FRACTION

            data["auto_reach_fraction"] = REACH_FRACTION
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> ExpansionConfig:
        return dataclass_from_dict(cls, data, "expansion")


def valid_region_mask(image: np.ndarray, config: ExpansionConfig) -> np.ndarray:
    """Boolean valid-region mask ``[i, j, k]`` of ``image`` for ``config.valid_region``."""
    if config.valid_region == "all":
        return np.ones(image.shape, dtype=bool)
    if config.valid_region == "nonzero":
        return image > image.min()
    return image > float(config.valid_threshold)


def expand_seeds(
    image: Volume,
    case: CaseAnnotation,
    *,
    config: ExpansionConfig = ExpansionConfig(),
    valid_mask: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Expand the clicks of ``case`` on ``image`` into a partial label map.

    Args:
        image: the image (``array`` ``[i, j, k]``, any real dtype; raw intensities are used).
        case: the annotated objects (validate them first with :func:`~PASegLib.annotation.validation.validate_case`).
        config: expansion parameters.
        valid_mask: optional boolean ``[i, j, k]`` valid region overriding ``config.valid_region``.

    Returns:
        uint8 array ``[i, j, k]``: 0 = background, 1 = foreground, 2 = unlabeled.
    """
    from PASegLib.seeds.extent import auto_foreground
    from PASegLib.seeds.extent import distance as geodesic

    # Memory: only the label map is allocated at full size; the image is read box by box (no float32 copy of
    # the whole volume, no full-size masks): a preview of a 512×512×200 volume stays near its label map.
    arr = np.asarray(image.array)
    geometry = image.geometry
    if not case.objects:
        raise ValueError("case holds no object to expand")
    if valid_mask is not None:
        valid_mask = np.asarray(valid_mask, dtype=bool)
        if valid_mask.shape != arr.shape:
            raise ValueError(f"valid_mask shape {valid_mask.shape} does not match image shape {arr.shape}")
    floor = float(arr.min()) if valid_mask is None and config.valid_region == "nonzero" else None

    def valid_in(crop):
        if valid_mask is not None:
            return valid_mask[crop]
        if config.valid_region == "all":
            return np.ones(arr[crop].shape, dtype=bool)
        return arr[crop] > (floor if floor is not None else float(config.valid_threshold))

    labels = np.zeros(arr.shape, dtype=np.uint8)
    boxes = [object_box(obj, geometry) for obj in case.objects]
    crops = [tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi)) for lo, hi in boxes]
    for crop in crops:
        labels[crop] = UNLABELED
    for obj, (lo, hi), crop in zip(case.objects, boxes, crops):
        seed_index = geometry.world_to_voxel(obj.foreground) - lo
        intensities = smoothed_crop(arr, lo, hi, geometry.spacing, config.smooth_sigma_mm).astype(np.float32)
        kw = dict(lamb=config.lamb, max_iterations=config.max_iterations, backend=config.backend, device=config.device)
        inside = valid_in(crop)
        if config.extent == "auto":
            bg_index = np.clip(geometry.world_to_voxel(obj.background_array()) - lo, 0, hi - lo)
            open_faces = [f for a in range(3) for f in (lo[a] > 0, hi[a] < arr.shape[a] - 1)]
            grown = auto_foreground(intensities, seed_index, bg_index, open_faces, geometry.spacing, **kw) & inside
        else:
            seeds = np.zeros(intensities.shape, dtype=bool)
            seeds[tuple(seed_index)] = True
            distance = geodesic(intensities, seeds, geometry.spacing, **kw)
            d_max = float(distance[inside].max()) if inside.any() else 0.0
            grown = (distance < config.epsilon * d_max) & inside
        grown[tuple(seed_index)] = bool(inside[tuple(seed_index)])
        labels[crop][grown] = FOREGROUND
    for crop in crops:  # outside the boxes every voxel is background already
        labels[crop][~valid_in(crop)] = BACKGROUND
    return labels


def smoothed_crop(arr: np.ndarray, lo: np.ndarray, hi: np.ndarray, spacing, sigma_mm: float) -> np.ndarray:
    """The box ``[lo, hi]`` of ``arr``, Gaussian-smoothed with ``sigma_mm`` (smoothing sees 3σ beyond the box)."""
    if sigma_mm <= 0:
        return arr[tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))]
    from scipy.ndimage import gaussian_filter

    sigma = [sigma_mm / s for s in spacing]
    pad = [int(np.ceil(3 * s)) for s in sigma]
    start = [max(0, int(a) - p) for a, p in zip(lo, pad)]
    stop = [min(n, int(b) + 1 + p) for b, p, n in zip(hi, pad, arr.shape)]
    window = arr[tuple(slice(a, b) for a, b in zip(start, stop))].astype(np.float32)  # integer images: no rounding
    smooth = gaussian_filter(window, sigma, mode="nearest")
    return smooth[tuple(slice(int(a) - s, int(b) + 1 - s) for a, b, s in zip(lo, hi, start))]


def seed_precision_recall(partial: np.ndarray, label: np.ndarray) -> Dict[str, float]:
    """Precision and recall of the expanded foreground (``partial == 1``) against a ground-truth ``label``.

    Precision = |Ω_F ∩ G| / |Ω_F|, recall = |Ω_F ∩ G| / |G| (the paper's Fig. 5); background seeds are also
    checked: ``bg_error`` is the fraction of ground-truth voxels wrongly labelled background.
    """
    fg = np.asarray(partial) == FOREGROUND
    gt = np.asarray(label) > 0
    if fg.shape != gt.shape:
        raise ValueError(f"partial shape {fg.shape} does not match label shape {gt.shape}")
    tp = float(np.logical_and(fg, gt).sum())
    n_gt = float(gt.sum())
    return {
        "fg_precision": tp / float(fg.sum()) if fg.any() else 0.0,
        "fg_recall": tp / n_gt if n_gt else 0.0,
        "bg_error": float(np.logical_and(np.asarray(partial) == BACKGROUND, gt).sum()) / n_gt if n_gt else 0.0,
    }
