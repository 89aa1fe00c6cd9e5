"""Synthetic tumour-like 3D cases, so the demo and the tests run without external data.

Each case is an MR-like image with one or more irregular "tumours" and their binary label:

* **Geometry**: anisotropic voxels (default 0.8 × 0.8 × 2.5 mm, thick slices along ``k``), an oblique
  direction matrix (rotations about the L, P and S axes) and a non-zero origin. Shapes are built in
  millimetres, so objects are isotropic in the physical world whatever the spacing.
* **Tumours**: a sphere whose radius varies with direction through a few low-frequency harmonics,
  optionally lobulated by up to three overlapping satellite lobes; with probability
  ``necrosis_probability`` a darker, irregular necrotic core inside a brighter rim. Intensity inside is
  textured (smoothed noise). Two tumours of a case never touch (gap ≥ 4 mm), so each one is one
  connected component of the label (6- or 26-connectivity).
* **Partial volume**: tumours and ellipsoids are rendered by supersampling each voxel (about
  ``supersample_mm`` between sub-samples along every axis); the fraction of sub-samples inside is the
  voxel's occupancy. The label is ``occupancy >= 0.5`` and the image blends intensities by occupancy, so
  boundary voxels have intermediate values. A small Gaussian point spread function follows.
* **Background and distractors**: textured parenchyma (two smoothed-noise "tissues"); ellipsoids with the
  tumour's intensity or brighter placed a few mm from a tumour; bright tubular "vessels"; dark
  CSF-like ellipsoids. A global threshold therefore cannot segment the tumours.
* **Acquisition**: a smooth multiplicative bias field, Rician noise (magnitude of complex Gaussian noise,
  ``noise_std`` per channel) and ``intensity_scale``. Before scaling, background ≈ 1, tumour ≈
  ``1 + contrast``. Everything is drawn from ``numpy.random.default_rng(seed)``: a seed gives identical cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from PASegLib.image.io import IMAGE_SUFFIXES, Volume, write_image
from PASegLib.synthetic.config import GAP_MM, LOBE_OFFSET, LOBE_RADIUS, SyntheticConfig
from PASegLib.utils.atomic import PathLike
from PASegLib.utils.checks import check_int

__all__ = ["SyntheticCase", "SyntheticConfig", "case_name", "generate_case", "write_synthetic_dataset"]


@dataclass
class SyntheticCase:
    """One generated case.

    Attributes:
        image: float32 image ``[i, j, k]``.
        label: uint8 label ``[i, j, k]`` (0 = background, 1 = tumour); each tumour is one connected
            component, separate from the others.
        occupancy: float32 ``[i, j, k]``: fraction of each voxel covered by a tumour (label = ``>= 0.5``).
        objects: one dict per tumour: ``centre_lps`` (mm), ``centre_index`` (continuous ``[i, j, k]``),
            ``radius_mm``, ``n_lobes``, ``necrotic``, ``n_voxels``.
    """

    image: Volume
    label: Volume
    occupancy: np.ndarray
    objects: List[Dict[str, Any]] = field(default_factory=list)


# -- rendering helpers ------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma_vox: np.ndarray) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation, float32."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    field_ = ndimage.gaussian_filter(noise, sigma_vox, mode="reflect", truncate=3.0)
    return field_ / max(float(field_.std()), 1e-6)


def _render(fn: Callable[..., List[np.ndarray]], centre: np.ndarray, extent: float, spacing: np.ndarray,
            shape: Sequence[int], factors: Sequence[int]) -> Tuple[Tuple[slice, ...], List[np.ndarray]]:
    """Supersampled occupancies of the indicator functions ``fn(dx, dy, dz)`` (mm offsets from ``centre``
    in the grid-aligned physical frame) inside the box ``centre ± extent``; returns the box and one
    float32 occupancy array per indicator."""
    lo = np.maximum(np.floor((centre - extent) / spacing).astype(int), 0)
    hi = np.minimum(np.ceil((centre + extent) / spacing).astype(int) + 1, np.asarray(shape))
    coords = [((np.arange(lo[a], hi[a])[:, None] + (np.arange(f) + 0.5)[None, :] / f - 0.5).ravel()
               * spacing[a] - centre[a]).astype(np.float32) for a, f in enumerate(factors)]
    dx, dy, dz = coords[0][:, None, None], coords[1][None, :, None], coords[2][None, None, :]
    n = hi - lo
    occupancies = []
    for inside in fn(dx, dy, dz):
        blocks = np.broadcast_to(inside, (dx.size, dy.size, dz.size)).reshape(
            n[0], factors[0], n[1], factors[1], n[2], factors[2])
        occupancies.append(blocks.mean(axis=(1, 3, 5), dtype=np.float32))
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), occupancies


def _radial_function(rng: np.random.Generator, amplitude: float) -> Callable[..., np.ndarray]:
    """A smooth random function of direction, ``1 + f(u)`` with ``|f| <= amplitude``."""
    n = 5
    dirs = rng.standard_normal((n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    weights = rng.uniform(0.3, 1.0, n)
    weights *= amplitude / weights.sum()
    freqs, phases = rng.uniform(1.5, 6.0, n), rng.uniform(0, 2 * np.pi, n)

    def radius_factor(dx, dy, dz, r):
        out = np.ones(np.broadcast_shapes(dx.shape, dy.shape, dz.shape), dtype=np.float32)
        for (vx, vy, vz), w, f, ph in zip(dirs, weights, freqs, phases):
            out += np.float32(w) * np.cos((dx * vx + dy * vy + dz * vz) * (np.float32(f) / r) + ph)
        return out

    return radius_factor


def _star(ex, ey, ez, radius: float, radial: Callable[..., np.ndarray], amplitude: float) -> np.ndarray:
    """``|e| <= radius * radial(e)`` on the broadcast offsets ``e`` (mm); the harmonics are evaluated only
    in the shell ``radius * (1 ± amplitude)`` where they can change the answer."""
    dist = np.sqrt(ex * ex + ey * ey + ez * ez) + np.float32(1e-6)
    inside = dist <= np.float32(radius * (1 - amplitude))
    idx = np.nonzero(~inside & (dist <= np.float32(radius * (1 + amplitude))))
    px, py, pz = (np.broadcast_to(e, dist.shape)[idx] for e in (ex, ey, ez))
    inside[idx] = dist[idx] <= np.float32(radius) * radial(px, py, pz, dist[idx])
    return inside


def _tumour(rng: np.random.Generator, radius: float, cfg: SyntheticConfig):
    """Random tumour shape: (indicator function, bounding radius, number of lobes, necrotic)."""
    lobes = [(np.zeros(3), radius)]
    for _ in range(int(rng.integers(0, 4))):
        u = rng.standard_normal(3)
        lobes.append((LOBE_OFFSET * radius * u / np.linalg.norm(u), radius * rng.uniform(*LOBE_RADIUS)))
    shapes = [(c, r, _radial_function(rng, cfg.irregularity)) for c, r in lobes]
    extent = max(np.linalg.norm(c) + r * (1 + cfg.irregularity) for c, r in lobes) + 0.5
    necrotic = bool(rng.random() < cfg.necrosis_probability)
    core_r, core_f = radius * rng.uniform(0.35, 0.55), _radial_function(rng, 0.3)
    core_c = rng.uniform(-0.15, 0.15, 3) * radius

    def offsets(dx, dy, dz, c):
        return dx - np.float32(c[0]), dy - np.float32(c[1]), dz - np.float32(c[2])

    def indicators(dx, dy, dz):
        inside = np.zeros((dx.size, dy.size, dz.size), dtype=bool)
        for c, r, radial in shapes:
            inside |= _star(*offsets(dx, dy, dz, c), r, radial, cfg.irregularity)
        if not necrotic:
            return [inside]
        return [inside, inside & _star(*offsets(dx, dy, dz, core_c), core_r, core_f, 0.3)]

    return indicators, extent, len(lobes), necrotic


def _ellipsoid(rng: np.random.Generator, axes: np.ndarray):
    rot = np.linalg.qr(rng.standard_normal((3, 3)))[0] / axes[None, :]

    def indicators(dx, dy, dz):
        q = [dx * np.float32(rot[0, a]) + dy * np.float32(rot[1, a]) + dz * np.float32(rot[2, a])
             for a in range(3)]
        return [q[0] * q[0] + q[1] * q[1] + q[2] * q[2] <= 1.0]

    return indicators


def _blend(image: np.ndarray, box: Tuple[slice, ...], occ: np.ndarray, value: Any) -> None:
    image[box] = image[box] * (1 - occ) + occ * value


def _place(rng, fov: np.ndarray, extent: float, taken: List[Tuple[np.ndarray, float]],
           near: Optional[Tuple[np.ndarray, float]] = None) -> Optional[np.ndarray]:
    """Random centre (mm, grid frame) inside the field of view, ``GAP_MM`` away from ``taken``."""
    margin = extent + 2.0
    if np.any(np.asarray(fov) - margin < margin):
        return None  # the field of view is too small for an object of this extent
    for _ in range(200):
        if near is None:
            c = rng.uniform(margin, fov - margin)
        else:
            u = rng.standard_normal(3)
            c = near[0] + u / np.linalg.norm(u) * (near[1] + extent + rng.uniform(GAP_MM, 2.5 * GAP_MM))
            if np.any(c < margin) or np.any(c > fov - margin):
                continue
        if all(np.linalg.norm(c - tc) >= te + extent + GAP_MM for tc, te in taken):
            return c
    return None


def _vessel(rng, grid: Sequence[np.ndarray], fov: np.ndarray, spacing: np.ndarray,
            tumours: List[Tuple[np.ndarray, float]]) -> Optional[np.ndarray]:
    """Occupancy of a straight tube crossing the field of view, away from the tumours (voxel-level
    partial volume: linear ramp over the voxel's footprint along the tube's normal)."""
    radius = rng.uniform(0.8, 1.6)
    for _ in range(50):
        p = rng.uniform(0.1, 0.9, 3) * fov
        d = rng.standard_normal(3)
        d /= np.linalg.norm(d)
        if all(np.linalg.norm(np.cross(c - p, d)) >= e + radius + GAP_MM for c, e in tumours):
            break
    else:
        return None
    rel = [g - np.float32(p[a]) for a, g in enumerate(grid)]
    along = rel[0] * d[0] + rel[1] * d[1] + rel[2] * d[2]
    normal = [rel[a] - along * np.float32(d[a]) for a in range(3)]
    dist = np.sqrt(normal[0] ** 2 + normal[1] ** 2 + normal[2] ** 2) + np.float32(1e-6)
    footprint = sum(np.abs(normal[a]) * np.float32(spacing[a]) for a in range(3)) / dist
    footprint = np.maximum(footprint, np.float32(0.5 * spacing.min()))
    return np.clip(0.5 - (dist - np.float32(radius)) / footprint, 0.0, 1.0).astype(np.float32)


# -- public API --------------------------------------------------------------------------------------------
def generate_case(*, config: Optional[SyntheticConfig] = None, seed: int = 0) -> SyntheticCase:
    """Generate one synthetic case (see the module docstring for the model).

    Args:
        config: generator parameters; ``SyntheticConfig()`` when ``None``.
        seed: random seed (non-negative integer); the same seed and config give identical arrays.

    Returns:
        :class:`SyntheticCase` with a float32 image and a uint8 label of shape ``config.shape``, both with
        the geometry :meth:`SyntheticConfig.geometry`.
    """
    cfg = SyntheticConfig() if config is None else config
    if not isinstance(cfg, SyntheticConfig):
        raise ValueError(f"config must be a SyntheticConfig, got {type(cfg).__name__}")
    check_int("seed", seed, minimum=0)
    rng = np.random.default_rng(int(seed))
    geometry = cfg.geometry()
    shape, spacing = np.asarray(cfg.shape), np.asarray(cfg.spacing)
    fov = (shape - 1) * spacing
    factors = [max(1, int(math.ceil(s / cfg.supersample_mm))) for s in spacing]

    # Background parenchyma: two smoothly mixed tissues plus fine texture.
    tissue = np.tanh(1.5 * _smooth_noise(rng, cfg.shape, 5.0 / spacing))
    image = 1.0 + 0.08 * tissue + 0.03 * _smooth_noise(rng, cfg.shape, 1.0 / spacing)

    # Tumours: placed first so that the distractors can be put around them.
    tumour_mean = 1.0 + cfg.contrast
    texture = _smooth_noise(rng, cfg.shape, 1.5 / spacing)
    tumours: List[Tuple[np.ndarray, float]] = []
    renders = []
    for _ in range(int(rng.integers(cfg.n_objects[0], cfg.n_objects[1] + 1))):
        radius = float(rng.uniform(*cfg.radius_mm))
        for _attempt in range(10):
            indicators, extent, n_lobes, necrotic = _tumour(rng, radius, cfg)
            centre = _place(rng, fov, extent, tumours)
            if centre is None:  # no room left: try a smaller tumour
                radius = max(0.85 * radius, cfg.radius_mm[0])
                continue
            box, occs = _render(indicators, centre, extent, spacing, cfg.shape, factors)
            n_comp = ndimage.label(occs[0] >= 0.5, structure=np.ones((3, 3, 3)))[1]
            if n_comp == 1:  # the discretised shape is one piece
                tumours.append((centre, extent))
                renders.append((box, occs, radius, n_lobes, necrotic, centre))
                break
    if not renders:
        raise ValueError(f"SyntheticConfig.radius_mm {cfg.radius_mm} leaves no room for a tumour")

    # Distractors: similar or brighter ellipsoids near the tumours, bright vessels, dark CSF-like blobs.
    n_distractors = int(rng.integers(cfg.n_distractors[0], cfg.n_distractors[1] + 1))
    kinds = ["similar", "vessel"][:n_distractors]
    kinds += list(rng.choice(["similar", "vessel", "dark", "similar"], n_distractors - len(kinds)))
    grid = [(np.arange(n, dtype=np.float32) * np.float32(s)).reshape([-1 if a == b else 1 for b in range(3)])
            for a, (n, s) in enumerate(zip(cfg.shape, spacing))]
    taken = list(tumours)
    for kind in kinds:
        if kind == "vessel":
            occ = _vessel(rng, grid, fov, spacing, tumours)
            if occ is not None:
                image = image * (1 - occ) + occ * tumour_mean * rng.uniform(1.1, 1.35)
            continue
        axes = rng.uniform(2.5, 7.0, 3) if kind == "similar" else rng.uniform(3.0, 9.0, 3)
        near = tumours[int(rng.integers(len(tumours)))] if kind == "similar" else None
        centre = _place(rng, fov, float(axes.max()), taken, near=near)
        if centre is None:
            continue
        taken.append((centre, float(axes.max())))
        box, (occ,) = _render(_ellipsoid(rng, axes), centre, float(axes.max()) + 0.5, spacing, cfg.shape,
                              factors)
        value = tumour_mean * rng.uniform(0.95, 1.25) if kind == "similar" else rng.uniform(0.3, 0.45)
        _blend(image, box, occ, value * (1 + 0.05 * texture[box]))

    # Tumour intensities: textured, with a darker necrotic core inside a brighter rim.
    occupancy = np.zeros(cfg.shape, dtype=np.float32)
    objects = []
    for box, occs, radius, n_lobes, necrotic, centre in renders:
        occ = occs[0]
        inside = tumour_mean * (1 + 0.15 * texture[box])
        if necrotic:
            core = np.where(occ > 0, occs[1] / np.maximum(occ, 1e-6), 0)
            inside = inside * (1.1 * (1 - core)) + core * rng.uniform(0.45, 0.7) * (1 + 0.1 * texture[box])
        _blend(image, box, occ, inside)
        occupancy[box] = np.maximum(occupancy[box], occ)
        index = centre / spacing
        objects.append({"centre_lps": geometry.index_to_world(index).tolist(), "centre_index": index.tolist(),
                        "radius_mm": radius, "n_lobes": n_lobes, "necrotic": necrotic,
                        "n_voxels": int(np.count_nonzero(occ >= 0.5))})

    # Acquisition: point spread function, bias field, Rician noise.
    if cfg.psf_sigma_voxels > 0:
        image = ndimage.gaussian_filter(image, cfg.psf_sigma_voxels, mode="nearest")
    if cfg.bias_strength > 0:
        rel = [(g / np.float32(f) - 0.5) * 2 for g, f in zip(grid, fov)]
        coef = rng.uniform(-1, 1, 6)
        bias = sum(c * r for c, r in zip(coef[:3], rel)) + coef[3] * rel[0] * rel[1] + coef[4] * rel[2] ** 2
        image = image * np.exp(cfg.bias_strength * bias / max(float(np.abs(bias).max()), 1e-6))
    if cfg.noise_std > 0:
        real = image + cfg.noise_std * rng.standard_normal(cfg.shape, dtype=np.float32)
        imag = cfg.noise_std * rng.standard_normal(cfg.shape, dtype=np.float32)
        image = np.sqrt(real * real + imag * imag)
    image = (image * cfg.intensity_scale).astype(np.float32)
    label = (occupancy >= 0.5).astype(np.uint8)
    return SyntheticCase(Volume(image, geometry), Volume(label, geometry), occupancy, objects)


def case_name(index: int) -> str:
    """Name of the ``index``-th synthetic case: ``synth_000``, ``synth_001`` …"""
    return f"synth_{int(index):03d}"


def write_synthetic_dataset(out_dir: PathLike, *, n_cases: int = 4, config: Optional[SyntheticConfig] = None,
                            seed: int = 0, suffix: str = ".nii.gz") -> List[Path]:
    """Write ``n_cases`` cases as ``<out_dir>/synth_NNN_image<suffix>`` and ``synth_NNN_label<suffix>``.

    Case ``n`` uses the seed ``numpy.random.SeedSequence(seed).spawn(n_cases)[n]`` (independent streams);
    files are written atomically with :func:`~PASegLib.image.io.write_image` and ``out_dir`` is created.

    Returns:
        The written paths in order: image then label of case 0, then of case 1, …
    """
    check_int("n_cases", n_cases, minimum=1)
    check_int("seed", seed, minimum=0)
    if suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"suffix must be one of {', '.join(IMAGE_SUFFIXES)}, got {suffix!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: List[Path] = []
    for n, child in enumerate(np.random.SeedSequence(int(seed)).spawn(int(n_cases))):
        case = generate_case(config=config, seed=int(child.generate_state(1)[0]))
        name = case_name(n)
        paths.append(write_image(out / f"{name}_image{suffix}", case.image.array, case.image.geometry))
        paths.append(write_image(out / f"{name}_label{suffix}", case.label.array, case.label.geometry))
    return paths
