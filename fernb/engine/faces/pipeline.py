"""The entry points: :func:`predict_faces` (frames -> :class:`~fernb.engine.faces.FacePredictor` -> a table and
annotated copies) and ``python -m fernb predict`` (:func:`predict_main`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ...data.faces import FaceTemplate
from ..rundir import RunDir
from .drawing import Annotator
from .frames import Frame, count_frames, iter_frames, video_fps
from .predictor import Detector, FacePredictor
from .results import FacePrediction, FacePredictions, write_table

__all__ = ["predict_faces", "predict_main"]


def _predictor(
    model: str | Path | FacePredictor | None,
    checkpoint: str | int | Path | None,
    preset: str | None,
    **kwargs: Any,
) -> FacePredictor:
    if isinstance(model, FacePredictor):
        return model
    if model is None:
        raise ValueError("predict: give a run folder (model=runs/...), or a model name and a checkpoint file")
    path = Path(model)
    if (path / RunDir.CONFIG).is_file():
        tag = "best" if checkpoint is None else checkpoint
        return FacePredictor.from_run(path, str(tag) if isinstance(tag, Path) else tag, **kwargs)
    if path.is_dir():
        raise FileNotFoundError(f"{path}: no config.json; is this a fernb run folder?")
    if checkpoint is None:
        raise ValueError(f"model={model!r} is not a run folder; a registered model name needs checkpoint=<file>")
    if not Path(str(checkpoint)).exists():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint file")
    return FacePredictor.from_checkpoint(str(model), str(checkpoint), preset=preset or "official", **kwargs)


def predict_faces(
    source: Any,
    model: str | Path | FacePredictor | None = None,
    *,
    checkpoint: str | int | Path | None = None,
    preset: str | None = None,
    out: str | Path | None = None,
    annotate: str | Path | None = None,
    every: int = 1,
    detect_every: int = 1,
    recursive: bool = False,
    detector: str | Detector | None = None,
    template: str | FaceTemplate | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    precision: str = "fp32",
    keep_crops: bool = False,
    progress: bool | None = None,
) -> FacePredictions:
    """Detect, align and classify every face of images, folders, videos or a camera.

    Args:
        source: see :func:`iter_frames` (a file, folder, video, camera index, array or a list of them).
        model: a run folder, a registered model name (with ``checkpoint`` a weight file) or a :class:`FacePredictor`.
        checkpoint: for a run, ``"best"`` (default), ``"last"`` or an epoch; for a model name, the weight file.
        preset: the model preset of a weight file (default ``"official"``).
        out: write the rows to a ``.csv`` (one flat row per face), ``.json`` (a list of nested records) or ``.jsonl``.
        annotate: folder for annotated copies: a PNG per still, an MP4 per video or camera.
        every: keep every ``every``-th video frame; detect_every: detect on every k-th kept frame, reusing boxes.
        recursive: search sub-folders.
        detector, template: override the run's (``"auto"``, ``"haar"``; ``"fer"``, ``"arcface"``).
        batch_size: crops per forward pass; device, precision: where and how the model runs.
        keep_crops: keep each aligned crop in its row (for figures).
        progress: a tqdm bar; None shows one for more than 50 frames (or a camera).

    Returns:
        :class:`FacePredictions`: the rows, the seconds per stage and the files written.
    """
    pred = _predictor(
        model, checkpoint, preset, detector=detector, template=template, batch_size=batch_size, device=device,
        precision=precision,
    )  # fmt: skip
    total = count_frames(source, every)
    frames: Iterable[Frame] = iter_frames(source, every=every, recursive=recursive)
    if progress or (progress is None and (total is None or total > 50)):
        from tqdm.auto import tqdm

        frames = tqdm(frames, total=total, unit="frame", desc="predict", leave=False)
    before = dict(pred.timings)
    annotator = Annotator(Path(annotate)) if annotate is not None else None
    rows: list[FacePrediction] = []
    fps: dict[str, float | None] = {}
    try:
        for fr, frame_rows in pred.iter_predict(frames, detect_every=detect_every, keep_crops=keep_crops):
            rows.extend(frame_rows)
            if annotator is not None:
                if fr.source not in fps:
                    fps[fr.source] = video_fps(fr.source, every)
                annotator.add(fr, frame_rows, fps[fr.source])
    finally:
        if annotator is not None:
            annotator.close()
    outputs = list(annotator.outputs) if annotator is not None else []
    if out is not None:
        write_table(Path(out), rows)
        outputs.insert(0, Path(out))
    timings = {k: pred.timings[k] - before.get(k, 0.0) for k in pred.timings}
    return FacePredictions(rows, list(pred.class_names), timings, outputs)


_EPILOG = """examples:
  python -m fernb predict photos/ --run runs/arbex-synthetic-s0 --out faces.csv --annotate annotated/
  python -m fernb predict clip.mp4 --run runs/arbex-synthetic-s0 --every 2 --out clip.json --annotate out/
  python -m fernb predict 0 --run runs/resnet18-synthetic-s0 --annotate out/      # camera 0; Ctrl-C stops
  python -m fernb predict face.jpg --model poster_v2 --checkpoint raf-db-model_best.pth --out faces.csv
