"""Grad-CAM maps of any fernb model, through the model's own target layers and token reshape.

Grad-CAM (Selvaraju et al., 2017) weights the K channels of a target layer's activation A (B, K, h, w) by the spatial
mean of the gradient of one class score y_c, alpha_k = mean_ij dy_c / dA^k_ij, and keeps the positive part of the
weighted sum, L_c = ReLU(sum_k alpha_k A^k), upsampled to the input and scaled to [0, 1]. The maths and the hooks are
pytorch-grad-cam's (``GradCAM``, one ``ClassifierOutputTarget`` per image); fernb adds:

- the layers: ``model.cam_target_layers()``, with ``model.cam_reshape_transform()`` turning ARBEx / POSTER_V2 tokens
  (B, 1 + 3 g^2, D) into (B, 3 D, g, g) maps on the model's real window grid g. Models with several target layers
  (ESR: one per active branch; MA-Net: the stitched local map and the last global block) get the mean of the
  per-layer maps, each scaled to [0, 1] first (pytorch-grad-cam's multi-layer rule; the ensemble / mixed logits
  depend on every branch), or the layers picked with ``layers=``;
- the score: ``model(x).logits``, what the engine predicts from (for ARBEx the log of its prediction distribution);
- batch-dependent models (ARM ``behaviour="official"``, ARBEx ``behaviour="official"``): a probe finds them and their
  maps are computed one image at a time, so no image's map carries gradients of another image's score;
- a diagnosis of flat maps: the signed map before the ReLU says whether a flat map means *no positive evidence* for
  the class (every location argues against it: an answer, not a fault) or a *constant* / *zero-gradient* layer (a
  broken target layer or reshape).

**Other CAM methods** (``compute_cams(..., cam_method=...)``, :data:`CAM_METHODS`), all on the same target layers and
reshape: HiResCAM (the element-wise product of gradient and activation, summed over channels: no spatial averaging of
the gradient), Grad-CAM++ (channel weights from the positive second- and third-order gradient terms), XGrad-CAM,
LayerCAM (positive gradient times activation per location), EigenCAM (the first principal component of the
activations: gradient-free and class-agnostic; fernb orients its sign, which the SVD leaves arbitrary, so that the
map correlates positively with the mean activation) and ScoreCAM (gradient-free: each channel's upsampled, [0, 1]
activation masks the input, and the softmax of the class scores of the masked inputs weights the channels). ScoreCAM
costs one forward pass per channel and image; ``score_channels=k`` keeps the k channels with the largest mean
activation per image (the others weigh 0) and ``score_batch`` sets how many masked inputs go through at once; fernb
computes the masked scores itself (batched, no progress bar). ``"random"`` (seeded random channel weights) is the
control a faithfulness score should beat (:mod:`fernb.explore.faithfulness`).

Parameters are frozen while maps are computed (gradients flow to the activations only, through an input that
requires grad), and the model's train/eval mode and ``requires_grad`` flags are restored afterwards.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data.transforms import to_display
from ..engine.data import build_test_dataset
from ..engine.factory import load_run
from ..models._base import FERModel, LogitsOnly

__all__ = [
    "CAM_METHODS",
    "CamResult",
    "FaceBatch",
    "CamModel",
    "FlatMapError",
    "check_cam_method",
    "compute_cams",
    "is_flat",
    "check_not_flat",
    "batch_dependent",
    "target_layer_names",
    "resolve_class",
    "pick_faces",
    "load_faces",
    "load_cam_model",
    "cam_summary",
]

FLAT_TOL = 1e-3

CAM_METHODS: dict[str, str] = {
    "gradcam": "Grad-CAM",
    "hirescam": "HiResCAM",
    "gradcam++": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "scorecam": "ScoreCAM",
    "random": "random (control)",
}
"""``compute_cams``' ``cam_method`` names and their display names (one pytorch-grad-cam class each)."""

_CAM_CLASSES = {
    "gradcam": "GradCAM",
    "hirescam": "HiResCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "scorecam": "ScoreCAM",
    "random": "RandomCAM",
}


