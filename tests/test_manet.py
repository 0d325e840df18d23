"""MA-Net and the Diversified MA-Net against ``shared/fidelity/{manet_raf7,diversified_manet_raf7}.pt``.

Weights are rebuilt from the manifests (official names, here also with DataParallel's ``module.`` prefix) and loaded
through fernb's converter. Tolerances: ``shared/fidelity/README.md``.
"""

from __future__ import annotations

import pytest
import torch
from fidelity import close, load_fixture

from fernb.losses import create_loss
from fernb.losses.diversity import diversity, manet_local_heads
from fernb.models import create_model
from fernb.models._weights import load_checkpoint

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def manet(fidelity_dir):
    data, sd, x = load_fixture(fidelity_dir, "manet_raf7.pt")
    model = create_model("manet", "official", checkpoint={f"module.{k}": v for k, v in sd.items()}).eval()
    sig: dict[str, torch.Tensor] = {}
    hooks = [
        model.layer2.register_forward_hook(lambda m, i, o: sig.__setitem__("layer2", o.mean((2, 3)))),
        model.local_layer4[0].register_forward_hook(lambda m, i, o: sig.__setitem__("p11", o.mean((2, 3)))),
        model.local_layer4[3].register_forward_hook(lambda m, i, o: sig.__setitem__("p22", o.mean((2, 3)))),
    ]
    with torch.no_grad():
        out = model(x)
    for h in hooks:
        h.remove()
    return data, out, sig


def test_both_branches_and_their_mix_match(manet):
    data, out, _ = manet
    ref = data["outputs"]
    close(out.logits_local, ref["out1_local"])
    close(out.logits_global, ref["out2_global"])
    close(out.logits, ref["output_beta_mix"])
    close(out.feat_local, ref["branch1_pooled_feature"])
    close(out.feat_global, ref["branch2_pooled_feature"])


def test_layer2_and_patch_signatures_match(manet):
    data, _, sig = manet
    ref = data["outputs"]["signatures"]
    close(sig["layer2"], ref["layer2"])
    close(sig["p11"], ref["patch11_layer4"])
    close(sig["p22"], ref["patch22_layer4"])


def test_beta_weighted_ce_matches(manet):
    data, out, _ = manet
    loss = create_loss("manet")(out, data["inputs"]["y"])
    close(loss.total, data["outputs"]["loss_ce"])
    assert set(loss.terms) == {"ce", "ce_local", "ce_global"}


@pytest.fixture(scope="module")
def div_manet(fidelity_dir):
    data, sd, x = load_fixture(fidelity_dir, "diversified_manet_raf7.pt")
    model = create_model("manet", "official", diversity=True).eval()
    report = load_checkpoint(model, sd)
    with torch.no_grad():
        out = model(x)
    return data, sd, x, model, report, out


def test_diversified_manet_converts_every_key_and_uses_the_pre_fix_multiscale_block(div_manet):
    data, _, _, model, report, _ = div_manet
    assert report.ok and len(report.loaded) == len(data["manifest"])
    assert model.global_layer3[0].order == "forward"


def test_heads_of_another_class_count_are_dropped_for_fine_tuning(div_manet):
    from fernb.models._weights import CheckpointMismatchError

    _, sd, _, model, _, _ = div_manet
    pretrained = {
        **sd,
        **{
            f"fc_{i}.{p}": torch.zeros((11, 512) if p == "weight" else (11,))  # e.g. MS-Celeb heads
            for i in (1, 2)
            for p in ("weight", "bias")
        },
    }
    with pytest.raises(CheckpointMismatchError):
        load_checkpoint(model, pretrained)
    with pytest.warns(UserWarning, match="dropped"):  # same values as already loaded: no side effect
        report = load_checkpoint(model, pretrained, strict=False)
    assert sorted(report.dropped) == ["fc_global.bias", "fc_global.weight", "fc_local.bias", "fc_local.weight"]
    assert sorted(report.missing) == sorted(report.dropped)


def test_diversified_manet_outputs_match(div_manet):
    data, _, _, _, _, out = div_manet
    ref = data["outputs"]
    close(out.logits_local, ref["out1_local"])
    close(out.logits_global, ref["out2_global"])
    close(out.logits, ref["output_beta_mix"])
    close(out.global_feats, ref["global_feat_b12"])
    close(out.local_maps.mean(dim=(3, 4)), ref["local_feat_b1_spatial_mean"])
    close(out.local_maps.mean(dim=2), ref["local_feat_b1_channel_mean"])


def test_diversified_manet_official_diversity_terms_and_losses_match(div_manet):
    data, _, _, _, _, out = div_manet
    ref = data["outputs"]
    spatial, channel = manet_local_heads(out.local_maps)
    for key, heads in (("branch_spatial", spatial), ("branch_channel", channel), ("feat", out.global_feats)):
        res = diversity(heads, "official")
        close(res.snm, ref["snm"][key])
        for k in ("direct_div", "det_div", "logdet_div"):
            close(getattr(res, k), ref[f"div_{key}"][k], equal_nan=True)
    loss = create_loss("manet", diversity_form="official")(out, data["inputs"]["y"])
    close(loss.terms["ce"], ref["loss_ce"])
    close(loss.total, ref["loss_total"])


def test_multiscale_path_order_matters_for_the_global_branch(div_manet):
    from fernb.models.manet import MulScaleBlock

    data, _, x, model, _, _ = div_manet
    blocks = [m for m in model.modules() if isinstance(m, MulScaleBlock)]
    try:
        for b in blocks:
            b.order = "bidirectional"  # MA-Net after its 2023 fix
        with torch.no_grad():
            out = model(x)
    finally:
        for b in blocks:
            b.order = "forward"
    close(out.logits_local, data["outputs"]["out1_local"])  # the local branch has no MulScaleBlock
    assert (out.logits_global - data["outputs"]["out2_global"]).abs().max() > 1e-3