"""


def predict_main(argv: Sequence[str] | None = None) -> int:
    """``python -m fernb predict SOURCE ... (--run DIR | --model NAME --checkpoint FILE)``; returns the exit code."""
    p = argparse.ArgumentParser(
        prog="python -m fernb predict",
        description="Detect, align and classify every face of images, folders, videos or a camera.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", help="image files, folders, video files or a camera index (0)")
    p.add_argument("--run", help="a training run folder (its model, input size, transform and alignment)")
    p.add_argument("--model", help="a registered model name, with --checkpoint a weight file (official or fernb's)")
    p.add_argument("--checkpoint", help="with --run: best (default), last or an epoch; with --model: the weight file")
    p.add_argument("--preset", default="official", help="with --model: the model preset (default official)")
    p.add_argument("--classes", help="with --model: label space (basic7, ferplus8, ...) or comma-separated classes")
    p.add_argument("--gray", action="store_true", help="with --model: weights trained on gray faces")
    p.add_argument("--out", help="table of predictions: .csv, .json or .jsonl (default: print a summary only)")
    p.add_argument("--annotate", metavar="DIR", help="write annotated images (PNG) and videos (MP4) into DIR")
    p.add_argument("--every", type=int, default=1, help="keep every N-th video frame (default 1)")
    p.add_argument("--detect-every", type=int, default=1, help="detect on every K-th kept frame, reusing boxes between")
    p.add_argument("--detector", help="face detector (default: the run's data.align, else auto)")
    p.add_argument("--template", help="alignment template: fer, arcface (default: the run's, else fer)")
    p.add_argument("--recursive", action="store_true", help="search folders recursively")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    if (a.run is None) == (a.model is None):
        p.error("give exactly one of --run DIR or --model NAME (with --checkpoint FILE)")
    common: dict[str, Any] = {"detector": a.detector, "template": a.template, "batch_size": a.batch_size}
    common["device"] = a.device
    try:
        if a.run is not None:
            ckpt: str | int = a.checkpoint or "best"
            predictor = FacePredictor.from_run(a.run, int(ckpt) if str(ckpt).isdigit() else ckpt, **common)
        else:
            if not a.checkpoint:
                p.error("--model needs --checkpoint FILE")
            classes = a.classes.split(",") if a.classes and "," in a.classes else a.classes
            predictor = FacePredictor.from_checkpoint(
                a.model, a.checkpoint, preset=a.preset, classes=classes, gray=a.gray, **common
            )
        sources = [int(s) if s.isdigit() and not Path(s).exists() else s for s in a.sources]
        result = predict_faces(
            sources,
            predictor,
            out=a.out,
            annotate=a.annotate,
            every=a.every,
            detect_every=a.detect_every,
            recursive=a.recursive,
            progress=False if a.quiet else None,
        )
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"fernb predict: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fernb predict: interrupted", file=sys.stderr)
        return 130
    ok = result.faces
    t = result.timings
    n = int(t.get("frames", 0))
    print(
        f"{predictor}: {n} frame(s), {len(ok)} face(s), "
        f"{sum(r.status == 'no face' for r in result)} without a face, {sum(r.status == 'error' for r in result)} "
        f"unreadable"
    )
    for r in result:
        if r.status == "error":
            print(f"  error: {r.error}")
    if n and len(result) <= 40:
        for r in result:
            if r.status == "ok":
                print(f"  {r.source} frame {r.frame} face {r.face}: {r.label} {r.confidence:.3f}")
    for path in result.outputs[:20]:
        print(f"wrote {path}")
    return 0
