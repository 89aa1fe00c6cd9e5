"""The stop file of every ``paseg`` command (a polite, file-based "please stop" from the GUI) and every exit code.

Protocol (the Slicer module's job runner and a terminal user speak it alike):

* Every command watches ``STOP`` in the folder it writes into: ``paseg train`` ``RUN_DIR/STOP``, ``paseg predict``
  ``OUT/STOP``, ``paseg run`` ``DIR/STOP`` (in every step; a training step also honours its own
  ``DIR/<run>/STOP``).
* A stop file that already exists when a command starts is stale (left by a killed session) and removed
  before the command's first progress event; one that appears afterwards is honoured within seconds in every
  phase: between data-preparation cases and between the stages of one case, before every training iteration,
  inside validation and prediction (before every sliding window).
* The command saves what it can, removes the stop file, prints a ``PASEG {"event": "stopped", ...}`` line
  and exits with :data:`EXIT_STOPPED`.

A caller that writes the stop file before the command printed its first progress event must write it again
when that event arrives (the job runner does), since the command may have removed it as stale.

stdlib only (training wraps its networks with :func:`PASegLib.training.runtime.stop_checking`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from PASegLib.utils.atomic import PathLike

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_STOPPED", "EXIT_USAGE", "STOP_FILE", "StopFile",
           "StopRequested"]

# The exit codes of every ``paseg`` command (the Slicer module's job runner reads them from here too).
#: Success.
EXIT_OK = 0
#: Bad input (one ``paseg X: error: …`` line naming the input, then a ``PASEG {"event": "error"}`` line), or a bug.
EXIT_ERROR = 1
#: Usage error (argparse).
EXIT_USAGE = 2
#: Exit code of a command that stopped because its stop file appeared.
EXIT_STOPPED = 3
#: Interrupted (Ctrl-C / SIGINT).
EXIT_INTERRUPTED = 130
#: Name of the stop file inside the run folder (training) or the output folder (prediction).
STOP_FILE = "STOP"


class StopRequested(Exception):
    """Raised from inside a long computation when the stop file appeared; callers save what they can.

    Attributes:
        rows: what a batch command finished before the stop (e.g. :func:`~PASegLib.inference.predictor.predict_files`'
            per-case rows); empty when nothing was finished.
    """

    def __init__(self, message: str = "stop requested", *, rows: Optional[List[Any]] = None) -> None:
        super().__init__(message)
        self.rows: List[Any] = list(rows or [])


class StopFile:
    """One stop file: ``clear_stale()`` at start, ``requested()`` / ``check()`` while working, ``consume()``.

    Args:
        path: the stop file (its folder need not exist).
        also: further stop files honoured alike but never removed as stale (an enclosing command's, e.g. the
            pipeline's ``DIR/STOP`` inside one of its training steps); ``consume()`` removes them too.
    """

    def __init__(self, path: PathLike, *, also: Sequence[PathLike] = ()) -> None:
        self.path = Path(path)
        self.also: Tuple[Path, ...] = tuple(Path(p) for p in also)

    def __repr__(self) -> str:
        extra = f", also={[str(p) for p in self.also]!r}" if self.also else ""
        return f"StopFile({str(self.path)!r}{extra})"

    def _found(self) -> Optional[Path]:
        for path in (self.path, *self.also):
            if path.exists():
                return path
        return None

    def clear_stale(self) -> bool:
        """Remove a stop file left by an earlier session; ``True`` when there was one."""
        try:
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError:  # e.g. a read-only folder: the file stays and is honoured
            return False

    def requested(self) -> bool:
        """Whether a stop file exists now (one ``stat`` each; cheap enough for every sliding window)."""
        return self._found() is not None

    def check(self) -> None:
        """Raise :class:`StopRequested` when a stop file exists."""
        found = self._found()
        if found is not None:
            raise StopRequested(f"stop requested ({found} appeared)")

    def consume(self) -> None:
        """Remove the stop file(s) after a stop was honoured (missing files are fine)."""
        for path in (self.path, *self.also):
            try:
                path.unlink()
            except OSError:
                pass


