"""A toy model, loss and in-memory data for the engine's tests (training, resume, DDP, budget), and the smoke
configs of every method; registered in fernb's registries through :func:`registered`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fernb.data.base import FERDataset
from fernb.engine import METHODS, TrainConfig, apply_overrides, config_from_preset
from fernb.labels import LABEL_SPACES
from fernb.losses import FERLoss, LossOutput, StepInfo
from fernb.losses._base import LOSSES
from fernb.models import VARIANTS, FERModel, ModelOutput, parse_variant
from fernb.models._registry import MODELS

TOY = "engine_toy"


@dataclass
class ToyOutput(ModelOutput):
    features: Tensor | None = None


class ToyNet(FERModel):
    """conv-BN-ReLU-pool, dropout, linear head; ``add_branch`` adds a second head (a stand-in for ESR's branches)."""

    def __init__(self, num_classes: int = 7, width: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.config = {"num_classes": num_classes, "width": width}
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten()
        )
        self.drop = nn.Dropout(dropout)
        self.heads = nn.ModuleList([nn.Linear(width * 16, num_classes)])
        self.epoch_calls: list[int] = []

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        f = self.drop(features)
        return f if pre_logits else torch.stack([h(f) for h in self.heads]).mean(0)

    def forward(self, x: Tensor) -> ToyOutput:
        f = self.forward_features(x)
        return ToyOutput(logits=self.forward_head(f), embedding=f, features=f)

    def add_branch(self) -> None:
        for p in self.heads.parameters():
            p.requires_grad_(False)
        self.heads.append(nn.Linear(self.heads[0].in_features, self.heads[0].out_features))

    def on_epoch_start(self, epoch: int, num_epochs: int) -> bool:
        self.epoch_calls.append(epoch)
        return False


class ToyLoss(FERLoss):
    """CE (class-weighted when given) + ``progress`` x a small logit penalty; NaN from step ``nan_at`` on."""

    def __init__(self, class_weights: Tensor | None = None, nan_at: int | None = None) -> None:
        super().__init__()
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.zeros(0))
        self.nan_at = nan_at
        self.infos: list[StepInfo] = []

    def forward(self, output, target, dist=None, info=None) -> LossOutput:
        info = info or StepInfo()
        self.infos.append(info)
        w = self.class_weights if self.class_weights.numel() else None
        ce = nn.functional.cross_entropy(output.logits, target, weight=w)
        reg = output.logits.pow(2).mean() * 1e-3
        if self.nan_at is not None and info.step >= self.nan_at:
            reg = reg * float("nan")
        return LossOutput(ce + info.progress * reg, {"ce": ce, "reg": reg})


def engine_toy(
    preset: str = "tiny", num_classes: int = 7, width: int = 8, dropout: float = 0.1, img_size: int | None = None
) -> ToyNet:
    """The registry entry point of :class:`ToyNet` (``preset`` and ``img_size`` are accepted and ignored)."""
    return ToyNet(num_classes, width, dropout)


@contextmanager
def registered() -> Iterator[None]:
    """The toy model and loss in fernb's registries for the duration of a ``with`` block (the whole test session:
    see ``conftest.py``; subprocesses import ``toys_plugin`` instead)."""
    with MODELS.scoped(TOY, engine_toy), LOSSES.scoped(TOY, ToyLoss):
        yield


def toy_data(
    n: int = 48,
    seed: int = 0,
    split: str = "train",
    size: int = 16,
    with_dists: bool = True,
    subjects: int | None = None,
) -> FERDataset:
    """Learnable in-memory data: class c lights up a band at row ~2c of a noisy gray image."""
    rng = np.random.default_rng(seed)
    space = LABEL_SPACES["basic7"]
    y = np.arange(n) % 7
    rng.shuffle(y)
    img = rng.integers(0, 60, (n, size, size), dtype=np.uint8)
    for i, c in enumerate(y):
        img[i, 2 * c : 2 * c + 2, :] = 220
    dists = np.full((n, 7), 0.05, np.float32)
    dists[np.arange(n), y] = 0.7
    subj = [f"p{i % subjects}" for i in range(n)] if subjects else None
    return FERDataset("toy", split, space, y, pixels=img, dists=dists if with_dists else None, subjects=subj)


def toy_config(tmp: Path, **over) -> TrainConfig:
    """A small fp32 single-thread run of the toy model, with ``over`` applied."""
    base = {
        "model.name": TOY,
        "data.img_size": 16,
        "data.batch_size": 8,
        "schedule.epochs": 2,
        "run.out_dir": str(tmp),
        "run.name": "toy",
        "run.quiet": True,
        "run.seed": 0,
        "optim.lr": 0.01,
        "run.precision": "fp32",
        "run.threads": 1,
    }
    base.update(over)
    return apply_overrides(TrainConfig(), base)


# every method and the diversity variants, for the tests that run each one (resume, DDP)
METHOD_SPECS = [*METHODS, *VARIANTS]


def spec_config(spec: str, esr_stages: list, **over):
    """The smoke config of a method or variant (``"esr+diversity"``) on the synthetic data, with ``over`` applied;
    ESR trains with ``esr_stages``."""
    method, flags = parse_variant(spec)
    over = {
        "data.dataset": "synthetic",
        "run.quiet": True,
        "run.precision": "fp32",
        "run.threads": 1,
        "model.kwargs": flags,
        **over,
    }
    if method == "esr":
        over["schedule.stages"] = esr_stages
    return config_from_preset(f"{method}/synthetic", smoke=True, **over)


def weights_digest(model: nn.Module) -> str:
    """A hash of every tensor of a model's state dict."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


SYNTH = {"data.dataset": "synthetic", "data.options": {"n": 120, "size": 32, "seed": 0}, "data.label_space": None}
