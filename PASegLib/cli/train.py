"""``paseg train``: stage-one or SCM training on a dataset folder, with a progress bar and resume; on several
GPUs or CPU processes with ``--nproc-per-node`` (one machine) or under ``torchrun`` (several machines)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, Optional, Union

from PASegLib.cli.common import ProgressBarStream
from PASegLib.jobs.stopping import EXIT_INTERRUPTED, LAUNCHER_PID_ENV

EPILOG = """\
Progress: one `PASEG {json}` line per event on stdout (the Slicer module reads them), a progress bar on
stderr. Exit codes: 0 finished, 1 error, 2 usage, 3 stopped, 130 interrupted.

Stopping: create the file RUN_DIR/STOP (one written before the command started is stale and removed). It is
honoured within seconds in every phase: during data preparation (nothing trained yet: nothing is saved, the
prepared cases stay cached; run the same command again, or add --resume), during training (checkpoint at the current
iteration) and during validation (the round is abandoned and redone on --resume). Continue with --resume.

Run folders: one trainer per RUN_DIR (a second `paseg train`, or a second --resume, on the same folder is
refused naming the process that holds it; the lock of a killed trainer is taken over with a note). A run that
ended before its first checkpoint (stopped, crashed or killed during preparation or its first epochs) starts
again from the beginning with the same command. Temporary files of killed writers are removed at start.

Several processes (see the README, "Multi-GPU and multi-node"): --nproc-per-node N (or gpu: one per
visible GPU) trains on N GPUs of this machine (NCCL; --device cpu: N CPU processes with gloo), the same
model as one process with the same settings: batch_size is the global batch (a multiple of N; each process
computes batch_size/N patches of every iteration), or --scale-batch makes it batch_size patches per process.
Several machines: torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT
-m PASegLib train ... on each (the run folder, dataset and cache on a file system all of them see).
Rank 0 writes the run folder and prints the progress; STOP and --resume work as with one process.

