"""Tests of the multi-view CRF loss (PASegLib.losses.crf) against a plain autograd oracle.

``reference_mcrf`` below is the oracle: a direct ``unfold`` implementation of Eq. 7–8 (every slice of every
view materialised with its full ``(2r+1)²`` neighbourhood, all classes summed explicitly, ordinary autograd),
written independently of the shift-based custom autograd Function under test. ``benchmarks/bench_crf.py``
imports it as the baseline (it has the memory profile of the official Gated-CRF code), and
:func:`count_kernel_launches` for its kernel count.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import pytest
import torch
import torch.nn.functional as F

from PASegLib.losses.bilateral import bilateral_potts_energy, resolve_compute_mode
from PASegLib.losses.crf import MultiViewCRFLoss, multi_view_crf_loss

# 5-D dims (B, C, I, J, K): the two dims spanning each view's slices, then the slicing dim
_PLANES = {"axial": (2, 3, 4), "coronal": (2, 4, 3), "sagittal": (3, 4, 2)}


def _to_slices(t: torch.Tensor, view: str) -> torch.Tensor:
    """[B, ch, I, J, K] -> [B * S, ch, Ha, Hb] with the slices of ``view``."""
    a, b, o = _PLANES[view]
    t = t.permute(0, o, 1, a, b)
    return t.reshape(-1, *t.shape[2:])


def reference_mcrf(
    logits: torch.Tensor,
    image: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    *,
    sigma_xy: float = 6.0,
    sigma_intensity: float = 0.1,
    radius: int = 5,
    views: Sequence[str] = ("axial", "sagittal", "coronal"),
    downsample_to: Optional[Sequence[int]] = None,
    activation: str = "softmax",
) -> torch.Tensor:
    """Unfold-based oracle of the multi-view CRF loss, in ``logits``'s dtype (memory ∝ N·(2r+1)²)."""
    if activation == "softmax":
        prob = torch.softmax(logits, dim=1)
    elif activation == "sigmoid":
        prob = torch.sigmoid(logits)
    else:
        prob = logits
    feat = image.detach().to(logits.dtype)
    region = torch.ones_like(feat[:, :1]) if valid is None else (valid != 0).to(logits.dtype)
    if downsample_to is not None:
        size = tuple(downsample_to)
        prob = F.interpolate(prob, size=size, mode="trilinear", align_corners=False)
        feat = F.interpolate(feat, size=size, mode="trilinear", align_corners=False)
        region = (F.interpolate(region, size=size, mode="trilinear", align_corners=False) >= 0.999).to(logits.dtype)
    count = region.sum().clamp(min=1.0)
    width = 2 * radius + 1
    steps = torch.arange(-radius, radius + 1, dtype=logits.dtype, device=logits.device)
    spatial = (steps[:, None] ** 2 + steps[None, :] ** 2).reshape(1, 1, -1, 1) / (2 * sigma_xy**2)
    per_view = []
    for view in views:
        p2, f2, v2 = (_to_slices(t, view) for t in (prob, feat, region))
        n, _, ha, hb = p2.shape
        f_nb, v_nb, p_nb = (F.unfold(t, width, padding=radius).view(n, t.shape[1], width * width, ha * hb)
                            for t in (f2, v2, p2))
        f_c, v_c, p_c = (t.reshape(n, t.shape[1], 1, ha * hb) for t in (f2, v2, p2))
        d2 = ((f_nb - f_c) ** 2).sum(dim=1, keepdim=True) / (2 * sigma_intensity**2)
        kernel = torch.exp(-spatial - d2) * v_nb * v_c
        kernel[:, :, width * width // 2] = 0.0  # j != i
        per_view.append((p_c * (1.0 - p_nb) * kernel).sum() / count)
    return torch.stack(per_view).mean()


def _inputs(shape, n_img=1, seed=0, with_valid=False, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(shape, generator=gen, dtype=dtype)).requires_grad_(True)
    b, _, *spatial = shape
    image = 0.15 * torch.randn((b, n_img, *spatial), generator=gen, dtype=dtype)
    valid = None
    if with_valid:
        valid = (torch.rand((b, 1, *spatial), generator=gen) > 0.25).to(torch.uint8)
    return logits, image, valid


def _value_and_grad(fn, logits, image, valid, **kw):
    logits = logits.detach().clone().requires_grad_(True)
    loss = fn(logits, image, valid, **kw)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss.detach(), grad


# ---------------------------------------------------------------------------------------------- hand values


def _three_voxel_inputs():
    p = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    logits = torch.zeros(1, 2, 3, 1, 1, dtype=torch.float64)
    logits[0, 1, :, 0, 0] = torch.log(p / (1 - p))  # softmax foreground = p
    image = torch.tensor([0.0, 0.1, 0.5], dtype=torch.float64).view(1, 1, 3, 1, 1)
    return logits, image


@pytest.mark.parametrize("fn", [multi_view_crf_loss, reference_mcrf], ids=["fast", "reference"])
def test_hand_computed_value(fn):
    logits, image = _three_voxel_inputs()
    # pairs (0,1), (1,2) within radius 1 along i; σ_xy = 6, σ_I = 0.1
    k01 = math.exp(-1 / 72 - 0.01 / 0.02)
    k12 = math.exp(-1 / 72 - 0.16 / 0.02)
    # Σ over both classes and both orders: 2·K01·(0.9·0.5 + 0.1·0.5) + 2·K12·(0.5·0.8 + 0.5·0.2) = K01 + K12
    expected_axial = (k01 + k12) / 3  # / 3 voxels
    loss = fn(logits, image, radius=1, views=("axial",))
    assert loss.item() == pytest.approx(expected_axial, rel=1e-12)
    # coronal (i, k) sees the same pairs, sagittal (j, k) none: mean over 3 views = 2/3
    assert fn(logits, image, radius=1).item() == pytest.approx(2 / 3 * expected_axial, rel=1e-12)
    # radius 2 adds the pair (0, 2) at distance 2
    k02 = math.exp(-4 / 72 - 0.25 / 0.02)
    expected_r2 = (k01 + k12 + 2 * k02 * (0.9 * 0.8 + 0.1 * 0.2)) / 3
    assert fn(logits, image, radius=2, views=("axial",)).item() == pytest.approx(expected_r2, rel=1e-12)
    # voxel 2 invalid: only the pair (0, 1) is left, normalised by the 2 valid voxels
    valid = torch.tensor([1, 1, 0]).view(1, 1, 3, 1, 1)
    assert fn(logits, image, valid, radius=1, views=("axial",)).item() == pytest.approx(k01 / 2, rel=1e-12)


def test_hand_computed_sigmoid_is_eq7():
    logits, image = _three_voxel_inputs()
    k01 = math.exp(-1 / 72 - 0.5)
    k12 = math.exp(-1 / 72 - 8)
    # one channel: Σ_i Σ_j p_i (1 − p_j) K_ij, both orders = half of the two-class softmax value
    expected = (k01 * (0.9 * 0.5 + 0.5 * 0.1) + k12 * (0.5 * 0.8 + 0.2 * 0.5)) / 3
    loss = multi_view_crf_loss(logits[:, 1:], image, radius=1, views=("axial",), activation="sigmoid")
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_hard_uniform_labels_give_zero():
    logits = torch.zeros(2, 2, 5, 4, 3)
    logits[:, 1] = 30.0
    image = 0.1 * torch.randn(2, 1, 5, 4, 3)
    # float32: the value is a difference of two sums (as in Gated-CRF), exact to ~1e-7 of the kernel mass
    loss = multi_view_crf_loss(logits.requires_grad_(True), image, radius=2)
    assert loss.item() == pytest.approx(0, abs=1e-7)
    loss.backward()
    assert logits.grad.abs().max().item() < 1e-9
    assert multi_view_crf_loss(logits.double(), image, radius=2).item() == pytest.approx(0, abs=1e-10)


# ------------------------------------------------------------------------------------- fast == reference

CASES = [
    dict(shape=(1, 2, 3, 4, 2), radius=1),
    dict(shape=(2, 2, 5, 3, 4), radius=2, views=("axial",), valid=True),
    dict(shape=(1, 2, 4, 5, 3), radius=5, n_img=2, sigma_intensity=0.3),
    dict(shape=(2, 3, 6, 5, 4), radius=2, views=("sagittal", "coronal"), valid=True),
    dict(shape=(1, 1, 5, 4, 3), radius=1, activation="sigmoid", sigma_xy=1.5),
    dict(shape=(1, 2, 8, 6, 7), radius=2, downsample_to=(4, 3, 5), valid=True),
    dict(shape=(2, 2, 5, 4, 3), radius=5, downsample_to=(7, 6, 4), n_img=3, views=("coronal",)),
    dict(shape=(1, 3, 7, 6, 5), radius=5, sigma_xy=2.0, sigma_intensity=0.5, valid=True),
]


def _split(case):
    case = dict(case)
    shape, n_img, with_valid = case.pop("shape"), case.pop("n_img", 1), case.pop("valid", False)
    return shape, n_img, with_valid, case


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_fast_matches_reference_float64(case):
    shape, n_img, with_valid, kw = _split(case)
    logits, image, valid = _inputs(shape, n_img=n_img, with_valid=with_valid)
    value, grad = _value_and_grad(multi_view_crf_loss, logits, image, valid, **kw)
    ref_value, ref_grad = _value_and_grad(reference_mcrf, logits, image, valid, **kw)
    assert value.dtype == torch.float64
    assert ref_value.item() > 0
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-13)


