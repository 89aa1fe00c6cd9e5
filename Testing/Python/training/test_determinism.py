"""Deterministic mode and the choice of device, on the CPU (no GPU here: torch.cuda's answers are monkeypatched).

* ``seed_everything(deterministic=True)`` sets ``CUBLAS_WORKSPACE_CONFIG`` (kept when the environment sets it),
  turns torch's deterministic algorithms on and cuDNN's benchmarking off; ``False`` undoes it.
* ``CUDA_NONDETERMINISTIC_OPERATIONS`` names exactly the operations of real stage-one and SCM iterations that
  torch has no deterministic CUDA kernel for (traced on the CPU: the same operators run on a GPU).
* ``resolve_device`` and ``device_inventory`` check the GPU's compute capability against
  ``torch.cuda.get_arch_list()``: ``auto`` falls back to the CPU with a note, an explicit ``cuda`` is refused.
"""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
import torch

from PASegLib.training import runtime
from PASegLib.training.config import TrainConfig
from PASegLib.training.launch import train_from_dataset
from PASegLib.training.runtime import (
    CUBLAS_WORKSPACE_CONFIG,
    CUDA_NONDETERMINISTIC_OPERATIONS,
    architecture_supported,
    device_inventory,
    resolve_device,
    seed_everything,
)


@pytest.fixture
def restore_determinism():
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def test_deterministic_mode_sets_what_cuda_needs(monkeypatch, restore_determinism, capsys):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    calls = []
    original = torch.use_deterministic_algorithms
    monkeypatch.setattr(torch, "use_deterministic_algorithms",
                        lambda mode, **kw: calls.append((mode, kw)) or original(mode, **kw))
    seed_everything(3, deterministic=True)
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE_CONFIG == ":4096:8"
    assert calls == [(True, {"warn_only": True})] and torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert capsys.readouterr().err == ""  # no GPU: nothing to say
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's choice is kept
    seed_everything(3, deterministic=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    seed_everything(3, deterministic=False)  # an earlier deterministic run in the process is undone
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    assert not torch.backends.cudnn.deterministic


def test_deterministic_mode_on_a_gpu_says_which_operations_stay_nondeterministic(monkeypatch, restore_determinism,
                                                                                 capsys):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seed_everything(0, deterministic=True)
    err = capsys.readouterr().err
    assert err.startswith("note: deterministic mode on CUDA (CUBLAS_WORKSPACE_CONFIG=:0:0 is not :4096:8 or :16:8")
    assert all(op in err for op in CUDA_NONDETERMINISTIC_OPERATIONS)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    seed_everything(0, deterministic=True)
    assert "(CUBLAS_WORKSPACE_CONFIG=:4096:8); no deterministic CUDA kernel exists for" in capsys.readouterr().err


#: Operators that have no deterministic CUDA kernel in torch (``torch.use_deterministic_algorithms``' list of
#: those that raise in strict mode), by the names the dispatcher gives them.
TORCH_CUDA_NONDETERMINISTIC = {
    "avg_pool3d_backward", "adaptive_avg_pool2d_backward", "_adaptive_avg_pool2d_backward",
    "adaptive_avg_pool3d_backward", "_adaptive_avg_pool3d_backward", "adaptive_max_pool2d_backward",
    "fractional_max_pool2d_backward", "fractional_max_pool3d_backward", "max_unpool1d", "max_unpool2d",
    "max_unpool3d", "upsample_linear1d_backward", "upsample_bilinear2d_backward", "upsample_bicubic2d_backward",
    "upsample_trilinear3d_backward", "_upsample_bilinear2d_aa_backward", "_upsample_bicubic2d_aa_backward",
    "reflection_pad1d_backward", "reflection_pad2d_backward", "reflection_pad3d_backward", "nll_loss2d_forward",
    "_ctc_loss_backward", "embedding_bag", "_embedding_bag_backward", "put_", "put", "histc", "bincount",
    "median", "nanmedian", "grid_sampler_2d_backward", "grid_sampler_3d_backward", "cumsum", "cumsum_",
}


@pytest.mark.slow
def test_the_nondeterministic_cuda_operations_of_training_are_named(tiny_dataset, tmp_path, monkeypatch):
    from torch.utils._python_dispatch import TorchDispatchMode

    from PASegLib.training.scm import SCMTrainer
    from PASegLib.training.stage1 import Stage1Trainer

    seen = set()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    for cls in (Stage1Trainer, SCMTrainer):  # every operator of the optimisation steps, backward included
        def traced(self, batch, epoch_float, _step=cls.train_step):
            with Record():
                return _step(self, batch, epoch_float)

        monkeypatch.setattr(cls, "train_step", traced)
    common = dict(epochs=1, iterations_per_epoch=1, patch_size=(32, 32, 16), validate_every=1, num_threads=1,
                  deterministic=True, device="cpu", crf_downsample_to=(16, 16, 8))
    runs = []
    for net in ("unet3d", "unet2d5"):
        runs.append(tmp_path / net)
        assert train_from_dataset(tiny_dataset, runs[-1], TrainConfig(network=net, **common), stream=io.StringIO()) == 0
    scm = TrainConfig(stage=2, network="unet3d", aux_network="unet2d5", **common)
    assert train_from_dataset(tiny_dataset, tmp_path / "scm", scm, init_runs=runs, stream=io.StringIO()) == 0
    assert "convolution_backward" in seen  # the trace saw the backward passes
    assert seen & TORCH_CUDA_NONDETERMINISTIC == set(CUDA_NONDETERMINISTIC_OPERATIONS)


# -- the GPU's architecture ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("capability, archs, supported", [
    ((8, 6), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], True),
    ((8, 9), ["sm_80", "sm_86"], True),  # same major version, newer minor: sm_86 binaries run
    ((8, 0), ["sm_86", "sm_90"], False),  # an older minor cannot run sm_86 binaries
    ((12, 0), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], False),  # Blackwell on a cu121 torch
    ((12, 0), ["sm_80", "sm_90", "compute_90"], True),  # PTX: the driver compiles it for newer GPUs
    ((9, 0), ["sm_90a"], True),
    ((10, 0), ["sm_90a", "sm_100"], True),
    ((10, 3), ["sm_90a", "sm_100a"], False),  # architecture-specific: 10.0 only
    ((3, 7), ["sm_50", "sm_60"], False),  # Kepler on a torch without it
    ((7, 5), [], True),  # torch does not say
])
def test_architecture_supported(capability, archs, supported):
    assert architecture_supported(capability, archs) is supported


