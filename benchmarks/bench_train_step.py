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

``--loop`` measures the real training loop instead (:class:`~PASegLib.training.stage1.Stage1Trainer` on
prepared cases: patch sampling, the stage-one objective of the config, events), each run in its own child:

* ``data_wait``: the loop's own figure, the share of each iteration spent waiting for its batch (mean and median
  over the iterations after the first), and seconds per iteration, with the next batch cut in a background
  thread (``prefetch on``) and in the loop (``prefetch off``: what the loop did before), side by side;
* ``host_syncs_per_iteration`` (``--syncs``): the calls that would synchronise host and device on CUDA, counted on
  the CPU during real stage-one and SCM iterations by :class:`HostSyncCounter`.

The cases are the first ``--loop-cases`` la_heart cases (``../shared/data/la_heart``, clicks simulated with seed 0,
the preset's grid) when present, else synthetic ones (``--synthetic``); the config is the stage-one config of
``--loop-preset`` (``cpu``: patch 48×48×32; ``paper``: 128×128×48 with the 2.5D U-Net on thick-slice data), and
``--loop-patch`` / ``--loop-network`` override its patch and network.

Usage::

    python benchmarks/bench_train_step.py                  # CPU, plus CUDA if available
    python benchmarks/bench_train_step.py --devices cuda --sizes 128x128x48
    python benchmarks/bench_train_step.py --devices cpu --networks unet2d5,unet2d5:fold_convs=0 --rounds 2
    OMP_NUM_THREADS=1 python benchmarks/bench_train_step.py --loop --rounds 3 --syncs
    OMP_NUM_THREADS=1 python benchmarks/bench_train_step.py --loop --loop-preset paper --synthetic \
        --synthetic-shape 192x192x64 --loop-iters 8 --rounds 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "benchmarks") not in sys.path:  # imported by a test: the benchmarks' shared helpers
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from _child import run_child  # noqa: E402

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


# -- host-device synchronisations, counted on the CPU -----------------------------------------------------------
#: Tensor methods that read a value to the host (a device → host copy the host waits for on CUDA)
SYNC_METHODS = frozenset({"item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__",
                          "__format__", "__array__", "__repr__"})
#: operations whose output shape depends on the values (the host waits for the count on CUDA)
DATA_DEPENDENT = frozenset({"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive"})


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class HostSyncCounter(TorchFunctionMode):
    """Counts, on the CPU, the calls that would make the host wait for the device if the tensors were on CUDA.

    The counter follows which tensors would live on the device: those passed to :meth:`track` (network
    parameters), those made by ``.to(device)`` / ``.cuda()`` or a factory given a ``device``, and every result of
    an operation on one of them. A call counts when it reads such a tensor to the host (:data:`SYNC_METHODS`:
    ``.item()``, ``float()``, ``bool()``, ``.tolist()``, ``.cpu()``, ``.numpy()``, …), when its output shape
    depends on such a tensor's values (:data:`DATA_DEPENDENT`, ``torch.where(cond)``, boolean-mask indexing),
    or when it uploads host data to the device synchronously (``torch.tensor(data, device=…)``,
    ``torch.as_tensor(data, device=…)``, ``.to(device)`` of a host tensor without ``non_blocking``). Tensors
    made on the host (``torch.arange(3).tolist()``, the control messages of several processes) do not count.

    Attributes:
        count: calls counted (not while :attr:`paused` > 0).
        where: ``"<call> <file>:<line>"`` → count (the first frame outside torch and this file).
    """

    def __init__(self) -> None:
        super().__init__()
        self.on_device: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.paused = 0
        self.count = 0
        self.where: Counter = Counter()

    def track(self, tensors: Any) -> None:
        """Treat ``tensors`` (a tensor, or a list/tuple/dict of them) as device tensors."""
        for t in _tensors(tensors):
            self.on_device[t] = True

    def _caller(self) -> str:
        frame = sys._getframe(2)
        torch_dir = os.path.dirname(torch.__file__)
        while frame is not None and (frame.f_code.co_filename.startswith(torch_dir)
                                     or frame.f_code.co_filename == __file__):
            frame = frame.f_back
        if frame is None:
            return "?"
        path = frame.f_code.co_filename
        for root in ("PASegLib" + os.sep, "site-packages" + os.sep):
            if root in path:
                path = path[path.rindex(root):]
        return f"{path}:{frame.f_lineno}"

    def _sync(self, call: str) -> None:
        if not self.paused:
            self.count += 1
            self.where[f"{call} {self._caller()}"] += 1

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        inputs = list(_tensors((args, kwargs)))
        on_device = any(t in self.on_device for t in inputs)
        moves = name == "cuda" or (name == "to" and ("device" in kwargs or any(
            isinstance(a, (torch.device, str)) for a in args[1:])))
        made_on_device = moves or kwargs.get("device") is not None
        if on_device and (name in SYNC_METHODS or name in DATA_DEPENDENT or (name == "where" and len(args) == 1)):
            self._sync(name)
        elif on_device and name == "__getitem__" and any(
                t.dtype in (torch.bool, torch.uint8) for t in _tensors(args[1:])):
            self._sync("boolean-mask indexing")
        elif name in ("tensor", "as_tensor") and kwargs.get("device") is not None and not on_device:
            self._sync(f"torch.{name}(data, device=...)")
        elif moves and not on_device and inputs and not kwargs.get("non_blocking", False):
            self._sync(f"blocking upload .{name}(device)")
        out = func(*args, **kwargs)
        if on_device or made_on_device:
            self.track(out)
        return out


