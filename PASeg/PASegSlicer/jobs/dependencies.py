"""Python packages on demand, never at import.

* torch comes from the PyTorch extension (``PyTorchUtils``), which picks the build for the user's GPU; when
  the extension is missing the message says how to get it.
* other packages (monai, …) are installed with ``pip`` after the user confirms, with a constraints file that
  pins every package already present that Slicer bundles (numpy, scipy, SimpleITK…) and torch, so an
  install never replaces them.
* when a package that was already imported in this process gets installed or upgraded, a restart is needed.
* a failed install (offline, a hospital proxy, a full disk) is a :class:`DependencyError` whose message says
  what failed and what to do; a torch older than :data:`MINIMUM_TORCH` is upgraded through the extension
  (after confirmation) or refused with the same kind of message; a MONAI older than :data:`MINIMUM_MONAI` is
  upgraded with pip like a missing package. The floors are :mod:`PASegLib.utils.requirements`' (the same as
  ``pyproject.toml``'s and the README's).
* a GPU that the installed torch has no kernels for (its compute capability is not among torch's compiled
  architectures) is said before a job starts (:meth:`DependencyChecker.checkGpus`, from the ``paseg devices``
  child process: torch is never imported here); the job then runs on the CPU if the user agrees.

Everything Slicer-specific is injected (``confirm``, ``pipInstall``, ``importModule``), so the checker runs
and is tested outside Slicer.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from PASegLib.utils.requirements import MINIMUM_MONAI, MINIMUM_TORCH, requirement_spec, version_tuple

from .devices import probeDevices, unusableGpuText

#: Packages Slicer ships (or the PyTorch extension installs); an install must never replace them.
PROTECTED = ("numpy", "scipy", "SimpleITK", "torch", "torchvision", "vtk", "requests", "pydicom", "packaging")
__all__ = ["ANNOTATION", "MINIMUM_MONAI", "MINIMUM_TORCH", "PROTECTED", "RANDOM_WALKER", "TRAINING",
           "DependencyChecker", "DependencyError", "Requirement", "constraintLines", "versionTuple"]


@dataclass(frozen=True)
class Requirement:
    """``module`` is what is imported, ``spec`` what pip installs; with ``minimum``, an installed distribution
    ``distribution`` (default ``module``) older than it counts as missing (pip then upgrades it)."""

    module: str
    spec: str
    minimum: Optional[str] = None
    distribution: Optional[str] = None


#: What the annotation workflow needs in the Slicer process (all bundled with Slicer).
ANNOTATION = (Requirement("numpy", "numpy"), Requirement("scipy", "scipy"), Requirement("SimpleITK", "SimpleITK"))
#: What the random-walker pseudo labels (extreme points, boxes) need: previews in the Slicer process, training.
RANDOM_WALKER = (Requirement("skimage", "scikit-image>=0.21"),)
#: What the training / prediction child process needs besides torch.
TRAINING = (Requirement("monai", requirement_spec("monai"), MINIMUM_MONAI),
            Requirement("matplotlib", "matplotlib>=3.6"), Requirement("tqdm", "tqdm>=4.64")) + RANDOM_WALKER


class DependencyError(RuntimeError):
    """A package is missing and was not installed; the message says what to do."""


#: ``"2.13.0+cu121"`` → ``(2, 13, 0)`` (:func:`PASegLib.utils.requirements.version_tuple`).
versionTuple = version_tuple
#: GPU checks already answered in this session: (python, torch version) → the ``devices`` event, and those whose
#: unusable GPU the user accepted (the job runs on the CPU); asked again after torch changes.
_PROBED: Dict[Tuple[str, Optional[str]], Dict[str, Any]] = {}
_ACCEPTED: Set[Tuple[str, Optional[str]]] = set()


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
        probeDevices: ``probeDevices() -> devices event`` (:func:`PASegSlicer.jobs.devices.probeDevices`, the
            default: ``paseg devices`` in a child process of ``python``).
        python: the interpreter of the jobs (default :func:`PASegSlicer.jobs.commands.pythonExecutable`).
    """

    def __init__(
        self,
        confirm: Callable[[str], bool],
        pipInstall: Callable[[List[str]], None],
        findSpec: Optional[Callable] = None,
        importModule: Optional[Callable] = None,
        installedVersion: Optional[Callable[[str], Optional[str]]] = None,
        probeDevices: Optional[Callable[[], Dict[str, Any]]] = None,
        python: Optional[str] = None,
    ) -> None:
        self.confirm = confirm
        self.pipInstall = pipInstall
        self.findSpec = findSpec or _defaultFindSpec
        self.importModule = importModule or importlib.import_module
        self.installedVersion = installedVersion or _installedVersion
        self.probeDevices = probeDevices
        self.python = python
        self.restartNeeded = False

    def tooOld(self, requirement: Requirement) -> Optional[str]:
        """The installed version of ``requirement`` when it is older than its ``minimum``, else ``None``."""
        if requirement.minimum is None:
            return None
        version = self.installedVersion(requirement.distribution or requirement.module)
        try:
            return version if version is not None and versionTuple(version) < versionTuple(requirement.minimum) \
                else None
        except ValueError:  # a version we cannot read is not refused
            return None

    def missing(self, requirements: Sequence[Requirement]) -> List[Requirement]:
        """The ``requirements`` that are not installed, or older than their ``minimum``."""
        return [r for r in requirements if self.findSpec(r.module) is None or self.tooOld(r) is not None]

    def ensure(self, requirements: Sequence[Requirement], purpose: str) -> List[str]:
        """Install the missing ``requirements`` after confirmation; returns the installed specs."""
        missing = self.missing(requirements)
        if not missing:
            return []
        specs = [r.spec for r in missing]
        shown = [r.spec + (f" ({self.tooOld(r)} is installed)" if self.tooOld(r) else "") for r in missing]
        question = (
            f"{purpose} needs these Python packages, which are not installed or too old: {', '.join(shown)}.\n\n"
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

    def offer(self, requirements: Sequence[Requirement], purpose: str) -> str:
        """Like :meth:`ensure`, never raising: ``""`` when ``requirements`` are installed (now, after the user agreed,
        or already), else why they are not (declined, or the install failed) for a message that says what is
        skipped."""
        try:
            self.ensure(requirements, purpose)
        except DependencyError as exc:
            return str(exc)
        return ""

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

    def checkGpus(self) -> str:
        """Say when the installed torch cannot use a GPU of this computer (its architecture is not among
        torch's compiled ones), and ask whether to go on with the CPU; returns the text shown (``""`` when every
        GPU is usable, there is none, or the user already agreed for this torch in this session).

        The facts come from ``paseg devices`` in a child process (once per torch version and session).

        Raises:
            DependencyError: the user chose not to run on the CPU.
        """
        key = (self.python or "", self.installedVersion("torch"))
        if key not in _PROBED:
            _PROBED[key] = self.probeDevices() if self.probeDevices is not None else probeDevices(self.python)
        text = unusableGpuText(_PROBED[key])
        if not text or key in _ACCEPTED:
            return ""
        if not self.confirm(f"{text}\n\nContinue without this GPU?"):
            raise DependencyError(f"cancelled: {text}")
        _ACCEPTED.add(key)
        return text

    def ensureForJobs(self) -> List[str]:
        """torch (PyTorch extension), the other training packages, then the GPU check (:meth:`checkGpus`);
        returns what pip installed."""
        self.ensureTorch()
        installed = self.ensure(TRAINING, "PASeg training and prediction")
        self.checkGpus()
        return installed

    @property
    def restartHint(self) -> str:
        return "Restart Slicer to use the newly installed packages." if self.restartNeeded else ""
