"""MA-Net: global multi-scale and local attention network, and its diversified variant.

Zhao, Liu, Wang, "Learning Deep Global Multi-scale and Local Attention Features for Facial Expression Recognition in
the Wild", IEEE TIP 30:6544-6556, 2021. Official code: ``zengqunzhao/MA-Net`` (``model/manet.py``,
``model/attention.py``). Diversified variant: Heidari and Iosifidis, "Learning Diversified Feature Representations for
Facial Expression Recognition in the Wild", arXiv 2210.09381, code
``negarhdr/Diversified-Facial-Expression-Recognition`` (``model/diversified_manet.py``).
Spec: ``shared/specs/baselines.md`` §4.4, §5.2.

Architecture (official sizes, 224 px)::

    stem + layer1 + layer2 (ResNet-18)                       (B, 128, 28, 28)
    local branch:  four 14x14 quadrants, each with its own layer3 (2 AttentionBlocks, stride 2) and
                   layer4 (2 AttentionBlocks, stride 1) -> 4 x (B, 512, 7, 7), stitched to (B, 512, 14, 14),
                   GAP, fc_local
    global branch: layer3 + layer4 of MulScaleBlocks (both stride 2) -> (B, 512, 7, 7), GAP, fc_global
    prediction:    beta * logits_local + (1 - beta) * logits_global, beta = 0.6

AttentionBlock = BasicBlock with CBAM on the residual path before the addition (:class:`fernb.models._cbam.FastCBAM`:
the official CBAM's parameters and maths, computed faster on a CPU). MulScaleBlock = conv3x3 + BN + ReLU,
then the channels split in four groups processed by two hierarchical paths whose outputs are added (with the shortcut).

Options beyond the official code:

* ``width`` and ``stem="small"`` scale the network down for 48-64 px inputs (``tiny``); the local branch splits the
  ``layer2`` map into its four quadrants whatever its (even) size.
* ``multiscale``: ``"bidirectional"`` is the MA-Net code after its April 2023 fix (path 2 runs g4 -> g1, MA-Net#11);
  ``"forward"`` is the pre-fix block that the Diversified MA-Net code still uses (both paths g1 -> g4). ``None``
  (default) follows the official code of the variant: bidirectional for MA-Net, forward with ``diversity=True``.
* ``diversity=True`` (Diversified MA-Net) also returns the four local patch maps and the two pooled global features
  the diversity terms need (:mod:`fernb.losses.diversity`). The Diversified MA-Net has the same modules (its CBAMs are
  MA-Net's), so the same checkpoint loads either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import FERModel, ModelOutput, check_num_classes, feature, new_linear
from ._builder import build_model
from ._cbam import CBAM, CBAM_RULES, FastCBAM
from ._convert import MODULE_PREFIX, Rule, rename
from ._pretrained import UNIT_MEAN, UNIT_STD, PretrainedCfg, register_pretrained_cfgs
from ._registry import build_config, register_model
from .resnet import (
    BasicBlock,
    ResNetStem,
    conv3x3,
    downsample,
    drop_mismatched_heads,
    init_resnet_weights,
    make_layer,
)

__all__ = ["MANet", "MANetConfig", "MANetOutput", "CBAM", "AttentionBlock", "MulScaleBlock"]


class AttentionBlock(BasicBlock):
    """BasicBlock with CBAM on the residual path before the addition. (B, in, H, W) -> (B, out, H/s, W/s)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, reduction: int = 16) -> None:
        super().__init__(in_ch, out_ch, stride)
        self.cbam = FastCBAM(out_ch, reduction)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(self.cbam(out) + identity)


class ScalePath(nn.Module):
    """One hierarchical path of a MulScaleBlock: ``convs[j]``/``bns[j]`` process channel group j.

    Visiting the groups in ``order``: o_first = BN(conv(g_first)), o_next = BN(conv(ReLU(o_prev) + g_next)); the
    outputs are concatenated in group order.
    """

    def __init__(self, width: int, groups: int = 4) -> None:
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(width, width) for _ in range(groups))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(groups))

    def forward(self, splits: tuple[Tensor, ...], order: list[int]) -> Tensor:
        outs: dict[int, Tensor] = {}
        prev: Tensor | None = None
        for j in order:
            inp = splits[j] if prev is None else F.relu(prev) + splits[j]
            prev = self.bns[j](self.convs[j](inp))
            outs[j] = prev
        return torch.cat([outs[j] for j in range(len(splits))], dim=1)