def count_host_syncs(trainer: Any, *, warmup: int = 0, **run_kwargs: Any) -> Dict[str, Any]:
    """Run ``trainer`` (a :class:`~PASegLib.training.engine.Trainer`) under a :class:`HostSyncCounter`, counting
    from the end of its ``warmup``-th iteration (one-time set-up, e.g. constants made on the device at the first
    call, is not per-iteration work); the work of epoch ends (validation, checkpoints, history) is not counted.
    Returns ``{"exit", "iterations", "syncs", "per_iteration", "where"}`` (``iterations``: those counted;
    ``where``: per counted iteration, by call and place)."""
    counter = HostSyncCounter()
    for net in list(trainer.networks.values()) + list(getattr(trainer, "frozen", {}).values()):
        counter.track(list(net.parameters()) + list(net.buffers()))

    def paused(method):
        def call(*args, **kwargs):
            counter.paused += 1
            try:
                return method(*args, **kwargs)
            finally:
                counter.paused -= 1
        return call

    for name in ("_end_epoch", "save", "write_summary", "write_history"):
        setattr(trainer, name, paused(getattr(trainer, name)))
    first, user = trainer.global_step, run_kwargs.pop("on_iteration", None)
    counter.paused += warmup > 0

    def on_iteration(t: Any) -> None:
        if warmup > 0 and t.global_step - first == warmup:
            counter.paused -= 1
        if user is not None:
            user(t)

    with counter:
        code = trainer.run(on_iteration=on_iteration, **run_kwargs)
    iterations = max(trainer.global_step - first - warmup, 1)
    return {"exit": code, "iterations": iterations, "syncs": counter.count,
            "per_iteration": counter.count / iterations,
            "where": {k: round(v / iterations, 3) for k, v in sorted(counter.where.items())}}


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


# -- the real training loop -------------------------------------------------------------------------------------
LA_HEART = REPO_ROOT.parent / "shared" / "data" / "la_heart"


def _loop_files(cfg: Dict[str, Any]) -> List[Any]:
    """The dataset of the loop runs: la_heart cases with simulated clicks, or synthetic cases (made once)."""
    from PASegLib.data.dataset import list_cases

    work = Path(cfg["work"])
    if cfg.get("data"):
        from bench_prepare import la_heart_files

        return la_heart_files(Path(cfg["data"]), work / "clicks", cfg["cases"])
    data = work / ("synthetic-" + "x".join(map(str, cfg["synthetic_shape"])))
    if not any(data.glob("*.mrk.json")):
        from PASegLib.cli.main import main as paseg

        shape = [str(n) for n in cfg["synthetic_shape"]]
        assert paseg(["synth", str(data), "--cases", str(cfg["cases"]), "--shape", *shape]) == 0
        assert paseg(["simulate-clicks", str(data), "--quiet"]) == 0
    return sorted(list_cases(data), key=lambda f: f.case_id)


def _loop_config(cfg: Dict[str, Any], files: List[Any], **changes: Any) -> Any:
    """The preset's (``cfg["preset"]``) stage-one config of ``files`` with the loop's overrides."""
    from PASegLib.pipeline.inputs import median_spacing
    from PASegLib.pipeline.presets import preset_configs

    config = preset_configs(cfg.get("preset", "cpu"), median_spacing(files), seed=0, device="cpu")[0]
    over: Dict[str, Any] = {"num_threads": cfg["threads"], "epochs": 1, "iterations_per_epoch": cfg["iters"],
                            "validation_fraction": 0.0}
    if cfg.get("patch"):
        over["patch_size"] = tuple(cfg["patch"])
    if cfg.get("network"):
        over["network"] = cfg["network"]
    return config.replace(**{**over, **changes})


