"""Input checks shared by every loss of :mod:`PASegLib.losses`, and the argument vocabulary they check.

Every loss names its tensor arguments from one vocabulary. Tensors are batch first, channels second; the
spatial axes of a volume are ``I, J, K`` in ITK index order ``[i, j, k]`` (units: voxels of that grid):

* ``logits`` — raw network outputs ``[B, C, I, J, K]``, floating point (float16/bfloat16 under autocast are
  computed in float32, float64 is kept). A softmax over the channel axis ``C`` turns them into
  probabilities, so ``C >= 2`` (PA-Seg: ``C = 2``, background and foreground) unless a loss says otherwise.
  The partial, variance and distillation losses take any number of spatial axes, ``[B, C, *spatial]``.
  Several networks' outputs are ``student_logits``, ``teacher_logits``, ``self_teacher_logits`` and
  ``cross_teacher_logits``, each the same shape.
* ``labels`` — partial label map ``[B, 1, *spatial]`` of class indices ``0 … C-1`` and ``ignore_index`` for
  unlabeled voxels, integer or integral floating dtype. ``pseudo_label`` is a dense label map of the same
  shape (every voxel a class index, e.g. the argmax of a frozen network).
* ``valid`` — optional mask ``[B, 1, *spatial]`` of the voxels that count (bool, integer or float; non-zero =
  valid); ``None`` means every voxel. Voxels outside it are e.g. padding added by a data loader.
* ``image`` — intensities ``[B, Ch, *spatial]`` on the grid of ``logits`` (normalised, e.g. z-scored; a
  loss's intensity bandwidths are in these units); losses never differentiate through it.
* ``points`` — the extreme-point heatmap ``[B, 1, I, J, K]`` (values in ``[0, 1]``).
* ``boxes`` — per sample a sequence of inclusive voxel boxes ``(lo, hi)``, each ``[i, j, k]``.

Each check raises ``ValueError`` before any arithmetic, naming the argument, the shape (or type, dtype or
value) it got and what was expected. Option checks (bandwidths, weights, temperatures) stay with each loss.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch

from PASegLib.utils.checks import check_numbers

__all__ = [
    "Box",
    "check_boxes",
    "check_label_values",
    "check_logits",
    "check_map",
    "check_same_shape",
    "check_tensor",
    "check_valid",
]

Box = Tuple[Tuple[int, int, int], Tuple[int, int, int]]


def _describe(value: object) -> str:
    """``shape (…)`` of a tensor, else its type (and shape, e.g. of a numpy array)."""
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}"
    shape = getattr(value, "shape", None)
    kind = type(value).__name__
    return kind if shape is None else f"{kind} of shape {tuple(shape)}"


def _got(value: object) -> str:
    """``(…)`` of a tensor's shape, else as :func:`_describe`."""
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else _describe(value)


def _layout(channel: str, spatial_dims: Optional[int], min_spatial_dims: int) -> str:
    if spatial_dims == 3:
        return f"[B, {channel}, I, J, K]"
    if spatial_dims is not None:
        return f"[B, {channel}, *spatial] with {spatial_dims} spatial axes"
    if min_spatial_dims > 0:
        axes = "axis" if min_spatial_dims == 1 else "axes"
        return f"[B, {channel}, *spatial] with >= {min_spatial_dims} spatial {axes}"
    return f"[B, {channel}, *spatial]"


def check_tensor(
    name: str,
    value: Any,
    *,
    spatial_dims: Optional[int] = 3,
    min_spatial_dims: int = 1,
    channel: str = "C",
    min_channels: int = 1,
    channels_note: str = "",
    floating: bool = True,
) -> None:
    """``value`` must be a (floating-point) tensor ``[B, channel, *spatial]`` with ``>= min_channels`` channels.

    Args:
        name: the argument's name, for the message.
        value: the argument.
        spatial_dims: exact number of spatial axes (3: ``I, J, K``), or ``None`` for any number
            ``>= min_spatial_dims``.
        min_spatial_dims: with ``spatial_dims=None``, the fewest spatial axes accepted.
        channel: the channel axis' symbol in messages (``"C"`` for logits, ``"Ch"`` for an image).
        min_channels: the fewest channels accepted.
        channels_note: why ``min_channels`` (e.g. ``"softmax logits"``), added to that message.
        floating: require a floating-point dtype.

    Raises:
        ValueError: ``"<name> must be a floating-point tensor [B, C, I, J, K], got shape (2, 6, 6, 6)"``,
            ``"<name> must have C >= 2 channels (softmax logits), got C=1 in shape (1, 1, 6, 6, 6)"``.
    """
    layout = _layout(channel, spatial_dims, min_spatial_dims)
    kind = "a floating-point tensor" if floating else "a tensor"
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be {kind} {layout}, got {_describe(value)}")
    ndim_ok = value.ndim == 2 + spatial_dims if spatial_dims is not None else value.ndim >= 2 + min_spatial_dims
    if not ndim_ok:
        raise ValueError(f"{name} must be {kind} {layout}, got {_describe(value)}")
    if floating and not value.is_floating_point():
        raise ValueError(f"{name} must be {kind} {layout}, got dtype {value.dtype} of {_describe(value)}")
    if value.shape[1] < min_channels:
        note = f" ({channels_note})" if channels_note else ""
        raise ValueError(f"{name} must have {channel} >= {min_channels} channels{note}, got "
                         f"{channel}={value.shape[1]} in {_describe(value)}")


