"""Diversity terms of the Diversified ESR / MA-Net: the official form against ``shared/fidelity/diversified_losses.pt``
(values, similarity matrices, NaN/inf patterns, gradients), and the behaviour of the official and fixed forms."""

from __future__ import annotations

import pytest
import torch
from fidelity import close

from fernb.losses.diversity import diversity, manet_local_heads, similarity_matrix


@pytest.fixture(scope="module")
def fx(fidelity_dir):
    return torch.load(fidelity_dir / "diversified_losses.pt", weights_only=True)


def _heads(fx, regime: str) -> dict[str, torch.Tensor]:
    inp = {k: v.clone().requires_grad_(True) for k, v in fx["inputs"][regime].items()}
    if regime.startswith("esr"):
        return inp | {"spatial": inp["attn_sp"], "channel": inp["attn_ch"]}
    spatial, channel = manet_local_heads(inp["local_feat_b1"])
    return inp | {"branch_spatial": spatial, "branch_channel": channel, "feat": inp["global_feat_b12"]}


@pytest.mark.shared
@pytest.mark.parametrize("regime", ["esr_near", "esr_random", "manet_near", "manet_random"])
def test_official_form_matches_values_matrices_and_nan_patterns(fx, regime: str):
    heads = _heads(fx, regime)
    ref = fx["outputs"][regime]
    terms = ("spatial", "channel") if regime.startswith("esr") else ("branch_spatial", "branch_channel", "feat")
    total = 0
    for term in terms:
        res = diversity(heads[term], "official")
        close(res.snm, ref[f"snm_{term}"])
        for key in ("direct_div", "det_div", "logdet_div"):
            close(getattr(res, key), ref[term][key], equal_nan=True)
        total = total + res.loss
    close(total, ref["loss_div_total"])
    if regime.endswith("near"):
        total.backward()
        names = ("attn_sp", "attn_ch") if regime.startswith("esr") else ("local_feat_b1", "global_feat_b12")
        for name in names:
            close(heads[name].grad, ref[f"grad_loss_div_total_wrt_{name}"])


@pytest.mark.shared
def test_the_random_regime_reproduces_nan_and_inf_logdet(fx):
    res = diversity(fx["inputs"]["esr_random"]["attn_ch"], "official")
    assert torch.isinf(res.logdet_div) and res.det_div == 0
    res = diversity(fx["inputs"]["manet_near"]["global_feat_b12"], "official")
    assert torch.isnan(res.logdet_div)  # two heads: det = -s01 * s10 < 0


def _shrink(heads: torch.Tensor, t: float) -> torch.Tensor:
    """Move every head a fraction t of the way towards their mean (t = 1: identical heads)."""
    return heads + t * (heads.mean(dim=0, keepdim=True) - heads)


@pytest.mark.parametrize("m", [3, 5, 9])
def test_official_form_rewards_similar_heads_for_an_odd_count(m: int):
    torch.manual_seed(m)
    heads = torch.rand(m, 4, 6, 6) * 0.2
    apart, closer = diversity(heads, "official").loss, diversity(_shrink(heads, 0.5), "official").loss
    assert closer < apart  # the published term decreases when the heads become more alike


@pytest.mark.parametrize("m", [2, 3, 4, 9])
@pytest.mark.parametrize("form", ["fixed", "logdet"])
def test_fixed_forms_penalise_similar_heads_for_every_count(m: int, form: str):
    torch.manual_seed(m)
    heads = torch.rand(m, 4, 6, 6) * 0.2
    losses = [diversity(_shrink(heads, t), form).loss for t in (0.0, 0.5, 0.9)]
    assert losses[0] < losses[1] < losses[2]


def test_fixed_form_has_the_official_gradient_for_two_heads():
    torch.manual_seed(0)
    a = (torch.rand(2, 3, 16) * 0.3).requires_grad_(True)
    b = a.detach().clone().requires_grad_(True)
    official, fixed = diversity(a, "official").loss, diversity(b, "fixed").loss
    close(fixed, official - 1)
    official.backward()
    fixed.backward()
    close(b.grad, a.grad)


def test_logdet_form_stays_finite_with_gradient_for_identical_heads():
    heads = torch.rand(1, 4, 512).expand(5, 4, 512).clone().requires_grad_(True)
    loss = diversity(heads, "logdet").loss
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(heads.grad).all()


def test_similarity_matrix_is_a_batch_mean_gaussian_kernel():
    torch.manual_seed(0)
    heads = torch.rand(3, 5, 7)
    s = similarity_matrix(heads, gamma=2.0, diagonal=1.0)
    for a in range(3):
        for b in range(3):
            want = 1.0 if a == b else torch.exp(-2.0 * ((heads[a] - heads[b]) ** 2).sum(-1)).mean()
            close(s[a, b], torch.as_tensor(want))


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="official"):
        diversity(torch.rand(2, 1, 3), "paper")