def _loop_cases(cfg: Dict[str, Any], config: Any, files: List[Any]) -> List[Any]:
    from PASegLib.data.prepare import prepare_cases

    return prepare_cases(files, config, cache_dir=Path(cfg["work"]) / "cache", workers=1,
                         lazy=config.cache_mb is not None)


def run_loop(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``cfg["iters"]`` real stage-one iterations, the next batch cut ahead (``cfg["prefetch"]``) or not: seconds
    per iteration and the loop's ``data_wait`` (share of an iteration spent waiting for its batch)."""
    from PASegLib.jobs.events import parse_progress_line
    from PASegLib.training.stage1 import Stage1Trainer

    torch.set_num_threads(cfg["threads"])
    files = _loop_files(cfg)
    config = _loop_config(cfg, files)
    cases = _loop_cases(cfg, config, files)
    run = Path(tempfile.mkdtemp(dir=cfg["work"], prefix="run-"))
    stream = io.StringIO()
    trainer = Stage1Trainer(config, run, cases, [], device=torch.device("cpu"), stream=stream,
                            prefetch=cfg["prefetch"])
    stamps: List[float] = []
    waits_ms: List[float] = []

    def on_iteration(_: Any) -> None:
        stamps.append(time.perf_counter())
        waits_ms.append(1000 * trainer.sampler.batch_seconds())

    started = time.perf_counter()
    code = trainer.run(on_iteration=on_iteration)
    shutil.rmtree(run, ignore_errors=True)
    events = [e for e in (parse_progress_line(x) for x in stream.getvalue().splitlines()) if e]
    waits = [e["data_wait"] for e in events if e["event"] == "iteration"][1:]  # the first batch is never ahead
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"prefetch": cfg["prefetch"], "exit": code, "network": config.network,
            "patch": "x".join(map(str, config.patch_size)), "iterations": len(stamps),
            "cases": len(cases), "data": "la_heart" if cfg.get("data") else "synthetic",
            "data_wait_mean": round(statistics.mean(waits), 4), "data_wait_median": round(statistics.median(waits), 4),
            "batch_wait_ms_median": round(statistics.median(waits_ms[1:]), 2),
            "sec_per_iter": round(statistics.median(steps), 4), "wall_s": round(time.perf_counter() - started, 2),
            "threads": torch.get_num_threads()}


