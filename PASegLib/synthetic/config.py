"""Configuration of the synthetic data generator (:mod:`PASegLib.synthetic.generator`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

from scipy.spatial.transform import Rotation

from PASegLib.image.geometry import ImageGeometry
from PASegLib.utils.checks import check_number, check_numbers

__all__ = ["SyntheticConfig"]

GAP_MM = 4.0  # minimum gap between the bounding spheres of two tumours, or a tumour and a distractor
LOBE_OFFSET, LOBE_RADIUS = 0.55, (0.45, 0.7)  # satellite lobes: centre distance and radius / main radius


def lobe_extent(irregularity: float) -> float:
    """Upper bound of a tumour's bounding-sphere radius over its main radius."""
    return max(1.0, LOBE_OFFSET + LOBE_RADIUS[1]) * (1 + irregularity)


@dataclass
class SyntheticConfig:
    """Parameters of :func:`generate_case` (JSON-serialisable with :func:`dataclasses.asdict`).

    Attributes:
        shape: image size ``(I, J, K)`` in voxels.
        spacing: voxel size in mm along ``(i, j, k)``.
        origin: LPS position (mm) of voxel ``(0, 0, 0)``.
        rotation_deg: rotations (degrees) about the L, P and S axes, applied in that order, that give the
            direction matrix; ``(0, 0, 0)`` is an axis-aligned image.
        n_objects: inclusive range of the number of tumours per case (a tumour that does not fit is
            shrunk towards ``radius_mm[0]``, then dropped; :attr:`SyntheticCase.objects` lists those made).
        radius_mm: inclusive range of the main radius of a tumour (mm).
        irregularity: amplitude of the radial harmonics, as a fraction of the radius (0 = spheres).
        necrosis_probability: probability that a tumour has a dark necrotic core.
        n_distractors: inclusive range of the number of non-tumour structures.
        contrast: tumour mean intensity minus background intensity, relative to the background (≈ 1).
        noise_std: Rician noise level relative to the background intensity.
        bias_strength: peak relative amplitude of the multiplicative bias field (0 = none).
        psf_sigma_voxels: standard deviation of the Gaussian point spread function, in voxels.
        supersample_mm: target distance between sub-samples when computing partial volumes (mm).
        intensity_scale: factor applied to the final image.
    """

    shape: Tuple[int, int, int] = (96, 96, 32)
    spacing: Tuple[float, float, float] = (0.8, 0.8, 2.5)
    origin: Tuple[float, float, float] = (-38.0, -52.0, 17.5)
    rotation_deg: Tuple[float, float, float] = (9.0, -14.0, 22.0)
    n_objects: Tuple[int, int] = (1, 2)
    radius_mm: Tuple[float, float] = (6.0, 11.0)
    irregularity: float = 0.25
    necrosis_probability: float = 0.4
    n_distractors: Tuple[int, int] = (3, 6)
    contrast: float = 0.6
    noise_std: float = 0.07
    bias_strength: float = 0.2
    psf_sigma_voxels: float = 0.5
    supersample_mm: float = 0.5
    intensity_scale: float = 500.0

    def __post_init__(self) -> None:
        def seq(name: str, n: int, cast: Callable[[Any], Any]) -> tuple:
            out = check_numbers(f"SyntheticConfig.{name}", getattr(self, name), length=n, cast=cast,
                                what=f"{n} finite numbers")
            setattr(self, name, out)
            return out

        def check(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"SyntheticConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        shape = seq("shape", 3, int)
        check(min(shape) >= 8, "shape", "three integers >= 8")
        spacing = seq("spacing", 3, float)
        check(min(spacing) > 0, "spacing", "three positive numbers (mm)")
        seq("origin", 3, float)
        seq("rotation_deg", 3, float)
        lo, hi = seq("n_objects", 2, int)
        check(1 <= lo <= hi <= 4, "n_objects", "a range (lo, hi) with 1 <= lo <= hi <= 4")
        r_lo, r_hi = seq("radius_mm", 2, float)
        check(0 < r_lo <= r_hi, "radius_mm", "a range (lo, hi) with 0 < lo <= hi")
        lo, hi = seq("n_distractors", 2, int)
        check(0 <= lo <= hi <= 20, "n_distractors", "a range (lo, hi) with 0 <= lo <= hi <= 20")
        for name, low, high in [("irregularity", 0.0, 0.35), ("necrosis_probability", 0.0, 1.0),
                                ("contrast", 0.05, 5.0), ("noise_std", 0.0, 1.0), ("bias_strength", 0.0, 0.9),
                                ("psf_sigma_voxels", 0.0, 3.0), ("supersample_mm", 0.05, 10.0),
                                ("intensity_scale", 1e-6, 1e9)]:
            setattr(self, name, check_number(f"SyntheticConfig.{name}", getattr(self, name), minimum=low,
                                             maximum=high))
        fov, extent = min((n - 1) * s for n, s in zip(shape, spacing)), lobe_extent(self.irregularity)
        check(2 * (r_hi * extent + 2.5) <= fov, "radius_mm",
              f"small enough for the field of view ({fov:.1f} mm): at most {(fov / 2 - 2.5) / extent:.1f} mm")

    def geometry(self) -> ImageGeometry:
        """The (oblique, anisotropic) geometry of every case generated with this configuration."""
        # Extrinsic rotations about L, then P, then S: direction = Rz @ Ry @ Rx.
        direction = Rotation.from_euler("xyz", self.rotation_deg, degrees=True).as_matrix()
        return ImageGeometry(self.shape, self.spacing, self.origin, tuple(direction.ravel()))

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> SyntheticConfig:
        """Inverse of :func:`dataclasses.asdict` (accepts the lists that JSON gives back)."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown SyntheticConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


