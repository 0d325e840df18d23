"""The embedding explorer: collection from a run (anchors and their classes, the same samples for every checkpoint,
cached), seeded and cached projections fitted once on samples and anchors, neighbours in the embedding space, the
per-checkpoint numbers, the figures and the widget's state."""

from __future__ import annotations

import base64
import io
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from fernb.data.cache import CACHE_ENV
from fernb.explore import embeddings as emb
from fernb.explore.embeddings import COLOURINGS, EmbeddingSet
from fernb.explore.embeddings import collection as emb_collection
from fernb.explore.embeddings import projection as emb_projection
from fernb.viz import embeddings as vemb


# -- runs and cache ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """Embedding and map caches in a temporary folder (the numba cache stays where it is: persistent)."""
    path = tmp_path_factory.mktemp("fernb-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(path))
        yield path


def _train(method: str, runs: Path, **kwargs) -> Path:
    from fernb.engine import apply_overrides, fit
    from fernb.notebooks import method_config

    cfg = method_config(method, "synthetic", True, runs=str(runs), quiet=True, device="cpu", **kwargs)
    cfg = apply_overrides(cfg, {"data.train_limit": 48, "data.valid_limit": 48})  # two epochs of three batches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Path(fit(cfg).run_dir)


@pytest.fixture(scope="module")
def arbex_run(tmp_path_factory) -> Path:
    return _train("arbex", tmp_path_factory.mktemp("runs"), model_kwargs={"behaviour": "fixed"})


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory) -> Path:
    return _train("resnet18", tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def arbex_sets(arbex_run, cache_dir) -> list[EmbeddingSet]:
    """Both epochs of the ARBEx run in one PCA map (fast; UMAP has its own tests)."""
    return emb.run_maps(arbex_run, ["epoch-001", "epoch-002"], limit=40, method="pca")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getvalue()


# -- collection -------------------------------------------------------------------------------------------------------
def test_collected_anchors_are_the_models_anchors_with_their_classes(arbex_run, cache_dir):
    from fernb.engine import load_run

    es = emb.collect_embeddings(arbex_run, "best", limit=24)
    _, model, _ = load_run(arbex_run, "best")
    c, k, d = model.anchors.shape
    assert es.embeddings.shape == (24, d)
    assert es.anchors.shape == (c * k, d)
    np.testing.assert_allclose(es.anchors, model.anchors.detach().reshape(c * k, d).numpy())
    np.testing.assert_array_equal(es.anchor_classes, np.repeat(np.arange(c), k))
    assert len(es.class_names) == c
    assert ((0 <= es.confidence) & (es.confidence <= 1)).all()


def test_every_checkpoint_embeds_the_same_samples(arbex_sets):
    first, second = arbex_sets
    np.testing.assert_array_equal(first.indices, second.indices)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert len(np.unique(first.indices)) == len(first) == 40
    assert not np.allclose(first.embeddings, second.embeddings)


def test_collection_is_read_back_from_the_cache(arbex_run, cache_dir, monkeypatch):
    first = emb.collect_embeddings(arbex_run, "epoch-001", limit=16)
    assert list((cache_dir / "embeddings").glob("emb-*epoch-001*.npz"))

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran although the embeddings were cached")

    monkeypatch.setattr(emb_collection, "_embed", no_model)
    again = emb.collect_embeddings(arbex_run, "epoch-001", limit=16)
    np.testing.assert_array_equal(first.embeddings, again.embeddings)
    np.testing.assert_array_equal(first.anchors, again.anchors)
    assert again.class_names == first.class_names


def test_a_baseline_has_no_anchors(resnet_run, cache_dir):
    es = emb.collect_embeddings(resnet_run, "best", limit=16)
    assert es.anchors is None and not es.has_anchors
    row = emb.anchor_summary([es]).iloc[0]
    assert np.isnan(row["nearest_anchor_accuracy"]) and np.isfinite(row["nearest_centroid_accuracy"])


def test_unknown_checkpoint_names_the_ones_there_are(arbex_run):
    with pytest.raises(FileNotFoundError, match="epoch-001"):
        emb.collect_embeddings(arbex_run, "epoch-099")


@pytest.mark.parametrize(
    ("epochs", "n", "best", "expected"),
    [
        (12, 4, 12, [1, 5, 8, 12]),
        (12, 4, 3, [1, 3, 5, 8, 12]),
        (3, 6, 2, [1, 2, 3]),
    ],
)
def test_pick_checkpoints_spreads_over_training_and_keeps_the_best(tmp_path, epochs, n, best, expected):
    for tag in [f"epoch-{e:03d}" for e in range(1, epochs + 1)] + ["best", "last"]:
        (tmp_path / "checkpoints" / tag).mkdir(parents=True)
        epoch = best if tag == "best" else epochs if tag == "last" else int(tag[6:])
        (tmp_path / "checkpoints" / tag / "state.json").write_text(json.dumps({"meta": {"epoch": epoch}}))
    assert emb.pick_checkpoints(tmp_path, n) == [f"epoch-{e:03d}" for e in expected]


# -- projection -------------------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("numba_cache")
def test_umap_projection_is_seeded_and_places_anchors(arbex_sets, cache_dir):
    es = arbex_sets[1]
    a = emb.project(es, seed=3, cache=False)
    b = emb.project(es, seed=3, cache=False)
    assert a.xy.shape == (len(es), 2) and a.anchor_xy.shape == (len(es.anchors), 2)
    np.testing.assert_array_equal(a.xy, b.xy)
    np.testing.assert_array_equal(a.anchor_xy, b.anchor_xy)


@pytest.mark.usefixtures("numba_cache")
@pytest.mark.parametrize("method", ["umap", "pca"])
def test_second_projection_is_read_from_the_cache(arbex_sets, cache_dir, monkeypatch, method):
    first = emb.project(arbex_sets[0], method=method, seed=1)
    assert list((cache_dir / "embeddings").glob(f"map-{method}-*.npy"))

    def no_fit(*args, **kwargs):
        raise AssertionError("refitted although the map was cached")

    monkeypatch.setattr(emb_projection, "_fit_2d", no_fit)
    t0 = time.perf_counter()
    again = emb.project(arbex_sets[0], method=method, seed=1)
    assert time.perf_counter() - t0 < 1.0
    np.testing.assert_array_equal(first.xy, again.xy)


def test_several_sets_share_one_fit_over_samples_and_anchors(arbex_sets, monkeypatch):
    calls = []
    real = emb_projection._fit_2d

    def counting(x, *args):
        calls.append(len(x))
        return real(x, *args)

    monkeypatch.setattr(emb_projection, "_fit_2d", counting)
    out = emb.project(arbex_sets, method="pca", cache=False)
    assert calls == [sum(len(s) + len(s.anchors) for s in arbex_sets)]
    assert [s.checkpoint for s in out] == ["epoch-001", "epoch-002"]


def test_sets_of_different_widths_are_refused(arbex_sets):
    other = _toy(dim=3)
    with pytest.raises(ValueError, match="different widths"):
        emb.project([arbex_sets[0], other], method="pca", cache=False)


# -- neighbours and numbers on hand-made sets ---------------------------------------------------------------------
def _toy(
    dim: int = 2,
    anchors: np.ndarray | None = None,
    anchor_classes: np.ndarray | None = None,
    run: str = "toy",
    epoch: int = 1,
) -> EmbeddingSet:
    """Two tight classes: class 0 around the origin, class 1 around (10, 0, ...)."""
    x = np.zeros((6, dim), np.float32)
    x[:, 0] = [0.0, 0.5, 1.0, 10.0, 10.5, 11.0]
    y = np.array([0, 0, 0, 1, 1, 1])
    return EmbeddingSet(
        run=run,
        checkpoint=f"epoch-{epoch:03d}",
        epoch=epoch,
        method="toy",
        split="valid",
        embeddings=x,
        labels=y,
        preds=y.copy(),
        confidence=np.full(6, 0.5, np.float32),
        max_prob=np.full(6, 0.9, np.float32),
        indices=np.arange(6),
        class_names=["a", "b"],
        anchors=anchors,
        anchor_classes=anchor_classes,
    )


@pytest.mark.parametrize(("index", "k", "expected"), [(0, 2, [1, 2]), (2, 1, [1]), (3, 3, [4, 5, 2]), (5, 9, None)])
def test_neighbours_are_nearest_in_the_embedding_space(index, k, expected):
    es = _toy()
    nb = emb.neighbours(es, index, k)
    if expected is None:  # k larger than the set: everyone else, nearest first
        expected = list(np.argsort(np.abs(es.embeddings[:, 0] - es.embeddings[index, 0]), kind="stable")[1:])
    assert nb.samples.tolist() == expected
    assert index not in nb.samples
    assert np.all(np.diff(nb.distances) >= 0)


def test_nearest_anchor_of_a_sample():
    anchors = np.array([[0.0, 0.0], [9.0, 0.0], [20.0, 0.0]], np.float32)
    nb = emb.neighbours(_toy(anchors=anchors, anchor_classes=np.array([0, 1, 1])), 4, 2)
    assert (nb.anchor, nb.anchor_class) == (1, 1)
    assert nb.anchor_distance == pytest.approx(1.5)


@pytest.mark.parametrize(("anchor_classes", "accuracy"), [([0, 1], 1.0), ([1, 0], 0.0)])
def test_nearest_anchor_accuracy(anchor_classes, accuracy):
    anchors = np.array([[0.5, 0.0], [10.5, 0.0]], np.float32)
    row = emb.anchor_summary([_toy(anchors=anchors, anchor_classes=np.array(anchor_classes))]).iloc[0]
    assert row["nearest_anchor_accuracy"] == accuracy
    assert row["nearest_centroid_accuracy"] == 1.0
    assert row["silhouette"] > 0.8
    assert row["anchor_separation"] == pytest.approx(10.0)


def test_anchor_drift_is_how_far_anchors_moved_since_the_previous_checkpoint():
    cls = np.array([0, 1])
    a1 = np.array([[0.0, 0.0], [10.0, 0.0]], np.float32)
    sets = [
        _toy(anchors=a1, anchor_classes=cls, epoch=1),
        _toy(anchors=a1 + [0.0, 2.0], anchor_classes=cls, epoch=2),
        _toy(anchors=a1, anchor_classes=cls, run="other", epoch=1),
    ]
    drift = emb.anchor_summary(sets)["anchor_drift"].tolist()
    assert np.isnan(drift[0]) and drift[1] == pytest.approx(2.0) and np.isnan(drift[2])


# -- figures ----------------------------------------------------------------------------------------------------------
def _stars(ax) -> int:
    """Points drawn with the anchor marker size on ``ax``."""
    return sum(
        len(c.get_offsets())
        for c in ax.collections
        if isinstance(c, PathCollection) and len(c.get_sizes()) and c.get_sizes()[0] == vemb.ANCHOR_STYLE["s"]
    )


@pytest.mark.parametrize("colour", COLOURINGS)
def test_map_draws_every_anchor_as_a_star(arbex_sets, colour):
    es = arbex_sets[1]
    fig = vemb.plot_embedding_map(es, colour)
    assert isinstance(fig, Figure)
    assert _stars(fig.axes[0]) == len(es.anchors)
    assert (len(fig.axes) == 2) == (colour == "confidence")  # a colour bar only for the continuous colouring


def test_class_filter_keeps_that_class_s_anchors(arbex_sets):
    es = arbex_sets[1]
    fig = vemb.plot_embedding_map(es, "label", classes=[es.class_names[1]])
    assert _stars(fig.axes[0]) == int((es.anchor_classes == 1).sum())


def test_neighbours_are_joined_to_the_sample(arbex_sets):
    es = arbex_sets[1]
    nb = emb.neighbours(es, 0, 5)
    lines = vemb.plot_embedding_map(es, neighbours=nb).axes[0].lines
    assert len(lines) == 5 + 1  # five neighbours, one nearest anchor


def test_epoch_grid_draws_anchor_trajectories(arbex_sets):
    fig = vemb.plot_embedding_epochs(arbex_sets)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title().startswith("epoch")]
    assert len(panels) == 2
    assert len(panels[0].lines) == 0 and len(panels[1].lines) == len(arbex_sets[1].anchors)
    assert all(_stars(ax) == len(arbex_sets[0].anchors) for ax in panels)


