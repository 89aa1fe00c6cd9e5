"""Device selection, determinism, RNG state capture and sliding-window probabilities (torch)."""

from __future__ import annotations

import os
import random
import re
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from PASegLib.jobs.stopping import StopFile
from PASegLib.utils.checks import check_int

__all__ = ["CUBLAS_WORKSPACE_CONFIG", "CUDA_NONDETERMINISTIC_OPERATIONS", "architecture_supported", "capture_rng",
           "describe_device", "device_inventory", "gpu_problem", "resolve_device", "restore_rng", "seed_everything",
           "sliding_window_probability"]

#: The cuBLAS workspace setting of deterministic mode (environment variable ``CUBLAS_WORKSPACE_CONFIG``; torch's
#: reproducibility notes accept ``:4096:8`` and ``:16:8``).
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
#: The operations of PASeg's training that have no deterministic CUDA kernel in torch, and where they come from
#: (found by tracing real stage-one and SCM iterations; ``Testing/Python/training/test_determinism.py`` keeps
#: the list true). In deterministic mode torch warns once for each and runs it anyway: results on a GPU may
#: differ in the last bits between two runs (on the CPU they are bit-identical).
CUDA_NONDETERMINISTIC_OPERATIONS: Dict[str, str] = {
    "nll_loss2d_forward": "the cross-entropy of SCM's distillation loss (MONAI's DiceCELoss; torch's CUDA kernel "
                          "sums with atomic adds)",
    "upsample_trilinear3d_backward": "the gradient of stage one's trilinear resampling around the mCRF "
                                     "(crf_downsample_to; null avoids it)",
}


def architecture_supported(capability: Tuple[int, int], arch_list: Sequence[str]) -> bool:
    """Whether a torch built for ``arch_list`` has kernels for a GPU of compute ``capability`` ``(major, minor)``.

    ``arch_list`` is ``torch.cuda.get_arch_list()``, e.g. ``["sm_80", "sm_90", "compute_90"]``. A binary for
    ``sm_XY`` runs on GPUs of major version ``X`` and minor version ``>= Y``, an architecture-specific one
    (``sm_90a``) on capability ``X.Y`` only; PTX (``compute_XY``) is compiled by the driver for any capability
    ``>= X.Y``. An empty list (torch does not say) counts as supported.
    """
    major, minor = (int(v) for v in capability)
    if not arch_list:
        return True
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+)([a-z]?)", str(arch))
        if match is None:
            continue
        kind, number, suffix = match.groups()
        built = divmod(int(number), 10)  # sm_86 → (8, 6), sm_100 → (10, 0), sm_120 → (12, 0)
        if kind == "sm":
            ok = built == (major, minor) if suffix == "a" else built[0] == major and built[1] <= minor
        else:
            ok = suffix != "a" and built <= (major, minor)
        if ok:
            return True
    return False


