"""End-to-end pipeline (``paseg run``): clicks → seeds → stage one ×2 → SCM → prediction → evaluation → report.

Output folder ``DIR``::

    pipeline.json            options, case split, finished steps and their durations (the resume state)
    clicks/<case>.mrk.json   simulated clicks (only for cases that have a label but no clicks)
    cache/                   prepared training data shared by every run
    stage1_<network>/        the two stage-1 runs (see PASegLib.training.engine)
    refined_<r>/, stage1_<network>_r<r>/   refinement rounds (``--refine-rounds``): the refined labels and the
                             primary stage-1 run trained on them
    teacher/, soft_labels/, student_<network>/, cache_student/   ``--mixed teacher_student`` (paper 003,
                             PASegLib.pipeline.teacher_student): the teacher (dense cases, box channel), the weak
                             cases' <case>_soft.nii.gz, the primary student (the auxiliary stage-1 run is a student
                             too) and the students' prepared data
    scm/                     the SCM run
    predictions/<model>/     <case>_pred.nii.gz, <case>_prob.nii.gz for every evaluated case
    metrics.json             per-case metrics of every model and the expanded-seed quality
    figures/                 per-case three-plane figures
    report.html, report.json the report (PASegLib.evaluation.report)
    STOP                     create it to stop the pipeline within seconds, in any step
    .paseg-lock              held while a pipeline runs here (PASegLib.jobs.lock)

Rerunning the same command continues after the last finished step; an interrupted training step resumes
from its last checkpoint (one that ended before its first checkpoint, e.g. during data preparation, starts
again; the prepared cases stay in ``cache/``).

Stopping: ``DIR/STOP`` (like ``paseg predict``'s ``OUT/STOP``: the folder the command writes into; one present
at start is stale and removed) is honoured in every step: between the click simulations, in every phase of the
training steps (which also honour their own ``DIR/<run>/STOP``), before every case and sliding window of the
prediction step, and in the evaluation and report steps. The pipeline then prints a ``stopped`` event and
exits with :data:`~PASegLib.jobs.stopping.EXIT_STOPPED`; the same command continues.

One pipeline per folder: ``DIR`` is locked while the pipeline runs (a second one is refused naming the
process). A failed start leaves nothing: when a new pipeline fails before any of its training runs saved a
checkpoint (bad input found after the dataset was listed, bad settings), everything it created is removed, so
the corrected command starts afresh. A damaged ``pipeline.json`` is refused naming the file and what is wrong.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from PASegLib.data.dataset import CaseFiles, DatasetError, list_cases
from PASegLib.jobs.events import emit
from PASegLib.jobs.lock import FolderLock
from PASegLib.jobs.stopping import EXIT_OK, EXIT_STOPPED, STOP_FILE, StopFile, StopRequested
from PASegLib.pipeline.inputs import cohort_kinds, median_spacing, simulate_missing_clicks
from PASegLib.utils.atomic import PathLike, atomic_write_json, remove_stale_temp_files

__all__ = ["PipelineOptions", "run_pipeline"]

STEPS = ("clicks", "stage1_primary", "stage1_auxiliary", "scm", "predict", "evaluate", "report")
#: options added after pipelines were first saved, with the value an older pipeline.json implies
_NEW_OPTIONS = {"kind": "seven_points", "dense_cases": 0, "refine_rounds": 0, "mixed": "joint", "second_stage": "scm"}
#: the second stages (``PipelineOptions.second_stage``): Going to Extremes' refinement round (the default, chosen on
#: tuning cases drawn from la_heart's training cases, ``docs/results/accuracy_v3_cpu.json``) or the paper's SCM
SECOND_STAGES = ("refine", "scm")
#: the steps of ``mixed="teacher_student"`` in place of ``stage1_primary`` (the student is the primary stage-one run)
TEACHER_STUDENT_STEPS = ("teacher", "soft_labels", "student")


def pipeline_steps(refine_rounds: int, mixed: str = "joint", second_stage: str = "scm") -> Tuple[str, ...]:
    """The steps of a pipeline: :data:`STEPS` with ``refine_<r>`` and ``stage1_primary_r<r>`` after the primary
    stage-one run for each of ``refine_rounds`` refinement rounds; with ``mixed="teacher_student"``
    :data:`TEACHER_STUDENT_STEPS` in place of ``stage1_primary``; with ``second_stage="refine"`` the rounds
    (at least one) are the second stage: no auxiliary run, no SCM."""
    if mixed == "teacher_student":
        return STEPS[:1] + TEACHER_STUDENT_STEPS + STEPS[2:]
    if second_stage == "refine":
        refine_rounds = max(1, int(refine_rounds))
    rounds = tuple(step for r in range(1, int(refine_rounds) + 1)
                   for step in (f"refine_{r}", f"stage1_primary_r{r}"))
    if second_stage == "refine":
        return STEPS[:2] + rounds + STEPS[4:]
    return STEPS[:2] + rounds + STEPS[2:]


@dataclass
class PipelineOptions:
    """Options of :func:`run_pipeline` (saved in ``pipeline.json``; a rerun must use the same ones).

    Attributes:
        preset: ``"cpu"`` or ``"paper"`` (:mod:`PASegLib.pipeline.presets`).
        seed: seed of the click simulation, the split and every training run.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        test_fraction: share of the labeled cases held out from training and evaluated (0 = train on every
            annotated case and evaluate every labeled case, as a user with one cohort would).
        overrides, stage1_overrides, scm_overrides: :class:`~PASegLib.training.config.TrainConfig` fields over
            the preset (all runs / stage-1 runs / the SCM run).
        largest_component: keep the largest connected component of each prediction.
        max_figures: number of per-case figures in the report.
        kind: the annotation kind simulated for labelled cases without an annotation
            (:mod:`PASegLib.annotation.kinds`); the training settings follow the cohort's kind
            (:func:`~PASegLib.pipeline.presets.protocol_settings`).
        dense_cases: of the labelled cases without an annotation, the first N (sorted by id) are annotated as
            dense (their label): a mixed cohort.
        refine_rounds: Going to Extremes' refinement rounds (extreme points, boxes): after the primary stage-one
            run, its predictions of the training cases regularised by the random walker
            (:mod:`PASegLib.pipeline.refine`) become the labels of the next primary run; the auxiliary run and
            SCM train on the last round's labels (SCM's seed anchor, validation and selection use them).
        mixed: how a cohort with dense cases trains: ``"joint"`` (one stage-one run, each case supervised by what it
            has) or ``"teacher_student"`` (paper 003, :mod:`PASegLib.pipeline.teacher_student`: a teacher trained on
            the dense cases with the boxes as an input channel, its soft labels of the weak cases, students trained
            on both; needs dense and boxed training cases, and no refinement rounds).
        second_stage: ``"refine"`` (the default for a joint cohort: Going to Extremes' refinement rounds —
            ``max(1, refine_rounds)`` — are the second stage, the last round's primary network the final model; no
            auxiliary network, no SCM), ``"scm"`` (the paper's two networks and Self and Cross Monitoring after the
            rounds, if any; SCM and SCM-E are the final models) or ``None``: a new pipeline ``"refine"`` (``"scm"``
            with ``mixed="teacher_student"``), a resumed one what it was started with (``"scm"`` if it predates
            the option). ``"refine"`` was chosen on 12 tuning cases drawn from la_heart's training
            cases (stage one 0.786 → 0.795, SCM 0.789; ``docs/results/accuracy_v3_cpu.json``).
    """

    preset: str = "cpu"
    seed: int = 0
    device: str = "auto"
    test_fraction: float = 0.0
    overrides: Dict[str, Any] = field(default_factory=dict)
    stage1_overrides: Dict[str, Any] = field(default_factory=dict)
    scm_overrides: Dict[str, Any] = field(default_factory=dict)
    largest_component: bool = False
    max_figures: int = 12
    kind: str = "seven_points"
    dense_cases: int = 0
    refine_rounds: int = 0
    mixed: str = "joint"
    second_stage: Optional[str] = None

    def __post_init__(self) -> None:
        from PASegLib.annotation.kinds import get_kind

        get_kind(self.kind)
        if not 0 <= int(self.dense_cases):
            raise ValueError(f"dense_cases must be >= 0, got {self.dense_cases!r}")
        if not 0 <= int(self.refine_rounds) <= 5:
            raise ValueError(f"refine_rounds must be between 0 and 5, got {self.refine_rounds!r}")
        from PASegLib.pipeline.teacher_student import MIXED_MODES

        if self.mixed not in MIXED_MODES:
            raise ValueError(f"mixed must be one of {', '.join(MIXED_MODES)}, got {self.mixed!r}")
        if self.second_stage is not None and self.second_stage not in SECOND_STAGES:
            raise ValueError(f"second_stage must be one of {', '.join(SECOND_STAGES)}, got {self.second_stage!r}")
        if self.mixed == "teacher_student" and self.second_stage == "refine":
            raise ValueError("mixed 'teacher_student' is followed by SCM (its students are the two networks); set "
                             "second_stage 'scm'")
        if self.mixed == "teacher_student" and int(self.refine_rounds):
            raise ValueError("mixed 'teacher_student' has no refinement rounds (its student learns from the "
                             "teacher's soft labels); set refine_rounds 0")
        if not 0.0 <= float(self.test_fraction) < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction!r}")
        if self.max_figures < 0:
            raise ValueError(f"max_figures must be >= 0, got {self.max_figures!r}")


def default_second_stage(mixed: str) -> str:
    """The second stage of ``PipelineOptions.second_stage=None``: ``"scm"`` after a teacher and its students,
    else ``"refine"``."""
    return "scm" if mixed == "teacher_student" else "refine"


class _State:
    def __init__(self, out: Path, options: PipelineOptions) -> None:
        self.path = out / "pipeline.json"
        wanted = json.loads(json.dumps(asdict(options)))
        if self.path.is_file():
            self.data = self._read()
            saved = self.data.get("options")
            if isinstance(saved, dict):
                saved = {**_NEW_OPTIONS, **saved}
                if wanted.get("second_stage") is None:  # not asked for: the pipeline's own (SCM if it predates it)
                    wanted["second_stage"] = saved.get("second_stage")
            if saved != wanted:
                diff = sorted(k for k in set(saved or {}) | set(wanted) if (saved or {}).get(k) != wanted.get(k))
                raise ValueError(f"{out} holds a pipeline started with other options ({', '.join(diff)}); "
                                 f"rerun it with the same options or choose another --out")
        else:
            from PASegLib.seeds.expansion import ExpansionConfig

            # the seven-point labels' default when the pipeline started (a pipeline.json without it predates the
            # fill: its later steps keep the plain seeds its first steps trained on)
            if wanted.get("second_stage") is None:
                wanted["second_stage"] = default_second_stage(options.mixed)
            self.data = {"options": wanted, "done": [], "durations_s": {}, "label_fill": ExpansionConfig().fill}
        #: the second stage this pipeline runs (``PipelineOptions.second_stage`` resolved, or as it was saved)
        self.second_stage: str = self.data["options"].get("second_stage") or "scm"
        self.steps = pipeline_steps(options.refine_rounds, options.mixed, self.second_stage)

    @property
    def label_fill(self) -> str:
        """``ExpansionConfig.fill`` of the steps whose settings do not name one: the default when the pipeline
        started; ``"none"`` for a pipeline saved before the fill existed."""
        fill = self.data.get("label_fill", "none")
        return fill if isinstance(fill, str) else "none"

    def _damaged(self, what: str) -> ValueError:
        return ValueError(f"{self.path}: damaged pipeline state ({what}); delete it (finished training runs "
                          f"in {self.path.parent} are reused) or choose another --out")

    def _read(self) -> Dict[str, Any]:
        """The saved state, checked: a damaged file is refused naming it and what is wrong."""
        damaged = self._damaged

        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise damaged("not UTF-8 text") from None
        except RecursionError:
            raise damaged("JSON nested too deeply") from None
        except ValueError as exc:
            raise damaged(f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise damaged(f"a JSON object is expected, found {type(data).__name__}")
        for key, kind in (("options", dict), ("done", list), ("durations_s", dict)):
            if not isinstance(data.get(key), kind):
                raise damaged(f"'{key}' is missing or not a JSON {'object' if kind is dict else 'list'}")
        rounds = data["options"].get("refine_rounds", 0)
        known = pipeline_steps(rounds if isinstance(rounds, int) and 0 <= rounds <= 5 else 0,
                               data["options"].get("mixed", "joint"), data["options"].get("second_stage", "scm"))
        unknown = [step for step in data["done"] if step not in known]  # steps of the pipeline it was saved for
        if unknown:
            raise damaged(f"unknown finished step(s) {unknown[:3]!r}")
        if data["done"]:
            split = data.get("split")
            if not isinstance(split, dict) or not all(
                    isinstance(split.get(k), list) and all(isinstance(c, str) for c in split[k])
                    for k in ("train", "test", "predict")):
                raise damaged("'split' must hold the lists 'train', 'test' and 'predict' of case ids")
        return data

    def done(self, step: str) -> bool:
        return step in self.data["done"]

    def finish(self, step: str, seconds: float, **extra: Any) -> None:
        self.data["done"].append(step)
        self.data["durations_s"][step] = round(seconds, 2)
        self.data.update(extra)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


def _train(run: Path, dataset: Path, config, *, case_ids, annotations, cache, stop: StopFile, init_runs=None,
           stream=None) -> int:
    """One training step: finished → 0; a checkpoint → resumed; else started (again: the trainer replaces what
    an attempt that ended before its first checkpoint left)."""
    from PASegLib.training.launch import train_from_dataset

    if (run / "model.json").is_file():
        return 0
    resume = (run / "checkpoints" / "last.pt").is_file() and (run / "config.json").is_file()
    return train_from_dataset(dataset, run, None if resume else config, annotations_dir=annotations,
                              case_ids=case_ids, resume=resume, cache_dir=cache, init_runs=init_runs, stream=stream,
                              stop_also=[stop.path], resume_hint="run the same `paseg run` command to continue")


def _trained(out: Path) -> bool:
    """Whether a training run of the pipeline folder saved a checkpoint (then a failure keeps the folder)."""
    return any(out.glob("*/checkpoints/last.pt"))


def _remove_created(out: Path, created: bool, before: set) -> None:
    """Remove what a failed start created: ``out`` itself when it was new, else its new entries."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for path in set(out.iterdir()) - before:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def run_pipeline(dataset: PathLike, out_dir: PathLike, options: Optional[PipelineOptions] = None, *,
                 stream: Any = None) -> int:
    """Run (or continue) the pipeline on ``dataset`` into ``out_dir``; returns 0 or the stop exit code.

    Raises:
        ValueError: bad dataset (no case with clicks or a label to simulate them from), options differing
            from those of an existing ``out_dir``, a damaged ``pipeline.json``, ``out_dir`` in use by another
            process, or any error of the steps (naming the input). A new pipeline that fails before a training
            checkpoint leaves nothing behind.
    """
    options = options or PipelineOptions()
    dataset, out = Path(dataset), Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    files = list_cases(dataset)
    if not any(f.has_annotation or f.label is not None for f in files):
        raise DatasetError(f"{dataset}: no case has clicks or a label to simulate clicks from")
    created = not out.exists()
    lock = FolderLock(out, purpose="paseg run")
    lock.acquire()
    before = set(out.iterdir())
    fresh = not (out / "pipeline.json").is_file()
    try:
        return _run_locked(dataset, out, options, files, stream)
    except Exception:
        lock.release()
        if fresh and not _trained(out):  # a failed start leaves nothing: the corrected command starts afresh
            _remove_created(out, created, before - {lock.path})
        raise
    finally:
        lock.release()