def test_comparison_shows_stars_only_for_the_model_with_anchors(arbex_sets, resnet_run, cache_dir):
    base = emb.project(emb.collect_embeddings(resnet_run, "best", limit=30), method="pca")
    fig = vemb.plot_embedding_comparison([arbex_sets[1], base])
    assert [_stars(ax) for ax in fig.axes[:2]] == [len(arbex_sets[1].anchors), 0]


def test_summary_figure_has_a_curve_per_quantity(arbex_sets):
    fig = vemb.plot_anchor_summary(emb.anchor_summary(arbex_sets))
    labels = [line.get_label() for ax in fig.axes for line in ax.lines]
    assert {"accuracy", "nearest_anchor_accuracy", "silhouette", "anchor_separation"} <= set(labels)


def test_unprojected_sets_are_refused(arbex_run, cache_dir):
    with pytest.raises(ValueError, match="project"):
        vemb.plot_embedding_map(emb.collect_embeddings(arbex_run, "best", limit=16))


# -- explorer ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def explorer(arbex_run, resnet_run, cache_dir):
    from fernb.widgets.embeddings import embedding_explorer

    return embedding_explorer({"arbex": arbex_run, "resnet18": resnet_run}, limit=40, method="pca")


def _find(widget, description: str):
    if getattr(widget, "description", None) == description:
        return widget
    for child in getattr(widget, "children", ()):
        if (hit := _find(child, description)) is not None:
            return hit
    return None


