"""nnU-Net v2 raw datasets of a PASeg dataset's pseudo labels (``paseg export nnunet``).

PASeg's partial labels (0 background, 1 foreground, 2 unlabelled) are nnU-Net v2's *ignore label* format: with
``"ignore": 2`` in ``dataset.json``, nnU-Net leaves the unlabelled voxels out of its loss, as PASeg's stage one
does. :func:`export_nnunet_dataset` writes such a dataset::

    DatasetNNN_Name/
        dataset.json                 channel_names, labels, numTraining, file_ending (".nii.gz")
        imagesTr/<case>_0000.nii.gz  the image of each training case (its pixel type and geometry)
        labelsTr/<case>.nii.gz       uint8 [i, j, k] on the image's grid: 0 background, 1 foreground, 2 ignore
        imagesTs/<case>_0000.nii.gz  the cases without annotation (or outside a run's training cases)

The labels come from one of :data:`LABEL_SOURCES`:

* ``"seeds"`` — the pseudo labels of each object's annotation kind
  (:func:`~PASegLib.seeds.pseudo_labels.pseudo_label_map`, as ``paseg expand`` writes them: the geodesic seed
  expansion of seven points, the random walker of extreme points and boxes, balls around single points);
  with a ``paseg run`` folder, with the settings its stage one trained with;
* ``"refined"`` — the last refinement round's labels of a ``paseg run --refine-rounds R`` folder
  (``refined_<R>/<case>_pseudo.nii.gz``, 0/1 for every voxel);
* ``"predictions"`` — a model's predictions of a ``paseg run`` folder (``predictions/<model>/<case>_pred.nii.gz``).

A dense case (an annotation of kind ``dense``: its ``<case>_label`` is the annotation) keeps its dense label
whatever the source. Every object is foreground 1 (PASeg trains one foreground class), so ``labels`` is
``{"background": 0, <label_name>: 1}``, plus ``"ignore": 2`` when a training label holds unlabelled voxels.

Nothing is written until every case is done: the dataset is assembled in a hidden staging folder beside
``out_dir`` and renamed into place at the end, so a failure leaves no partial dataset. numpy and SimpleITK only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from PASegLib.data.dataset import CaseFiles, DatasetError, list_cases, load_case, print_warning
from PASegLib.data.prepared import dense_label_of
from PASegLib.image.io import check_intensities, check_label_values, read_image, write_image
from PASegLib.utils.atomic import PathLike, atomic_write_json
from PASegLib.utils.checks import short_repr
from PASegLib.utils.version import __version__

__all__ = ["DATASET_NAME", "FILE_ENDING", "LABEL_SOURCES", "NnunetDatasetName", "export_nnunet_dataset",
           "parse_dataset_name"]

#: Where the training labels come from (see the module docstring).
LABEL_SOURCES = ("seeds", "refined", "predictions")
#: nnU-Net v2's dataset folder name: ``Dataset`` + a three-digit id (001–999) + ``_`` + a name.
DATASET_NAME = re.compile(r"^Dataset(?P<id>\d{3})_(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)$")
#: The file ending of every image and label written.
FILE_ENDING = ".nii.gz"
#: The label value of foreground and of unlabelled ("ignore") voxels.
FOREGROUND, IGNORE = 1, 2


@dataclass(frozen=True)
class NnunetDatasetName:
    """A parsed nnU-Net dataset folder name ``Dataset<id:03d>_<name>``."""

    dataset_id: int
    name: str

    @property
    def folder(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"


def parse_dataset_name(folder_name: str) -> NnunetDatasetName:
    """Parse an nnU-Net v2 dataset folder name such as ``Dataset501_Tumours``.

    Raises:
        ValueError: the name is not ``Dataset`` + three digits (001–999) + ``_`` + letters, digits, ``_`` or ``-``.
    """
    match = DATASET_NAME.match(str(folder_name))
    if match is None or int(match.group("id")) == 0:
        raise ValueError(f"the nnU-Net dataset folder must be named DatasetNNN_Name (NNN: three digits 001-999; "
                         f"Name: letters, digits, '_' or '-'), e.g. Dataset501_Tumours; got "
                         f"{short_repr(str(folder_name))}")
    return NnunetDatasetName(int(match.group("id")), match.group("name"))


@dataclass(frozen=True)
class _Source:
    """Where the labels of the training cases come from (resolved and checked before anything is written)."""

    labels: str
    folder: Optional[Path] = None  # refined / predictions: the folder of the label files
    suffix: str = ""  # "_pseudo" / "_pred"
    expansion: Any = None  # seeds: ExpansionConfig
    random_walker: Optional[Dict[str, Any]] = None
    point_radius_mm: float = 2.0


def _read_pipeline(run_dir: Path) -> Dict[str, Any]:
    """The checked ``pipeline.json`` of a ``paseg run`` folder: its options, finished steps and split."""
    path = run_dir / "pipeline.json"
    if not run_dir.is_dir():
        raise ValueError(f"run folder not found: {run_dir}")
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a `paseg run` folder (it has no pipeline.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: not a readable pipeline state ({exc})") from None
    split = data.get("split") if isinstance(data, dict) else None
    if not isinstance(split, dict) or not isinstance(split.get("train"), list) or \
            not all(isinstance(c, str) for c in split["train"]) or not isinstance(data.get("done"), list):
        raise ValueError(f"{path}: the pipeline has no case split yet (it stopped before its first step finished, or "
                         f"the file is damaged); run the `paseg run` command to the end first")
    if not isinstance(data.get("options"), dict):
        raise ValueError(f"{path}: damaged pipeline state ('options' is missing)")
    return data


def _run_stage1_settings(run_dir: Path) -> Tuple[Any, Dict[str, Any], float]:
    """``(ExpansionConfig, random-walker fields, point radius)`` that the stage-one runs of ``run_dir`` trained with."""
    from PASegLib.seeds.expansion import ExpansionConfig
    from PASegLib.training.config import load_run_config

    configs = sorted(p for p in run_dir.glob("stage1_*/config.json") if p.is_file())
    if not configs:
        raise ValueError(f"{run_dir}: no stage-one run yet (no stage1_*/config.json); run the `paseg run` command "
                         f"until its first training step started, or export without --run")
    config = load_run_config(configs[0])
    return ExpansionConfig.from_dict(config.expansion), dict(config.random_walker), float(config.point_radius_mm)


def _resolve_source(labels: str, run_dir: Optional[Path], pipeline: Optional[Dict[str, Any]], model: str, *,
                    expansion: Any, random_walker: Optional[Dict[str, Any]],
                    point_radius_mm: Optional[float]) -> _Source:
    """The checked label source; for ``"seeds"`` its settings (the run's, or those given, or ``paseg expand``'s)."""
    from PASegLib.seeds.expansion import ExpansionConfig
    from PASegLib.seeds.random_walker import RandomWalkerConfig

    if labels not in LABEL_SOURCES:
        raise ValueError(f"labels must be one of {', '.join(LABEL_SOURCES)}, got {short_repr(labels)}")
    if labels != "seeds" and run_dir is None:
        raise ValueError(f"labels {labels!r} come from a `paseg run` folder: give it (--run DIR)")
    given = [n for n, v in (("expansion", expansion), ("random_walker", random_walker),
                            ("point_radius_mm", point_radius_mm)) if v is not None]
    if given and (labels != "seeds" or run_dir is not None):
        why = "the run's own settings are used" if labels == "seeds" else f"labels {labels!r} are read from files"
        raise ValueError(f"{', '.join(given)} cannot be set here: {why}")
    if labels == "seeds":
        if run_dir is not None:
            expansion, random_walker, point_radius_mm = _run_stage1_settings(run_dir)
        if not isinstance(expansion, ExpansionConfig):
            expansion = ExpansionConfig.from_dict(expansion or {})
        RandomWalkerConfig.from_dict(random_walker or {})  # checked before anything is read
        radius = 2.0 if point_radius_mm is None else float(point_radius_mm)
        if not np.isfinite(radius) or radius < 0:
            raise ValueError(f"point_radius_mm must be >= 0, got {point_radius_mm!r}")
        return _Source("seeds", expansion=expansion, random_walker=dict(random_walker or {}), point_radius_mm=radius)
    if run_dir is None or pipeline is None:  # checked above; kept explicit for readers and type checkers
        raise ValueError(f"labels {labels!r} need a `paseg run` folder")
    done = pipeline["done"]
    if labels == "refined":
        rounds = pipeline["options"].get("refine_rounds", 0)
        if not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"{run_dir} has no refined labels: it was run without refinement rounds (`paseg run "
                             f"--refine-rounds R` writes them); use --labels seeds or predictions")
        if f"refine_{rounds}" not in done:
            raise ValueError(f"{run_dir}: refinement round {rounds} has not finished yet; run the same `paseg run` "
                             f"command to continue it first")
        return _Source("refined", folder=run_dir / f"refined_{rounds}", suffix="_pseudo")
    if "predict" not in done:
        raise ValueError(f"{run_dir}: the pipeline has not predicted its cases yet; run the same `paseg run` command "
                         f"until it finishes first")
    folder = run_dir / "predictions" / str(model)
    if not model or Path(str(model)).name != str(model) or not folder.is_dir():
        found = sorted(p.name for p in (run_dir / "predictions").iterdir() if p.is_dir()) \
            if (run_dir / "predictions").is_dir() else []
        raise ValueError(f"{run_dir}: no predictions of model {short_repr(model)} (predictions/{model}); the run has "
                         f"{', '.join(found) or 'none'}")
    return _Source("predictions", folder=folder, suffix="_pred")


def _label_file(source: _Source, case_id: str) -> Path:
    """``<folder>/<case><suffix>.nii.gz`` of a refined or predictions source."""
    return Path(source.folder or ".") / f"{case_id}{source.suffix}{FILE_ENDING}"


def _read_label_file(path: Path, geometry: Any, *, partial: bool) -> np.ndarray:
    """A refined label file (``partial``: 0, 1 or 2 = unlabelled) or a prediction (0 background, 1 … n the objects,
    all foreground 1 here) as uint8, checked against the image grid and the values it may hold."""
    volume = read_image(path, role="label")
    mismatch = geometry.mismatch(volume.geometry)
    if mismatch:
        raise DatasetError(f"{path}: geometry differs from the case's image ({mismatch})")
    try:
        values = check_label_values(volume, source=str(path))
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    array = np.asarray(volume.array)
    if not partial:
        return (array > 0).astype(np.uint8)
    bad = values[~np.isin(values, (0, FOREGROUND, IGNORE))]
    if bad.size:
        raise DatasetError(f"{path}: refined labels must be 0 (background), 1 (foreground) or 2 (unlabelled); the "
                           f"file holds {', '.join(repr(v.item()) for v in bad[:3])}")
    return array.astype(np.uint8)


def _case_labels(files: CaseFiles, source: _Source,
                 warn: Optional[Callable[[str, str], None]]) -> Tuple[Any, np.ndarray, List[str]]:
    """``(image Volume, uint8 labels [i, j, k], annotation kinds)`` of one training case."""
    case = load_case(files, warn=warn)
    if case.annotation is None or not case.annotation.objects:
        raise DatasetError(f"case {files.case_id!r} has no annotation; it cannot be a training case")
    kinds = sorted({o.kind for o in case.annotation.objects})
    geometry = case.image.geometry
    dense = dense_label_of(case)
    if dense is not None:  # a dense case keeps its dense label, whatever the source
        return case.image, (np.asarray(dense) > 0).astype(np.uint8), kinds
    if source.labels != "seeds":
        return case.image, _read_label_file(_label_file(source, files.case_id), geometry,
                                            partial=source.labels == "refined"), kinds
    from PASegLib.seeds.expansion import valid_region_mask
    from PASegLib.seeds.pseudo_labels import pseudo_label_map

    valid = valid_region_mask(np.asarray(case.image.array, dtype=np.float32), source.expansion)
    try:
        labels = pseudo_label_map(case.image, case.annotation, expansion=source.expansion,
                                  random_walker=source.random_walker, valid_mask=valid,
                                  point_radius_mm=source.point_radius_mm)
    except ValueError as exc:
        raise DatasetError(f"{case.annotation_path or files.case_id}: cannot make the labels of case "
                           f"{files.case_id!r}: {exc}") from None
    return case.image, labels.astype(np.uint8), kinds


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not empty; choose a new DatasetNNN_Name folder (nnU-Net's "
                         f"nnUNet_raw holds one folder per dataset) or remove it")


def _make_parents(folder: Path) -> List[Path]:
    """Create ``folder`` and its missing parents; returns those created (deepest last)."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    created = []
    for d in reversed(missing):
        d.mkdir()
        created.append(d)
    return created


