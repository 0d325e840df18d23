"""CBAM (Woo et al., ECCV 2018) and :class:`FastCBAM`, the same maths computed faster on a CPU.

MA-Net and the Diversified ESR build :class:`FastCBAM`; :class:`CBAM` is the plain reference it is tested against.

On a CPU, CBAM's cost is not its arithmetic but PyTorch's kernels for its odd shapes:

* the spatial gate's 7x7 convolution has 2 input channels and 1 output channel; oneDNN runs it, and above all its
  backward, with almost no vectorisation (on a (64, 2, 60, 60) map ~120 ms forward + backward on one core, more than
  all the model's other convolutions together). :class:`GateConv` computes the same convolution with NNPACK (forward,
  and the input gradient as the convolution of the output gradient with the flipped kernel) and the weight gradient
  as one depthwise convolution of the padded input with the output gradient (batch x channels groups), which oneDNN
  vectorises: ~10 ms in all;
* ``amax`` + ``mean`` over the same map and their gradients are separate autograd nodes, each a full pass over the
  feature map; :class:`ChannelPool` and :class:`GateAndPool` compute each pooling pair in one node and write its
  gradient in fewer passes.

The maths is unchanged: the forward values are those of ``CBAM`` up to float rounding (NNPACK sums the 98 products of
the 7x7x2 convolution in another order), and so are the gradients, including the tie rule of ``amax`` (tied maxima
share the gradient equally). The fast path runs for float32 CPU tensors outside autocast (without NNPACK its
convolutions fall back to ``F.conv2d``); anything else (CUDA, bfloat16 autocast, float64) takes
:class:`CBAM`'s own code. Double backward (``create_graph=True``) through the fast path is not supported.
"""

from __future__ import annotations

import functools
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ._convert import Rule, rename

__all__ = [
    "CBAM",
    "ChannelGate",
    "SpatialGate",
    "FastCBAM",
    "GateConv",
    "ChannelPool",
    "GateAndPool",
    "convert_cbam_key",
    "CBAM_RULES",
]


# -- CBAM (Woo et al., ECCV 2018), as in MA-Net's attention.py and the Diversified code's cbam.py ---------------------
class ChannelGate(nn.Module):
    """Channel attention: a shared MLP (C -> C/r -> C) on the global average- and max-pooled vectors, summed, sigmoid.

    Shapes: (B, C, H, W) -> gated map (B, C, H, W) and gate (B, C).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        avg = x.mean(dim=(2, 3))
        mx = x.amax(dim=(2, 3))
        raw = self.fc2(F.relu(self.fc1(avg))) + self.fc2(F.relu(self.fc1(mx)))
        gate = torch.sigmoid(raw)
        return x * gate[:, :, None, None], gate


class SpatialGate(nn.Module):
    """Spatial attention: [max over C, mean over C] -> conv 7x7 (no bias) -> BN (momentum 0.01) -> sigmoid.

    Shapes: (B, C, H, W) -> gated map (B, C, H, W) and gate (B, 1, H, W).
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        gate = torch.sigmoid(self.bn(self.conv(pooled)))
        return x * gate, gate


class CBAM(nn.Module):
    """Channel gate then spatial gate. ``forward`` returns the gated map; :meth:`forward_attention` also the gates.

    Shapes: (B, C, H, W) -> (B, C, H, W) [, channel gate (B, C), spatial gate (B, 1, H, W)].
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate()

    def forward_attention(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, ch = self.channel(x)
        x, sp = self.spatial(x)
        return x, ch, sp

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_attention(x)[0]


# Official CBAM key fragments (Jongchan/attention-module naming), anywhere in a key -> fernb's :class:`CBAM` naming.
CBAM_RULES: tuple[Rule, ...] = (
    (r"ChannelGate\.mlp\.1\.", "channel.fc1."),
    (r"ChannelGate\.mlp\.3\.", "channel.fc2."),
    (r"SpatialGate\.spatial\.conv\.", "spatial.conv."),
    (r"SpatialGate\.spatial\.bn\.", "spatial.bn."),
)


def convert_cbam_key(k: str) -> str:
    """Official CBAM key fragments (Jongchan/attention-module naming) -> fernb's :class:`CBAM` naming."""
    return rename(k, CBAM_RULES)


@functools.lru_cache(maxsize=1)
def _nnpack_ok() -> bool:
    """NNPACK is built in and initialised (``torch._nnpack_available`` also initialises it)."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


def _conv_same(x: Tensor, w: Tensor, pad: int) -> Tensor:
    """Stride-1 convolution without bias, NNPACK when it can, else the default backend."""
    if _nnpack_ok():
        try:
            return torch._nnpack_spatial_convolution(x, w, x.new_zeros(w.shape[0]), [pad, pad])
        except RuntimeError:
            pass
    return F.conv2d(x, w, padding=pad)


def _float_mask(x: Tensor, ref: Tensor) -> Tensor:
    """``(x == ref)`` as 0/1 in x's dtype, written directly (a bool mask costs a slow conversion with floats)."""
    return torch.eq(x, ref, out=torch.empty_like(x))


