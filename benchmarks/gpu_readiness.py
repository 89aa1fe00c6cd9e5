"""Collect the CPU figures of the GPU-path work into one summary (``docs/results/gpu_readiness_cpu.json``).

Reads the JSON outputs of the benchmarks that measured each figure, run beforehand (see ``docs/BENCHMARKS.md``,
"GPU readiness, measured on the CPU"), and writes one object with the figures the issue asks for and, for
each, the benchmark, command and conditions it came from:

* ``host_syncs_per_iteration`` — ``bench_train_step.py --loop --syncs`` (the max of stage one and SCM with the
  losses read every iteration; ``--syncs-before``: the same counter on the tree before the change);
* ``data_wait_fraction_before`` / ``_after`` — ``bench_train_step.py --loop`` (prefetch off / on, the median over
  rounds of each run's mean ``data_wait``) at the CPU preset and, with ``--loop-paper``, at the paper's patch;
* ``mcrf_kernels_per_call_before`` / ``_after`` — ``bench_crf.py`` (``per_offset`` / ``chunked`` mode);
* ``predict_256x256x64_cpu_s_before`` / ``_after`` — ``bench_predict.py --cpu-modes plain,fp32,default``
  (``plain``: float32 without heap reuse, the prediction before the change; ``default``: what ``paseg predict``
  does now; ``fp32``: the exact float32 result with heap reuse);
* ``predict_bfloat16_dice`` — ``bench_predict_precision.py`` (``--precision``): trained models, held-out la_heart
  cases, Dice in float32 and in bfloat16;
* ``gpu_pack_mib`` — ``gpu_pack/manifest.json`` of ``make gpu-pack``.

Usage::

    python benchmarks/gpu_readiness.py --loop bench_output/loop_cpu.json --loop-paper bench_output/loop_paper_cpu.json \\
        --syncs-before bench_output/syncs_before.json --crf bench_output/crf.json \\
        --predict bench_output/predict_cpu.json --precision bench_output/predict_precision.json \\
        --pack gpu_pack/manifest.json --out docs/results/gpu_readiness_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from _child import write_summary  # benchmarks/ is on sys.path when a benchmark script runs


def _load(path: Optional[Path]) -> Optional[Dict[str, Any]]:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: cannot be read as a benchmark's JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: not a benchmark's JSON object")
    return data


def _loop_fractions(loop: Dict[str, Any]) -> Dict[str, Any]:
    summary = loop.get("summary") or {}
    if "off" not in summary or "on" not in summary:
        raise SystemExit("the --loop JSON has no prefetch off/on summary: run bench_train_step.py --loop with "
                         "--prefetch off,on")
    rows = [r for r in loop.get("results", []) if "data_wait_mean" in r]
    first = rows[0] if rows else {}
    return {"before": summary["off"]["data_wait_mean"]["median"], "after": summary["on"]["data_wait_mean"]["median"],
            "batch_wait_ms_before": summary["off"]["batch_wait_ms_median"]["median"],
            "batch_wait_ms_after": summary["on"]["batch_wait_ms_median"]["median"],
            "sec_per_iter_before": summary["off"]["sec_per_iter"]["median"],
            "sec_per_iter_after": summary["on"]["sec_per_iter"]["median"],
            "network": first.get("network"), "patch": first.get("patch"), "cases": first.get("cases"),
            "data": first.get("data"), "iterations_per_run": first.get("iterations"),
            "rounds": len(rows) // 2, "threads": first.get("threads"),
            "load_avg": [loop.get("load_avg_start"), loop.get("load_avg_end")]}


def collect(args: argparse.Namespace) -> Dict[str, Any]:
    loop, crf, predict = _load(args.loop), _load(args.crf), _load(args.predict)
    out: Dict[str, Any] = {"benchmark": "gpu_readiness_cpu", "device": "CPU only (no GPU was lent)",
                           "torch": (loop or crf or predict or {}).get("torch")}
    if loop is not None:
        syncs = loop.get("host_syncs") or {}
        if "host_syncs_per_iteration" not in syncs:
            raise SystemExit(f"{args.loop}: no host-sync count: run bench_train_step.py --loop --syncs")
        out["host_syncs_per_iteration"] = syncs["host_syncs_per_iteration"]
        out["host_syncs"] = {
            "how": "calls that synchronise host and device on CUDA, counted on the CPU during real stage-one and "
                   "SCM iterations (bench_train_step.py --loop --syncs, HostSyncCounter)",
            "stage1_per_iteration": syncs["stage1_log_every_1"]["per_iteration"],
            "scm_per_iteration": syncs["scm_log_every_1"]["per_iteration"],
            "stage1_per_iteration_cuda_log_interval": syncs.get("stage1_log_every_10", {}).get("per_iteration"),
            "scm_per_iteration_cuda_log_interval": syncs.get("scm_log_every_10", {}).get("per_iteration"),
            "where_after": syncs["stage1_log_every_1"]["where"],
        }
        before = _load(args.syncs_before)
        if before is not None:
            b = before["host_syncs"]
            out["host_syncs_per_iteration_before"] = b["host_syncs_per_iteration"]
            out["host_syncs"].update(stage1_per_iteration_before=b["stage1_log_every_1"]["per_iteration"],
                                     scm_per_iteration_before=b["scm_log_every_1"]["per_iteration"],
                                     where_before=b["stage1_log_every_1"]["where"],
                                     where_before_scm=b["scm_log_every_1"]["where"])
        fractions = _loop_fractions(loop)
        out["patch_preparation_overlapped"] = True
        out["data_wait_fraction_before"] = fractions["before"]
        out["data_wait_fraction_after"] = fractions["after"]
        out["data_wait"] = {"cpu_preset": fractions}
        paper = _load(args.loop_paper)
        if paper is not None:
            out["data_wait"]["paper_patch"] = _loop_fractions(paper)
    if crf is not None:
        modes = crf.get("mcrf_kernels_per_call_by_mode") or {}
        out["mcrf_kernels_per_call_before"] = modes.get("per_offset")
        out["mcrf_kernels_per_call_after"] = modes.get("chunked")
        official = crf.get("official") or {}
        out["mcrf"] = {"kernel_count_setting": crf.get("kernel_count_setting"),
                       "cpu_default": "per_offset (the O(N) memory path; chunked is the default on CUDA)",
                       "chunked_vs_per_offset": official.get("chunked", {}) and official.get("chunked_vs_fast"),
                       "memory_ratio_reference_vs_per_offset": crf.get("memory_ratio"),
                       "memory_ratio_reference_vs_chunked": official.get("memory_ratio_chunked")}
    if predict is not None:
        plain = predict.get("predict_256x256x64_cpu_s_plain")
        after = predict.get("predict_256x256x64_cpu_s")
        if not plain or not after:
            raise SystemExit(f"{args.predict}: run bench_predict.py with --cpu-modes plain,fp32,default")
        out["predict_256x256x64_cpu_s_before"] = plain
        out["predict_256x256x64_cpu_s_after"] = after
        out["predict_256x256x64_cpu_s_after_float32"] = predict.get("predict_256x256x64_cpu_s_fp32")
        rows = [r for r in predict.get("results", []) if r.get("mode") == "default"]
        out["predict"] = {"how": "bench_predict.py: random weights, patch " + str(predict.get("patch")) + ", overlap "
                                 + str(predict.get("overlap")) + ", the fastest of the timed runs (sec_min)",
                          "after_cpu_bf16": sorted({bool(r.get("cpu_bf16")) for r in rows}),
                          "load_avg": [predict.get("load_avg_start"), predict.get("load_avg_end")]}
    precision = _load(args.precision)
    if precision is not None:
        nets = precision.get("networks") or {}
        if not nets:
            raise SystemExit(f"{args.precision}: no network was scored")
        out["predict_bfloat16_dice"] = {
            "how": f"bench_predict_precision.py: {precision.get('iterations')} stage-one iterations (CPU preset) on "
                   f"{precision.get('train_cases')} la_heart cases, {precision.get('test_cases')} held-out cases "
                   f"predicted in float32 and in bfloat16",
            **{name: {k: v for k, v in res.items() if k != "cases"} for name, res in nets.items()}}
    pack = _load(args.pack)
    if pack is not None:
        sizes = pack.get("sizes") or {}
        if "pack_mib" not in sizes:
            raise SystemExit(f"{args.pack}: no pack size in the manifest")
        out["gpu_pack_mib"] = sizes["pack_mib"]
        out["gpu_pack"] = {k: v for k, v in sizes.items() if k.endswith("_mib")}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("loop", "loop-paper", "syncs-before", "crf", "predict", "precision", "pack"):
        parser.add_argument(f"--{name}", type=Path, help=f"the {name} benchmark's JSON")
    parser.add_argument("--out", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    return write_summary(collect(args), args.out)


if __name__ == "__main__":
    sys.exit(main())
