"""Grad-CAM through every model's own target layers: one target per image, input-sized maps that are never flat by
accident, the real token grid for ARBEx, per-image maps for batch-dependent models, faces as the models saw them,
the grid figure and the explorer's state."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from fernb.data.base import FERDataset
from fernb.data.transforms import build_transforms
from fernb.explore.gradcam import (
    CamModel,
    CamResult,
    FlatMapError,
    check_not_flat,
    compute_cams,
    is_flat,
    load_faces,
    pick_faces,
    resolve_class,
)
from fernb.labels import get_label_space
from fernb.models import create_model, list_models, model_entrypoint
from fernb.models._base import FERModel, ModelOutput

# fernb's own families (other test modules register toy models in the same registry)
MODELS = [n for n in list_models() if model_entrypoint(n).__module__.startswith("fernb.models.")]
INPUT_SEED = 2  # inputs whose predicted-class maps have clear positive evidence for every tiny model at seed 0


@functools.cache
def _model(name: str, img_size: int | None = None) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POSTER_V2 / ARBEx: no pretrained backbone weights
        model = create_model(name, "tiny", **({"img_size": img_size} if img_size else {}))
    if name == "esr":
        model.set_active_branches(len(model.branches))  # every branch a target layer
    return model.eval()


def _images(model: nn.Module, n: int = 2) -> torch.Tensor:
    s = model.config.img_size
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(INPUT_SEED))


@functools.cache
def _predicted(name: str) -> tuple[torch.Tensor, CamResult]:
    """Two seeded inputs and their predicted-class maps (the default path: batch-dependence probe included)."""
    model = _model(name)
    x = _images(model)
    return x, compute_cams(model, x)


@pytest.mark.parametrize("name", MODELS)
def test_predicted_class_maps_are_input_sized_in_unit_range_and_not_flat(name: str):
    x, res = _predicted(name)
    assert res.maps.shape == (2, *x.shape[-2:])
    assert res.maps.min() >= 0 and res.maps.max() <= 1 + 1e-6
    np.testing.assert_array_equal(res.targets, res.predicted)
    assert res.reasons == ["ok", "ok"], f"{name} at {res.layer_names}: {res.reasons}"
    check_not_flat(res, name)  # the same check the notebook runs
    assert (res.map_std > 0.05).all()


@pytest.mark.parametrize("name", MODELS)
def test_one_target_per_image_and_another_class_gives_another_map(name: str):
    model = _model(name)
    x, pred = _predicted(name)
    other = (pred.predicted + 1) % pred.logits.shape[1]
    chosen = compute_cams(model, x, other)
    np.testing.assert_array_equal(chosen.targets, other)
    np.testing.assert_allclose(chosen.logits, pred.logits, atol=1e-5)  # same forward, another backward
    for a, b in zip(pred.maps, chosen.maps, strict=True):
        assert np.abs(a - b).max() > 0.05
    check_not_flat(chosen, name, allow_no_evidence=True)  # flat only where the class has no positive evidence
    with pytest.raises(ValueError, match="one target class per image"):
        compute_cams(model, x, [0, 1, 2])


@pytest.mark.parametrize("name", ["arbex", "resnet18"])
def test_model_mode_and_parameter_flags_are_restored(name: str):
    model = _model(name)
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    try:
        compute_cams(model, _images(model, 1), 0)
        assert model.training
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


@pytest.mark.parametrize("size", [None, 64])
def test_arbex_maps_come_from_its_real_token_grid(size: int | None):
    model = _model("arbex", size)
    size, g = model.config.img_size, model.config.grid
    res = _predicted("arbex")[1] if size == _model("arbex").config.img_size else compute_cams(model, _images(model))
    assert len(res.layer_names) == 1 and res.layer_names[0].endswith("norm1")
    assert res.signed[0].shape == (2, g, g)  # (B, g, g): prefix token dropped, 3 scales stacked as channels
    assert res.maps.shape == (2, size, size)
    assert not any(is_flat(m) for m in res.maps)


def test_batch_dependent_models_are_explained_one_image_at_a_time():
    model = _model("arm")
    x = _images(model, 3)
    model.behaviour = "official"  # the shared affinity is the mean over the batch
    try:
        res = compute_cams(model, x, 0)
        assert res.per_image
        alone = compute_cams(model, x[1:2], 0)
        np.testing.assert_allclose(res.maps[1], alone.maps[0], atol=1e-5)
    finally:
        model.behaviour = model.config.behaviour


def test_batched_and_per_image_maps_agree_for_a_per_image_model():
    model = _model("arbex")
    x = _images(model, 3)
    batched, single = compute_cams(model, x, 0), compute_cams(model, x, 0, per_image=True)
    assert not batched.per_image and single.per_image
    np.testing.assert_allclose(batched.maps, single.maps, atol=1e-4)


class _ConstantLayerNet(FERModel):
    """A target layer after global pooling: its map is spatially constant, so Grad-CAM cannot locate anything."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.spread = nn.Upsample(size=(4, 4))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        z = self.spread(self.pool(torch.relu(self.conv(x)))).mean((2, 3))
        return ModelOutput(logits=self.fc(z), embedding=z)

    def cam_target_layers(self) -> list[nn.Module]:
        return [self.spread]


