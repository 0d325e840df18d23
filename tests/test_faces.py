"""Offline face detection, landmarks and alignment (fernb.data.faces)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fernb.data.faces import (
    EXAMPLE_IMAGE_SOURCES,
    TEMPLATES,
    AlignmentResult,
    FaceAligner,
    FaceBox,
    align_face,
    alignment_matrix,
    center_crop_matrix,
    detect_faces,
    detect_landmarks,
    example_images,
    load_images,
    similarity_transform,
    transform_points,
)

# Verified by eye once on skimage.data.astronaut() (512x512): crops with these points drawn were inspected.
ASTRO_LEFT_EYE = (202.0, 100.0)
ASTRO_RIGHT_EYE = (247.0, 102.0)
ASTRO_MOUTH = (223.0, 143.0)
ASTRO_FACE = (185.0, 80.0, 262.0, 150.0)  # x0, y0, x1, y1: brows to chin, cheek to cheek; a true box contains it


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return example_images(["astronaut"])[0][1]


@pytest.fixture(scope="module")
def astro_result(astronaut: np.ndarray) -> AlignmentResult:
    return FaceAligner(size=112).align(astronaut)


def _rotate(image: np.ndarray, angle: float) -> np.ndarray:
    """Rotate counter-clockwise (as displayed) about the centre, same size."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), (w, h))


def _eyes_in(image: np.ndarray | Image.Image) -> np.ndarray:
    """Re-detect the eyes in an (aligned) image; (2, 2)."""
    faces = detect_faces(image)
    assert faces, "no face found in the aligned image"
    lm = detect_landmarks(image, faces[0], find_mouth=False)
    assert lm.eyes_detected == 2
    return lm.as_array(("left_eye", "right_eye"))


# ---------------------------------------------------------------------------------------------------------------
# Detection and landmarks on the astronaut
# ---------------------------------------------------------------------------------------------------------------


def test_astronaut_has_exactly_one_face_at_the_verified_place(astro_result: AlignmentResult) -> None:
    assert len(astro_result.faces) == 1
    box = astro_result.box
    assert box is not None and box.angle == 0.0 and box.score >= 0.9 and box.votes == 3
    x0, y0, x1, y1 = ASTRO_FACE
    assert box.x <= x0 and box.y <= y0 and box.x + box.w >= x1 and box.y + box.h >= y1
    assert 80 <= box.w <= 130  # a face, not the whole upper body


def test_astronaut_eyes_and_mouth_are_detected_where_they_are(astro_result: AlignmentResult) -> None:
    lm = astro_result.landmarks
    assert lm is not None
    assert lm.eyes_detected == 2 and lm.is_detected("mouth")
    assert lm.sources["nose"] == "from_eyes" and lm.estimated == ("nose",)
    assert np.hypot(*np.subtract(lm.left_eye, ASTRO_LEFT_EYE)) < 4
    assert np.hypot(*np.subtract(lm.right_eye, ASTRO_RIGHT_EYE)) < 4
    assert np.hypot(*np.subtract(lm.mouth, ASTRO_MOUTH)) < 6
    assert lm.left_eye[0] < lm.right_eye[0]


@pytest.mark.parametrize("template", ["fer", "arcface"])
def test_aligned_eyes_land_on_the_template_and_level(astronaut: np.ndarray, template: str) -> None:
    res = FaceAligner(size=112, template=template).align(astronaut)
    assert res.mode == "aligned"
    # By construction (exact two-point similarity) ...
    np.testing.assert_allclose(
        res.aligned_landmarks.as_array(("left_eye", "right_eye")),
        TEMPLATES[template].points(112, ("left_eye", "right_eye")),
        atol=1e-6,
    )
    # ... and measured: the eyes found again in the aligned crop sit on the template and level.
    eyes = _eyes_in(res.image)
    err = np.hypot(*(eyes - TEMPLATES[template].points(112, ("left_eye", "right_eye"))).T)
    assert err.max() < 3.0, err
    dx, dy = eyes[1] - eyes[0]
    assert abs(np.degrees(np.arctan2(dy, dx))) < 2.5