def _fake_gpus(monkeypatch, capabilities, archs):
    """torch.cuda answering as on a machine with GPUs of these compute capabilities and a torch built for archs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capabilities[i])
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(name=f"Fake GPU {capabilities[i][0]}.{capabilities[i][1]}",
                                                  total_memory=32 * 2**30))
    monkeypatch.setattr(torch.version, "cuda", "12.1")


CU121 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


def test_auto_falls_back_to_the_cpu_when_torch_cannot_run_on_the_gpu(monkeypatch, capsys):
    _fake_gpus(monkeypatch, [(12, 0)], CU121)
    assert resolve_device("auto") == torch.device("cpu")
    err = capsys.readouterr().err
    assert err.startswith("note: GPU 0 (Fake GPU 12.0, compute capability 12.0) cannot be used by this torch")
    assert "built for sm_50–sm_90" in err and "running on the CPU" in err
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=rf"device '{name}': GPU 0 \(Fake GPU 12.0, compute capability 12.0\) "
                                             rf"cannot be used by this torch .* or use --device cpu"):
            resolve_device(name)
    _fake_gpus(monkeypatch, [(12, 0), (8, 6)], CU121)  # the first GPU it can run on
    assert resolve_device("auto") == torch.device("cuda:1") and capsys.readouterr().err == ""
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    _fake_gpus(monkeypatch, [(8, 6)], CU121)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda") == torch.device("cuda")


def test_the_inventory_names_each_gpus_capability_and_support(monkeypatch, capsys):
    _fake_gpus(monkeypatch, [(8, 6), (12, 0)], CU121)
    info = device_inventory()
    assert info["arch_list"] == CU121 and info["cuda_version"] == "12.1"
    assert [(g["capability"], g["supported"]) for g in info["cuda"]] == [("8.6", True), ("12.0", False)]
    from PASegLib.cli.main import main

    assert main(["devices", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["cuda"][1]["supported"] is False
    assert "cuda:1  Fake GPU 12.0  32.0 GB  compute capability 12.0: not supported by this torch" in out
    assert runtime.gpu_problem(0) is None and "cannot be used" in runtime.gpu_problem(1)