class MulScaleBlock(nn.Module):
    """MA-Net's multi-scale block. (B, in, H, W) -> (B, out, H/s, W/s).

    Args:
        order: ``"bidirectional"`` (path 2 visits the groups g4 -> g1; MA-Net after its 2023 fix) or ``"forward"``
            (both paths g1 -> g4; MA-Net before the fix, and the Diversified MA-Net).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, order: str = "bidirectional") -> None:
        super().__init__()
        if order not in ("bidirectional", "forward"):
            raise ValueError(f"MulScaleBlock order must be 'bidirectional' or 'forward', got {order!r}")
        self.order = order
        self.scale_width = out_ch // 4
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.path1 = ScalePath(self.scale_width)
        self.path2 = ScalePath(self.scale_width)
        self.downsample = downsample(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        splits = torch.split(out, self.scale_width, dim=1)
        out1 = self.path1(splits, [0, 1, 2, 3])
        out2 = self.path2(splits, [3, 2, 1, 0] if self.order == "bidirectional" else [0, 1, 2, 3])
        return F.relu(out1 + out2 + identity)


@dataclass
class MANetConfig:
    """MA-Net configuration.

    Attributes:
        num_classes: output classes (7 for RAF-DB).
        width: channels of layer1; stages have ``width * (1, 2, 4, 8)`` (64 official).
        layers: blocks per stage.
        stem: ``"imagenet"`` (7x7/2 + max-pool) or ``"small"`` (3x3, no pool) for 48-64 px inputs.
        stem_stride: stride of the ``small`` stem (1 or 2).
        img_size: the input side the preset is meant for (224 official; the local branch needs an even layer2 map).
        beta: weight of the local branch in the prediction and the loss (0.6).
        cbam_reduction: CBAM channel-MLP reduction (16).
        multiscale: MulScaleBlock path order, ``"bidirectional"``, ``"forward"``, or None (the variant's official).
        diversity: Diversified MA-Net outputs (local patch maps, stacked global features).
    """

    num_classes: int = 7
    width: int = 64
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    stem: Literal["imagenet", "small"] = "imagenet"
    stem_stride: int = 1
    img_size: int = 224
    beta: float = 0.6
    cbam_reduction: int = 16
    multiscale: Literal["bidirectional", "forward"] | None = None
    diversity: bool = False

    @classmethod
    def official(cls) -> MANetConfig:
        """``manet()`` with 7-class heads at 224 px, as MA-Net's ``main.py`` on RAF-DB."""
        return cls()

    @classmethod
    def tiny(cls) -> MANetConfig:
        """Width 16, one block per stage, ImageNet stem at 64 px (layer2 8x8, 4x4 patches), 8 classes.

        One block per stage halves the many small ops of the 4 patch branches; with two (as official) the tiny
        model trains at ~130 img/s on 2 cores, with one at ~230 (fp32, batch 64, idle machine).
        """
        return cls(num_classes=8, width=16, layers=(1, 1, 1, 1), img_size=64)

    @property
    def multiscale_order(self) -> str:
        if self.multiscale is not None:
            return self.multiscale
        return "forward" if self.diversity else "bidirectional"


@dataclass
class MANetOutput(ModelOutput):
    """MA-Net outputs.

    Attributes:
        logits: (B, C) = beta * logits_local + (1 - beta) * logits_global.
        embedding: (B, 2 * D) pooled local and global features, concatenated.
        logits_local: (B, C) local attention branch (``fc_1`` of the official code).
        logits_global: (B, C) global multi-scale branch (``fc_2``).
        feat_local: (B, D) pooled stitched local map.
        feat_global: (B, D) pooled global map.
        local_maps: (4, B, D, h, w) the four patch maps (only with ``diversity=True``; ``local_feat_b1`` officially).
        global_feats: (2, B, D) stack of feat_local and feat_global (only with ``diversity=True``; ``global_feat_b12``).
    """

    logits_local: Tensor | None = None
    logits_global: Tensor | None = None
    feat_local: Tensor | None = None
    feat_global: Tensor | None = None
    local_maps: Tensor | None = None
    global_feats: Tensor | None = None


class MANet(FERModel):
    """MA-Net (and Diversified MA-Net with ``diversity=True``). ``forward`` returns :class:`MANetOutput`."""

    config: MANetConfig
    pretrained_tag = "manet"

    def __init__(self, config: MANetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MANetConfig()
        w, r = cfg.width, cfg.cbam_reduction
        c1, c2, c3, c4 = w, 2 * w, 4 * w, 8 * w
        self.stem = ResNetStem(3, w, cfg.stem, cfg.stem_stride)
        self.layer1 = make_layer(BasicBlock, w, c1, cfg.layers[0])
        self.layer2 = make_layer(BasicBlock, c1, c2, cfg.layers[1], stride=2)

        def attention(in_ch: int, out_ch: int, stride: int) -> nn.Module:
            return AttentionBlock(in_ch, out_ch, stride, r)

        def multiscale(in_ch: int, out_ch: int, stride: int) -> nn.Module:
            return MulScaleBlock(in_ch, out_ch, stride, cfg.multiscale_order)

        self.local_layer3 = nn.ModuleList(make_layer(attention, c2, c3, cfg.layers[2], 2) for _ in range(4))
        self.local_layer4 = nn.ModuleList(make_layer(attention, c3, c4, cfg.layers[3], 1) for _ in range(4))
        self.global_layer3 = make_layer(multiscale, c2, c3, cfg.layers[2], 2)
        self.global_layer4 = make_layer(multiscale, c3, c4, cfg.layers[3], 2)
        self.local_stitch = nn.Identity()  # the stitched (B, D, 2h, 2w) local map passes here (a Grad-CAM target)
        self.num_features, self.head_hidden_size = c2, 2 * c4
        r0 = self.stem.reduction  # the stem's total stride
        self.feature_info = [
            feature(w, self.stem.act_reduction, "stem.relu"),
            feature(c1, r0, "layer1"),
            feature(c2, 2 * r0, "layer2"),
            feature(c3, 4 * r0, "global_layer3"),
            feature(c4, 4 * r0, "local_stitch"),
            feature(c4, 8 * r0, "global_layer4"),
        ]
        self.fc_local = nn.Linear(c4, cfg.num_classes)
        self.fc_global = nn.Linear(c4, cfg.num_classes)
        init_resnet_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 2 * width, H/2r, W/2r) ``layer2`` map shared by both branches (r: the stem's reduction,
        4 for ``imagenet``)."""
        return self.layer2(self.layer1(self.stem(x)))

    def _branches(self, x: Tensor) -> MANetOutput:
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            raise ValueError(
                f"MA-Net splits the layer2 map into quadrants; got an odd {h}x{w} map. Use an input size "
                "that is a multiple of 16 (imagenet stem) or 4 * stem_stride (small stem)."
            )
        hh, hw = h // 2, w // 2
        patches = (x[:, :, :hh, :hw], x[:, :, :hh, hw:], x[:, :, hh:, :hw], x[:, :, hh:, hw:])
        outs = [l4(l3(p)) for p, l3, l4 in zip(patches, self.local_layer3, self.local_layer4)]
        local = self.local_stitch(torch.cat([torch.cat(outs[:2], dim=3), torch.cat(outs[2:], dim=3)], dim=2))
        feat_local = local.mean(dim=(2, 3))
        feat_global = self.global_layer4(self.global_layer3(x)).mean(dim=(2, 3))
        logits_local, logits_global = self.fc_local(feat_local), self.fc_global(feat_global)
        beta = self.config.beta
        out = MANetOutput(
            logits=beta * logits_local + (1 - beta) * logits_global,
            embedding=torch.cat([feat_local, feat_global], dim=1),
            logits_local=logits_local,
            logits_global=logits_global,
            feat_local=feat_local,
            feat_global=feat_global,
        )
        if self.config.diversity:
            out.local_maps = torch.stack(outs)
            out.global_feats = torch.stack([feat_local, feat_global])
        return out

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """layer2 map (B, 2w, h, w) -> embedding (B, 2 * D) if ``pre_logits`` else mixed logits (B, C)."""
        out = self._branches(features)
        if pre_logits:
            assert out.embedding is not None
            return out.embedding
        return out.logits

    def forward(self, x: Tensor) -> MANetOutput:
        return self._branches(self.forward_features(x))

    def cam_target_layers(self) -> list[nn.Module]:
        """The stitched local map (2h x 2w) and the last global block (h x w)."""
        return [self.local_stitch, self.global_layer4[-1]]

    def reset_classifier(self, num_classes: int) -> None:
        """New ``fc_local`` and ``fc_global`` for ``num_classes`` classes (see :meth:`FERModel.reset_classifier`)."""
        n = check_num_classes(num_classes)
        self.fc_local, self.fc_global = new_linear(self.fc_local, n), new_linear(self.fc_global, n)
        self._set_num_classes(n)

    def convert_state_dict(self, sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str, list[str]]:
        """Official naming (MA-Net ``manet()`` and Diversified ``manet()``; optional DataParallel ``module.``) ->
        fernb naming.

        ``conv1/bn1`` -> ``stem.conv1/bn1``; ``layer3_1_p{k}`` / ``layer4_1_p{k}`` -> ``local_layer3.{k-1}`` /
        ``local_layer4.{k-1}``; ``layer3_2`` / ``layer4_2`` -> ``global_layer3`` / ``global_layer4``;
        ``conv{1,2}_2_{k}`` / ``bn{1,2}_2_{k}`` -> ``path{1,2}.convs.{k-1}`` / ``path{1,2}.bns.{k-1}``;
        ``cbam.ChannelGate.mlp.{1,3}`` -> ``cbam.channel.fc{1,2}``; ``cbam.SpatialGate.spatial.{conv,bn}`` ->
        ``cbam.spatial.{conv,bn}``; ``fc_1`` / ``fc_2`` -> ``fc_local`` / ``fc_global``. Heads of another class
        count (the MS-Celeb-1M pre-training's 12,666 identities) are dropped: load such a checkpoint with
        ``strict=False`` to get fresh heads, as ``main.py`` does.
        """
        out = {_manet_key(k): v for k, v in sd.items()}
        out, dropped = drop_mismatched_heads(out, self.state_dict(), self.pretrained_cfg.is_classifier)
        return out, "official MA-Net (model/manet.py)", dropped


# official naming (MA-Net and Diversified MA-Net; optionally DataParallel-prefixed) -> fernb's, part by part
_RULES: tuple[Rule, ...] = (
    *MODULE_PREFIX,
    (r"^(conv1|bn1)\.", r"stem.\1."),
    *[(rf"^layer([34])_1_p{p}\.", rf"local_layer\1.{p - 1}.") for p in (1, 2, 3, 4)],
    (r"^layer([34])_2\.", r"global_layer\1."),
    *[(rf"\.(conv|bn)([12])_2_{g}\.", rf".path\2.\1s.{g - 1}.") for g in (1, 2, 3, 4)],
    *CBAM_RULES,
    (r"^fc_1\.(weight|bias)$", r"fc_local.\1"),
    (r"^fc_2\.(weight|bias)$", r"fc_global.\1"),
)


def _manet_key(k: str) -> str:
    return rename(k, _RULES)


def _cfg(**kwargs: Any) -> PretrainedCfg:
    return PretrainedCfg(
        **{
            "mean": UNIT_MEAN,
            "std": UNIT_STD,
            "first_conv": ("stem.conv1",),
            "classifier": ("fc_local", "fc_global"),
            "source": "https://github.com/zengqunzhao/MA-Net",
            "paper": "Zhao, Liu, Wang, IEEE TIP 30:6544-6556, 2021",
            **kwargs,
        }
    )


default_cfgs = register_pretrained_cfgs(
    {
        "manet.official": _cfg(
            input_size=(3, 224, 224),
            num_classes=7,
            weight_files=("Pretrained_on_MSCeleb.pth.tar",),
            notes="the MS-Celeb-1M initialisation of main.py (Google Drive; 12,666-identity heads, dropped: load with "
            "strict=False); the Diversified MA-Net released no weights",
        ),
        "manet.tiny": _cfg(
            input_size=(3, 64, 64),
            num_classes=8,
            notes="fernb's CPU-size preset (width 16, one block per stage): no published weights",
        ),
    }
)


@register_model
def manet(preset: str = "tiny", **overrides: object) -> MANet:
    """MA-Net; ``diversity=True`` gives the Diversified MA-Net outputs for the diversity terms."""
    return build_model(MANet, build_config(MANetConfig, preset, overrides), "manet", preset)
