"""Every CAM method on every model family: input-sized maps that are never flat by a fault, through each model's own
target layers and reshape; ScoreCAM's channel limit and batching; EigenCAM's sign; faithfulness scores (ROAD and the
confidence change) that tell a map that points at the evidence from one that does not; the explorer's CAM selector
and the figures."""

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
from fernb.explore.faithfulness import faithfulness, faithfulness_table
from fernb.explore.gradcam import CAM_METHODS, CamModel, CamResult, check_cam_method, check_not_flat, compute_cams
from fernb.labels import get_label_space
from fernb.models import create_model, list_models, model_entrypoint
from fernb.models._base import FERModel, ModelOutput

MODELS = [n for n in list_models() if model_entrypoint(n).__module__.startswith("fernb.models.")]
METHODS = [m for m in CAM_METHODS if m != "random"]
INPUT_SEED = 2  # as in test_gradcam: inputs with clear positive evidence for every tiny model's prediction at seed 0


@functools.cache
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POSTER_V2 / ARBEx: no pretrained backbone weights
        model = create_model(name, "tiny")
    if name == "esr":
        model.set_active_branches(len(model.branches))  # every branch a target layer
    return model.eval()


def _images(model: nn.Module, n: int = 2) -> torch.Tensor:
    s = model.config.img_size
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(INPUT_SEED))


@pytest.mark.parametrize("cam_method", METHODS)
@pytest.mark.parametrize("name", MODELS)
def test_every_cam_method_gives_input_sized_maps_not_flat_by_a_fault(name: str, cam_method: str):
    model = _model(name)
    x = _images(model)
    res = compute_cams(model, x, cam_method=cam_method, score_channels=8, score_batch=4)
    assert res.cam_method == cam_method
    assert res.maps.shape == (2, *x.shape[-2:]) and res.maps.min() >= 0 and res.maps.max() <= 1 + 1e-6
    check_not_flat(res, f"{name} {cam_method}")
    np.testing.assert_array_equal(res.targets, res.predicted)


def test_cam_method_names_are_checked_and_normalised():
    assert check_cam_method("Grad-CAM++") == "gradcam++" and check_cam_method("ScoreCAM") == "scorecam"
    with pytest.raises(ValueError, match="unknown CAM method.*gradcam"):
        compute_cams(_model("resnet18"), _images(_model("resnet18")), cam_method="saliency")


def test_scorecam_with_every_channel_does_not_depend_on_the_batch_size():
    model = _model("resnet18")
    x = _images(model)
    a = compute_cams(model, x, cam_method="scorecam", score_batch=7)
    b = compute_cams(model, x, cam_method="scorecam", score_batch=64)
    np.testing.assert_allclose(a.maps, b.maps, atol=1e-5)
    few = compute_cams(model, x, cam_method="scorecam", score_channels=4)
    assert not np.allclose(few.maps, a.maps, atol=1e-3)  # an approximation, not the same map


def test_scorecam_of_a_batch_dependent_model_scores_one_input_at_a_time():
    model = _model("arm")
    x = _images(model, 3)
    model.behaviour = "official"  # the shared affinity is the mean over the batch
    try:
        res = compute_cams(model, x, 0, cam_method="scorecam", score_channels=6)
        alone = compute_cams(model, x[1:2], 0, cam_method="scorecam", score_channels=6, per_image=True)
        assert res.per_image
        np.testing.assert_allclose(res.maps[1], alone.maps[0], atol=1e-5)
    finally:
        model.behaviour = model.config.behaviour


class _Bright(FERModel):
    """Class 1's score is the mean activation of the top-left quarter of a 1x1 convolution (4 equal channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        with torch.no_grad():
            self.conv.weight.fill_(0.25)
            self.conv.bias.zero_()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> ModelOutput:
        a = self.act(self.conv(x))  # (B, 4, H, W)
        h, w = a.shape[-2:]
        spot = a[..., : h // 2, : w // 2].mean((1, 2, 3))
        return ModelOutput(logits=torch.stack([torch.zeros_like(spot), 4 * spot], 1), embedding=a.mean((2, 3)))

    def cam_target_layers(self) -> list[nn.Module]:
        return [self.act]


class _Texture(_Bright):
    """Class 1's score is the fine texture (the |Laplacian|) of the top-left quarter: what ROAD's imputation, which
    keeps the local mean, removes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]) / 3
        with torch.no_grad():
            self.conv.weight.copy_(torch.stack([lap.expand(3, 3, 3), -lap.expand(3, 3, 3)]))


