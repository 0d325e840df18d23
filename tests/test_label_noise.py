"""Label noise on any dataset (``data.label_noise``, :mod:`fernb.data.noise`).

The toy model, loss and data come from ``toys.py``; the fake RAF-DB tree from ``fakes.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import toys as te
from fakes import make_rafdb

from fernb.data import LabelNoiseError, apply_label_noise, load_dataset, plan_label_noise
from fernb.data.errors import DataFormatError
from fernb.data.noise import FER_CONFUSION, confusion_partners
from fernb.engine import ConfigError, TrainConfig, apply_overrides, fit
from fernb.engine.data import build_datasets
from fernb.labels import LABEL_SPACES, LabelSpace

SYM = {"rate": 0.3, "kind": "symmetric", "seed": 5}


def _valid():
    return te.toy_data(14, 1)


# -- the noise ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [40, 61, 100])
def test_symmetric_noise_flips_exactly_round_rate_n_labels_each_to_another_class(n):
    ds = te.toy_data(n)
    noisy, rec = apply_label_noise(ds, SYM)
    flipped = noisy.targets != ds.targets
    assert flipped.sum() == int(np.floor(0.3 * n + 0.5)) == rec["flipped"]
    assert rec["realised_rate"] == flipped.mean()
    assert np.array_equal(noisy.meta["true_label"], ds.targets)  # the truth is the clean label
    assert np.array_equal(noisy.meta["is_noisy"], flipped)
    assert set(np.unique(noisy.targets[flipped])) <= set(range(7))


def test_symmetric_noise_reaches_every_other_class_uniformly():
    ds = te.toy_data(7000)
    noisy, _ = apply_label_noise(ds, {"rate": 0.5, "seed": 0})
    moved = noisy.targets != ds.targets
    pairs = np.zeros((7, 7), int)
    np.add.at(pairs, (ds.targets[moved], noisy.targets[moved]), 1)
    assert np.all(np.diag(pairs) == 0)
    off = pairs[~np.eye(7, dtype=bool)]
    assert off.min() > 0.6 * off.mean() and off.max() < 1.4 * off.mean()  # ~500 per pair


def test_asymmetric_noise_sends_each_class_to_its_confusable_class():
    ds = te.toy_data(200)
    noisy, rec = apply_label_noise(ds, {"rate": 0.4, "kind": "asymmetric", "seed": 1})
    names = ds.label_space.names
    moved = np.flatnonzero(noisy.targets != ds.targets)
    assert len(moved) == 80
    for i in moved:
        assert names[noisy.targets[i]] == FER_CONFUSION[names[ds.targets[i]]][0]
    assert rec["mapping"] == {
        "neutral": "sad",
        "happy": "neutral",
        "sad": "neutral",
        "surprise": "fear",
        "fear": "surprise",
        "disgust": "angry",
        "angry": "disgust",
    }


@pytest.mark.parametrize("space", [*LABEL_SPACES.values(), LabelSpace("pair", ("happy", "surprise"))], ids=str)
def test_asymmetric_partners_are_another_class_of_the_same_space(space):
    partners = confusion_partners(space)
    for i, j in enumerate(partners.tolist()):
        first = next(p for p in FER_CONFUSION[space.names[i]] if p in space.names)
        assert j != i and space.names[j] == first


def test_asymmetric_noise_skips_classes_without_a_partner_in_the_space():
    space = LabelSpace("odd", ("happy", "other"))  # neither class has a partner in this space
    assert confusion_partners(space).tolist() == [-1, -1]
    ds = te.toy_data(20)
    two = type(ds)("toy", "train", space, ds.targets % 2, pixels=ds.pixels)
    with pytest.raises(LabelNoiseError, match="confusable partner"):
        plan_label_noise(two, {"rate": 0.2, "kind": "asymmetric"})
    assert plan_label_noise(two, {"rate": 0.0, "kind": "asymmetric"}).record["flipped"] == 0


def test_noise_seed_fixes_the_flips_whatever_the_run_seed_and_defaults_to_it():
    ds = te.toy_data(90)
    a = plan_label_noise(ds, SYM, seed=0).targets
    b = plan_label_noise(ds, SYM, seed=123).targets
    assert np.array_equal(a, b)
    no_seed = {"rate": 0.3}
    c, d = plan_label_noise(ds, no_seed, seed=5), plan_label_noise(ds, no_seed, seed=6)
    assert np.array_equal(c.targets, a) and c.record["seed_from"] == "run"  # run seed 5 == spec seed 5
    assert not np.array_equal(c.targets, d.targets)


def test_flipped_distributions_become_one_hot_of_the_new_label_and_others_stay():
    ds = te.toy_data(50)
    noisy, _ = apply_label_noise(ds, SYM)
    assert ds.dists is not None and noisy.dists is not None
    moved = noisy.targets != ds.targets
    assert np.array_equal(noisy.dists[moved], np.eye(7, dtype=np.float32)[noisy.targets[moved]])
    assert np.array_equal(noisy.dists[~moved], ds.dists[~moved])


def test_synthetic_truth_survives_and_is_noisy_compares_to_it():
    ds = load_dataset("synthetic", split="train", n=120, size=32, seed=0)
    own = ds.meta["is_noisy"].copy()
    assert own.any()  # the synthetic data has noise of its own
    noisy, rec = apply_label_noise(ds, {"rate": 0.25, "seed": 0})
    assert np.array_equal(noisy.meta["true_label"], ds.meta["true_label"])
    assert np.array_equal(noisy.meta["is_noisy"], noisy.targets != ds.meta["true_label"])
    assert rec["noisy_rate"] == noisy.meta["is_noisy"].mean() >= rec["realised_rate"] - 1e-9 - own.mean()
    assert np.array_equal(noisy.meta["label_noise_flipped"], noisy.targets != ds.targets)


# -- the file kind -----------------------------------------------------------------------------------------------------
RAF_TRAIN = [1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5]  # RAF-DB file codes


def _raf(tmp_path: Path, noisy_codes: list[int], train: list[int] = RAF_TRAIN) -> tuple[Path, Path]:
    root = tmp_path / "raf"
    make_rafdb(root, train, [4, 5])
    lines = [f"train_{i:05d}.jpg {c}" for i, c in enumerate(noisy_codes, start=1)]
    noise = root / "EmoLabel" / "noise01.txt"
    noise.write_text("\n".join(lines) + "\ntest_00001.jpg 4\n")
    return root, noise


def test_file_noise_gives_each_image_the_file_label_by_name(tmp_path):
    codes = [1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5]
    codes[0], codes[4] = 2, 7  # surprise -> fear, sadness -> neutral
    root, noise = _raf(tmp_path, codes)
    ds = load_dataset("rafdb", root, "train")
    noisy, rec = apply_label_noise(ds, {"kind": "file", "file": str(noise)})
    names = ds.label_space.names
    assert [names[t] for t in noisy.targets[[0, 4]]] == ["fear", "neutral"]
    assert [names[t] for t in noisy.meta["true_label"][[0, 4]]] == ["surprise", "sad"]
    assert rec["flipped"] == 2 and rec["realised_rate"] == 2 / 12 and rec["kind"] == "file"
    assert rec["file_sha256"] == __import__("hashlib").sha256(noise.read_bytes()).hexdigest()
    assert rec["realised_rate_per_class"]["surprise"] == 0.5


def test_file_noise_names_the_file_and_line_of_a_label_out_of_range(tmp_path):
    root, noise = _raf(tmp_path, [1, 2, 3, 4, 5, 6, 7, 1, 9, 3, 4, 5])
    with pytest.raises(DataFormatError, match=r"noise01\.txt, line 9: label 9 is out of range"):
        apply_label_noise(load_dataset("rafdb", root, "train"), {"kind": "file", "file": str(noise)})


def test_file_noise_names_the_training_images_the_file_lacks(tmp_path):
    root, noise = _raf(tmp_path, [1, 2, 3, 4, 5, 6, 7, 1, 2, 3])  # no line for train_00011, train_00012
    with pytest.raises(DataFormatError, match=r"noise01\.txt: no label for 2 of the 12 .*train_00011"):
        apply_label_noise(load_dataset("rafdb", root, "train"), {"kind": "file", "file": str(noise)})


def test_file_noise_under_the_tensor_pipeline_keeps_the_clean_decoded_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FERNB_CACHE_DIR", str(tmp_path / "cache"))
    train = list(range(1, 8)) * 4
    codes = list(train)
    codes[1], codes[9] = 1, 4
    root, noise = _raf(tmp_path, codes, train)
    base = {
        "data.dataset": "rafdb",
        "data.root": str(root),
        "data.valid_split": None,
        "data.valid_fraction": 0.25,
        "data.pipeline": "tensor",
        "data.img_size": 8,
        "run.quiet": True,
    }
    clean = build_datasets(apply_overrides(TrainConfig(), base))
    noisy = build_datasets(
        apply_overrides(TrainConfig(), {**base, "data.label_noise": {"kind": "file", "file": str(noise)}})
    )
    assert len(list((tmp_path / "cache" / "arrays").glob("rafdb-train-*"))) == 1  # decoded once, for both runs
    assert noisy.train.pixels is not None and np.array_equal(noisy.train.pixels, clean.train.pixels)
    assert noisy.train.fingerprint() != clean.train.fingerprint()
    assert np.array_equal(noisy.valid.targets, clean.valid.targets) and "is_noisy" not in noisy.valid.meta
    assert noisy.label_noise is not None and noisy.label_noise["flipped"] == int(noisy.train.meta["is_noisy"].sum())


# -- the config option -------------------------------------------------------------------------------------------------
def test_dotted_overrides_set_the_label_noise_fields_one_by_one():
    cfg = apply_overrides(TrainConfig(), ["data.label_noise.rate=0.3", "data.label_noise.kind=asymmetric"])
    assert cfg.data.label_noise == {"rate": 0.3, "kind": "asymmetric"}
    cfg = apply_overrides(cfg, ['data.label_noise={"rate": 0.1, "seed": 2}'])
    assert cfg.data.label_noise == {"rate": 0.1, "seed": 2}
    assert apply_overrides(cfg, ["data.label_noise=null"]).data.label_noise is None


@pytest.mark.parametrize(
    "item, msg",
    [
        ("data.label_noise.kind=symetric", r"data\.label_noise\.kind='symetric': expected one of symmetric"),
        ("data.label_noise.rate=1.0", r"data\.label_noise\.rate=1\.0: expected .* in \[0, 1\)"),
        ("data.label_noise.rate=-0.1", r"data\.label_noise\.rate=-0\.1"),
        ("data.label_noise.sede=1", r"unknown key\(s\) \['sede'\]"),
    ],
)
def test_a_bad_label_noise_field_is_refused_when_it_is_set(item, msg):
    with pytest.raises(ConfigError, match=msg):
        apply_overrides(TrainConfig(), [item])


@pytest.mark.parametrize(
    "spec, msg",
    [
        (
            {"kind": "file", "file": "/nonexistent/noise03.txt"},
            r"data\.label_noise\.file=.*noise03\.txt.: no such file",
        ),
        ({"kind": "file"}, r"data\.label_noise\.kind='file' needs data\.label_noise\.file"),
        ({"kind": "asymmetric"}, r"data\.label_noise\.rate is missing"),
    ],
)
def test_an_incomplete_label_noise_spec_stops_fit_before_any_data_is_read(tmp_path, spec, msg):
    cfg = apply_overrides(
        TrainConfig(),
        {
            "data.dataset": "rafdb",
            "data.root": str(tmp_path / "absent"),
            "data.label_noise": spec,
            "run.out_dir": str(tmp_path),
            "run.quiet": True,
        },
    )
    with pytest.raises(ConfigError, match=msg):  # not the missing data root: the data is never read
        fit(cfg)


def test_only_the_training_part_of_a_held_out_split_gets_noise(tmp_path):
    cfg = te.toy_config(tmp_path, **{"data.label_noise": SYM, "data.valid_fraction": 0.25})
    data = te.toy_data(80)
    bundle = build_datasets(cfg, data)
    clean = build_datasets(te.toy_config(tmp_path, **{"data.valid_fraction": 0.25}), data)
    assert np.array_equal(bundle.valid.targets, clean.valid.targets) and "is_noisy" not in bundle.valid.meta
    assert np.array_equal(bundle.train.meta["true_label"], clean.train.targets)
    assert bundle.train.meta["is_noisy"].sum() == int(np.floor(0.3 * len(clean.train) + 0.5))


# -- the run record ----------------------------------------------------------------------------------------------------
def _noisy_fit(tmp_path: Path, name: str = "toy", **over):
    cfg = te.toy_config(tmp_path, **{"schedule.epochs": 3, "data.label_noise": SYM, "run.name": name, **over})
    return fit(cfg, train_data=te.toy_data(60), valid_data=_valid())


def test_run_json_records_the_noise_with_its_realised_rate_per_class(tmp_path):
    res = _noisy_fit(tmp_path)
    rec = json.loads((res.run_dir / "run.json").read_text())["data"]["label_noise"]
    assert rec["kind"] == "symmetric" and rec["rate"] == 0.3 and rec["seed"] == 5
    assert rec["flipped"] == 18 and rec["realised_rate"] == 0.3
    assert set(rec["realised_rate_per_class"]) == set(LABEL_SPACES["basic7"].names)
    assert sum(rec["flipped_per_class"].values()) == 18
