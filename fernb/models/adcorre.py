"""Ad-Corre: a CNN with k L2-normalised embedding heads, trained with the Ad-Corre discriminator losses.

Fard and Mahoor, "Ad-Corre: Adaptive Correlation-Based Loss for Facial Expression Recognition in the Wild",
IEEE Access 10:26756-26768, 2022. Official code (TensorFlow/Keras): ``aliprf/Ad-Corre``, ``cnn_model.py::
_create_Xception_l2``. Spec: ``shared/specs/baselines.md`` §3. The loss is in :mod:`fernb.losses.adcorre`.

Architecture::

    backbone (Keras Xception, ImageNet; here any timm model, default ``legacy_xception``, the Keras Xception)
                                          (B, 2048, 7, 7) at 224 px
    global average pooling                (B, 2048)
    k embedding heads                     k x Dense(256, linear) + L2 normalisation -> embeddings (k, B, 256)
    classifier                            concat (B, k * 256) -> Dropout 0.5 -> Dense(C)

Differences from the official code:

* The backbone is built with timm and ``pretrained=False`` (nothing is downloaded); any timm model name works
  (``backbone="resnet18"``, ...), with ``backbone_kwargs`` passed to ``timm.create_model``.
* ``logits`` are pre-softmax scores; the Keras classifier ends in a softmax and the loss clips its probabilities
  (the loss here applies the same clipping to ``softmax(logits)``).
* ``num_embeddings`` is 10 in the code (``config.LearningConfig``) and 7 (= number of classes) in the paper; the
  ``official`` preset follows the code. Set ``num_embeddings=7`` for the paper's value.
* The official k heads are separate Dense layers; here they are one Linear layer with k * 256 outputs, split in k
  (the same function).
* ``keras_compat`` (on in the ``official`` preset) gives the backbone Keras's numerics: BatchNorm epsilon 1e-3
  (timm: 1e-5) and TensorFlow "same" padding for the stride-2 max pools, which pads only the bottom/right when the
  side is even (at 224 px the pools 28 -> 14 and 14 -> 7; timm pads both sides, shifting those windows by a pixel).

Checkpoints. The official models (``AffectNet_6336.h5``, ``RafDB_8696.h5``, ``Fer2013_7203.h5``; not available
offline) and the Keras ImageNet Xception (``xception_weights_tf_dim_ordering_tf_kernels_notop.h5``, backbone only:
load it with ``strict=False``) are Keras HDF5 files: ``create_model("adcorre", "official", checkpoint="x.h5")``
reads them with h5py (``pip install h5py``) and :meth:`AdCorre.convert_state_dict` maps the Keras names and layouts
(:func:`fernb.models._keras.convert_keras_adcorre`; the heads' Keras names are inferred, see there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import timm
import torch.nn.functional as F
from timm.layers import create_pool2d
from timm.models.xception import Xception
from torch import Tensor, nn

from ._backbones import TimmModel
from ._base import FERModel, ModelOutput, check_num_classes, new_linear, prefixed_features
from ._builder import build_model
from ._keras import convert_keras_adcorre, format_mismatch
from ._pretrained import UNIT_MEAN, UNIT_STD, PretrainedCfg, register_pretrained_cfgs
from ._registry import build_config, register_model
from ._weights import CheckpointMismatchError

__all__ = ["AdCorre", "AdCorreConfig", "AdCorreOutput"]


@dataclass
class AdCorreConfig:
    """Ad-Corre configuration.

    Attributes:
        num_classes: output classes (7).
        backbone: timm model name (``legacy_xception`` = Keras Xception, as the paper).
        backbone_kwargs: extra ``timm.create_model`` arguments (e.g. ``channels`` for a narrow ResNet).
        num_embeddings: k, the number of embedding heads (10 in the code, 7 in the paper).
        embedding_dim: size of each embedding (256).
        drop_rate: dropout before the classifier (0.5).
        img_size: the input side the preset is meant for (224; pixels / 255, no mean/std).
        keras_compat: Keras numerics in the backbone: BatchNorm eps 1e-3 and TensorFlow "same" padding for the
            stride-2 max pools (on in ``official``; use it with Keras weights).
        stem_stride: None keeps the backbone's stem; 1 or 2 gives a timm ResNet's ``conv1`` this stride and drops its
            max-pool, for 48-64 px faces (stride 1: the last stage sees a 48 px face at 6x6 instead of 2x2).
    """

    num_classes: int = 7
    backbone: str = "legacy_xception"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    num_embeddings: int = 10
    embedding_dim: int = 256
    drop_rate: float = 0.5
    img_size: int = 224
    keras_compat: bool = False
    stem_stride: int | None = None

    @classmethod
    def official(cls) -> AdCorreConfig:
        """Xception (timm ``legacy_xception``, with Keras numerics) at 224 px, k = 10 heads of 256, 7 classes, as the
        official code."""
        return cls(keras_compat=True)

    @classmethod
    def tiny(cls) -> AdCorreConfig:
        """timm ResNet-18 with stages of 16-128 channels after timm's 64-channel 7x7 stem, k = 3 heads of 64, 64 px,
        8 classes. (timm sizes a plain stem at 64 whatever ``stem_width`` says; ``stem_type="deep"`` with
        ``stem_width=8`` gives a 16-channel one.)"""
        return cls(
            num_classes=8,
            backbone="resnet18",
            backbone_kwargs={"channels": (16, 32, 64, 128)},
            num_embeddings=3,
            embedding_dim=64,
            img_size=64,
        )


@dataclass
class AdCorreOutput(ModelOutput):
    """Ad-Corre outputs.

    Attributes:
        logits: (B, C) pre-softmax class scores.
        embedding: (B, k * d) the concatenated embeddings (the classifier input).
        embeddings: (k, B, d) the k L2-normalised embeddings (rows of unit norm).
    """

    embeddings: Tensor | None = None


class AdCorre(FERModel):
    """timm backbone + k L2-normalised embedding heads + linear classifier; ``forward`` gives :class:`AdCorreOutput`."""

    config: AdCorreConfig
    pretrained_tag = "adcorre"

    def __init__(self, config: AdCorreConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or AdCorreConfig()
        try:
            self.backbone = timm.create_model(cfg.backbone, pretrained=False, num_classes=0, **cfg.backbone_kwargs)
        except RuntimeError as exc:  # timm's "Unknown model"
            raise ValueError(
                f"AdCorreConfig.backbone={cfg.backbone!r}: {exc}. Use a name from timm.list_models(), "
                "e.g. 'legacy_xception' or 'resnet18'."
            ) from None
        timm_model = cast(TimmModel, self.backbone)
        info = list(timm_model.feature_info)
        if cfg.keras_compat:
            _keras_numerics(self.backbone)
        if cfg.stem_stride is not None:
            _set_stem_stride(self.backbone, cfg.backbone, cfg.stem_stride)
            # conv1's stride 2 becomes stem_stride and the max-pool after act1 goes: the stem's stride 4 does too
            info = [
                dict(d, reduction=d["reduction"] * cfg.stem_stride // (2 if d["module"] == "act1" else 4)) for d in info
            ]
        self.num_features = int(timm_model.num_features)  # channels of forward_features' map (or tokens)
        self.feature_info = prefixed_features(info, "backbone.")
        # the pooled features forward_head(pre_logits=True) gives (after a conv head for e.g. MobileNetV3)
        pooled = int(getattr(self.backbone, "head_hidden_size", None) or timm_model.num_features)
        k, d = cfg.num_embeddings, cfg.embedding_dim
        self.head_hidden_size = k * d
        self.heads = nn.Linear(pooled, k * d)
        self.drop = nn.Dropout(cfg.drop_rate)
        self.fc = nn.Linear(k * d, cfg.num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> the backbone's last feature map (B, F, h, w) (tokens (B, N, F) for a ViT)."""
        return cast(TimmModel, self.backbone).forward_features(x)

    def _embeddings(self, features: Tensor) -> Tensor:
        pooled = cast(TimmModel, self.backbone).forward_head(features, pre_logits=True)
        e = self.heads(pooled).unflatten(1, (self.config.num_embeddings, self.config.embedding_dim))
        return F.normalize(e, dim=-1, eps=1e-12).transpose(0, 1)  # (k, B, d)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map -> concatenated embeddings (B, k * d) if ``pre_logits`` else logits (B, C)."""
        flat = self._embeddings(features).transpose(0, 1).flatten(1)
        return flat if pre_logits else self.fc(self.drop(flat))

    def forward(self, x: Tensor) -> AdCorreOutput:
        emb = self._embeddings(self.forward_features(x))
        flat = emb.transpose(0, 1).flatten(1)
        return AdCorreOutput(logits=self.fc(self.drop(flat)), embedding=flat, embeddings=emb)

    def convert_state_dict(self, sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str | None, list[str]]:
        """Keras weights (keys ``"<layer>/<weight>:0"``, as :func:`fernb.models._keras.read_keras_h5` reads an
        ``.h5``) -> fernb names and layouts; other state dicts pass through unchanged.

        Raises:
            CheckpointMismatchError: the backbone is not the Keras Xception (timm ``legacy_xception``), a Keras weight
                has another shape than the model's (naming the layer, both shapes and the fernb key), or the head
                counts differ.
        """
        if not any(k.endswith(":0") for k in sd):
            return dict(sd), None, []
        if not isinstance(self.backbone, Xception):
            raise CheckpointMismatchError(
                f"Keras Ad-Corre weights hold a Keras Xception backbone; this model's backbone is "
                f"{self.config.backbone!r}: build it with backbone='legacy_xception' (the 'official' preset)"
            )
        out, dropped, mismatch = convert_keras_adcorre(
            sd, self.state_dict(), self.config.num_embeddings, self.config.embedding_dim
        )
        if mismatch:
            raise CheckpointMismatchError(format_mismatch("Keras weights", mismatch))
        return out, "Keras Ad-Corre / Xception (.h5)", dropped

    def cam_target_layers(self) -> list[nn.Module]:
        """The backbone's last feature stage (timm ``feature_info``)."""
        return [self.get_submodule(self.feature_info[-1]["module"])]

    def reset_classifier(self, num_classes: int) -> None:
        """A new ``fc`` for ``num_classes`` classes; the embedding heads stay. See :meth:`FERModel.reset_classifier`."""
        n = check_num_classes(num_classes)
        self.fc = new_linear(self.fc, n)
        self._set_num_classes(n)

    def resolve_pretrained_cfg(self, cfg: PretrainedCfg) -> PretrainedCfg:
        """The registered cfg for this model, with the first convolution of its timm backbone."""
        first = cast(TimmModel, self.backbone).pretrained_cfg.get("first_conv") or ()
        first = (first,) if isinstance(first, str) else tuple(first)
        modules = dict(self.backbone.named_modules())
        first = tuple(_stem_conv_name(modules, n) for n in first)
        return super().resolve_pretrained_cfg(cfg).replace(first_conv=tuple(f"backbone.{n}" for n in first))

    def cam_reshape_transform(self) -> Callable[[Tensor], Tensor] | None:
        """None for CNN backbones; for token backbones, drop the prefix tokens and reshape to (B, F, h, w)."""
        grid = getattr(getattr(self.backbone, "patch_embed", None), "grid_size", None)
        if grid is None:
            return None
        prefix = int(getattr(self.backbone, "num_prefix_tokens", 0))

        def reshape(t: Tensor) -> Tensor:
            return t[:, prefix:].reshape(t.shape[0], grid[0], grid[1], t.shape[-1]).permute(0, 3, 1, 2)

        return reshape


