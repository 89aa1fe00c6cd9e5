"""``paseg export nnunet``: an nnU-Net v2 raw dataset of a PASeg dataset's pseudo labels
(:func:`PASegLib.interop.nnunet.export_nnunet_dataset`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PASegLib.cli.common import print_json

DESCRIPTION = """\
Write an nnU-Net v2 raw dataset (imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, imagesTs/, dataset.json)
whose training labels are PASeg's pseudo labels: 0 background, 1 foreground, 2 unlabelled = nnU-Net's "ignore"
label, so nnU-Net's loss is partial like PASeg's stage one. Cases without annotation go to imagesTs/; a dense case
keeps its dense label. The dataset appears only when every case is written (no partial folder on failure).

--labels seeds (default): the pseudo labels of each annotation kind, as `paseg expand` writes them (seed
expansion of seven points, random walker of extreme points and boxes, balls around single points); with --run,
with the settings the run's stage one trained with. --labels refined: the last refinement round of a
`paseg run --refine-rounds R` folder. --labels predictions: a model's predictions of a `paseg run` folder.

Then train nnU-Net on it (DIR: the folder that holds DatasetNNN_Name; see docs/INTEROP.md):
  export nnUNet_raw=DIR nnUNet_preprocessed=PRE nnUNet_results=RESULTS
  nnUNetv2_plan_and_preprocess -d NNN --verify_dataset_integrity
  nnUNetv2_train NNN 3d_fullres 0"""


def add_export_parser(what: argparse._SubParsersAction) -> None:
    """Register ``paseg export nnunet`` on the ``export`` command's sub-parsers."""
    from PASegLib.interop.nnunet import LABEL_SOURCES
    from PASegLib.seeds.expansion import EXTENTS, FILLS

    p = what.add_parser("nnunet", help="an nnU-Net v2 raw dataset of the pseudo labels (ignore label = unlabelled)",
                        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path, help="dataset folder (<case>_image.*, <case>.mrk.json or <case>_7points.*)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR/DatasetNNN_Name",
                   help="the new nnU-Net dataset folder (e.g. $nnUNet_raw/Dataset501_Tumours); must not exist or be "
                   "empty")  # fmt: skip
    p.add_argument("--labels", choices=LABEL_SOURCES, default="seeds",
                   help="which pseudo labels: seeds (default), refined or predictions (the last two need --run)")
    p.add_argument("--run", type=Path, default=None, metavar="RUN",
                   help="a `paseg run` folder: its clicks, its training cases (every other case goes to imagesTs) "
                   "and, with --labels seeds, its settings")  # fmt: skip
    p.add_argument("--model", default="SCM",
                   help="--labels predictions: the model folder under RUN/predictions (default SCM; also SCM-E, "
                   "stage_1_<network>)")  # fmt: skip
    p.add_argument("--annotations", type=Path, default=None, help="folder with <case>.mrk.json (default: DATASET)")
    p.add_argument("--epsilon", type=float, default=None, help="seeds: expansion threshold ε (as paseg expand)")
    p.add_argument("--extent", choices=EXTENTS, default=None, help="seeds: fixed (ε) or auto (as paseg expand)")
    p.add_argument("--lamb", type=float, default=None, help="seeds: geodesic λ (as paseg expand)")
    p.add_argument("--fill", choices=FILLS, default=None,
                   help="seeds, seven points: random_walker (the default, as training uses) grows the seeds over the "
                   "click box; none = the plain expanded seeds (as paseg expand)")
    p.add_argument("--fill-margin", type=float, default=None, help="seeds, --fill random_walker: the unlabelled "
                   "band (as paseg expand)")
    p.add_argument("--fill-bg-radius-mm", type=float, default=None, help="seeds, --fill random_walker: the "
                   "background balls around the background clicks (mm, as paseg expand)")
    p.add_argument("--random-walker", type=json.loads, default=None, metavar="JSON",
                   help='seeds: random-walker settings of extreme points and boxes, e.g. \'{"beta": 130}\'')
    p.add_argument("--point-radius-mm", type=float, default=None,
                   help="seeds: radius (mm) of the labelled ball around single-point clicks (default 2)")
    p.add_argument("--channel-name", default="MRI",
                   help='dataset.json channel_names["0"] (default MRI; CT selects nnU-Net\'s CT normalisation)')
    p.add_argument("--label-name", default="foreground", help="name of label 1 in dataset.json (default foreground)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PASegLib.interop.nnunet import export_nnunet_dataset, parse_dataset_name

    parse_dataset_name(args.out.name)  # before anything is read
    fields = {k: v for k, v in (("epsilon", args.epsilon), ("extent", args.extent), ("lamb", args.lamb),
                                ("fill", args.fill), ("fill_margin", args.fill_margin),
                                ("fill_bg_radius_mm", args.fill_bg_radius_mm)) if v is not None}
    if args.random_walker is not None and not isinstance(args.random_walker, dict):
        raise ValueError(f"--random-walker must be a JSON object of settings, got {args.random_walker!r}")
    if args.run is not None:
        given = [o for o, v in (("--epsilon", args.epsilon), ("--extent", args.extent), ("--lamb", args.lamb),
                                ("--fill", args.fill), ("--fill-margin", args.fill_margin),
                                ("--fill-bg-radius-mm", args.fill_bg_radius_mm),
                                ("--random-walker", args.random_walker), ("--point-radius-mm", args.point_radius_mm),
                                ("--annotations", args.annotations)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} cannot be combined with --run (the run's clicks and settings are "
                             f"used)")
    if args.labels != "seeds":
        given = [o for o, v in (("--epsilon", args.epsilon), ("--extent", args.extent), ("--lamb", args.lamb),
                                ("--fill", args.fill), ("--fill-margin", args.fill_margin),
                                ("--fill-bg-radius-mm", args.fill_bg_radius_mm),
                                ("--random-walker", args.random_walker), ("--point-radius-mm", args.point_radius_mm))
                 if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to --labels seeds")
    bar = None

    def on_case(index: int, total: int, case_id: str, row: dict) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:  # made at the first case: an early error prints no empty bar
            from tqdm import tqdm

            bar = tqdm(total=total, desc="export nnunet", file=sys.stderr, unit="case", dynamic_ncols=True)
        bar.update(index - bar.n)

    try:
        summary = export_nnunet_dataset(
            args.dataset, args.out, labels=args.labels, run_dir=args.run, model=args.model,
            annotations_dir=args.annotations, expansion=fields if fields else None, random_walker=args.random_walker,
            point_radius_mm=args.point_radius_mm, channel_name=args.channel_name, label_name=args.label_name,
            on_case=on_case)
    finally:
        if bar is not None:
            bar.close()
    n_train, n_test = len(summary["training"]), len(summary["test"])
    ignore = "with" if "ignore" in summary["dataset_json"]["labels"] else "without"
    print(f"wrote nnU-Net dataset {args.out} ({n_train} training case(s), {n_test} in imagesTs, {summary['labels']} "
          f"labels, {ignore} the ignore label); train it with: nnUNetv2_plan_and_preprocess -d "
          f"{summary['dataset_id']} --verify_dataset_integrity && nnUNetv2_train {summary['dataset_id']} 3d_fullres 0")
    if args.json:
        print_json(summary)
    return 0
