"""The accuracy benchmark sized for one lent GPU: la_heart at 1.25 mm, 96×96×48 patches.

Rows (``bench_accuracy.py`` row names, same split, clicks and seed as the CPU table): full supervision,
stage one (defaults), the auxiliary network's stage one, SCM (the CPU preset's lr 1e-3) and SCM-E. Steps:

1. prepare the training cases of that grid into the shared cache with a process pool (one per core);
2. train full supervision and both stage-one rows side by side on the GPU (three processes), then SCM;
3. write ``docs/results/accuracy_gpu.json`` (and copy it to ``$OUT`` when set) with the device named.

Resumable: rerun the same command after a time-out and finished rows are skipped, interrupted trainings
resume from their checkpoints (as long as ``bench_output/`` survived). Budget: stage one 40 epochs × 50
iterations, SCM 15 × 50 — sized to fit ~10 minutes on one H100/H200 class GPU (data preparation included).

    python benchmarks/gpu_accuracy.py                 # on the device machine
    python benchmarks/gpu_accuracy.py --dry-run       # print the commands only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMON = {"target_spacing_mm": [1.25, 1.25, 1.25], "patch_size": [96, 96, 48], "num_threads": 0, "amp": True}
STAGE1 = {"epochs": 40, "iterations_per_epoch": 50}
SCM = {"epochs": 15, "iterations_per_epoch": 50, "refresh_every": 3}
PARALLEL_ROWS = ("full supervision", "stage one (defaults)", "stage one, auxiliary (attention_unet, defaults)")
LATER_ROWS = ("SCM (defaults)", "SCM-E (defaults)")


from PASegLib.utils.atomic import atomic_write_json  # noqa: E402


def _prepare_one(args):
    from PASegLib.data.prepare import prepare_cases

    files, config, cache = args
    prepare_cases([files], config, cache_dir=cache)
    return files.case_id


def prepare_parallel(out: Path, workers: int) -> float:
    """Prepare every training case of the GPU grid into ``out/cache`` with ``workers`` processes."""
    from PASegLib.data.dataset import list_cases
    from PASegLib.pipeline.inputs import median_spacing, simulate_missing_clicks
    from PASegLib.pipeline.presets import preset_configs

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_accuracy import LA_HEART

    ids = sorted(c.case_id for c in list_cases(LA_HEART))
    train_ids = ids[:60]
    clicks = out / "clicks"
    clicks.mkdir(parents=True, exist_ok=True)
    simulate_missing_clicks([f for f in list_cases(LA_HEART)], clicks, seed=0)
    by_id = {f.case_id: f for f in list_cases(LA_HEART, annotations_dir=clicks)}
    a, _, _ = preset_configs("cpu", median_spacing([by_id[c] for c in train_ids]), seed=0, overrides=COMMON)
    start = time.monotonic()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_prepare_one, [(by_id[c], a, out / "cache") for c in train_ids]))
    return time.monotonic() - start


def _copy_out(out: Path) -> None:
    """Copy the finished rows and logs to ``$OUT`` (the device tool brings back only what lies there), so a
    command that runs past its time limit still returns the rows it finished."""
    if not os.environ.get("OUT"):
        return
    target = Path(os.environ["OUT"])
    for folder in ("rows", "logs"):
        if (out / folder).is_dir():
            shutil.copytree(out / folder, target / folder, dirs_exist_ok=True)


def bench_command(out: Path, rows, *, summary: Path = None):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_accuracy.py"), "--preset", "cpu", "--device", "cuda",
           "--out", str(out), "--set", json.dumps(COMMON), "--stage1-set", json.dumps(STAGE1),
           "--scm-set", json.dumps(SCM)]
    if summary is not None:
        return cmd + ["--summary", str(summary)]
    return cmd + ["--rows", *rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench_output" / "accuracy_gpu")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    summary = ROOT / "docs" / "results" / "accuracy_gpu.json"
    if args.dry_run:
        for rows in (*[(r,) for r in PARALLEL_ROWS], LATER_ROWS):
            print(" ".join(bench_command(args.out, rows)))
        print(" ".join(bench_command(args.out, (), summary=summary)))
        return 0
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_accuracy: no CUDA device (this script is for a lent GPU machine)")
    device = torch.cuda.get_device_name(0)
    print(json.dumps({"device": device, "torch": torch.__version__}), flush=True)
    prep_s = prepare_parallel(args.out, args.workers)
    print(json.dumps({"prepare_s": round(prep_s, 1), "workers": args.workers}), flush=True)
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen(bench_command(args.out, (row,)), stdout=open(logs / f"{n}.log", "w"),  # noqa: SIM115
                              stderr=subprocess.STDOUT) for n, row in enumerate(PARALLEL_ROWS)]
    codes = [p.wait() for p in procs]
    _copy_out(args.out)
    if any(codes):
        raise SystemExit(f"stage-one rows failed with exit codes {codes}; see {logs}")
    subprocess.run(bench_command(args.out, LATER_ROWS), check=True)
    _copy_out(args.out)
    subprocess.run(bench_command(args.out, (), summary=summary), check=True, stdout=subprocess.DEVNULL)
    data = json.loads(summary.read_text(encoding="utf-8"))
    data["device"] = f"{device}, torch {torch.__version__}"
    atomic_write_json(summary, data)
    if os.environ.get("OUT"):
        shutil.copy(summary, Path(os.environ["OUT"]) / summary.name)
    print(json.dumps({name: {k: r.get(k) for k in ("dice_mean", "dice_last_mean", "ratio_to_full", "train_s")}
                      for name, r in data["rows"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