def _stem_conv_name(modules: Mapping[str, nn.Module], name: str) -> str:
    """``name``, or ``name.0`` where it is a Sequential: timm names a ResNet's ``conv1`` whatever its stem, and a deep
    stem's ``conv1`` is a Sequential that starts with the convolution."""
    return f"{name}.0" if isinstance(modules.get(name), nn.Sequential) else name


def _set_stem_stride(backbone: nn.Module, name: str, stride: int) -> None:
    """In place: a timm ResNet's ``conv1`` (the first convolution of a ``deep`` stem) gets ``stride`` and its
    ``maxpool`` becomes the identity."""
    modules = dict(backbone.named_modules())
    conv = modules.get(_stem_conv_name(modules, "conv1"))
    if not isinstance(conv, nn.Conv2d) or not isinstance(getattr(backbone, "maxpool", None), nn.MaxPool2d):
        raise ValueError(
            f"AdCorreConfig.stem_stride needs a timm ResNet backbone (a 'conv1' convolution and a "
            f"'maxpool'); {name!r} has neither. Set stem_stride=None or use e.g. backbone='resnet18'."
        )
    if stride not in (1, 2):
        raise ValueError(f"AdCorreConfig.stem_stride must be None, 1 or 2, got {stride!r}")
    conv.stride = (stride, stride)
    backbone.maxpool = nn.Identity()


