"""``python -m PASegLib`` = the ``paseg`` command (what Slicer's ``PythonSlicer -m PASegLib`` runs)."""

from PASegLib.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
