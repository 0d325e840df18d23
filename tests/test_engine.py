"""The training engine: config and overrides, presets, the loop (optimisers, SAM, schedules, stages, trust ramp),
run folders, checkpoints, NaN handling, determinism, callbacks and the evaluation protocol.

The toy model, loss and data come from ``toys.py``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from toys import SYNTH, ToyNet, toy_config, toy_data, weights_digest

from fernb.engine import Callback
from fernb.labels import LABEL_SPACES
from fernb.models import ModelOutput


# -- config ------------------------------------------------------------------------------------------------------------
def test_overrides_parse_types_and_nested_dicts():
    from fernb.engine import TrainConfig, apply_overrides

    cfg = apply_overrides(
        TrainConfig(),
        [
            "optim.lr=1e-3",
            "run.quiet=true",
            "data.options.n=200",
            "data.label_space=none",
            'schedule.stages=[{"epochs": 2}]',
            "optim.betas=[0.8, 0.9]",
            "loss.name=ce",
            "data.dataset=1e3",
        ],
    )
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.run.quiet is True and cfg.data.options == {"n": 200} and cfg.data.label_space is None
    assert cfg.schedule.stages[0].epochs == 2 and cfg.schedule.total_epochs == 2
    assert cfg.optim.betas == (0.8, 0.9) and cfg.loss.name == "ce"
    assert cfg.data.dataset == "1e3"  # a string field keeps the text as typed


@pytest.mark.parametrize(
    "item, msg",
    [
        ("optim.lrr=1", "did you mean 'lr'"),
        ("optim.lr=fast", "expected a number"),
        ("nope.x=1", "unknown key 'nope'"),
        ("optim.lr", "key=value"),
    ],
)
def test_overrides_reject_unknown_keys_and_bad_values(item, msg):
    from fernb.engine import ConfigError, TrainConfig, apply_overrides

    with pytest.raises(ConfigError, match=msg):
        apply_overrides(TrainConfig(), [item])


def test_config_round_trips_json_and_yaml(tmp_path):
    from fernb.engine import config_from_preset, load_config, save_config

    cfg = config_from_preset("esr/ferplus", smoke=True, optim__lr=0.05, data={"root": "/x"})
    for name in ("c.json", "c.yaml"):
        save_config(cfg, tmp_path / name)
        assert load_config(tmp_path / name) == cfg


def test_presets_cover_every_method_and_dataset_and_smoke_shrinks():
    from fernb.engine import DATASETS, METHODS, config_from_preset, list_presets

    assert len(list_presets()) == len(METHODS) * len(DATASETS)
    poster = config_from_preset("poster_v2/rafdb")
    assert poster.optim.sam and poster.optim.lr == 3.5e-5 and poster.schedule.gamma == 0.98
    assert poster.data.valid_split != poster.data.test_split
    esr = config_from_preset("esr/affectnet8")
    assert esr.schedule.total_epochs == 50 + 8 * 20 and esr.schedule.stages[1].call == "add_branch"
    smoke = config_from_preset("manet/ckplus", smoke=True)
    assert smoke.model.preset == "tiny" and smoke.data.train_limit == 128 and smoke.data.folds == 3
    assert smoke.data.fallback == "synthetic"
    with pytest.raises(KeyError, match="methods"):
        config_from_preset("nope/ferplus")


def test_smoke_from_environment(monkeypatch):
    from fernb.engine import config_from_preset

    monkeypatch.setenv("FERNB_SMOKE", "1")
    assert config_from_preset("arm/ferplus").smoke is True


# -- the loop ----------------------------------------------------------------------------------------------------------
def test_fit_learns_and_writes_the_run_folder(tmp_path, device):
    from fernb.engine import fit
    from fernb.engine.checkpoint import load_checkpoint

    rows = []
    cfg = toy_config(tmp_path, **{"schedule.epochs": 3, "loss.class_weights": "inverse", "run.device": str(device)})
    res = fit(cfg, train_data=toy_data(56), valid_data=toy_data(28, seed=1, split="valid"), callbacks=[rows.append])
    run = Path(res.run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and len(res.history) == 3
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.best_metrics["valid_accuracy"] > 0.5  # 7 classes: chance is 0.14
    for f in ("config.json", "config.yaml", "metrics.csv", "run.json"):
        assert (run / f).is_file()
    csv_text = (run / "metrics.csv").read_text().splitlines()
    assert csv_text[0].startswith("epoch,step,lr,train_samples,train_loss,train_accuracy,train_ce,train_reg")
    assert "valid_kl" in csv_text[0] and len(csv_text) == 4
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "completed" and rec["seed"] == 0 and rec["test_split_used"] is False
    assert rec["data"]["train"]["fingerprint"] == toy_data(56).fingerprint()
    assert rec["environment"]["torch"] == torch.__version__ and rec["best"]["epoch"] == res.best_epoch
    state, meta, _ = load_checkpoint(run / "checkpoints" / "best", with_train_state=False)
    assert meta["epoch"] == res.best_epoch and set(state) == set(res.model.state_dict())
    assert not list(run.rglob("*.pt")) and not list(run.rglob("*.pkl"))


class Capture(Callback):
    """Keeps the trainer and every StepInfo the loss received."""

    def on_fit_start(self, trainer) -> None:
        self.trainer = trainer

    def on_step_end(self, trainer, logs) -> None:
        self.last = logs


@pytest.mark.parametrize("mode, power", [("inverse", 1.0), ("sqrt", 0.5)])
def test_class_weights_reach_the_loss_factory(tmp_path, mode, power):
    from fernb.engine import fit
    from fernb.engine.data import class_weights

    train = toy_data(50)
    cap = Capture()
    fit(
        toy_config(tmp_path, **{"schedule.epochs": 1, "loss.class_weights": mode}),
        train_data=train,
        valid_data=toy_data(14, seed=1),
        callbacks=[cap],
    )
    counts = torch.tensor(np.bincount(train.targets, minlength=7), dtype=torch.float32)
    w = cap.trainer.loss_fn.class_weights.cpu()
    assert torch.allclose(w, class_weights(train.targets, 7, power))
    assert torch.allclose(w ** (1 / power) * counts, torch.full((7,), 50 / 7))  # w_c = ((N / C) / n_c) ** power


def test_class_weights_by_hand():
    from fernb.engine.data import class_weights

    assert class_weights(np.array([0, 0, 2]), 4).tolist() == [0.75, 0.0, 1.5, 0.0]  # absent classes get 0
    expected = [(2.5 / 4) ** 0.5, 0.0, 2.5**0.5]
    assert class_weights(np.array([0, 0, 0, 0, 2]), 3, power=0.5).tolist() == pytest.approx(expected)


def test_trust_ramp_step_info_goes_from_zero_to_one(tmp_path):
    from fernb.engine import fit

    cap = Capture()
    fit(
        toy_config(tmp_path, **{"schedule.epochs": 3}),
        train_data=toy_data(32),
        valid_data=toy_data(14, 1),
        callbacks=[cap],
    )
    seen = cap.trainer.loss_fn.infos
    assert [i.step for i in seen] == list(range(12))
    assert seen[0].progress == 0.0 and math.isclose(seen[-1].progress, 11 / 12)
    assert [i.epoch for i in seen] == [0] * 4 + [1] * 4 + [2] * 4 and seen[0].num_epochs == 3


def test_keep_epochs_writes_one_loadable_checkpoint_per_epoch(tmp_path):
    from fernb.engine import RunDir, fit, load_run

    res = fit(
        toy_config(tmp_path, **{"schedule.epochs": 3, "run.keep_epochs": True}),
        train_data=toy_data(32),
        valid_data=toy_data(14, 1),
    )
    rd = RunDir(res.run_dir)
    assert rd.checkpoints() == ["epoch-001", "epoch-002", "epoch-003", "best", "last"]
    assert rd.epoch_checkpoints() == [1, 2, 3]
    _, first, meta1 = load_run(rd.path, 1)
    _, third, meta3 = load_run(rd.path, "epoch-003")
    assert meta1["epoch"] == 1 and meta3["epoch"] == 3 and meta3["class_names"] == meta1["class_names"]
    assert weights_digest(third) == weights_digest(res.model) != weights_digest(first)
    plain = fit(
        toy_config(tmp_path, **{"schedule.epochs": 2, "run.name": "plain"}),
        train_data=toy_data(32),
        valid_data=toy_data(14, 1),
    )
    assert RunDir(plain.run_dir).checkpoints() == ["best", "last"]


def test_predict_keeps_named_extras_in_dataset_order():
    from fernb.engine.data import build_transform
    from fernb.engine.predict import predict

    ds = toy_data(30).with_transform(build_transform("default", False, 16))
    net = ToyNet().eval()
    pred = predict(net, ds, batch_size=8, extras=["embedding"])
    assert set(pred.extras) == {"embedding"} and pred.extras["embedding"].shape == (30, 8 * 16)
    x = torch.stack([ds[i]["image"] for i in range(30)])
    with torch.no_grad():
        np.testing.assert_allclose(pred.extras["embedding"], net(x).embedding.numpy(), rtol=1e-5, atol=1e-6)
    assert set(predict(net, ds, batch_size=8, extras=True).extras) == {"embedding", "features"}
    assert predict(net, ds, batch_size=8).extras == {}
    with pytest.raises(KeyError, match="primary_dist"):
        predict(net, ds, batch_size=8, extras=["primary_dist"])


def test_engine_sets_arbex_trust_to_the_ramp_while_training_and_full_trust_for_validation(tmp_path):
    from fernb.engine import fit

    seen: list[tuple[bool, float]] = []

    class Spy(Callback):
        def on_fit_start(self, trainer) -> None:
            model = trainer.model
            forward = model.forward

            def spy(x):
                seen.append((model.training, float(model.trust)))
                return forward(x)

            model.forward = spy

    cfg = toy_config(
        tmp_path,
        **{"model.name": "arbex", "model.preset": "tiny", "data.img_size": 32, "schedule.epochs": 2, "optim.lr": 1e-3},
    )
    fit(cfg, train_data=toy_data(16, size=32), valid_data=toy_data(8, 1, size=32), callbacks=[Spy()])
    train = [t for training, t in seen if training]
    valid = [t for training, t in seen if not training]
    assert train == pytest.approx([0.0, 0.25, 0.5, 0.75])  # 2 epochs x 2 steps: t = step / total
    assert valid and set(valid) == {1.0}


@pytest.mark.parametrize(
    "over",
    [
        {
            "optim.name": "sgd",
            "optim.momentum": 0.9,
            "schedule.name": "step",
            "schedule.step_size": 1,
            "schedule.gamma": 0.5,
        },
        {"optim.name": "adamw", "optim.weight_decay": 0.01, "schedule.name": "cosine", "schedule.warmup_epochs": 1},
        {
            "optim.name": "adam",
            "optim.sam": True,
            "schedule.name": "exponential",
            "schedule.gamma": 0.9,
            "optim.clip_grad_norm": 1.0,
        },
        {
            "optim.name": "sgd",
            "optim.sam": True,
            "optim.sam_adaptive": True,
            "schedule.name": "plateau",
            "schedule.plateau_patience": 0,
            "schedule.monitor": "valid_nll",
            "schedule.monitor_mode": "min",
        },
    ],
)
def test_optimisers_and_schedules_train(tmp_path, over, device):
    from fernb.engine import fit

    res = fit(
        toy_config(tmp_path, **{"schedule.epochs": 3, "run.device": str(device), **over}),
        train_data=toy_data(32),
        valid_data=toy_data(14, 1),
    )
    assert all(math.isfinite(r["train_loss"]) for r in res.history)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"] * 1.05
    lrs = [r["lr"] for r in res.history]
    if over.get("schedule.name") == "step":
        assert lrs == pytest.approx([0.01, 0.005, 0.0025])
    if over.get("schedule.name") == "exponential":
        assert lrs == pytest.approx([0.01, 0.009, 0.0081])


def test_sam_takes_the_gradient_at_the_perturbed_point():
    from fernb.engine.optim import SAM

    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.5)
    (w**2).sum().backward()  # g = 2w = (2, -4)
    g = torch.tensor([2.0, -4.0])
    sam.first_step()
    e = 0.5 * g / g.norm()
    assert torch.allclose(w.detach(), torch.tensor([1.0, -2.0]) + e)
    sam.zero_grad()
    (w**2).sum().backward()  # gradient at w + e
    sam.second_step()
    assert torch.allclose(w.detach(), torch.tensor([1.0, -2.0]) - 0.1 * 2 * (torch.tensor([1.0, -2.0]) + e))


def test_lr_schedule_cosine_warmup_and_plateau():
    from fernb.engine import ScheduleConfig
    from fernb.engine.optim import LRSchedule

    cos = LRSchedule(ScheduleConfig(name="cosine", warmup_epochs=1, min_lr=0.0), epochs=5, steps_per_epoch=4)
    assert cos.factor(0, 0) == pytest.approx(0.25) and cos.factor(0, 3) == pytest.approx(1.0)
    assert cos.factor(1, 0) == pytest.approx(1.0) and cos.factor(3, 0) == pytest.approx(0.5)
    pl = LRSchedule(ScheduleConfig(name="plateau", plateau_patience=1, plateau_factor=0.1), epochs=5, steps_per_epoch=1)
    for v in (0.5, 0.4, 0.4):
        pl.observe(v)
    assert pl.factor(3) == pytest.approx(0.1)


def test_stages_call_the_model_reload_best_and_keep_the_architecture_for_evaluation(tmp_path):
    from fernb.engine import StageConfig, apply_overrides, evaluate, fit, load_run

    cfg = toy_config(tmp_path)
    cfg = apply_overrides(
        cfg, {"schedule.stages": [StageConfig(epochs=2), StageConfig(2, call="add_branch", reload_best=True, lr=0.02)]}
    )
    res = fit(cfg, train_data=toy_data(32), valid_data=toy_data(14, 1))
    assert len(res.model.heads) == 2 and not res.model.heads[0].weight.requires_grad
    assert [r["stage"] for r in res.history] == [0, 0, 1, 1]
    assert res.history[2]["lr"] == pytest.approx(0.02)
    assert res.model.epoch_calls == [0, 1, 2, 3]
    _, model, meta = load_run(res.run_dir, "last")
    assert len(model.heads) == 2 and meta["stage_calls"] == ["add_branch"]
    m = evaluate(res.run_dir, "valid", data=toy_data(14, 1), bootstrap=0)
    assert 0 <= m["accuracy"] <= 1


def test_nan_loss_stops_with_step_and_term_and_keeps_last_good_checkpoint(tmp_path):
    from fernb.engine import NonFiniteLossError, fit
    from fernb.engine.checkpoint import load_checkpoint

    cfg = toy_config(tmp_path, **{"loss.kwargs": {"nan_at": 6}, "schedule.epochs": 3})
    with pytest.raises(NonFiniteLossError, match=r"step 7 .*reg=nan") as info:
        fit(cfg, train_data=toy_data(32), valid_data=toy_data(14, 1))
    assert "epoch 2" in str(info.value) and "last good checkpoint" in str(info.value)
    run = tmp_path / "toy"
    _, meta, ts = load_checkpoint(run / "checkpoints" / "last")
    assert meta["epoch"] == 1 and meta["step"] == 4
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "failed" and "reg=nan" in rec["error"]


def test_existing_run_is_never_overwritten_by_accident(tmp_path):
    from fernb.engine import RunExistsError, fit

    cfg = toy_config(tmp_path, **{"schedule.epochs": 1})
    fit(cfg, train_data=toy_data(16), valid_data=toy_data(14, 1))
    with pytest.raises(RunExistsError, match="run.resume=true"):
        fit(cfg, train_data=toy_data(16), valid_data=toy_data(14, 1))
    res = fit(
        toy_config(tmp_path, **{"schedule.epochs": 1, "run.overwrite": True}),
        train_data=toy_data(16),
        valid_data=toy_data(14, 1),
    )
    assert len(res.history) == 1


def test_same_seed_same_metrics_other_seed_differs(tmp_path):
    from fernb.engine import fit

    def run(name, seed):
        cfg = toy_config(tmp_path, **{"run.name": name, "run.seed": seed})
        res = fit(cfg, train_data=toy_data(32), valid_data=toy_data(14, 1))
        return [
            {k: v for k, v in r.items() if not k.endswith("seconds") and k != "samples_per_second"} for r in res.history
        ], weights_digest(res.model)

    a, b, c = run("a", 3), run("b", 3), run("c", 4)
    assert a == b
    assert a[1] != c[1]


def test_validation_holdout_and_test_split_guard(tmp_path):
    from fernb.engine import fit
    from fernb.engine.data import build_datasets

    cfg = toy_config(tmp_path, **{"data.valid_fraction": 0.25})
    bundle = build_datasets(cfg, toy_data(56, subjects=8))
    assert set(bundle.train.subjects).isdisjoint(bundle.valid.subjects)  # subject-independent hold-out
    res = fit(cfg, train_data=toy_data(56, subjects=8))
    assert res.info["data"]["valid"]["split"] == "holdout"
    with pytest.raises(ValueError, match="test split"):
        build_datasets(toy_config(tmp_path, **{"data.valid_split": "test"}))


def test_time_budget_and_max_steps_stop_early(tmp_path):
    from fernb.engine import fit

    res = fit(
        toy_config(tmp_path, **{"run.max_steps": 3, "schedule.epochs": 5}),
        train_data=toy_data(32),
        valid_data=toy_data(14, 1),
    )
    assert res.steps == 3 and res.stop_reason == "max_steps" and res.history == []
    rows = (Path(res.run_dir) / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and ",1" in rows[1]  # the partial epoch is reported, flagged partial=1


def test_a_run_the_time_budget_stops_at_an_epoch_end_is_still_validated(tmp_path):
    from fernb.engine import fit

    cfg = toy_config(tmp_path, **{"run.time_budget_s": 1e-9, "schedule.epochs": 4, "schedule.eval_every": 2})
    res = fit(cfg, train_data=toy_data(8), valid_data=toy_data(14, 1))  # one batch an epoch: the cut is at its end
    assert res.steps == 1 and res.stop_reason == "time_budget"
    assert res.best_metrics.get("valid_accuracy") is not None


def test_predict_returns_dataset_order_and_shuffled_batches_differ_for_batch_dependent_models():
    from fernb.engine.data import build_transform
    from fernb.engine.predict import predict

    class BatchCentred(nn.Module):  # its prediction depends on the other samples of the batch
        def forward(self, x: Tensor) -> ModelOutput:
            m = x.mean((1, 2, 3))
            return ModelOutput(logits=(m - m.mean())[:, None] * torch.arange(7.0))

    ds = toy_data(30).with_transform(build_transform("default", False, 16))
    seq = predict(BatchCentred(), ds, batch_size=8, order="sequential")
    shuf = predict(BatchCentred(), ds, batch_size=8, order="shuffled")
    assert seq.indices.tolist() == shuf.indices.tolist() == list(range(30))
    assert np.array_equal(seq.targets, ds.targets) and not np.allclose(seq.logits, shuf.logits)
    net = ToyNet().eval()
    a, b = predict(net, ds, batch_size=8, order="sequential"), predict(net, ds, batch_size=8, order="shuffled")
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-6)


# -- evaluation protocol -----------------------------------------------------------------------------------------------
def test_evaluate_records_test_use_and_maps_label_spaces(tmp_path):
    from fernb.engine import evaluate, fit
    from fernb.engine.evaluate import map_predictions
    from fernb.labels import get_label_space

    res = fit(toy_config(tmp_path, **{"schedule.epochs": 2}), train_data=toy_data(32), valid_data=toy_data(14, 1))
    m = evaluate(res.run_dir, data=toy_data(21, seed=5, split="test"), bootstrap=50)
    assert m["n"] == 21 and set(m["ci"]) == {"accuracy", "mean_class_accuracy", "macro_f1"}
    assert m["ci"]["accuracy"]["low"] <= m["accuracy"] <= m["ci"]["accuracy"]["high"]
    assert (Path(res.run_dir) / "eval").is_dir()
    # cross-dataset: a model on basic7 scored on data with only 6 of those classes (no neutral) + contempt
    space6 = get_label_space(["happy", "sad", "contempt"])
    logits = np.array([[5.0, 1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0], [0, 0, 3, 0, 0, 0, 0]])
    sub, preds, shared = map_predictions(logits, LABEL_SPACES["basic7"], space6)
    assert shared.names == ("happy", "sad") and preds.tolist() == [0, 0, 1]
    _, preds2, _ = map_predictions(logits, LABEL_SPACES["basic7"], space6, restrict=False)
    assert preds2.tolist() == [-1, 0, 1]


def test_config_driven_synthetic_run_evaluates_test_once_with_divergences(tmp_path):
    from fernb.engine import evaluate, fit

    res = fit(toy_config(tmp_path, **SYNTH, **{"schedule.epochs": 1}))
    assert "valid_kl" in res.history[0] and "valid_js" in res.history[0]  # synthetic items carry distributions
    rec = json.loads((Path(res.run_dir) / "run.json").read_text())
    assert rec["data"]["train"]["dataset"] == "synthetic" and rec["test_split_used"] is False
    m = evaluate(res.run_dir, "test", bootstrap=20)
    assert m["split"] == "test" and "kl" in m and 0 <= m["js"] <= math.log(2)
    with pytest.warns(UserWarning, match="already evaluated"):
        evaluate(res.run_dir, "test", bootstrap=0)
    rec = json.loads((Path(res.run_dir) / "run.json").read_text())
    assert rec["test_split_used"] is True and rec["test_evaluations"] == 2 and len(rec["evaluations"]) == 2


def test_cross_validation_is_subject_independent_and_summarised(tmp_path):
    from fernb.engine import cross_validate, fit  # noqa: F401
    from fernb.engine.data import build_datasets, build_test_dataset

    cfg = toy_config(
        tmp_path, **SYNTH, **{"data.folds": 3, "data.fold_split": "all", "schedule.epochs": 1, "run.name": None}
    )
    b = build_datasets(cfg)
    test, _ = build_test_dataset(cfg, "test")
    groups = [set(b.train.subjects), set(b.valid.subjects), set(test.subjects)]
    assert all(groups[i].isdisjoint(groups[j]) for i in range(3) for j in range(i + 1, 3))
    cv = cross_validate(cfg)
    assert len(cv["runs"]) == 3 and cv["summary"]["accuracy"]["n"] == 3
    assert sum(r["n"] for r in cv["runs"]) == 120  # the test folds partition the "all" split
    assert (tmp_path / "engine_toy-synthetic-s0-cv.json").is_file()


def test_repeated_seeds_report_mean_and_std(tmp_path):
    from fernb.engine import repeat_seeds

    out = repeat_seeds(toy_config(tmp_path, **SYNTH, **{"schedule.epochs": 1, "run.name": None}), [0, 1])
    s = out["summary"]["accuracy"]
    assert s["n"] == 2 and s["mean"] == pytest.approx(np.mean(s["values"])) and s["std"] >= 0


def test_missing_data_root_falls_back_to_synthetic_only_when_asked(tmp_path, monkeypatch):
    from fernb.data.errors import DataRootError
    from fernb.engine import fit

    monkeypatch.setenv("FERNB_DATA_ROOT", str(tmp_path / "nowhere"))
    monkeypatch.delenv("FERNB_FERPLUS_ROOT", raising=False)
    over = {
        "data.dataset": "ferplus",
        "data.label_space": "ferplus8",
        "schedule.epochs": 1,
        "data.train_limit": 24,
    }
    with pytest.raises(DataRootError):
        fit(toy_config(tmp_path, **over))
    with pytest.warns(UserWarning, match="synthetic"):
        res = fit(toy_config(tmp_path, **over, **{"data.fallback": "synthetic", "run.overwrite": True}))
    assert res.info["data"]["source"] == "synthetic" and res.info["data"]["label_space"]["name"] == "ferplus8"


def test_an_explicit_data_root_that_does_not_exist_never_falls_back_to_synthetic(tmp_path):
    from fernb.data.errors import DataRootError
    from fernb.engine import fit

    over = {"data.dataset": "ferplus", "data.root": str(tmp_path / "typo"), "data.fallback": "synthetic"}
    with pytest.raises(DataRootError, match="typo"):
        fit(toy_config(tmp_path, **over))
    assert not (tmp_path / "toy").exists()  # nothing written


def test_an_existing_root_without_the_split_never_falls_back_to_synthetic(tmp_path):
    from fernb.data.errors import DataRootError
    from fernb.engine import DataConfig
    from fernb.engine.data import load_split

    root = tmp_path / "ferplus"
    (root / "FER2013Train").mkdir(parents=True)  # a root, but not a FER+ layout holding the asked split
    cfg = DataConfig(dataset="ferplus", root=str(root), label_space="ferplus8", fallback="synthetic")
    with pytest.raises(DataRootError, match="ferplus"):
        load_split(cfg, "test")


@pytest.mark.parametrize("sampler, kwargs", [("shuffle", {}), ("oversample", {}), ("capped", {"cap": 3})])
def test_epoch_order_is_a_pure_function_of_seed_epoch_and_rank(sampler, kwargs):
    from fernb.engine import DataConfig
    from fernb.engine.data import epoch_indices

    cfg = DataConfig(sampler=sampler, sampler_kwargs=kwargs)
    y = toy_data(40).targets
    a = epoch_indices(cfg, y, seed=1, epoch=2)
    assert np.array_equal(a, epoch_indices(cfg, y, seed=1, epoch=2))
    assert not np.array_equal(a, epoch_indices(cfg, y, seed=1, epoch=3))
    r0, r1 = (epoch_indices(cfg, y, seed=1, epoch=2, rank=r, world=2) for r in (0, 1))
    assert len(r0) == len(r1) >= len(a) // 2  # equal shards, together the epoch
    if sampler == "capped":
        assert np.bincount(y[a], minlength=7).max() == 3


def test_data_layer_sampler_in_fit_and_load_best(tmp_path):
    from fernb.engine import fit

    res = fit(
        toy_config(tmp_path, **{"data.sampler": "oversample", "schedule.epochs": 1}),
        train_data=toy_data(32),
        valid_data=toy_data(14, 1),
    )
    assert res.history[0]["train_samples"] == 32
    best = res.load_best()
    assert not best.training and te_equal(best.state_dict(), res.model.state_dict())


def te_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.shared
def test_cross_dataset_evaluation_through_canonical_names(tmp_path, ferplus_root):
    from fernb.data import load_dataset
    from fernb.engine import evaluate, fit, load_config
    from fernb.engine.data import build_test_dataset

    res = fit(toy_config(tmp_path, **SYNTH, **{"schedule.epochs": 1}))  # basic7 model
    other, _ = build_test_dataset(load_config(res.run_dir), "valid", dataset="ferplus", root=str(ferplus_root))
    assert other.label_space.name == "ferplus8" and len(other) == 3191  # the other dataset keeps its own classes
    ferplus = load_dataset("ferplus", ferplus_root, "valid")
    rows = np.concatenate([np.flatnonzero(ferplus.targets == c)[:12] for c in range(8)])  # contempt included
    m = evaluate(res.run_dir, "valid", data=ferplus.subset(rows), bootstrap=0)
    mp = m["label_mapping"]
    assert mp["data_classes_dropped"] == ["contempt"] and mp["shared_classes"] == list(LABEL_SPACES["basic7"].names)
    assert m["n"] == 7 * 12 and m["class_names"] == list(LABEL_SPACES["basic7"].names)
    rec = json.loads((Path(res.run_dir) / "run.json").read_text())
    assert rec["test_split_used"] is False and rec["evaluations"][-1]["dataset"] == "ferplus"


@pytest.mark.shared
def test_real_ferplus_through_the_reader(tmp_path, ferplus_root):
    from fernb.engine import fit

    res = fit(
        toy_config(
            tmp_path,
            **{
                "data.dataset": "ferplus",
                "data.root": str(ferplus_root),
                "data.label_space": "ferplus8",
                "data.train_limit": 48,
                "data.valid_limit": 32,
                "schedule.epochs": 1,
            },
        )
    )
    d = res.info["data"]
    assert d["train"]["n"] == 48 and d["valid"]["split"] == "valid" and len(d["label_space"]["names"]) == 8
    assert "valid_kl" in res.history[0]  # FER+ votes give label distributions


def test_real_resnet18_tiny_smoke_preset_and_cli(tmp_path, capsys):
    from fernb import list_models
    from fernb.engine import save_config
    from fernb.engine.cli import evaluate_main, train_main
    from fernb.engine.presets import config_from_preset
    from fernb.losses import list_losses

    if "resnet18" not in list_models() or "resnet18" not in list_losses():
        pytest.skip("resnet18 model or loss not registered yet")
    cfg = config_from_preset(
        "resnet18/synthetic",
        smoke=True,
        **{
            **SYNTH,
            "data.train_limit": 32,
            "data.valid_limit": 16,
            "schedule.epochs": 1,
            "run.out_dir": str(tmp_path),
            "run.name": "r18",
            "run.threads": 1,
            "data.label_space": "basic7",
        },
    )
    save_config(cfg, tmp_path / "cfg.yaml")
    assert train_main(["--config", str(tmp_path / "cfg.yaml"), "--quiet", "--test"]) == 0
    out = capsys.readouterr().out
    assert "best epoch 1" in out and "mean class accuracy" in out and "confusion" in out
    assert evaluate_main([str(tmp_path / "r18"), "--split", "valid", "--bootstrap", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == "valid"


def test_predictions_under_bf16_autocast_run(tmp_path):
    from fernb.engine import fit

    res = fit(
        toy_config(tmp_path, **{"run.precision": "bf16", "schedule.epochs": 1}),
        train_data=toy_data(16),
        valid_data=toy_data(14, 1),
    )
    assert math.isfinite(res.history[0]["train_loss"])


def test_notebook_tiny_runs_use_the_scratch_optimiser_and_official_runs_the_recipe():
    from fernb.notebooks import SCRATCH_OPTIM, method_config

    def published(method, **kw):
        return method_config(method, "synthetic", False, recipe="published", **kw)

    manet = published("manet")
    assert (manet.optim.name, manet.optim.lr, manet.optim.weight_decay) == ("adam", 1e-3, 0.0)
    assert published("arbex").optim.lr == 3e-4
    assert published("arbex").loss.kwargs == {"ramp_start": 0.5}
    official = published("manet", preset="official")
    assert (official.optim.name, official.optim.lr) == ("sgd", 0.01)  # MA-Net's published recipe
    given = published("esr", lr=0.02)
    assert (given.optim.name, given.optim.lr) == ("adam", 0.02)  # lr overrides the scratch step only
    assert published("resnet18").optim.lr == 1e-3  # no scratch entry: the recipe
    assert set(SCRATCH_OPTIM) <= {"arbex", "poster_v2", "resnet18", "arm", "adcorre", "esr", "manet"}


def test_notebooks_train_the_budget_recipe_on_a_cpu():
    from fernb.notebooks import method_config, pick_recipe

    assert pick_recipe("auto", "cpu") == "budget" and pick_recipe("published", "cpu") == "published"
    with pytest.raises(ValueError, match="RECIPE='fast'.*auto, budget, published"):
        pick_recipe("fast")
    cfg = method_config("resnet18", "synthetic", False, device="cpu", budget_s=30)
    assert cfg.preset == "resnet18/synthetic@budget"
    assert (cfg.optim.name, cfg.schedule.budget_s, cfg.data.pipeline, cfg.model.preset) == (
        "adamw",
        30,
        "tensor",
        "tiny",
    )
    # the notebook's own model options are added to the budget model's: ARBEx keeps its ResNet-18 backbone
    arbex = method_config("arbex", "synthetic", False, device="cpu", model_kwargs={"behaviour": "fixed"})
    assert arbex.model.kwargs["backbone"] == "resnet18" and arbex.model.kwargs["behaviour"] == "fixed"
    assert arbex.loss.kwargs["lambda_branch"] == 1.0
    assert (arbex.loss.kwargs["lambda_anchor"], arbex.loss.kwargs["lambda_center"]) == (0.1, 0.1)
    poster = method_config("arbex", "synthetic", False, device="cpu", model_kwargs={"backbone": "poster_v2"})
    assert poster.model.kwargs == {"backbone": "poster_v2"}
    steps = method_config("esr", "synthetic", False, device="cpu", steps=40)
    assert (steps.schedule.steps, steps.schedule.budget_s) == (40, None)
    smoke = method_config("arbex", "synthetic", True, device="cpu")
    assert smoke.schedule.budget_s is None and smoke.data.train_limit == 128


def test_run_spec_reads_a_parameters_cell_and_builds_the_notebooks_configs():
    from fernb.engine import config_to_dict
    from fernb.notebooks import RunSpec, method_config

    cell = {
        "SMOKE": False,
        "DATASET": "synthetic",
        "RECIPE": "budget",
        "BUDGET_S": 45,
        "SEED": 3,
        "DEVICE": "cpu",
        "RUNS": "somewhere",
        "BEHAVIOUR": "official",
        "METHODS": ["arm"],
        "np": object(),
    }
    spec = RunSpec.from_parameters(cell)
    assert (spec.budget_s, spec.seed, spec.runs, spec.behaviour, spec.preset) == (
        45,
        3,
        "somewhere",
        "official",
        "tiny",
    )
    same = method_config(
        "arbex",
        "synthetic",
        False,
        seed=3,
        recipe="budget",
        budget_s=45,
        device="cpu",
        runs="somewhere",
        model_kwargs={"behaviour": "official"},
    )
    assert config_to_dict(spec.config("arbex")) == config_to_dict(same)  # what lets notebook 05 reuse 02's run
    esr = spec.config("esr", seed=1, model_kwargs={"diversity": True})
    assert esr.run.seed == 1 and esr.model.kwargs["diversity"] and "behaviour" not in esr.model.kwargs
    fer = spec.with_(dataset="ferplus", data_root="/nowhere").config("arbex")
    assert (fer.data.dataset, fer.data.root) == ("ferplus", "/nowhere")


def test_leaderboard_averages_over_seeds_and_sorts_by_accuracy():
    from fernb.notebooks import leaderboard

    def result(acc):
        return {
            "test": {
                "accuracy": acc,
                "mean_class_accuracy": acc / 2,
                "macro_f1": acc / 4,
                "ci": {"accuracy": {"low": acc - 0.1, "high": acc + 0.1}},
            }
        }

    board = leaderboard({("a", 0): result(0.4), ("a", 1): result(0.6), ("b", 0): result(0.7)})
    assert list(board.index) == ["b", "a"] and list(board["seeds"]) == [1, 2]
    assert board.loc["a", "accuracy"] == pytest.approx(0.5) and board.loc["a", "acc std"] == pytest.approx(0.1414, 1e-3)
    assert board.loc["a", "acc CI low"] == pytest.approx(0.3) and board.loc["b", "acc std"] == 0.0


def test_branch_stages_follow_the_model(tmp_path):
    from fernb.engine import ConfigError, StageConfig, config_from_preset, fit

    assert len(config_from_preset("esr/rafdb").schedule.stages) == 9  # ESR-9: one stage per branch
    assert len(config_from_preset("esr/rafdb", model__preset="tiny").schedule.stages) == 4
    wide = config_from_preset("esr/rafdb", model__preset="tiny", model__kwargs={"num_branches": 6})
    assert len(wide.schedule.stages) == 6
    too_many = [StageConfig(epochs=1)] + [StageConfig(epochs=1, call="add_branch")] * 4
    cfg = config_from_preset(
        "esr/synthetic",
        smoke=True,
        **{  # explicit stages are kept, and refused up front
            "schedule.stages": too_many,
            "run.out_dir": str(tmp_path),
            "run.quiet": True,
            "data.train_limit": 16,
        },
    )
    assert len(cfg.schedule.stages) == 5
    with pytest.raises(ConfigError, match="'add_branch' 4 times.*allows 3"):
        fit(cfg)
    assert not list(tmp_path.rglob("metrics.csv"))  # refused before the first epoch


def test_precision_resolution():
    from fernb.engine import ConfigError
    from fernb.engine.fit import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) in ("bf16", "fp32")  # never fp16 on a CPU unless asked
    assert resolve_precision("fp16", cpu) == "fp16"
    with pytest.raises(ConfigError, match="SAM"):
        resolve_precision("fp16", cpu, sam=True)
    with pytest.raises(ConfigError, match="expected auto"):
        resolve_precision("half", cpu)
    with pytest.raises(ConfigError, match="on CUDA or CPU"):
        resolve_precision("fp16", torch.device("meta"))


def test_notebook_epochs_rescale_a_staged_recipe():
    from fernb.engine import ConfigError, ScheduleConfig, StageConfig
    from fernb.notebooks import method_config

    esr = method_config("esr", "synthetic", False, epochs=12)  # ESR-9's recipe: 100 + 8 x 60 epochs
    # the tiny ESR has 4 branches: 100 + 3 x 60 epochs, rescaled to 12 (a full-mode notebook 03 once asked it for 8)
    assert [s.epochs for s in esr.schedule.stages] == [6, 2, 2, 2] and esr.schedule.total_epochs == 12
    assert all(s.call == "add_branch" for s in esr.schedule.stages[1:])
    sched = ScheduleConfig(stages=[StageConfig(epochs=10), StageConfig(epochs=30)])
    assert [s.epochs for s in sched.scaled_stages(8)] == [2, 6]
    with pytest.raises(ConfigError, match="stages"):
        sched.scaled_stages(1)


def test_epoch_sums_kept_on_the_device_equal_the_python_sums_bit_for_bit():
    """The loop's running sums stay on the device (no read per step) and give the numbers per-step Python floats gave:
    the same float64 products and sums, a -0.0 term starting from 0.0, and a resumed epoch's sums carried on."""
    from types import SimpleNamespace

    from fernb.engine.fit import _EpochSums

    gen = torch.Generator().manual_seed(0)
    running = _EpochSums(torch.device("cpu"))
    ref: dict = {"n": 0, "loss": 0.0, "correct": 0, "terms": {}}
    for step in range(40):
        bs = 3 + step % 5
        logits, target = torch.randn(bs, 7, generator=gen), torch.randint(0, 7, (bs,), generator=gen)
        total = torch.rand((), generator=gen) * 3
        terms = {"ce": total * 0.7, "zero": torch.tensor(-0.0), "half": total.half()}
        running.add(SimpleNamespace(total=total, terms=terms), logits, target)
        ref["n"] += bs
        ref["loss"] += float(total) * bs
        ref["correct"] += int((logits.argmax(1) == target).sum())
        for k, v in terms.items():
            ref["terms"][k] = ref["terms"].get(k, 0.0) + float(v) * bs
        if step == 19:  # a checkpoint mid-epoch and the resumed process's sums
            running = _EpochSums(torch.device("cpu"), running.to_dict())
    got = running.to_dict()
    assert got == ref and math.copysign(1.0, got["terms"]["zero"]) == 1.0
    assert running.mean_loss() == ref["loss"] / ref["n"] and running.accuracy() == ref["correct"] / ref["n"]