@pytest.mark.parametrize("angle", [-15.0, -10.0, 10.0, 15.0])
def test_alignment_undoes_a_rotation(astronaut: np.ndarray, astro_result: AlignmentResult, angle: float) -> None:
    res = FaceAligner(size=112, find_mouth=False).align(_rotate(astronaut, angle))
    assert res.mode == "aligned" and res.eyes_detected == 2
    estimated = res.roll_deg - astro_result.roll_deg  # her head has its own small roll (about -3.5 degrees)
    assert abs(estimated - angle) < 3.0, (estimated, angle)
    eyes = _eyes_in(res.image)
    dx, dy = eyes[1] - eyes[0]
    assert abs(np.degrees(np.arctan2(dy, dx))) < 3.0


def test_faces_with_a_strong_roll_are_found_on_rotated_copies(astronaut: np.ndarray) -> None:
    faces = detect_faces(_rotate(astronaut, -25.0), max_side=384)
    assert faces and faces[0].angle == -15.0
    cx, cy = faces[0].center
    # The face centre, rotated with the image, must fall inside the found box.
    true_c = transform_points(cv2.getRotationMatrix2D((256, 256), -25.0, 1.0), [[224.0, 118.0]])[0]
    assert np.hypot(cx - true_c[0], cy - true_c[1]) < faces[0].w / 4


# ---------------------------------------------------------------------------------------------------------------
# Inputs, outputs, fallbacks
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gray_numpy", "pil_rgb", "pil_l", "float01_rgb"])
def test_detection_works_on_gray_pil_and_float_input(astronaut: np.ndarray, kind: str) -> None:
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    image = {
        "gray_numpy": cv2.cvtColor(small, cv2.COLOR_RGB2GRAY),
        "pil_rgb": Image.fromarray(small),
        "pil_l": Image.fromarray(small).convert("L"),
        "float01_rgb": small.astype(np.float32) / 255.0,
    }[kind]
    faces = detect_faces(image)
    assert len(faces) == 1
    cx, cy = faces[0].center
    assert abs(cx - 112) < 8 and abs(cy - 57) < 8  # the verified face centre, halved


@pytest.mark.parametrize("size", [48, 64, 112])
@pytest.mark.parametrize("as_pil", [False, True])
def test_output_size_and_kind_are_honoured(astronaut: np.ndarray, size: int, as_pil: bool) -> None:
    small = cv2.resize(astronaut, (192, 192), interpolation=cv2.INTER_AREA)
    image = Image.fromarray(small) if as_pil else small
    out = FaceAligner(size=size, find_mouth=False)(image)
    if as_pil:
        assert isinstance(out, Image.Image) and out.size == (size, size) and out.mode == "RGB"
    else:
        assert isinstance(out, np.ndarray) and out.shape == (size, size, 3) and out.dtype == np.uint8


def test_gray_pil_stays_gray() -> None:
    gray = Image.fromarray(np.full((60, 80), 128, np.uint8))
    out = FaceAligner(size=48, warn=False)(gray)
    assert out.mode == "L" and out.size == (48, 48)


