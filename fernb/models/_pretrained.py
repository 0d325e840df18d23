"""Pretrained configs: what a model expects of its input and what its official weights are (timm's ``pretrained_cfg``).

Every family registers one :class:`PretrainedCfg` per entry point and preset (``"poster_v2.official"``,
``"poster_v2.tiny"``: timm's ``model.tag`` names) in a table the registry can query without building anything
(:func:`fernb.models.get_pretrained_cfg`, :func:`fernb.models.list_pretrained`). A built model carries its own,
``model.pretrained_cfg``: its preset's, with the input size and class count of the model as built.

Weights are metadata here: fernb never downloads anything. ``weight_files`` and ``source`` say which files the
authors published and where; load a local copy with ``create_model(..., checkpoint=path)`` (or the config fields
that name local files, such as POSTER_V2's ``ir50_weights``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..registry import Registry

__all__ = [
    "PretrainedCfg",
    "PRETRAINED_CFGS",
    "register_pretrained_cfgs",
    "pretrained_cfg_of",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "UNIT_MEAN",
    "UNIT_STD",
    "matches_name",
    "resolve_names",
]

# The same values as fernb.data.transforms' (the models do not import the data layer for two constants; a test checks
# that they agree).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# pixels / 255 and nothing else (the Keras and OpenCV pipelines of Ad-Corre, ESR and MA-Net)
UNIT_MEAN: tuple[float, float, float] = (0.0, 0.0, 0.0)
UNIT_STD: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class PretrainedCfg:
    """Input and weight facts of one model preset (metadata only; nothing is downloaded).

    Attributes:
        input_size: (C, H, W) the model is meant for.
        mean: per-channel mean subtracted from pixels in [0, 1] (:data:`UNIT_MEAN`: none).
        std: per-channel std they are divided by (:data:`UNIT_STD`: none).
        interpolation: resize filter of the evaluation transform.
        crop_pct: share of the resized image the evaluation crop keeps (1.0: all of it).
        crop_mode: ``"squash"``: resize to ``input_size`` without keeping the aspect ratio and without a crop
            (fernb's evaluation transform); ``"center"``: resize the short side, then a centre crop.
        channel_order: ``"RGB"``, or ``"BGR"`` for weights trained on OpenCV images (ESR's).
        num_classes: classes of the head.
        first_conv: qualified names of the convolutions that read the image (input channels).
        classifier: qualified names of the modules and parameters whose shape depends on ``num_classes`` (what
            ``reset_classifier`` replaces and what a checkpoint of another class count cannot fill); ``*`` stands
            for one name component (``"branches.*.fc"``).
        weight_files: the official weight files' names (the preset's own; none for fernb's ``tiny`` presets).
        source: where the weights and the code are published.
        paper: the paper.
        notes: what else to know about the weights.
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    crop_mode: str = "squash"
    channel_order: str = "RGB"
    num_classes: int = 7
    first_conv: tuple[str, ...] = ()
    classifier: tuple[str, ...] = ()
    weight_files: tuple[str, ...] = ()
    source: str = ""
    paper: str = ""
    notes: str = ""

    @property
    def img_size(self) -> int:
        """Side of the square input."""
        return int(self.input_size[-1])

    def replace(self, **changes: Any) -> PretrainedCfg:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name (for run folders and JSON)."""
        return dataclasses.asdict(self)

    def is_classifier(self, key: str) -> bool:
        """Whether a state-dict key (or module name) belongs to one of the ``classifier`` names."""
        return any(matches_name(key, pattern, prefix=True) for pattern in self.classifier)


def matches_name(name: str, pattern: str, prefix: bool = False) -> bool:
    """``name`` is the qualified name ``pattern`` (``*``: one component), or with ``prefix`` a name inside it."""
    regex = r"\.".join("[^.]+" if part == "*" else re.escape(part) for part in pattern.split("."))
    return re.fullmatch(regex + (r"(?:\..+)?" if prefix else ""), name) is not None


def resolve_names(patterns: Iterable[str], names: Iterable[str]) -> list[str]:
    """The ``names`` each of ``patterns`` matches, in order."""
    names = list(names)
    return [n for p in patterns for n in names if matches_name(n, p)]


# "<entry point>.<preset>" -> cfg, filled where each family is defined
PRETRAINED_CFGS: Registry[PretrainedCfg] = Registry("pretrained cfg")


def register_pretrained_cfgs(cfgs: Mapping[str, PretrainedCfg]) -> dict[str, PretrainedCfg]:
    """Register a family's ``default_cfgs`` (names ``"<entry point>.<preset>"``) and return them.

    Raises:
        ValueError: a name without a preset, or one registered twice.
    """
    for name, cfg in cfgs.items():
        if name.count(".") != 1:
            raise ValueError(f"pretrained cfg names are '<entry point>.<preset>', got {name!r}")
        PRETRAINED_CFGS.register(name)(cfg)
    return dict(cfgs)


def pretrained_cfg_of(name: str, preset: str | None = None) -> PretrainedCfg:
    """The registered cfg of ``name`` (an entry point, or ``"<entry point>.<preset>"``) and ``preset``.

    Raises:
        KeyError: an unknown name or preset; the message lists the known ones.
    """
    if "." in name:
        name, _, tag = name.partition(".")
        if preset is not None and preset != tag:
            raise ValueError(f"{name}.{tag}: the name already gives the preset; preset={preset!r} contradicts it")
        preset = tag
    return PRETRAINED_CFGS.get(f"{name}.{preset or 'tiny'}")
