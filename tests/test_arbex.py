"""ARBEx: the official outputs, losses and gradients through fernb's converter; the two behaviours; training."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fidelity import assert_matches, load_recipe, make_state_dict
from test_poster import gradcam_maps

import fernb
from fernb.losses import StepInfo, create_loss
from fernb.losses.arbex import ARBExLoss, anchor_loss_bounded, anchor_loss_official, arbex_class_weights
from fernb.models.arbex import ARBEx, ARBExConfig, ARBExOutput, read_official_arbex
from fernb.models.poster import _arbex_key, _poster_key

OUTPUT_NAMES = {  # fixture name -> ARBExOutput field
    "embedding": "embedding",
    "logits": "head_logits",
    "primary_dist": "primary_dist",
    "confidence_primary": "confidence_primary",
    "distances": "distances",
    "anchor_dist": "anchor_dist",
    "confidence_anchor": "confidence_anchor",
    "attention_dist": "attention_dist",
    "confidence_attention": "confidence_attention",
    "correction": "correction",
    "mixed_dist": "mixed_dist",
    "final_dist": "final_dist",
}


def quiet_model(name: str = "arbex", **kw) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fernb.create_model(name, **kw)


@pytest.fixture(scope="module")
def fixture(fidelity_dir: Path) -> dict:
    return torch.load(fidelity_dir / "arbex.pt", weights_only=True)


@pytest.fixture(scope="module")
def official_sd(fidelity_dir: Path, fixture: dict) -> dict[str, torch.Tensor]:
    return make_state_dict(load_recipe(fidelity_dir), fixture["manifest"])


@pytest.fixture(scope="module")
def official_model(official_sd: dict) -> ARBEx:
    model = quiet_model(preset="official", behaviour="official", checkpoint=official_sd).eval()
    model.trust = 0.5  # the fixture's t
    return model


@pytest.fixture(scope="module")
def fixture_input(fidelity_dir: Path, fixture: dict) -> torch.Tensor:
    rec = fixture["inputs"]["x"]
    return load_recipe(fidelity_dir).make_input(rec["shape"], rec["seed"], rec["mean"], rec["std"])


@pytest.fixture(scope="module")
def official_out(official_model: ARBEx, fixture_input: torch.Tensor) -> ARBExOutput:
    with torch.no_grad():
        return official_model(fixture_input)


def loss_and_grads(model: ARBEx, embedding: torch.Tensor, y: torch.Tensor, weights: torch.Tensor):
    """The fixture's gradient protocol: the head re-run from the detached embedding, gradients of the total loss."""
    e = embedding.clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    out = model.reliability(e)
    loss = create_loss("arbex", class_weights=weights)(out, y, info=StepInfo(progress=0.5))
    loss.total.backward()
    return out, loss, e.grad, model.anchors.grad


# ------------------------------------------------------------------------------------------------ official fidelity


def test_official_forward_matches(official_out: ARBExOutput, fixture: dict):
    ref = fixture["outputs"]
    for name, field in OUTPUT_NAMES.items():
        assert_matches(getattr(official_out, field), ref[name], name)
    # official evaluation without correction predicts from p: logits are the head logits
    assert torch.equal(official_out.logits, official_out.head_logits)


def test_parameter_count_is_the_official_minus_dead_vit_parts(official_model: ARBEx):
    assert official_model.num_params() == 45_782_326 - 1_619_016  # README §4.2: all, and unused ViT parts


def test_official_losses_and_gradients_match(official_model: ARBEx, fixture: dict):
    ref = fixture["outputs"]
    weights = arbex_class_weights(np.repeat(np.arange(8), fixture["settings"]["class_weight_label_counts"]), 8)
    assert_matches(weights, ref["class_weights"], "class_weights")
    _, loss, g_e, g_a = loss_and_grads(official_model, ref["embedding"], fixture["inputs"]["y"], weights)
    for name, term in (("loss_ce", "ce"), ("loss_anchor_mu", "anchor"), ("loss_center", "center")):
        assert_matches(loss.terms[term], ref[name], name)
    assert_matches(loss.total, ref["loss_total"], "loss_total")
    assert_matches(g_e, ref["grads"]["d_loss_total_d_embedding"], "d_loss_total_d_embedding")
    assert_matches(g_a, ref["grads"]["d_loss_total_d_anchors"], "d_loss_total_d_anchors")


