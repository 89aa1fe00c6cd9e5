"""Device selection, determinism, RNG state capture and sliding-window probabilities (torch)."""

from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from PASegLib.jobs.stopping import StopFile

__all__ = ["device_inventory", "capture_rng", "describe_device", "resolve_device", "restore_rng", "seed_everything",
           "sliding_window_probability"]


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when available else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given.

    Raises:
        ValueError: CUDA was requested but is not available (or index ``N`` does not exist); the message says
            how to fall back (``--device cpu``).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but no CUDA GPU is usable by this torch "
                             f"({torch.__version__}); use --device cpu or auto")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
        return torch.device(name)
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")


def describe_device(device: torch.device) -> str:
    """Human-readable device name, e.g. ``"cuda:0 (NVIDIA H100, 79 GiB)"`` or ``"cpu (2 threads)"``."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    return f"cpu ({torch.get_num_threads()} threads)"


def device_inventory() -> Dict[str, Any]:
    """What torch sees: ``{"torch": version, "cuda": [{"index", "name", "memory_gb"}, ...], "mps": bool}``."""
    cuda = []
    for n in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(n)
        cuda.append({"index": n, "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)})
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return {"torch": torch.__version__, "cuda": cuda, "mps": mps}


def seed_everything(seed: int, *, deterministic: bool) -> None:
    """Seed Python, numpy's legacy generator and torch (all devices); optionally deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def capture_rng(generator: np.random.Generator) -> Dict[str, Any]:
    """All random states needed to continue exactly (plain values and tensors, ``weights_only``-safe)."""
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": generator.bit_generator.state,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any], generator: np.random.Generator) -> None:
    """Inverse of :func:`capture_rng` (CUDA states are restored when both sides have them)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generator.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@torch.no_grad()
def sliding_window_probability(
    networks: Sequence[torch.nn.Module],
    image: np.ndarray,
    *,
    patch_size: Sequence[int],
    overlap: float = 0.25,
    device: Optional[torch.device] = None,
    amp: bool = True,
    sw_batch_size: int = 1,
    clicks: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Foreground probability of a whole (preprocessed) image with MONAI's sliding-window inference.

    Args:
        networks: one network, or several whose softmax outputs are averaged (an ensemble such as SCM-E);
            each maps ``[B, 1, I, J, K]`` to logits ``[B, 2, I, J, K]``.
        image: z-scored float32 ``[I, J, K]`` on the training grid.
        patch_size: window ``(I, J, K)`` (the training patch size); smaller images are padded by MONAI.
        overlap: window overlap in ``[0, 1)``; windows are blended with Gaussian weights.
        device: where the networks are (default CPU); the full-size output stays on the CPU when the image is large.
        amp: float16 autocast on CUDA.
        clicks: optional click heatmap float32 ``[I, J, K]``, the second input channel of a click-conditioned
            network (``TrainConfig.point_channel``; zeros = predict without clicks).

    Returns:
        float32 ``[I, J, K]`` probability of class 1.
    """
    from monai.inferers import sliding_window_inference

    device = torch.device("cpu") if device is None else device
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"image must be a 3D array [I, J, K], got shape {arr.shape}")
    if not networks:
        raise ValueError("networks must hold at least one network")
    x = torch.from_numpy(np.ascontiguousarray(arr))[None, None]
    if clicks is not None:
        heat = np.asarray(clicks, dtype=np.float32)
        if heat.shape != arr.shape:
            raise ValueError(f"clicks {heat.shape} must have the image's shape {arr.shape}")
        x = torch.cat([x, torch.from_numpy(np.ascontiguousarray(heat))[None, None]], dim=1)
    on_gpu = device.type == "cuda"
    big = arr.size > 256 * 256 * 128

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        total = None
        for net in networks:
            with torch.autocast(device_type=device.type, enabled=amp and on_gpu):
                prob = torch.softmax(net(patch).float(), dim=1)
            total = prob if total is None else total + prob
        return total / len(networks)

    for net in networks:
        net.eval()
    out = sliding_window_inference(
        x.to(device if not big else torch.device("cpu")), roi_size=tuple(int(p) for p in patch_size),
        sw_batch_size=sw_batch_size, predictor=predictor, overlap=float(overlap), mode="gaussian",
        sw_device=device, device=torch.device("cpu") if big else device, progress=False)
    return out[0, 1].float().cpu().numpy()


def stop_checking(networks: Sequence[Any], stop: Optional[StopFile]) -> List[Any]:
    """``networks`` wrapped so that every forward pass first calls ``stop.check()`` (unchanged without ``stop``).

    The wrappers hold the networks as submodules (``eval()``/``train()`` reach them) and compute exactly what
    the networks compute; a stop inside MONAI's sliding-window loop then acts before the next window.
    """
    if stop is None:
        return list(networks)

    class _StopChecking(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D401
            stop.check()
            return self.net(x)

    return [_StopChecking(net) for net in networks]