def test_colour_dropdown_offers_the_three_colourings(explorer):
    widget, state = explorer
    dd = _find(widget, "Colour by")
    assert dd is not None and list(dd.options) == ["label", "prediction", "confidence"]
    before = _png(state.figure)
    dd.value = "confidence" if dd.value != "confidence" else "label"
    assert state.colour == dd.value
    assert _png(state.figure) != before


@pytest.mark.parametrize(
    ("action", "value"),
    [
        ("set_colour", "prediction"),
        ("set_classes", ["happy"]),
        ("set_sample", 3),
        ("set_checkpoint", "epoch-002"),
    ],
)
def test_state_methods_redraw_the_figure(explorer, action, value):
    _, state = explorer
    state.set_colour("label")
    state.set_classes(None)
    state.set_sample(None)
    state.set_checkpoint("epoch-001")
    before = _png(state.figure)
    getattr(state, action)(value)
    assert _png(state.figure) != before


def test_changing_run_resets_the_checkpoint_to_that_run_s(explorer):
    _, state = explorer
    state.set_run("resnet18")
    assert state.current.run == "resnet18-synthetic-s0-smoke" and not state.current.has_anchors
    state.set_run("arbex")
    assert state.current.has_anchors


def test_redraw_from_the_cached_map_is_quick(explorer):
    _, state = explorer
    state.maps()  # computed already; only drawing is timed
    t0 = time.perf_counter()
    view = state.set_colour("confidence")
    json.dumps(view)
    assert time.perf_counter() - t0 < 0.3
    _png(state.figure)  # the static picture of the same map


