"""Helper package of the PASeg Slicer module (kept in a subpackage: Slicer treats every ``.py`` beside a
module as a module).

* :mod:`.volumes`, :mod:`.segments`, :mod:`.annotation`, :mod:`.logic`, :mod:`.lossplot` — MRML conversions
  and the module's logic; they take the scene as an argument (``slicer.mrmlScene`` in Slicer, a
  :class:`.headless.HeadlessSlicer` scene in tests).
* :mod:`.runner`, :mod:`.processes`, :mod:`.qtprocess` — background jobs in child processes.
* :mod:`.jobs`, :mod:`.jobcontrol`, :mod:`.models`, :mod:`.cases`, :mod:`.dependencies` — job folders and
  commands, the model list, the case list, packages on demand.

Nothing here imports ``qt`` at import time, and nothing imports torch or monai.
"""