def test_none_activation_takes_probabilities():
    logits, image, valid = _inputs((2, 3, 5, 4, 3), with_valid=True)
    probs = torch.softmax(logits.detach(), dim=1).requires_grad_(True)
    value, grad = _value_and_grad(multi_view_crf_loss, probs, image, valid, radius=2, activation="none")
    ref_value, ref_grad = _value_and_grad(reference_mcrf, probs, image, valid, radius=2, activation="none")
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-13)


def test_float32_official_like_setting():
    # float32 fast path (the training path) against the float64 oracle; radius 5, default bandwidths
    logits, image, valid = _inputs((1, 2, 16, 14, 9), with_valid=True)
    ref_value, ref_grad = _value_and_grad(reference_mcrf, logits, image, valid)
    value, grad = _value_and_grad(multi_view_crf_loss, logits.float(), image.float(), valid)
    assert value.dtype == torch.float32 and grad.dtype == torch.float32
    torch.testing.assert_close(value.double(), ref_value, rtol=2e-5, atol=0)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-5 * ref_grad.abs().max().item())
    cosine = F.cosine_similarity(grad.double().flatten(), ref_grad.flatten(), dim=0)
    assert cosine.item() > 0.9999999


# --------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("kw", [dict(radius=1), dict(radius=2, downsample_to=(2, 4, 3))])
def test_gradcheck(kw):
    logits, image, valid = _inputs((1, 2, 3, 3, 2), with_valid=True, seed=3)
    image = image * 3.0  # kernel values spread over (0, 1)
    assert torch.autograd.gradcheck(
        lambda x: multi_view_crf_loss(x, image, valid, sigma_intensity=0.5, **kw), (logits,))


