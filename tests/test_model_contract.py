"""The contract every registered model keeps (the timm way: one test parametrised over the registry, so a new model
gets every check by being registered): the tiny preset builds, ``forward`` returns a named output dataclass,
``embed`` and the feature/head split agree with it, Grad-CAM has target layers, weights round-trip through
``create_model(..., checkpoint=state_dict)``, the pretrained cfg describes the model as built, ``feature_info``,
``num_features`` and ``head_hidden_size`` describe what it computes, and ``reset_classifier`` gives a working model
for another class count."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from fernb.data.transforms import IMAGENET_MEAN, IMAGENET_STD, transform_spec
from fernb.models import (
    VARIANTS,
    FERModel,
    ModelOutput,
    PretrainedCfg,
    _pretrained,
    create_model,
    get_pretrained_cfg,
    list_models,
    list_pretrained,
    model_entrypoint,
    parse_variant,
)
from fernb.models._pretrained import resolve_names
from fernb.models.adcorre import AdCorreConfig
from fernb.models.arbex import ARBExConfig
from fernb.models.arm import ARMConfig
from fernb.models.esr import ESRConfig
from fernb.models.manet import MANetConfig
from fernb.models.poster import PosterV2Config
from fernb.models.resnet import ResNetConfig
from fernb.models.scn import SCNConfig

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


def _input(model: FERModel, device: torch.device | None = None) -> torch.Tensor:
    c, h, w = model.pretrained_cfg.input_size
    return torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(1)).to(device)


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


# ------------------------------------------------------------------------------------------------ pretrained cfg

FAMILIES = [n for n in list_models() if model_entrypoint(n).__module__.startswith("fernb.models.")]
CONFIGS = {
    "resnet18": ResNetConfig,
    "arm": ARMConfig,
    "adcorre": AdCorreConfig,
    "esr": ESRConfig,
    "manet": MANetConfig,
    "poster_v2": PosterV2Config,
    "arbex": ARBExConfig,
    "scn": SCNConfig,
}
# ESR's convolutions are unpadded: its maps are a few pixels smaller than size / reduction (the nominal stride)
UNPADDED = ("esr",)


def test_every_family_has_a_config_here():
    assert sorted(CONFIGS) == sorted(FAMILIES)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_entry_point_registers_cfgs_for_its_presets(name: str):
    tags = list_pretrained(name)
    assert {f"{name}.official", f"{name}.tiny"} <= set(tags)
    for tag in tags:
        cfg = get_pretrained_cfg(tag)
        preset = tag.split(".")[1]
        config = getattr(CONFIGS[name], preset)()  # the cfg states the preset's own sizes, without a model
        assert cfg.input_size == (3, config.img_size, config.img_size) and cfg.num_classes == config.num_classes
        assert cfg.first_conv and cfg.classifier and len(cfg.mean) == len(cfg.std) == 3
        assert bool(cfg.weight_files) == (preset == "official")  # metadata only: fernb never downloads them
        assert get_pretrained_cfg(name, preset) is cfg
    assert get_pretrained_cfg(name) is get_pretrained_cfg(name, "tiny")  # create_model's default preset


@pytest.mark.parametrize("name", FAMILIES)
def test_cfg_normalisation_is_the_transform_preset_s(name: str):
    cfg = get_pretrained_cfg(name, "official")
    spec = transform_spec(name, False, cfg.img_size)
    assert (cfg.mean, cfg.std) == (
        (spec.mean, spec.std) if spec.mean is not None else (_pretrained.UNIT_MEAN, _pretrained.UNIT_STD)
    )
    assert cfg.channel_order == ("BGR" if spec.bgr else "RGB")
    assert (_pretrained.IMAGENET_MEAN, _pretrained.IMAGENET_STD) == (IMAGENET_MEAN, IMAGENET_STD)


def test_unknown_cfgs_are_refused_with_the_known_ones():
    with pytest.raises(KeyError, match="poster_v2.official"):
        get_pretrained_cfg("poster_v2", "huge")
    with pytest.raises(ValueError, match="contradicts"):
        get_pretrained_cfg("poster_v2.official", "tiny")


@pytest.mark.parametrize("spec", SPECS)
def test_pretrained_cfg_describes_the_model_as_built(spec: str):
    model = _build(spec)
    name, _ = parse_variant(spec)
    cfg, registered = model.pretrained_cfg, get_pretrained_cfg(name, "tiny")
    assert isinstance(cfg, PretrainedCfg)
    assert cfg.input_size == (3, model.config.img_size, model.config.img_size)
    assert cfg.num_classes == model.num_classes == model.config.num_classes
    facts = ("mean", "std", "interpolation", "crop_pct", "channel_order", "weight_files", "source")
    assert [getattr(cfg, f) for f in facts] == [getattr(registered, f) for f in facts]
    modules = dict(model.named_modules())
    for conv in cfg.first_conv:
        assert isinstance(modules[conv], nn.Conv2d) and modules[conv].in_channels == cfg.input_size[0]
    names = set(modules) | {n for n, _ in model.named_parameters()}
    for pattern in cfg.classifier:
        assert resolve_names([pattern], names), f"classifier {pattern!r} names nothing in {type(model).__name__}"
    assert any(cfg.is_classifier(k) for k in model.state_dict())


# ------------------------------------------------------------------------------------------------ features


def _check_features(model: FERModel, unpadded: bool = False) -> None:
    x = _input(model)
    size = x.shape[-1]
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(f["module"]).register_forward_hook(
            lambda _m, _i, out, name=f["module"]: seen.__setitem__(name, out)
        )
        for f in model.feature_info
    ]
    try:
        with torch.no_grad():
            feats = model.forward_features(x)
            pre = model.forward_head(feats, pre_logits=True)
    finally:
        for h in hooks:
            h.remove()
    assert model.feature_info and all(set(f) >= {"num_chs", "reduction", "module"} for f in model.feature_info)
    for f in model.feature_info:
        out = seen[f["module"]]
        if out.ndim == 4:  # a map: channels and side
            assert out.shape[1] == f["num_chs"], f
            side = math.ceil(size / f["reduction"])
            assert (out.shape[-1] <= side) if unpadded else out.shape[-1] == side, (f, out.shape)
        else:  # tokens (B, N, C)
            assert out.shape[-1] == f["num_chs"], f
    channels = feats.shape[1] if feats.ndim == 4 else feats.shape[-1]
    assert channels == model.num_features
    if feats.ndim == 4:  # the forward_features map is one of the feature maps
        assert any(seen[f["module"]].shape == feats.shape for f in model.feature_info)
    assert pre.shape == (2, model.head_hidden_size)
    modules = dict(model.named_modules())
    for conv in model.pretrained_cfg.first_conv:
        assert isinstance(modules[conv], nn.Conv2d) and modules[conv].in_channels == x.shape[1]


@pytest.mark.parametrize("spec", SPECS)
def test_feature_info_num_features_and_head_size_describe_what_the_model_computes(spec: str):
    _check_features(_build(spec), unpadded=parse_variant(spec)[0] in UNPADDED)


@pytest.mark.parametrize(
    ("name", "preset", "overrides"),
    [
        ("arbex", "tiny_resnet18", {}),
        ("arbex", "tiny", {"backbone": "timm:resnet10t", "img_size": 32}),
        ("adcorre", "tiny", {"stem_stride": 1, "img_size": 48}),
        ("adcorre", "tiny", {"stem_stride": 2, "img_size": 48}),
        ("adcorre", "tiny", {"stem_stride": 1, "img_size": 48, "backbone_kwargs": {"stem_type": "deep"}}),
        ("manet", "tiny", {"stem": "small", "stem_stride": 2, "img_size": 48}),
        ("resnet18", "tiny", {"stem": "imagenet", "img_size": 64}),
        ("poster_v2", "tiny", {"img_size": 64, "backbone_size": 32}),
    ],
)
def test_feature_info_follows_the_config(name: str, preset: str, overrides: dict):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model(name, preset, **overrides).eval()
    _check_features(model)


# ------------------------------------------------------------------------------------------------ reset_classifier


@pytest.mark.parametrize("spec", SPECS)
def test_reset_classifier_gives_a_model_for_another_class_count(spec: str, device: torch.device):
    model = _build(spec, device)
    n = model.num_classes + 3
    kept = {k: v.clone() for k, v in model.state_dict().items() if not model.pretrained_cfg.is_classifier(k)}
    model.reset_classifier(n)
    assert model.num_classes == model.config.num_classes == model.pretrained_cfg.num_classes == n
    for k, v in model.state_dict().items():  # only the classifier changed
        if k in kept:
            torch.testing.assert_close(v, kept[k], rtol=0, atol=0)
    assert all(p.device.type == device.type for p in model.parameters())
    x = _input(model, device)
    with torch.no_grad():
        out = model.eval()(x)
    assert out.logits.shape == (2, n) and torch.isfinite(out.logits).all()
    model.train()
    out = model(x)
    out.logits.float()[:, -1].sum().backward()  # the score of a new class
    heads = [p for name, p in model.named_parameters() if model.pretrained_cfg.is_classifier(name) and p.requires_grad]
    assert heads and all(p.grad is not None and torch.isfinite(p.grad).all() for p in heads)
    other = create_model(parse_variant(spec)[0], "tiny", num_classes=n, **parse_variant(spec)[1])
    _grow(other)
    assert set(other.state_dict()) == set(model.state_dict())  # the same keys as a model built for n classes
    assert all(other.state_dict()[k].shape == v.shape for k, v in model.state_dict().items())


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_reset_classifier_refuses_a_bad_class_count(bad: object):
    model = _build("resnet18")
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(bad)  # type: ignore[arg-type]
