"""Pretrained backbone files and checkpoints: official layouts, prefixes, key reports, refusals, random-init notice."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from fidelity import official_state_dict

import fernb
from fernb.models import poster as poster_mod
from fernb.models._weights import CheckpointMismatchError, KeyReport, load_checkpoint
from fernb.models.poster import PosterV2Backbone, PosterV2Config, load_pretrained_backbones


class NotATensor:
    """A custom class: a pickle holding it must be refused (weights_only=True never executes pickled code)."""

    def __init__(self) -> None:
        self.payload = "x"


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def official_files(fidelity_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | dict]:
    """Fake pretrained files in the layouts POSTER_V2 distributes, filled with the fixture's recipe tensors."""
    sd = official_state_dict(fidelity_dir, "poster_v2_7cls.pt")  # shared with test_poster within a session
    ir = {k[len("ir_back.") :]: v for k, v in sd.items() if k.startswith("ir_back.")}
    mfn = {k[len("face_landback.") :]: v for k, v in sd.items() if k.startswith("face_landback.")}
    root = tmp_path_factory.mktemp("pretrained")
    torch.save(ir, root / "ir50.pth")  # POSTER_V2's ir50.pth: a bare re-keyed Backbone state dict
    # mobilefacenet_model_best.pth.tar: {'state_dict': ...}, here also with a DataParallel prefix
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in mfn.items()}, "epoch": 1},
        root / "mobilefacenet_model_best.pth.tar",
    )
    # the same tensors in ARBEx naming, through the fixture's own ARBEx <-> POSTER_V2 key map
    arbex_fx = torch.load(fidelity_dir / "arbex.pt", weights_only=True)
    pairs = arbex_fx["extra"]["backbone_vs_poster_v2"]["arbex_to_poster_key_map"]
    arbex_ir = {a[len("ir.") :]: ir[p[len("ir_back.") :]] for a, p in pairs if a.startswith("ir.")}
    arbex_mfn = {a[len("landmark.") :]: mfn[p[len("face_landback.") :]] for a, p in pairs if a.startswith("landmark.")}
    torch.save(arbex_ir, root / "arbex_ir50.pth")
    torch.save(arbex_mfn, root / "arbex_mobilefacenet.pth")
    return {"root": root, "ir": ir, "mfn": mfn}


def test_poster_v2_layouts_load_with_reports(official_files: dict):
    root = official_files["root"]
    model = quiet(
        fernb.create_model,
        "poster_v2",
        preset="official",
        ir50_weights=str(root / "ir50.pth"),
        landmark_weights=str(root / "mobilefacenet_model_best.pth.tar"),
    )
    ir_rep, mfn_rep = model.backbone.load_reports
    assert len(official_files["ir"]) == 304  # the "load_weight 304" of the official loader
    assert ir_rep.ok and len(ir_rep.loaded) == 292 and len(ir_rep.dropped) == 12
    assert all(k.startswith("output_layer.") for k in ir_rep.dropped)
    assert mfn_rep.ok and all(k.startswith("output_layer.") for k in mfn_rep.dropped)  # prefix removed
    assert len(mfn_rep.loaded) == len(model.backbone.landmark.state_dict())
    sd = model.state_dict()
    torch.testing.assert_close(
        sd["backbone.image.stages.2.13.conv2.weight"],
        official_files["ir"]["body3.13.res_layer.3.weight"],
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        sd["backbone.landmark.stages.1.3.dw.act.weight"],
        official_files["mfn"]["conv_4.model.2.conv_dw.prelu.weight"],
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        sd["backbone.landmark.stages.2.3.conv.weight"], official_files["mfn"]["conv_6_sep.conv.weight"], rtol=0, atol=0
    )
    # POSTER_V2 freezes MobileFaceNet and trains IR-50
    assert not any(p.requires_grad for p in model.backbone.landmark.parameters())
    assert all(p.requires_grad for p in model.backbone.image.parameters())
    assert "dropped" in str(ir_rep)
    # the same file as a (partial) checkpoint: converted to the image branch, the rest reported missing
    rep = quiet(load_checkpoint, model, root / "ir50.pth", strict=False)
    assert rep.converted_from == "ir50" and len(rep.loaded) == 292 and len(rep.dropped) == 12
    assert rep.missing and not any(k.startswith("backbone.image.") for k in rep.missing)
    with pytest.raises(CheckpointMismatchError, match="strict=False"):
        load_checkpoint(model, root / "mobilefacenet_model_best.pth.tar")


