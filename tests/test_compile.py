"""``run.compile``: training through ``torch.compile`` on CPU with the toy model: checkpoints without ``_orig_mod.``
prefixes, the warm-up recorded in ``run.json``, the eager run's results up to rounding, exact resume, and a failed
compilation reported as a :class:`~fernb.engine.fit.CompileError` that suggests ``run.compile=false``.

The first compiled fit of a fresh machine builds Inductor's C++ kernels (about 100 s on 2 busy cores; seconds once
they are in Inductor's cache), hence the ``slow`` marks; every compiled fit here shares the toy's kernels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from toys import toy_config, toy_data, weights_digest

from fernb.engine import Callback, ConfigError, apply_overrides, fit, load_run
from fernb.engine.checkpoint import load_checkpoint
from fernb.engine.config import HARMLESS_CHANGES, RunConfig, TrainConfig
from fernb.engine.fit import CompileError, compile_warmup
from fernb.engine.rundir import RunDir

# 44 samples in batches of 8: five full batches and one of 4 an epoch, both through one dynamic-shape graph
OVER = {"schedule.epochs": 2, "run.checkpoint_every_steps": 4}
TIMING = ("epoch_seconds", "samples_per_second", "elapsed_seconds")


def _fit(tmp: Path, name: str, callbacks=(), **over):
    cfg = toy_config(tmp, **{**OVER, "run.name": name, **over})
    return fit(cfg, train_data=toy_data(44), valid_data=toy_data(14, 1), callbacks=list(callbacks))


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in RunDir(run).read_metrics()]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """One compiled toy run (the module's other compiled fits reuse its kernels); its warm-up goes into the session's
    warm-up summary."""
    from conftest import WARM_UPS

    res = _fit(tmp_path_factory.mktemp("compiled"), "compiled", **{"run.compile": True})
    WARM_UPS["torch.compile of the engine toy"] = (
        f"warm-up {res.info['compile']['warmup_seconds']:.1f} s (Inductor's kernel cache makes later ones seconds)"
    )
    return res


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (False, False),
        (True, True),
        ("true", True),
        ("off", False),
        ("max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs"),
    ],
)
def test_run_compile_accepts_true_false_and_torch_modes(value, expected):
    cfg = apply_overrides(TrainConfig(), {"run.compile": value})
    assert cfg.run.compile == expected
    assert apply_overrides(TrainConfig(), [f"run.compile={str(value).lower()}"]).run.compile == expected


def test_run_compile_refuses_an_unknown_mode():
    with pytest.raises(ConfigError, match="run.compile='fast'.*reduce-overhead"):
        RunConfig(compile="fast")


def test_compiling_is_a_change_a_resumed_run_may_make():
    assert "run.compile" in HARMLESS_CHANGES


def test_compile_warmup_is_the_first_steps_excess_over_the_steady_step():
    info = compile_warmup([10.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    assert info["steady_step_seconds"] == 1.0 and info["warmup_seconds"] == pytest.approx(10.0)
    assert compile_warmup([5.0, 1.0])["warmup_seconds"] == pytest.approx(4.0)
    assert compile_warmup([])["warmup_seconds"] is None


@pytest.mark.slow
def test_compiled_run_trains_and_saves_plain_state_dicts(compiled):
    assert compiled.stop_reason == "completed" and compiled.steps == 12
    for tag in ("last", "best"):
        state, _, _ = load_checkpoint(compiled.run_dir / "checkpoints" / tag)
        assert state and not any("_orig_mod" in k for k in state), sorted(state)[:3]
    _, model, _ = load_run(compiled.run_dir, "best")
    assert not any("_orig_mod" in k for k in model.state_dict())
    assert not any("_orig_mod" in k for k in compiled.model.state_dict())  # FitResult.model is the plain module


@pytest.mark.slow
def test_compiled_run_records_its_warmup(compiled):
    rec = json.loads((compiled.run_dir / "run.json").read_text())
    info = rec["compile"]
    assert info["mode"] == "default" and info["steps_timed"] == 6  # the first epoch's six steps
    assert info["warmup_seconds"] > 0 and info["first_step_seconds"] > info["steady_step_seconds"]
    assert compiled.info["compile"] == info
    assert rec["optimizer_impl"] == compiled.info["optimizer_impl"]


@pytest.mark.slow
def test_compiled_run_matches_the_eager_run_up_to_rounding(tmp_path):
    # SGD, not Adam: the toy's conv bias sits before a BatchNorm, so its true gradient is 0 and Adam would blow its
    # rounding noise (different in a compiled kernel) up to learning-rate-sized steps
    sgd = {"optim.name": "sgd", "optim.lr": 0.05}
    compiled, eager = _fit(tmp_path, "compiled", **sgd, **{"run.compile": True}), _fit(tmp_path, "eager", **sgd)
    a, b = _rows(compiled.run_dir), _rows(eager.run_dir)
    assert [r["train_samples"] for r in a] == [r["train_samples"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "train_ce", "valid_nll"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5), key  # dropout draws the same numbers
    for (k, va), (_, vb) in zip(sorted(compiled.model.state_dict().items()), sorted(eager.model.state_dict().items())):
        assert torch.allclose(va.float(), vb.float(), rtol=1e-3, atol=1e-4), k


@pytest.mark.slow
def test_compiled_run_resumes_bit_identically(compiled, tmp_path):
    class Stop(Callback):
        def on_step_end(self, trainer, logs):
            if logs["step"] == 9:  # the last checkpoint is step 8's (mid-epoch 2)
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, "cut", [Stop()], **{"run.compile": True})
    _, meta, _ = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last")
    assert (meta["epoch"], meta["batch"], meta["step"]) == (1, 2, 8)
    resumed = _fit(tmp_path, "cut", **{"run.compile": True, "run.resume": True})
    assert _rows(resumed.run_dir) == _rows(compiled.run_dir)
    assert weights_digest(resumed.model) == weights_digest(compiled.model)
    rec = json.loads((resumed.run_dir / "run.json").read_text())
    assert rec["compile"]["steps_timed"] == 4  # the resumed process timed its own first steps (the epoch's last four)


def test_a_failed_compilation_says_what_failed_and_suggests_run_compile_false(tmp_path, monkeypatch):
    from torch._dynamo.exc import InternalTorchDynamoError

    class Broken(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            raise InternalTorchDynamoError("the backend could not lower aten.convolution")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: Broken(model))
    with pytest.raises(
        CompileError, match=r"(?s)could not compile engine_toy.*lower aten.convolution.*run.compile=false"
    ):
        _fit(tmp_path, "broken", **{"run.compile": True})
    rec = json.loads((tmp_path / "broken" / "run.json").read_text())
    assert rec["status"] == "failed" and "run.compile=false" in rec["error"]


def test_a_refused_compile_call_is_a_compile_error(tmp_path, monkeypatch):
    def refuse(model, **kw):
        raise RuntimeError("torch.compile is not supported on this Python")

    monkeypatch.setattr(torch, "compile", refuse)
    with pytest.raises(CompileError, match=r"(?s)not supported on this Python.*run.compile=false"):
        _fit(tmp_path, "refused", **{"run.compile": "reduce-overhead"})


def test_arbex_trust_ramp_and_batch_sizes_need_one_graph():
    """ARBEx's trust is a tensor the forward reads, and the engine marks the batch dynamic: a ramp that sets a new
    trust every step and a partial last batch run through the graph of the first call (dynamo's eager backend, which
    counts the frames it compiles)."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    import fernb

    torch.manual_seed(0)
    model = fernb.create_model(
        "arbex", preset="tiny", backbone="resnet18", backbone_kwargs={"width": 4, "stem": "small"}, num_classes=7
    ).train()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, dynamic=None)
    torch._dynamo.reset()
    frames = None
    for step, batch in enumerate((6, 6, 6, 3, 6)):
        x = torch.randn(batch, 3, 24, 24)
        torch._dynamo.mark_dynamic(x, 0)
        model.trust = step / 4
        torch.manual_seed(step)
        out = compiled(x)
        torch.manual_seed(step)
        ref = model(x)
        torch.testing.assert_close(out.final_dist, ref.final_dist)
        frames = counter.frame_count if frames is None else frames
        assert counter.frame_count == frames, f"step {step} (trust {model.trust}, batch {batch}) compiled again"
    assert model.trust == 1.0 and "_trust" not in model.state_dict()


@pytest.mark.slow
def test_arm_trains_compiled(tmp_path):
    """ARM's de-albino pooling computes with the image size; with only the batch dynamic Inductor compiles it (with
    every size symbolic it raised an error on a symbolic comparison)."""
    from toys import spec_config

    cfg = spec_config("arm", [], **{"run.out_dir": str(tmp_path), "run.name": "arm", "run.compile": True})
    res = fit(cfg)
    assert res.stop_reason == "completed" and res.info["compile"]["warmup_seconds"] is not None
