"""Random-walker pseudo labels: the extreme-point protocol of "Going to Extremes" and a bounding-box protocol.

Roth et al., "Going to Extremes: Weakly Supervised Medical Image Segmentation" (MAKE 2021):

* §2.2 — six extreme clicks → foreground "scribbles": the minimum-cost (Dijkstra) path between the two
  extreme points of each axis on the cost ``|∇I|`` (Eq. 1), dilated by a ball (paper: r = 2 voxels); the
  random walker (Grady 2006, β = 130) turns the scribbles and background seeds into a probability map, the
  pseudo label: :func:`extreme_point_scribbles`,
  :func:`~PASegLib.seeds.random_walker_labels.extreme_points_pseudo_label`;
* §2.4 — regularisation of a network's prediction: the prediction eroded by a ball (paper: r = 4 voxels) gives
  the foreground seeds, its eroded complement the background seeds, the random walker fills the band between
  them: :func:`~PASegLib.seeds.random_walker_labels.refine_with_random_walker`;
* a bounding-box protocol (a loose box around the object): a small central ellipsoid of the box is foreground,
  the voxels outside the box background: :func:`~PASegLib.seeds.random_walker_labels.box_pseudo_label`.

All arrays are ``[i, j, k]`` voxel-index order; ``spacing`` is the voxel size in **mm** along i, j, k, and every
radius or margin of :class:`RandomWalkerConfig` is in mm (converted per axis, so anisotropic voxels get
ellipsoidal balls). Every function works on a crop around the object (the random walker's cost grows with the
crop's voxel count) and returns labels for the whole image: uint8, 0 = background, 1 = foreground.

The random walker is scikit-image's :func:`skimage.segmentation.random_walker`; the shortest paths use
:class:`skimage.graph.MCP_Geometric`; the morphology uses Euclidean distance transforms (exact balls in mm).
See :func:`random_walker_probability` for how scikit-image scales β and how the intensities are normalised.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from PASegLib.seeds.masks import (
    box_slices,
    check_image,
    check_index,
    check_mask,
    dilate_mask,
)
from PASegLib.utils.checks import check_spacing, dataclass_from_dict

BACKGROUND, FOREGROUND = 0, 1
MODES = ("cg_j", "cg", "bf", "cg_mg")
PATH_SIGMA_VOXELS = 1.0  # Gaussian pre-smoothing of the path cost's image (voxels), see extreme_point_scribbles

LabelsOrPair = Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RandomWalkerConfig:
    """Parameters of the random-walker pseudo labels.

    Attributes:
        beta: random-walker β; larger = edges stop the diffusion more. Its effective scale is explained in
            :func:`random_walker_probability`. The paper (and scikit-image) use 130; 500 is PASeg's default,
            measured on the 2 mm working grid of la_heart training cases: extreme points mean Dice 0.70 (β 130)
            → 0.77 (β 500) on 5 cases; boxes (core 0.3) 0.61 → 0.68 on 4 cases.
        tol: relative tolerance of the conjugate-gradient solver.
        mode: scikit-image's solver: ``"cg_j"`` (conjugate gradient with a Jacobi preconditioner: the fastest
            that needs no extra package), ``"cg"``, ``"bf"`` (direct sparse LU: small crops only) or
            ``"cg_mg"`` (multigrid; needs pyamg, otherwise scikit-image warns and uses ``"cg_j"``).
        fg_radius_mm: radius (mm) of the ball that dilates the extreme-point paths into foreground scribbles.
            The paper uses 2 voxels; 2 mm is 2 voxels at 1 mm and 3.2 voxels at 0.625 mm.
        margin_mm: the random walker's crop is the object's box grown by this margin (mm) on every side
            (clipped to the image); the grown shell holds the background seeds.
        box_core_fraction: :func:`box_pseudo_label`'s foreground seeds: a central ellipsoid whose semi-axes
            are this fraction of the box's half-extents, in (0, 1]. 0.3: on 4 la_heart training cases (loose
            boxes, 2–10 mm margins) 0.15 seeds too little foreground (Dice 0.25–0.47, recall 0.1–0.3), 0.5 floods
            (precision 0.4), 0.3 gives Dice 0.55–0.76.
        refine_radius_mm: radius (mm) of the erosion ball of :func:`refine_with_random_walker`. The paper uses
            4 voxels; 4 mm is 4 voxels at 1 mm (6.4 at 0.625 mm).
        path_epsilon: ε of the path cost ``|∇I| + ε`` (normalised intensity per mm, see
            :func:`extreme_point_scribbles`): a per-mm length penalty that keeps the paths from wandering along
            flat regions; 0 = the paper's pure gradient cost (a tiny floor is kept so that no step is free).
        working_spacing_mm: callers (:mod:`PASegLib.seeds.pseudo_labels`, :mod:`PASegLib.pipeline.refine`) run
            the random walker on the image resampled to about this spacing (mm; never finer than the image) and
            bring its probability back by linear interpolation; ``None`` = the image's own grid. On la_heart
            (0.625 mm) a native crop of ~2 million voxels costs 5–16 s per object, the 2 mm crop 0.1–0.3 s, with
            a mean Dice against the label of 0.70 at 2 mm vs 0.64 native (5 cases).
        extreme_tolerance_mm: extreme points are clicked near, not exactly on, the object's extent: the training
            labels leave a shell this thick (mm) around the extreme points' box unlabeled instead of background
            (:mod:`PASegLib.seeds.pseudo_labels`, :mod:`PASegLib.pipeline.refine`); 2 mm = the simulated clicks'
            default jitter.
        click_error_mm: the expected error of a click (mm): the root-mean-square 3D distance between where a point
            was clicked and where it belongs, as :class:`~PASegLib.annotation.simulation.ClickSimulationConfig`'s
            ``click_noise_mm`` (give the same value when the clicks are simulated with noise); 0 = exact clicks
            (the behaviour before this setting, and the same cache keys). The labels then trust the clicked box
            less: the unlabeled shell around an extreme-point box or a box (:meth:`box_shell_mm`) grows by
            :attr:`click_margin_mm`, so that only voxels beyond it are background (also in the refinement), and
            the extreme points' random walker takes its background seeds outside the box grown by as much. A box
            keeps its random walker's seeds at the box (it is drawn loose around the object). Measured on the first
            6 la_heart cases by id (the protocols benchmark's training cases; clicks of seed 0 per case, 4 mm of
            Gaussian click noise, labels on the 2 mm working grid): extreme points mean label Dice 0.737 → 0.759 with
            ``click_error_mm`` 4, the share of object voxels labelled background 0.230 → 0.034; growing a box's
            seeds as well lowered its Dice 0.740 → 0.656 (its shell alone leaves its labels inside the box as they
            were); a margin of ``2 · click_error_mm`` instead of ``2 · click_error_mm / √3`` gave 0.744.
    """

    beta: float = 500.0
    tol: float = 1e-3
    mode: str = "cg_j"
    fg_radius_mm: float = 2.0
    margin_mm: float = 10.0
    box_core_fraction: float = 0.3
    refine_radius_mm: float = 4.0
    path_epsilon: float = 0.05
    working_spacing_mm: Optional[float] = 2.0
    extreme_tolerance_mm: float = 2.0
    click_error_mm: float = 0.0

    def __post_init__(self) -> None:
        if self.working_spacing_mm is not None and not (np.isfinite(float(self.working_spacing_mm))
                                                        and float(self.working_spacing_mm) > 0.0):
            raise ValueError(f"working_spacing_mm must be > 0 or null, got {self.working_spacing_mm!r}")
        if not float(self.beta) > 0.0:
            raise ValueError(f"beta must be > 0, got {self.beta!r}")
        if not 0.0 < float(self.tol) < 1.0:
            raise ValueError(f"tol must be in (0, 1), got {self.tol!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("fg_radius_mm", "margin_mm", "refine_radius_mm", "path_epsilon", "extreme_tolerance_mm",
                     "click_error_mm"):
            value = getattr(self, name)
            if not (np.isfinite(float(value)) and float(value) >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0.0 < float(self.box_core_fraction) <= 1.0:
            raise ValueError(f"box_core_fraction must be in (0, 1], got {self.box_core_fraction!r}")

    @property
    def click_margin_mm(self) -> float:
        """How far (mm) a box face set by clicks may lie inside the object's extent: ``2 · click_error_mm / √3``.

        A face of an extreme-point box (or of a box) is one click's coordinate along the face's axis. Gaussian
        clicks of RMS 3D error ``e`` err by ``σ = e / √3`` along each axis, so a face lies more than ``2σ`` inside
        the extent on 2.3 % of faces (the other half of the errors only loosen the box, which the random walker
        handles as it does a loose box); uniform clicks in a ball of radius ``e`` never err by more than
        ``e < 2e / √3``. 0 without click error."""
        return 2.0 * float(self.click_error_mm) / float(np.sqrt(3.0))

    def box_shell_mm(self, kind: str) -> float:
        """Thickness (mm) of the unlabeled shell left around the box of an object of annotation ``kind``:
        ``extreme_tolerance_mm + click_margin_mm`` for extreme points (clicked on the object's outermost voxels,
        up to the tolerance inside its extent, then displaced by the click error), ``click_margin_mm`` for a box
        (a loose box drawn around the object, displaced by the click error), 0 for the other kinds."""
        if kind == "extreme_points":
            return float(self.extreme_tolerance_mm) + self.click_margin_mm
        if kind == "box":
            return self.click_margin_mm
        return 0.0

    def to_dict(self) -> Dict[str, Any]:
        """The settings as a dict; ``click_error_mm`` only when it is not 0 (the dict hashed into the
        prepared-data cache key is then that of the versions before it, so their caches stay valid)."""
        out = asdict(self)
        if out["click_error_mm"] == 0:
            del out["click_error_mm"]
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> RandomWalkerConfig:
        return dataclass_from_dict(cls, data, "random-walker")


# --------------------------------------------------------------------------------------------------- checks


# --------------------------------------------------------------------------------------------------- helpers


def _robust_normalise(values: np.ndarray) -> np.ndarray:
    """float64 ``(values - median) / robust std``; robust std = IQR / 1.349 (the std if the IQR is 0, else 1)."""
    data = np.asarray(values, dtype=np.float64)
    q25, median, q75 = np.percentile(data, [25.0, 50.0, 75.0])
    scale = (q75 - q25) / 1.349
    if not scale > 0:
        scale = float(data.std())
    if not scale > 0:
        scale = 1.0
    return (data - median) / scale


def labels_and_probability(
    shape, crop: Tuple[slice, ...], prob: np.ndarray, keep: np.ndarray, return_probability: bool
) -> LabelsOrPair:
    """Whole-image uint8 labels (``prob >= 0.5`` where ``keep``, else 0) and, if asked, the float32 probability."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[crop] = ((prob >= 0.5) & keep).astype(np.uint8)
    if not return_probability:
        return labels
    full = np.zeros(shape, dtype=np.float32)
    full[crop] = prob
    return labels, full


