"""Builders of tiny fake dataset trees in their published layouts (images are a few pixels, written with PIL).

Each builder writes under ``root`` and returns what a test needs to check the reader against (names, labels, ...).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

FERPLUS_VOTE_NAMES = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)


def write_image(path: Path, value: int = 128, size: tuple[int, int] = (6, 6), mode: str = "L") -> Path:
    """A flat image of one gray ``value`` (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, value // 2)
    Image.new(mode, size, color).save(path)
    return path


def write_truncated(path: Path, size: tuple[int, int] = (32, 32)) -> Path:
    """A PNG cut in half (decoding fails on load)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _write_csv(path: Path, header: Sequence[str] | None, rows: Sequence[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
    return path


def make_rafdb(root: Path, train: Sequence[int], test: Sequence[int], *, basic_prefix: bool = False) -> list[str]:
    """RAF-DB basic with file labels 1..7; writes aligned and original images. Returns the listed names."""
    base = root / "basic" if basic_prefix else root
    lines, names = [], []
    for prefix, labels in (("train", train), ("test", test)):
        for i, lab in enumerate(labels, start=1):
            name = f"{prefix}_{i:05d}.jpg"
            names.append(name)
            lines.append(f"{name} {lab}")
            write_image(base / "Image" / "aligned" / f"{prefix}_{i:05d}_aligned.jpg", 10 * lab, mode="RGB")
            write_image(base / "Image" / "original" / name, 10 * lab, size=(9, 7), mode="RGB")
    (base / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (base / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return names


def fer_pixels(i: int) -> np.ndarray:
    """The (48, 48) uint8 image of fake FER2013 row ``i``."""
    return ((np.arange(48 * 48) * (i + 1) + 7 * i) % 256).astype(np.uint8).reshape(48, 48)


def make_fer2013_csv(root: Path, rows: Sequence[tuple[int, str]], *, icml: bool = False) -> Path:
    """``fer2013.csv`` (or ``icml_face_data.csv``) with rows ``(emotion, Usage)``; pixels from :func:`fer_pixels`."""
    body = [(emo, " ".join(map(str, fer_pixels(i).ravel())), usage) for i, (emo, usage) in enumerate(rows)]
    if icml:
        return _write_csv(
            root / "icml_face_data.csv", ["emotion", " Usage", " pixels"], [(e, " " + u, " " + p) for e, p, u in body]
        )
    return _write_csv(root / "fer2013.csv", ["emotion", "pixels", "Usage"], body)


def make_ferplus_microsoft(
    root: Path, votes: Mapping[str, Sequence[Sequence[int]]], *, esr: bool = False, with_box: bool = True
) -> dict[str, list[str]]:
    """Layout (a): ``data/FER2013{Train,Valid,Test}/label.csv`` + png (or ESR's ``Images/`` + ``Labels/``).

    Args:
        votes: split folder name (``"FER2013Train"``, ...) -> rows of 10 votes.
    """
    names: dict[str, list[str]] = {}
    offset = 0
    for folder, rows in votes.items():
        label_dir = root / ("Labels" if esr else "data") / folder
        image_dir = root / ("Images" if esr else "data") / folder
        body, names[folder] = [], []
        for j, v in enumerate(rows):
            name = f"fer{offset + j:07d}.png"
            names[folder].append(name)
            write_image(image_dir / name, 20 * j % 256, size=(48, 48))
            body.append([name, "(0, 0, 48, 48)", *v] if with_box else [name, *v])
        offset += len(rows)
        _write_csv(label_dir / "label.csv", None, body)
    return names


def make_ferplus_new_csv(root: Path, rows: Sequence[tuple[str, str, Sequence[int]]]) -> None:
    """Layout (b): ``fer2013new.csv`` rows ``(Usage, Image name, votes)`` beside a matching ``fer2013.csv``."""
    _write_csv(root / "fer2013new.csv", ["Usage", "Image name", *FERPLUS_VOTE_NAMES], [(u, n, *v) for u, n, v in rows])
    make_fer2013_csv(root, [(0, u) for u, _, _ in rows])


def make_ferplus_shared(root: Path, rows: Sequence[tuple[str, str, Sequence[int]]]) -> list[str]:
    """Layout (c): ``<split>/<class>/ferXXXXXXX.png`` + ``manifest.csv`` rows ``(split, folder label, votes)``."""
    body, paths = [], []
    for i, (split, label, v) in enumerate(rows):
        rel = f"{split}/{label}/fer{i:07d}.png"
        write_image(root / rel, 5 * i % 256, size=(48, 48))
        paths.append(rel)
        body.append([rel, split, label, f"fer{i:07d}.png", *v])
    _write_csv(
        root / "manifest.csv",
        ["path", "split", "label", "ferplus_name", *(f"votes_{c}" for c in FERPLUS_VOTE_NAMES)],
        body,
    )
    return paths


AFFECTNET_HEADER = [
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
]


def make_affectnet_csv(root: Path, train: Sequence[int], valid: Sequence[int], *, image_size: int = 20) -> None:
    """Official CSVs + ``Manually_Annotated_Images/<k>/<name>.jpg``; face box (2, 3, 10, 12) for every row."""
    for csv_name, codes in (("training.csv", train), ("validation.csv", valid)):
        rows = []
        for i, code in enumerate(codes):
            rel = f"{i % 3}/{csv_name[:5]}_{i:04d}.jpg"
            write_image(
                root / "Manually_Annotated_Images" / rel, 9 * i % 256, size=(image_size, image_size), mode="RGB"
            )
            landmarks = ";".join(str(float(k)) for k in range(10))
            rows.append([rel, 2, 3, 10, 12, landmarks, code, round(0.1 * (i % 10) - 0.5, 2), 0.25])
        _write_csv(root / csv_name, AFFECTNET_HEADER, rows)


def make_class_tree(root: Path, tree: Mapping[str, Mapping[str, int]], suffix: str = ".png") -> None:
    """``<root>/<split>/<class>/<k>.png`` with ``tree[split][class]`` images (split ``""`` = directly under root)."""
    for split, classes in tree.items():
        for cls, n in classes.items():
            for k in range(n):
                write_image((root / split / cls if split else root / cls) / f"{cls}_{k:03d}{suffix}", 30 * k % 256)


JAFFE_FILES = (
    "KA.AN1.39.tiff",
    "KA.HA2.30.tiff",
    "KL.NE1.155.tiff",
    "KL.SU1.161.tiff",
    "MK.DI3.132.tiff",
    "MK.FE1.134.tiff",
    "NA.SA1.209.tiff",
    "NA.AN2.212.tiff",
    "YM.HA1.52.tiff",
    "YM.NE3.51.tiff",
)


def make_jaffe(root: Path, names: Sequence[str] = JAFFE_FILES) -> None:
    for i, n in enumerate(names):
        write_image(root / n, 20 * i % 256, size=(8, 8))
    (root / "README").write_text("JAFFE fake\n")


def make_ckplus_original(root: Path, sequences: Sequence[tuple[str, str, int, int | None]]) -> None:
    """Original CK+: rows ``(subject, sequence, n_frames, code or None for unlabelled)``."""
    for subject, seq, n_frames, code in sequences:
        for f in range(1, n_frames + 1):
            write_image(root / "cohn-kanade-images" / subject / seq / f"{subject}_{seq}_{f:08d}.png", 10 * f)
        if code is not None:
            d = root / "Emotion" / subject / seq
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{subject}_{seq}_{n_frames:08d}_emotion.txt").write_text(f"   {float(code):.7e}\n")


AFFWILD2_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"


def make_affwild2(
    root: Path, videos: Mapping[str, Mapping[str, Sequence[int]]], missing: Mapping[str, Sequence[int]] | None = None
) -> None:
    """ABAW EXPR: ``videos[split_dir][video]`` = per-frame codes; ``missing[video]`` = frame numbers without a jpg."""
    missing = missing or {}
    for split_dir, vids in videos.items():
        d = root / "annotations" / "EXPR_Set" / split_dir
        d.mkdir(parents=True, exist_ok=True)
        for video, codes in vids.items():
            (d / f"{video}.txt").write_text(AFFWILD2_HEADER + "\n" + "\n".join(map(str, codes)) + "\n")
            for f in range(1, len(codes) + 1):
                if f not in missing.get(video, ()):
                    write_image(root / "cropped_aligned" / video / f"{f:05d}.jpg", 7 * f % 256, mode="RGB")


def make_manifest(
    root: Path, header: Sequence[str], rows: Sequence[Sequence[object]], name: str = "manifest.csv", images: bool = True
) -> Path:
    """A CSV manifest; writes an image for each row's ``path`` (first column) when ``images``."""
    if images:
        for i, r in enumerate(rows):
            write_image(root / str(r[0]), 11 * i % 256)
    return _write_csv(root / name, header, rows)
