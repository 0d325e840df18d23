"""Ad-Corre's loss terms against a direct NumPy evaluation of their formulas (``shared/specs/baselines.md`` §3.2,
``np.corrcoef`` as the official code), and every term carries gradient (the official TF code computes ED, MD and FD
in NumPy, so they train nothing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fernb.losses import create_loss
from fernb.models import create_model
from fernb.models.adcorre import AdCorreOutput

K, N, D, C = 3, 8, 16, 7


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(K, N, D, generator=g, dtype=torch.float64), dim=-1)
    logits = torch.randn(N, C, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 0, 1, 2, 2, 2, 4, 6])  # classes 3 and 5 absent: MD's 1e-7 weights matter
    return emb, logits, y


def _np_reference(
    emb: np.ndarray, logits: np.ndarray, y: np.ndarray, adaptive_cm: np.ndarray | None = None
) -> dict[str, float]:
    k, n, _ = emb.shape
    c = logits.shape[1]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(c)[y]
    ce = -np.mean(onehot * np.log(np.clip(p, 1e-7, 1.0)))  # mean over n * C entries, as the Keras code
    ed = np.mean([(1 - np.eye(k)) * (1 + np.corrcoef(emb[:, i, :])) for i in range(n)])
    w = np.array([np.where(y == cls, 1.0, 1e-7) for cls in range(c)])
    means = np.array([[np.average(emb[m], axis=0, weights=w[cls]) for cls in range(c)] for m in range(k)])
    md = np.mean([(1 - np.eye(c)) * (1 + np.corrcoef(means[m])) for m in range(k)])
    omega = np.where(y[:, None] == y[None, :], 1.0, -1.0)
    weight = 1.0
    if adaptive_cm is not None:
        miss = 1 - np.diag(adaptive_cm)[y]
        weight = (1 - np.eye(n)) * (1 + miss[:, None] + miss[None, :])
    fd = np.mean([weight * np.abs(omega - np.corrcoef(emb[m])) for m in range(k)])
    return {"ce": ce, "ed": ed, "md": md, "fd": fd, "total": 50 * ce + ed + md + fd}


@pytest.mark.parametrize("seed", [0, 1])
def test_every_term_matches_the_numpy_formula(seed: int):
    emb, logits, y = _inputs(seed)
    ref = _np_reference(emb.numpy(), logits.numpy(), y.numpy())
    res = create_loss("adcorre")(AdCorreOutput(logits=logits, embeddings=emb), y)
    for key in ("ce", "ed", "md", "fd"):
        assert res.terms[key].item() == pytest.approx(ref[key], rel=1e-5, abs=1e-7), key
    assert res.total.item() == pytest.approx(ref["total"], rel=1e-5)


def test_adaptive_feature_discriminator_matches_the_numpy_formula():
    emb, logits, y = _inputs(2)
    loss = create_loss("adcorre", adaptive=True)
    history_t, history_p = [0, 0, 1, 1, 2, 2, 2, 4, 6, 6], [0, 1, 1, 1, 2, 0, 3, 4, 5, 6]
    loss.observe(torch.tensor(history_t), torch.tensor(history_p))
    cm = np.zeros((C, C))
    for t, p in zip(history_t, history_p):
        cm[t, p] += 1
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)  # sklearn's normalize="true" (empty rows stay 0)
    ref = _np_reference(emb.numpy(), logits.numpy(), y.numpy(), adaptive_cm=cm)
    res = loss(AdCorreOutput(logits=logits, embeddings=emb), y)
    assert res.terms["fd"].item() == pytest.approx(ref["fd"], rel=1e-5)
    assert len(loss.history) == 10 + N  # this batch's (label, prediction) pairs join the history


def test_every_term_has_a_nonzero_gradient_through_the_model(device: torch.device):
    torch.manual_seed(0)
    model = create_model("adcorre", "tiny").train().to(device)
    x, y = torch.rand(8, 3, 64, 64).to(device), torch.tensor([0, 0, 1, 1, 2, 3, 3, 5], device=device)
    res = create_loss("adcorre")(model(x), y)
    params = [model.heads.weight, model.backbone.conv1.weight]
    for term in ("ce", "ed", "md", "fd"):
        grads = torch.autograd.grad(res.terms[term], params, retain_graph=True)
        for p, g in zip(("heads", "backbone stem"), grads):
            assert torch.isfinite(g).all() and g.abs().sum() > 0, f"{term}: no gradient reaches the {p}"


def test_embeddings_are_unit_norm_and_feed_the_classifier():
    torch.manual_seed(0)
    model = create_model("adcorre", "tiny", num_embeddings=4, embedding_dim=8).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 3, 64, 64))
    assert out.embeddings.shape == (4, 3, 8)
    torch.testing.assert_close(out.embeddings.norm(dim=-1), torch.ones(4, 3))
    torch.testing.assert_close(out.embedding, out.embeddings.transpose(0, 1).flatten(1))
    torch.testing.assert_close(out.logits, model.fc(out.embedding))


def test_any_timm_backbone_by_name_and_a_clear_error_for_unknown_ones():
    model = create_model("adcorre", "tiny", backbone="mobilenetv3_small_050", backbone_kwargs={})
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 3, 64, 64)).logits.shape == (2, 8)
    with pytest.raises(ValueError, match="timm.list_models"):
        create_model("adcorre", "tiny", backbone="no_such_net", backbone_kwargs={})


def test_official_preset_uses_the_keras_xception_and_the_code_s_ten_heads():
    from fernb.models.adcorre import AdCorreConfig

    cfg = AdCorreConfig.official()
    assert cfg.backbone == "legacy_xception" and cfg.num_embeddings == 10 and cfg.embedding_dim == 256


@pytest.mark.parametrize("stride, side", [(None, 2), (2, 3), (1, 6)])
def test_stem_stride_keeps_a_small_face_s_resolution_in_a_timm_resnet(stride: int | None, side: int):
    model = create_model("adcorre", "tiny", stem_stride=stride).eval()
    with torch.no_grad():
        assert model.forward_features(torch.rand(2, 3, 48, 48)).shape[-2:] == (side, side)
    with pytest.raises(ValueError, match="timm ResNet"):
        create_model("adcorre", "tiny", backbone="mobilenetv3_small_050", backbone_kwargs={}, stem_stride=1)


def test_stem_stride_reaches_the_first_convolution_of_a_deep_stem():
    deep = {"channels": (16, 32, 64, 128), "stem_type": "deep", "stem_width": 8}
    model = create_model("adcorre", "tiny", stem_stride=1, backbone_kwargs=deep).eval()
    first, last = model.backbone.conv1[0], model.backbone.conv1[-1]
    assert first.stride == (1, 1) and last.out_channels == 16 and isinstance(model.backbone.maxpool, torch.nn.Identity)
    with torch.no_grad():
        assert model.forward_features(torch.rand(2, 3, 48, 48)).shape[-3:] == (128, 6, 6)
