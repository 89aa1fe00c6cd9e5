"""``paseg devices``: which devices torch sees (the Slicer module asks this of a child process)."""

from __future__ import annotations

import argparse
from typing import Any, Dict

from PASegLib.cli.common import print_json
from PASegLib.jobs.events import emit


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "devices",
        help="list the GPUs torch sees",
        description="Print one progress line PASEG {\"event\": \"devices\", \"torch\": VERSION or null, "
        "\"cuda_version\", \"arch_list\": the GPU architectures torch was built for, \"cuda\": [{\"index\", "
        "\"name\", \"memory_gb\", \"capability\", \"supported\": whether torch has kernels for it}, ...], "
        "\"mps\": BOOL} (with \"error\" when torch cannot be loaded) and one line per device. Exits 0 also "
        "without torch.",
    )
    p.add_argument("--json", action="store_true", help="print the inventory as the last stdout line")
    p.set_defaults(func=run)


def inventory() -> Dict[str, Any]:
    """:func:`PASegLib.training.runtime.device_inventory`, or ``torch: None`` and the error when torch fails."""
    try:
        from PASegLib.training.runtime import device_inventory

        return device_inventory()
    except Exception as exc:  # noqa: BLE001 -- a missing or broken torch is the answer, not a failure
        return {"torch": None, "cuda_version": None, "arch_list": [], "cuda": [], "mps": False,
                "error": f"{type(exc).__name__}: {exc}"}


def run(args: argparse.Namespace) -> int:
    info = inventory()
    emit("devices", **info)
    if info["torch"] is None:
        print(f"torch cannot be loaded ({info['error']})")
    for gpu in info["cuda"]:
        usable = "" if gpu.get("supported", True) else (
            f": not supported by this torch (built for {', '.join(info.get('arch_list') or [])}); paseg runs on "
            f"the CPU unless another GPU is usable")
        print(f"cuda:{gpu['index']}  {gpu['name']}  {gpu['memory_gb']} GB  compute capability "
              f"{gpu.get('capability')}{usable}")
    if info["torch"] is not None and not info["cuda"]:
        print(f"no CUDA GPU (torch {info['torch']}){'; Apple MPS available' if info['mps'] else ''}")
    if args.json:
        print_json(info)
    return 0
