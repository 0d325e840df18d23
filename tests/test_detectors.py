"""Pluggable face detectors (fernb.data.faces.detectors) and FaceAligner(detector=...)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from PIL import Image

from fernb.data.faces import (
    TEMPLATES,
    Detection,
    Detector,
    FaceAligner,
    FaceBox,
    Landmarks,
    MissingDetectorError,
    available_detectors,
    create_detector,
    detector_name,
    example_images,
    to_rgb_u8,
)
from fernb.data.faces import align as align_mod
from fernb.data.faces import detectors as det_mod

# The astronaut's eyes and face, as in tests/test_faces.py (verified by eye once).
ASTRO_LEFT_EYE = (202.0, 100.0)
ASTRO_RIGHT_EYE = (247.0, 102.0)
ASTRO_FACE = (185.0, 80.0, 262.0, 150.0)
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth")
OPTIONAL = [pytest.param(n, id=n) for n in ("mtcnn", "mediapipe")]


def _need(name: str) -> None:
    if name not in available_detectors():
        pytest.skip(f"{det_mod.DETECTOR_PACKAGES[name][1]} is not installed (run `make detectors`; CI installs it)")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return example_images(["astronaut"])[0][1]


class _FixedDetector:
    """Always the same face, with landmarks."""

    name = "fixed"

    def __call__(self, image: np.ndarray) -> list[Detection]:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        lm = Landmarks((40.0, 50.0), (80.0, 50.0), (60.0, 72.0), (60.0, 92.0), dict.fromkeys(LANDMARKS, "detected"))
        return [Detection(FaceBox(20, 20, 80, 90, score=0.99), lm)]


def test_to_rgb_u8_accepts_gray_float_rgba_and_pil() -> None:
    gray = np.full((5, 6), 0.5, dtype=np.float32)
    assert to_rgb_u8(gray).shape == (5, 6, 3) and to_rgb_u8(gray).dtype == np.uint8
    assert int(to_rgb_u8(gray)[0, 0, 0]) == 127
    assert to_rgb_u8(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
    assert to_rgb_u8(Image.new("L", (6, 5))).shape == (5, 6, 3)


def test_haar_detector_finds_the_astronaut_without_landmarks(astronaut: np.ndarray) -> None:
    det = create_detector("haar")
    assert isinstance(det, Detector)
    found = det(astronaut)
    assert found and found[0].landmarks is None
    x0, y0, x1, y1 = ASTRO_FACE
    b = found[0].box
    assert b.x <= x0 and b.y <= y0 and b.x + b.w >= x1 and b.y + b.h >= y1


def test_haar_detector_with_landmarks_returns_the_eye_search(astronaut: np.ndarray) -> None:
    lm = create_detector("haar", landmarks=True)(astronaut)[0].landmarks
    assert lm is not None and lm.eyes_detected == 2
    assert np.allclose(lm.left_eye, ASTRO_LEFT_EYE, atol=6) and np.allclose(lm.right_eye, ASTRO_RIGHT_EYE, atol=6)


def test_unknown_detector_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown 'nope'"):
        create_detector("nope")
    with pytest.raises(ValueError, match="unknown"):
        FaceAligner(detector="nope")


@pytest.mark.parametrize("name", ["mtcnn", "mediapipe"])
def test_missing_package_names_it_and_the_make_target(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(det_mod, "_installed", lambda n: n == "haar")
    with pytest.raises(MissingDetectorError, match="make detectors") as err:
        create_detector(name)
    assert det_mod.DETECTOR_PACKAGES[name][1].split("==")[0] in str(err.value)
    with pytest.raises(ImportError, match="make detectors"):
        FaceAligner(detector=name)


def test_auto_falls_back_to_haar_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(det_mod, "_installed", lambda n: n == "haar")
    monkeypatch.setattr(det_mod, "_AUTO_WARNED", False)
    with pytest.warns(UserWarning, match="make detectors"):
        assert detector_name(create_detector("auto")) == "haar"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert detector_name(create_detector("auto")) == "haar"
    assert available_detectors() == ("haar",)


def test_auto_takes_the_first_installed_in_its_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(det_mod, "MTCNNDetector", lambda **kw: "mtcnn-built")
    monkeypatch.setattr(det_mod, "MediaPipeDetector", lambda **kw: "mediapipe-built")
    monkeypatch.setattr(det_mod, "_installed", lambda n: True)
    assert create_detector("auto") == "mediapipe-built"
    monkeypatch.setattr(det_mod, "_installed", lambda n: n != "mediapipe")
    assert create_detector("auto") == "mtcnn-built"


def test_detector_name_of_a_plain_function() -> None:
    def my_detector(image: np.ndarray) -> list[Detection]:
        return []

    assert detector_name(my_detector).endswith("my_detector")
    assert detector_name(_FixedDetector()) == "fixed"


def test_aligner_uses_the_detectors_landmarks_and_skips_the_eye_search(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_eye_search(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Haar eye search ran although the detector gave landmarks")

    monkeypatch.setattr(align_mod, "detect_landmarks", no_eye_search)
    aligner = FaceAligner(size=100, template="arcface", detector=_FixedDetector())
    res = aligner.align(np.zeros((120, 120), np.uint8))
    assert res.mode == "aligned" and aligner.detector == "fixed"
    out = res.aligned_landmarks
    assert out is not None
    tpl = TEMPLATES["arcface"].points(100, ("left_eye", "right_eye"))
    assert np.allclose(out.as_array(("left_eye", "right_eye")), tpl, atol=1e-6)


def test_aligner_with_use_mouth_fits_the_detected_nose_and_mouth() -> None:
    res = FaceAligner(size=100, template="arcface", detector=_FixedDetector(), use_mouth=True).align(
        np.zeros((120, 120, 3), np.uint8)
    )
    out = res.aligned_landmarks
    assert out is not None
    eyes_only = FaceAligner(size=100, template="arcface", detector=_FixedDetector()).align(
        np.zeros((120, 120), np.uint8)
    )
    assert not np.allclose(res.matrix, eyes_only.matrix)  # four points in the fit, not two
    tpl = TEMPLATES["arcface"].points(100)
    assert np.abs(out.as_array() - tpl).max() < 10


def test_aligner_falls_back_to_a_centre_crop_when_the_detector_finds_nothing() -> None:
    aligner = FaceAligner(size=48, detector=lambda image: [], warn=False)
    res = aligner.align(np.zeros((60, 80, 3), np.uint8))
    assert res.mode == "center_crop" and aligner.stats["fallback_rate"] == 1.0


def test_aligner_falls_back_to_the_eye_search_for_a_box_without_landmarks(astronaut: np.ndarray) -> None:
    haar_boxes = create_detector("haar")
    res = FaceAligner(size=112, detector=lambda image: haar_boxes(image)).align(astronaut)
    assert res.landmarks is not None and res.landmarks.eyes_detected == 2


def test_detector_options_with_a_callable_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="need a detector name"):
        FaceAligner(detector=_FixedDetector(), upsample_to=64)


def test_default_aligner_is_haar_and_pickles(astronaut: np.ndarray) -> None:
    aligner = FaceAligner(size=64)
    assert aligner.detector == "haar" and "detector='haar'" in repr(aligner)
    clone = pickle.loads(pickle.dumps(aligner))
    assert np.array_equal(clone(astronaut), aligner(astronaut))


# ---- the optional detectors (skip when their package is absent; CI installs them with `make detectors`)


@pytest.mark.parametrize("name", OPTIONAL)
def test_optional_detector_finds_the_astronaut_with_five_points(name: str, astronaut: np.ndarray) -> None:
    _need(name)
    found = create_detector(name)(astronaut)
    assert found, f"{name} found no face"
    d = found[0]
    cx, cy = d.box.center
    x0, y0, x1, y1 = ASTRO_FACE
    assert x0 < cx < x1 and y0 < cy < y1
    assert d.landmarks is not None and d.landmarks.detected == ("left_eye", "right_eye", "nose", "mouth")
    assert d.landmarks.left_eye[0] < d.landmarks.right_eye[0]
    assert np.allclose(d.landmarks.left_eye, ASTRO_LEFT_EYE, atol=8)
    assert np.allclose(d.landmarks.right_eye, ASTRO_RIGHT_EYE, atol=8)


@pytest.mark.parametrize("name", OPTIONAL)
def test_optional_detector_finds_nothing_in_a_flat_image(name: str) -> None:
    _need(name)
    assert create_detector(name)(np.full((96, 128, 3), 127, np.uint8)) == []


@pytest.mark.parametrize("name", OPTIONAL)
def test_optional_detector_aligns_and_pickles(name: str, astronaut: np.ndarray) -> None:
    _need(name)
    aligner = FaceAligner(size=112, template="arcface", detector=name)
    res = aligner.align(astronaut)
    assert res.mode == "aligned" and aligner.detector == name
    clone = pickle.loads(pickle.dumps(aligner))
    assert np.array_equal(clone(astronaut), res.image)


def test_mtcnn_loads_the_wheels_weights_with_weights_only(monkeypatch: pytest.MonkeyPatch) -> None:
    _need("mtcnn")
    import torch

    calls: list[dict] = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(dict(kwargs))
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "load", spy)
    det = create_detector("mtcnn")
    det(np.zeros((64, 64, 3), np.uint8))
    ours = [c for c in calls if c.get("weights_only") is True]
    assert len(ours) == 3


@pytest.mark.parametrize("name", OPTIONAL)
def test_optional_detector_works_in_a_forked_dataloader_worker(name: str, astronaut: np.ndarray) -> None:
    _need(name)
    import torch

    aligner = FaceAligner(size=64, detector=name)
    expected = aligner(astronaut)  # the parent has built its backend before the fork

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> np.ndarray:
            return aligner(astronaut)

    ctx = "fork" if "fork" in torch.multiprocessing.get_all_start_methods() else None
    loader = torch.utils.data.DataLoader(Images(), batch_size=2, num_workers=1, multiprocessing_context=ctx)
    (batch,) = list(loader)
    assert np.array_equal(batch[0].numpy(), expected)
