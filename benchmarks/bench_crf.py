"""Benchmark: shift-based multi-view CRF loss (PASegLib.losses.crf) vs the unfold reference, and its kernel count.

The reference is ``reference_mcrf`` of ``Testing/Python/losses/test_loss_crf.py``: the multi-view CRF loss
written with ``torch.nn.functional.unfold`` and plain autograd, i.e. the memory profile of the official PA-Seg code
(Obukhov's Gated-CRF). ``fast`` is the loss as the CPU runs it (``compute_mode="auto"``, i.e. ``"per_offset"``),
``chunked`` the loss as a GPU runs it (``compute_mode="chunked"``), both measured here on the CPU. Settings:

* ``official``: the official VS grid 64×64×48 (inputs given on that grid), radius 5;
* ``full_128x128x48_r5`` and ``full_128x128x48_r12``: the full training patch, radius 5 and 12.

Defaults σ_xy = 6 voxels, σ_I = 0.1, three views, binary softmax logits, one z-scored image channel (a noisy
sphere; logits follow it with noise), float32, ``torch.set_num_threads(2)``.

Method. Every measurement runs in a fresh Python subprocess, so neither allocator caches nor earlier peaks
leak between them. Memory: a subprocess (glibc ``MALLOC_MMAP_THRESHOLD_=65536``, so that freed blocks are
returned to the OS and resident memory tracks live memory) builds the inputs, runs a small warm-up (lazy
initialisation of torch kernels and threads), resets the kernel's peak-RSS counter (``/proc/self/clear_refs``
← 5), reads ``VmRSS``, runs one forward+backward and reads ``VmHWM``: ``peak = VmHWM − VmRSS before``
(everything the loss allocates, incl. the autograd graph and the gradient of the logits). Time: another
subprocess (default allocator) runs one warm forward+backward, then ``--repeats`` timed ones; the median is
reported. The parent compares the two gradients w.r.t. the logits (cosine, float64). The reference is
skipped (not crashed) when its peak, extrapolated from the official setting as ∝ N·(2r+1)², exceeds
``--max-reference-gb``. The official code's own cost on this machine kind (docs/FACTS §2: 3.82 s, 1.05 GB)
is reported beside, as ``*_vs_official_anchor``.

Kernels. ``mcrf_kernels_per_call`` counts the kernel launches of one forward + backward of ``MultiViewCRFLoss`` at
the paper preset's settings (``PASegLib/pipeline/presets.py``: 128×128×48 patches, the mCRF on the 64×64×48 grid,
radius 5, σ_xy 6, σ_I 0.05, three views; batch 2 with a valid mask) as a GPU runs it (``chunked``), with the
torch profiler on the CPU (``count_kernel_launches`` of the test module: outermost aten operators less views and
allocations); ``mcrf_kernels_per_call_by_mode`` gives both modes.

Usage: ``python benchmarks/bench_crf.py [--repeats 5] [--max-reference-gb 8]``; the last stdout line is the
JSON summary, whose top-level ``speedup``, ``memory_ratio`` and ``grad_cosine`` refer to ``official`` and ``fast``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: Dict[str, Dict] = {
    "official": {"shape": (64, 64, 48), "radius": 5},
    "full_128x128x48_r5": {"shape": (128, 128, 48), "radius": 5},
    "full_128x128x48_r12": {"shape": (128, 128, 48), "radius": 12},
}
THREADS = 2
#: the official PA-Seg/Gated-CRF mCRF at 64×64×48, r = 5, measured on this machine kind (docs/FACTS.md §2)
OFFICIAL_ANCHOR = {"time_s": 3.82, "peak_mb": 1050.0, "source": "docs/FACTS.md §2"}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _make_inputs(shape, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    axes = [torch.linspace(-1.0, 1.0, n) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    radius = (grid[0] ** 2 + grid[1] ** 2 + (grid[2] / 0.8) ** 2).sqrt()
    image = (radius < 0.45).float() + 0.15 * torch.randn(shape, generator=gen)
    image = ((image - image.mean()) / image.std()).view(1, 1, *shape)
    fg = 8.0 * (0.45 - radius) + 0.8 * torch.randn(shape, generator=gen)
    logits = torch.stack([torch.zeros(shape), fg]).unsqueeze(0).contiguous()
    return logits, image


def _test_module():
    path = ROOT / "Testing" / "Python" / "losses" / "test_loss_crf.py"
    spec = importlib.util.spec_from_file_location("_crf_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _load_reference():
    return _test_module().reference_mcrf


#: the paper preset's mCRF (PASegLib/pipeline/presets.py, anisotropic data) and the batch of the kernel count
PAPER_KERNEL_SETTING = {"patch": (128, 128, 48), "grid": (64, 64, 48), "batch": 2, "radius": 5, "sigma_xy": 6.0,
                        "sigma_intensity": 0.05}


def kernels_per_call(compute_mode: str) -> int:
    """Kernel launches of one forward + backward at :data:`PAPER_KERNEL_SETTING` (after a warm call)."""
    import torch

    from PASegLib.losses.crf import MultiViewCRFLoss

    spec = PAPER_KERNEL_SETTING
    logits, image = _make_inputs(spec["patch"])
    logits = logits.expand(spec["batch"], -1, -1, -1, -1).contiguous().requires_grad_(True)
    image = image.expand(spec["batch"], -1, -1, -1, -1).contiguous()
    valid = torch.ones_like(image)
    valid[..., -4:] = 0  # patch padding
    loss_fn = MultiViewCRFLoss(sigma_xy=spec["sigma_xy"], sigma_intensity=spec["sigma_intensity"],
                               radius=spec["radius"], downsample_to=spec["grid"], compute_mode=compute_mode)

    def step() -> None:
        logits.grad = None
        loss_fn(logits, image, valid).backward()

    step()
    return _test_module().count_kernel_launches(step)


def worker(impl: str, setting: str, repeats: int, out_dir: Path) -> Dict:
    """Runs in a subprocess. ``repeats == 0``: peak memory of one forward+backward (and the gradient, saved
    for the cosine); else one warm run and the median time of ``repeats`` more."""
    import gc

    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    if impl in ("fast", "chunked"):
        from PASegLib.losses.crf import multi_view_crf_loss

        loss_fn = functools.partial(multi_view_crf_loss, compute_mode="auto" if impl == "fast" else "chunked")
    else:
        loss_fn = _load_reference()
    radius = SETTINGS[setting]["radius"]

    def step(logits, image):
        logits.grad = None
        loss = loss_fn(logits, image, radius=radius)
        loss.backward()
        return loss.item()

    small, small_img = _make_inputs((12, 12, 8))
    step(small.requires_grad_(True), small_img)  # warm-up: lazy init outside the measurement
    logits, image = _make_inputs(SETTINGS[setting]["shape"])
    logits.requires_grad_(True)
    del small, small_img
    gc.collect()
    if repeats == 0:
        reset_ok = _reset_peak_rss()
        rss_before = _status_kib("VmRSS")
        value = step(logits, image)
        peak_kib = _status_kib("VmHWM") - rss_before
        grad_path = out_dir / f"{impl}_{setting}.npy"
        np.save(grad_path, logits.grad.numpy())
        return {"loss": value, "peak_mb": round(peak_kib / 1024.0, 1), "peak_reset": reset_ok,
                "grad_file": str(grad_path)}
    t0 = time.perf_counter()
    step(logits, image)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step(logits, image)
        times.append(time.perf_counter() - t0)
    return {"time_s": statistics.median(times), "times_s": [round(t, 4) for t in times],
            "first_call_s": round(first, 4)}


def _run_worker(impl: str, setting: str, repeats: int, out_dir: Path) -> Dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, "--setting", setting,
           "--repeats", str(repeats), "--out-dir", str(out_dir)]
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), PYTHONPATH=str(ROOT))
    if repeats == 0:  # memory run: a fixed mmap threshold makes glibc return every freed block >= 64 KiB
        env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {impl}/{setting} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _measure(impl: str, setting: str, repeats: int, out_dir: Path) -> Dict:
    """Memory (own subprocess) then time (another subprocess)."""
    result = _run_worker(impl, setting, 0, out_dir)
    result.update(_run_worker(impl, setting, repeats, out_dir))
    return result


def _cosine(path_a: str, path_b: str) -> float:
    import numpy as np

    a = np.load(path_a).astype(np.float64).ravel()
    b = np.load(path_b).astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _voxels_window(setting: str) -> float:
    spec = SETTINGS[setting]
    shape = spec["shape"]
    return float(shape[0] * shape[1] * shape[2] * (2 * spec["radius"] + 1) ** 2)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the fast loss (median)")
    parser.add_argument("--reference-repeats", type=int, default=3, help="timed runs of the reference")
    parser.add_argument("--max-reference-gb", type=float, default=8.0,
                        help="skip the reference where its extrapolated peak memory exceeds this")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--worker", choices=["fast", "chunked", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--setting", choices=list(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.setting, args.repeats, args.out_dir)))
        return 0
    if args.repeats < 1 or args.reference_repeats < 1:
        raise SystemExit("--repeats and --reference-repeats must be >= 1")

    import torch

    summary: Dict = {
        "benchmark": "multi-view CRF loss forward+backward: PASegLib (shift-based autograd.Function) vs "
                     "unfold reference (official Gated-CRF style)",
        "config": {"sigma_xy": 6.0, "sigma_intensity": 0.1, "views": 3, "classes": 2, "image_channels": 1,
                   "dtype": "float32", "threads": THREADS, "repeats_fast": args.repeats,
                   "repeats_reference": args.reference_repeats},
        "memory_method": "peak RSS of a fresh subprocess during one forward+backward (VmHWM after "
                         "clear_refs=5 minus VmRSS before, MALLOC_MMAP_THRESHOLD_=65536; includes autograd "
                         "graph and logits gradient)",
        "time_method": "median wall time of forward+backward after one warm run, in its own subprocess",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
    }
    ref_peak_per_unit = None
    with tempfile.TemporaryDirectory(prefix="bench_crf_") as tmp:
        out_dir = Path(tmp)
        for setting in args.settings:
            spec = SETTINGS[setting]
            entry: Dict = {"grid": list(spec["shape"]), "radius": spec["radius"]}
            fast = _measure("fast", setting, args.repeats, out_dir)
            entry["fast"] = {k: v for k, v in fast.items() if k != "grad_file"}
            chunked = _measure("chunked", setting, args.repeats, out_dir)
            entry["chunked"] = {k: v for k, v in chunked.items() if k != "grad_file"}
            entry["chunked_vs_fast"] = {"grad_cosine": _cosine(chunked["grad_file"], fast["grad_file"]),
                                        "loss_rel_diff": abs(chunked["loss"] - fast["loss"]) / abs(fast["loss"]),
                                        "time_ratio": round(chunked["time_s"] / fast["time_s"], 2),
                                        "peak_ratio": round(chunked["peak_mb"] / max(fast["peak_mb"], 0.1), 2)}
            estimate_gb = None
            if ref_peak_per_unit is not None:
                estimate_gb = ref_peak_per_unit * _voxels_window(setting) / 1024.0
            if estimate_gb is not None and estimate_gb > args.max_reference_gb:
                entry["reference"] = (f"skipped: estimated {estimate_gb:.1f} GB peak memory "
                                      f"(> --max-reference-gb {args.max_reference_gb:g}; extrapolated ∝ N·(2r+1)² "
                                      "from the measured official setting)")
                entry["speedup"] = entry["memory_ratio"] = entry["grad_cosine"] = None
                entry["memory_ratio_chunked"] = None
            else:
                ref = _measure("reference", setting, args.reference_repeats, out_dir)
                entry["reference"] = {k: v for k, v in ref.items() if k != "grad_file"}
                if ref_peak_per_unit is None:
                    ref_peak_per_unit = ref["peak_mb"] / _voxels_window(setting)
                entry["speedup"] = round(ref["time_s"] / fast["time_s"], 2)
                entry["memory_ratio"] = round(ref["peak_mb"] / max(fast["peak_mb"], 0.1), 2)
                entry["memory_ratio_chunked"] = round(ref["peak_mb"] / max(chunked["peak_mb"], 0.1), 2)
                entry["grad_cosine"] = _cosine(fast["grad_file"], ref["grad_file"])
                entry["loss_rel_diff"] = abs(fast["loss"] - ref["loss"]) / abs(ref["loss"])
            summary[setting] = entry
            print(f"{setting}: {json.dumps(entry)}", file=sys.stderr, flush=True)
    if "official" in summary:
        for key in ("speedup", "memory_ratio", "grad_cosine"):
            summary[key] = summary["official"][key]
        fast = summary["official"]["fast"]
        summary["speedup_vs_official_anchor"] = round(OFFICIAL_ANCHOR["time_s"] / fast["time_s"], 2)
        summary["memory_ratio_vs_official_anchor"] = round(OFFICIAL_ANCHOR["peak_mb"] / max(fast["peak_mb"], 0.1), 2)
        summary["official_anchor"] = OFFICIAL_ANCHOR
    by_mode = {mode: kernels_per_call(mode) for mode in ("per_offset", "chunked")}
    summary["mcrf_kernels_per_call"] = by_mode["chunked"]
    summary["mcrf_kernels_per_call_by_mode"] = by_mode
    summary["kernel_count_setting"] = {k: list(v) if isinstance(v, tuple) else v
                                       for k, v in PAPER_KERNEL_SETTING.items()}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
