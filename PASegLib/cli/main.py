"""Entry point of the ``paseg`` command: subcommands, error reporting and exit codes.

Exit codes: 0 success; 1 bad input or a failed run (the message names the input and what is wrong, and no
partial output is left); 2 command-line usage errors (argparse); 130 interrupted.

Every failure ends with one line ``paseg COMMAND: error: MESSAGE`` on stderr and one progress event
``PASEG {"event": "error", "message": ..., "command": ..., "internal": ...}`` on stdout (the Slicer jobs read
it); echoed values are shortened (:data:`PASegLib.cli.errors.MAX_MESSAGE`), so a huge input is not repeated in full.

* A failure the user can cause (bad input, a missing or damaged file, no space left, out of memory) is a
  ``ValueError``, ``OSError``, ``FloatingPointError`` or ``MemoryError``, or an error of SimpleITK (which
  names the file); its message says what is wrong with which file.
* Anything else is a bug in PASeg: the message says "internal error", names the exception, and says where
  the traceback was written (a ``paseg-internal-error-*.txt`` file in the temporary folder). With
  ``paseg --debug COMMAND …`` or the environment variable ``PASEG_DEBUG=1`` the traceback of every failure
  (bad input included) is also printed on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from typing import List, Optional

from PASegLib.cli import clicks, devices, evaluate, expand, export, export_model, predict, run, synth, train
from PASegLib.cli import review as review_queue
from PASegLib.cli.errors import shorten, user_error_message
from PASegLib.jobs.stopping import EXIT_ERROR, EXIT_INTERRUPTED
from PASegLib.utils.version import __version__

#: Subcommand modules; each has ``add_parsers(subparsers)``.
SUBCOMMANDS = [synth, clicks, expand, evaluate, train, predict, review_queue, run, export, export_model, devices]
#: Environment variable that prints the traceback of internal errors (as ``--debug``).
DEBUG_ENV = "PASEG_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paseg",
        description="PA-Seg: train 3D segmentation models from seven clicks per object.",
    )
    parser.add_argument("--version", action="version", version=f"PASegLib {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"print the Python traceback of a failure on stderr (also {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in SUBCOMMANDS:
        module.add_parsers(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``paseg`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("paseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 -- every failure ends in one message and one error event
        debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
        message = user_error_message(exc)
        if message is None:
            return _internal_error(args.command, exc, debug=debug)
        if debug:
            traceback.print_exc(file=sys.stderr)
        return _fail(args.command, message)


def _fail(command: str, message: str, **extra: object) -> int:
    """Report an error: one line on stderr and one ``error`` progress event on stdout."""
    from PASegLib.jobs.events import emit

    message = shorten(message)
    print(f"paseg {command}: error: {message}", file=sys.stderr)
    emit("error", message=message, command=command, internal=bool(extra.pop("internal", False)), **extra)
    return EXIT_ERROR


def _internal_error(command: str, exc: BaseException, *, debug: bool) -> int:
    """A bug: say so, keep the traceback in a file (and print it with ``debug``), exit 1."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if debug:
        print(text, file=sys.stderr, end="")
    log = None
    try:
        fd, log = tempfile.mkstemp(prefix="paseg-internal-error-", suffix=".txt")
        with open(fd, "w", encoding="utf-8") as f:
            f.write(f"paseg {command} (PASegLib {__version__})\n{text}")
    except OSError:
        log = None
    where = f"the traceback is in {log}" if log else "the traceback could not be saved"
    summary = shorten(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, 500)
    return _fail(command, f"internal error (a bug in PASeg, not a problem with your input): {summary}; {where} "
                          f"(run with --debug or {DEBUG_ENV}=1 to print it); please report it", internal=True,
                 **({"log": log} if log else {}))


if __name__ == "__main__":
    raise SystemExit(main())
