"""Optimisers (Adam, AdamW, SGD, and SAM around any of them) and the learning-rate schedules.

SAM (Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization", ICLR 2021) is how
POSTER_V2 trains: each step first moves the weights to the approximate worst point w + e(w) of a ball of radius rho,
e(w) = rho * g / ||g|| (adaptive SAM: rho * |w|^2 g / |||w| g||), takes the gradient there, returns to w and lets the
wrapped optimiser step with that gradient.

The schedules are written as functions of the epoch position so that resuming needs only a few numbers (the plateau
schedule keeps its best value and bad-epoch count).

``optim.impl`` picks how torch runs the update (:func:`resolve_impl`): its fused kernels (one call over every
tensor), its multi-tensor ``foreach`` ops or a loop over the tensors. ``auto`` takes ``fused``, which torch's
documentation ranks fastest (fused > foreach > loop) and which is deterministic. The default is ``loop``, the update
every recorded figure was trained with (:class:`fernb.engine.config.OptimConfig` says why). SAM's own perturbation
uses the multi-tensor ops too (the same values as its per-tensor loop on CPU).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from .config import ConfigError, OptimConfig, ScheduleConfig

__all__ = [
    "SAM",
    "build_param_groups",
    "build_optimizer",
    "no_decay_names",
    "resolve_impl",
    "optimizer_impl",
    "LRSchedule",
]

IMPLS = ("auto", "fused", "foreach", "loop")


class SAM:
    """Sharpness-Aware Minimisation around a base optimiser.

    Usage per step: ``loss.backward(); sam.first_step(); zero_grad(); loss2.backward(); sam.second_step()``.
    ``param_groups`` and ``state_dict`` are the base optimiser's, so schedules and checkpoints treat SAM like any
    optimiser.

    Args:
        base: the wrapped optimiser.
        rho: radius of the neighbourhood.
        adaptive: scale the perturbation element-wise by |w| (ASAM).
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False) -> None:
        if rho < 0:
            raise ValueError(f"SAM rho must be >= 0, got {rho}")
        self.base, self.rho, self.adaptive = base, rho, adaptive
        self._e: dict[Tensor, Tensor] = {}

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.base.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def _params(self) -> tuple[list[Tensor], list[Tensor]]:
        """The parameters that have a gradient, and their gradients."""
        params = [p for g in self.base.param_groups for p in g["params"] if p.grad is not None]
        return params, [p.grad for p in params]  # type: ignore[misc]

    @torch.no_grad()
    def _grad_norm(self, params: list[Tensor], grads: list[Tensor]) -> Tensor:
        if not params:
            return torch.tensor(0.0)
        scaled = torch._foreach_mul(torch._foreach_abs(params), grads) if self.adaptive else grads
        norms = torch._foreach_norm(scaled, 2)
        return torch.stack([n.to(norms[0].device) for n in norms]).norm(2)

    @torch.no_grad()
    def first_step(self) -> None:
        """Move to w + e(w) using the current gradients (one multi-tensor call per operation, not one per tensor)."""
        params, grads = self._params()
        self._e = {}
        if not params:
            return
        scale = self.rho / (self._grad_norm(params, grads) + 1e-12)
        for device, (ps, gs) in _by_device(params, grads).items():
            s = scale.to(device)
            # e = (|w|^2 if adaptive) * g * scale, in that order (the per-tensor code's rounding)
            e = torch._foreach_mul(torch._foreach_mul(torch._foreach_pow(ps, 2), gs) if self.adaptive else gs, s)
            torch._foreach_add_(ps, e)
            self._e.update(zip(ps, e))

    @torch.no_grad()
    def second_step(self) -> None:
        """Return to w and step the base optimiser with the gradients taken at w + e(w)."""
        if self._e:
            torch._foreach_sub_(list(self._e), list(self._e.values()))
        self._e = {}
        self.base.step()

    def step(self) -> None:  # a single-pass fallback (used when the second pass is skipped)
        self.base.step()

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state)


def _by_device(params: list[Tensor], grads: list[Tensor]) -> dict[torch.device, tuple[list[Tensor], list[Tensor]]]:
    """Parameters and their gradients grouped by device (the multi-tensor ops take one device per call)."""
    out: dict[torch.device, tuple[list[Tensor], list[Tensor]]] = {}
    for p, g in zip(params, grads):
        ps, gs = out.setdefault(p.device, ([], []))
        ps.append(p)
        gs.append(g)
    return out


