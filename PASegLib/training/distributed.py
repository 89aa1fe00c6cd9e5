"""Training on several processes (GPUs or CPU processes, one machine or several) with ``torch.distributed``.

A run of ``W`` processes ("ranks") trains exactly what one process trains with the same settings:

* **Batch**: ``TrainConfig.batch_size`` is the *global* batch ``B`` of one iteration; each rank computes
  ``B / W`` of its patches (``B`` must be a multiple of ``W``) and DistributedDataParallel averages the
  gradients, so the update equals the one-process update of the same ``B`` patches (the losses are per-sample
  means: the data term, VM, KL and DiceCE; the mCRF is normalised by the valid voxels of the batch, which equal
  when patches lie inside the image). Epochs, the learning-rate schedule and the checkpoints do not depend on
  ``W``: a run stopped on 2 GPUs may be resumed on 1 or 4.
* **Sharding**: every rank holds the same random generator (seeded from ``config.seed``, restored from rank 0's
  checkpoint), so the epoch's case order is drawn identically everywhere. The iteration's global batch is the
  order's next ``B`` entries (slots ``0 … B−1``); rank ``r`` trains slots ``r, r + W, r + 2W, …``. The patches
  are drawn from the shared generator slot after slot, as one process draws them, and each rank cuts only the
  patches of its own slots from the cases (:class:`~PASegLib.training.batches.BatchMaker`): the random stream,
  and so every patch, is the one-process run's, and a resume needs no per-rank state.
* **Rank 0's duties**: the run-folder lock, ``config.json``/``split.json``, data preparation (the other ranks
  then read the prepared cases from the cache), checkpoints, ``history.json``, ``loss_curves.png``,
  ``model.json`` and every progress event (:meth:`Trainer.emit` does nothing on the other ranks). Writes go
  through :func:`on_main`: rank 0 writes, then tells the others whether it succeeded (a failure ends every
  rank), which is also the barrier after a checkpoint.
* **Stop**: rank 0 alone looks at the stop file and broadcasts its decision (:func:`agree`) before every
  iteration and before every slot of validation cases, so all ranks stop at the same point and rank 0 saves
  one checkpoint.
* **Validation**: rank ``r`` predicts the held-out cases ``r, r + W, …``; each slot's per-case rows are gathered
  to every rank (``all_gather_object``), so every rank computes the one-process result and takes the same
  selection decisions (SCM's best weights and refreshes of the frozen copies).
* **Backends**: NCCL for the gradients on GPUs (one GPU per local rank), gloo on CPUs; the control messages
  (stop, rows, losses) always go through gloo on the CPU.

The process group comes from the environment of ``torchrun`` or of ``paseg train --nproc-per-node``
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). Nothing here
imports torch before it is needed; a single process never touches ``torch.distributed``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from PASegLib.jobs.stopping import EXIT_ERROR

__all__ = ["TIMEOUT_ENV", "DistContext", "agree", "barrier", "broadcast_object", "check_batch_size", "context",
           "expect_plan", "gather_objects", "init_from_env", "launched", "mean_losses", "on_main",
           "publish_plan", "rank_device", "release_followers", "shutdown",
           "watch_parent", "wrap_networks"]

#: Environment variable: minutes a rank waits in a collective (rank 0's data preparation included) before it
#: gives up (default 60).
TIMEOUT_ENV = "PASEG_DIST_TIMEOUT_MIN"


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the run: ``rank`` of ``world_size`` (``local_rank`` of ``local_world_size``
    on this machine); ``device`` its torch device name; ``backend`` ``"nccl"`` / ``"gloo"`` (``None`` alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: Optional[str] = None
    backend: Optional[str] = None

    @property
    def active(self) -> bool:
        """True in a process group (a run of several processes, or ``torchrun`` with one)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """True on rank 0 (and in a single process)."""
        return self.rank == 0


_SINGLE = DistContext()
_state: Dict[str, Any] = {"context": _SINGLE, "control": None, "published": True}


