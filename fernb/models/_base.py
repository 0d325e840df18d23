"""What every fernb model shares: the output type and the method set the engine, notebooks and Grad-CAM rely on."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ._pretrained import PRETRAINED_CFGS, PretrainedCfg

__all__ = ["ModelOutput", "FERModel", "LogitsOnly", "feature", "prefixed_features", "new_linear", "check_num_classes"]


@dataclass
class ModelOutput:
    """Base output of every model: ``logits`` (B, C) and the ``embedding`` (B, D) that :meth:`FERModel.embed` returns.

    Families subclass it to add their named extras (never a bare tuple).
    """

    logits: Tensor
    embedding: Tensor | None = None

    def extras(self) -> dict[str, Tensor]:
        """Every field but ``logits``, by name (None fields left out)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "logits" and getattr(self, f.name) is not None
        }


class FERModel(nn.Module):
    """Interface every fernb model implements (timm's model contract, with FER outputs).

    Subclasses set ``config``, ``num_features``, ``head_hidden_size`` and ``feature_info`` and implement
    ``forward_features``, ``forward_head``, ``forward`` and ``reset_classifier``; the defaults of ``embed``,
    ``cam_target_layers``, ``cam_reshape_transform`` and ``resolve_pretrained_cfg`` may be overridden.

    Attributes:
        config: the model's config dataclass.
        num_features: channels (or token width) of what :meth:`forward_features` returns.
        head_hidden_size: width of ``forward_head(features, pre_logits=True)``: the embedding.
        feature_info: the feature maps (or token sequences) the model computes, from the stem on: dicts with
            ``num_chs`` (channels), ``reduction`` (input side / map side, the total stride) and ``module`` (the
            qualified name of the module that outputs it), as timm's.
        pretrained_tag: the registry name whose pretrained cfgs describe the class (``"poster_v2"``).
    """

    config: object
    default_behaviour: str | None = None
    pretrained_tag: ClassVar[str | None] = None
    num_features: int
    head_hidden_size: int
    feature_info: list[dict[str, Any]]

    def forward_features(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> features
        raise NotImplementedError

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> ModelOutput:
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """The (B, D) vectors the embedding explorer projects (eval mode is the caller's choice)."""
        embedding = self.forward(x).embedding
        assert embedding is not None, f"{type(self).__name__}.forward returned no embedding"
        return embedding

    def cam_target_layers(self) -> list[nn.Module]:
        """Layers whose activations and gradients Grad-CAM uses."""
        raise NotImplementedError

    def cam_reshape_transform(self) -> Callable[[Tensor], Tensor] | None:
        """Turns the target layer's activation into (B, C, H, W); None when it already is a map."""
        return None

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # --- classes and pretrained cfg -------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Classes of the head (the config's ``num_classes``)."""
        return int(_config_value(self.config, "num_classes"))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace every module and parameter whose shape depends on the class count (``pretrained_cfg.classifier``)
        by a freshly initialised one for ``num_classes`` classes, on the same device and dtype, in the same mode and
        with the same ``requires_grad``; the config and ``pretrained_cfg`` follow. An optimizer built before holds the
        old parameters: build it again.

        Raises:
            ValueError: ``num_classes`` < 1 (for features without a head use :meth:`embed` or
                ``forward_head(..., pre_logits=True)``).
        """
        raise NotImplementedError

    def _set_num_classes(self, num_classes: int) -> None:
        """The config and ``pretrained_cfg`` after :meth:`reset_classifier`."""
        cfg = self.pretrained_cfg
        if dataclasses.is_dataclass(self.config) and not isinstance(self.config, type):
            self.config = dataclasses.replace(self.config, num_classes=num_classes)
        elif isinstance(self.config, dict):
            self.config["num_classes"] = num_classes
        self.pretrained_cfg = cfg.replace(num_classes=num_classes)

    @property
    def pretrained_cfg(self) -> PretrainedCfg:
        """Input and weight facts of this model (:class:`~fernb.models._pretrained.PretrainedCfg`): the builder's
        (its preset's cfg resolved for the model), else the ``official`` cfg of ``pretrained_tag`` resolved."""
        cfg = self.__dict__.get("_pretrained_cfg")
        if cfg is None:
            key = f"{self.pretrained_tag}.official"
            cfg = self.resolve_pretrained_cfg(PRETRAINED_CFGS.get(key) if key in PRETRAINED_CFGS else PretrainedCfg())
        return cfg

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: PretrainedCfg) -> None:
        self.__dict__["_pretrained_cfg"] = cfg

    def resolve_pretrained_cfg(self, cfg: PretrainedCfg) -> PretrainedCfg:
        """A registered cfg made this model's: its class count and, where the config has them, ``img_size`` and
        ``in_chans``. Families whose first convolution or classifier move with the config extend it."""
        size = _config_value(self.config, "img_size", None)
        chans = _config_value(self.config, "in_chans", None) or cfg.input_size[0]
        input_size = (int(chans), int(size), int(size)) if size else (int(chans), *cfg.input_size[1:])
        return cfg.replace(num_classes=self.num_classes, input_size=input_size)


def _config_value(config: object, name: str, *default: Any) -> Any:
    """``config.<name>`` of a dataclass config, or ``config[name]`` of a dict one."""
    if isinstance(config, Mapping):
        return config[name] if not default else config.get(name, default[0])
    return getattr(config, name, *default)


def feature(num_chs: int, reduction: float, module: str) -> dict[str, Any]:
    """One ``feature_info`` entry (reduction kept an int when it is one)."""
    red: float = int(reduction) if float(reduction).is_integer() else float(reduction)
    return {"num_chs": int(num_chs), "reduction": red, "module": module}


def prefixed_features(info: Sequence[Mapping[str, Any]], prefix: str, scale: float = 1.0) -> list[dict[str, Any]]:
    """The ``feature_info`` of a sub-module, its names under ``prefix`` and its reductions times ``scale`` (an input
    resized before the sub-module sees it)."""
    return [feature(d["num_chs"], d["reduction"] * scale, prefix + d["module"]) for d in info]


def new_linear(old: nn.Linear, out_features: int | None = None, in_features: int | None = None) -> nn.Linear:
    """A freshly initialised ``nn.Linear`` in place of ``old``: new sizes where given, the same bias choice, device,
    dtype, mode and ``requires_grad``."""
    new = nn.Linear(
        old.in_features if in_features is None else in_features,
        old.out_features if out_features is None else out_features,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    return new.train(old.training).requires_grad_(old.weight.requires_grad)


def check_num_classes(num_classes: int) -> int:
    """``num_classes`` as an int >= 1.

    Raises:
        ValueError: anything else.
    """
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(
            f"num_classes must be an integer >= 1, got {num_classes!r} (a FER model's outputs are class "
            "distributions; for features without a head use embed() or forward_head(..., "
            "pre_logits=True))"
        )
    return int(num_classes)


class LogitsOnly(nn.Module):
    """Wraps a fernb model so that ``forward`` returns ``model(x).logits`` (B, C): what pytorch-grad-cam and other
    tools that expect a plain classifier want."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).logits