def build_param_groups(model: nn.Module, cfg: OptimConfig, lr: float) -> list[dict[str, Any]]:
    """Trainable parameters grouped for the optimiser; every group carries its ``base_lr``.

    A model that defines ``param_groups(lr) -> list[dict]`` (each with ``params`` and ``lr``) decides itself (ESR's
    branch learning rates, ARBEx's per-module rates). Otherwise ``cfg.lr_mult`` maps name prefixes to multipliers.
    """
    own = getattr(model, "param_groups", None)
    if callable(own):
        groups = [dict(g) for g in own(lr)]
        for g in groups:
            g["params"] = [p for p in g["params"] if p.requires_grad]
            g.setdefault("lr", lr)
        groups = [g for g in groups if g["params"]]
    else:
        buckets: dict[str, list[Tensor]] = {}
        order = list(cfg.lr_mult)
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            key = next((pre for pre in order if name.startswith(pre)), "")
            buckets.setdefault(key, []).append(p)
        groups = [
            {"params": ps, "lr": lr * (cfg.lr_mult[k] if k else 1.0), "name": k or "default"}
            for k, ps in buckets.items()
        ]
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameter (all requires_grad=False)")
    if not cfg.decay_norm_bias and cfg.weight_decay:
        groups = _split_decay(model, groups)
    for g in groups:
        g["base_lr"] = g["lr"]
    return groups


def no_decay_names(model: nn.Module) -> set[str]:
    """Parameters exempt from weight decay: 1-d ones (norm scales and shifts, biases) and what the model's
    ``no_weight_decay()`` names (exact names or prefixes, timm's convention)."""
    own = getattr(model, "no_weight_decay", None)
    listed = set(own()) if callable(own) else set()
    return {
        n
        for n, p in model.named_parameters()
        if p.ndim <= 1 or n in listed or any(n.startswith(f"{x}.") for x in listed)
    }


