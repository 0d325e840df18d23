"""Metric maths checked against scikit-learn and SciPy on random inputs, absent classes included."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from sklearn import metrics as skm

from fernb.engine import metrics as M


def _random_case(seed: int, n: int, c: int, absent: int):
    """Labels over ``c`` classes where the last ``absent`` classes never occur in y_true (some are predicted)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c - absent, n)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, c, n))
    return y, p


CASES = [(s, n, c, a) for s, (n, c, a) in enumerate([(50, 7, 0), (200, 8, 2), (13, 7, 3), (500, 9, 1), (5, 4, 0)])]


@pytest.mark.parametrize("seed, n, c, absent", CASES)
def test_confusion_accuracy_balanced_accuracy_match_sklearn(seed, n, c, absent):
    y, p = _random_case(seed, n, c, absent)
    np.testing.assert_array_equal(M.confusion_matrix(y, p, c), skm.confusion_matrix(y, p, labels=range(c)))
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p))
    with _quiet():
        expected = skm.balanced_accuracy_score(y, p)
    assert M.mean_class_accuracy(y, p, c) == pytest.approx(expected)
    norm = M.normalize_confusion(M.confusion_matrix(y, p, c))
    sk_norm = np.nan_to_num(skm.confusion_matrix(y, p, labels=range(c), normalize="true"))
    np.testing.assert_allclose(norm, sk_norm)


@pytest.mark.parametrize("seed, n, c, absent", CASES)
def test_macro_f1_and_per_class_table_match_sklearn(seed, n, c, absent):
    y, p = _random_case(seed, n, c, absent)
    with _quiet():
        present = skm.f1_score(y, p, average="macro", zero_division=0)
        every = skm.f1_score(y, p, average="macro", labels=range(c), zero_division=0)
        true_only = skm.f1_score(y, p, average="macro", labels=np.unique(y), zero_division=0)
        prec, rec, f1, sup = skm.precision_recall_fscore_support(y, p, labels=range(c), zero_division=0)
    assert M.macro_f1(y, p, c) == pytest.approx(present)
    assert M.macro_f1(y, p, c, labels="all") == pytest.approx(every)
    assert M.macro_f1(y, p, c, labels="true") == pytest.approx(true_only)
    table = M.per_class_table(y, p, c)
    np.testing.assert_allclose([r["precision"] for r in table], prec)
    np.testing.assert_allclose([r["recall"] for r in table], rec)
    np.testing.assert_allclose([r["f1"] for r in table], f1)
    assert [r["support"] for r in table] == sup.tolist()


def test_absent_classes_do_not_count_in_mean_class_accuracy():
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 0, 1, 2])  # class 2 predicted, never true; classes 3..6 absent everywhere
    assert M.mean_class_accuracy(y, p, 7) == pytest.approx((1.0 + 0.5) / 2)
    assert M.macro_f1(y, p, 7) == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    assert M.macro_f1(y, p, 7, labels="all") == pytest.approx((1.0 + 2 / 3) / 7)


@pytest.mark.parametrize("seed", range(3))
def test_kl_and_js_match_scipy(seed):
    rng = np.random.default_rng(seed)
    ref = rng.dirichlet(np.full(7, 0.5), 40)
    ref[:5, 3] = 0  # zero entries in the reference (0 log 0 = 0)
    ref /= ref.sum(1, keepdims=True)
    pred = rng.dirichlet(np.ones(7), 40)
    kl = rel_entr(ref, pred).sum(1)
    assert M.kl_divergence(ref, pred) == pytest.approx(kl.mean())
    np.testing.assert_allclose(M.kl_divergence(ref, pred, reduce=False), kl)
    js = jensenshannon(ref, pred, axis=1) ** 2
    np.testing.assert_allclose(M.js_divergence(ref, pred, reduce=False), js, rtol=1e-10, atol=1e-12)
    assert M.js_divergence(ref, ref) == pytest.approx(0, abs=1e-12)
    assert M.js_divergence(np.eye(3), np.eye(3)[[1, 2, 0]]) == pytest.approx(np.log(2))


def test_nll_softmax_and_report_fields():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(30, 5))
    y = rng.integers(0, 5, 30)
    probs = M.softmax(logits)
    assert M.nll(probs, y) == pytest.approx(skm.log_loss(y, probs, labels=range(5)))
    rep = M.classification_metrics(y, probs=probs, dists=probs, class_names=list("abcde"))
    assert rep["n"] == 30 and rep["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert rep["kl"] == pytest.approx(0, abs=1e-9) and len(rep["confusion"]) == 5
    assert [r["class"] for r in rep["per_class"]] == list("abcde")


def test_bootstrap_interval_covers_the_point_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small_y = rng.integers(0, 3, 60)
    small_p = np.where(rng.random(60) < 0.7, small_y, (small_y + 1) % 3)
    big_y = np.tile(small_y, 20)
    big_p = np.tile(small_p, 20)
    a = M.bootstrap_ci(small_y, small_p, "accuracy", n_boot=400)
    b = M.bootstrap_ci(big_y, big_p, "accuracy", n_boot=400)
    assert a["low"] <= a["value"] <= a["high"] and (b["high"] - b["low"]) < (a["high"] - a["low"]) / 2
    c = M.bootstrap_ci(small_y, small_p, "mean_class_accuracy", n_boot=200, seed=3)
    assert c == M.bootstrap_ci(small_y, small_p, "mean_class_accuracy", n_boot=200, seed=3)  # seeded
    assert c["low"] <= c["value"] <= c["high"]


def test_mean_std_over_runs():
    s = M.summarize_runs([{"accuracy": 0.5, "macro_f1": 0.4}, {"accuracy": 0.7, "macro_f1": 0.6}])
    assert s["accuracy"]["mean"] == pytest.approx(0.6) and s["accuracy"]["std"] == pytest.approx(
        np.std([0.5, 0.7], ddof=1)
    )
    assert M.mean_std([0.3])["std"] == 0.0 and M.mean_std([])["n"] == 0


@contextlib.contextmanager
def _quiet():
    """Silence scikit-learn's warnings about classes missing from y_true or y_pred."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