class _NodeCtx(Protocol):
    """The autograd context as the nodes below use it (torch's ``FunctionCtx`` stub lacks the backward fields)."""

    saved_tensors: tuple[Tensor, ...]
    needs_input_grad: tuple[bool, ...]
    pad: int

    def save_for_backward(self, *tensors: Tensor | None) -> None: ...


class GateConv(torch.autograd.Function):
    """``conv2d(x, w, padding=pad)`` (stride 1, no bias, square kernel) for few channels:
    (B, c, H, W) -> (B, o, H', W')."""

    @staticmethod
    def forward(ctx: _NodeCtx, x: Tensor, w: Tensor, pad: int) -> Tensor:
        x, w = x.contiguous(), w.contiguous()
        ctx.save_for_backward(x, w)
        ctx.pad = pad
        return _conv_same(x, w, pad)

    @staticmethod
    @once_differentiable
    def backward(ctx: _NodeCtx, gy: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, w = ctx.saved_tensors
        p, k = ctx.pad, w.shape[-1]
        gy = gy.contiguous()
        gx = gw = None
        if ctx.needs_input_grad[0]:  # the transposed convolution = convolution with the flipped, transposed kernel
            gx = _conv_same(gy, w.flip(2, 3).transpose(0, 1).contiguous(), k - 1 - p)
        if ctx.needs_input_grad[1]:
            # gw[o, c, i, j] = sum_{b, h, w} xpad[b, c, h + i, w + j] * gy[b, o, h, w]: one depthwise convolution with
            # a (H', W') kernel per (b, o, c), summed over b
            b, c = x.shape[:2]
            o, (ho, wo) = gy.shape[1], gy.shape[-2:]
            xp = F.pad(x, (p, p, p, p))
            inp = xp.unsqueeze(1).expand(b, o, c, *xp.shape[-2:]).reshape(1, b * o * c, *xp.shape[-2:])
            ker = gy.unsqueeze(2).expand(b, o, c, ho, wo).reshape(b * o * c, 1, ho, wo)
            gw = F.conv2d(inp, ker, groups=b * o * c).reshape(b, o, c, k, k).sum(0)
        return gx, gw, None


class ChannelPool(torch.autograd.Function):
    """(B, C, H, W) -> mean and max over H, W, (B, C) each (the inputs of CBAM's channel MLP)."""

    @staticmethod
    def forward(ctx: _NodeCtx, x: Tensor) -> tuple[Tensor, Tensor]:
        mx = x.amax(dim=(2, 3))
        ctx.save_for_backward(x, mx)
        return x.mean(dim=(2, 3)), mx

    @staticmethod
    @once_differentiable
    def backward(ctx: _NodeCtx, g_avg: Tensor, g_mx: Tensor) -> Tensor:
        x, mx = ctx.saved_tensors
        mask = _float_mask(x, mx[:, :, None, None])
        count = mask.sum(dim=(2, 3))  # ties share the gradient, as amax's
        avg = (g_avg / (x.shape[2] * x.shape[3]))[:, :, None, None].expand_as(x)
        return torch.addcmul(avg, mask, (g_mx / count)[:, :, None, None])


class GateAndPool(torch.autograd.Function):
    """x (B, C, H, W), channel gate (B, C) -> gated map x1 = x * gate and its channel max and mean (B, 2, H, W) (the
    input of CBAM's spatial gate)."""

    @staticmethod
    def forward(ctx: _NodeCtx, x: Tensor, gate: Tensor) -> tuple[Tensor, Tensor]:
        x1 = x * gate[:, :, None, None]
        mx = x1.amax(dim=1, keepdim=True)
        ctx.save_for_backward(x, gate, x1, mx)
        return x1, torch.cat([mx, x1.mean(dim=1, keepdim=True)], dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx: _NodeCtx, g_x1: Tensor, g_pooled: Tensor) -> tuple[Tensor, Tensor]:
        x, gate, x1, mx = ctx.saved_tensors
        mask = _float_mask(x1, mx)
        count = mask.sum(dim=1, keepdim=True)  # ties share the gradient, as amax's
        gt = g_x1 + g_pooled[:, 1:] / x1.shape[1]
        gt.addcmul_(mask, g_pooled[:, :1] / count)
        return gt * gate[:, :, None, None], (gt * x).sum(dim=(2, 3))


class FastCBAM(CBAM):
    """:class:`~fernb.models._cbam.CBAM` (same parameters and outputs) computed by the nodes above on float32 CPU
    tensors; elsewhere (CUDA, autocast, other dtypes) by ``CBAM``'s own code."""

    def forward_attention(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        conv = self.spatial.conv
        if (
            x.device.type != "cpu"
            or x.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")
            or conv.stride != (1, 1)
            or conv.dilation != (1, 1)
            or conv.padding[0] != conv.padding[1]
        ):
            return super().forward_attention(x)
        ch = self.channel
        avg, mx = ChannelPool.apply(x)
        gate = torch.sigmoid(ch.fc2(F.relu(ch.fc1(avg))) + ch.fc2(F.relu(ch.fc1(mx))))
        x1, pooled = GateAndPool.apply(x, gate)
        sp = torch.sigmoid(self.spatial.bn(GateConv.apply(pooled, conv.weight, conv.padding[0])))
        return x1 * sp, gate, sp
