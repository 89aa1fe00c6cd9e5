"""The whole method in one call: clicks → pseudo labels → stage one → a second stage (a refinement round by
default, or the paper's second network and SCM) → prediction → report.

* :mod:`.run` — :func:`~.run.run_pipeline` (``paseg run``), resumable step by step;
* :mod:`.inputs` — simulated clicks for cases without any, the cohort's kinds, the median spacing;
* :mod:`.presets` — the ``cpu`` and ``paper`` presets and the settings per annotation kind;
* :mod:`.refine` — refinement rounds: a trained model's prediction turned into the next round's pseudo labels;
* :mod:`.teacher_student` — mixed supervision by a teacher and its students (paper 003, ``--mixed teacher_student``);
* :mod:`.evaluate` — the models scored on the test cases, and the report.

The names most scripts use are importable from the package itself, loaded on first use.
"""

from __future__ import annotations

from PASegLib.utils.lazy import lazy_getattr

_EXPORTS = {
    "PipelineOptions": "PASegLib.pipeline.run",
    "run_pipeline": "PASegLib.pipeline.run",
    "preset_configs": "PASegLib.pipeline.presets",
    "protocol_settings": "PASegLib.pipeline.presets",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
