"""SCN: Self-Cure Network, a ResNet-18 with a per-sample importance weight on its logits.

Wang, Peng, Yang, Lu, Qiao, "Suppressing Uncertainties for Large-Scale Facial Expression Recognition", CVPR 2020
(arXiv 2002.10392). Official code: ``kaiwang960112/Self-Cure-Network`` (``src/train.py::Res18Feature``); spec:
``docs/specs/scn.md``.

Pipeline (official sizes, 224 px)::

    ResNet-18 trunk + global average pooling   (B, 512)          x
    importance branch                          (B, 1)            alpha = sigmoid(w_a . x + b_a)
    classifier                                 (B, C)            z = W x + b
    output logits                              (B, C)            alpha * z

The importance weight scales the logits, so a sample with a low alpha has a flatter softmax and a smaller
cross-entropy gradient. The rank regularisation on alpha and the relabelling of training samples are training rules:
:mod:`fernb.losses.scn`.

Differences from the official code (the official behaviour is the default where there is a choice):

* The trunk is fernb's :class:`~fernb.models.resnet.ResNetTrunk` (torchvision's ResNet-18 structure), so ``width``,
  ``stem`` and ``stem_stride`` scale it down for 48-64 px faces as for the ResNet-18 baseline.
* The official ``forward`` builds ``nn.Dropout`` inside the call, active even in eval mode, when ``drop_rate > 0``;
  here dropout is a module that respects ``eval()`` (the official default ``drop_rate=0`` is unaffected).
* Weights: the constructor never opens a file and the official code's download of torchvision's ImageNet ResNet-18 is
  not reproduced. A model built here starts from random init; ``create_model("scn", "official",
  checkpoint=path, strict=False)`` loads a local torchvision ResNet-18 or the MS-Celeb-1M ResNet-18 the paper starts
  from into the trunk (their classifiers are dropped, the importance branch and classifier stay random), and an
  official SCN checkpoint loads whole (:meth:`SCN.convert_state_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor, nn

from ._base import FERModel, ModelOutput, check_num_classes, new_linear, prefixed_features
from ._builder import build_model
from ._convert import DROP, MODULE_PREFIX, Rule, rename, rename_key
from ._pretrained import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg, register_pretrained_cfgs
from ._registry import build_config, register_model
from .resnet import ResNetTrunk, drop_mismatched_heads, init_resnet_weights

__all__ = ["SCN", "SCNConfig", "SCNOutput", "ImportanceWeight"]


@dataclass
class SCNConfig:
    """SCN configuration.

    Attributes:
        num_classes: output classes (7 for RAF-DB).
        width: ResNet-18 width (64 official); the embedding has ``8 * width`` channels.
        stem: ResNet stem, ``"imagenet"`` or ``"small"`` (see :class:`fernb.models.resnet.ResNetConfig`).
        stem_stride: stride of the ``small`` stem.
        img_size: the input side the preset is meant for (any size works: the trunk is pooled).
        drop_rate: dropout on the pooled features, before the importance branch and the classifier (0 official).
        layers: blocks per stage ((2, 2, 2, 2) is ResNet-18).
    """

    num_classes: int = 7
    width: int = 64
    stem: Literal["imagenet", "small"] = "imagenet"
    stem_stride: int = 1
    img_size: int = 224
    drop_rate: float = 0.0
    layers: tuple[int, int, int, int] = field(default=(2, 2, 2, 2))

    @classmethod
    def official(cls) -> SCNConfig:
        """``Res18Feature``: torchvision ResNet-18 at 224 px, importance ``Linear(512, 1)``, fc ``512 -> 7``."""
        return cls()

    @classmethod
    def tiny(cls) -> SCNConfig:
        """Width 16, small stem of stride 2 (layer4 at 3x3), 48 px, 8 classes (FER+): the ResNet-18 baseline's
        ``tiny`` trunk with SCN's two heads."""
        return cls(num_classes=8, width=16, stem="small", stem_stride=2, img_size=48)


@dataclass
class SCNOutput(ModelOutput):
    """SCN outputs.

    Attributes:
        logits: (B, C) the importance-weighted logits ``alpha * class_logits`` (the official ``out``; what the
            official code trains with cross-entropy and evaluates).
        embedding: (B, 8 * width) the pooled trunk features both heads read.
        alpha: (B, 1) the importance weight of each sample, in (0, 1).
        class_logits: (B, C) the classifier's logits before the importance weighting.
    """

    alpha: Tensor | None = None
    class_logits: Tensor | None = None