def _map(widget):
    from fernb.widgets.scatter import ScatterMap

    if isinstance(widget, ScatterMap):
        return widget
    for child in getattr(widget, "children", ()):
        if (hit := _map(child)) is not None:
            return hit
    return None


def test_map_gets_a_face_and_a_tooltip_per_point_and_the_anchors(explorer):
    widget, state = explorer
    state.set_run("arbex")
    scatter = _map(widget)
    n = len(state.current)
    assert len(scatter.x) == len(scatter.y) == len(scatter.colours) == len(scatter.tips) == len(scatter.thumbs) == n
    assert all(uri.startswith("data:image/jpeg;base64,") for uri in scatter.thumbs)
    assert all(("nearest anchor:" in tip) and ("confidence:" in tip) for tip in scatter.tips)
    assert len(scatter.anchors) == len(state.current.anchors)  # every anchor a star


def test_a_click_on_the_map_selects_the_sample_and_lists_its_neighbours(explorer):
    widget, state = explorer
    scatter = _map(widget)
    scatter.selected = 5  # what the browser sends on a click
    assert state.sample == 5 and state.neighbours is not None
    assert scatter.links == state.neighbours.samples.tolist() and scatter.anchor_link >= 0
    assert _find(widget, "Sample (-1: none)").value == 5
    assert "data-sample='5'" in state.describe()
    scatter.selected = -1
    assert state.sample is None and scatter.links == []


def test_a_lasso_on_the_map_comes_back_as_the_selection(explorer):
    widget, state = explorer
    _map(widget).selection = [7, 2, 3]  # what the browser sends after a lasso
    assert state.selection == (2, 3, 7)
    frame = state.selection_frame()
    assert list(frame.index) == [2, 3, 7] and set(frame.columns) >= {"label", "prediction", "confidence"}
    assert "data-count='3'" in state.selection_html() and state.selection_html().count("<img") == 3
    state.set_selection(())
    assert _map(widget).selection == []


def test_switching_checkpoints_keeps_the_run_s_frame(explorer):
    widget, state = explorer
    state.set_run("arbex")
    scatter = _map(widget)
    frame = list(scatter.bounds)
    state.set_checkpoint("epoch-001")
    first = list(scatter.x)
    state.set_checkpoint("epoch-002")
    assert scatter.bounds == frame and scatter.x != first  # the points move, the frame stays


def test_hidden_classes_are_faded_on_the_map(explorer):
    widget, state = explorer
    state.set_classes(["happy"])
    scatter = _map(widget)
    happy = state.current.class_names.index("happy")
    assert scatter.faded == (state.current.labels != happy).tolist()
    assert {a["text"] for a in scatter.anchors} == {"happy"}
    state.set_classes(None)


def test_explorer_shows_a_picture_where_widgets_cannot_run(explorer):
    widget, _ = explorer
    bundle = widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")


def test_the_map_s_front_end_ships_inside_the_package():
    from fernb.widgets.scatter import ScatterMap

    esm = ScatterMap._esm if isinstance(ScatterMap._esm, str) else str(ScatterMap._esm)
    assert "export default" in esm and "http" not in esm.replace("https://anywidget", "")
