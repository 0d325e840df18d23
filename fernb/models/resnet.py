"""ResNet-18 cross-entropy baseline, with a width option and a small-input stem.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.

The structure is torchvision's ``resnet18``. fernb keys put the convolutional trunk under ``trunk.`` (``trunk.conv1``,
``trunk.layer1.0.conv1``, ..., ``fc``); :meth:`ResNet.convert_state_dict` maps a torchvision checkpoint (bare keys,
with or without a DataParallel ``module.`` prefix) onto them. Two options go beyond torchvision:

* ``width``: the channels of ``layer1`` (64 in torchvision); the stages have ``width * (1, 2, 4, 8)`` channels.
* ``stem="small"``: a 3x3 stride-1 convolution without max-pooling (CIFAR style) in place of the 7x7 stride-2
  convolution and the 3x3 stride-2 max-pool, for 48-64 px inputs. A 48 px face then reaches ``layer4`` at 6x6
  instead of 2x2.

The blocks here (:class:`BasicBlock`, :func:`make_layer`) are shared by ARM (``arm.py``) and MA-Net (``manet.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from ._base import FERModel, ModelOutput, check_num_classes, feature, new_linear, prefixed_features
from ._builder import build_model
from ._convert import MODULE_PREFIX, Rule, rename
from ._pretrained import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg, register_pretrained_cfgs
from ._registry import build_config, register_model

__all__ = ["ResNet", "ResNetConfig", "BasicBlock", "make_layer"]


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (torchvision's ``conv3x3``)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def downsample(in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    """The 1x1 conv + BN shortcut of a residual block that changes shape (None when it keeps it)."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (torchvision's ``BasicBlock``, same parameter names).

    Shapes: (B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = downsample(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def make_layer(block: Callable[..., nn.Module], in_ch: int, out_ch: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """A stage of ``blocks`` blocks; the first one changes width and stride (torchvision's ``_make_layer``)."""
    layers = [block(in_ch, out_ch, stride)]
    layers += [block(out_ch, out_ch, 1) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def init_resnet_weights(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan_out) convolutions, unit BN scale, zero BN shift."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@dataclass
class ResNetConfig:
    """ResNet-18 baseline configuration.

    Attributes:
        num_classes: output classes.
        layers: blocks per stage ((2, 2, 2, 2) is ResNet-18).
        width: channels of the first stage; stages have ``width * (1, 2, 4, 8)``.
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool, total stride 32) or ``"small"`` (3x3 conv of stride
            ``stem_stride``, no pool, total stride 8 * stem_stride) for 48-64 px inputs.
        stem_stride: stride of the ``small`` stem (1: a 48 px face reaches layer4 at 6x6; 2: at 3x3, 4x cheaper).
        drop_rate: dropout before the classifier.
        in_chans: input channels.
        img_size: the input side the preset is meant for (informational; any size works).
    """

    num_classes: int = 7
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    width: int = 64
    stem: Literal["imagenet", "small"] = "imagenet"
    stem_stride: int = 1
    drop_rate: float = 0.0
    in_chans: int = 3
    img_size: int = 224

    @classmethod
    def official(cls) -> ResNetConfig:
        """torchvision ResNet-18 at 224 px (7 classes)."""
        return cls()

    @classmethod
    def tiny(cls) -> ResNetConfig:
        """Width 16, small stem of stride 2 (layer4 at 3x3), 48 px, 8 classes (FER+): trains on a 2-core CPU."""
        return cls(num_classes=8, width=16, stem="small", stem_stride=2, img_size=48)


class ResNetStem(nn.Module):
    """The stem: ``"imagenet"`` (conv 7x7/2, BN, ReLU, max-pool 3x3/2; stride 4) or ``"small"`` (conv 3x3 with
    stride ``small_stride``, BN, ReLU; no pool). ``reduction``: its total stride; ``act_reduction``: the ReLU's."""

    def __init__(self, in_chans: int, width: int, kind: str, small_stride: int = 1) -> None:
        super().__init__()
        if kind == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.reduction, self.act_reduction = 4, 2
        elif kind == "small":
            self.conv1 = nn.Conv2d(in_chans, width, kernel_size=3, stride=small_stride, padding=1, bias=False)
            self.maxpool = nn.Identity()
            self.reduction = self.act_reduction = small_stride
        else:
            raise ValueError(f"stem must be 'imagenet' or 'small', got {kind!r}")
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class ResNetTrunk(nn.Module):
    """Stem and four stages of a ResNet, without pooling and classifier; keys as torchvision's
    (``conv1``, ``bn1``, ``layer1..4``). Used as the backbone of ARM.

    Shapes: (B, in_chans, H, W) -> (B, 8 * width, H / s, W / s), s = 32 (``imagenet`` stem) or 8 * ``stem_stride``
    (``small``).
    """

    def __init__(
        self,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        width: int = 64,
        stem: str = "imagenet",
        in_chans: int = 3,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        self.stem_kind = stem
        s = ResNetStem(in_chans, width, stem, stem_stride)
        # flat names (conv1, bn1, ...) keep torchvision's state-dict keys
        self.conv1, self.bn1, self.relu, self.maxpool = s.conv1, s.bn1, s.relu, s.maxpool
        chans = [width, width * 2, width * 4, width * 8]
        self.layer1 = make_layer(BasicBlock, width, chans[0], layers[0])
        self.layer2 = make_layer(BasicBlock, chans[0], chans[1], layers[1], stride=2)
        self.layer3 = make_layer(BasicBlock, chans[1], chans[2], layers[2], stride=2)
        self.layer4 = make_layer(BasicBlock, chans[2], chans[3], layers[3], stride=2)
        self.num_features = chans[3]
        self.reduction = 8 * s.reduction
        self.feature_info = [
            feature(width, s.act_reduction, "relu"),
            *[feature(chans[i], s.reduction * 2**i, f"layer{i + 1}") for i in range(4)],
        ]

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def strip_module_prefix(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop a DataParallel / DDP ``module.`` prefix from every key that has it."""
    return {rename(k, MODULE_PREFIX): v for k, v in sd.items()}


# torchvision's ResNet (optionally DataParallel-prefixed) -> fernb's: the trunk under "trunk.", the classifier as is.
TORCHVISION_RULES: tuple[Rule, ...] = (*MODULE_PREFIX, (r"^(?!fc\.|trunk\.)", "trunk."))


def drop_mismatched_heads(
    sd: Mapping[str, Tensor], own: Mapping[str, Tensor], is_head: Callable[[str], bool]
) -> tuple[dict[str, Tensor], list[str]]:
    """Leave out classifier entries (``is_head(key)``) whose shape differs from the model's: a checkpoint trained for
    another number of classes (ImageNet's 1000, MS-Celeb's 12,666 identities, AffectNet's 8 vs RAF-DB's 7). They
    come back as "dropped" keys; the model's own heads are then reported missing, so a strict load still refuses and
    ``strict=False`` loads the rest with fresh heads, as the official fine-tuning scripts do."""
    out, dropped = {}, []
    for k, v in sd.items():
        if is_head(k) and k in own and tuple(own[k].shape) != tuple(v.shape):
            dropped.append(k)
        else:
            out[k] = v
    return out, dropped


class ResNet(FERModel):
    """ResNet-18 (torchvision structure) with a global-average-pooled linear classifier.

    ``forward`` returns a :class:`ModelOutput` with ``logits`` (B, C) and ``embedding`` (B, 8 * width), the pooled
    features the classifier reads.
    """

    config: ResNetConfig
    pretrained_tag = "resnet18"

    def __init__(self, config: ResNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ResNetConfig()
        self.trunk = ResNetTrunk(cfg.layers, cfg.width, cfg.stem, cfg.in_chans, cfg.stem_stride)
        self.num_features = self.head_hidden_size = self.trunk.num_features
        self.feature_info = prefixed_features(self.trunk.feature_info, "trunk.")
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(cfg.drop_rate)
        self.fc = nn.Linear(self.num_features, cfg.num_classes)
        init_resnet_weights(self.trunk)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 8 * width, h, w) ``layer4`` map."""
        return self.trunk(x)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, C, h, w) -> pooled (B, C) if ``pre_logits`` else logits (B, num_classes)."""
        x = self.global_pool(features).flatten(1)
        return x if pre_logits else self.fc(self.drop(x))

    def forward(self, x: Tensor) -> ModelOutput:
        pooled = self.forward_head(self.forward_features(x), pre_logits=True)
        return ModelOutput(logits=self.fc(self.drop(pooled)), embedding=pooled)

    def cam_target_layers(self) -> list[nn.Module]:
        return [self.trunk.layer4[-1]]

    def reset_classifier(self, num_classes: int) -> None:
        """A new ``fc`` for ``num_classes`` classes (see :meth:`FERModel.reset_classifier`)."""
        n = check_num_classes(num_classes)
        self.fc = new_linear(self.fc, n)
        self._set_num_classes(n)

    def convert_state_dict(self, sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str, list[str]]:
        """torchvision naming (``conv1.weight``, ``layer1.0.conv1.weight``, ``fc.weight``; optionally ``module.``-
        prefixed) -> fernb naming (``trunk.conv1.weight``, ``trunk.layer1.0.conv1.weight``, ``fc.weight``). A
        classifier of another class count (ImageNet's 1000) is dropped."""
        out = {rename(k, TORCHVISION_RULES): v for k, v in sd.items()}
        out, dropped = drop_mismatched_heads(out, self.state_dict(), self.pretrained_cfg.is_classifier)
        return out, "torchvision ResNet", dropped


def _cfg(**kwargs: Any) -> PretrainedCfg:
    return PretrainedCfg(
        **{
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "first_conv": ("trunk.conv1",),
            "classifier": ("fc",),
            "paper": "https://arxiv.org/abs/1512.03385",
            **kwargs,
        }
    )


default_cfgs = register_pretrained_cfgs(
    {
        "resnet18.official": _cfg(
            input_size=(3, 224, 224),
            num_classes=7,
            weight_files=("resnet18-f37072fd.pth",),
            source="https://download.pytorch.org/models/resnet18-f37072fd.pth",
            notes="torchvision's ImageNet ResNet-18 (resnet18-5c106cde.pth before torchvision 0.13): the trunk loads, "
            "its 1000-class fc is dropped (strict=False)",
        ),
        "resnet18.tiny": _cfg(
            input_size=(3, 48, 48),
            num_classes=8,
            notes="fernb's CPU-size preset (width 16, small stem): no published weights",
        ),
    }
)


@register_model
def resnet18(preset: str = "tiny", **overrides: object) -> ResNet:
    """ResNet-18 cross-entropy baseline (``official``: torchvision at 224 px; ``tiny``: width 16, 48 px)."""
    return build_model(ResNet, build_config(ResNetConfig, preset, overrides), "resnet18", preset)