def test_official_eval_correction_branch(official_model: ARBEx, fixture: dict, fixture_input: torch.Tensor):
    model = official_model
    saved = model.config
    model.config = dataclasses.replace(saved, eval_correction=True)
    try:
        with torch.no_grad():
            out = model.reliability(fixture["outputs"]["embedding"])
    finally:
        model.config = saved
    assert_matches(out.prediction_dist, fixture["outputs"]["eval_correction"]["final_dist"], "eval_correction")
    assert torch.allclose(out.logits.exp(), out.prediction_dist)


def test_official_batch_dependence_is_reproduced(official_model: ARBEx, official_out: ARBExOutput, fixture: dict):
    ref = fixture["outputs"]["batch_dependence"]
    with torch.no_grad():
        alone = official_model.reliability(fixture["outputs"]["embedding"][:2])
    assert_matches(alone.attention_dist, ref["attention_dist_first2_alone"], "first2_alone")
    assert_matches(official_out.attention_dist[:2], ref["attention_dist_first2_in_full_batch"], "first2_in_batch")
    assert (alone.attention_dist - official_out.attention_dist[:2]).abs().max() > 1e-4


def test_official_k10_anchors(official_sd: dict, fixture: dict, fidelity_dir: Path):
    extra = fixture["extra"]["anchors_k10"]
    anchors = make_state_dict(load_recipe(fidelity_dir), extra["manifest"])["anchors.anchors"]
    sd = {**official_sd, "anchors.anchors": anchors}
    # only the head matters (the embedding comes from the fixture): a small backbone with the official head sizes
    model = quiet_model(
        preset="tiny",
        behaviour="official",
        num_anchors=10,
        embed_dim=768,
        vit_heads=8,
        depth=1,
        hidden_sizes=(384, 192, 96),
    )
    head_sd = {k: v for k, v in sd.items() if not k.startswith("vit.")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report lists the (expected) missing backbone keys
        rep = fernb.models._weights.load_checkpoint(model, head_sd, strict=False)
    assert not rep.shape_mismatch and all(k.startswith("backbone.") for k in rep.missing)
    model.eval().trust = 0.5
    ref = extra["outputs"]
    weights = fixture["outputs"]["class_weights"]
    out, loss, _, g_a = loss_and_grads(model, fixture["outputs"]["embedding"], fixture["inputs"]["y"], weights)
    for name in ("distances", "anchor_dist", "confidence_anchor", "correction", "final_dist"):
        assert_matches(getattr(out, name).detach(), ref[name], f"k10/{name}")
    for name, term in (("loss_ce", "ce"), ("loss_anchor_mu", "anchor"), ("loss_center", "center")):
        assert_matches(loss.terms[term].detach(), ref[name], f"k10/{name}")
    assert_matches(loss.total.detach(), ref["loss_total"], "k10/loss_total")
    assert_matches(g_a, ref["d_loss_total_d_anchors"], "k10/d_loss_total_d_anchors")


def test_official_sharp_temperature_ties_delta(official_model: ARBEx, fixture: dict):
    extra = fixture["extra"]["sharp_T0.1_delta0.1"]["outputs"]
    saved = official_model.config
    # behaviour "official" with delta left at None takes delta from the temperature, as train.py does
    official_model.config = dataclasses.replace(saved, temperature=0.1, delta=None).resolved()
    assert official_model.config.delta == 0.1
    try:
        out, loss, g_e, g_a = loss_and_grads(
            official_model, fixture["outputs"]["embedding"], fixture["inputs"]["y"], fixture["outputs"]["class_weights"]
        )
    finally:
        official_model.config = saved
    for name, field in OUTPUT_NAMES.items():
        if name != "embedding":
            assert_matches(getattr(out, field).detach(), extra[name], f"sharp/{name}")
    for name, term in (("loss_ce", "ce"), ("loss_anchor_mu", "anchor"), ("loss_center", "center")):
        assert_matches(loss.terms[term].detach(), extra[name], f"sharp/{name}")
    assert_matches(g_e, extra["d_loss_total_d_embedding"], "sharp/d_loss_total_d_embedding")
    assert_matches(g_a, extra["d_loss_total_d_anchors"], "sharp/d_loss_total_d_anchors")


def test_arbex_and_poster_namings_meet_in_one_backbone(fixture: dict, official_model: ARBEx):
    """The fixture pairs 720 ARBEx keys with POSTER_V2 keys (proven numerically identical); both converters must
    send each pair to the same fernb key."""
    pairs = fixture["extra"]["backbone_vs_poster_v2"]["arbex_to_poster_key_map"]
    assert fixture["extra"]["backbone_vs_poster_v2"]["max_abs_diff_embedding"] == 0.0
    cfg = ARBExConfig.official()
    mapped = 0
    for a, p in pairs:
        fa, fp = _arbex_key(f"vit.{a}", cfg), _poster_key(p, cfg)
        assert fa == fp, f"{a} -> {fa} but {p} -> {fp}"
        mapped += isinstance(fa, str)
    assert mapped == len(official_model.backbone.state_dict())


def test_official_checkpoint_from_separate_files(official_sd: dict, official_model: ARBEx, tmp_path: Path):
    parts = {
        p: {k[len(p) + 1 :]: v for k, v in official_sd.items() if k.startswith(p + ".")}
        for p in ("vit", "classifier", "anchors")
    }
    torch.save(parts["classifier"], tmp_path / "classifier.0400.pth")
    merged = read_official_arbex(parts["vit"], tmp_path / "classifier.0400.pth", parts["anchors"])
    with pytest.warns(UserWarning, match="without self_attn"):
        converted, naming, dropped = official_model.convert_state_dict(merged)
    assert naming == "arbex" and set(converted) == set(official_model.state_dict())
    assert all(k.endswith("index_relative") or ".vit." in k for k in dropped)
    # a bare vit.*.pth file converts too
    bare, naming, _ = official_model.convert_state_dict(parts["vit"])
    assert naming == "arbex" and all(k.startswith("backbone.") for k in bare)


def test_gradcam_map_is_not_flat_official(official_model: ARBEx, fixture_input: torch.Tensor):
    maps = gradcam_maps(official_model, fixture_input[:1])
    assert maps.shape == (1, 224, 224)
    for m in maps:
        assert m.std() > 0 and m.max() > m.min()


# ------------------------------------------------------------------------------------------------ behaviours


@pytest.fixture(scope="module")
def tiny_pair() -> dict[str, ARBEx]:
    torch.manual_seed(0)
    fixed = quiet_model(preset="tiny").eval()
    official = quiet_model(preset="tiny", behaviour="official").eval()
    official.load_state_dict(fixed.state_dict())
    return {"fixed": fixed, "official": official}


def test_behaviour_presets_resolve():
    official = ARBExConfig(behaviour="official").resolved()
    fixed = ARBExConfig().resolved()
    assert (official.attention_context, official.anchor_init, official.eval_correction) == ("batch", "zeros", False)
    assert (fixed.attention_context, fixed.anchor_init, fixed.eval_correction) == ("anchors", "normal", True)
    assert official.delta == official.temperature and fixed.delta == 1.0
    assert ARBExConfig(behaviour="official", eval_correction=True).resolved().eval_correction is True
    with pytest.raises(ValueError, match="behaviour"):
        ARBExConfig(behaviour="paper").resolved()


def test_anchor_init_is_documented_per_behaviour(tiny_pair: dict):
    assert torch.count_nonzero(quiet_model(preset="tiny", behaviour="official").anchors) == 0
    std = quiet_model(preset="tiny", num_anchors=20).anchors.std().item()
    assert abs(std - ARBExConfig().anchor_init_std) < 0.05


def test_fixed_prediction_does_not_depend_on_batch_mates(tiny_pair: dict):
    torch.manual_seed(1)
    x = torch.randn(6, 3, 48, 48)
    other = torch.randn(5, 3, 48, 48)
    model = tiny_pair["fixed"]
    with torch.no_grad():
        full = model(x)
        alone = model(x[:1])
        mixed = model(torch.cat([x[:1], other]))
    for name in ("logits", "attention_dist", "final_dist", "prediction_dist"):
        ref = getattr(full, name)[:1]
        torch.testing.assert_close(getattr(alone, name), ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(getattr(mixed, name)[:1], ref, rtol=1e-5, atol=1e-6)


def test_official_attention_depends_on_batch_mates(tiny_pair: dict):
    torch.manual_seed(1)
    x = torch.randn(6, 3, 48, 48)
    model = tiny_pair["official"]
    with torch.no_grad():
        full = model(x)
        alone = model(x[:1])
    for name in ("attention_dist", "correction", "final_dist"):
        diff = (getattr(alone, name) - getattr(full, name)[:1]).abs().max().item()
        assert diff > 1e-5, f"official {name} should change with the batch mates (diff {diff:.1e})"
    # its evaluation predicts from p alone, which is per-sample
    torch.testing.assert_close(alone.logits, full.logits[:1], rtol=1e-5, atol=1e-6)


def test_fixed_is_finite_where_official_is_not(tiny_pair: dict):
    """Saturated distributions (log 0) and an embedding sitting on an anchor (sqrt'(0)): official NaN/inf, fixed not."""
    results = {}
    for behaviour, model in tiny_pair.items():
        e = model.anchors.detach()[2, 0].clone().unsqueeze(0).repeat(2, 1).requires_grad_(True)
        bias = model.head.fc.bias.detach().clone()
        with torch.no_grad():
            model.head.fc.bias.copy_(torch.tensor([1e4] + [0.0] * 7))  # p = one-hot: log p = -inf elsewhere
        model.zero_grad(set_to_none=True)
        out = model.reliability(e)
        loss = ARBExLoss()(out, torch.tensor([2, 2]), info=StepInfo(progress=0.5))
        loss.total.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None] + [e.grad]
        results[behaviour] = bool(torch.isfinite(loss.total)) and all(torch.isfinite(g).all() for g in grads)
        with torch.no_grad():
            model.head.fc.bias.copy_(bias)
    assert results == {"fixed": True, "official": False}


def test_anchor_losses_bounded_and_unbounded():
    torch.manual_seed(0)
    a = torch.randn(8, 2, 32)
    official = [anchor_loss_official(a * s).item() for s in (1, 10, 100)]
    assert official[0] > official[1] > official[2]  # keeps falling as anchors fly apart
    fixed = [anchor_loss_bounded(a * s, margin=1.0).item() for s in (0.0, 0.1, 1, 100)]
    assert all(0 <= v <= 1.0 for v in fixed) and fixed[0] == pytest.approx(1.0, rel=1e-3) and fixed[-1] == 0.0
    # k > 1: the official loss compares only same-index anchors; the bounded one every cross-class pair
    b = a.clone()
    b[:, 1] = b[0, 0]  # all second anchors collapse onto one point
    assert anchor_loss_bounded(b, margin=1.0) > anchor_loss_bounded(a, margin=1.0)


def test_fixed_confidence_is_constant_in_the_center_loss(tiny_pair: dict):
    grads = {}
    for behaviour, model in tiny_pair.items():
        model.zero_grad(set_to_none=True)
        e = torch.randn(4, model.config.embed_dim)
        out = model.reliability(e)
        loss = ARBExLoss(lambda_ce=0.0, lambda_anchor=0.0)(out, torch.tensor([0, 1, 2, 3]), info=StepInfo(progress=1.0))
        loss.total.backward()
        grads[behaviour] = model.head.fc.weight.grad
    assert grads["fixed"] is None or torch.count_nonzero(grads["fixed"]) == 0
    assert torch.count_nonzero(grads["official"]) > 0


def test_trust_ramp_follows_progress():
    loss = ARBExLoss()
    assert [loss.trust(StepInfo(progress=p)) for p in (0.0, 0.25, 1.0)] == [0.0, 0.25, 1.0]
    assert ARBExLoss(ramp_end=0.5).trust(StepInfo(progress=0.25)) == 0.5
    held = ARBExLoss(ramp_start=0.5)
    assert [held.trust(StepInfo(progress=p)) for p in (0.0, 0.5, 0.75, 1.0)] == [0.0, 0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="ramp_start"):
        ARBExLoss(ramp_start=0.6, ramp_end=0.5)
    assert loss.trust(None) == 1.0


def test_reliability_weighting_matches_a_hand_computed_case(tiny_pair: dict):
    model = tiny_pair["fixed"]
    torch.manual_seed(3)
    out = model.reliability(torch.randn(5, model.config.embed_dim))
    y = torch.tensor([0, 3, 3, 5, 7])
    w = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.7, 1.2])
    plain = ARBExLoss(class_weights=w, label_smoothing=0.1, lambda_branch=1.0)
    weighted = ARBExLoss(class_weights=w, label_smoothing=0.1, lambda_branch=1.0, reliability_weighting=2.0)
    # no trust, no weighting: the same loss to the bit
    for a, b in zip(
        plain(out, y, info=StepInfo(progress=0.0)).terms.values(),
        weighted(out, y, info=StepInfo(progress=0.0)).terms.values(),
    ):
        assert torch.equal(a, b)
    t = 0.6
    r = out.mixed_dist.detach()[torch.arange(5), y] ** 2
    sw = (1 - t) + t * r / r.mean()
    assert sw.mean().item() == pytest.approx(1.0, rel=1e-6)
    torch.testing.assert_close(weighted.sample_weights(out.mixed_dist, y, t), sw)
    final = (1 - t) * out.primary_dist + t * out.mixed_dist
    logp = final.clamp_min(1e-8).log()
    nll = -(sw * w[y] * logp[torch.arange(5), y]).sum() / w[y].sum()
    expected = 0.9 * nll - 0.1 * (sw * logp.mean(-1)).mean()
    terms = weighted(out, y, info=StepInfo(progress=t)).terms
    torch.testing.assert_close(terms["ce"], expected)
    picked = out.distances[torch.arange(5), y].min(1).values
    center = (picked * out.confidence_primary.detach().reshape(-1) * sw).sum() / 5 / model.config.embed_dim**0.5
    torch.testing.assert_close(terms["center"], center)
    # a doubted label (low m[y]) teaches less than a trusted one
    assert sw[r.argmin()] < 1 < sw[r.argmax()]
    with pytest.raises(ValueError, match="reliability_weighting"):
        ARBExLoss(reliability_weighting=-1.0)


