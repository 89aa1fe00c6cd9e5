"""Python packages on demand, never at import.

* torch comes from the PyTorch extension (``PyTorchUtils``), which picks the build for the user's GPU; when
  the extension is missing the message says how to get it.
* other packages (monai, …) are installed with ``pip`` after the user confirms, with a constraints file that
  pins every package already present that Slicer bundles (numpy, scipy, SimpleITK…) and torch, so an
  install never replaces them.
* when a package that was already imported in this process gets installed or upgraded, a restart is needed.
* a failed install (offline, a hospital proxy, a full disk) is a :class:`DependencyError` whose message says
  what failed and what to do; a torch older than :data:`MINIMUM_TORCH` is upgraded through the extension
  (after confirmation) or refused with the same kind of message.

Everything Slicer-specific is injected (``confirm``, ``pipInstall``, ``importModule``), so the checker runs
and is tested outside Slicer.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

#: Packages Slicer ships (or the PyTorch extension installs); an install must never replace them.
PROTECTED = ("numpy", "scipy", "SimpleITK", "torch", "torchvision", "vtk", "requests", "pydicom", "packaging")
MINIMUM_TORCH = "2.1"


@dataclass(frozen=True)
class Requirement:
    """``module`` is what is imported, ``spec`` what pip installs."""

    module: str
    spec: str


#: What the annotation workflow needs in the Slicer process (all bundled with Slicer).
ANNOTATION = (Requirement("numpy", "numpy"), Requirement("scipy", "scipy"), Requirement("SimpleITK", "SimpleITK"))
#: What the random-walker pseudo labels (extreme points, boxes) need: previews in the Slicer process, training.
RANDOM_WALKER = (Requirement("skimage", "scikit-image>=0.21"),)
#: What the training / prediction child process needs besides torch.
TRAINING = (Requirement("monai", "monai>=1.3"), Requirement("matplotlib", "matplotlib>=3.6"),
            Requirement("tqdm", "tqdm>=4.64")) + RANDOM_WALKER  # fmt: skip


class DependencyError(RuntimeError):
    """A package is missing and was not installed; the message says what to do."""


def versionTuple(version: str) -> tuple:
    """``"2.13.0+cu121"`` → ``(2, 13, 0)``: the leading release numbers (enough to compare with a minimum)."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(version))
    if not match:
        raise ValueError(f"not a version number: {version!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def _installedVersion(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _installHelp(specs: Sequence[str]) -> str:
    return (
        "Check the network connection. Behind a hospital or institute proxy, start Slicer with the proxy set "
        "(environment variables HTTPS_PROXY and HTTP_PROXY, e.g. http://proxy.example.org:8080). Without "
        "network access, download the wheels on another computer and install them from that folder: "
        f"PythonSlicer -m pip install --no-index --find-links <folder> {' '.join(specs)}. "
        "pip's own output is in the Python console (View → Python Console)."
    )


def _defaultFindSpec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def constraintLines(names: Sequence[str] = PROTECTED) -> List[str]:
    """``name==version`` for each of ``names`` that is installed."""
    lines = []
    for name in names:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return lines


class DependencyChecker:
    """Checks and installs packages.

    Args:
        confirm: ``confirm(text) -> bool`` asks the user (``slicer.util.confirmOkCancelDisplay`` in Slicer).
        pipInstall: ``pipInstall(arguments)`` runs pip with a list of arguments (``slicer.util.pip_install``).
        findSpec: ``findSpec(module) -> spec or None``; default :func:`importlib.util.find_spec`.
        importModule: ``importModule(name)``; default :func:`importlib.import_module` (for ``PyTorchUtils``).
        installedVersion: ``installedVersion(distribution) -> str or None``; default
            :func:`importlib.metadata.version` (torch's version is read without importing torch).
    """

    def __init__(
        self,
        confirm: Callable[[str], bool],
        pipInstall: Callable[[List[str]], None],
        findSpec: Optional[Callable] = None,
        importModule: Optional[Callable] = None,
        installedVersion: Optional[Callable[[str], Optional[str]]] = None,
    ) -> None:
        self.confirm = confirm
        self.pipInstall = pipInstall
        self.findSpec = findSpec or _defaultFindSpec
        self.importModule = importModule or importlib.import_module
        self.installedVersion = installedVersion or _installedVersion
        self.restartNeeded = False

    def missing(self, requirements: Sequence[Requirement]) -> List[Requirement]:
        return [r for r in requirements if self.findSpec(r.module) is None]

    def ensure(self, requirements: Sequence[Requirement], purpose: str) -> List[str]:
        """Install the missing ``requirements`` after confirmation; returns the installed specs."""
        missing = self.missing(requirements)
        if not missing:
            return []
        specs = [r.spec for r in missing]
        question = (
            f"{purpose} needs these Python packages, which are not installed: {', '.join(specs)}.\n\n"
            "Install them now? This needs a network connection and may take a few minutes. Packages that "
            "Slicer ships are not changed."
        )
        if not self.confirm(question):
            raise DependencyError(f"{purpose} cancelled: {', '.join(specs)} not installed")
        alreadyImported = [r.module for r in missing if r.module in sys.modules]
        with tempfile.TemporaryDirectory(prefix="paseg-pip-") as tmp:
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text("\n".join(constraintLines()) + "\n", encoding="utf-8")
            try:
                self.pipInstall(specs + ["--constraint", str(constraints)])
            except Exception as exc:  # CalledProcessError from pip, OSError…: never silent
                raise DependencyError(
                    f"{purpose}: installing {', '.join(specs)} failed ({type(exc).__name__}: {exc}).\n\n"
                    + _installHelp(specs)
                ) from exc
        importlib.invalidate_caches()
        still = self.missing(missing)
        if still:
            specs = [r.spec for r in still]
            raise DependencyError(f"installing {', '.join(specs)} failed.\n\n" + _installHelp(specs))
        self.restartNeeded = self.restartNeeded or bool(alreadyImported)
        return specs

    def _pyTorchLogic(self):
        try:
            PyTorchUtils = self.importModule("PyTorchUtils")
        except ModuleNotFoundError:
            raise DependencyError(
                "PASeg needs the PyTorch extension to install torch for your GPU. Open View → Extensions Manager, "
                'install "PyTorch", restart Slicer, then try again.'
            ) from None
        return PyTorchUtils.PyTorchUtilsLogic()

    def _installTorch(self, torchLogic, why: str) -> None:
        try:
            installed = torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=f">={MINIMUM_TORCH}")
        except Exception as exc:  # pip failures inside the extension
            raise DependencyError(f"{why}: installing torch failed ({type(exc).__name__}: {exc}).\n\n"
                                  + _installHelp([f"torch>={MINIMUM_TORCH}"])) from exc  # fmt: skip
        if installed is None:
            raise DependencyError(f"{why}: torch was not installed; PASeg training and prediction need it")
        importlib.invalidate_caches()

    def ensureTorch(self) -> None:
        """Make sure torch ≥ :data:`MINIMUM_TORCH` is installed, through the PyTorch extension; nothing is imported
        here (the version is read from the installed package's metadata)."""
        if self.findSpec("torch") is None:
            torchLogic = self._pyTorchLogic()
            if not torchLogic.torchInstalled():
                self._installTorch(torchLogic, "torch is missing")
            importlib.invalidate_caches()
            return
        version = self.installedVersion("torch")
        if version is None or versionTuple(version) >= versionTuple(MINIMUM_TORCH):
            return
        why = f"torch {version} is installed, but PASeg needs torch {MINIMUM_TORCH} or newer"
        if not self.confirm(f"{why}.\n\nUpgrade torch now through the PyTorch extension? This needs a network "
                            "connection and a restart of Slicer afterwards."):  # fmt: skip
            raise DependencyError(f"{why}; upgrade it (PyTorch extension, or PythonSlicer -m pip install "
                                  f"'torch>={MINIMUM_TORCH}') and restart Slicer")  # fmt: skip
        self._installTorch(self._pyTorchLogic(), why)
        upgraded = self.installedVersion("torch")
        if upgraded is None or versionTuple(upgraded) < versionTuple(MINIMUM_TORCH):
            raise DependencyError(f"{why}, and the upgrade left torch {upgraded}; see the Python console")
        self.restartNeeded = True

    def ensureForJobs(self) -> List[str]:
        """torch (PyTorch extension) then the other training packages; returns what pip installed."""
        self.ensureTorch()
        return self.ensure(TRAINING, "PASeg training and prediction")

    @property
    def restartHint(self) -> str:
        return "Restart Slicer to use the newly installed packages." if self.restartNeeded else ""
