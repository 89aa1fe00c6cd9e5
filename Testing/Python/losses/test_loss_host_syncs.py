"""No loss makes the host wait for the device: host synchronisations counted on the CPU.

On CUDA the host waits for the GPU whenever a value goes to Python (``.item()``, ``float()``, ``bool()`` of a
tensor: ``aten::_local_scalar_dense``), a result size depends on values (``nonzero``, boolean indexing,
``masked_select``, ``unique``), a tensor is copied to the host (``.cpu()``, ``.tolist()``, ``.numpy()``) or Python
data is copied to the device (``torch.tensor(…, device=…)``, which torch finishes with a stream
synchronisation). :class:`HostSyncCounter` counts those calls during a CPU forward + backward, where they are
the same calls; each loss is called once before counting, so constants cached on the first call do not count.
A copy to the host counts only for a tensor that a loss input flows into (MONAI's ``DiceLoss`` calls
``.tolist()`` on ``torch.arange(…)``, a host tensor on CUDA as well).
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Callable, Dict, Iterable, List

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from PASegLib.losses import LOSSES
from PASegLib.losses.smoothing import masked_gaussian_smooth

#: aten operators that synchronise with a CUDA device
_SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique", "_unique2", "unique_dim",
             "unique_consecutive", "unique_dim_consecutive", "equal"}
#: Python entry points that copy a tensor to the host (counted for tensors the inputs flow into)
_TO_HOST = ("tolist", "numpy", "cpu")
#: Python entry points that copy Python data to a device
_TO_DEVICE = ("tensor", "as_tensor")


class HostSyncCounter(TorchDispatchMode):
    """Context manager listing in ``calls`` every call that would synchronise the host with a CUDA device.

    ``inputs``: the tensors that would live on the device; what they flow into does too.
    """

    def __init__(self, inputs: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.calls: List[str] = []
        self._device: Dict[int, weakref.ref[torch.Tensor]] = {}  # by id (tensors compare elementwise)
        self._saved: List[Any] = []
        for tensor in inputs:
            self._mark(tensor)

    def _mark(self, tensor: torch.Tensor) -> None:
        self._device[id(tensor)] = weakref.ref(tensor)

    def _on_device(self, tensor: Any) -> bool:
        ref = self._device.get(id(tensor))
        return ref is not None and ref() is tensor

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        name = func.overloadpacket.__name__
        if name in _SYNC_OPS:
            self.calls.append(name)
        elif name.startswith("index") and len(args) > 1 and isinstance(args[1], (list, tuple)) and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
            self.calls.append(f"{name} with a boolean mask")
        out = func(*args, **(kwargs or {}))
        if any(self._on_device(t) for t in tree_flatten((args, kwargs))[0]):
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self._mark(t)
        return out

    def __enter__(self):
        for attr in _TO_HOST:
            self._patch(torch.Tensor, attr, lambda tensor, *a, **k: self._on_device(tensor))
        for attr in _TO_DEVICE:
            self._patch(torch, attr, lambda *a, **k: k.get("device") is not None)
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            for owner, attr, original in reversed(self._saved):
                setattr(owner, attr, original)
            self._saved.clear()

    def _patch(self, owner: Any, attr: str, syncs: Callable[..., bool]) -> None:
        original = getattr(owner, attr)
        self._saved.append((owner, attr, original))

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if syncs(*args, **kwargs):
                self.calls.append(attr)
            return original(*args, **kwargs)

        setattr(owner, attr, wrapper)


def count_host_syncs(step: Callable[[], Any], inputs: Iterable[torch.Tensor]) -> List[str]:
    """The host synchronisations of ``step()`` (run once before, to warm caches) with ``inputs`` on the device."""
    step()
    with HostSyncCounter(inputs) as counter:
        step()
    return counter.calls


def _tensors(inputs: Dict[str, Any]) -> List[torch.Tensor]:
    return [t for t in inputs.values() if isinstance(t, torch.Tensor)]


def _inputs() -> Dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    shape = (2, 2, 12, 10, 8)
    valid = torch.ones((2, 1, *shape[2:]))
    valid[..., -2:] = 0  # padding at the patch border
    labels = torch.randint(0, 3, (2, 1, *shape[2:]), generator=gen)
    return {
        "logits": torch.randn(shape, generator=gen),
        "teacher": torch.randn(shape, generator=gen),
        "other": torch.randn(shape, generator=gen),
        "image": torch.randn((2, 1, *shape[2:]), generator=gen),
        "labels": labels,
        "valid": valid,
        "points": torch.rand((2, 1, *shape[2:]), generator=gen),
        "boxes": [[((2, 2, 1), (8, 7, 5))], [((0, 1, 0), (11, 9, 7)), ((3, 3, 3), (5, 6, 4))]],
    }


# (name, keyword arguments, call of the built loss on the inputs and the logits under test)
CASES = [
    ("partial_ce_dice", {"check_labels": False}, lambda f, x, z: f(z, x["labels"], x["valid"])),
    ("variance", {}, lambda f, x, z: f(z, x["image"], x["valid"])),
    ("mcrf", {"radius": 2, "compute_mode": "per_offset"}, lambda f, x, z: f(z, x["image"], x["valid"])),
    ("mcrf", {"radius": 2, "compute_mode": "chunked", "downsample_to": (6, 5, 8)},
     lambda f, x, z: f(z, x["image"], x["valid"])),
    ("mcrf", {"radius": 2, "compute_mode": "chunked"}, lambda f, x, z: f(z, x["image"])),
    ("kd", {}, lambda f, x, z: f(z, x["teacher"])),
    ("scm", {}, lambda f, x, z: f(z, x["teacher"], x["other"])),
    ("box_prior", {"extent_weight": 0.5}, lambda f, x, z: f(z, x["boxes"], x["valid"])),
    ("box_prior", {"extent_weight": 0.5}, lambda f, x, z: f(z, x["boxes"])),
    ("contrastive_variance", {}, lambda f, x, z: f(z, x["image"], x["valid"])),
    ("extreme_point", {"iterations": 3}, lambda f, x, z: f(z, x["points"], x["valid"])),
]


@pytest.mark.parametrize("name, kwargs, call", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_loss_forward_backward_has_no_host_sync(name, kwargs, call):
    loss_fn, inputs = LOSSES.build(name, **kwargs), _inputs()

    def step() -> None:
        logits = inputs["logits"].clone().requires_grad_(True)
        call(loss_fn, inputs, logits).backward()

    assert count_host_syncs(step, _tensors(inputs)) == []


@pytest.mark.parametrize("valid", [False, True])
def test_mcrf_image_smoothing_has_no_host_sync(valid):
    inputs = _inputs()
    assert count_host_syncs(lambda: masked_gaussian_smooth(inputs["image"], 1.0, inputs["valid"] if valid else None),
                            _tensors(inputs)) == []


def test_label_check_is_the_one_documented_sync():
    # check_labels=True (the default) verifies the label values at the cost of one synchronisation
    loss_fn, inputs = LOSSES.build("partial_ce_dice"), _inputs()
    assert count_host_syncs(lambda: loss_fn(inputs["logits"], inputs["labels"], inputs["valid"]),
                            _tensors(inputs)) == ["_local_scalar_dense"]


def test_counter_sees_every_kind_of_sync():
    t = torch.arange(6.0)
    with HostSyncCounter([t]) as counter:
        t.sum().item()
        float(t.max())
        bool(t.any())
        (t * 2).tolist()
        t.cpu()
        t[t > 2]
        torch.nonzero(t)
        torch.tensor([1.0, 2.0], device=t.device)
        torch.arange(3).tolist()  # a host tensor: no synchronisation
        torch.tensor([1.0, 2.0])  # stays on the host
    assert counter.calls == ["_local_scalar_dense"] * 3 + ["tolist", "cpu", "index with a boolean mask", "nonzero",
                                                            "tensor"]
    assert "wrapper" not in repr(torch.Tensor.tolist) and torch.tensor.__module__ != __name__  # restored
