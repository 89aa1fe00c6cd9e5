"""What a long-running ``paseg`` command shares with whoever started it (the terminal, the Slicer module's runner).

* :mod:`.events` — the ``PASEG {json}`` progress lines on stdout: writing, parsing, JSON-safe values;
* :mod:`.stopping` — the ``STOP`` file protocol (:class:`~.stopping.StopFile`) and every exit code;
* :mod:`.lock` — one process per output folder (:class:`~.lock.FolderLock`, an OS lock).

Standard library only.
"""
