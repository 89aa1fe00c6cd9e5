"""Seconds and peak memory of whole-image sliding-window prediction for each PA-Seg network.

What is timed: :meth:`PASegLib.inference.predictor.Predictor.predict` on a 256×256×64 volume (``[i, j, k]``, 1 mm
voxels, so no resampling) with the training patch 128×128×48 and overlap 0.25 (MONAI sliding window,
Gaussian blending, 18 windows), i.e. z-scoring + all windows + thresholding. The networks have
**random weights** (seed 0): the cost of a forward pass does not depend on the weights.

* CPU: ``torch.set_num_threads(--threads)``; modes (``--cpu-modes``):

  * ``default`` — the Predictor's defaults: freed memory kept for reuse
    (:func:`~PASegLib.inference.cpu.cpu_heap_reuse`), bfloat16 autocast where the CPU computes it
    natively (:func:`~PASegLib.inference.cpu.cpu_has_native_bf16`; the result says ``cpu_bf16``);
  * ``fp32`` — heap reuse, float32 (``cpu_bf16=False``): the float32 probabilities, bit for bit;
  * ``plain`` — float32 without heap reuse (``heap_reuse=False``): the computation before those defaults;
  * ``bf16`` — heap reuse and bfloat16 autocast on any CPU (``cpu_bf16=True``; emulated where not native).

  Peak memory = peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of a fresh child
  process running only that configuration, so it includes the ~0.3–0.5 GB of torch/MONAI libraries;
  ``rss_before_mb`` is the resident size just before the first prediction. ``cpu_s`` is the process's CPU time
  (user + system, all threads) per prediction, less sensitive than ``seconds`` to other jobs on a shared machine.
* CUDA (when available): ``cudnn.benchmark``; modes ``fp32`` and ``amp`` (float16 autocast, as
  ``paseg predict`` does); peak memory = ``torch.cuda.max_memory_allocated``.

``seconds`` is the median of ``--repeats`` predictions after ``--warmup`` untimed ones, ``sec_min`` their
minimum. ``--quick`` runs a 128×128×32 volume with 64×64×32 patches, one repeat. Each configuration runs in its
own subprocess (the modes of one network one after another); readable lines go to stderr and the last stdout
line is one JSON object with every result (``--out-json`` also writes it). A full-size CPU run also gives
``predict_256x256x64_cpu_s`` (``{network: sec_min}`` of mode ``default``) and ``predict_256x256x64_cpu_s_<mode>``
for the other modes run.

Usage::

    python benchmarks/bench_predict.py            # CPU, plus CUDA if available
    python benchmarks/bench_predict.py --devices cpu --cpu-modes plain,fp32,default   # side by side
    python benchmarks/bench_predict.py --quick --networks unet2d5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Dict, List, Tuple

from _child import run_child, write_summary  # benchmarks/ is on sys.path when a benchmark script runs

NETWORK_NAMES = ("unet2d5", "unet3d", "attention_unet")
#: CPU mode → Predictor arguments
CPU_MODES = {"default": {}, "fp32": {"cpu_bf16": False}, "plain": {"cpu_bf16": False, "heap_reuse": False},
             "bf16": {"cpu_bf16": True}}
FULL = {"volume": (256, 256, 64), "patch": (128, 128, 48)}
QUICK = {"volume": (128, 128, 32), "patch": (64, 64, 32)}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _n_windows(volume: Tuple[int, ...], patch: Tuple[int, ...], overlap: float) -> int:
    """Number of windows MONAI's sliding window uses (scan interval ``patch·(1 − overlap)``)."""
    total = 1
    for n, p in zip(volume, patch):
        step = max(1, int(p * (1 - overlap)))
        total *= 1 if n <= p else -(-(n - p) // step) + 1
    return total


def run_one(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Time one (network, device, mode) configuration in this process."""
    import numpy as np
    import torch

    from PASegLib.image.geometry import ImageGeometry
    from PASegLib.image.io import Volume
    from PASegLib.inference.predictor import Predictor
    from PASegLib.networks import build_network, count_parameters
    from PASegLib.training.config import TrainConfig

    torch.manual_seed(0)
    device = torch.device(cfg["device"])
    if device.type == "cpu":
        torch.set_num_threads(cfg["threads"])
    else:
        torch.backends.cudnn.benchmark = True
    volume_shape, patch = tuple(cfg["volume"]), tuple(cfg["patch"])
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 20.0, volume_shape).astype(np.float32)
    volume = Volume(image, ImageGeometry(volume_shape))
    net = build_network(cfg["network"])
    config = TrainConfig(network=cfg["network"], patch_size=patch, sw_overlap=cfg["overlap"], amp=cfg["mode"] == "amp")
    options = CPU_MODES[cfg["mode"]] if device.type == "cpu" else {}
    predictor = Predictor([net], config, device=device, sw_batch_size=cfg["sw_batch_size"], **options)
    cpu_times: List[float] = []

    def once() -> float:
        t0, c0 = time.perf_counter(), _cpu_s()
        prediction = predictor.predict(volume)
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert prediction.probability.shape == volume_shape
        cpu_times.append(_cpu_s() - c0)
        return time.perf_counter() - t0

    rss_before = _rss_mb()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(cfg["warmup"]):
        once()
    cpu_times.clear()
    times: List[float] = [once() for _ in range(cfg["repeats"])]
    result = {
        "network": cfg["network"], "device": device.type, "mode": cfg["mode"], "sw_batch_size": predictor.sw_batch_size,
        "cpu_bf16": predictor.cpu_bf16, "heap_reuse": predictor.heap_reuse,
        "volume": "x".join(map(str, volume_shape)), "patch": "x".join(map(str, patch)), "overlap": cfg["overlap"],
        "windows": _n_windows(volume_shape, patch, cfg["overlap"]), "params": count_parameters(net),
        "seconds": round(statistics.median(times), 3), "sec_min": round(min(times), 3),
        "sec_max": round(max(times), 3), "repeats": cfg["repeats"], "warmup": cfg["warmup"],
    }
    result["sec_per_window"] = round(result["seconds"] / result["windows"], 4)
    if device.type == "cuda":
        result["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["gpu"] = torch.cuda.get_device_name(device)
    else:
        result["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        result["rss_before_mb"] = round(rss_before, 1)
        result["threads"] = torch.get_num_threads()
        result["cpu_s"] = round(statistics.median(cpu_times), 3)
        result["cpu_s_min"] = round(min(cpu_times), 3)
    return result


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default=",".join(NETWORK_NAMES), help="comma-separated network names")
    parser.add_argument("--devices", default="auto", help="cpu, cuda, or auto (cpu + cuda if available)")
    parser.add_argument("--quick", action="store_true", help="128x128x32 volume, 64x64x32 patches, 1 repeat")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed predictions first (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed predictions (default CPU 3, CUDA 10)")
    parser.add_argument("--gpu-modes", default="fp32,amp")
    parser.add_argument("--sw-batch-size", type=int, default=1, help="windows per forward pass (default 1)")
    parser.add_argument("--cpu-modes", default="default",
                        help=f"comma-separated, of {', '.join(CPU_MODES)} (default: default)")
    parser.add_argument("--out-json", default=None, help="also write the JSON summary to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(json.loads(args.child))))
        return 0

    import torch

    sizes = QUICK if args.quick else FULL
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [d.strip() for d in args.devices.split(",")]
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices cuda requested but torch.cuda.is_available() is False")
    cpu_modes = [m.strip() for m in args.cpu_modes.split(",") if m.strip()]
    unknown = sorted(set(cpu_modes) - set(CPU_MODES))
    if unknown or not cpu_modes:
        parser.error(f"--cpu-modes: unknown mode(s) {unknown}; choose from {', '.join(CPU_MODES)}")
    info: Dict[str, Any] = {
        "benchmark": "predict", "weights": "random (seed 0)", "quick": args.quick,
        "volume": "x".join(map(str, sizes["volume"])), "patch": "x".join(map(str, sizes["patch"])),
        "overlap": args.overlap, "torch": torch.__version__, "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_avg_start": [round(v, 2) for v in os.getloadavg()],
        "cuda_device": torch.cuda.get_device_name(0) if "cuda" in devices else None, "results": [],
    }
    for device in devices:
        modes = cpu_modes if device == "cpu" else [m.strip() for m in args.gpu_modes.split(",")]
        repeats = args.repeats or (1 if args.quick else 3 if device == "cpu" else 10)
        for network in networks:
            for mode in modes:
                cfg = {"network": network, "device": device, "mode": mode, "threads": args.threads,
                       "volume": list(sizes["volume"]), "patch": list(sizes["patch"]), "overlap": args.overlap,
                       "warmup": args.warmup, "repeats": repeats, "sw_batch_size": args.sw_batch_size}
                res = run_child(__file__, cfg)
                if "error" in res:
                    res = {"network": network, "device": device, "mode": mode, **res}
                info["results"].append(res)
                print(f"{device:4s} {mode:8s} {network:15s} {res.get('seconds', float('nan')):8.3f} s  "
                      f"(min {res.get('sec_min', float('nan')):.3f}, CPU {res.get('cpu_s', float('nan')):.2f} s; "
                      f"{res.get('windows', '?')} windows)  peak {res.get('peak_mem_mb', float('nan')):8.1f} MB  "
                      f"{res.get('error', '')}", file=sys.stderr, flush=True)
    if not args.quick:
        for mode in CPU_MODES:
            found = {r["network"]: r["sec_min"] for r in info["results"]
                     if r.get("device") == "cpu" and r.get("mode") == mode and "sec_min" in r}
            if found:
                info["predict_256x256x64_cpu_s" + ("" if mode == "default" else f"_{mode}")] = found
    info["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    return write_summary(info, args.out_json)


if __name__ == "__main__":
    sys.exit(main())
