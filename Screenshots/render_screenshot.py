"""Render ``Screenshots/PASeg_prediction.png``: the PASeg module's slice views of a synthetic case, offscreen.

What the picture shows, and how it is made (every step is PASeg's own code; nothing is drawn by hand):

1. ``paseg synth`` writes 4 synthetic cases (seed 0), ``paseg simulate-clicks`` their seven clicks per tumour.
2. ``paseg train --cases`` trains one stage-one model (the CPU preset with ``make demo``'s overrides: ε 0.3, 5
   iterations per epoch, 30 epochs = 150 iterations of the 2.5D U-Net) on cases 0–2, of which the trainer holds
   one out for validation; ``paseg predict`` segments case 3, which it never saw.
3. The Slicer module's logic (``PASegSlicer``, on a real MRML scene from ``slicer-core``) loads case 3 with its
   clicks, computes the pseudo-label preview (the module's defaults but ε 0.3) and imports the prediction as
   segment "tumor 1"; the case's true label is added as an outline. Slicer's slice logic and displayable
   managers (segmentations, markups) render two slice views offscreen (VTK's EGL window), and matplotlib lays
   them out with their captions.

It is not a screenshot of the Slicer application (no Qt panels). Steps whose output exists are skipped, so a
rerun only renders. Run from the repository root (a few minutes of training on 2 CPU cores)::

    .venv/bin/python Screenshots/render_screenshot.py --work /tmp/paseg-screenshot
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASE = "synth_003"
TRAIN_CASES = ["synth_000", "synth_001", "synth_002"]
EPSILON = 0.3
VIEW = 460  # pixels per slice view


def _paseg(*args: str) -> None:
    print("$ paseg", " ".join(args), flush=True)
    quiet = [] if args[0] == "synth" else ["--quiet"]  # no progress bars (synth has none)
    subprocess.run([sys.executable, "-m", "PASegLib", *args, *quiet], check=True, cwd=REPO)


def prepare(work: Path) -> dict:
    """Steps 1–2 (skipped where done); returns the paths and the prediction's Dice against the true label."""
    from PASegLib.evaluation.metrics import compute_metrics
    from PASegLib.image.io import read_image
    from PASegLib.pipeline.presets import preset_configs

    data, run, pred = work / "data", work / "run", work / "pred"
    if not (data / f"{CASE}.mrk.json").is_file():
        _paseg("synth", str(data), "--cases", "4", "--seed", "0")
        _paseg("simulate-clicks", str(data))
    if not (run / "model.json").is_file():
        config = work / "stage1.json"
        image = read_image(data / f"{CASE}_image.nii.gz")
        stage1, _, _ = preset_configs("cpu", image.geometry.spacing,
                                      overrides={"expansion": {"epsilon": EPSILON}, "iterations_per_epoch": 5})
        config.write_text(json.dumps(stage1.to_dict(), indent=1), encoding="utf-8")
        _paseg("train", str(data), "--out", str(run), "--config", str(config), "--cases", *TRAIN_CASES)
    prediction = pred / f"{CASE}_pred.nii.gz"
    if not prediction.is_file():
        _paseg("predict", str(run), str(data / f"{CASE}_image.nii.gz"), "--out", str(pred))
    label, predicted = read_image(data / f"{CASE}_label.nii.gz"), read_image(prediction)
    dice = compute_metrics(predicted.array, label.array, spacing=label.geometry.spacing)["dice"]
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    return {"data": data, "prediction": prediction, "dice": dice, "network": config["network"],
            "iterations": config["epochs"] * config["iterations_per_epoch"]}


def _slice_view(headless, name: str, volume, center):
    """A slice logic, an offscreen render window and the segmentation and markups displayable managers."""
    import slicer
    import vtk

    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLApplicationLogic(headless.appLogic)
    logic.SetMRMLScene(headless.scene)
    node = logic.AddSliceNode(name)
    node.SetDimensions(VIEW, VIEW, 1)
    logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
    node.RotateToVolumePlane(volume)  # the synthetic volumes are oblique: show their own slices
    logic.FitSliceToAll(VIEW, VIEW)
    width, height, depth = node.GetFieldOfView()
    node.SetFieldOfView(1.15 * width, 1.15 * height, depth)  # room for clicks placed just outside the volume
    node.JumpSliceByOffsetting(*center)  # the slice through the point, the whole volume in view
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(VIEW, VIEW)
    renderer = vtk.vtkRenderer()
    window.AddRenderer(renderer)
    interactor = vtk.vtkGenericRenderWindowInteractor()  # the displayable managers need one
    interactor.SetRenderWindow(window)
    interactor.Initialize()
    mapper = vtk.vtkImageMapper()
    mapper.SetInputConnection(logic.GetImageDataConnection())
    mapper.SetColorWindow(255)
    mapper.SetColorLevel(127.5)
    image = vtk.vtkActor2D()
    image.SetMapper(mapper)
    renderer.AddViewProp(image)
    factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(headless.appLogic)
    for manager in ("vtkMRMLSegmentationsDisplayableManager2D", "vtkMRMLMarkupsDisplayableManager"):
        if not factory.IsDisplayableManagerRegistered(manager):
            factory.RegisterDisplayableManager(manager)
    group = factory.InstantiateDisplayableManagers(renderer)
    group.SetMRMLDisplayableNode(node)
    return {"logic": logic, "node": node, "window": window, "group": group, "interactor": interactor}


