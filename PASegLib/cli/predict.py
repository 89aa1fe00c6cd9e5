"""``paseg predict``: segment images with a trained run (probability + label maps in each image's geometry)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

from PASegLib.cli.common import print_json, staged_output
from PASegLib.cli.predict_dicom import add_arguments as add_dicom_arguments
from PASegLib.cli.predict_dicom import dicom_input
from PASegLib.data.dataset import CaseFiles, DatasetError, list_cases
from PASegLib.image.io import image_suffix, strip_image_suffix

#: ``--precision`` choices and the ``cpu_bf16`` argument of :func:`~PASegLib.inference.predictor.load_predictor`
#: each stands for (``None``: bfloat16 where the CPU computes it natively)
PRECISIONS = {"auto": None, "float32": False, "bfloat16": True}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images with a trained model",
        description="Predict every image of INPUT (one image file, or a dataset folder of <case>_image.<ext> files) "
        "with the model of RUN_DIR (written by `paseg train`) by sliding-window inference on the training grid. "
        "Writes <case>_pred.nii.gz (uint8: 0 background, n = n-th annotated object, 1 without clicks) and "
        "<case>_prob.nii.gz (float32 foreground probability) in each image's own geometry. Clicks "
        "(<case>.mrk.json or <case>_7points.<ext>) are used when present. Prints one "
        'PASEG {"event": "case", ...} line per case on stdout. Creating the file OUT/STOP stops the command '
        "within seconds: the cases finished so far are kept in OUT, nothing of the interrupted case is written, "
        'and it exits with code 3 after a PASEG {"event": "stopped", ...} line (a STOP present at start is '
        "stale and removed). OUT is locked while the command writes into it: a second command on the same OUT is "
        "refused. Exit codes: 0 done, 1 error, 2 usage, 3 stopped, 130 interrupted.",
    )
    p.add_argument("run_dir", type=Path, help="run folder (config.json, checkpoints/best.pt, checkpoints/last.pt), or "
                   "a model package MODEL.zip (`paseg export model`; checked before use)")
    p.add_argument("input", type=Path, help="an image file, a dataset folder, or a folder holding a DICOM series "
                   "(see DICOM below)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--annotations", type=Path, default=None,
                   help="clicks: a folder of <case>.mrk.json files, or (single image) one .mrk.json / 7-points file; "
                   "default: beside the images")
    p.add_argument("--restrict-to-box", action="store_true",
                   help="label voxels outside every object's click box as background (needs clicks for every case)")
    p.add_argument("--largest-component", action="store_true",
                   help="keep the largest connected component per object (overall without clicks)")
    p.add_argument("--threshold", type=float, default=0.5, help="foreground probability threshold (default 0.5)")
    p.add_argument("--checkpoint", default=None,
                   help="'best' (default; falls back to 'last' when no validation ran), 'last', or a checkpoint file; "
                   "a stopped run without model.json predicts with the checkpoint its stopped.json names")
    p.add_argument("--ensemble", action="store_true",
                   help="average the primary and auxiliary networks (stage-2 / SCM runs only)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="CPU arithmetic of the networks: 'auto' (default) bfloat16 where the CPU computes it natively "
                   "(AVX-512 BF16 or AMX: 2-3x faster, probabilities within a few hundredths, Dice within ~0.001), "
                   "float32 elsewhere; 'float32' the exact float32 result; 'bfloat16' bfloat16 on any CPU. On a GPU "
                   "the run's mixed-precision setting applies")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    add_dicom_arguments(p)
    p.set_defaults(func=run)


def _case_id(path: Path) -> str:
    stem = strip_image_suffix(path)
    return stem[: -len("_image")] if stem.endswith("_image") and len(stem) > len("_image") else stem


def _annotation_files(folder: Path, case_id: str, exclude: Path) -> tuple:
    """``(markups, seven_points)`` for ``case_id`` in ``folder`` (``None`` where absent)."""
    markups = folder / f"{case_id}.mrk.json"
    seven = [p for p in sorted(folder.glob(f"{case_id}_7points.*")) if image_suffix(p) and p != exclude]
    return (markups if markups.is_file() else None), (seven[0] if seven else None)


def collect_inputs(input_path: Path, annotations: Optional[Path] = None) -> List[CaseFiles]:
    """The cases of INPUT: one image file (case id = file name without suffix and ``_image``) or a dataset folder.

    Raises:
        DatasetError: INPUT or ``annotations`` missing, not an image, or a folder without ``<case>_image`` files.
    """
    if annotations is not None and not annotations.exists():
        raise DatasetError(f"annotations not found: {annotations}")
    if input_path.is_dir():
        if annotations is not None and not annotations.is_dir():
            raise DatasetError(f"--annotations must be a folder when INPUT is a folder ({input_path}); "
                               f"got the file {annotations}")
        return list_cases(input_path, annotations_dir=annotations)
    if not input_path.is_file():
        raise DatasetError(f"input not found: {input_path}")
    if image_suffix(input_path) is None:
        raise DatasetError(f"{input_path}: not an image file (expected .nii.gz, .nrrd, .mha, …)")
    case_id = _case_id(input_path)
    if annotations is None:
        markups, seven = _annotation_files(input_path.parent, case_id, input_path)
    elif annotations.is_dir():
        markups, seven = _annotation_files(annotations, case_id, input_path)
    elif annotations.name.lower().endswith(".mrk.json"):
        markups, seven = annotations, None
    elif image_suffix(annotations) is not None:
        markups, seven = None, annotations
    else:
        raise DatasetError(f"{annotations}: not a .mrk.json or 7-points image file")
    return [CaseFiles(case_id, input_path, markups=markups, seven_points=seven)]


def run(args: argparse.Namespace) -> int:
    from PASegLib.jobs.lock import FolderLock
    from PASegLib.jobs.stopping import STOP_FILE, StopFile
    from PASegLib.utils.atomic import remove_stale_temp_files

    start = time.perf_counter()
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    from PASegLib.inference.predictor import load_predictor
    from PASegLib.interop.package import is_model_package, load_package_predictor

    package = is_model_package(args.run_dir)  # a .zip model package instead of a run folder
    if not package and not args.run_dir.is_dir():
        raise ValueError(f"run folder not found: {args.run_dir}")
    dicom = dicom_input(args)  # INPUT as a DICOM series folder (None for an image file or a dataset folder)
    try:
        cases = dicom.cases if dicom is not None else collect_inputs(args.input, args.annotations)
        checkpoint = args.checkpoint or "best"
        if not package:  # a stopped run that the user chose to use (PASegLib.jobs.stopped_run)
            from PASegLib.jobs.stopped_run import prediction_checkpoint

            checkpoint = prediction_checkpoint(args.run_dir, args.checkpoint)
        predictor = (load_package_predictor if package else load_predictor)(
            args.run_dir, checkpoint=checkpoint, ensemble=args.ensemble, device=args.device,
            cpu_bf16=PRECISIONS[args.precision])
        created = not args.out.exists()
        lock = FolderLock(args.out, purpose="paseg predict")
        lock.acquire()  # one command per OUT: then every staging folder or temporary file there is a killed one's
    except BaseException:
        if dicom is not None:
            dicom.cleanup()  # a refused model or a locked OUT leaves no temporary series image either
        raise
    try:
        remove_stale_temp_files(args.out, owned=True)
        # OUT/STOP, like training's RUN_DIR/STOP: one rule for every job ("STOP in the folder the command writes
        # into"), usable from a terminal without extra flags; removed here if stale, before the first event
        stop = StopFile(args.out / STOP_FILE)
        stop.clear_stale()
        return _predict(args, cases, predictor, stop, start, dicom)
    finally:
        lock.release()
        if dicom is not None:
            dicom.cleanup()  # the series' temporary image
        if created and args.out.is_dir() and not any(args.out.iterdir()):
            args.out.rmdir()  # a failed command leaves no empty folder


def _predict(args: argparse.Namespace, cases: List[CaseFiles], predictor, stop, start: float, dicom=None) -> int:
    """Predict ``cases`` into ``args.out`` (locked) through a staging folder; returns the exit code."""
    from PASegLib.inference.predictor import predict_files
    from PASegLib.jobs.events import emit
    from PASegLib.jobs.stopping import EXIT_STOPPED, StopRequested

    emit("start", total=len(cases))
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(cases), desc="predict", file=sys.stderr, unit="case", dynamic_ncols=True)

    def on_case(index: int, total: int, case_id: str, pred: Path) -> None:
        emit("case", index=index, total=total, case=case_id, pred=str(args.out / pred.name))
        if bar is not None:
            bar.update(1)

    stopped = False
    try:
        with staged_output(args.out) as stage:
            try:
                rows = predict_files(predictor, cases, stage, restrict_to_box=args.restrict_to_box,
                                     largest_component=args.largest_component, threshold=args.threshold,
                                     on_case=on_case, stop=stop)
            except StopRequested as exc:  # the finished cases' files still move into --out
                rows, stopped = exc.rows, True
                stop.consume()
            if dicom is not None:
                dicom.write_segs(stage, rows)  # --dicom-seg: <case>_seg.dcm, in the same staging
    finally:
        if bar is not None:
            bar.close()
    for row in rows:  # the staged files now live in --out
        row["pred"], row["prob"] = str(args.out / Path(row["pred"]).name), str(args.out / Path(row["prob"]).name)
        if "seg" in row:
            row["seg"] = str(args.out / Path(row["seg"]).name)
    if stopped:
        message = f"stopped after {len(rows)} of {len(cases)} case(s); their predictions are in {args.out}"
        print(message, file=sys.stderr)
        emit("stopped", phase="predicting", done=len(rows), total=len(cases), out=str(args.out), message=message)
        return EXIT_STOPPED
    print(f"predicted {len(rows)} case(s) into {args.out}")
    if args.json:
        print_json({"run_dir": str(args.run_dir), "input": str(args.input), "out": str(args.out),
                    **predictor.describe(), "notes": predictor.notes, "cases": rows, "n": len(rows),
                    "seconds": round(time.perf_counter() - start, 3)})
    return 0