def test_no_gradient_to_image_and_no_grad_mode():
    logits, image, _ = _inputs((1, 2, 4, 4, 3))
    image.requires_grad_(True)
    loss = multi_view_crf_loss(logits, image, radius=2)
    loss.backward()
    assert image.grad is None and logits.grad is not None
    with torch.no_grad():
        again = multi_view_crf_loss(logits, image, radius=2)
    assert again.item() == pytest.approx(loss.item(), rel=1e-12)


def test_autocast_computes_in_float32():
    logits, image, _ = _inputs((1, 2, 6, 5, 4), dtype=torch.float32)
    expected = multi_view_crf_loss(logits.detach().bfloat16().float(), image, radius=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = multi_view_crf_loss(logits.bfloat16(), image.bfloat16(), radius=2)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), rel=1e-2)


def test_module_wrapper_matches_function():
    logits, image, valid = _inputs((2, 2, 6, 5, 4), with_valid=True)
    module = MultiViewCRFLoss(radius=2, views=["axial", "coronal"], downsample_to=(3, 5, 4))
    assert "radius=2" in repr(module)
    expected = multi_view_crf_loss(logits, image, valid, radius=2, views=("axial", "coronal"),
                                   downsample_to=(3, 5, 4))
    assert module(logits, image, valid).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    logits, image, valid = _inputs((1, 2, 12, 10, 8), with_valid=True, dtype=torch.float32)
    value, grad = _value_and_grad(multi_view_crf_loss, logits, image, valid)
    gpu_value, gpu_grad = _value_and_grad(multi_view_crf_loss, logits.cuda(), image.cuda(), valid.cuda())
    torch.testing.assert_close(gpu_value.cpu(), value, rtol=1e-5, atol=0)
    torch.testing.assert_close(gpu_grad.cpu(), grad, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "kw, word",
    [
        (dict(radius=0), "radius"),
        (dict(radius=2.0), "radius"),
        (dict(sigma_xy=0.0), "sigma_xy"),
        (dict(sigma_intensity=-0.1), "sigma_intensity"),
        (dict(sigma_xy=float("nan")), "sigma_xy"),
        (dict(views=("axial", "transverse")), "views"),
        (dict(views=()), "views"),
        (dict(views=("axial", "axial")), "views"),
        (dict(downsample_to=(64, 64)), "downsample_to"),
        (dict(activation="relu"), "activation"),
    ],
)
def test_bad_options_raise(kw, word):
    logits, image, _ = _inputs((1, 2, 3, 3, 3))
    with pytest.raises(ValueError, match=word):
        MultiViewCRFLoss(**kw)
    with pytest.raises(ValueError, match=word):
        multi_view_crf_loss(logits, image, **kw)


