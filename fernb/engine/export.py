"""Export a model to ONNX, check the graph against ONNX Runtime, and write its model card.

``export_onnx("runs/arbex-ferplus-s0", "out/arbex.onnx")`` rebuilds the run's best checkpoint, exports it with a
dynamic batch axis, runs the graph in ONNX Runtime on a seeded batch beside the PyTorch model (the largest absolute
difference per output is the check), and writes ``README.md`` beside the file: the model card, filled from the run's
``config.json``, ``run.json`` and evaluations (:func:`write_model_card`).

The graph's input ``image`` is the normalised (B, 3, H, W) float32 tensor of the run's evaluation transform; its
outputs are ``logits`` (B, C), in the run's class order (canonical order, :mod:`fernb.labels`), and with ``extras``
the model's named per-sample outputs (ARBEx: distributions, confidences, anchor distances, ...). The input spec is
also stored in the ONNX file's metadata (``fernb.*`` keys).

Export uses PyTorch's TorchScript-based exporter (``dynamo=False``): it needs only ``onnx``, takes 0.1-1 s for the
``tiny`` models against 5-9 s for the ``torch.export``-based one, and is still in torch 2.14 (deprecated there).
``exporter="dynamo"`` takes the newer one, which needs ``onnxscript``. CBAM's fast CPU path (custom autograd nodes
calling NNPACK, :class:`fernb.models._cbam.FastCBAM`) has no ONNX form, so it runs CBAM's plain code while exporting.
Needs the ``export`` extra: ``pip install 'fernb[export]'``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import time
import types
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._version import __version__
from ..data.transforms import has_preset, transform_spec
from ..errors import FernbError
from ..labels import CANONICAL, get_label_space
from ..models import FERModel, PretrainedCfg, create_model, parse_variant
from ..models._cbam import CBAM, FastCBAM
from .config import TrainConfig
from .data import transform_method
from .factory import load_run
from .rundir import RunDir, atomic_write_text

__all__ = [
    "ExportError",
    "ExportResult",
    "InputSpec",
    "export_onnx",
    "build_for_export",
    "check_onnx",
    "write_model_card",
    "plain_modules",
    "OPSET",
    "CARD_MARK",
]

OPSET = 17  # ONNX Runtime >= 1.14 runs it; LayerNormalization is a single op from 17 on
CARD_MARK = "<!-- fernb model card -->"  # first line of every card: an existing README.md without it is never replaced


class ExportError(FernbError, RuntimeError):
    """Export impossible (a missing package, an unknown output name) or the ONNX Runtime check failed."""


@dataclass
class InputSpec:
    """What the graph's ``image`` input expects.

    Attributes:
        size: (C, H, W); the batch axis is dynamic.
        mean, std: per-channel normalisation of pixels in [0, 1] (None: pixels / 255 only).
        channel_order: ``"RGB"`` or ``"BGR"``.
        steps: the evaluation transform as data (:class:`fernb.data.transforms.TransformSpec` steps), or empty.
        class_names: the order of the logits' columns.
    """

    size: tuple[int, int, int]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    channel_order: str
    class_names: list[str]
    steps: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and measured.

    Attributes:
        path: the ONNX file.
        outputs: the graph's output names, ``logits`` first, with their shapes (``"B"``: the batch axis).
        spec: the input spec.
        max_abs_error: per output, the largest |ONNX Runtime - PyTorch| on the check batch (empty without a check).
        tolerance: the bound the check applied per output (``atol * max(1, max |output|)``).
        check_batch: samples in the check batch (the export traced a batch of 2, so the check also covers the
            dynamic batch axis).
        export_seconds: wall time of the export alone.
        batch_dependent: a sample's logits change with the other images of its batch (ARBEx's batch attention, ARM's
            official batch-mean affinity), measured on the check batch.
        exporter: ``"torchscript"`` or ``"dynamo"``.
        opset: the ONNX opset.
        model: registry name; ``preset``: its preset.
        checkpoint: which checkpoint (a run's tag, or a file).
        card: the model card written, if any.
    """

    path: Path
    outputs: dict[str, list[int | str]]
    spec: InputSpec
    max_abs_error: dict[str, float]
    tolerance: dict[str, float]
    check_batch: int
    export_seconds: float
    batch_dependent: bool
    exporter: str
    opset: int
    model: str
    preset: str
    checkpoint: str
    card: Path | None = None

    @property
    def ok(self) -> bool:
        """Every checked output within its tolerance."""
        return all(self.max_abs_error[k] <= self.tolerance[k] for k in self.max_abs_error)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (paths as strings)."""
        d = asdict(self)
        d.update(path=str(self.path), card=str(self.card) if self.card else None, ok=self.ok)
        return d

    def summary(self) -> str:
        """Lines for the command line."""
        size = self.path.stat().st_size / 2**20 if self.path.exists() else 0.0
        lines = [
            f"wrote {self.path} ({size:.1f} MiB; {self.model}/{self.preset}, checkpoint {self.checkpoint}; "
            f"input image (B, {', '.join(map(str, self.spec.size))}); outputs {', '.join(self.outputs)}) "
            f"in {self.export_seconds:.2f} s ({self.exporter} exporter, opset {self.opset})"
        ]
        if self.max_abs_error:
            worst = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs_error.items())
            verdict = "ok" if self.ok else "FAILED"
            lines.append(
                f"ONNX Runtime check on a batch of {self.check_batch}: max abs error {worst} "
                f"(bound {self.tolerance.get('logits', 0.0):.1e} on logits): {verdict}"
            )
        if self.batch_dependent:
            lines.append("note: a sample's logits depend on the other images of its batch (see the model card)")
        if self.card is not None:
            lines.append(f"model card: {self.card}")
        return "\n".join(lines)


def _require(module: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ExportError(f"{why} needs the {module!r} package: pip install 'fernb[export]' (onnx, onnxruntime)")


@contextmanager
def plain_modules(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with every :class:`FastCBAM` running CBAM's plain code (its NNPACK nodes have no ONNX form);
    restored on exit."""
    patched = [m for m in model.modules() if isinstance(m, FastCBAM)]
    for m in patched:
        m.forward_attention = types.MethodType(CBAM.forward_attention, m)  # type: ignore[method-assign]
    try:
        yield model
    finally:
        for m in patched:
            del m.forward_attention


