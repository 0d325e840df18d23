"""ESR: Ensembles with Shared Representations, and the Diversified ESR (ESR + CBAM + diversity terms).

Siqueira, Magg, Wermter, "Efficient Facial Feature Learning with Wide Ensemble-based Convolutional Neural Networks",
AAAI 2020. Official code: ``siqueira-hc/Efficient-Facial-Feature-Learning-...`` (``model/ml/esr_9.py``,
``main_affectnet_discrete.py``, ``main_fer_plus.py``). Diversified variant: Heidari and Iosifidis, arXiv 2210.09381,
``negarhdr/Diversified-Facial-Expression-Recognition`` (``model/diversified_esr.py``). Spec:
``shared/specs/baselines.md`` §4.2-4.3, §5.1.

Architecture (official sizes, 96 px; every conv is followed by BN and ReLU; no padding unless stated)::

    shared base   conv5x5 3->64; conv3x3 64->128, maxpool2; conv3x3 128->128; conv3x3 128->128, maxpool2
                  -> (B, 128, 20, 20)
    branch (x9)   conv3x3 128->128; conv3x3 128->256, maxpool2; conv3x3 256->256; conv3x3 256->512 pad 1; GAP; fc 512->8
                  [ESR-9: fc_affect 8->2 on ReLU(logits), arousal/valence]

With ``diversity=True`` a CBAM follows every conv stage of the base and of the branches (the pool of a pooled stage
comes before its CBAM), the affect head is dropped, and each branch also returns the channel gate (B, 512) and the
spatial gate (B, 6, 6) of its last CBAM: the "heads" of the diversity terms (:mod:`fernb.losses.diversity`). The
CBAMs are :class:`fernb.models._cbam.FastCBAM`: the same parameters and maths as MA-Net's CBAM, computed with fewer
and better-vectorised CPU kernels (a tiny-preset training step ~1.3-1.4x faster on one CPU core).

Prediction. The official ensemble prediction is a plurality vote over the branch arg-maxes, ties going to the lowest
class index (``evaluate`` in the training scripts). A vote is not a score, so ``logits`` here is the log of the mean
of the branch softmaxes, ``log(mean_b softmax(logits_b))`` (``softmax(logits)`` is then the ensemble's mean
probability); the plurality vote and its counts are the extras ``vote`` and ``vote_counts``. The two agree except on
close calls.

Branch schedule. The paper trains branch by branch: start with one branch, train, then add a branch and continue with
every active branch in the loss (``sum_b CE_b``). All ``num_branches`` branches are built up front; only the first
``num_active_branches`` run and are trained (a persistent buffer, so checkpoints remember it). The engine drives the
schedule with :meth:`ESR.add_branch` (a stage's ``call``), :meth:`ESR.param_groups` (the paper's per-part learning
rates), :meth:`ESR.set_active_branches` and :meth:`ESR.freeze`. A new model has one active branch (the schedule's
start); loading a checkpoint restores the count (ESR-9: 9).

Checkpoints. The official code saves one file per part, ``Net-Base-Shared_Representations.pt`` (base keys) and
``Net-Branch_{i}.pt`` (branch i, 1-based, unprefixed keys); :func:`read_official_esr` reads such a folder into one
state dict in the naming of ``shared/fidelity`` (``base.*``, ``convolutional_branches.{i-1}.*``), which
:meth:`ESR.convert_state_dict` maps to fernb's (``base.*``, ``branches.{i-1}.*``). ``create_model("esr", "official",
checkpoint=folder)`` does both and returns the usual key report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import FERModel, ModelOutput, check_num_classes, feature, new_linear
from ._builder import build_model
from ._cbam import CBAM_RULES, FastCBAM
from ._convert import MODULE_PREFIX, Rule, rename
from ._pretrained import UNIT_MEAN, UNIT_STD, PretrainedCfg, register_pretrained_cfgs
from ._registry import build_config, register_model
from ._weights import CheckpointMismatchError, read_state_dict
from .resnet import drop_mismatched_heads

__all__ = ["ESR", "ESRConfig", "ESROutput", "read_official_esr", "plurality_vote"]

BASE_FILE = "Net-Base-Shared_Representations.pt"
BRANCH_FILE = "Net-Branch_{}.pt"


@dataclass
class ESRConfig:
    """ESR configuration.

    Attributes:
        num_classes: output classes (8: AffectNet order).
        num_branches: ensemble size (9 for ESR-9).
        active_branches: branches active at construction. 1 (default): the paper's schedule starts with one branch and
            the engine's stages call :meth:`ESR.add_branch`; None: all. A checkpoint sets it (it is a buffer), so
            loading ESR-9 activates its 9 branches.
        base_channels: output channels of the 4 base convs (64, 128, 128, 128).
        branch_channels: output channels of the 4 branch convs (128, 256, 256, 512).
        affect_head: the 8 -> 2 arousal/valence layer of the released ESR-9 (None: on unless ``diversity``).
        diversity: Diversified ESR (CBAM after every conv stage, attention heads as outputs).
        cbam_reduction: CBAM channel-MLP reduction (16).
        img_size: the input side the preset is meant for (96 official; needs >= ~54).
        trained_lr_mult: learning-rate multiplier of the base and of the already trained branches once a second
            branch is active (:meth:`ESR.param_groups`; 0.1 AffectNet, 0.2 FER+/RAF-DB fine-tuning).
    """

    num_classes: int = 8
    num_branches: int = 9
    active_branches: int | None = 1
    base_channels: tuple[int, int, int, int] = (64, 128, 128, 128)
    branch_channels: tuple[int, int, int, int] = (128, 256, 256, 512)
    affect_head: bool | None = None
    diversity: bool = False
    cbam_reduction: int = 16
    img_size: int = 96
    trained_lr_mult: float = 0.1

    @classmethod
    def official(cls) -> ESRConfig:
        """ESR-9 (``model/ml/esr_9.py``): 96 px, 9 branches (one active until :meth:`ESR.add_branch` or a
        checkpoint), 8 classes, affect head."""
        return cls()

    @classmethod
    def tiny(cls) -> ESRConfig:
        """Base channels / 8-4, branch channels / 4-5, 4 branches (an even count, see the diversity terms), 64 px (the
        branches need >= ~54 px), 8 classes, no affect head (the FER training scripts have none; it would be a
        parameter without gradient). The full-resolution base convs (and their CBAMs) dominate the cost."""
        return cls(
            num_branches=4,
            base_channels=(8, 16, 16, 32),
            branch_channels=(32, 48, 48, 96),
            img_size=64,
            affect_head=False,
        )

    @property
    def initial_branches(self) -> int:
        """Branches active at construction (``active_branches``, or all when it is None)."""
        return self.num_branches if self.active_branches is None else self.active_branches

    @property
    def use_affect_head(self) -> bool:
        return (not self.diversity) if self.affect_head is None else self.affect_head


@dataclass
class ESROutput(ModelOutput):
    """ESR outputs (n = active branches).

    Attributes:
        logits: (B, C) ``log(mean_b softmax(branch_logits_b))``, the ensemble's mean probability in log space.
        embedding: (B, D) pooled last-conv features averaged over the active branches.
        branch_logits: (n, B, C) per-branch logits.
        vote: (B,) plurality vote over the branch arg-maxes, ties to the lowest class index (official prediction).
        vote_counts: (B, C) votes per class (int64).
        affect: (n, B, 2) arousal/valence outputs of the affect head (ESR-9 only).
        attn_spatial: (n, B, h, w) spatial gate of each branch's last CBAM (``diversity=True``; ``attn_sp``).
        attn_channel: (n, B, D) channel gate of each branch's last CBAM (``diversity=True``; ``attn_ch``).
    """

    branch_logits: Tensor | None = None
    vote: Tensor | None = None
    vote_counts: Tensor | None = None
    affect: Tensor | None = None
    attn_spatial: Tensor | None = None
    attn_channel: Tensor | None = None


def plurality_vote(branch_logits: Tensor) -> tuple[Tensor, Tensor]:
    """(n, B, C) logits -> votes (B,) and counts (B, C): each branch votes for its arg-max; ties go to the lowest class
    index (as the official ``evaluate``, whose ``torch.max`` returns the first maximum)."""
    n, b, c = branch_logits.shape
    counts = F.one_hot(branch_logits.argmax(dim=-1), c).sum(dim=0)
    return counts.argmax(dim=-1), counts


class _ConvStages(nn.Module):
    """Four stages conv -> BN -> ReLU [-> maxpool 2] [-> CBAM], as ESR's base and branches build them (modules
    ``conv{i}``, ``bn{i}``, ``cbam{i}``, i = 1..4, the official names)."""

    def __init__(self, convs: Sequence[nn.Conv2d], pooled: Sequence[bool], cbam: bool, reduction: int) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3, self.conv4 = convs
        chans = [conv.out_channels for conv in convs]
        self.bn1, self.bn2, self.bn3, self.bn4 = (nn.BatchNorm2d(c) for c in chans)
        self.pool = nn.MaxPool2d(2, 2)
        self.pooled = tuple(pooled)
        self.use_cbam = cbam
        if cbam:
            self.cbam1, self.cbam2, self.cbam3, self.cbam4 = (FastCBAM(c, reduction) for c in chans)

    def stages(self, x: Tensor, last_gates: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The four stages; with ``last_gates`` (and CBAM) also the last CBAM's channel (B, D) and spatial
        (B, h, w) gates, else None."""
        ch = sp = None
        for i, pooled in enumerate(self.pooled, 1):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
            if pooled:
                x = self.pool(x)
            if not self.use_cbam:
                continue
            gate = getattr(self, f"cbam{i}")
            if i == 4 and last_gates:
                x, ch, sp = gate.forward_attention(x)
                sp = sp[:, 0]
            else:
                x = gate(x)
        return x, ch, sp


