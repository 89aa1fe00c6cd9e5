"""What a long-running ``paseg`` command shares with whoever started it (the terminal, the Slicer module's runner).

* :mod:`.events` — the ``PASEG {json}`` progress lines on stdout: writing, parsing, JSON-safe values;
* :mod:`.stopping` — the ``STOP`` file protocol (:class:`~.stopping.StopFile`) and every exit code;
* :mod:`.lock` — one process per output folder (:class:`~.lock.FolderLock`, an OS lock);
* :mod:`.supervisor` — runs a job folder's steps detached from whoever started them (``log.txt``, ``status.json``);
* :mod:`.stopped_run` — ``stopped.json``, a stopped run used with its last weights (never ``model.json``).

Standard library only.
"""
