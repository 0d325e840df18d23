"""``optim.impl``: torch's fused, foreach and per-tensor updates of Adam, AdamW and SGD (SAM around them) reach the
same weights up to rounding; ``auto`` takes ``fused`` on CPU and the run records it; SAM's multi-tensor perturbation
is the per-tensor one, bit for bit; a run resumes across a change of ``impl``."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from toys import toy_config, toy_data

from fernb.engine import ConfigError, apply_overrides, fit
from fernb.engine.config import HARMLESS_CHANGES, OptimConfig, TrainConfig, validate_config
from fernb.engine.optim import SAM, build_optimizer, optimizer_impl, resolve_impl

IMPLS = ("loop", "foreach", "fused")
OPTIMS = {
    "adam": {"name": "adam", "lr": 1e-2, "weight_decay": 1e-3},
    "adamw": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.05},
    "sgd": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    "sam-sgd": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "sam": True, "sam_adaptive": True},
}


def _net() -> nn.Module:
    """No bias before the BatchNorm: its true gradient is 0, and Adam would scale each impl's rounding noise up."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    )


def _train(optim: dict, impl: str, steps: int = 5) -> nn.Module:
    net = _net()
    opt = build_optimizer(net, OptimConfig(**optim, impl=impl))
    assert optimizer_impl(opt) == impl
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(6, 3, 8, 8, generator=gen), torch.randint(0, 5, (6,), generator=gen)

        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        if isinstance(opt, SAM):
            opt.first_step()
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x), y).backward()
            opt.second_step()
        else:
            opt.step()
    return net


@pytest.mark.parametrize("optim", list(OPTIMS), ids=list(OPTIMS))
def test_every_impl_reaches_the_same_weights_up_to_rounding(optim: str):
    ref = _train(OPTIMS[optim], "loop").state_dict()
    for impl in ("foreach", "fused"):
        got = _train(OPTIMS[optim], impl).state_dict()
        for k, v in ref.items():
            assert torch.allclose(got[k].float(), v.float(), rtol=1e-5, atol=1e-6), (impl, k)


def test_each_impl_is_deterministic():
    for impl in IMPLS:
        a, b = _train(OPTIMS["adam"], impl).state_dict(), _train(OPTIMS["adam"], impl).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), impl


def test_auto_takes_fused_on_cpu_and_torchs_default_where_there_is_no_fused_kernel():
    cpu = [nn.Parameter(torch.zeros(3))]
    assert resolve_impl("auto", cpu) == "fused"
    meta = [nn.Parameter(torch.zeros(3, device="meta"))]
    assert resolve_impl("auto", meta) == "loop"
    with pytest.raises(ConfigError, match="optim.impl=fused.*meta"):
        resolve_impl("fused", meta)
    with pytest.raises(ConfigError, match="optim.impl='fast'"):
        resolve_impl("fast", cpu)


def test_optim_impl_is_a_checked_choice_and_a_harmless_change():
    with pytest.raises(ConfigError, match=r"optim.impl='fusd' \(did you mean 'fused'\?\)"):
        validate_config(apply_overrides(TrainConfig(), {"optim.impl": "fusd"}))
    assert "optim.impl" in HARMLESS_CHANGES


def _sam_reference(params: list[torch.Tensor], rho: float, adaptive: bool) -> list[torch.Tensor]:
    """The perturbations e(w), one tensor at a time (the formula of Foret et al. / Kwon et al.)."""
    with torch.no_grad():
        norm = torch.stack([((p.abs() if adaptive else 1.0) * p.grad).norm(2) for p in params]).norm(2)
        scale = rho / (norm + 1e-12)
        return [(p.pow(2) if adaptive else 1.0) * p.grad * scale for p in params]


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_sam_multi_tensor_perturbation_is_the_per_tensor_one_bit_for_bit(adaptive: bool):
    net = _net()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    nn.functional.cross_entropy(net(x), y).backward()
    params = [p for p in net.parameters()]
    e = _sam_reference(params, 0.05, adaptive)
    moved = [p.detach() + d for p, d in zip(params, e, strict=True)]
    sam = SAM(torch.optim.SGD(params, lr=0.0), rho=0.05, adaptive=adaptive)
    sam.first_step()
    assert all(torch.equal(p, m) for p, m in zip(params, moved, strict=True))
    sam.second_step()  # lr 0: back at (w + e) - e
    assert all(torch.equal(p, m - d) for p, m, d in zip(params, moved, e, strict=True))


def test_run_records_the_impl_and_resumes_across_a_change_of_impl(tmp_path):
    from fernb.engine import Callback

    class Stop(Callback):
        def on_step_end(self, trainer, logs):
            if logs["step"] == 5:
                raise KeyboardInterrupt

    over = {"schedule.epochs": 2, "run.checkpoint_every_steps": 2, "optim.impl": "auto"}
    with pytest.raises(KeyboardInterrupt):
        fit(toy_config(tmp_path, **over), train_data=toy_data(32), valid_data=toy_data(14, 1), callbacks=[Stop()])
    assert json.loads((tmp_path / "toy" / "run.json").read_text())["optimizer_impl"] == "fused"  # auto on CPU
    res = fit(
        toy_config(tmp_path, **{**over, "run.resume": True, "optim.impl": "loop"}),
        train_data=toy_data(32),
        valid_data=toy_data(14, 1),
    )
    rec = json.loads((res.run_dir / "run.json").read_text())
    assert res.steps == 8 and rec["optimizer_impl"] == "loop" and res.info["optimizer_impl"] == "loop"
    assert rec["config_changes"][-1]["changes"]["optim.impl"] == {"old": "auto", "new": "loop"}


def test_a_resumed_run_keeps_the_update_kernel_it_trained_with(tmp_path, monkeypatch):
    """Same config, but the resuming process would choose another kernel (another device; or a run from before
    optim.impl, whose groups leave it to torch): the checkpoint's kernel goes on, and the weights are the ones an
    uninterrupted run reaches, bit for bit."""
    import toys

    from fernb.engine import Callback, optim

    class Stop(Callback):
        def on_step_end(self, trainer, logs):
            if logs["step"] == 5:
                raise KeyboardInterrupt

    over = {"schedule.epochs": 2, "run.checkpoint_every_steps": 2, "optim.impl": "auto"}
    data = {"train_data": toy_data(32), "valid_data": toy_data(14, 1)}
    plain = fit(toy_config(tmp_path, **over, **{"run.name": "plain"}), **data)
    with pytest.raises(KeyboardInterrupt):
        fit(toy_config(tmp_path, **over), **data, callbacks=[Stop()])
    monkeypatch.setattr(optim, "resolve_impl", lambda impl, params: "loop")
    res = fit(toy_config(tmp_path, **over, **{"run.resume": True}), **data)
    assert res.info["optimizer_impl"] == "fused"
    assert toys.weights_digest(res.model) == toys.weights_digest(plain.model)