# --------------------------------------------------------------------------------------------------- public API


def extreme_point_scribbles(
    image: np.ndarray,
    points: np.ndarray,
    *,
    spacing: Sequence[float],
    fg_radius_mm: float = RandomWalkerConfig.fg_radius_mm,
    path_epsilon: float = RandomWalkerConfig.path_epsilon,
) -> np.ndarray:
    """Foreground scribbles from six extreme points (paper §2.2, Eq. 1).

    For each pair of opposite extreme points the minimum-cost path between them is found with Dijkstra
    (:class:`skimage.graph.MCP_Geometric`, 26-connected, step lengths in mm) on the per-mm cost

        ``C = |∇ G_σ(Î)| + ε``,

    where ``Î`` is the image normalised by its robust std inside the points' box (so ε has a fixed meaning
    whatever the modality: ``|∇Î|`` ≈ 0 in flat regions, ≈ contrast / edge width at an edge), ``G_σ`` a Gaussian
    of σ = 1 voxel (noise would otherwise dominate the gradient), and the gradient is taken in physical units
    (``np.gradient`` with ``spacing``). The paths are restricted to the points' inclusive bounding box (the
    extreme points define the object's extent, nothing of it lies outside). The union of the three paths is
    dilated by a ball of ``fg_radius_mm`` (paper: 2 voxels), then clipped to the box.

    Args:
        image: ``[I, J, K]`` real intensities (the whole image; only the points' box is read).
        points: ``(6, 3)`` voxel indices ``[i, j, k]`` of the extreme points, in pairs: rows 0/1 are the two
            extremes along axis i, rows 2/3 along j, rows 4/5 along k (the order inside a pair is free). Real
            values are rounded to the nearest voxel.
        spacing: ``(3,)`` voxel size in mm along i, j, k.
        fg_radius_mm: dilation radius of the paths (mm, ≥ 0).
        path_epsilon: ε of the cost above (normalised intensity per mm, ≥ 0; a floor of 1e-6 is always added).

    Returns:
        bool ``[I, J, K]``: the scribbles (the six points and the paths between them included).
    """
    from scipy.ndimage import gaussian_filter
    from skimage.graph import MCP_Geometric

    arr = check_image(image)
    sp = np.asarray(check_spacing(spacing))
    pts = check_index(points, arr.shape, "points", rows=6)
    if not (np.isfinite(float(fg_radius_mm)) and float(fg_radius_mm) >= 0):
        raise ValueError(f"fg_radius_mm must be a finite number >= 0, got {fg_radius_mm!r}")
    if not (np.isfinite(float(path_epsilon)) and float(path_epsilon) >= 0):
        raise ValueError(f"path_epsilon must be a finite number >= 0, got {path_epsilon!r}")

    lo, hi = pts.min(axis=0), pts.max(axis=0)
    # Smooth on the box plus 3σ so that the box faces see their true neighbourhood.
    pad = int(np.ceil(3 * PATH_SIGMA_VOXELS))
    wlo, whi = np.maximum(lo - pad, 0), np.minimum(hi + pad, np.asarray(arr.shape) - 1)
    window = _robust_normalise(arr[box_slices(wlo, whi)])
    smooth = gaussian_filter(window, PATH_SIGMA_VOXELS, mode="nearest")
    smooth = smooth[box_slices(lo - wlo, hi - wlo)]
    if min(smooth.shape) > 1:
        grads = np.gradient(smooth, *sp)
    else:  # np.gradient needs >= 2 samples per axis: flat axes get a zero derivative
        grads = [
            np.gradient(smooth, s, axis=a) if n > 1 else np.zeros_like(smooth)
            for a, (s, n) in enumerate(zip(sp, smooth.shape))
        ]
    cost = np.sqrt(sum(g * g for g in grads)) + float(path_epsilon) + 1e-6

    paths = np.zeros(cost.shape, dtype=bool)
    mcp = MCP_Geometric(cost, fully_connected=True, sampling=tuple(sp))
    for a, b in ((0, 1), (2, 3), (4, 5)):
        start, end = tuple(int(v) for v in pts[a] - lo), tuple(int(v) for v in pts[b] - lo)
        mcp.find_costs([start], [end])
        route = np.asarray(mcp.traceback(end))
        paths[tuple(route.T)] = True

    scribbles = np.zeros(arr.shape, dtype=bool)
    scribbles[box_slices(lo, hi)] = dilate_mask(paths, float(fg_radius_mm), sp)  # a ball clipped to the box
    return scribbles