# -- test-time augmentation -------------------------------------------------------------------------------------------
def test_flip_tta_averages_the_logits_of_each_face_and_its_mirror():
    from fernb.engine import predict
    from fernb.engine.data import build_transform

    ds = toy_data(20, seed=3).with_transform(build_transform("default", False, 16))
    net = ToyNet().eval()
    torch.manual_seed(0)
    with torch.no_grad():  # a head that tells left from right, so the mirror image scores differently
        net.heads[0].weight.normal_()
    plain = predict(net, ds, batch_size=8)
    flip = predict(net, ds, batch_size=8, tta="flip")
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        want = (net(x).logits + net(x.flip(-1)).logits) / 2
    np.testing.assert_allclose(flip.logits, want.numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(plain.logits, flip.logits)
    assert flip.indices.tolist() == plain.indices.tolist() and np.array_equal(flip.targets, plain.targets)
    with pytest.raises(ValueError, match="tta='crop'"):
        predict(net, ds, tta="crop")


def test_flip_tta_selects_and_evaluates_runs_and_is_recorded(tmp_path):
    from fernb.engine import evaluate, fit, predict
    from fernb.engine.cli import evaluate_main
    from fernb.engine.data import run_transform
    from fernb.engine.factory import load_run
    from fernb.engine.metrics import classification_metrics

    valid = toy_data(21, 1, split="valid")
    res = fit(
        toy_config(tmp_path, **{"data.eval_tta": "flip", "data.eval_order": "sequential"}),
        train_data=toy_data(32),
        valid_data=valid,
    )
    cfg, model, _ = load_run(res.run_dir, "best")
    scored = valid.with_transform(run_transform(cfg, False))
    want = predict(model, scored, batch_size=8, order="sequential", tta="flip")
    best = next(r for r in res.history if r["epoch"] == res.best_epoch)
    plain_pred = predict(model, scored, batch_size=8, order="sequential")
    assert best["valid_accuracy"] == pytest.approx(float((want.preds == want.targets).mean()))
    # the loss tells the two apart where the accuracy may not: selection scored the faces and their mirrors
    nll = classification_metrics(want.targets, probs=want.probs, num_classes=7)["nll"]
    plain_nll = classification_metrics(want.targets, probs=plain_pred.probs, num_classes=7)["nll"]
    assert best["valid_nll"] == pytest.approx(nll, rel=1e-4) and abs(nll - plain_nll) > 1e-5
    flipped = evaluate(res.run_dir, data=valid, bootstrap=0)
    plain = evaluate(res.run_dir, data=valid, bootstrap=0, tta="none")
    assert flipped["tta"] == "flip" and plain["tta"] == "none"
    assert flipped["accuracy"] == pytest.approx(best["valid_accuracy"])
    saved = sorted(p.name for p in (Path(res.run_dir) / "eval").glob("*.json"))
    assert any(n.endswith("-flip.json") for n in saved) and any(not n.endswith("-flip.json") for n in saved)
    with pytest.raises(ValueError, match="expected one of none, flip"):
        evaluate(res.run_dir, data=valid, tta="crop")
    with pytest.raises(SystemExit):
        evaluate_main([str(res.run_dir), "--tta", "crop"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
