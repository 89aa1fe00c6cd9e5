"""A small local model list: finished training runs (run folder, network, stage, score, date) and imported model
packages (networks, description, Dice).

Stored as ``<work folder>/models.json`` = ``{"models": [entry, …]}``, written atomically. An entry is made from
the run folder's ``model.json`` (written by ``python -m PASegLib train`` when a run finishes), or from the card of
a model package (one ``.zip`` file written by ``paseg export model``). A package is imported
(:meth:`ModelRegistry.importPackage`) by copying it into ``<work folder>/models/<name>/<name>.zip``; the copy is
checked by ``python -m PASegLib show-model --json`` in a child process (the library's checks: format version,
members, member names, zip-bomb limits, the SHA-256 of every member; torch is not needed), and the prediction job
runs ``paseg predict`` on it, which checks it again.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from PASegLib.jobs.stopped_run import read_stopped_record, write_stopped_record
from PASegLib.utils.atomic import atomic_path, atomic_write_json

from .commands import childEnvironment, pythonExecutable

MODEL_INFO_KEYS = ("network", "stage", "best_score", "best_epoch", "created", "checkpoint")
#: Seconds the package check may take (hashing a large package on a slow disk).
PACKAGE_CHECK_TIMEOUT_SECONDS = 300.0
#: The folder of the work folder that holds the imported packages, one folder per package.
PACKAGES_FOLDER = "models"


def isModelPackage(path) -> bool:
    """Whether ``path`` names a model package (a file, or a ``.zip`` name) rather than a run folder."""
    path = Path(path)
    return path.suffix.lower() == ".zip" or path.is_file()


def readPackageCard(path, python: Optional[str] = None, *, timeout: float = PACKAGE_CHECK_TIMEOUT_SECONDS,
                    run: Callable[..., Any] = subprocess.run) -> Dict[str, Any]:
    """The card of the model package ``path``, checked whole by ``paseg show-model --json`` in a child process
    (blocking); ``ValueError`` with the check's message (naming the package and the member) otherwise."""
    command = [python or pythonExecutable(), "-m", "PASegLib", "show-model", str(path), "--json"]
    try:
        done = run(command, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout,
                   env={**os.environ, **childEnvironment()})
    except (OSError, subprocess.SubprocessError) as exc:
        raise ValueError(f"{path}: the model package could not be checked ({type(exc).__name__}: {exc})") from None
    if done.returncode != 0:
        lines = (done.stderr or "").strip().splitlines() or [f"exit code {done.returncode}"]
        message = next((line.split(": error: ", 1)[1] for line in reversed(lines) if ": error: " in line), lines[-1])
        raise ValueError(message)
    try:
        card = json.loads((done.stdout or "").strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ValueError(f"{path}: the package check printed no model card") from None
    if not isinstance(card, dict) or not isinstance(card.get("networks"), list):
        raise ValueError(f"{path}: the package check printed no model card")
    return card


def _cardInfo(path: Path, card: Dict[str, Any]) -> Dict[str, Any]:
    """A package's card as the fields of a run's ``model.json`` (:data:`MODEL_INFO_KEYS`), plus ``card``."""
    validation = card.get("validation") or {}
    return {"network": " + ".join(card["networks"]), "stage": int(card["stage"]),
            "best_score": validation.get("label_free_score"), "best_epoch": card.get("epoch"),
            "created": str(card.get("created", "")), "checkpoint": path.name, "card": card}


def readModelInfo(runDir, python: Optional[str] = None) -> Dict[str, Any]:
    """``RUN_DIR/model.json`` of a finished run, or the card of a model package (checked in a child process);
    ``ValueError`` naming the file and the problem otherwise."""
    if isModelPackage(runDir):
        return _cardInfo(Path(runDir), readPackageCard(runDir, python))
    path = Path(runDir) / "model.json"
    if not path.is_file():
        stopped = read_stopped_record(runDir)  # a stopped run the user chose to use (never given a model.json)
        if stopped is not None:
            return _stoppedInfo(stopped)
        raise ValueError(f"{runDir} is not a finished PASeg run (no model.json) nor a model package (.zip)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot be read ({exc})") from None
    missing = [key for key in MODEL_INFO_KEYS if not isinstance(info, dict) or key not in info]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    if not (Path(runDir) / str(info["checkpoint"])).is_file():
        raise ValueError(f"{path}: its checkpoint {info['checkpoint']} does not exist")
    return info


def _stoppedInfo(record: Dict[str, Any]) -> Dict[str, Any]:
    """A stopped run's ``stopped.json`` as the fields of a run's ``model.json``, plus ``stopped_epoch``."""
    return {"network": str(record.get("network") or "?"), "stage": int(record.get("stage") or 1), "best_score": None,
            "best_epoch": record.get("epoch"), "created": str(record.get("created", "")),
            "checkpoint": record["checkpoint"], "stopped_epoch": record.get("epoch"),
            "stopped_iteration": record.get("iteration")}


def useStoppedRun(runDir, stoppedEvent: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Make the stopped run ``runDir`` usable as a model: write its ``stopped.json`` (never ``model.json``, which
    means "finished"), naming a snapshot of ``checkpoints/last.pt`` (``checkpoints/stopped-epoch<N>.pt``: a resume
    rewrites ``last.pt``; :func:`~PASegLib.jobs.stopped_run.write_stopped_record`) and the epoch / iteration of
    ``stoppedEvent`` (the step's last ``stopped`` progress event; else those of ``history.json``). ``ValueError``
    when the run finished or stopped before its first checkpoint."""
    run = Path(runDir)
    epoch = iteration = None
    if stoppedEvent:
        epoch, iteration = stoppedEvent.get("epoch"), stoppedEvent.get("iteration")
    if epoch is None:
        try:
            history = json.loads((run / "history.json").read_text(encoding="utf-8"))
            rows = history if isinstance(history, list) else history.get("epochs") or history.get("history") or []
            epoch = max((int(r["epoch"]) for r in rows if isinstance(r, dict) and "epoch" in r), default=None)
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            epoch = None
    return write_stopped_record(run, epoch=epoch, iteration=iteration, checkpoint="checkpoints/last.pt")


def cardDice(card: Dict[str, Any]):
    """``(Dice, "benchmark" | "validation")`` of a card, the benchmark's first; ``(None, "")`` when not measured."""
    for field in ("benchmark", "validation"):
        dice = (card.get(field) or {}).get("dice")
        if isinstance(dice, (int, float)) and not isinstance(dice, bool):
            return float(dice), field
    return None, ""


@dataclass
class ModelEntry:
    """One registered run or imported package (``runDir``: the package file; ``network``: its networks joined by
    " + "; ``description``, ``dice`` and ``diceSource`` from its card)."""

    runDir: str
    network: str
    stage: int
    bestScore: Optional[float]
    bestEpoch: Optional[int]
    created: str
    config: str
    registered: str
    package: bool = False
    description: str = ""
    dice: Optional[float] = None
    diceSource: str = ""
    stopped: bool = False  # a stopped run used with its last weights (its stopped.json; it has no model.json)
    stoppedEpoch: Optional[int] = None

    @property
    def label(self) -> str:
        stage = "SCM" if int(self.stage) == 2 else "stage 1"
        created = self.created[:16].replace("T", " ")
        if self.stopped:
            epoch = "?" if self.stoppedEpoch is None else self.stoppedEpoch
            return f"{self.network} · {stage} · stopped at epoch {epoch} · {created} · {Path(self.runDir).name}"
        if not self.package:
            score = "n/a" if self.bestScore is None else f"{self.bestScore:.3f}"
            return f"{self.network} · {stage} · score {score} · {created} · {Path(self.runDir).name}"
        dice = "Dice n/a" if self.dice is None else f"Dice {self.dice:.3f} ({self.diceSource})"
        text = " ".join(self.description.split())
        text = text if len(text) <= 60 else text[:59] + "…"
        return " · ".join(p for p in (self.network, stage, dice, text, f"package {Path(self.runDir).name}") if p)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelRegistry:
    """The model list stored in ``path`` (created on first registration); imported packages go to the folder
    :data:`PACKAGES_FOLDER` beside it."""

    def __init__(self, path) -> None:
        self.path = Path(path)

    def models(self) -> List[ModelEntry]:
        """Registered models, newest first; entries whose run folder or package disappeared are left out."""
        if not self.path.is_file():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = [ModelEntry(**item) for item in data.get("models", [])]
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"model list {self.path} cannot be read ({exc}); delete it to start a new one") from None
        present = [e for e in entries if (Path(e.runDir).is_file() if e.package else Path(e.runDir).is_dir())]
        return sorted(present, key=lambda e: e.created, reverse=True)

    def register(self, runDir) -> ModelEntry:
        """Add (or refresh) the finished run ``runDir`` (its ``model.json``), or a stopped run made usable
        (:func:`useStoppedRun`: its ``stopped.json``, listed "stopped at epoch N"); ``ValueError`` otherwise."""
        runDir = Path(runDir).resolve()
        if isModelPackage(runDir):
            raise ValueError(f"{runDir} is a model package: import it (importPackage) to list it")
        info = readModelInfo(runDir)
        score = info.get("best_score")
        entry = ModelEntry(
            runDir=str(runDir),
            network=str(info["network"]),
            stage=int(info["stage"]),
            bestScore=None if score is None else float(score),
            bestEpoch=None if info.get("best_epoch") is None else int(info["best_epoch"]),
            created=str(info["created"]),
            config=str(runDir / "config.json"),
            registered=datetime.datetime.now().isoformat(timespec="seconds"),
            stopped="stopped_epoch" in info,
            stoppedEpoch=info.get("stopped_epoch"),
        )
        return self._add(entry)

    def importPackage(self, package, python: Optional[str] = None, *,
                      run: Callable[..., Any] = subprocess.run) -> ModelEntry:
        """Copy the model package ``package`` into ``<work folder>/models/<name>/<name>.zip``, check the copy (see
        the module docstring) and list it; returns its entry. Importing the same package again refreshes its entry;
        another package of the same name gets ``<name>-2`` and so on. A refused package leaves nothing behind.

        Raises:
            ValueError: not a file, or the check's refusal (naming the package and the member).
        """
        source = Path(package)
        if not source.is_file():
            raise ValueError(f"model package not found: {source}")
        digest = _sha256(source)
        stem = re.sub(r"[^\w.-]+", "_", source.stem).strip("._-") or "model"
        root = self.path.parent / PACKAGES_FOLDER
        for n in range(1, 1000):
            name = stem if n == 1 else f"{stem}-{n}"
            dest = root / name / f"{name}.zip"
            if not dest.parent.exists() or (dest.is_file() and _sha256(dest) == digest):
                break
        else:
            raise ValueError(f"{root}: too many packages named {stem}")
        created = [folder for folder in (root, dest.parent) if not folder.exists()]
        try:
            with atomic_path(dest) as tmp:
                shutil.copyfile(source, tmp)
                if _sha256(tmp) != digest:
                    raise ValueError(f"{source} changed while it was copied; import it again")
                try:
                    card = readPackageCard(tmp, python, run=run)
                except ValueError as exc:  # the check names the copy: name the package the user chose
                    raise ValueError(str(exc).replace(str(tmp), str(source))) from None
        except BaseException:
            for folder in reversed(created):  # a refused package leaves no folder behind
                shutil.rmtree(folder, ignore_errors=True)
            raise
        info = _cardInfo(dest, card)
        dice, where = cardDice(card)
        entry = ModelEntry(
            runDir=str(dest.resolve()), network=info["network"], stage=info["stage"],
            bestScore=None if info["best_score"] is None else float(info["best_score"]),
            bestEpoch=info["best_epoch"], created=info["created"], config="",
            registered=datetime.datetime.now().isoformat(timespec="seconds"), package=True,
            description=str(card.get("description", "")), dice=dice, diceSource=where,
        )
        return self._add(entry)

    def remove(self, runDir) -> None:
        self._write([e for e in self.models() if Path(e.runDir) != Path(runDir).resolve()])

    def find(self, runDir) -> Optional[ModelEntry]:
        target = Path(runDir).resolve()
        return next((e for e in self.models() if Path(e.runDir) == target), None)

    def _add(self, entry: ModelEntry) -> ModelEntry:
        others = [e for e in self.models() if Path(e.runDir) != Path(entry.runDir)]
        self._write(others + [entry])
        return entry

    def _write(self, entries: List[ModelEntry]) -> None:
        atomic_write_json(self.path, {"models": [asdict(e) for e in entries]})
