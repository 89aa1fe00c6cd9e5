"""The accuracy benchmark sized for one GPU: la_heart at 1.25 mm, 96×96×48 patches.

Rows (``bench_accuracy.py`` row names, same split, clicks and seed as the CPU table): full supervision,
stage one (defaults), the auxiliary network's stage one, SCM (the CPU preset's lr 1e-3) and SCM-E. Steps:

1. prepare the training cases of that grid into the shared cache with a process pool (one per core);
2. train the stage-one rows asked for side by side on the GPU (one process each), then the SCM rows;
3. write ``docs/results/accuracy_gpu.json`` (and copy it to ``$OUT`` when set) with the device named, from every
   row finished so far.

It needs the 80 la_heart cases (``--data``, default ``../shared/data/la_heart``): 119 MB, more than the 64 MiB
copy the lent GPU box receives, so it runs on a GPU machine that has the data. On the lent box use
``benchmarks/gpu_check.sh`` instead, whose ``accuracy_row`` section trains one short stage-one row on the
12 cases of ``make gpu-pack``.

Resumable: rerun the same command after a time-out and finished rows are skipped, interrupted trainings
resume from their checkpoints (as long as ``--out`` survived). ``--rows`` runs some rows only (the SCM rows
need both stage-one rows finished), so the work can be split over several commands. Budget: stage one
40 epochs × 50 iterations, SCM 15 × 50. Time: **not measured** (no GPU has run it); estimated 20–30 minutes on
one H100/H200: three stage-one rows of 2,000 iterations sharing one GPU (patch cutting and host syncs in
each process's main thread), 14 validation rounds of 12 cases per row with the held-out loss on the CPU, then
750 SCM iterations of two networks, and the native-resolution evaluation of 20 test cases per row on the CPU.

    python benchmarks/gpu_accuracy.py                                      # every row
    python benchmarks/gpu_accuracy.py --rows "full supervision"            # one row (one command's slot)
    python benchmarks/gpu_accuracy.py --data /data/la_heart --dry-run      # print the commands only
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

COMMON = {"target_spacing_mm": [1.25, 1.25, 1.25], "patch_size": [96, 96, 48], "num_threads": 0, "amp": True,
          "expansion": {"fill": "none"}}  # the CPU rows it is compared with trained on the plain seeds
STAGE1 = {"epochs": 40, "iterations_per_epoch": 50}
SCM = {"epochs": 15, "iterations_per_epoch": 50, "refresh_every": 3}
PARALLEL_ROWS = ("full supervision", "stage one (defaults)", "stage one, auxiliary (attention_unet, defaults)")
LATER_ROWS = ("SCM (defaults)", "SCM-E (defaults)")
#: the rows the SCM rows start from (bench_accuracy.py's row table)
SCM_NEEDS = ("stage one (defaults)", "stage one, auxiliary (attention_unet, defaults)")
#: the la_heart cases bench_accuracy.py splits 60 / 20
CASES = 80


from bench_accuracy import LA_HEART, slug  # noqa: E402

from PASegLib.utils.atomic import atomic_write_json  # noqa: E402


def _prepare_one(args):
    from PASegLib.data.prepare import prepare_cases

    files, config, cache = args
    prepare_cases([files], config, cache_dir=cache)
    return files.case_id


def check_data(data: Path) -> list:
    """The sorted case ids of ``data``; a ``SystemExit`` naming the folder unless it holds the 80 la_heart cases."""
    from PASegLib.data.dataset import DatasetError, list_cases

    if not data.is_dir():
        raise SystemExit(f"gpu_accuracy: --data {data}: folder not found (the 80 la_heart cases; see "
                         f"../shared/data/README.md)")
    try:
        ids = sorted(c.case_id for c in list_cases(data) if c.label is not None)
    except DatasetError as exc:
        raise SystemExit(f"gpu_accuracy: --data {data}: {exc}") from None
    if len(ids) != CASES:
        raise SystemExit(f"gpu_accuracy: --data {data} holds {len(ids)} labelled case(s); the benchmark's split "
                         f"needs the {CASES} la_heart cases")
    return ids


def prepare_parallel(out: Path, workers: int, data: Path = LA_HEART) -> float:
    """Prepare every training case of the GPU grid into ``out/cache`` with ``workers`` processes."""
    from PASegLib.data.dataset import list_cases
    from PASegLib.pipeline.inputs import median_spacing, simulate_missing_clicks
    from PASegLib.pipeline.presets import preset_configs

    train_ids = check_data(data)[:60]
    clicks = out / "clicks"
    clicks.mkdir(parents=True, exist_ok=True)
    from PASegLib.annotation.simulation import ClickSimulationConfig

    # the clicks of bench_accuracy.py's committed rows (one stream shared by every case), for comparable rows
    simulate_missing_clicks(list(list_cases(data)), clicks, seed=0, config=ClickSimulationConfig(legacy_shared_stream=True))
    by_id = {f.case_id: f for f in list_cases(data, annotations_dir=clicks)}
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


def bench_command(out: Path, rows, *, summary: Path = None, data: Path = LA_HEART):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_accuracy.py"), "--preset", "cpu", "--device", "cuda",
           "--data", str(data), "--out", str(out), "--set", json.dumps(COMMON), "--stage1-set", json.dumps(STAGE1),
           "--scm-set", json.dumps(SCM)]
    if summary is not None:
        return cmd + ["--summary", str(summary)]
    return cmd + ["--rows", *rows]


def plan(rows, out: Path):
    """``(parallel, later)``: the asked-for rows not finished yet, in run order; a ``SystemExit`` when an SCM row
    is asked for without its stage-one rows (finished or asked for too)."""
    unknown = [r for r in rows if r not in PARALLEL_ROWS + LATER_ROWS]
    if unknown:
        raise SystemExit(f"gpu_accuracy: --rows: unknown row(s) {unknown}; choose from "
                         f"{list(PARALLEL_ROWS + LATER_ROWS)}")
    done = {r for r in PARALLEL_ROWS + LATER_ROWS if (out / "rows" / f"{slug(r)}.json").is_file()}
    parallel = [r for r in PARALLEL_ROWS if r in rows and r not in done]
    later = [r for r in LATER_ROWS if r in rows and r not in done]
    missing = [r for r in SCM_NEEDS if r not in done and r not in parallel]
    if later and missing:
        raise SystemExit(f"gpu_accuracy: --rows {later} start from the stage-one rows {missing}, which are neither "
                         f"finished in {out / 'rows'} nor asked for")
    return parallel, later


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench_output" / "accuracy_gpu")
    parser.add_argument("--data", type=Path, default=LA_HEART, help="the 80 la_heart cases (default ../shared)")
    parser.add_argument("--rows", nargs="+", default=list(PARALLEL_ROWS + LATER_ROWS), metavar="ROW",
                        help="rows to run (default every row); finished rows are skipped")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    summary = ROOT / "docs" / "results" / "accuracy_gpu.json"
    parallel, later = plan(args.rows, args.out)
    if args.dry_run:
        for rows in [(r,) for r in parallel] + ([tuple(later)] if later else []):
            print(shlex.join(bench_command(args.out, rows, data=args.data)))
        print(shlex.join(bench_command(args.out, (), summary=summary, data=args.data)))
        return 0
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_accuracy: no CUDA device (this script is for a GPU machine)")
    check_data(args.data)
    device = torch.cuda.get_device_name(0)
    print(json.dumps({"device": device, "torch": torch.__version__, "rows": parallel + later}), flush=True)
    started = time.monotonic()
    if parallel or later:
        prep_s = prepare_parallel(args.out, args.workers, args.data)
        print(json.dumps({"prepare_s": round(prep_s, 1), "workers": args.workers}), flush=True)
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen(bench_command(args.out, (row,), data=args.data),  # noqa: SIM115
                              stdout=open(logs / f"{slug(row)}.log", "w"), stderr=subprocess.STDOUT)
             for row in parallel]
    codes = [p.wait() for p in procs]
    _copy_out(args.out)
    if any(codes):
        raise SystemExit(f"stage-one rows failed with exit codes {codes}; see {logs}")
    if later:
        subprocess.run(bench_command(args.out, later, data=args.data), check=True)
        _copy_out(args.out)
    subprocess.run(bench_command(args.out, (), summary=summary, data=args.data), check=True,
                   stdout=subprocess.DEVNULL)
    data = json.loads(summary.read_text(encoding="utf-8"))
    data["device"] = f"{device}, torch {torch.__version__}"
    data["wall_s_last_command"] = round(time.monotonic() - started, 1)
    atomic_write_json(summary, data)
    if os.environ.get("OUT"):
        shutil.copy(summary, Path(os.environ["OUT"]) / summary.name)
    print(json.dumps({name: {k: r.get(k) for k in ("dice_mean", "dice_last_mean", "ratio_to_full", "train_s")}
                      for name, r in data["rows"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