def test_arbex_layouts_load_the_same_tensors_and_freeze(official_files: dict):
    root = official_files["root"]
    model = quiet(
        fernb.create_model,
        "arbex",
        preset="official",
        ir50_weights=str(root / "arbex_ir50.pth"),
        landmark_weights=str(root / "arbex_mobilefacenet.pth"),
    )
    ir_rep, mfn_rep = model.backbone.load_reports
    assert ir_rep.ok and mfn_rep.ok and not ir_rep.dropped and not mfn_rep.dropped
    sd = model.state_dict()
    torch.testing.assert_close(
        sd["backbone.image.stages.1.0.downsample.conv.weight"],
        official_files["ir"]["body2.0.shortcut_layer.0.weight"],
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        sd["backbone.landmark.stages.0.4.project.bn.running_var"],
        official_files["mfn"]["conv_3.model.1.project.bn.running_var"],
        rtol=0,
        atol=0,
    )
    # ARBEx freezes both backbones when their weights are given, and (fixed) keeps their BatchNorm in eval mode
    assert not any(p.requires_grad for p in model.backbone.image.parameters())
    assert not any(p.requires_grad for p in model.backbone.landmark.parameters())
    model.train()
    assert not model.backbone.image.training and model.backbone.scales.training
    official = quiet(
        fernb.create_model, "arbex", preset="official", behaviour="official", ir50_weights=str(root / "arbex_ir50.pth")
    )
    official.train()
    assert official.backbone.image.training  # the official code leaves frozen BN layers in train mode


def test_face_evolve_flat_naming_is_understood():
    cfg = PosterV2Config.official()
    # body.0-2 -> stage 1, body.3-6 -> stage 2, body.7-20 -> stage 3, body.21-23 (stage 4) unused
    assert poster_mod._ir_key("body.2.res_layer.1.weight", cfg.ir_depths) == "stages.0.2.conv1.weight"
    assert poster_mod._ir_key("body.3.shortcut_layer.1.bias", cfg.ir_depths) == "stages.1.0.downsample.bn.bias"
    assert poster_mod._ir_key("body.20.res_layer.4.running_mean", cfg.ir_depths) == "stages.2.13.bn2.running_mean"
    assert poster_mod._ir_key("body.21.res_layer.0.weight", cfg.ir_depths) is poster_mod._DROP


def test_mismatched_file_names_the_file_and_key(official_files: dict, tmp_path: Path):
    bad = dict(official_files["mfn"])
    bad["conv_23.conv_dw.conv.weight"] = torch.zeros(64, 1, 3, 3)  # official: (128, 1, 3, 3)
    path = tmp_path / "mobilefacenet_bad.pth"
    torch.save({"state_dict": bad}, path)
    backbone = quiet(PosterV2Backbone, PosterV2Config.official())
    with pytest.raises(CheckpointMismatchError) as err:
        load_pretrained_backbones(backbone, landmark=path)
    msg = str(err.value)
    assert str(path) in msg and "stages.0.2.dw.conv.weight" in msg and "(128, 1, 3, 3)" in msg
    # a tiny backbone cannot take the official file either: clear message, not a crash
    with pytest.raises(CheckpointMismatchError, match="tiny"):
        quiet(
            fernb.create_model,
            "poster_v2",
            landmark_weights=str(official_files["root"] / "mobilefacenet_model_best.pth.tar"),
        )


def test_pickled_custom_class_is_refused(tmp_path: Path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.conv.weight": torch.zeros(1)}, "obj": NotATensor()}, path)
    backbone = quiet(fernb.create_model, "poster_v2").backbone
    with pytest.raises(CheckpointMismatchError, match="weights_only"):
        load_pretrained_backbones(backbone, landmark=path)
    with pytest.raises(CheckpointMismatchError, match=re.escape(str(path))):
        fernb.create_model("arbex", checkpoint=path)


def test_missing_file_says_where_weights_come_from(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="ir50.pth.*Google Drive"):
        quiet(fernb.create_model, "poster_v2", ir50_weights=str(tmp_path / "ir50.pth"))


def test_constructors_never_open_files_the_builder_does(tmp_path: Path):
    import dataclasses

    from fernb.models.arbex import ARBEx, ARBExConfig
    from fernb.models.poster import PosterV2

    missing = str(tmp_path / "ir50.pth")
    model = PosterV2(dataclasses.replace(PosterV2Config.tiny(), ir50_weights=missing, landmark_weights=missing))
    assert model.backbone.load_reports == [] and model.backbone.frozen == {"image": False, "landmark": False}
    ARBEx(dataclasses.replace(ARBExConfig.tiny_resnet18(), backbone_checkpoint=missing))
    with pytest.raises(FileNotFoundError, match="ir50.pth.*Google Drive"):
        quiet(fernb.create_model, "poster_v2", ir50_weights=missing)
    with pytest.raises(FileNotFoundError):
        quiet(fernb.create_model, "arbex", "tiny_resnet18", backbone_checkpoint=missing)


def test_random_init_is_announced_once_per_process():
    poster_mod._RANDOM_INIT_WARNED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fernb.create_model("poster_v2")
        fernb.create_model("arbex")
    notes = [w for w in caught if "random init" in str(w.message)]
    assert len(notes) == 1


def test_fernb_checkpoint_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = quiet(fernb.create_model, "arbex").eval()
    path = tmp_path / "arbex_tiny.pth"
    torch.save(model.state_dict(), path)
    again = quiet(fernb.create_model, "arbex", checkpoint=path).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, model(x).logits, rtol=0, atol=0)
    rep = load_checkpoint(again, {f"module.{k}": v for k, v in model.state_dict().items()})
    assert isinstance(rep, KeyReport) and rep.ok and rep.converted_from is None
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(tmp_path / "arbex_tiny.safetensors"))
    assert load_checkpoint(again, tmp_path / "arbex_tiny.safetensors").ok
