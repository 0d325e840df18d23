"""The label-noise views of the notebooks: ROC / precision-recall of a score, the correction against the flips, the
suspects, the robustness table and its sentences, and the run names of noisy runs (no training: hand-made inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fernb.engine.noise_detection import auroc
from fernb.explore.reliability import reliability_from_predictions
from fernb.explore.robustness import (
    best_epoch_detection,
    best_score,
    correction_vs_flips,
    detection_curve,
    robustness_table,
    robustness_verdict,
    top_suspects,
)
from fernb.notebooks import RunSpec, injected_noise, noise_tag
from fernb.viz.noise import plot_detection_curves, plot_detection_roc, plot_robustness, plot_suspects


def test_detection_curve_matches_a_hand_computed_case():
    # scores (high = suspect) 0.9 N, 0.8 C, 0.7 N, 0.7 C, 0.1 C (N: flipped): the 0.7s are one threshold
    c = detection_curve(np.array([0.9, 0.8, 0.7, 0.7, 0.1]), np.array([1, 0, 1, 0, 0], bool))
    np.testing.assert_allclose(c["tpr"], [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(c["fpr"], [0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(c["precision"], [1, 0.5, 0.5, 0.4])
    assert c["auroc"] == pytest.approx(4.5 / 6)  # of the 6 (flipped, clean) pairs 4 won, 1 lost, 1 tied (half)
    assert c["ap"] == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    assert c["noisy_share"] == pytest.approx(0.4) and (c["n"], c["n_noisy"]) == (5, 2)


def test_detection_curve_auroc_is_the_engines_and_nan_is_left_out():
    rng = np.random.default_rng(0)
    noisy = rng.random(300) < 0.3
    s = np.round(rng.normal(size=300) + noisy, 1)
    s[:5] = np.nan
    c = detection_curve(s, noisy)
    assert c["auroc"] == pytest.approx(auroc(s[5:], noisy[5:])) and c["n"] == 295


def _table(given, true, corrected):
    c = 3
    onehot = np.eye(c, dtype=np.float32)
    extras = {f: onehot[corrected] for f in ("primary_dist", "anchor_dist", "attention_dist", "correction")}
    extras["mixed_dist"] = onehot[corrected]
    for f in ("confidence_primary", "confidence_anchor", "confidence_attention"):
        extras[f] = np.ones(len(given))
    return reliability_from_predictions(extras, np.array(given), ["a", "b", "c"], true=np.array(true))


def _uniform_extras() -> dict:
    """One sample's ARBEx outputs without truth: every distribution uniform."""
    d = np.full((1, 3), 1 / 3, np.float32)
    return {
        **{f: d for f in ("primary_dist", "anchor_dist", "attention_dist", "correction", "mixed_dist")},
        **{f: np.zeros(1) for f in ("confidence_primary", "confidence_anchor", "confidence_attention")},
    }


def test_correction_vs_flips_counts_the_four_cases():
    # samples: flipped & corrected to the truth, flipped & corrected elsewhere, flipped & kept, clean & corrected,
    # clean & kept (twice)
    t = _table(given=[0, 0, 1, 2, 2, 1], true=[1, 2, 0, 2, 2, 1], corrected=[1, 1, 1, 0, 2, 1])
    f = correction_vs_flips(t)
    assert f["samples"].tolist() == [2, 1, 1, 1, 2]
    assert f["share"].tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3])
    with pytest.raises(ValueError, match="true labels"):
        correction_vs_flips(reliability_from_predictions(_uniform_extras(), np.array([0]), ["a", "b", "c"]))


def _scores() -> pd.DataFrame:
    names = ["a", "b", "c"]
    return pd.DataFrame(
        {
            "given": pd.Categorical.from_codes([0, 1, 2, 0], categories=names),
            "true": pd.Categorical.from_codes([1, 1, 2, 0], categories=names),
            "is_noisy": [True, False, False, False],
            "loss": [2.0, 0.1, np.nan, 2.0],
        },
        index=pd.Index([0, 1, 2, 3], name="index"),
    ).assign(**{"disagreement": [0.9, 0.2, 0.3, 0.1]})


