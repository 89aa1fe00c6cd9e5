"""Label-free choice of the foreground extent of one object (``ExpansionConfig(extent="auto")``), and the
geodesic backends the expansion can call (PASeg's numpy / torch raster scan, or GeodisTK when installed).

**What ``extent="auto"`` does.** Inside the click box, a voxel is foreground when (1) it is geodesically closer
to the foreground click than to every background seed (the *competition*): the six background clicks and the box
faces that are not on the image border (the box is spanned by background clicks placed beyond the object, so its
faces lie outside it); and (2) its distance from the foreground click is below ``REACH_FRACTION`` (0.15) of the
largest such distance in the box (the *reach cap*). Both distances are computed on the box intensities (smoothed
as configured) divided by the object's *click contrast* ``c`` and multiplied by ``CONTRAST_UNITS`` (3), where
``c`` is the median over the six background clicks of ``|I(background click) - mean I(3x3x3 around the
foreground click)|``; λ is the configured one. No ε, no label; the cap reuses the competition's foreground
distance, so it costs nothing extra.

**Why the competition.** ``distance < ε × D_max`` on raw intensities ties the extent to the intensity scale of
the modality: GeodisTK's step cost ``s / ((1 - λ) + λ / (|ΔI| + 1e-5))`` saturates at ``s / (1 - λ)`` as soon as
neighbouring intensities differ by more than a few units, so on CT (HU) or FLAIR (hundreds) the "geodesic" is
nearly Euclidean and the best ε differs per cohort (with labels, on a 0.05 grid: la_heart 0.15, lung2 0.30, the
BraTS FLAIR fixture 0.05 with recall 0.001). Dividing by the click contrast makes an intensity step of the
object's own contrast cost the same on every modality, so flat regions are cheap and edges expensive; the
competition then stops the foreground at the edge between the click and the nearest background.

**Why the reach cap.** The competition alone over-reached on la_heart (precision 0.80) and breast1 (0.82). Per
object, its false positives on la_heart are (a) a shell of 1-2 mm just outside the label (median distance to
the label 0.9-3 mm) and (b) on most atria a tail 4-10 mm deep (90th percentile > 4 mm on 9 of the first 14
cases) into structures of the blood pool's intensity joined to the atrium (pulmonary veins, ventricle, aorta):
along them d_fg stays small, and the nearest background seed is a box face or a click far beyond, so the
competition hands them the half of the structure nearer the click. On breast1 (143 voxels, 2.1 mm slices) they
are a one-voxel shell and the lesion's end slice, where the label is a ring around voxels as bright as its core.
No background seed lies in them, and no ratio ``d_fg < r·d_bg``, erosion, opening, intensity band or change of
``CONTRAST_UNITS`` (1-12) fixed la_heart without losing more recall than the cap (first 20-60 cases,
``docs/results/seeds_auto_tuning.json``). The cap bounds
the reach relative to the object's own distance map, as the fixed ε rule does, but on contrast-normalised
intensities, so it works on every modality; the competition still stops the foreground at a nearby edge.
``REACH_FRACTION`` was chosen on la_heart's first 60 case ids and the pyradiomics brain1 / brain2 fixtures (the
largest mean recall with precision ≥ 0.91 on la_heart and ≥ 0.90 on both brains, among caps 0.125-0.225, caps
on the raw-intensity or 10 / 20-unit distance, and ratios 0.8-0.9); la_heart's last 20 cases, breast1, lung1,
lung2 and the BraTS FLAIR fixture are held out.

Measured (``benchmarks/bench_seeds_auto.py``, ``docs/results/seeds_auto.json``): mean seed precision ≥ 0.90 on
la_heart and on every fixture (the fixed ε 0.175 is below 0.90 on brain2 and BraTS FLAIR, the competition alone
on la_heart and breast1). The price is recall where the competition alone was right: BraTS FLAIR 0.64 → 0.27,
lung1 0.88 → 0.60 (still 4× / 2.4× the fixed ε), la_heart 0.49 → 0.39 (fixed ε: 0.46 at precision 0.904).

When the contrast is below 1e-6 of the box's intensity range the intensities are left as they are.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Optional, Sequence

import numpy as np

#: how many distance units an intensity step of the object's click contrast is worth (see module doc)
CONTRAST_UNITS = 3.0
#: the reach cap: foreground only where the contrast-normalised distance from the click is below this fraction of
#: its largest value in the box (module doc); chosen on la_heart's first 60 cases and pyradiomics brain1 / brain2
REACH_FRACTION = 0.15
GEODISTK_INSTALL = "CPPFLAGS=-DNPY_IN_ARRAY=NPY_ARRAY_IN_ARRAY pip install --no-build-isolation GeodisTK==0.1.7"
GEODISTK_ITERATIONS = 4  # the official PA-Seg code's raster iterations


def geodistk_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("GeodisTK") is not None


@contextmanager
def _quiet_stdout():
    """GeodisTK prints the shape and spacing of every call from C: silence file descriptor 1 meanwhile."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (e.g. captured): nothing to redirect
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def distance(
    image: np.ndarray,
    seeds: np.ndarray,
    spacing: Sequence[float],
    *,
    lamb: float,
    max_iterations: Optional[int],
    backend: str,
    device: Optional[str] = None,
) -> np.ndarray:
    """Geodesic distance ``[i, j, k]`` from the ``seeds`` mask with the configured backend.

    ``backend="geodistk"`` calls ``GeodisTK.geodesic3d_raster_scan`` (float32 image, uint8 seeds, spacing in
    the same ``[i, j, k]`` order) with ``max_iterations`` raster iterations, 4 (the official setting) when
    None; the other backends use :func:`PASegLib.seeds.geodesic.geodesic_distance`.
    """
    if backend == "geodistk":
        try:
            import GeodisTK
        except ImportError:
            msg = "backend 'geodistk' needs the GeodisTK package, which is not installed; install it with: "
            raise ValueError(msg + GEODISTK_INSTALL) from None
        iterations = GEODISTK_ITERATIONS if max_iterations is None else int(max_iterations)
        img = np.ascontiguousarray(image, dtype=np.float32)  # raw values, as the official code passes them
        with _quiet_stdout():
            out = GeodisTK.geodesic3d_raster_scan(
                img, np.ascontiguousarray(seeds, dtype=np.uint8), [float(s) for s in spacing], float(lamb), iterations
            )
        return np.asarray(out, dtype=np.float32)
    from PASegLib.seeds.geodesic import geodesic_distance

    return geodesic_distance(
        image, seeds, spacing=spacing, lamb=lamb, max_iterations=max_iterations, backend=backend, device=device
    )


