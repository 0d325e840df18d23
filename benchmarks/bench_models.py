"""Benchmark every registered fernb model: parameters, FLOPs, forward and train-step time, peak memory, images/s.

Each (model, preset, device, dtype, batch size) runs in a fresh subprocess, so peak memory is measured cleanly: on
CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak resident-set size sampled every 2 ms (psutil) above the RSS
after the model and inputs are built (glibc keeps freed memory, so the train figure includes the forward pass).
FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one image in eval mode (2 FLOPs per
multiply-add; thop-style "MACs" are half of it). The train step is forward + the model's registered loss (plain
cross-entropy when it has none) + backward + AdamW (foreach) step, in train mode. ``--bf16`` adds rows under bfloat16
autocast: on CPUs without AVX-512 BF16 (AVX2 only, as the 2-core CI machine) oneDNN has no bf16 convolution kernels
and PyTorch falls back to slow reference convolutions, so bf16 is then much slower than fp32.
It pays on CUDA and recent x86. Timings on a shared machine are only as good as its idle time: check the load average.

Usage::

    python benchmarks/bench_models.py                         # every model, tiny and official, CPU (+ CUDA)
    python benchmarks/bench_models.py --models arbex poster_v2 --presets tiny --batch-sizes 64 --bf16
    python benchmarks/bench_models.py --quick                 # small batches, few iterations
    python benchmarks/bench_models.py --threads 2 --json out.json
    python benchmarks/bench_models.py --models esr+diversity manet+diversity   # a variant: name+flag sets flag=True

The default model list is every registered model plus the Diversified ESR and MA-Net (``esr+diversity``,
``manet+diversity``); their losses add the diversity terms (the loss sees the attention heads in the output).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_BATCHES = {"tiny": (1, 16, 64), "official": (1, 4, 16)}
QUICK_BATCHES = {"tiny": (8,), "official": (2,)}
_DEFAULT_SIZE = {"tiny": 48, "official": 224}


@dataclass
class Row:
    """One measured configuration; times in milliseconds, memory in MiB, FLOPs per image in GFLOPs."""

    model: str
    preset: str
    device: str
    dtype: str
    batch: int
    input_size: int = 0
    params_m: float = 0.0
    trainable_m: float = 0.0
    gflops: float = 0.0
    fwd_ms: float | None = None
    fwd_img_s: float | None = None
    train_ms: float | None = None
    train_img_s: float | None = None
    fwd_peak_mib: float | None = None
    train_peak_mib: float | None = None
    notes: list[str] = field(default_factory=list)


def _input_size(cfg: Any, preset: str) -> int:
    for name in ("img_size", "input_size", "image_size"):
        v = getattr(cfg, name, None)
        if isinstance(v, int):
            return v
        if isinstance(v, (tuple, list)) and v:
            return int(v[-1])
    return _DEFAULT_SIZE.get(preset, 224)


class _RssPeak:
    """Samples the process RSS in a thread; ``peak`` is the largest value seen (bytes)."""

    def __init__(self, interval: float = 0.002) -> None:
        import psutil

        self.proc, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> _RssPeak:
        self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def count_flops(model: Any, x: Any) -> int:
    """Forward FLOPs of ``model(x)`` (eval mode), including CPU fused attention."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa_flop(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    mapping = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        mapping[cpu_flash] = cpu_sdpa_flop
    was = model.training
    model.eval()
    # grad stays enabled: the counter's module tracker trips over views of parameters made under no_grad
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(x)
    model.train(was)
    return int(counter.get_total_flops())


