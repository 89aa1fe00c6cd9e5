"""``paseg export``: hand a dataset or a trained model to other tools.

* ``paseg export nnunet DATASET --out DIR/DatasetNNN_Name`` — an nnU-Net v2 raw dataset of the pseudo labels
  (:mod:`PASegLib.cli.export_nnunet`);
* ``paseg export model RUN --out MODEL.zip`` — a one-file model package with a model card
  (:mod:`PASegLib.cli.export_model`).
"""

from __future__ import annotations

import argparse

from PASegLib.cli import export_model, export_nnunet


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a dataset for nnU-Net v2 or a trained model as one file",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_subparsers(dest="export_kind", metavar="WHAT")
    what.required = True
    export_nnunet.add_export_parser(what)
    export_model.add_export_parser(what)
