"""Budget recipes: step plans and time budgets, the schedule that ends at the last step, decay off norms and biases,
the tensor input pipeline (decoded once, augmented per batch) with its seeded determinism and exact resume."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import toys as te
import yaml
from PIL import Image

from fernb.data import FERDataset
from fernb.data.arrays import ArrayBatches, BatchTransform, array_cache_path, batch_generator, materialize
from fernb.engine import ConfigError, config_from_preset, fit
from fernb.engine.checkpoint import load_checkpoint
from fernb.engine.data import build_batch_transform, build_transform
from fernb.engine.presets import BUDGET_STEPS, budget_overrides
from fernb.labels import LABEL_SPACES

TESTS = Path(__file__).resolve().parent
TENSOR = {"data.pipeline": "tensor", "data.batch_augment": {"degrees": 10.0}}


# -- the batch transform -----------------------------------------------------------------------------------------------
def test_batch_augmentation_is_a_pure_function_of_seed_epoch_stream_and_batch():
    bt = BatchTransform(mean=(0.5,), std=(0.25,), channels=1)
    u8 = torch.randint(0, 256, (16, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = bt(u8, batch_generator(0, 1, 0, 2))
    assert torch.equal(a, bt(u8, batch_generator(0, 1, 0, 2)))
    for other in ((1, 1, 0, 2), (0, 2, 0, 2), (0, 1, 1, 2), (0, 1, 0, 3)):
        assert not torch.equal(a, bt(u8, batch_generator(*other)))
    with pytest.raises(ValueError, match="generator"):
        bt(u8)


def test_identity_augmentation_and_flip_are_exact():
    u8 = torch.randint(0, 256, (4, 12, 12, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    plain = BatchTransform(train=False)(u8)
    still = BatchTransform(hflip=0.0, degrees=0.0, scale=(1.0, 1.0), translate=0.0, erase_p=0.0)
    assert torch.allclose(still(u8, batch_generator(0, 0, 0, 0)), plain)
    flip = BatchTransform(hflip=1.0, degrees=0.0, scale=(1.0, 1.0), translate=0.0, erase_p=0.0)
    assert torch.allclose(flip(u8, batch_generator(0, 0, 0, 0)), plain.flip(-1), atol=1e-6)
    erase = BatchTransform(hflip=0.0, degrees=0.0, scale=(1.0, 1.0), translate=0.0, erase_p=1.0)
    out = erase(u8, batch_generator(0, 0, 0, 0))
    zeros = (out == 0).all(1).flatten(1).sum(1)
    assert bool((zeros > 0).all())  # one black rectangle per image
    assert plain.shape == (4, 3, 12, 12) and BatchTransform(channels=3, train=False)(u8[..., 0]).shape[1] == 3


def test_tensor_eval_path_equals_the_per_sample_pipeline():
    """Decoded pixels + the batch transform give the tensors the PIL eval transform gives (same resize, same
    normalisation, ESR's BGR included)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    ds = FERDataset("toy", "valid", LABEL_SPACES["basic7"], np.arange(6) % 7, pixels=rgb)
    for method in ("resnet18", "esr", "adcorre"):
        cfg = te.toy_config(Path("/tmp"), **{"model.name": method, "data.img_size": 32, "data.pipeline": "tensor"})
        pil = build_transform(method, False, 32)
        bt = build_batch_transform(cfg, train=False)
        dec = materialize(ds, 32, cache=False, progress=False)
        batch = bt(torch.from_numpy(np.asarray(dec.pixels)))
        ref = torch.stack([pil(ds.load_image(i)) for i in range(len(ds))])
        assert torch.allclose(batch, ref, atol=1e-5), method


def test_materialize_keeps_gray_as_one_channel_caches_and_notices_changed_files(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((30, 30), 40 * i, np.uint8)).convert("RGB").save(p)
        paths.append(p)
    ds = FERDataset("folder", "train", LABEL_SPACES["basic7"], np.arange(5), paths=paths)
    cache = tmp_path / "cache"
    a = materialize(ds, 16, cache_dir=cache, progress=False)
    assert a.pixels.shape == (5, 16, 16) and a.pixels[3, 0, 0] == 120
    path = array_cache_path(ds, 16, cache)
    assert path.is_file() and isinstance(materialize(ds, 16, cache_dir=cache, progress=False).pixels, np.memmap)
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(paths[0])  # an edited image is decoded again
    assert array_cache_path(ds, 16, cache) != path
    assert materialize(ds, 16, cache_dir=cache, progress=False).pixels[0].max() == 0


def test_array_batches_number_batches_from_first_batch():
    ds = te.toy_data(20).with_batch_transform(BatchTransform(channels=1))
    full = list(ArrayBatches(ds, np.arange(20), 4, seed=3, epoch=1))
    tail = list(ArrayBatches(ds, np.arange(8, 20), 4, seed=3, epoch=1, first_batch=2))
    assert len(full) == 5 and len(tail) == 3
    for a, b in zip(full[2:], tail):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert set(full[0]) == {"image", "label", "index", "dist"}


# -- step plans and budgets --------------------------------------------------------------------------------------------
def test_step_plan_cuts_the_last_epoch_and_the_cosine_reaches_its_floor_at_the_last_step(tmp_path):
    from fernb.engine import Callback

    seen = []

    class Record(Callback):
        def on_step_end(self, trainer, logs):
            seen.append(logs["lr"])

    cfg = te.toy_config(
        tmp_path,
        **{
            "schedule.steps": 13,
            "schedule.name": "cosine",
            "schedule.warmup_fraction": 0.2,
            "optim.lr": 0.01,
            "data.batch_size": 8,
        },
    )
    res = fit(cfg, train_data=te.toy_data(40), valid_data=te.toy_data(14, 1), callbacks=[Record()])
    assert res.steps == 13 and [r["step"] for r in res.history] == [5, 10, 13]  # 3 epochs, the last one of 3 steps
    assert seen[0] == pytest.approx(0.01 / (0.2 * 13)) and max(seen) == pytest.approx(0.01, rel=0.05)
    # the factor reaches 0 as the last step ends: the last step starts 1/10.4 of the cosine before it
    assert seen[-1] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * (12 - 2.6) / (13 - 2.6))))
    assert seen[-1] < 0.01 * 0.03
    rec = json.loads((tmp_path / "toy" / "run.json").read_text())
    assert rec["planned_steps"] == 13 and rec["status"] == "completed"


