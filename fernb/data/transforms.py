"""Image transforms of the official FER methods, as data: every pipeline is a JSON-serialisable :class:`TransformSpec`.

A pipeline is a list of *steps* (``{"name": "hflip", "p": 0.5}``); :func:`build_transforms` picks a method's preset
(reproducing its official train or eval pipeline, see :func:`list_presets`), and ``TransformSpec.build()`` turns the
steps into a callable ``PIL image -> (C, H, W) float tensor``. Runs record ``describe(transform)``.

Every random choice draws from torch's global RNG (never Python's ``random`` or NumPy's), so a pipeline repeats
exactly under ``torch.manual_seed``; DataLoader workers get distinct torch seeds as usual.

Gray datasets (FER2013, FER+, CK+, JAFFE) are handled by the first step: ``channels=3`` replicates the gray channel
(what every official code does), ``channels=1`` keeps (or makes) a single luminance channel.

Sources: ``shared/specs/arbex.md`` §1.1 and §4.3 (ARBEx, POSTER_V2); ``shared/specs/baselines.md`` §2.4 (ARM),
§3.3 and §3.5 (Ad-Corre), §4.3 and §4.4 (Diversified ESR / MA-Net), §5.1 (ESR), §5.2 (MA-Net).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..registry import Registry

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ToChannels",
    "GaussianNoise",
    "RandomApplyOneOf",
    "ToBGR",
    "TransformSpec",
    "SpecCompose",
    "build_transforms",
    "transform_spec",
    "list_presets",
    "describe",
    "build_step",
    "random_erasing",
    "normalize_stats",
    "denormalize",
    "to_display",
    "augmentation_gallery",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

ImageLike = Image.Image | np.ndarray


# -- building blocks ---------------------------------------------------------------------------------------------------
def _to_pil(img: ImageLike) -> Image.Image:
    if isinstance(img, Image.Image):
        return img
    if isinstance(img, np.ndarray):
        arr = img
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.dtype != np.uint8:
            raise TypeError(
                f"expected a uint8 image array (H, W) or (H, W, 3), got dtype {arr.dtype}; "
                "scale it to 0..255 and cast with .astype(np.uint8)"
            )
        if arr.ndim == 2:
            return Image.fromarray(arr, "L")
        if arr.ndim == 3 and arr.shape[2] in (3, 4):
            return Image.fromarray(arr, "RGB" if arr.shape[2] == 3 else "RGBA")
        raise ValueError(f"expected an image array (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    raise TypeError(f"expected a PIL image or a uint8 numpy array, got {type(img).__name__}")


class ToChannels:
    """Convert a PIL image (or an RGB/gray uint8 array) to ``channels`` channels.

    ``channels=3``: gray images are replicated into R = G = B (PIL's ``L -> RGB``); RGBA drops alpha.
    ``channels=1``: colour images become luminance (ITU-R 601-2, PIL's ``RGB -> L``); gray images pass through.
    Arrays are read as RGB (convert OpenCV's BGR first).
    """

    def __init__(self, channels: int = 3) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.channels = channels

    def __call__(self, img: ImageLike) -> Image.Image:
        pil = _to_pil(img)
        mode = "RGB" if self.channels == 3 else "L"
        return pil if pil.mode == mode else pil.convert(mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channels={self.channels})"


class GaussianNoise:
    """Additive Gaussian pixel noise on a uint8 PIL image, the way ARM's ``add_gaussian_noise`` does it.

    ``out = uint8(clip(x + N(mean, var), 0, 255))`` on the 0..255 scale, independently per pixel and channel. The cast
    truncates like NumPy's ``astype(np.uint8)`` in the official code (``round=True`` rounds instead). Draws from
    torch's RNG. Source: ``baselines.md`` §2.4 (variance 30, sigma ~5.48).
    """

    def __init__(self, var: float = 30.0, mean: float = 0.0, round: bool = False) -> None:
        if var < 0:
            raise ValueError(f"noise variance must be >= 0, got {var}")
        self.var, self.mean, self.round = float(var), float(mean), bool(round)

    def __call__(self, img: Image.Image) -> Image.Image:
        pil = _to_pil(img)
        arr = np.asarray(pil, dtype=np.float64)
        noise = torch.randn(arr.shape, dtype=torch.float64).numpy() * math.sqrt(self.var) + self.mean
        out = np.clip(arr + noise, 0.0, 255.0)
        out = np.rint(out) if self.round else np.floor(out)
        return Image.fromarray(out.astype(np.uint8), pil.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(var={self.var}, mean={self.mean}, round={self.round})"


class RandomApplyOneOf:
    """With probability ``p`` apply exactly one of ``transforms``, chosen uniformly (torch RNG).

    ARM's basic augmentation is ``RandomApplyOneOf([hflip, GaussianNoise(var=30)], p=0.5)`` (``baselines.md`` §2.4).
    """

    def __init__(self, transforms: Sequence[Callable[[Any], Any]], p: float = 0.5) -> None:
        if not transforms:
            raise ValueError("RandomApplyOneOf needs at least one transform")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.transforms, self.p = list(transforms), float(p)

    def __call__(self, img: Any) -> Any:
        if torch.rand(1).item() >= self.p:
            return img
        k = int(torch.randint(len(self.transforms), (1,)).item())
        return self.transforms[k](img)

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"{type(self).__name__}(p={self.p}, [{inner}])"


class ToBGR:
    """Reverse the channel order of a (3, H, W) tensor (RGB <-> BGR); a 1-channel tensor passes through.

    ESR's AffectNet/FER+ code reads images with OpenCV and never converts, so its released weights expect BGR
    (``baselines.md`` §1.2).
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-3) if x.shape[-3] == 3 else x

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def normalize_stats(
    mean: Sequence[float], std: Sequence[float], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``mean``/``std`` for ``channels`` channels (3-value stats are averaged for 1 channel)."""
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != len(std):
        raise ValueError(f"mean has {len(mean)} values but std has {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be > 0, got {std}")
    if len(mean) == channels:
        return mean, std
    if len(mean) == 1:
        return mean * channels, std * channels
    if channels == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    raise ValueError(f"mean/std have {len(mean)} values; give 1 or {channels} for {channels}-channel images")


def random_erasing(
    p: float = 0.5,
    scale: Sequence[float] = (0.02, 0.33),
    ratio: Sequence[float] = (0.3, 3.3),
    fill: str | float | Sequence[float] = "zero",
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels: int = 3,
) -> T.RandomErasing:
    """torchvision's RandomErasing on a (C, H, W) tensor, with the fill stated in pixel terms.

    Args:
        p: probability of erasing one rectangle.
        scale: range of the erased area as a fraction of the image.
        ratio: range of the rectangle's aspect ratio.
        fill: ``"zero"`` writes 0 in the tensor's current space: after ImageNet normalisation that is the mean colour
            (the POSTER_V2 / ARM / Diversified style, which erase *after* ``Normalize``), before it black.
            ``"black"`` writes pixel value 0 expressed through ``mean``/``std`` (black even after normalisation).
            ``"random"`` fills with N(0, 1) noise per pixel (torchvision's ``value="random"``). A number or a
            per-channel sequence is written as is.
        mean, std: the normalisation in force where erasing runs (needed for ``fill="black"``).
        channels: channel count of the tensor.
    """
    if fill == "zero":
        value: Any = 0
    elif fill == "random":
        value = "random"
    elif fill == "black":
        if mean is None or std is None:
            value = 0
        else:
            m, s = normalize_stats(mean, std, channels)
            value = [-mi / si for mi, si in zip(m, s, strict=True)]
    elif isinstance(fill, str):
        raise ValueError(f"unknown erasing fill {fill!r}; expected 'zero', 'black', 'random' or numbers")
    elif isinstance(fill, (int, float)):
        value = float(fill)
    else:
        value = [float(v) for v in fill]
        if len(value) not in (1, channels):
            raise ValueError(f"erasing fill has {len(value)} values; give 1 or {channels}")
    return T.RandomErasing(p=p, scale=tuple(scale), ratio=tuple(ratio), value=value)


# -- steps: name -> transform ------------------------------------------------------------------------------------------
def _interp(name: str) -> InterpolationMode:
    try:
        return InterpolationMode(name)
    except ValueError:
        known = ", ".join(m.value for m in InterpolationMode)
        raise ValueError(f"unknown interpolation {name!r}; expected one of {known}") from None


def _size(size: int | Sequence[int]) -> int | list[int]:
    return int(size) if isinstance(size, (int, np.integer)) else [int(s) for s in size]


def _tuple_or_none(x: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if x is None else tuple(float(v) for v in x)


# name -> factory ``(ctx, **params) -> transform``; ctx carries ``channels``, ``mean``, ``std`` (see build_step)
_STEPS: Registry[Callable[..., Callable[[Any], Any]]] = Registry("transform step")


@_STEPS.register("random_apply")
def _step_random_apply(ctx: dict[str, Any], p: float, steps: Sequence[dict[str, Any]]) -> Callable[[Any], Any]:
    return T.RandomApply([build_step(s, ctx) for s in steps], p=p)


@_STEPS.register("one_of")
def _step_one_of(ctx: dict[str, Any], p: float, steps: Sequence[dict[str, Any]]) -> Callable[[Any], Any]:
    return RandomApplyOneOf([build_step(s, ctx) for s in steps], p=p)


@_STEPS.register("normalize")
def _step_normalize(ctx: dict[str, Any], mean: Sequence[float], std: Sequence[float]) -> Callable[[Any], Any]:
    m, s = normalize_stats(mean, std, ctx["channels"])
    return T.Normalize(mean=m, std=s)


@_STEPS.register("random_erasing")
def _step_erasing(
    ctx: dict[str, Any],
    p: float = 0.5,
    scale: Sequence[float] = (0.02, 0.33),
    ratio: Sequence[float] = (0.3, 3.3),
    fill: Any = "zero",
) -> Callable[[Any], Any]:
    return random_erasing(p, scale, ratio, fill, mean=ctx.get("mean"), std=ctx.get("std"), channels=ctx["channels"])


_STEPS.add("to_channels", lambda ctx, channels=None: ToChannels(channels or ctx["channels"]))
_STEPS.add(
    "resize",
    lambda ctx, size, interpolation="bilinear": T.Resize(
        _size(size), interpolation=_interp(interpolation), antialias=True
    ),
)
_STEPS.add("center_crop", lambda ctx, size: T.CenterCrop(_size(size)))
_STEPS.add("hflip", lambda ctx, p=0.5: T.RandomHorizontalFlip(p))
_STEPS.add("vflip", lambda ctx, p=0.5: T.RandomVerticalFlip(p))
_STEPS.add(
    "random_crop",
    lambda ctx, size, padding=None, pad_if_needed=False, padding_mode="constant": T.RandomCrop(
        _size(size), padding=padding, pad_if_needed=pad_if_needed, padding_mode=padding_mode
    ),
)
_STEPS.add(
    "random_resized_crop",
    lambda ctx, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bilinear": T.RandomResizedCrop(
        _size(size), scale=tuple(scale), ratio=tuple(ratio), interpolation=_interp(interpolation), antialias=True
    ),
)
_STEPS.add(
    "random_affine",
    lambda ctx, degrees, translate=None, scale=None, shear=None, interpolation="nearest": T.RandomAffine(
        degrees,
        translate=_tuple_or_none(translate),
        scale=_tuple_or_none(scale),
        shear=shear,
        interpolation=_interp(interpolation),
    ),
)
_STEPS.add(
    "random_rotation",
    lambda ctx, degrees, interpolation="nearest": T.RandomRotation(degrees, interpolation=_interp(interpolation)),
)
_STEPS.add(
    "color_jitter",
    lambda ctx, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0: T.ColorJitter(
        brightness, contrast, saturation, hue
    ),
)
_STEPS.add("gaussian_noise", lambda ctx, var=30.0, mean=0.0, round=False: GaussianNoise(var, mean, round))
_STEPS.add("to_tensor", lambda ctx: T.ToTensor())
_STEPS.add("to_bgr", lambda ctx: ToBGR())


def build_step(step: dict[str, Any], ctx: dict[str, Any] | None = None) -> Callable[[Any], Any]:
    """Instantiate one step ``{"name": ..., **params}``; ``ctx`` carries ``channels``, ``mean``, ``std``."""
    ctx = {"channels": 3, "mean": None, "std": None, **(ctx or {})}
    params = dict(step)
    name = params.pop("name", None)
    if name not in _STEPS:
        raise ValueError(f"unknown transform step {name!r}; known steps: {', '.join(_STEPS.names())}")
    try:
        return _STEPS.get(name)(ctx, **params)
    except TypeError as exc:
        raise TypeError(f"transform step {name!r}: bad parameters {params} ({exc})") from None


# -- pipeline spec ----------------------------------------------------------------------------------------------------
@dataclass
class TransformSpec:
    """A transform pipeline as data (JSON-serialisable; runs record it).

    Attributes:
        method: preset name (``"poster_v2"``, ``"arm"``, ...) or ``"custom"``.
        train: train (augmenting) or eval pipeline.
        img_size: output side length H = W.
        channels: output channel count C (1 or 3).
        mean, std: the normalisation applied (``None`` when the pipeline does not normalise, i.e. pixels / 255).
        bgr: whether the output tensor is in BGR channel order.
        steps: ordered steps, each ``{"name": ..., **params}`` (see :func:`build_step`).
        source: where the recipe comes from (spec section) and what differs from the official code.
    """

    method: str
    train: bool
    img_size: int
    channels: int = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bgr: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d))  # tuples -> lists: what a JSON round trip gives

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransformSpec:
        d = dict(d)
        for k in ("mean", "std"):
            if d.get(k) is not None:
                d[k] = tuple(float(v) for v in d[k])
        d["steps"] = copy.deepcopy(list(d.get("steps", [])))
        return cls(**d)

    def build(self) -> SpecCompose:
        """The callable pipeline ``PIL image -> (C, H, W) float tensor``."""
        ctx = {"channels": self.channels, "mean": self.mean, "std": self.std}
        return SpecCompose([build_step(s, ctx) for s in self.steps], spec=self)


class SpecCompose(T.Compose):
    """``torchvision.transforms.Compose`` that remembers the :class:`TransformSpec` it was built from."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]], spec: TransformSpec) -> None:
        super().__init__(list(transforms))
        self.spec = spec


# -- presets ----------------------------------------------------------------------------------------------------------
Steps = list[dict[str, Any]]


def _erase(p: float, scale: tuple[float, float], fill: str = "zero") -> dict[str, Any]:
    return {"name": "random_erasing", "p": p, "scale": list(scale), "ratio": [0.3, 3.3], "fill": fill}


def _preset_poster_v2(s: int) -> Steps:
    """POSTER_V2 RAF-DB: Resize(s, s) -> HFlip -> ToTensor -> Normalize(ImageNet) -> RandomErasing(p 0.5, 2-10 %).

    Erasing runs after normalisation with value 0, i.e. it paints the ImageNet mean colour. Source: ``arbex.md``
    §1.1 and §4.3 (POSTER_V2 ``main.py``, RAF-DB branch).
    """
    return [{"name": "resize", "size": [s, s]}, {"name": "hflip", "p": 0.5}, _TENSOR, _NORM, _erase(0.5, (0.02, 0.1))]


def _preset_poster_v2_affectnet(s: int) -> Steps:
    """POSTER_V2 AffectNet-7/-8 and CAER-S: as RAF-DB but RandomErasing(p=1, scale=(0.05, 0.05)).

    Source: ``arbex.md`` §1.1 and §4.3. Pair it with ``build_sampler("oversample", ...)`` for AffectNet.
    """
    return [{"name": "resize", "size": [s, s]}, {"name": "hflip", "p": 0.5}, _TENSOR, _NORM, _erase(1.0, (0.05, 0.05))]


def _preset_arbex(s: int) -> Steps:
    """ARBEx ``train.py`` (the pipeline actually used): Resize(short side int(1.1 s)) -> RandomCrop(s) -> HFlip ->
    ToTensor -> Normalize(ImageNet). No erasing. Source: ``arbex.md`` §1.1 (code-A, "train transform (used)").
    """
    return [
        {"name": "resize", "size": int(s * 1.1)},
        {"name": "random_crop", "size": s},
        {"name": "hflip", "p": 0.5},
        _TENSOR,
        _NORM,
    ]


def _preset_arbex_heavy(s: int) -> Steps:
    """ARBEx ``DatasetXY`` "heavy augmentation" (defined but unused by the official ``train.py``): Resize(s, s) ->
    HFlip -> VFlip -> ColorJitter() (default arguments: a no-op, kept for fidelity) -> ToTensor ->
    RandomErasing(p=1, 5 %, black: it runs before Normalize) -> Normalize(ImageNet). Source: ``arbex.md`` §1.1, §10.11.
    """
    return [
        {"name": "resize", "size": [s, s]},
        {"name": "hflip", "p": 0.5},
        {"name": "vflip", "p": 0.5},
        {"name": "color_jitter"},
        _TENSOR,
        _erase(1.0, (0.05, 0.05)),
        _NORM,
    ]


def _preset_arm(s: int) -> Steps:
    """ARM ``train_raf-db.py``: with p 0.5 one of {horizontal flip, Gaussian noise (mean 0, variance 30 on 0..255,
    clipped, truncated to uint8)} chosen 50/50, on the image *before* resizing -> Resize(s, s) -> ToTensor ->
    Normalize(ImageNet) -> RandomErasing(p 0.5, 2-10 %, after normalisation). Source: ``baselines.md`` §2.4.
    """
    aug = {
        "name": "one_of",
        "p": 0.5,
        "steps": [{"name": "hflip", "p": 1.0}, {"name": "gaussian_noise", "var": 30.0, "mean": 0.0}],
    }
    return [aug, {"name": "resize", "size": [s, s]}, _TENSOR, _NORM, _erase(0.5, (0.02, 0.1))]


def _preset_scn(s: int) -> Steps:
    """SCN ``train.py``: ARM's pipeline, which descends from it, with RandomErasing(p 0.5, 2-25 %): with p 0.5 one of
    {horizontal flip, Gaussian noise (variance 30 on 0..255)} before resizing -> Resize(s, s) -> ToTensor ->
    Normalize(ImageNet) -> RandomErasing(p 0.5, 2-25 %, after normalisation). Source: ``docs/specs/scn.md`` §3.
    """
    aug = {
        "name": "one_of",
        "p": 0.5,
        "steps": [{"name": "hflip", "p": 1.0}, {"name": "gaussian_noise", "var": 30.0, "mean": 0.0}],
    }
    return [aug, {"name": "resize", "size": [s, s]}, _TENSOR, _NORM, _erase(0.5, (0.02, 0.25))]


def _preset_adcorre(s: int) -> Steps:
    """Ad-Corre: Resize(s, s) -> pixels / 255 in [0, 1], no mean/std and no online augmentation.

    The official training reads folders augmented offline (recipe not released; ``_do_augment`` is commented out), so
    the online pipeline is the same for train and eval. Use ``"default"`` for online augmentation in its place.
    Source: ``baselines.md`` §3.1, §3.3, §3.5.
    """
    return [{"name": "resize", "size": [s, s]}, _TENSOR]


def _preset_esr(s: int) -> Steps:
    """ESR (AffectNet, FER+) and the Diversified ESR / MA-Net AffectNet and FER+ scripts: Resize(s, s) ->
    ColorJitter(brightness 0.5, contrast 0.5) -> HFlip -> RandomAffine(30 deg, translate 0.1, scale 1.0-1.25,
    bilinear) -> ToTensor (pixels / 255, no mean/std). The official loaders read with OpenCV and never convert, so the
    released ESR weights expect **BGR**: this preset outputs BGR unless ``bgr=False``. Official inputs are 96 px
    (ESR) and 224 px (Diversified MA-Net); the Resize is ours (the official data were resized offline).
    Source: ``baselines.md`` §1.2, §4.3, §4.4, §5.1.
    """
    return [
        {"name": "resize", "size": [s, s]},
        {"name": "color_jitter", "brightness": 0.5, "contrast": 0.5},
        {"name": "hflip", "p": 0.5},
        {
            "name": "random_affine",
            "degrees": 30,
            "translate": [0.1, 0.1],
            "scale": [1.0, 1.25],
            "interpolation": "bilinear",
        },
        _TENSOR,
    ]


def _preset_diversified_rafdb(s: int) -> Steps:
    """Diversified ESR (96 px) and Diversified MA-Net (224 px) on RAF-DB: Resize(s, s) -> HFlip ->
    RandomApply([RandomRotation(20), RandomCrop(s, padding 32)], p 0.2) -> ToTensor -> Normalize(ImageNet) ->
    RandomErasing(p 0.5, 2-25 %, after normalisation). The padding stays 32 px at every size, as in both official
    scripts. Source: ``baselines.md`` §4.3, §4.4 (``esr_rafdb.py``, ``manet_rafdb.py``).
    """
    rot_crop = {
        "name": "random_apply",
        "p": 0.2,
        "steps": [{"name": "random_rotation", "degrees": 20}, {"name": "random_crop", "size": s, "padding": 32}],
    }
    return [
        {"name": "resize", "size": [s, s]},
        {"name": "hflip", "p": 0.5},
        rot_crop,
        _TENSOR,
        _NORM,
        _erase(0.5, (0.02, 0.25)),
    ]


def _preset_manet(s: int) -> Steps:
    """MA-Net ``main.py``: RandomResizedCrop(s) (torchvision default scale 0.08-1, ratio 3/4-4/3) -> HFlip -> ToTensor
    (pixels / 255, no mean/std). Source: ``baselines.md`` §5.2.
    """
    return [{"name": "random_resized_crop", "size": s}, {"name": "hflip", "p": 0.5}, _TENSOR]


def _preset_resnet18(s: int) -> Steps:
    """fernb's standard recipe for an ImageNet-style ResNet-18 (not an official FER pipeline): Resize(s, s) ->
    RandomResizedCrop(s, scale 0.8-1, ratio 0.9-1.1) -> HFlip -> ColorJitter(0.2, 0.2) -> RandomRotation(10) ->
    ToTensor -> Normalize(ImageNet) -> RandomErasing(p 0.25, 2-10 %).
    """
    return [
        {"name": "resize", "size": [s, s]},
        {"name": "random_resized_crop", "size": s, "scale": [0.8, 1.0], "ratio": [0.9, 1.1]},
        {"name": "hflip", "p": 0.5},
        {"name": "color_jitter", "brightness": 0.2, "contrast": 0.2},
        {"name": "random_rotation", "degrees": 10, "interpolation": "bilinear"},
        _TENSOR,
        _NORM,
        _erase(0.25, (0.02, 0.1)),
    ]


def _preset_default(s: int) -> Steps:
    """fernb's default (not an official pipeline): Resize(s, s) -> HFlip -> light RandomAffine(10 deg, translate 0.05,
    scale 0.95-1.05) -> ToTensor -> Normalize(ImageNet) -> RandomErasing(p 0.5, 2-10 %).
    """
    return [
        {"name": "resize", "size": [s, s]},
        {"name": "hflip", "p": 0.5},
        {
            "name": "random_affine",
            "degrees": 10,
            "translate": [0.05, 0.05],
            "scale": [0.95, 1.05],
            "interpolation": "bilinear",
        },
        _TENSOR,
        _NORM,
        _erase(0.5, (0.02, 0.1)),
    ]


_TENSOR: dict[str, Any] = {"name": "to_tensor"}
_NORM: dict[str, Any] = {"name": "normalize"}  # mean/std filled in from the spec


@dataclass(frozen=True)
class _Preset:
    fn: Callable[[int], Steps]
    normalize: bool  # official pipeline applies mean/std (ImageNet unless overridden)
    bgr: bool = False


# name -> preset; a name's aliases keep the official scripts' spellings
_PRESETS: Registry[_Preset] = Registry("transform preset")
_PRESETS.add("poster_v2", _Preset(_preset_poster_v2, True), aliases=("posterv2", "poster_v2_rafdb"))
_PRESETS.add("poster_v2_affectnet", _Preset(_preset_poster_v2_affectnet, True), aliases=("poster_v2_caer",))
_PRESETS.add("arbex", _Preset(_preset_arbex, True))
_PRESETS.add("arbex_heavy", _Preset(_preset_arbex_heavy, True))
_PRESETS.add("arm", _Preset(_preset_arm, True))
_PRESETS.add("scn", _Preset(_preset_scn, True))
_PRESETS.add("adcorre", _Preset(_preset_adcorre, False), aliases=("ad_corre", "ad-corre"))
_PRESETS.add("esr", _Preset(_preset_esr, False, bgr=True), aliases=("diversified_affectnet", "diversified_ferplus"))
_PRESETS.add(
    "diversified_rafdb",
    _Preset(_preset_diversified_rafdb, True),
    aliases=("diversified_esr_rafdb", "diversified_manet_rafdb"),
)
_PRESETS.add("manet", _Preset(_preset_manet, False), aliases=("ma_net", "ma-net"))
_PRESETS.add("resnet18", _Preset(_preset_resnet18, True), aliases=("resnet",))
_PRESETS.add("default", _Preset(_preset_default, True))


def list_presets() -> list[str]:
    """Preset names accepted by :func:`build_transforms` (aliases not listed)."""
    return _PRESETS.names()


def has_preset(method: str) -> bool:
    """Whether ``method`` names a transform preset or one of its aliases."""
    return str(method).strip().lower().replace(" ", "_") in _PRESETS


def _resolve(method: str) -> tuple[str, _Preset]:
    key = str(method).strip().lower().replace(" ", "_")
    if key not in _PRESETS:
        raise ValueError(
            f"unknown transform preset {method!r}; known presets: {', '.join(list_presets())} "
            f"(aliases: {', '.join(_PRESETS.aliases())})"
        )
    key = _PRESETS.canonical(key)
    return key, _PRESETS.get(key)


def transform_spec(
    method: str,
    train: bool,
    img_size: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    grayscale_to_rgb: bool = True,
    bgr: bool | None = None,
) -> TransformSpec:
    """The :class:`TransformSpec` of a preset (see :func:`build_transforms` for the arguments)."""
    name, preset = _resolve(method)
    if not isinstance(img_size, (int, np.integer)) or isinstance(img_size, bool) or img_size < 8:
        raise ValueError(f"img_size must be an integer >= 8 (48..224 are typical), got {img_size!r}")
    s = int(img_size)
    channels = 3 if grayscale_to_rgb else 1
    if (mean is None) != (std is None):
        raise ValueError("give both mean= and std=, or neither (the preset's own normalisation)")
    if mean is not None:
        m, sd = normalize_stats(mean, std, channels)
    elif preset.normalize:
        m, sd = normalize_stats(IMAGENET_MEAN, IMAGENET_STD, channels)
    else:
        m = sd = None
    out_bgr = preset.bgr if bgr is None else bool(bgr)

    if train:
        steps = preset.fn(s)
    else:
        steps = [{"name": "resize", "size": [s, s]}, _TENSOR, _NORM]
    steps = copy.deepcopy(steps)
    final: Steps = [{"name": "to_channels", "channels": channels}]
    for st in steps:
        if st["name"] == "normalize":
            if m is None:
                continue
            st = {"name": "normalize", "mean": list(m), "std": list(sd)}
        final.append(st)
        if st["name"] == "to_tensor":
            if out_bgr:
                final.append({"name": "to_bgr"})
            if m is not None and not any(x["name"] == "normalize" for x in steps):
                final.append({"name": "normalize", "mean": list(m), "std": list(sd)})
    doc = " ".join((preset.fn.__doc__ or "").split())
    source = (
        doc
        if train
        else f"eval path of {name!r}: Resize(s, s) -> ToTensor -> Normalize only (as in the official codes)"
    )
    return TransformSpec(
        method=name,
        train=bool(train),
        img_size=s,
        channels=channels,
        mean=None if m is None else tuple(m),
        std=None if sd is None else tuple(sd),
        bgr=out_bgr,
        steps=final,
        source=source,
    )


def build_transforms(
    method: str,
    train: bool,
    img_size: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    grayscale_to_rgb: bool = True,
    bgr: bool | None = None,
) -> SpecCompose:
    """The train or eval transform of a method: ``PIL image (any mode) -> (C, img_size, img_size) float tensor``.

    Args:
        method: a preset (:func:`list_presets`): ``"poster_v2"``, ``"poster_v2_affectnet"``, ``"arbex"``,
            ``"arbex_heavy"``, ``"arm"``, ``"adcorre"``, ``"esr"``, ``"diversified_rafdb"``, ``"manet"``,
            ``"resnet18"``, ``"default"``. Each preset's docstring (and ``spec.source``) cites its spec section.
        train: the augmenting train pipeline, or the eval pipeline (Resize(s, s) + ToTensor + the method's Normalize).
        img_size: output side length (any size >= 8; 48..224 in practice).
        mean, std: override the normalisation. By default the preset's own: ImageNet mean/std, or none (pixels / 255)
            for ``adcorre``, ``esr`` and ``manet``. Giving them adds a Normalize to presets that have none.
        grayscale_to_rgb: True: C = 3 (gray images replicated); False: C = 1 (colour images converted to luminance;
            3-value mean/std are averaged).
        bgr: output BGR channel order (default: the preset's; only ``esr`` is BGR). Mean/std are then in BGR order.

    Returns:
        A :class:`SpecCompose`; its ``.spec`` is the JSON-serialisable :class:`TransformSpec`.

    Raises:
        ValueError: for an unknown preset (the message lists the known ones) or a bad size.
    """
    return transform_spec(
        method, train, img_size, mean=mean, std=std, grayscale_to_rgb=grayscale_to_rgb, bgr=bgr
    ).build()


def describe(transform: Callable[[Any], Any] | TransformSpec) -> dict[str, Any]:
    """A JSON-serialisable description of a transform (the spec when it has one, else the reprs of its steps)."""
    if isinstance(transform, TransformSpec):
        return transform.to_dict()
    spec = getattr(transform, "spec", None)
    if isinstance(spec, TransformSpec):
        return spec.to_dict()
    if isinstance(transform, T.Compose):
        return {"method": "custom", "steps": [repr(t) for t in transform.transforms]}
    return {"method": "custom", "steps": [repr(transform)]}


# -- display helpers --------------------------------------------------------------------------------------------------
def denormalize(tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``Normalize``: ``x * std + mean`` per channel, for (C, H, W) or (B, C, H, W); returns a new tensor."""
    c = tensor.shape[-3]
    m, s = normalize_stats(mean, std, c)
    shape = (c, 1, 1)
    mt = torch.tensor(m, dtype=tensor.dtype, device=tensor.device).view(shape)
    st = torch.tensor(s, dtype=tensor.dtype, device=tensor.device).view(shape)
    return tensor * st + mt


def to_display(
    tensor: torch.Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    bgr: bool = False,
) -> np.ndarray:
    """A (C, H, W) image tensor as an (H, W, 3) uint8 array for plotting.

    Float tensors are read as [0, 1] (after undoing ``mean``/``std`` when given) and clipped; uint8 tensors are
    taken as is. One channel is replicated to three; ``bgr=True`` swaps the channels back to RGB.
    """
    x = tensor.detach().cpu()
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected a (C, H, W) tensor with C in (1, 3), got shape {tuple(tensor.shape)}")
    if x.dtype == torch.uint8:
        arr = x
    else:
        x = x.float()
        if mean is not None and std is not None:
            x = denormalize(x, mean, std)
        arr = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    if bgr and arr.shape[0] == 3:
        arr = arr.flip(0)
    if arr.shape[0] == 1:
        arr = arr.expand(3, -1, -1)
    return np.ascontiguousarray(arr.permute(1, 2, 0).numpy())


def augmentation_gallery(
    image: ImageLike,
    transform: Callable[[Any], torch.Tensor],
    n: int = 8,
    seed: int = 0,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> list[np.ndarray]:
    """``n`` augmented views of one image as (H, W, 3) uint8 arrays (data only; plotting lives in ``fernb.viz``).

    The views are drawn under ``torch.manual_seed(seed)`` inside a forked RNG, so the gallery is the same on every
    call and the caller's RNG state is untouched. Mean/std (and BGR order) come from ``transform.spec`` when present.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    spec = getattr(transform, "spec", None)
    bgr = False
    if isinstance(spec, TransformSpec):
        mean = spec.mean if mean is None else mean
        std = spec.std if std is None else std
        bgr = spec.bgr
    img = _to_pil(image)
    views: list[np.ndarray] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(n):
            out = transform(img.copy())
            if not isinstance(out, torch.Tensor):
                out = TF.pil_to_tensor(_to_pil(out) if not isinstance(out, Image.Image) else out)
            views.append(to_display(out, mean, std, bgr=bgr))
    return views
