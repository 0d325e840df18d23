"""ARBEx: attentive feature extraction with reliability balancing ("arbex").

Paper: Wasi, Serbetar, Karatas, Shin, "ARBEx: Attentive Feature Extraction with Reliability Balancing for Robust
Facial Expression Learning", arXiv 2305.01486. Official code: takihasan/ARBEx (``arbex/train.py`` and
``arbex/models``). Reference: ``shared/specs/arbex.md`` §1-3, §10.

The network is an embedding backbone (the paper's: the POSTER_V2 feature extractor, :mod:`fernb.models.poster`,
without its linear classifier; see "Backbones" below for the others), plus

- an MLP head: 768 -> 384 -> 192 -> 96 -> C (Linear, ReLU, BatchNorm1d, Dropout 0.5) giving the primary distribution
  ``p = softmax(mlp(e) / T)``;
- learnable anchors ``A`` (C, k, D): ``d = ||e - A||``, ``l_g = sum_k softmax(-d / delta)`` over all C*k anchors;
- a self-attention branch giving ``l_a`` (see the table for what it attends over);
- confidences ``c(l) = 1 - H(l) / log C`` of p, l_g and l_a;
- the correction ``l_corr = (c_g l_g + c_a l_a) / (c_g + c_a)``, the mix ``m = c_p p + (1 - c_p) l_corr`` and the
  trust ramp ``final = (1 - t) p + t m`` (t: the trust, 0 -> 1 over training, see :mod:`fernb.losses.arbex`).

Two behaviours, one switch (``behaviour``); every row is also its own config field (None = "as the behaviour says"):

====================  =================================================  ===========================================
field                 ``official``: reproduces ``train.py`` exactly      ``fixed`` (default): the idea, no faults
====================  =================================================  ===========================================
attention_context     ``"batch"``: the (B, 8) projections go to          ``"anchors"``: each sample attends over
                      ``nn.MultiheadAttention`` as ONE unbatched         itself and the C*k anchors (its own
                      sequence of length B, so a sample's l_a (and its   sequence of 1 + C*k tokens, same Q/K/V
                      correction, final distribution, loss) depends on   and MHA weights): a prediction never
                      the other samples of its mini-batch                depends on its batch mates
anchor_init           zeros: all anchors equal, no anchor-loss           N(0, ``anchor_init_std``^2), std 0.5 ~ the
                      gradient at the start                              per-entry scale of the SE-gated LN
                                                                         embedding: anchors start apart, in range
detach_confidence     no: c_p, c_g, c_a carry gradients; the center      yes: confidences weight the mixing and
                      loss can be lowered by a less confident p          the center loss as constants
eval_correction       False: evaluation predicts argmax p; when True,    True: evaluation predicts from the same
                      the official eval branch uses anchors only and     corrected ``final`` as training, at the
                      multiplies l_g by c_p (not renormalised)           trust ``model.trust`` (1.0 = trained)
logs, sqrt, division  no epsilon: log(0), sqrt'(0) and 0/0 give          clamped by ``eps``; the correction falls
                      NaN or inf                                         back to the mean of l_g and l_a when
                                                                         c_g + c_a = 0
delta                 tied to the temperature (``train.py`` reads it     1.0 (``--hyperparam-delta``'s default)
                      from ``--hyperparam-temp``) unless set             unless set
frozen_bn_eval        no: BatchNorm of frozen backbones stays in train   yes: frozen branches keep their BN in
                      mode, running statistics drift                     eval mode
anchor loss (loss)    -(1/(k^2 sqrt(D))) sum ||a_i - a_j||^2: unbounded  hinge: mean over cross-class anchor pairs
                      below; for k > 1 only same-index anchors compared  of relu(margin - ||a_i - a_j|| / sqrt(D))^2
====================  =================================================  ===========================================

Both behaviours keep the rest of ``train.py``: class-weighted NLL on the trust-ramped distribution, the trust-ramped
anchor and center losses (:mod:`fernb.losses.arbex`), frozen IR-50 and MobileFaceNet when their weights are loaded.
Differences from the paper that both keep (the code is the reference): no 768 -> 128 reduction layer; one attention
head over C*k-wide projections; k = 1 anchor per class by default (``train.py``); the official ``SelfAttn`` is never
saved by the official code (an official checkpoint keeps our initialisation for it, with a warning).

**Backbones.** ``backbone`` picks the network that gives the embedding e (adapters in
:mod:`fernb.models._backbones`); everything from e on (head, anchors, attention, confidences, correction, both
behaviours, the loss) is the same code for all of them:

- ``"poster_v2"`` (default): the paper's. The only one allowed with ``behaviour="official"``, whose fidelity to
  ``train.py`` is defined on it. The POSTER_V2 config fields apply to it only.
- ``"resnet18"``: fernb's ResNet-18 trunk (:class:`~fernb.models.resnet.ResNetTrunk`; ``backbone_kwargs`` ``width``,
  ``stem``, ``stem_stride``) and global average pooling; D = 8 * width.
- ``"timm:<name>"``: ``timm.create_model(name, pretrained=False, num_classes=0, in_chans=3, **backbone_kwargs)``
  with its own pooling; D is the width of its pooled output. Random init (warned once) unless ``backbone_checkpoint``
  names a local weight file; nothing is downloaded.

For a CPU run: ``create_model("arbex", "tiny_resnet18")``, i.e. ``create_model("arbex", "tiny", backbone="resnet18",
backbone_kwargs={"width": 16, "stem": "small", "stem_stride": 1})``.

**Embedding normalisation** (``embed_norm``; None: ``"none"`` for POSTER_V2, ``"layernorm"`` for every other
backbone). POSTER's e is a LayerNorm output gated by an SE sigmoid: zero-centred, per-entry RMS ~0.5 in train and
eval mode alike. The head is tuned to that scale: the ``fixed`` anchors' std 0.5, delta = 1, the anchor-loss margin
(1 in RMS-per-dimension units) and the center loss's 1/sqrt(D). A pooled CNN embedding is not on that scale: it is
non-negative after the last ReLU, and its scale depends on the network and, at init, even on the mode (48 px, random
init, per-entry RMS train / eval: fernb resnet18 width 16 0.84 / 2.05; timm resnet10t 0.48 / 0.065;
mobilenetv3_small_050 0.14 / 0.004), and nothing bounds it while training. Near e = 0 every anchor is at about the
same distance and l_g says nothing about the sample. ``"layernorm"`` (``nn.LayerNorm(D)``, affine, eps 1e-6 as
POSTER's) gives each sample zero mean and unit per-entry RMS: a per-sample normalisation, so ``fixed`` predictions
still never depend on batch mates. The anchor init is kept: over anchors of std s, the distances of an embedding of
per-entry RMS r spread by about s sqrt(4r^2 + 2s^2) / (2 sqrt(r^2 + s^2)) whatever D is: 0.43 for POSTER (r = 0.5),
0.47 with the LayerNorm (r = 1), against delta = 1, so std 0.5 starts the anchor softmax equally sharp on every
backbone (and their mean pairwise RMS distance, 0.71, below the hinge margin 1, as on POSTER). ``"none"`` feeds the
raw pooled embedding (the only choice for ``official``).

The trust of ``forward`` is ``model.trust`` (1.0 by default: a trained model); the loss takes its own t from
``StepInfo``, so training is right either way. fernb's engine sets ``model.trust`` to the loss's trust before each
training step (train-time ``logits`` follow the ramp) and back to the configured value for validation.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from ._backbones import (
    ARBExBackbone,
    ResNet18Embedding,
    TimmEmbedding,
    TimmModel,
    build_backbone,
    load_backbone_weights,
    parse_backbone,
)
from ._base import FERModel, ModelOutput, check_num_classes, new_linear, prefixed_features
from ._builder import build_model
from ._convert import Rule, rename_key
from ._pretrained import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg, register_pretrained_cfgs
from ._registry import build_config, register_model
from ._weights import CheckpointMismatchError, read_state_dict
from .poster import (
    POSTER_FIRST_CONV,
    PosterBackboneConfig,
    PosterV2Backbone,
    _tiny_backbone,
    convert_backbone_state_dict,
    load_pretrained_parts,
)

__all__ = ["ARBExConfig", "ARBEx", "ARBExOutput", "read_official_arbex", "normalized_entropy", "arbex"]

BEHAVIOURS = ("fixed", "official")
EMBED_NORMS = ("none", "layernorm")
_OFFICIAL_PREFIXES = (
    "vit.",
    "classifier.net.",
    "anchors.anchors",
    "self_attn.",
    "face_landback.",
    "ir_back.",
    "VIT.",
    "landmark.path_",
)
_BEHAVIOUR_DEFAULTS: dict[str, dict[str, Any]] = {
    "official": dict(
        attention_context="batch",
        anchor_init="zeros",
        detach_confidence=False,
        eval_correction=False,
        frozen_bn_eval=False,
    ),
    "fixed": dict(
        attention_context="anchors",
        anchor_init="normal",
        detach_confidence=True,
        eval_correction=True,
        frozen_bn_eval=True,
    ),
}


@dataclass
class ARBExConfig(PosterBackboneConfig):
    """ARBEx: the backbone choice, POSTER_V2 backbone fields (see :class:`~fernb.models.poster.PosterBackboneConfig`;
    used only when ``backbone == "poster_v2"``, except ``img_size``) plus the head.

    Attributes:
        backbone: ``"poster_v2"`` (default), ``"resnet18"`` or ``"timm:<model name>"`` (module docstring).
        backbone_kwargs: arguments of the backbone: ``resnet18``: ``width``, ``stem``, ``stem_stride``; timm: any
            ``timm.create_model`` argument but ``pretrained``, ``num_classes``, ``in_chans``, ``checkpoint_path``
            (timm models that take ``img_size`` get the config's unless given here). Empty for ``poster_v2``.
        backbone_checkpoint: a local weight file for the ``resnet18`` or timm backbone (safetensors or a torch state
            dict, read with ``weights_only=True``), loaded strictly by the builder after construction; None: random
            init.
        embed_norm: ``"none"`` or ``"layernorm"`` on the pooled embedding; None: ``"none"`` for POSTER_V2,
            ``"layernorm"`` otherwise (module docstring).
        embed_dim: D. POSTER_V2: its token width; other backbones: set from the backbone when the model is built.
        num_classes: C (8 in the official code: Aff-Wild2).
        behaviour: ``"fixed"`` (default) or ``"official"``; fills every field below left at None (module table).
        hidden_sizes: MLP head widths (384, 192, 96).
        head_batch_norm: BatchNorm1d after each hidden ReLU (on in ``train.py``).
        head_dropout: dropout after each hidden layer.
        num_anchors: anchors per class k (``train.py``: 1; the ``Anchors`` class default is 10).
        attn_anchors: the attention output is C * attn_anchors wide, summed over attn_anchors (official 1).
        attn_heads: heads of the attention (official 1).
        temperature: T of the primary softmax.
        delta: scale of the anchor softmax; None: the temperature (official) or 1.0 (fixed).
        anchor_init: ``"zeros"`` or ``"normal"``; None: by behaviour.
        anchor_init_std: std of the ``"normal"`` anchor init.
        attention_context: ``"batch"`` or ``"anchors"``; None: by behaviour.
        eval_correction: predict from the corrected distribution in eval mode; None: by behaviour.
        detach_confidence: use confidences as constants; None: by behaviour.
        eps: clamp of the ``fixed`` behaviour's logs, sqrt and divisions.
        trust: the trust t of the forward pass (``model.trust``; the loss takes its own from ``StepInfo``).
        freeze_ir50, freeze_landmark: None: frozen iff their weights were loaded (``get_poster``).
        frozen_bn_eval: None: by behaviour.
    """

    freeze_ir50: bool | None = None
    freeze_landmark: bool | None = None
    frozen_bn_eval: bool | None = None  # type: ignore[assignment]
    num_classes: int = 8
    behaviour: str = "fixed"
    hidden_sizes: tuple[int, ...] = (384, 192, 96)
    head_batch_norm: bool = True
    head_dropout: float = 0.5
    num_anchors: int = 1
    attn_anchors: int = 1
    attn_heads: int = 1
    temperature: float = 1.0
    delta: float | None = None
    anchor_init: str | None = None
    anchor_init_std: float = 0.5
    attention_context: str | None = None
    eval_correction: bool | None = None
    detach_confidence: bool | None = None
    eps: float = 1e-8
    trust: float = 1.0
    backbone: str = "poster_v2"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    backbone_checkpoint: str | None = None
    embed_norm: str | None = None

    @classmethod
    def official(cls) -> ARBExConfig:
        """The published sizes: 224 -> 112 px POSTER_V2, 768-d, MLP 384/192/96, 8 classes, k = 1, T = delta = 1."""
        return cls()

    @classmethod
    def tiny(cls) -> ARBExConfig:
        """48 px, narrow POSTER_V2 (128-d embedding), one hidden layer of 128 with dropout 0.1: trains on a 2-core
        CPU. (A scaled-down 64/32/16 MLP learned next to nothing from scratch: 16% on FER+ valid after 300 steps where
        the one-layer head reaches 35%, as POSTER_V2's linear head does.)"""
        return cls(hidden_sizes=(128,), head_dropout=0.1, **_tiny_backbone())

    @classmethod
    def tiny_resnet18(cls) -> ARBExConfig:
        """The ``tiny`` head on fernb's ResNet-18 trunk: width 16, a 3x3 stride-1 stem (a 48 px face reaches
        ``layer4`` at 6x6), D = 128. The same as ``tiny`` with ``backbone="resnet18"``, ``backbone_kwargs={"width":
        16, "stem": "small", "stem_stride": 1}``."""
        return dataclasses.replace(
            cls.tiny(), backbone="resnet18", backbone_kwargs={"width": 16, "stem": "small", "stem_stride": 1}
        )

    def resolved(self) -> ARBExConfig:
        """A copy with every None field filled in from ``behaviour`` (``embed_norm`` from ``backbone``).

        Raises:
            ValueError: an unknown behaviour, backbone or choice; ``behaviour="official"`` on another backbone than
                POSTER_V2 or with an embedding norm; ``backbone_kwargs`` / ``backbone_checkpoint`` with POSTER_V2.
        """
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"ARBEx behaviour must be one of {BEHAVIOURS}, got {self.behaviour!r}")
        family, _ = parse_backbone(self.backbone)
        if self.behaviour == "official" and family != "poster_v2":
            raise ValueError(
                f"behaviour='official' reproduces train.py, whose fidelity is defined on the POSTER_V2 "
                f"backbone; backbone={self.backbone!r} needs behaviour='fixed'"
            )
        if family == "poster_v2" and (self.backbone_kwargs or self.backbone_checkpoint):
            raise ValueError(
                "backbone_kwargs and backbone_checkpoint are for the resnet18 and timm backbones; "
                "POSTER_V2 takes its sizes from the config fields (dims, embed_dim, ...) and its "
                "pretrained parts from ir50_weights / landmark_weights"
            )
        fill = {k: v for k, v in _BEHAVIOUR_DEFAULTS[self.behaviour].items() if getattr(self, k) is None}
        if self.delta is None:
            fill["delta"] = self.temperature if self.behaviour == "official" else 1.0
        if self.embed_norm is None:
            fill["embed_norm"] = "none" if family == "poster_v2" else "layernorm"
        cfg = dataclasses.replace(self, **fill)
        if cfg.embed_norm not in EMBED_NORMS:
            raise ValueError(f"embed_norm must be one of {EMBED_NORMS} (or None), got {cfg.embed_norm!r}")
        if cfg.behaviour == "official" and cfg.embed_norm != "none":
            raise ValueError("behaviour='official' has no embedding normalisation: set embed_norm='none' (or None)")
        if cfg.attention_context not in ("batch", "anchors"):
            raise ValueError(f"attention_context must be 'batch' or 'anchors', got {cfg.attention_context!r}")
        if cfg.anchor_init not in ("zeros", "normal"):
            raise ValueError(f"anchor_init must be 'zeros' or 'normal', got {cfg.anchor_init!r}")
        return cfg


@dataclass
class ARBExOutput(ModelOutput):
    """Everything ARBEx computes for a batch; shapes for B samples, C classes, k anchors per class, D = embed_dim.

    Attributes:
        logits: (B, C) scores the prediction is read from: ``log(prediction_dist)``, or ``head_logits`` when the
            prediction is the primary distribution (official evaluation).
        embedding: (B, D) the embedding the head reads (POSTER_V2: the SE embedding; after ``embed_norm``).
        head_logits: (B, C) MLP output.
        primary_dist: (B, C) p = softmax(head_logits / T).
        confidence_primary, confidence_anchor, confidence_attention: (B, 1) c_p, c_g, c_a.
        distances: (B, C, k) Euclidean distances to the anchors.
        anchor_dist: (B, C) l_g. attention_dist: (B, C) l_a.
        correction: (B, C) (c_g l_g + c_a l_a) / (c_g + c_a).
        mixed_dist: (B, C) c_p p + (1 - c_p) correction.
        final_dist: (B, C) (1 - t) p + t mixed at the model's trust t (what training trains, at t).
        prediction_dist: (B, C) the distribution predictions come from in the current mode.
        anchors: (C, k, D) the anchor parameter (for the loss; not a per-sample extra).
        behaviour: ``"fixed"`` or ``"official"`` (tells the loss which anchor loss and logs to use).
    """

    head_logits: Tensor | None = None
    primary_dist: Tensor | None = None
    confidence_primary: Tensor | None = None
    distances: Tensor | None = None
    anchor_dist: Tensor | None = None
    confidence_anchor: Tensor | None = None
    attention_dist: Tensor | None = None
    confidence_attention: Tensor | None = None
    correction: Tensor | None = None
    mixed_dist: Tensor | None = None
    final_dist: Tensor | None = None
    prediction_dist: Tensor | None = None
    anchors: Tensor | None = None
    behaviour: str = "fixed"

    def extras(self) -> dict[str, Tensor]:
        """Per-sample tensors by name (not ``logits``, ``anchors`` or ``behaviour``)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("logits", "anchors", "behaviour") and isinstance(getattr(self, f.name), Tensor)
        }


def normalized_entropy(p: Tensor, eps: float | None = None) -> Tensor:
    """H(p) / log C over the last dim: (B, C) -> (B,). ``eps=None`` takes log(p) unguarded, as the official code.

    The normaliser log C is rounded to float32 as the official ``torch.log(torch.tensor([C])).item()``.
    """
    norm = float(np.float32(math.log(p.shape[-1])))  # a Python constant: no tensor op inside a compiled graph
    logp = p.log() if eps is None else p.clamp_min(eps).log()
    return -(logp * p).sum(-1) / norm


class MLPHead(nn.Module):
    """ARBEx classification head: [Linear -> ReLU -> BatchNorm1d -> Dropout] per hidden size, then Linear to C."""

    def __init__(self, dim: int, hidden: tuple[int, ...], num_classes: int, batch_norm: bool, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for h in hidden:
            self.blocks.append(
                nn.Sequential(
                    OrderedDict(
                        fc=nn.Linear(dim, h),
                        act=nn.ReLU(),
                        norm=nn.BatchNorm1d(h) if batch_norm else nn.Identity(),
                        drop=nn.Dropout(dropout),
                    )
                )
            )
            dim = h
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(B, D) -> (B, C)."""
        for block in self.blocks:
            x = block(x)
        return self.fc(x)


class ReliabilityAttention(nn.Module):
    """ARBEx's attention branch: Q/K/V Linear(D -> C*k_att), one ``nn.MultiheadAttention``, softmax, sum over k_att.

    Args:
        dim: embedding width D.
        num_classes: C.
        attn_anchors: k_att.
        num_heads: MHA heads.
        context: ``"batch"`` (official: the batch is one sequence) or ``"anchors"`` (each sample's own sequence: the
            sample followed by the C*k anchors).
    """

    def __init__(self, dim: int, num_classes: int, attn_anchors: int, num_heads: int, context: str) -> None:
        super().__init__()
        width = num_classes * attn_anchors
        self.num_classes, self.attn_anchors, self.context = num_classes, attn_anchors, context
        self.q = nn.Linear(dim, width)
        self.k = nn.Linear(dim, width)
        self.v = nn.Linear(dim, width)
        self.mha = nn.MultiheadAttention(width, num_heads)

    def forward(self, e: Tensor, anchors: Tensor) -> Tensor:
        """e (B, D), anchors (C, k, D) -> attention distribution (B, C)."""
        b = e.shape[0]
        if self.context == "batch":
            out, _ = self.mha(self.q(e), self.k(e), self.v(e), need_weights=False)  # 2-D input: unbatched, length B
        else:
            a = anchors.reshape(-1, anchors.shape[-1])
            ka, va = self.k(a).unsqueeze(1).expand(-1, b, -1), self.v(a).unsqueeze(1).expand(-1, b, -1)
            key = torch.cat([self.k(e).unsqueeze(0), ka], 0)  # (1 + C*k, B, width), sequence first
            value = torch.cat([self.v(e).unsqueeze(0), va], 0)
            out, _ = self.mha(self.q(e).unsqueeze(0), key, value, need_weights=False)
            out = out[0]
        return out.softmax(-1).view(b, self.num_classes, self.attn_anchors).sum(-1)


class ARBEx(FERModel):
    """ARBEx: backbone embedding, MLP head, anchors, attention and reliability balancing (see the module docstring).

    Attributes:
        config: the resolved :class:`ARBExConfig` (no None left; ``embed_dim`` is the backbone's D).
        backbone: an :class:`~fernb.models._backbones.ARBExBackbone`: for ``"poster_v2"`` a
            :class:`~fernb.models.poster.PosterV2Backbone`, for the others an adapter
            (:mod:`fernb.models._backbones`).
        embed_norm: ``nn.LayerNorm(D)`` or ``nn.Identity()`` on the pooled embedding.
        head: :class:`MLPHead`. anchors: (C, k, D) parameter. attention: :class:`ReliabilityAttention`.
        embed_dim: D.
        trust: the trust t used by ``forward`` (float in [0, 1]); an engine may set it to the training progress.
    """

    config: ARBExConfig
    pretrained_tag = "arbex"
    _trust: Tensor
    _distrust: Tensor

    def __init__(self, cfg: ARBExConfig) -> None:
        super().__init__()
        cfg = cfg.resolved()
        self.default_behaviour = cfg.behaviour
        # no file is read here: the builder loads backbone_checkpoint / ir50_weights / landmark_weights afterwards
        self.backbone: ARBExBackbone = build_backbone(cfg, cfg.backbone, cfg.backbone_kwargs)
        d = int(self.backbone.embed_dim)
        if d != cfg.embed_dim:
            cfg = dataclasses.replace(cfg, embed_dim=d)
        self.config = cfg
        self.embed_dim = self.head_hidden_size = d
        self.num_features = int(self.backbone.num_features)
        self.feature_info = prefixed_features(self.backbone.feature_info, "backbone.")
        self.embed_norm = nn.LayerNorm(d, eps=1e-6) if cfg.embed_norm == "layernorm" else nn.Identity()
        self.head = MLPHead(d, tuple(cfg.hidden_sizes), cfg.num_classes, cfg.head_batch_norm, cfg.head_dropout)
        self.anchors = self._new_anchors(cfg.num_classes)
        self.attention = self._new_attention(cfg.num_classes)
        # t and 1 - t as tensors (rounded from Python floats, as a float operand would be): a compiled forward reads
        # them as inputs, so a new trust every step of the ramp needs no new graph
        self.register_buffer("_trust", torch.zeros(()), persistent=False)
        self.register_buffer("_distrust", torch.zeros(()), persistent=False)
        self.trust = float(cfg.trust)

    @property
    def trust(self) -> float:
        """The trust t of ``forward`` (float in [0, 1])."""
        return float(self._trust)

    @trust.setter
    def trust(self, value: float) -> None:
        with torch.no_grad():
            self._trust.fill_(float(value))
            self._distrust.fill_(1.0 - float(value))

    def _new_anchors(self, num_classes: int, like: Tensor | None = None) -> nn.Parameter:
        """(C, k, D) anchors, initialised as ``anchor_init`` says (on ``like``'s device and dtype)."""
        cfg = self.config
        device, dtype = (None, None) if like is None else (like.device, like.dtype)
        anchors = nn.Parameter(torch.zeros(num_classes, cfg.num_anchors, self.embed_dim, device=device, dtype=dtype))
        if cfg.anchor_init == "normal":
            nn.init.normal_(anchors, std=cfg.anchor_init_std)
        return anchors

    def _new_attention(self, num_classes: int) -> ReliabilityAttention:
        cfg = self.config
        return ReliabilityAttention(
            self.embed_dim, num_classes, cfg.attn_anchors, cfg.attn_heads, cast(str, cfg.attention_context)
        )

    @property
    def behaviour(self) -> str:
        return self.config.behaviour

    # --- the FERModel interface -----------------------------------------------------------------------------------

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> the backbone's unpooled features: POSTER_V2's normalised ViT tokens (B, 1 + 3*g*g, D), a
        CNN map (B, D, h, w), or a timm model's ``forward_features`` (tokens (B, N, C) for ViTs)."""
        return self.backbone.forward_features(x)

    def pool(self, features: Tensor) -> Tensor:
        """Features of :meth:`forward_features` -> the embedding e (B, D) the head reads (after ``embed_norm``)."""
        return self.embed_norm(self.backbone.pool(features))

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Features -> logits (B, C) of :meth:`reliability`, or the embedding (B, D) with ``pre_logits``."""
        e = self.pool(features)
        return e if pre_logits else self.reliability(e).logits

    def forward(self, x: Tensor) -> ARBExOutput:
        """Images (B, 3, H, W) -> :class:`ARBExOutput`."""
        return self.reliability(self.pool(self.backbone.forward_features(x)))

    def no_weight_decay(self) -> set[str]:
        """Parameters an optimiser with ``decay_norm_bias=False`` leaves undecayed: the anchors (decay would pull
        every anchor towards the origin, against the anchor loss) and what a timm backbone exempts itself."""
        names = {"anchors"}
        inner = getattr(getattr(self.backbone, "model", None), "no_weight_decay", None)
        if callable(inner):
            names |= {f"backbone.model.{n}" for n in inner()}
        return names

    def cam_target_layers(self) -> list[nn.Module]:
        """The backbone's Grad-CAM layers (:mod:`fernb.models._backbones`)."""
        return self.backbone.cam_target_layers()

    def reset_classifier(self, num_classes: int) -> None:
        """Everything sized by the class count, new for ``num_classes`` classes: the head's last layer, the anchors
        (C, k, D; ``anchor_init``) and the attention branch (C * k_att wide). The embedding and the hidden layers
        stay. See :meth:`FERModel.reset_classifier`."""
        n = check_num_classes(num_classes)
        self.head.fc = new_linear(self.head.fc, n)
        anchors = self._new_anchors(n, like=self.anchors)
        anchors.requires_grad_(self.anchors.requires_grad)
        self.anchors = anchors
        ref = self.attention.q.weight
        self.attention = (
            self._new_attention(n)
            .to(device=ref.device, dtype=ref.dtype)
            .train(self.attention.training)
            .requires_grad_(ref.requires_grad)
        )
        self._set_num_classes(n)

    def resolve_pretrained_cfg(self, cfg: PretrainedCfg) -> PretrainedCfg:
        """The registered cfg for this model, with the first convolution of its backbone."""
        cfg = super().resolve_pretrained_cfg(cfg)
        if isinstance(self.backbone, ResNet18Embedding):
            return cfg.replace(first_conv=("backbone.trunk.conv1",))
        if isinstance(self.backbone, TimmEmbedding):
            first = cast(TimmModel, self.backbone.model).pretrained_cfg.get("first_conv") or ()
            first = (first,) if isinstance(first, str) else tuple(first)
            return cfg.replace(first_conv=tuple(f"backbone.model.{n}" for n in first))
        return cfg.replace(first_conv=POSTER_FIRST_CONV)

    def cam_reshape_transform(self) -> Callable[[Tensor], Tensor] | None:
        """Token activations -> (B, C, h, w) maps; None for CNN backbones, whose target already is a map."""
        return self.backbone.cam_reshape_transform()

    # --- reliability balancing ------------------------------------------------------------------------------------

    def anchor_distances(self, e: Tensor) -> Tensor:
        """Euclidean distances of e (B, D) to every anchor: (B, C, k)."""
        sq = (self.anchors.unsqueeze(0) - e[:, None, None, :]).pow(2).sum(-1)
        return sq.sqrt() if self.behaviour == "official" else sq.clamp_min(self.config.eps).sqrt()

    def confidence(self, dist: Tensor) -> Tensor:
        """1 - normalised entropy: (B, C) -> (B, 1)."""
        eps = None if self.behaviour == "official" else self.config.eps
        return (1 - normalized_entropy(dist, eps)).view(-1, 1)

    def reliability(self, e: Tensor) -> ARBExOutput:
        """Everything downstream of the embedding e (B, D) -> :class:`ARBExOutput`."""
        cfg, official = self.config, self.behaviour == "official"
        head_logits = self.head(e)
        p = torch.softmax(head_logits / cfg.temperature, -1)
        c_p = self.confidence(p)
        d = self.anchor_distances(e)
        l_g = torch.softmax(-d.flatten(1) / cast(float, cfg.delta), -1).view_as(d).sum(-1)
        c_g = self.confidence(l_g)
        l_a = self.attention(e, self.anchors)
        c_a = self.confidence(l_a)
        w_p, w_g, w_a = (c.detach() for c in (c_p, c_g, c_a)) if cfg.detach_confidence else (c_p, c_g, c_a)
        if official:
            correction = (l_g * w_g + l_a * w_a) / (w_g + w_a)
        else:
            correction = (l_g * (w_g + cfg.eps) + l_a * (w_a + cfg.eps)) / (w_g + w_a + 2 * cfg.eps)
        mixed = w_p * p + (1 - w_p) * correction
        t, not_t = self._trust, self._distrust
        final = not_t * p + t * mixed
        if self.training:
            pred = final
        elif not cfg.eval_correction:
            pred = p
        elif official:  # train.py's validation branch: anchors only, l_g scaled by c_p and not renormalised
            pred = not_t * p + t * (c_p * p + (1 - c_p) * (l_g * c_p))
        else:
            pred = final
        logits = head_logits if pred is p else pred.clamp_min(cfg.eps).log()
        return ARBExOutput(
            logits=logits,
            embedding=e,
            head_logits=head_logits,
            primary_dist=p,
            confidence_primary=c_p,
            distances=d,
            anchor_dist=l_g,
            confidence_anchor=c_g,
            attention_dist=l_a,
            confidence_attention=c_a,
            correction=correction,
            mixed_dist=mixed,
            final_dist=final,
            prediction_dist=pred,
            anchors=self.anchors,
            behaviour=cfg.behaviour,
        )

    # --- weights --------------------------------------------------------------------------------------------------

    def convert_state_dict(self, sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str | None, list[str]]:
        """Official ARBEx (``vit.``, ``classifier.``, ``anchors.``, ``self_attn.``; or a bare ``vit.*.pth``) or
        POSTER_V2 naming -> fernb naming.

        An official ARBEx checkpoint has no ``self_attn`` (``train.py`` never saves it): the attention keeps this
        model's current weights, with a warning.

        Other backbones have no official naming: fernb keys load as they are, and an official ARBEx / POSTER_V2 file
        is refused (it holds a POSTER_V2 backbone).

        Returns:
            (state dict, naming found or None, keys dropped because their modules are unused).
        """
        sd = dict(sd)
        if self.config.backbone != "poster_v2":
            official = [k for k in sd if k.startswith(_OFFICIAL_PREFIXES)]
            if official:
                raise CheckpointMismatchError(
                    f"official ARBEx / POSTER_V2 keys ({', '.join(official[:3])}, ...) hold a POSTER_V2 backbone; this "
                    f"model's backbone is {self.config.backbone!r}: build it with backbone='poster_v2'"
                )
            return sd, None, []
        if any(k.startswith("landmark.path_") for k in sd):  # a bare official vit.*.pth file
            sd = {f"vit.{k}": v for k, v in sd.items()}
        poster = self.backbone if isinstance(self.backbone, PosterV2Backbone) else None
        out, naming, dropped, rest = convert_backbone_state_dict(sd, self.config, poster, prefix="backbone.")
        rules = _head_rules(len(self.config.hidden_sizes), self.config.head_batch_norm)
        attn_found = False
        for k, v in rest.items():
            new = rename_key(k, rules)
            attn_found |= isinstance(new, str) and new.startswith("attention.")
            out[new if isinstance(new, str) else k] = v
        if naming == "arbex" and not attn_found and any(k.startswith("classifier.") for k in rest):
            warnings.warn(
                "official ARBEx checkpoint without self_attn (train.py never saves it): the attention "
                "branch keeps this model's current weights",
                UserWarning,
                stacklevel=3,
            )
            for k, v in self.attention.state_dict().items():
                out[f"attention.{k}"] = v
        return out, naming, dropped


def _head_rules(n_hidden: int, batch_norm: bool) -> tuple[Rule, ...]:
    """Official ``classifier``, ``anchors`` and ``self_attn`` keys -> fernb's ``head``, ``anchors``, ``attention``.

    The official MLP is one Sequential of [Linear, ReLU, BatchNorm1d, Dropout] (no BatchNorm1d without
    ``head_batch_norm``) per hidden layer, then the last Linear.
    """
    per = 4 if batch_norm else 3

    def classifier(m: re.Match[str]) -> str | None:
        i, block = int(m[1]), int(m[1]) // per
        if i == per * n_hidden:
            return f"head.fc.{m[2]}"
        if i % per == 0:
            return f"head.blocks.{block}.fc.{m[2]}"
        if i % per == 2 and per == 4:
            return f"head.blocks.{block}.norm.{m[2]}"
        return None

    return (
        (r"^classifier\.net\.(\d+)\.(\w+)$", classifier),
        (r"^anchors\.anchors$", "anchors"),
        (r"^self_attn\.Q\.(.+)$", r"attention.q.\1"),
        (r"^self_attn\.K\.(.+)$", r"attention.k.\1"),
        (r"^self_attn\.V\.(.+)$", r"attention.v.\1"),
        (r"^self_attn\.attn_fn\.(.+)$", r"attention.mha.\1"),
    )


def read_official_arbex(
    vit: str | Path | Mapping[str, Tensor],
    classifier: str | Path | Mapping[str, Tensor] | None = None,
    anchors: str | Path | Mapping[str, Tensor] | None = None,
    self_attn: str | Path | Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Merge the separate files ``train.py`` saves (``vit.<it>.pth``, ``classifier.<it>.pth``, ``anchors.<it>.pth``)
    into one official-naming state dict for ``create_model("arbex", "official", checkpoint=...)``.

    Every file is read with ``weights_only=True``; ``module.`` prefixes are removed.
    """
    out: dict[str, Tensor] = {}
    for prefix, src in (("vit", vit), ("classifier", classifier), ("anchors", anchors), ("self_attn", self_attn)):
        if src is not None:
            out.update({f"{prefix}.{k}": v for k, v in read_state_dict(src).items()})
    return out


def load_pretrained(model: ARBEx) -> None:
    """The builder step of ``arbex``: POSTER_V2's ``ir50_weights`` / ``landmark_weights``
    (:func:`~fernb.models.poster.load_pretrained_parts`) or the other backbones' ``backbone_checkpoint``
    (:func:`~fernb.models._backbones.load_backbone_weights`)."""
    if isinstance(model.backbone, PosterV2Backbone):
        load_pretrained_parts(model)
    else:
        load_backbone_weights(
            cast("ResNet18Embedding | TimmEmbedding", model.backbone), model.config.backbone_checkpoint
        )


def _cfg(**kwargs: Any) -> PretrainedCfg:
    return PretrainedCfg(
        **{
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "first_conv": POSTER_FIRST_CONV,
            "classifier": ("head.fc", "anchors", "attention"),
            "source": "https://github.com/takihasan/ARBEx",
            "paper": "https://arxiv.org/abs/2305.01486",
            **kwargs,
        }
    )


default_cfgs = register_pretrained_cfgs(
    {
        "arbex.official": _cfg(
            input_size=(3, 224, 224),
            num_classes=8,
            weight_files=("ir50.pth", "mobilefacenet.pth"),
            notes="train.py starts from IR-50 and MobileFaceNet files it never published (POSTER_V2's ir50.pth and "
            "mobilefacenet_model_best.pth.tar load in their place); no trained ARBEx checkpoint was released",
        ),
        "arbex.tiny": _cfg(
            input_size=(3, 48, 48),
            num_classes=8,
            notes="fernb's CPU-size preset (narrow POSTER_V2, 128-d): no published weights",
        ),
        "arbex.tiny_resnet18": _cfg(
            input_size=(3, 48, 48),
            num_classes=8,
            first_conv=("backbone.trunk.conv1",),
            notes="the tiny head on fernb's width-16 ResNet-18 trunk: no published weights",
        ),
    }
)


@register_model
def arbex(preset: str = "tiny", **overrides: Any) -> ARBEx:
    """ARBEx. Presets: ``official`` (224 -> 112 px, 768-d, 8 classes), ``tiny`` (48 px, 128-d), ``tiny_resnet18``
    (``tiny`` on a width-16 ResNet-18). ``behaviour``: ``"fixed"`` (default) or ``"official"``. ``backbone``:
    ``"poster_v2"`` (default), ``"resnet18"`` or ``"timm:<name>"``."""
    return build_model(ARBEx, build_config(ARBExConfig, preset, overrides), "arbex", preset, load_pretrained)
