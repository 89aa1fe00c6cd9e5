"""Benchmark: 2 gloo processes on the CPU against 1 process at the same global batch.

Both runs train the same tiny synthetic dataset (``paseg synth``, prepared once into a shared cache before
either run, so neither pays the preparation) in deterministic mode for ``--iterations`` iterations with global
batch 2 (one patch per process in the 2-process run), no validation, ``num_threads`` 0 (the 1-process run uses
every core, each of the 2 processes half of them). Side by side in one run:

* ``ddp_max_abs_loss_diff``: the largest absolute difference between the two loss trajectories (the 2-process
  loss is the mean over the ranks: the global batch's loss), and ``ddp_max_abs_weight_diff`` of the final
  weights — floating-point tolerance expected (the gradient sum is taken in another order);
* ``ddp_wall_ratio``: training-loop wall time (``model.json`` ``train_seconds``) of 2 processes / 1 process
  (the fastest of ``--repeats`` runs each — the least disturbed on a shared machine, where a 2-thread process
  suffers most from other load — run in the order 1, 2, 2, 1, … so that a drift of the load hits both alike;
  every run and the load averages are recorded), and ``ddp_command_wall_ratio`` for the whole commands (process
  start, rendezvous, cache reads);
* the gradient that DDP all-reduces every iteration for each network (MB, float32) and the estimated ring
  all-reduce time over NVLink and PCIe for 2–8 GPUs (``2(W−1)/W · size / bus bandwidth``).

On a 2-core machine no speed-up is expected: both processes share the cores that the single process used.

    python benchmarks/bench_ddp.py [--iterations 20] [--out bench_output/scale_ddp.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: achievable NCCL bus bandwidths, GB/s (order of magnitude: NVLink 4 of H100/H200 SXM, PCIe Gen4/Gen5 x16)
BUS_GBPS = {"nvlink4": 350.0, "pcie_gen5": 45.0, "pcie_gen4": 22.0}


def _run(cmd: List[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"bench_ddp: {' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def gradient_sizes() -> Dict[str, Any]:
    """Per network: parameters, the float32 gradient DDP all-reduces per iteration, estimated ring times."""
    from PASegLib.networks import build_network

    out = {}
    for name in ("unet2d5", "unet3d", "attention_unet"):
        params = sum(p.numel() for p in build_network(name).parameters() if p.requires_grad)
        mb = params * 4 / 1e6
        out[name] = {"parameters": params, "gradient_mb": round(mb, 1),
                     "allreduce_ms": {f"{bus}_{w}gpus": round(2 * (w - 1) / w * mb / 1e3 / gbps * 1e3, 2)
                                      for bus, gbps in BUS_GBPS.items() for w in (2, 4, 8)}}
    return out


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--network", default="unet2d5")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting (median)")
    parser.add_argument("--out", default=str(ROOT / "bench_output" / "scale_ddp.json"))
    args = parser.parse_args(argv)
    import torch

    from PASegLib.data.dataset import list_cases
    from PASegLib.data.prepare import prepare_cases
    from PASegLib.training.checkpoint import load_checkpoint
    from PASegLib.training.config import TrainConfig
    from PASegLib.utils.atomic import atomic_write_json

    work = Path(args.out).parent / "ddp_work"
    data, cache = work / "data", work / "cache"
    if not data.is_dir():
        for cmd in (["synth", str(data), "--cases", "4", "--shape", "64", "64", "32"],
                    ["simulate-clicks", str(data), "--quiet"]):
            subprocess.run([sys.executable, "-m", "PASegLib", *cmd], cwd=ROOT, check=True, capture_output=True)
    config = TrainConfig(network=args.network, patch_size=(64, 64, 32), crf_downsample_to=(32, 32, 32), epochs=1,
                         iterations_per_epoch=args.iterations, batch_size=2, validation_fraction=0.0,
                         deterministic=True, num_threads=0, device="cpu")
    (work / "config.json").write_text(json.dumps(config.to_dict()))
    prepare_cases(list_cases(data), config, cache_dir=cache)  # both runs read the prepared cases from here
    base = [sys.executable, "-m", "PASegLib", "train", str(data), "--config", str(work / "config.json"),
            "--device", "cpu", "--cache-dir", str(cache), "--quiet"]
    import shutil

    settings = {"one_process": [], "two_processes": ["--nproc-per-node", "2"]}
    order = [label for n in range(args.repeats) for label in (list(settings) if n % 2 == 0 else list(settings)[::-1])]
    runs: Dict[str, Dict[str, Any]] = {}
    load = [round(v, 2) for v in __import__("os").getloadavg()]
    for label in order:
        out = work / label
        shutil.rmtree(out, ignore_errors=True)
        wall = _run(base + ["--out", str(out)] + settings[label])
        ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
        run = runs.setdefault(label, {"command_runs": [], "train_runs": []})
        run["command_runs"].append(round(wall, 2))
        run["train_runs"].append(json.loads((out / "model.json").read_text())["train_seconds"])
        run["losses"] = [e["losses"]["loss"] for e in json.loads(ckpt["trainer"]["history"])
                         if e["event"] == "iteration"]
        run["weights"] = ckpt["networks"]["primary"]["state_dict"]
    load.extend(round(v, 2) for v in __import__("os").getloadavg())
    for run in runs.values():
        run["train_s"], run["command_s"] = min(run["train_runs"]), min(run["command_runs"])
    one, two = runs["one_process"], runs["two_processes"]
    summary = {
        "ddp_max_abs_loss_diff": max(abs(a - b) for a, b in zip(one["losses"], two["losses"])),
        "ddp_max_abs_weight_diff": max(float((one["weights"][k] - two["weights"][k]).abs().max())
                                       for k in one["weights"]),
        "ddp_wall_ratio": round(two["train_s"] / one["train_s"], 3),
        "ddp_command_wall_ratio": round(two["command_s"] / one["command_s"], 3),
        "iterations": args.iterations, "global_batch": 2, "network": args.network, "patch": [64, 64, 32],
        "train_s": {"one_process": one["train_runs"], "two_processes": two["train_runs"]},
        "command_s": {"one_process": one["command_runs"], "two_processes": two["command_runs"]},
        "load_average_1_5_15_before_after": load,
        "losses": {"one_process": one["losses"], "two_processes": two["losses"]},
        "gradients": gradient_sizes(), "bus_gbps_assumed": BUS_GBPS,
        "machine": f"{platform.processor() or platform.machine()}, {len(__import__('os').sched_getaffinity(0))} "
                   f"cores, torch {torch.__version__}, gloo",
    }
    atomic_write_json(Path(args.out), summary)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("losses", "gradients")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
