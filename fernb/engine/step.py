"""One optimiser update, in the manner of timm's ``NativeScaler``: backward, unscale, clip, step and the loss
scale's update behind one call; SAM's two passes too."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .optim import SAM

__all__ = ["LossScaler"]


class LossScaler:
    """Owns the run's ``torch.amp.GradScaler`` (active only for fp16; a pass-through otherwise).

    Args:
        device_type: ``"cpu"`` or ``"cuda"``.
        init_scale: the first loss scale (fp16).
        enabled: scale the loss (fp16 runs).
    """

    def __init__(self, device_type: str, init_scale: float, enabled: bool) -> None:
        self.scaler = torch.amp.GradScaler(device_type, init_scale=init_scale, enabled=enabled)

    def __call__(
        self,
        loss: Tensor,
        optimizer: torch.optim.Optimizer | SAM,
        *,
        parameters: Callable[[], Iterable[Tensor]],
        clip_grad: float | None = None,
        second_pass: Callable[[], Tensor] | None = None,
    ) -> None:
        """Back-propagate ``loss`` and update the weights.

        With :class:`~fernb.engine.optim.SAM`, ``second_pass()`` recomputes the loss at the perturbed weights (after
        the first step); its gradient makes the update. ``parameters()`` gives the tensors to clip.
        """
        if isinstance(optimizer, SAM):
            if second_pass is None:
                raise ValueError("SAM needs second_pass: the loss recomputed at the perturbed weights")
            loss.backward()
            optimizer.first_step()
            optimizer.zero_grad(set_to_none=True)
            second_pass().backward()
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(list(parameters()), clip_grad)
            optimizer.second_step()
            return
        self.scaler.scale(loss).backward()
        if clip_grad:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(list(parameters()), clip_grad)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scaler.load_state_dict(state)
