"""``paseg train``: stage-one or SCM training on a dataset folder, with a progress bar and resume."""

from __future__ import annotations

import argparse
from typing import Any

from .common import ProgressBarStream

EPILOG = """\
Progress: one `PASEG {json}` line per event on stdout (the Slicer module reads them), a progress bar on
stderr. Exit codes: 0 finished, 1 error, 2 usage, 3 stopped, 130 interrupted.

Stopping: create the file RUN_DIR/STOP (one present at start is stale and removed). It is honoured within
seconds in every phase: during data preparation (nothing trained yet: nothing is saved, the prepared cases
stay cached; run the same command again, or add --resume), during training (checkpoint at the current
iteration) and during validation (the round is abandoned and redone on --resume). Continue with --resume.

Run folders: one trainer per RUN_DIR (a second `paseg train`, or a second --resume, on the same folder is
refused naming the process that holds it; the lock of a killed trainer is taken over with a note). A run that
ended before its first checkpoint (stopped, crashed or killed during preparation or its first epochs) starts
again from the beginning with the same command. Temporary files of killed writers are removed at start.

Examples:
  paseg train cases/ --out runs/unet2d5 --stage 1 --network unet2d5 --epochs 100
  paseg train cases/ --out runs/att --stage 1 --network attention_unet --patch-size 96 96 32
  paseg train cases/ --out runs/scm --stage 2 --init runs/unet2d5 runs/att
  paseg train cases/ --out runs/unet2d5 --resume
"""


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model from clicks (stage 1) or refine two (stage 2, SCM)",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="dataset folder (<case>_image.<ext> and <case>.mrk.json / <case>_7points)")
    p.add_argument("--out", required=True, help="run folder (new, or an existing run with --resume)")
    p.add_argument("--stage", type=int, choices=(1, 2), default=None, help="1 = partial labels, 2 = SCM (default 1)")
    p.add_argument("--network", default=None,
                   help="network (stage 2: the primary one): unet2d5, unet3d, attention_unet")
    p.add_argument("--aux-network", default=None, help="stage 2: the auxiliary network (default from --init)")
    p.add_argument("--init", nargs=2, metavar=("RUN_PRIMARY", "RUN_AUX"), help="stage 2: the two stage-1 run folders")
    p.add_argument("--config", help="JSON file of training settings (see TrainConfig); flags override it")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("I", "J", "K"), help="training patch in voxels")
    p.add_argument("--target-spacing", type=float, nargs=3, metavar=("SI", "SJ", "SK"),
                   help="resample images to this spacing (mm) for training and prediction")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower on GPU)")
    p.add_argument("--annotations", help="folder of <case>.mrk.json clicks (overrides those in the dataset)")
    p.add_argument("--cases", nargs="+", metavar="CASE", help="train on these cases only")
    p.add_argument("--cache-dir", help="prepared-data cache (default RUN_DIR/cache)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace):
    from ..training.config import TrainConfig, load_config, load_run_config

    overrides = {
        "stage": args.stage, "network": args.network, "aux_network": args.aux_network, "epochs": args.epochs,
        "patch_size": args.patch_size, "target_spacing_mm": args.target_spacing, "device": args.device,
        "seed": args.seed, "deterministic": True if args.deterministic else None,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.resume and not args.config:
        from pathlib import Path

        saved = Path(args.out) / "config.json"
        if not saved.is_file():
            raise ValueError(f"--resume: {args.out} holds no run to resume (no config.json)")
        return load_run_config(saved).replace(**overrides)
    if args.init and args.stage is None:
        overrides["stage"] = 2
    if args.config:
        base = load_config(args.config).to_dict()
    elif args.init:  # stage 2 inherits the data settings (patch, spacing, expansion, …) of the primary run
        from pathlib import Path

        base = {**load_run_config(Path(args.init[0]) / "config.json").to_dict(), "stage": 2, "epochs": 100}
        if base["selection"] == "heldout_loss":  # a stage-one criterion; SCM has no stage-one loss
            base["selection"] = "last"
    else:
        base = TrainConfig().to_dict()
    if overrides.get("stage", base["stage"]) == 2 and args.init:
        from ..training.scm import networks_of_runs

        primary, auxiliary = networks_of_runs(args.init)
        overrides.setdefault("network", primary)
        overrides.setdefault("aux_network", auxiliary)
    return TrainConfig.from_dict({**base, **overrides})


def run(args: argparse.Namespace) -> int:
    from ..training.launch import train_from_dataset

    config = _config(args)
    stream = ProgressBarStream(quiet=args.quiet)
    try:
        return train_from_dataset(args.dataset, args.out, config, annotations_dir=args.annotations,
                                  case_ids=args.cases, resume=args.resume, cache_dir=args.cache_dir,
                                  init_runs=args.init, stream=stream)
    finally:
        stream.close()
