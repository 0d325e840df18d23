"""ARBEx on any backbone: the same head, anchors, attention and loss on POSTER_V2, fernb's ResNet-18 and timm models
(a CNN and a ViT), each trained a step, explained by Grad-CAM and saved and reloaded; what is refused and why."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from safetensors.torch import save_file

from fernb.engine.checkpoint import save_checkpoint
from fernb.losses import StepInfo, create_loss
from fernb.models import LogitsOnly, create_model
from fernb.models._backbones import ARBExBackbone
from fernb.models._weights import CheckpointMismatchError
from fernb.models.arbex import ARBEx, ARBExConfig

# name -> (ARBEx overrides, input side); all random init, all tiny
BACKBONES: dict[str, tuple[dict, int]] = {
    "poster_v2": ({}, 48),
    "resnet18": ({"backbone_kwargs": {"width": 8, "stem": "small", "stem_stride": 2}}, 32),
    "timm:mobilenetv3_small_050": ({}, 48),  # a CNN with a conv head after pooling: D = head_hidden_size (1024)
    "timm:vit_tiny_patch16_224": ({"backbone_kwargs": {"patch_size": 8, "depth": 2}}, 32),  # 4x4 patches + CLS
}
EMBED_DIMS = {"poster_v2": 128, "resnet18": 64, "timm:mobilenetv3_small_050": 1024, "timm:vit_tiny_patch16_224": 192}
NAMES = list(BACKBONES)


def build(backbone: str, seed: int = 0, **over) -> ARBEx:
    kw, size = BACKBONES[backbone]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init warnings
        return create_model("arbex", "tiny", backbone=backbone, img_size=size, **{**kw, **over})


@functools.cache
def cached(backbone: str) -> ARBEx:
    return build(backbone)


def images(backbone: str, n: int = 4, seed: int = 2) -> torch.Tensor:
    s = BACKBONES[backbone][1]
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backbone", NAMES)
def test_forward_backward_gives_finite_gradients_on_head_anchors_and_attention(backbone: str, device: torch.device):
    model = build(backbone).train().to(device)
    model.trust = 0.5
    out = model(images(backbone).to(device))
    loss = create_loss("arbex").to(device)(out, torch.tensor([0, 1, 2, 3], device=device), info=StepInfo(progress=0.5))
    loss.total.backward()
    assert torch.isfinite(loss.total)
    for name, module in (("head", model.head), ("attention", model.attention), ("backbone", model.backbone)):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    assert model.anchors.grad is not None and torch.isfinite(model.anchors.grad).all()
    assert model.anchors.grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", NAMES)
def test_output_shapes_and_embedding_width(backbone: str):
    model = cached(backbone).eval()
    x = images(backbone)
    c, k, d = model.config.num_classes, model.config.num_anchors, EMBED_DIMS[backbone]
    assert model.embed_dim == model.config.embed_dim == model.backbone.embed_dim == d
    assert isinstance(model.backbone, ARBExBackbone)
    with torch.no_grad():
        out = model(x)
        emb = model.embed(x)
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        logits = model.forward_head(features)
    assert out.logits.shape == (4, c) and out.distances.shape == (4, c, k) and out.anchors.shape == (c, k, d)
    assert emb.shape == (4, d) and pooled.shape == (4, d)
    torch.testing.assert_close(emb, out.embedding)
    torch.testing.assert_close(pooled, out.embedding)
    torch.testing.assert_close(logits, out.logits)
    for name in ("primary_dist", "anchor_dist", "attention_dist", "final_dist"):
        torch.testing.assert_close(getattr(out, name).sum(-1), torch.ones(4))


@pytest.mark.parametrize("backbone", NAMES)
def test_embedding_is_normalised_where_the_backbone_needs_it(backbone: str):
    model = cached(backbone).eval()
    assert model.config.embed_norm == ("none" if backbone == "poster_v2" else "layernorm")
    with torch.no_grad():
        e = model.embed(images(backbone))
    rms = e.pow(2).mean().sqrt().item()
    assert 0.3 < rms < 1.5, rms  # on the scale the anchors (std 0.5) and delta = 1 were chosen for


@pytest.mark.parametrize("backbone", NAMES)
def test_gradcam_target_layers_give_input_sized_maps_that_are_not_flat(backbone: str):
    model = cached(backbone).eval()
    x = images(backbone, 2)
    layers = model.cam_target_layers()
    assert layers and all(any(m is layer for m in model.modules()) for layer in layers)
    assert (model.cam_reshape_transform() is None) == (backbone in ("resnet18", "timm:mobilenetv3_small_050"))
    with GradCAM(model=LogitsOnly(model), target_layers=layers, reshape_transform=model.cam_reshape_transform()) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(i) for i in range(len(x))])
    assert maps.shape == (2, *x.shape[-2:])
    for m in maps:
        assert m.std() > 0.05 and m.max() > m.min()


@pytest.mark.parametrize("backbone", NAMES)
def test_checkpoint_round_trip_gives_identical_eval_outputs(backbone: str, tmp_path: Path):
    model = build(backbone, seed=0).eval()
    folder = save_checkpoint(tmp_path / "ck", model.state_dict())
    kw, size = BACKBONES[backbone]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(1)  # another init: only the checkpoint can make the outputs equal
        again = create_model(
            "arbex", "tiny", backbone=backbone, img_size=size, checkpoint=folder / "model.safetensors", **kw
        ).eval()
    x = images(backbone)
    with torch.no_grad():
        a, b = model(x), again(x)
    for name in ("logits", "embedding", "distances", "attention_dist", "final_dist"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=0)


@pytest.mark.parametrize("backbone", NAMES[1:])
def test_official_behaviour_needs_the_poster_backbone(backbone: str):
    with pytest.raises(ValueError, match="official.*POSTER_V2"):
        build(backbone, behaviour="official")


def test_bad_backbone_specs_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="'poster_v2', 'resnet18' or 'timm:"):
        ARBExConfig(backbone="vgg16").resolved()
    with pytest.raises(ValueError, match="timm.list_models"):
        create_model("arbex", "tiny", backbone="timm:no_such_model_xyz")
    with pytest.raises(ValueError, match="do not apply to the resnet18"):
        create_model("arbex", "tiny", backbone="resnet18", backbone_kwargs={"depth": 3})
    with pytest.raises(ValueError, match="nothing is downloaded"):
        create_model("arbex", "tiny", backbone="timm:resnet10t", backbone_kwargs={"pretrained": True})
    with pytest.raises(ValueError, match="POSTER_V2 takes its sizes"):
        ARBExConfig(backbone_kwargs={"width": 16}).resolved()
    with pytest.raises(ValueError, match="embed_norm"):
        ARBExConfig(behaviour="official", embed_norm="layernorm").resolved()


def test_official_checkpoint_is_refused_by_another_backbone():
    model = cached("resnet18")
    with pytest.raises(CheckpointMismatchError, match="POSTER_V2 backbone"):
        model.convert_state_dict({"vit.norm.weight": torch.ones(3), "anchors.anchors": torch.zeros(8, 1, 3)})


def test_tiny_resnet18_preset_is_the_documented_overrides():
    kwargs = {"width": 16, "stem": "small", "stem_stride": 1}
    preset = create_model("arbex", "tiny_resnet18")
    by_hand = create_model("arbex", "tiny", backbone="resnet18", backbone_kwargs=kwargs)
    assert preset.config == by_hand.config and preset.embed_dim == 128
    assert {k: v.shape for k, v in preset.state_dict().items()} == {k: v.shape for k, v in by_hand.state_dict().items()}
    assert ARBExConfig.tiny().backbone == "poster_v2"  # the default tiny preset keeps POSTER_V2


# ------------------------------------------------------------------------------------------------ timm weight files

VIT = "timm:vit_tiny_patch16_224"


def _timm_vit(seed: int) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32, patch_size=8, depth=2
    )


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_timm_backbone_checkpoint_loads_and_drops_the_classifier(fmt: str, tmp_path: Path):
    source = _timm_vit(seed=3)
    sd = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"vit.{fmt}"
    if fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)  # DataParallel-style wrapper
    model = build(VIT, backbone_checkpoint=str(path)).eval()
    rep = model.backbone.load_report
    assert rep.ok and sorted(rep.dropped) == ["head.bias", "head.weight"]
    for k, v in model.backbone.model.state_dict().items():
        torch.testing.assert_close(v, sd[k], rtol=0, atol=0)
    x = images(VIT, 2)
    with torch.no_grad():
        source.reset_classifier(0)
        torch.testing.assert_close(model.backbone(x), source.eval()(x))


def test_wrong_timm_backbone_checkpoint_is_refused_clearly(tmp_path: Path):
    import timm

    other = tmp_path / "resnet10t.safetensors"
    save_file(timm.create_model("resnet10t", pretrained=False, num_classes=0).state_dict(), str(other))
    with pytest.raises(
        CheckpointMismatchError,
        match=r"does not fit the ARBEx backbone \(timm model "
        r"'vit_tiny_patch16_224'\)(.|\n)*missing(.|\n)*unexpected",
    ):
        build(VIT, backbone_checkpoint=str(other))
    garbage = tmp_path / "notes.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="not a checkpoint format fernb knows"):
        build(VIT, backbone_checkpoint=str(garbage))
    with pytest.raises(FileNotFoundError):
        build(VIT, backbone_checkpoint=str(tmp_path / "missing.safetensors"))


def test_timm_random_init_warns_once_per_model():
    from fernb.models import poster

    poster._RANDOM_INIT_WARNED.discard("arbex-timm-random-init:resnet10t")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(2):
            create_model("arbex", "tiny", backbone="timm:resnet10t", img_size=32)
    texts = [str(w.message) for w in seen if "resnet10t" in str(w.message)]
    assert len(texts) == 1 and "random init" in texts[0] and "backbone_checkpoint" in texts[0]


# ------------------------------------------------------------------------------------------------ training engine


def test_engine_trains_arbex_on_the_resnet18_backbone(tmp_path: Path):
    from toys import spec_config

    from fernb.engine import Callback, fit

    class Start(Callback):
        def on_fit_start(self, trainer) -> None:
            self.state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    start = Start()
    cfg = spec_config(
        "arbex",
        [],
        **{
            "model.kwargs": {
                "backbone": "resnet18",
                "backbone_kwargs": {"width": 8, "stem": "small", "stem_stride": 2},
            },
            "data.img_size": 32,
            "data.train_limit": 16,
            "data.valid_limit": 8,
            "data.batch_size": 8,
            "data.eval_batch_size": 8,
            "schedule.epochs": 1,
            "run.out_dir": str(tmp_path),
            "run.name": "arbex_resnet18",
        },
    )
    res = fit(cfg, callbacks=[start])
    assert res.steps == 2 and res.stop_reason == "completed"
    assert res.model.config.backbone == "resnet18" and res.model.embed_dim == 64
    assert torch.isfinite(torch.tensor(res.history[-1]["train_loss"]))
    after = res.model.state_dict()
    for key in ("anchors", "head.fc.weight", "attention.q.weight", "embed_norm.weight", "backbone.trunk.conv1.weight"):
        assert not torch.equal(after[key], start.state[key]), f"{key} did not train"
