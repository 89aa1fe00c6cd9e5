"""The training loop keeps the device busy: at most one host–device synchronisation per iteration (counted on the
CPU), a non-finite loss still stops training with its message, and the next batch is cut in a background thread
with the patches, losses and weights of cutting it in the loop."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
import torch
from conftest import load_benchmark

from PASegLib.data.dataset import list_cases
from PASegLib.data.prepare import prepare_cases
from PASegLib.training.checkpoint import load_checkpoint
from PASegLib.training.config import TrainConfig
from PASegLib.training.scm import SCMTrainer
from PASegLib.training.stage1 import Stage1Trainer

#: the presets' stage-one losses (smoothed mCRF, VM) at a tiny patch; no validation
TINY = dict(patch_size=(32, 32, 16), crf_downsample_to=None, crf_image_sigma=1.0, deterministic=True, num_threads=1,
            validation_fraction=0.0, checkpoint_every=1, epochs=1, iterations_per_epoch=4)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_train_step")


@pytest.fixture(scope="module")
def cases(tiny_dataset, tmp_path_factory):
    return prepare_cases(list_cases(tiny_dataset), TrainConfig(**TINY), cache_dir=tmp_path_factory.mktemp("cache"),
                         workers=1)


@pytest.fixture(scope="module")
def stage1_runs(cases, tmp_path_factory):
    """Two one-iteration stage-one runs: the starting points of SCM."""
    root = tmp_path_factory.mktemp("init")
    for net in ("unet3d", "attention_unet"):
        config = TrainConfig(**{**TINY, "iterations_per_epoch": 1}, network=net)
        assert Stage1Trainer(config, root / net, cases, [], device=CPU, stream=io.StringIO()).run() == 0
    return [root / "unet3d", root / "attention_unet"]


def _scm(cases, stage1_runs, run, **options):
    config = TrainConfig(**TINY, stage=2, network="unet3d", aux_network="attention_unet", lr=1e-3)
    return SCMTrainer(config, run, cases, [], device=CPU, stream=io.StringIO(), init_runs=stage1_runs, **options)


def test_the_counter_counts_device_reads_only(bench):
    counter = bench.HostSyncCounter()
    net = torch.nn.Conv3d(1, 2, 3)
    counter.track(list(net.parameters()))
    with counter, torch.no_grad():
        out = net(torch.ones(1, 1, 4, 4, 4).to(CPU, non_blocking=True))
        loss = out.mean()
        float(loss), loss.item(), bool(loss > 0), out.sum(dim=(2, 3, 4)).tolist()  # four reads of device values
        out[out > 0]  # a boolean mask: the output size needs the values
        torch.tensor([1.0, 2.0], device=CPU)  # an upload from host data
        torch.arange(3).tolist(), float(torch.ones(())), torch.tensor([1.0]).item()  # host tensors: free
    assert counter.count == 6, counter.where
    assert sum(v for k, v in counter.where.items() if "test_host_syncs.py" in k) == 6


@pytest.mark.slow
def test_stage_one_and_scm_iterations_sync_at_most_once(bench, cases, stage1_runs, tmp_path):
    """Counted over iterations 5–12 of a run (the first four may set up constants on the device once)."""
    config = TrainConfig(**{**TINY, "iterations_per_epoch": 12})
    scm = config.replace(stage=2, network="unet3d", aux_network="attention_unet", lr=1e-3)
    for name, make in (("stage one", lambda run, every: Stage1Trainer(config, run, cases, [], device=CPU,
                                                                      stream=io.StringIO(), log_every=every)),
                       ("SCM", lambda run, every: SCMTrainer(scm, run, cases, [], device=CPU, stream=io.StringIO(),
                                                             init_runs=stage1_runs, log_every=every))):
        for every in (1, 4):
            result = bench.count_host_syncs(make(tmp_path / f"{name}-{every}", every), warmup=4)
            assert result["exit"] == 0 and result["iterations"] == 8
            loop = sum(v for k, v in result["where"].items() if "PASegLib/training/" in k)
            # the loop's own: one read of all the losses per logging interval
            assert loop == pytest.approx(1 / every), (name, every, result["where"])
            assert result["per_iteration"] <= 1.0, (name, every, result["where"])


def _nan_on_call(monkeypatch, cls, n):
    """``cls.terms`` returns a NaN ``loss`` on its ``n``-th call."""
    original, calls = cls.terms, {"n": 0}

    def terms(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            out = {**out, "loss": out["loss"] * float("nan")}
        return out

    monkeypatch.setattr(cls, "terms", terms)


@pytest.mark.slow
@pytest.mark.parametrize("every", [1, 3])
def test_a_non_finite_loss_stops_training_with_its_message(cases, stage1_runs, tmp_path, monkeypatch, every):
    from PASegLib.losses.distillation import SelfCrossMonitoringLoss
    from PASegLib.training.objective import Stage1Objective

    _nan_on_call(monkeypatch, Stage1Objective, 2)  # iteration 2 of 4: epoch 0.25
    trainer = Stage1Trainer(TrainConfig(**TINY), tmp_path / "s1", cases, [], device=CPU, stream=io.StringIO(),
                            log_every=every)
    with pytest.raises(FloatingPointError, match=r"the training loss became nan at epoch 0\.25; lower lr"):
        trainer.run()
    assert not (tmp_path / "s1" / "checkpoints").exists()  # nothing trained on it was saved
    monkeypatch.undo()
    _nan_on_call(monkeypatch, SelfCrossMonitoringLoss, 3)  # iteration 2: the primary's loss (then the auxiliary's)
    with pytest.raises(FloatingPointError, match="the SCM loss of the primary network became nan"):
        _scm(cases, stage1_runs, tmp_path / "scm", log_every=every).run()
    assert not (tmp_path / "scm" / "checkpoints").exists()


@pytest.mark.slow
def test_batches_are_cut_ahead_in_a_background_thread_and_train_alike(cases, tmp_path, monkeypatch):
    from PASegLib.data.sampler import PatchSampler

    threads, original = [], PatchSampler.cut

    def cut(self, draw):
        threads.append(threading.current_thread().name)
        return original(self, draw)

    monkeypatch.setattr(PatchSampler, "cut", cut)
    config = TrainConfig(**{**TINY, "epochs": 2, "iterations_per_epoch": 3, "batch_size": 2})
    runs = {}
    for prefetch in (False, True):
        threads.clear()
        trainer = Stage1Trainer(config, tmp_path / str(prefetch), cases, [], device=CPU, stream=io.StringIO(),
                                prefetch=prefetch)
        assert trainer.run() == 0
        runs[prefetch] = load_checkpoint(tmp_path / str(prefetch) / "checkpoints" / "last.pt")
        ahead = [name.startswith("paseg-batches") for name in threads]
        # 6 batches of 2 patches; with prefetch all but the first are cut in the background thread, across epochs
        assert ahead == ([False] * 2 + [True] * 10 if prefetch else [False] * 12)
    a, b = (runs[p]["networks"]["primary"]["state_dict"] for p in (False, True))
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[e["losses"] for e in json.loads(runs[p]["trainer"]["history"])
               if e["event"] == "iteration"] for p in (False, True)]
    assert len(losses[0]) == 6 and losses[0] == losses[1]
    assert runs[False]["rng"]["numpy"] == runs[True]["rng"]["numpy"]


def test_label_maps_travel_as_uint8_and_arrive_as_the_losses_need(cases):
    from PASegLib.data.sampler import PatchSampler
    from PASegLib.training.batches import BatchMaker

    sampler = PatchSampler(cases, TrainConfig(**{**TINY, "supervision": "full"}))
    maker = BatchMaker(sampler, CPU)
    rng = np.random.default_rng(0)
    host = maker.cut(maker.draw([0, 1], rng))
    assert host["partial"].dtype == host["label"].dtype == host["valid"].dtype == torch.uint8
    assert host["image"].dtype == torch.float32 and host["partial"].shape == (2, 1, 32, 32, 16)
    batch = maker.to_device(host)
    assert batch["partial"].dtype == batch["label"].dtype == torch.int64 and batch["valid"].dtype == torch.float32
    assert set(torch.unique(batch["partial"]).tolist()) <= {0, 1, 2}
    # every rank draws the whole global batch and keeps its slots
    draws = [BatchMaker(sampler, CPU, rank=r, world_size=2).draw([0, 1, 2, 3], np.random.default_rng(5))
             for r in (0, 1)]
    every = BatchMaker(sampler, CPU).draw([0, 1, 2, 3], np.random.default_rng(5))
    assert draws[0] == every[0::2] and draws[1] == every[1::2]
    with pytest.raises(ValueError, match="rank must be in"):
        BatchMaker(sampler, CPU, rank=2, world_size=2)
