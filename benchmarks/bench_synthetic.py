"""Speed of the synthetic face generator: images per second without the cache, and the time to load a cached set.

Run: ``python benchmarks/bench_synthetic.py [--n 10000 --size 64 --workers 1 2 --color]``. Prints a table; exits
non-zero only on an error. The cache goes to a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _threads() -> str:
    parts = [f"cpus={os.cpu_count()}"]
    try:
        import torch

        parts.append(f"torch_threads={torch.get_num_threads()}")
    except ImportError:  # torch is not needed by the generator
        parts.append("torch=absent")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        parts.append(f"{var}={os.environ.get(var, 'unset')}")
    import cv2

    parts.append(f"cv2_threads={cv2.getNumThreads()}")
    return ", ".join(parts)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="images to generate (default 10000)")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="process counts to time (default 1 2)")
    ap.add_argument("--color", action="store_true", help="RGB instead of grayscale")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from fernb.data.synthetic import SyntheticConfig, generate, get_synthetic

    cfg = SyntheticConfig(n=args.n, size=args.size, color=args.color, seed=args.seed)
    print(f"fernb synthetic benchmark: n={cfg.n} size={cfg.size} color={cfg.color} (default nuisances on)")
    print(f"python {platform.python_version()}, numpy {np.__version__}; {_threads()}")
    generate(cfg.replace(n=16))  # warm-up: imports, lookup tables

    rows: list[tuple[str, float, float, float]] = []
    reference = None
    for w in args.workers:
        c0, t0 = _cpu(), time.perf_counter()
        faces = generate(cfg, workers=w)
        dt = time.perf_counter() - t0
        rows.append((f"generate, {w} process{'es' if w > 1 else ''}", dt, _cpu() - c0, cfg.n / dt))
        if reference is None:
            reference = faces
        elif faces.pixels.tobytes() != reference.pixels.tobytes():
            print(f"error: {w} workers gave different pixels than {args.workers[0]}", file=sys.stderr)
            return 1

    with tempfile.TemporaryDirectory() as tmp:
        c0, t0 = _cpu(), time.perf_counter()
        reference.save(Path(tmp) / "synthetic" / f"{cfg.fingerprint()}.npz")
        rows.append(("write cache (.npz)", time.perf_counter() - t0, _cpu() - c0, float("nan")))
        c0, t0 = _cpu(), time.perf_counter()
        loaded = get_synthetic(cfg, cache_dir=tmp)
        dt = time.perf_counter() - t0
        rows.append(("load cache", dt, _cpu() - c0, cfg.n / dt))
        c0, t0 = _cpu(), time.perf_counter()
        ds = loaded.to_dataset("train")
        _ = [ds[i] for i in range(min(1000, len(ds)))]
        rows.append(("to_dataset + 1000 items", time.perf_counter() - t0, _cpu() - c0, float("nan")))
        size_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*.npz")) / 2**20
    if loaded.pixels.tobytes() != reference.pixels.tobytes():
        print("error: the cached set differs from the generated one", file=sys.stderr)
        return 1

    print(f"\n{'step':<28}{'wall s':>10}{'cpu s':>10}{'images/s':>12}")
    for name, sec, cpu, rate in rows:
        print(f"{name:<28}{sec:>10.2f}{cpu:>10.2f}{'' if np.isnan(rate) else f'{rate:>12.0f}'}")
    print(
        "(cpu s: user + system time of this process and its finished workers; wall s > cpu s / processes means "
        "the cores were shared with other work)"
    )
    print(f"\ncache file: {size_mb:.1f} MiB; target: {cfg.n} images at {cfg.size} px in < 30 s on 2 cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
