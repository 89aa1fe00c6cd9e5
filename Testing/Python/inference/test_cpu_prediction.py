"""CPU prediction settings: foreground-only blending, windows per forward pass, bfloat16 autocast, heap reuse.

In float32 the fast path must give the probabilities of the plain computation (both channels blended, no
allocator change) bit for bit, and any number of windows per pass the same up to float rounding; bfloat16
(the default only where the CPU computes it natively) is close, never equal.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import Volume
from PASegLib.inference.cpu import cpu_has_native_bf16
from PASegLib.inference.predictor import Predictor
from PASegLib.networks import build_network
from PASegLib.training.config import TrainConfig
from PASegLib.training.runtime import sliding_window_probability

SHAPE = (40, 36, 20)
PATCH = (24, 24, 16)  # 2 × 2 × 2 = 8 windows at overlap 0.25
NETWORKS = ("unet2d5", "unet3d", "attention_unet")


def small_net(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(name, filters=(4, 8, 16)).eval()


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def both_channels_reference(networks, arr: np.ndarray) -> np.ndarray:
    """The plain computation: every channel blended, one window per pass, autograd off (``no_grad``)."""
    from monai.inferers import sliding_window_inference

    def predictor(patch):
        return sum(torch.softmax(net(patch).float(), dim=1) for net in networks) / len(networks)

    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(arr)[None, None], roi_size=PATCH, sw_batch_size=1,
                                       predictor=predictor, overlap=0.25, mode="gaussian", progress=False)
    return out[0, 1].numpy()


@pytest.mark.parametrize("name", NETWORKS)
def test_foreground_only_blending_is_bit_identical(name):
    nets = [small_net(name)]
    arr = image()
    got = sliding_window_probability(nets, arr, patch_size=PATCH, sw_batch_size=1)
    assert got.dtype == np.float32 and got.shape == SHAPE
    np.testing.assert_array_equal(got, both_channels_reference(nets, arr))


def test_ensemble_foreground_only_blending_is_bit_identical():
    nets = [small_net("unet3d", 0), small_net("attention_unet", 1)]
    arr = image(1)
    got = sliding_window_probability(nets, arr, patch_size=PATCH, sw_batch_size=1)
    np.testing.assert_array_equal(got, both_channels_reference(nets, arr))


@pytest.mark.parametrize("name", NETWORKS)
def test_windows_per_pass_change_only_float_rounding(name):
    nets = [small_net(name)]
    arr = image()
    one = sliding_window_probability(nets, arr, patch_size=PATCH, sw_batch_size=1)
    for batch in (2, 4, 8):
        many = sliding_window_probability(nets, arr, patch_size=PATCH, sw_batch_size=batch)
        assert np.abs(many - one).max() < 1e-5, batch


def test_cpu_bf16_is_in_effect_and_close():
    nets = [small_net("unet3d")]
    arr = image()
    fp32 = sliding_window_probability(nets, arr, patch_size=PATCH, sw_batch_size=4)
    bf16 = sliding_window_probability(nets, arr, patch_size=PATCH, sw_batch_size=4, cpu_bf16=True)
    assert bf16.dtype == np.float32
    diff = np.abs(bf16 - fp32).max()
    assert 0 < diff < 0.1  # bfloat16 keeps 8 bits of mantissa: close, never equal
    assert all(p.dtype == torch.float32 for p in nets[0].parameters())  # autocast leaves the weights alone


def test_sliding_window_rejects_bad_batch():
    with pytest.raises(ValueError, match="sw_batch_size"):
        sliding_window_probability([small_net("unet3d")], image(), patch_size=PATCH, sw_batch_size=0)


def _volume(seed: int = 0) -> Volume:
    return Volume(100 + 20 * image(seed), ImageGeometry(SHAPE))


def test_predictor_cpu_defaults_and_checks():
    predictor = Predictor([small_net("unet3d")], TrainConfig(network="unet3d", patch_size=PATCH))
    assert predictor.sw_batch_size == 1 and predictor.heap_reuse is True
    assert predictor.cpu_bf16 is cpu_has_native_bf16()
    assert predictor.describe()["cpu_bf16"] is predictor.cpu_bf16
    for flag in (False, True):
        assert Predictor([small_net("unet3d")], TrainConfig(patch_size=PATCH), cpu_bf16=flag).cpu_bf16 is flag
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="sw_batch_size"):
            Predictor([small_net("unet3d")], TrainConfig(patch_size=PATCH), sw_batch_size=bad)
    for key in ("cpu_bf16", "heap_reuse"):
        with pytest.raises(ValueError, match=key):
            Predictor([small_net("unet3d")], TrainConfig(patch_size=PATCH), **{key: "yes"})


@pytest.mark.parametrize("name", NETWORKS)
def test_heap_reuse_leaves_the_float32_result_bit_identical(name):
    config = TrainConfig(network=name, patch_size=PATCH)
    volume = _volume()
    fast = Predictor([small_net(name)], config, cpu_bf16=False).predict(volume)
    plain = Predictor([small_net(name)], config, cpu_bf16=False, heap_reuse=False).predict(volume)
    np.testing.assert_array_equal(fast.probability, plain.probability)
    np.testing.assert_array_equal(fast.labels, plain.labels)


def test_predictor_bf16_is_close_to_float32():
    config = TrainConfig(network="unet3d", patch_size=PATCH)
    volume = _volume()
    fp32 = Predictor([small_net("unet3d")], config, cpu_bf16=False).predict(volume).probability
    bf16 = Predictor([small_net("unet3d")], config, cpu_bf16=True).predict(volume).probability
    assert 0 < np.abs(bf16 - fp32).max() < 0.1


HEAP_CHURN = """
import json, resource
import numpy as np
from PASegLib.inference.cpu import cpu_heap_reuse

