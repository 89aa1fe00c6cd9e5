"""The model card of a model package (``card.json``, :mod:`PASegLib.interop.package`): what a model is, what it was
trained from and how accurate it is where that was measured, without case identifiers or patient data.

Fields (besides the package's ``format``, ``format_version`` and ``members`` manifest):

* ``description`` — the exporter's free text; ``created`` — ISO 8601 date (UTC) of the export;
* ``paseg_version``, ``torch_version`` — of the export; ``trained_with_paseg`` — the PASeg that wrote the checkpoint;
* ``networks`` — the network names (one; two for an ensemble, primary first), ``stage`` (1: stage one, 2: SCM),
  ``ensemble`` (the networks' softmaxes are averaged), ``checkpoint`` (``best``, ``last`` or ``file``: which of the
  run's checkpoints), ``epoch`` (epochs trained when the weights were saved; ``null`` when unknown), ``epochs``
  (the run's budget);
* ``supervision`` (``partial``: from annotations; ``full``: dense labels), ``click_conditioned`` (the network also
  takes each object's clicks: prediction uses the clicks beside each image);
* ``target_spacing_mm`` — ``[s_i, s_j, s_k]`` the images are resampled to (``null``: each image's own grid);
  ``patch_size`` — ``[I, J, K]`` voxels of the training grid (also the sliding window);
* ``training_cases``, ``validation_cases`` — numbers of cases (``null`` when the run folder does not say);
* ``annotation_kinds`` — objects per annotation kind among the training cases (``{"seven_points": 14}``; ``null``
  unless the export was given the dataset);
* ``validation`` — the validation round of the packaged weights: ``epoch``, ``selection`` (the checkpoint rule),
  ``label_free_score`` (agreement with the clicks), ``dice``, ``precision``, ``recall`` (against the held-out
  cases' dense labels; ``null`` when they had none), ``cases``; ``null`` without a validation round at that epoch;
* ``benchmark`` — for a ``paseg run`` folder's model: ``model`` (its name in the report), ``dice`` (mean over the
  evaluated cases), ``cases``, ``held_out`` (``true``: test cases the model did not train on; ``false``: the cases
  it trained on, an optimistic figure); ``null`` otherwise.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

__all__ = ["MAX_DESCRIPTION", "build_card", "check_card", "check_no_case_ids", "run_case_ids"]

#: Longest ``--description`` (characters).
MAX_DESCRIPTION = 4000


def _read_json(path: Path) -> Any:
    """The JSON of ``path``, or ``None`` when it is absent or unreadable (the card then says "unknown")."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def run_case_ids(run: Path) -> Set[str]:
    """Every case identifier the run folder (and a ``paseg run`` folder around it) names: ``split.json``,
    ``model.json``, ``history.json``, the pipeline's ``pipeline.json`` split and ``metrics.json``."""
    ids: Set[str] = set()
    split = _read_json(run / "split.json")
    if isinstance(split, dict):
        for key in ("train", "validation"):
            ids.update(_strings(split.get(key)))
    model = _read_json(run / "model.json")
    if isinstance(model, dict):
        for key in ("train_cases", "validation_cases"):
            ids.update(_strings(model.get(key)))
    history = _read_json(run / "history.json")
    events = history.get("events") if isinstance(history, dict) else None
    for event in events if isinstance(events, list) else ():
        if isinstance(event, dict) and isinstance(event.get("case"), str):
            ids.add(event["case"])
    pipeline = _read_json(run.parent / "pipeline.json")
    if isinstance(pipeline, dict) and isinstance(pipeline.get("split"), dict):
        ids.update(_strings(pipeline["split"]))
    metrics = _read_json(run.parent / "metrics.json")
    for group in ("stages", "seeds") if isinstance(metrics, dict) else ():
        for cases in (metrics.get(group) or {}).values() if group == "stages" else [metrics.get(group) or {}]:
            if isinstance(cases, dict):
                ids.update(str(c) for c in cases)
    return {i for i in ids if i}