def click_contrast(intensities: np.ndarray, fg_index: Sequence[int], bg_indices: np.ndarray) -> float:
    """Median ``|I(bg) - mean I(3x3x3 around the fg click)|`` over the background clicks (crop indices)."""
    fg = np.asarray(fg_index, dtype=int)
    lo = np.maximum(fg - 1, 0)
    around = intensities[tuple(slice(int(a), int(b) + 2) for a, b in zip(lo, fg))]
    values = np.array([intensities[tuple(int(v) for v in p)] for p in bg_indices], dtype=np.float64)
    return float(np.median(np.abs(values - float(around.mean()))))


def background_seeds(shape: Sequence[int], bg_indices: np.ndarray, open_faces: Sequence[bool]) -> np.ndarray:
    """Bool mask of the crop: the background clicks and the box faces flagged in ``open_faces``.

    ``open_faces`` holds six flags ``(i low, i high, j low, j high, k low, k high)``: True for a face inside
    the image (a face on the image border is not known to be background).
    """
    mask = np.zeros(tuple(shape), dtype=bool)
    for axis in range(3):
        for side, where in ((0, 0), (1, -1)):
            if open_faces[2 * axis + side]:
                index = [slice(None)] * 3
                index[axis] = where
                mask[tuple(index)] = True
    for p in bg_indices:
        mask[tuple(int(v) for v in p)] = True
    return mask


def auto_foreground(
    intensities: np.ndarray,
    fg_index: Sequence[int],
    bg_indices: np.ndarray,
    open_faces: Sequence[bool],
    spacing: Sequence[float],
    *,
    lamb: float,
    max_iterations: Optional[int] = None,
    backend: str = "numpy",
    device: Optional[str] = None,
) -> np.ndarray:
    """Foreground of one object inside its box crop, chosen from the image and the clicks (module doc).

    Args:
        intensities: the box crop ``[i, j, k]`` (already smoothed when configured).
        fg_index: the foreground click, crop voxel index.
        bg_indices: ``(6, 3)`` background clicks, crop voxel indices (clipped into the crop).
        open_faces: six flags, see :func:`background_seeds`.
        spacing, lamb, max_iterations, backend, device: as :class:`~.expansion.ExpansionConfig`.

    Returns:
        bool mask of the crop: ``d_fg < d_bg`` and ``d_fg < REACH_FRACTION * max(d_fg)`` (both distances on the
        contrast-normalised crop, the maximum over the whole crop); the foreground click is always in it.
    """
    img = np.asarray(intensities, dtype=np.float32)
    fg = tuple(int(v) for v in fg_index)
    contrast = click_contrast(img, fg, bg_indices)
    span = float(img.max() - img.min()) if img.size else 0.0
    if contrast > 1e-6 * max(span, 1e-30):
        img = (img - img.min()) * np.float32(CONTRAST_UNITS / contrast)
    seeds = np.zeros(img.shape, dtype=bool)
    seeds[fg] = True
    background = background_seeds(img.shape, bg_indices, open_faces)
    background[fg] = False
    kw = dict(lamb=lamb, max_iterations=max_iterations, backend=backend, device=device)
    d_fg = distance(img, seeds, spacing, **kw)
    grown = d_fg < REACH_FRACTION * float(d_fg.max())  # the reach cap (module doc)
    if background.any():
        grown &= d_fg < distance(img, background, spacing, **kw)
    grown[fg] = True
    return grown
