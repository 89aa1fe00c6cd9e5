"""Peak memory of a short training run on 80 and on 320 la_heart cases, in memory vs streamed.

Cohorts: the 80 la_heart cases (ids ``<case>_r0``) and the same 80 repeated four times under new ids
(``<case>_r0`` … ``<case>_r3``: 320 cases), as dataset folders of symbolic links (images, labels, and the
clicks simulated from the labels with seed 0). The prepared-data cache key hashes the *resolved* input files,
so a linked case has the key of its original: the 80 cases are prepared once (``prepare_workers`` = the cores;
timed) and every other id's cache entry is a hard link to its original's — the 320-case cohort costs no
preparation and no disk, and every cohort finds all its cases cached (checked).

Each run is ``train_from_dataset`` in its own child process: ``--iterations`` iterations of one epoch, patch
``--patch``, ``num_threads`` 1, no validation (``validation_fraction`` 0: every case is a training case),
batch 1, on the CPU; the network and the rest from the CPU preset. Variants:

* ``memory``: ``cache_mb = None`` — every prepared case read into memory during preparation and kept for the
  run (PASeg before streaming);
* ``streamed``: ``cache_mb = --cache-mb`` — cases read from the cache when needed, at most that many MiB of
  them held (least recently used evicted), the next ``prefetch_cases`` (2) read ahead by a thread.

Reported per run: peak resident set size (``VmHWM`` of the child, from ``/proc/self/status``; also
``ru_maxrss``), resident size after importing torch and PASegLib (before any data), wall seconds, mean share
of an iteration spent building its batch (``data_wait``). ``rss_ratio_320_vs_80`` = streamed peak at 320 /
at 80 (goal: within 10 %); the same ratio of the in-memory runs shows what it was.

``--spacing native`` (default) trains at la_heart's own 0.625 mm (~3.4 M voxels, ~24 MB per prepared case:
the regime where memory matters); ``--spacing cpu`` at the CPU preset's 2 mm (~0.3 MB per case).

Readable lines go to stderr, the last stdout line is one JSON object; ``--out-json`` also writes it.

Usage::

    .venv/bin/python benchmarks/bench_memory.py --out-json bench_output/scale_data/memory.json
    .venv/bin/python benchmarks/bench_memory.py --spacing cpu --cache-mb 2
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "benchmarks"), str(REPO_ROOT)]
from _child import child_or_skip, run_child, write_summary  # noqa: E402
from bench_prepare import LA_HEART, cpu_preset_config, la_heart_files  # noqa: E402


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def train_config(cfg: Dict[str, Any], files: List[Any]):
    """The run's settings: the CPU preset, changed as the module docstring says."""
    base = cpu_preset_config(files)
    changes = {"epochs": 1, "iterations_per_epoch": cfg["iterations"], "patch_size": cfg["patch"],
               "validation_fraction": 0.0, "num_threads": 1, "device": "cpu", "amp": False,
               "cache_mb": cfg.get("cache_mb")}
    if cfg["spacing"] == "native":
        changes["target_spacing_mm"] = None
    return base.replace(**changes)


