"""How faithful a CAM map is to its model: does removing what the map highlights change the model's answer?

Scores are changes of the target class's softmax probability p_c, per image (the map's own class):

- **ROAD** (Rong et al., 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods"): remove a
  fraction f of the pixels, imputing them from their neighbours (pytorch-grad-cam's ``NoisyLinearImputer``, so that
  the removal does not leave a mask shape the model could read), most relevant first (**MoRF**: p_c should fall) or
  least relevant first (**LeRF**: p_c should hold); each is averaged over ``fractions``, and
  ``road = (LeRF - MoRF) / 2`` (pytorch-grad-cam's ``ROADCombined``): higher is more faithful;
- **confidence change** (pytorch-grad-cam's ``CamMultImageConfidenceChange``): p_c of the input multiplied by the map
  (in normalised units: unmapped pixels go to the dataset mean) minus p_c of the input: near 0 when the map keeps the
  evidence, negative when it misses it.

A method is worth trusting for a model when its ROAD beats the ``"random"`` control's on the same faces. The imputer's
noise is seeded. Batch-dependent models are scored one image at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..models._base import FERModel
from .gradcam import CAM_METHODS, CamResult, batch_dependent, compute_cams

__all__ = ["FRACTIONS", "faithfulness", "faithfulness_table", "FAITHFULNESS_COLUMNS"]

FRACTIONS = (0.2, 0.5, 0.8)
FAITHFULNESS_COLUMNS = ("road", "morf", "lerf", "confidence change")


@torch.no_grad()
def _probs(model: FERModel, x: Tensor, per_image: bool) -> np.ndarray:
    device = next(model.parameters()).device
    parts = [x[i : i + 1] for i in range(len(x))] if per_image else [x]
    z = torch.cat([model(p.to(device)).logits.float() for p in parts])
    return torch.softmax(z, 1).cpu().numpy()


def _removed(images: Tensor, maps: np.ndarray, fraction: float, most_relevant: bool, seed: int) -> Tensor:
    """The images with ``round(fraction * H * W)`` pixels imputed, the most (or least) relevant by ``maps`` (ties, as
    in the zeros a ReLU leaves, broken at random with ``seed``)."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    imputer = NoisyLinearImputer()
    rng = np.random.default_rng([seed, 16])
    out = []
    for img, cam in zip(images.cpu(), maps, strict=True):
        score = cam.reshape(-1) if most_relevant else -cam.reshape(-1)
        order = np.lexsort((rng.permutation(score.size), -score))  # highest score first, ties in random order
        keep = np.ones(score.size, dtype=np.float32)  # 1: kept, 0: imputed
        keep[order[: int(round(fraction * score.size))]] = 0
        out.append(imputer(img.float(), torch.from_numpy(keep.reshape(cam.shape))))
    return torch.stack(out)


def faithfulness(
    model: FERModel,
    images: Tensor,
    result: CamResult,
    *,
    fractions: Sequence[float] = FRACTIONS,
    seed: int = 0,
    per_image: bool | None = None,
) -> dict[str, np.ndarray]:
    """Per-image faithfulness of ``result``'s maps of ``images`` (see the module docstring).

    Args:
        model: the model the maps explain (eval mode is used; its mode is restored).
        images: (B, 3, H, W) the inputs the maps were computed on.
        result: :func:`~fernb.explore.gradcam.compute_cams`' result for ``images``.
        fractions: the shares of pixels ROAD removes.
        seed: seed of the imputer's noise.
        per_image: score image by image; None decides with :func:`~fernb.explore.gradcam.batch_dependent`.

    Returns:
        ``{"road", "morf", "lerf", "confidence change", "p"}``, each (B,) float32 (``p``: the target's probability).
    """
    if len(images) != len(result):
        raise ValueError(f"{len(images)} images but {len(result)} maps")
    was_training = model.training
    model.eval()
    if per_image is None:
        per_image = batch_dependent(model, images)
    rows = np.arange(len(images))
    tg = result.targets
    try:
        p0 = _probs(model, images, per_image)[rows, tg]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            morf = np.mean(
                [
                    _probs(model, _removed(images, result.maps, f, True, seed), per_image)[rows, tg] - p0
                    for f in fractions
                ],
                0,
            )
            lerf = np.mean(
                [
                    _probs(model, _removed(images, result.maps, f, False, seed), per_image)[rows, tg] - p0
                    for f in fractions
                ],
                0,
            )
        masked = images.cpu().float() * torch.from_numpy(result.maps)[:, None]
        change = _probs(model, masked, per_image)[rows, tg] - p0
    finally:
        model.train(was_training)
    return {
        "road": ((lerf - morf) / 2).astype(np.float32),
        "morf": morf.astype(np.float32),
        "lerf": lerf.astype(np.float32),
        "confidence change": change.astype(np.float32),
        "p": p0.astype(np.float32),
    }


def faithfulness_table(
    models: Mapping[str, tuple[FERModel, Tensor]],
    cam_methods: Sequence[str] = tuple(CAM_METHODS),
    classes: int | Sequence[int] | np.ndarray | None = None,
    *,
    fractions: Sequence[float] = FRACTIONS,
    seed: int = 0,
    results: Mapping[tuple[str, str], CamResult] | None = None,
    **cam_kwargs: Any,
) -> list[dict[str, Any]]:
    """One row per (model, CAM method): the mean faithfulness scores over the images (a DataFrame's rows).

    Args:
        models: ``{name: (model, images)}``, the images through that model's own transform (the same faces).
        cam_methods: keys of :data:`~fernb.explore.gradcam.CAM_METHODS` (include ``"random"`` for the control).
        classes: the maps' classes (None: each model's prediction).
        results: maps already computed, by ``(model name, cam method)`` (used instead of recomputing).
        cam_kwargs: passed to :func:`~fernb.explore.gradcam.compute_cams` (``score_channels``, ...).

    Returns:
        Rows with ``model``, ``cam``, ``road``, ``morf``, ``lerf``, ``confidence change``, ``faces`` and ``beats
        random`` (the share of faces whose ROAD beats the random control's, when ``"random"`` is among the methods).
    """
    rows: list[dict[str, Any]] = []
    for name, (model, images) in models.items():
        scores: dict[str, dict[str, np.ndarray]] = {}
        for cm in cam_methods:
            res = (results or {}).get((name, cm))
            if res is None:
                res = compute_cams(model, images, classes, cam_method=cm, **cam_kwargs)
            scores[cm] = faithfulness(model, images, res, fractions=fractions, seed=seed)
        for cm, sc in scores.items():
            row: dict[str, Any] = {"model": name, "cam": cm}
            row.update({k: float(sc[k].mean()) for k in FAITHFULNESS_COLUMNS})
            row["faces"] = len(images)
            if "random" in scores and cm != "random":
                row["beats random"] = float((sc["road"] > scores["random"]["road"]).mean())
            rows.append(row)
    return rows
