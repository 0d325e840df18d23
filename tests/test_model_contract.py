"""The contract every registered model keeps (the timm way: one test parametrised over the registry, so a new model
gets every check by being registered): the tiny preset builds, ``forward`` returns a named output dataclass,
``embed`` and the feature/head split agree with it, Grad-CAM has target layers, and weights round-trip through
``create_model(..., checkpoint=state_dict)``."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from fernb.models import VARIANTS, FERModel, ModelOutput, create_model, list_models, model_entrypoint, parse_variant

# fernb's own families and their variants (the session also registers a toy model for the engine's tests)
SPECS = [n for n in list_models() if model_entrypoint(n).__module__.startswith("fernb.models.")] + list(VARIANTS)


def _build(spec: str, device: torch.device | None = None) -> nn.Module:
    name, flags = parse_variant(spec)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POSTER_V2 / ARBEx: no pretrained backbone weights
        model = create_model(name, "tiny", **flags)
    _grow(model)
    return model.eval().to(device)


def _grow(model: nn.Module) -> None:
    """ESR: every branch, as after its last training stage."""
    if hasattr(model, "set_active_branches"):
        while len(model.branches) < model.config.num_branches:
            model.add_branch()
        model.set_active_branches(len(model.branches))


def _input(model: nn.Module, device: torch.device) -> torch.Tensor:
    size = getattr(model.config, "img_size", None) or 48
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)


def test_the_registry_holds_every_family():
    assert {"arbex", "poster_v2", "resnet18", "arm", "adcorre", "esr", "manet"} <= set(SPECS)


@pytest.mark.parametrize("spec", SPECS)
def test_forward_returns_named_outputs_that_embed_and_the_head_split_agree_with(spec: str, device: torch.device):
    model = _build(spec, device)
    x = _input(model, device)
    assert isinstance(model, FERModel)
    with torch.no_grad():
        out = model(x)
        assert isinstance(out, ModelOutput)
        assert out.logits.shape == (2, model.config.num_classes)
        assert all(torch.isfinite(v.float()).all() for v in (out.logits, *out.extras().values()))
        assert out.embedding is not None and out.embedding.shape[0] == 2
        torch.testing.assert_close(model.embed(x), out.embedding)
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), out.logits)


@pytest.mark.parametrize("spec", SPECS)
def test_gradcam_hooks_exist(spec: str):
    model = _build(spec)
    layers = model.cam_target_layers()
    assert layers and all(isinstance(m, nn.Module) for m in layers)
    reshape = model.cam_reshape_transform()
    assert reshape is None or callable(reshape)


@pytest.mark.parametrize("spec", SPECS)
def test_weights_round_trip_through_create_model(spec: str, device: torch.device):
    model = _build(spec, device)
    name, flags = parse_variant(spec)
    state = {k: v.cpu().clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)  # another init, so that equal outputs prove the weights were loaded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if hasattr(model, "set_active_branches"):  # ESR's state holds the branches its stages added
            other = create_model(name, "tiny", **flags)
            _grow(other)
            other.load_state_dict(state)
        else:
            other = create_model(name, "tiny", checkpoint=state, **flags)
    x = _input(model, device)
    with torch.no_grad():
        torch.testing.assert_close(other.to(device).eval()(x).logits, model(x).logits)
