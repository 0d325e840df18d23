"""Speed of ``fernb predict`` on a video: frames per second, split into decode, detect, align and model time.

The video is made here (nothing is downloaded): a public-domain photograph's head (``example_images``) pasted over a
moving gradient background, drifting and zooming, 854x480 at 30 fps, ``--seconds`` long (default 60), written with
OpenCV's ``mp4v`` codec to a temporary folder. The model is the budget recipe's tiny ARBEx (width-16 ResNet-18
backbone, 64 px, random weights: the speed does not depend on them) unless ``--run`` names a run folder.

Run: ``python benchmarks/bench_predict.py [--seconds 60] [--detectors haar haar-fast mediapipe mtcnn]
[--detect-every 1 3]``. One row per detector and detection stride; ``detect`` includes the landmark search the
aligner needs when a detector gives none (Haar). Target (issue 14): >= 15 frames per second on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

TARGET_FPS = 15.0
HEAD = f"{'detector':<12} {'every':>5} {'frames':>6} {'faces':>6} {'fps':>6}  ms/frame: {'decode':>6} " + (
    f"{'detect':>6} {'align':>6} {'model':>6} {'other':>6}"
)


def make_video(path: Path, seconds: float, fps: int = 30, size: tuple[int, int] = (854, 480)) -> Path:
    """A ``seconds`` long video: the astronaut's head drifting across a moving gradient and zooming in and out."""
    from fernb.data.faces import example_images

    ((_, photo),) = example_images(["astronaut"])
    head = np.ascontiguousarray(photo[10:250, 110:350])  # 240 px square around the face
    w, h = size
    n = max(1, round(seconds * fps))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write mp4v here")
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        t = i / fps
        bg = 80 + 40 * np.sin(xx / 90.0 + t) + 30 * np.cos(yy / 70.0 - 0.7 * t)
        frame = np.repeat(bg[:, :, None], 3, axis=2).astype(np.uint8)
        frame[..., 2] = np.clip(frame[..., 2] + 30, 0, 255)
        side = int(h * (0.42 + 0.17 * np.sin(2 * np.pi * t / 6.0)))  # 120..283 px at 480 px
        face = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
        x = int((w - side) * (0.5 + 0.45 * np.sin(2 * np.pi * t / 10.0)))
        y = int((h - side) * (0.5 + 0.3 * np.cos(2 * np.pi * t / 8.0)))
        frame[y : y + side, x : x + side] = face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _detector(name: str):
    from fernb.data.faces import create_detector

    if name == "haar-fast":  # one cascade, no rotated retries, a coarser pyramid on a 427 px copy
        return create_detector(
            "haar",
            cascades=("haarcascade_frontalface_alt2.xml",),
            rotations=(),
            scale_factor=1.2,
            max_side=427,
        )
    return create_detector(name)


def _predictor(run: str | None, detector: str, batch_size: int):
    import fernb
    from fernb.data.transforms import build_transforms
    from fernb.engine.faces import FacePredictor
    from fernb.engine.presets import budget_overrides

    if run:
        return FacePredictor.from_run(run, detector=_detector(detector), batch_size=batch_size)
    kwargs = budget_overrides("arbex", "synthetic")["model.kwargs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fernb.create_model("arbex", "tiny", num_classes=7, img_size=64, **kwargs)
    names = list(fernb.labels.get_label_space("basic7").names)
    transform = build_transforms("arbex", False, 64)
    return FacePredictor(model, names, 64, transform, detector=_detector(detector), batch_size=batch_size)


def measure(video: Path, run: str | None, detector: str, detect_every: int, batch_size: int) -> dict:
    """One row: frames, faces, wall seconds and seconds per stage."""
    from fernb.engine.faces import predict_faces

    pred = _predictor(run, detector, batch_size)
    t0 = time.perf_counter()
    res = predict_faces(video, pred, detect_every=detect_every, progress=False)
    wall = time.perf_counter() - t0
    t = res.timings
    return {
        "detector": detector,
        "detect_every": detect_every,
        "frames": int(t["frames"]),
        "faces": len(res.faces),
        "wall_s": wall,
        **{k: t[k] for k in ("decode", "detect", "align", "model")},
    }


def format_row(r: dict) -> str:
    n = max(1, r["frames"])
    other = r["wall_s"] - sum(r[k] for k in ("decode", "detect", "align", "model"))
    ms = [1000 * r[k] / n for k in ("decode", "detect", "align", "model")] + [1000 * other / n]
    return (
        f"{r['detector']:<12} {r['detect_every']:>5} {r['frames']:>6} {r['faces']:>6} {r['frames'] / r['wall_s']:>6.1f}"
        f"            " + " ".join(f"{m:>6.1f}" for m in ms)
    )


def main(argv: list[str] | None = None) -> list[dict]:
    from fernb.data.faces import available_detectors

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="video length (default 60 s at 30 fps)")
    ap.add_argument("--size", type=int, nargs=2, default=(854, 480), metavar=("W", "H"))
    ap.add_argument(
        "--detectors", nargs="+", default=None, help="haar, haar-fast, mediapipe, mtcnn (default: every installed)"
    )
    ap.add_argument("--detect-every", type=int, nargs="+", default=[1], help="detection strides (default 1)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--run", help="a run folder instead of the tiny random-weight ARBEx")
    ap.add_argument("--video", help="an existing video instead of the generated one")
    args = ap.parse_args(argv)
    detectors = args.detectors or ["haar", "haar-fast", *[d for d in available_detectors() if d != "haar"]]
    import torch

    print(
        f"fernb predict benchmark: python {platform.python_version()}, torch {torch.__version__}, "
        f"cpus={os.cpu_count()}, torch_threads={torch.get_num_threads()}, cv2_threads={cv2.getNumThreads()}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(args.video) if args.video else Path(tmp) / "bench.mp4"
        if not args.video:
            t0 = time.perf_counter()
            make_video(video, args.seconds, size=tuple(args.size))
            print(f"video: {args.seconds:g} s, {args.size[0]}x{args.size[1]} at 30 fps, made in "
                  f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        print(HEAD)
        for det in detectors:
            for k in args.detect_every:
                try:
                    row = measure(video, args.run, det, k, args.batch_size)
                except ImportError as exc:  # an optional detector that is not (fully) installed
                    print(f"{det:<12} {k:>5}  not available: {str(exc).splitlines()[0]}")
                    continue
                rows.append(row)
                print(format_row(row), flush=True)
    best = max((r["frames"] / r["wall_s"] for r in rows), default=0.0)
    print(f"target: >= {TARGET_FPS:g} frames per second; best here {best:.1f}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