def test_a_step_plan_shares_its_epochs_out_over_the_stages(tmp_path):
    from fernb.engine import StageConfig, apply_overrides

    cfg = apply_overrides(
        te.toy_config(tmp_path),
        {
            "schedule.stages": [StageConfig(epochs=50), StageConfig(epochs=50, call="add_branch", reload_best=True)],
            "schedule.steps": 19,
        },
    )
    res = fit(cfg, train_data=te.toy_data(40), valid_data=te.toy_data(14, 1))
    assert res.steps == 19 and [r["stage"] for r in res.history] == [0, 0, 1, 1]
    assert len(res.model.heads) == 2
    with pytest.raises(ConfigError, match="cannot hold"):
        fit(
            apply_overrides(cfg, {"schedule.steps": 4, "run.name": "short"}),
            train_data=te.toy_data(40),
            valid_data=te.toy_data(14, 1),
        )


def test_time_budget_becomes_a_recorded_step_plan_that_fills_the_budget(tmp_path):
    cfg = te.toy_config(
        tmp_path,
        **{
            "schedule.budget_s": 4.0,
            "schedule.name": "cosine",
            "schedule.eval_every": 1,
            "data.batch_size": 8,
            "schedule.replan": False,
        },
    )
    res = fit(cfg, train_data=te.toy_data(64), valid_data=te.toy_data(16, 1))
    rec = json.loads((tmp_path / "toy" / "run.json").read_text())
    plan = rec["budget"]
    assert res.steps == rec["planned_steps"] == plan["steps"] > 8
    assert res.history[-1]["step"] == plan["steps"]
    # the plan's own arithmetic, not the wall clock (other processes on the cores change the wall clock, not the
    # plan): calibration + steps + one validation per epoch, at the timed costs, fill the budget to within a step
    predicted = (
        plan["calibration_seconds"] + plan["steps"] * plan["step_seconds"] + plan["epochs"] * plan["validation_seconds"]
    )
    assert abs(predicted - 4.0) <= 2 * (plan["step_seconds"] + plan["validation_seconds"]), plan