def check_logits(
    logits: Any,
    *,
    name: str = "logits",
    spatial_dims: Optional[int] = 3,
    min_spatial_dims: int = 1,
    min_channels: int = 2,
    channels_note: str = "softmax logits",
) -> None:
    """``logits`` must be floating point ``[B, C, I, J, K]`` (or ``[B, C, *spatial]``) with ``C >= min_channels``.

    Arguments as :func:`check_tensor`; ``name`` names other networks' outputs (``"student_logits"``, …).
    """
    check_tensor(name, logits, spatial_dims=spatial_dims, min_spatial_dims=min_spatial_dims, channel="C",
                 min_channels=min_channels, channels_note=channels_note)


def check_map(
    name: str,
    value: Any,
    like: torch.Tensor,
    *,
    like_name: str = "logits",
    channels: Optional[int] = 1,
    floating: bool = False,
) -> None:
    """``value`` must be ``[B, channels, *spatial]`` on the grid of ``like`` ``[B, C, *spatial]`` (checked before).

    Args:
        name: the argument's name (``"labels"``, ``"image"``, ``"points"``, …).
        value: the argument.
        like: the reference tensor (usually the logits) giving ``B`` and ``*spatial``.
        like_name: its name, for the message.
        channels: the required channel count, or ``None`` for any ``Ch >= 1`` (a multi-channel image).
        floating: require a floating-point dtype as well.

    Raises:
        ValueError: ``"valid must have shape (1, 1, 6, 6, 6), one channel on the grid of logits
            (1, 2, 6, 6, 6); got (1, 6, 6, 6)"``.
    """
    batch, spatial = like.shape[0], tuple(like.shape[2:])
    if channels is None:
        ok = (isinstance(value, torch.Tensor) and value.ndim == like.ndim and value.shape[0] == batch
              and tuple(value.shape[2:]) == spatial and value.shape[1] >= 1)
        expected = "(" + ", ".join([str(batch), "Ch", *map(str, spatial)]) + ")"
        what = "Ch >= 1 channels"
    else:
        ok = isinstance(value, torch.Tensor) and tuple(value.shape) == (batch, channels, *spatial)
        expected = str((batch, channels, *spatial))
        what = "one channel" if channels == 1 else f"{channels} channels"
    if not ok:
        raise ValueError(f"{name} must have shape {expected}, {what} on the grid of {like_name} "
                         f"{tuple(like.shape)}; got {_got(value)}")
    if floating and not value.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {value.dtype}")


def check_valid(valid: Any, like: torch.Tensor, *, like_name: str = "logits") -> None:
    """``valid`` must be ``None`` or ``[B, 1, *spatial]`` on the grid of ``like`` (any dtype; non-zero = valid)."""
    if valid is not None:
        check_map("valid", valid, like, like_name=like_name)


def check_same_shape(name: str, value: Any, like: torch.Tensor, *, like_name: str) -> None:
    """``value`` must have exactly the shape of ``like`` (e.g. a teacher's logits and the student's)."""
    if not isinstance(value, torch.Tensor) or value.shape != like.shape:
        raise ValueError(f"{name} must have shape {tuple(like.shape)}, the shape of {like_name}; "
                         f"got {_got(value)}")


def check_label_values(labels: torch.Tensor, *, n_classes: int, ignore_index: int, name: str = "labels") -> None:
    """Every value of ``labels`` must be a class index ``0 … n_classes-1`` or ``ignore_index`` (an integral
    value for a floating dtype). Costs one device sync."""
    with torch.no_grad():
        t = labels.detach()
        ok = (t == ignore_index) | ((t >= 0) & (t < n_classes))
        if t.is_floating_point():
            ok &= t == torch.round(t)
        if not bool(ok.all()):
            bad = torch.unique(t[~ok])[:5].tolist()
            raise ValueError(f"{name} holds values {bad} outside {{0..{n_classes - 1}}} ∪ "
                             f"{{ignore_index={ignore_index}}}")


def check_boxes(boxes: Any, batch: int) -> List[List[Box]]:
    """``boxes`` as ``batch`` lists of ``((lo_i, lo_j, lo_k), (hi_i, hi_j, hi_k))`` int tuples (inclusive voxel
    indices), checked: one (possibly empty) sequence of ``(lo, hi)`` pairs per sample, ``lo <= hi``."""
    if isinstance(boxes, (str, bytes)) or not hasattr(boxes, "__len__") or not hasattr(boxes, "__iter__"):
        raise ValueError(f"boxes must be a sequence of length B={batch} (one list of (lo, hi) per sample), "
                         f"got {type(boxes).__name__}")
    if len(boxes) != batch:
        raise ValueError(f"boxes must have one entry per sample: expected B={batch}, got {len(boxes)}")
    parsed: List[List[Box]] = []
    for b, sample in enumerate(boxes):
        try:
            items = list(sample)
        except TypeError:
            raise ValueError(f"boxes[{b}] must be a sequence of (lo, hi) boxes, got {sample!r}") from None
        out = []
        for n, box in enumerate(items):
            try:
                pair = tuple(box)
            except TypeError:
                pair = ()
            if len(pair) != 2:
                raise ValueError(f"boxes[{b}][{n}] must be a pair (lo, hi), got {box!r}")
            lo = check_numbers(f"boxes[{b}][{n}] lo", pair[0], length=3, cast=int)
            hi = check_numbers(f"boxes[{b}][{n}] hi", pair[1], length=3, cast=int)
            if any(low > high for low, high in zip(lo, hi)):
                raise ValueError(f"boxes[{b}][{n}] must have lo <= hi on every axis, got lo={lo}, hi={hi}")
            out.append((lo, hi))
        parsed.append(out)
    return parsed
