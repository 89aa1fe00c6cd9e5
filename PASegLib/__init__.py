"""PASegLib — the pure-Python library behind the PASeg 3D Slicer extension.

PA-Seg (Zhai, Wang et al.) trains a 3D segmentation model from seven clicks per object: one point inside
the object and one outside each of its six sides. This package holds everything that does not need Slicer,
one subpackage per concern (``ARCHITECTURE.md`` is the map): ``utils``, ``jobs``, ``image``, ``annotation``,
``seeds``, ``data``, ``networks``, ``losses``, ``training``, ``inference``, ``evaluation``, ``pipeline``,
``synthetic`` and ``cli`` (the ``paseg`` command).

Conventions used throughout the package (every docstring refers to them):

* Image arrays are indexed ``[i, j, k]`` in ITK index order (``i`` runs along the image's first index
  axis, ``k`` is the slice axis), i.e. the transpose of ``SimpleITK.GetArrayFromImage``.
* World coordinates are millimetres in LPS (ITK/DICOM) unless a function says RAS (Slicer).
* Partial label maps use the official PA-Seg encoding: 0 = background, 1 = foreground, 2 = unlabeled.

The names most scripts need are importable from here (``from PASegLib import run_pipeline``); they are loaded
on first use, so importing the package imports neither torch nor any Slicer module.
"""

from __future__ import annotations

from PASegLib.utils.lazy import lazy_getattr
from PASegLib.utils.version import __version__

#: name → the module that defines it (loaded on first access).
_EXPORTS = {
    "CaseAnnotation": "PASegLib.annotation.model",
    "ObjectAnnotation": "PASegLib.annotation.model",
    "AnnotationError": "PASegLib.annotation.model",
    "read_markups": "PASegLib.annotation.markups",
    "write_markups": "PASegLib.annotation.markups",
    "read_draft_markups": "PASegLib.annotation.markups",
    "write_draft_markups": "PASegLib.annotation.markups",
    "read_seven_points": "PASegLib.annotation.sevenpoints",
    "write_seven_points": "PASegLib.annotation.sevenpoints",
    "simulate_clicks": "PASegLib.annotation.simulation",
    "ClickSimulationConfig": "PASegLib.annotation.simulation",
    "validate_case": "PASegLib.annotation.validation",
    "read_image": "PASegLib.image.io",
    "write_image": "PASegLib.image.io",
    "ImageGeometry": "PASegLib.image.geometry",
    "ExpansionConfig": "PASegLib.seeds.expansion",
    "expand_seeds": "PASegLib.seeds.expansion",
    "pseudo_label_map": "PASegLib.seeds.pseudo_labels",
    "list_cases": "PASegLib.data.dataset",
    "load_case": "PASegLib.data.dataset",
    "PrepareSettings": "PASegLib.data.settings",
    "TrainConfig": "PASegLib.training.config",
    "train_from_dataset": "PASegLib.training.launch",
    "Predictor": "PASegLib.inference.predictor",
    "load_predictor": "PASegLib.inference.predictor",
    "predict_files": "PASegLib.inference.predictor",
    "compute_metrics": "PASegLib.evaluation.metrics",
    "PipelineOptions": "PASegLib.pipeline.run",
    "run_pipeline": "PASegLib.pipeline.run",
    "preset_configs": "PASegLib.pipeline.presets",
    "write_synthetic_dataset": "PASegLib.synthetic.generator",
    "SyntheticConfig": "PASegLib.synthetic.config",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list:
    return sorted(set(globals()) | set(_EXPORTS))