class FlatMapError(AssertionError):
    """Raised by :func:`check_not_flat` when a Grad-CAM map carries no spatial information."""


# ---------------------------------------------------------------------------------------------------- results


@dataclass
class CamResult:
    """Grad-CAM maps of B images for one model, one target class per image.

    Attributes:
        maps: (B, H, W) float32 maps in [0, 1] at the input size (an all-zero map: nothing positive survived ReLU).
        logits: (B, C) float32 model scores of the same forward pass.
        targets: (B,) int64 class of each map (the prediction when none was asked for).
        signed: one (B, h, w) float32 array per target layer: sum_k alpha_k A^k before the ReLU, at layer resolution.
        layer_names: the target layers' qualified names in the model, one per ``signed`` entry.
        per_image: whether the maps were computed one image at a time.
        tol: flatness tolerance on the std of a map.
        cam_method: the method that made the maps (a key of :data:`CAM_METHODS`).
    """

    maps: np.ndarray
    logits: np.ndarray
    targets: np.ndarray
    signed: list[np.ndarray]
    layer_names: list[str]
    per_image: bool = False
    tol: float = FLAT_TOL
    cam_method: str = "gradcam"

    def __len__(self) -> int:
        return len(self.maps)

    @property
    def probs(self) -> np.ndarray:
        """(B, C) softmax of the logits."""
        z = self.logits - self.logits.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    @property
    def predicted(self) -> np.ndarray:
        """(B,) argmax class."""
        return self.logits.argmax(1)

    @property
    def map_std(self) -> np.ndarray:
        """(B,) spatial std of each map (about 0.2-0.35 for a map with structure, 0 for a flat one)."""
        return self.maps.reshape(len(self.maps), -1).std(1)

    @property
    def evidence(self) -> np.ndarray:
        """(B,) the largest signed value over layers and locations; <= 0 means no positive evidence for the class."""
        return np.max([s.reshape(len(s), -1).max(1) for s in self.signed], axis=0)

    @property
    def contrast(self) -> np.ndarray:
        """(B,) the largest over layers of std / max|.| of the signed map: ~0 for a spatially constant layer."""
        out = []
        for s in self.signed:
            flat = s.reshape(len(s), -1).astype(np.float64)
            scale = np.abs(flat).max(1)
            out.append(np.divide(flat.std(1), scale, out=np.zeros_like(scale), where=scale > 0))
        return np.max(out, axis=0)

    @property
    def flat(self) -> np.ndarray:
        """(B,) True where a map carries no spatial information (see :func:`is_flat`)."""
        return np.array([is_flat(m, self.tol) for m in self.maps]) | (self.contrast < self.tol)

    @property
    def reasons(self) -> list[str]:
        """Per image: ``"ok"``, ``"no positive evidence"``, ``"constant layer"`` or ``"zero gradient"``."""
        out = []
        for flat, ev, con, sig in zip(self.flat, self.evidence, self.contrast, self._signed_scale(), strict=True):
            if not flat:
                out.append("ok")
            elif sig == 0:
                out.append("zero gradient")
            elif con < self.tol:
                out.append("constant layer")
            elif ev <= 0:
                out.append("no positive evidence")
            else:
                out.append("flat")
        return out

    def _signed_scale(self) -> np.ndarray:
        return np.max([np.abs(s.reshape(len(s), -1)).max(1) for s in self.signed], axis=0)

    def select(self, rows: Sequence[int] | np.ndarray) -> CamResult:
        """The result restricted to some images."""
        r = np.asarray(rows, dtype=np.int64)
        return CamResult(
            self.maps[r],
            self.logits[r],
            self.targets[r],
            [s[r] for s in self.signed],
            list(self.layer_names),
            self.per_image,
            self.tol,
            self.cam_method,
        )


def is_flat(cam: np.ndarray, tol: float = FLAT_TOL) -> bool:
    """Whether a (H, W) map in [0, 1] is flat: non-finite values or a spatial std below ``tol``."""
    a = np.asarray(cam, dtype=np.float64)
    return bool(not np.isfinite(a).all() or a.std() < tol)


