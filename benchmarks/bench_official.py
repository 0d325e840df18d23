"""fernb against the official code, side by side: train step and inference speed on the same machine, same weights.

For POSTER_V2, ARBEx, ARM, ESR-9, MA-Net and the diversified MA-Net, the official implementation is imported from a
folder of official sources that you name (``--official DIR``, one sub-folder per repository: a plain checkout, or a
snapshot exported from a bare mirror with ``git --git-dir=... archive HEAD | tar -x -C DIR/<repo>``). Nothing here
ships official code: the package and the tests never import it, and a missing folder or file is reported and its
rows skipped (exit status 0).

Per method, the official model is built with random weights, its state dict is loaded into fernb's ``official``
preset through fernb's converter (the fidelity recipe: same weights on both sides), and the inference outputs are
compared (max abs difference) before anything is timed, so that a speed-up never hides a change in results. Then, in
one process and alternating within every repeat: the official code in float32, fernb in float32 (same dtype), and
fernb in its default precision (``run.precision="auto"``: bf16 autocast on CPUs with native bf16). Train step =
forward, loss, backward, optimiser step (each method's published optimiser, the same for both sides); inference =
eval-mode forward under ``torch.no_grad``. img/s = batch / median seconds.

fernb's contenders update their weights the way fernb's engine does (``--optim-impl``, default ``auto``: torch's fused
kernel where it has one, ``optim.impl``); the official side keeps its optimiser as its code builds it (torch's
per-tensor loop on CPU). ``--compile`` adds a fourth contender, fernb fp32 through ``torch.compile``
(``run.compile``), whose compilation warm-up (train: forward and backward graphs; inference: the eval graph) is
reported in its own columns and never counted in its img/s.

    python benchmarks/bench_official.py --official /tmp/official
    python benchmarks/bench_official.py --official /tmp/official --methods poster_v2,arbex --batch 8 --repeats 5
    python benchmarks/bench_official.py --official /tmp/official --compile --optim-impl fused --repeats 10

What the official code needs to run on a CPU without its data and weight files is patched at import time, never in
its files; every patch is printed with the method's rows.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.machinery
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fernb
from fernb.engine.config import COMPILE_MODES
from fernb.engine.fit import resolve_precision
from fernb.engine.optim import resolve_impl
from fernb.engine.predict import autocast_context, float_output
from fernb.losses import StepInfo, create_loss
from fernb.models._weights import load_checkpoint

ESR_REPO = "Efficient-Facial-Feature-Learning-with-Wide-Ensemble-based-Convolutional-Neural-Networks"
ARBEX_CLASS_COUNTS = (40, 6, 4, 5, 25, 12, 8, 20)  # the fidelity fixture's stand-in label counts (class weights)
TRUST = 0.5  # ARBEx's trust t during the timed steps (the fidelity fixture's)


@dataclass(frozen=True)
class Method:
    """One official baseline: where its sources live and what fernb builds for it."""

    key: str  # row name and --methods entry
    repo: str  # sub-folder of --official
    needs: tuple[str, ...]  # files (relative to the repo folder) the benchmark imports or reads
    img_size: int  # the published input side (POSTER_V2/ARBEx resize to 112 inside their backbones)
    fernb_name: str
    fernb_kwargs: dict[str, Any] = field(default_factory=dict)


METHODS = {
    m.key: m
    for m in (
        Method(
            "poster_v2",
            "POSTER_V2",
            ("models/PosterV2_7cls.py", "models/ir50.py", "models/mobilefacenet.py", "models/vit_model.py"),
            224,
            "poster_v2",
            {"freeze_landmark": True, "freeze_ir50": False},
        ),
        Method(
            "arbex",
            "ARBEx",
            ("arbex/models/poster.py", "arbex/models/head.py", "arbex/models/anchors.py", "arbex/models/attn.py")
            + ("arbex/loss.py", "arbex/utils.py"),
            224,
            "arbex",
            {"behaviour": "official"},
        ),
        Method("arm", "Amend-Representation-Module", ("src/Networks.py",), 224, "arm", {"num_classes": 7}),
        Method("esr9", ESR_REPO, ("model/ml/esr_9.py",), 96, "esr"),
        Method("manet", "MA-Net", ("model/manet.py", "model/attention.py"), 224, "manet"),
        Method(
            "manet+diversity",
            "Diversified-Facial-Expression-Recognition",
            ("model/diversified_manet.py", "model/cbam.py", "manet_rafdb.py"),
            224,
            "manet",
            {"diversity": True},
        ),
    )
}


@dataclass
class Official:
    """The official side of one method: its modules, an inference call, a loss call, and what was patched."""

    modules: nn.Module  # every trained module (mode switches and parameters)
    state_dict: dict[str, Tensor]  # official key names, as fernb's converter reads them
    infer: Callable[[Tensor], Tensor]  # (B, 3, H, W) -> the outputs compared with fernb's
    loss: Callable[[Tensor, Tensor], Tensor]  # (x, y) -> scalar training loss
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    patches: list[str] = field(default_factory=list)


@dataclass
class Row:
    """One line of the table."""

    method: str
    mode: str  # "train" or "infer"
    batch: int
    img_size: int
    official_img_s: float | None = None
    fernb_fp32_img_s: float | None = None
    fernb_default_img_s: float | None = None
    ratio_fp32: float | None = None
    ratio_default: float | None = None
    max_abs_diff_fp32: float | None = None  # fernb fp32 vs official (train: the loss at the same seed)
    max_abs_diff_default: float | None = None
    ref_scale: float | None = None  # max |official output| (train: |official loss|), to read the diffs against
    default_precision: str = ""
    optim_impl: str = ""  # how fernb's contenders update (--optim-impl, resolved); the official side keeps its own
    compile_mode: str = ""  # --compile: torch.compile's mode for the compiled contender ("" without it)
    fernb_compiled_img_s: float | None = None  # fernb fp32 through torch.compile, after its warm-up
    ratio_compiled: float | None = None
    max_abs_diff_compiled: float | None = None
    compile_warmup_s: float | None = None  # the first call's excess over the median call: the compilation
    channels_last: bool = False  # --channels-last: fernb's contenders ran in channels-last memory
    skipped: str = ""
    patches: list[str] = field(default_factory=list)


# --- importing the official code --------------------------------------------------------------------------------


def _import_package(folder: Path, alias: str, sub: str) -> types.ModuleType:
    """Import ``folder`` as a package named ``alias`` (its ``__init__`` not run) and return ``alias.sub``.

    A private name keeps two repositories' ``models``/``model`` packages apart, and away from anything installed."""
    if alias not in sys.modules:
        spec = importlib.machinery.ModuleSpec(alias, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        sys.modules[alias] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{alias}.{sub}")


def _import_file(path: Path, alias: str) -> types.ModuleType:
    """Import one source file under a private module name."""
    spec = importlib.util.spec_from_file_location(alias, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[alias] = mod
    spec.loader.exec_module(mod)
    return mod


def _classes_from_script(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """Execute only the named top-level classes of a training script (it parses argv and reads data on import)."""
    tree = ast.parse(path.read_text())
    body = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in names]
    namespace: dict[str, Any] = {"torch": torch, "nn": nn, "F": F}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return {n: namespace[n] for n in names}


class _TorchWithLoad(types.ModuleType):
    """``torch`` for one official module, with ``torch.load`` answered from a table instead of the disk."""

    def __init__(self, answers: dict[str, Callable[[], Any]]) -> None:
        super().__init__("torch")
        self._answers = answers

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def load(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        for fragment, answer in self._answers.items():
            if fragment in str(f):
                return answer()
        raise FileNotFoundError(f)


def _no_cuda_tensor() -> str | None:
    """Let ``Tensor.cuda()`` return the tensor itself on a machine without CUDA (official code hard-codes it)."""
    if torch.cuda.is_available() or getattr(torch.Tensor.cuda, "_fernb_bench", False):
        return None

    def cuda(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self

    cuda._fernb_bench = True  # type: ignore[attr-defined]
    torch.Tensor.cuda = cuda  # type: ignore[method-assign]
    return "Tensor.cuda() returns the tensor itself (no CUDA here)"


def _labels_ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y)


# --- the official sides -------------------------------------------------------------------------------------------


def _official_poster_v2(root: Path) -> Official:
    patches = []
    if importlib.util.find_spec("thop") is None:
        sys.modules.setdefault("thop", types.SimpleNamespace(profile=None))  # type: ignore[arg-type]
        patches.append("thop stubbed (profile is only used by compute_param_flop)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's old import paths (FutureWarning)
        mod = _import_package(root / "models", "_official_poster_v2", "PosterV2_7cls")
    answers = {
        "mobilefacenet": lambda: {"state_dict": mod.MobileFaceNet([112, 112], 136).state_dict()},
        "ir50": lambda: {},
    }
    mod.torch = _TorchWithLoad(answers)
    patches.append("torch.load of the two hard-coded Windows weight paths answered with the model's own random init")
    with warnings.catch_warnings(), contextlib.redirect_stdout(None):
        warnings.simplefilter("ignore")
        model = mod.pyramid_trans_expr2(img_size=224, num_classes=7)
    mod.torch = torch
    patches.append("Adam lr 3.5e-5 without main.py's SAM wrapper (one forward/backward per step on both sides)")
    return Official(
        model,
        model.state_dict(),
        model,
        lambda x, y: _labels_ce(model(x), y),
        lambda p: torch.optim.Adam(p, lr=3.5e-5),
        patches,
    )


def _official_arbex(root: Path) -> Official:
    src = root / "arbex"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's old import paths (FutureWarning)
        poster = _import_package(src / "models", "_official_arbex_models", "poster")
    head = importlib.import_module("_official_arbex_models.head")
    anchors_mod = importlib.import_module("_official_arbex_models.anchors")
    attn = importlib.import_module("_official_arbex_models.attn")
    loss = _import_file(src / "loss.py", "_official_arbex_loss")
    utils = _import_file(src / "utils.py", "_official_arbex_utils")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = nn.ModuleDict(
            {
                "vit": poster.get_poster(None, None, dim_emb=768),
                "classifier": head.ClassificationHead(768, 8, [384, 192, 96], batch_norm=True),
                "anchors": anchors_mod.Anchors(768, 8, n_anchors=1),
                "self_attn": attn.SelfAttn(n_classes=8, size_emb=768),
            }
        )
    counts = torch.tensor(ARBEX_CLASS_COUNTS, dtype=torch.float32)
    weights = counts.sum() / len(counts) / counts  # data.AffWildDataset.get_weights
    loss_ce, loss_mu, loss_center = loss.DistLoss(weights), loss.AnchorLoss(768), loss.CenterLoss(8, dim_emb=768)

    def confidence(p: Tensor) -> Tensor:
        return 1 - utils.normalized_entropy(p)

    def forward(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """train.py's forward block at T = delta = 1 and trust TRUST: logits, final dist, distances, c_p."""
        e = parts["vit"](x)
        logits = parts["classifier"](e)
        p = torch.softmax(logits, -1)
        c = confidence(p).view(-1, 1)
        d = parts["anchors"](e)
        sim = torch.softmax(-d.view(d.shape[0], -1), -1).view_as(d).sum(-1)
        c_g = confidence(sim).view(-1, 1)
        a = parts["self_attn"](e)
        c_a = confidence(a).view(-1, 1)
        correction = (sim * c_g + a * c_a) / (c_g + c_a)
        final = (1 - TRUST) * p + TRUST * (c * p + (1 - c) * correction)
        return logits, final, d, c

    def infer(x: Tensor) -> Tensor:
        logits, final, _, _ = forward(x)
        return torch.cat([logits, final], 1)

    def step_loss(x: Tensor, y: Tensor) -> Tensor:
        _, final, d, c = forward(x)
        mu = loss_mu(parts["anchors"].get_anchors())
        return loss_ce(final, y) + TRUST * mu + TRUST * loss_center(d, y, c)

    state = {f"{k}.{n}": v for k, m in parts.items() for n, v in m.state_dict().items()}
    patches = ["none to the model; train.py's step (T = delta = 1, trust 0.5) re-composed from its modules and losses"]
    patches.append("Adam lr 1e-4 in one group (train.py: per-part learning rates)")
    return Official(parts, state, infer, step_loss, lambda p: torch.optim.Adam(p, lr=1e-4), patches)


def _official_arm(root: Path) -> Official:
    patches = [p for p in [_no_cuda_tensor()] if p]
    mod = _import_file(root / "src" / "Networks.py", "_official_arm_networks")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = mod.ResNet18_ARM___RAF(pretrained=False, num_classes=7, drop_rate=0)
    patches.append("pretrained=False (no ImageNet download); fp32 (train_raf-db.py trains under apex amp O1 on GPU)")
    return Official(
        model,
        model.state_dict(),
        lambda x: model(x)[0],
        lambda x, y: _labels_ce(model(x)[0], y),
        lambda p: torch.optim.Adam(p, weight_decay=1e-4),
        patches,
    )


def _official_esr9(root: Path) -> Official:
    mod = _import_file(root / "model" / "ml" / "esr_9.py", "_official_esr_9")
    folder = Path(tempfile.mkdtemp(prefix="bench-official-esr9-"))
    torch.save(mod.Base().state_dict(), folder / mod.ESR.FILE_NAME_BASE_NETWORK)
    for i in range(1, 10):
        torch.save(mod.ConvolutionalBranch().state_dict(), folder / mod.ESR.FILE_NAME_CONV_BRANCH.format(i))
    mod.ESR.PATH_TO_SAVED_NETWORK = str(folder)
    model = mod.ESR("cpu")
    shutil.rmtree(folder)
    parts = nn.ModuleDict({"base": model.base, "branches": nn.ModuleList(model.convolutional_branches)})
    state = {f"base.{k}": v for k, v in model.base.state_dict().items()}
    for i, branch in enumerate(model.convolutional_branches):
        state.update({f"convolutional_branches.{i}.{k}": v for k, v in branch.state_dict().items()})
    patches = ["ESR.PATH_TO_SAVED_NETWORK -> a temp folder of random-init files (removed after loading)"]
    patches.append("loss: sum of the 9 branch CEs, SGD lr 0.1 momentum 0.9 (main_fer_plus.py's ensemble phase)")
    return Official(
        parts,
        state,
        lambda x: torch.stack(model(x)[0]),
        lambda x, y: sum((_labels_ce(e, y) for e in model(x)[0]), torch.zeros(())),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        patches,
    )


def _manet_optimizer(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


def _official_manet(root: Path) -> Official:
    mod = _import_package(root / "model", "_official_manet_model", "manet")
    model = mod.manet()
    model.fc_1, model.fc_2 = nn.Linear(512, 7), nn.Linear(512, 7)  # main.py's 7-class heads

    def loss(x: Tensor, y: Tensor) -> Tensor:
        o1, o2 = model(x)
        return 0.6 * _labels_ce(o1, y) + 0.4 * _labels_ce(o2, y)

    return Official(
        model,
        model.state_dict(),
        lambda x: torch.stack(model(x)),
        loss,
        _manet_optimizer,
        ["none; heads replaced by Linear(512, 7) as main.py does; loss 0.6 CE + 0.4 CE (beta 0.6)"],
    )


def _official_manet_diversity(root: Path) -> Official:
    mod = _import_package(root / "model", "_official_diversified_model", "diversified_manet")
    model = mod.manet()
    model.fc_1, model.fc_2 = nn.Linear(512, 7), nn.Linear(512, 7)
    div = _classes_from_script(root / "manet_rafdb.py", ("BranchDiversity", "FeatDiversity"))
    bdiv, fdiv = div["BranchDiversity"](), div["FeatDiversity"]()

    def loss(x: Tensor, y: Tensor) -> Tensor:
        o1, o2, global_feat, local_feat = model(x)
        total = 0.6 * _labels_ce(o1, y) + 0.4 * _labels_ce(o2, y)
        total = total + bdiv(local_feat, type="spatial").det_div + bdiv(local_feat, type="channel").det_div
        return total + fdiv(global_feat).det_div

    return Official(
        model,
        model.state_dict(),
        lambda x: torch.stack(model(x)[:2]),
        loss,
        _manet_optimizer,
        ["BranchDiversity/FeatDiversity executed from manet_rafdb.py's class definitions only (it parses argv)"],
    )


OFFICIAL: dict[str, Callable[[Path], Official]] = {
    "poster_v2": _official_poster_v2,
    "arbex": _official_arbex,
    "arm": _official_arm,
    "esr9": _official_esr9,
    "manet": _official_manet,
    "manet+diversity": _official_manet_diversity,
}


# --- fernb's side ---------------------------------------------------------------------------------------------------


def _fernb_model(method: Method, official: Official) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fernb.create_model(method.fernb_name, preset="official", **method.fernb_kwargs)
    report = load_checkpoint(model, official.state_dict)
    if not report.ok:
        raise RuntimeError(f"fernb's converter did not take every official key: {report}")
    if method.key == "arbex":
        model.trust = TRUST
    return model


def _fernb_compared(method: Method, out: Any) -> Tensor:
    """fernb's outputs laid out as the official ``infer`` returns them."""
    out = float_output(out)
    if method.key == "arbex":
        return torch.cat([out.head_logits, out.final_dist], 1)
    if method.key == "esr9":
        return out.branch_logits
    if method.key.startswith("manet"):
        return torch.stack([out.logits_local, out.logits_global])
    return out.logits


def _fernb_loss(method: Method) -> Callable[[Any, Tensor], Tensor]:
    info = StepInfo(progress=TRUST)
    if method.key == "arbex":
        counts = torch.tensor(ARBEX_CLASS_COUNTS, dtype=torch.float32)
        loss = create_loss("arbex", class_weights=counts.sum() / len(counts) / counts)
    elif method.key == "manet+diversity":
        loss = create_loss("manet", diversity=True, diversity_form="official")
    else:
        loss = create_loss(method.fernb_name)
    return lambda out, y: loss(float_output(out), y, info=info).total


# --- timing ---------------------------------------------------------------------------------------------------------


@dataclass
class _Side:
    """A timed contender: modules, optimiser, a forward returning what is compared, a loss, a precision context."""

    modules: nn.Module
    optimizer: torch.optim.Optimizer
    infer: Callable[[Tensor], Tensor]
    loss: Callable[[Tensor, Tensor], Tensor]
    precision: str
    channels_last: bool = False  # feed channels-last inputs (the model was moved there)
    compiled: bool = False  # the model runs through torch.compile (its first calls compile)

    def context(self) -> contextlib.AbstractContextManager:
        return autocast_context(torch.device("cpu"), self.precision)

    def _input(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_step(self, x: Tensor, y: Tensor) -> None:
        self.modules.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.context():
            loss = self.loss(self._input(x), y)
        loss.backward()
        self.optimizer.step()

    def forward(self, x: Tensor) -> Tensor:
        self.modules.eval()
        with torch.no_grad(), self.context():
            return self.infer(self._input(x)).float()

    def first_loss(self, x: Tensor, y: Tensor) -> float:
        """The train-mode loss at seed 0, without a step."""
        self.modules.train()
        torch.manual_seed(0)
        with torch.no_grad(), self.context():
            return float(self.loss(self._input(x), y))


def _median_img_s(times: list[float], batch: int) -> float:
    return batch / statistics.median(times)


def _diff(a: Tensor | float, b: Tensor | float) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().nan_to_num(float("inf")).max())


def _with_impl(opt: torch.optim.Optimizer, params: list[nn.Parameter], impl: str) -> tuple[torch.optim.Optimizer, str]:
    """``opt``'s class and hyper-parameters over ``params``, updating as ``impl`` says (``same``: ``opt`` itself, as
    the official code builds it); returns the optimiser and the implementation it uses."""
    if impl == "same":
        fused, foreach = opt.defaults.get("fused"), opt.defaults.get("foreach")
        return opt, "fused" if fused else "foreach" if foreach else "torch default"
    impl = resolve_impl(impl, params)
    kwargs = {**opt.defaults, "fused": impl == "fused", "foreach": impl == "foreach"}
    return type(opt)(params, **kwargs), impl


def _compiled(model: nn.Module, mode: str) -> nn.Module:
    """``model`` through torch.compile as ``run.compile`` builds it (static sizes, eager random numbers; the batch is
    the same every call here)."""
    from torch._inductor import list_mode_options

    return torch.compile(model, dynamic=None, options={**list_mode_options(mode), "fallback_random": True})


def _fernb_side(
    method: Method,
    official: Official,
    precision: str,
    channels_last: bool,
    optim_impl: str = "same",
    compile_mode: str | None = None,
) -> tuple[_Side, str]:
    """fernb's model with the official weights, its own loss and the official optimiser (updating as ``optim_impl``
    says), at ``precision``, compiled in ``compile_mode`` when given; and the optimiser's implementation."""
    model = _fernb_model(method, official)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = _compiled(model, compile_mode) if compile_mode else model
    loss = _fernb_loss(method)

    def infer(x: Tensor) -> Tensor:
        return _fernb_compared(method, net(x))

    def step_loss(x: Tensor, y: Tensor) -> Tensor:
        return loss(net(x), y)

    params = [p for p in model.parameters() if p.requires_grad]
    opt, impl = _with_impl(official.optimizer(params), params, optim_impl)
    return _Side(model, opt, infer, step_loss, precision, channels_last, compiled=compile_mode is not None), impl


def measure(
    method: Method,
    official: Official,
    batch: int,
    warmup: int,
    repeats: int,
    channels_last: bool = False,
    optim_impl: str = "same",
    compile_mode: str | None = None,
) -> list[Row]:
    """Check the outputs, then time official / fernb fp32 / fernb default (/ fernb fp32 compiled), alternating, for
    train and inference.

    Each fernb contender has its own model copy and optimiser (``optim_impl``: how it updates; ``same``: as the
    official code builds it); ``channels_last`` puts every fernb contender (and its inputs) in channels-last memory,
    as the budget recipe does (``run.channels_last``); ``compile_mode`` adds an fp32 contender through
    torch.compile, whose first call of each mode (the compilation) is timed on its own: ``compile_warmup_s`` is that
    call's excess over the median call."""
    default = resolve_precision("auto", torch.device("cpu"))
    off = _Side(
        official.modules,
        official.optimizer([p for p in official.modules.parameters() if p.requires_grad]),
        official.infer,
        official.loss,
        "fp32",
    )
    fp32, impl = _fernb_side(method, official, "fp32", channels_last, optim_impl)
    sides = [off, fp32, _fernb_side(method, official, default, channels_last, optim_impl)[0]]
    if compile_mode:
        sides.append(_fernb_side(method, official, "fp32", channels_last, optim_impl, compile_mode)[0])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, method.img_size, method.img_size, generator=gen)
    y = torch.randint(0, 7, (batch,), generator=gen)

    label = default + ("+channels_last" if channels_last else "")
    rows = [
        Row(
            method.key,
            mode,
            batch,
            method.img_size,
            default_precision=label,
            optim_impl=impl,
            channels_last=channels_last,
        )
        for mode in ("train", "infer")
    ]
    first: dict[tuple[int, str], float] = {}  # (side, mode) -> seconds of its first call (the compiled side's)
    ref = off.forward(x)
    rows[1].ref_scale = float(ref.abs().max())
    infer_diffs = []
    for i, s in enumerate(sides[1:], 1):
        t0 = time.perf_counter()
        infer_diffs.append(_diff(s.forward(x), ref))
        first[(i, "infer")] = time.perf_counter() - t0
    rows[1].max_abs_diff_fp32, rows[1].max_abs_diff_default = infer_diffs[:2]
    ref_loss = off.first_loss(x, y)
    rows[0].ref_scale = abs(ref_loss)
    train_diffs = [_diff(s.first_loss(x, y), ref_loss) for s in sides[1:]]
    rows[0].max_abs_diff_fp32, rows[0].max_abs_diff_default = train_diffs[:2]
    if compile_mode:
        rows[0].max_abs_diff_compiled, rows[1].max_abs_diff_compiled = train_diffs[2], infer_diffs[2]

    for row, mode, run in (
        (rows[0], "train", lambda s: s.train_step(x, y)),
        (rows[1], "infer", lambda s: s.forward(x)),
    ):
        times: list[list[float]] = [[] for _ in sides]
        for r in range(warmup + repeats):
            for i, side in enumerate(sides):
                t0 = time.perf_counter()
                run(side)
                if r >= warmup:
                    times[i].append(time.perf_counter() - t0)
                elif r == 0 and mode == "train":
                    first[(i, "train")] = time.perf_counter() - t0
        row.official_img_s, row.fernb_fp32_img_s, row.fernb_default_img_s = (_median_img_s(t, batch) for t in times[:3])
        row.ratio_fp32 = row.fernb_fp32_img_s / row.official_img_s
        row.ratio_default = row.fernb_default_img_s / row.official_img_s
        if compile_mode:
            c = len(sides) - 1
            row.compile_mode = compile_mode
            row.fernb_compiled_img_s = _median_img_s(times[c], batch)
            row.ratio_compiled = row.fernb_compiled_img_s / row.official_img_s
            if (c, mode) in first:  # train: a --warmup 0 run has no untimed first call to read
                row.compile_warmup_s = max(0.0, first[(c, mode)] - statistics.median(times[c]))
    return rows


def missing(method: Method, official_dir: Path | None) -> str:
    """What is missing to run ``method``'s official side ("" when nothing)."""
    if official_dir is None:
        return "no --official folder given"
    repo = official_dir / method.repo
    if not repo.is_dir():
        return f"missing folder {repo}"
    absent = [f for f in method.needs if not (repo / f).is_file()]
    return f"missing in {repo}: {', '.join(absent)}" if absent else ""


# --- output ---------------------------------------------------------------------------------------------------------


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: list[Row]) -> str:
    """The rows as a fixed-width table (ratios are fernb over official; > 1 is faster); with ``--compile``, the
    compiled contender's img/s, ratio, warm-up seconds and difference too."""
    compiled = any(r.compile_mode for r in rows)
    head = (
        f"{'method':<16} {'mode':<5} {'batch':>5} {'px':>4} {'official':>9} {'fernb fp32':>10} {'ratio':>6} "
        f"{'fernb dflt':>10} {'ratio':>6} {'diff fp32':>9} {'diff dflt':>9} {'scale':>7}"
    )
    if compiled:
        head += f" {'compiled':>9} {'ratio':>6} {'warm-up s':>9} {'diff comp':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.skipped:
            lines.append(f"{r.method:<16} {r.mode:<5} skipped: {r.skipped}")
            continue
        line = (
            f"{r.method:<16} {r.mode:<5} {r.batch:>5} {r.img_size:>4} {_f(r.official_img_s, '9.2f')} "
            f"{_f(r.fernb_fp32_img_s, '10.2f')} {_f(r.ratio_fp32, '6.2f')} {_f(r.fernb_default_img_s, '10.2f')} "
            f"{_f(r.ratio_default, '6.2f')} {_f(r.max_abs_diff_fp32, '9.1e')} {_f(r.max_abs_diff_default, '9.1e')} "
            f"{_f(r.ref_scale, '7.2g')}"
        )
        if compiled:
            line += (
                f" {_f(r.fernb_compiled_img_s, '9.2f')} {_f(r.ratio_compiled, '6.2f')} "
                f"{_f(r.compile_warmup_s, '9.1f')} {_f(r.max_abs_diff_compiled, '9.1e')}"
            )
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns the exit status (0 also when every row is skipped)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", type=Path, default=None, help="folder with one sub-folder per official repository")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per contender (medians)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--channels-last",
        action="store_true",
        help="every fernb contender (fp32, default precision, compiled) in channels-last memory (run.channels_last)",
    )
    ap.add_argument(
        "--optim-impl",
        choices=("auto", "fused", "foreach", "loop", "same"),
        default="auto",
        help="how fernb's contenders update (optim.impl; default auto: fused; fernb's config default is loop); "
        "same: the official optimiser",
    )
    ap.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        metavar="MODE",
        help="add fernb fp32 through torch.compile (run.compile; MODE default: default); its warm-up is reported apart",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    keys = [k.strip() for k in args.methods.split(",") if k.strip()]
    unknown = [k for k in keys if k not in METHODS]
    if unknown:
        print(f"error: unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {args.repeats} repeats, "
        f"fernb optimiser update {args.optim_impl}" + (f", torch.compile {args.compile}" if args.compile else "")
    )
    rows: list[Row] = []
    for key in keys:
        method = METHODS[key]
        why = missing(method, args.official)
        if not why:
            try:
                official = OFFICIAL[key](args.official / method.repo)
                new = measure(
                    method,
                    official,
                    args.batch,
                    args.warmup,
                    args.repeats,
                    args.channels_last,
                    args.optim_impl,
                    args.compile,
                )
                for r in new:
                    r.patches = official.patches
                rows += new
                print(f"{key}: patched: {'; '.join(official.patches)}", flush=True)
                continue
            except Exception as exc:  # the official code is not ours: report and go on
                why = f"{type(exc).__name__}: {exc}"
        print(f"{key}: skipped: {why}", flush=True)
        rows += [Row(key, mode, args.batch, method.img_size, skipped=why) for mode in ("train", "infer")]
    print(format_table(rows))
    labels = sorted({r.default_precision for r in rows if r.default_precision})
    if labels:
        print(f"fernb default = {', '.join(labels)}; ratio = fernb img/s / official img/s; diff vs official")
    if args.channels_last:
        print("every fernb contender ran in channels-last memory (--channels-last); the official code as it is")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
