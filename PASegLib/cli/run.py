"""``paseg run``: the whole PA-Seg pipeline on a dataset folder, resumable, ending with an HTML report."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List

from PASegLib.annotation.kinds import kind_names
from PASegLib.cli.common import ProgressBarStream
from PASegLib.jobs.stopping import EXIT_OK
from PASegLib.pipeline.run import SECOND_STAGES
from PASegLib.pipeline.teacher_student import MIXED_MODES

EPILOG = """\
Steps: simulate clicks for labeled cases without clicks -> expand seeds -> stage 1 for two networks -> SCM ->
predict -> evaluate (when labels exist) -> DIR/report.html. Rerun the same command to continue after an
interruption. Stopping: create DIR/STOP (DIR = --out); it is honoured within seconds in every step (a training
step also honours its own DIR/<run>/STOP); run the same command to continue. One pipeline per folder: a second
one on the same --out is refused. A pipeline that fails before its first training checkpoint (bad input, bad
settings) leaves nothing in --out. Exit codes: 0 done, 1 error, 2 usage, 3 stopped, 130 interrupted.

Examples:
  paseg run cases/ --out results/                       # CPU preset: minutes on a laptop
  paseg run cases/ --out results/ --preset paper --device cuda
  paseg run la_heart/ --out bench/ --test-fraction 0.25 --set epochs=5
  paseg run la_heart/ --out mixed/ --kind box --dense-cases 6 --mixed teacher_student
"""


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("run", help="run the whole pipeline (clicks -> stage 1 -> SCM -> predict -> report)",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="dataset folder (<case>_image.<ext>, optional _label, .mrk.json, _7points)")
    p.add_argument("--out", required=True, help="output folder (rerun with the same one to resume)")
    p.add_argument("--preset", choices=("cpu", "paper", "auto"), default="cpu",
                   help="settings preset (default cpu); auto: paper when --device resolves to a GPU, else cpu")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of clicks, split and training (default 0)")
    p.add_argument("--test-fraction", type=float, default=0.0,
                   help="share of labeled cases held out from training for evaluation (default 0: none)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training setting of every run (JSON value), e.g. --set epochs=5")
    p.add_argument("--largest-component", action="store_true", help="keep the largest component of predictions")
    p.add_argument("--kind", default="seven_points", choices=kind_names(),
                   help="annotation kind simulated for labelled cases without clicks (default seven_points); the "
                   "training follows the cohort's kind (any kind or a mix is accepted)")
    p.add_argument("--dense-cases", type=int, default=0, metavar="N",
                   help="the first N of those cases get a dense annotation (their label): a mixed cohort")
    p.add_argument("--refine-rounds", type=int, default=0, metavar="R",
                   help="Going to Extremes' refinement rounds after the primary stage-one run (0-5, default 0)")
    p.add_argument("--second-stage", default=None, choices=SECOND_STAGES,
                   help="refine: Going to Extremes' refinement round(s) after stage one (the default, chosen on "
                   "tuning cases); scm: the paper's two networks and Self and Cross Monitoring (the default with "
                   "--mixed teacher_student)")
    p.add_argument("--mixed", default="joint", choices=MIXED_MODES,
                   help="how a cohort with dense cases trains: joint (default: one stage-one run, each case "
                   "supervised by what it has) or teacher_student (a teacher trained on the dense cases with the "
                   "boxes as an input channel writes soft labels of the boxed cases; the stage-one runs are students "
                   "of dense + soft labels)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _overrides(pairs: List[str]) -> Dict[str, Any]:
    """``--set KEY=VALUE`` pairs as a dict; a value is JSON when it parses as JSON, else the text itself."""
    out: Dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair[:80]!r}")
        try:
            out[key] = json.loads(value)
        except RecursionError:
            raise ValueError(f"--set {key[:80]}: the value is nested too deeply") from None
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    from PASegLib.pipeline.run import PipelineOptions, run_pipeline

    preset = args.preset
    if preset == "auto":  # the device decides (stored resolved in pipeline.json, so a rerun on it continues)
        from PASegLib.training.runtime import resolve_device

        preset = "paper" if resolve_device(args.device).type == "cuda" else "cpu"
    options = PipelineOptions(preset=preset, seed=args.seed, device=args.device,
                              test_fraction=args.test_fraction, overrides=_overrides(args.set),
                              largest_component=args.largest_component, kind=args.kind,
                              dense_cases=args.dense_cases, refine_rounds=args.refine_rounds, mixed=args.mixed,
                              second_stage=args.second_stage)
    stream = ProgressBarStream(quiet=args.quiet, desc="pipeline")
    try:
        code = run_pipeline(args.dataset, args.out, options, stream=stream)
    finally:
        stream.close()
    if code == EXIT_OK:
        print(f"report: {args.out}/report.html", file=sys.stderr)
    return code