class ImportanceWeight(nn.Module):
    """The self-attention importance branch: one linear unit and a sigmoid per sample.

    Shapes: (B, D) -> (B, 1), values in (0, 1).
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(self.fc(x))


class SCN(FERModel):
    """ResNet-18 with SCN's importance-weighted classifier (``Res18Feature`` of the official code).

    ``forward`` returns :class:`SCNOutput`; ``forward_head`` gives the weighted logits, as ``forward`` does.
    """

    config: SCNConfig
    pretrained_tag = "scn"

    def __init__(self, config: SCNConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or SCNConfig()
        self.backbone = ResNetTrunk(cfg.layers, cfg.width, cfg.stem, stem_stride=cfg.stem_stride)
        self.num_features = self.head_hidden_size = self.backbone.num_features
        self.feature_info = prefixed_features(self.backbone.feature_info, "backbone.")
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(cfg.drop_rate)
        self.importance = ImportanceWeight(self.num_features)
        self.fc = nn.Linear(self.num_features, cfg.num_classes)
        init_resnet_weights(self.backbone)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 8 * width, h, w) ResNet ``layer4`` map."""
        return self.backbone(x)

    def _heads(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``layer4`` map -> pooled features (B, D), alpha (B, 1), class logits (B, C)."""
        pooled = self.global_pool(features).flatten(1)
        x = self.drop(pooled)
        return pooled, self.importance(x), self.fc(x)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, C, h, w) -> pooled (B, C) if ``pre_logits`` else the weighted logits (B, num_classes)."""
        if pre_logits:
            return self.global_pool(features).flatten(1)
        _, alpha, z = self._heads(features)
        return alpha * z

    def forward(self, x: Tensor) -> SCNOutput:
        pooled, alpha, z = self._heads(self.forward_features(x))
        return SCNOutput(logits=alpha * z, embedding=pooled, alpha=alpha, class_logits=z)

    def cam_target_layers(self) -> list[nn.Module]:
        return [self.backbone.layer4[-1]]

    def reset_classifier(self, num_classes: int) -> None:
        """A new ``fc`` for ``num_classes`` classes; the importance branch does not depend on the class count (see
        :meth:`FERModel.reset_classifier`)."""
        n = check_num_classes(num_classes)
        self.fc = new_linear(self.fc, n)
        self._set_num_classes(n)

    def convert_state_dict(self, sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str, list[str]]:
        """Official naming -> fernb naming.

        Accepted: an official SCN state dict (``Res18Feature``: ``features.{0,1,4,5,6,7}.*`` are torchvision's
        conv1, bn1, layer1..4 in an ``nn.Sequential``, ``fc.*``, ``alpha.0.*`` the importance Linear; ``train.py``
        saves it under ``model_state_dict``, which the reader unwraps); a torchvision ResNet-18 (``conv1.*``,
        ``layer1.*``, ``fc.*``, the official code's default start); the MS-Celeb-1M ResNet-18 of the paper
        (``ijba_res18_naive.pth.tar``, DREAM naming: torchvision's trunk keys, a ``feature`` Linear(512, 256) that
        SCN does not build (dropped) and an identity ``fc``). An optional ``module.`` prefix is removed. Classifiers
        of another class count are dropped; then the importance branch and ``fc`` are reported missing, so load such
        a file with ``strict=False``.
        """
        out: dict[str, Tensor] = {}
        dropped: list[str] = []
        official = False
        for k, v in sd.items():
            k = rename(k, MODULE_PREFIX)
            official = official or rename_key(k, _OFFICIAL_RULES) is not None
            new = rename_key(k, _RULES)
            if isinstance(new, str) or new is None:
                out[new or k] = v
            else:
                dropped.append(k)
        if official:
            naming = "official SCN (train.py Res18Feature)"
        elif dropped:
            naming = "MS-Celeb-1M ResNet-18 (DREAM, ijba_res18_naive)"
        else:
            naming = "torchvision ResNet-18"
        out, heads = drop_mismatched_heads(out, self.state_dict(), self.pretrained_cfg.is_classifier)
        return out, naming, dropped + heads


# Res18Feature keeps torchvision's ResNet-18 children in an nn.Sequential, ``features`` (2: ReLU, 3: max-pool, 8:
# average pool have no weights), and its importance branch as ``alpha = Sequential(Linear, Sigmoid)``
_OFFICIAL_RULES: tuple[Rule, ...] = (
    *[
        (rf"^features\.{i}\.", f"backbone.{name}.")
        for i, name in {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}.items()
    ],
    (r"^alpha\.0\.(weight|bias)$", r"importance.fc.\1"),
)
# official SCN, torchvision or DREAM (MS-Celeb-1M) naming -> fernb's; DREAM's 512 -> 256 embedding layer is dropped
_RULES: tuple[Rule, ...] = (
    *_OFFICIAL_RULES,
    (r"^(?=conv1\.|bn1\.|layer)", "backbone."),
    (r"^feature\.", DROP),
)


def _cfg(**kwargs: Any) -> PretrainedCfg:
    return PretrainedCfg(
        **{
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "first_conv": ("backbone.conv1",),
            "classifier": ("fc",),
            "source": "https://github.com/kaiwang960112/Self-Cure-Network",
            "paper": "https://arxiv.org/abs/2002.10392",
            **kwargs,
        }
    )


default_cfgs = register_pretrained_cfgs(
    {
        "scn.official": _cfg(
            input_size=(3, 224, 224),
            num_classes=7,
            weight_files=("ijba_res18_naive.pth.tar", "resnet18-f37072fd.pth"),
            notes="No trained SCN model is published: the README's 'pretrained model of SCN' link holds "
            "ijba_res18_naive.pth.tar, the MS-Celeb-1M ResNet-18 the paper starts from (its feature and identity fc "
            "are dropped); train.py's default start is torchvision's ImageNet ResNet-18 (resnet18-f37072fd.pth, its "
            "fc dropped). Both fill the trunk only: load with strict=False. Without a file the model is random",
        ),
        "scn.tiny": _cfg(
            input_size=(3, 48, 48),
            num_classes=8,
            notes="fernb's CPU-size preset (width 16, small stem): no published weights",
        ),
    }
)


@register_model
def scn(preset: str = "tiny", **overrides: object) -> SCN:
    """SCN (ResNet-18 with an importance weight on its logits; ``official``: 224 px; ``tiny``: width 16, 48 px)."""
    return build_model(SCN, build_config(SCNConfig, preset, overrides), "scn", preset)
