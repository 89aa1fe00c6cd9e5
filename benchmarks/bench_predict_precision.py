"""Does bfloat16 prediction on the CPU change the Dice? Trained models, held-out la_heart cases, float32 vs bfloat16.

``paseg predict`` computes the networks in bfloat16 on CPUs that do it natively (``--precision auto``; about twice
as fast, ``bench_predict.py``). This benchmark measures what that costs in accuracy, on models trained as the
CPU preset trains them (its stage-one settings, shortened to ``--iterations``):

1. the first ``--train-cases`` la_heart cases (sorted ids) get simulated seven-point clicks (seed 0) and train
   one stage-one model per network (``paseg train``, resumable: a finished run is reused);
2. the last ``--test-cases`` cases, never trained on, are predicted by each model twice, in float32
   (``cpu_bf16=False``) and in bfloat16 (``cpu_bf16=True``), and scored against their labels.

Prints (and with ``--out-json`` writes) per network: mean Dice in each precision, the largest per-case Dice
change, the largest voxelwise probability change, seconds per case in each precision.

Usage::

    python benchmarks/bench_predict_precision.py --out-json bench_output/predict_precision.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from _child import write_summary  # benchmarks/ is on sys.path when a benchmark script runs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "la_heart"
NETWORKS = ("unet2d5", "unet3d", "attention_unet")


def _paseg(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "PASegLib", *args], cwd=ROOT, stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"paseg {' '.join(args)} failed with exit code {done.returncode}")


def _cases(data: Path) -> List[str]:
    return sorted(p.name[: -len("_image.nii.gz")] for p in data.glob("*_image.nii.gz"))


def _link_cases(ids: List[str], data: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for case in ids:
        for suffix in ("_image.nii.gz", "_label.nii.gz"):
            link = folder / f"{case}{suffix}"
            if not link.exists():
                link.symlink_to(data / f"{case}{suffix}")


def train(network: str, work: Path, train_dir: Path, clicks: Path, iterations: int) -> Path:
    """A stage-one run of ``network`` with the CPU preset's settings (``iterations`` in all), reused if finished."""
    from PASegLib.image.io import read_image
    from PASegLib.pipeline.presets import preset_configs

    run = work / f"run_{network}"
    if (run / "model.json").is_file():
        return run
    spacings = [read_image(p).geometry.spacing for p in sorted(train_dir.glob("*_image.nii.gz"))]
    median = tuple(statistics.median(float(s[axis]) for s in spacings) for axis in range(3))
    config = preset_configs("cpu", median, device="cpu")[0].to_dict()
    per_epoch = config["iterations_per_epoch"]
    config.update(network=network, epochs=max(1, iterations // per_epoch), validate_every=10**6,
                  checkpoint_every=max(1, iterations // per_epoch))
    config_file = work / f"config_{network}.json"
    config_file.write_text(json.dumps(config), encoding="utf-8")
    _paseg("train", str(train_dir), "--annotations", str(clicks), "--out", str(run), "--config", str(config_file),
           "--device", "cpu", "--quiet", *(["--resume"] if (run / "checkpoints" / "last.pt").is_file() else []))
    return run


def score(run: Path, test_ids: List[str], data: Path) -> Dict[str, Any]:
    import numpy as np

    from PASegLib.evaluation.metrics import dice
    from PASegLib.image.io import read_image
    from PASegLib.inference.predictor import load_predictor

    rows = []
    for case in test_ids:
        volume, label = read_image(data / f"{case}_image.nii.gz"), read_image(data / f"{case}_label.nii.gz")
        row: Dict[str, Any] = {"case": case}
        probs = {}
        for name, flag in (("float32", False), ("bfloat16", True)):
            predictor = load_predictor(run, checkpoint="last", device="cpu", cpu_bf16=flag, verbose=False)
            started = time.perf_counter()
            pred = predictor.predict(volume)
            row[f"seconds_{name}"] = round(time.perf_counter() - started, 3)
            row[f"dice_{name}"] = round(dice(pred.labels > 0, label.array > 0), 5)
            probs[name] = pred.probability
        row["dice_change"] = round(row["dice_bfloat16"] - row["dice_float32"], 5)
        row["max_probability_change"] = round(float(np.abs(probs["bfloat16"] - probs["float32"]).max()), 4)
        rows.append(row)
    return {"cases": rows,
            "mean_dice_float32": round(statistics.mean(r["dice_float32"] for r in rows), 5),
            "mean_dice_bfloat16": round(statistics.mean(r["dice_bfloat16"] for r in rows), 5),
            "largest_case_dice_change": max((r["dice_change"] for r in rows), key=abs),
            "largest_probability_change": max(r["max_probability_change"] for r in rows),
            "median_seconds_float32": round(statistics.median(r["seconds_float32"] for r in rows), 3),
            "median_seconds_bfloat16": round(statistics.median(r["seconds_bfloat16"] for r in rows), 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="la_heart folder (default ../shared/data/la_heart)")
    parser.add_argument("--train-cases", type=int, default=16)
    parser.add_argument("--test-cases", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=144, help="stage-one iterations per model")
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--work", type=Path, default=ROOT / "bench_output" / "predict_precision")
    parser.add_argument("--out-json", default=None)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(json.dumps({"benchmark": "predict_precision", "skipped": f"no data at {args.data}"}))
        return 0
    import torch

    from PASegLib.inference.cpu import cpu_has_native_bf16

    ids = _cases(args.data)
    if len(ids) < args.train_cases + args.test_cases:
        raise SystemExit(f"{args.data}: {len(ids)} cases, fewer than --train-cases + --test-cases")
    train_ids, test_ids = ids[: args.train_cases], ids[-args.test_cases:]
    train_dir, clicks = args.work / "train", args.work / "clicks"
    _link_cases(train_ids, args.data, train_dir)
    if not clicks.is_dir():
        _paseg("simulate-clicks", str(train_dir), "--out", str(clicks), "--seed", "0", "--quiet")
    out: Dict[str, Any] = {"benchmark": "predict_precision", "torch": torch.__version__, "cpu_count": os.cpu_count(),
                           "cpu_has_native_bf16": cpu_has_native_bf16(), "data": "la_heart",
                           "train_cases": len(train_ids), "test_cases": len(test_ids),
                           "iterations": args.iterations, "settings": "CPU preset stage one (2 mm, 48x48x32 patches)",
                           "networks": {}}
    for network in [n.strip() for n in args.networks.split(",") if n.strip()]:
        run = train(network, args.work, train_dir, clicks, args.iterations)
        out["networks"][network] = score(run, test_ids, args.data)
        res = out["networks"][network]
        print(f"{network:15s} Dice float32 {res['mean_dice_float32']:.4f} bfloat16 {res['mean_dice_bfloat16']:.4f} "
              f"largest case change {res['largest_case_dice_change']:+.4f}, prob change "
              f"{res['largest_probability_change']:.3f}; s/case {res['median_seconds_float32']:.2f} → "
              f"{res['median_seconds_bfloat16']:.2f}", file=sys.stderr, flush=True)
    return write_summary(out, args.out_json)


if __name__ == "__main__":
    sys.exit(main())