@pytest.mark.parametrize(
    "logits_shape, image_shape, valid_shape, word",
    [
        ((2, 3, 3, 3), (1, 1, 3, 3, 3), None, "logits"),
        ((1, 2, 3, 3, 3), (1, 3, 3, 3), None, "image"),
        ((1, 2, 3, 3, 3), (1, 1, 3, 3, 4), None, "image"),
        ((1, 2, 3, 3, 3), (2, 1, 3, 3, 3), None, "image"),
        ((1, 2, 3, 3, 3), (1, 1, 3, 3, 3), (1, 2, 3, 3, 3), "valid"),
        ((1, 1, 3, 3, 3), (1, 1, 3, 3, 3), None, "softmax"),
    ],
)
def test_bad_inputs_raise(logits_shape, image_shape, valid_shape, word):
    valid = None if valid_shape is None else torch.ones(valid_shape)
    with pytest.raises(ValueError, match=word):
        multi_view_crf_loss(torch.zeros(logits_shape), torch.zeros(image_shape), valid)


# ------------------------------------------------------------------------------ compute_mode="chunked"

#: aten operators that launch no kernel: views, metadata, allocation without initialisation
_NO_KERNEL = {"aten::view", "aten::as_strided", "aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze",
              "aten::expand", "aten::permute", "aten::transpose", "aten::t", "aten::_reshape_alias", "aten::alias",
              "aten::detach", "aten::detach_", "aten::unfold", "aten::narrow", "aten::split", "aten::unbind",
              "aten::_unsafe_view", "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
              "aten::new_empty_strided", "aten::resize_", "aten::lift_fresh", "aten::result_type"}
#: aten operators that launch a kernel only when they copy
_COPY_IF_NEEDED = {"aten::to", "aten::contiguous", "aten::reshape", "aten::expand_as", "aten::view_as"}


def count_kernel_launches(step: Callable[[], object]) -> int:
    """Operators that launch work in one ``step()``, counted with the torch profiler on the CPU.

    Counted: the outermost aten operators (not called by another aten operator; the backward's included) except
    views, metadata and allocation-only operators and conversions that copy nothing. On CUDA each launches one
    kernel (a few of them two, e.g. a float64 sum of float32 values).
    """
    from torch.profiler import ProfilerActivity, profile

    def copies(event) -> bool:
        return event.name == "aten::copy_" or any(copies(child) for child in event.cpu_children)

    def outermost(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return False
            parent = parent.cpu_parent
        return True

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and outermost(e)
               and (copies(e) if e.name in _COPY_IF_NEEDED else e.name not in _NO_KERNEL))


def _paper_step(patch, grid, compute_mode):
    """One forward + backward of the paper preset's mCRF (``pipeline/presets.py``: radius 5, σ_xy 6, σ_I 0.05,
    three views, on a ``grid`` coarser than the patch; batch 2 with a valid mask)."""
    logits, image, valid = _inputs((2, 2, *patch), with_valid=True, dtype=torch.float32)
    loss_fn = MultiViewCRFLoss(sigma_xy=6.0, sigma_intensity=0.05, radius=5, downsample_to=grid,
                               compute_mode=compute_mode)

    def step():
        logits.grad = None
        loss_fn(logits, image, valid).backward()

    step()  # caches the per-offset constants
    return step


def test_chunked_launches_at_most_200_kernels_at_paper_settings():
    small = count_kernel_launches(_paper_step((32, 32, 12), (16, 16, 12), "chunked"))
    larger = count_kernel_launches(_paper_step((48, 48, 20), (24, 24, 20), "chunked"))
    per_offset = count_kernel_launches(_paper_step((32, 32, 12), (16, 16, 12), "per_offset"))
    assert small == larger <= 200  # whatever the size
    assert per_offset > 5 * small  # ~9 per offset (165 offsets at radius 5)


def test_auto_mode_is_per_offset_on_cpu_and_chunked_elsewhere():
    assert resolve_compute_mode("auto", torch.device("cpu")) == "per_offset"
    assert resolve_compute_mode("auto", torch.device("cuda", 0)) == "chunked"
    assert resolve_compute_mode("chunked", torch.device("cpu")) == "chunked"
    with pytest.raises(ValueError, match="compute_mode"):
        MultiViewCRFLoss(compute_mode="fused")
    with pytest.raises(ValueError, match="compute_mode"):
        multi_view_crf_loss(*_inputs((1, 2, 3, 3, 3))[:2], compute_mode="")
    assert "compute_mode='chunked'" in repr(MultiViewCRFLoss(compute_mode="chunked"))


