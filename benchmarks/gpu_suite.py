"""The GPU check: what CPU machines cannot test or time, sized for five minutes on one H100 (not yet measured).

Sections (each a JSON line on stdout, each figure with the device it was measured on):

1. ``cuda_tests`` — the tests that CPU machines skip (``skipif(not torch.cuda.is_available() …)`` in
   ``Testing/Python``, found by reading the files), run with pytest;
2. ``amp_steps`` — one stage-one training step (forward, the stage-one loss with the mCRF on its paper grid,
   backward, SGD with a GradScaler; float16 autocast) of each network at the paper preset's patch size
   (``unet2d5`` and ``attention_unet`` 128×128×48, ``unet3d`` 128×128×128): median ms, peak GPU memory;
3. ``mcrf`` — the mCRF on CUDA (:func:`PASegLib.losses.crf.multi_view_crf_loss`) against the unfold reference
   of ``Testing/Python/losses/test_loss_crf.py`` on the official 64×64×48 grid, radius 5: value and gradient
   agreement and ms of the default (``chunked`` on CUDA) and of both compute modes; at the paper preset's
   setting (128×128×48 patches, the 64×64×48 grid, batch 2) ms and CUDA kernel launches per call of each mode;
4. ``geodesic`` — the torch backend of the geodesic raster scan on CUDA against the numpy one, to convergence
   on a 128×128×48 smoothed-noise volume: largest relative difference, seconds, sweeps;
5. ``training`` — the real training loop (``train_from_dataset``, as ``paseg train`` runs it) on the dataset
   (below) resampled to la_heart's native 0.625 mm at preparation: 40 stage-one iterations of ``unet2d5`` at
   128×128×48 with the presets' smoothed mCRF on the 64×64×48 grid, 5 of the auxiliary ``attention_unet``, then
   10 SCM iterations of both: iterations/s after 5 (SCM: 2) warm-up iterations, the ``data_wait`` share,
   peak GPU memory, preparation and validation seconds;
6. ``sliding_window`` — sliding-window inference (``unet2d5``, 128×128×48 windows, overlap 0.25, AMP) of a
   256×256×64 volume: warm seconds;
7. ``ddp`` — a 1-GPU DDP run: ``torchrun --standalone --nproc-per-node 1 -m PASegLib train`` (NCCL, world size 1,
   deterministic) against the same training in one plain process: both wall times and the largest weight
   difference;
8. ``accuracy_row`` — a short stage-one row (the CPU preset's losses at the dataset's grid, 96×96×48 patches,
   3 epochs × 100 iterations, AMP) trained on the dataset's training cases and scored by Dice on its test
   cases with the selected weights.

The dataset is the one of ``--pack`` (``make gpu-pack``: 12 la_heart cases at 1.25 mm with simulated clicks,
the first 9 train and the last 3 test); without a pack the sections use a synthetic dataset and say so.

``--dry-run`` (and any machine without CUDA) runs every section on the CPU at toy size (DDP with gloo, the CUDA
tests collected and skipped by pytest), to check the script, and marks the CUDA figures as skipped with the
reason. ``--only SECTION …`` reruns some sections and keeps the others' figures of the same device in
``--out``. The summary goes to ``--out`` (default ``bench_output/gpu_suite.json``) and, when ``$OUT`` is set
(the device machine's convention), to ``$OUT/<name of --out>``. ``benchmarks/gpu_check.sh`` installs the pack's
wheels and runs this script on a bare GPU box.

    python benchmarks/gpu_suite.py              # on a GPU machine (estimated 3–5 minutes on an H100)
    python benchmarks/gpu_suite.py --dry-run    # anywhere: 2–3 minutes on 2 busy cores
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TESTS = ROOT / "Testing" / "Python"
#: the paper preset's patches (PASegLib/pipeline/presets.py) and its mCRF grids
STEPS = (("unet2d5", (128, 128, 48), (64, 64, 48)), ("attention_unet", (128, 128, 48), (64, 64, 48)),
         ("unet3d", (128, 128, 128), (64, 64, 64)))
SMALL_STEPS = (("unet2d5", (16, 16, 16), (8, 8, 8)), ("attention_unet", (16, 16, 16), (8, 8, 8)),
               ("unet3d", (16, 16, 16), (8, 8, 8)))
#: the ``training`` section: the paper's anisotropic setting (``unet2d5`` 128×128×48, mCRF on 64×64×48) on
#: la_heart's native grid; iterations of stage one, of the auxiliary network's stage one and of SCM, and the
#: warm-up iterations left out of the rates (the toy sizes: ``--dry-run`` on the CPU)
TRAINING = {"patch_size": (128, 128, 48), "crf_downsample_to": (64, 64, 48), "target_spacing_mm": (0.625,) * 3,
            "iterations": {"stage1": 40, "auxiliary": 5, "scm": 10}, "warmup": {"stage1": 5, "auxiliary": 2, "scm": 2}}
TRAINING_TOY = {"patch_size": (16, 16, 16), "crf_downsample_to": (8, 8, 8), "target_spacing_mm": (2.5,) * 3,
                "iterations": {"stage1": 4, "auxiliary": 2, "scm": 3}, "warmup": {"stage1": 1, "auxiliary": 1, "scm": 1}}
#: the ``accuracy_row`` section: the CPU preset's losses at the dataset's own grid, gpu_accuracy.py's patch
ACCURACY = {"patch_size": (96, 96, 48), "epochs": 3, "iterations_per_epoch": 100, "validate_every": 3}
ACCURACY_TOY = {"patch_size": (16, 16, 16), "epochs": 2, "iterations_per_epoch": 2, "validate_every": 2,
                "target_spacing_mm": (2.5,) * 3}
#: the dry run trains on at most this many training / test cases of the dataset
TOY_CASES = (4, 2)


def cuda_tests() -> List[str]:
    """Node ids of the tests that skip without CUDA: a ``@pytest.mark.skipif(not torch.cuda.is_available() …)``
    before a test, or a decorator named after a module-level ``NAME = pytest.mark.skipif(not torch.cuda…)``."""
    found = []
    skipif = r"pytest\.mark\.skipif\(\s*not\s+torch\.cuda\.is_available\(\)"
    named = re.compile(rf"^(\w+)\s*=\s*{skipif}", re.MULTILINE)
    for path in sorted(TESTS.rglob("test_*.py")):
        text = path.read_text(encoding="utf-8")
        marks = "|".join([skipif] + [re.escape(n) + r"\b" for n in named.findall(text)])
        pattern = re.compile(rf"@(?:{marks})[^\n]*\n(?:@[^\n]*\n)*(?:async )?def (test_\w+)")
        found += [f"{path.relative_to(ROOT)}::{name}" for name in pattern.findall(text)]
    return found


def section_cuda_tests(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """pytest of :func:`cuda_tests` (without CUDA they are collected and skip: the node ids are checked)."""
    tests = cuda_tests()
    if not tests:
        return {"tests": [], "passed": False, "summary": "no CUDA-only test found in Testing/Python",
                "device": ctx["name"]}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    out = {"tests": tests, "passed": done.returncode == 0, "summary": tail[0],
           "seconds": round(time.perf_counter() - started, 1), "device": ctx["name"]}
    if done.returncode != 0:
        out["output"] = (done.stdout + done.stderr)[-3000:]
    return out if ctx["cuda"] else {**out, "skipped": f"{ctx['why']}: the tests skip without CUDA"}


def _timed(fn: Callable[[], Any], *, repeats: int, sync: Callable[[], None], warmup: int = 2) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` runs after ``warmup`` untimed runs."""
    times = []
    for n in range(repeats + warmup):
        sync()
        started = time.perf_counter()
        fn()
        sync()
        if n >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def section_amp_steps(ctx: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    from PASegLib.networks import build_network
    from PASegLib.training.config import TrainConfig
    from PASegLib.training.objective import Stage1Objective

    device, amp = ctx["device"], ctx["cuda"]
    rows = {}
    for name, patch, grid in (STEPS if ctx["cuda"] else SMALL_STEPS):
        torch.manual_seed(0)
        net = build_network(name).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        objective = Stage1Objective(TrainConfig(patch_size=patch, crf_downsample_to=grid))
        image = torch.randn(1, 1, *patch, device=device)
        partial = torch.randint(0, 3, (1, 1, *patch), device=device)
        valid = torch.ones(1, 1, *patch, device=device)
        boxes = [torch.tensor([[[8, 8, 4], [patch[0] - 9, patch[1] - 9, patch[2] - 5]]]).numpy()]

        def step() -> None:
            with torch.autocast(device_type=device.type, enabled=amp):
                logits = net(image)
            loss = objective.terms(logits.float(), partial, image, valid, boxes, a=1.0, b=0.1, g=0.0)["loss"]
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        if ctx["cuda"]:
            torch.cuda.reset_peak_memory_stats()
        ms = _timed(step, repeats=ctx["repeats"], sync=ctx["sync"], warmup=ctx["warmup"])
        rows[name] = {"patch": list(patch), "mcrf_grid": list(grid), "ms_per_step": ms, "amp": amp,
                      "parameters": sum(p.numel() for p in net.parameters()),
                      "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if ctx["cuda"] else None,
                      "device": ctx["name"]}
    return {"steps": rows, **({} if ctx["cuda"] else {"skipped": f"small CPU steps only: {ctx['why']}"})}


def _reference():
    spec = importlib.util.spec_from_file_location("test_loss_crf", TESTS / "losses" / "test_loss_crf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_mcrf


def _cuda_launches(step: Callable[[], Any]) -> Any:
    """Kernels, memsets and copies the CUDA profiler records during one ``step()`` (or why it could not)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    except Exception as exc:  # noqa: BLE001 - CUPTI missing or busy: report, do not fail the section
        return f"not measured: {type(exc).__name__}: {exc}"


def section_mcrf(ctx: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    from PASegLib.losses.crf import MultiViewCRFLoss, multi_view_crf_loss

    reference, device = _reference(), ctx["device"]
    shape = (1, 2, 64, 64, 48) if ctx["cuda"] else (1, 2, 16, 16, 8)
    radius = 5 if ctx["cuda"] else 2
    gen = torch.Generator().manual_seed(0)
    logits0 = torch.randn(shape, generator=gen).to(device)
    image = torch.randn((shape[0], 1, *shape[2:]), generator=gen).to(device)
    results = {}
    # "fast" is the default (compute_mode="auto": "chunked" on CUDA, "per_offset" on the CPU)
    for label, fn in (("fast", multi_view_crf_loss), ("reference", reference),
                      ("per_offset", lambda *a, **k: multi_view_crf_loss(*a, compute_mode="per_offset", **k)),
                      ("chunked", lambda *a, **k: multi_view_crf_loss(*a, compute_mode="chunked", **k))):
        logits = logits0.clone().requires_grad_(True)
        value = fn(logits, image, radius=radius)
        value.backward()
        results[label] = (float(value.detach()), logits.grad.detach().double().cpu())

        def run() -> None:
            x = logits0.clone().requires_grad_(True)
            fn(x, image, radius=radius).backward()

        results[label] += (_timed(run, repeats=ctx["repeats"], sync=ctx["sync"], warmup=ctx["warmup"]),)
    (fv, fg, fms), (rv, rg, rms) = results["fast"], results["reference"]
    cosine = float((fg * rg).sum() / (fg.norm() * rg.norm()))
    out = {"shape": list(shape), "radius": radius, "value_fast": fv, "value_reference": rv,
           "value_rel_diff": abs(fv - rv) / max(abs(rv), 1e-12), "grad_cosine": cosine,
           "grad_max_abs_diff": float((fg - rg).abs().max()), "ms_fast": fms, "ms_reference": rms,
           "speedup": round(rms / fms, 2) if fms else None, "device": ctx["name"]}
    for mode in ("per_offset", "chunked"):
        mv, mg, mms = results[mode]
        out[mode] = {"value_rel_diff": abs(mv - rv) / max(abs(rv), 1e-12), "ms": mms,
                     "grad_cosine": float((mg * rg).sum() / (mg.norm() * rg.norm()))}
    out["agrees"] = out["value_rel_diff"] < 1e-4 and cosine > 0.9999 and all(
        out[m]["value_rel_diff"] < 1e-4 and out[m]["grad_cosine"] > 0.9999 for m in ("per_offset", "chunked"))
    # the paper preset's mCRF (128×128×48 patches, the 64×64×48 grid, σ_I 0.05; batch 2, a valid mask): ms and
    # kernel launches per forward + backward of each compute mode
    patch, grid = ((128, 128, 48), (64, 64, 48)) if ctx["cuda"] else ((32, 32, 16), (16, 16, 16))
    logits_p = torch.randn((2, 2, *patch), generator=gen).to(device)
    image_p = torch.randn((2, 1, *patch), generator=gen).to(device)
    valid_p = torch.ones_like(image_p)
    valid_p[..., -4:] = 0
    paper = {"patch": list(patch), "grid": list(grid), "batch": 2}
    for mode in ("per_offset", "chunked"):
        loss_fn = MultiViewCRFLoss(sigma_xy=6.0, sigma_intensity=0.05, radius=5, downsample_to=grid,
                                   compute_mode=mode)

        def step() -> None:
            x = logits_p.clone().requires_grad_(True)
            loss_fn(x, image_p, valid_p).backward()

        paper[f"ms_{mode}"] = _timed(step, repeats=ctx["repeats"], sync=ctx["sync"], warmup=ctx["warmup"])
        paper[f"cuda_launches_{mode}"] = _cuda_launches(step) if ctx["cuda"] else "needs CUDA"
    out["paper_setting"] = paper
    return out if ctx["cuda"] else {**out, "skipped": f"small CPU check only: {ctx['why']}"}


def section_sliding_window(ctx: Dict[str, Any]) -> Dict[str, Any]:
    import numpy as np

    from PASegLib.networks import build_network
    from PASegLib.training.runtime import sliding_window_probability

    shape, patch = ((256, 256, 64), (128, 128, 48)) if ctx["cuda"] else ((32, 32, 16), (16, 16, 16))
    net = build_network("unet2d5").to(ctx["device"])
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

    def run() -> None:
        sliding_window_probability([net], image, patch_size=patch, overlap=0.25, device=ctx["device"],
                                   amp=ctx["cuda"])

    if ctx["cuda"]:
        import torch

        torch.cuda.reset_peak_memory_stats()
    ms = _timed(run, repeats=max(1, ctx["repeats"] // 2), sync=ctx["sync"], warmup=ctx["warmup"])
    out = {"volume": list(shape), "window": list(patch), "overlap": 0.25, "seconds": round(ms / 1000, 3),
           **_peak_memory(ctx), "device": ctx["name"]}
    return out if ctx["cuda"] else {**out, "skipped": f"small CPU run only: {ctx['why']}"}


def section_geodesic(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """The torch backend of the geodesic raster scan (:func:`PASegLib.seeds.geodesic.geodesic_distance`) on the
    device against the numpy backend, to convergence, on a 128×128×48 smoothed-noise volume with two seeds
    (λ 0.5, 0.625 mm): largest relative difference, seconds, sweeps."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    from PASegLib.seeds.geodesic import geodesic_distance

    shape = (128, 128, 48) if ctx["cuda"] else (24, 24, 12)
    image = gaussian_filter(np.random.default_rng(0).standard_normal(shape), 2.0).astype(np.float32) * 40 + 100
    seeds = np.zeros(shape, dtype=bool)
    seeds[shape[0] // 4, shape[1] // 2, shape[2] // 2] = seeds[3 * shape[0] // 4, shape[1] // 3, shape[2] // 3] = True
    options = {"spacing": (0.625, 0.625, 0.625), "lamb": 0.5, "return_iterations": True}
    found: Dict[str, Any] = {}
    for label, extra in (("numpy", {}), ("torch", {"backend": "torch", "device": ctx["device"]})):
        found[label] = geodesic_distance(image, seeds, **options, **extra)

        def run() -> None:
            geodesic_distance(image, seeds, **options, **extra)

        found[label] += (_timed(run, repeats=min(3, ctx["repeats"]), sync=ctx["sync"], warmup=min(1, ctx["warmup"])),)
    (reference, sweeps, ms_numpy), (distance, torch_sweeps, ms_torch) = found["numpy"], found["torch"]
    rel = float(np.max(np.abs(distance - reference) / np.maximum(np.abs(reference), 1e-6)))
    out = {"shape": list(shape), "max_rel_diff": rel, "agrees": rel < 1e-4, "sweeps_numpy": sweeps,
           "sweeps_torch": torch_sweeps, "s_numpy_cpu": round(ms_numpy / 1000, 3),
           "s_torch": round(ms_torch / 1000, 3), "device": ctx["name"]}
    if not out["agrees"]:
        out["error"] = f"the torch backend differs from numpy by {rel:.2e} (relative)"
    return out if ctx["cuda"] else {**out, "skipped": f"torch on the CPU at toy size: {ctx['why']}"}


def dataset(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """The dataset of the ``training`` and ``accuracy_row`` sections: the pack's (``manifest.json`` of
    ``benchmarks/gpu_pack.py``) or, without a pack, six synthetic cases written to the work folder.

    Returns ``{"folder", "train", "test", "source", "spacing_mm"}`` (case ids; the dry run keeps at most
    :data:`TOY_CASES` of them)."""
    if "dataset" in ctx:
        return ctx["dataset"]
    manifest = ctx["pack"] / "manifest.json" if ctx["pack"] is not None else None
    if manifest is not None and manifest.is_file():
        entry = json.loads(manifest.read_text(encoding="utf-8"))["dataset"]
        folder = ctx["pack"] / entry["folder"]
        if not folder.is_dir():
            raise FileNotFoundError(f"{manifest} names the data folder {folder}, which is missing: rebuild the pack "
                                    f"(make gpu-pack)")
        info = {"folder": folder, "train": list(entry["split"]["train"]), "test": list(entry["split"]["test"]),
                "spacing_mm": entry["spacing_mm"],
                "source": f"gpu_pack: {len(entry['cases'])} cases of {Path(entry['source']).name} at "
                          f"{entry['spacing_mm'][0]:g} mm, clicks simulated"}
    else:
        from PASegLib.cli.main import main as paseg

        folder = ctx["work"] / "synthetic_data"
        if not folder.is_dir():
            shape = ["128", "128", "48"] if ctx["cuda"] else ["48", "48", "16"]
            with contextlib.redirect_stdout(io.StringIO()):
                for args in (["synth", str(folder), "--cases", "6", "--shape", *shape],
                             ["simulate-clicks", str(folder), "--quiet"]):
                    if paseg(args) != 0:
                        raise RuntimeError(f"paseg {' '.join(args)} failed")
        ids = sorted(p.name[: -len("_image.nii.gz")] for p in folder.glob("*_image.nii.gz"))
        from PASegLib.image.io import read_geometry

        info = {"folder": folder, "train": ids[:4], "test": ids[4:],
                "spacing_mm": list(read_geometry(folder / f"{ids[0]}_image.nii.gz").spacing),
                "source": f"synthetic: no pack at {ctx['pack']} (make gpu-pack)"}
    if not ctx["cuda"]:
        info["train"], info["test"] = info["train"][: TOY_CASES[0]], info["test"][: TOY_CASES[1]]
    ctx["dataset"] = info
    return info


class _Recorder:
    """The progress stream and ``on_iteration`` hook of one training run: keeps every event with its arrival
    time, marks the end of the warm-up and of the last iteration (after a device sync) and reads the peak memory
    of the training iterations."""

    def __init__(self, ctx: Dict[str, Any], warmup: int) -> None:
        self.ctx, self.warmup = ctx, warmup
        self.events: List[Any] = []
        self.marks: Dict[int, float] = {}
        self.peak: Dict[str, Any] = {}
        self._buffer = ""

    def write(self, text: str) -> int:
        from PASegLib.jobs.events import parse_progress_line

        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        now = time.perf_counter()
        self.events += [(now, e) for e in map(parse_progress_line, lines) if e is not None]
        return len(text)

    def flush(self) -> None:
        pass

    def on_iteration(self, trainer: Any) -> None:
        step = trainer.global_step
        if step in (self.warmup, trainer.total_iterations):
            self.ctx["sync"]()
            self.marks[step] = time.perf_counter()
        if step == trainer.total_iterations:
            self.peak = _peak_memory(self.ctx)

    def figures(self, iterations: int) -> Dict[str, Any]:
        """iterations/s after the warm-up, ``data_wait`` of the timed iterations, losses, memory, phases."""
        its = [e for _, e in self.events if e["event"] == "iteration"]
        timed = its[self.warmup:]
        seconds = self.marks.get(iterations, 0.0) - self.marks.get(self.warmup, 0.0)
        first = {e["event"]: t for t, e in reversed(self.events)}
        validation = [t for t, e in self.events if e["event"] == "validation"]
        before = [t for t, e in self.events if e["event"] == "iteration" and validation and t < validation[0]]
        waits = [float(e.get("data_wait", 0.0)) for e in timed]
        losses = [e["losses"].get("loss") for e in its]
        out = {"iterations": len(its), "timed_iterations": len(timed),
               "iterations_per_s": round(len(timed) / seconds, 3) if seconds > 0 and timed else None,
               "ms_per_iteration": round(1000 * seconds / len(timed), 1) if seconds > 0 and timed else None,
               "data_wait_mean": round(statistics.mean(waits), 4) if waits else None,
               "data_wait_max": round(max(waits), 4) if waits else None,
               "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
               "losses_finite": all(v is not None for v in losses),
               "prepare_s": round(first["start"] - first["phase"], 2) if {"start", "phase"} <= set(first) else None,
               "validation_s": round(validation[0] - before[-1], 2) if before else None,  # the first round
               "cached_cases": sum(1 for _, e in self.events if e["event"] == "prepare" and e.get("cached")),
               **self.peak}
        if len(its) != iterations:
            out["error"] = f"{len(its)} iteration events, expected {iterations}"
        return out


def _peak_memory(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """Peak GPU memory since the last reset (CUDA), else the process's peak resident size so far."""
    if ctx["cuda"]:
        import torch

        return {"peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2)}
    import resource

    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_note": "CPU: the process's peak resident size so far (all sections)"}


def _train(ctx: Dict[str, Any], config: Any, run: Path, *, data: Dict[str, Any], cases: List[str], warmup: int,
           cache: Path, init_runs: Optional[List[Path]] = None) -> Dict[str, Any]:
    """Train ``config`` on ``cases`` into a fresh ``run`` as ``paseg train`` does; the run's figures."""
    from PASegLib.training.launch import train_from_dataset

    if ctx["cuda"]:
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    shutil.rmtree(run, ignore_errors=True)
    recorder = _Recorder(ctx, warmup)
    started = time.perf_counter()
    code = train_from_dataset(data["folder"], run, config, case_ids=cases, cache_dir=cache, stream=recorder,
                              on_iteration=recorder.on_iteration, init_runs=init_runs)
    if code != 0:
        raise RuntimeError(f"training {run.name} ended with exit code {code}")
    iterations = config.epochs * config.iterations_per_epoch
    return {"network": config.network if config.stage == 1 else [config.network, config.aux_network],
            **recorder.figures(iterations), "wall_s": round(time.perf_counter() - started, 1), "device": ctx["name"]}


def section_training(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """Stage one (primary and auxiliary) and SCM through ``train_from_dataset`` at :data:`TRAINING` (the dry run:
    :data:`TRAINING_TOY`); figures per run."""
    from PASegLib.pipeline.presets import preset_configs

    data, size = dataset(ctx), TRAINING if ctx["cuda"] else TRAINING_TOY
    its = size["iterations"]
    common = {"patch_size": size["patch_size"], "crf_downsample_to": size["crf_downsample_to"],
              "target_spacing_mm": size["target_spacing_mm"], "epochs": 1, "validate_every": 1,
              "checkpoint_every": 1, "validation_fraction": 0.1, "device": str(ctx["device"])}
    a, b, s = preset_configs("paper", data["spacing_mm"], seed=0, overrides=common)
    configs = {"stage1": a.replace(network="unet2d5", iterations_per_epoch=its["stage1"]),
               "auxiliary": b.replace(network="attention_unet", iterations_per_epoch=its["auxiliary"]),
               "scm": s.replace(network="unet2d5", aux_network="attention_unet", iterations_per_epoch=its["scm"])}
    root = ctx["work"] / "training"
    runs, out = {name: root / name for name in configs}, {}
    for name, config in configs.items():
        init = [runs["stage1"], runs["auxiliary"]] if name == "scm" else None
        out[name] = _train(ctx, config, runs[name], data=data, cases=data["train"], warmup=size["warmup"][name],
                           cache=root / "cache", init_runs=init)
    settings = {k: common[k] for k in ("patch_size", "crf_downsample_to", "target_spacing_mm")}
    settings.update(crf_image_sigma=a.crf_image_sigma, crf_sigma_intensity=a.crf_sigma_intensity, amp=a.amp,
                    batch_size=a.batch_size, train_cases=len(data["train"]))
    result = {"runs": out, "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
              "data": data["source"], "device": ctx["name"]}
    errors = [f"{name}: {r['error']}" for name, r in out.items() if "error" in r]
    if errors:
        result["error"] = "; ".join(errors)
    return result if ctx["cuda"] else {**result, "skipped": f"toy CPU runs only: {ctx['why']}"}


def section_accuracy_row(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """One short stage-one row at :data:`ACCURACY` on the dataset's training cases, Dice of the selected weights
    on its test cases (at their own grid, whole image)."""
    import numpy as np

    from PASegLib.data.dataset import list_cases
    from PASegLib.evaluation.metrics import compute_metrics
    from PASegLib.image.io import read_image
    from PASegLib.inference.predictor import load_predictor, predict_files
    from PASegLib.pipeline.presets import preset_configs

    data, size = dataset(ctx), dict(ACCURACY if ctx["cuda"] else ACCURACY_TOY)
    size.setdefault("target_spacing_mm", tuple(data["spacing_mm"]))
    a, _, _ = preset_configs("cpu", data["spacing_mm"], seed=0, overrides={
        **size, "checkpoint_every": size["validate_every"], "device": str(ctx["device"]), "amp": True})
    root = ctx["work"] / "accuracy_row"
    row = _train(ctx, a, root / "run", data=data, cases=data["train"], warmup=min(5, a.iterations_per_epoch - 1),
                 cache=root / "cache")
    started = time.perf_counter()
    predictor = load_predictor(root / "run", checkpoint="best", device=str(ctx["device"]), verbose=False)
    by_id = {f.case_id: f for f in list_cases(data["folder"])}
    shutil.rmtree(root / "predictions", ignore_errors=True)
    predict_files(predictor, [by_id[c] for c in data["test"]], root / "predictions")
    predict_s = time.perf_counter() - started
    scores = {}
    for case in data["test"]:
        label = read_image(by_id[case].label, role="label")
        pred = read_image(root / "predictions" / f"{case}_pred.nii.gz", role="prediction")
        scores[case] = compute_metrics(np.asarray(pred.array) > 0, np.asarray(label.array) > 0,
                                       spacing=label.geometry.spacing)
    dice = [scores[c]["dice"] for c in data["test"]]
    result = {"dice_mean": round(float(np.mean(dice)), 4), "dice": {c: round(scores[c]["dice"], 4) for c in scores},
              "assd_mm_mean": round(float(np.mean([scores[c]["assd"] for c in scores])), 2),
              "train": row, "predict_s": round(predict_s, 1), "test_cases": len(data["test"]),
              "settings": {"preset": "cpu", "network": a.network, "patch_size": list(a.patch_size),
                           "target_spacing_mm": list(a.target_spacing_mm), "epochs": a.epochs,
                           "iterations_per_epoch": a.iterations_per_epoch, "selection": a.selection,
                           "train_cases": len(data["train"])},
              "data": data["source"], "device": ctx["name"]}
    if "error" in row:
        result["error"] = row["error"]
    return result if ctx["cuda"] else {**result, "skipped": f"toy CPU row (its Dice means nothing): {ctx['why']}"}


def section_ddp(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """``paseg train`` under ``torchrun --nproc-per-node 1`` (NCCL on CUDA; gloo in the dry run) against the same
    training in one plain process, on a synthetic dataset: wall times and the largest weight difference."""
    import torch

    from PASegLib.training.checkpoint import load_checkpoint

    work, cuda = ctx["work"] / "ddp", ctx["cuda"]
    data = work / "data"
    if not data.is_dir():
        shape = ["96", "96", "48"] if cuda else ["32", "32", "16"]
        for cmd in (["synth", str(data), "--cases", "4", "--shape", *shape],
                    ["simulate-clicks", str(data), "--quiet"]):
            subprocess.run([sys.executable, "-m", "PASegLib", *cmd], cwd=ROOT, check=True, capture_output=True)
    settings = {"patch_size": [64, 64, 32], "crf_downsample_to": [32, 32, 32], "epochs": 2, "iterations_per_epoch": 10,
                "batch_size": 2, "deterministic": True, "validation_fraction": 0.25, "validate_every": 1}
    if not cuda:
        settings.update(patch_size=[16, 16, 16], crf_downsample_to=None, epochs=1, iterations_per_epoch=2,
                        num_threads=1, validation_fraction=0.0)  # toy: the launchers, not the validation round
    config = work / "config.json"
    config.write_text(json.dumps(settings))
    backend = "nccl" if cuda else "gloo"
    common = ["-m", "PASegLib", "train", str(data), "--config", str(config), "--device", "cuda" if cuda else "cpu",
              "--quiet", "--cache-dir", str(work / "cache")]
    runs, rows = {}, {}
    launchers = (("plain", [sys.executable]),
                 (f"ddp_{backend}_world1", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                            "--nproc-per-node", "1"]))
    for label, prefix in launchers:
        out = work / label
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        done = subprocess.run(prefix + common + ["--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                              timeout=240)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            return {"error": f"{label} exited with {done.returncode}: {done.stderr[-2000:]}", "device": ctx["name"]}
        model = json.loads((out / "model.json").read_text())
        rows[label] = {"wall_s": round(seconds, 1), "train_s": model["train_seconds"],
                       "processes": model.get("processes", 1)}
        runs[label] = load_checkpoint(out / "checkpoints" / "last.pt")["networks"]["primary"]["state_dict"]
    plain, ddp = runs["plain"], runs[launchers[1][0]]
    diff = max(float((plain[k].float() - ddp[k].float()).abs().max()) for k in plain)
    out = {"runs": rows, "max_abs_weight_diff": diff, "backend": backend, "device": ctx["name"],
           "torch": torch.__version__}
    if rows[launchers[1][0]]["processes"] != 1:
        out["error"] = f"the torchrun run reports {rows[launchers[1][0]]['processes']} processes, expected 1"
    return out if cuda else {**out, "skipped": f"gloo on the CPU at toy size: {ctx['why']}"}


#: every section, in the order they run
SECTIONS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    "cuda_tests": section_cuda_tests, "amp_steps": section_amp_steps, "mcrf": section_mcrf,
    "geodesic": section_geodesic, "training": section_training, "sliding_window": section_sliding_window, "ddp": section_ddp,
    "accuracy_row": section_accuracy_row}


def environment(pack: Optional[Path]) -> Dict[str, Any]:
    """Python, torch/CUDA and the versions of PASeg's dependencies, each with where it was imported from; the
    pack's wheels with whether their installed copy is the one in ``$PASEG_PACK_SITE`` (``gpu_check.sh``)."""
    import platform
    from importlib import metadata

    import torch

    def where(name: str) -> Dict[str, Any]:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return {"version": None}
        return {"version": dist.version, "location": str(dist.locate_file(""))}

    site = os.environ.get("PASEG_PACK_SITE")
    env: Dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                           "packages": {n: where(n) for n in ("monai", "SimpleITK", "numpy", "scipy", "scikit-image")},
                           "pack": str(pack) if pack is not None else None, "pack_site": site}
    wheels = sorted((pack / "wheels").glob("*.whl")) if pack is not None and (pack / "wheels").is_dir() else []
    env["pack_wheels"] = {}
    for wheel in wheels:
        name = wheel.name.split("-")[0]
        row = where(name)
        row["from_pack"] = bool(site) and row.get("location") is not None and \
            Path(row["location"]).resolve() == Path(site).resolve()
        env["pack_wheels"][name] = row
    manifest = pack / "manifest.json" if pack is not None else None
    if manifest is not None and manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        env["pack_manifest"] = {"created": data.get("created"), "sizes": data.get("sizes")}
    return env


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="every section at toy size on the CPU")
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions (after two warm-ups)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_output" / "gpu_suite.json",
                        help="the summary JSON (also copied to $OUT when set)")
    parser.add_argument("--only", nargs="+", choices=tuple(SECTIONS), metavar="SECTION",
                        help=f"run these sections only, keeping the other figures of the same device in --out "
                             f"({', '.join(SECTIONS)})")
    parser.add_argument("--pack", type=Path, default=ROOT / "gpu_pack",
                        help="the folder of make gpu-pack (its dataset; default gpu_pack/)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench_output" / "gpu_suite_work",
                        help="scratch folder (datasets, runs, caches; default bench_output/gpu_suite_work)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    why = "--dry-run" if args.dry_run else f"no CUDA device (torch {torch.__version__})"
    name = f"cpu ({torch.get_num_threads()} threads)"
    if cuda:
        props = torch.cuda.get_device_properties(0)
        name = f"{props.name} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor})"
    pack = args.pack if args.pack.is_dir() else None
    args.work.mkdir(parents=True, exist_ok=True)
    ctx = {"cuda": cuda, "why": None if cuda else why, "device": torch.device("cuda" if cuda else "cpu"),
           "name": name, "sync": torch.cuda.synchronize if cuda else (lambda: None),
           "repeats": args.repeats if cuda else 1, "warmup": 2 if cuda else 0, "pack": pack, "work": args.work}
    if cuda:
        torch.backends.cudnn.benchmark = True
    summary: Dict[str, Any] = {"device": ctx["name"], "torch": torch.__version__, "dry_run": not cuda}
    previous = _previous(args.out, summary) if args.only else {}
    summary.update({k: v for k, v in previous.items() if k in SECTIONS})
    summary["environment"] = environment(pack)
    print(json.dumps({k: summary[k] for k in ("device", "torch", "dry_run", "environment")}), flush=True)
    for section, run in SECTIONS.items():
        if args.only and section not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            summary[section] = run(ctx)
        except Exception as exc:  # noqa: BLE001 -- one failing section must not lose the others' figures
            summary[section] = {"error": f"{type(exc).__name__}: {exc}"[:2000], "device": ctx["name"]}
        summary[section]["section_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({section: summary[section]}), flush=True)
        _write(summary, args.out)
    summary["total_s"] = round(sum(summary[s]["section_s"] for s in SECTIONS if s in summary), 1)
    summary["kept_from_previous"] = sorted(set(previous) & set(SECTIONS) - set(args.only or ()))
    _write(summary, args.out)
    failed = [s for s in SECTIONS if "error" in summary.get(s, {})]
    print(json.dumps({"total_s": summary["total_s"], "out": str(args.out), "failed": failed}), flush=True)
    return 1 if failed else 0


def _previous(path: Path, summary: Dict[str, Any]) -> Dict[str, Any]:
    """The summary already in ``path`` when it was measured on the same device in the same mode, else ``{}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    same = isinstance(data, dict) and all(data.get(k) == summary[k] for k in ("device", "torch", "dry_run"))
    return data if same else {}


def _write(summary: Dict[str, Any], path: Path) -> None:
    from PASegLib.utils.atomic import atomic_write_json

    atomic_write_json(path, summary)
    if os.environ.get("OUT"):
        atomic_write_json(Path(os.environ["OUT"]) / path.name, summary)


if __name__ == "__main__":
    raise SystemExit(main())