class _Outputs(nn.Module):
    """A model whose forward returns a tuple of named outputs (ONNX graphs take tuples, not dataclasses)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.model(x)
        return tuple(getattr(out, n) for n in self.names)


def _per_sample_extras(out: Any, batch: int) -> list[str]:
    """Names of the output's extras that are tensors with one row per sample."""
    extras = out.extras() if hasattr(out, "extras") else {}
    return [k for k, v in extras.items() if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == batch]


def _input_spec_of_run(cfg: TrainConfig, class_names: list[str], model: FERModel) -> InputSpec:
    """The run's evaluation transform as an input spec (the model's pretrained cfg when the run has none)."""
    method = transform_method(cfg)
    size = int(cfg.data.img_size)
    if method is None:  # data.transform="keep": the dataset's own tensors
        return _input_spec_of_model(model, class_names, size)
    name = method if cfg.data.transform != "auto" or has_preset(method) else "default"
    spec = transform_spec(name, False, size)
    return InputSpec(
        size=(spec.channels, size, size),
        mean=tuple(spec.mean) if spec.mean is not None else None,
        std=tuple(spec.std) if spec.std is not None else None,
        channel_order="BGR" if spec.bgr else "RGB",
        class_names=class_names,
        steps=spec.to_dict()["steps"],
    )


def _input_spec_of_model(model: nn.Module, class_names: list[str], size: int | None = None) -> InputSpec:
    """A bare model's input spec, from its pretrained cfg (ImageNet-normalised 224 px RGB without one)."""
    pc: PretrainedCfg = getattr(model, "pretrained_cfg", None) or PretrainedCfg()
    c, h, _ = pc.input_size
    side = size or h
    unit = all(v == 0 for v in pc.mean) and all(v == 1 for v in pc.std)
    return InputSpec(
        size=(c, side, side),
        mean=None if unit else tuple(pc.mean),
        std=None if unit else tuple(pc.std),
        channel_order=pc.channel_order,
        class_names=class_names,
    )


