"""``paseg synth``: write a synthetic dataset (the embedded default data of the demo and tests)."""

from __future__ import annotations

import argparse
from pathlib import Path

from PASegLib.cli.common import print_json, staged_output


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate a synthetic dataset of tumour-like blobs",
        description="Generate realistic synthetic cases (irregular tumour-like blobs, heterogeneous intensity, "
        "partial-volume edges, textured background, noise, bias field, anisotropic spacing, oblique direction) "
        "as <case>_image.nii.gz and <case>_label.nii.gz.",
    )
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--cases", type=int, default=6, help="number of cases (default 6)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--shape", type=int, nargs=3, default=None, metavar=("I", "J", "K"), help="volume shape")
    p.add_argument("--json", action="store_true", help="print the written files as the last stdout line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PASegLib.synthetic.generator import SyntheticConfig, write_synthetic_dataset

    if args.cases < 1:
        raise ValueError(f"--cases must be >= 1, got {args.cases}")
    config = SyntheticConfig()
    if args.shape is not None:  # scale the tumour sizes with the field of view
        factor = min(min(n / d for n, d in zip(args.shape, config.shape)), 1.0)
        radius = tuple(r * factor for r in config.radius_mm)
        config = SyntheticConfig(shape=tuple(args.shape), radius_mm=radius)
    with staged_output(args.out) as stage:
        written = write_synthetic_dataset(stage, n_cases=args.cases, config=config, seed=args.seed)
    names = sorted(Path(p).name for p in written)
    print(f"wrote {args.cases} synthetic case(s) to {args.out}")
    if args.json:
        print_json({"out": str(args.out), "files": names})
    return 0
