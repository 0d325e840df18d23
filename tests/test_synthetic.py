"""The synthetic default data: determinism (seeds, chunks, processes), shapes, class balance, label distributions of
blends, label noise (rate, where, to which class), subject-disjoint splits, the cache, the registered reader, and that
the expressions really differ."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

import fernb.data.synthetic as syn
import fernb.data.synthetic.generator as syn_generate
import fernb.data.synthetic.sampling as syn_sampling
from fernb.data import FERDataset, load_dataset
from fernb.data.synthetic import SyntheticConfig, SyntheticFaces, generate, get_synthetic
from fernb.labels import LABEL_SPACES

# A small, fast config; every knob on (blends, noise, occlusion, pose, lighting, blur, sensor noise).
SMALL = SyntheticConfig(n=140, size=48, n_identities=30, seed=3, occlusion_p=0.3, blend_fraction=0.3)


@pytest.fixture(scope="module")
def small() -> SyntheticFaces:
    return generate(SMALL)


def _assert_same(a: SyntheticFaces, b: SyntheticFaces) -> None:
    assert a.pixels.tobytes() == b.pixels.tobytes()
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.dists, b.dists)
    assert np.array_equal(a.subjects, b.subjects)
    assert a.meta.keys() == b.meta.keys()
    for k in a.meta:
        assert np.array_equal(a.meta[k], b.meta[k]), k


# -- determinism -------------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes(small: SyntheticFaces) -> None:
    _assert_same(small, generate(SMALL))


def test_different_seed_gives_different_data(small: SyntheticFaces) -> None:
    other = generate(SMALL.replace(seed=4))
    assert (small.pixels != other.pixels).mean() > 0.5
    assert not np.array_equal(small.meta["identity"], other.meta["identity"])


def test_chunks_concatenate_to_the_serial_result(small: SyntheticFaces) -> None:
    parts = [generate(SMALL, start=a, stop=b) for a, b in [(0, 1), (1, 60), (60, 61), (61, 140)]]
    assert [p.start for p in parts] == [0, 1, 60, 61]
    _assert_same(small, syn_generate._concat(parts))


def test_a_sample_does_not_depend_on_n(small: SyntheticFaces) -> None:
    head = generate(SMALL.replace(n=50))
    assert head.pixels.tobytes() == small.pixels[:50].tobytes()
    assert np.array_equal(head.labels, small.labels[:50])


def test_parallel_workers_match_serial() -> None:
    cfg = SyntheticConfig(n=300, size=32, n_identities=20, seed=1)
    _assert_same(generate(cfg, workers=1), generate(cfg, workers=2))


# -- shapes and classes --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [48, 64, 96, 112])
@pytest.mark.parametrize("color", [False, True])
def test_shapes_and_dtypes(size: int, color: bool) -> None:
    f = generate(SyntheticConfig(n=9, size=size, color=color, n_identities=5))
    assert f.pixels.shape == ((9, size, size, 3) if color else (9, size, size))
    assert f.pixels.dtype == np.uint8
    assert f.labels.dtype == np.int64 and f.labels.shape == (9,)
    assert f.dists.dtype == np.float32 and f.dists.shape == (9, 7)
    assert f.subjects.shape == (9,) and all(s.startswith("s") for s in f.subjects)
    assert f.pixels.std() > 10  # not blank
    if color:  # skin, hair and background colours: the channels are not all equal
        assert np.abs(f.pixels[..., 0].astype(int) - f.pixels[..., 2]).mean() > 3
    ds = f.to_dataset("all")
    img = ds.load_image(0)
    assert img.size == (size, size) and img.mode == ("RGB" if color else "L")


@pytest.mark.parametrize("space", ["basic7", "ferplus8"])
def test_classes_are_balanced_in_canonical_order(space: str) -> None:
    c = len(LABEL_SPACES[space])
    f = generate(SyntheticConfig(n=3 * c + 2, size=32, label_space=space, noise_rate=0.0, n_identities=10))
    counts = np.bincount(f.meta["true_label"], minlength=c)
    assert counts.max() - counts.min() <= 1 and counts.min() == 3
    assert np.array_equal(f.labels, f.meta["true_label"])  # no noise asked for
    assert f.class_names == list(LABEL_SPACES[space].names)
    assert f.dists.shape[1] == c


def test_rejects_bad_config_with_the_field_name() -> None:
    with pytest.raises(ValueError, match="label_space"):
        SyntheticConfig(label_space="affwild2")
    with pytest.raises(ValueError, match="blend_weight"):
        SyntheticConfig(blend_weight=(0.2, 0.6))
    with pytest.raises(TypeError, match="no field"):
        SyntheticConfig().replace(nn=3)


# -- ambiguity: label distributions --------------------------------------------------------------------------------
def test_distributions_sum_to_one_and_match_the_blend_weights(small: SyntheticFaces) -> None:
    d, m = small.dists, small.meta
    assert np.allclose(d.sum(1), 1.0, atol=1e-6)
    rows = np.arange(len(d))
    blend = m["second_label"] >= 0
    assert 0.15 < blend.mean() < 0.45  # blend_fraction 0.3
    w = m["blend_weight"]
    assert np.all((w[blend] >= 0.15) & (w[blend] <= 0.45)) and np.all(w[~blend] == 0)
    assert np.allclose(d[rows[blend], m["true_label"][blend]], 1 - w[blend], atol=1e-6)
    assert np.allclose(d[rows[blend], m["second_label"][blend]], w[blend], atol=1e-6)
    assert np.all(m["second_label"][blend] != m["true_label"][blend])
    assert np.array_equal(d[~blend], np.eye(7, dtype=np.float32)[m["true_label"][~blend]])
    assert np.array_equal(d.argmax(1), m["true_label"])  # the first class stays the majority


def test_blend_temperature_and_label_smoothing() -> None:
    cfg = SyntheticConfig(
        n=60, size=32, n_identities=10, blend_fraction=0.5, blend_temperature=2.0, label_smoothing=0.1
    )
    f = generate(cfg)
    d, m = f.dists, f.meta
    blend = np.flatnonzero(m["second_label"] >= 0)
    w = m["blend_weight"][blend].astype(np.float64)
    hot = np.sqrt(1 - w) / (np.sqrt(1 - w) + np.sqrt(w))  # (1-w, w) ** (1/T), renormalised
    assert np.allclose(d[blend, m["true_label"][blend]], hot, atol=1e-6)
    pure = np.flatnonzero(m["second_label"] < 0)
    assert np.allclose(d[pure, m["true_label"][pure]], 0.9 + 0.1 / 7, atol=1e-6)
    assert np.allclose(d[pure].min(1), 0.1 / 7, atol=1e-6)
    assert np.allclose(d.sum(1), 1.0, atol=1e-6)


# -- label noise -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def noisy() -> SyntheticFaces:
    cfg = SyntheticConfig(
        n=600,
        size=32,
        n_identities=40,
        noise_rate=0.3,
        noisy_splits=("train", "valid", "test"),
        occlusion_p=0.0,
        blur_p=0.0,
    )
    return generate(cfg)


def test_noise_rate_is_honoured_and_flags_are_exact(noisy: SyntheticFaces) -> None:
    m = noisy.meta
    # Binomial(600, 0.3): sd 0.019, so 0.3 +- 0.07 is a 3.7-sigma band.
    assert abs(m["is_noisy"].mean() - 0.3) < 0.07
    assert np.array_equal(m["is_noisy"], noisy.labels != m["true_label"])
    flipped = noisy.labels[m["is_noisy"]]
    assert len(np.unique(flipped)) == 7  # symmetric: flips land on every class


def test_valid_and_test_labels_are_clean_by_default(small: SyntheticFaces) -> None:
    f = generate(SMALL.replace(noise_rate=0.5))
    split, noisy = f.meta["split"], f.meta["is_noisy"]
    assert noisy[split == "train"].mean() > 0.3
    assert not noisy[split != "train"].any()
    assert np.array_equal(f.labels[split != "train"], f.meta["true_label"][split != "train"])


def test_asymmetric_noise_flips_to_the_confusable_class() -> None:
    cfg = SyntheticConfig(
        n=300,
        size=32,
        n_identities=30,
        label_space="ferplus8",
        noise_rate=0.4,
        noise_mode="asymmetric",
        noisy_splits=("train", "valid", "test"),
    )
    f = generate(cfg)
    names = f.class_names
    noisy = f.meta["is_noisy"]
    assert noisy.mean() > 0.25
    for true, given in zip(f.meta["true_label"][noisy], f.labels[noisy]):
        assert names[given] == syn.CONFUSABLE[names[true]]
    pairs = {(names[t], names[g]) for t, g in zip(f.meta["true_label"][noisy], f.labels[noisy])}
    assert {("fear", "surprise"), ("surprise", "fear"), ("disgust", "angry"), ("sad", "neutral")} <= pairs


def test_basic7_confusable_classes_stay_in_the_label_space() -> None:
    idx = syn_sampling._confusable_index(LABEL_SPACES["basic7"].names)
    names = LABEL_SPACES["basic7"].names
    assert names[idx[names.index("happy")]] == "neutral"
    assert all(i != j for i, j in enumerate(idx))


# -- subjects and splits -------------------------------------------------------------------------------------------
def test_splits_are_subject_disjoint_and_cover_all(small: SyntheticFaces) -> None:
    parts = {s: small.to_dataset(s) for s in ("train", "valid", "test")}
    subjects = {s: set(ds.subjects) for s, ds in parts.items()}
    for a, b in itertools.combinations(subjects, 2):
        assert not subjects[a] & subjects[b], (a, b)
    assert sum(len(ds) for ds in parts.values()) == len(small)
    assert len(parts["train"]) > len(parts["valid"]) and len(parts["train"]) > len(parts["test"])
    # the identity split does not depend on n: a bigger set keeps every identity in its split
    big = generate(SMALL.replace(n=200), start=140)
    first = dict(zip(small.meta["identity"], small.meta["split"]))
    assert all(first.get(i, s) == s for i, s in zip(big.meta["identity"], big.meta["split"]))


# -- cache -----------------------------------------------------------------------------------------------------------
def test_cache_round_trip_is_identical_and_faster(tmp_path: Path) -> None:
    cfg = SMALL.replace(n=200)
    t0 = time.perf_counter()
    made = get_synthetic(cfg, cache_dir=tmp_path)
    t_make = time.perf_counter() - t0
    path = syn.cache_path(cfg, tmp_path)
    assert path.is_file() and path.parent == tmp_path / "synthetic" and path.stem == cfg.fingerprint()
    assert not list(path.parent.glob("*.tmp*"))  # the atomic write left no temp file
    t0 = time.perf_counter()
    loaded = get_synthetic(cfg, cache_dir=tmp_path)
    t_load = time.perf_counter() - t0
    _assert_same(made, loaded)
    assert loaded.config == cfg
    assert t_load < t_make / 3, (t_load, t_make)


def test_cache_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERNB_CACHE_DIR", str(tmp_path))
    cfg = SyntheticConfig(n=5, size=32, n_identities=5)
    assert syn.cache_path(cfg) == tmp_path / "synthetic" / f"{cfg.fingerprint()}.npz"
    get_synthetic(cfg)
    assert syn.cache_path(cfg).is_file()


def test_a_broken_cache_file_is_regenerated(tmp_path: Path) -> None:
    cfg = SyntheticConfig(n=5, size=32, n_identities=5)
    path = syn.cache_path(cfg, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=str(path.name)):
        SyntheticFaces.load(path)
    got = get_synthetic(cfg, cache_dir=tmp_path)
    _assert_same(got, SyntheticFaces.load(path))


def test_fingerprint_changes_with_every_knob() -> None:
    base = SyntheticConfig()
    changed = [
        base.replace(n=3),
        base.replace(seed=1),
        base.replace(noise_mode="asymmetric"),
        base.replace(color=True),
        base.replace(occlusion_types=("hand",)),
    ]
    prints = {c.fingerprint() for c in changed}
    assert len(prints) == len(changed) and base.fingerprint() not in prints
    assert SyntheticConfig(intensity=[0.5, 1.0]) == base  # lists from JSON compare equal to tuples


# -- the registered reader -------------------------------------------------------------------------------------------
def test_load_dataset_returns_a_fer_dataset(tmp_path: Path) -> None:
    ds = load_dataset("synthetic", tmp_path, split="train", n=70, size=48, seed=2, n_identities=12)
    assert isinstance(ds, FERDataset)
    assert ds.name == "synthetic" and ds.split == "train"
    assert ds.class_names == list(LABEL_SPACES["basic7"].names)
    item = ds[0]
    assert set(item) >= {"image", "label", "index", "dist", "subject"}
    assert item["image"].size == (48, 48)
    assert tuple(item["dist"].shape) == (7,) and abs(float(item["dist"].sum()) - 1) < 1e-6
    assert isinstance(item["label"], int) and item["subject"].startswith("s")
    assert set(ds.meta["split"]) == {"train"}
    assert {"true_label", "is_noisy", "blend_weight", "second_label", "intensity"} <= set(ds.meta)
    test = load_dataset("synthetic", tmp_path, split="test", n=70, size=48, seed=2, n_identities=12)
    assert not set(ds.subjects) & set(test.subjects)
    assert not test.meta["is_noisy"].any()
    assert len(list((tmp_path / "synthetic").glob("*.npz"))) == 1  # both splits came from one cached set


def test_load_dataset_ferplus8_and_label_space_restriction(tmp_path: Path) -> None:
    opts = {"n": 40, "size": 32, "n_identities": 8, "noise_rate": 0.0}
    ds = load_dataset("synthetic", tmp_path, split="all", classes="ferplus8", **opts)
    assert ds.class_names == list(LABEL_SPACES["ferplus8"].names)
    assert ds.class_counts()["contempt"] == 5
    seven = load_dataset("synthetic", tmp_path, split="all", classes="ferplus8", label_space="basic7", **opts)
    assert seven.class_names == list(LABEL_SPACES["basic7"].names) and len(seven) == 35
    # the label columns of meta follow the restriction (no noise here: true labels are the given ones)
    assert np.array_equal(ds.meta["true_label"], ds.targets)
    assert np.array_equal(seven.meta["true_label"], seven.targets)
    assert seven.meta["second_label"].max() < 7 and seven.meta["second_label"].min() >= -1


# -- the faces ---------------------------------------------------------------------------------------------------------
def test_expressions_differ_for_the_same_identity() -> None:
    names = LABEL_SPACES["ferplus8"].names
    for identity in range(3):
        faces = {c: syn.render_face(c, identity=identity, intensity=0.85, size=64).astype(np.float64) for c in names}
        for a, b in itertools.combinations(names, 2):
            d = np.abs(faces[a] - faces[b])
            changed = int((d > 12).sum())
            floor = 25 if {a, b} == {"neutral", "contempt"} else 60  # contempt is a small, one-sided change
            assert changed >= floor and d.max() > 30, (identity, a, b, changed, d.max())


def test_render_face_knobs_change_the_image() -> None:
    base = syn.render_face("happy", identity=1, size=48)
    assert base.shape == (48, 48) and base.dtype == np.uint8
    assert np.array_equal(base, syn.render_face("happy", identity=1, size=48))
    for knob in [
        {"roll": 10.0},
        {"yaw": 15.0},
        {"scale": 1.1},
        {"shift": (0.05, 0.0)},
        {"lighting": 0.8},
        {"blur": 1.5},
        {"noise_std": 0.05},
        {"occlusion": "sunglasses"},
        {"occlusion": "mask"},
        {"occlusion": "hand"},
        {"occlusion": "rect"},
        {"intensity": 0.3},
        {"identity": 2},
    ]:
        other = syn.render_face("happy", **{"identity": 1, "size": 48, **knob})
        assert np.abs(other.astype(int) - base).mean() > 0.3, knob
    rgb = syn.render_face({"fear": 0.7, "surprise": 0.3}, color=True, size=48)
    assert rgb.shape == (48, 48, 3)


def test_expression_actions_validates_names() -> None:
    acts = syn.expression_actions({"brow_lower": 1.0})
    assert acts["brow_lower"] == 1.0 and set(acts) == set(syn.ACTIONS)
    blend = syn.expression_actions({"fear": 1.0, "surprise": 1.0})
    assert blend["lip_stretch"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown expression or action"):
        syn.expression_actions({"smile": 1.0})
    protos = syn.expression_prototypes()
    assert set(protos) == set(LABEL_SPACES["ferplus8"].names)
    assert protos["contempt"].get("lip_corner_pull_right", 0) > 0 and "lip_corner_pull_left" not in protos["contempt"]
