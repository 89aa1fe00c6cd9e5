"""A small local model list: finished training runs (run folder, network, stage, score, date).

Stored as ``<work folder>/models.json`` = ``{"models": [entry, …]}``, written atomically. An entry is made
from the run folder's ``model.json`` (written by ``python -m PASegLib train`` when a run finishes).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from PASegLib.utils.atomic import atomic_write_json

MODEL_INFO_KEYS = ("network", "stage", "best_score", "best_epoch", "created", "checkpoint")


def readModelInfo(runDir) -> Dict[str, Any]:
    """``RUN_DIR/model.json`` of a finished run; ``ValueError`` naming the file and the problem otherwise."""
    path = Path(runDir) / "model.json"
    if not path.is_file():
        raise ValueError(f"{runDir} is not a finished PASeg run (no model.json)")
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


@dataclass
class ModelEntry:
    """One registered run."""

    runDir: str
    network: str
    stage: int
    bestScore: Optional[float]
    bestEpoch: Optional[int]
    created: str
    config: str
    registered: str

    @property
    def label(self) -> str:
        score = "n/a" if self.bestScore is None else f"{self.bestScore:.3f}"
        stage = "SCM" if int(self.stage) == 2 else "stage 1"
        created = self.created[:16].replace("T", " ")
        return f"{self.network} · {stage} · score {score} · {created} · {Path(self.runDir).name}"


class ModelRegistry:
    """The model list stored in ``path`` (created on first registration)."""

    def __init__(self, path) -> None:
        self.path = Path(path)

    def models(self) -> List[ModelEntry]:
        """Registered models, newest first; entries whose run folder disappeared are left out."""
        if not self.path.is_file():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = [ModelEntry(**item) for item in data.get("models", [])]
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"model list {self.path} cannot be read ({exc}); delete it to start a new one") from None
        return sorted((e for e in entries if Path(e.runDir).is_dir()), key=lambda e: e.created, reverse=True)

    def register(self, runDir) -> ModelEntry:
        """Add (or refresh) the finished run ``runDir``; ``ValueError`` when it is not a finished run."""
        runDir = Path(runDir).resolve()
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
        )
        others = [e for e in self.models() if Path(e.runDir) != runDir]
        self._write(others + [entry])
        return entry

    def remove(self, runDir) -> None:
        self._write([e for e in self.models() if Path(e.runDir) != Path(runDir).resolve()])

    def find(self, runDir) -> Optional[ModelEntry]:
        target = Path(runDir).resolve()
        return next((e for e in self.models() if Path(e.runDir) == target), None)

    def _write(self, entries: List[ModelEntry]) -> None:
        atomic_write_json(self.path, {"models": [asdict(e) for e in entries]})
