"""Running out of GPU memory ends in one clear message naming the setting to lower, never a traceback.

No GPU here: the networks' 3D convolutions raise torch's ``OutOfMemoryError`` (as CUDA does) while training,
while validating inside training, and while predicting, through the real ``paseg train`` / ``paseg predict``.
"""

from __future__ import annotations

import io
import json

import pytest
import torch
from conftest import cli_error

from PASegLib.cli.errors import gpu_memory_message, user_error_message
from PASegLib.cli.main import main
from PASegLib.training.config import TrainConfig
from PASegLib.training.launch import train_from_dataset

TORCH_MESSAGE = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which "
                 "1.50 GiB is free. Including non-PyTorch memory, this process has 77.50 GiB memory in use. If "
                 "reserved but unallocated memory is large try setting "
                 "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True")
FIGURES = "(Tried to allocate 2.00 GiB; GPU 0 has a total capacity of 79.10 GiB of which 1.50 GiB is free)"
TINY = {"patch_size": [32, 32, 16], "crf_downsample_to": None, "epochs": 1, "iterations_per_epoch": 1,
        "validate_every": 1, "num_threads": 1, "network": "unet3d", "validation_fraction": 0.5}


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("oom") / "run"
    assert train_from_dataset(tiny_dataset, run, TrainConfig(**TINY), stream=io.StringIO()) == 0
    return run


def _out_of_memory(monkeypatch, *, when=lambda: True):
    original = torch.nn.Conv3d.forward

    def forward(self, x):
        if when():
            raise torch.cuda.OutOfMemoryError(TORCH_MESSAGE)
        return original(self, x)

    monkeypatch.setattr(torch.nn.Conv3d, "forward", forward)


def _config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def test_out_of_memory_in_a_training_step_names_patch_and_batch_size(tiny_dataset, tmp_path, capsys, monkeypatch):
    _out_of_memory(monkeypatch, when=torch.is_grad_enabled)
    assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "run"), "--config", _config(tmp_path),
                 "--quiet"]) == 1
    captured = capsys.readouterr()
    message = cli_error(captured, "train")
    assert message.startswith("out of GPU memory while training: lower the patch size (--patch-size") and \
        "the batch size (--batch-size" in message and message.endswith(FIGURES), message
    assert "Traceback" not in captured.err and "internal error" not in captured.err


def test_out_of_memory_while_validating_names_the_patch_size(tiny_dataset, tmp_path, capsys, monkeypatch):
    _out_of_memory(monkeypatch, when=lambda: not torch.is_grad_enabled())  # the sliding window of validation
    assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "run"), "--config", _config(tmp_path),
                 "--quiet"]) == 1
    message = cli_error(capsys.readouterr(), "train")
    assert message.startswith("out of GPU memory while validating (sliding-window prediction of the held-out "
                              "cases): lower the patch size (--patch-size)"), message


def test_out_of_memory_while_predicting_names_the_sliding_window_batch(tiny_dataset, tiny_run, tmp_path, capsys,
                                                                        monkeypatch):
    _out_of_memory(monkeypatch)
    out = tmp_path / "pred"
    assert main(["predict", str(tiny_run), str(tiny_dataset / "synth_000_image.nii.gz"), "--out", str(out),
                 "--quiet", "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    message = cli_error(captured, "predict")
    assert message.startswith("out of GPU memory during sliding-window prediction: lower the sliding-window batch "
                              "(sw_batch_size"), message
    assert message.endswith(FIGURES) and "Traceback" not in captured.err
    assert not list(out.glob("*.nii.gz"))  # no partial output


@pytest.mark.parametrize("text", ["CUDA error: out of memory", "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling "
                                  "`cublasCreate(handle)`", "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
                                  "MPS backend out of memory (MPS allocated: 8.00 GB)"])
def test_allocation_failures_that_torch_raises_as_runtime_errors_count_as_out_of_memory(text):
    message = user_error_message(RuntimeError(text))
    assert message is not None and message.startswith("out of GPU memory: lower the patch size (--patch-size), the "
                                                      "batch size (--batch-size) or the sliding-window batch")
    assert text[:20] in message
    assert gpu_memory_message(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert user_error_message(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None  # a bug
