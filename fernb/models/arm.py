"""ARM: ResNet-18 with the Amend Representation Module in place of global pooling.

Shi, Zhu, Liang, "Learning to Amend Facial Expression Representation via De-albino and Affinity", arXiv 2103.10189.
Official code: ``sunmusik/Amend-Representation-Module`` (``src/Networks.py::ResNet18_ARM___RAF``); spec:
``shared/specs/baselines.md`` §2.

Pipeline (official sizes, 224 px input)::

    ResNet-18 trunk          (B, 512, 7, 7)
    feature arrangement      PixelShuffle(16) -> (B, 2, 112, 112): each 16x16 tile holds the 256 channels of a cell
    de-albino                one shared Conv2d(1 -> 1, k 32, stride 8, no bias) on each of the 2 maps -> (B, 2, 11, 11)
    BN                       BatchNorm2d(2)
    sharing affinity         z_i = mean_c D_i^c + alpha * g,  g = mean over the batch and both maps  -> (B, 1, 11, 11)
    classifier               Linear(121, C)

Differences from the official code (where there is a choice, the official behaviour is the default):

* ``behaviour="official"`` computes g from the current batch in train *and* eval mode, so a test prediction depends on
  the other images of its batch and on their order (users lose >10 points with batch size 1:
  SimKarras/Amend-Representation-Module#5, #9, #17). ``behaviour="fixed"`` keeps an exponential moving average of g
  during training (like BatchNorm's running statistics) and uses it in eval mode, so predictions are per-image.
  Training is identical in both behaviours and the average is always tracked, so a model trained one way can be
  evaluated the other way. An official checkpoint has no average: :meth:`ARM.calibrate_affinity` computes one from
  training images.
* The official code builds ``nn.Dropout`` inside ``forward`` (active even in eval mode) when ``drop_rate > 0``; here
  dropout is a module that respects ``eval()`` (the official default ``drop_rate=0`` is unaffected).
* The official de-albino loops over the two maps; here it is one convolution over a (B * 2, 1, H, W) view (same
  numbers).
* Sizes are derived from the config: ``arrangement`` (pixel-shuffle factor r), ``de_albino_kernel`` and
  ``de_albino_stride``; the number of arranged maps is ``channels / r**2`` and the classifier input is ``o**2`` with
  ``o = (h * r - kernel) // stride + 1`` for a ``layer4`` map of side h.

The minimal random resampling (MRR) of the paper is a sampler (``fernb.data.samplers.MinimalRandomResampler``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ._base import FERModel, ModelOutput, check_num_classes, new_linear, prefixed_features
from ._builder import build_model
from ._convert import MODULE_PREFIX, Rule, rename, rename_key
from ._pretrained import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg, register_pretrained_cfgs
from ._registry import build_config, register_model
from .resnet import ResNetTrunk, drop_mismatched_heads, init_resnet_weights, strip_module_prefix

__all__ = ["ARM", "ARMConfig", "ARMOutput", "AmendModule"]

Behaviour = Literal["official", "fixed"]


@dataclass
class ARMConfig:
    """ARM configuration.

    Attributes:
        num_classes: output classes (7 for RAF-DB).
        width: ResNet-18 width (64 official); ``layer4`` has ``8 * width`` channels.
        stem: ResNet stem, ``"imagenet"`` or ``"small"`` (see :class:`fernb.models.resnet.ResNetConfig`).
        stem_stride: stride of the ``small`` stem.
        img_size: input side; fixes the classifier input size.
        arrangement: pixel-shuffle factor r of the feature arrangement (16 official; ``8 * width / r**2`` maps).
        de_albino_kernel: side of the single-channel de-albino kernel (32 official).
        de_albino_stride: its stride (8 official).
        drop_rate: dropout before the classifier (0 official).
        behaviour: ``"official"`` (batch-mean affinity also at eval) or ``"fixed"`` (running mean at eval).
        affinity_momentum: EMA momentum of the running affinity map g.
        alpha_init: initial value of the learnable affinity weight alpha.
    """

    num_classes: int = 7
    width: int = 64
    stem: Literal["imagenet", "small"] = "imagenet"
    stem_stride: int = 1
    img_size: int = 224
    arrangement: int = 16
    de_albino_kernel: int = 32
    de_albino_stride: int = 8
    drop_rate: float = 0.0
    behaviour: Behaviour = "official"
    affinity_momentum: float = 0.1
    alpha_init: float = 1.0
    layers: tuple[int, int, int, int] = field(default=(2, 2, 2, 2))

    @classmethod
    def official(cls) -> ARMConfig:
        """``ResNet18_ARM___RAF``: 224 px, PixelShuffle(16), de-albino 32/8, fc 121 -> 7."""
        return cls()

    @classmethod
    def tiny(cls) -> ARMConfig:
        """Width 16 (128 channels = 2 maps of 8x8 tiles), small stem of stride 2, 48 px (layer4 3x3), de-albino
        16/4 (the official kernel = 2r, stride = r/2), fc 9 -> 8 classes."""
        return cls(
            num_classes=8,
            width=16,
            stem="small",
            stem_stride=2,
            img_size=48,
            arrangement=8,
            de_albino_kernel=16,
            de_albino_stride=4,
        )


@dataclass
class ARMOutput(ModelOutput):
    """ARM outputs.

    Attributes:
        logits: (B, C).
        embedding: (B, o*o) flattened amended map z, the classifier input.
        alpha: (1,) the affinity weight.
        arm_map: (B, 1, o, o) amended map z (``arm_output`` of the official forward).
        affinity: (o, o) the shared map g actually used (batch mean, or the running mean in ``fixed`` eval).
    """

    alpha: Tensor | None = None
    arm_map: Tensor | None = None
    affinity: Tensor | None = None


class AmendModule(nn.Module):
    """De-albino kernel, BN over the arranged maps, and sharing affinity.

    Shapes: (B, M, H, W) arranged maps -> (B, 1, o, o), o = (H - kernel) // stride + 1.
    """

    running_affinity: Tensor
    affinity_batches: Tensor

    def __init__(
        self,
        num_maps: int = 2,
        kernel: int = 32,
        stride: int = 8,
        out_side: int = 11,
        momentum: float = 0.1,
        alpha_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.de_albino = nn.Conv2d(1, 1, kernel_size=kernel, stride=stride, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(num_maps)
        self.alpha = nn.Parameter(torch.tensor([float(alpha_init)]))
        self.momentum = momentum
        self.register_buffer("running_affinity", torch.zeros(out_side, out_side))
        self.register_buffer("affinity_batches", torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor, behaviour: str = "official") -> tuple[Tensor, Tensor]:
        """Returns the amended map (B, 1, o, o) and the shared map g (o, o) that was used."""
        b, m, h, w = x.shape
        d = self.de_albino(x.reshape(b * m, 1, h, w))
        d = self.bn(d.reshape(b, m, d.shape[-2], d.shape[-1]))
        unique = d.mean(dim=1, keepdim=True)
        if self.training:
            g = d.mean(dim=(0, 1))
            self._track(g.detach())
        elif behaviour == "official":
            g = d.mean(dim=(0, 1))
        elif behaviour == "fixed":
            if int(self.affinity_batches) == 0:
                raise RuntimeError(
                    "ARM behaviour='fixed' needs the running mean of the shared affinity map, but this model has none "
                    "(an official checkpoint, or a model never trained in fernb). Call "
                    "model.calibrate_affinity(batches of training images) first, or use behaviour='official'."
                )
            g = self.running_affinity.to(d.dtype)
        else:
            raise ValueError(f"ARM behaviour must be 'official' or 'fixed', got {behaviour!r}")
        return unique + self.alpha * g, g

    @torch.no_grad()
    def _track(self, g: Tensor) -> None:
        """EMA of g; the first batch initialises it (no host sync, so no GPU stall per step)."""
        g = g.to(self.running_affinity.dtype)
        ema = torch.lerp(self.running_affinity, g, self.momentum)
        self.running_affinity.copy_(torch.where(self.affinity_batches == 0, g, ema))
        self.affinity_batches += 1


class ARM(FERModel):
    """ResNet-18 + Amend Representation Module (``ResNet18_ARM___RAF`` of the official code).

    ``forward`` returns :class:`ARMOutput`. ``behaviour`` (config field, also settable on the model) selects the
    official batch-dependent eval or the fixed per-image one; see the module docstring.
    """

    config: ARMConfig
    pretrained_tag = "arm"

    default_behaviour = "official"

    def __init__(self, config: ARMConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ARMConfig()
        self.behaviour: str = cfg.behaviour
        self.backbone = ResNetTrunk(cfg.layers, cfg.width, cfg.stem, stem_stride=cfg.stem_stride)
        channels = self.backbone.num_features
        r = cfg.arrangement
        if channels % (r * r):
            raise ValueError(
                f"ARMConfig: layer4 has {channels} channels (8 * width {cfg.width}), not a multiple of "
                f"arrangement**2 = {r * r}; pick arrangement with r**2 dividing {channels} "
                "(width 64 -> 16, width 16 -> 8)"
            )
        self.num_maps = channels // (r * r)
        side = math.ceil(cfg.img_size / self.backbone.reduction) * r
        out_side = (side - cfg.de_albino_kernel) // cfg.de_albino_stride + 1
        if out_side < 1:
            raise ValueError(
                f"ARMConfig: img_size {cfg.img_size} gives an arranged map of {side} px, smaller than "
                f"the de-albino kernel {cfg.de_albino_kernel}; use a larger img_size or smaller kernel"
            )
        self.out_side = out_side
        self.arrangement = nn.PixelShuffle(r)
        self.arm = AmendModule(
            self.num_maps, cfg.de_albino_kernel, cfg.de_albino_stride, out_side, cfg.affinity_momentum, cfg.alpha_init
        )
        self.drop = nn.Dropout(cfg.drop_rate)
        self.num_features = channels
        self.head_hidden_size = out_side * out_side
        self.feature_info = prefixed_features(self.backbone.feature_info, "backbone.")
        self.fc = nn.Linear(self.head_hidden_size, cfg.num_classes)
        init_resnet_weights(self.backbone)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 8 * width, h, w) ResNet ``layer4`` map."""
        return self.backbone(x)

    def _amend(self, features: Tensor) -> tuple[Tensor, Tensor]:
        if self.behaviour not in ("official", "fixed"):
            raise ValueError(f"ARM behaviour must be 'official' or 'fixed', got {self.behaviour!r}")
        return self.arm(self.arrangement(features), self.behaviour)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, C, h, w) -> flattened amended map (B, o*o) if ``pre_logits`` else logits (B, num_classes)."""
        z = self._amend(features)[0].flatten(1)
        return z if pre_logits else self.fc(self.drop(z))

    def forward(self, x: Tensor) -> ARMOutput:
        z, g = self._amend(self.forward_features(x))
        flat = z.flatten(1)
        return ARMOutput(logits=self.fc(self.drop(flat)), embedding=flat, alpha=self.arm.alpha, arm_map=z, affinity=g)

    def cam_target_layers(self) -> list[nn.Module]:
        return [self.backbone.layer4[-1]]

    def reset_classifier(self, num_classes: int) -> None:
        """A new ``fc`` for ``num_classes`` classes (see :meth:`FERModel.reset_classifier`)."""
        n = check_num_classes(num_classes)
        self.fc = new_linear(self.fc, n)
        self._set_num_classes(n)

    @torch.no_grad()
    def calibrate_affinity(self, batches: Iterable[Tensor]) -> Tensor:
        """Set the running affinity map to the mean of g over ``batches`` (image tensors (B, 3, H, W)).

        Needed before ``behaviour="fixed"`` evaluation of a model whose checkpoint has no running map (official
        checkpoints). BN uses its running statistics (eval mode), as at test time. Returns the map (o, o).
        """
        was_training = self.training
        self.eval()
        total: Tensor | None = None
        count = 0
        for x in batches:
            x = x.to(self.fc.weight.device)
            d = self.arm.de_albino(self.arrangement(self.forward_features(x)).flatten(0, 1).unsqueeze(1))
            d = self.arm.bn(d.reshape(x.shape[0], self.num_maps, d.shape[-2], d.shape[-1]))
            s = d.sum(dim=(0, 1))
            total = s if total is None else total + s
            count += d.shape[0] * d.shape[1]
        if not count:
            raise ValueError("calibrate_affinity got no batches")
        assert total is not None
        self.arm.running_affinity.copy_(total / count)
        self.arm.affinity_batches.fill_(max(1, int(self.arm.affinity_batches)))
        self.train(was_training)
        return self.arm.running_affinity.clone()

    def convert_state_dict(self, sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str, list[str]]:
        """Official naming -> fernb naming.

        Official (``ResNet18_ARM___RAF``): ``features.{0,1,4,5,6,7}.*`` (conv1, bn1, layer1..4 of torchvision's
        ResNet-18 in an ``nn.Sequential``), ``arm.alpha``, ``arm.de_albino.weight``, ``arm.bn.*``, ``fc.*``; an
        optional ``module.`` prefix. A torchvision ResNet-18 checkpoint (``conv1.*``, ``layer1.*``, ...; the official
        initialisation is ImageNet's) maps onto the backbone; its 1000-class ``fc`` is dropped (load it with
        ``strict=False``). fernb: ``backbone.{conv1,bn1,layer1..4}.*``, ``arm.*``, ``fc.*``, plus the running
        affinity buffers, which official checkpoints lack: they are filled with zeros and marked uncalibrated (see
        :meth:`calibrate_affinity`).
        """
        sd = strip_module_prefix(sd)
        official = any(rename_key(k, _OFFICIAL_RULES) is not None for k in sd)
        naming = "official ARM (Networks.ResNet18_ARM___RAF)" if official else "torchvision ResNet-18"
        out = {rename(k, _RULES): v for k, v in sd.items()}
        own = self.state_dict()
        for k in ("arm.running_affinity", "arm.affinity_batches"):
            if k not in out:
                out[k] = torch.zeros_like(own[k])
        out, dropped = drop_mismatched_heads(out, own, self.pretrained_cfg.is_classifier)
        return out, naming, dropped


# ResNet18_ARM___RAF keeps torchvision's ResNet-18 children in an nn.Sequential, ``features``
_OFFICIAL_RULES: tuple[Rule, ...] = tuple(
    (rf"^features\.{i}\.", f"backbone.{name}.")
    for i, name in {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}.items()
)
# official (DataParallel-prefixed or not) or torchvision naming -> fernb's
_RULES: tuple[Rule, ...] = (*MODULE_PREFIX, *_OFFICIAL_RULES, (r"^(?=conv1\.|bn1\.|layer)", "backbone."))


def _cfg(**kwargs: Any) -> PretrainedCfg:
    return PretrainedCfg(
        **{
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "first_conv": ("backbone.conv1",),
            "classifier": ("fc",),
            "source": "https://github.com/sunmusik/Amend-Representation-Module",
            "paper": "https://arxiv.org/abs/2103.10189",
            **kwargs,
        }
    )


default_cfgs = register_pretrained_cfgs(
    {
        "arm.official": _cfg(
            input_size=(3, 224, 224),
            num_classes=7,
            weight_files=("epoch59_acc0.9205.pth", "resnet18-f37072fd.pth"),
            notes="epoch59_acc0.9205.pth: the RAF-DB model (README, Google Drive); resnet18-f37072fd.pth: the official "
            "initialisation, torchvision's ImageNet ResNet-18 (its fc is dropped; strict=False). Official "
            "checkpoints have no running affinity map: see ARM.calibrate_affinity",
        ),
        "arm.tiny": _cfg(
            input_size=(3, 48, 48),
            num_classes=8,
            notes="fernb's CPU-size preset (width 16, small stem): no published weights",
        ),
    }
)


@register_model
def arm(preset: str = "tiny", **overrides: object) -> ARM:
    """ARM (ResNet-18 + Amend Representation Module); ``behaviour="official"|"fixed"`` for the eval-time affinity."""
    return build_model(ARM, build_config(ARMConfig, preset, overrides), "arm", preset)
