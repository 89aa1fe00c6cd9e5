"""Prediction with a trained run (imports torch).

* :mod:`.predictor` — :class:`~.predictor.Predictor`: sliding-window probabilities in the image's geometry,
  :func:`~.predictor.predict_files` for a dataset;
* :mod:`.cpu` — the CPU's native bfloat16 and glibc's freed-memory reuse while the sliding windows run;
* :mod:`.postprocess` — probabilities → labels: threshold, box restriction, largest component (numpy only).

The names most scripts use are importable from the package itself, loaded on first use.
"""

from __future__ import annotations

from PASegLib.utils.lazy import lazy_getattr

_EXPORTS = {
    "Predictor": "PASegLib.inference.predictor",
    "load_predictor": "PASegLib.inference.predictor",
    "predict_files": "PASegLib.inference.predictor",
    "labels_from_probability": "PASegLib.inference.postprocess",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