def check_no_case_ids(case_ids: Set[str], **members: Any) -> None:
    """Refuse when a case identifier appears (as a whole word) in a string of ``members`` (name → JSON-like value;
    network weights are skipped: their keys are the layers' names). Give the values that come from the user or the
    run (description, configuration, checkpoint metadata), not generated ones (versions, dates), where a short
    numeric identifier would match by chance.

    Raises:
        ValueError: naming the identifier and the member.
    """
    if not case_ids:
        return
    pattern = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(re.escape(c) for c in sorted(case_ids, key=len, reverse=True))
                         + r")(?![A-Za-z0-9])")

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if key != "state_dict":
                    yield from strings(item)
        else:
            yield from _strings(value)

    for member, value in members.items():
        for text in strings(value):
            found = pattern.search(text)
            if found:
                raise ValueError(f"the package would hold the case identifier {found.group(1)!r} (in the {member}); "
                                 f"a model package carries no case identifiers: remove it")


def _history_events(run: Path, trainer: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The progress events of the checkpoint's own history, else of ``run/history.json``."""
    history = trainer.get("history")
    if isinstance(history, str):
        try:
            history = json.loads(history)
        except ValueError:
            history = None
    if not isinstance(history, list):
        data = _read_json(run / "history.json")
        history = data.get("events") if isinstance(data, dict) else None
    return [e for e in history if isinstance(e, dict)] if isinstance(history, list) else []


def _number(value: Any) -> Optional[float]:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _validation(run: Path, data: Mapping[str, Any], config: Any, n_val: Optional[int]) -> Optional[Dict[str, Any]]:
    trainer = data.get("trainer") if isinstance(data.get("trainer"), Mapping) else {}
    epoch = trainer.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        return None
    rounds = [e for e in _history_events(run, trainer) if e.get("event") == "validation" and e.get("epoch") == epoch]
    if not rounds:
        return None
    event = rounds[-1]
    return {"epoch": epoch, "selection": config.selection, "label_free_score": _number(event.get("score")),
            "dice": _number(event.get("dice")), "precision": _number(event.get("precision")),
            "recall": _number(event.get("recall")), "cases": n_val}


def _benchmark(run: Path, network: str, ensemble: bool) -> Optional[Dict[str, Any]]:
    """The ``paseg run`` report's mean Dice of this run's model (the folder's ``metrics.json``)."""
    pipeline, metrics = _read_json(run.parent / "pipeline.json"), _read_json(run.parent / "metrics.json")
    if not isinstance(pipeline, dict) or not isinstance(metrics, dict) or not isinstance(metrics.get("stages"), dict):
        return None
    if run.name == "scm":
        model = "SCM-E" if ensemble else "SCM"
    else:
        rounds = sorted((int(m.group(1)), p) for p in run.parent.glob(f"stage1_{network}_r*")
                        if (m := re.fullmatch(rf"stage1_{re.escape(network)}_r(\d+)", p.name)))
        evaluated = rounds[-1][1] if rounds else run.parent / f"stage1_{network}"
        if ensemble or run.resolve() != evaluated.resolve():
            return None
        model = f"stage 1 ({network})"
    cases = metrics["stages"].get(model)
    dice = [_number(m.get("dice")) for m in cases.values() if isinstance(m, dict)] if isinstance(cases, dict) else []
    dice = [d for d in dice if d is not None]
    if not dice:
        return None
    split = pipeline.get("split") if isinstance(pipeline.get("split"), dict) else {}
    return {"model": model, "dice": sum(dice) / len(dice), "cases": len(dice), "held_out": bool(split.get("test"))}


def _split(run: Path) -> Tuple[Optional[List[str]], Optional[List[str]]]:
    split = _read_json(run / "split.json")
    if isinstance(split, dict) and isinstance(split.get("train"), list):
        return list(_strings(split["train"])), list(_strings(split.get("validation") or []))
    model = _read_json(run / "model.json")
    if isinstance(model, dict) and isinstance(model.get("train_cases"), list):
        return list(_strings(model["train_cases"])), list(_strings(model.get("validation_cases") or []))
    return None, None


def _annotation_kinds(run: Path, dataset: Optional[Path], train_ids: Optional[Sequence[str]]) -> Optional[Dict]:
    if dataset is None:
        return None
    from PASegLib.data.dataset import list_cases
    from PASegLib.pipeline.inputs import cohort_kinds

    clicks = run.parent / "clicks"  # a paseg run folder: its simulated clicks, as the pipeline read them
    pipeline = (run.parent / "pipeline.json").is_file() and clicks.is_dir()
    files = list_cases(dataset, annotations_dir=clicks if pipeline else None)
    by_id = {f.case_id: f for f in files}
    ids = list(train_ids) if train_ids is not None else [f.case_id for f in files if f.has_annotation]
    missing = [c for c in ids if c not in by_id]
    if missing:
        raise ValueError(f"--dataset {dataset}: {len(missing)} training case(s) of run {run} are not in it (e.g. "
                         f"{missing[0]!r}); give the dataset folder the run was trained on")
    kinds = cohort_kinds([by_id[c] for c in ids if by_id[c].has_annotation])
    return {kind: kinds.count(kind) for kind in sorted(set(kinds))}


def build_card(run: Path, data: Mapping[str, Any], config: Any, *, networks: Sequence[str], ensemble: bool,
               checkpoint: str, description: str = "", dataset: Optional[Path] = None) -> Dict[str, Any]:
    """The card of a package of run ``run`` (without the format fields and the manifest).

    Args:
        data: the loaded checkpoint (:func:`~PASegLib.training.checkpoint.load_checkpoint`).
        config: the :class:`~PASegLib.training.config.TrainConfig` the package predicts with.
        networks: the packaged network names (primary first); ``ensemble``: both predict together.
        checkpoint: ``"best"``, ``"last"`` or ``"file"``.
        dataset: the dataset folder of the run, to count the training cases' annotation kinds.

    Raises:
        ValueError: a description that is not text or too long; a ``dataset`` that lacks the run's training cases.
    """
    import torch

    from PASegLib.utils.version import __version__

    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise ValueError(f"--description must be text of at most {MAX_DESCRIPTION} characters")
    if any(ord(c) < 32 and c not in "\n\t" for c in description):
        raise ValueError("--description holds control characters; use plain text (new lines and tabs are fine)")
    train_ids, val_ids = _split(run)
    trainer = data.get("trainer") if isinstance(data.get("trainer"), Mapping) else {}
    epoch = trainer.get("epoch") if isinstance(trainer.get("epoch"), int) else None
    return {
        "description": description,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "paseg_version": __version__,
        "torch_version": str(torch.__version__),
        "trained_with_paseg": data.get("paseg_version") if isinstance(data.get("paseg_version"), str) else None,
        "networks": list(networks),
        "stage": int(config.stage),
        "ensemble": bool(ensemble),
        "checkpoint": checkpoint,
        "epoch": epoch,
        "epochs": int(config.epochs),
        "supervision": config.supervision,
        "click_conditioned": bool(config.point_channel),
        "target_spacing_mm": None if config.target_spacing_mm is None else [float(s) for s in config.target_spacing_mm],
        "patch_size": [int(p) for p in config.patch_size],
        "training_cases": None if train_ids is None else len(train_ids),
        "validation_cases": None if val_ids is None else len(val_ids),
        "annotation_kinds": _annotation_kinds(run, None if dataset is None else Path(dataset), train_ids),
        "validation": _validation(run, data, config, None if val_ids is None else len(val_ids)),
        "benchmark": _benchmark(run, networks[0], ensemble) if checkpoint == "best" else None,
    }


def _fail(field: str, rule: str, value: Any) -> ValueError:
    return ValueError(f"'{field}' must be {rule}, found {json.dumps(value)[:100]}")


def _optional_dice(field: str, block: Any) -> None:
    if block is None:
        return
    if not isinstance(block, dict):
        raise _fail(field, "an object or null", block)
    dice = block.get("dice")
    if dice is not None and (_number(dice) is None or not 0.0 <= dice <= 1.0):
        raise _fail(f"{field}.dice", "a number from 0 to 1 or null", dice)
    score = block.get("label_free_score")
    if score is not None and _number(score) is None:  # the Slicer model list shows it as a number
        raise _fail(f"{field}.label_free_score", "a number or null", score)


def check_card(card: Mapping[str, Any]) -> None:
    """Check the fields a reader shows (types and ranges); ``ValueError`` naming the field otherwise."""
    from PASegLib.training.config import NETWORK_NAMES

    for field in ("description", "created", "paseg_version", "torch_version"):
        if not isinstance(card.get(field), str):
            raise _fail(field, "text", card.get(field))
    if len(card["description"]) > MAX_DESCRIPTION:
        raise _fail("description", f"at most {MAX_DESCRIPTION} characters", card["description"][:50])
    networks = card.get("networks")
    if not isinstance(networks, list) or not 1 <= len(networks) <= 2 or any(n not in NETWORK_NAMES for n in networks):
        raise _fail("networks", f"a list of one or two of {', '.join(NETWORK_NAMES)}", networks)
    if card.get("stage") not in (1, 2) or isinstance(card.get("stage"), bool):
        raise _fail("stage", "1 or 2", card.get("stage"))
    if not isinstance(card.get("ensemble"), bool) or (card["ensemble"] != (len(networks) == 2)):
        raise _fail("ensemble", "true with two networks, false with one", card.get("ensemble"))
    patch = card.get("patch_size")
    if not isinstance(patch, list) or len(patch) != 3 or not all(isinstance(p, int) and p >= 1 for p in patch):
        raise _fail("patch_size", "three integers >= 1", patch)
    spacing = card.get("target_spacing_mm")
    if spacing is not None and (not isinstance(spacing, list) or len(spacing) != 3
                                or not all(_number(s) is not None and s > 0 for s in spacing)):
        raise _fail("target_spacing_mm", "three positive numbers or null", spacing)
    for field in ("training_cases", "validation_cases", "epoch"):
        value = card.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise _fail(field, "an integer >= 0 or null", value)
    kinds = card.get("annotation_kinds")
    if kinds is not None and (not isinstance(kinds, dict) or not all(
            isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) for k, n in kinds.items())):
        raise _fail("annotation_kinds", "an object of kind → number of objects, or null", kinds)
    for field in ("validation", "benchmark"):
        _optional_dice(field, card.get(field))