Examples:
  paseg train cases/ --out runs/unet2d5 --stage 1 --network unet2d5 --epochs 100
  paseg train cases/ --out runs/fast --network unet2d5 --device cuda --nproc-per-node gpu --scale-batch
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
    p.add_argument("--batch-size", type=int, help="patches per iteration (the global batch over all processes)")
    p.add_argument("--nproc-per-node", metavar="N", type=_nproc_value, default=1,
                   help="train with N processes on this machine (one per GPU with --device cuda/auto, else CPU "
                        "processes); 'gpu' = one per visible GPU (default 1)")
    p.add_argument("--scale-batch", action="store_true",
                   help="with several processes: batch_size patches per process (a new run's global batch is "
                        "batch_size × processes; --resume keeps the saved one)")
    p.add_argument("--prepare-workers", type=int, metavar="N",
                   help="worker processes preparing uncached cases (default: one per usable core; 1 = none)")
    p.add_argument("--cache-mb", type=float, metavar="MB",
                   help="MiB of prepared cases kept in memory while training (default 2048)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _nproc_value(text: str) -> Union[int, str]:
    if text == "gpu":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes or 'gpu', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 process, got {value}")
    return value


def _config(args: argparse.Namespace, *, world: int = 1):
    """The run's settings from the flags; ``world``: the number of processes (``--scale-batch``)."""
    config = _base_config(args)
    if getattr(args, "scale_batch", False) and not args.resume and world > 1:
        config = config.replace(batch_size=config.batch_size * world)
    return config


def _base_config(args: argparse.Namespace):
    from PASegLib.training.config import TrainConfig, load_config, load_run_config

    overrides = {
        "stage": args.stage, "network": args.network, "aux_network": args.aux_network, "epochs": args.epochs,
        "patch_size": args.patch_size, "target_spacing_mm": args.target_spacing, "device": args.device,
        "seed": args.seed, "deterministic": True if args.deterministic else None,
        "batch_size": getattr(args, "batch_size", None), "prepare_workers": getattr(args, "prepare_workers", None),
        "cache_mb": getattr(args, "cache_mb", None),
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
        from PASegLib.training.scm import networks_of_runs

        primary, auxiliary = networks_of_runs(args.init)
        overrides.setdefault("network", primary)
        overrides.setdefault("aux_network", auxiliary)
    return TrainConfig.from_dict({**base, **overrides})


def run(args: argparse.Namespace) -> int:
    """``paseg train``: one process (as always), ``--nproc-per-node N`` ranks started here, or one rank of a
    run started by ``torchrun`` (``WORLD_SIZE`` in the environment)."""
    from PASegLib.training.distributed import launched

    nproc = _resolve_nproc(args.nproc_per_node, args.device)
    if launched():
        if nproc > 1:
            raise ValueError("--nproc-per-node starts the processes of one machine itself; under torchrun give "
                             "--nproc-per-node to torchrun instead")
        return train_rank(args)
    if nproc > 1:
        from PASegLib.training.distributed import check_batch_size

        check_batch_size(_config(args, world=nproc).batch_size, nproc)  # before any process starts
        return launch_ranks(args, nproc)
    return train_rank(args)


def _resolve_nproc(value: Union[int, str], device: Optional[str]) -> int:
    if value != "gpu":
        return int(value)
    if device == "cpu":
        raise ValueError("--nproc-per-node gpu counts the GPUs; with --device cpu give a number of processes")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(f"--nproc-per-node gpu: no CUDA GPU is usable by this torch ({torch.__version__}); give a "
                         f"number of processes with --device cpu, or leave the option out")
    return count


class _Silent:
    """The progress stream of the ranks other than 0 (rank 0 reports)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def train_rank(args: argparse.Namespace) -> int:
    """Train in this process: alone, or as one rank of the process group of the environment."""
    from PASegLib.training import distributed
    from PASegLib.training.launch import train_from_dataset, train_on_ranks

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    config = _config(args, world=world)
    ctx = distributed.init_from_env(config.device)
    stream: Any = ProgressBarStream(quiet=args.quiet) if ctx.is_main else _Silent()
    try:
        code = train_on_ranks(
            lambda: train_from_dataset(args.dataset, args.out, config, annotations_dir=args.annotations,
                                       case_ids=args.cases, resume=args.resume, cache_dir=args.cache_dir,
                                       init_runs=args.init, stream=stream), stream=stream)
        distributed.shutdown()  # every rank is done (rank 0's files written) before any process ends
        return code
    finally:
        stream.close()


class WorkerError(ValueError):
    """The failure of one rank, as its message (the launcher reports it once)."""


def _worker(args: argparse.Namespace) -> int:
    """One rank started by :func:`launch_ranks` (in a fresh interpreter, torch's environment variables set)."""
    from PASegLib.training.distributed import watch_parent

    parent = os.environ.get(LAUNCHER_PID_ENV)
    if parent:
        watch_parent(int(parent))
    try:
        return train_rank(args)
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as exc:  # noqa: BLE001 -- reported by the launcher as the command's one error
        from PASegLib.cli.errors import user_error_message

        message = user_error_message(exc)
        if message is None:
            import traceback

            traceback.print_exc(file=sys.stderr)
            message = (f"internal error (a bug in PASeg, not a problem with your input): {type(exc).__name__}: "
                       f"{exc}; the traceback is above; please report it")
        raise WorkerError(message) from None


def launch_ranks(args: argparse.Namespace, nproc: int) -> int:
    """Start ``nproc`` ranks of this command on this machine with torch's elastic launcher (what ``torchrun``
    runs): a free port, torchrun's environment in every rank, all ranks ended when one fails, SIGTERM/SIGINT
    passed on. Returns rank 0's exit code; a failure raises ``ValueError`` with the failing rank's message."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in ("torch.distributed.elastic", "torch.multiprocessing"):  # failures are reported below, once
        logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"paseg-{uuid.uuid4().hex[:12]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")
    try:
        codes = elastic_launch(config, _worker)(args)
    except ChildFailedError as exc:
        raise ValueError(_failure_message(exc.failures, nproc)) from None
    except SignalException:
        return EXIT_INTERRUPTED
    finally:
        os.environ.pop(LAUNCHER_PID_ENV, None)
    return int(codes.get(0) or 0)


def _failure_message(failures: Dict[int, Any], nproc: int) -> str:
    """The message of the first failed rank that left one (rank 0 first), else its exit code or signal."""
    ranks = sorted(failures, key=lambda r: (r != 0, getattr(failures[r], "timestamp", 0)))
    for rank in ranks:
        message = failures[rank].message
        text = message.get("message") if isinstance(message, dict) else None
        if text:
            text = text.split(": ", 1)[1] if text.startswith(f"{WorkerError.__name__}: ") else text
            return text if rank == 0 else f"{text} (process {rank} of {nproc})"
    first = failures[ranks[0]]
    how = f"signal {first.signal_name()}" if first.exitcode < 0 else f"exit code {first.exitcode}"
    return f"training process {ranks[0]} of {nproc} ended with {how}"