def test_a_flat_map_from_a_constant_layer_fails_the_check():
    torch.manual_seed(0)
    res = compute_cams(_ConstantLayerNet(), torch.randn(2, 3, 16, 16))
    assert res.flat.all()
    assert set(res.reasons) == {"constant layer"}
    with pytest.raises(FlatMapError, match="constant layer"):
        check_not_flat(res, "constant", allow_no_evidence=True)


def test_is_flat():
    assert is_flat(np.full((8, 8), 0.5)) and is_flat(np.zeros((8, 8)))
    assert is_flat(np.full((8, 8), np.nan))
    ramp = np.linspace(0, 1, 64).reshape(8, 8)
    assert not is_flat(ramp)


def test_resolve_class():
    names = ["neutral", "happy", "surprise"]
    assert resolve_class("predicted", names) is None and resolve_class(None, names) is None
    assert resolve_class("Surprise", names) == 2 and resolve_class(1, names) == 1
    with pytest.raises(ValueError, match="unknown class"):
        resolve_class("contempt", names)


def _dataset(n: int = 12, size: int = 40) -> FERDataset:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    pixels[0] = [200, 30, 10]  # a red face: BGR inputs must come back red
    targets = np.arange(n) % 7
    return FERDataset("toy", "test", get_label_space("basic7"), targets, pixels=pixels)


def test_pick_faces_covers_the_classes_and_is_repeatable():
    targets = np.repeat(np.arange(7), 5)
    a, b = pick_faces(targets, 7, seed=1), pick_faces(targets, 7, seed=1)
    np.testing.assert_array_equal(a, b)
    assert sorted(targets[a]) == list(range(7))
    assert len(pick_faces(targets, 10)) == 10 and len(set(pick_faces(targets, 10))) == 10


@pytest.mark.parametrize("method,size", [("arbex", 48), ("esr", 64), ("adcorre", 32)])
def test_faces_are_what_each_model_sees_unnormalised(method: str, size: int):
    ds = _dataset().with_transform(build_transforms(method, train=False, img_size=size))
    faces = load_faces(ds, [0, 3])
    assert faces.images.shape == (2, 3, size, size) and faces.faces.shape == (2, size, size, 3)
    assert faces.faces.dtype == np.uint8
    np.testing.assert_allclose(faces.faces[0].reshape(-1, 3).mean(0), [200, 30, 10], atol=2)
    np.testing.assert_array_equal(faces.labels, [0, 3])


def _cam_model(name: str, ds: FERDataset) -> CamModel:
    model = _model(name)
    tds = ds.with_transform(build_transforms(name, train=False, img_size=model.config.img_size))
    return CamModel(name, Path("."), None, model, list(ds.class_names), tds)


def test_grid_has_one_image_axis_per_sample_and_method():
    from fernb.viz.gradcam import plot_method_cams

    ds = _dataset()
    results = {}
    for name in ("resnet18", "esr"):
        cm = _cam_model(name, ds)
        faces = cm.faces([1, 2, 5])
        results[name] = (faces, compute_cams(cm.model, faces.images, 3))
    fig = plot_method_cams(results, ds.class_names, title="surprise")
    assert isinstance(fig, Figure)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 3 * 2
    titles = np.array([ax.get_title() for ax in image_axes]).reshape(3, 2)  # rows = samples, columns = methods
    assert all(t.startswith("resnet18\n") for t in titles[:, 0]) and all(t.startswith("esr\n") for t in titles[:, 1])
    for j, (_, res) in enumerate(results.values()):
        for i in range(3):
            assert ("map: surprise" in titles[i, j]) == (res.predicted[i] != 3)


def test_explorer_state_methods_replot_and_cache_maps():
    pytest.importorskip("ipywidgets")
    from fernb.widgets.gradcam import gradcam_explorer

    ds = _dataset()
    models = {n: _cam_model(n, ds) for n in ("resnet18", "manet")}
    widget, state = gradcam_explorer(models, [1, 2, 5])
    assert widget is not None and isinstance(state.figure, Figure)
    assert state.passes == 2  # one Grad-CAM pass per method for the first sample's predicted class
    first = state.figure
    unpredicted = next(c for i, c in enumerate(ds.class_names) if i not in {state.predicted[m, 1] for m in models})
    fig = state.set_class(unpredicted)
    assert fig is state.figure and fig is not first and f"'{unpredicted}'" in fig.get_suptitle()
    assert state.passes == 2
    state.set_class("predicted")
    assert state.passes == 0  # cached
    state.set_sample(5)
    assert "#5" in state.figure.axes[0].get_ylabel()
    state.set_method("manet")
    assert len([ax for ax in state.figure.axes if ax.images]) == 1
    assert state.passes == 0  # manet's map of sample 5 was computed for the previous figure
    shown = widget.children[-1]  # the Output widget holds exactly the latest figure
    assert [o["output_type"] for o in shown.outputs] == ["display_data"]
    assert state.set_method([]) is None and shown.outputs[0]["output_type"] == "stream"
    with pytest.raises(ValueError, match="unknown method"):
        state.set_method(["vgg"])
    with pytest.raises(ValueError, match="not one of"):
        state.set_sample(0)
