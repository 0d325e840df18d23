"""The yardstick of ``bench_budget.py``: a plain from-scratch PyTorch loop, written without fernb's engine or models.

Width-16 ResNet-18 with a 3x3 stride-1 stem and no max-pool; AdamW lr 1e-3, weight decay 0.05 (not on norms and
biases); batch 128; label smoothing 0.1; a learning rate that is a function of the time spent (linear warm-up over
the first 5 % of the budget, cosine to zero exactly when the budget ends); the images held in memory as uint8;
augmentation on whole batches (one affine warp per batch with per-sample flip, rotation +-10 deg, zoom 0.9-1.1,
shift +-10 %, then random erasing); bf16 autocast where the CPU has native bf16; the best epoch on valid is kept.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class PlainResNet18(nn.Module):
    """ResNet-18 of width ``w`` with a 3x3 stride-1 stem, no max-pool."""

    def __init__(self, num_classes: int, w: int = 16, in_ch: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        layers, cin = [], w
        for i, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
            layers += [_Block(cin, cout, 1 if i == 0 else 2), _Block(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(self.stem(x)).mean((2, 3)))


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, C, H, W) float in [0, 1] -> one grid_sample with per-sample affine params, then random erasing."""
    b = x.shape[0]
    u = lambda lo, hi: torch.empty(b).uniform_(lo, hi, generator=gen)  # noqa: E731
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    ang = u(-10, 10) * math.pi / 180
    zoom = u(0.9, 1.1)
    tx, ty = u(-0.2, 0.2), u(-0.2, 0.2)  # shift of +-10 % of the side = +-0.2 in [-1, 1] coordinates
    cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    h, w = x.shape[-2:]
    area = u(0.02, 0.25) * h * w
    ratio = torch.exp(u(math.log(0.3), math.log(3.3)))
    eh = (area * ratio).sqrt().clamp(1, h).long()
    ew = (area / ratio).sqrt().clamp(1, w).long()
    top = (torch.rand(b, generator=gen) * (h - eh + 1)).long()
    left = (torch.rand(b, generator=gen) * (w - ew + 1)).long()
    yy = torch.arange(h)[None, :, None]
    xx = torch.arange(w)[None, None, :]
    box = (
        (yy >= top[:, None, None])
        & (yy < (top + eh)[:, None, None])
        & (xx >= left[:, None, None])
        & (xx < (left + ew)[:, None, None])
    )
    keep = (torch.rand(b, generator=gen) < 0.5)[:, None, None] & box
    return x.masked_fill(keep[:, None], 0.0)


def _bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class ReferenceResult:
    """``images_per_second`` counts training time only (validation excluded), as fernb's rows do."""

    best_valid_accuracy: float
    best_epoch: int
    epochs: int
    steps: int
    images_per_second: float
    train_seconds: float
    valid_logits: np.ndarray


def reference_loop(
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    num_classes: int,
    budget_s: float,
    seed: int = 0,
    batch_size: int = 128,
) -> ReferenceResult:
    """Train the plain loop for ``budget_s`` seconds (validation included) on uint8 (N, C, H, W) arrays."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = PlainResNet18(num_classes, in_ch=train_x.shape[1]).to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3
    )
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if _bf16() else contextlib.nullcontext()
    tx, ty = torch.from_numpy(train_x), torch.from_numpy(train_y).long()
    vx = torch.from_numpy(valid_x)
    norm01 = lambda x: (x - 0.5) / 0.25  # noqa: E731
    best = (-1.0, 0, None)
    steps = seen = 0
    train_time = 0.0
    t0 = time.perf_counter()
    epoch = 0
    while time.perf_counter() - t0 < budget_s:
        model.train()
        t_train = time.perf_counter()
        order = torch.randperm(len(tx), generator=gen)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            frac = (time.perf_counter() - t0) / budget_s
            if frac >= 1:
                break
            lr = 1e-3 * (frac / 0.05 if frac < 0.05 else 0.5 * (1 + math.cos(math.pi * (frac - 0.05) / 0.95)))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = order[i : i + batch_size]
            x = norm01(_augment(tx[idx].float() / 255, gen)).contiguous(memory_format=torch.channels_last)
            with amp:
                loss = F.cross_entropy(model(x).float(), ty[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            seen += len(idx)
        train_time += time.perf_counter() - t_train
        epoch += 1
        model.eval()
        logits = []
        with torch.no_grad(), amp:
            for i in range(0, len(vx), 256):
                x = norm01(vx[i : i + 256].float() / 255).contiguous(memory_format=torch.channels_last)
                logits.append(model(x).float())
        logits = torch.cat(logits).numpy()
        acc = float((logits.argmax(1) == valid_y).mean())
        if acc > best[0]:
            best = (acc, epoch, logits)
    elapsed = time.perf_counter() - t0
    return ReferenceResult(best[0], best[1], epoch, steps, seen / max(train_time, 1e-9), elapsed, best[2])