def test_top_suspects_rank_by_score_then_index_and_skip_unscored():
    s = top_suspects(_scores(), "loss", k=3)
    assert s.index.tolist() == [0, 3, 1] and s["rank"].tolist() == [1, 2, 3]
    assert s["score"].tolist() == [2.0, 2.0, 0.1] and s.attrs["score"] == "loss"
    with pytest.raises(KeyError, match="uncertainty_anchor"):
        top_suspects(_scores(), "uncertainty_anchor")


def _detection_csv(path: Path) -> None:
    rows = [
        "epoch,score,n,n_noisy,precision_at_k,recall_at_k,auroc,flagged,flag_precision,flag_recall,partial",
        "1,loss,10,3,0.3,0.3,0.55,,,,0",
        "1,disagreement,10,3,0.3,0.3,0.60,,,,0",
        "2,loss,10,3,0.6,0.6,0.80,,,,0",
        "2,disagreement,10,3,0.3,0.3,0.70,,,,0",
        "3,loss,10,3,0.3,0.3,0.10,,,,1",
    ]
    (path / "noise_detection.csv").write_text("\n".join(rows) + "\n")


def test_best_epoch_detection_reads_the_selected_epoch(tmp_path: Path):
    _detection_csv(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"best": {"epoch": 1}}))
    assert best_epoch_detection(tmp_path) == {"loss": 0.55, "disagreement": 0.60}
    frame = pd.read_csv(tmp_path / "noise_detection.csv")
    assert best_score(frame) == "loss" and best_score(frame, 1) == "disagreement"
    assert best_epoch_detection(tmp_path / "nothing") == {}


def _fake_run(root: Path, name: str, valid: float, test: float, detect: bool, fit_flipped: int = 0) -> dict:
    """A finished run's files; with ``detect`` 10 scored samples, 3 of them flipped, of which ``fit_flipped`` (and
    every clean one) had the given label as the training output's argmax."""
    run = root / name
    run.mkdir()
    best = {"epoch": 2, "value": valid, "metrics": {"valid_mean_class_accuracy": valid - 0.1}}
    (run / "run.json").write_text(json.dumps({"best": best, "steps": 150}))
    if detect:
        _detection_csv(run)
        noisy = np.arange(10) < 3
        flag = noisy & (np.arange(10) >= fit_flipped)
        np.savez(
            run / "noise_scores.npz",
            index=np.arange(10),
            given=np.zeros(10, np.int64),
            true=np.where(noisy, 1, 0),
            is_noisy=noisy,
            epoch_seen=np.full(10, 3),
            epoch=np.array(3),
            class_names=np.array(["neutral", "happy"]),
            loss=np.where(noisy, 2.0, 0.1),
            flag_loss=flag,
        )
    return {"run_dir": run, "best_value": valid, "test": {"accuracy": test, "mean_class_accuracy": test - 0.1}}


def test_robustness_table_means_over_seeds_and_reads_detection(tmp_path: Path):
    results = {
        ("resnet18", 0.0, 0): _fake_run(tmp_path, "r0", 0.70, 0.72, False),
        ("resnet18", 0.3, 0): _fake_run(tmp_path, "r3", 0.50, 0.52, True),
        ("resnet18", 0.3, 1): _fake_run(tmp_path, "r3b", 0.60, 0.56, True),
    }
    t = robustness_table(results)
    assert t.index.tolist() == [("resnet18", 0.0), ("resnet18", 0.3)]
    noisy = t.loc[("resnet18", 0.3)]
    assert noisy["valid acc"] == pytest.approx(0.55) and noisy["valid acc std"] == pytest.approx(
        np.std([0.5, 0.6], ddof=1)
    )
    assert noisy["test acc"] == pytest.approx(0.54) and noisy["valid mca"] == pytest.approx(0.45)
    assert noisy["AUROC loss"] == pytest.approx(0.80) and noisy["noisy share"] == pytest.approx(0.3)
    assert noisy["seeds"] == 2 and noisy["steps"] == 150 and noisy["flipped fitted"] == 0
    clean = t.loc[("resnet18", 0.0)]
    assert np.isnan(clean["AUROC loss"]) and clean["noisy share"] == 0 and np.isnan(clean["valid acc std"])
    assert np.isnan(clean["flipped fitted"])