def run_syncs(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Host syncs per iteration (:func:`count_host_syncs`) of stage one and SCM on the loop's cases, with the
    logging interval of the CPU (1: every iteration's losses read) and of CUDA (``CUDA_LOG_EVERY``)."""
    from PASegLib.training.engine import CUDA_LOG_EVERY
    from PASegLib.training.scm import SCMTrainer
    from PASegLib.training.stage1 import Stage1Trainer

    torch.set_num_threads(cfg["threads"])
    files = _loop_files(cfg)
    config = _loop_config(cfg, files, iterations_per_epoch=cfg["sync_warmup"] + cfg["sync_iters"])
    cases = _loop_cases(cfg, config, files)
    work = Path(tempfile.mkdtemp(dir=cfg["work"], prefix="syncs-"))
    cpu = torch.device("cpu")
    out: Dict[str, Any] = {"warmup": cfg["sync_warmup"], "iterations": cfg["sync_iters"],
                           "cuda_log_every": CUDA_LOG_EVERY}
    for every in (1, CUDA_LOG_EVERY):
        trainer = Stage1Trainer(config, work / f"s1-{every}", cases, [], device=cpu, stream=io.StringIO(),
                                log_every=every)
        out[f"stage1_log_every_{every}"] = count_host_syncs(trainer, warmup=cfg["sync_warmup"])
    inits = []
    for net in (config.network, "attention_unet" if config.network != "attention_unet" else "unet3d"):
        run = work / f"init-{net}"
        one = config.replace(network=net, iterations_per_epoch=1)
        assert Stage1Trainer(one, run, cases, [], device=cpu, stream=io.StringIO()).run() == 0
        inits.append(run)
    scm = config.replace(stage=2, network=inits[0].name[5:], aux_network=inits[1].name[5:], lr=1e-3)
    for every in (1, CUDA_LOG_EVERY):
        trainer = SCMTrainer(scm, work / f"scm-{every}", cases, [], device=cpu, stream=io.StringIO(),
                             init_runs=inits, log_every=every)
        out[f"scm_log_every_{every}"] = count_host_syncs(trainer, warmup=cfg["sync_warmup"])
    shutil.rmtree(work, ignore_errors=True)
    out["host_syncs_per_iteration"] = max(out[f"{k}_log_every_1"]["per_iteration"] for k in ("stage1", "scm"))
    return out


def loop_main(args: argparse.Namespace) -> int:
    """``--loop``: data wait and seconds per iteration of the real loop with and without the batch cut ahead
    (interleaved over ``--rounds``), and with ``--syncs`` the host syncs per iteration."""
    data = LA_HEART if LA_HEART.is_dir() and not args.synthetic else None
    work = Path(args.loop_work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = {"loop": True, "work": str(work), "data": str(data) if data else None, "cases": args.loop_cases,
            "patch": list(_parse_size(args.loop_patch)) if args.loop_patch else None,
            "network": args.loop_network, "iters": args.loop_iters, "threads": args.threads,
            "preset": args.loop_preset, "synthetic_shape": list(_parse_size(args.synthetic_shape))}
    info: Dict[str, Any] = {"benchmark": "train_loop", "torch": torch.__version__, "cpu_count": os.cpu_count(),
                            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                            "load_avg_start": [round(v, 2) for v in os.getloadavg()], "results": []}
    modes = [m.strip() == "on" for m in args.prefetch.split(",") if m.strip()]
    for round_index in range(max(1, args.rounds)):
        for prefetch in modes:
            res = run_child(__file__, {**base, "prefetch": prefetch})
            res.update(round=round_index, load_avg_1min=round(os.getloadavg()[0], 2))
            info["results"].append(res)
            print(f"prefetch {'on ' if prefetch else 'off'} {res.get('network', '?'):15s} {res.get('patch', '?'):>9s} "
                  f"data_wait mean {res.get('data_wait_mean', float('nan')):.4f} median "
                  f"{res.get('data_wait_median', float('nan')):.4f}  wait {res.get('batch_wait_ms_median', float('nan')):.1f} "
                  f"ms  {res.get('sec_per_iter', float('nan')):.3f} s/it  "
                  f"load {res['load_avg_1min']:.2f} {res.get('error', '')}", file=sys.stderr, flush=True)
    summary = {}
    for prefetch in modes:
        rows = [r for r in info["results"] if r.get("prefetch") == prefetch and "data_wait_mean" in r]
        if rows:
            summary["on" if prefetch else "off"] = {
                field: {"min": min(r[field] for r in rows), "median": round(statistics.median(r[field] for r in rows), 4)}
                for field in ("data_wait_mean", "data_wait_median", "batch_wait_ms_median", "sec_per_iter")}
    info["summary"] = summary
    if args.syncs:
        res = run_child(__file__, {**base, "syncs": True, "sync_iters": args.sync_iters,
                                   "sync_warmup": args.sync_warmup})
        info["host_syncs"] = res
        print(f"host syncs per iteration: {res.get('host_syncs_per_iteration', res.get('error'))}", file=sys.stderr)
    info["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(info))
    if args.out_json:
        Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_json).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return 0


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
    parser.add_argument("--loop", action="store_true", help="measure the real training loop (see the docstring)")
    parser.add_argument("--loop-cases", type=int, default=8, help="--loop: training cases")
    parser.add_argument("--loop-iters", type=int, default=24, help="--loop: iterations per run")
    parser.add_argument("--loop-patch", help="--loop: patch size, e.g. 128x128x48 (default: the CPU preset's)")
    parser.add_argument("--loop-network", help="--loop: network (default: the CPU preset's)")
    parser.add_argument("--loop-work", default="bench_output/train_loop", help="--loop: work folder (cache, runs)")
    parser.add_argument("--loop-preset", default="cpu", choices=("cpu", "paper"),
                        help="--loop: the preset whose stage-one config (grid, patch, network, losses) is used")
    parser.add_argument("--synthetic", action="store_true", help="--loop: synthetic cases even if la_heart exists")
    parser.add_argument("--synthetic-shape", default="96x96x48", help="--loop: size of the synthetic cases")
    parser.add_argument("--prefetch", default="off,on", help="--loop: 'off', 'on' or both, run side by side")
    parser.add_argument("--syncs", action="store_true", help="--loop: also count host syncs per iteration")
    parser.add_argument("--sync-iters", type=int, default=20, help="--loop --syncs: iterations counted per run")
    parser.add_argument("--sync-warmup", type=int, default=2, help="--loop --syncs: iterations before counting")
    parser.add_argument("--out-json", help="--loop: also write the JSON summary here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        cfg = json.loads(args.child)
        child = run_one if not cfg.get("loop") else run_syncs if cfg.get("syncs") else run_loop
        print(json.dumps(child(cfg)))
        return 0
    if args.loop:
        return loop_main(args)

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