def child(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """One training run; its peak memory."""
    import io

    import torch  # noqa: F401  (counted in the baseline)

    from PASegLib.jobs.events import parse_progress_line
    from PASegLib.training.launch import train_from_dataset

    baseline = _status_mb("VmRSS")
    files = la_heart_files(Path(cfg["data"]), Path(cfg["clicks"]), 80)
    config = train_config(cfg, files)
    run = Path(cfg["run"])
    shutil.rmtree(run, ignore_errors=True)
    stream = io.StringIO()
    start = time.monotonic()
    code = train_from_dataset(cfg["cohort"], run, config, cache_dir=cfg["cache"], stream=stream)
    seconds = time.monotonic() - start
    events = [parse_progress_line(x) for x in stream.getvalue().splitlines()]
    prepared = [e for e in events if e and e["event"] == "prepare"]
    waits = [e["data_wait"] for e in events if e and e["event"] == "iteration"]
    shutil.rmtree(run, ignore_errors=True)
    return {"exit": code, "cases": len(prepared), "all_cached": all(e["cached"] for e in prepared),
            "peak_rss_mb": round(_status_mb("VmHWM"), 1),
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "baseline_rss_mb": round(baseline, 1), "seconds": round(seconds, 1),
            "data_wait_mean": round(statistics.mean(waits), 4) if waits else None}


def _cohort(folder: Path, files: List[Any], copies: int) -> Path:
    """A dataset folder of links: every case of ``files`` under the ids ``<case>_r0`` … ``<case>_r<copies-1>``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for f in files:
        for n in range(copies):
            cid = f"{f.case_id}_r{n}"
            (folder / f"{cid}_image.nii.gz").symlink_to(Path(f.image).resolve())
            (folder / f"{cid}_label.nii.gz").symlink_to(Path(f.label).resolve())
            (folder / f"{cid}.mrk.json").symlink_to(Path(f.markups).resolve())
    return folder


def _link_entries(cache: Path, files: List[Any], copies: int, config) -> None:
    """Hard-link each case's cache entry under its ids ``<case>_r<n>`` (same key: same resolved inputs)."""
    from PASegLib.data.cache import cache_key

    for f in files:
        key = cache_key(f, config)
        source = cache / f"{f.case_id}-{key}.npz"
        for n in range(copies):
            target = cache / f"{f.case_id}_r{n}-{key}.npz"
            if not target.exists():
                os.link(source, target)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=LA_HEART)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench_output" / "scale_data", help="work folder")
    parser.add_argument("--spacing", choices=("native", "cpu"), default="native")
    parser.add_argument("--cache-mb", type=float, default=128.0, help="cache_mb of the streamed runs")
    parser.add_argument("--iterations", type=int, default=24)
    parser.add_argument("--patch", type=int, nargs=3, default=[32, 32, 16])
    parser.add_argument("--variants", nargs="+", default=["memory", "streamed"], choices=("memory", "streamed"))
    parser.add_argument("--out-json", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    done = child_or_skip(args, child, args.data)
    if done is not None:
        return done
    from PASegLib.data.prepare import available_cores, prepare_cases

    clicks, cache = args.out / "clicks", args.out / f"cache_memory_{args.spacing}"
    files = la_heart_files(args.data, clicks, 80)
    base = {"data": str(args.data), "clicks": str(clicks), "cache": str(cache), "spacing": args.spacing,
            "iterations": args.iterations, "patch": args.patch}
    config = train_config(base, files)
    start = time.monotonic()
    seen: List[bool] = []
    prepare_cases(files, config.replace(prepare_workers=0), cache_dir=cache, on_case=lambda *a: seen.append(a[3]))
    prepare_s = time.monotonic() - start
    print(f"prepared 80 cases in {prepare_s:.0f} s ({sum(seen)} were cached)", file=sys.stderr)
    _link_entries(cache, files, 4, config)
    cohorts = {n: _cohort(args.out / f"cohort{n}", files, n // 80) for n in (80, 320)}
    entry_mb = statistics.mean(p.stat().st_size for p in cache.glob("*.npz")) / 2**20
    runs: Dict[str, Dict[str, Any]] = {}
    for variant in args.variants:
        for n, folder in cohorts.items():
            cfg = {**base, "cohort": str(folder), "run": str(args.out / f"run_{variant}_{n}"),
                   "cache_mb": None if variant == "memory" else args.cache_mb}
            row = run_child(__file__, cfg)
            if "error" in row or not row.get("all_cached") or row.get("exit") != 0:
                raise SystemExit(f"{variant} {n}: {row}")
            runs[f"{variant}_{n}"] = row
            print(f"{variant:8s} {n:3d} cases: peak RSS {row['peak_rss_mb']:.0f} MiB, {row['seconds']:.0f} s, "
                  f"data wait {row['data_wait_mean']}", file=sys.stderr)
    result: Dict[str, Any] = {
        "benchmark": "bench_memory", "data": "la_heart (80 cases; 320 = the 80 under 4 ids each)",
        "settings": {"spacing": "0.625 mm (native)" if args.spacing == "native" else "2 mm (CPU preset)",
                     "iterations": args.iterations, "patch_size": args.patch, "num_threads": 1,
                     "validation_fraction": 0.0, "streamed_cache_mb": args.cache_mb, "prefetch_cases": 2,
                     "network": config.network},
        "prepared_entry_mb": round(entry_mb, 2), "prepare_80_seconds": round(prepare_s, 1),
        "prepare_workers": available_cores(), "runs": runs,
        "machine": {"cores_usable": available_cores(), "python": platform.python_version(),
                    "loadavg_1min": round(os.getloadavg()[0], 2)},
    }
    for variant, key in (("streamed", "rss_ratio_320_vs_80"), ("memory", "rss_ratio_320_vs_80_in_memory")):
        if f"{variant}_80" in runs:
            result[key] = round(runs[f"{variant}_320"]["peak_rss_mb"] / runs[f"{variant}_80"]["peak_rss_mb"], 3)
    return write_summary(result, args.out_json)


if __name__ == "__main__":
    raise SystemExit(main())
