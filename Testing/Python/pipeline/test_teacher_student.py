"""Mixed supervision by a teacher and a student (paper 003, ``PASegLib.pipeline.teacher_student``): the box channel,
the soft-label codes and their loss terms, ``paseg run --mixed teacher_student`` end to end on a tiny cohort, and
the refused settings."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("skimage")

from conftest import cli_error  # noqa: E402

from PASegLib.cli.main import main  # noqa: E402
from PASegLib.data.clickmaps import annotation_box_mask, box_mask  # noqa: E402
from PASegLib.data.dataset import list_cases, load_case  # noqa: E402
from PASegLib.data.prepared import SOFT_FIRST, decode_soft_labels, encode_soft_labels  # noqa: E402
from PASegLib.image.io import read_image  # noqa: E402
from PASegLib.pipeline.run import PipelineOptions, _State, pipeline_steps  # noqa: E402
from PASegLib.training.config import TrainConfig  # noqa: E402

SMALL = ["--device", "cpu", "--quiet", "--set", "epochs=1", "--set", "iterations_per_epoch=2", "--set",
         "validate_every=1", "--set", "patch_size=[32, 32, 16]", "--set", "num_threads=1", "--set", "cache_mb=null"]


def test_box_mask_hand_values():
    mask = box_mask([((1, 0, 0), (2, 1, 0)), np.array([[-5, 3, 1], [0, 9, 1]])], (4, 4, 2))
    expected = np.zeros((4, 4, 2), dtype=np.float32)
    expected[1:3, 0:2, 0] = 1.0
    expected[0:1, 3:4, 1] = 1.0  # the second box clipped to the grid
    np.testing.assert_array_equal(mask, expected)
    shifted = box_mask([((1, 0, 0), (2, 1, 0))], (2, 2, 1), offset=(2, 1, 0))  # the mask of a patch at (2, 1, 0)
    np.testing.assert_array_equal(shifted[:, :, 0], [[1, 0], [0, 0]])
    assert box_mask([((9, 9, 9), (10, 10, 10))], (4, 4, 2)).sum() == 0
    with pytest.raises(ValueError, match=r"boxes\[0\] must be an inclusive integer voxel box"):
        box_mask([((2, 0, 0), (1, 1, 0))], (4, 4, 2))


def test_soft_label_codes_round_trip_and_refuse_non_probabilities():
    p = np.array([0.0, 0.25, 0.5, 1.0, 1.0005])
    codes = encode_soft_labels(p)
    assert codes.dtype == np.uint8 and codes.min() == SOFT_FIRST and codes.max() == 255
    soft, back = decode_soft_labels(np.concatenate([codes, [0, 1, 2]]))
    assert soft.tolist() == [True] * 5 + [False] * 3
    np.testing.assert_allclose(back[:5], np.clip(p, 0, 1), atol=0.5 / 252 + 1e-7)
    assert back[5:].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"finite probabilities in \[0, 1\]"):
        encode_soft_labels(np.array([0.2, 1.5]))
    with pytest.raises(ValueError, match="non-finite"):
        encode_soft_labels(np.array([np.nan, 0.5]))


def test_the_student_objective_trains_soft_codes_by_soft_ce_and_hard_labels_by_the_data_term():
    from PASegLib.losses import LOSSES
    from PASegLib.losses.partial import data_term_options
    from PASegLib.training.objective import Stage1Objective

    torch.manual_seed(0)
    logits = torch.randn(2, 2, 6, 5, 4)
    hard = torch.randint(0, 3, (1, 1, 6, 5, 4))  # a dense patch: 0, 1 and padding (2)
    prob = torch.rand(1, 1, 6, 5, 4)
    soft = torch.from_numpy(encode_soft_labels(prob.numpy())).long()
    soft[..., 0] = 2  # padding of the weak patch
    labels = torch.cat([hard, soft])
    valid = torch.ones(2, 1, 6, 5, 4)
    valid[1, :, 0] = 0
    config = TrainConfig(alpha=0.0, beta=0.0, pseudo_labels="soft", soft_label_weight=0.5)
    terms = Stage1Objective(config).terms(logits, labels, torch.zeros_like(valid), valid, [[], []], a=0, b=0, g=0)
    data = LOSSES.build("partial_ce_dice", ignore_index=2, **data_term_options(config.data_term)).terms(
        logits, torch.where(labels >= SOFT_FIRST, 2, labels), valid)
    counted = (labels >= SOFT_FIRST) & (valid > 0)
    target = (labels.clamp_min(SOFT_FIRST) - SOFT_FIRST).float() / 252
    p = torch.softmax(logits, dim=1)
    ce = -(target * p[:, 1:].log() + (1 - target) * p[:, :1].log())
    expected_soft = ce[counted].mean()
    torch.testing.assert_close(terms["soft_ce"], expected_soft)
    torch.testing.assert_close(terms["data"], data["loss"])
    torch.testing.assert_close(terms["loss"], data["loss"] + 0.5 * expected_soft)
    # without pseudo_labels there is no soft term (and no code can reach the loss)
    assert Stage1Objective(TrainConfig(alpha=0.0, beta=0.0)).soft is None


def test_config_checks_of_the_new_settings(tmp_path):
    with pytest.raises(ValueError, match="click_map must be one of heatmap, box"):
        TrainConfig(point_channel=True, click_map="boxes")
    with pytest.raises(ValueError, match="set point_channel true"):
        TrainConfig(click_map="box")
    with pytest.raises(ValueError, match="box_channel_margin_mm must be"):
        TrainConfig(point_channel=True, click_map="box", box_channel_margin_mm=(5, 2))
    with pytest.raises(ValueError, match="soft_label_weight"):
        TrainConfig(soft_label_weight=-1)
    (tmp_path / "c_soft.nii.gz").write_bytes(b"")
    scm = TrainConfig(stage=2, network="unet3d", pseudo_labels=str(tmp_path))
    with pytest.raises(ValueError, match="holds soft labels"):
        scm.check_trainable()
    assert TrainConfig().to_dict()["click_map"] == "heatmap"  # old runs' configs load as they trained


def test_pipeline_options_and_old_states(tmp_path):
    with pytest.raises(ValueError, match="mixed must be one of joint, teacher_student"):
        PipelineOptions(mixed="foo")
    with pytest.raises(ValueError, match="no refinement rounds"):
        PipelineOptions(mixed="teacher_student", refine_rounds=1)
    assert pipeline_steps(0, "teacher_student") == ("clicks", "teacher", "soft_labels", "student", "stage1_auxiliary",
                                                    "scm", "predict", "evaluate", "report")
    assert pipeline_steps(0) == pipeline_steps(0, "joint")
    # a pipeline.json saved before the option existed loads as joint
    out = tmp_path / "old"
    out.mkdir()
    saved = json.loads(json.dumps(PipelineOptions().__dict__))
    del saved["mixed"]
    (out / "pipeline.json").write_text(json.dumps({"options": saved, "done": ["clicks"], "durations_s": {},
                                                   "split": {"train": [], "test": [], "predict": []}}))
    assert _State(out, PipelineOptions()).done("clicks")
    with pytest.raises(ValueError, match=r"started with other options \(mixed\)"):
        _State(out, PipelineOptions(mixed="teacher_student"))
    # ... and, saved before the seven-point fill existed, its later steps keep the plain seeds
    assert _State(out, PipelineOptions()).label_fill == "none"
    assert _State(tmp_path / "new", PipelineOptions()).label_fill == "random_walker"
    # ... and its second stage: SCM (the option came later); a new pipeline's default is the refinement round
    assert _State(out, PipelineOptions()).second_stage == "scm"
    assert _State(out, PipelineOptions()).steps == pipeline_steps(0, "joint", "scm")
    assert _State(tmp_path / "new", PipelineOptions()).second_stage == "refine"
    assert _State(tmp_path / "new", PipelineOptions(mixed="teacher_student")).second_stage == "scm"
    with pytest.raises(ValueError, match=r"other options \(second_stage\)"):
        _State(out, PipelineOptions(second_stage="refine"))
    with pytest.raises(ValueError, match="second_stage must be one of refine, scm"):
        PipelineOptions(second_stage="both")


def test_paseg_run_teacher_student_end_to_end(bare, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(bare, data)
    out = tmp_path / "out"
    args = ["run", str(data), "--out", str(out), "--kind", "box", "--dense-cases", "2", "--mixed", "teacher_student",
            *SMALL]
    assert main(args) == 0
    state = json.loads((out / "pipeline.json").read_text(encoding="utf-8"))
    assert state["done"] == list(pipeline_steps(0, "teacher_student"))
    ids = sorted(f.case_id for f in list_cases(data))
    dense, weak = ids[:2], ids[2:]

    # the teacher: the dense cases only, with the box channel always given, loosened as the simulated boxes
    teacher = json.loads((out / "teacher" / "config.json").read_text(encoding="utf-8"))
    assert teacher["point_channel"] and teacher["click_map"] == "box" and teacher["point_channel_dropout"] == 0.0
    assert teacher["box_channel_margin_mm"] == [2.0, 10.0] and teacher["pseudo_labels"] is None
    assert json.loads((out / "teacher" / "split.json").read_text(encoding="utf-8")) == {"train": dense,
                                                                                       "validation": []}

    # the soft labels: one per weak case, float probabilities, 0 outside the boxes, not 0 inside
    assert sorted(p.name for p in (out / "soft_labels").iterdir()) == [f"{c}_soft.nii.gz" for c in weak]
    files = {f.case_id: f for f in list_cases(data, annotations_dir=out / "clicks")}
    for case_id in weak:
        soft = read_image(out / "soft_labels" / f"{case_id}_soft.nii.gz", role="soft label")
        case = load_case(files[case_id], load_label=False, warn=None)
        assert not soft.geometry.mismatch(case.image.geometry)
        arr = np.asarray(soft.array)
        assert arr.dtype == np.float32 and arr.min() >= 0.0 and arr.max() <= 1.0
        inside = annotation_box_mask(case.annotation, case.image.geometry) > 0
        assert inside.any() and not inside.all()
        assert np.all(arr[~inside] == 0.0) and arr[inside].max() > 0.0

    # the students: no box channel, the soft labels trained by the soft cross-entropy
    for run in (out / "student_unet2d5", out / "stage1_attention_unet"):
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        assert config["pseudo_labels"] == str(out / "soft_labels") and not config["point_channel"]
        history = json.loads((run / "history.json").read_text(encoding="utf-8"))["events"]
        losses = [e["losses"] for e in history if e["event"] == "iteration"]
        assert losses and all("soft_ce" in row for row in losses) and any(row["soft_ce"] > 0 for row in losses)
    entries = {p.name.split("-")[0]: p for p in (out / "cache_student").glob("*.npz")}
    for case_id in weak:  # the students' prepared weak cases carry the soft codes
        assert np.load(entries[case_id])["partial"].max() >= SOFT_FIRST
    for case_id in dense:
        assert set(np.unique(np.load(entries[case_id])["partial"])) <= {0, 1}
    scm = json.loads((out / "scm" / "config.json").read_text(encoding="utf-8"))
    assert scm["pseudo_labels"] is None  # SCM trains on the boxes' random-walker labels, never on soft ones
    assert main(args) == 0  # a rerun finds every step done


def test_teacher_student_without_dense_cases_or_with_a_bad_mode_is_refused(bare, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(bare), "--out", str(out), "--kind", "box", "--mixed", "teacher_student", *SMALL]) == 1
    assert "needs densely labelled training cases" in cli_error(capsys.readouterr(), "run")
    assert not out.exists()  # a failed start leaves nothing
    with pytest.raises(SystemExit) as exc:
        main(["run", str(bare), "--out", str(out), "--mixed", "foo"])
    assert exc.value.code == 2 and "invalid choice: 'foo'" in capsys.readouterr().err


def test_the_teacher_sees_the_patch_boxes_grown_by_a_reproducible_margin(bare, tmp_path):
    from PASegLib.annotation.simulation import ClickSimulationConfig
    from PASegLib.data.prepared import prepare_case
    from PASegLib.pipeline.inputs import simulate_missing_clicks
    from PASegLib.pipeline.teacher_student import teacher_config
    from PASegLib.training.stage1 import Stage1Trainer

    ids = sorted(f.case_id for f in list_cases(bare))
    clicks = tmp_path / "clicks"
    clicks.mkdir()
    simulate_missing_clicks(list_cases(bare), clicks, seed=0, config=ClickSimulationConfig(kind="box"),
                            dense_ids=ids[:2])
    base = TrainConfig(patch_size=(32, 32, 16), device="cpu", num_threads=1, batch_size=2, cache_mb=None,
                       target_spacing_mm=(2.0, 2.0, 2.0))
    config = teacher_config(base, box_margin_mm=(4.0, 6.0))  # 2-3 voxels of the 2 mm grid
    files = {f.case_id: f for f in list_cases(bare, annotations_dir=clicks)}
    cases = [prepare_case(load_case(files[c], warn=None), config) for c in ids[:2]]
    assert cases[0].kinds == ["dense"]
    trainer = Stage1Trainer(config, tmp_path / "run", cases, [], device=torch.device("cpu"), prefetch=False)
    batch = trainer.batches.to_device(trainer.batches.cut(trainer.batches.draw([0, 1], np.random.default_rng(3))))
    seen = []
    trainer.networks["primary"].register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0][:, 1].clone()))
    trainer.train_step(batch, 0.0)
    grown = trainer.box_channel(batch["boxes"], (32, 32, 16), grow=True)
    torch.testing.assert_close(seen[0], grown[:, 0])  # the channel the network was fed, drawn again alike
    exact = trainer.box_channel(batch["boxes"], (32, 32, 16), grow=False)
    for slot, boxes in enumerate(batch["boxes"]):
        np.testing.assert_array_equal(exact[slot, 0].numpy(), box_mask(boxes, (32, 32, 16)))
        lo, hi = boxes[0]
        wide = box_mask([(lo - 3, hi + 3)], (32, 32, 16))
        narrow = box_mask([(lo - 2, hi + 2)], (32, 32, 16))
        g = grown[slot, 0].numpy()
        assert np.all(g <= wide) and np.all(g >= narrow)  # each side grown by 2 or 3 voxels
    trainer.global_step += 1
    assert not torch.equal(trainer.box_channel(batch["boxes"], (32, 32, 16), grow=True), grown)  # drawn per step
    # validation feeds the prepared case's boxes as given
    np.testing.assert_array_equal(trainer.click_channel(cases[1]), box_mask(cases[1].boxes, cases[1].image.shape))
