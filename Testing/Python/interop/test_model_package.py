"""Model packages: ``paseg export model`` → ``paseg show-model`` → ``paseg predict MODEL.zip`` (the same result as the
run folder, bit for bit in float32), the ensemble package, no case identifiers in any member, and the refusals of
bad packages (format version, missing, tampered, unexpected and traversal members, symbolic links, zip bombs, not a
zip), each with a clear message and no output."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ellipsoid

from PASegLib.annotation.markups import write_markups
from PASegLib.annotation.simulation import simulate_clicks
from PASegLib.cli.main import main
from PASegLib.image.io import read_image, write_image
from PASegLib.interop.package import (
    CARD,
    CONFIG,
    WEIGHTS,
    ModelPackageError,
    export_model_package,
    extract_model_package,
    read_model_package,
)
from PASegLib.networks import build_network
from PASegLib.training.checkpoint import save_checkpoint
from PASegLib.training.config import TrainConfig

TINY = {"filters": [4, 8, 16]}
PATCH = (40, 36, 20)  # one window over the 40×36×20 fixture image
TRAIN, VALIDATION = ["patient_0007", "patient_0011", "patient_0019"], ["patient_0023"]


def trained_run(root: Path, *, network="unet3d", aux=None, seed=0) -> Path:
    """A finished run folder as ``paseg train`` leaves it (random weights), whose files name its cases everywhere a
    real run does: ``split.json``, ``model.json``, ``history.json``, the checkpoints' training history, and a
    pseudo-label folder path in the configuration."""
    torch.manual_seed(seed)
    stage = 2 if aux else 1
    config = TrainConfig(patch_size=PATCH, network=network, stage=stage, epochs=4,
                         pseudo_labels=f"/home/someone/refined/{TRAIN[0]}_labels",
                         **({"aux_network": aux} if aux else {}))  # fmt: skip
    root.mkdir(parents=True)
    config.save(root / "config.json")
    (root / "split.json").write_text(json.dumps({"train": TRAIN, "validation": VALIDATION}))
    history = [{"event": "iteration", "epoch": 1, "iteration": 1, "losses": {"loss": 0.7}},
               {"event": "validation_case", "epoch": 4, "index": 1, "total": 1, "case": VALIDATION[0]},
               {"event": "validation", "epoch": 2, "score": 0.5, "dice": 0.61, "precision": 0.6, "recall": 0.62},
               {"event": "validation", "epoch": 4, "score": 0.7, "dice": 0.83, "precision": 0.8, "recall": 0.86}]
    (root / "history.json").write_text(json.dumps({"events": history}))
    roles = [("primary", network)] + ([("auxiliary", aux)] if aux else [])
    networks = {}
    for role, name in roles:
        net = build_network(name, in_channels=1, out_channels=2, **TINY)
        networks[role] = {"name": name, "state_dict": net.state_dict(), "kwargs": TINY}
    state = {"kind": "scm" if aux else "stage1", "networks": networks, "config": config.to_dict(),
             "optimizers": {role: {"state": {}, "param_groups": []} for role, _ in roles}, "scalers": {},
             "trainer": {"epoch": 4, "position": 0, "global_step": 12, "order": [0, 1, 2], "best_score": None,
                         "best_epoch": 4, "history": json.dumps(history), "train_cases": TRAIN},
             "rng": {"python": None, "numpy": None, "torch": torch.get_rng_state()}}
    for name in ("best", "last"):
        save_checkpoint(root / "checkpoints" / f"{name}.pt", state)
    (root / "model.json").write_text(json.dumps({
        "network": network, "networks": dict(roles), "stage": stage, "kind": state["kind"], "best_score": None,
        "best_epoch": 4, "epochs": 4, "created": "2026-01-02T03:04:05+00:00", "paseg_version": "0.1.0",
        "checkpoint": "checkpoints/best.pt", "config": "config.json", "train_cases": TRAIN,
        "validation_cases": VALIDATION}))
    return root


@pytest.fixture
def image(tmp_path, oblique_geometry):
    """A 40×36×20 image with a bright blob, written as ``scan.nii.gz``; returns its path."""
    label = ellipsoid(oblique_geometry.shape, (20, 17, 10), (7, 6, 3))
    array = (50 + 90 * label + np.random.default_rng(2).normal(0, 5, label.shape)).astype(np.float32)
    return write_image(tmp_path / "scan.nii.gz", array, oblique_geometry)


@pytest.fixture
def dataset(tmp_path, oblique_geometry):
    """The training cases of :func:`trained_run`, each an image and seven clicks of its blob."""
    root = tmp_path / "dataset"
    for n, case in enumerate(TRAIN + VALIDATION):
        label = ellipsoid(oblique_geometry.shape, (18 + n, 17, 10), (6, 5, 3))
        write_image(root / f"{case}_image.nii.gz", (40 + 90 * label).astype(np.float32), oblique_geometry)
        write_markups(root / f"{case}.mrk.json", simulate_clicks(label.astype(np.uint8), oblique_geometry, seed=n))
    return root


def paseg(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def predicted(folder: Path, case="scan"):
    """(labels, probabilities) arrays that ``paseg predict`` wrote for ``case``."""
    return (np.asarray(read_image(folder / f"{case}_pred.nii.gz").array),
            np.asarray(read_image(folder / f"{case}_prob.nii.gz").array))


def test_export_show_and_predict_from_the_package_as_from_the_run(tmp_path, image, dataset, capsys):
    run, package = trained_run(tmp_path / "run"), tmp_path / "shared" / "blob model.zip"
    code, out, err = paseg(capsys, "export", "model", run, "--out", package, "--dataset", dataset,
                           "--description", "Liver lesions on portal-venous CT, 5 mm")
    assert code == 0, err
    assert package.is_file() and [p.name for p in package.parent.iterdir()] == ["blob model.zip"]  # no leftovers
    with zipfile.ZipFile(package) as archive:
        assert sorted(archive.namelist()) == sorted([CARD, CONFIG, WEIGHTS])  # never model.json
    card = read_model_package(package)
    assert card["networks"] == ["unet3d"] and card["stage"] == 1 and card["ensemble"] is False
    assert card["patch_size"] == list(PATCH) and card["target_spacing_mm"] is None and card["checkpoint"] == "best"
    assert card["training_cases"] == 3 and card["validation_cases"] == 1
    assert card["annotation_kinds"] == {"seven_points": 3}
    assert card["validation"] == {"epoch": 4, "selection": "last", "label_free_score": 0.7, "dice": 0.83,
                                  "precision": 0.8, "recall": 0.86, "cases": 1}  # the round of the packaged epoch
    assert card["benchmark"] is None and card["torch_version"] == torch.__version__
    assert card["description"] == "Liver lesions on portal-venous CT, 5 mm" and card["created"]
    assert set(card["members"]) == {CONFIG, WEIGHTS}

    code, out, err = paseg(capsys, "show-model", package)
    assert code == 0, err
    for text in ("networks: unet3d", "Liver lesions", "Dice 0.830", "seven_points (3 objects)", "40 × 36 × 20",
                 f"torch {torch.__version__}", "sha256 " + card["members"][WEIGHTS]["sha256"]):
        assert text in out
    code, out, _ = paseg(capsys, "show-model", package, "--json")
    assert code == 0 and json.loads(out.splitlines()[-1]) == card

    for source, folder in ((run, "from_run"), (package, "from_package")):
        code, out, err = paseg(capsys, "predict", source, image, "--out", tmp_path / folder, "--device", "cpu",
                               "--precision", "float32", "--quiet", "--json")
        assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["checkpoint"] == str(package) and summary["networks"] == ["unet3d"]
    labels_run, prob_run = predicted(tmp_path / "from_run")
    labels_zip, prob_zip = predicted(tmp_path / "from_package")
    assert np.array_equal(prob_run, prob_zip) and np.array_equal(labels_run, labels_zip)  # bit for bit
    assert np.ptp(prob_run) > 0  # a real prediction, not a constant


@pytest.mark.slow
def test_the_ensemble_package_predicts_both_networks_as_the_run(tmp_path, image, capsys):
    scm = trained_run(tmp_path / "scm", network="unet3d", aux="attention_unet")
    package = tmp_path / "scm.zip"
    assert paseg(capsys, "export", "model", scm, "--out", package, "--ensemble")[0] == 0
    card = read_model_package(package)
    assert card["networks"] == ["unet3d", "attention_unet"] and card["ensemble"] and card["stage"] == 2
    assert paseg(capsys, "predict", scm, image, "--out", tmp_path / "run_e", "--ensemble", "--device", "cpu",
                 "--precision", "float32", "--quiet")[0] == 0
    assert paseg(capsys, "predict", package, image, "--out", tmp_path / "zip_e", "--device", "cpu",
                 "--precision", "float32", "--quiet")[0] == 0  # an ensemble package is used as one
    assert paseg(capsys, "predict", scm, image, "--out", tmp_path / "run_1", "--device", "cpu",
                 "--precision", "float32", "--quiet")[0] == 0
    run_e, zip_e, run_1 = (predicted(tmp_path / f)[1] for f in ("run_e", "zip_e", "run_1"))
    assert np.array_equal(run_e, zip_e) and not np.array_equal(run_e, run_1)

    single = tmp_path / "primary.zip"  # the SCM run's primary network alone
    assert paseg(capsys, "export", "model", scm, "--out", single)[0] == 0
    assert read_model_package(single)["networks"] == ["unet3d"]
    code, _, err = paseg(capsys, "predict", single, image, "--out", tmp_path / "no", "--ensemble")
    assert code == 1 and "needs an ensemble package" in err and not (tmp_path / "no").exists()
    code, _, err = paseg(capsys, "predict", package, image, "--out", tmp_path / "no", "--checkpoint", "last")
    assert code == 1 and "holds one checkpoint" in err and not (tmp_path / "no").exists()
    stage1 = trained_run(tmp_path / "stage1", network="unet2d5")
    code, _, err = paseg(capsys, "export", "model", stage1, "--out", tmp_path / "bad.zip", "--ensemble")
    assert code == 1 and "stage-2" in err and not (tmp_path / "bad.zip").exists()


def test_no_case_identifier_reaches_any_member(tmp_path, dataset, capsys):
    run = trained_run(tmp_path / "run")
    package = tmp_path / "m.zip"
    assert paseg(capsys, "export", "model", run, "--out", package, "--dataset", dataset)[0] == 0
    members = {}
    with zipfile.ZipFile(package) as archive:
        for name in archive.namelist():
            members[name] = archive.read(name)
    with zipfile.ZipFile(io.BytesIO(members[WEIGHTS])) as weights:  # the checkpoint is itself a zip of records
        members.update({f"{WEIGHTS}/{n}": weights.read(n) for n in weights.namelist()})
    assert any(n.endswith("data.pkl") for n in members)
    for case in TRAIN + VALIDATION:
        leaks = [name for name, data in members.items() if case.encode() in data]
        assert leaks == [], f"{case} appears in {leaks}"
    assert b"/home/someone" not in b"".join(members.values())  # nor the exporter's paths
    pickled = next(data for name, data in members.items() if name.endswith("data.pkl"))
    assert b"optimizers" not in pickled and b"trainer" not in pickled  # the training state stays behind

    code, _, err = paseg(capsys, "export", "model", run, "--out", tmp_path / "named.zip", "--description",
                         f"trained on {TRAIN[1]} and others")
    assert code == 1 and f"case identifier '{TRAIN[1]}'" in err and "description" in err
    assert not (tmp_path / "named.zip").exists()


def test_a_paseg_run_folder_gives_the_benchmark_dice_of_the_packaged_model(tmp_path, capsys):
    pipeline = tmp_path / "pipeline"
    scm = trained_run(pipeline / "scm", network="unet3d", aux="attention_unet")
    stage1 = trained_run(pipeline / "stage1_unet3d", network="unet3d")
    test = ["patient_0031", "patient_0037"]
    (pipeline / "pipeline.json").write_text(json.dumps({"options": {}, "done": [], "durations_s": {},
                                                        "split": {"train": TRAIN, "test": test, "predict": test}}))
    scores = {"SCM": [0.7, 0.8], "SCM-E": [0.8, 0.9], "stage 1 (unet3d)": [0.5, 0.6]}
    (pipeline / "metrics.json").write_text(json.dumps({"stages": {
        model: {case: {"dice": d} for case, d in zip(test, dice)} for model, dice in scores.items()}}))
    for run, options, model in ((scm, ["--ensemble"], "SCM-E"), (scm, [], "SCM"), (stage1, [], "stage 1 (unet3d)")):
        package = tmp_path / f"{model}.zip"
        assert paseg(capsys, "export", "model", run, "--out", package, *options)[0] == 0
        card = read_model_package(package)
        assert card["benchmark"] == {"model": model, "dice": pytest.approx(np.mean(scores[model])), "cases": 2,
                                     "held_out": True}
        assert not any(case.encode() in package.read_bytes() for case in test)
    code, out, _ = paseg(capsys, "show-model", tmp_path / "SCM-E.zip")
    assert "benchmark (SCM-E, paseg run report): mean Dice 0.850 over 2 case(s), held-out test cases" in out
    assert paseg(capsys, "export", "model", scm, "--out", tmp_path / "last.zip", "--checkpoint", "last")[0] == 0
    assert read_model_package(tmp_path / "last.zip")["benchmark"] is None  # the report measured best.pt


def test_export_refuses_bad_requests_and_writes_nothing(tmp_path, capsys):
    run = trained_run(tmp_path / "run")
    for argv, message in (
        ([run, "--out", tmp_path / "m.tar"], "a .zip file"),
        ([tmp_path / "missing", "--out", tmp_path / "new" / "m.zip"], "run folder not found"),
        ([run, "--out", tmp_path / "new" / "m.zip", "--checkpoint", tmp_path / "nope.pt"], "checkpoint not found"),
        ([run, "--out", tmp_path / "new" / "m.zip", "--description", "bell\x07"], "control characters"),
        ([run, "--out", tmp_path / "new" / "m.zip", "--dataset", tmp_path / "nodata"], "dataset folder not found"),
    ):
        code, _, err = paseg(capsys, "export", "model", *argv)
        assert code == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# -- refusals ---------------------------------------------------------------------------------------------------
def _rewrite(source: Path, target: Path, *, drop=(), replace=None, extra=(), card=None, info=None) -> Path:
    """Copy package ``source`` to ``target`` member by member, changing what the arguments say."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            if item.filename in drop:
                continue
            data = old.read(item.filename)
            if item.filename == CARD and card is not None:
                data = json.dumps(card(json.loads(data))).encode()
            if replace and item.filename in replace:
                data = replace[item.filename](data)
            new.writestr(info(item) if info else item, data)
        for name, data in extra:
            new.writestr(name, data)
    return target