def measure(
    name: str, preset: str, device: str, dtype: str, batch: int, warmup: int, iters: int, threads: int | None
) -> Row:
    """Build one model and measure it in this process."""
    import torch

    import fernb
    from fernb.losses import StepInfo, create_loss
    from fernb.models import parse_variant

    if threads:
        torch.set_num_threads(threads)
    row = Row(name, preset, device, dtype, batch)
    base, overrides = parse_variant(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fernb.create_model(base, preset=preset, **overrides).to(device)
    cfg = getattr(model, "config", None)
    size = _input_size(cfg, preset)
    in_chans = int(getattr(cfg, "in_chans", 3) or 3)
    num_classes = int(getattr(cfg, "num_classes", 8) or 8)
    row.input_size = size
    row.params_m = sum(p.numel() for p in model.parameters()) / 1e6
    row.trainable_m = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    row.gflops = count_flops(model, torch.randn(1, in_chans, size, size, device=device)) / 1e9
    x = torch.randn(batch, in_chans, size, size, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    amp = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bf16")
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed(fn: Any) -> float:
        for _ in range(warmup):
            fn()
        sync()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def peak_run(fn: Any) -> tuple[float, float]:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            t = timed(fn)
            return t, (torch.cuda.max_memory_allocated() - base) / 2**20
        import psutil

        base = psutil.Process().memory_info().rss
        with _RssPeak() as rss:
            t = timed(fn)
        return t, (rss.peak - base) / 2**20

    model.eval()

    def forward() -> None:
        with torch.inference_mode(), amp:
            model(x)

    t, row.fwd_peak_mib = peak_run(forward)
    row.fwd_ms, row.fwd_img_s = t * 1e3, batch / t

    try:
        loss_fn = create_loss(base)
    except KeyError:
        import torch.nn.functional as F

        row.notes.append("no registered loss: cross-entropy on logits")

        def loss_fn(out: Any, target: Any, dist: Any = None, info: Any = None) -> Any:
            from fernb.losses import LossOutput

            return LossOutput(total=F.cross_entropy(out.logits, target))

    loss_fn = loss_fn.to(device) if hasattr(loss_fn, "to") else loss_fn
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, foreach=True)  # one fused update, not a Python loop per tensor
    model.train()
    info = StepInfo(progress=0.5)

    def train_step() -> None:
        with amp:
            out = model(x)
            total = loss_fn(out, y, info=info).total
        opt.zero_grad(set_to_none=True)
        total.float().backward()
        opt.step()

    try:
        t, row.train_peak_mib = peak_run(train_step)
        row.train_ms, row.train_img_s = t * 1e3, batch / t
    except (ValueError, RuntimeError) as exc:  # e.g. BatchNorm in train mode on a batch of 1
        row.notes.append(f"train: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
    return row


def _run_worker(spec: dict[str, Any], in_process: bool) -> Row:
    if in_process:
        return measure(**spec)
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Row(spec["name"], spec["preset"], spec["device"], spec["dtype"], spec["batch"], notes=[f"failed: {err}"])
    return Row(**json.loads(lines[-1]))


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return str(v)


def format_table(rows: list[Row]) -> str:
    """A plain-text table of the rows."""
    head = [
        "model",
        "preset",
        "device",
        "dtype",
        "px",
        "batch",
        "params M",
        "train M",
        "GFLOPs/img",
        "fwd ms",
        "fwd img/s",
        "train ms",
        "train img/s",
        "fwd MiB",
        "train MiB",
        "notes",
    ]
    body = [
        [
            r.model,
            r.preset,
            r.device,
            r.dtype,
            str(r.input_size),
            str(r.batch),
            _fmt(r.params_m, 2),
            _fmt(r.trainable_m, 2),
            _fmt(r.gflops, 3),
            _fmt(r.fwd_ms),
            _fmt(r.fwd_img_s),
            _fmt(r.train_ms),
            _fmt(r.train_img_s),
            _fmt(r.fwd_peak_mib, 0),
            _fmt(r.train_peak_mib, 0),
            "; ".join(r.notes),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *[line(b) for b in body]])


def main(argv: list[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models",
        nargs="*",
        help="registry names, name+flag for a variant (default: every registered model and the diversity variants)",
    )
    p.add_argument("--presets", nargs="*", default=["tiny", "official"])
    p.add_argument("--batch-sizes", nargs="*", type=int, help="default: 1 16 64 (tiny), 1 4 16 (official)")
    p.add_argument("--devices", nargs="*", help="default: cpu, plus cuda when available")
    p.add_argument("--bf16", action="store_true", help="also measure bfloat16 autocast")
    p.add_argument("--quick", action="store_true", help="one small batch per preset, 1 warm-up, 2 timed iterations")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each worker")
    p.add_argument("--in-process", action="store_true", help="no subprocess per row (memory figures then mix rows)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(asdict(measure(**json.loads(args.worker)))))
        return []

    import torch

    import fernb
    from fernb.models import VARIANTS, parse_variant

    models = args.models or [*fernb.list_models(), *VARIANTS]
    unknown = sorted({parse_variant(m)[0] for m in models} - set(fernb.list_models()))
    if unknown:
        p.error(f"unknown model(s) {unknown}; registered: {fernb.list_models()}")
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    dtypes = ["fp32", "bf16"] if args.bf16 else ["fp32"]
    warmup, iters = (1, 2) if args.quick else (args.warmup, args.iters)
    rows: list[Row] = []
    for name in models:
        for preset in args.presets:
            batches = args.batch_sizes or (QUICK_BATCHES if args.quick else DEFAULT_BATCHES).get(preset, (1, 8))
            for device in devices:
                for dtype in dtypes:
                    for batch in batches:
                        spec = dict(
                            name=name,
                            preset=preset,
                            device=device,
                            dtype=dtype,
                            batch=batch,
                            warmup=warmup,
                            iters=iters,
                            threads=args.threads,
                        )
                        row = _run_worker(spec, args.in_process)
                        rows.append(row)
                        print(
                            f"  done {name}/{preset}/{device}/{dtype}/b{batch}: train {_fmt(row.train_img_s)} img/s",
                            file=sys.stderr,
                            flush=True,
                        )
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=1)
    return rows


if __name__ == "__main__":
    main()
