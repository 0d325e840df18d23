"""The model benchmark counts, times and names every model and the diversity variants."""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

import fernb


def _load_benchmark(repo_root: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, repo_root / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench(repo_root: Path):
    return _load_benchmark(repo_root, "bench_models")


def test_benchmark_counts_every_registered_model(bench):
    for name in fernb.list_models():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fernb.create_model(name, preset="tiny")
        size = bench._input_size(model.config, "tiny")
        assert bench.count_flops(model, torch.randn(1, 3, size, size)) > 0, name


def test_benchmark_measures_a_row(bench):
    rows = bench.main(["--models", "arbex", "--presets", "tiny", "--batch-sizes", "4", "--quick", "--in-process"])
    (row,) = rows
    assert row.gflops > 0.01 and row.params_m > 0.5 and row.fwd_img_s > 0 and row.train_img_s > 0
    assert row.train_peak_mib is not None and "arbex" in bench.format_table(rows)


def test_model_spec_names_a_variant():
    from fernb.models import VARIANTS, parse_variant

    assert parse_variant("esr") == ("esr", {})
    assert parse_variant("manet+diversity") == ("manet", {"diversity": True})
    assert {parse_variant(v)[0] for v in VARIANTS} == {"esr", "manet"}


def test_diversity_variant_row_builds_the_diversified_model(bench, monkeypatch: pytest.MonkeyPatch):
    built = []
    real = fernb.create_model
    monkeypatch.setattr(fernb, "create_model", lambda *a, **kw: built.append(kw) or real(*a, **kw))
    rows = bench.main(
        ["--models", "esr+diversity", "--presets", "tiny", "--batch-sizes", "4", "--quick", "--in-process"]
    )
    assert built and built[0].get("diversity") is True
    (row,) = rows
    assert row.model == "esr+diversity" and row.train_img_s > 0 and not row.notes
    plain = bench.main(["--models", "esr", "--presets", "tiny", "--batch-sizes", "4", "--quick", "--in-process"])
    assert row.params_m > plain[0].params_m  # the CBAMs are there


def test_unknown_model_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.main(["--models", "nosuchnet+diversity", "--quick", "--in-process"])


@pytest.fixture(scope="module")
def bench_train(repo_root: Path):
    return _load_benchmark(repo_root, "bench_train")


@pytest.mark.shared
def test_training_benchmark_runs_a_variant_on_ferplus(bench_train, ferplus_root: Path, tmp_path: Path, capsys):
    out = tmp_path / "rows.json"
    assert (
        bench_train.main(
            [
                "--budget-s",
                "3",
                "--methods",
                "resnet18,esr+diversity",
                "--root",
                str(ferplus_root),
                "--train-limit",
                "256",
                "--valid-limit",
                "64",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = {r["method"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"resnet18", "esr+diversity"}
    for r in rows.values():
        assert r["steps"] > 0 and r["train_img_per_s"] > 0 and 0 <= r["valid_accuracy"] <= 1
    assert rows["esr+diversity"]["params"] > 0 and "esr+diversity" in capsys.readouterr().out
    assert bench_train.main(["--methods", "nosuchnet", "--root", str(ferplus_root)]) == 2


@pytest.fixture(scope="module")
def bench_noise(repo_root: Path):
    return _load_benchmark(repo_root, "bench_noise")


def test_noise_benchmark_names_its_noise_settings(bench_noise):
    assert bench_noise.parse_noise("clean") is None
    assert bench_noise.parse_noise("sym30") == {"kind": "symmetric", "rate": 0.3}
    assert bench_noise.parse_noise("asym12.5") == {"kind": "asymmetric", "rate": 0.125}
    for bad in ("sym0", "sym100", "noisy30", "30"):
        with pytest.raises(ValueError):
            bench_noise.parse_noise(bad)


def test_noise_benchmark_prints_a_row_per_method_and_noise(bench_noise, tmp_path: Path, capsys):
    out = tmp_path / "rows.json"
    argv = ["--dataset", "synthetic", "--steps", "3", "--methods", "resnet18,arbex", "--noise", "clean,sym30"]
    argv += ["--train-limit", "128", "--valid-limit", "64", "--threads", "1", "--json", str(out)]
    rows = bench_noise.main(argv)
    assert [(r["method"], r["noise"]) for r in rows] == [
        ("resnet18", "clean"),
        ("resnet18", "sym30"),
        ("arbex", "clean"),
        ("arbex", "sym30"),
    ]
    assert json.loads(out.read_text()) == json.loads(json.dumps(rows, default=str))
    for r in rows:
        assert r["steps"] == 3 and 0 <= r["acc"] <= 1 and 0 <= r["mca"] <= 1
        # the synthetic training labels are 10 % wrong already, so every run detects, the clean ones included
        assert 0 <= r["auroc_loss"] <= 1
        assert (r["auroc_disagreement"] is not None) == (r["method"] == "arbex")
        assert 0 <= r["fit_flipped"] <= 1 and 0 <= r["fit_clean"] <= 1
        assert r["drop"] == pytest.approx(
            0.0 if r["noise"] == "clean" else 100 * (rows[0 if r["method"] == "resnet18" else 2]["acc"] - r["acc"])
        )
    assert rows[1]["realised_rate"] == pytest.approx(round(0.3 * 128) / 128)
    printed = capsys.readouterr().out
    table = printed[printed.index(bench_noise.HEAD) :].splitlines()
    body = [line.split() for line in table[2:] if line.strip() and not line.startswith(("targets", " "))]
    assert [(b[0], b[1]) for b in body[:4]] == [(r["method"], r["noise"]) for r in rows]
    assert all(float(b[3]) == pytest.approx(100 * r["acc"], abs=0.05) for b, r in zip(body, rows, strict=False))
    assert "targets (issue 13" in printed and "ARBEx drop" in printed


@pytest.fixture(scope="module")
def bench_predict(repo_root: Path):
    return _load_benchmark(repo_root, "bench_predict")


def test_predict_benchmark_times_each_stage_of_a_generated_video(bench_predict, capsys):
    argv = ["--seconds", "0.2", "--size", "320", "240", "--detectors", "haar-fast", "--detect-every", "1", "3"]
    rows = bench_predict.main(argv)
    assert [(r["detector"], r["detect_every"]) for r in rows] == [("haar-fast", 1), ("haar-fast", 3)]
    for r in rows:
        assert r["frames"] == 6 and r["faces"] >= 1 and r["wall_s"] > 0
        assert r["detect"] > 0 and r["model"] > 0 and r["decode"] > 0
    assert "target: >= 15 frames per second" in capsys.readouterr().out


@pytest.fixture(scope="module")
def bench_detect(repo_root: Path):
    return _load_benchmark(repo_root, "bench_detect")


def test_detect_benchmark_pastes_a_face_into_seeded_clutter(bench_detect):
    import numpy as np

    face = np.full((48, 48), 255, np.uint8)
    f = bench_detect.frame(face, np.random.default_rng(3))
    assert f.shape == (256, 256) and f.dtype == np.uint8
    assert np.array_equal(f, bench_detect.frame(face, np.random.default_rng(3)))  # seeded
    # the face covers at least 25 % of the side (less its feathered edge), the clutter is not flat
    assert (f == 255).sum() >= (0.25 * 256 * 0.85) ** 2 and f[f < 255].std() > 10


@pytest.mark.shared
def test_detect_benchmark_tiny_mode_prints_detection_framing_and_cross_dataset(
    bench_detect, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    import toys as te

    from fernb.engine import fit

    monkeypatch.setenv("FERNB_CACHE_DIR", str(tmp_path / "cache"))
    run = fit(te.toy_config(tmp_path), train_data=te.toy_data(28), valid_data=te.toy_data(14, 1)).run_dir
    out = tmp_path / "rows.json"
    assert bench_detect.main(["--tiny", "--limit", "4", "--run", str(run), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["detector"], r["dataset"]) for r in rows["detection"]] == [("haar", "ferplus"), ("haar", "ckplus")]
    (r,) = rows["runs"]
    assert r["trained_align"] is None and r["align"]["detector"] == "haar"
    assert all(0 <= r[k] <= 100 for k in ("crops", "frames", "frames_aligned", "ckplus", "ckplus_aligned"))
    printed = capsys.readouterr().out
    assert "1. detection" in printed and "2-3. framing" in printed and "drop" in printed
    assert bench_detect.main(["--tiny", "--detectors", "nosuch"]) == 2


def test_explorer_benchmark_times_each_redraw_of_the_map(repo_root: Path, capsys):
    bench = _load_benchmark(repo_root, "bench_explorer")
    rows = bench.main(["--points", "300", "--repeats", "2"])
    steps = {r.step: r for r in rows}
    assert {"colour changed", "checkpoint switched", "sample clicked", "reference: matplotlib PNG"} <= set(steps)
    assert steps["colour changed"].sent_kib > 0 and steps["checkpoint switched"].seconds > 0
    assert "target" in capsys.readouterr().out


@pytest.fixture(scope="module")
def bench_official(repo_root: Path):
    return _load_benchmark(repo_root, "bench_official")


def test_official_benchmark_without_official_sources_says_what_is_missing(bench_official, tmp_path: Path, capsys):
    (tmp_path / "MA-Net").mkdir()  # a repository folder without its files
    out = tmp_path / "rows.json"
    assert bench_official.main(["--official", str(tmp_path), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {(r["method"], r["mode"]) for r in rows} == {
        (m, mode) for m in bench_official.METHODS for mode in ("train", "infer")
    }
    assert all(r["skipped"] and r["official_img_s"] is None for r in rows)
    printed = capsys.readouterr().out
    assert f"missing folder {tmp_path / 'POSTER_V2'}" in printed and "model/manet.py" in printed
    assert bench_official.main(["--methods", "arbex"]) == 0 and "no --official folder given" in capsys.readouterr().out


@pytest.fixture(scope="module")
def bench_budget(repo_root: Path):
    return _load_benchmark(repo_root, "bench_budget")


def test_budget_benchmark_pairs_each_seed_with_its_reference_run(bench_budget, capsys):
    def row(method: str, seed: int, img_s: float, acc: float) -> dict:
        return {
            "method": method,
            "seed": seed,
            "img_s": img_s,
            "steps": 10,
            "epochs": 1,
            "seconds": 1.0,
            "best_epoch": 1,
            "acc": acc,
            "mca": acc,
            "f1": acc,
        }

    rows = [
        row("reference", 0, 500.0, 0.70),
        row("resnet18", 0, 450.0, 0.77),
        row("reference", 1, 400.0, 0.72),
        row("resnet18", 1, 400.0, 0.79),
    ]
    bench_budget.print_table(rows)
    out = capsys.readouterr().out
    assert "acc x1.099" in out and "img/s x0.944" in out  # ratios of the means: 0.78 / 0.71, 425 / 450
    assert "per seed x0.900, 1.000" in out and "geometric mean x0.949" in out  # sqrt(0.9 * 1.0)


def test_budget_benchmark_passes_test_time_flips_to_fernb_runs(bench_budget, tmp_path: Path):
    import argparse

    args = argparse.Namespace(root=tmp_path, budget_s=60.0, progress=False, threads=1, tta="flip")
    cfg = bench_budget.method_config("arbex:resnet18", args, tmp_path, 3)
    assert cfg.data.eval_tta == "flip" and cfg.model.kwargs["backbone"] == "resnet18" and cfg.run.seed == 3
    args.tta = "none"
    assert bench_budget.method_config("resnet18", args, tmp_path, 0).data.eval_tta == "none"