def context() -> DistContext:
    """This process's :class:`DistContext` (a single process unless :func:`init_from_env` set up a group)."""
    return _state["context"]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value != "" else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _pick_device(name: str, local_rank: int, local_world: int) -> Any:
    import torch

    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name.startswith("cuda:"):
        raise ValueError(f"--device {name} names one GPU; with several processes use --device cuda (or auto): "
                         f"process i of a machine uses its GPU i")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but no CUDA GPU is usable by this torch ({torch.__version__}); "
                         f"use --device cpu")
    count = torch.cuda.device_count()
    if local_world > count:
        raise ValueError(f"{local_world} processes on this machine need {local_world} GPUs, but {count} "
                         f"exist; use --nproc-per-node {count} (or gpu)")
    from PASegLib.training.runtime import gpu_problem

    problem = gpu_problem(local_rank)
    if problem is not None:
        raise ValueError(f"{problem}; or use --device cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def launched() -> bool:
    """Whether ``torchrun`` (or ``--nproc-per-node``) started this process: its variables are in the environment."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_from_env(device_name: str = "auto") -> DistContext:
    """Join the process group described by the environment (:func:`launched`; ``torchrun --nproc-per-node 1``
    too: a process group of one, as on one GPU of a cluster), else stay single.

    The device is ``cuda:LOCAL_RANK`` (NCCL) when ``device_name`` asks for CUDA (``"auto"`` with a GPU), else the
    CPU (gloo, each rank using its share of the cores unless ``num_threads`` is set).

    Raises:
        ValueError: a device that cannot serve this many processes (the message says what to use instead).
    """
    if not launched() or context().active:
        return context()
    world = _env_int("WORLD_SIZE", 1)
    import torch
    import torch.distributed as dist

    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    device = _pick_device(device_name, local_rank, local_world)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(minutes=float(os.environ.get(TIMEOUT_ENV, "60") or 60))
    dist.init_process_group(backend, timeout=timeout)
    control = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
    if device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // local_world))
    _state.update(context=DistContext(rank, world, local_rank, local_world, str(device), backend), control=control)
    return context()


def shutdown() -> None:
    """Wait for every rank, then leave the process group (nothing in a single process)."""
    if not context().active:
        return
    import torch.distributed as dist

    barrier()
    dist.destroy_process_group()
    _state.update(context=_SINGLE, control=None, published=True)


def rank_device(name: str) -> Any:
    """The torch device of this rank (:func:`~PASegLib.training.runtime.resolve_device` of ``name`` alone)."""
    import torch

    if context().active:
        return torch.device(context().device)
    from PASegLib.training.runtime import resolve_device

    return resolve_device(name)


def watch_parent(pid: int, *, every_s: float = 1.0) -> None:
    """End this process when its parent ``pid`` is gone (a launcher killed with SIGKILL cannot end its ranks)."""
    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(every_s)
        os._exit(EXIT_ERROR)

    threading.Thread(target=watch, name="paseg-parent-watch", daemon=True).start()


# -- collectives (control messages go through gloo on the CPU) -------------------------------------------------
def barrier() -> None:
    """Wait until every rank arrives (nothing in a single process)."""
    if context().active:
        import torch.distributed as dist

        dist.barrier(group=_state["control"])


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (picklable)."""
    if not context().active:
        return value
    import torch.distributed as dist

    box = [value if context().is_main else None]
    dist.broadcast_object_list(box, src=0, group=_state["control"])
    return box[0]


def gather_objects(value: Any) -> List[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not context().active:
        return [value]
    import torch.distributed as dist

    out: List[Any] = [None] * context().world_size
    dist.all_gather_object(out, value, group=_state["control"])
    return out


def agree(decide: Callable[[], bool]) -> bool:
    """Rank 0's ``decide()`` on every rank (the others do not call it)."""
    if not context().active:
        return bool(decide())
    import torch
    import torch.distributed as dist

    flag = torch.tensor([int(bool(decide())) if context().is_main else 0], dtype=torch.int32)
    dist.broadcast(flag, src=0, group=_state["control"])
    return bool(flag.item())


def mean_losses(losses: Dict[str, float]) -> Dict[str, float]:
    """The mean over ranks of each loss (the loss of the global batch); unchanged in a single process."""
    if not context().active:
        return losses
    import torch
    import torch.distributed as dist

    keys = sorted(losses)
    values = torch.tensor([float(losses[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(values, group=_state["control"])
    mean = dict(zip(keys, (values / context().world_size).tolist()))
    return {k: float(mean[k]) for k in losses}


def on_main(write: Callable[[], Any]) -> Any:
    """Run ``write`` on rank 0 only, then tell the other ranks whether it worked (a barrier too).

    Rank 0 re-raises its error; the other ranks end with ``SystemExit(EXIT_ERROR)`` (rank 0 reports the error).
    """
    if not context().active:
        return write()
    result, error, failure = None, None, None
    if context().is_main:
        try:
            result = write()
        except BaseException as exc:  # noqa: BLE001 -- re-raised below, after the others were told
            error, failure = exc, f"{type(exc).__name__}: {exc}"
    failure = broadcast_object(failure)
    if error is not None:
        raise error
    if failure is not None:
        raise SystemExit(EXIT_ERROR)
    return result


# -- training -------------------------------------------------------------------------------------------------
def check_batch_size(batch_size: int, world: Optional[int] = None) -> None:
    """Raise ``ValueError`` unless the global ``batch_size`` splits evenly over ``world`` ranks (default: this
    run's)."""
    world = context().world_size if world is None else int(world)
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} (the global batch) cannot be split over {world} processes; use "
                         f"a multiple of {world}, e.g. --batch-size {world * max(1, batch_size // world)} "
                         f"(or --scale-batch: batch_size patches per process)")


def wrap_networks(networks: Dict[str, Any], device: Any) -> Dict[str, Any]:
    """Each network in DistributedDataParallel (the same modules in a single process); the wrappers share the
    modules' parameters, so optimizers, checkpoints and validation keep using the plain modules."""
    if not context().active:
        return dict(networks)
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # the 2.5D networks' [O, I, 3, 3, 1] kernels get gradients whose size-1 axis has another stride than the
    # bucket's: the same memory layout, which DDP reports as a possible slowdown at every backward
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ids = [device.index] if device.type == "cuda" else None
    return {role: DistributedDataParallel(net, device_ids=ids) for role, net in networks.items()}


# -- start of a run: rank 0 prepares, then the others follow -----------------------------------------------------
def publish_plan(*, run: Path, files: Sequence[Any], n_train: int, config: Dict[str, Any], cache: Path,
                 resume: bool, init_runs: Optional[Sequence[Any]], resume_hint: str) -> None:
    """Rank 0, data prepared: send the other ranks what to train (they wait in :func:`follow`)."""
    if context().active and context().is_main and not _state["published"]:
        _state["published"] = True
        broadcast_object({"kind": "plan", "run": str(run), "files": list(files), "n_train": int(n_train),
                          "config": config, "cache": str(cache), "resume": bool(resume),
                          "init_runs": None if init_runs is None else [str(r) for r in init_runs],
                          "resume_hint": resume_hint})


def release_followers(*, code: Optional[int] = None, error: Optional[BaseException] = None) -> None:
    """Rank 0 ended before training (stopped in preparation: ``code``; failed: ``error``): the other ranks end
    too (nothing when the plan went out already or in a single process)."""
    if context().active and context().is_main and not _state["published"]:
        _state["published"] = True
        broadcast_object({"kind": "error", "message": str(error)} if error is not None else
                         {"kind": "exit", "code": int(code or 0)})


def expect_plan() -> None:
    """Rank 0, at the start of a session: the other ranks wait for one plan (or release) from now on."""
    if context().active and context().is_main:
        _state["published"] = False


