"""Training batches: patches cut in a background thread while the previous batch trains, stacked into pinned
host memory, sent to the device with the label maps as uint8 and converted there.

The random choices of a batch (:meth:`~PASegLib.data.sampler.PatchSampler.draw`) are taken by the training
loop, in its order, from its generator; only the deterministic cutting and stacking
(:meth:`~PASegLib.data.sampler.PatchSampler.cut`) runs in the thread. So the patches, the random stream and a
deterministic run's losses are those of cutting every batch in the loop itself; the loop draws the next batch
before training the current one, and a checkpoint taken before that next batch trains saves the generator's
state from before its draws (:class:`BatchAhead`).

With several processes every rank draws the whole global batch (slots ``0 … B−1``) and cuts only its own slots
``r, r + W, …`` (:mod:`~PASegLib.training.distributed`). With ``TrainConfig.batch_flips`` the flips are drawn once
for the global batch (every rank flips its patches alike).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from PASegLib.data.sampler import PatchDraw, PatchSampler

__all__ = ["DEVICE_DTYPES", "BatchAhead", "BatchMaker"]

#: what the uint8 maps of a batch become on the device (the losses take int64 labels and a float valid mask)
DEVICE_DTYPES: Dict[str, torch.dtype] = {"partial": torch.int64, "label": torch.int64, "valid": torch.float32}


@dataclass
class BatchAhead:
    """A batch drawn ahead of its iteration and being cut in the background.

    Attributes:
        key: ``(epoch, position)`` (completed epochs, iterations done in that epoch) of the iteration it is for.
        order: the epoch's case order, drawn for it when it is an epoch's first batch (else ``None``).
        rng_state: the numpy generator's state before its draws (the order's included): what a checkpoint taken
            before the batch trains saves, so that a resumed run draws it again.
        future: the host batch (:meth:`BatchMaker.cut`).
    """

    key: Tuple[int, int]
    order: Optional[List[int]]
    rng_state: Dict[str, Any]
    future: Future


class BatchMaker:
    """Cuts, stacks and uploads the training batches of ``sampler``.

    Args:
        sampler: the patch sampler.
        device: the training device; on CUDA the host batches are stacked into pinned memory and sent with
            ``non_blocking`` copies.
        rank: this process's rank; it keeps the slots ``rank, rank + world_size, …`` of each global batch.
        world_size: number of processes (1 alone).
        background: cut batches in a background thread (:meth:`start`); ``False`` cuts them when started.
    """

    def __init__(self, sampler: PatchSampler, device: torch.device, *, rank: int = 0, world_size: int = 1,
                 background: bool = True) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank!r}, world_size={world_size!r}")
        self.sampler = sampler
        self.device = device
        self.rank, self.world_size = int(rank), int(world_size)
        self.background = bool(background)
        self.pin = device.type == "cuda"
        self._executor: Optional[ThreadPoolExecutor] = None

    def draw(self, indices: Sequence[int], rng: np.random.Generator) -> List[PatchDraw]:
        """The random choices of the global batch of the cases ``indices`` (every slot, in slot order: the
        stream of one process; with ``batch_flips`` one set of flips for the whole global batch,
        :meth:`~PASegLib.data.sampler.PatchSampler.draw_batch`), of which this rank keeps its own slots."""
        draws = self.sampler.draw_batch(indices, rng)
        return [d for slot, d in enumerate(draws) if slot % self.world_size == self.rank]

    def cut(self, draws: Sequence[PatchDraw]) -> Dict[str, Any]:
        """The host batch of ``draws``: every array stacked to ``[b, …]`` (pinned on CUDA), ``boxes`` a list of
        per-patch ``[M, 2, 3]`` arrays."""
        patches = [self.sampler.cut(d) for d in draws]
        batch: Dict[str, Any] = {k: self._stack([p[k] for p in patches]) for k in patches[0] if k != "boxes"}
        batch["boxes"] = [p["boxes"] for p in patches]  # per sample [M, 2, 3] (objects differ in number)
        return batch

    def _stack(self, arrays: List[np.ndarray]) -> torch.Tensor:
        if not self.pin:
            return torch.from_numpy(np.stack(arrays))
        dtype = torch.from_numpy(arrays[0][:0]).dtype
        out = torch.empty((len(arrays), *arrays[0].shape), dtype=dtype, pin_memory=True)
        np.stack(arrays, out=out.numpy())  # written straight into page-locked memory
        return out

    def start(self, draws: Sequence[PatchDraw]) -> Future:
        """Cut ``draws`` in the background thread (at once in this thread without ``background``)."""
        if not self.background:
            done: Future = Future()
            try:
                done.set_result(self.cut(draws))
            except Exception as exc:  # noqa: BLE001 -- re-raised by Future.result() where the batch is taken
                done.set_exception(exc)
            return done
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paseg-batches")
        return self._executor.submit(self.cut, list(draws))

    def to_device(self, host: Dict[str, Any]) -> Dict[str, Any]:
        """The batch on the device: asynchronous copies (pinned memory on CUDA), then the uint8 maps converted
        there to :data:`DEVICE_DTYPES`."""
        batch: Dict[str, Any] = {}
        for key, value in host.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device, non_blocking=True)
                if key in DEVICE_DTYPES:
                    value = value.to(DEVICE_DTYPES[key])
            batch[key] = value
        return batch

    def close(self) -> None:
        """Stop the background thread (after the batch it is cutting)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
