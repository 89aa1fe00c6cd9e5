"""The whole method in one call: clicks → pseudo labels → stage one ×2 → SCM → prediction → report.

* :mod:`.run` — :func:`~.run.run_pipeline` (``paseg run``), resumable step by step;
* :mod:`.inputs` — simulated clicks for cases without any, the cohort's kinds, the median spacing;
* :mod:`.presets` — the ``cpu`` and ``paper`` presets and the settings per annotation kind;
* :mod:`.refine` — refinement rounds: a trained model's prediction turned into the next round's pseudo labels;
* :mod:`.evaluate` — the models scored on the test cases, and the report.
"""
