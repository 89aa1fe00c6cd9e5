"""Prediction with a trained run (imports torch).

* :mod:`.predictor` — :class:`~.predictor.Predictor`: sliding-window probabilities in the image's geometry,
  :func:`~.predictor.predict_files` for a dataset;
* :mod:`.postprocess` — probabilities → labels: threshold, box restriction, largest component (numpy only).

The names most scripts use are importable from the package itself, loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Predictor": "PASegLib.inference.predictor",
    "load_predictor": "PASegLib.inference.predictor",
    "predict_files": "PASegLib.inference.predictor",
    "labels_from_probability": "PASegLib.inference.postprocess",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