def _check_text(name: str, value: Any, *, reserved: Sequence[str] = ()) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise ValueError(f"{name} must be a non-empty name without surrounding spaces, got {short_repr(value)}")
    if value in reserved:
        raise ValueError(f"{name} cannot be {value!r} (nnU-Net reserves it)")
    return value


def export_nnunet_dataset(dataset: PathLike, out_dir: PathLike, *, labels: str = "seeds",
                          run_dir: Optional[PathLike] = None, model: str = "SCM",
                          annotations_dir: Optional[PathLike] = None, expansion: Any = None,
                          random_walker: Optional[Dict[str, Any]] = None, point_radius_mm: Optional[float] = None,
                          channel_name: str = "MRI", label_name: str = "foreground",
                          warn: Optional[Callable[[str, str], None]] = print_warning,
                          on_case: Optional[Callable[[int, int, str, Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Write the nnU-Net v2 raw dataset ``out_dir`` (``.../DatasetNNN_Name``) of ``dataset``'s pseudo labels.

    Args:
        dataset: a PASeg dataset folder (``<case>_image.<ext>``, optional ``<case>_label``, ``<case>.mrk.json`` or
            ``<case>_7points``).
        out_dir: the new dataset folder, named ``DatasetNNN_Name`` (:func:`parse_dataset_name`); it must not exist
            or be empty. Missing parent folders are created.
        labels: one of :data:`LABEL_SOURCES` (``"seeds"``, ``"refined"``, ``"predictions"``).
        run_dir: a ``paseg run`` folder (needed by ``"refined"`` and ``"predictions"``): its annotations
            (``clicks/``, e.g. simulated ones) complete the dataset's, its training cases are the training cases
            (every other case goes to ``imagesTs``) and, for ``"seeds"``, its stage-one settings are used.
        model: ``"predictions"``: the model folder under ``run_dir/predictions`` (``SCM``, ``SCM-E``,
            ``stage_1_<network>``).
        annotations_dir: a folder of ``<case>.mrk.json`` files (as ``paseg expand --annotations``; without
            ``run_dir``).
        expansion: ``"seeds"`` without ``run_dir``: an :class:`~PASegLib.seeds.expansion.ExpansionConfig` or its
            fields (default: ``paseg expand``'s).
        random_walker: ``"seeds"`` without ``run_dir``: :class:`~PASegLib.seeds.random_walker.RandomWalkerConfig`
            fields (extreme points, boxes).
        point_radius_mm: ``"seeds"`` without ``run_dir``: radius (mm) of the ball around single-point clicks
            (default 2).
        channel_name: ``channel_names["0"]`` of ``dataset.json`` (nnU-Net normalises ``"CT"`` with its CT
            scheme and anything else, e.g. ``"MRI"``, per image by z-score).
        label_name: the name of label 1 in ``dataset.json``.
        warn: called as ``warn(case_id, message)`` for what is only suspicious in a case (default: printed).
        on_case: called as ``on_case(index (1-based), total, case_id, row)`` after each case.

    Returns:
        A JSON-ready summary: ``out``, ``dataset_id``, ``name``, ``labels``, ``dataset_json``, ``training`` (one
        row per case: ``case``, ``kinds``, ``foreground_voxels``, ``ignore_voxels``) and ``test`` (case ids).

    Raises:
        ValueError: a bad folder name, an existing non-empty ``out_dir``, a missing or unusable dataset or run
            folder, a missing label file, a case whose labels cannot be made (the message names the file);
            nothing is left in ``out_dir`` then.
    """
    out = Path(out_dir)
    name = parse_dataset_name(out.name)
    channel_name = _check_text("channel_name", channel_name)
    label_name = _check_text("label_name", label_name, reserved=("background", "ignore"))
    _check_out(out)
    run = Path(run_dir) if run_dir is not None else None
    pipeline = _read_pipeline(run) if run is not None else None
    if run is not None and annotations_dir is not None:
        raise ValueError("annotations_dir cannot be combined with a run folder: the run's clicks/ are used")
    source = _resolve_source(labels, run, pipeline, model, expansion=expansion, random_walker=random_walker,
                             point_radius_mm=point_radius_mm)
    annotations = run / "clicks" if run is not None and (run / "clicks").is_dir() else annotations_dir
    cases = list_cases(dataset, annotations_dir=annotations)
    by_id = {c.case_id: c for c in cases}
    if pipeline is not None:
        missing = [c for c in pipeline["split"]["train"] if c not in by_id]
        if missing:
            raise DatasetError(f"{dataset}: the training case(s) {', '.join(missing[:5])} of the run {run} are not in "
                               f"this dataset; give the dataset the run was started on")
        train_ids = set(pipeline["split"]["train"])
        training = [c for c in cases if c.case_id in train_ids]
        no_clicks = [c.case_id for c in training if not c.has_annotation]
        if no_clicks:
            raise DatasetError(f"{run}: training case(s) without annotation: {', '.join(no_clicks[:5])} (is clicks/ "
                               f"of the run complete?)")
    else:
        training = [c for c in cases if c.has_annotation]
    test = [c for c in cases if c not in training]
    if not training:
        raise DatasetError(f"{dataset}: no annotated case to train on; add <case>.mrk.json files (e.g. with "
                           f"`paseg simulate-clicks`)")
    if source.folder is not None:
        absent = [str(_label_file(source, c.case_id)) for c in training if not _label_file(source, c.case_id).is_file()]
        if absent:
            raise DatasetError(f"{len(absent)} label file(s) of the training cases are missing: {', '.join(absent[:3])}"
                               + (" (a run with --test-fraction predicts only its test cases)"
                                  if source.labels == "predictions" else ""))
    created = _make_parents(out.parent)
    stage = Path(tempfile.mkdtemp(prefix=f".paseg-staging-{out.name}-", dir=out.parent))
    try:
        summary = _write(stage, training, test, source, name=name, channel_name=channel_name, label_name=label_name,
                         dataset=Path(dataset), run=run, model=model, warn=warn, on_case=on_case)
        if out.is_dir():
            out.rmdir()  # empty (checked above): the staged dataset takes its place
        os.rename(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    summary["out"] = str(out)
    return summary


def _write(stage: Path, training: List[CaseFiles], test: List[CaseFiles], source: _Source, *,
           name: NnunetDatasetName, channel_name: str, label_name: str, dataset: Path, run: Optional[Path],
           model: str, warn: Optional[Callable[[str, str], None]],
           on_case: Optional[Callable[[int, int, str, Dict[str, Any]], None]]) -> Dict[str, Any]:
    """Write every case and ``dataset.json`` into the staging folder."""
    total = len(training) + len(test)
    rows: List[Dict[str, Any]] = []
    for index, files in enumerate(training, start=1):
        image, labels, kinds = _case_labels(files, source, warn)
        write_image(stage / "imagesTr" / f"{files.case_id}_0000{FILE_ENDING}", image.array, image.geometry)
        write_image(stage / "labelsTr" / f"{files.case_id}{FILE_ENDING}", labels, image.geometry)
        row = {"case": files.case_id, "kinds": kinds, "foreground_voxels": int(np.count_nonzero(labels == FOREGROUND)),
               "ignore_voxels": int(np.count_nonzero(labels == IGNORE))}
        rows.append(row)
        if on_case is not None:
            on_case(index, total, files.case_id, row)
    for index, files in enumerate(test, start=len(training) + 1):
        image = read_image(files.image, role="image")
        check_intensities(image, source=str(files.image))
        write_image(stage / "imagesTs" / f"{files.case_id}_0000{FILE_ENDING}", image.array, image.geometry)
        if on_case is not None:
            on_case(index, total, files.case_id, {"case": files.case_id, "test": True})
    label_values = {"background": 0, label_name: FOREGROUND}
    has_ignore = any(r["ignore_voxels"] for r in rows)
    if has_ignore:
        label_values["ignore"] = IGNORE  # nnU-Net: the highest label; its voxels are left out of the loss
    provenance: Dict[str, Any] = {"version": __version__, "labels": source.labels, "dataset": dataset.name}
    if run is not None:
        provenance["run"] = run.name
    if source.labels == "seeds":
        provenance.update(expansion=source.expansion.to_dict(), random_walker=source.random_walker,
                          point_radius_mm=source.point_radius_mm)
    if source.labels == "predictions":
        provenance["model"] = model
    description = {"seeds": "pseudo labels of the annotations (seed expansion / random walker)",
                   "refined": "refined pseudo labels of a PASeg run",
                   "predictions": f"{model} predictions of a PASeg run"}
    dataset_json = {
        "name": name.name,
        "description": f"PASeg {description[source.labels]}" + ("; label 2 (ignore) marks unlabelled voxels"
                                                                 if has_ignore else ""),
        "channel_names": {"0": channel_name},
        "labels": label_values,
        "numTraining": len(rows),
        "file_ending": FILE_ENDING,
        "paseg": provenance,
    }
    atomic_write_json(stage / "dataset.json", dataset_json)
    return {"dataset_id": name.dataset_id, "name": name.name, "labels": source.labels, "dataset_json": dataset_json,
            "training": rows, "test": [c.case_id for c in test]}
