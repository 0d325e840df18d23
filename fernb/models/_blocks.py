"""Small layers shared by the POSTER_V2 and ARBEx families.

The face backbones (IR-50 units, MobileFaceNet blocks), the attention (self- and POSTER_V2's cross-attention), the
pre-norm transformer block and the SE gate. Each layer
computes exactly what the official POSTER_V2 code computes (checked against ``shared/fidelity``); names follow timm
habits rather than the official ones, and ``fernb.models.poster`` converts between the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ConvBNAct",
    "DepthWiseBlock",
    "IRBlock",
    "Mlp",
    "DropPath",
    "Attention",
    "SelfAttention",
    "TransformerBlock",
    "SEGate",
]


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> PReLU (or no activation): MobileFaceNet's ``Conv_block`` / ``Linear_block``.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        kernel_size: square kernel; padding keeps the size at stride 1 (``kernel_size // 2``).
        stride: convolution stride.
        groups: convolution groups (``groups == in_chs == out_chs`` gives a depth-wise conv).
        act: apply PReLU (one slope per channel) after the norm.
    """

    def __init__(
        self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.PReLU(out_chs) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_chs, H, W) -> (B, out_chs, H / stride, W / stride)."""
        return self.act(self.bn(self.conv(x)))


class DepthWiseBlock(nn.Module):
    """MobileFaceNet's ``Depth_Wise`` unit: 1x1 expand -> 3x3 depth-wise (strided) -> 1x1 linear projection.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        mid_chs: expanded channels (the official ``groups`` argument).
        stride: stride of the depth-wise conv.
        residual: add the input (only when ``in_chs == out_chs`` and ``stride == 1``).
    """

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, stride: int = 1, residual: bool = False) -> None:
        super().__init__()
        if residual and (in_chs != out_chs or stride != 1):
            raise ValueError(
                f"a residual DepthWiseBlock needs in_chs == out_chs and stride 1, got {in_chs}->{out_chs}"
                f" stride {stride}"
            )
        self.residual = residual
        self.expand = ConvBNAct(in_chs, mid_chs, 1)
        self.dw = ConvBNAct(mid_chs, mid_chs, 3, stride, groups=mid_chs)
        self.project = ConvBNAct(mid_chs, out_chs, 1, act=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_chs, H, W) -> (B, out_chs, H / stride, W / stride)."""
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class IRBlock(nn.Module):
    """The ArcFace "IR" bottleneck of IR-50: BN -> conv3x3 -> PReLU -> conv3x3 (strided) -> BN, plus a shortcut.

    The shortcut is a plain sub-sampling (the official ``MaxPool2d(1, stride)``) when the width is kept, else a
    strided 1x1 conv + BN (``downsample``).

    Args:
        in_chs: input channels.
        out_chs: output channels.
        stride: stride of the second conv and of the shortcut.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, 1, 1, bias=False)
        self.act = nn.PReLU(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample: nn.Module | None = None
        if in_chs != out_chs:
            self.downsample = nn.Sequential()
            self.downsample.add_module("conv", nn.Conv2d(in_chs, out_chs, 1, stride, bias=False))
            self.downsample.add_module("bn", nn.BatchNorm2d(out_chs))

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_chs, H, W) -> (B, out_chs, H / stride, W / stride)."""
        if self.downsample is not None:
            shortcut = self.downsample(x)
        elif self.stride > 1:
            shortcut = x[:, :, :: self.stride, :: self.stride]
        else:
            shortcut = x
        return self.bn2(self.conv2(self.act(self.conv1(self.bn1(x))))) + shortcut


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or at rate 0)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Linear -> GELU -> Linear on the last dimension: (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head attention over tokens, (B, N, D) -> (B, N, D): the one attention of POSTER_V2 and ARBEx.

    Self-attention (default) projects queries, keys and values from the tokens (``qkv``, with bias), as the official
    ViT. With ``external_query`` the tokens give only keys and values (``kv``) and the caller's ``query`` (B, N, D)
    is used as it is, without a projection: POSTER_V2's landmark cross-attention. A subclass adds a bias to the
    attention logits through :meth:`attn_bias` (POSTER_V2's relative position bias). Scale ``head_dim ** -0.5``.

    The unfused path keeps each official order of operations: without a bias the logits are scaled,
    ``(q @ k^T) * scale`` (ViT); with one the query is, ``(q * scale) @ k^T + bias`` (Swin's window attention).

    Args:
        dim: token dimension.
        num_heads: attention heads (``dim`` must be divisible by it).
        fused: use ``F.scaled_dot_product_attention`` (same result to float rounding; faster, less memory).
        external_query: take the queries from ``forward``'s ``query`` instead of projecting them.
    """

    def __init__(self, dim: int, num_heads: int, fused: bool = True, external_query: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused = fused
        self.external_query = external_query
        self.qkv: nn.Linear | None = None if external_query else nn.Linear(dim, dim * 3)
        self.kv: nn.Linear | None = nn.Linear(dim, dim * 2) if external_query else None
        self.proj = nn.Linear(dim, dim)

    def attn_bias(self) -> Tensor | None:
        """A bias added to the attention logits, broadcast to (B, heads, N, N); None: no bias."""
        return None

    def _heads(self, t: Tensor, parts: int) -> tuple[Tensor, ...]:
        """(B, N, parts * D) -> ``parts`` tensors (B, heads, N, head_dim)."""
        b, n, _ = t.shape
        return t.reshape(b, n, parts, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: Tensor, query: Tensor | None = None) -> Tensor:
        """x: (B, N, D) tokens; query: (B, N, D), only with ``external_query`` -> (B, N, D)."""
        b, n, c = x.shape
        if self.kv is not None:
            if query is None:
                raise ValueError("this attention takes its queries from the caller: forward(x, query)")
            k, v = self._heads(self.kv(x), 2)
            q = query.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        else:
            assert self.qkv is not None
            q, k, v = self._heads(self.qkv(x), 3)
        bias = self.attn_bias()
        if bias is not None:
            bias = bias.to(q.dtype)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        elif bias is None:
            out = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1) @ v
        else:
            out = ((q * self.scale) @ k.transpose(-2, -1) + bias).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


SelfAttention = Attention  # the name TransformerBlock's attention had before the two attentions became one


class TransformerBlock(nn.Module):
    """Pre-norm ViT block: x + Attn(LN(x)), then + MLP(LN(x)); LayerNorm eps 1e-6 as in the official ViT."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, fused: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, fused)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SEGate(nn.Module):
    """POSTER's squeeze-excitation gate on a vector: x * sigmoid(fc2(relu(fc1(x)))), (B, D) -> (B, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x))))