def gpu_problem(index: int) -> Optional[str]:
    """Why this torch cannot run on GPU ``index`` (its compute capability is not among the architectures torch was
    built for: "no kernel image is available"), or ``None`` when it can."""
    capability = tuple(torch.cuda.get_device_capability(index))
    archs = list(torch.cuda.get_arch_list())
    if architecture_supported(capability, archs):
        return None
    built = [a for a in archs if a.startswith("sm_")]
    span = f"{built[0]}–{built[-1]}" if len(built) > 1 else (built[0] if built else ", ".join(archs))
    name = torch.cuda.get_device_properties(index).name
    return (f"GPU {index} ({name}, compute capability {capability[0]}.{capability[1]}) cannot be used by this torch "
            f"{torch.__version__} (CUDA {torch.version.cuda}, built for {span}); install a torch build made for "
            f"this GPU (in Slicer: reinstall torch through the PyTorch extension)")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` → the first CUDA GPU this torch can run on, else the CPU (a GPU it has no kernels for is said
    on stderr); ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given.

    Raises:
        ValueError: CUDA was requested but is not available, index ``N`` does not exist, or this torch has no
            kernels for that GPU's architecture (:func:`gpu_problem`); the message says how to fall back
            (``--device cpu``).
    """
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        problems = []
        for index in range(torch.cuda.device_count()):
            problem = gpu_problem(index)
            if problem is None:
                return torch.device("cuda" if index == 0 else f"cuda:{index}")
            problems.append(problem)
        print(f"note: {'; '.join(problems)}; running on the CPU", file=sys.stderr)
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but no CUDA GPU is usable by this torch "
                             f"({torch.__version__}); use --device cpu or auto")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
        problem = gpu_problem(index)
        if problem is not None:
            raise ValueError(f"device {name!r}: {problem}; or use --device cpu")
        return torch.device(name)
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")


def describe_device(device: torch.device) -> str:
    """Human-readable device name, e.g. ``"cuda:0 (NVIDIA H100, 79 GiB)"`` or ``"cpu (2 threads)"``."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    return f"cpu ({torch.get_num_threads()} threads)"


def device_inventory() -> Dict[str, Any]:
    """What torch sees: ``{"torch": version, "cuda_version": torch's CUDA or None, "arch_list": the GPU
    architectures torch was built for, "cuda": [{"index", "name", "memory_gb", "capability": "8.6",
    "supported": whether torch has kernels for it (:func:`architecture_supported`)}, ...], "mps": bool}``."""
    available = torch.cuda.is_available()
    archs = list(torch.cuda.get_arch_list()) if available else []
    cuda = []
    for n in range(torch.cuda.device_count() if available else 0):
        props = torch.cuda.get_device_properties(n)
        capability = tuple(torch.cuda.get_device_capability(n))
        cuda.append({"index": n, "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                     "capability": f"{capability[0]}.{capability[1]}",
                     "supported": architecture_supported(capability, archs)})
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return {"torch": torch.__version__, "cuda_version": torch.version.cuda, "arch_list": archs, "cuda": cuda,
            "mps": mps}


def seed_everything(seed: int, *, deterministic: bool) -> None:
    """Seed Python, numpy's legacy generator and torch (all devices); optionally deterministic kernels.

    ``deterministic``: ``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN's deterministic
    algorithms without benchmarking, and, unless the environment sets it, ``CUBLAS_WORKSPACE_CONFIG`` =
    :data:`CUBLAS_WORKSPACE_CONFIG`, which deterministic cuBLAS needs. torch reads that variable when it makes its
    first cuBLAS workspace in the process (the first matrix product on the GPU, not CUDA's start): trainers call
    this before any, so it is in time; a program that ran GPU matrix products before must set the variable
    before it starts. ``warn_only``: the operations with no deterministic CUDA kernel
    (:data:`CUDA_NONDETERMINISTIC_OPERATIONS`, torch names each in a warning) still run, so a GPU run may differ
    from another in the last bits; strict mode would stop stage one at the mCRF's resampling gradient and SCM at
    its cross-entropy. With a GPU, a note on stderr says so.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        workspace = os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        if torch.cuda.is_available():
            cublas = (f"CUBLAS_WORKSPACE_CONFIG={workspace}" if workspace in (":4096:8", ":16:8") else
                      f"CUBLAS_WORKSPACE_CONFIG={workspace} is not :4096:8 or :16:8, so cuBLAS is not deterministic")
            print(f"note: deterministic mode on CUDA ({cublas}); no deterministic CUDA kernel exists for "
                  f"{', '.join(f'{op} ({why})' for op, why in CUDA_NONDETERMINISTIC_OPERATIONS.items())}: these "
                  f"run as they are, so two GPU runs may differ in the last bits", file=sys.stderr)
    else:  # also undoes an earlier deterministic run in this process
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
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
    cpu_bf16: bool = False,
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
        sw_batch_size: windows per forward pass. Each window is normalised on its own (instance norm), so the
            result does not depend on it beyond float rounding (~1e-6); more windows cost memory.
        clicks: optional click heatmap float32 ``[I, J, K]``, the second input channel of a click-conditioned
            network (``TrainConfig.point_channel``; zeros = predict without clicks).
        cpu_bf16: bfloat16 autocast on the CPU (convolutions in bfloat16, float32 softmax and blending):
            faster on CPUs with native bfloat16 (AVX-512 BF16, AMX), not exact (probabilities differ by up to
            a few hundredths). Ignored on other devices.

    Returns:
        float32 ``[I, J, K]`` probability of class 1.

    Runs under ``torch.inference_mode``; only the foreground channel is blended (the background's is not needed).
    """
    from monai.inferers import sliding_window_inference

    device = torch.device("cpu") if device is None else device
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"image must be a 3D array [I, J, K], got shape {arr.shape}")
    if not networks:
        raise ValueError("networks must hold at least one network")
    sw_batch_size = check_int("sw_batch_size", sw_batch_size, minimum=1)
    x = torch.from_numpy(np.ascontiguousarray(arr))[None, None]
    if clicks is not None:
        heat = np.asarray(clicks, dtype=np.float32)
        if heat.shape != arr.shape:
            raise ValueError(f"clicks {heat.shape} must have the image's shape {arr.shape}")
        x = torch.cat([x, torch.from_numpy(np.ascontiguousarray(heat))[None, None]], dim=1)
    on_gpu = device.type == "cuda"
    big = arr.size > 256 * 256 * 128
    if on_gpu:
        autocast = {"device_type": "cuda", "dtype": torch.float16, "enabled": bool(amp)}
    else:
        autocast = {"device_type": "cpu", "dtype": torch.bfloat16, "enabled": bool(cpu_bf16) and device.type == "cpu"}

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        total = None
        for net in networks:
            with torch.autocast(**autocast):
                logits = net(patch)
            prob = torch.softmax(logits.float(), dim=1)[:, 1:2]  # [B, 1, I, J, K]: the foreground only
            total = prob if total is None else total + prob
        return total / len(networks)

    for net in networks:
        net.eval()
    with torch.inference_mode():
        out = sliding_window_inference(
            x.to(device if not big else torch.device("cpu")), roi_size=tuple(int(p) for p in patch_size),
            sw_batch_size=sw_batch_size, predictor=predictor, overlap=float(overlap), mode="gaussian",
            sw_device=device, device=torch.device("cpu") if big else device, progress=False)
    return out[0, 0].float().cpu().numpy()


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