def _flip_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


def _more_epochs(config: bytes) -> bytes:
    assert b'"epochs": 4' in config
    return config.replace(b'"epochs": 4', b'"epochs": 9')


def _zeros_bomb(good: Path, target: Path) -> Path:
    """Weights of 2 MB of zeros, deflated to about 2 KB, with a card that vouches for them: only the ratio is wrong."""
    zeros = bytes(2 << 20)

    def card(c):
        c["members"][WEIGHTS] = {"size": len(zeros), "sha256": hashlib.sha256(zeros).hexdigest()}
        return c

    def deflated(item):
        item.compress_type = zipfile.ZIP_DEFLATED
        return item

    return _rewrite(good, target, card=card, replace={WEIGHTS: lambda _: zeros}, info=deflated)


def _declared_bomb(good: Path, target: Path) -> Path:
    """The weights' headers (local and central) declare 3 GiB uncompressed: nothing else changes."""
    data = bytearray(good.read_bytes())
    name = WEIGHTS.encode()
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            if data[start + name_at:start + name_at + len(name)] == name:
                data[start + size_at:start + size_at + 4] = struct.pack("<I", 3 << 30)
            start += 4
    target.write_bytes(bytes(data))
    return target


def _symlink(good: Path, target: Path) -> Path:
    def link(item):
        if item.filename == CONFIG:
            item.create_system, item.external_attr = 3, (0o120777 << 16)
        return item

    return _rewrite(good, target, info=link)


