"""Whole-image prediction with a trained run: probability and label maps in the image's own geometry.

Pipeline of :meth:`Predictor.predict` (identical preprocessing to training, :func:`preprocess_image`):

1. valid region on the raw image, resampling to ``config.target_spacing_mm`` (the *training grid*) and
   z-scoring inside the valid region;
2. MONAI sliding-window inference on the training grid with the training patch size and
   ``config.sw_overlap`` (Gaussian blending; an ensemble averages the networks' softmaxes); on the CPU with
   freed memory kept for reuse (:func:`~PASegLib.inference.cpu.cpu_heap_reuse`), in bfloat16 where the CPU
   computes it natively (:func:`~PASegLib.inference.cpu.cpu_has_native_bf16`);
3. foreground probability set to 0 outside the valid region, then resampled back to the image grid
   (linear, same voxel-edge extent, :func:`~PASegLib.image.resample.resample_to_shape`);
4. labels by :func:`~PASegLib.inference.postprocess.labels_from_probability` (threshold, optional box restriction,
   object indices, optional largest connected component; re-exported here).

Arrays are ``[i, j, k]`` (ITK index order), world coordinates LPS mm (see :mod:`PASegLib`). A run folder
is what ``paseg train`` writes: ``config.json``, ``checkpoints/best.pt`` and ``checkpoints/last.pt``.
Importing this module imports torch.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from PASegLib.annotation.model import CaseAnnotation
from PASegLib.data.dataset import CaseFiles, DatasetError, load_case
from PASegLib.data.prepared import preprocess_image
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import Volume, write_image
from PASegLib.image.resample import resample_to_shape
from PASegLib.inference.cpu import cpu_has_native_bf16, cpu_heap_reuse
from PASegLib.inference.postprocess import check_label_options, check_threshold, labels_from_probability
from PASegLib.jobs.stopping import StopFile, StopRequested
from PASegLib.training.checkpoint import CheckpointError, load_checkpoint, load_network_weights
from PASegLib.training.config import TrainConfig, load_run_config, saved_config
from PASegLib.training.runtime import describe_device, resolve_device, sliding_window_probability, stop_checking
from PASegLib.utils.atomic import PathLike
from PASegLib.utils.checks import check_int

__all__ = ["Prediction", "Predictor", "labels_from_probability",
           "load_predictor", "predict_files", "resolve_checkpoint"]

ROLES = ("primary", "auxiliary")
CHECKPOINT_NAMES = ("best", "last")

@dataclass
class Prediction:
    """Result of :meth:`Predictor.predict`, on the input volume's own grid.

    Attributes:
        probability: float32 ``[I, J, K]`` foreground probability in ``[0, 1]`` (0 outside the valid region;
            never restricted to the boxes, so it can be re-thresholded).
        labels: uint8 ``[I, J, K]``: 0 background, ``n`` ≥ 1 the 1-based index of the object (1 without
            annotation); see :func:`labels_from_probability`.
        geometry: the input volume's geometry (shape ``(I, J, K)``, spacing mm, origin/direction LPS).
    """

    probability: np.ndarray
    labels: np.ndarray
    geometry: ImageGeometry


class Predictor:
    """Networks of a trained run plus the preprocessing of their training configuration.

    Args:
        networks: one network, or several whose softmaxes are averaged (ensemble); each maps
            ``[B, 1, I, J, K]`` to logits ``[B, 2, I, J, K]``. They are moved to ``device`` and set to eval mode.
        config: the training configuration (preprocessing: ``target_spacing_mm``, ``expansion["valid_region"]``;
            window: ``patch_size``, ``sw_overlap``; ``amp`` on CUDA).
        device: torch device (or a name accepted by :func:`~PASegLib.training.runtime.resolve_device`).
        sw_batch_size: windows per forward pass. The probabilities do not depend on it beyond float rounding
            (each window is normalised alone); on the CPU more than 1 costs memory and gains little once
            ``heap_reuse`` is on (``benchmarks/bench_predict.py --sw-batch-size``).
        cpu_bf16: bfloat16 autocast on the CPU (see
            :func:`~PASegLib.training.runtime.sliding_window_probability`); ``None`` (default): where the CPU
            computes bfloat16 natively (:func:`~PASegLib.inference.cpu.cpu_has_native_bf16`). Not bit-exact: on
            10 held-out ``la_heart`` cases, with short trainings of each of the three networks, the foreground
            probability moved by at most 0.022, the mean Dice by at most 0.0003 and one case's Dice by at most 0.0009
            (``benchmarks/bench_predict_precision.py``); ``False`` gives the float32 result bit for bit.
        heap_reuse: on the CPU, predict inside :func:`~PASegLib.inference.cpu.cpu_heap_reuse` (freed memory kept
            for reuse while the windows run; the same results, less time). ``False`` leaves the C library's
            allocator alone.

    Attributes:
        source: where the weights came from (checkpoint path), for messages and summaries.
        roles: role of each network (``"primary"``, ``"auxiliary"``).
        network_names: registered name of each network (set by :func:`load_predictor`).
        notes: remarks made while loading (e.g. the fallback from ``best`` to ``last``).
    """

    def __init__(self, networks: Sequence[torch.nn.Module], config: TrainConfig, *,
                 device: Union[str, torch.device] = "cpu", sw_batch_size: int = 1,
                 cpu_bf16: Optional[bool] = None, heap_reuse: bool = True) -> None:
        if not networks or not all(isinstance(n, torch.nn.Module) for n in networks):
            raise ValueError(f"networks must be a non-empty sequence of torch modules, got {networks!r}")
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
        check_int("sw_batch_size", sw_batch_size, minimum=1)
        if cpu_bf16 is not None and not isinstance(cpu_bf16, bool):
            raise ValueError(f"cpu_bf16 must be None (automatic), True or False, got {cpu_bf16!r}")
        if not isinstance(heap_reuse, bool):
            raise ValueError(f"heap_reuse must be True or False, got {heap_reuse!r}")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.networks = [net.to(self.device).eval() for net in networks]
        self.config = config
        self.sw_batch_size = int(sw_batch_size)
        #: bfloat16 autocast when predicting on the CPU (resolved from ``cpu_bf16``)
        self.cpu_bf16 = self.device.type == "cpu" and (cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16)
        self.heap_reuse = heap_reuse
        self.source: Optional[Path] = None
        self.roles: Tuple[str, ...] = ROLES[: len(networks)] if len(networks) <= 2 else ()
        self.network_names: Tuple[str, ...] = tuple(type(net).__name__ for net in networks)
        self.notes: List[str] = []
        #: a click-conditioned model (``config.point_channel``) gets the annotation's clicks when this is true
        #: and an annotation is given, an empty click channel otherwise
        self.use_clicks = True

    def describe(self) -> Dict[str, Any]:
        """JSON-ready summary: checkpoint, roles, network names, device, window settings."""
        return {"checkpoint": str(self.source) if self.source else None, "roles": list(self.roles),
                "networks": list(self.network_names), "device": describe_device(self.device),
                "patch_size": list(self.config.patch_size), "overlap": self.config.sw_overlap,
                "sw_batch_size": self.sw_batch_size, "cpu_bf16": self.cpu_bf16,
                "target_spacing_mm": self.config.target_spacing_mm}

    def probability_on_training_grid(self, volume: Volume, *, stop: Optional[StopFile] = None,
                                     annotation: Optional[CaseAnnotation] = None) -> Tuple[np.ndarray, ImageGeometry]:
        """Foreground probability float32 ``[I', J', K']`` on the training grid, and that grid; ``stop`` is
        checked before every sliding window (raises :class:`~PASegLib.jobs.stopping.StopRequested`). A
        click-conditioned model gets the click heatmap of ``annotation`` (when :attr:`use_clicks`), a box-channel
        model (``click_map="box"``, the teacher of ``--mixed teacher_student``) the mask of its objects' boxes."""
        image, valid, grid = preprocess_image(volume, self.config)
        clicks = None
        if self.config.point_channel and self.config.click_map == "box":
            from PASegLib.data.clickmaps import annotation_box_mask  # a teacher of paper 003: the boxes' mask

            clicks = (annotation_box_mask(annotation, grid) if (annotation is not None and self.use_clicks)
                      else np.zeros(grid.shape, dtype=np.float32))
        elif self.config.point_channel:
            from PASegLib.data.clickmaps import annotation_points, click_heatmap

            points = annotation_points(annotation, grid) if (annotation is not None and self.use_clicks) else []
            clicks = click_heatmap(points, grid.shape, grid.spacing, self.config.point_sigma_mm)
        prob = self.window_probability(image, clicks=clicks, stop=stop)
        prob = np.clip(prob, 0.0, 1.0, out=prob)
        prob[~valid] = 0.0
        return prob, grid

    def window_probability(self, image: np.ndarray, *, clicks: Optional[np.ndarray] = None,
                           stop: Optional[StopFile] = None) -> np.ndarray:
        """The networks' foreground probability float32 ``[I', J', K']`` of an image already preprocessed to the
        training grid (:func:`preprocess_image`), by sliding window; ``clicks`` the click channel of a
        click-conditioned model (same shape; ``None`` otherwise). ``stop`` is checked before every window."""
        heap = cpu_heap_reuse() if self.heap_reuse and self.device.type == "cpu" else contextlib.nullcontext()
        with heap:
            return sliding_window_probability(stop_checking(self.networks, stop), image,
                                              patch_size=self.config.patch_size, overlap=self.config.sw_overlap,
                                              device=self.device, amp=self.config.amp,
                                              sw_batch_size=self.sw_batch_size, clicks=clicks,
                                              cpu_bf16=self.cpu_bf16)

    def predict(self, volume: Volume, *, annotation: Optional[CaseAnnotation] = None, restrict_to_box: bool = False,
                largest_component: bool = False, threshold: float = 0.5,
                stop: Optional[StopFile] = None) -> Prediction:
        """Predict one image.

        Args:
            volume: the image ``[I, J, K]`` with its geometry (any spacing/orientation; not constant).
            annotation: optional seven-click annotation (LPS mm) of the objects: object indices in the labels,
                box restriction (see :func:`labels_from_probability` for the exact rule).
            restrict_to_box: labels are 0 outside every object box (needs ``annotation``).
            largest_component: keep the largest 26-connected component per object (overall without annotation).
            threshold: foreground threshold in ``(0, 1)`` applied to the probability.
            stop: a stop file checked before every sliding window.

        Returns:
            :class:`Prediction` on ``volume.geometry``.

        Raises:
            ValueError: bad arguments (checked before the networks run) or an image that cannot be normalised
                (constant in its valid region).
            StopRequested: the stop file appeared.
        """
        if not isinstance(volume, Volume):
            raise ValueError(f"volume must be a PASegLib.image.io.Volume, got {type(volume).__name__}")
        check_label_options(threshold, annotation, restrict_to_box)
        prob, grid = self.probability_on_training_grid(volume, stop=stop, annotation=annotation)
        if grid.shape != volume.geometry.shape:
            prob = np.clip(resample_to_shape(prob, volume.geometry.shape, order=1), 0.0, 1.0)
        prob = prob.astype(np.float32, copy=False)
        labels = labels_from_probability(prob, volume.geometry, annotation=annotation, threshold=threshold,
                                         restrict_to_box=restrict_to_box, largest_component=largest_component)
        return Prediction(prob, labels, volume.geometry)


def resolve_checkpoint(run_dir: PathLike, checkpoint: Union[str, PathLike] = "best") -> Tuple[Path, List[str]]:
    """Checkpoint file of ``run_dir`` for ``"best"``, ``"last"`` or a path; returns ``(path, notes)``.

    ``"best"`` falls back to ``checkpoints/last.pt`` (with a note) when no validation wrote ``best.pt``.

    Raises:
        ValueError: ``run_dir`` is not a folder.
        CheckpointError: the requested checkpoint does not exist.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"run folder not found: {run}")
    if isinstance(checkpoint, str) and checkpoint in CHECKPOINT_NAMES:
        path = run / "checkpoints" / f"{checkpoint}.pt"
        last = run / "checkpoints" / "last.pt"
        if checkpoint == "best" and not path.is_file() and last.is_file():
            return last, [f"{run}: no checkpoints/best.pt (no validation was run); using checkpoints/last.pt"]
        if not path.is_file():
            raise CheckpointError(f"{run}: no checkpoints/{checkpoint}.pt; is this a PASeg run folder "
                                  f"(written by `paseg train`)?")
        return path, []
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (use 'best', 'last' or a checkpoint file)")
    return path, []


def _run_config(run: Path, data: Mapping[str, Any], path: Path) -> TrainConfig:
    """The checkpoint's own config (what the weights were trained with), else ``run/config.json``."""
    if "config" in data:
        try:
            return saved_config(dict(data["config"]))  # keys it lacks: as that run trained
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: invalid training configuration in the checkpoint: {exc}") from None
    if (run / "config.json").is_file():
        return load_run_config(run / "config.json")
    raise CheckpointError(f"{path}: the checkpoint holds no configuration and {run} has no config.json")


def load_predictor(
    run_dir: PathLike,
    *,
    checkpoint: Union[str, PathLike] = "best",
    ensemble: bool = False,
    device: str = "auto",
    sw_batch_size: int = 1,
    verbose: bool = True,
    use_clicks: bool = True,
    cpu_bf16: Optional[bool] = None,
) -> Predictor:
    """Load a trained run for prediction.

    Args:
        run_dir: run folder written by ``paseg train`` (``config.json``, ``checkpoints/``).
        checkpoint: ``"best"`` (falls back to ``"last"`` with a note when absent), ``"last"``, or a file path.
        ensemble: average the primary and auxiliary networks (SCM-E); only for stage-2 (SCM) runs.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        sw_batch_size: windows per forward pass.
        verbose: print notes (e.g. the ``best`` → ``last`` fallback) on stderr; they are also in ``.notes``.
        use_clicks: a click-conditioned run (``point_channel``) predicts with the clicks of each case's
            annotation (``False``: with an empty click channel, as for a case nobody clicked).
        cpu_bf16: bfloat16 autocast on the CPU; ``None``: where the CPU computes it natively (see
            :class:`Predictor`).

    Raises:
        ValueError: missing run folder, bad device, or ``ensemble`` with a stage-1 run (names the run).
        CheckpointError: missing, damaged or foreign checkpoint, or weights that do not fit the network;
            when ``run_dir/config.json`` exists its networks are required to match the checkpoint's.
    """
    from PASegLib.networks import build_network

    run = Path(run_dir)
    path, notes = resolve_checkpoint(run, checkpoint)
    torch_device = resolve_device(device)
    expected: Dict[str, str] = {}
    run_config = load_run_config(run / "config.json") if (run / "config.json").is_file() else None
    if ensemble and run_config is not None and run_config.stage != 2:
        raise ValueError(f"run {run}: --ensemble needs a stage-2 (SCM) run with a primary and an auxiliary "
                         f"network; this is a stage-{run_config.stage} run ({run_config.network} only)")
    if run_config is not None:  # a checkpoint of another run must not be used with this run's settings
        expected["primary"] = run_config.network
        if ensemble:
            expected["auxiliary"] = run_config.aux_network
    data = load_checkpoint(path, expected_networks=expected or None)
    config = _run_config(run, data, path)
    entries = data["networks"]
    roles = ROLES if ensemble else ROLES[:1]
    if ensemble and not isinstance(entries.get("auxiliary"), dict):
        raise ValueError(f"run {run}: --ensemble needs a stage-2 (SCM) run with a primary and an auxiliary "
                         f"network, but {path.name} is a {data.get('kind', 'unknown')!r} checkpoint holding "
                         f"only {sorted(entries)}")
    networks = []
    for role in roles:
        entry = entries.get(role)
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise CheckpointError(f"{path}: checkpoint has no {role} network entry")
        kwargs = entry.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise CheckpointError(f"{path}: network {role} has invalid build arguments {kwargs!r}")
        try:
            net = build_network(entry["name"], in_channels=2 if config.point_channel else 1, out_channels=2,
                                **kwargs)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: cannot build the {role} network {entry['name']!r}: {exc}") from None
        load_network_weights(net, entry, source=path)
        networks.append(net)
    predictor = Predictor(networks, config, device=torch_device, sw_batch_size=sw_batch_size, cpu_bf16=cpu_bf16)
    predictor.source, predictor.roles, predictor.notes = path, tuple(roles), notes
    predictor.use_clicks = bool(use_clicks)
    predictor.network_names = tuple(entries[role]["name"] for role in roles)
    for note in notes if verbose else ():
        print(f"note: {note}", file=sys.stderr)
    return predictor


def predict_files(
    predictor: Predictor,
    cases: Sequence[CaseFiles],
    out_dir: PathLike,
    *,
    restrict_to_box: bool = False,
    largest_component: bool = False,
    threshold: float = 0.5,
    on_case: Optional[Callable[[int, int, str, Path], None]] = None,
    stop: Optional[StopFile] = None,
) -> List[Dict[str, Any]]:
    """Predict every case and write ``out_dir/<case>_pred.nii.gz`` (uint8) and ``<case>_prob.nii.gz`` (float32).

    A case's annotation (``markups`` or ``seven_points`` of its :class:`~PASegLib.data.dataset.CaseFiles`) is used
    whenever present (object indices, boxes); ``restrict_to_box`` requires one for every case, which is
    checked before anything runs.

    Args:
        predictor: from :func:`load_predictor`.
        cases: the images (and optional annotations) to predict.
        out_dir: output folder (created; callers wanting all-or-nothing output pass a staging folder).
        restrict_to_box, largest_component, threshold: see :meth:`Predictor.predict`.
        on_case: called after each case as ``on_case(index (1-based), total, case_id, pred_path)``.
        stop: a stop file checked before every case, between the stages of a case and before every sliding
            window; the files of a case are written only after its prediction finished, so a stop leaves the
            finished cases' pairs of files and nothing of the interrupted one.

    Returns:
        One JSON-ready row per case: ``case``, ``pred``, ``prob`` (paths), ``objects``, ``fg_voxels``, ``seconds``.

    Raises:
        DatasetError / ImageReadError / AnnotationError (``ValueError``\\ s naming the file): unreadable or invalid
            input; ``ValueError`` for bad arguments or duplicate case ids.
        StopRequested: the stop file appeared; its ``rows`` are those of the finished cases.
    """
    check_threshold(threshold)
    ids = [c.case_id for c in cases]
    if not ids:
        raise ValueError("no case to predict")
    if len(set(ids)) != len(ids):
        raise ValueError(f"case ids must be unique, got {ids}")
    if restrict_to_box:
        missing = [c.case_id for c in cases if not c.has_annotation]
        if missing:
            raise DatasetError(f"--restrict-to-box needs clicks for every case; no <case>.mrk.json or "
                               f"<case>_7points file for: {', '.join(missing)}")
    out = Path(out_dir)
    rows = []
    for index, files in enumerate(cases, start=1):
        start = time.perf_counter()
        try:
            if stop is not None:
                stop.check()
            case = load_case(files, load_label=False, load_annotation=True)
            prediction = predictor.predict(case.image, annotation=case.annotation, restrict_to_box=restrict_to_box,
                                           largest_component=largest_component, threshold=threshold, stop=stop)
            if stop is not None:
                stop.check()
        except StopRequested as exc:
            raise StopRequested(str(exc), rows=rows) from None
        pred_path = write_image(out / f"{files.case_id}_pred.nii.gz", prediction.labels, case.image.geometry)
        prob_path = write_image(out / f"{files.case_id}_prob.nii.gz", prediction.probability, case.image.geometry)
        rows.append({"case": files.case_id, "pred": str(pred_path), "prob": str(prob_path),
                     "objects": len(case.annotation.objects) if case.annotation else 0,
                     "fg_voxels": int(np.count_nonzero(prediction.labels)),
                     "seconds": round(time.perf_counter() - start, 3)})
        if on_case is not None:
            on_case(index, len(cases), files.case_id, pred_path)
    return rows