def _run_locked(dataset: Path, out: Path, options: PipelineOptions, files: List[CaseFiles], stream: Any) -> int:
    """:func:`run_pipeline` once ``out`` is locked."""
    from PASegLib.data.prepared import split_cases
    from PASegLib.pipeline.presets import preset_configs

    remove_stale_temp_files(out, owned=True)
    stop = StopFile(out / STOP_FILE)
    stop.clear_stale()  # before the first progress event
    state = _State(out, options)
    clicks_dir = out / "clicks"

    current = "clicks"

    def step(name: str) -> float:
        nonlocal current
        current = name
        stop.check()
        emit("step", stream=stream, step=name, index=state.steps.index(name) + 1, total=len(state.steps))
        return time.monotonic()

    def stopped(name: str) -> int:
        stop.consume()
        emit("stopped", stream=stream, phase=name, step=name,
             message=f"stopped in step {name}; the finished steps are kept: run the same `paseg run` command to "
                     f"continue")
        return EXIT_STOPPED

    try:
        if not state.done("clicks"):
            t = step("clicks")
            clicks_dir.mkdir(exist_ok=True)
            remove_stale_temp_files(clicks_dir, owned=True)
            from PASegLib.annotation.simulation import ClickSimulationConfig

            labeled = sorted(f.case_id for f in files if f.label is not None)
            _, test = split_cases(labeled, validation_fraction=options.test_fraction, seed=options.seed) \
                if options.test_fraction > 0 else (labeled, [])
            # the dense cases of a mixed cohort: the first unannotated training cases (never test cases)
            candidates = sorted(f.case_id for f in files if not f.has_annotation and f.label is not None
                                and f.case_id not in test)
            if options.dense_cases > len(candidates):
                raise DatasetError(f"{dataset}: --dense-cases {options.dense_cases} asks for more dense cases than "
                                   f"the {len(candidates)} labelled training case(s) without clicks")
            n = simulate_missing_clicks(files, clicks_dir, options.seed, stop,
                                         config=ClickSimulationConfig(kind=options.kind),
                                         dense_ids=candidates[:int(options.dense_cases)])
            files = list_cases(dataset, annotations_dir=clicks_dir)
            train = sorted(f.case_id for f in files if f.has_annotation and f.case_id not in test)
            if not train:
                raise DatasetError(f"{dataset}: no annotated case left for training")
            evaluate = test or sorted(f.case_id for f in files)
            state.finish("clicks", time.monotonic() - t, simulated_clicks=n,
                         split={"train": train, "test": test, "predict": evaluate})
        files = list_cases(dataset, annotations_dir=clicks_dir)
        split = state.data["split"]
        by_id = {f.case_id: f for f in files}
        lost = [c for c in split["train"] + split["predict"] if c not in by_id]
        if lost:
            raise DatasetError(f"{dataset}: case(s) of the pipeline's split are missing: {', '.join(lost[:5])}")
        from PASegLib.pipeline.presets import protocol_settings

        protocol = {k: v for k, v in protocol_settings(cohort_kinds([by_id[c] for c in split["train"]])).items()
                    if k not in options.overrides}
        a, b, s = preset_configs(options.preset, median_spacing([by_id[c] for c in split["train"]]),
                                 seed=options.seed, device=options.device, overrides=options.overrides,
                                 stage1_overrides={**protocol, **options.stage1_overrides},
                                 scm_overrides=options.scm_overrides)
        named = any(isinstance(o.get("expansion"), dict) and "fill" in o["expansion"]
                    for o in (options.overrides, options.stage1_overrides, options.scm_overrides))
        if not named:  # every step of one pipeline trains on the same labels, those of the day it started
            a, b, s = (c.replace(expansion={**c.expansion, "fill": state.label_fill}) for c in (a, b, s))
        runs = {"stage1_primary": out / f"stage1_{a.network}", "stage1_auxiliary": out / f"stage1_{b.network}",
                "scm": out / "scm"}
        common = dict(case_ids=split["train"], annotations=clicks_dir, cache=out / "cache", stop=stop, stream=stream)
        plan = [("stage1_primary", runs["stage1_primary"], a)]
        extra: Dict[str, Dict[str, Any]] = {}  # per step: its _train arguments other than common's
        if options.mixed == "teacher_student":  # paper 003 (pipeline/teacher_student.py)
            from PASegLib.pipeline.teacher_student import pipeline_plan

            plan, extra, b = pipeline_plan(out, a, b, [by_id[c] for c in split["train"]], overrides=options.overrides)
        refine_only = state.second_stage == "refine"
        first_primary = runs["stage1_primary"]
        rounds = max(1, int(options.refine_rounds)) if refine_only else int(options.refine_rounds)
        for r in range(1, rounds + 1):  # Going to Extremes' rounds (pipeline/refine.py)
            labels = out / f"refined_{r}"
            plan += [(f"refine_{r}", labels, plan[-1][1]),
                     (f"stage1_primary_r{r}", out / f"stage1_{a.network}_r{r}", a.replace(pseudo_labels=str(labels)))]
            b = b.replace(pseudo_labels=str(labels))
            s = s.replace(pseudo_labels=str(labels))  # SCM's seeds, validation and selection use them too
        runs["stage1_primary"] = plan[-1][1]
        if not refine_only:
            plan += [("stage1_auxiliary", runs["stage1_auxiliary"], b), ("scm", runs["scm"], s)]
        else:  # the refinement round is the second stage: no auxiliary network, no SCM
            runs = {"stage1_primary": first_primary, f"stage1_primary_r{rounds}": runs["stage1_primary"]}
        for name, target, config in plan:
            if state.done(name):
                continue
            t = step(name)
            if name.startswith("refine_"):
                from PASegLib.pipeline.refine import refine_pseudo_labels

                refine_pseudo_labels(config, [by_id[c] for c in split["train"]], target, device=options.device,
                                     random_walker=a.random_walker, stop=stop)
                state.finish(name, time.monotonic() - t)
                continue
            if name == "soft_labels":
                from PASegLib.pipeline.teacher_student import write_soft_labels

                write_soft_labels(config, [by_id[c] for c in extra[name]["case_ids"]], target, device=options.device,
                                  stop=stop)
                state.finish(name, time.monotonic() - t)
                continue
            init = [runs["stage1_primary"], runs["stage1_auxiliary"]] if name == "scm" else None
            code = _train(target, dataset, config, init_runs=init, **{**common, **extra.get(name, {})})
            if code != EXIT_OK:
                return code  # stopped: the trainer said so (and removed the stop files)
            state.finish(name, time.monotonic() - t)

        if refine_only:
            final = f"refined ({a.network})"
            models = {f"stage 1 ({a.network})": (first_primary, False),
                      final: (runs[f"stage1_primary_r{rounds}"], False)}
        else:
            final = "SCM"
            models = {f"stage 1 ({a.network})": (runs["stage1_primary"], False),
                      f"stage 1 ({b.network})": (runs["stage1_auxiliary"], False),
                      "SCM": (runs["scm"], False), "SCM-E": (runs["scm"], True)}
        pred_dirs = {m: out / "predictions" / m.replace(" ", "_").replace("(", "").replace(")", "") for m in models}
        if not state.done("predict"):
            t = step("predict")
            from PASegLib.inference.predictor import load_predictor, predict_files

            cases = [by_id[c] for c in split["predict"]]
            for model, (run, ensemble) in models.items():
                remove_stale_temp_files(pred_dirs[model], owned=True)
                predictor = load_predictor(run, ensemble=ensemble, device=options.device, verbose=False)
                predict_files(predictor, cases, pred_dirs[model], largest_component=options.largest_component,
                              stop=stop)
            state.finish("predict", time.monotonic() - t)
        if not state.done("evaluate"):
            t = step("evaluate")
            from PASegLib.pipeline.evaluate import evaluate_models

            evaluate_models(out, [by_id[c] for c in split["predict"]], pred_dirs, a, out / "cache", stop=stop)
            state.finish("evaluate", time.monotonic() - t)
        if not state.done("report"):
            t = step("report")
            from PASegLib.pipeline.evaluate import build_report

            remove_stale_temp_files(out / "figures", owned=True)

            build_report(out, dataset=dataset, by_id=by_id, split=split, runs=runs, pred_dirs=pred_dirs,
                         options=options, configs=(a, b, s), durations=state.data["durations_s"], stop=stop,
                         final=final)
            state.finish("report", time.monotonic() - t)
    except StopRequested:
        return stopped(current)
    emit("done", stream=stream, report=str(out / "report.html"), run_dir=str(out))
    return 0