class ESRBase(_ConvStages):
    """Shared base: (B, 3, H, W) -> (B, c4, h, w), h = ((H - 6) // 2 - 4) // 2; (B, 128, 20, 20) at 96 px.

    Each stage is conv -> BN -> ReLU [-> maxpool 2] [-> CBAM]; stages 2 and 4 pool.
    """

    def __init__(self, channels: Sequence[int] = (64, 128, 128, 128), cbam: bool = False, reduction: int = 16) -> None:
        c1, c2, c3, c4 = channels
        convs = [nn.Conv2d(3, c1, 5, 1), nn.Conv2d(c1, c2, 3, 1), nn.Conv2d(c2, c3, 3, 1), nn.Conv2d(c3, c4, 3, 1)]
        super().__init__(convs, (False, True, False, True), cbam, reduction)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(x)[0]


class ESRBranch(_ConvStages):
    """One convolutional branch: (B, c_in, h, w) base map -> logits (B, C), pooled features (B, D) and, with CBAM,
    the last CBAM's channel (B, D) and spatial (B, h', w') gates. Stage 2 pools; the last conv pads by 1."""

    def __init__(
        self,
        in_ch: int = 128,
        channels: Sequence[int] = (128, 256, 256, 512),
        num_classes: int = 8,
        affect_head: bool = True,
        cbam: bool = False,
        reduction: int = 16,
    ) -> None:
        c1, c2, c3, c4 = channels
        convs = [
            nn.Conv2d(in_ch, c1, 3, 1),
            nn.Conv2d(c1, c2, 3, 1),
            nn.Conv2d(c2, c3, 3, 1),
            nn.Conv2d(c3, c4, 3, 1, 1),
        ]
        super().__init__(convs, (False, True, False, False), cbam, reduction)
        self.last_map = nn.Identity()  # the final (B, D, h', w') map passes here (a Grad-CAM target)
        self.fc = nn.Linear(c4, num_classes)
        self.fc_affect = nn.Linear(num_classes, 2) if affect_head else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
        """Returns logits (B, C), pooled (B, D), affect (B, 2) or None, channel gate or None, spatial gate or None."""
        x, ch, sp = self.stages(x, last_gates=True)
        pooled = self.last_map(x).mean(dim=(2, 3))
        logits = self.fc(pooled)
        affect = self.fc_affect(F.relu(logits)) if self.fc_affect is not None else None
        return logits, pooled, affect, ch, sp


