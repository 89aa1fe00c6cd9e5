"""``paseg review-queue``: rank the cases of a dataset by how unsure a trained model is (worst first)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PASegLib.cli.common import print_json
from PASegLib.data.dataset import DatasetError, list_cases


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review-queue",
        help="rank cases by a label-free disagreement score, worst first (what to correct first)",
        description="Score every image of DATASET with the model of --model and write --out (one JSON file): the "
        "cases sorted worst first with their score, rank and the signal named. Signals (labels are never read): "
        "'flip' = 1 - mean Dice between the prediction and its test-time-flipped re-predictions (--flips); "
        "'networks' = 1 - Dice between two networks (the primary and auxiliary networks of a stage-2 / SCM "
        "--model, or the primary networks of --model and --model-b); 'both' = their mean; 'auto' (default) = "
        "'both' when two networks exist, else 'flip'. Prints one PASEG {\"event\": \"case\", ...} line per case. "
        "Creating --stop-file stops the command (exit code 3, nothing written).",
    )
    p.add_argument("--model", type=Path, required=True, help="run folder (config.json, checkpoints/)")
    p.add_argument("--model-b", type=Path, default=None, help="a second run: network B of the 'networks' signal")
    p.add_argument("--data", type=Path, required=True, help="dataset folder of <case>_image.<ext> files")
    p.add_argument("--cases", nargs="+", default=None, metavar="ID", help="rank only these case ids")
    p.add_argument("--out", type=Path, required=True, help="the queue file to write (JSON)")
    p.add_argument("--signal", choices=("auto", "flip", "networks", "both"), default="auto",
                   help="ranking signal (default auto)")
    p.add_argument("--flips", nargs="+", default=["i", "j", "k"], metavar="AXES",
                   help="test-time flips, each a set of array axes i, j, k (default: i j k, each axis alone)")
    p.add_argument("--checkpoint", default="best", help="'best' (default; falls back to 'last') or 'last'")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--stop-file", type=Path, default=None, help="stop when this file appears (a stale one is removed)")
    p.add_argument("--json", action="store_true", help="also print the queue as the last stdout line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PASegLib.inference.review import parse_flips, review_queue
    from PASegLib.jobs.events import emit
    from PASegLib.jobs.stopping import EXIT_STOPPED, StopFile, StopRequested
    from PASegLib.utils.atomic import atomic_write_json

    flips = parse_flips(args.flips)
    if args.out.exists() and args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; give the queue file's path (e.g. review_queue.json)")
    cases = list_cases(args.data)
    if args.cases:
        known = {c.case_id: c for c in cases}
        missing = [c for c in args.cases if c not in known]
        if missing:
            raise DatasetError(f"--cases: no image in {args.data} for: {', '.join(missing)}")
        cases = [known[c] for c in dict.fromkeys(args.cases)]
    stop = None
    if args.stop_file is not None:
        stop = StopFile(args.stop_file)
        stop.clear_stale()
    emit("start", total=len(cases))

    def on_case(index: int, total: int, case_id: str, row: dict) -> None:
        emit("case", index=index, total=total, case=case_id, score=round(row["score"], 4))

    try:
        queue = review_queue(cases, args.model, model_b=args.model_b, signal=args.signal, flips=flips,
                             checkpoint=args.checkpoint, device=args.device, stop=stop, on_case=on_case)
    except StopRequested:
        stop.consume()
        message = f"stopped; no queue written to {args.out}"
        print(message, file=sys.stderr)
        emit("stopped", phase="ranking", message=message)
        return EXIT_STOPPED
    queue["data"] = str(args.data)
    atomic_write_json(args.out, queue)
    emit("done", out=str(args.out), signal=queue["signal"], n=len(queue["cases"]))
    worst = queue["cases"][0]
    print(f"ranked {len(queue['cases'])} case(s) by {queue['signal']} disagreement into {args.out}; "
          f"most unsure: {worst['case']} ({worst['score']:.3f})")
    if args.json:
        print_json(queue)
    return 0