def test_reliability_weighting_with_vote_distributions(tiny_pair: dict):
    model = tiny_pair["fixed"]
    torch.manual_seed(4)
    out = model.reliability(torch.randn(3, model.config.embed_dim))
    y = torch.tensor([1, 2, 4])
    votes = torch.softmax(torch.randn(3, 8), -1)
    loss = ARBExLoss(use_dist=True, reliability_weighting=1.0)
    sw = loss.sample_weights(out.mixed_dist, y, 1.0)
    logp = out.mixed_dist.clamp_min(1e-8).log()
    expected = -(sw[:, None] * votes * logp).sum() / votes.sum()
    torch.testing.assert_close(loss(out, y, dist=votes, info=StepInfo(progress=1.0)).terms["ce"], expected)


def test_output_names_every_intermediate(tiny_pair: dict):
    model = tiny_pair["fixed"]
    out = model(torch.randn(2, 3, 48, 48))
    c, k, d = model.config.num_classes, model.config.num_anchors, model.config.embed_dim
    shapes = {
        "logits": (2, c),
        "embedding": (2, d),
        "head_logits": (2, c),
        "primary_dist": (2, c),
        "confidence_primary": (2, 1),
        "distances": (2, c, k),
        "anchor_dist": (2, c),
        "confidence_anchor": (2, 1),
        "attention_dist": (2, c),
        "confidence_attention": (2, 1),
        "correction": (2, c),
        "mixed_dist": (2, c),
        "final_dist": (2, c),
        "prediction_dist": (2, c),
        "anchors": (c, k, d),
    }
    for name, shape in shapes.items():
        assert tuple(getattr(out, name).shape) == shape, name
    assert set(out.extras()) == set(shapes) - {"logits", "anchors"}
    for name in ("primary_dist", "anchor_dist", "attention_dist", "correction", "final_dist"):
        torch.testing.assert_close(getattr(out, name).sum(-1), torch.ones(2))


