"""The three networks: odd input sizes, registry, parameter counts, backward pass, padding wrapper."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from PASegLib.networks import (  # noqa: E402
    NETWORKS,
    PadToDivisible,
    build_network,
    count_parameters,
    network_divisor,
)

NAMES = ("unet2d5", "unet3d", "attention_unet")
EXPECTED_DIVISOR = {"unet2d5": (16, 16, 4), "unet3d": (16, 16, 16), "attention_unet": (16, 16, 16)}


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {name: build_network(name) for name in NAMES}


def test_registry_names_and_unknown_name():
    assert set(NAMES) <= set(NETWORKS.names())
    with pytest.raises(ValueError, match="unknown network 'vnet'"):
        build_network("vnet")
    with pytest.raises(ValueError, match="unknown network"):
        network_divisor("vnet")


@pytest.mark.parametrize("name", NAMES)
def test_odd_size_forward_backward(nets, name):
    net = nets[name]
    net.train()
    net.zero_grad(set_to_none=True)
    x = torch.randn(1, 1, 21, 19, 7)
    y = net(x)
    assert y.shape == (1, 2, 21, 19, 7)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("name", NAMES)
def test_divisible_size_needs_no_padding(nets, name):
    net = nets[name].eval()
    d = network_divisor(net)
    assert d == EXPECTED_DIVISOR[name] == network_divisor(name)
    x = torch.randn(1, 1, 2 * d[0], d[1], 2 * d[2])
    with torch.no_grad():
        assert torch.equal(net(x), net.net(x))
    assert net.padded_shape((37, 29, 13)) == tuple(-(-n // k) * k for n, k in zip((37, 29, 13), d))


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts(nets, name):
    n = count_parameters(nets[name])
    # 16 -> 256 channels, four downsamplings: a few million parameters (measured 5.6-5.9 M)
    assert 4_000_000 < n < 8_000_000, n
    assert count_parameters(nets[name], trainable_only=False) == n


def test_architecture_details(nets):
    convs = [m for m in nets["unet2d5"].modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs[0].kernel_size == (3, 3, 1)  # in-plane convolutions in the top levels
    assert any(m.kernel_size == (3, 3, 3) for m in convs)
    assert any(m.stride == (2, 2, 1) for m in convs)
    assert max(m.out_channels for m in convs) == 256
    for name in NAMES:
        modules = list(nets[name].modules())
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in modules)
        assert any(isinstance(m, torch.nn.InstanceNorm3d) for m in modules)
    assert network_divisor("unet2d5", inplane_only_downsamplings=0) == (16, 16, 16)


def test_channels_and_options():
    net = build_network("unet3d", in_channels=2, out_channels=3, filters=(4, 8, 16))
    assert network_divisor(net) == (4, 4, 4)
    assert net(torch.randn(2, 2, 7, 5, 9)).shape == (2, 3, 7, 5, 9)
    att = build_network("attention_unet", filters=(4, 8, 16), pad_mode="replicate")
    assert att(torch.randn(1, 1, 5, 6, 7)).shape == (1, 2, 5, 6, 7)
    for kwargs, match in [
        ({"filters": (16,)}, "filters"),
        ({"in_channels": 0}, "in_channels"),
        ({"pad_mode": "wrap"}, "mode"),
    ]:
        with pytest.raises(ValueError, match=match):
            build_network("unet2d5", **kwargs)
    with pytest.raises(ValueError, match="num_2d_stages"):
        build_network("unet2d5", num_2d_stages=9)


def test_padding_wrapper_errors():
    net = build_network("unet3d", filters=(4, 8, 16))
    with pytest.raises(ValueError, match=r"\[B, Ch, I, J, K\]"):
        net(torch.randn(1, 1, 4, 4))
    # a one-voxel bottleneck is avoided by padding one axis further (instance norm needs > 1 voxel)
    assert net.padded_shape((3, 1, 4)) == (8, 4, 4)
    for training in (True, False):
        net.train(training)
        assert net(torch.randn(1, 1, 3, 1, 4)).shape == (1, 2, 3, 1, 4)
    with pytest.raises(ValueError, match="divisor"):
        PadToDivisible(torch.nn.Identity(), (2, 2))


# -- SliceFoldConv3d: the CPU fast path of unet2d5 ------------------------------------------------------

FOLD_CASES = [  # kernel, stride, padding, dilation, groups, bias
    ((3, 3, 1), (1, 1, 1), (1, 1, 0), (1, 1, 1), 1, False),  # unet2d5 levels 0-1
    ((3, 3, 1), (2, 2, 1), (1, 1, 0), (1, 1, 1), 1, False),  # in-plane downsampling
    ((3, 3, 3), (2, 2, 1), (1, 1, 1), (1, 1, 1), 1, False),  # first 3D level, anisotropic stride
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), 1, True),
    ((3, 3, 1), (2, 2, 2), (1, 1, 0), (1, 1, 1), 1, False),  # official-pooling variant
    ((3, 2, 3), (1, 2, 3), (0, 1, 2), (2, 1, 2), 1, True),
    ((3, 3, 1), (1, 1, 1), (1, 1, 0), (1, 2, 1), 2, True),  # grouped, dilated
]


@pytest.mark.parametrize("case", FOLD_CASES)
@pytest.mark.parametrize("shape", [(2, 4, 9, 7, 5), (1, 4, 11, 6, 13)])
def test_slice_fold_conv_equals_conv3d(case, shape):
    from PASegLib.networks.fast_conv import SliceFoldConv3d

    kernel, stride, padding, dilation, groups, bias = case
    torch.manual_seed(1)
    ref = torch.nn.Conv3d(4, 6, kernel, stride, padding, dilation, groups, bias)
    fast = SliceFoldConv3d.from_conv3d(ref, mode="always")
    assert fast.weight is ref.weight and fast.bias is ref.bias
    x = torch.randn(shape, requires_grad=True)
    y_ref, y = ref(x), fast(x)
    assert fast.uses_fold(x) and y.shape == y_ref.shape and y.is_contiguous()
    g = torch.randn_like(y_ref)
    params = [x, ref.weight] + ([ref.bias] if bias else [])
    grads_ref = torch.autograd.grad(y_ref, params, g)
    grads = torch.autograd.grad(y, params, g)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads_ref):  # input, weight (and bias) gradients
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def test_slice_fold_conv_gradcheck_and_memory_formats():
    from PASegLib.networks.fast_conv import conv3d_as_conv2d

    x = torch.randn(2, 2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w: conv3d_as_conv2d(x, w, None, (1, 2, 2), (1, 1, 1), (1, 1, 1))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, w), fast_mode=True)
    x_cl = torch.randn(2, 3, 5, 4, 6).contiguous(memory_format=torch.channels_last_3d)
    w_cl = torch.randn(4, 3, 3, 3, 3)
    y_cl = conv3d_as_conv2d(x_cl, w_cl, None, (1, 2, 2), (1, 1, 1), (1, 1, 1))
    assert y_cl.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(y_cl, torch.nn.functional.conv3d(x_cl, w_cl, None, (1, 2, 2), 1))
    # device-agnostic: only views, copies and F.conv2d (shape propagation on the meta device)
    y_meta = fn(torch.empty(2, 3, 5, 4, 6, device="meta"), torch.empty(4, 3, 3, 3, 3, device="meta"))
    assert y_meta.shape == (2, 4, 5, 2, 3)


def test_slice_fold_conv_dispatch():
    from PASegLib.networks.fast_conv import SliceFoldConv3d

    flat = SliceFoldConv3d(16, 16, (3, 3, 1), padding=(1, 1, 0))
    deep = SliceFoldConv3d(16, 16, 3, padding=1)
    small, large = torch.empty(1, 16, 8, 8, 4), torch.empty(1, 16, 48, 48, 4)  # N*C*I*J <= / > 20480
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert flat.uses_fold(small) and deep.uses_fold(small)  # torch would use slow_conv3d
        assert flat.uses_fold(large) and not deep.uses_fold(large)  # avoid oneDNN's GEMM weight gradient
        with torch.no_grad():
            assert not flat.uses_fold(large)  # no weight gradient: oneDNN's 3D kernels are faster
        torch.set_num_threads(1)
        assert not flat.uses_fold(large) and flat.uses_fold(small)
    finally:
        torch.set_num_threads(threads)
    assert not SliceFoldConv3d(16, 2, 1).uses_fold(small)  # pointwise
    assert not flat.uses_fold(small.to("meta"))  # not a fold device (CUDA keeps cuDNN's 3D kernels)
    assert not SliceFoldConv3d(16, 16, 3, padding=1, padding_mode="reflect").uses_fold(small)
    with pytest.raises(ValueError, match="mode"):
        SliceFoldConv3d.from_conv3d(torch.nn.Conv3d(1, 1, 3), mode="fast")


@pytest.mark.parametrize("kwargs", [{}, {"inplane_only_downsamplings": 0}])
def test_unet2d5_fold_keeps_state_dict_and_outputs(kwargs):
    from monai.networks.nets import DynUNet

    from PASegLib.networks.fast_conv import SliceFoldConv3d

    torch.manual_seed(3)
    fast = build_network("unet2d5", filters=(8, 16, 32, 64), **kwargs).train()
    torch.manual_seed(3)
    plain = build_network("unet2d5", filters=(8, 16, 32, 64), fold_convs=False, **kwargs).train()
    assert any(isinstance(m, SliceFoldConv3d) for m in fast.modules())
    assert not any(isinstance(m, SliceFoldConv3d) for m in plain.modules())
    assert isinstance(plain.net, DynUNet) and type(fast.net) is DynUNet
    sd_fast, sd_plain = fast.state_dict(), plain.state_dict()
    assert list(sd_fast) == list(sd_plain)
    assert all(sd_fast[k].shape == sd_plain[k].shape and torch.equal(sd_fast[k], sd_plain[k]) for k in sd_fast)
    plain.load_state_dict(sd_fast, strict=True)  # checkpoints load both ways
    for mode, shape in (("always", (1, 1, 21, 19, 7)), ("auto", (2, 1, 16, 16, 8))):
        for m in fast.modules():
            if isinstance(m, SliceFoldConv3d):
                m.mode = mode
        x = torch.randn(shape)
        y_fast, y_plain = fast(x), plain(x)
        torch.testing.assert_close(y_fast, y_plain, rtol=1e-4, atol=1e-4)
        y_fast.square().mean().backward()
        y_plain.square().mean().backward()
        for (name, p), q in zip(fast.named_parameters(), plain.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=name)
            p.grad = q.grad = None


def test_unet2d5_fold_autocast_and_channels_last():
    torch.manual_seed(4)
    net = build_network("unet2d5", filters=(8, 16, 32, 64)).eval()
    x = torch.randn(1, 1, 20, 18, 6)
    with torch.no_grad():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y_amp = net(x)
        net_cl = net.to(memory_format=torch.channels_last_3d)
        y_cl = net_cl(x.contiguous(memory_format=torch.channels_last_3d))
    assert y_amp.dtype == torch.bfloat16 and torch.isfinite(y_amp).all()
    torch.testing.assert_close(y_amp.float(), ref, rtol=0.1, atol=0.1 * float(ref.abs().max()))
    torch.testing.assert_close(y_cl, ref, rtol=1e-4, atol=1e-4)
    net_cl.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = net_cl(x.contiguous(memory_format=torch.channels_last_3d)).float().square().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net_cl.parameters())