BAD_PACKAGES = {
    "newer version": (lambda g, t: _rewrite(g, t, card=lambda c: {**c, "format_version": 2}),
                      "package format version 2 is not the version 1 this PASeg reads; update PASeg"),
    "older version": (lambda g, t: _rewrite(g, t, card=lambda c: {**c, "format_version": 0}),
                      "export the model again"),
    "not a card": (lambda g, t: _rewrite(g, t, card=lambda c: {**c, "format": "something-else"}),
                   "no 'paseg-model-package' format marker"),
    "missing weights": (lambda g, t: _rewrite(g, t, drop=[WEIGHTS]), f"member {WEIGHTS} is missing"),
    "missing card": (lambda g, t: _rewrite(g, t, drop=[CARD]), f"member {CARD} is missing"),
    "tampered weights": (lambda g, t: _rewrite(g, t, replace={WEIGHTS: _flip_byte}),
                         f"member {WEIGHTS} does not match the SHA-256 in its card"),
    "tampered config": (lambda g, t: _rewrite(g, t, replace={CONFIG: _more_epochs}),
                        f"member {CONFIG} does not match the SHA-256"),
    "parent traversal": (lambda g, t: _rewrite(g, t, extra=[("../evil.txt", b"x")]),
                         "unsafe member name '../evil.txt' (a '..' or '.' path component)"),
    "nested traversal": (lambda g, t: _rewrite(g, t, extra=[("a/../../model.pt", b"x")]), "unsafe member name"),
    "absolute path": (lambda g, t: _rewrite(g, t, extra=[("/etc/cron.d/x", b"x")]), "(an absolute path)"),
    "drive letter": (lambda g, t: _rewrite(g, t, extra=[("C:/x.pt", b"x")]), "(an absolute path)"),
    "backslash": (lambda g, t: _rewrite(g, t, extra=[("..\\evil.dll", b"x")]), "(a backslash"),
    "unexpected member": (lambda g, t: _rewrite(g, t, extra=[("run.py", b"import os")]),
                          "unexpected member 'run.py'"),
    "symbolic link": (_symlink, f"member '{CONFIG}' is a symbolic link"),
    "ratio bomb": (_zeros_bomb, "ratio above 50: a zip bomb?"),
    "declared bomb": (_declared_bomb, "declares 3221225472 bytes uncompressed"),
    "not a zip": (lambda g, t: t.write_bytes(b"PK but not really a zip archive\n" * 10) and t,
                  "not a readable zip archive"),
}


