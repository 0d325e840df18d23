"""ARBEx reliability explorer: the noise-repair report, the per-sample table of a trained run, the per-class
divergence, the figures and the explorer widget's state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from fernb.engine import apply_overrides, fit, save_config
from fernb.engine.data import build_datasets
from fernb.explore.reliability import (
    DISTRIBUTIONS,
    accuracy_table,
    confidence,
    correction_effect,
    divergence_by_class,
    noise_report,
    reliability_from_predictions,
    reliability_table,
)
from fernb.notebooks import method_config
from fernb.viz.reliability import (
    plot_confidence_scatter,
    plot_divergence_by_class,
    plot_noise_report,
    plot_reliability_map,
    plot_reliability_sample,
    reliability_groups,
)
from fernb.widgets.reliability import reliability_explorer
from fernb.widgets.scatter import ScatterMap

CLASSES = ["a", "b", "c"]


def _tiny_run(runs: Path, dataset: str, root: str | None = None, **overrides) -> Path:
    cfg = method_config("arbex", dataset, True, runs=str(runs), root=root, device="cpu", quiet=True)
    cfg = apply_overrides(cfg, {"schedule.epochs": 1, "data.train_limit": 40, "data.valid_limit": 24, **overrides})
    return Path(fit(cfg).run_dir)


@pytest.fixture(scope="module")
def arbex_run(tmp_path_factory) -> Path:
    return _tiny_run(tmp_path_factory.mktemp("runs"), "synthetic")


@pytest.fixture(scope="module")
def train_table(arbex_run):
    return reliability_table(arbex_run, "train")


def _fake_table(n: int = 30, c: int = 3, truth: bool = True, reference: bool = True, seed: int = 0):
    """A table from random ARBEx-like outputs (no model), with images."""
    rng = np.random.default_rng(seed)
    extras = {f: rng.dirichlet(np.ones(c), n).astype(np.float32) for f in DISTRIBUTIONS.values()}
    for f in ("confidence_primary", "confidence_anchor", "confidence_attention"):
        extras[f] = rng.uniform(0, 1, (n, 1)).astype(np.float32)
    given = rng.integers(0, c, n)
    true = np.where(rng.uniform(size=n) < 0.3, rng.integers(0, c, n), given) if truth else None
    ref = rng.dirichlet(np.ones(c), n) if reference else None
    return reliability_from_predictions(
        extras, given, [f"k{i}" for i in range(c)], true=true, reference=ref, split="fake"
    )


# -- the noise report on hand-made labels ------------------------------------------------------------------------------
GIVEN = np.array([0, 0, 1, 1, 2, 2, 0, 1])
TRUE = np.array([0, 0, 1, 2, 2, 0, 0, 1])  # samples 3 and 5 are noisy


@pytest.mark.parametrize(
    "pred, expected",
    [
        # flags 1, 3, 5; detects 3, 5; repairs 3; breaks 1
        (
            [0, 1, 1, 2, 2, 1, 0, 1],
            dict(
                flagged=3,
                detected=2,
                precision=2 / 3,
                recall=1.0,
                repaired=1,
                repair_rate=0.5,
                broken=1,
                break_rate=1 / 6,
                accuracy=6 / 8,
                agreement=5 / 8,
            ),
        ),
        # the true labels: everything noisy found and repaired, nothing broken
        (
            TRUE,
            dict(
                flagged=2,
                detected=2,
                precision=1.0,
                recall=1.0,
                repaired=2,
                repair_rate=1.0,
                broken=0,
                break_rate=0.0,
                accuracy=1.0,
                agreement=6 / 8,
            ),
        ),
        # the given labels: nothing flagged, precision undefined
        (
            GIVEN,
            dict(
                flagged=0,
                detected=0,
                precision=np.nan,
                recall=0.0,
                repaired=0,
                repair_rate=0.0,
                broken=0,
                break_rate=0.0,
                accuracy=6 / 8,
                agreement=1.0,
            ),
        ),
    ],
)
def test_noise_report_matches_hand_counts(pred, expected):
    report = noise_report(GIVEN, TRUE, {"corrected": np.asarray(pred)})["corrected"]
    assert report["n"] == 8 and report["noisy"] == 2
    for key, value in expected.items():
        np.testing.assert_allclose(float(report[key]), value, err_msg=key)


def test_noise_report_has_one_column_per_prediction():
    report = noise_report(GIVEN, TRUE, {"primary": GIVEN, "corrected": TRUE})
    assert list(report.columns) == ["primary", "corrected"]
    assert report.loc["recall", "primary"] == 0 and report.loc["recall", "corrected"] == 1


def test_correction_effect_counts_fixed_and_spoiled():
    labels = np.array([0, 1, 2, 0, 1])
    primary = np.array([0, 1, 0, 2, 1])
    corrected = np.array([0, 2, 2, 1, 1])  # sample 1 spoiled, sample 2 fixed, sample 3 changed wrong -> wrong
    eff = correction_effect(labels, primary, corrected)
    assert (eff["changed"], eff["fixed"], eff["spoiled"]) == (3, 1, 1)
    assert eff["accuracy_primary"] == pytest.approx(3 / 5) and eff["accuracy_corrected"] == pytest.approx(3 / 5)


# -- divergence per class -------------------------------------------------------------------------------------------
def test_divergence_by_class_matches_hand_computation():
    ref = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    pred = np.array([[0.25, 0.5, 0.25], [0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
    labels = np.array([0, 0, 2])

    def kl(r, p):
        m = r > 0
        return float((r[m] * np.log(r[m] / p[m])).sum())

    def js(r, p):
        m = (r + p) / 2
        return (kl(r, m) + kl(p, m)) / 2

    div = divergence_by_class(ref, {"x": pred}, labels, CLASSES)
    assert list(div.index) == [*CLASSES, "all"]
    assert list(div[("n", "")]) == [2, 0, 1, 3]
    assert div.loc["a", ("KL", "x")] == pytest.approx((kl(ref[0], pred[0]) + kl(ref[1], pred[1])) / 2)
    assert div.loc["a", ("JS", "x")] == pytest.approx((js(ref[0], pred[0]) + js(ref[1], pred[1])) / 2)
    assert div.loc["c", ("KL", "x")] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(div.loc["b", ("KL", "x")])
    assert div.loc["all", ("KL", "x")] == pytest.approx(np.mean([kl(r, p) for r, p in zip(ref, pred)]))


def test_confidence_is_one_minus_normalised_entropy():
    d = np.array([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(confidence(d), [0.0, 1.0], atol=1e-6)


# -- the table of a trained run --------------------------------------------------------------------------------------
def test_table_has_one_row_per_training_sample(arbex_run, train_table):
    from fernb.engine import load_config

    train = build_datasets(load_config(Path(arbex_run) / "config.json")).train
    assert len(train_table) == len(train)
    assert list(train_table.frame.index) == list(range(len(train)))
    np.testing.assert_array_equal(train_table.codes("given"), train.targets)
    np.testing.assert_array_equal(train_table.codes("true"), train.meta["true_label"])
    assert all(v.shape == (len(train), len(train.class_names)) for v in train_table.dists.values())


def test_table_labels_are_argmax_of_kept_distributions(train_table):
    f, d = train_table.frame, train_table.dists
    for name in ("primary", "anchor", "attention", "corrected"):
        np.testing.assert_array_equal(train_table.codes(name), d[name].argmax(1))
    np.testing.assert_array_equal(f["changed"], d["corrected"].argmax(1) != d["primary"].argmax(1))
    np.testing.assert_array_equal(f["flagged"], d["corrected"].argmax(1) != train_table.codes("given"))
    np.testing.assert_array_equal(f["is_noisy"], train_table.codes("given") != train_table.codes("true"))
    np.testing.assert_allclose(f["c_primary"], confidence(d["primary"]), atol=1e-5)
    np.testing.assert_allclose(f["gain"], f["c_corrected"] - f["c_primary"])


def test_corrected_distribution_is_the_confidence_weighted_mix(train_table):
    f, d = train_table.frame, train_table.dists
    cp = f["c_primary"].to_numpy()[:, None]
    np.testing.assert_allclose(d["corrected"], cp * d["primary"] + (1 - cp) * d["correction"], atol=1e-5)


def test_training_samples_are_not_augmented(arbex_run, train_table):
    again = reliability_table(arbex_run, "train")
    np.testing.assert_array_equal(again.dists["corrected"], train_table.dists["corrected"])


def test_limit_draws_a_sorted_subset(arbex_run):
    t = reliability_table(arbex_run, "valid", limit=7)
    assert len(t) == 7 and list(t.frame.index) == sorted(t.frame.index) and t.frame.index.max() < 24


def test_noise_report_of_table_uses_its_labels(train_table):
    report = train_table.noise_report()
    f = train_table.frame
    assert report.loc["noisy", "corrected"] == f["is_noisy"].sum()
    assert report.loc["flagged", "corrected"] == f["flagged"].sum()
    assert report.loc["repaired", "corrected"] == f["repaired"].sum()
    assert report.loc["broken", "corrected"] == f["broken"].sum()


def test_accuracy_table_has_a_row_per_split(train_table):
    acc = accuracy_table({"train": train_table, "fake": _fake_table()})
    assert list(acc.index) == ["train", "fake"]
    assert acc.loc["train", "accuracy_corrected"] == pytest.approx(
        float((train_table.codes("corrected") == train_table.codes("true")).mean())
    )


def test_non_arbex_run_raises_a_clear_error(tmp_path):
    cfg = method_config("resnet18", "synthetic", True, runs=str(tmp_path))
    run = tmp_path / "resnet18-run"
    save_config(cfg, run / "config.json")
    with pytest.raises(ValueError, match="resnet18-run.*'resnet18' has no reliability balancing"):
        reliability_table(run, "train")


def test_outputs_without_arbex_fields_raise():
    with pytest.raises(KeyError, match="ARBEx"):
        reliability_from_predictions({"primary_dist": np.ones((2, 3)) / 3}, np.zeros(2), CLASSES)


def test_table_without_truth_refuses_the_noise_report():
    with pytest.raises(ValueError, match="true labels are unknown"):
        _fake_table(truth=False).noise_report()


def test_examples_pick_the_largest_gain_of_each_kind():
    t = _fake_table(n=60)
    ex = t.examples(("changed", "flagged", "nonexistent"))
    assert set(ex) == {"changed", "flagged"}
    changed = t.frame[t.frame.changed]
    assert ex["changed"] == changed["gain"].idxmax()


# -- FER+: against the crowd votes ------------------------------------------------------------------------------------
@pytest.mark.shared
def test_ferplus_divergence_against_votes(ferplus_root, tmp_path):
    run = _tiny_run(tmp_path, "ferplus", root=str(ferplus_root), **{"data.train_limit": 24})
    t = reliability_table(run, "valid", limit=16)
    assert t.reference is not None and t.reference.shape == (16, 8)
    np.testing.assert_allclose(t.reference.sum(1), 1, atol=1e-5)
    div = t.divergence_by_class()
    assert len(div) == 9 and div[("n", "")].iloc[:-1].sum() == 16
    assert np.isfinite(div.loc["all"].to_numpy(dtype=float)).all()
    assert (div.loc["all", "JS"] <= np.log(2) + 1e-9).all()


# -- figures ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("truth, reference, image", [(True, True, True), (False, False, False)])
def test_sample_panel_is_a_figure(truth, reference, image):
    t = _fake_table(truth=truth, reference=reference)
    s = t.sample(4, image=False)
    s.image = np.zeros((8, 8), np.uint8) if image else None
    fig = plot_reliability_sample(s, title="x")
    assert isinstance(fig, Figure) and len(fig.axes) == 4 + int(image)


@pytest.mark.parametrize(
    "make",
    [
        lambda t: plot_confidence_scatter(t.frame),
        lambda t: plot_confidence_scatter(t.frame, hue="changed", ys=("c_anchor",)),
        lambda t: plot_noise_report(t.noise_report()),
        lambda t: plot_noise_report(t.noise_report(), accuracy_table({"a": t, "b": t})),
        lambda t: plot_divergence_by_class(t.divergence_by_class(("primary", "anchor", "corrected"))),
        lambda t: plot_reliability_map(t.frame),
        lambda t: plot_reliability_map(t.frame, "c_primary", "gain", colour="given"),
    ],
    ids=["scatter", "scatter-hue", "noise", "noise-accuracy", "divergence", "map", "map-given"],
)
def test_summary_plots_are_figures(make):
    assert isinstance(make(_fake_table()), Figure)


# -- the explorer ------------------------------------------------------------------------------------------------------
def test_explorer_steps_through_samples():
    widget, state = reliability_explorer(_fake_table())
    first, fig0 = state.index, state.figure
    state.next()
    assert state.index != first and state.figure is not fig0 and isinstance(state.figure, Figure)
    state.prev()
    assert state.index == first
    state.prev()
    assert state.position == 0
    state.go(10**6)
    assert state.position == len(state.order) - 1
    assert widget is not None


def test_explorer_filter_and_sort_change_the_shown_sample():
    t = _fake_table(n=60)
    _, state = reliability_explorer(t)
    state.set_filter("flagged")
    assert set(state.order) == set(t.frame.index[t.frame.flagged]) and bool(t.frame.loc[state.index, "flagged"])
    state.set_sort("confidence gain")
    gains = t.frame.loc[state.order, "gain"].to_numpy()
    assert (np.diff(gains) <= 0).all() and state.index == state.order[0]
    state.show_index(int(t.frame.index[~t.frame.flagged][0]))
    assert state.filter == "all" and not t.frame.loc[state.index, "flagged"]


def test_explorer_empty_filter_shows_no_figure():
    t = _fake_table()
    t.frame["broken"] = False
    _, state = reliability_explorer(t)
    state.set_filter("broken")
    assert state.index is None and state.figure is None


def test_explorer_offers_only_known_filters():
    _, state = reliability_explorer(_fake_table(truth=False))
    assert "noisy" not in state.filters
    with pytest.raises(ValueError, match="unknown filter"):
        state.set_filter("noisy")


# -- the explorer's map -----------------------------------------------------------------------------------------------
def _map(widget) -> ScatterMap:
    return next(c for c in _walk(widget) if isinstance(c, ScatterMap))


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


@pytest.mark.parametrize("truth", [True, False])
@pytest.mark.parametrize("colour", ["auto", "outcome", "changed", "flagged", "given", "corrected"])
def test_map_groups_put_every_sample_in_one_group(truth, colour):
    t = _fake_table(n=50, truth=truth)
    if colour == "outcome" and not truth:
        with pytest.raises(ValueError, match="is_noisy"):
            reliability_groups(t.frame, colour)
        return
    groups = reliability_groups(t.frame, colour)
    counts = np.sum([m for _, m, _ in groups], axis=0)
    assert (counts == 1).all() and all(m.any() for _, m, _ in groups)
    if colour == "auto":
        assert {n for n, _, _ in groups} <= (
            {"clean, kept", "clean, broken", "flipped, repaired", "flipped, flagged (wrong class)", "flipped, missed"}
            if truth
            else {"changed", "unchanged"}
        )


def test_map_draws_one_point_per_sample_at_its_columns():
    t = _fake_table(n=40)
    widget, state = reliability_explorer(t, x="c_primary", y="p_given")
    m = _map(widget)
    assert len(m.x) == len(m.tips) == len(m.thumbs) == 40
    np.testing.assert_allclose(m.x, t.frame.c_primary.to_numpy())
    np.testing.assert_allclose(m.y, t.frame.p_given.to_numpy())
    assert m.ring == t.frame.changed.tolist() and m.xlabel and m.ylabel and m.aspect == "free"
    assert m.bounds == pytest.approx(
        [t.frame.c_primary.min(), t.frame.c_primary.max(), *t.frame.p_given.agg(["min", "max"])]
    )
    noisy = int(np.flatnonzero(t.frame.is_noisy.to_numpy())[0])
    tip = m.tips[noisy]
    row = t.frame.iloc[noisy]
    assert all(f"{k}: {row[k]}" in tip for k in ("given", "true", "primary", "corrected")) and "(flipped)" in tip
    state.set_axes(y="c_attention")
    np.testing.assert_allclose(m.y, t.frame.c_attention.to_numpy())
    before = list(m.colours)
    state.set_colour("given")
    assert m.colours != before and len(set(m.colours)) == t.frame.given.nunique()
    with pytest.raises(ValueError, match="unknown map column"):
        state.set_axes(x="nope")


def test_map_click_shows_the_sample_and_stepping_moves_the_map():
    t = _fake_table(n=40)
    t.frame["flagged"] = np.arange(40) % 2 == 0
    widget, state = reliability_explorer(t, filter="flagged")
    m = _map(widget)
    m.selected = 7  # a click on a sample the filter hides: the filter opens to "all"
    assert state.index == 7 and state.filter == "all" and isinstance(state.figure, Figure)
    panel = next(c for c in _walk(widget) if "fernb-rel-sample" in str(getattr(c, "value", "")))
    assert "data-sample='7'" in panel.value and panel.value.count("<tr>") == 1 + 3  # head + one row per class
    state.next()
    assert m.selected == 8 and "data-sample='8'" in panel.value
    m.selected = -1  # a click beside every point keeps the shown sample
    assert state.index == 8 and m.selected == 8


def test_map_lasso_selection_comes_back_to_python():
    t = _fake_table(n=40)
    widget, state = reliability_explorer(t)
    m = _map(widget)
    m.selection = [3, 1, 5]  # what the browser sends after a lasso
    assert state.selection == widget.selection == (1, 3, 5)
    assert list(widget.selection_frame().index) == [1, 3, 5]
    table = next(c for c in _walk(widget) if "fernb-selection" in str(getattr(c, "value", "")))
    assert "data-count='3'" in table.value
    state.set_selection([])
    assert m.selection == []


def test_map_limit_draws_a_sorted_subset_and_keeps_clicks_on_split_positions():
    t = _fake_table(n=60)
    t.frame.index = t.frame.index + 100  # split positions that are not rows
    widget, state = reliability_explorer(t, map_limit=25)
    m = _map(widget)
    assert len(m.x) == 25 and (np.diff(state.map_index) > 0).all() and set(state.map_index) <= set(t.frame.index)
    m.selected = 4
    assert state.index == state.map_index[4]
    m.selection = [0, 2]
    assert state.selection == (state.map_index[0], state.map_index[2])


def test_explorer_shows_a_png_of_its_map_where_no_widget_runs():
    widget, _ = reliability_explorer(_fake_table(truth=False))
    bundle = widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and bundle["image/png"]
