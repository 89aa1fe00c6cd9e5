"""Prediction with a trained run (imports torch).

* :mod:`.predictor` — :class:`~.predictor.Predictor`: sliding-window probabilities in the image's geometry,
  :func:`~.predictor.predict_files` for a dataset;
* :mod:`.postprocess` — probabilities → labels: threshold, box restriction, largest component (numpy only).
"""
