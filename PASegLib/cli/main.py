"""Entry point of the ``paseg`` command: subcommands, error reporting and exit codes.

Exit codes: 0 success; 1 bad input or a failed run (the message names the input and what is wrong, and no
partial output is left); 2 command-line usage errors (argparse); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .. import __version__
from . import clicks, evaluate, expand, predict, run, synth, train
from .common import EXIT_ERROR

#: Commands whose errors are also reported as a ``PASEG {"event": "error"}`` line (the Slicer jobs run them).
JOB_COMMANDS = ("train", "predict", "run")

#: Subcommand modules; each has ``add_parsers(subparsers)``.
SUBCOMMANDS = [synth, clicks, expand, evaluate, train, predict, run]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paseg",
        description="PA-Seg: train 3D segmentation models from seven clicks per object.",
    )
    parser.add_argument("--version", action="version", version=f"PASegLib {__version__}")
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
        return 130
    except (ValueError, OSError, FloatingPointError) as exc:  # our input errors name the input
        return _fail(args.command, str(exc))
    except RuntimeError as exc:
        if type(exc).__name__ != "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            raise
        return _fail(args.command, "out of GPU memory; use a smaller --patch-size, close other GPU programs, "
                                   f"or --device cpu ({str(exc).splitlines()[0]})")


def _fail(command: str, message: str) -> int:
    """Report an error: on stderr and, for the long-running commands, as a progress event for GUI readers."""
    print(f"paseg {command}: error: {message}", file=sys.stderr)
    if command in JOB_COMMANDS:
        from ..progress_events import emit

        emit("error", message=message)
    return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