def test_robustness_verdict_says_when_arbex_loses(tmp_path: Path):
    results = {
        ("arbex", 0.0, 0): _fake_run(tmp_path, "a0", 0.7, 0.70, False),
        ("arbex", 0.3, 0): _fake_run(tmp_path, "a3", 0.6, 0.60, True),
        ("scn", 0.0, 0): _fake_run(tmp_path, "s0", 0.7, 0.70, False),
        ("scn", 0.3, 0): _fake_run(tmp_path, "s3", 0.65, 0.65, True),
        ("resnet18", 0.0, 0): _fake_run(tmp_path, "r0", 0.75, 0.75, False),
        ("resnet18", 0.3, 0): _fake_run(tmp_path, "r3", 0.55, 0.55, True),
    }
    (line,) = robustness_verdict(robustness_table(results))
    assert "arbex does NOT beat scn" in line and "60.0 % against 65.0 %" in line
    assert "arbex beats resnet18" in line and "resnet18 loses 20.0 points" in line
    assert "0.50x" in line and "met" in line
    assert "resnet18 had learnt only 0.0 % of the flipped labels" in line
    results[("resnet18", 0.3, 0)] = _fake_run(tmp_path, "r3-memorised", 0.55, 0.55, True, fit_flipped=1)
    (line,) = robustness_verdict(robustness_table(results))  # a third of the flips learnt: no such sentence
    assert "had learnt only" not in line and robustness_table(results).loc[("resnet18", 0.3), "flipped fitted"] == (
        pytest.approx(1 / 3)
    )
    assert robustness_verdict(robustness_table({k: v for k, v in results.items() if k[1] == 0.0}))[0].startswith(
        "Nothing to compare"
    )


def test_noisy_runs_get_their_own_names():
    spec = RunSpec(smoke=True)
    assert spec.config("resnet18").run.name == "resnet18-synthetic-s0-smoke"
    noisy = spec.with_(label_noise={"rate": 0.3, "kind": "symmetric", "seed": 0}).config("resnet18")
    assert noisy.run.name == "resnet18-synthetic-s0-sym30-n0-smoke"
    assert noisy.data.label_noise == {"rate": 0.3, "kind": "symmetric", "seed": 0}
    zero = spec.with_(label_noise={"rate": 0.0}).config("resnet18")
    assert zero.run.name == "resnet18-synthetic-s0-smoke" and not zero.data.label_noise  # the clean run's config
    assert noise_tag({"rate": 0.1, "kind": "asymmetric"}) == "asym10"
    assert noise_tag({"kind": "file", "file": "/x/noise03.txt"}) == "file-noise03"
    assert injected_noise("synthetic", {"rate": 0.3}) is None  # the synthetic data keeps its own noise
    assert injected_noise("ferplus", {"rate": 0.3}) == {"rate": 0.3} and injected_noise("ferplus", None) is None


def test_noise_figures_draw(tmp_path: Path):
    _detection_csv(tmp_path)
    frame = pd.read_csv(tmp_path / "noise_detection.csv")
    assert len(plot_detection_curves(frame, best_epoch=2).axes) == 2
    scores = _scores()
    curves = {s: detection_curve(scores[s].to_numpy(), scores["is_noisy"].to_numpy()) for s in ("loss", "disagreement")}
    assert len(plot_detection_roc(curves).axes) == 2
    sus = top_suspects(scores, "disagreement", k=3)
    fig = plot_suspects(sus, [np.zeros((8, 8)), np.zeros((8, 8, 3)), np.zeros((8, 8, 1))], cols=2)
    assert "1 really flipped" in fig._suptitle.get_text()
    table = pd.DataFrame(
        {"valid acc": [0.7, 0.5], "valid acc std": [np.nan, 0.1], "test acc": [np.nan, np.nan]},
        index=pd.MultiIndex.from_tuples([("resnet18", 0.0), ("resnet18", 0.3)], names=["method", "noise"]),
    )
    assert len(plot_robustness(table).axes) == 1  # no test split: one panel