def _capture(view):
    import vtk
    from vtk.util import numpy_support

    view["logic"].GetImageDataConnection().GetProducer().Update()
    view["window"].Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(view["window"])
    grab.Update()
    image = grab.GetOutput()
    width, height, _ = image.GetDimensions()
    pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
    return pixels[::-1, :, :3].copy()  # VTK's rows run bottom-up


def render(found: dict, out: Path) -> None:
    """Step 3: the two slice views through the module's logic, laid out with their captions into ``out``."""
    sys.path.insert(0, str(REPO / "PASeg"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PASegSlicer.annotation.logic import PASegCoreLogic
    from PASegSlicer.mrml.headless import HeadlessSlicer
    from PASegSlicer.mrml.segments import setLabelsToSegmentation

    from PASegLib.data.dataset import list_cases
    from PASegLib.image.io import read_image

    headless = HeadlessSlicer()
    core = PASegCoreLogic(headless.scene)
    files = {c.case_id: c for c in list_cases(found["data"])}
    volume = core.loadCase(files[CASE])
    clicks = core.objectNodes(volume)
    preview = core.expansionPreview(volume, EPSILON, 0.5)
    predicted = core.importPrediction(volume, found["prediction"])
    label = read_image(files[CASE].label, role="label")
    truth = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "true label")
    truth.CreateDefaultDisplayNodes()
    setLabelsToSegmentation(truth, np.asarray(label.array), label.geometry, [(1, "true label", (1.0, 1.0, 1.0))],
                            volume)
    truth.GetDisplayNode().SetVisibility2DFill(False)
    truth.GetDisplayNode().SetSliceIntersectionThickness(2)

    center = [0.0, 0.0, 0.0]
    clicks[0].GetNthControlPointPositionWorld(0, center)  # the F point of tumor 1
    left = _slice_view(headless, "Red", volume, center)
    right = _slice_view(headless, "Green", volume, center)
    for node, view in [(preview, left)] + [(n, left) for n in clicks] + [(predicted, right), (truth, right)]:
        node.GetDisplayNode().SetViewNodeIDs([view["node"].GetID()])
    panes = [_capture(left), _capture(right)]

    figure, axes = plt.subplots(1, 2, figsize=(9.2, 5.3), dpi=100)
    titles = [f"Seven clicks and the pseudo-label preview (ε {EPSILON})\n"
              "foreground red, unlabeled yellow, background green",
              f"Prediction \"tumor 1\" (red) and the true label (white)\n"
              f"{found['network']} stage one, {found['iterations']} CPU iterations: Dice {found['dice']:.2f}"]
    for axis, pane, title in zip(axes, panes, titles):
        axis.imshow(pane)
        axis.set_title(title, fontsize=9.5)
        axis.axis("off")
    caption = (f"PASeg on synthetic case {CASE}, which the model never saw (it trained on 2 other synthetic cases "
               "and validated on a third; clicks simulated). Rendered offscreen by the module's logic and Slicer's "
               "slice views (slicer-core), not a screenshot of the Slicer application.")
    figure.text(0.5, 0.025, caption, ha="center", fontsize=7.8, wrap=True)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.08, wspace=0.03)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    figure.savefig(tmp)
    plt.close(figure)
    from PIL import Image

    Image.open(tmp).convert("RGB").quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    tmp.unlink()
    headless.close()
    print(f"wrote {out} ({out.stat().st_size} bytes); Dice {found['dice']:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the data, the run and the prediction")
    parser.add_argument("--out", type=Path, default=REPO / "Screenshots" / "PASeg_prediction.png")
    args = parser.parse_args()
    render(prepare(args.work), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