@pytest.fixture(scope="module")
def good_package(tmp_path_factory):
    root = tmp_path_factory.mktemp("package")
    export_model_package(trained_run(root / "run"), root / "good.zip")
    return root / "good.zip"


@pytest.mark.parametrize("kind", sorted(BAD_PACKAGES))
def test_bad_packages_are_refused_naming_the_member_with_no_output(kind, good_package, tmp_path, image, capsys):
    make, message = BAD_PACKAGES[kind]
    bad = make(good_package, tmp_path / "bad.zip")
    before = bad.read_bytes()
    for argv in (["show-model", bad], ["predict", bad, image, "--out", tmp_path / "out", "--device", "cpu"]):
        code, out, err = paseg(capsys, *argv)
        assert code == 1, (kind, out, err)
        assert f"error: {bad}: " in err and message in err, err
    assert not (tmp_path / "out").exists() and bad.read_bytes() == before
    with pytest.raises(ModelPackageError, match="nothing was extracted|refused|missing|match|version|marker|zip"):
        extract_model_package(bad, tmp_path / "unpacked")
    assert not any((tmp_path / "unpacked").glob("*"))  # no member left behind


def test_a_missing_package_and_a_folder_are_named(tmp_path, image, capsys):
    code, _, err = paseg(capsys, "predict", tmp_path / "absent.zip", image, "--out", tmp_path / "out")
    assert code == 1 and f"model package not found: {tmp_path / 'absent.zip'}" in err
    (tmp_path / "folder.zip").mkdir()
    code, _, err = paseg(capsys, "show-model", tmp_path / "folder.zip")
    assert code == 1 and "is not a file" in err and not (tmp_path / "out").exists()
    checkpoint = trained_run(tmp_path / "run") / "checkpoints" / "best.pt"  # a file, but a checkpoint
    code, _, err = paseg(capsys, "predict", checkpoint, image, "--out", tmp_path / "out")
    assert code == 1 and "is a checkpoint, not a model package" in err and not (tmp_path / "out").exists()


