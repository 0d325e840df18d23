"""The five baselines (ResNet-18, ARM, Ad-Corre, ESR, MA-Net) and the diversified variants behind one interface.

Registry and presets, output dataclasses, embed / Grad-CAM hooks, checkpoint round trips, and a few training steps of
every ``tiny`` preset on real FER+ images with a falling loss. Per-family fidelity lives in ``test_<family>.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fernb.losses import LossOutput, create_loss
from fernb.models import ModelOutput, create_model, list_models

CASES = [
    ("resnet18", {}),
    ("arm", {}),
    ("adcorre", {}),
    ("esr", {}),
    ("esr", {"diversity": True}),
    ("manet", {}),
    ("manet", {"diversity": True}),
]
IDS = ["resnet18", "arm", "adcorre", "esr", "esr-div", "manet", "manet-div"]
# the Diversified MA-Net has MA-Net's modules and CAM layers: one of the two is enough for those tests
MODULE_CASES, MODULE_IDS = CASES[:-1], IDS[:-1]


def _loss(name: str, out: ModelOutput, y: torch.Tensor) -> torch.Tensor:
    if name == "resnet18":  # its plain CE loss is registered by fernb.losses.ce
        return nn.functional.cross_entropy(out.logits, y)
    res = create_loss(name)(out, y)
    assert isinstance(res, LossOutput) and res.terms
    return res.total


def _full_ensemble(name: str, model: nn.Module) -> nn.Module:
    if name == "esr":
        model.set_active_branches(len(model.branches))
    return model


def test_every_baseline_is_registered():
    assert {"resnet18", "arm", "adcorre", "esr", "manet"} <= set(list_models())


@pytest.mark.parametrize("preset", ["tiny", "official"])
@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_preset_builds_and_gives_finite_named_outputs(name: str, overrides: dict, preset: str, device: torch.device):
    torch.manual_seed(0)
    model = _full_ensemble(name, create_model(name, preset, **overrides)).eval().to(device)
    s = model.config.img_size
    x = torch.rand(2, 3, s, s).to(device)
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, ModelOutput) and type(out) is not tuple
    assert out.logits.shape == (2, model.config.num_classes)
    for key, val in {"logits": out.logits, **out.extras()}.items():
        assert torch.isfinite(val.float()).all(), f"{name}/{preset}: {key} is not finite"
    assert out.embedding.ndim == 2 and out.embedding.shape[0] == 2
    torch.testing.assert_close(model.embed(x), out.embedding)
    if preset == "tiny":  # one more forward; the head split is the same code at every size
        with torch.no_grad():
            torch.testing.assert_close(model.forward_head(model.forward_features(x)), out.logits)
    layers = model.cam_target_layers()
    own = set(map(id, model.modules()))
    assert layers and all(id(m) in own for m in layers)


@pytest.mark.parametrize("name,overrides", MODULE_CASES, ids=MODULE_IDS)
def test_grad_cam_on_the_target_layers_gives_a_nonflat_map(name: str, overrides: dict):
    from pytorch_grad_cam import GradCAM

    torch.manual_seed(0)
    model = _full_ensemble(name, create_model(name, "tiny", **overrides))
    s = model.config.img_size

    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x).logits

    x = torch.rand(4, 3, s, s)
    with GradCAM(Logits(), model.cam_target_layers(), reshape_transform=model.cam_reshape_transform()) as cam:
        maps = cam(x, targets=None)  # each sample's predicted class
    assert maps.shape == (4, s, s)
    assert np.isfinite(maps).all() and maps.std() > 0


@pytest.mark.parametrize("name,overrides", MODULE_CASES, ids=MODULE_IDS)
def test_fernb_checkpoint_round_trips(name: str, overrides: dict, device: torch.device):
    torch.manual_seed(0)
    model = _full_ensemble(name, create_model(name, "tiny", **overrides)).to(device)
    s = model.config.img_size
    x = torch.rand(4, 3, s, s).to(device)
    with torch.no_grad():
        model.train()(x)  # moves BN statistics (and ARM's running affinity) away from their init
    model.eval()
    sd = {k: v.cpu().clone() for k, v in model.state_dict().items()}
    other = create_model(name, "tiny", checkpoint=sd, **overrides).eval().to(device)
    with torch.no_grad():
        torch.testing.assert_close(other(x).logits, model(x).logits)


def test_resnet18_loads_a_torchvision_checkpoint_with_module_prefix():
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    sd = {f"module.{k}": v for k, v in tv.state_dict().items()}
    ours = create_model("resnet18", "official", checkpoint=sd).eval()
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, tv(x))


def test_arm_backbone_loads_a_torchvision_resnet18_and_drops_its_imagenet_classifier():
    import torchvision

    from fernb.models._weights import CheckpointMismatchError, load_checkpoint

    tv = torchvision.models.resnet18(weights=None)  # the official ARM starts from ImageNet ResNet-18 weights
    model = create_model("arm", "official")
    with pytest.raises(CheckpointMismatchError):
        load_checkpoint(model, tv.state_dict())
    with pytest.warns(UserWarning, match="dropped"):
        report = load_checkpoint(model, tv.state_dict(), strict=False)
    assert report.dropped == ["fc.weight", "fc.bias"]
    assert set(report.missing) == {"fc.weight", "fc.bias", "arm.alpha", "arm.de_albino.weight"} | {
        f"arm.bn.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)


def test_tiny_resnet18_has_a_small_input_stem():
    model = create_model("resnet18", "tiny")
    assert model.config.width == 16
    with torch.no_grad():
        assert model.forward_features(torch.rand(1, 3, 48, 48)).shape == (1, 128, 3, 3)


def test_esr_branch_schedule_adds_branches_and_routes_gradients(device: torch.device):
    torch.manual_seed(0)
    model = create_model("esr", "tiny").to(device)
    assert model.num_active_branches == 1
    x, y = torch.rand(4, 3, 64, 64).to(device), torch.tensor([0, 1, 2, 3], device=device)
    out = model(x)
    assert out.branch_logits.shape == (1, 4, 8)
    groups = model.param_groups(0.1)
    assert [g["lr"] for g in groups] == [0.1, 0.1]
    new = model.add_branch()
    assert new is model.branches[1] and model.num_active_branches == 2
    groups = {g["name"]: g["lr"] for g in model.param_groups(0.1)}
    assert groups == pytest.approx({"base": 0.01, "branch1": 0.1, "trained_branches": 0.01})
    out = model(x)
    res = create_loss("esr")(out, y)
    assert set(res.terms) == {"ce", "ce_branch0", "ce_branch1"}
    torch.testing.assert_close(res.total, res.terms["ce_branch0"] + res.terms["ce_branch1"])
    res.total.backward()
    assert model.branches[1].fc.weight.grad is not None
    assert model.branches[2].fc.weight.grad is None  # inactive branches are not run
    model.zero_grad(set_to_none=True)
    model.freeze(base=True, branches=[0])
    create_loss("esr")(model(x), y).total.backward()
    assert model.base.conv1.weight.grad is None and model.branches[0].fc.weight.grad is None
    assert model.branches[1].fc.weight.grad is not None
    trainable = lambda m: [all(p.requires_grad for p in br.parameters()) for br in m.branches]  # noqa: E731
    assert trainable(model) == [False, True, False, False]  # inactive branches never train (DDP needs this)
    sd = {k: v.cpu() for k, v in model.state_dict().items()}
    assert int(sd["active_branches"]) == 2
    loaded = create_model("esr", "tiny", checkpoint=sd)
    assert loaded.num_active_branches == 2 and trainable(loaded) == [True, True, False, False]
    model.set_active_branches(4)
    with pytest.raises(RuntimeError, match="already active"):
        model.add_branch()


def test_esr_logits_are_the_log_mean_branch_probability_and_vote_is_plurality():
    torch.manual_seed(0)
    model = create_model("esr", "tiny", active_branches=None).eval()
    with torch.no_grad():
        out = model(torch.rand(6, 3, 64, 64))
    mean_prob = out.branch_logits.softmax(-1).mean(0)
    torch.testing.assert_close(out.logits.softmax(-1), mean_prob)
    picks = out.branch_logits.argmax(-1)  # (n, B)
    for b in range(6):
        counts = torch.bincount(picks[:, b], minlength=8)
        assert torch.equal(out.vote_counts[b], counts)
        assert out.vote[b] == int(torch.nonzero(counts == counts.max())[0])  # lowest index among the ties


def test_arm_official_behaviour_depends_on_the_batch_and_fixed_does_not():
    torch.manual_seed(0)
    model = create_model("arm", "tiny")
    model.train()
    for _ in range(3):  # tracks the running affinity map
        model(torch.rand(8, 3, 48, 48))
    model.eval()
    x = torch.rand(6, 3, 48, 48)
    with torch.no_grad():
        official_full, official_alone = model(x).logits[:2], model(x[:2]).logits
        model.behaviour = "fixed"
        fixed_full, fixed_alone, fixed_one = model(x).logits[:2], model(x[:2]).logits, model(x[:1]).logits
    assert (official_full - official_alone).abs().max() > 1e-3
    torch.testing.assert_close(fixed_full, fixed_alone)
    torch.testing.assert_close(fixed_full[:1], fixed_one)


def test_arm_fixed_behaviour_without_a_running_map_says_what_to_do():
    model = create_model("arm", "tiny", behaviour="fixed").eval()
    with pytest.raises(RuntimeError, match="calibrate_affinity"):
        model(torch.rand(2, 3, 48, 48))


# -- tiny presets train on real FER+ images --------------------------------------------------------------------------
def _ferplus_batch(root, per_class: int = 2) -> tuple[list, torch.Tensor]:
    """``per_class`` images of each of the 8 FER+ classes (PIL, RGB) and their labels."""
    from fernb.labels import LABEL_SPACES

    try:
        from fernb.data import load_dataset

        ds = load_dataset("ferplus", root, split="train")
        assert list(ds.class_names) == list(LABEL_SPACES["ferplus8"].names)
        idx = np.concatenate([np.flatnonzero(ds.targets == c)[:per_class] for c in range(ds.num_classes)])
        return [ds.load_image(int(i)) for i in idx], torch.as_tensor(ds.targets[idx])
    except (ImportError, KeyError, AttributeError, NotImplementedError):  # reader not available: read PNGs directly
        from PIL import Image

        images, labels = [], []
        for c, name in enumerate(LABEL_SPACES["ferplus8"].names):
            for p in sorted((root / "train" / name).glob("*.png"))[:per_class]:
                images.append(Image.open(p).convert("RGB"))
                labels.append(c)
        return images, torch.tensor(labels)


@pytest.fixture(scope="module")
def ferplus_images(ferplus_root):
    return _ferplus_batch(ferplus_root)


@pytest.mark.shared
@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_tiny_preset_trains_on_ferplus_with_a_falling_loss(name: str, overrides: dict, ferplus_images):
    images, labels = ferplus_images  # 2 faces of each of the 8 classes
    torch.manual_seed(0)
    model = _full_ensemble(name, create_model(name, "tiny", **overrides)).train()
    s = model.config.img_size
    x = torch.stack(
        [torch.from_numpy(np.asarray(im.resize((s, s)), dtype=np.float32) / 255.0).permute(2, 0, 1) for im in images]
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        loss = _loss(name, model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) and losses[-1] < losses[0], (
        f"{name}: loss did not fall: {np.round(losses, 3)}"
    )


@pytest.mark.parametrize("stem, stride, side", [("imagenet", 1, 6), ("small", 2, 12), ("small", 1, 24)])
def test_small_stem_stride_sets_the_layer2_map_the_branches_split(stem: str, stride: int, side: int):
    model = create_model("manet", "tiny", stem=stem, stem_stride=stride).eval()
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert model.forward_features(x).shape[-2:] == (side, side)
        assert model(x).logits.shape == (2, 8)