@pytest.mark.parametrize("image", ["flat", "noise"])
def test_no_face_falls_back_to_a_flagged_centre_crop(image: str) -> None:
    rng = np.random.default_rng(0)
    pixels = np.full((90, 120), 127, np.uint8) if image == "flat" else rng.integers(0, 256, (90, 120), dtype=np.uint8)
    aligner = FaceAligner(size=64)
    with pytest.warns(UserWarning, match="no face found"):
        res = aligner.align(pixels)
    assert res.mode == "center_crop" and res.fallback and not res.face_found
    assert res.landmarks is None and res.image.shape == (64, 64)
    np.testing.assert_allclose(res.matrix, center_crop_matrix(120, 90, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warns once per aligner, counts the rest
        aligner.align(pixels)
    assert aligner.stats["center_crop"] == 2 and aligner.stats["fallback_rate"] == 1.0


def test_centre_crop_takes_the_middle_square() -> None:
    pixels = np.zeros((40, 100), np.uint8)
    pixels[:, 30:70] = 255  # the centred 40x40 square is white, the sides black
    out = FaceAligner(size=40, warn=False)(pixels)
    assert out.min() == 255


def test_skip_detection_only_resizes() -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    aligner = FaceAligner(size=96, skip_detection=True)
    res = aligner.align(Image.fromarray(pixels))
    assert res.mode == "skipped" and res.box is None
    np.testing.assert_allclose(res.matrix, [[2, 0, 0.5], [0, 2, 0.5]])
    resized = cv2.resize(pixels, (96, 96), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(np.asarray(res.image).astype(int) - resized)[1:-1, 1:-1].max() <= 1
    assert aligner.stats["skipped"] == 1


def test_eyes_fall_back_to_box_priors_when_no_eye_is_found() -> None:
    box = FaceBox(20.0, 20.0, 60.0, 60.0, score=1.0)
    lm = detect_landmarks(np.full((100, 100), 90, np.uint8), box)
    assert lm.eyes_detected == 0 and set(lm.sources.values()) == {"from_box"}
    assert lm.detected == () and lm.roll_deg == pytest.approx(0.0, abs=1.0)
    assert 20 < lm.left_eye[0] < 50 < lm.right_eye[0] < 80 and lm.nose[1] < lm.mouth[1]


def test_a_rotated_box_carries_its_angle_to_the_landmarks() -> None:
    box = FaceBox(20.0, 20.0, 60.0, 60.0, score=1.0, angle=20.0)
    lm = detect_landmarks(np.full((100, 100), 90, np.uint8), box)
    assert lm.roll_deg == pytest.approx(20.0, abs=1.0)
    corners = box.corners()
    assert corners[1, 1] < corners[0, 1]  # counter-clockwise: the top-right corner rises


# ---------------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------------


def test_similarity_transform_is_exact_for_two_points_and_least_squares_beyond() -> None:
    angle, scale, t = np.radians(17.0), 1.7, np.array([5.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.array([[10.0, 20.0], [40.0, 22.0], [25.0, 60.0], [5.0, 45.0]])
    dst = src @ rot.T + t
    m = similarity_transform(src[:2], dst[:2])
    np.testing.assert_allclose(transform_points(m, src), dst, atol=1e-9)
    noisy = dst + np.random.default_rng(0).normal(0, 0.1, dst.shape)
    m4 = similarity_transform(src, noisy)
    np.testing.assert_allclose(m4[:, :2], rot, atol=0.02)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform([[1, 1], [1, 1]], [[0, 0], [1, 1]])


def test_align_face_accepts_bare_eye_points_and_uses_the_mouth_when_asked(
    astronaut: np.ndarray, astro_result: AlignmentResult
) -> None:
    lm = astro_result.landmarks
    eyes = lm.as_array(("left_eye", "right_eye"))
    np.testing.assert_array_equal(align_face(astronaut, eyes, 64), align_face(astronaut, lm, 64))
    m2 = alignment_matrix(lm, 64, "fer")
    m3 = alignment_matrix(lm, 64, "fer", use_mouth=True)
    assert not np.allclose(m2, m3)  # the detected mouth moved the fit
    mouth_err = np.hypot(*(transform_points(m3, [lm.mouth])[0] - TEMPLATES["fer"].points(64, ("mouth",))[0]))
    assert mouth_err < 4.0


def test_unknown_inputs_raise_actionable_errors(astronaut: np.ndarray) -> None:
    import torch

    with pytest.raises(TypeError, match="before ToTensor"):
        detect_faces(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="channels-last"):
        detect_faces(np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(KeyError, match="arcface"):
        align_face(astronaut, [[0, 0], [10, 0]], template="nope")


# ---------------------------------------------------------------------------------------------------------------
# As a transform
# ---------------------------------------------------------------------------------------------------------------


def test_aligner_composes_with_torchvision_and_pickles(astronaut: np.ndarray) -> None:
    from torchvision import transforms as T

    aligner = FaceAligner(size=48, find_mouth=False)
    aligner = pickle.loads(pickle.dumps(aligner))  # DataLoader workers get a copy
    tf = T.Compose([aligner, T.ToTensor()])
    x = tf(Image.fromarray(cv2.resize(astronaut, (160, 160), interpolation=cv2.INTER_AREA)))
    assert tuple(x.shape) == (3, 48, 48)
    assert aligner.stats["aligned"] == 1 and aligner.stats["detection_rate"] == 1.0
    assert "FaceAligner(size=48" in repr(aligner)


# ---------------------------------------------------------------------------------------------------------------
# Example images and the user's folder
# ---------------------------------------------------------------------------------------------------------------


def test_example_images_are_bundled_and_astronaut_comes_first() -> None:
    images = example_images()
    assert [n for n, _ in images] == list(EXAMPLE_IMAGE_SOURCES)
    assert images[0][0] == "astronaut"
    for name, pixels in images:
        assert pixels.dtype == np.uint8 and pixels.ndim in (2, 3) and min(pixels.shape[:2]) >= 256, name
        assert "public domain" in EXAMPLE_IMAGE_SOURCES[name] or "CC0" in EXAMPLE_IMAGE_SOURCES[name]
    with pytest.raises(KeyError, match="astronaut"):
        example_images(["lena"])


def test_load_images_reads_a_folder_and_says_what_is_wrong(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    (tmp_path / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(tmp_path / "a.JPG")
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "sub" / "c.png")
    (tmp_path / "notes.txt").write_text("not an image")
    got = load_images(tmp_path)
    assert [n for n, _ in got] == ["a.JPG", "b.png"] and all(im.mode == "RGB" for _, im in got)
    assert [n for n, _ in load_images(tmp_path, recursive=True)] == ["a.JPG", "b.png", "sub/c.png"]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image"):
        load_images(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------------------------
# Shared data: tiny 48x48 dataset crops (upsampled before detection)
# ---------------------------------------------------------------------------------------------------------------


def _every_kth(paths: list[Path], n: int) -> list[Path]:
    paths = sorted(paths)
    return paths[:: max(1, len(paths) // n)][:n]


# Measured on exactly these samples (OpenCV 4.14): CK+48 40/40 faces (eyes 40/40), FER+ valid 34/40 faces (eyes
# 30/40); on 400-image samples CK+48 100% (eyes 99%), FER+ valid 80.7% (eyes 74.5%).
@pytest.mark.shared
@pytest.mark.parametrize(
    "dataset, pattern, min_faces, min_eyes",
    [("ckplus", "all/*/*.png", 38, 36), ("ferplus", "valid/*/*.png", 31, 27)],
)
def test_detection_rate_on_dataset_crops(
    request: pytest.FixtureRequest, dataset: str, pattern: str, min_faces: int, min_eyes: int
) -> None:
    root = request.getfixturevalue(f"{dataset}_root")
    paths = _every_kth(list(root.glob(pattern)), 40)
    assert len(paths) == 40
    aligner = FaceAligner(size=64, find_mouth=False, upsample_to=96, warn=False)
    for p in paths:
        with Image.open(p) as im:
            out = aligner(im.convert("L"))
        assert out.size == (64, 64)
    stats = aligner.stats
    assert stats["images"] == 40 and stats["aligned"] + stats["center_crop"] == 40
    assert stats["aligned"] >= min_faces, stats
    assert stats["eyes_detected"] >= min_eyes, stats