def random_walker_probability(
    image: np.ndarray,
    fg_seeds: np.ndarray,
    bg_seeds: np.ndarray,
    *,
    beta: float = RandomWalkerConfig.beta,
    tol: float = RandomWalkerConfig.tol,
    mode: str = RandomWalkerConfig.mode,
) -> np.ndarray:
    """Random-walker probability of the foreground on the whole given array (the caller crops).

    The intensities are first normalised to zero median and unit robust std (IQR / 1.349) over the array, then
    passed as float64 to :func:`skimage.segmentation.random_walker` (2 labels, ``return_full_prob=True``).

    scikit-image's scaling (0.21–0.25, read from its source): the edge weight between neighbours i, j is
    ``w_ij = exp(-β / (10 σ) · (z_i - z_j)²)``, where σ is the std of *all* the data it is given. β is divided
    by the data's std, not its variance, so the weights are *not* invariant to an intensity scaling c (the
    exponent scales by c); hence the normalisation here, after which the weights are invariant to any affine
    change of intensities. With σ ≈ 1 (roughly Gaussian crops; heavier tails give σ > 1 and softer edges) the
    exponent is ≈ ``-13 · Δz²`` for β = 130, Δz in robust-std units. (Integer inputs would also be rescaled by
    scikit-image's ``img_as_float``, e.g. uint8 / 255; the float conversion here avoids that.)

    No voxel spacing is passed to scikit-image, on purpose: its ``spacing`` divides the intensity difference by
    the spacing *inside* the exponential, which weakens every edge across thick slices (an intensity step is a
    full-contrast difference between neighbours whatever their distance). On a sphere imaged with 2.5 mm slices
    that made the box pseudo label leak through its flat faces (Dice 0.61 instead of 0.94). The weights here
    thus depend on neighbour differences only, as in the paper (scikit-image's default).

    Args:
        image: ``[I, J, K]`` real intensities.
        fg_seeds, bg_seeds: bool ``[I, J, K]`` foreground / background seeds (at least one each, disjoint).
        beta: β > 0.
        tol: conjugate-gradient relative tolerance in (0, 1).
        mode: one of ``MODES`` (``"cg_j"``: scikit-image's default and the fastest without pyamg).

    Returns:
        float32 ``[I, J, K]`` in [0, 1]: 1 on the foreground seeds, 0 on the background seeds. Unlabelled voxels
        cut off from every seed get 0.

    Raises:
        ValueError: no foreground or no background seed, overlapping seeds, bad shapes or parameters.
    """
    from skimage.segmentation import random_walker

    arr = check_image(image)
    fg = check_mask(fg_seeds, arr.shape, "fg_seeds")
    bg = check_mask(bg_seeds, arr.shape, "bg_seeds")
    if not fg.any():
        raise ValueError("random walker needs at least one foreground seed, fg_seeds is empty")
    if not bg.any():
        raise ValueError("random walker needs at least one background seed, bg_seeds is empty")
    overlap = int(np.count_nonzero(fg & bg))
    if overlap:
        raise ValueError(f"fg_seeds and bg_seeds overlap in {overlap} voxel(s)")
    if not float(beta) > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    if not 0.0 < float(tol) < 1.0:
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("image holds NaN or infinite values")

    if not (~(fg | bg)).any():  # every voxel is a seed: nothing to solve
        return fg.astype(np.float32)
    markers = np.zeros(arr.shape, dtype=np.int32)
    markers[bg] = 1
    markers[fg] = 2
    data = _robust_normalise(arr)
    with warnings.catch_warnings():
        # The solver's "probability outside [0, 1] within prob_tol" warning is about CG round-off; clipped below.
        warnings.filterwarnings("ignore", message="The probability range is outside")
        prob = random_walker(data, markers, beta=float(beta), mode=mode, tol=float(tol), return_full_prob=True)
    out = np.clip(prob[1], 0.0, 1.0).astype(np.float32)
    out[fg], out[bg] = 1.0, 0.0
    return out