def _split_decay(model: nn.Module, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each group split into its decayed part and a ``weight_decay=0`` part (same learning rate)."""
    exempt = {id(p) for n, p in model.named_parameters() if n in no_decay_names(model)}
    out: list[dict[str, Any]] = []
    for g in groups:
        decay = [p for p in g["params"] if id(p) not in exempt]
        keep = [p for p in g["params"] if id(p) in exempt]
        if decay:
            out.append({**g, "params": decay})
        if keep:
            out.append({**g, "params": keep, "weight_decay": 0.0, "name": f"{g.get('name', 'default')}/no_decay"})
    return out


def _betas(cfg: OptimConfig) -> tuple[float, float]:
    """``cfg.betas`` as a tuple (a config built in code may hold a list)."""
    return cast("tuple[float, float]", tuple(cfg.betas))


def _fused_devices() -> list[str]:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return list(_get_fused_kernels_supported_devices())
    except ImportError:  # an older torch: its fused kernels were CUDA-only
        return ["cuda"]


def resolve_impl(impl: str, params: Iterable[Tensor]) -> str:
    """The update implementation ``optim.impl`` comes to for ``params``: ``"fused"``, ``"foreach"`` or ``"loop"``.

    ``auto`` is ``fused`` where torch has fused kernels for every parameter's device and dtype (CPU and CUDA, float
    parameters), else torch's own default (``foreach`` on CUDA, ``loop`` elsewhere); it depends on the device only,
    never on timings, so a seed gives the same run on the same machine.

    Raises:
        ConfigError: an unknown ``impl``, or ``fused`` where torch has no fused kernel.
    """
    if impl not in IMPLS:
        raise ConfigError(f"optim.impl={impl!r}; expected one of {', '.join(IMPLS)}")
    params = list(params)
    devices = {p.device.type for p in params}
    fusable = devices <= set(_fused_devices()) and all(p.is_floating_point() for p in params)
    if impl == "fused" and not fusable:
        raise ConfigError(
            f"optim.impl=fused: torch {torch.__version__} has no fused optimiser kernel for these parameters (devices "
            f"{', '.join(sorted(devices))}; fused: {', '.join(_fused_devices())}, floating point only); "
            "use optim.impl=auto"
        )
    if impl != "auto":
        return impl
    if fusable:
        return "fused"
    return "foreach" if devices == {"cuda"} else "loop"


def _impl_kwargs(impl: str) -> dict[str, bool]:
    return {"fused": impl == "fused", "foreach": impl == "foreach"}


def optimizer_impl(optimizer: torch.optim.Optimizer | SAM) -> str:
    """``"fused"``, ``"foreach"`` or ``"loop"``: how ``optimizer`` (SAM: its base) updates the weights, read from its
    first group (a resumed optimiser takes its groups' flags from the checkpoint); ``"torch default"`` for groups
    that leave it to torch (optimisers built before ``optim.impl`` existed)."""
    group = optimizer.param_groups[0]
    fused, foreach = group.get("fused"), group.get("foreach")
    if fused:
        return "fused"
    if foreach:
        return "foreach"
    return "torch default" if fused is None and foreach is None else "loop"


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float | None = None) -> torch.optim.Optimizer | SAM:
    """The optimiser ``cfg`` names over ``model``'s trainable parameters (wrapped in :class:`SAM` when asked), updating
    the way ``cfg.impl`` says (:func:`resolve_impl`)."""
    lr = cfg.lr if lr is None else lr
    groups = build_param_groups(model, cfg, lr)
    impl = _impl_kwargs(resolve_impl(cfg.impl, (p for g in groups for p in g["params"])))
    name = cfg.name.lower()
    if name == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(
            groups, lr=lr, betas=_betas(cfg), eps=cfg.eps, weight_decay=cfg.weight_decay, **impl
        )
    elif name == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, betas=_betas(cfg), eps=cfg.eps, weight_decay=cfg.weight_decay, **impl)
    elif name == "sgd":
        opt = torch.optim.SGD(
            groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, **impl
        )
    else:
        raise ValueError(f"optim.name={cfg.name!r} is not supported; expected adam, adamw or sgd")
    return SAM(opt, rho=cfg.sam_rho, adaptive=cfg.sam_adaptive) if cfg.sam else opt


class LRSchedule:
    """Learning-rate factor as a function of training position, applied to every group's ``base_lr``.

    Args:
        cfg: the schedule section.
        epochs: epochs this schedule spans (a stage's length in staged training); fractional when a step plan
            ends inside an epoch.
        steps_per_epoch: optimiser steps per epoch (for warm-up, cosine and linear).
    """

    KINDS = ("none", "exponential", "step", "cosine", "linear", "plateau")

    def __init__(self, cfg: ScheduleConfig, epochs: float, steps_per_epoch: int) -> None:
        if cfg.name not in self.KINDS:
            raise ValueError(f"schedule.name={cfg.name!r}; expected one of {', '.join(self.KINDS)}")
        if cfg.monitor_mode not in ("max", "min"):
            raise ValueError(f"schedule.monitor_mode={cfg.monitor_mode!r}; expected max or min")
        self.cfg, self.steps_per_epoch = cfg, max(1, steps_per_epoch)
        self.epochs = max(1.0 / self.steps_per_epoch, float(epochs))
        self.warmup = cfg.warmup_fraction * self.epochs if cfg.warmup_fraction > 0 else float(cfg.warmup_epochs)
        self.plateau_scale = 1.0
        self.plateau_best: float | None = None
        self.plateau_bad = 0

    def factor(self, epoch: int, step_in_epoch: int = 0) -> float:
        """Multiplier of ``base_lr`` at optimiser step ``step_in_epoch`` of (0-based) ``epoch``."""
        c = self.cfg
        t = epoch + step_in_epoch / self.steps_per_epoch
        if self._warming(epoch, step_in_epoch):
            return min(1.0, (epoch * self.steps_per_epoch + step_in_epoch + 1) / (self.warmup * self.steps_per_epoch))
        if c.name == "exponential":
            return c.gamma**epoch
        if c.name == "step":
            return c.gamma ** (epoch // max(1, c.step_size))
        if c.name in ("cosine", "linear"):
            # the factor reaches 0 (the floor) at the end of the span, i.e. as the last step ends
            span = max(1e-12, self.epochs - self.warmup)
            frac = min(1.0, max(0.0, (t - self.warmup) / span))
            return 0.5 * (1 + math.cos(math.pi * frac)) if c.name == "cosine" else 1.0 - frac
        if c.name == "plateau":
            return self.plateau_scale
        return 1.0

    def _warming(self, epoch: int, step_in_epoch: int) -> bool:
        return self.warmup > 0 and epoch + step_in_epoch / self.steps_per_epoch < self.warmup

    def apply(self, optimizer: torch.optim.Optimizer | SAM, epoch: int, step_in_epoch: int = 0) -> float:
        """Set every group's ``lr``; returns the first group's."""
        f = self.factor(epoch, step_in_epoch)
        for g in optimizer.param_groups:
            base = g["base_lr"]
            floor = min(self.cfg.min_lr, base)
            if self.cfg.name in ("cosine", "linear") and not self._warming(epoch, step_in_epoch):
                g["lr"] = floor + (base - floor) * f
            elif self.cfg.name == "plateau":
                g["lr"] = max(base * f, floor)
            else:
                g["lr"] = base * f
        return optimizer.param_groups[0]["lr"]

    def observe(self, value: float | None) -> None:
        """Feed a validation value of ``monitor`` (the plateau schedule reacts to it)."""
        if self.cfg.name != "plateau" or value is None or not math.isfinite(value):
            return
        better = self.plateau_best is None or (
            value > self.plateau_best if self.cfg.monitor_mode == "max" else value < self.plateau_best
        )
        if better:
            self.plateau_best, self.plateau_bad = value, 0
        else:
            self.plateau_bad += 1
            if self.plateau_bad > self.cfg.plateau_patience:
                self.plateau_scale *= self.cfg.plateau_factor
                self.plateau_bad = 0

    def state_dict(self) -> dict[str, Any]:
        return {"plateau_scale": self.plateau_scale, "plateau_best": self.plateau_best, "plateau_bad": self.plateau_bad}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = None if state["plateau_best"] is None else float(state["plateau_best"])
        self.plateau_bad = int(state["plateau_bad"])
