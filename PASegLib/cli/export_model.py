"""``paseg export model`` and ``paseg show-model``: one-file model packages with a model card
(:mod:`PASegLib.interop.package`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PASegLib.cli.common import print_json

EXPORT_DESCRIPTION = (
    "Write the model of RUN (a run folder of `paseg train`, or the scm/ or stage1_<network>/ folder of a `paseg run` "
    "folder) as one .zip file: the selected weights (no optimiser or training state), config.json, and a model card "
    "card.json (networks, target spacing, patch, annotation kinds, number of training cases, validation and benchmark "
    "Dice where the run measured them, PASeg and torch versions, date, your description) with the SHA-256 of every "
    "member. No case identifiers, paths or patient data go into the package. Predict with "
    "`paseg predict MODEL.zip INPUT --out DIR`; show the card with `paseg show-model MODEL.zip`. The package is "
    "written to a temporary file, checked by loading it, and renamed: a failure leaves nothing."
)


def add_export_parser(what: argparse._SubParsersAction) -> None:
    """Register ``paseg export model`` on the ``export`` command's sub-parsers."""
    p = what.add_parser("model", help="a trained model as one .zip file with a model card",
                        description=EXPORT_DESCRIPTION)
    p.add_argument("run_dir", type=Path, metavar="RUN", help="run folder (config.json, checkpoints/)")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL.zip", help="the package to write (.zip)")
    p.add_argument("--checkpoint", default="best",
                   help="'best' (default; falls back to 'last' when no validation ran), 'last', or a checkpoint file")
    p.add_argument("--ensemble", action="store_true",
                   help="package both networks of an SCM (stage-2) run; predictions average them (SCM-E)")
    p.add_argument("--description", default="", metavar="TEXT",
                   help="free text for the model card: what the model segments, on which images (no case identifiers "
                   "or patient data)")
    p.add_argument("--dataset", type=Path, default=None,
                   help="the dataset folder RUN was trained on: the card then counts the annotation kinds of its "
                   "training cases (unknown without it)")
    p.add_argument("--json", action="store_true", help="print the card as JSON on the last stdout line")
    p.set_defaults(func=run_export)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``paseg show-model``."""
    p = sub.add_parser("show-model", help="check a model package and print its model card",
                       description="Check the model package MODEL.zip (written by `paseg export model`) — format "
                       "version, members, SHA-256 of every member, member names, sizes — and print its model card. "
                       "Exit code 1 with a message naming the member when the package is damaged, tampered with or "
                       "unsafe.")
    p.add_argument("package", type=Path, metavar="MODEL.zip", help="the model package")
    p.add_argument("--json", action="store_true", help="print the card as JSON (one line) instead of text")
    p.set_defaults(func=run_show)


def run_export(args: argparse.Namespace) -> int:
    from PASegLib.interop.package import export_model_package

    card = export_model_package(args.run_dir, args.out, checkpoint=args.checkpoint, ensemble=args.ensemble,
                                description=args.description, dataset=args.dataset)
    networks = " + ".join(card["networks"])
    print(f"wrote {args.out} ({networks}, {card['checkpoint']} checkpoint); predict with: "
          f"paseg predict {args.out} INPUT --out DIR", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print_json({"package": str(args.out), "card": card})
    return 0


def run_show(args: argparse.Namespace) -> int:
    from PASegLib.interop.model_card import describe_card
    from PASegLib.interop.package import describe_members, read_model_package

    card = read_model_package(args.package)
    if args.json:
        print_json(card)
        return 0
    print(f"PASeg model package {args.package} (format {card['format_version']}; every member matches its SHA-256)")
    for line in describe_card(card) + ["members:"] + [f"  {m}" for m in describe_members(card)]:
        print(f"  {line}")
    return 0
