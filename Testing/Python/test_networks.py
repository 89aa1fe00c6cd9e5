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