def test_gradcam_map_is_not_flat_tiny(tiny_pair: dict):
    maps = gradcam_maps(tiny_pair["fixed"], torch.randn(2, 3, 48, 48))
    assert maps.shape == (2, 48, 48)
    for m in maps:
        assert m.std() > 0 and m.max() > m.min()


# ------------------------------------------------------------------------------------------------ training


def ferplus_batches(root: Path, n: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from fernb.data import load_dataset

    ds = load_dataset("ferplus", root, split="train")
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(ds.targets == c), n // 4, replace=False) for c in range(4)])
    rng.shuffle(idx)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    xs = torch.stack(
        [
            (
                torch.from_numpy(np.asarray(ds.load_image(int(i)).convert("RGB"), np.float32) / 255).permute(2, 0, 1)
                - mean
            )
            / std
            for i in idx
        ]
    )
    ys = torch.as_tensor(ds.targets[idx], dtype=torch.int64)
    return [(xs[i : i + batch], ys[i : i + batch]) for i in range(0, len(idx), batch)]


def test_tiny_trains_on_ferplus(ferplus_root: Path):
    torch.manual_seed(0)
    batches = ferplus_batches(ferplus_root, 64, 32)
    model = quiet_model(preset="tiny").train()
    loss_fn = create_loss("arbex", class_weights=arbex_class_weights(torch.cat([y for _, y in batches]), 8))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    info = StepInfo(progress=0.5)  # a fixed trust keeps the objective stationary
    epochs = []
    for _ in range(5):
        losses = []
        for x, y in batches:
            loss = loss_fn(model(x), y, info=info)
            opt.zero_grad()
            loss.total.backward()
            opt.step()
            losses.append(loss.total.item())
        epochs.append(float(np.mean(losses)))
    assert all(math.isfinite(v) for v in epochs)
    assert epochs[-1] < 0.9 * epochs[0], f"loss did not fall: {epochs}"