def check_not_flat(result: CamResult, name: str = "model", *, allow_no_evidence: bool = False) -> None:
    """Raise :class:`FlatMapError` naming every flat map of ``result`` and why.

    Args:
        allow_no_evidence: accept flat maps whose signed map is negative everywhere (the class has no positive
            evidence in the image: a legitimate Grad-CAM answer for a class the model rejects), but not those of a
            constant or zero-gradient layer.
    """
    bad = [
        (i, r)
        for i, r in enumerate(result.reasons)
        if r != "ok" and not (allow_no_evidence and r == "no positive evidence")
    ]
    if bad:
        rows = ", ".join(f"image {i} (class {int(result.targets[i])}): {r}" for i, r in bad)
        raise FlatMapError(f"{name}: {len(bad)} flat Grad-CAM map(s) at {', '.join(result.layer_names)}: {rows}")


# ---------------------------------------------------------------------------------------------------- computing


def check_cam_method(cam_method: str) -> str:
    """The lower-case key of ``cam_method`` in :data:`CAM_METHODS` (``"GradCAM++"`` -> ``"gradcam++"``); raises
    ValueError naming the choices."""
    key = cam_method.lower().replace("-", "").replace(" ", "")
    if key not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {cam_method!r}; choose from {', '.join(CAM_METHODS)}")
    return key


@functools.cache
def _signed_cam(cam_method: str) -> type:
    """pytorch-grad-cam's class for ``cam_method``, keeping each layer's signed map (before its ReLU) in
    ``signed_maps``; EigenCAM with a fixed sign, ScoreCAM and the random control with fernb's weights.

    Built on first use so that importing this module does not import pytorch-grad-cam (sklearn, torchvision models).
    """
    import pytorch_grad_cam

    base = getattr(pytorch_grad_cam, _CAM_CLASSES[cam_method])

    class SignedCAM(base):  # type: ignore[misc, valid-type]
        signed_maps: list[np.ndarray]
        score_batch: int = 32
        score_channels: int | None = None
        seed: int = 0

        def get_cam_image(self, *args: Any, **kwargs: Any) -> np.ndarray:
            cam = np.asarray(super().get_cam_image(*args, **kwargs), dtype=np.float32)
            if cam_method == "eigencam":
                cam = _orient(cam, args[3] if len(args) > 3 else kwargs["activations"])
            self.signed_maps.append(cam)
            return cam

        def get_cam_weights(self, input_tensor: Tensor, layer: Any, targets: Any, activations: Any, grads: Any) -> Any:
            if cam_method == "scorecam":
                return _score_weights(self, input_tensor, targets, np.asarray(activations))
            if cam_method == "random":
                rng = np.random.default_rng([self.seed, 15])
                return rng.uniform(-1, 1, size=np.asarray(activations).shape[:2]).astype(np.float32)
            return super().get_cam_weights(input_tensor, layer, targets, activations, grads)

    SignedCAM.__name__ = f"Signed{base.__name__}"
    return SignedCAM


def _orient(cam: np.ndarray, activations: Any) -> np.ndarray:
    """EigenCAM's (B, h, w) projections, each negated where it correlates negatively with the mean activation (the
    SVD's sign is arbitrary; the map should point at where the layer responds)."""
    act = np.asarray(activations, dtype=np.float32).mean(1).reshape(len(cam), -1)
    flat = cam.reshape(len(cam), -1)
    corr = ((flat - flat.mean(1, keepdims=True)) * (act - act.mean(1, keepdims=True))).sum(1)
    return cam * np.where(corr < 0, -1.0, 1.0).astype(np.float32)[:, None, None]