def test_eigencam_points_where_the_layer_responds():
    x = torch.zeros(1, 3, 16, 16)
    x[..., 2:6, 2:6] = 1.0
    res = compute_cams(_Bright(), x, 1, cam_method="eigencam")
    assert res.maps[0, 2:6, 2:6].mean() > 0.8 and res.maps[0, 10:, 10:].mean() < 0.2


def test_faithfulness_ranks_a_map_of_the_evidence_above_its_opposite():
    model = _Texture()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    good = np.zeros((2, 16, 16), np.float32)
    good[:, :8, :8] = 1.0
    good += np.linspace(0, 0.1, 256, dtype=np.float32).reshape(16, 16)  # no ties
    logits = model(x).logits.detach().numpy()
    targets = np.ones(2, np.int64)
    right = faithfulness(model, x, CamResult(good, logits, targets, [good], ["act"]), seed=0)
    wrong = faithfulness(model, x, CamResult(1 - good, logits, targets, [1 - good], ["act"]), seed=0)
    assert (right["morf"] < wrong["morf"]).all() and (right["road"] > wrong["road"]).all()
    assert (right["confidence change"] > wrong["confidence change"]).all()
    again = faithfulness(model, x, CamResult(good, logits, targets, [good], ["act"]), seed=0)
    np.testing.assert_array_equal(right["road"], again["road"])  # the imputer's noise is seeded


def test_faithfulness_table_has_a_row_per_model_and_cam_method():
    models = {n: (_model(n), _images(_model(n))) for n in ("resnet18", "arbex")}
    rows = faithfulness_table(models, ["gradcam", "eigencam", "random"], fractions=(0.5,))
    assert [(r["model"], r["cam"]) for r in rows] == [(m, c) for m in models for c in ("gradcam", "eigencam", "random")]
    for r in rows:
        assert all(np.isfinite(r[k]) for k in ("road", "morf", "lerf", "confidence change"))
        assert ("beats random" in r) == (r["cam"] != "random")


def _dataset(n: int = 12, size: int = 40) -> FERDataset:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return FERDataset("toy", "test", get_label_space("basic7"), np.arange(n) % 7, pixels=pixels)


def _cam_model(name: str, ds: FERDataset) -> CamModel:
    model = _model(name)
    tds = ds.with_transform(build_transforms(name, train=False, img_size=model.config.img_size))
    return CamModel(name, Path("."), None, model, list(ds.class_names), tds)


def test_every_model_under_every_cam_method_in_one_figure():
    from fernb.viz.gradcam import plot_cam_methods, plot_faithfulness

    ds = _dataset()
    results = {}
    for name in ("resnet18", "arbex"):
        cm = _cam_model(name, ds)
        faces = cm.faces([1, 2])
        results[name] = {
            c: (faces, compute_cams(cm.model, faces.images, cam_method=c)) for c in ("gradcam", "layercam")
        }
    fig = plot_cam_methods(results, row=1)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 4 and axes[0].get_title().startswith("Grad-CAM\npred") and axes[1].get_title() == "LayerCAM"
    assert [ax.get_ylabel() for ax in axes[::2]] == ["resnet18", "arbex"]
    rows = [{"model": m, "cam": c, "road": 0.1 * i} for i, (m, c) in enumerate([("a", "gradcam"), ("a", "scorecam")])]
    assert isinstance(plot_faithfulness(rows), Figure)


def test_explorer_switches_cam_method_and_caches_each():
    pytest.importorskip("ipywidgets")
    from fernb.widgets.gradcam import gradcam_explorer

    ds = _dataset()
    models = {n: _cam_model(n, ds) for n in ("resnet18", "manet")}
    widget, state = gradcam_explorer(models, [1, 2, 5], cam_methods=["gradcam", "scorecam", "eigencam"])
    assert state.passes == 2 and "Grad-CAM for" in state.figure.get_suptitle()
    cam = next(c for c in widget.children[0].children if getattr(c, "description", "") == "CAM")
    assert [v for _, v in cam.options] == ["gradcam", "scorecam", "eigencam"]
    cam.value = "eigencam"  # the dropdown drives the state
    assert state.cam_method == "eigencam" and state.passes == 2 and "EigenCAM" in state.figure.get_suptitle()
    state.set_cam_method("Grad-CAM")
    assert state.passes == 0  # cached per CAM method
    with pytest.raises(ValueError, match="unknown CAM method"):
        state.set_cam_method("saliency")
