"""Inference: geometry round trip, label rules, ensembles, run folders and the ``paseg predict`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import box_object, ellipsoid

from PASegLib.annotation.markups import write_markups
from PASegLib.annotation.model import CaseAnnotation
from PASegLib.cli.main import main
from PASegLib.image.io import Volume, read_image, write_image
from PASegLib.image.resample import resampled_geometry
from PASegLib.inference.predictor import Predictor, labels_from_probability, load_predictor
from PASegLib.jobs.events import parse_progress_line
from PASegLib.networks import build_network
from PASegLib.training.checkpoint import CheckpointError, save_checkpoint
from PASegLib.training.config import TrainConfig

PATCH = (32, 32, 16)  # 8 windows on the 40×36×20 fixture images (cheap ThresholdNet tests)
RUN_PATCH = (40, 36, 20)  # one window: real networks stay fast


class ThresholdNet(torch.nn.Module):
    """Logits ``[0, scale·(x − offset)]``: foreground probability ``sigmoid(scale·(x − offset))`` per voxel."""

    def __init__(self, scale: float = 4.0, offset: float = 3.0) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.0, scale]).view(2, 1, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, -scale * offset]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def config(patch_size=PATCH, **changes) -> TrainConfig:
    return TrainConfig(patch_size=patch_size, **changes)



def dice(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def make_run(root, *, network="unet2d5", stage=1, aux=None, kwargs=None, best=False, config_network=None, seed=0):
    """A run folder as ``paseg train`` writes it, with random weights."""
    torch.manual_seed(seed)
    extra = {"stage": 2, "aux_network": aux} if stage == 2 else {}
    cfg = config(RUN_PATCH, network=network, **extra)
    root.mkdir(parents=True)
    config(RUN_PATCH, network=config_network or network, **extra).save(root / "config.json")
    entries = {}
    for role, name in [("primary", network)] + ([("auxiliary", aux)] if aux else []):
        net = build_network(name, in_channels=1, out_channels=2, **(kwargs or {}))
        entries[role] = {"name": name, "state_dict": net.state_dict(), **({"kwargs": kwargs} if kwargs else {})}
    state = {"kind": "scm" if stage == 2 else "stage1", "networks": entries, "config": cfg.to_dict()}
    save_checkpoint(root / "checkpoints" / "last.pt", state)
    if best:
        save_checkpoint(root / "checkpoints" / "best.pt", state)
    return root


@pytest.fixture
def dataset(tmp_path, oblique_geometry):
    """Case ``a`` with clicks around its blob (markups), case ``b`` without clicks; oblique, anisotropic."""
    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    for n, case in enumerate("ab"):
        label = ellipsoid(oblique_geometry.shape, (18 + 2 * n, 17, 10), (6, 5, 3))
        write_image(root / f"{case}_image.nii.gz", (40 + 90 * label + rng.normal(0, 5, label.shape)).astype(np.float32),
                    oblique_geometry)
    annotation = CaseAnnotation([box_object("tumor 1", oblique_geometry, (10, 10, 5), (26, 24, 15))])
    write_markups(root / "a.mrk.json", annotation)
    return root


def run_cli(capsys, *argv):
    code = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# -- predictor ------------------------------------------------------------------------------------------------
def test_resampled_prediction_keeps_the_input_geometry(blob_case):
    volume, label = blob_case
    predictor = Predictor([ThresholdNet()], config(target_spacing_mm=(1.3, 1.3, 1.3)))
    grid_prob, grid = predictor.probability_on_training_grid(volume)
    assert grid.shape == resampled_geometry(volume.geometry, (1.3, 1.3, 1.3)).shape != volume.geometry.shape
    assert grid_prob.shape == grid.shape
    pred = predictor.predict(volume)
    assert pred.geometry == volume.geometry
    assert pred.probability.shape == pred.labels.shape == volume.geometry.shape
    assert pred.probability.dtype == np.float32 and pred.labels.dtype == np.uint8
    assert 0.0 <= pred.probability.min() and pred.probability.max() <= 1.0
    assert set(np.unique(pred.labels)) == {0, 1}
    assert dice(pred.labels, label) > 0.85  # a transposed or shifted round trip would miss the blob
    with pytest.raises(ValueError, match="threshold"):
        predictor.predict(volume, threshold=1.0)
    with pytest.raises(ValueError, match="restrict_to_box needs an annotation"):
        predictor.predict(volume, restrict_to_box=True)


def test_restrict_to_box_and_object_indices(oblique_geometry):
    g = oblique_geometry
    prob = np.zeros(g.shape, np.float32)
    prob[12:16, 10:14, 6:9] = 0.9  # inside box 1 only
    prob[24:27, 20:23, 8:10] = 0.8  # inside boxes 1 and 2: the first object wins
    prob[30:33, 26:29, 12:14] = 0.7  # inside box 2 only
    prob[36:39, 30:33, 16:18] = 0.6  # outside both, nearest to box 2
    prob[2:4, 2:4, 1:3] = 0.4  # below the threshold
    annotation = CaseAnnotation([box_object("a", g, (8, 8, 4), (26, 24, 12)),
                                 box_object("b", g, (22, 18, 6), (34, 30, 15))])
    free = labels_from_probability(prob, g, annotation=annotation)
    restricted = labels_from_probability(prob, g, annotation=annotation, restrict_to_box=True)
    assert free[13, 11, 7] == 1 and free[25, 21, 9] == 1 and free[31, 27, 13] == 2 and free[37, 31, 17] == 2
    assert free[3, 3, 2] == 0 and set(np.unique(free)) == {0, 1, 2}
    assert restricted[37, 31, 17] == 0 and np.array_equal(restricted[:35, :31, :16], free[:35, :31, :16])
    assert np.count_nonzero(restricted) == np.count_nonzero(free) - 18
    binary = labels_from_probability(prob, g, threshold=0.3)
    assert np.count_nonzero(binary) == np.count_nonzero(prob > 0.3) and binary.max() == 1
    with pytest.raises(ValueError, match="shape"):
        labels_from_probability(prob[:-1], g)


def test_largest_component_per_object_and_overall(oblique_geometry):
    g = oblique_geometry
    image = np.zeros(g.shape, np.float32)
    image[10:18, 10:18, 4:10] = 10.0  # object 1, large
    image[21:23, 10:12, 4:6] = 10.0  # object 1, small (separate)
    image[30:33, 28:31, 12:15] = 10.0  # object 2
    predictor = Predictor([ThresholdNet(scale=8.0, offset=1.0)], config())
    volume = Volume(image, g)
    annotation = CaseAnnotation([box_object("a", g, (8, 8, 2), (24, 20, 12)),
                                 box_object("b", g, (27, 25, 10), (35, 33, 17))])
    plain = predictor.predict(volume, annotation=annotation).labels
    assert np.count_nonzero(plain == 1) == 8 * 8 * 6 + 8 and np.count_nonzero(plain == 2) == 27
    kept = predictor.predict(volume, annotation=annotation, largest_component=True).labels
    assert np.count_nonzero(kept == 1) == 8 * 8 * 6 and np.count_nonzero(kept == 2) == 27
    overall = predictor.predict(volume, largest_component=True).labels
    assert np.count_nonzero(overall) == 8 * 8 * 6 and overall[11, 11, 5] == 1


def test_ensemble_averages_softmaxes(blob_case):
    volume, _ = blob_case
    both = Predictor([ThresholdNet(2.0, 0.0), ThresholdNet(-2.0, 0.0)], config()).predict(volume)
    np.testing.assert_allclose(both.probability, 0.5, atol=1e-5)  # sigmoid(z) + sigmoid(-z) = 1


def test_ensemble_of_an_scm_run_is_the_mean(tmp_path, blob_case):
    volume, _ = blob_case
    tiny = {"filters": [4, 8, 16]}
    run = make_run(tmp_path / "scm", network="unet3d", stage=2, aux="attention_unet", kwargs=tiny, best=True)
    ens = load_predictor(run, ensemble=True, device="cpu")
    assert ens.roles == ("primary", "auxiliary") and ens.network_names == ("unet3d", "attention_unet")
    p_ens = ens.predict(volume).probability
    p_one = [Predictor([net], ens.config).predict(volume).probability for net in ens.networks]
    assert np.abs(p_one[0] - p_one[1]).max() > 1e-3  # two different networks
    np.testing.assert_allclose(p_ens, (p_one[0] + p_one[1]) / 2, atol=1e-5)
    assert len(load_predictor(run, device="cpu").networks) == 1
    stage1 = make_run(tmp_path / "run-s1", network="unet3d", kwargs=tiny)
    with pytest.raises(ValueError, match="run-s1.*stage-2"):
        load_predictor(stage1, ensemble=True, device="cpu")


def test_run_folder_checkpoint_choice(tmp_path, blob_case, capsys):
    volume, _ = blob_case
    run = make_run(tmp_path / "run", network="unet2d5")
    predictor = load_predictor(run, device="cpu")  # no best.pt: falls back to last.pt with a note
    assert predictor.source.name == "last.pt" and "using checkpoints/last.pt" in capsys.readouterr().err
    pred = predictor.predict(volume)
    assert pred.probability.shape == volume.geometry.shape and 0 <= pred.probability.min() <= 1
    assert pred.probability.max() <= 1 and np.ptp(pred.probability) > 0
    with pytest.raises(CheckpointError, match="no checkpoints/nope.pt|checkpoint not found"):
        load_predictor(run, checkpoint="nope", device="cpu")
    with pytest.raises(ValueError, match="run folder not found"):
        load_predictor(tmp_path / "missing", device="cpu")


# -- command line ---------------------------------------------------------------------------------------------
def test_cli_predicts_a_folder(tmp_path, dataset, oblique_geometry, capsys):
    run = make_run(tmp_path / "run", best=True)
    out = tmp_path / "pred"
    code, stdout, err = run_cli(capsys, run, dataset, "--out", out, "--json", "--quiet", "--device", "cpu")
    assert code == 0, err
    events = [e for e in map(parse_progress_line, stdout.splitlines()) if e]
    cases = [e for e in events if e["event"] == "case"]
    assert events[0] == {"event": "start", "total": 2}
    assert [(e["index"], e["total"], e["case"]) for e in cases] == [(1, 2, "a"), (2, 2, "b")]
    assert all((out / f"{c}_pred.nii.gz").is_file() and (out / f"{c}_prob.nii.gz").is_file() for c in "ab")
    assert [e["pred"] for e in cases] == [str(out / "a_pred.nii.gz"), str(out / "b_pred.nii.gz")]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["n"] == 2 and [r["objects"] for r in summary["cases"]] == [1, 0]
    assert summary["checkpoint"].endswith("best.pt") and summary["roles"] == ["primary"]
    pred, prob = read_image(out / "a_pred.nii.gz"), read_image(out / "a_prob.nii.gz")
    assert pred.geometry.mismatch(oblique_geometry) == "" and prob.geometry.mismatch(oblique_geometry) == ""
    assert pred.array.dtype == np.uint8 and prob.array.dtype == np.float32
    assert sorted(p.name for p in out.iterdir()) == ["a_pred.nii.gz", "a_prob.nii.gz", "b_pred.nii.gz", "b_prob.nii.gz"]
    # --restrict-to-box needs clicks for every case: case b has none -> nothing is written
    code, _, err = run_cli(capsys, run, dataset, "--out", tmp_path / "boxed", "--restrict-to-box", "--quiet")
    assert code == 1 and "b" in err and "restrict-to-box" in err and not (tmp_path / "boxed").exists()


def test_cli_precision_chooses_the_cpu_arithmetic(tmp_path, dataset, capsys):
    run = make_run(tmp_path / "run", best=True)
    probs = {}
    for precision in ("float32", "bfloat16", "auto"):
        out = tmp_path / precision
        code, stdout, err = run_cli(capsys, run, dataset / "a_image.nii.gz", "--out", out, "--precision", precision,
                                    "--json", "--quiet", "--device", "cpu")
        assert code == 0, err
        summary = json.loads(stdout.strip().splitlines()[-1])
        assert summary["cpu_bf16"] is {"float32": False, "bfloat16": True,
                                       "auto": load_predictor(run, device="cpu").cpu_bf16}[precision]
        probs[precision] = read_image(out / "a_prob.nii.gz").array
    exact = load_predictor(run, device="cpu", cpu_bf16=False).predict(read_image(dataset / "a_image.nii.gz"))
    np.testing.assert_array_equal(probs["float32"], exact.probability)  # float32: the float32 result, bit for bit
    gap = np.abs(probs["bfloat16"] - probs["float32"])
    assert 0 < gap.max() < 0.15 and gap.mean() < 0.01  # bfloat16 in effect, and close (random weights)
    with pytest.raises(SystemExit) as usage:
        run_cli(capsys, run, dataset, "--out", tmp_path / "bad", "--precision", "float16", "--quiet")
    assert usage.value.code == 2 and "float16" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_cli_single_file_with_clicks(tmp_path, dataset, capsys):
    run = make_run(tmp_path / "run", best=True)
    out = tmp_path / "one"
    code, stdout, err = run_cli(capsys, run, dataset / "a_image.nii.gz", "--out", out, "--restrict-to-box",
                                "--largest-component", "--checkpoint", "last", "--quiet", "--device", "cpu")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a_pred.nii.gz", "a_prob.nii.gz"]
    labels = read_image(out / "a_pred.nii.gz").array
    assert labels[:10].max() == 0 and labels[27:].max() == 0  # outside the clicked box (i in 10..26)


def test_cli_errors_leave_no_output(tmp_path, dataset, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, tmp_path / "no-run", dataset, "--out", out, "--quiet")
    assert code == 1 and "no-run" in err and not out.exists()
    assert parse_progress_line(stdout.splitlines()[-1])["event"] == "error"

    corrupt = make_run(tmp_path / "corrupt")
    damaged = corrupt / "checkpoints" / "last.pt"
    damaged.write_bytes(damaged.read_bytes()[:5000])  # truncated
    code, _, err = run_cli(capsys, corrupt, dataset, "--out", out, "--quiet", "--device", "cpu")
    assert code == 1 and "last.pt" in err and "not a readable PASeg checkpoint" in err and not out.exists()

    foreign = make_run(tmp_path / "foreign", network="unet3d", config_network="unet2d5")
    code, _, err = run_cli(capsys, foreign, dataset, "--out", out, "--quiet", "--device", "cpu")
    assert code == 1 and "made for network 'unet3d'" in err and not out.exists()

    good = make_run(tmp_path / "good")
    (dataset / "b_image.nii.gz").write_bytes(b"garbage")
    code, _, err = run_cli(capsys, good, dataset, "--out", out, "--quiet", "--device", "cpu")
    assert code == 1 and "b_image.nii.gz" in err and not out.exists()  # case a was predicted, then rolled back
    code, _, err = run_cli(capsys, good, dataset / "missing_image.nii.gz", "--out", out, "--quiet")
    assert code == 1 and "input not found" in err and not out.exists()