def describe_card(card: Mapping[str, Any]) -> List[str]:
    """The card as ``key: value`` lines for a terminal (``paseg show-model``)."""
    spacing = card.get("target_spacing_mm")
    kinds = card.get("annotation_kinds")
    lines = [
        f"description: {card.get('description') or '(none)'}",
        f"networks: {' + '.join(card['networks'])}" + (" (ensemble: softmaxes averaged)" if card["ensemble"] else ""),
        f"stage: {'2 (SCM)' if card['stage'] == 2 else '1'}; checkpoint: {card.get('checkpoint')}"
        + (f" (epoch {card['epoch']} of {card.get('epochs')})" if card.get("epoch") is not None else ""),
        f"supervision: {card.get('supervision')}" + ("; click-conditioned (uses the clicks beside each image)"
                                                      if card.get("click_conditioned") else ""),
        "target spacing: " + ("each image's own grid" if spacing is None else " × ".join(f"{s:g}" for s in spacing)
                              + " mm"),
        "patch [I, J, K]: " + " × ".join(str(p) for p in card["patch_size"]) + " voxels",
        f"training cases: {_or_unknown(card.get('training_cases'))}; validation cases: "
        f"{_or_unknown(card.get('validation_cases'))}",
        "annotation kinds: " + ("unknown (export with --dataset to record them)" if kinds is None else
                                ", ".join(f"{k} ({n} objects)" for k, n in kinds.items()) or "none"),
    ]
    validation, benchmark = card.get("validation"), card.get("benchmark")
    if validation:
        dice = validation.get("dice")
        lines.append(f"validation (epoch {validation.get('epoch')}, {_or_unknown(validation.get('cases'))} held-out "
                     f"case(s)): label-free score {_fmt(validation.get('label_free_score'))}, Dice "
                     + (_fmt(dice) if dice is not None else "unknown (the held-out cases have no dense labels)"))
    else:
        lines.append("validation: none recorded for these weights")
    if benchmark:
        lines.append(f"benchmark ({benchmark.get('model')}, paseg run report): mean Dice {_fmt(benchmark.get('dice'))} "
                     f"over {benchmark.get('cases')} case(s), "
                     + ("held-out test cases" if benchmark.get("held_out") else "the cases it trained on (optimistic)"))
    lines.append(f"created: {card['created']} with PASeg {card['paseg_version']}, torch {card['torch_version']}"
                 + (f" (trained with PASeg {card['trained_with_paseg']})" if card.get("trained_with_paseg") else ""))
    # a received card's text reaches a terminal: control characters (escape sequences) are shown, not obeyed
    return ["".join(c if c.isprintable() else repr(c)[1:-1] for c in line) for line in lines]


def _or_unknown(value: Any) -> str:
    return "unknown" if value is None else str(value)


def _fmt(value: Any) -> str:
    number = _number(value)
    return "unknown" if number is None else f"{number:.3f}"