def _keras_numerics(backbone: nn.Module) -> None:
    """In place: BatchNorm eps 1e-3 (Keras's default) and TensorFlow "same" padding for stride-2 max pools."""
    for module in list(backbone.modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = 1e-3
        for child_name, child in list(module.named_children()):
            k = child.kernel_size if isinstance(child, nn.MaxPool2d) else None
            if isinstance(k, int) and child.stride == 2 and child.padding == (k - 1) // 2 and not child.ceil_mode:
                setattr(module, child_name, create_pool2d("max", child.kernel_size, child.stride, padding="same"))


def _cfg(**kwargs: Any) -> PretrainedCfg:
    return PretrainedCfg(
        **{
            "mean": UNIT_MEAN,
            "std": UNIT_STD,
            "first_conv": ("backbone.conv1",),
            "classifier": ("fc",),
            "source": "https://github.com/aliprf/Ad-Corre",
            "paper": "Fard, Mahoor, IEEE Access 10:26756-26768, 2022",
            **kwargs,
        }
    )


default_cfgs = register_pretrained_cfgs(
    {
        "adcorre.official": _cfg(
            input_size=(3, 224, 224),
            num_classes=7,
            weight_files=(
                "AffectNet_6336.h5",
                "RafDB_8696.h5",
                "Fer2013_7203.h5",
                "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
            ),
            notes="Keras HDF5 files: the three trained models (AffectNet-7, RAF-DB, FER-2013) and the Keras ImageNet "
            "Xception they start from (backbone only: strict=False); read with h5py",
        ),
        "adcorre.tiny": _cfg(
            input_size=(3, 64, 64),
            num_classes=8,
            notes="fernb's CPU-size preset (a width-16 timm ResNet-18): no published weights",
        ),
    }
)


@register_model
def adcorre(preset: str = "tiny", **overrides: object) -> AdCorre:
    """Ad-Corre (timm backbone + k embedding heads); train with ``create_loss("adcorre")``."""
    return build_model(AdCorre, build_config(AdCorreConfig, preset, overrides), "adcorre", preset)