CHUNKED_CASES = CASES + [dict(shape=(1, 2, 6, 5, 4), radius=12, valid=True),  # one window row per chunk
                         dict(shape=(2, 2, 7, 3, 5), radius=3, views=("sagittal",), n_img=2)]


@pytest.mark.parametrize("case", CHUNKED_CASES, ids=[f"case{i}" for i in range(len(CHUNKED_CASES))])
def test_chunked_matches_reference_float64(case):
    shape, n_img, with_valid, kw = _split(case)
    logits, image, valid = _inputs(shape, n_img=n_img, with_valid=with_valid)
    value, grad = _value_and_grad(multi_view_crf_loss, logits, image, valid, compute_mode="chunked", **kw)
    ref_value, ref_grad = _value_and_grad(reference_mcrf, logits, image, valid, **kw)
    assert value.dtype == torch.float64
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-13)


def test_chunked_float32_official_like_setting_and_hard_labels():
    logits, image, valid = _inputs((1, 2, 16, 14, 9), with_valid=True)
    ref_value, ref_grad = _value_and_grad(reference_mcrf, logits, image, valid)
    value, grad = _value_and_grad(multi_view_crf_loss, logits.float(), image.float(), valid, compute_mode="chunked")
    assert value.dtype == torch.float32 and grad.dtype == torch.float32
    torch.testing.assert_close(value.double(), ref_value, rtol=2e-5, atol=0)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-5 * ref_grad.abs().max().item())
    hard = torch.zeros(2, 2, 5, 4, 3)
    hard[:, 1] = 30.0
    hard_image = 0.1 * torch.randn(2, 1, 5, 4, 3)
    value, grad = _value_and_grad(multi_view_crf_loss, hard, hard_image, None, radius=2, compute_mode="chunked")
    assert value.item() == pytest.approx(0, abs=1e-7) and grad.abs().max().item() < 1e-9


def test_chunked_gradcheck_and_no_grad():
    logits, image, valid = _inputs((1, 2, 3, 3, 2), with_valid=True, seed=3)
    assert torch.autograd.gradcheck(lambda x: multi_view_crf_loss(x, 3.0 * image, valid, sigma_intensity=0.5,
                                                                  radius=2, compute_mode="chunked"), (logits,))
    with torch.no_grad():
        value = multi_view_crf_loss(logits, image, valid, radius=2, compute_mode="chunked")
    assert value.item() == pytest.approx(multi_view_crf_loss(logits, image, valid, radius=2).item(), rel=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compute_mode", ["per_offset", "chunked"])
def test_cuda_compute_modes_match_cpu(compute_mode):
    logits, image, valid = _inputs((2, 2, 12, 10, 8), with_valid=True, dtype=torch.float32)
    value, grad = _value_and_grad(multi_view_crf_loss, logits, image, valid, downsample_to=(6, 5, 8))
    gpu_value, gpu_grad = _value_and_grad(multi_view_crf_loss, logits.cuda(), image.cuda(), valid.cuda(),
                                          downsample_to=(6, 5, 8), compute_mode=compute_mode)
    torch.testing.assert_close(gpu_value.cpu(), value, rtol=1e-5, atol=0)
    torch.testing.assert_close(gpu_grad.cpu(), grad, rtol=1e-4, atol=1e-6)


def test_bilateral_energy_checks_its_arguments():
    prob = torch.rand(1, 1, 4, 4, 3)
    feat, valid = torch.zeros(1, 1, 4, 4, 3), torch.ones(1, 1, 4, 4, 3)
    good = dict(views=("axial",), radius=1, sigma_xy=1.0)
    assert bilateral_potts_energy(prob, feat, valid, **good).dtype == torch.float32
    for args, kw, word in [((prob.half(), feat.half()), good, "prob"),
                           ((prob, feat[..., :2]), good, "feat"),
                           ((prob, feat.double()), good, "feat"),
                           ((prob, feat, valid[:, :, :2]), good, "valid"),
                           ((prob, feat, valid.bool()), good, "valid"),
                           ((prob, feat), {**good, "views": ("axial", "axial")}, "views"),
                           ((prob, feat), {**good, "radius": 0}, "radius"),
                           ((prob, feat), {**good, "sigma_xy": 0.0}, "sigma_xy"),
                           ((prob, feat), {**good, "compute_mode": "cuda"}, "compute_mode")]:
        with pytest.raises(ValueError, match=word):
            bilateral_potts_energy(*args, **kw)