def _misjudged_calibration(monkeypatch) -> None:
    """Make the budget's calibration plan a quarter of the steps it timed (a misjudged step cost)."""
    from fernb.engine.fit import Trainer

    timed = Trainer._calibrate

    def quarter(self):
        steps, plan = timed(self)
        return max(1, steps // 4), {**plan, "steps": max(1, steps // 4)}

    monkeypatch.setattr(Trainer, "_calibrate", quarter)


def test_a_budget_run_replans_after_its_first_epoch_and_replays_bit_identically(tmp_path, monkeypatch):
    _misjudged_calibration(monkeypatch)
    over = {**TENSOR, "schedule.budget_s": 4.0, "schedule.name": "cosine", "run.name": "budget"}
    res = fit(te.toy_config(tmp_path, **over), train_data=te.toy_data(64), valid_data=te.toy_data(16, 1))
    rec = json.loads((tmp_path / "budget" / "run.json").read_text())
    plan, spe = rec["budget"], 8
    first, steps, replan = plan["first_steps"], plan["steps"], plan["replan"]
    # a toy step costs more in an epoch than in the calibration's loop (per-epoch work weighs on 8 steps), but
    # not 4x: the plan grows
    assert steps > first and res.steps == rec["planned_steps"] == steps == res.history[-1]["step"]
    assert plan["epochs"] == math.ceil(steps / spe) == len(res.history)
    # the re-plan's own arithmetic: the steps and validations left, at the first epoch's measured costs, fill the
    # seconds it had left to within a step
    assert replan["seconds_left"] == pytest.approx(
        4.0 - plan["calibration_seconds"] - res.history[0]["elapsed_seconds"]
    )
    predicted = (steps - spe) * replan["step_seconds"] + (plan["epochs"] - 1) * replan["validation_seconds"]
    assert abs(predicted - replan["seconds_left"]) <= 2 * (replan["step_seconds"] + replan["validation_seconds"])
    assert res.history[-1]["lr"] < 0.01 * res.history[0]["lr"]  # the cosine still ends at the plan's last step
    again = {**over, "schedule.budget_s": None, "schedule.steps": steps, "schedule.first_steps": first}
    replay = fit(
        te.toy_config(tmp_path, **{**again, "run.name": "replay"}),
        train_data=te.toy_data(64),
        valid_data=te.toy_data(16, 1),
    )
    assert te.weights_digest(replay.model) == te.weights_digest(res.model)
    drop = ("epoch_seconds", "samples_per_second", "elapsed_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in replay.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in res.history
    ]
    with pytest.raises(ConfigError, match="first_steps"):
        fit(te.toy_config(tmp_path, **{"schedule.first_steps": 5, "run.name": "bad"}), train_data=te.toy_data(16))


def test_contradictory_plans_are_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="give one"):
        fit(te.toy_config(tmp_path, **{"schedule.steps": 5, "schedule.budget_s": 3.0}), train_data=te.toy_data(16))
    with pytest.raises(ConfigError, match="warmup_fraction"):
        fit(te.toy_config(tmp_path, **{"schedule.warmup_fraction": 1.5}), train_data=te.toy_data(16))


def test_same_seed_same_step_plan_same_metrics_on_the_tensor_pipeline(tmp_path):
    def run(name, seed):
        cfg = te.toy_config(tmp_path, **{**TENSOR, "schedule.steps": 9, "run.name": name, "run.seed": seed})
        return fit(cfg, train_data=te.toy_data(40), valid_data=te.toy_data(14, 1))

    a, b, c = run("a", 0), run("b", 0), run("c", 1)
    assert te.weights_digest(a.model) == te.weights_digest(b.model) != te.weights_digest(c.model)
    assert [r["valid_accuracy"] for r in a.history] == [r["valid_accuracy"] for r in b.history]


KILL = """
import os, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import toys as te
import toys_plugin  # noqa: F401  (registers the toy model and loss)
from fernb.engine import Callback, fit

class Kill(Callback):
    def on_step_end(self, trainer, logs):
        if logs["step"] == {kill_step}:
            os._exit(3)

cfg = te.toy_config(Path({out!r}), **{over!r})
fit(cfg, train_data=te.toy_data(40), valid_data=te.toy_data(14, 1), callbacks=[Kill()])
"""


