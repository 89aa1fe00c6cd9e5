"""The GPU check: what CPU machines cannot test or time, in under ten minutes on one GPU.

Sections (each a JSON line on stdout, each figure with the device it was measured on):

1. ``cuda_tests`` — the tests that CPU machines skip (``skipif(not torch.cuda.is_available() …)`` in
   ``Testing/Python``, found by reading the files), run with pytest;
2. ``amp_steps`` — one stage-one training step (forward, the stage-one loss with the mCRF on its paper grid,
   backward, SGD with a GradScaler; float16 autocast) of each network at the paper preset's patch size
   (``unet2d5`` and ``attention_unet`` 128×128×48, ``unet3d`` 128×128×128): median ms, peak GPU memory;
3. ``mcrf`` — the mCRF on CUDA (:func:`PASegLib.losses.crf.multi_view_crf_loss`) against the unfold reference
   of ``Testing/Python/losses/test_loss_crf.py`` on the official 64×64×48 grid, radius 5: value and gradient
   agreement, ms;
4. ``sliding_window`` — sliding-window inference (``unet2d5``, 128×128×48 windows, overlap 0.25, AMP) of a
   256×256×64 volume: warm seconds;
5. ``ddp`` — a 1-GPU DDP run: ``torchrun --standalone --nproc-per-node 1 -m PASegLib train`` (NCCL, world size 1,
   deterministic) against the same training in one plain process: both wall times and the largest weight
   difference.

``--dry-run`` (and any machine without CUDA) runs every section small on the CPU, to check the script, and
marks the CUDA figures as skipped with the reason; the CUDA tests are listed, not run. The summary goes to
``bench_output/gpu_suite.json`` and, when ``$OUT`` is set (the device machine's convention), to
``$OUT/gpu_suite.json``.

    python benchmarks/gpu_suite.py              # on a GPU machine (about 5 minutes on an H100/H200)
    python benchmarks/gpu_suite.py --dry-run    # anywhere, seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TESTS = ROOT / "Testing" / "Python"
#: the paper preset's patches (PASegLib/pipeline/presets.py) and its mCRF grids
STEPS = (("unet2d5", (128, 128, 48), (64, 64, 48)), ("attention_unet", (128, 128, 48), (64, 64, 48)),
         ("unet3d", (128, 128, 128), (64, 64, 64)))
SMALL_STEPS = (("unet2d5", (16, 16, 16), (8, 8, 8)), ("attention_unet", (16, 16, 16), (8, 8, 8)),
               ("unet3d", (16, 16, 16), (8, 8, 8)))


def cuda_tests() -> List[str]:
    """Node ids of the tests that skip without CUDA (a ``skipif`` naming ``cuda.is_available`` before a test)."""
    found = []
    pattern = re.compile(r"@pytest\.mark\.skipif\(\s*not\s+torch\.cuda\.is_available\(\)[^\n]*\n(?:@[^\n]*\n)*"
                         r"def (test_\w+)")
    for path in sorted(TESTS.rglob("test_*.py")):
        for name in pattern.findall(path.read_text(encoding="utf-8")):
            found.append(f"{path.relative_to(ROOT)}::{name}")
    return found


def section_cuda_tests(ctx: Dict[str, Any]) -> Dict[str, Any]:
    tests = cuda_tests()
    if not ctx["cuda"]:
        return {"tests": tests, "skipped": ctx["why"]}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    return {"tests": tests, "passed": done.returncode == 0, "summary": tail[0],
            "seconds": round(time.perf_counter() - started, 1)}


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


def section_mcrf(ctx: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    from PASegLib.losses.crf import multi_view_crf_loss

    reference, device = _reference(), ctx["device"]
    shape = (1, 2, 64, 64, 48) if ctx["cuda"] else (1, 2, 16, 16, 8)
    radius = 5 if ctx["cuda"] else 2
    gen = torch.Generator().manual_seed(0)
    logits0 = torch.randn(shape, generator=gen).to(device)
    image = torch.randn((shape[0], 1, *shape[2:]), generator=gen).to(device)
    results = {}
    for label, fn in (("fast", multi_view_crf_loss), ("reference", reference)):
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
    out["agrees"] = out["value_rel_diff"] < 1e-4 and cosine > 0.9999
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

    ms = _timed(run, repeats=max(1, ctx["repeats"] // 2), sync=ctx["sync"], warmup=ctx["warmup"])
    out = {"volume": list(shape), "window": list(patch), "overlap": 0.25, "seconds": round(ms / 1000, 3),
           "device": ctx["name"]}
    return out if ctx["cuda"] else {**out, "skipped": f"small CPU run only: {ctx['why']}"}


def section_ddp(ctx: Dict[str, Any], work: Path) -> Dict[str, Any]:
    if not ctx["cuda"]:
        return {"skipped": f"NCCL needs CUDA: {ctx['why']}"}
    import torch

    from PASegLib.training.checkpoint import load_checkpoint

    data = work / "ddp_data"
    if not data.is_dir():
        for cmd in (["synth", str(data), "--cases", "4", "--shape", "96", "96", "48"],
                    ["simulate-clicks", str(data), "--quiet"]):
            subprocess.run([sys.executable, "-m", "PASegLib", *cmd], cwd=ROOT, check=True, capture_output=True)
    config = work / "ddp_config.json"
    config.write_text(json.dumps({"patch_size": [64, 64, 32], "crf_downsample_to": [32, 32, 32], "epochs": 2,
                                  "iterations_per_epoch": 10, "batch_size": 2, "deterministic": True,
                                  "validation_fraction": 0.25, "validate_every": 1}))
    common = ["-m", "PASegLib", "train", str(data), "--config", str(config), "--device", "cuda", "--quiet",
              "--cache-dir", str(work / "ddp_cache")]
    runs, rows = {}, {}
    for label, prefix in (("plain", [sys.executable]),
                          ("ddp_nccl_world1", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                               "--nproc-per-node", "1"])):
        out = work / f"ddp_{label}"
        started = time.perf_counter()
        done = subprocess.run(prefix + common + ["--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                              timeout=240)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            return {"failed": label, "stderr": done.stderr[-2000:], "device": ctx["name"]}
        model = json.loads((out / "model.json").read_text())
        rows[label] = {"wall_s": round(seconds, 1), "train_s": model["train_seconds"],
                       "processes": model.get("processes", 1)}
        runs[label] = load_checkpoint(out / "checkpoints" / "last.pt")["networks"]["primary"]["state_dict"]
    diff = max(float((runs["plain"][k].float() - runs["ddp_nccl_world1"][k].float()).abs().max())
               for k in runs["plain"])
    return {"runs": rows, "max_abs_weight_diff": diff, "backend": "nccl", "device": ctx["name"],
            "torch": torch.__version__}


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="small CPU versions of every section")
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions (after two warm-ups)")
    parser.add_argument("--out", default=str(ROOT / "bench_output" / "gpu_suite.json"))
    parser.add_argument("--only", nargs="+", choices=("cuda_tests", "amp_steps", "mcrf", "sliding_window", "ddp"))
    args = parser.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    why = "--dry-run" if args.dry_run else f"no CUDA device (torch {torch.__version__})"
    ctx = {"cuda": cuda, "why": None if cuda else why, "device": torch.device("cuda" if cuda else "cpu"),
           "name": torch.cuda.get_device_name(0) if cuda else f"cpu ({torch.get_num_threads()} threads)",
           "sync": torch.cuda.synchronize if cuda else (lambda: None),
           "repeats": args.repeats if cuda else 1, "warmup": 2 if cuda else 0}
    if cuda:
        torch.backends.cudnn.benchmark = True
    work = Path(args.out).parent / "gpu_suite_work"
    work.mkdir(parents=True, exist_ok=True)
    summary: Dict[str, Any] = {"device": ctx["name"], "torch": torch.__version__, "dry_run": not cuda}
    print(json.dumps(summary), flush=True)
    sections = {"cuda_tests": section_cuda_tests, "amp_steps": section_amp_steps, "mcrf": section_mcrf,
                "sliding_window": section_sliding_window, "ddp": lambda c: section_ddp(c, work)}
    started = time.perf_counter()
    for name, run in sections.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            summary[name] = run(ctx)
        except Exception as exc:  # noqa: BLE001 -- one failing section must not lose the others' figures
            summary[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000], "device": ctx["name"]}
        summary[name]["section_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({name: summary[name]}), flush=True)
        _write(summary, Path(args.out))
    summary["total_s"] = round(time.perf_counter() - started, 1)
    _write(summary, Path(args.out))
    print(json.dumps({"total_s": summary["total_s"], "out": args.out}), flush=True)
    return 1 if any(isinstance(v, dict) and "error" in v for v in summary.values()) else 0


def _write(summary: Dict[str, Any], path: Path) -> None:
    from PASegLib.utils.atomic import atomic_write_json

    atomic_write_json(path, summary)
    if os.environ.get("OUT"):
        atomic_write_json(Path(os.environ["OUT"]) / path.name, summary)


if __name__ == "__main__":
    raise SystemExit(main())