def churn(n=4, mib=64):  # page faults of n rounds of allocating, filling and freeing a mib MiB array
    # numpy's plain malloc: torch's 64-byte-aligned blocks (posix_memalign) need a little more than a freed block of
    # their own size, so whether one is reused depends on what else was allocated meanwhile (measured: 1-4 of 4
    # rounds faulting in fresh processes); the activations of a prediction come in many sizes
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        t = np.empty(mib * 2**20 // 4, dtype=np.float32)
        t.fill(1.0)
        del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

one = churn(1)
outside = churn()
with cpu_heap_reuse() as active:
    inside = churn()
after = churn()
print(json.dumps({"active": active, "one": one, "outside": outside, "inside": inside, "after": after}))
"""


def test_cpu_heap_reuse_avoids_page_faults_and_restores():
    """Measured in a fresh process: malloc's state is process-wide, and another test's prediction thread in this
    worker (inside its own ``cpu_heap_reuse``) would keep the heap in reuse mode here."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", HEAP_CHURN], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.strip().splitlines()[-1])
    if not r["active"]:
        pytest.skip("the C library is not glibc: cpu_heap_reuse is a no-op")
    # (fault counts, not pages: transparent huge pages fault 2 MB at a time)
    assert r["outside"] > 3 * r["one"]  # a block above 32 MB is mmapped afresh each time: it faults in every round
    assert r["inside"] < r["outside"] // 2  # the heap grows once, then the freed block is reused
    assert r["after"] > 3 * r["one"]  # restored: blocks above 32 MB are mmapped (and returned) again


def test_cpu_heap_reuse_nested_restores_only_at_the_last_exit():
    from PASegLib.inference import cpu

    if cpu._glibc() is None:
        pytest.skip("the C library is not glibc: cpu_heap_reuse is a no-op")
    users = cpu._heap_users  # another test's prediction thread in this worker may hold one
    with cpu.cpu_heap_reuse():
        with cpu.cpu_heap_reuse():
            assert cpu._heap_users == users + 2
        assert cpu._heap_users == users + 1  # the inner exit does not restore
    assert cpu._heap_users == users