def _check_images(spec: InputSpec, batch: int, seed: int) -> Tensor:
    """A seeded batch of uniform images in [0, 1], normalised as the spec says: (B, C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *spec.size, generator=g)
    if spec.mean is not None and spec.std is not None:
        x = (x - torch.tensor(spec.mean).view(-1, 1, 1)) / torch.tensor(spec.std).view(-1, 1, 1)
    return x


def _torch_export(module: nn.Module, x: Tensor, path: Path, names: list[str], opset: int, exporter: str) -> None:
    params = inspect.signature(torch.onnx.export).parameters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice and tracer warnings
        if exporter == "torchscript":
            kwargs: dict[str, Any] = {"dynamo": False} if "dynamo" in params else {}
            torch.onnx.export(
                module,
                (x,),
                str(path),
                input_names=["image"],
                output_names=names,
                dynamic_axes={n: {0: "batch"} for n in ["image", *names]},
                opset_version=opset,
                do_constant_folding=True,
                **kwargs,
            )
        elif exporter == "dynamo":
            _require("onnxscript", "exporter='dynamo'")
            torch.onnx.export(
                module,
                (x,),
                str(path),
                input_names=["image"],
                output_names=names,
                dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                opset_version=max(opset, 18),
                dynamo=True,
                external_data=False,
            )
        else:
            raise ExportError(f"exporter={exporter!r}; expected 'torchscript' or 'dynamo'")


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))


def check_onnx(path: str | Path, module: nn.Module, x: Tensor, names: Sequence[str]) -> dict[str, float]:
    """Run the ONNX file in ONNX Runtime (CPU, as many threads as torch) and ``module`` in PyTorch on ``x``.

    Args:
        path: the ONNX file (input ``image``).
        module: returns the outputs ``names`` as a tuple (eval mode).
        x: (B, C, H, W) float32 batch.
        names: the graph's output names, in order.

    Returns:
        Per output name, the largest absolute difference.
    """
    _require("onnxruntime", "the ONNX Runtime check")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(list(names), {"image": x.numpy()})
    with torch.no_grad():
        ref = module(x)
    return {
        n: float(np.abs(np.asarray(g, dtype=np.float64) - r.double().numpy()).max()) if r.numel() else 0.0
        for n, g, r in zip(names, got, ref)
    }


def _batch_dependent(module: nn.Module, x: Tensor) -> bool:
    """Whether the first sample's logits differ (beyond float noise) when it is alone in its batch."""
    with torch.no_grad():
        full, alone = module(x)[0][:1], module(x[:1])[0]
    return not torch.allclose(full, alone, rtol=1e-4, atol=1e-5)


