"""Label noise on any dataset (``data.label_noise``, :mod:`fernb.data.noise`) and the detection of the flipped labels
during training (:mod:`fernb.engine.noise_detection`, read back by :mod:`fernb.explore.noise_detection`).

The toy model, loss and data come from ``toys.py``; the fake RAF-DB tree from ``fakes.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
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
from fernb.engine.noise_detection import auroc, detection_metrics
from fernb.explore.noise_detection import fitted_labels, load_noise_detection, load_noise_scores
from fernb.labels import LABEL_SPACES, LabelSpace

TESTS = Path(__file__).resolve().parent
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


# -- the run record and the detection ----------------------------------------------------------------------------------
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


def test_detection_metrics_of_a_hand_computed_case():
    m = detection_metrics(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0], bool), np.array([1, 1, 0, 0], bool))
    # positive/negative pairs: (0.9>0.8) (0.9>0.1) (0.7<0.8) (0.7>0.1) -> 3/4; top-2 = samples 0, 1 -> 1 hit of 2
    assert m == {
        "n": 4,
        "n_noisy": 2,
        "precision_at_k": 0.5,
        "recall_at_k": 0.5,
        "auroc": 0.75,
        "flagged": 2,
        "flag_precision": 0.5,
        "flag_recall": 0.5,
    }


def test_auroc_is_one_when_scores_separate_half_for_ties_and_random_near_half():
    noisy = np.array([0, 0, 1, 1, 0, 1], bool)
    assert auroc(np.where(noisy, 2.0, 1.0), noisy) == 1.0
    assert auroc(np.where(noisy, 1.0, 2.0), noisy) == 0.0
    assert auroc(np.ones(6), noisy) == 0.5
    rng = np.random.default_rng(0)
    flips = rng.random(20000) < 0.3
    assert abs(auroc(rng.random(20000), flips) - 0.5) < 0.02
    m = detection_metrics(np.where(noisy, 2.0, 1.0), noisy)
    assert m["precision_at_k"] == m["recall_at_k"] == 1.0


def test_auroc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    scores, labels = rng.integers(0, 5, 300).astype(float), rng.random(300) < 0.4
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_fit_writes_detection_per_epoch_that_the_saved_scores_reproduce(tmp_path):
    res = _noisy_fit(tmp_path)
    frame = load_noise_detection(res.run_dir)
    assert frame["epoch"].tolist() == [1, 2, 3] and set(frame["score"]) == {"loss"}
    assert (frame["n"] == 60).all() and (frame["n_noisy"] == 18).all()
    scores = load_noise_scores(res.run_dir)
    assert scores.attrs["epoch"] == 3 and (scores["epoch_seen"] == 3).all()
    assert scores["is_noisy"].sum() == 18 and (scores["given"] != scores["true"]).sum() == 18
    last = frame[frame["epoch"] == 3].iloc[0]
    again = detection_metrics(scores["loss"].to_numpy(), scores["is_noisy"].to_numpy(), scores["flag_loss"].to_numpy())
    assert {k: last[k] for k in again} == pytest.approx(again)
    assert last["auroc"] > 0.7  # the toy learns the clean labels first: flipped ones keep a high loss
    best = load_noise_scores(res.run_dir, "best")
    assert best.attrs["epoch"] == res.best_epoch
    fitted = fitted_labels(res.run_dir)
    argmax_is_given = ~scores["flag_loss"].to_numpy(bool)
    noisy = scores["is_noisy"].to_numpy(bool)
    assert fitted == {
        "clean": argmax_is_given[~noisy].sum() / 42,
        "flipped": argmax_is_given[noisy].sum() / 18,
        "epoch": 3.0,
    }


def test_same_seed_same_detection(tmp_path):
    a, b = _noisy_fit(tmp_path, "a"), _noisy_fit(tmp_path, "b")
    assert (a.run_dir / "noise_detection.csv").read_text() == (b.run_dir / "noise_detection.csv").read_text()


def test_a_run_without_known_flips_records_no_detection(tmp_path):
    res = fit(te.toy_config(tmp_path), train_data=te.toy_data(32), valid_data=_valid())
    assert not (res.run_dir / "noise_detection.csv").exists() and not (res.run_dir / "noise_scores.npz").exists()
    with pytest.raises(FileNotFoundError, match="no flipped-label detection"):
        load_noise_detection(res.run_dir)


def test_arbex_records_its_corrected_disagreement_and_confidences(tmp_path):
    cfg = te.spec_config(
        "arbex",
        [],
        **{
            "run.out_dir": str(tmp_path),
            "run.name": "arbex",
            "schedule.epochs": 1,
            "data.train_limit": 64,
            "data.label_noise": {"rate": 0.2, "seed": 0},
        },
    )
    res = fit(cfg)
    frame = load_noise_detection(res.run_dir)
    assert set(frame["score"]) == {
        "loss",
        "disagreement",
        "uncertainty_primary",
        "uncertainty_anchor",
        "uncertainty_attention",
    }
    scores = load_noise_scores(res.run_dir)
    assert scores["disagreement"].between(0, 1).all() and scores["uncertainty_primary"].between(0, 1).all()
    assert frame.loc[frame["score"] == "disagreement", "flagged"].notna().all()


# -- resume ------------------------------------------------------------------------------------------------------------
OVER = {
    "schedule.epochs": 3,
    "run.checkpoint_every_steps": 3,
    "data.label_noise": {"rate": 0.3, "kind": "asymmetric", "seed": 2},
}
# 40 samples / batch 8 = 5 steps per epoch; checkpoints at each epoch's end and at steps 3, 6, 9, 12
SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import toys as te
import toys_plugin  # noqa: F401
from fernb.engine import Callback, fit

class Kill(Callback):
    def on_step_end(self, trainer, logs):
        if logs["step"] == 8:
            os._exit(3)

cfg = te.toy_config(Path({out!r}), **{over!r}, **{{"run.name": "cut"}})
fit(cfg, train_data=te.toy_data(40), valid_data=te.toy_data(14, 1), callbacks=[Kill()])
"""


def test_detection_of_a_run_killed_mid_epoch_and_resumed_equals_an_uninterrupted_run(tmp_path):
    ref = fit(te.toy_config(tmp_path, **OVER, **{"run.name": "ref"}), train_data=te.toy_data(40), valid_data=_valid())
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), out=str(tmp_path), over=OVER))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    cut = tmp_path / "cut"
    assert load_noise_detection(cut)["epoch"].max() == 1  # killed in epoch 2
    fit(
        te.toy_config(tmp_path, **OVER, **{"run.name": "cut", "run.resume": True}),
        train_data=te.toy_data(40),
        valid_data=_valid(),
    )
    assert (cut / "noise_detection.csv").read_text() == (ref.run_dir / "noise_detection.csv").read_text()
    for name in ("noise_scores.npz", "noise_scores_best.npz"):
        a, b = np.load(cut / name), np.load(ref.run_dir / name)
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    rec_a = json.loads((cut / "run.json").read_text())["data"]
    rec_b = json.loads((ref.run_dir / "run.json").read_text())["data"]
    assert rec_a["label_noise"] == rec_b["label_noise"] and rec_a["train"] == rec_b["train"]  # the same labels
