"""The review queue: label-free disagreement signals per case and ``paseg review-queue``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ellipsoid

from PASegLib.cli.main import main
from PASegLib.data.dataset import list_cases
from PASegLib.image.io import Volume, write_image
from PASegLib.inference.predictor import Predictor
from PASegLib.inference.review import case_disagreement, parse_flips, review_queue
from PASegLib.networks import build_network
from PASegLib.training.checkpoint import save_checkpoint
from PASegLib.training.config import TrainConfig

PATCH = (40, 36, 20)  # one window on the 40×36×20 fixture images


class ShiftNet(torch.nn.Module):
    """Logits ``[0, scale·(x[i − shift] − offset)]``: a threshold of the image shifted by ``shift`` voxels along
    i (``shift`` 0: flip-equivariant; otherwise a flip along i moves the prediction by ``2·shift``)."""

    def __init__(self, shift: int = 0, offset: float = 0.5, scale: float = 20.0) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, (7, 1, 1), padding=(3, 0, 0))
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[1, 0, 3 - shift, 0, 0] = scale
            self.conv.bias.copy_(torch.tensor([0.0, -scale * offset]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def predictor(shift: int = 0, offset: float = 0.5) -> Predictor:
    return Predictor([ShiftNet(shift, offset)], TrainConfig(patch_size=PATCH), device="cpu")


def blob(geometry, radii, center=(20, 18, 10)) -> Volume:
    label = ellipsoid(geometry.shape, center, radii)
    return Volume((40 + 100 * label).astype(np.float32), geometry)


def make_run(root, *, stage=1, seed=0):
    """A run folder as ``paseg train`` writes it (tiny 3D U-Nets with random weights)."""
    torch.manual_seed(seed)
    kwargs = {"filters": [4, 8, 16]}
    extra = {"stage": 2, "aux_network": "attention_unet"} if stage == 2 else {}
    cfg = TrainConfig(patch_size=PATCH, network="unet3d", **extra)
    root.mkdir(parents=True)
    cfg.save(root / "config.json")
    roles = [("primary", "unet3d")] + ([("auxiliary", "attention_unet")] if stage == 2 else [])
    entries = {role: {"name": name, "kwargs": kwargs,
                      "state_dict": build_network(name, in_channels=1, out_channels=2, **kwargs).state_dict()}
               for role, name in roles}
    save_checkpoint(root / "checkpoints" / "last.pt",
                    {"kind": "scm" if stage == 2 else "stage1", "networks": entries, "config": cfg.to_dict()})
    return root


def test_flip_and_network_disagreement(oblique_geometry):
    volume = blob(oblique_geometry, (6, 5, 3))
    calm = case_disagreement(predictor(0), volume)
    assert calm["flip_disagreement"] == 0.0 and calm["network_disagreement"] is None
    assert calm["foreground_voxels"] == int(ellipsoid(oblique_geometry.shape, (20, 18, 10), (6, 5, 3)).sum())
    shifted = case_disagreement(predictor(2), volume, flips=parse_flips(["i"]))
    assert 0.3 < shifted["flip_disagreement"] < 1.0  # a 4-voxel shift of a 13-voxel-wide blob
    # flips along j or k leave an i-shift unchanged: the mean over i, j, k is a third of the i flip's
    mean = case_disagreement(predictor(2), volume)["flip_disagreement"]
    assert mean == pytest.approx(shifted["flip_disagreement"] / 3)
    pair = case_disagreement(predictor(0), volume, predictor_b=predictor(2), flips=())
    assert pair["flip_disagreement"] is None and 0.1 < pair["network_disagreement"] < 1.0
    with pytest.raises(ValueError, match="flip 'x'"):
        parse_flips(["x"])
    with pytest.raises(ValueError, match="flip 'ii'"):
        parse_flips(["ii"])


def test_queue_ranks_the_most_unsure_case_first(tmp_path, oblique_geometry):
    """A shifting model disagrees with its flips the more, the smaller the object: small, medium, big."""
    data = tmp_path / "data"
    for case, radii in (("big", (10, 9, 5)), ("medium", (6, 5, 3)), ("small", (3, 3, 2))):
        write_image(data / f"{case}_image.nii.gz", blob(oblique_geometry, radii).array, oblique_geometry)
    cases = list_cases(data)
    masks = {}
    queue = review_queue(cases, tmp_path / "unused", predictors=(predictor(1), None, "A = ShiftNet"), masks=masks)
    assert sorted(masks) == ["big", "medium", "small"] and masks["big"].shape == oblique_geometry.shape
    assert [int(masks[r["case"]].sum()) for r in queue["cases"]] == [r["foreground_voxels"] for r in queue["cases"]]
    assert [r["case"] for r in queue["cases"]] == ["small", "medium", "big"]
    assert [r["rank"] for r in queue["cases"]] == [1, 2, 3] and queue["signal"] == "flip"
    scores = [r["score"] for r in queue["cases"]]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    assert all(r["score"] == r["flip_disagreement"] for r in queue["cases"])
    both = review_queue(cases, "m", predictors=(predictor(0), predictor(1), "A, B"))
    assert both["signal"] == "both" and both["flips"] == ["i", "j", "k"]
    assert all(r["score"] == pytest.approx(r["network_disagreement"] / 2) for r in both["cases"])  # flips agree
    with pytest.raises(ValueError, match="'networks' needs two networks"):
        review_queue(cases, "m", signal="networks", predictors=(predictor(0), None, "A"))
    with pytest.raises(ValueError, match="no case to rank"):
        review_queue([], "m", predictors=(predictor(0), None, "A"))


def test_cli_writes_the_queue(tmp_path, oblique_geometry, capsys):
    data = tmp_path / "data"
    for n, case in enumerate("ab"):
        write_image(data / f"{case}_image.nii.gz", blob(oblique_geometry, (5 + n, 5, 3)).array, oblique_geometry)
    stage1, scm = make_run(tmp_path / "s1"), make_run(tmp_path / "scm", stage=2)
    out = tmp_path / "q" / "review_queue.json"
    assert main(["review-queue", "--model", str(stage1), "--data", str(data), "--out", str(out), "--flips", "ijk",
                 "--device", "cpu"]) == 0
    queue = json.loads(out.read_text(encoding="utf-8"))
    assert queue["signal"] == "flip" and queue["flips"] == ["ijk"] and {r["case"] for r in queue["cases"]} == {"a", "b"}
    assert [r["rank"] for r in queue["cases"]] == [1, 2] and queue["data"] == str(data)
    assert "most unsure" in capsys.readouterr().out
    assert main(["review-queue", "--model", str(scm), "--data", str(data), "--out", str(out), "--cases", "b",
                 "--flips", "i", "--device", "cpu"]) == 0
    queue = json.loads(out.read_text(encoding="utf-8"))
    assert queue["signal"] == "both" and [r["case"] for r in queue["cases"]] == ["b"]
    assert "auxiliary attention_unet" in queue["networks"] and queue["cases"][0]["network_disagreement"] is not None
    capsys.readouterr()
    assert main(["review-queue", "--model", str(stage1), "--data", str(data), "--out", str(out),
                 "--signal", "networks", "--device", "cpu"]) == 1
    assert "needs two networks" in capsys.readouterr().err
    assert main(["review-queue", "--model", str(stage1), "--data", str(data), "--out", str(out), "--cases", "zz",
                 "--device", "cpu"]) == 1
    assert "--cases: no image" in capsys.readouterr().err
    assert main(["review-queue", "--model", str(tmp_path / "nope"), "--data", str(data), "--out", str(out)]) == 1
    assert "run folder not found" in capsys.readouterr().err
