"""Image geometry: voxel index ↔ world coordinates through spacing, origin and direction matrix.

Conventions (ITK/DICOM):

* Index ``(i, j, k)`` addresses voxel centres; arrays are indexed ``[i, j, k]``.
* World coordinates are millimetres in **LPS** (x grows to the patient's left, y to posterior, z to
  superior). Slicer shows RAS: ``ras = (-x, -y, z)``; every conversion takes ``coordinate_system``.
* ``world = origin + direction @ (spacing * index)``: the columns of ``direction`` are the unit vectors of
  the index axes in LPS. Oblique images (non-diagonal direction) are handled exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from PASegLib.utils.checks import check_spacing

COORDINATE_SYSTEMS = ("LPS", "RAS")
_LPS_RAS_FLIP = np.array([-1.0, -1.0, 1.0])


def _check_coordinate_system(coordinate_system: str) -> str:
    cs = str(coordinate_system).upper()
    if cs not in COORDINATE_SYSTEMS:
        raise ValueError(f"coordinate_system must be 'LPS' or 'RAS', got {coordinate_system!r}")
    return cs


def lps_to_ras(points: Any) -> np.ndarray:
    """Convert points ``(..., 3)`` between LPS and RAS (the conversion is its own inverse)."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.shape[-1:] != (3,):
        raise ValueError(f"points must have shape (..., 3), got {arr.shape}")
    return arr * _LPS_RAS_FLIP


ras_to_lps = lps_to_ras


@dataclass(frozen=True)
class ImageGeometry:
    """Geometry of a 3D image.

    Attributes:
        shape: number of voxels along index axes ``(I, J, K)``.
        spacing: voxel size in mm along each index axis.
        origin: LPS position (mm) of the centre of voxel ``(0, 0, 0)``.
        direction: 3×3 direction cosines, row-major (ITK order); column ``a`` is index axis ``a`` in LPS.
    """

    shape: Tuple[int, int, int]
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: Tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be three positive integers (I, J, K), got {self.shape!r}")
        spacing = check_spacing(self.spacing)
        origin = tuple(float(o) for o in self.origin)
        if len(origin) != 3 or not all(np.isfinite(origin)):
            raise ValueError(f"origin must be three finite numbers (mm), got {self.origin!r}")
        direction = tuple(float(d) for d in np.asarray(self.direction, dtype=np.float64).ravel())
        if len(direction) != 9:
            raise ValueError(f"direction must hold 9 values (3×3 row-major), got {len(direction)}")
        matrix = np.array(direction).reshape(3, 3)
        if not np.allclose(matrix.T @ matrix, np.eye(3), atol=1e-4):
            raise ValueError(f"direction must be orthonormal, got {np.round(matrix, 6).tolist()}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    # -- matrices ---------------------------------------------------------------------------------------
    @property
    def direction_matrix(self) -> np.ndarray:
        """Direction cosines as a 3×3 array (columns = index axes in LPS)."""
        return np.array(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def index_to_lps_matrix(self) -> np.ndarray:
        """4×4 homogeneous matrix mapping ``(i, j, k, 1)`` to ``(L, P, S, 1)`` in mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        m[:3, 3] = self.origin
        return m

    @property
    def index_to_ras_matrix(self) -> np.ndarray:
        """4×4 homogeneous matrix mapping ``(i, j, k, 1)`` to ``(R, A, S, 1)`` in mm (Slicer's IJKToRAS)."""
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        return flip @ self.index_to_lps_matrix

    # -- conversions -------------------------------------------------------------------------------------
    def index_to_world(self, index: Any, *, coordinate_system: str = "LPS") -> np.ndarray:
        """Map continuous indices ``(..., 3)`` in ``[i, j, k]`` order to world mm ``(..., 3)``."""
        cs = _check_coordinate_system(coordinate_system)
        idx = np.asarray(index, dtype=np.float64)
        if idx.shape[-1:] != (3,):
            raise ValueError(f"index must have shape (..., 3), got {idx.shape}")
        lps = idx @ (self.direction_matrix * np.asarray(self.spacing)[None, :]).T + np.asarray(self.origin)
        return lps if cs == "LPS" else lps_to_ras(lps)

    def world_to_index(self, points: Any, *, coordinate_system: str = "LPS") -> np.ndarray:
        """Map world points ``(..., 3)`` in mm to continuous indices ``(..., 3)`` (not rounded)."""
        cs = _check_coordinate_system(coordinate_system)
        pts = np.asarray(points, dtype=np.float64)
        if pts.shape[-1:] != (3,):
            raise ValueError(f"points must have shape (..., 3), got {pts.shape}")
        lps = pts if cs == "LPS" else ras_to_lps(pts)
        # direction is orthonormal, so its inverse is its transpose.
        return ((lps - np.asarray(self.origin)) @ self.direction_matrix) / np.asarray(self.spacing)

    def world_to_voxel(self, points: Any, *, coordinate_system: str = "LPS") -> np.ndarray:
        """Map world points ``(..., 3)`` to the integer index ``(..., 3)`` of the voxel containing them."""
        return np.rint(self.world_to_index(points, coordinate_system=coordinate_system)).astype(np.int64)

    def contains_index(self, index: Any) -> np.ndarray:
        """Whether integer or continuous indices ``(..., 3)`` fall inside the image (voxel extent ±0.5)."""
        idx = np.asarray(index, dtype=np.float64)
        upper = np.asarray(self.shape, dtype=np.float64) - 0.5
        return np.all((idx >= -0.5) & (idx < upper), axis=-1)

    # -- comparisons and serialisation --------------------------------------------------------------------
    def mismatch(self, other: ImageGeometry, *, atol_mm: float = 1e-3, atol_direction: float = 1e-4) -> str:
        """Describe how ``other`` differs from this geometry; an empty string when they match."""
        if self.shape != other.shape:
            return f"shape {other.shape} != {self.shape}"
        if not np.allclose(self.spacing, other.spacing, atol=atol_mm):
            return f"spacing {other.spacing} != {self.spacing}"
        if not np.allclose(self.origin, other.origin, atol=atol_mm):
            return f"origin {other.origin} != {self.origin}"
        if not np.allclose(self.direction, other.direction, atol=atol_direction):
            return f"direction {np.round(other.direction, 4).tolist()} != {np.round(self.direction, 4).tolist()}"
        return ""

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable dictionary."""
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> ImageGeometry:
        """Inverse of :meth:`to_dict`."""
        return cls(
            shape=tuple(data["shape"]),
            spacing=tuple(data["spacing"]),
            origin=tuple(data["origin"]),
            direction=tuple(data["direction"]),
        )

    def with_shape(self, shape: Sequence[int]) -> ImageGeometry:
        """Same spacing/origin/direction with another ``shape``."""
        return ImageGeometry(tuple(shape), self.spacing, self.origin, self.direction)
