"""The review queue: rank cases by how unsure a trained model is about them, without labels.

Two label-free disagreement signals per case, each ``1 − Dice`` on the training grid (foreground = probability
≥ 0.5 inside the valid region, as in validation; two empty masks agree fully):

* ``flip`` — test-time flips: the mean over ``flips`` of ``1 − Dice(prediction, flipped re-prediction flipped
  back)``; the selection study's ``flip_agreement`` (:mod:`PASegLib.training.selection`) is the all-axes flip;
* ``networks`` — the two networks: ``1 − Dice(prediction of A, prediction of B)``; A and B are the primary and
  auxiliary networks of a stage-2 (SCM) run, or the primary networks of two runs (e.g. the two stage-one runs;
  ``model_b``); the selection study's ``network_agreement``.

:func:`review_queue` scores every case and sorts them worst first; the score is the named ``signal``
(``"both"``: the mean of the two). Each image is preprocessed once as in training and predicted on the training
grid; a click-conditioned run (``point_channel``) with an empty click channel (a case may have no clicks).
Importing this module imports torch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from PASegLib.data.dataset import CaseFiles
from PASegLib.data.prepared import preprocess_image
from PASegLib.image.io import Volume, read_image
from PASegLib.image.resample import resample_to_shape
from PASegLib.inference.predictor import Predictor, load_predictor
from PASegLib.jobs.stopping import StopFile
from PASegLib.utils.atomic import PathLike

__all__ = ["FLIPS", "SIGNALS", "case_disagreement", "parse_flips", "review_predictors", "review_queue",
           "signal_description"]

#: ranking signals (``"auto"``: ``"both"`` when two networks exist, else ``"flip"``)
SIGNALS = ("flip", "networks", "both", "auto")
#: default test-time flips: each axis alone (``i``, ``j``, ``k`` = array axes 0, 1, 2)
FLIPS: Tuple[Tuple[int, ...], ...] = ((0,), (1,), (2,))
_AXES = {"i": 0, "j": 1, "k": 2}


def parse_flips(names: Sequence[str]) -> Tuple[Tuple[int, ...], ...]:
    """``["i", "jk", "ijk"]`` → ``((0,), (1, 2), (0, 1, 2))``; raises ``ValueError`` naming a bad flip."""
    flips = []
    for name in names:
        if not name or any(ch not in _AXES for ch in name) or len(set(name)) != len(name):
            raise ValueError(f"flip {name!r}: use the axes i, j, k, each at most once (e.g. i, jk, ijk)")
        flips.append(tuple(sorted(_AXES[ch] for ch in name)))
    if not flips:
        raise ValueError("flips must name at least one flip (e.g. i j k)")
    return tuple(flips)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.count_nonzero(a & b)) / denom


def _grid_mask(predictor: Predictor, image: np.ndarray, valid: np.ndarray, stop: Optional[StopFile]) -> np.ndarray:
    """Foreground (probability ≥ 0.5 inside ``valid``) of a preprocessed ``image`` ``[I', J', K']`` on the training
    grid, predicted as :meth:`Predictor.probability_on_training_grid` does (an empty click channel)."""
    clicks = np.zeros(image.shape, np.float32) if predictor.config.point_channel else None
    return (predictor.window_probability(image, clicks=clicks, stop=stop) >= 0.5) & valid


def _same_preprocessing(a: Predictor, b: Predictor) -> bool:
    return (a.config.target_spacing_mm == b.config.target_spacing_mm
            and a.config.expansion.get("valid_region") == b.config.expansion.get("valid_region"))


def case_disagreement(predictor: Predictor, volume: Volume, *, predictor_b: Optional[Predictor] = None,
                      flips: Sequence[Tuple[int, ...]] = FLIPS, stop: Optional[StopFile] = None,
                      return_mask: bool = False) -> Dict[str, Any]:
    """The disagreement signals of one image, on model A's training grid (the image is preprocessed once, as in
    training; a flip flips that grid, as validation's ``flip_agreement`` does).

    Args:
        predictor: model A (its primary network(s)).
        volume: the image ``[I, J, K]``.
        predictor_b: model B for the ``networks`` signal (``None``: no such signal); a B with other preprocessing
            settings is compared on A's grid after its own preprocessing and resampling.
        flips: test-time flips (tuples of array axes); empty: no ``flip`` signal.
        stop: checked before every sliding window.
        return_mask: also return A's foreground (bool ``[I', J', K']`` on the training grid) as ``"mask"``.

    Returns:
        ``{"flip_disagreement", "network_disagreement", "foreground_voxels"}`` (a signal not computed is
        ``None``; disagreements in ``[0, 1]``; voxels of A's foreground on the training grid).
    """
    if not isinstance(volume, Volume):
        raise ValueError(f"volume must be a PASegLib.image.io.Volume, got {type(volume).__name__}")
    image, valid, grid = preprocess_image(volume, predictor.config)
    base = _grid_mask(predictor, image, valid, stop)
    flip_values = []
    for axes in flips:
        flipped = _grid_mask(predictor, np.ascontiguousarray(np.flip(image, axis=axes)),
                             np.flip(valid, axis=axes), stop)
        flip_values.append(1.0 - _dice(base, np.flip(flipped, axis=axes)))
    network = None
    if predictor_b is not None:
        if _same_preprocessing(predictor, predictor_b):
            other = _grid_mask(predictor_b, image, valid, stop)
        else:
            image_b, valid_b, _ = preprocess_image(volume, predictor_b.config)
            other = _grid_mask(predictor_b, image_b, valid_b, stop)
            if other.shape != grid.shape:
                other = resample_to_shape(other.astype(np.uint8), grid.shape, order=0).astype(bool)
        network = 1.0 - _dice(base, other)
    result = {"flip_disagreement": float(np.mean(flip_values)) if flip_values else None,
              "network_disagreement": network, "foreground_voxels": int(base.sum())}
    return {**result, "mask": base} if return_mask else result


def review_predictors(model: PathLike, *, model_b: Optional[PathLike] = None, checkpoint: str = "best",
                      device: str = "auto") -> Tuple[Predictor, Optional[Predictor], str]:
    """``(A, B, how)``: model A, model B (the run ``model_b``'s primary network, else the auxiliary network of a
    stage-2 run ``model``, else ``None``) and a sentence saying which networks they are."""
    from PASegLib.training.config import load_run_config

    run = Path(model)
    if not run.is_dir():
        raise ValueError(f"--model {run}: run folder not found")
    config_path = run / "config.json"
    stage = load_run_config(config_path).stage if config_path.is_file() else 1
    if model_b is not None:
        if not Path(model_b).is_dir():
            raise ValueError(f"--model-b {model_b}: run folder not found")
        a = load_predictor(run, checkpoint=checkpoint, device=device, verbose=False, use_clicks=False)
        b = load_predictor(model_b, checkpoint=checkpoint, device=device, verbose=False, use_clicks=False)
        return a, b, f"A = {a.network_names[0]} of {run}, B = {b.network_names[0]} of {model_b}"
    if stage == 2:
        both = load_predictor(run, checkpoint=checkpoint, ensemble=True, device=device, verbose=False,
                              use_clicks=False)
        a, b = (Predictor([net], both.config, device=both.device, cpu_bf16=both.cpu_bf16) for net in both.networks)
        for p, role, name in zip((a, b), both.roles, both.network_names):
            p.source, p.roles, p.network_names, p.use_clicks = both.source, (role,), (name,), False
        return a, b, f"A = primary {a.network_names[0]}, B = auxiliary {b.network_names[0]} of the SCM run {run}"
    a = load_predictor(run, checkpoint=checkpoint, device=device, verbose=False, use_clicks=False)
    return a, None, f"A = {a.network_names[0]} of {run} (one network: no B)"


def _resolve_signal(signal: str, has_b: bool) -> str:
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {', '.join(SIGNALS)}, got {signal!r}")
    if signal == "auto":
        return "both" if has_b else "flip"
    if signal in ("networks", "both") and not has_b:
        raise ValueError(f"signal {signal!r} needs two networks: a stage-2 (SCM) --model or a second run (--model-b)")
    return signal


def review_queue(cases: Sequence[CaseFiles], model: PathLike, *, model_b: Optional[PathLike] = None,
                 signal: str = "auto", flips: Sequence[Tuple[int, ...]] = FLIPS, checkpoint: str = "best",
                 device: str = "auto", stop: Optional[StopFile] = None,
                 on_case: Optional[Callable[[int, int, str, Dict[str, Any]], None]] = None,
                 predictors: Optional[Tuple[Predictor, Optional[Predictor], str]] = None,
                 masks: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, Any]:
    """Score ``cases`` with the run ``model`` and sort them worst first.

    Args:
        cases: the images to rank (their labels and annotations are not read).
        model, model_b, checkpoint, device: see :func:`review_predictors`.
        signal: ``"flip"``, ``"networks"``, ``"both"`` (mean of the two) or ``"auto"``.
        flips: test-time flips of the ``flip`` signal (computed only when the signal uses them).
        stop: checked before every sliding window.
        on_case: called after each case as ``on_case(index (1-based), total, case_id, row)``.
        predictors: already loaded ``(A, B, how)`` (skips loading; tests and benchmarks).
        masks: a dict that receives each case's foreground of A (bool, on A's training grid), e.g. to score the
            model against labels in a benchmark.

    Returns:
        JSON-ready ``{"model", "model_b", "signal", "signal_description", "networks", "flips", "seconds",
        "cases"}``; ``cases`` a list of rows ``{"case", "rank" (1 = most unsure), "score", "flip_disagreement",
        "network_disagreement", "foreground_voxels", "seconds"}`` sorted by decreasing score (ties by case id).
    """
    ids = [c.case_id for c in cases]
    if not ids:
        raise ValueError("no case to rank")
    if len(set(ids)) != len(ids):
        raise ValueError(f"case ids must be unique, got {ids}")
    if signal not in SIGNALS:  # before any network is loaded
        raise ValueError(f"signal must be one of {', '.join(SIGNALS)}, got {signal!r}")
    a, b, how = predictors if predictors is not None else review_predictors(model, model_b=model_b,
                                                                           checkpoint=checkpoint, device=device)
    resolved = _resolve_signal(signal, b is not None)
    use_flips = tuple(flips) if resolved in ("flip", "both") else ()
    if resolved in ("flip", "both") and not use_flips:
        raise ValueError(f"signal {resolved!r} needs at least one flip")
    start, rows = time.perf_counter(), []
    for index, files in enumerate(cases, start=1):
        t = time.perf_counter()
        volume = read_image(files.image, role="image")
        signals = case_disagreement(a, volume, predictor_b=b if resolved != "flip" else None, flips=use_flips,
                                    stop=stop, return_mask=masks is not None)
        if masks is not None:
            masks[files.case_id] = signals.pop("mask")
        row = {"case": files.case_id, **signals}
        parts = [row[k] for k in ("flip_disagreement", "network_disagreement") if row[k] is not None]
        row["score"] = float(np.mean(parts))
        row["seconds"] = round(time.perf_counter() - t, 3)
        rows.append(row)
        if on_case is not None:
            on_case(index, len(cases), files.case_id, row)
    rows.sort(key=lambda r: (-r["score"], r["case"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return {"model": str(model), "model_b": None if model_b is None else str(model_b), "signal": resolved,
            "signal_description": signal_description(resolved),
            "networks": how, "flips": ["".join("ijk"[x] for x in f) for f in use_flips],
            "seconds": round(time.perf_counter() - start, 3), "cases": rows}


def signal_description(signal: str) -> str:
    """One sentence naming the signal (for reports)."""
    return {"flip": "1 − mean Dice between the prediction and its test-time-flipped re-predictions",
            "networks": "1 − Dice between the predictions of networks A and B",
            "both": "mean of the flip and the two-network disagreements"}.get(signal, signal)