def export_onnx(
    run_or_model: str | Path | FERModel,
    path: str | Path,
    *,
    checkpoint: str | int = "best",
    extras: bool | Sequence[str] = False,
    class_names: Sequence[str] | None = None,
    img_size: int | None = None,
    preset: str | None = None,
    opset: int = OPSET,
    exporter: str = "torchscript",
    check: bool = True,
    atol: float = 1e-5,
    check_batch: int = 4,
    seed: int = 0,
    card: bool | str | Path = True,
) -> ExportResult:
    """Export a run's checkpoint (or a model) to ONNX, check it against ONNX Runtime, and write its model card.

    Args:
        run_or_model: a run folder (its ``checkpoint`` is loaded) or a model (exported as it is, in eval mode).
        path: the ``.onnx`` file to write (folders are created).
        checkpoint: the run's ``"best"``, ``"last"`` or a kept epoch (for a bare model: a label for the card, such
            as the file it was loaded from).
        extras: also output the model's named per-sample extras (True: all of them; or a list of names).
        class_names: a bare model's class order (default: the first C canonical classes); a run knows its own.
        img_size: a bare model's input side (default: its pretrained cfg's); a run uses its ``data.img_size``.
        preset: a bare model's preset, for the card (a run knows its own).
        opset: the ONNX opset (the dynamo exporter uses at least 18).
        exporter: ``"torchscript"`` (default: fast, needs ``onnx`` only) or ``"dynamo"`` (needs ``onnxscript``).
        check: compare ONNX Runtime with PyTorch on a seeded batch of ``check_batch`` images.
        atol: the check's bound on the largest absolute difference, scaled by ``max(1, max |output|)`` per output
            (so 1e-5 on logits below 1 in magnitude).
        check_batch: images in the check batch (the export traces 2, so another count also checks the batch axis).
        seed: seed of the trace and check batches.
        card: write the model card (True: ``README.md`` beside the file, or ``<name>.card.md`` where a README.md that
            is not a fernb card exists; or a path). A bare model's card lists what is unknown.

    Returns:
        The :class:`ExportResult` (``card`` set when written).

    Raises:
        ExportError: ``onnx`` (or, for the check, ``onnxruntime``) missing, an unknown extra, or a check over bound
            (the file and the card are written first, so they can be inspected).
    """
    _require("onnx", "ONNX export")
    run_dir: Path | None = None
    cfg: TrainConfig | None = None
    if isinstance(run_or_model, nn.Module):
        model = run_or_model
        spec = _input_spec_of_model(model, list(class_names or []), img_size)
        tag = checkpoint if isinstance(checkpoint, str) and checkpoint != "best" else "as given"
    else:
        run_dir = Path(run_or_model)
        cfg, model, meta = load_run(run_dir, checkpoint, device="cpu")
        spec = _input_spec_of_run(cfg, list(meta["class_names"]), model)
        tag = str(checkpoint) + (f" (epoch {meta['epoch']})" if meta.get("epoch") is not None else "")
    name = str(getattr(model, "pretrained_tag", None) or type(model).__name__)
    preset = cfg.model.preset if cfg is not None else (preset or "?")
    out_path = Path(path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model = model.float().cpu().eval()
    trace = _check_images(spec, 2, seed)
    with plain_modules(model), torch.no_grad():
        sample = model(trace)
        if not spec.class_names:
            c = int(sample.logits.shape[1])
            spec.class_names = list(CANONICAL[:c]) if c <= len(CANONICAL) else [f"class_{i}" for i in range(c)]
        available = _per_sample_extras(sample, 2)
        if extras is True:
            chosen = available
        elif extras:
            chosen = list(extras)
            unknown = sorted(set(chosen) - set(available))
            if unknown:
                raise ExportError(f"{name} has no per-sample output(s) {unknown}; it has {available}")
        else:
            chosen = []
        names = ["logits", *[n for n in chosen if n != "logits"]]
        module = _Outputs(model, names).eval()
        t0 = time.perf_counter()
        _torch_export(module, trace, out_path, names, opset, exporter)
        seconds = time.perf_counter() - t0
        module.eval()  # the TorchScript exporter restores the wrapper's mode; keep eval for the check
        shapes = {n: ["B", *list(getattr(sample, n).shape[1:])] for n in names}
        errors: dict[str, float] = {}
        bounds: dict[str, float] = {}
        batch_dep = False
        if check:
            x = _check_images(spec, check_batch, seed + 1)
            errors = check_onnx(out_path, module, x, names)
            with torch.no_grad():
                ref = module(x)
            bounds = {n: atol * max(1.0, float(r.abs().max())) for n, r in zip(names, ref)}
            batch_dep = _batch_dependent(module, x)
    model.train(was_training)
    _add_metadata(
        out_path,
        {
            "fernb.version": __version__,
            "fernb.model": name,
            "fernb.preset": preset,
            "fernb.input_size": json.dumps(list(spec.size)),
            "fernb.mean": json.dumps(list(spec.mean) if spec.mean is not None else None),
            "fernb.std": json.dumps(list(spec.std) if spec.std is not None else None),
            "fernb.channel_order": spec.channel_order,
            "fernb.class_names": json.dumps(spec.class_names),
            "fernb.outputs": json.dumps(names),
        },
    )
    result = ExportResult(
        path=out_path,
        outputs=shapes,
        spec=spec,
        max_abs_error=errors,
        tolerance=bounds,
        check_batch=check_batch if check else 0,
        export_seconds=seconds,
        batch_dependent=batch_dep,
        exporter=exporter,
        opset=opset if exporter == "torchscript" else max(opset, 18),
        model=name,
        preset=preset,
        checkpoint=tag,
    )
    if card:
        card_path = None if card is True else Path(card)
        result.card = write_model_card(run_dir, result, card_path)
    if not result.ok:
        over = {k: v for k, v in errors.items() if v > bounds[k]}
        raise ExportError(
            f"{out_path}: ONNX Runtime differs from PyTorch beyond the bound: "
            + ", ".join(f"{k} {v:.2e} > {bounds[k]:.1e}" for k, v in over.items())
            + f"\n{result.summary()}"
        )
    return result


def build_for_export(
    name: str,
    preset: str = "official",
    checkpoint: str | Path | None = None,
    *,
    classes: str | None = None,
    img_size: int | None = None,
) -> FERModel:
    """A registered model (or variant, ``"esr+diversity"``) to export without a run: built from its preset, with a
    checkpoint file loaded through the key converters when given (``create_model(..., checkpoint=...)``).

    Args:
        name: registry name or variant.
        preset: the model preset.
        checkpoint: a checkpoint file (safetensors, a torch state dict; official naming converted), or None.
        classes: the label space the weights were trained on (sets ``num_classes``).
        img_size: the input side, for models whose config has one.
    """
    base, flags = parse_variant(name)
    kwargs: dict[str, Any] = dict(flags)
    if classes:
        kwargs["num_classes"] = len(get_label_space(classes))
    if img_size:
        kwargs["img_size"] = img_size
    try:
        return create_model(base, preset, checkpoint=checkpoint, **kwargs)
    except TypeError as exc:  # a model whose config has no img_size
        if "img_size" not in str(exc):
            raise
        kwargs.pop("img_size")
        return create_model(base, preset, checkpoint=checkpoint, **kwargs)


# -------------------------------------------------------------------------------------------------------- model card

# What the named outputs mean (ARBEx's, from fernb.models.arbex.ARBExOutput; others by shape only).
_OUTPUT_NOTES: dict[str, str] = {
    "logits": "class scores; softmax gives the probabilities, argmax the prediction",
    "embedding": "the embedding the head reads",
    "head_logits": "ARBEx: the MLP head's scores",
    "primary_dist": "ARBEx: p = softmax(head_logits / T)",
    "confidence_primary": "ARBEx: c_p, confidence of the primary distribution",
    "distances": "ARBEx: Euclidean distances to the k anchors of each class",
    "anchor_dist": "ARBEx: l_g, the distribution from the anchor distances",
    "confidence_anchor": "ARBEx: c_g",
    "attention_dist": "ARBEx: l_a, the distribution from the multi-head attention",
    "confidence_attention": "ARBEx: c_a",
    "correction": "ARBEx: (c_g l_g + c_a l_a) / (c_g + c_a)",
    "mixed_dist": "ARBEx: c_p p + (1 - c_p) correction",
    "final_dist": "ARBEx: (1 - t) p + t mixed at the model's trust t",
    "prediction_dist": "ARBEx: the distribution predictions come from (logits = its log)",
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pct(v: Any) -> str:
    return f"{100 * float(v):.1f}" if isinstance(v, (int, float)) else "-"


def _with_ci(m: dict[str, Any], key: str) -> str:
    ci = (m.get("ci") or {}).get(key)
    return _pct(m.get(key)) + (f" [{_pct(ci['low'])}, {_pct(ci['high'])}]" if ci else "")


def _card_path(onnx_path: Path) -> Path:
    readme = onnx_path.parent / "README.md"
    if not readme.exists() or readme.read_text(encoding="utf-8", errors="replace").startswith(CARD_MARK):
        return readme
    return onnx_path.with_suffix(".card.md")


def _section_input(r: ExportResult) -> list[str]:
    s = r.spec
    c, h, w = s.size
    norm = (
        f"subtract mean {list(s.mean)} and divide by std {list(s.std)} per channel"
        if s.mean is not None and s.std is not None
        else "no mean/std normalisation (pixels / 255 only)"
    )
    lines = [
        "## Input",
        "",
        f"`image`: float32 (B, {c}, {h}, {w}), B dynamic. From a face crop: resize to {h}x{w} (bilinear, "
        f"antialiased; no crop, aspect not kept), channel order {s.channel_order}, scale pixels to [0, 1], {norm}.",
    ]
    if s.steps:
        lines += ["", "The evaluation transform as fernb runs it (`fernb.data.transforms` steps):", ""]
        lines += [f"- `{json.dumps(step)}`" for step in s.steps]
    lines += ["", "The same spec is in the ONNX file's metadata (`fernb.input_size`, `fernb.mean`, `fernb.std`, "]
    lines[-1] += "`fernb.channel_order`, `fernb.class_names`, `fernb.outputs`)."
    return lines


def _section_outputs(r: ExportResult) -> list[str]:
    lines = ["## Outputs", "", "| name | shape | what |", "|---|---|---|"]
    for n, shape in r.outputs.items():
        lines.append(f"| `{n}` | ({', '.join(map(str, shape))}) | {_OUTPUT_NOTES.get(n, '')} |")
    lines += ["", "Classes, in the order of the columns (`fernb.labels` canonical order):", ""]
    lines += [f"{i}. {c}" for i, c in enumerate(r.spec.class_names)]
    if r.batch_dependent:
        lines += [
            "",
            "**Batch dependence.** A sample's outputs change with the other images of its batch (measured on the "
            "check batch): the model attends over, or averages across, the batch. fernb scores such models on "
            "shuffled batches of its evaluation batch size; a batch of one gives other numbers.",
        ]
    return lines


def _section_check(r: ExportResult) -> list[str]:
    import onnx

    versions = f"torch {torch.__version__}, onnx {onnx.__version__}"
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        versions += f", onnxruntime {onnxruntime.__version__}"
    lines = ["## Export check", ""]
    if r.max_abs_error:
        lines.append(
            f"ONNX Runtime (CPU) against PyTorch on a seeded batch of {r.check_batch} images (the export traced 2): "
            + ", ".join(f"`{k}` max abs error {v:.2e} (bound {r.tolerance[k]:.1e})" for k, v in r.max_abs_error.items())
            + f": {'ok' if r.ok else 'FAILED'}."
        )
    else:
        lines.append("Not checked against ONNX Runtime (`check=False`).")
    lines += [
        "",
        f"{r.exporter} exporter, opset {r.opset}; {versions}; fernb {__version__}. "
        f"File `{r.path.name}`, sha256 `{_sha256(r.path)}`.",
    ]
    return lines


def _section_data(record: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    d = record.get("data") or {}
    dc = cfg.get("data") or {}
    space = d.get("label_space") or {}
    lines = ["## Data", ""]
    lines.append(
        f"Dataset `{dc.get('dataset')}` (read: `{d.get('source', dc.get('dataset'))}`), label space "
        f"`{space.get('name', dc.get('label_space'))}`, {dc.get('img_size')} px."
    )
    for part in ("train", "valid"):
        p = d.get(part) or {}
        if p:
            counts = ", ".join(f"{k} {v}" for k, v in (p.get("class_counts") or {}).items())
            lines.append(
                f"- {part}: split `{p.get('split')}`, {p.get('n')} images, fingerprint `{p.get('fingerprint')}`"
                + (f" ({counts})" if counts else "")
            )
    if d.get("label_noise"):
        lines.append(f"- training labels with injected noise: `{json.dumps(d['label_noise'])}`")
    for note in d.get("notes") or []:
        lines.append(f"- {note}")
    if dc.get("dataset") == "synthetic" or d.get("source") == "synthetic":
        lines.append(
            "- These are fernb's synthetic faces (`fernb.data.synthetic`): the model has not seen a real face; "
            "use it to test pipelines, not to recognise expressions."
        )
    align = d.get("align") if "align" in d else dc.get("align")
    lines += ["", "### Face detection and alignment", ""]
    if align:
        if isinstance(align, dict):
            lines += [f"- {k}: `{json.dumps(v)}`" for k, v in align.items()]
        else:
            lines.append(f"`{json.dumps(align)}`")
        lines += ["", "Apply the same detector and alignment template to new images before the input transform."]
    else:
        lines.append(
            "None by fernb: the images were used as the dataset gives them (its own face crops, aligned or not as "
            "published). New images should be face crops of the same kind."
        )
    return lines


def _section_protocol(record: dict[str, Any], cfg: dict[str, Any], r: ExportResult) -> list[str]:
    dc, sc = cfg.get("data") or {}, cfg.get("schedule") or {}
    mon = record.get("monitor") or {"metric": sc.get("monitor"), "mode": sc.get("monitor_mode")}
    best = record.get("best") or {}
    lines = ["## Protocol", ""]
    if dc.get("folds"):
        lines.append(
            f"Subject-independent {dc['folds']}-fold cross-validation of split `{dc.get('fold_split')}`, "
            f"test fold {dc.get('fold')}."
        )
    lines.append(
        f"Model selection on the validation data only: `{mon.get('metric')}` ({mon.get('mode')}); the exported "
        f"checkpoint is `{r.checkpoint}`"
        + (f", best epoch {best.get('epoch')} ({_pct(best.get('value'))} %)." if best else ".")
    )
    lines.append(
        f"Test split `{dc.get('test_split')}`: "
        + (
            f"evaluated {record.get('test_evaluations', 1)} time(s)."
            if record.get("test_split_used")
            else "not evaluated yet (`python -m fernb evaluate RUN`)."
        )
        + f" Evaluation batches: {dc.get('eval_order')} order, "
        f"batch {dc.get('eval_batch_size') or dc.get('batch_size')}."
    )
    return lines


def _section_recipe(record: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    mc, oc, sc, dc = (cfg.get(k) or {} for k in ("model", "optim", "schedule", "data"))
    model = record.get("model") or {}
    lines = ["## Recipe", ""]
    lines.append(
        f"- preset `{record.get('preset') or cfg.get('preset')}`, seed {record.get('seed')}, "
        f"precision {record.get('precision')}, device {record.get('device')}, world size {record.get('world_size')}"
    )
    lines.append(
        f"- model `{mc.get('name')}` preset `{mc.get('preset')}`"
        + (f" with `{json.dumps(mc.get('kwargs'))}`" if mc.get("kwargs") else "")
        + (f", {model['params']:,} parameters" if model.get("params") else "")
    )
    loss = record.get("loss") or {}
    lines.append(
        f"- loss `{loss.get('name') or mc.get('name')}`" + (f" ({loss['class']})" if loss.get("class") else "")
    )
    lines.append(
        f"- optimiser {oc.get('name')}, lr {oc.get('lr')}, weight decay {oc.get('weight_decay')}"
        + (f", SAM rho {oc.get('sam_rho')}" if oc.get("sam") else "")
        + f"; batch {dc.get('batch_size')}, sampler {dc.get('sampler')}, transform {dc.get('transform')}, "
        f"pipeline {dc.get('pipeline')}"
    )
    length = sc.get("steps") or sc.get("epochs")
    lines.append(
        f"- schedule {sc.get('name')}, planned {'steps' if sc.get('steps') else 'epochs'} {length}"
        + (f", budget {sc.get('budget_s')} s" if sc.get("budget_s") else "")
        + f"; trained {record.get('steps')} steps in {record.get('epochs_done')} epochs, "
        f"{float(record.get('train_seconds') or 0):.0f} s ({record.get('stop_reason') or record.get('status')})"
    )
    env = record.get("environment") or {}
    git = env.get("git") or {}
    lines.append(
        f"- fernb {env.get('fernb')}, torch {env.get('torch')}, commit `{git.get('commit')}`"
        + (" (uncommitted changes)" if git.get("dirty") else "")
    )
    lines.append("- the full config is the run's `config.json`: `python -m fernb train --config config.json` reruns it")
    return lines


def _section_metrics(record: dict[str, Any], run_dir: Path) -> list[str]:
    lines = ["## Metrics", ""]
    rows = []
    for ev in record.get("evaluations") or []:
        full: dict[str, Any] = dict(ev)
        f = run_dir / str(ev.get("file", ""))
        if ev.get("file") and f.is_file():
            full.update(json.loads(f.read_text()))
        rows.append(
            f"| {ev.get('dataset')}/{ev.get('split')} | {ev.get('checkpoint')} | {ev.get('n')} | "
            f"{_with_ci(full, 'accuracy')} | {_with_ci(full, 'mean_class_accuracy')} | {_with_ci(full, 'macro_f1')} |"
        )
    if rows:
        lines += [
            "Percent, with 95 % bootstrap intervals where computed:",
            "",
            "| data | checkpoint | n | accuracy | mean class accuracy | macro-F1 |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    else:
        lines.append("No evaluation recorded yet: `python -m fernb evaluate RUN` scores the test split once.")
    best = (record.get("best") or {}).get("metrics") or {}
    valid = {k[len("valid_") :]: v for k, v in best.items() if k.startswith("valid_")}
    if valid:
        shown = ", ".join(f"{k} {_pct(v) if k.endswith(('accuracy', 'f1')) else f'{v:.4f}'}" for k, v in valid.items())
        lines += ["", f"Validation at the selected epoch ({best.get('epoch')}): {shown}."]
    return lines


def write_model_card(run_dir: str | Path | None, result: ExportResult, path: str | Path | None = None) -> Path:
    """Write the model card of an export: Markdown filled from the run's ``config.json``, ``run.json`` and
    evaluations (data, face detection and alignment, protocol, recipe, metrics with intervals), the ONNX input spec
    and outputs, and the export check.

    Args:
        run_dir: the run folder (None: a bare model; the card says what is unknown).
        result: what :func:`export_onnx` wrote.
        path: the card (default: ``README.md`` beside the ONNX file, or ``<name>.card.md`` where a README.md that is
            not a fernb card exists).

    Returns:
        The card's path.
    """
    out = Path(path) if path is not None else _card_path(result.path)
    record: dict[str, Any] = {}
    cfg: dict[str, Any] = {}
    if run_dir is not None:
        rd = RunDir(run_dir)
        record = rd.read_record()
        cfg = json.loads(rd.config_path.read_text()) if rd.config_path.exists() else {}
    title = f"{result.model} ({result.preset})"
    if cfg:
        title += f" on {(cfg.get('data') or {}).get('dataset')}, run `{record.get('name', Path(str(run_dir)).name)}`"
    lines = [CARD_MARK, f"# {title}", ""]
    lines.append(
        f"ONNX export of fernb's `{result.model}` (checkpoint {result.checkpoint}): `{result.path.name}`. "
        "Written by `python -m fernb export`; regenerate it rather than editing it."
    )
    lines += ["", *_section_input(result), "", *_section_outputs(result), ""]
    if run_dir is not None and cfg:
        lines += [*_section_data(record, cfg), ""]
        lines += [*_section_protocol(record, cfg, result), ""]
        lines += [*_section_recipe(record, cfg), ""]
        lines += [*_section_metrics(record, Path(run_dir)), ""]
    else:
        lines += [
            "## Data, protocol, recipe, metrics",
            "",
            "Unknown: exported from a model, not from a fernb run folder. Score it with "
            "`python -m fernb evaluate --model NAME --checkpoint FILE --dataset NAME --root DIR`.",
            "",
        ]
    lines += [*_section_check(result), ""]
    atomic_write_text(out, "\n".join(lines))
    return out
