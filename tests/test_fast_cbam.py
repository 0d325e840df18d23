"""The fast CPU CBAM (MA-Net, Diversified ESR) computes CBAM's forward and gradients (tie rule included)."""

from __future__ import annotations

import pytest
import torch

from fernb.models._cbam import CBAM, FastCBAM, GateConv


def _inputs(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Post-ReLU maps (many zeros) with exact positive ties: across channels at some pixels, within a channel map."""
    g = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(*shape, generator=g))
    x[:, 1, : shape[2] // 2] = x[:, 0, : shape[2] // 2]  # channel max ties
    x[:, 2] = x[:, 2].amax(dim=(1, 2), keepdim=True)  # a constant channel: every pixel ties for the spatial max
    x[0, 3] = 0  # an all-zero channel
    return x


def _run(module: torch.nn.Module, x: torch.Tensor, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    x = x.clone().requires_grad_(True)
    module.zero_grad()
    outs = module.forward_attention(x)
    g = torch.Generator().manual_seed(seed + 1)
    weights = [torch.randn(o.shape, generator=g) for o in outs]
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    return [o.detach() for o in outs], [x.grad] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize("shape", [(6, 8, 12, 12), (5, 16, 7, 7), (4, 32, 2, 2)])
@pytest.mark.parametrize("train", [True, False])
def test_fast_cbam_matches_cbam_values_and_gradients(shape: tuple[int, ...], train: bool):
    torch.manual_seed(0)
    ref = CBAM(shape[1]).train(train)
    fast = FastCBAM(shape[1]).train(train)
    fast.load_state_dict(ref.state_dict())
    x = _inputs(shape, seed=shape[1])
    (ref_out, ref_grads), (out, grads) = _run(ref, x, 0), _run(fast, x, 0)
    for a, b in zip(out + grads, ref_out + ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(1.0, b.abs().max().item()))
    torch.testing.assert_close(fast.spatial.bn.running_mean, ref.spatial.bn.running_mean)  # BN updated once


def test_gate_conv_matches_conv2d_for_every_input_and_weight():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 11, 9, generator=g, dtype=torch.float64).float().requires_grad_(True)
    w = torch.randn(1, 2, 7, 7, generator=g).requires_grad_(True)
    gy = torch.randn(3, 1, 11, 9, generator=g)
    y = GateConv.apply(x, w, 3)
    gx, gw = torch.autograd.grad(y, (x, w), gy)
    y_ref = torch.nn.functional.conv2d(x, w, padding=3)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, w), gy)
    for a, b in ((y, y_ref), (gx, gx_ref), (gw, gw_ref)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def _node_names(t: torch.Tensor) -> set[str]:
    seen, stack = {}, [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and id(node) not in seen:
            seen[id(node)] = type(node).__name__
            stack.extend(n for n, _ in node.next_functions)
    return set(seen.values())


def test_float32_cpu_takes_the_fast_nodes_and_other_dtypes_cbam_s_own_code():
    x = _inputs((2, 8, 6, 6), 0).requires_grad_(True)
    fast_nodes = _node_names(FastCBAM(8).forward_attention(x)[0])
    assert {"GateAndPoolBackward", "ChannelPoolBackward", "GateConvBackward"} <= fast_nodes
    plain_nodes = _node_names(FastCBAM(8).double().forward_attention(x.double())[0])
    assert not any(n.startswith(("GateAndPool", "ChannelPool", "GateConv")) for n in plain_nodes)
