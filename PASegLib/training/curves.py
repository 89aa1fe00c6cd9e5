"""Loss-curve PNG of a run from its progress events (matplotlib, Agg backend, imported lazily)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Sequence

from PASegLib.utils.atomic import PathLike, atomic_path

__all__ = ["epoch_means", "write_loss_curves"]


def epoch_means(events: Sequence[Dict[str, Any]]) -> Dict[str, Dict[int, float]]:
    """Per-epoch mean of every loss term of the ``iteration`` events: ``{term: {epoch: mean}}``."""
    sums: Dict[str, Dict[int, List[float]]] = defaultdict(lambda: defaultdict(list))
    for event in events:
        if event.get("event") != "iteration":
            continue
        for name, value in (event.get("losses") or {}).items():
            if value is not None:
                sums[name][int(event["epoch"])].append(float(value))
    return {name: {e: sum(v) / len(v) for e, v in sorted(per.items())} for name, per in sums.items()}


def write_loss_curves(path: PathLike, events: Sequence[Dict[str, Any]], *, title: str = "training") -> Path:
    """Write per-epoch mean losses (left axis) and validation scores (right axis) to ``path`` (PNG)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend switch (safe inside Slicer)

    means = epoch_means(events)
    validation = [(int(e["epoch"]), e.get("score"), e.get("dice")) for e in events if e.get("event") == "validation"]
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    for name, per in means.items():
        ax.plot(list(per), list(per.values()), label=name, linewidth=1.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (epoch mean)")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if validation:
        ax2 = ax.twinx()
        epochs = [v[0] for v in validation]
        ax2.plot(epochs, [v[1] for v in validation], "k--o", markersize=3, label="label-free score")
        if any(v[2] is not None for v in validation):
            ax2.plot(epochs, [v[2] for v in validation], "g:s", markersize=3, label="Dice (info)")
        ax2.set_ylabel("validation")
        ax2.set_ylim(0, 1)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
