"""Seconds per training iteration and peak memory of the PA-Seg networks.

One iteration = forward + partial CE/Dice loss (Eq. 3–5) + backward + SGD step (the official optimiser:
lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5), batch 1, single-channel input, 2 classes, on patches
of 32×32×16, 64×64×32 and 128×128×48 voxels (``[i, j, k]``, ``k`` = slice axis).

* CPU: float32, ``torch.set_num_threads(--threads)``. Peak memory = peak resident set size of a fresh child
  process running only that configuration (so it includes the ~0.3–0.5 GB of torch/MONAI libraries;
  ``rss_before_mb`` is the resident size just before the first step).
* CUDA (when available): ``cudnn.benchmark``; modes ``fp32``, ``amp`` (bf16 autocast where supported, else
  fp16 with a gradient scaler) and ``amp_cl`` (amp + ``channels_last_3d``); peak memory =
  ``torch.cuda.max_memory_allocated``.

Each configuration runs in its own subprocess. Human-readable lines go to stderr; the last stdout line is
one JSON object with every result. On CPU ``cpu_sec_per_iter`` is the process CPU time per iteration
(median) next to the wall time: on a shared machine the gap shows time lost to other processes (with
OpenMP's default spin-waiting a contended thread also burns CPU time, so it is not a clean work measure
either). ``--rounds N`` runs the whole list of configurations N times, interleaved, so that variants compared
side by side see the same machine load; ``summary`` then holds the median over the rounds.

Variants of a network are given as options, e.g. the unet2d5 without its CPU convolution fast path
(:class:`PASegLib.networks.fast_conv.SliceFoldConv3d`) is ``unet2d5:fold_convs=0``.

Usage::

    python benchmarks/bench_train_step.py                  # CPU, plus CUDA if available
    python benchmarks/bench_train_step.py --devices cuda --sizes 128x128x48
    python benchmarks/bench_train_step.py --devices cpu --networks unet2d5,unet2d5:fold_convs=0 --rounds 2
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

from _child import run_child  # benchmarks/ is on sys.path when a benchmark script runs

NETWORK_NAMES = ("unet2d5", "unet3d", "attention_unet")
DEFAULT_SIZES = "32x32x16,64x64x32,128x128x48"


def _parse_size(text: str) -> Tuple[int, int, int]:
    parts = tuple(int(v) for v in text.lower().split("x"))
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must look like 128x128x48, got {text!r}")
    return parts  # type: ignore[return-value]


def _parse_network(spec: str) -> Tuple[str, Dict[str, Any]]:
    """``"unet2d5"`` or ``"unet2d5:inplane_only_downsamplings=0"`` (``;``-separated integer options)."""
    name, _, rest = spec.partition(":")
    kwargs = {}
    for item in filter(None, rest.split(";")):
        key, _, value = item.partition("=")
        kwargs[key.strip()] = int(value)
    return name.strip(), kwargs


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _partial_labels(size: Tuple[int, int, int]):
    """Synthetic partial label map like a seed expansion: background, an unlabeled box, a foreground ball."""
    import torch

    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in size], indexing="ij")
    centre = [(n - 1) / 2 for n in size]
    labels = torch.zeros(size, dtype=torch.int64)
    inside_box = torch.ones(size, dtype=torch.bool)
    for g, c, n in zip(grids, centre, size):
        inside_box &= (g - c).abs() <= n / 4
    labels[inside_box] = 2
    radius = min(size) / 8
    ball = sum(((g - c) / radius) ** 2 for g, c in zip(grids, centre)) <= 1.0
    labels[ball] = 1
    return labels[None, None]


def run_one(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Time one (network, size, device, mode) configuration in this process."""
    import torch

    from PASegLib.losses.partial import PartialCEDiceLoss
    from PASegLib.networks import build_network, count_parameters

    torch.manual_seed(0)
    device = torch.device(cfg["device"])
    size = tuple(cfg["size"])
    mode = cfg["mode"]
    if device.type == "cpu":
        torch.set_num_threads(cfg["threads"])
    else:
        torch.backends.cudnn.benchmark = True
    name, kwargs = _parse_network(cfg["network"])
    net = build_network(name, **kwargs).to(device).train()
    image = torch.randn(1, 1, *size, device=device)
    labels = _partial_labels(size).to(device)
    channels_last = mode == "amp_cl"
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
        image = image.contiguous(memory_format=torch.channels_last_3d)
    use_amp = mode in ("amp", "amp_cl")
    bf16 = device.type == "cpu" or torch.cuda.is_bf16_supported()
    amp_dtype = torch.bfloat16 if bf16 else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    loss_fn = PartialCEDiceLoss(check_labels=False)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            logits = net(image)
        loss = loss_fn(logits, labels)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())  # synchronises

    rss_before = _rss_mb()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(cfg["warmup"]):
        step()
    times: List[float] = []
    cpu_times: List[float] = []
    for _ in range(cfg["iters"]):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    result = {
        "network": cfg["network"],
        "size": "x".join(map(str, size)),
        "device": device.type,
        "mode": mode,
        "params": count_parameters(net),
        "sec_per_iter": round(statistics.median(times), 4),
        "sec_min": round(min(times), 4),
        "sec_max": round(max(times), 4),
        "iters": cfg["iters"],
        "warmup": cfg["warmup"],
        "final_loss": round(loss, 4),
    }
    if device.type == "cuda":
        result["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["amp_dtype"] = str(amp_dtype).replace("torch.", "") if use_amp else "float32"
    else:
        result["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        result["rss_before_mb"] = round(rss_before, 1)
        result["threads"] = torch.get_num_threads()
        result["cpu_sec_per_iter"] = round(statistics.median(cpu_times), 4)
    return result


def _iterations(size: Tuple[int, int, int], device: str, args: argparse.Namespace) -> Tuple[int, int]:
    if device == "cuda":
        return args.gpu_warmup, args.gpu_iters
    big = size[0] * size[1] * size[2] >= 128 * 128 * 32
    return (2, 3) if big else (args.warmup, args.iters)


def _summary(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per configuration, the median over the rounds of ``sec_per_iter`` (and ``cpu_sec_per_iter``)."""
    groups: Dict[Tuple[str, ...], List[Dict[str, Any]]] = {}
    for res in results:
        if "sec_per_iter" in res:
            key = (res["network"], res["size"], res["device"], res["mode"])
            groups.setdefault(key, []).append(res)
    summary = []
    for (network, size, device, mode), rows in groups.items():
        row: Dict[str, Any] = {"network": network, "size": size, "device": device, "mode": mode,
                               "rounds": len(rows)}
        for field in ("sec_per_iter", "cpu_sec_per_iter", "peak_mem_mb"):
            values = [r[field] for r in rows if field in r]
            if values:
                row[field] = round(statistics.median(values), 4)
        summary.append(row)
    return summary


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default=",".join(NETWORK_NAMES),
                        help="comma-separated; options as name:key=value;key=value (integers)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES)
    parser.add_argument("--devices", default="auto", help="cpu, cuda, or auto (cpu + cuda if available)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--warmup", type=int, default=3, help="CPU warm-up iterations at small sizes")
    parser.add_argument("--iters", type=int, default=5, help="CPU timed iterations at small sizes")
    parser.add_argument("--gpu-warmup", type=int, default=5)
    parser.add_argument("--gpu-iters", type=int, default=20)
    parser.add_argument("--gpu-modes", default="fp32,amp,amp_cl")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the whole list of configurations this many times, interleaved")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_one(json.loads(args.child))))
        return 0

    import torch

    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    sizes = [_parse_size(s) for s in args.sizes.split(",") if s.strip()]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" else [
        d.strip() for d in args.devices.split(",")
    ]
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices cuda requested but torch.cuda.is_available() is False")
    info: Dict[str, Any] = {
        "benchmark": "train_step",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_start": [round(v, 2) for v in os.getloadavg()],
        "cuda_device": torch.cuda.get_device_name(0) if "cuda" in devices else None,
        "results": [],
    }
    configs = []
    for device in devices:
        modes = ["fp32"] if device == "cpu" else [m.strip() for m in args.gpu_modes.split(",")]
        for size in sizes:
            warmup, iters = _iterations(size, device, args)
            for network in networks:
                for mode in modes:
                    configs.append({"network": network, "size": list(size), "device": device, "mode": mode,
                                    "threads": args.threads, "warmup": warmup, "iters": iters})
    for round_index in range(max(1, args.rounds)):
        for cfg in configs:
            res = run_child(__file__, cfg)
            if "error" in res:
                res = {**cfg, "size": "x".join(map(str, cfg["size"])), **res}
            res["round"] = round_index
            res["load_avg_1min"] = round(os.getloadavg()[0], 2)
            info["results"].append(res)
            print(f"{cfg['device']:4s} {cfg['mode']:6s} {cfg['network']:28s} {res['size']:>11s}  "
                  f"{res.get('sec_per_iter', float('nan')):8.4f} s/it  "
                  f"peak {res.get('peak_mem_mb', float('nan')):8.1f} MB  load {res['load_avg_1min']:5.2f}  "
                  f"{res.get('error', '')}", file=sys.stderr, flush=True)
    if args.rounds > 1:
        info["summary"] = _summary(info["results"])
        for row in info["summary"]:
            print(f"median of {row['rounds']}: {row['device']:4s} {row['mode']:6s} {row['network']:28s} "
                  f"{row['size']:>11s}  {row['sec_per_iter']:8.4f} s/it", file=sys.stderr, flush=True)
    info["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
