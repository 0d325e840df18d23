"""POSTER_V2: the official outputs through fernb's own converter, presets, registry and Grad-CAM hooks."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from fidelity import assert_matches, load_recipe, official_state_dict

import fernb
from fernb.models import LogitsOnly
from fernb.models._weights import load_checkpoint
from fernb.models.poster import PosterV2, PosterV2Config, PosterV2Output

# Official modules POSTER_V2 builds but never uses in its forward pass (plus buffers fernb recomputes).
UNUSED_OFFICIAL = re.compile(
    r"face_landback\.output_layer\.|ir_back\.output_layer\.|attn[123]\.relative_position_index$"
    r"|VIT\.(patch_embed|eca_block|CON1|IRLinear1|IRLinear2)\.|VIT\.blocks\.\d+\.conv\."
)


@pytest.fixture(scope="module")
def fixture(fidelity_dir: Path) -> dict:
    return torch.load(fidelity_dir / "poster_v2_7cls.pt", weights_only=True)


@pytest.fixture(scope="module")
def official_sd(fidelity_dir: Path) -> dict[str, torch.Tensor]:
    return official_state_dict(fidelity_dir, "poster_v2_7cls.pt")


@pytest.fixture(scope="module")
def official_model(official_sd: dict[str, torch.Tensor]) -> PosterV2:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fernb.create_model("poster_v2", preset="official", checkpoint=official_sd)
    return model.eval()


@pytest.fixture(scope="module")
def fixture_input(fidelity_dir: Path, fixture: dict) -> torch.Tensor:
    rec = fixture["inputs"]["x"]
    recipe = load_recipe(fidelity_dir)
    assert torch.equal(recipe.make_pixels(rec["shape"], rec["seed"]), rec["pixels_uint8"])
    return recipe.make_input(rec["shape"], rec["seed"], rec["mean"], rec["std"])


def test_official_outputs_and_signatures_match(official_model: PosterV2, fixture: dict, fixture_input: torch.Tensor):
    with torch.no_grad():
        inter = official_model.backbone.forward_intermediates(fixture_input)
        logits = official_model.forward_head(inter["tokens"])
    ref, sig = fixture["outputs"], fixture["outputs"]["signatures"]
    assert_matches(logits, ref["logits"], "logits")
    assert_matches(inter["embedding"], ref["embedding"], "embedding")
    assert_matches(inter["cls_token"], ref["cls_token_after_norm"], "cls_token_after_norm")
    for i in (1, 2, 3):
        assert_matches(inter[f"landmark{i}"].mean((2, 3)), sig[f"landmark_feat{i}"], f"landmark_feat{i}")
        assert_matches(inter[f"image{i}"].mean((2, 3)), sig[f"ir_feat{i}"], f"ir_feat{i}")
        assert_matches(inter[f"fused{i}"].mean((1, 2)), sig[f"ffn{i}"], f"ffn{i}")  # channels last
    assert_matches(inter["landmark3_proj"].mean((2, 3)), sig["landmark_feat3_256"], "landmark_feat3_256")
    assert inter["vit_input_tokens"].shape == (4, 147, 768)
    assert_matches(inter["vit_input_tokens"].mean(1), sig["vit_input_tokens"], "vit_input_tokens")
    assert_matches(inter["vit_input_tokens"].mean(2), sig["vit_input_tokens_per_token"], "vit_input_tokens_per_token")


def test_forward_with_unfused_attention_matches_too(
    official_model: PosterV2, fixture: dict, fixture_input: torch.Tensor
):
    mods = [m for m in official_model.modules() if hasattr(m, "fused")]
    try:
        for m in mods:
            m.fused = False
        with torch.no_grad():
            out = official_model(fixture_input)
    finally:
        for m in mods:
            m.fused = True
    assert isinstance(out, PosterV2Output)
    assert_matches(out.logits, fixture["outputs"]["logits"], "logits (unfused attention)")
    assert_matches(out.embedding, fixture["outputs"]["embedding"], "embedding (unfused attention)")


def test_converter_drops_exactly_the_unused_official_modules(official_model: PosterV2, official_sd: dict):
    converted, naming, dropped = official_model.convert_state_dict(official_sd)
    assert naming == "poster_v2"
    assert set(converted) == set(official_model.state_dict()), "conversion must cover every fernb key, nothing more"
    assert sorted(dropped) == sorted(k for k in official_sd if UNUSED_OFFICIAL.match(k))
    gdc = sum(
        v.numel()
        for k, v in official_sd.items()
        if k.startswith("face_landback.output_layer.") and k.endswith(("weight", "bias"))
    )
    # README §4.1: 58,316,594 official parameters, 14,466,637 never used; the GDC landmark head (evaluated, result
    # discarded) is not built either
    assert gdc == 96_016
    assert official_model.num_params() == 58_316_594 - 14_466_637 - gdc


def test_dataparallel_prefix_and_report(official_model: PosterV2, official_sd: dict):
    prefixed = {f"module.{k}": v for k, v in official_sd.items()}
    rep = load_checkpoint(official_model, prefixed)
    assert rep.ok and rep.converted_from == "poster_v2" and len(rep.loaded) == len(official_model.state_dict())
    assert "dropped" in str(rep)


def test_tiny_preset_shapes_and_interface():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fernb.create_model("poster_v2", num_classes=5)
    cfg = model.config
    assert (cfg.img_size, cfg.grid, cfg.num_tokens) == (48, 3, 27)
    x = torch.randn(3, 3, 48, 48)
    out = model.eval()(x)
    assert out.logits.shape == (3, 5) and out.embedding.shape == (3, cfg.embed_dim)
    feats = model.forward_features(x)
    assert feats.shape == (3, 1 + cfg.num_tokens, cfg.embed_dim)
    torch.testing.assert_close(model.forward_head(feats), out.logits)
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), out.embedding)
    torch.testing.assert_close(model.embed(x), out.embedding)
    assert LogitsOnly(model)(x).shape == (3, 5)
    assert set(out.extras()) == {"embedding"}


def test_cam_reshape_uses_the_real_grid():
    cfg = PosterV2Config.official()
    assert (cfg.grid, cfg.num_tokens) == (7, 147)
    for size, grid in ((48, 3), (64, 4), (112, 7)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fernb.create_model("poster_v2", img_size=size)
        reshape = model.cam_reshape_transform()
        tokens = torch.randn(2, 1 + 3 * grid * grid, model.config.embed_dim)
        maps = reshape(tokens)
        assert maps.shape == (2, 3 * model.config.embed_dim, grid, grid)
        # channel block s of map position (i, j) is token 1 + s*g*g + i*g + j
        torch.testing.assert_close(
            maps[1, model.config.embed_dim : 2 * model.config.embed_dim, 1, 2], tokens[1, 1 + grid * grid + grid + 2]
        )
        with pytest.raises(ValueError, match="tokens"):
            reshape(tokens[:, :-1])


def test_bad_resolution_is_refused():
    with pytest.raises(ValueError, match="multiple of 16"):
        fernb.create_model("poster_v2", img_size=50)


def gradcam_maps(model: torch.nn.Module, x: torch.Tensor):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(
        model=LogitsOnly(model),
        target_layers=model.cam_target_layers(),
        reshape_transform=model.cam_reshape_transform(),
    ) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(i % 2) for i in range(len(x))])


def test_gradcam_map_is_not_flat_tiny():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fernb.create_model("poster_v2", preset="tiny")
    maps = gradcam_maps(model, torch.randn(2, 3, 48, 48))
    assert maps.shape == (2, 48, 48)
    for m in maps:
        assert m.std() > 0 and m.max() > m.min()


def test_gradcam_map_is_not_flat_official(official_model: PosterV2, fixture_input: torch.Tensor):
    maps = gradcam_maps(official_model, fixture_input[:1])
    assert maps.shape == (1, 224, 224)
    for m in maps:
        assert m.std() > 0 and m.max() > m.min()


def test_one_attention_serves_the_vit_and_the_landmark_cross_attention():
    from fernb.models._blocks import Attention, TransformerBlock
    from fernb.models.poster import LandmarkCrossAttention

    torch.manual_seed(0)
    cross, block = LandmarkCrossAttention(16, 2, 3), TransformerBlock(16, 4)
    assert isinstance(cross, Attention) and isinstance(block.attn, Attention)
    assert cross.qkv is None and cross.kv is not None and block.attn.kv is None  # keys as the official files'
    torch.nn.init.normal_(cross.rel_pos_table)
    x, q, t = torch.randn(2, 9, 16), torch.randn(2, 9, 16), torch.randn(2, 5, 16)
    fused = cross(x, q), block(t)
    cross.fused = block.attn.fused = False
    for a, b in zip(fused, (cross(x, q), block(t))):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="query"):
        cross(x)


# ------------------------------------------------------------------------------------------------ CE loss, benchmark


def test_cross_entropy_loss_hard_soft_weighted_smoothed():
    import torch.nn.functional as F

    from fernb.losses import create_loss
    from fernb.losses.ce import CrossEntropyLoss

    torch.manual_seed(0)
    out = PosterV2Output(logits=torch.randn(6, 4))
    y = torch.tensor([0, 1, 2, 3, 1, 1])
    q = torch.rand(6, 4)
    w = torch.tensor([1.0, 0.5, 2.0, 1.5])
    assert isinstance(create_loss("poster_v2"), CrossEntropyLoss) and isinstance(
        create_loss("resnet18"), CrossEntropyLoss
    )
    plain = create_loss("poster_v2")(out, y, dist=q)  # hard labels by default, as POSTER_V2
    torch.testing.assert_close(plain.total, F.cross_entropy(out.logits, y))
    weighted = CrossEntropyLoss(class_weights=w, label_smoothing=0.1)(out, y)
    torch.testing.assert_close(weighted.total, F.cross_entropy(out.logits, y, weight=w, label_smoothing=0.1))
    soft = CrossEntropyLoss(class_weights=w, use_dist=True)(out, y, dist=q)
    qn = q / q.sum(1, keepdim=True)
    torch.testing.assert_close(soft.total, -(w * qn * out.logits.log_softmax(1)).sum(1).mean())
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyLoss(label_smoothing=1.0)
