"""Contrastive variance (PSCV) and extreme-point (Going to Extremes) losses, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PASegLib.data.clickmaps import gaussian_point_heatmap  # noqa: E402
from PASegLib.losses import LOSSES  # noqa: E402
from PASegLib.losses.contrastive_variance import ContrastiveVarianceLoss, contrastive_variance_terms  # noqa: E402
from PASegLib.losses.point_loss import ExtremePointLoss, extreme_point_loss  # noqa: E402


def _logits(p):
    """Float64 two-class logits ``[B, 2, *spatial]`` whose foreground softmax probability is ``p [B, *spatial]``."""
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)


def _vol(values):
    """``[B, K]`` nested lists → float64 tensor ``[B, 1, 1, K]`` (one I·J line along K), no channel axis."""
    return torch.tensor(values, dtype=torch.float64)[:, None, None, :]


# Hand case (volume 1×1×2 along K, B = 2, C = 2, image I = [0, 4] in both samples):
#   sample 0: Ŷ_1 = [0.2, 0.8] → c_1 = 3.2, z_1 = [3.2²·0.2, 0.8²·0.8] = [2.048, 0.512] ∝ [4, 1];
#             Ŷ_0 = [0.8, 0.2] → c_0 = 0.8, z_0 = [0.512, 2.048] ∝ [1, 4];
#   sample 1: Ŷ_1 = [0.8, 0.2] → z_1 ∝ [1, 4], z_0 ∝ [4, 1]   (the classes swapped).
# cos([4, 1], [1, 4]) = 8/17, cos([4, 1], [4, 1]) = 1. For every anchor the positive (same class, other image)
# has cos 8/17 and the single negative (other class, other image) cos 1:
#   −log(e^{8/17τ} / (e^{8/17τ} + e^{1/τ})) = log(1 + e^{9/(17τ)}).
# TV: |0.8 − 0.2| = 0.6 along K for every (n, k); axes I and J have length 1.
IMAGE = _vol([[0.0, 4.0], [0.0, 4.0]])[:, None]  # [2, 1, 1, 1, 2]
SWAPPED = _logits(_vol([[0.2, 0.8], [0.8, 0.2]]))


def test_cv_hand_values():
    for tau in (0.07, 1.0):
        terms = contrastive_variance_terms(SWAPPED, IMAGE, temperature=tau, eps=0.0)
        assert terms["contrastive"].item() == pytest.approx(math.log(1 + math.exp(9 / (17 * tau))), rel=1e-12)
        assert terms["tv"].item() == pytest.approx(0.6, rel=1e-12)
    assert math.log(1 + math.exp(9 / 17)) == pytest.approx(0.99249, abs=1e-5)  # τ = 1: log(1 + 1.69795)
    loss = ContrastiveVarianceLoss()(SWAPPED, IMAGE)  # defaults λ = 0.3, τ = 0.07, μ = 1e-5, eps = 1e-6
    # eps = 1e-6 in c_k moves the cosines by ~1e-7, which 1/τ ≈ 14 amplifies to a relative ~3e-6.
    assert loss.item() == pytest.approx(0.3 * math.log(1 + math.exp(9 / (17 * 0.07))) + 1e-5 * 0.6, rel=2e-5)
    # Same predictions in both images: positive cos 1, negative cos 8/17 → log(1 + e^{−9/(17τ)}).
    aligned = _logits(_vol([[0.2, 0.8], [0.2, 0.8]]))
    terms = contrastive_variance_terms(aligned, IMAGE, temperature=1.0, eps=0.0)
    assert terms["contrastive"].item() == pytest.approx(math.log(1 + math.exp(-9 / 17)), rel=1e-12)  # < 0.99249


def _cv_numpy(prob, image, tau):
    """Eq. 4–8 by explicit loops: prob [B, C, N], image [B, N]; partner m = (n + 1) mod B; mean over (n, k)."""
    batch, n_classes, _ = prob.shape
    z = np.zeros_like(prob)
    for n in range(batch):
        for k in range(n_classes):
            c = np.sum(image[n] * prob[n, k]) / np.sum(prob[n, k])
            z[n, k] = (image[n] - c) ** 2 * prob[n, k]

    def cos(a, b):
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    terms = []
    for n in range(batch):
        for k in range(n_classes):
            pos = math.exp(cos(z[n, k], z[(n + 1) % batch, k]) / tau)
            neg = sum(math.exp(cos(z[n, k], z[i, j]) / tau)
                      for i in range(batch) if i != n for j in range(n_classes) if j != k)
            terms.append(-math.log(pos / (pos + neg)))
    return float(np.mean(terms))


def test_cv_three_images_three_classes_match_the_formula():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(3, 3, 1, 2, 2)))
    image = torch.tensor(rng.normal(size=(3, 1, 1, 2, 2)))
    terms = contrastive_variance_terms(logits, image, temperature=0.5, eps=0.0)
    prob = torch.softmax(logits, dim=1).numpy().reshape(3, 3, 4)
    assert terms["contrastive"].item() == pytest.approx(_cv_numpy(prob, image.numpy().reshape(3, 4), 0.5), rel=1e-10)


def test_tv_of_a_step():
    # Step along J in a 2×3×2 volume: Ŷ_1 = 0 for j = 0, 1 for j = 1, 2 → |Δ_J| = [1, 0], mean 1/2; Δ_I = Δ_K = 0.
    p = torch.full((1, 2, 3, 2), 1e-30, dtype=torch.float64)
    p[:, :, 1:, :] = 1 - 1e-16
    terms = contrastive_variance_terms(_logits(p), torch.zeros(1, 1, 2, 3, 2, dtype=torch.float64))
    assert terms["tv"].item() == pytest.approx(0.5, abs=1e-12)
    # Step along K of length 4 ([0, 0, 1, 1]): one jump in three pairs → 1/3.
    p = torch.tensor([1e-30, 1e-30, 1 - 1e-16, 1 - 1e-16], dtype=torch.float64).reshape(1, 1, 1, 4)
    assert contrastive_variance_terms(_logits(p), torch.zeros(1, 1, 1, 1, 4))["tv"].item() == pytest.approx(1 / 3)


def test_single_image_has_no_contrastive_term():
    logits = torch.randn(1, 3, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    terms = contrastive_variance_terms(logits, torch.randn(1, 1, 2, 3, 4), tv_weight=0.5)
    assert terms["contrastive"].item() == 0.0
    assert terms["loss"].item() == pytest.approx(0.5 * terms["tv"].item(), rel=1e-12)
    terms["loss"].backward()
    assert torch.isfinite(logits.grad).all()


def test_cv_valid_mask_excludes_voxels():
    # Add a third voxel along K, marked invalid, with an outlier intensity and arbitrary predictions.
    image = torch.cat([IMAGE, torch.full((2, 1, 1, 1, 1), 100.0, dtype=torch.float64)], dim=4)
    logits = torch.cat([SWAPPED, torch.tensor([[3.0, -2.0], [-1.0, 4.0]], dtype=torch.float64)[:, :, None, None, None]],
                       dim=4)
    valid = torch.tensor([1, 1, 0]).reshape(1, 1, 1, 1, 3).expand(2, 1, 1, 1, 3)
    masked = contrastive_variance_terms(logits, image, valid, temperature=1.0, eps=0.0)
    assert masked["contrastive"].item() == pytest.approx(math.log(1 + math.exp(9 / 17)), rel=1e-12)
    assert masked["tv"].item() == pytest.approx(0.6, rel=1e-12)  # only the pair (0, 1) is valid
    unmasked = contrastive_variance_terms(logits, image, temperature=1.0, eps=0.0)
    assert unmasked["contrastive"].item() != pytest.approx(masked["contrastive"].item(), rel=1e-3)


def test_cv_gradients_are_finite_with_an_empty_sample():
    logits = torch.randn(3, 2, 3, 4, 5, requires_grad=True)
    valid = torch.ones(3, 1, 3, 4, 5)
    valid[2] = 0  # z of sample 2 is all zero
    loss = LOSSES.build("contrastive_variance", weight=0.3, temperature=0.07, tv_weight=1e-2)(
        logits, torch.randn(3, 1, 3, 4, 5), valid)
    assert loss.ndim == 0 and loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[:2].abs().sum() > 0
    assert logits.grad[2].abs().sum() == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"weight": -0.1}, "weight must be a finite number >= 0.0, got -0.1"),
    ({"temperature": 0.0}, "temperature must be a finite number > 0.0, got 0.0"),
    ({"temperature": -1.0}, "temperature must be .* got -1.0"),
    ({"tv_weight": -1e-5}, "tv_weight must be .* got -1e-05"),
    ({"eps": float("nan")}, "eps must be .* got nan"),
])
def test_cv_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ContrastiveVarianceLoss(**kwargs)
    with pytest.raises(ValueError, match=match):
        contrastive_variance_terms(SWAPPED, IMAGE, **kwargs)


def test_cv_bad_shapes():
    cv = ContrastiveVarianceLoss()
    with pytest.raises(ValueError,
                       match=r"logits must be a floating-point tensor \[B, C, I, J, K\], got shape \(2, 2, 2\)"):
        cv(torch.zeros(2, 2, 2), IMAGE)
    with pytest.raises(ValueError, match="C >= 2 .* got C=1"):
        cv(torch.zeros(2, 1, 1, 1, 2), IMAGE)
    with pytest.raises(ValueError,
                       match=r"image must have shape \(2, 1, 1, 1, 2\), one channel .*; got \(2, 2, 1, 1, 2\)"):
        cv(SWAPPED, torch.zeros(2, 2, 1, 1, 2))
    with pytest.raises(ValueError, match=r"valid must have shape \(2, 1, 1, 1, 2\), one channel on the grid of "
                                         r"logits \(2, 2, 1, 1, 2\); got \(2, 1, 1, 2\)"):
        cv(SWAPPED, IMAGE, torch.ones(2, 1, 1, 2))


def test_heatmap_peak_and_one_sigma():
    heat = gaussian_point_heatmap(np.array([[2.0, 3.0, 4.0]]), (6, 7, 8), 2.0)
    assert heat.dtype == np.float32 and heat.shape == (6, 7, 8)
    assert heat[2, 3, 4] == 1.0 and heat.max() == 1.0
    assert heat[4, 3, 4] == pytest.approx(math.exp(-0.5), rel=1e-6)  # 2 voxels = one σ along i
    assert heat[2, 3, 2] == pytest.approx(math.exp(-0.5), rel=1e-6)
    aniso = gaussian_point_heatmap([[2.0, 3.0, 4.0]], (6, 7, 8), (1.0, 2.0, 3.0))
    assert aniso[3, 3, 4] == aniso[2, 5, 4] == aniso[2, 3, 7] == pytest.approx(math.exp(-0.5), rel=1e-6)
    assert aniso[3, 5, 4] == pytest.approx(math.exp(-1.0), rel=1e-6)
    assert not gaussian_point_heatmap(np.zeros((0, 3)), (2, 3, 4), 1.0).any()
    with pytest.raises(ValueError, match=r"points_ijk must be a finite \(P, 3\) .* got shape \(2, 2\)"):
        gaussian_point_heatmap(np.zeros((2, 2)), (3, 3, 3), 1.0)
    with pytest.raises(ValueError, match="sigma_voxels must be 3 finite numbers > 0.0"):
        gaussian_point_heatmap([[0.0, 0.0, 1.0]], (3, 3, 3), (1.0, 2.0))
    with pytest.raises(ValueError, match="shape must be 3 integers >= 1"):
        gaussian_point_heatmap([[0.0, 0.0, 1.0]], (3, 0, 3), 1.0)


def _brute_heatmap(points, shape, sigma):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    maps = [np.exp(-np.sum((grid - p) ** 2 / (2 * np.asarray(sigma) ** 2), axis=-1)) for p in points]
    return np.max(maps, axis=0)


def test_heatmap_windows_match_brute_force():
    points = np.array([[1.3, 4.0, 2.5], [5.0, 0.2, 6.9], [-2.0, 3.0, 9.5]])  # the last lies outside the volume
    shape, sigma = (7, 6, 9), (1.0, 1.5, 2.0)
    brute = _brute_heatmap(points, shape, sigma)
    wide = gaussian_point_heatmap(points, shape, sigma, truncate=20.0)
    np.testing.assert_allclose(wide, brute, rtol=1e-6, atol=1e-7)
    windowed = gaussian_point_heatmap(points, shape, sigma)  # truncate = 3
    assert np.abs(windowed - brute).max() <= math.exp(-4.5) + 1e-7
    assert windowed[0, 3, 8] == pytest.approx(brute[0, 3, 8], rel=1e-6)  # tail of the outside point
    assert windowed[0, 3, 8] > 0.1


def test_point_loss_hand_values():
    """``L = −Σ g ĝ / Σ ĝ`` (Eq. 6 normalised by the heatmap mass ``M = Σ ĝ`` instead of ``N``), by hand:

    * iterations 0 (``G0 = P``), ``P = [0.5, 0.9]``, ``ĝ = [1, 0.5]``, s = 1: ``g = [e^0, e^{−0.16}]``,
      ``M = 1.5`` → ``−(1 + 0.5 e^{−0.16}) / 1.5 = −(1 + 0.426072) / 1.5 ≈ −0.950715`` (with ``1/N`` it was
      ``/ 2``); s = 4: ``−(1 + 0.5 e^{−0.64}) / 1.5``.
    * one 3×3×3 box filter, replicate padding, ``P = [0.2, 0.5, 0.8]`` along K (I = J = 1):
      ``G0 = [(0.2+0.2+0.5)/3, (0.2+0.5+0.8)/3, (0.5+0.8+0.8)/3] = [0.3, 0.5, 0.7]``, ``g = [e^{−0.04}, 1, e^{−0.04}]``.
      ``ĝ = [0.5, 1, 0]``: ``M = 1.5`` → ``−(0.5 e^{−0.04} + 1) / 1.5 ≈ −0.986930``. ``ĝ = 1``: ``M = N = 3``
      → ``−(1 + 2 e^{−0.04}) / 3`` (the paper's value: mass and count agree).
    * valid = voxel 0 only, ``ĝ = [0.5, 1, 0]``: ``M = 0.5`` → ``−0.5 e^{−0.04} / 0.5 = −e^{−0.04}``.
    * a batch of two, iterations 0: sample 0 ``P = [0.5, 0.5]``, ``ĝ = [1, 0]``; sample 1 ``P = [0.9, 0.9]``,
      ``ĝ = [0, 0.25]``: one mass for the batch, ``M = 1.25`` → ``−(1 + 0.25 e^{−0.16}) / 1.25 ≈ −0.970429``
      (a per-sample mean would give ``−(1 + e^{−0.16}) / 2``).
    """
    logits, points = _logits(_vol([[0.5, 0.9]])), _vol([[1.0, 0.5]])[:, None]
    loss = extreme_point_loss(logits, points, iterations=0)
    assert loss.item() == pytest.approx(-(1 + 0.5 * math.exp(-0.16)) / 1.5, rel=1e-12)
    assert loss.item() == pytest.approx(-0.950715, abs=1e-6)
    sharp = ExtremePointLoss(iterations=0, sharpness=4.0)(logits, points)
    assert sharp.item() == pytest.approx(-(1 + 0.5 * math.exp(-0.64)) / 1.5, rel=1e-12)
    logits = _logits(_vol([[0.2, 0.5, 0.8]]))
    heat = torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64).reshape(1, 1, 1, 1, 3)
    loss = extreme_point_loss(logits, heat, iterations=1)
    assert loss.item() == pytest.approx(-(0.5 * math.exp(-0.04) + 1) / 1.5, rel=1e-12)
    assert loss.item() == pytest.approx(-0.986930, abs=1e-6)
    ones = torch.ones(1, 1, 1, 1, 3, dtype=torch.float64)
    assert extreme_point_loss(logits, ones, iterations=1).item() == pytest.approx(-(1 + 2 * math.exp(-0.04)) / 3,
                                                                                  rel=1e-12)
    valid = torch.tensor([1, 0, 0]).reshape(1, 1, 1, 1, 3)
    assert extreme_point_loss(logits, heat, valid, iterations=1).item() == pytest.approx(-math.exp(-0.04), rel=1e-12)
    batch = _logits(_vol([[0.5, 0.5], [0.9, 0.9]]))
    heat = _vol([[1.0, 0.0], [0.0, 0.25]])[:, None]
    loss = extreme_point_loss(batch, heat, iterations=0)
    assert loss.item() == pytest.approx(-(1 + 0.25 * math.exp(-0.16)) / 1.25, rel=1e-12)
    assert loss.item() == pytest.approx(-0.970429, abs=1e-6)


def test_point_loss_does_not_shrink_with_the_patch_and_is_zero_without_points():
    # the same points and prediction in a patch 10 times longer (the extra voxels hold no heatmap): same value,
    # where the paper's 1/N would divide it by 10
    p = torch.full((1, 1, 1, 40), 0.3, dtype=torch.float64)
    p[..., :4] = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64)
    heat = torch.zeros(1, 1, 1, 1, 40, dtype=torch.float64)
    heat[..., :4] = torch.tensor([0.1, 0.7, 1.0, 0.2], dtype=torch.float64)
    long = extreme_point_loss(_logits(p), heat, iterations=0)
    short = extreme_point_loss(_logits(p[..., :4]), heat[..., :4], iterations=0)
    assert long.item() == pytest.approx(short.item(), rel=1e-12) and long.item() < -0.9
    # no heatmap mass at all: an exact zero that backpropagates zeros
    logits = torch.randn(2, 2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    zero = extreme_point_loss(logits, torch.zeros(2, 1, 3, 3, 3, dtype=torch.float64), iterations=2)
    zero.backward()
    assert zero.item() == 0.0 and logits.grad is not None and not logits.grad.any()


def _naive_point_loss(logits, points, valid, *, iterations, kernel_size, sharpness):
    """Eq. 6–8 as written, with ``F.conv3d`` and a constant ``1/n³`` kernel after replicate padding, ``1/M``."""
    prob = torch.softmax(logits, dim=1)[:, 1:2]
    kernel = torch.full((1, 1, kernel_size, kernel_size, kernel_size), 1.0 / kernel_size**3, dtype=logits.dtype)
    half = kernel_size // 2
    for _ in range(iterations):
        prob = torch.nn.functional.conv3d(torch.nn.functional.pad(prob, [half] * 6, mode="replicate"), kernel)
    g = torch.exp(-sharpness * (prob - 0.5) ** 2)
    heat = points * valid
    return -(g * heat).sum() / heat.sum()


def test_point_loss_equals_a_naive_conv3d_reference():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 2, 7, 6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    points = torch.rand(2, 1, 7, 6, 5, dtype=torch.float64, generator=gen) ** 4
    valid = (torch.rand(2, 1, 7, 6, 5, generator=gen) > 0.2).double()
    for kwargs in ({"iterations": 3, "kernel_size": 3, "sharpness": 1.0}, {"iterations": 2, "kernel_size": 5,
                                                                         "sharpness": 8.0}):
        fast = extreme_point_loss(logits, points, valid, **kwargs)
        ref = _naive_point_loss(logits, points, valid, **kwargs)
        assert fast.item() == pytest.approx(ref.item(), rel=1e-12)
        (g_fast,) = torch.autograd.grad(fast, logits)
        (g_ref,) = torch.autograd.grad(ref, logits)
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-10, atol=1e-14)


def test_boundary_through_the_point_scores_lower():
    shape = (6, 6, 40)
    heat = gaussian_point_heatmap([[2.5, 2.5, 10.5]], shape, 2.0)
    points = torch.from_numpy(heat)[None, None]
    k = torch.arange(shape[2], dtype=torch.float32)

    def step(edge):  # foreground for k < edge, soft over about one voxel
        p = torch.sigmoid(4.0 * (edge - k)).expand(*shape).clamp(1e-4, 1 - 1e-4)
        return torch.stack([torch.log1p(-p), torch.log(p)])[None]  # [1, 2, I, J, K]

    loss_fn = LOSSES.build("extreme_point", iterations=25, kernel_size=3, sharpness=1.0)
    near, far = loss_fn(step(10.5), points), loss_fn(step(28.5), points)
    assert near.item() < far.item() < 0
    assert ExtremePointLoss(sharpness=16.0)(step(10.5), points) < ExtremePointLoss(sharpness=16.0)(step(28.5), points)


def test_point_loss_gradient_matches_finite_differences():
    logits = torch.randn(2, 2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    points = torch.rand(2, 1, 4, 3, 5, dtype=torch.float64)
    valid = (torch.rand(2, 1, 4, 3, 5) > 0.3).double()
    for kwargs in ({"iterations": 3, "kernel_size": 3}, {"iterations": 2, "kernel_size": 5, "sharpness": 8.0}):
        assert torch.autograd.gradcheck(lambda x, kw=kwargs: extreme_point_loss(x, points, valid, **kw), (logits,))
    loss = ExtremePointLoss()(logits.float().detach().requires_grad_(), points.float())
    assert loss.ndim == 0 and loss.dtype == torch.float32


def test_point_loss_bad_inputs():
    logits, points = torch.zeros(1, 2, 2, 3, 4), torch.zeros(1, 1, 2, 3, 4)
    with pytest.raises(ValueError, match="kernel_size must be odd .* got 4"):
        ExtremePointLoss(kernel_size=4)
    with pytest.raises(ValueError, match="iterations must be an integer >= 0, got -1"):
        ExtremePointLoss(iterations=-1)
    with pytest.raises(ValueError, match="sharpness must be a finite number > 0.0, got 0.0"):
        ExtremePointLoss(sharpness=0.0)
    with pytest.raises(ValueError,
                       match=r"points must have shape \(1, 1, 2, 3, 4\), one channel .*; got \(1, 2, 2, 3, 4\)"):
        ExtremePointLoss()(logits, torch.zeros(1, 2, 2, 3, 4))
    with pytest.raises(ValueError, match=r"valid must have shape \(1, 1, 2, 3, 4\), .*; got \(1, 1, 2, 3\)"):
        ExtremePointLoss()(logits, points, torch.ones(1, 1, 2, 3))
    with pytest.raises(ValueError, match="C >= 2 .* got C=1"):
        ExtremePointLoss()(torch.zeros(1, 1, 2, 3, 4), points)
