"""What every fernb model shares: the output type and the method set the engine, notebooks and Grad-CAM rely on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

__all__ = ["ModelOutput", "FERModel", "LogitsOnly"]


@dataclass
class ModelOutput:
    """Base output of every model: ``logits`` (B, C) and the ``embedding`` (B, D) that :meth:`FERModel.embed` returns.

    Families subclass it to add their named extras (never a bare tuple).
    """

    logits: Tensor
    embedding: Tensor | None = None

    def extras(self) -> dict[str, Tensor]:
        """Every field but ``logits``, by name (None fields left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "logits" and getattr(self, f.name) is not None}


class FERModel(nn.Module):
    """Interface every fernb model implements.

    Subclasses set ``config`` and implement ``forward_features``, ``forward_head`` and ``forward``; the defaults of
    ``embed``, ``cam_target_layers`` and ``cam_reshape_transform`` may be overridden.
    """

    config: object
    default_behaviour: str | None = None

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


class LogitsOnly(nn.Module):
    """Wraps a fernb model so that ``forward`` returns ``model(x).logits`` (B, C): what pytorch-grad-cam and other
    tools that expect a plain classifier want."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).logits
