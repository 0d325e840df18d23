"""Face alignment of whole splits (``data.align``, :mod:`fernb.data.aligned`): the option, the cache, and its use by
fit and evaluate (also cross-dataset). The toy model and data come from ``toys.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import toys as te

from fernb.data.aligned import METHOD_TEMPLATES, AlignSpec, align_split, aligned_cache_path
from fernb.data.base import FERDataset
from fernb.data.faces import TEMPLATES, Detection, FaceBox, Landmarks, available_detectors, example_images
from fernb.data.faces import align as align_mod
from fernb.data.faces import detectors as det_mod
from fernb.engine import ConfigError, TrainConfig, apply_overrides, evaluate, fit
from fernb.engine.data import align_spec, build_datasets, build_test_dataset
from fernb.labels import LABEL_SPACES

NAMES = ("left_eye", "right_eye", "nose", "mouth")


class _EyesAt:
    """A fake 'mtcnn': one face whose eyes sit at fixed fractions of any image; nothing in images darker than 10."""

    name = "mtcnn"

    def __init__(self, **options: object) -> None:
        self.calls = 0

    def __call__(self, image: np.ndarray) -> list[Detection]:
        type(self).calls = getattr(type(self), "calls", 0) + 1
        if image.max() < 10:
            return []
        h, w = image.shape[:2]
        pts = np.array([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.5, 0.7]]) * [w, h]
        lm = Landmarks.from_array(pts, dict.fromkeys(NAMES, "detected"))
        return [Detection(FaceBox(0.2 * w, 0.2 * h, 0.6 * w, 0.6 * h, score=0.9), lm)]


@pytest.fixture
def fake_mtcnn(monkeypatch: pytest.MonkeyPatch, tmp_path) -> type[_EyesAt]:
    """'mtcnn' is the fake above (installed or not), and caches go to a temporary folder."""
    monkeypatch.setenv("FERNB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(det_mod, "_installed", lambda n: True)
    monkeypatch.setattr(det_mod, "MTCNNDetector", _EyesAt)
    _EyesAt.calls = 0
    return _EyesAt


def _faces(n: int = 6, size: int = 24, dark: tuple[int, ...] = (1,)) -> FERDataset:
    """Gray images; those at ``dark`` are black (no face for the fake detector)."""
    data = te.toy_data(n, size=size)
    pixels = data.pixels.copy()
    pixels[list(dark)] = 0
    return FERDataset("toyfaces", "train", data.label_space, data.targets, pixels=pixels, dists=data.dists)


# -- the option --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("", None),
        ("mtcnn", AlignSpec(detector="mtcnn")),
        ({"detector": "MediaPipe", "template": "fer", "size": 64}, AlignSpec("mediapipe", "fer", 64)),
    ],
)
def test_align_option_parses_a_name_or_a_mapping(value, expected):
    assert AlignSpec.parse(value) == expected


@pytest.mark.parametrize(
    "item, msg",
    [
        ("data.align=dlib", r"data\.align\.detector='dlib': expected one of haar, mtcnn, mediapipe, auto"),
        ('data.align={"detector": "haar", "templat": "fer"}', r"unknown key\(s\) \['templat'\]"),
        ('data.align={"template": "tight"}', r"data\.align\.template='tight': expected one of"),
        ('data.align={"size": 8}', r"data\.align\.size=8"),
    ],
)
def test_a_bad_align_option_is_refused_when_it_is_set(item, msg):
    with pytest.raises(ConfigError, match=msg):
        apply_overrides(TrainConfig(), [item])


def test_a_missing_detector_stops_fit_before_any_data_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(det_mod, "_installed", lambda n: n == "haar")
    cfg = apply_overrides(
        TrainConfig(),
        {"data.dataset": "rafdb", "data.root": str(tmp_path / "absent"), "data.align": "mtcnn", "run.quiet": True},
    )
    with pytest.raises(ConfigError, match="make detectors"):  # not the missing data root
        fit(cfg)


def test_template_auto_takes_the_methods_published_preprocessing(fake_mtcnn):
    assert AlignSpec("mtcnn").resolve("scn", 48).template == METHOD_TEMPLATES["scn"] == "arcface"
    assert AlignSpec("mtcnn").resolve("resnet18", 48) == AlignSpec("mtcnn", "fer", 48)
    assert AlignSpec("mtcnn", size=112).resolve("arbex", 48).size == 112


# -- aligning a split --------------------------------------------------------------------------------------------------
def test_align_split_puts_the_eyes_on_the_template_and_centre_crops_faceless_images(fake_mtcnn):
    ds = _faces()
    out = align_split(ds, AlignSpec("mtcnn", "arcface", 32, border="constant"), progress=False)
    assert out.pixels is not None and out.pixels.shape == (6, 32, 32) and out.pixels.dtype == np.uint8
    assert out.meta["face_found"].tolist() == [True, False, True, True, True, True]
    assert np.array_equal(out.targets, ds.targets) and out.dists is not None
    assert out.fingerprint() != ds.fingerprint()
    # the fake's eyes at (0.35, 0.4) and (0.65, 0.4) land on ArcFace's: the warp is their similarity transform
    src = np.array([[0.35, 0.4], [0.65, 0.4]]) * 24
    dst = TEMPLATES["arcface"].points(32, NAMES[:2])
    scale = np.linalg.norm(dst[1] - dst[0]) / np.linalg.norm(src[1] - src[0])
    assert scale == pytest.approx(np.linalg.norm(np.subtract(*dst)) / (0.3 * 24))
    assert not out.pixels[1].any()  # the black image, centre-cropped, stays black


def test_detection_runs_once_per_split_and_detector_and_is_cached(fake_mtcnn, tmp_path):
    ds = _faces()
    a = align_split(ds, AlignSpec("mtcnn", "fer", 32), progress=False)
    calls = fake_mtcnn.calls
    assert calls == len(ds)
    b = align_split(ds, AlignSpec("mtcnn", "arcface", 48), progress=False)  # other template and size: no detection
    assert fake_mtcnn.calls == calls and b.pixels.shape == (6, 48, 48)
    assert np.array_equal(a.meta["face_found"], b.meta["face_found"])
    path = aligned_cache_path(ds, AlignSpec("mtcnn"))
    assert path.is_file() and path.parent == tmp_path / "cache" / "aligned"
    assert aligned_cache_path(ds, AlignSpec("haar")) != path
    assert aligned_cache_path(ds.subset([0, 1, 2]), AlignSpec("mtcnn")) != path


def test_colour_images_stay_colour(fake_mtcnn):
    ds = _faces()
    rgb = np.repeat(ds.pixels[..., None], 3, axis=3)
    rgb[..., 0] //= 2
    col = FERDataset("toyrgb", "train", ds.label_space, ds.targets, pixels=rgb)
    assert align_split(col, AlignSpec("mtcnn", "fer", 20), progress=False).pixels.shape == (6, 20, 20, 3)


# -- in the engine -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pipeline", ["pil", "tensor"])
def test_both_pipelines_train_on_the_aligned_pixels(fake_mtcnn, tmp_path, pipeline):
    cfg = te.toy_config(tmp_path, **{"data.align": "mtcnn", "data.pipeline": pipeline})
    bundle = build_datasets(cfg, _faces(20, 16), _faces(8, 16, dark=(0, 1)))
    spec = align_spec(cfg)
    assert spec is not None
    expected = align_split(_faces(20, 16), spec, progress=False)
    assert np.array_equal(np.asarray(bundle.train.pixels), expected.pixels)
    rec = bundle.describe()["align"]
    assert rec["detector"] == "mtcnn" and rec["template"] == "fer" and rec["size"] == 16
    assert rec["train"]["faces_found"] == 19 and rec["valid"] == {"n": 8, "faces_found": 6, "face_rate": 0.75}


def test_fit_records_the_alignment_in_run_json_and_evaluate_applies_it(fake_mtcnn, tmp_path):
    cfg = te.toy_config(tmp_path, **{"data.align": {"detector": "mtcnn", "template": "arcface"}})
    res = fit(cfg, train_data=_faces(24, 16), valid_data=_faces(8, 16))
    rec = json.loads((res.run_dir / "run.json").read_text())["data"]["align"]
    assert rec["detector"] == "mtcnn" and rec["template"] == "arcface" and rec["train"]["n"] == 24
    saved = json.loads((res.run_dir / "config.json").read_text())["data"]["align"]
    assert saved == {"detector": "mtcnn", "template": "arcface"}
    # another split read through the run's config (what evaluate does) is aligned the same way
    ds, _ = build_test_dataset(cfg, "valid", dataset="synthetic", options={"n": 14, "size": 32})
    assert ds.pixels is not None and ds.pixels.shape[1:3] == (16, 16) and ds.meta["face_found"].all()


def test_default_runs_are_not_aligned(tmp_path):
    cfg = te.toy_config(tmp_path)
    assert align_spec(cfg) is None
    bundle = build_datasets(cfg, te.toy_data(20), te.toy_data(8, 1))
    assert "align" not in bundle.describe() and "face_found" not in bundle.train.meta


# -- real detectors on real data (skip where ../shared or the detector is absent) --------------------------------------
@pytest.mark.shared
@pytest.mark.parametrize("name", ["mediapipe"])
def test_cross_dataset_evaluation_aligns_ckplus_like_the_run(name, tmp_path, monkeypatch, ckplus_root):
    if name not in available_detectors():
        pytest.skip(f"{name} is not installed (run `make detectors`; CI installs it)")
    monkeypatch.setenv("FERNB_CACHE_DIR", str(tmp_path / "cache"))
    cfg = te.toy_config(tmp_path, **{"data.align": name, "data.img_size": 48})
    ds, _ = build_test_dataset(cfg, "all", dataset="ckplus", root=str(ckplus_root))
    assert ds.pixels is not None and ds.pixels.shape[1:3] == (48, 48)
    assert ds.meta["face_found"].mean() >= 0.99


def test_evaluate_cross_dataset_reports_faces_found(fake_mtcnn, tmp_path):
    cfg = te.toy_config(tmp_path, **{"data.align": "mtcnn", "data.label_space": "basic7"})
    res = fit(cfg, train_data=_faces(21, 16), valid_data=_faces(7, 16))
    out = evaluate(res.run_dir, dataset="synthetic", split="test", options={"n": 14, "size": 32})
    assert out is not None


def test_astronaut_alignment_matches_the_face_aligner(tmp_path, monkeypatch):
    monkeypatch.setenv("FERNB_CACHE_DIR", str(tmp_path / "cache"))
    img = example_images(["astronaut"])[0][1][::2, ::2]
    ds = FERDataset("astro", "all", LABEL_SPACES["basic7"], [0], pixels=img[None].copy())
    out = align_split(ds, AlignSpec("haar", "fer", 64, border="constant"), progress=False)
    ref = align_mod.FaceAligner(64, "fer")(img)
    assert out.meta["face_found"].tolist() == [True]
    assert np.abs(out.pixels[0].astype(int) - np.asarray(ref).astype(int)).max() <= 1