@torch.no_grad()
def _score_weights(cam: Any, input_tensor: Tensor, targets: Sequence[Any], activations: np.ndarray) -> np.ndarray:
    """ScoreCAM's (B, K) channel weights: the softmax over channels of the target score of the input masked by each
    channel's upsampled activation (scaled to [0, 1]); with ``cam.score_channels`` only the channels of largest mean
    activation are scored, the others weigh 0."""
    a = torch.from_numpy(activations).float().to(input_tensor.device)
    b, k = a.shape[:2]
    keep = k if cam.score_channels is None else max(1, min(k, int(cam.score_channels)))
    top = a.flatten(2).mean(2).argsort(1, descending=True)[:, :keep]
    up = torch.nn.functional.interpolate(a, size=input_tensor.shape[-2:], mode="bilinear", align_corners=False)
    lo, hi = up.amin((2, 3), keepdim=True), up.amax((2, 3), keepdim=True)
    up = (up - lo) / (hi - lo + 1e-8)
    weights = np.zeros((b, k), dtype=np.float32)
    x = input_tensor.detach()
    for i in range(b):
        masks = up[i, top[i]]  # (keep, H, W)
        scores = []
        for j in range(0, keep, max(1, int(cam.score_batch))):
            out = cam.model(x[i : i + 1] * masks[j : j + cam.score_batch, None])
            scores.append(torch.stack([targets[i](o) for o in out]).float().cpu())
        weights[i, top[i].cpu().numpy()] = torch.softmax(torch.cat(scores), 0).numpy()
    return weights