class ESR(FERModel):
    """ESR ensemble (and Diversified ESR with ``diversity=True``). ``forward`` returns :class:`ESROutput`."""

    config: ESRConfig
    pretrained_tag = "esr"
    active_branches: Tensor

    def __init__(self, config: ESRConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ESRConfig()
        if cfg.num_branches < 1:
            raise ValueError(f"ESRConfig.num_branches must be >= 1, got {cfg.num_branches}")
        self.base = ESRBase(cfg.base_channels, cfg.diversity, cfg.cbam_reduction)
        self.branches = nn.ModuleList(
            ESRBranch(
                cfg.base_channels[-1],
                cfg.branch_channels,
                cfg.num_classes,
                cfg.use_affect_head,
                cfg.diversity,
                cfg.cbam_reduction,
            )
            for _ in range(cfg.num_branches)
        )
        self.num_features = cfg.base_channels[-1]
        self.head_hidden_size = cfg.branch_channels[-1]
        # nominal strides: ESR's convolutions are unpadded, so its maps are a few pixels smaller than size / reduction
        self.feature_info = [
            feature(cfg.base_channels[-1], 4, "base"),
            *[feature(cfg.branch_channels[-1], 8, f"branches.{i}.last_map") for i in range(cfg.num_branches)],
        ]
        n = cfg.initial_branches
        # the count lives in a buffer (saved in checkpoints) and in a Python int (read by forward without a GPU sync)
        self.register_buffer("active_branches", torch.tensor(0, dtype=torch.long))
        self._n_active = 0
        self.set_active_branches(n)
        self.register_load_state_dict_post_hook(lambda module, keys: module._sync_active())

    def _sync_active(self) -> None:
        n = int(self.active_branches)
        if not 1 <= n <= len(self.branches):
            raise ValueError(
                f"ESR checkpoint has {n} active branches; this model has {len(self.branches)} "
                "(build it with num_branches >= the checkpoint's)"
            )
        self._activate(n)

    def _activate(self, n: int) -> None:
        """Branches that become active train; inactive ones do not require gradients (DDP would otherwise wait for
        gradients that their parameters never get)."""
        for i in range(min(n, self._n_active), len(self.branches)):  # the branches before keep their state
            self.branches[i].requires_grad_(i < n)
        self._n_active = int(n)

    # -- branch schedule -------------------------------------------------------------------------------------------
    @property
    def num_active_branches(self) -> int:
        return self._n_active

    def stage_call_limits(self) -> dict[str, int]:
        """How many times a training schedule may still call each stage method (the engine checks it up front)."""
        return {"add_branch": len(self.branches) - self._n_active}

    @property
    def active(self) -> list[ESRBranch]:
        """The active branches, in order."""
        return cast("list[ESRBranch]", list(self.branches[: self.num_active_branches]))

    def set_active_branches(self, n: int) -> None:
        """Make the first ``n`` branches active (1 <= n <= num_branches)."""
        if not 1 <= n <= len(self.branches):
            raise ValueError(f"ESR: active branches must be in 1..{len(self.branches)}, got {n}")
        self.active_branches.fill_(int(n))
        self._activate(int(n))

    def add_branch(self) -> ESRBranch:
        """Activate the next branch (the paper's "add a branch") and return it.

        Raises:
            RuntimeError: when all ``num_branches`` branches are already active.
        """
        n = self.num_active_branches
        if n >= len(self.branches):
            raise RuntimeError(
                f"ESR: all {len(self.branches)} branches are already active; build the model with a "
                "larger num_branches to add more"
            )
        self.set_active_branches(n + 1)
        return cast(ESRBranch, self.branches[n])

    def freeze(self, base: bool = False, branches: Iterable[int] = ()) -> None:
        """Stop gradients for the base and/or the given branch indices (0-based); the rest of the base and the active
        branches become trainable (inactive branches never are).

        BN layers of frozen parts still update their running statistics in train mode, as in the official code,
        which never freezes (it trains old branches at a lower learning rate; see :meth:`param_groups`).
        """
        frozen = set(branches)
        for p in self.base.parameters():
            p.requires_grad_(not base)
        for i, br in enumerate(self.branches):
            for p in br.parameters():
                p.requires_grad_(i not in frozen and i < self._n_active)

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups of the paper's schedule (the engine calls this with its learning rate ``lr``).

        While one branch is active, base and branch train at ``lr``. Later, the newest branch trains at ``lr`` and the
        base and the older branches at ``lr * config.trained_lr_mult`` (official AffectNet: 0.1 -> 0.01 with lr 0.1;
        FER+/RAF-DB fine-tuning: 0.02, i.e. mult 0.2). Inactive branches are left out.
        """
        n = self.num_active_branches
        slow = lr if n == 1 else lr * self.config.trained_lr_mult
        groups = [
            {"params": list(self.base.parameters()), "lr": slow, "name": "base"},
            {"params": list(self.branches[n - 1].parameters()), "lr": lr, "name": f"branch{n - 1}"},
        ]
        old = [p for br in self.branches[: n - 1] for p in br.parameters()]
        if old:
            groups.append({"params": old, "lr": slow, "name": "trained_branches"})
        return groups

    # -- forward ---------------------------------------------------------------------------------------------------
    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> shared representation (B, 128, 20, 20) at 96 px."""
        return self.base(x)

    def _ensemble(self, shared: Tensor) -> ESROutput:
        outs = [br(shared) for br in self.active]
        branch_logits = torch.stack([o[0] for o in outs])
        log_probs = F.log_softmax(branch_logits.float(), dim=-1)
        logits = torch.logsumexp(log_probs, dim=0) - torch.log(torch.tensor(float(len(outs))))
        vote, counts = plurality_vote(branch_logits)
        res = ESROutput(
            logits=logits,
            embedding=torch.stack([o[1] for o in outs]).mean(dim=0),
            branch_logits=branch_logits,
            vote=vote,
            vote_counts=counts,
        )
        if outs[0][2] is not None:
            res.affect = torch.stack([o[2] for o in outs])
        if outs[0][3] is not None:
            res.attn_channel = torch.stack([o[3] for o in outs])
            res.attn_spatial = torch.stack([o[4] for o in outs])
        return res

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Shared map -> mean pooled branch features (B, D) if ``pre_logits`` else ensemble logits (B, C)."""
        out = self._ensemble(features)
        if pre_logits:
            assert out.embedding is not None
            return out.embedding
        return out.logits

    def forward(self, x: Tensor) -> ESROutput:
        return self._ensemble(self.forward_features(x))

    def cam_target_layers(self) -> list[nn.Module]:
        """The last conv map of every active branch (Grad-CAM averages them)."""
        return [br.last_map for br in self.active]

    def reset_classifier(self, num_classes: int) -> None:
        """New heads for ``num_classes`` classes in every branch, active or not: ``fc`` and, with the affect head,
        ``fc_affect`` (its input is the class scores). See :meth:`FERModel.reset_classifier`."""
        n = check_num_classes(num_classes)
        for br in cast("list[ESRBranch]", list(self.branches)):
            br.fc = new_linear(br.fc, n)
            if br.fc_affect is not None:
                br.fc_affect = new_linear(br.fc_affect, in_features=n)
        self._set_num_classes(n)

    def resolve_pretrained_cfg(self, cfg: PretrainedCfg) -> PretrainedCfg:
        """The registered cfg for this model; ``fc_affect`` is a classifier only when the affect head is built."""
        heads = ("branches.*.fc", "branches.*.fc_affect") if self.config.use_affect_head else ("branches.*.fc",)
        return super().resolve_pretrained_cfg(cfg).replace(classifier=heads)

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def read_checkpoint_dir(self, directory: Path) -> dict[str, Tensor]:
        """Read an official release folder (:func:`read_official_esr`) for :func:`fernb.models._weights.load_checkpoint`
        (so ``create_model("esr", "official", checkpoint=folder)`` works).

        Raises:
            CheckpointMismatchError: the folder is not an ESR release (the message names the expected files).
        """
        try:
            return read_official_esr(directory)
        except FileNotFoundError as exc:
            raise CheckpointMismatchError(str(exc)) from None

    def convert_state_dict(self, sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str, list[str]]:
        """Official naming -> fernb naming.

        Official: ``base.*`` and ``convolutional_branches.{i}.*`` (the layout of ``shared/fidelity`` and of
        :func:`read_official_esr`), optional ``module.``; branch ``fc_dimensional`` -> ``fc_affect``; CBAM keys
        ``cbamK.ChannelGate.mlp.{1,3}`` / ``cbamK.SpatialGate.spatial.*`` -> ``cbamK.channel.fc{1,2}`` /
        ``cbamK.spatial.*``. ``active_branches`` is set to the number of branches found. Branch heads of another
        class count (AffectNet's 8 for a 7-class RAF-DB model) are dropped: load with ``strict=False`` for fresh
        heads, as ``esr_rafdb.py`` does.
        """
        out = {rename(k, _RULES): v for k, v in sd.items()}
        found = {int(k.split(".")[1]) for k in out if k.startswith("branches.")}
        if "active_branches" not in out and found:
            out["active_branches"] = torch.tensor(max(found) + 1, dtype=torch.long)
        out, dropped = drop_mismatched_heads(out, self.state_dict(), self.pretrained_cfg.is_classifier)
        return out, "official ESR (per-branch files)", dropped


# official naming (optionally DataParallel-prefixed) -> fernb's
_RULES: tuple[Rule, ...] = (
    *MODULE_PREFIX,
    (r"^convolutional_branches\.(\d+)\.", r"branches.\1."),
    (r"\.fc_dimensional\.", ".fc_affect."),
    *CBAM_RULES,
)


def _describe_folder(directory: Path, limit: int = 8) -> str:
    names = sorted(p.name for p in directory.iterdir())
    if not names:
        return "it is empty"
    return "it holds " + ", ".join(names[:limit]) + (f", ... (+{len(names) - limit})" if len(names) > limit else "")


def read_official_esr(directory: str | Path, max_branches: int | None = None) -> dict[str, Tensor]:
    """Read an official ESR / Diversified ESR checkpoint folder into one state dict.

    The folder holds ``Net-Base-Shared_Representations.pt`` and ``Net-Branch_1.pt`` ... ``Net-Branch_n.pt`` (plain
    state dicts, read with ``weights_only=True``; branches are read while the numbering is unbroken). Returns
    ``base.*`` and ``convolutional_branches.{i-1}.*`` keys, which :meth:`ESR.convert_state_dict` converts;
    ``create_model("esr", "official", checkpoint=folder)`` does both.

    Raises:
        FileNotFoundError: naming the folder, the files an ESR release holds and what the folder holds instead.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is not a folder: an official ESR release is a folder holding {BASE_FILE} "
            f"and {BRANCH_FILE.format(1)}, {BRANCH_FILE.format(2)}, ..."
        )
    base_path = directory / BASE_FILE
    if not base_path.is_file():
        raise FileNotFoundError(
            f"{directory} is not an official ESR release: expected {BASE_FILE} and "
            f"{BRANCH_FILE.format(1)}, {BRANCH_FILE.format(2)}, ... in it; "
            f"{_describe_folder(directory)}"
        )
    sd = {f"base.{k}": v for k, v in read_state_dict(base_path).items()}
    i = 1
    while (directory / BRANCH_FILE.format(i)).is_file() and (max_branches is None or i <= max_branches):
        part = read_state_dict(directory / BRANCH_FILE.format(i))
        sd.update({f"convolutional_branches.{i - 1}.{k}": v for k, v in part.items()})
        i += 1
    if i == 1:
        raise FileNotFoundError(
            f"{directory}: no {BRANCH_FILE.format(1)} next to {BASE_FILE} (an official ESR release "
            f"holds one file per branch); {_describe_folder(directory)}"
        )
    return sd


def _cfg(**kwargs: Any) -> PretrainedCfg:
    return PretrainedCfg(
        **{
            "mean": UNIT_MEAN,
            "std": UNIT_STD,
            "channel_order": "BGR",
            "first_conv": ("base.conv1",),
            "source": "https://github.com/siqueira-hc/Efficient-Facial-Feature-Learning-with-Wide-Ensemble-based-"
            "Convolutional-Neural-Networks",
            "paper": "Siqueira, Magg, Wermter, AAAI 2020",
            **kwargs,
        }
    )


default_cfgs = register_pretrained_cfgs(
    {
        "esr.official": _cfg(
            input_size=(3, 96, 96),
            num_classes=8,
            classifier=("branches.*.fc", "branches.*.fc_affect"),
            weight_files=("Net-Base-Shared_Representations.pt", *[BRANCH_FILE.format(i) for i in range(1, 10)]),
            notes="ESR-9 trained on AffectNet, released in the repository as one file per part: pass their folder as "
            "the checkpoint. Trained on OpenCV (BGR) images, pixels / 255",
        ),
        "esr.tiny": _cfg(
            input_size=(3, 64, 64),
            num_classes=8,
            classifier=("branches.*.fc",),
            notes="fernb's CPU-size preset (narrow base and branches, 4 branches): no published weights",
        ),
    }
)


@register_model
def esr(preset: str = "tiny", **overrides: object) -> ESR:
    """ESR ensemble; ``diversity=True`` gives the Diversified ESR (CBAM + attention heads for the diversity terms)."""
    return build_model(ESR, build_config(ESRConfig, preset, overrides), "esr", preset)