def test_weights_that_vouch_for_themselves_but_do_not_fit_are_named_by_the_package(good_package, tmp_path, image,
                                                                                    capsys):
    """Consistent hashes, weights of another shape: the loader's error names the package, not a temporary folder."""
    def shrunk(data: bytes) -> bytes:
        state = torch.load(io.BytesIO(data), weights_only=True)
        entry = state["networks"]["primary"]
        name = next(k for k, v in entry["state_dict"].items() if v.ndim == 5 and v.shape[1] > 1)
        entry["state_dict"][name] = entry["state_dict"][name][:, :1].clone()  # input channels missing
        out = io.BytesIO()
        torch.save(state, out)
        return out.getvalue()

    with zipfile.ZipFile(good_package) as archive:
        weights = shrunk(archive.read(WEIGHTS))

    def card(c):
        c["members"][WEIGHTS] = {"size": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}
        return c

    bad = _rewrite(good_package, tmp_path / "other weights.zip", card=card, replace={WEIGHTS: lambda _: weights})
    code, _, err = paseg(capsys, "predict", bad, image, "--out", tmp_path / "out", "--device", "cpu")
    assert code == 1 and f"error: {bad} (member {WEIGHTS})" in err and "paseg-package-" not in err, err
    assert not (tmp_path / "out").exists()