@contextlib.contextmanager
def _activation_grads_only(model: nn.Module) -> Iterator[None]:
    """Freeze every parameter (so backward computes activation gradients only) and restore flags and mode after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def target_layer_names(model: FERModel) -> list[str]:
    """Qualified names of ``model.cam_target_layers()`` (``"backbone.blocks.1.norm1"``, ...)."""
    names = {id(m): n for n, m in model.named_modules()}
    return [names.get(id(m), type(m).__name__) for m in model.cam_target_layers()]


@torch.no_grad()
def batch_dependent(model: nn.Module, images: Tensor, atol: float = 1e-4) -> bool:
    """Whether the model's eval-mode logits of an image change with the other images of its batch.

    Compares the first image's logits alone and beside the second (two small forwards; False for one image).
    """
    if len(images) < 2:
        return False
    was_training = model.training
    model.eval()
    try:
        x = images[:2].to(_device(model))
        pair, alone = model(x).logits[:1], model(x[:1]).logits
    finally:
        model.train(was_training)
    return not torch.allclose(pair.float(), alone.float(), atol=atol, rtol=1e-4)


def _as_targets(classes: int | Sequence[int] | np.ndarray | None, n: int) -> list[int] | None:
    if classes is None:
        return None
    if isinstance(classes, (int, np.integer)):
        return [int(classes)] * n
    out = [int(c) for c in np.asarray(classes).reshape(-1)]
    if len(out) != n:
        raise ValueError(f"one target class per image: got {len(out)} classes for {n} images")
    return out


def compute_cams(
    model: FERModel,
    images: Tensor,
    classes: int | Sequence[int] | np.ndarray | None = None,
    *,
    layers: int | Sequence[int] | None = None,
    per_image: bool | None = None,
    tol: float = FLAT_TOL,
    cam_method: str = "gradcam",
    score_batch: int = 32,
    score_channels: int | None = None,
    seed: int = 0,
) -> CamResult:
    """CAM maps (Grad-CAM by default) of a fernb model for a batch of images, exactly one target class per image.

    Args:
        model: a fernb model (``forward`` returns an output with ``.logits``; ``cam_target_layers``,
            ``cam_reshape_transform``). Used in eval mode; its mode and parameter flags are restored afterwards.
        images: (B, 3, H, W) inputs as the model's test-time transform makes them.
        classes: None (each image's predicted class), one class index for every image, or B indices.
        layers: indices into ``model.cam_target_layers()`` to use (default all, maps averaged).
        per_image: compute image by image; None decides with :func:`batch_dependent`.
        tol: flatness tolerance recorded in the result.
        cam_method: a key of :data:`CAM_METHODS` (``"gradcam"``, ``"hirescam"``, ``"gradcam++"``, ``"xgradcam"``,
            ``"layercam"``, ``"eigencam"``, ``"scorecam"``, ``"random"``).
        score_batch: ScoreCAM: masked inputs per forward pass (1 for a batch-dependent model).
        score_channels: ScoreCAM: score only this many channels per image, those of largest mean activation (None:
            all; fewer is faster and approximate).
        seed: the random control's seed.

    Returns:
        A :class:`CamResult` with (B, H, W) maps in [0, 1] and the (B, C) logits of the same forward pass.
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_method = check_cam_method(cam_method)
    if images.ndim != 4:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    n = len(images)
    wanted = _as_targets(classes, n)
    all_layers, all_names = list(model.cam_target_layers()), target_layer_names(model)
    if layers is None:
        pick = list(range(len(all_layers)))
    else:
        pick = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
        if not pick or any(not 0 <= i < len(all_layers) for i in pick):
            raise ValueError(f"layers={layers!r}: the model has {len(all_layers)} target layer(s) {all_names}")
    target_layers, names = [all_layers[i] for i in pick], [all_names[i] for i in pick]
    if per_image is None:
        per_image = batch_dependent(model, images)
    chunks = [slice(i, i + 1) for i in range(n)] if per_image else [slice(0, n)]
    device = _device(model)
    maps, logits, targets, signed = [], [], [], []
    with _activation_grads_only(model):
        with _signed_cam(cam_method)(
            model=LogitsOnly(model), target_layers=target_layers, reshape_transform=model.cam_reshape_transform()
        ) as cam:
            cam.score_batch = 1 if per_image else score_batch  # a batch-dependent model scores one input at a time
            cam.score_channels, cam.seed = score_channels, seed
            for sl in chunks:
                x = images[sl].detach().to(device).float().requires_grad_(True)
                cam.signed_maps = []
                tg = None if wanted is None else [ClassifierOutputTarget(c) for c in wanted[sl]]
                out = cam(input_tensor=x, targets=tg)
                if out is None or len(cam.signed_maps) != len(target_layers):
                    raise RuntimeError(
                        f"{CAM_METHODS[cam_method]} found no activation gradient at {names}: does the target "
                        "layer's output reach the logits?"
                    )
                z = cam.outputs.detach().float().cpu().numpy()
                maps.append(np.asarray(out, dtype=np.float32))
                logits.append(z)
                targets.append(z.argmax(1) if wanted is None else np.asarray(wanted[sl]))
                signed.append([np.asarray(s, dtype=np.float32) for s in cam.signed_maps])
    if len(maps) != len(chunks):  # pytorch-grad-cam's __exit__ swallows an IndexError raised inside the block
        raise RuntimeError(f"{CAM_METHODS[cam_method]} stopped after {len(maps)} of {len(chunks)} passes at {names}")
    return CamResult(
        np.concatenate(maps),
        np.concatenate(logits),
        np.concatenate(targets).astype(np.int64),
        [np.concatenate([s[i] for s in signed]) for i in range(len(target_layers))],
        names,
        bool(per_image),
        tol,
        cam_method,
    )


# ---------------------------------------------------------------------------------------------------- faces and runs


def resolve_class(cls: int | str | None, class_names: Sequence[str]) -> int | None:
    """``"predicted"`` / None -> None; a class name (case-insensitive) or index -> its index."""
    if cls is None or (isinstance(cls, str) and cls.lower() in ("predicted", "pred", "")):
        return None
    if isinstance(cls, (int, np.integer)):
        if not 0 <= int(cls) < len(class_names):
            raise ValueError(f"class index {cls} outside 0..{len(class_names) - 1}")
        return int(cls)
    lower = [c.lower() for c in class_names]
    if cls.lower() not in lower:
        raise ValueError(f"unknown class {cls!r}; classes: {', '.join(class_names)} (or 'predicted')")
    return lower.index(cls.lower())


def pick_faces(targets: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` dataset indices covering the classes in turn (a seeded random sample of each class), sorted by class.

    The same ``targets`` and seed give the same faces, so every method is shown the same images.
    """
    targets = np.asarray(targets)
    rng = np.random.default_rng([seed, 6])
    pools = {int(c): list(rng.permutation(np.flatnonzero(targets == c))) for c in np.unique(targets)}
    out: list[int] = []
    while len(out) < min(n, len(targets)):
        for c in sorted(pools):
            if pools[c] and len(out) < n:
                out.append(int(pools[c].pop(0)))
    return np.array(sorted(out, key=lambda i: (targets[i], i)), dtype=np.int64)


@dataclass
class FaceBatch:
    """The same dataset samples as one run's model sees them.

    Attributes:
        indices: (B,) positions in the split.
        images: (B, 3, H, W) inputs through the run's test-time transform.
        faces: (B, H, W, 3) uint8 un-normalised RGB faces at the model's input size (for overlays).
        labels: (B,) int64 dataset labels.
        class_names: the split's classes.
        fingerprint: the split's fingerprint (equal across runs that read the same data).
    """

    indices: np.ndarray
    images: Tensor
    faces: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    fingerprint: str = ""

    def __len__(self) -> int:
        return len(self.indices)

    def select(self, rows: Sequence[int] | np.ndarray) -> FaceBatch:
        r = np.asarray(rows, dtype=np.int64)
        return FaceBatch(
            self.indices[r],
            self.images[torch.as_tensor(r)],
            self.faces[r],
            self.labels[r],
            list(self.class_names),
            self.fingerprint,
        )


def load_faces(dataset: Any, indices: Sequence[int] | np.ndarray) -> FaceBatch:
    """Samples of a (transformed) :class:`~fernb.data.base.FERDataset` as model inputs and displayable faces.

    The faces are the model inputs with the transform's normalisation (and BGR order) undone, so an overlay shows
    exactly what the model saw.
    """
    spec = getattr(getattr(dataset, "transform", None), "spec", None)
    mean, std = (spec.mean, spec.std) if spec is not None else (None, None)
    bgr = bool(spec.bgr) if spec is not None else False
    idx = np.asarray(indices, dtype=np.int64)
    items = [dataset[int(i)] for i in idx]
    images = torch.stack([it["image"] for it in items])
    faces = np.stack([to_display(im, mean, std, bgr) for im in images])
    return FaceBatch(
        idx,
        images,
        faces,
        np.array([it["label"] for it in items], dtype=np.int64),
        list(dataset.class_names),
        dataset.fingerprint(),
    )


@dataclass
class CamModel:
    """A trained run ready for Grad-CAM: its config, model (eval mode), classes and test-time split."""

    name: str
    run_dir: Path
    cfg: Any
    model: FERModel
    class_names: list[str]
    dataset: Any = field(repr=False, default=None)

    def faces(self, indices: Sequence[int] | np.ndarray) -> FaceBatch:
        """The samples at ``indices`` through this run's own test-time transform and input size."""
        return load_faces(self.dataset, indices)


def load_cam_model(
    run_dir: str | Path,
    name: str | None = None,
    *,
    checkpoint: str | int = "best",
    split: str = "test",
    device: str = "cpu",
) -> CamModel:
    """Load a run's model (``fernb.engine.load_run``) and its evaluation split with the run's transform."""

    cfg, model, meta = load_run(run_dir, checkpoint, device=device)
    ds, _ = build_test_dataset(cfg, split)
    return CamModel(name or cfg.model.name, Path(run_dir), cfg, model, list(meta["class_names"]), ds)


def cam_summary(results: Mapping[str, CamResult]) -> list[dict[str, Any]]:
    """One row per method: target layers, mean / min map std, flat maps and their reasons (a DataFrame's rows)."""
    rows = []
    for name, r in results.items():
        reasons = r.reasons
        bad = [x for x in reasons if x != "ok"]
        rows.append(
            {
                "method": name,
                "layers": ", ".join(r.layer_names),
                "maps": len(r),
                "mean std": float(r.map_std.mean()),
                "min std": float(r.map_std.min()),
                "flat": len(bad),
                "why flat": ", ".join(sorted(set(bad))) or "-",
                "per image": r.per_image,
            }
        )
    return rows
