"""PNG previews: three orthogonal planes through a point, with label overlays (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from PASegLib.image.geometry import ImageGeometry
from PASegLib.utils.atomic import PathLike, atomic_path

#: Overlay colours (RGBA) of the partial label values: background green, foreground red (as the paper's Fig. 1).
PARTIAL_COLORS: Dict[int, Tuple[float, float, float, float]] = {0: (0.1, 0.8, 0.2, 0.35), 1: (1.0, 0.15, 0.1, 0.55)}


def _planes(point: Sequence[int]) -> Sequence[Tuple[str, int, Tuple[int, int]]]:
    i, j, k = (int(v) for v in point)
    # (title, axis held fixed, index) — each plane is shown with its two remaining axes.
    return [(f"k = {k} (axial)", 2, (0, 1)), (f"j = {j} (coronal)", 1, (0, 2)), (f"i = {i} (sagittal)", 0, (1, 2))]


def _slice(arr: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(arr, index, axis=axis)


def _overlay(labels: np.ndarray, colors: Dict[int, Tuple[float, float, float, float]]) -> np.ndarray:
    rgba = np.zeros(labels.shape + (4,), dtype=np.float32)
    for value, color in colors.items():
        rgba[labels == value] = color
    return rgba


def write_preview(
    path: PathLike,
    image: np.ndarray,
    geometry: ImageGeometry,
    *,
    point: Sequence[int],
    labels: Optional[np.ndarray] = None,
    label_colors: Dict[int, Tuple[float, float, float, float]] = PARTIAL_COLORS,
    contour: Optional[np.ndarray] = None,
    clicks: Optional[np.ndarray] = None,
    title: str = "",
) -> Path:
    """Write a PNG with the three planes through voxel ``point`` (``[i, j, k]``) of ``image`` ``[i, j, k]``.

    Args:
        labels: optional label map ``[i, j, k]`` drawn with ``label_colors`` (value → RGBA; others transparent).
        contour: optional binary mask ``[i, j, k]`` drawn as a yellow contour (e.g. the ground truth).
        clicks: optional voxel indices ``(N, 3)`` drawn as crosses where they lie within one voxel of a plane.
        title: figure title.

    Planes are displayed with the physical aspect ratio of ``geometry.spacing`` (index axes, not anatomy).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, [1, 99.5])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, (name, axis, (a, b)) in zip(axes, _planes(point)):
        index = int(point[axis])
        ax.imshow(_slice(img, axis, index).T, cmap="gray", vmin=lo, vmax=hi, origin="lower",
                  aspect=geometry.spacing[b] / geometry.spacing[a], interpolation="nearest")  # fmt: skip
        if labels is not None:
            ax.imshow(_overlay(_slice(labels, axis, index).T, label_colors), origin="lower",
                      aspect=geometry.spacing[b] / geometry.spacing[a], interpolation="nearest")  # fmt: skip
        if contour is not None:
            plane = _slice(np.asarray(contour) > 0, axis, index).T.astype(float)
            if plane.any() and not plane.all():
                ax.contour(plane, levels=[0.5], colors="yellow", linewidths=0.8)
        if clicks is not None and len(clicks):
            near = np.abs(np.asarray(clicks)[:, axis] - index) <= 1
            pts = np.asarray(clicks)[near]
            ax.scatter(pts[:, a], pts[:, b], marker="x", c="cyan", s=40, linewidths=1.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"index {'ijk'[a]}")
        ax.set_ylabel(f"index {'ijk'[b]}")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(path)
