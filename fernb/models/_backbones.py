"""Embedding backbones for ARBEx (``fernb.models.arbex``): one small adapter per family behind one interface.

ARBEx's reliability balancing works on an embedding e (B, D) and "can be integrated with any deep neural network"
(the paper). Every adapter here turns images into that embedding and tells Grad-CAM where to look; the head, the
anchors, the attention and the loss never see which backbone they sit on.

- ``"poster_v2"``: :class:`~fernb.models.poster.PosterV2Backbone` itself (SE-gated CLS embedding, D = ``embed_dim``);
  keys ``backbone.*`` as before, so the official conversions apply; Grad-CAM at ``blocks[-1].norm1``, the tokens laid
  on the three scales' grid.
- ``"resnet18"``: :class:`~fernb.models.resnet.ResNetTrunk` (any ``width``, ``stem``, ``stem_stride``) and global
  average pooling, D = 8 * ``width``; keys ``backbone.trunk.*``; Grad-CAM at ``trunk.layer4[-1]`` (a CNN map).
- ``"timm:<name>"``: ``timm.create_model(name, pretrained=False, num_classes=0, in_chans=3, **backbone_kwargs)``,
  D = the width of its pooled output; keys ``backbone.model.*``; Grad-CAM at ``blocks[-1].norm1`` for token models,
  at the last ``feature_info`` stage for CNNs.

Notes on the timm adapter:

- D is ``head_hidden_size`` when the model has one, else ``num_features``: what ``forward_head(pre_logits=True)``
  returns. The two differ for models with a convolutional head after pooling (MobileNetV3: ``num_features`` 288 is
  the last stage, the pooled embedding is ``head_hidden_size`` 1024 wide).
- ``img_size`` (the ARBEx config's) is passed on to models that take it (ViTs size their position embedding from it);
  models that refuse the argument are built without it. ``backbone_kwargs["img_size"]`` wins over the config's.
- Token models (``num_prefix_tokens``: ViT, DeiT, EVA, ...) give (B, N, C) tokens. Their Grad-CAM target is the
  first norm of the last block: with CLS pooling the last block's patch-token outputs never reach the embedding
  (their gradient is zero and the map is flat), its input still does through the attention. The reshape drops the
  ``num_prefix_tokens`` and lays the rest on the patch grid (``patch_embed.grid_size``, or a square). Channels-last
  models (``output_fmt == "NHWC"``: Swin, ...) are permuted to (B, C, H, W).
- Nothing is ever downloaded: ``pretrained=True`` is refused. ``backbone_checkpoint`` is a local file the builder
  loads after construction (:func:`load_backbone_weights`); without one the backbone starts from random init and a
  warning says so once per model name and process.
- ``timm`` is imported inside :class:`TimmEmbedding` only: importing it costs ~1.5 s on a 2-core CPU
  (``python -X importtime``; torch itself ~1.4 s, the rest of :mod:`fernb.models.arbex` ~25 ms). The registry
  imports it anyway (``adcorre`` needs it), so this only spares ``from fernb.models.arbex import ...``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

from torch import Tensor, nn

from ._base import prefixed_features
from ._convert import DROP, Rule, rename_key
from ._weights import CheckpointMismatchError, KeyReport, read_state_dict, report_keys
from .poster import PosterBackboneConfig, PosterV2Backbone, _warn_once
from .resnet import ResNetTrunk, init_resnet_weights

__all__ = [
    "ARBExBackbone",
    "PosterV2Embedding",
    "ResNet18Embedding",
    "TimmEmbedding",
    "TimmModel",
    "BACKBONE_HELP",
    "parse_backbone",
    "build_backbone",
    "create_backbone",
    "load_backbone_checkpoint",
    "load_backbone_weights",
]

BACKBONE_HELP = "'poster_v2', 'resnet18' or 'timm:<model name>' (e.g. 'timm:resnet10t', 'timm:vit_tiny_patch16_224')"
RESNET18_KWARGS = ("width", "stem", "stem_stride")
# a torchvision / fernb ResNet-18 -> the adapter's keys: the classifier dropped, the rest under "trunk."
_RESNET18_RULES: tuple[Rule, ...] = ((r"^fc\.", DROP), (r"^(?!trunk\.)", "trunk."))
_TIMM_RESERVED = ("pretrained", "num_classes", "in_chans", "checkpoint_path", "pretrained_cfg_overlay")


@runtime_checkable
class ARBExBackbone(Protocol):
    """What ARBEx needs of a backbone. ``forward(x)`` is ``pool(forward_features(x))``.

    Attributes:
        embed_dim: D, the width of the embedding ``forward`` returns.
        num_features: channels (or token width) of ``forward_features``' output.
        feature_info: its feature maps, as :attr:`fernb.models.FERModel.feature_info` (names inside the adapter).
    """

    @property
    def embed_dim(self) -> int: ...

    @property
    def num_features(self) -> int: ...

    @property
    def feature_info(self) -> list[dict[str, Any]]: ...

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> embedding (B, D)."""
        ...

    def forward_features(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> unpooled features: a map (B, C, h, w) or tokens (B, N, C)."""
        ...

    def pool(self, features: Tensor) -> Tensor:
        """Features of :meth:`forward_features` -> embedding (B, D)."""
        ...

    def cam_target_layers(self) -> list[nn.Module]:
        """The layers Grad-CAM reads."""
        ...

    def cam_reshape_transform(self) -> Callable[[Tensor], Tensor] | None:
        """The target activation -> (B, C, h, w); None when it already is a map."""
        ...


def parse_backbone(spec: str) -> tuple[str, str | None]:
    """``"poster_v2"`` -> ``("poster_v2", None)``, ``"resnet18"`` -> ``("resnet18", None)``,
    ``"timm:vit_tiny_patch16_224"`` -> ``("timm", "vit_tiny_patch16_224")``.

    Raises:
        ValueError: any other string.
    """
    if spec in ("poster_v2", "resnet18"):
        return spec, None
    if isinstance(spec, str) and spec.startswith("timm:") and spec[len("timm:") :].strip():
        return "timm", spec[len("timm:") :].strip()
    raise ValueError(f"ARBEx backbone must be {BACKBONE_HELP}; got {spec!r}")


# ---------------------------------------------------------------------------------------------------- adapters


class PosterV2Embedding(PosterV2Backbone):
    """:class:`~fernb.models.poster.PosterV2Backbone` with ``embed_dim``: same modules, keys and numbers."""

    load_report: KeyReport | None = None

    @property
    def embed_dim(self) -> int:
        return int(self.cfg.embed_dim)

    @property
    def num_features(self) -> int:
        return int(self.cfg.embed_dim)


class ResNet18Embedding(nn.Module):
    """fernb's ResNet-18 trunk (torchvision structure, any width and stem) and global average pooling.

    Shapes: (B, 3, H, W) -> ``forward_features`` (B, 8 * width, H / s, W / s) -> ``pool`` (B, 8 * width), with s
    the trunk's total stride (:class:`~fernb.models.resnet.ResNetTrunk`).

    Args:
        width: channels of ``layer1`` (64 in torchvision).
        stem: ``"imagenet"`` or ``"small"`` (3x3 conv of ``stem_stride``, no max-pool; for 48-64 px faces).
        stem_stride: stride of the small stem.
    """

    load_report: KeyReport | None = None

    def __init__(self, width: int = 64, stem: str = "imagenet", stem_stride: int = 1) -> None:
        super().__init__()
        self.trunk = ResNetTrunk((2, 2, 2, 2), width, stem, 3, stem_stride)
        init_resnet_weights(self.trunk)
        self.embed_dim = self.num_features = int(self.trunk.num_features)
        self.feature_info = prefixed_features(self.trunk.feature_info, "trunk.")

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> ``layer4`` map (B, D, h, w)."""
        return self.trunk(x)

    def pool(self, features: Tensor) -> Tensor:
        """(B, D, h, w) -> (B, D) global average."""
        return features.mean((2, 3))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, D)."""
        return self.pool(self.forward_features(x))

    def cam_target_layers(self) -> list[nn.Module]:
        return [self.trunk.layer4[-1]]

    def cam_reshape_transform(self) -> None:
        return None

    def checkpoint_keys(self, sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """A torchvision ResNet-18 or a fernb ``resnet18`` state dict -> ``trunk.*`` keys; the classifier is dropped."""
        out: dict[str, Tensor] = {}
        dropped: list[str] = []
        for k, v in sd.items():
            new = rename_key(k, _RESNET18_RULES)
            if isinstance(new, str) or new is None:
                out[new or k] = v
            else:
                dropped.append(k)
        return out, dropped


class TimmModel(Protocol):
    """What fernb uses of a timm model (``timm.create_model`` is typed as returning a plain ``nn.Module``);
    ``num_prefix_tokens`` exists on token models only."""

    num_features: int
    num_prefix_tokens: int
    feature_info: list[dict[str, Any]]
    pretrained_cfg: dict[str, Any]

    def forward_features(self, x: Tensor) -> Tensor: ...

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor: ...


class TimmEmbedding(nn.Module):
    """Any timm model without its classifier: ``forward_features`` and ``forward_head(pre_logits=True)``.

    Shapes: (B, 3, H, W) -> ``forward_features`` (B, C, h, w), (B, N, C) tokens or (B, h, w, C) -> ``pool`` (B, D).

    Args:
        name: a timm model name (``timm.list_models()``).
        img_size: passed to models that accept it, unless ``kwargs`` has its own.
        **kwargs: further ``timm.create_model`` arguments (``drop_rate``, ``patch_size``, ``depth``, ...).

    Raises:
        ValueError: a name timm does not know, or a reserved argument (``pretrained``, ``num_classes``, ``in_chans``,
            ``checkpoint_path``, ``pretrained_cfg_overlay``: weights come from ``backbone_checkpoint`` only).
    """

    load_report: KeyReport | None = None

    def __init__(self, name: str, img_size: int | None = None, **kwargs: Any) -> None:
        super().__init__()
        import timm  # here, not at module import: ~1.5 s (see the module docstring)

        reserved = sorted(set(kwargs) & set(_TIMM_RESERVED))
        if reserved:
            raise ValueError(
                f"backbone_kwargs {reserved} are set by fernb (pretrained=False, num_classes=0, "
                "in_chans=3; nothing is downloaded): give local weights as backbone_checkpoint"
            )
        if not timm.is_model(name):
            raise ValueError(
                f"ARBEx backbone 'timm:{name}': timm has no model {name!r}. Use a name from "
                "timm.list_models(), e.g. 'resnet10t', 'mobilenetv3_small_050' or 'vit_tiny_patch16_224'."
            )
        base = dict(pretrained=False, num_classes=0, in_chans=3, **kwargs)
        if img_size is not None and "img_size" not in kwargs:
            try:
                model = timm.create_model(name, img_size=img_size, **base)
            except TypeError as exc:  # a model without an img_size argument (CNNs)
                if "img_size" not in str(exc):
                    raise
                model = timm.create_model(name, **base)
        else:
            model = timm.create_model(name, **base)
        self.name = name
        self.model = model
        self.embed_dim = int(getattr(model, "head_hidden_size", None) or cast(TimmModel, model).num_features)
        self.num_features = int(cast(TimmModel, model).num_features)
        self.feature_info = prefixed_features(getattr(model, "feature_info", None) or [], "model.")
        if isinstance(getattr(model, "num_prefix_tokens", None), int):
            self.output_fmt = "NLC"
        else:
            self.output_fmt = str(getattr(model, "output_fmt", "NCHW"))

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> the timm model's ``forward_features``: (B, C, h, w), (B, N, C) or (B, h, w, C)."""
        return cast(TimmModel, self.model).forward_features(x)

    def pool(self, features: Tensor) -> Tensor:
        """Features -> (B, D): the timm model's own pooling (and conv head / norm), without the classifier."""
        return cast(TimmModel, self.model).forward_head(features, pre_logits=True)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, D)."""
        return self.pool(self.forward_features(x))

    def cam_target_layers(self) -> list[nn.Module]:
        """Token models: the last block's first norm; other models: the last ``feature_info`` stage."""
        blocks = getattr(self.model, "blocks", None)
        if self.output_fmt == "NLC" and isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks):
            norm1 = getattr(blocks[-1], "norm1", None)
            if isinstance(norm1, nn.Module):
                return [norm1]
        info = getattr(self.model, "feature_info", None) or []
        try:
            return [self.model.get_submodule(info[-1]["module"])]
        except (TypeError, IndexError, KeyError, AttributeError):
            raise NotImplementedError(
                f"timm model {self.name!r} has no feature_info naming its last stage: pick the "
                "Grad-CAM layer yourself (model.backbone.model.<module>)"
            ) from None

    def cam_reshape_transform(self) -> Callable[[Tensor], Tensor] | None:
        """None for (B, C, h, w) maps; tokens (B, N, C) -> (B, C, gh, gw) without the prefix tokens; channels-last
        (B, h, w, C) -> (B, C, h, w)."""
        if self.output_fmt == "NHWC":
            return _channels_first
        if self.output_fmt != "NLC":
            return None
        prefix = int(cast(TimmModel, self.model).num_prefix_tokens)
        grid = getattr(getattr(self.model, "patch_embed", None), "grid_size", None)

        def reshape(t: Tensor) -> Tensor:
            b, n, c = t.shape
            n -= prefix
            if grid is not None and int(grid[0]) * int(grid[1]) == n:
                gh, gw = int(grid[0]), int(grid[1])
            else:
                gh = gw = math.isqrt(n)
                if gh * gw != n:
                    raise ValueError(f"{n} patch tokens (after {prefix} prefix tokens) do not form a square grid")
            return t[:, prefix:].reshape(b, gh, gw, c).permute(0, 3, 1, 2)

        return reshape

    def checkpoint_keys(self, sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """A timm state dict (optionally ``model.``-prefixed) -> ``model.*`` keys; classifier keys are dropped."""
        if sd and all(k.startswith("model.") for k in sd):
            sd = {k[len("model.") :]: v for k, v in sd.items()}
        own = self.model.state_dict()
        pretrained_cfg = getattr(self.model, "pretrained_cfg", None)
        heads = pretrained_cfg.get("classifier") if pretrained_cfg else None
        heads = (heads,) if isinstance(heads, str) else tuple(heads or ())
        out: dict[str, Tensor] = {}
        dropped: list[str] = []
        for k, v in sd.items():
            if k not in own and any(k == h or k.startswith(f"{h}.") for h in heads):
                dropped.append(k)
            else:
                out[f"model.{k}"] = v
        return out, dropped


def _channels_first(t: Tensor) -> Tensor:
    """(B, h, w, C) -> (B, C, h, w)."""
    return t.permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------------- builder


def load_backbone_checkpoint(backbone: ResNet18Embedding | TimmEmbedding, path: str | Path) -> KeyReport:
    """Load a local weight file into a backbone adapter, strictly, and return the key report.

    The file is read safely (safetensors, or torch with ``weights_only=True``; ``module.`` prefixes and
    ``{"state_dict": ...}`` wrappers removed); the adapter's ``checkpoint_keys`` maps the names and drops classifier
    heads (reported as ``dropped``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointMismatchError: a file that cannot be read safely, or any missing, unexpected or mis-shaped key.
    """
    sd = read_state_dict(Path(path).expanduser())
    mapped, dropped = backbone.checkpoint_keys(sd)
    rep = report_keys(backbone, mapped, str(path))
    rep.dropped = dropped
    if not rep.ok:
        what = f"timm model {backbone.name!r}" if isinstance(backbone, TimmEmbedding) else type(backbone).__name__
        raise CheckpointMismatchError(
            f"backbone_checkpoint {path} does not fit the ARBEx backbone ({what}):\n{rep}\n"
            "  what to do: give the state dict of the same model built with the same backbone_kwargs "
            "(e.g. torch.save(timm.create_model(name, ...).state_dict(), path), or safetensors)."
        )
    backbone.load_state_dict({k: mapped[k] for k in rep.loaded}, strict=True)
    return rep


def build_backbone(
    cfg: PosterBackboneConfig, spec: str, kwargs: Mapping[str, Any] | None = None
) -> PosterV2Embedding | ResNet18Embedding | TimmEmbedding:
    """The adapter named by ``spec``, built without reading any file (what ARBEx's constructor calls; the builder
    then loads weights with :func:`load_backbone_weights`).

    Args:
        cfg: the ARBEx config: POSTER_V2 sizes for ``"poster_v2"``; ``img_size`` for timm models that take it.
        spec: ``"poster_v2"``, ``"resnet18"`` or ``"timm:<name>"``.
        kwargs: ``backbone_kwargs`` (``resnet18``: ``width``, ``stem``, ``stem_stride``; timm: any
            ``timm.create_model`` argument but the reserved ones).
    """
    family, name = parse_backbone(spec)
    kwargs = dict(kwargs or {})
    if family == "poster_v2":
        return PosterV2Embedding(cfg)
    if family == "resnet18":
        unknown = sorted(set(kwargs) - set(RESNET18_KWARGS))
        if unknown:
            raise ValueError(
                f"backbone_kwargs {unknown} do not apply to the resnet18 backbone; it takes {list(RESNET18_KWARGS)}"
            )
        return ResNet18Embedding(**kwargs)
    assert name is not None
    return TimmEmbedding(name, img_size=getattr(cfg, "img_size", None), **kwargs)


def load_backbone_weights(
    backbone: PosterV2Embedding | ResNet18Embedding | TimmEmbedding, checkpoint: str | Path | None
) -> KeyReport | None:
    """Load ``checkpoint`` into a ``resnet18`` or timm adapter (its ``load_report``), or, without one, say once per
    model and process that a timm backbone starts from random init. (POSTER_V2's pretrained parts come from
    ``ir50_weights`` / ``landmark_weights``: :func:`fernb.models.poster.load_pretrained_parts`.)

    Raises:
        ValueError: a checkpoint for the POSTER_V2 adapter.
        FileNotFoundError, CheckpointMismatchError: see :func:`load_backbone_checkpoint`.
    """
    backbone.load_report = None
    if checkpoint is not None:
        if isinstance(backbone, PosterV2Embedding):
            raise ValueError(
                "backbone_checkpoint is for the resnet18 and timm backbones; POSTER_V2 takes its "
                "pretrained parts from ir50_weights / landmark_weights"
            )
        backbone.load_report = load_backbone_checkpoint(backbone, checkpoint)
    elif isinstance(backbone, TimmEmbedding):
        _warn_once(
            f"arbex-timm-random-init:{backbone.name}",
            f"ARBEx backbone 'timm:{backbone.name}' starts from random init: fernb never downloads weights. "
            "Give a local file as backbone_checkpoint (safetensors or a torch state dict of the same timm "
            "model) to start from pretrained weights. Said once per model and process.",
        )
    return backbone.load_report


def create_backbone(
    cfg: PosterBackboneConfig, spec: str, kwargs: Mapping[str, Any] | None = None, checkpoint: str | Path | None = None
) -> PosterV2Embedding | ResNet18Embedding | TimmEmbedding:
    """Build the adapter named by ``spec`` (:func:`build_backbone`), then load ``checkpoint`` into it
    (:func:`load_backbone_weights`; adapters never open files).

    Returns:
        An :class:`ARBExBackbone`; ``load_report`` (a :class:`~fernb.models._weights.KeyReport` or None) says what
        ``checkpoint`` loaded.
    """
    backbone = build_backbone(cfg, spec, kwargs)
    load_backbone_weights(backbone, checkpoint)
    return backbone