def _kill(tmp_path: Path, over: dict, kill_step: int) -> None:
    script = tmp_path / "kill.py"
    script.write_text(KILL.format(tests=str(TESTS), out=str(tmp_path), over=over, kill_step=kill_step))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]


def test_killed_budget_run_on_the_tensor_pipeline_resumes_to_the_uninterrupted_plan(tmp_path):
    """A budget run killed mid-epoch keeps its step plan; resumed, it ends bit-identical to an uninterrupted run
    given that plan as schedule.steps (same augmentation batch by batch, same schedule)."""
    over = {
        **TENSOR,
        "schedule.budget_s": 3.0,
        "schedule.name": "cosine",
        "run.checkpoint_every_steps": 3,
        "run.name": "cut",
    }
    _kill(tmp_path, over, kill_step=7)
    _, meta, state = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last")
    assert meta["step"] == 6 and meta["batch"] == 1
    steps, first = state["plan"]["steps"], state["plan"]["budget"].get("first_steps")
    resumed = fit(
        te.toy_config(tmp_path, **{**over, "run.resume": True}),
        train_data=te.toy_data(40),
        valid_data=te.toy_data(14, 1),
    )
    plain = fit(
        te.toy_config(
            tmp_path,
            **{
                **TENSOR,
                "schedule.steps": steps,
                "schedule.first_steps": first,
                "schedule.name": "cosine",
                "run.name": "plain",
            },
        ),
        train_data=te.toy_data(40),
        valid_data=te.toy_data(14, 1),
    )
    assert resumed.steps == plain.steps == steps
    assert te.weights_digest(resumed.model) == te.weights_digest(plain.model)
    drop = ("epoch_seconds", "samples_per_second", "elapsed_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in plain.history
    ]


# -- optimiser ---------------------------------------------------------------------------------------------------------
def test_decay_off_norms_biases_and_what_the_model_exempts():
    from fernb.engine import OptimConfig, build_optimizer
    from fernb.models import create_model

    model = create_model("resnet18", "tiny", num_classes=7)
    model.no_weight_decay = lambda: {"fc"}
    opt = build_optimizer(model, OptimConfig(name="adamw", weight_decay=0.05, decay_norm_bias=False))
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    expected = {id(p) for n, p in model.named_parameters() if p.ndim > 1 and not n.startswith("fc.")}
    assert decay == expected and len(expected) > 10
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    plain = build_optimizer(model, OptimConfig(name="adamw", weight_decay=0.05))
    assert all(g["weight_decay"] == 0.05 for g in plain.param_groups)


# -- the recipe -------------------------------------------------------------------------------------------------------
def test_budget_recipe_fields_and_what_replaces_its_time_budget():
    cfg = config_from_preset("resnet18/ferplus@budget")
    assert cfg.preset == "resnet18/ferplus@budget" and cfg.data.pipeline == "tensor"
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.decay_norm_bias) == (
        "adamw",
        3e-3,
        0.05,
        False,
    )
    assert cfg.schedule.name == "cosine" and cfg.schedule.warmup_fraction == 0.05 and cfg.schedule.budget_s == 480
    assert cfg.loss.kwargs["label_smoothing"] == 0.1 and cfg.model.kwargs["stem_stride"] == 1
    real = build_batch_transform(cfg, train=True)  # the warp, without random erasing
    assert (real.degrees, real.scale, real.translate, real.hflip, real.erase_p) == (10.0, (0.9, 1.1), 0.1, 0.5, 0.0)
    synthetic = build_batch_transform(config_from_preset("resnet18/synthetic@budget"), train=True)
    assert (synthetic.degrees, synthetic.translate, synthetic.erase_p) == (5.0, 0.05, 0.0)
    assert config_from_preset("resnet18/ferplus", recipe="budget").to_dict() == cfg.to_dict()
    assert config_from_preset("resnet18/ferplus@budget", schedule__steps=50).schedule.budget_s is None
    assert config_from_preset("resnet18/ferplus@budget", schedule__epochs=3).schedule.budget_s is None
    assert config_from_preset("resnet18/ferplus@budget", smoke=True).schedule.budget_s is None
    assert config_from_preset("resnet18/ferplus").data.pipeline == "pil"
    with pytest.raises(KeyError, match="recipe"):
        config_from_preset("resnet18/ferplus@fast")


