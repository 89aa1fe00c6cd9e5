"""The windowed bilateral Potts energy behind the multi-view CRF loss (:mod:`PASegLib.losses.crf`), and its gradient.

For probabilities ``p`` ``[B, C, I, J, K]``, features ``f`` ``[B, Ch, I, J, K]`` and an optional valid mask ``v``
``[B, 1, I, J, K]`` (1 = valid, 0 = not), :func:`bilateral_potts_energy` returns

    ``scale · Σ_c Σ_i Σ_{j ∈ W(i)} w_ij K_ij p_{c,i} (1 − p_{c,j}) v_i v_j / max(Σ v, 1)``

(``Σ v = B·I·J·K`` without a mask) with ``K_ij = exp(−|f_i − f_j|² − |x_i − x_j|² / (2 σ_xy²))``: the features
are already divided by ``√2 σ_I``, ``x`` are voxel coordinates. ``W(i)`` is the union over the views (planes
spanned by two spatial axes, :data:`VIEW_AXES`) of the square ``(2r + 1)²`` window around ``i`` in that plane,
without ``i``; ``w_ij`` = (number of views whose window holds the offset ``j − i``) / (number of views), so the
energy is the mean of the views' energies. Every ordered pair counts.

With ``q = 1 − 2p`` and symmetric ``K``: ``Σ_ij K_ij p_i (1 − p_j) = (Σ_ij K_ij − qᵀ K q) / 4`` (the terms linear in
``q`` cancel) and ``∂/∂p = K q`` (``= F − 2 G`` with ``F = K·1``, ``G = K·p``), so the gradient is kept from the
forward pass (no double backward). The offsets run over half of each window (one of ``±o``; an offset along one
axis, which lies in two views, in one of them with both weights), in one of two ways with the same value and
gradient to float rounding (``compute_mode``):

* ``"per_offset"`` — one step per offset: ``K`` of every pair with that offset, from whole-volume shifted slices,
  is computed once and ``K q`` added at both voxels of each pair. About 1,500 operations per forward + backward
  at ``r = 5`` and three views, temporaries of one offset: memory ``O(N·C)`` (about 8 values per voxel), cache
  resident, the fastest on a CPU.
* ``"chunked"`` — chunks of whole window rows (at most :data:`CHUNK_OFFSETS` offsets, at least one row), each run
  for its offsets ``o`` and their mirror ``−o``: seven whole-chunk operations on strided views of zero-padded
  copies compute ``K`` at every voxel ``x`` for the pairs ``(x, x ± o)`` (each pair's ``K`` twice, bit for bit the
  same) and add ``K·[q v, v]`` at ``x``. A call launches a fixed number of kernels whatever the size (about 160
  forward + backward for the paper's mCRF, ``r = 5``, three views, with the resampling and the softmax); memory
  ``O(N·C)`` plus ``(C + 2)·N`` values per offset of a chunk (``benchmarks/bench_crf.py``: 61 MB instead of
  6.5 MB on the official 64×64×48 grid). For GPUs, where each launch costs several microseconds; 2–3× slower
  than ``per_offset`` on a CPU.
* ``"auto"`` — ``"per_offset"`` on the CPU, ``"chunked"`` on any other device.

Arithmetic is in the dtype of ``prob`` (the caller passes float32 or float64); the kernel sum and ``qᵀKq`` are
reduced in float64, so the value is exact to ~1e-7 of ``Σ K`` (0 for hard uniform labels) and the gradient to
float rounding. Kernel values below ``e^-60`` are computed as ``e^-60`` (avoids slow denormal arithmetic). No
host synchronisation: the per-offset constants are created once per device, dtype and setting.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from PASegLib.losses.inputs import check_logits, check_map, check_valid
from PASegLib.utils.checks import check_int, check_number

__all__ = ["CHUNK_OFFSETS", "COMPUTE_MODES", "VIEW_AXES", "bilateral_potts_energy", "resolve_compute_mode"]

#: spatial axes (0 = i, 1 = j, 2 = k) spanning the 2D slices of each view
VIEW_AXES: Dict[str, Tuple[int, int]] = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}
#: ways to compute the energy (see the module docstring)
COMPUTE_MODES = ("auto", "per_offset", "chunked")
#: most window offsets per chunk of ``compute_mode="chunked"`` (whole rows of ``2r + 1``, at least one row); at
#: ``r = 5`` two rows, so three chunks per view. Launches per call ∝ 1 / CHUNK_OFFSETS, memory ∝ CHUNK_OFFSETS.
CHUNK_OFFSETS = 24
# Denormal floats are ~10-100x slower on x86: exp() of arguments below about -87 yields them, and so would
# K·q with K tiny. K < e^-60 ≈ 9e-27 is therefore computed as e^-60; as q = 1 − 2p is 0 or >= 6e-8 in
# magnitude in float32, every product stays a normal float. The error (< 1e-26 per pair) is immaterial.
_MIN_LOG_KERNEL = -60.0

Offset = Tuple[int, int, int]


class _ViewWindow(NamedTuple):
    """The half-window offsets one view evaluates: rows ``da = first_row … r`` along spatial axis ``axes[0]``,
    columns ``db = −r … r`` along ``axes[1]``; ``log_weights[da − first_row][db + r]`` is log(weight) −
    ``|offset|² / (2 σ_xy²)``, or ``-inf`` for an offset evaluated elsewhere or outside the half window."""

    axes: Tuple[int, int]
    first_row: int
    chunks: Tuple[Tuple[int, int], ...]  # (first row, rows) of each chunk
    log_weights: Tuple[Tuple[float, ...], ...]


def resolve_compute_mode(compute_mode: str, device: torch.device) -> str:
    """``"per_offset"`` or ``"chunked"``: ``compute_mode`` itself, or for ``"auto"`` the one for ``device``."""
    if compute_mode not in COMPUTE_MODES:
        raise ValueError(f"compute_mode must be one of {COMPUTE_MODES}, got {compute_mode!r}")
    if compute_mode == "auto":
        return "per_offset" if torch.device(device).type == "cpu" else "chunked"
    return compute_mode


def _canonical(offset: Sequence[int]) -> Offset:
    """The representative of ``±offset`` whose first non-zero component is positive."""
    sign = next(1 if o > 0 else -1 for o in offset if o != 0)
    return (sign * offset[0], sign * offset[1], sign * offset[2])


def _offset(axes: Tuple[int, int], da: int, db: int) -> Offset:
    out = [0, 0, 0]
    out[axes[0]], out[axes[1]] = da, db
    return (out[0], out[1], out[2])


@functools.lru_cache(maxsize=64)
def _window_plan(views: Tuple[str, ...], radius: int, sigma_xy: float) -> Tuple[_ViewWindow, ...]:
    """Which view evaluates which unordered pair offset, in chunks of window rows (see :class:`_ViewWindow`).

    An offset along one axis lies in two views; it is evaluated once, preferably as the centre column
    (``db = 0``) of a view whose rows run along that axis, so that the row ``da = 0`` (offsets along the
    columns' axis alone) is dropped wherever another view holds it. The orientation of every view is chosen
    to evaluate the fewest window slots (for the three views: each axis is one view's rows, no row 0).
    """
    width = 2 * radius + 1
    weights: Dict[Offset, float] = {}
    for view in views:
        for da in range(radius + 1):
            for db in range(-radius, radius + 1):
                if da > 0 or db > 0:
                    key = _canonical(_offset(VIEW_AXES[view], da, db))
                    weights[key] = weights.get(key, 0.0) + 1.0 / len(views)
    inv_two_s2 = 1.0 / (2.0 * sigma_xy * sigma_xy)
    rows_per_chunk = max(1, CHUNK_OFFSETS // width)
    best: Optional[Tuple[int, Tuple[_ViewWindow, ...]]] = None
    for flips in itertools.product((False, True), repeat=len(views)):
        orient = [VIEW_AXES[v][::-1] if flip else VIEW_AXES[v] for v, flip in zip(views, flips)]
        taken = set()
        table: List[Dict[int, List[float]]] = [{} for _ in views]
        for rows in (range(1, radius + 1), (0,)):  # the centre columns claim the axis offsets before row 0
            for n, axes in enumerate(orient):
                for da in rows:
                    row = []
                    for db in range(-radius, radius + 1):
                        key = _canonical(_offset(axes, da, db)) if da > 0 or db > 0 else None
                        if key is None or key in taken:
                            row.append(-math.inf)
                        else:
                            taken.add(key)
                            row.append(math.log(weights[key]) - inv_two_s2 * (da * da + db * db))
                    table[n][da] = row
        plan = []
        for axes, rows_of in zip(orient, table):
            first = 0 if any(w > -math.inf for w in rows_of[0]) else 1
            chunks = tuple((start, min(rows_per_chunk, radius + 1 - start))
                           for start in range(first, radius + 1, rows_per_chunk))
            plan.append(_ViewWindow(axes, first, chunks,
                                    tuple(tuple(rows_of[da]) for da in range(first, radius + 1))))
        assert len(taken) == len(weights)  # every pair offset once
        slots = sum(len(view.log_weights) for view in plan)
        if best is None or slots < best[0]:
            best = (slots, tuple(plan))
    assert best is not None
    return best[1]


@functools.lru_cache(maxsize=64)
def _plan_tensors(plan: Tuple[_ViewWindow, ...], device: torch.device, dtype: torch.dtype
                  ) -> Tuple[Tuple[torch.Tensor, ...], ...]:
    """Per view, on ``device`` (created once): the log weights, the lower bound of the log kernel (``-60``, or
    ``-inf`` where the weight is ``-inf``), ``[rows, 2r + 1, 1, 1, 1, 1, 1]``, and both for the mirrored offsets
    (rows and columns reversed)."""
    out = []
    for view in plan:
        log_w = torch.tensor(view.log_weights, dtype=torch.float64)
        floor = torch.where(torch.isinf(log_w), log_w, torch.full_like(log_w, _MIN_LOG_KERNEL))
        shape = (*log_w.shape, 1, 1, 1, 1, 1)
        out.append(tuple(t.to(dtype).reshape(shape).to(device)
                         for t in (log_w, floor, log_w.flip((0, 1)), floor.flip((0, 1)))))
    return tuple(out)


# ------------------------------------------------------------------------------------------------ per offset


def _pair_slices(offset: Offset, size: Sequence[int]) -> Optional[Tuple[tuple, tuple]]:
    """Index tuples of the voxels ``x`` and ``y = x + offset`` (both inside), or None when there are none."""
    src, dst = [slice(None), slice(None)], [slice(None), slice(None)]
    for o, n in zip(offset, size):
        if abs(o) >= n:
            return None
        src.append(slice(0, n - o) if o >= 0 else slice(-o, n))
        dst.append(slice(o, n) if o >= 0 else slice(0, n + o))
    return tuple(src), tuple(dst)


def _energy_per_offset(prob: torch.Tensor, feat: torch.Tensor, valid: Optional[torch.Tensor],
                       plan: Tuple[_ViewWindow, ...], radius: int
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Σ_ij K_ij, Σ_c qᵀ K q, K q)`` over ordered valid pairs, one offset at a time (float64 sums)."""
    size = prob.shape[2:]
    q = 1.0 - 2.0 * prob
    kq = torch.zeros_like(prob)
    totals = []  # Σ over unordered pairs of K, per offset
    buf = torch.empty(feat.numel(), dtype=prob.dtype, device=prob.device)
    kbuf = torch.empty(kq[:, :1].numel(), dtype=prob.dtype, device=prob.device)
    for view, (log_w, *_) in zip(plan, _plan_tensors(plan, prob.device, prob.dtype)):
        for row, weights in enumerate(view.log_weights):
            for col, weight in enumerate(weights):
                sl = _pair_slices(_offset(view.axes, view.first_row + row, col - radius), size)
                if weight == -math.inf or sl is None:
                    continue
                sx, sy = sl
                fx = feat[sx]
                diff = buf[: fx.numel()].view(fx.shape)
                torch.sub(fx, feat[sy], out=diff)
                if fx.shape[1] == 1:  # log K = log w − Δ² in one pass
                    kern = torch.addcmul(log_w[row, col], diff, diff, value=-1.0, out=diff)
                else:
                    kern = kbuf[: diff[:, :1].numel()].view(fx.shape[0], 1, *fx.shape[2:])
                    torch.sum(diff.mul_(diff), dim=1, keepdim=True, out=kern)
                    kern.neg_().add_(log_w[row, col])
                kern.clamp_(min=_MIN_LOG_KERNEL).exp_()
                if valid is not None:
                    kern.mul_(valid[sx]).mul_(valid[sy])
                totals.append(kern.sum(dtype=torch.float64))
                kq[sx].addcmul_(kern, q[sy])
                kq[sy].addcmul_(kern, q[sx])
    # ordered pairs: Σ_ij K = 2 Σ_unordered K; qᵀKq = Σ q·(Kq). Their difference cancels (it is ~0 where labels
    # are hard and uniform), so both sums are accumulated in float64.
    total = torch.stack(totals).sum() if totals else prob.new_zeros((), dtype=torch.float64)
    return 2.0 * total, torch.sum(q * kq, dtype=torch.float64), kq


# --------------------------------------------------------------------------------------------------- chunked


def _window(padded: torch.Tensor, radius: int, size: Sequence[int], axes: Tuple[int, int], start: int,
            rows: int) -> torch.Tensor:
    """View ``[rows, 2r+1, B, Ch, I, J, K]`` of ``padded`` ``[B, Ch, I+2r, J+2r, K+2r]`` (contiguous, ``r`` on every
    side): element ``[i, j, b, c, x]`` is the value at voxel ``x + o`` with ``o[axes[0]] = start + i``,
    ``o[axes[1]] = j − r``."""
    st = padded.stride()
    sp = st[2:]
    base = padded.storage_offset() + radius * sum(sp) + start * sp[axes[0]] - radius * sp[axes[1]]
    return padded.as_strided((rows, 2 * radius + 1, *padded.shape[:2], *size), (sp[axes[0]], sp[axes[1]], *st),
                             base)


def _energy_chunked(prob: torch.Tensor, feat: torch.Tensor, valid: Optional[torch.Tensor],
                    plan: Tuple[_ViewWindow, ...], radius: int
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As :func:`_energy_per_offset`, a chunk of window rows at a time.

    Each chunk of offsets ``o`` runs twice, for ``o`` and for its mirror ``−o`` (the kernel recomputed, bit for
    bit the same), adding ``K(x, x ± o)·[q v, v](x ± o)`` at ``x`` into ``kq`` ``[B, C + 1, …]`` (unmasked at ``x``
    itself); so ``Σ_x [q v, v]·kq`` gives ``qᵀ K q`` per class and ``Σ_ij K_ij`` over ordered valid pairs, with the
    exact symmetry of the sum (0 for hard uniform labels).
    """
    bsz, n_cls = prob.shape[:2]
    size = tuple(prob.shape[2:])
    r, width = radius, 2 * radius + 1
    qv_pad = prob.new_zeros((bsz, n_cls + 1, *(n + 2 * r for n in size)))  # [q v, v], zero outside the grid
    qv = qv_pad[(slice(None), slice(None), *(slice(r, r + n) for n in size))]
    if valid is None:
        torch.mul(prob, -2.0, out=qv[:, :n_cls]).add_(1.0)
        qv[:, n_cls:].fill_(1.0)
    else:
        torch.mul(torch.rsub(prob, 1.0, alpha=2.0), valid, out=qv[:, :n_cls])
        qv[:, n_cls:].copy_(valid)
    feat_pad = F.pad(feat, [r] * 6)
    kq = prob.new_zeros((bsz, n_cls + 1, *size))
    rows_max = max(rows for view in plan for _, rows in view.chunks)
    kern_buf = prob.new_empty((rows_max, width, bsz, 1, *size))
    prod_buf = prob.new_empty((rows_max, width, bsz, n_cls + 1, *size))
    for view, tables in zip(plan, _plan_tensors(plan, prob.device, prob.dtype)):
        log_w, floor, mirror_log_w, mirror_floor = tables
        n_rows = len(view.log_weights)
        for start, rows in view.chunks:
            part = slice(start - view.first_row, start - view.first_row + rows)
            mirror = slice(n_rows - part.stop, n_rows - part.start)  # rows −(start + rows − 1) … −start
            for first, lw, fl in ((start, log_w[part], floor[part]),
                                  (1 - start - rows, mirror_log_w[mirror], mirror_floor[mirror])):
                kern = kern_buf[:rows]  # log K, then K, of the offsets o of the rows: the pair (x, x + o)
                neighbour = _window(feat_pad, r, size, view.axes, first, rows)
                if feat.shape[1] == 1:
                    torch.sub(feat, neighbour, out=kern)
                    torch.addcmul(lw, kern, kern, value=-1.0, out=kern)
                else:
                    diff = feat - neighbour
                    torch.sum(diff.mul_(diff), dim=3, keepdim=True, out=kern)
                    del diff
                    torch.sub(lw, kern, out=kern)
                kern.clamp_(min=fl).exp_()
                prod = torch.mul(kern, _window(qv_pad, r, size, view.axes, first, rows), out=prod_buf[:rows])
                kq += prod.sum(dim=(0, 1))  # at x: Σ_o K(x, x + o)·[q v, v](x + o)
    # the kernel sum and qᵀKq cancel where labels are hard and uniform: both are reduced in float64
    sums = torch.sum(qv * kq, dim=(0, 2, 3, 4), dtype=torch.float64)
    grad = kq[:, :n_cls] if valid is None else kq[:, :n_cls] * valid
    return sums[n_cls], sums[:n_cls].sum(), grad


class _BilateralPottsFunction(torch.autograd.Function):
    """:func:`bilateral_potts_energy`; gradient only w.r.t. ``prob``."""

    @staticmethod
    def forward(ctx, prob, feat, valid, plan, radius, scale, mode):  # type: ignore[override]
        energy = _energy_chunked if mode == "chunked" else _energy_per_offset
        kernel_sum, qkq, grad = energy(prob, feat, valid, plan, radius)
        value = prob.shape[1] * kernel_sum - qkq  # 4 Σ_c Σ_ij K_ij p_{c,i}(1 − p_{c,j})
        if valid is None:
            factor = scale / max(prob.shape[0] * prob[0, 0].numel(), 1)
            loss = (value * (factor / 4.0)).to(prob.dtype)
        else:
            count = valid.sum(dtype=torch.float64).clamp_(min=1.0)
            loss = (value * (scale / 4.0) / count).to(prob.dtype)
            factor = (scale / count).to(prob.dtype)
        ctx.factor = factor if not isinstance(factor, torch.Tensor) else None
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(grad, *([factor] if isinstance(factor, torch.Tensor) else []))
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        grad, *factor = ctx.saved_tensors
        return grad * (grad_out * (factor[0] if factor else ctx.factor)), None, None, None, None, None, None


def bilateral_potts_energy(
    prob: torch.Tensor,
    feat: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    *,
    views: Sequence[str],
    radius: int,
    sigma_xy: float,
    scale: float = 1.0,
    compute_mode: str = "auto",
) -> torch.Tensor:
    """The energy of the module docstring (a 0-dim tensor in ``prob``'s dtype, differentiable w.r.t. ``prob``).

    Args:
        prob: probabilities ``[B, C, I, J, K]``, float32 or float64, axes ``[i, j, k]``.
        feat: features ``[B, Ch, I, J, K]`` in ``prob``'s dtype and device, already divided by ``√2 σ_I``; not
            differentiated.
        valid: optional ``[B, 1, I, J, K]`` mask in ``prob``'s dtype, 1 = valid and 0 = not (no other values).
        views: distinct names of :data:`VIEW_AXES`.
        radius: window half-size ``r`` (voxels), ``>= 1``.
        sigma_xy: spatial bandwidth (voxels), ``> 0``.
        scale: factor of the result.
        compute_mode: one of :data:`COMPUTE_MODES`.

    Raises:
        ValueError: naming the bad argument (a shape, dtype or device that does not match ``prob``, a bad option).
    """
    mode = resolve_compute_mode(compute_mode, prob.device if isinstance(prob, torch.Tensor) else "cpu")
    check_logits(prob, name="prob", min_channels=1, channels_note="probabilities")
    if prob.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"prob must be float32 or float64, got {prob.dtype}")
    check_map("feat", feat, prob, like_name="prob", channels=None)
    check_valid(valid, prob, like_name="prob")
    for name, tensor in (("feat", feat), ("valid", valid)):
        if tensor is not None and (tensor.dtype != prob.dtype or tensor.device != prob.device):
            raise ValueError(f"{name} must have the dtype and device of prob ({prob.dtype}, {prob.device}), got "
                             f"{tensor.dtype} on {tensor.device}")
    views = tuple([views] if isinstance(views, str) else views)
    if not views or any(v not in VIEW_AXES for v in views) or len(set(views)) != len(views):
        raise ValueError(f"views must be a non-empty list of distinct names from {sorted(VIEW_AXES)}, "
                         f"got {views!r}")
    radius = check_int("radius", radius, minimum=1, unit="voxels")
    sigma_xy = check_number("sigma_xy", sigma_xy, minimum=0, open_minimum=True)
    scale = check_number("scale", scale)
    plan = _window_plan(views, radius, sigma_xy)
    return _BilateralPottsFunction.apply(prob, feat, valid, plan, radius, scale, mode)
