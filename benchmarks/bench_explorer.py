"""Re-draw time of the embedding explorer's interactive map at 5,000 points (target: <= 0.3 s a re-draw).

What a control costs in the kernel: the map's traits built from a projected set (:func:`map_traits`, tooltips for
a new checkpoint) and sent to the front end as JSON (the comm's messages are encoded here, as a kernel would). The
reference is the explorer's earlier re-draw in the same process: a matplotlib Figure of the same map rendered to a
PNG. The browser's own canvas time is measured by ``tests/test_browser.py`` (``data-draw-ms``).

Run: ``python benchmarks/bench_explorer.py [--points 5000 --repeats 5]``. Prints a table; exits non-zero when a
re-draw of the map takes longer than the target.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fernb.explore.embeddings import EmbeddingSet, neighbours
from fernb.viz.embeddings import plot_embedding_map
from fernb.widgets.embeddings import map_bounds, map_tips, map_traits
from fernb.widgets.scatter import ScatterMap, face_uri

TARGET_S = 0.3
CLASSES = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "angry"]


@dataclass
class Row:
    step: str
    seconds: float  # median over the repeats
    sent_kib: float  # JSON sent to the front end by one re-draw (the largest of the repeats; 0 for the reference)


def fake_set(n: int, seed: int = 0, checkpoint: str = "epoch-001", anchors_per_class: int = 1) -> EmbeddingSet:
    """A projected set of ``n`` samples in seven clusters, with anchors (what a trained ARBEx run gives)."""
    rng = np.random.default_rng([seed, n])
    c, d = len(CLASSES), 64
    centres = rng.normal(0, 4, (c, d))
    labels = rng.integers(0, c, n)
    emb = (centres[labels] + rng.normal(0, 1.5, (n, d))).astype(np.float32)
    preds = np.where(rng.random(n) < 0.7, labels, rng.integers(0, c, n))
    anchors = np.repeat(centres, anchors_per_class, 0).astype(np.float32)
    xy = (emb[:, :2] + rng.normal(0, 0.1, (n, 2))).astype(np.float32)
    return EmbeddingSet(
        run="bench",
        checkpoint=checkpoint,
        epoch=1,
        method="arbex",
        split="valid",
        embeddings=emb,
        labels=labels.astype(np.int64),
        preds=preds.astype(np.int64),
        confidence=rng.random(n).astype(np.float32),
        max_prob=rng.random(n).astype(np.float32),
        indices=np.arange(n),
        class_names=list(CLASSES),
        anchors=anchors,
        anchor_classes=np.repeat(np.arange(c), anchors_per_class),
        xy=xy,
        anchor_xy=anchors[:, :2].copy(),
    )


class _Wire:
    """Stands in for the kernel's comm: encodes every message as JSON and counts its bytes."""

    def __init__(self) -> None:
        self.bytes = 0

    def send(self, data: object = None, metadata: object = None, buffers: object = None) -> None:
        self.bytes += len(json.dumps(data, separators=(",", ":")))


def _time(fn: Callable[[], object], repeats: int, wire: _Wire | None = None) -> tuple[float, float]:
    times, sent = [], 0
    for _ in range(repeats):
        if wire is not None:
            wire.bytes = 0
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        sent = max(sent, wire.bytes if wire is not None else 0)
    return statistics.median(times), sent / 1024


def run(points: int, repeats: int) -> list[Row]:
    a, b = fake_set(points, 0), fake_set(points, 1, "epoch-002")
    scatter = ScatterMap()
    wire = _Wire()
    scatter.comm.send = wire.send  # what the kernel would write to the front end
    faces = [face_uri(np.full((48, 48), 128, np.uint8))] * points
    with scatter.hold_sync():
        scatter.thumbs, scatter.bounds, scatter.tips = faces, map_bounds([a, b]), map_tips(a)
        for key, value in map_traits(a).items():
            setattr(scatter, key, value)

    def push(view: dict, tips: list[str] | None = None) -> None:
        with scatter.hold_sync():
            if tips is not None:
                scatter.tips = tips
            for key, value in view.items():
                setattr(scatter, key, value)

    colours = iter(["confidence", "prediction", "label"] * repeats)
    sets = iter([b, a] * repeats)
    samples = iter(range(repeats))
    filters = iter([["happy", "sad"], None] * repeats)
    rows = [
        Row("colour changed", *_time(lambda: push(map_traits(a, next(colours))), repeats, wire)),
        Row("classes filtered", *_time(lambda: push(map_traits(a, classes=next(filters))), repeats, wire)),
    ]
    push(map_traits(a))

    def checkpoint() -> None:
        es = next(sets)
        push(map_traits(es), map_tips(es))

    rows.append(Row("checkpoint switched", *_time(checkpoint, repeats, wire)))
    push(map_traits(a), map_tips(a))
    rows.append(
        Row(
            "sample clicked",
            *_time(lambda: push(map_traits(a, neighbours=neighbours(a, next(samples)))), repeats, wire),
        )
    )
    rows.append(
        Row(
            "reference: matplotlib PNG",
            *_time(lambda: plot_embedding_map(a, "confidence").savefig(_Sink(), format="png"), max(1, repeats // 2)),
        )
    )
    return rows


class _Sink:
    """A file that forgets what is written to it."""

    def write(self, data: bytes) -> int:
        return len(data)


def format_table(rows: list[Row], points: int) -> str:
    ref = next(r.seconds for r in rows if r.step.startswith("reference"))
    lines = [f"{'step':<28}{'seconds':>10}{'sent KiB':>10}{'x faster':>10}"]
    for r in rows:
        faster = "" if r.step.startswith("reference") else f"{ref / max(r.seconds, 1e-9):>10.1f}"
        lines.append(f"{r.step:<28}{r.seconds:>10.3f}{r.sent_kib:>10.1f}{faster}")
    lines.append(f"target: every map re-draw <= {TARGET_S} s at {points} points (kernel side; the canvas adds ms)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=5000, help="samples on the map (default 5000)")
    ap.add_argument("--repeats", type=int, default=5, help="re-draws timed per step; the median is shown")
    args = ap.parse_args(argv)
    print(f"fernb explorer benchmark: {args.points} points; python {platform.python_version()}")
    rows = run(args.points, args.repeats)
    print(format_table(rows, args.points))
    return rows


if __name__ == "__main__":
    result = main()
    slow = [r.step for r in result if not r.step.startswith("reference") and r.seconds > TARGET_S]
    if slow:
        print(f"error: slower than {TARGET_S} s: {', '.join(slow)}", file=sys.stderr)
    sys.exit(1 if slow else 0)