@pytest.mark.parametrize("method", ["resnet18", "arm", "adcorre", "esr", "manet", "poster_v2", "arbex"])
def test_every_method_trains_a_few_steps_with_its_budget_recipe(tmp_path, method):
    steps = 9 if method == "esr" else 3  # ESR's two smoke stages take one epoch (8 steps) each at least
    size = budget_overrides(method, "ferplus")["data.img_size"]  # the recipe's size on 48 px data, not smoke's
    cfg = config_from_preset(
        f"{method}/synthetic@budget",
        smoke=True,
        data__pipeline="tensor",
        schedule__steps=steps,
        run__out_dir=str(tmp_path),
        run__quiet=True,
        run__threads=1,
        data__batch_size=16,
        data__img_size=size,
    )
    res = fit(cfg)
    assert res.steps == steps and np.isfinite(res.history[-1]["train_loss"])
    rec = json.loads((res.run_dir / "run.json").read_text())
    assert rec["preset"] == f"{method}/synthetic@budget"


def test_budget_models_by_face_size():
    assert budget_overrides("manet", "ferplus")["model.kwargs"] == {"stem": "small", "stem_stride": 2}
    assert budget_overrides("manet", "synthetic")["model.kwargs"] == {}  # 64 px: the tiny preset's ImageNet stem
    assert budget_overrides("resnet18", "ferplus")["model.kwargs"] == {"stem_stride": 1}
    assert budget_overrides("resnet18", "synthetic")["model.kwargs"] == {"stem_stride": 2}
    arbex = budget_overrides("arbex", "synthetic")["model.kwargs"]
    assert arbex["backbone_kwargs"]["stem_stride"] == 2 and arbex["backbone"] == "resnet18"


@pytest.mark.parametrize("method", sorted(BUDGET_STEPS["synthetic"]))
def test_the_synthetic_budget_recipe_trains_a_fixed_step_plan(method: str):
    cfg = config_from_preset(f"{method}/synthetic@budget")
    assert (cfg.schedule.steps, cfg.schedule.budget_s) == (BUDGET_STEPS["synthetic"][method], None)
    # the plans were measured at the recipe's lr 3e-3, as on FER+; POSTER_V2 keeps its own
    assert cfg.optim.lr == (5e-4 if method == "poster_v2" else 3e-3)
    assert config_from_preset(f"{method}/ferplus@budget").optim.lr == (5e-4 if method == "poster_v2" else 3e-3)


def test_a_given_budget_or_epochs_replaces_the_step_plan_and_given_steps_replace_the_budget():
    assert config_from_preset("arbex/synthetic@budget", schedule__budget_s=60).schedule.steps is None
    assert config_from_preset("arbex/synthetic@budget", schedule__budget_s=60).schedule.budget_s == 60
    by_epochs = config_from_preset("arbex/synthetic@budget", schedule__epochs=3).schedule
    assert (by_epochs.steps, by_epochs.budget_s, by_epochs.epochs) == (None, None, 3)
    assert config_from_preset("arbex/synthetic@budget", schedule__steps=7).schedule.steps == 7
    assert config_from_preset("arbex/ferplus@budget", schedule__steps=7).schedule.budget_s is None


@pytest.mark.parametrize(
    ("preset", "item", "expected"),
    [
        ("resnet18/synthetic@budget", "schedule.budget_s=60", {"steps": None, "budget_s": 60.0}),
        ("resnet18/synthetic@budget", "schedule.epochs=2", {"steps": None, "budget_s": None}),
        ("resnet18/ferplus@budget", "schedule.steps=50", {"steps": 50, "budget_s": None}),
    ],
)
def test_the_cli_keeps_the_length_the_user_asked_for(capsys, preset: str, item: str, expected: dict):
    from fernb.engine.cli import train_main

    assert train_main([preset, item, "--print-config"]) == 0
    schedule = yaml.safe_load(capsys.readouterr().out)["schedule"]
    assert {k: schedule[k] for k in expected} == expected
