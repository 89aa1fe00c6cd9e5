"""PNG figures of the PASeg report: three planes through an object with its overlays, and learning curves.

matplotlib (its object API, no pyplot) is imported inside the functions: importing this module imports numpy only.

Case figure (:func:`write_case_figure`). Arrays are indexed ``[i, j, k]`` (ITK index order, see
:mod:`PASegLib`). The three panels are the planes through ``center``: axial = constant ``k`` (horizontal
axis ``i``, vertical ``j``), coronal = constant ``j`` (``i``, ``k``), sagittal = constant ``i`` (``j``,
``k``), drawn with ``origin="lower"`` and the physical aspect ratio of ``spacing`` (index axes, not
radiological orientation; the same convention as :mod:`PASegLib.seeds.preview`). Overlays, colours in
:data:`FIGURE_COLORS`:

* ground-truth ``label``: yellow contour;
* ``prediction``: red contour;
* expanded ``seeds`` (partial labels 0/1/2): cyan contour of the foreground (1) and a dashed cyan contour of
  the labelled-or-unlabeled box (``seeds != 0``, i.e. the 7-point box outside which all is background);
* clicks: foreground green ``+``, background magenta ``x``; solid on the planes they lie within
  ``click_tolerance`` voxels of, faint (projected) on the others.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from PASegLib.utils.atomic import PathLike, atomic_path
from PASegLib.utils.checks import check_number, check_spacing

__all__ = ["FIGURE_COLORS", "object_center", "write_case_figure", "write_learning_curve"]

#: Colours of the case-figure overlays (matplotlib colour strings).
FIGURE_COLORS: Dict[str, str] = {
    "label": "#ffd400",  # ground truth, solid yellow
    "prediction": "#ff2d2d",  # prediction, solid red
    "seeds": "#00d0ff",  # expanded foreground seeds (1), solid cyan; the box (1 ∪ 2) dashed cyan
    "click_fg": "#39ff14",  # foreground click, green +
    "click_bg": "#ff66ff",  # background clicks, magenta x
}
_PLANES = (("axial", 2, (0, 1)), ("coronal", 1, (0, 2)), ("sagittal", 0, (1, 2)))

History = Union[Mapping[str, Sequence[Any]], Sequence[Mapping[str, Any]]]


# -- validation ----------------------------------------------------------------------------------------------
def _volume(name: str, value: Any, shape: Optional[Tuple[int, ...]] = None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ValueError(f"{name} must be a non-empty 3D array indexed [i, j, k], got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} shape {arr.shape} != image shape {shape}")
    return arr


def _clicks(clicks_index: Any, click_labels: Any, shape: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    try:
        pts = np.asarray(clicks_index, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"clicks_index must be voxel indices of shape (N, 3), got {clicks_index!r}") from None
    if pts.size == 0:
        pts = np.zeros((0, 3))
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"clicks_index must be voxel indices of shape (N, 3), got shape {pts.shape}")
    for n, p in enumerate(pts):
        if not np.all(np.isfinite(p)) or np.any(p < -0.5) or np.any(p > np.asarray(shape) - 0.5):
            raise ValueError(f"clicks_index[{n}] = {tuple(p)} lies outside the image of shape {shape}")
    if click_labels is None:
        return pts, np.ones(len(pts), dtype=bool)
    labels = np.asarray(click_labels).ravel()
    if labels.shape != (len(pts),) or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"click_labels must hold {len(pts)} values 0 (background) / 1 (foreground), "
                         f"got {np.asarray(click_labels).tolist()!r}")
    return pts, labels.astype(bool)


def object_center(*masks: Optional[np.ndarray], fallback: Optional[Sequence[float]] = None,
                  shape: Optional[Tuple[int, ...]] = None) -> Tuple[int, int, int]:
    """Voxel ``(i, j, k)`` at the centre of the first non-empty mask of ``masks`` (``None`` entries skipped).

    The centre is the mask voxel nearest to the mask's centroid (so it lies inside non-convex objects).
    Without a non-empty mask: ``fallback`` rounded (e.g. the foreground click), else the centre of ``shape``.
    """
    for mask in masks:
        if mask is None:
            continue
        idx = np.argwhere(np.asarray(mask) != 0)
        if len(idx):
            nearest = idx[np.argmin(((idx - idx.mean(axis=0)) ** 2).sum(axis=1))]
            return tuple(int(v) for v in nearest)  # type: ignore[return-value]
    if fallback is not None:
        return tuple(int(round(float(v))) for v in fallback)  # type: ignore[return-value]
    if shape is None:
        raise ValueError("object_center needs a non-empty mask, a fallback point or a shape")
    return tuple(int(n) // 2 for n in shape)  # type: ignore[return-value]


def _crop_box(masks: List[np.ndarray], pts: np.ndarray, shape: Tuple[int, ...], spacing: Sequence[float],
              margin_mm: float) -> List[Tuple[float, float]]:
    lo, hi = np.asarray(shape, dtype=float) - 1, np.zeros(3)
    for mask in masks:
        idx = np.argwhere(mask)
        if len(idx):
            lo, hi = np.minimum(lo, idx.min(0)), np.maximum(hi, idx.max(0))
    if len(pts):
        lo, hi = np.minimum(lo, pts.min(0)), np.maximum(hi, pts.max(0))
    if np.any(lo > hi):  # nothing to frame: the whole image
        lo, hi = np.zeros(3), np.asarray(shape, dtype=float) - 1
    margin = margin_mm / np.asarray(spacing)
    return [(max(lo[a] - margin[a], 0) - 0.5, min(hi[a] + margin[a], shape[a] - 1) + 0.5) for a in range(3)]


# -- case figure ---------------------------------------------------------------------------------------------
def write_case_figure(
    path: PathLike,
    *,
    image: np.ndarray,
    spacing: Sequence[float],
    clicks_index: Optional[Any] = None,
    click_labels: Optional[Sequence[int]] = None,
    seeds: Optional[np.ndarray] = None,
    prediction: Optional[np.ndarray] = None,
    label: Optional[np.ndarray] = None,
    center: Optional[Sequence[int]] = None,
    title: str = "",
    crop_margin_mm: Optional[float] = None,
    click_tolerance: float = 1.0,
    dpi: int = 80,
) -> Path:
    """Write a PNG (``12 × 4.6`` inches at ``dpi``: 960 × 368 pixels by default) of the three planes.

    Args:
        path: output PNG, written atomically.
        image: intensities ``[i, j, k]``; shown in grey between its 1st and 99.5th percentiles.
        spacing: voxel size in mm along ``(i, j, k)`` (sets each panel's aspect ratio).
        clicks_index: voxel indices ``(N, 3)`` (``[i, j, k]``, may be fractional) of the clicks.
        click_labels: ``N`` values, 1 = foreground click, 0 = background; default: all foreground.
        seeds: expanded partial labels ``[i, j, k]`` (0 background, 1 foreground, 2 unlabeled).
        prediction, label: binary masks ``[i, j, k]`` (non-zero = object).
        center: voxel ``(i, j, k)`` the planes pass through; default :func:`object_center` of ``label``,
            ``prediction``, the foreground seeds, then the first foreground click.
        title: figure title (e.g. the case name and its Dice).
        crop_margin_mm: zoom each panel onto the box of all overlays and clicks grown by this margin (mm);
            ``None`` shows the whole planes.
        click_tolerance: a click is drawn solid on a plane within this many voxels of it (default 1).
        dpi: pixels per inch of the PNG.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: an input of the wrong shape (the message names it), seeds outside 0/1/2, clicks outside
            the image, or bad ``spacing``/``center``/``click_tolerance``/``crop_margin_mm``/``dpi``.
    """
    img = _volume("image", image).astype(np.float32)
    shape = img.shape
    sp = check_spacing(spacing)
    seeds_arr = None if seeds is None else _volume("seeds", seeds, shape)
    if seeds_arr is not None and not np.isin(seeds_arr, (0, 1, 2)).all():
        raise ValueError(f"seeds must hold partial labels 0/1/2, got values {np.unique(seeds_arr)[:8].tolist()}")
    pred = None if prediction is None else _volume("prediction", prediction, shape) != 0
    gt = None if label is None else _volume("label", label, shape) != 0
    pts, fg_click = _clicks(np.zeros((0, 3)) if clicks_index is None else clicks_index, click_labels, shape)
    check_number("click_tolerance", click_tolerance, minimum=0)
    if crop_margin_mm is not None and not (math.isfinite(crop_margin_mm) and crop_margin_mm >= 0):
        raise ValueError(f"crop_margin_mm must be None or a finite number >= 0 (mm), got {crop_margin_mm!r}")
    if int(dpi) < 10:
        raise ValueError(f"dpi must be >= 10, got {dpi!r}")
    seed_fg = None if seeds_arr is None else seeds_arr == 1
    if center is None:
        first_fg = pts[fg_click][0] if fg_click.any() else None
        center = object_center(gt, pred, seed_fg, fallback=first_fg, shape=shape)
    c = tuple(int(v) for v in np.asarray(center).ravel())
    if len(c) != 3 or any(not 0 <= v < n for v, n in zip(c, shape)):
        raise ValueError(f"center must be a voxel (i, j, k) inside the image of shape {shape}, got {center!r}")

    from matplotlib.figure import Figure  # no pyplot: no global backend state, safe off the main thread
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    lo, hi = (float(v) for v in np.percentile(img, [1, 99.5]))
    hi = hi if hi > lo else lo + 1.0
    contours = [(gt, FIGURE_COLORS["label"], "-", "label"), (pred, FIGURE_COLORS["prediction"], "-", "prediction"),
                (seed_fg, FIGURE_COLORS["seeds"], "-", "expanded seeds (foreground)"),
                (None if seeds_arr is None else seeds_arr != 0, FIGURE_COLORS["seeds"], "--", "seed box (unlabeled)")]
    box = None
    if crop_margin_mm is not None:
        box = _crop_box([m for m, *_ in contours if m is not None], pts, shape, sp, float(crop_margin_mm))
    fig = Figure(figsize=(12, 4.6))
    axes = fig.subplots(1, 3)
    for ax, (name, axis, (a, b)) in zip(axes, _PLANES):
        index = c[axis]
        ax.imshow(np.take(img, index, axis=axis).T, cmap="gray", vmin=lo, vmax=hi, origin="lower",
                  aspect=sp[b] / sp[a], interpolation="nearest")  # fmt: skip
        for mask, color, style, _ in contours:
            if mask is not None:
                plane = np.take(mask, index, axis=axis).T.astype(np.float32)
                if plane.any() and not plane.all() and min(plane.shape) >= 2:
                    ax.contour(plane, levels=[0.5], colors=[color], linewidths=1.2, linestyles=style)
        for fg, marker, key in ((True, "+", "click_fg"), (False, "x", "click_bg")):
            sel = pts[fg_click == fg]
            near = np.abs(sel[:, axis] - index) <= click_tolerance
            ax.scatter(sel[near, a], sel[near, b], marker=marker, c=FIGURE_COLORS[key], s=70, linewidths=2)
            ax.scatter(sel[~near, a], sel[~near, b], marker=marker, c=FIGURE_COLORS[key], s=35,
                       linewidths=1, alpha=0.4)  # fmt: skip
        if box is not None:
            ax.set_xlim(*box[a])
            ax.set_ylim(*box[b])
        ax.set_title(f"{name}: {'ijk'[axis]} = {index}", fontsize=9)
        ax.set_xlabel(f"index {'ijk'[a]}", fontsize=8)
        ax.set_ylabel(f"index {'ijk'[b]}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=col, ls=style, lw=1.5, label=text)
               for mask, col, style, text in contours if mask is not None]  # fmt: skip
    if len(pts):
        handles += [Line2D([], [], color=FIGURE_COLORS["click_fg"], marker="+", ls="", label="foreground click"),
                    Line2D([], [], color=FIGURE_COLORS["click_bg"], marker="x", ls="",
                           label="background click (faint: off-plane)")]  # fmt: skip
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.05, right=0.98, top=0.86 if title else 0.92, bottom=0.2, wspace=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=int(dpi), format="png")
    return Path(path)


# -- learning curves -----------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _flat(event: Mapping[str, Any]) -> Dict[str, Any]:
    """One level of nested dicts flattened: ``{"losses": {"kd": 0.1}}`` → ``{"losses.kd": 0.1}``."""
    out: Dict[str, Any] = {}
    for key, value in event.items():
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[str(key)] = value
    return out


def _series(history: History, x_key: str, event_name: Optional[str]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``name → (x, y)`` from a dict of lists or a list of event dicts (see :func:`write_learning_curve`)."""
    out: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    if isinstance(history, Mapping):
        n_x = len(history[x_key]) if x_key in history else None
        for key, values in history.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
                raise ValueError(f"history[{key!r}] must be a list of numbers, got {type(values).__name__}")
            if any(v is not None and not _is_number(v) for v in values):
                raise ValueError(f"history[{key!r}] must hold numbers (or None), got {list(values)[:5]!r}")
            if n_x is not None and len(values) != n_x:
                raise ValueError(f"history[{key!r}] has {len(values)} values but history[{x_key!r}] has {n_x}")
            if key == x_key:
                continue
            y = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
            x = np.asarray(history[x_key], dtype=np.float64) if n_x is not None else np.arange(1, len(y) + 1.0)
            out[str(key)] = (x, y)
        return out
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise ValueError(f"history must be a dict of lists or a list of event dicts, got {type(history).__name__}")
    points: Dict[str, List[Tuple[float, float]]] = {}
    for n, event in enumerate(history):
        if not isinstance(event, Mapping):
            raise ValueError(f"history[{n}] must be a dict (an event), got {type(event).__name__}")
        if event_name is not None and event.get("event") != event_name:
            continue
        event = _flat(event)
        x = float(event[x_key]) if _is_number(event.get(x_key)) else float(n + 1)
        for key, value in event.items():
            if key != x_key and _is_number(value):
                points.setdefault(str(key), []).append((x, float(value)))
    for key, xy in points.items():
        arr = np.asarray(xy, dtype=np.float64)
        out[key] = (arr[:, 0], arr[:, 1])
    return out


def write_learning_curve(
    path: PathLike,
    history: History,
    *,
    keys: Optional[Sequence[str]] = None,
    x_key: str = "epoch",
    event: Optional[str] = None,
    title: str = "",
    ylabel: str = "",
    log_y: bool = False,
    dpi: int = 80,
) -> Path:
    """Write a PNG (``7 × 4`` inches at ``dpi``: 560 × 320 pixels by default) of one or more curves.

    Args:
        path: output PNG, written atomically.
        history: either ``{name: [value per epoch, ...]}`` (``None`` = missing; ``history[x_key]``, when
            present, gives the x values of every list, else 1, 2, …) or a list of event dicts such as
            ``{"epoch": 3, "loss": 0.41, "kd": 0.02}`` (the trainer's :mod:`PASegLib.jobs.events`):
            every numeric entry except ``x_key`` is a series, its x is the event's ``x_key`` (else its
            1-based position in the list); nested dicts are flattened one level (``{"losses": {"kd": …}}``
            gives the series ``"losses.kd"``); booleans and strings are ignored.
        keys: the series to draw (default: all, in first-seen order).
        x_key: name of the x variable (default ``"epoch"``), also the x-axis label.
        event: with a list of events, keep only those whose ``"event"`` field equals this (e.g.
            ``"validation"``); ignored for a dict of lists.
        title, ylabel: figure title and y-axis label.
        log_y: logarithmic y axis (non-positive values are not drawn).
        dpi: pixels per inch.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: empty history, non-numeric values, lists of different length than ``history[x_key]``,
            a requested key that is absent, or no numeric series at all.
    """
    if history is None or len(history) == 0:
        raise ValueError("history is empty: nothing to plot")
    series = _series(history, x_key, event)
    if keys is not None:
        missing = [k for k in keys if k not in series]
        if missing:
            raise ValueError(f"keys {missing} are not numeric series of history; it has {sorted(series)}")
        series = {k: series[k] for k in keys}
    if not series:
        raise ValueError("history holds no numeric series to plot")
    if int(dpi) < 10:
        raise ValueError(f"dpi must be >= 10, got {dpi!r}")

    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o" if len(y) <= 30 else None, ms=3, lw=1.4, label=name)
    if log_y:
        ax.set_yscale("log")
    if all(np.all(x == np.round(x)) for x, _ in series.values()):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(x_key)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=int(dpi), format="png")
    return Path(path)
