"""SCN: the model and loss against the official ``Res18Feature`` and training step (``tests/data/fidelity/scn.pt``),
the relabel table as training state, the checkpoint conversions, and a few steps through the engine.

The fixture holds no weights: they are rebuilt from its manifest (official key names) by ``shared/fidelity/recipe.py``
and loaded through fernb's converter, so the fidelity tests skip where ``../shared`` is absent. Tolerances follow
``shared/fidelity/README.md``: rtol 1e-5, atol 1e-5 * max(1, max|ref|). How the fixture was made: ``docs/specs/scn.md``
§5.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fidelity import close, load_recipe, make_state_dict

from fernb.losses import StepInfo, create_loss
from fernb.losses.scn import SCNLoss, rank_regularisation
from fernb.models import create_model
from fernb.models._weights import load_checkpoint
from fernb.models.scn import SCN, SCNOutput

FIXTURE = Path(__file__).parent / "data" / "fidelity" / "scn.pt"
STEPS = ["epoch10_margins_default", "epoch10_margin2_small", "epoch9_before_relabel", "epoch10_margin1_007"]


# ------------------------------------------------------------------------------------------------ fidelity


@pytest.fixture(scope="module")
def fx(fidelity_dir):
    recipe = load_recipe(fidelity_dir)
    data = torch.load(FIXTURE, weights_only=True)
    sd = make_state_dict(recipe, data["manifest"])
    assert recipe.check_state_dict(data["manifest"], sd) == []
    rec = data["inputs"]["x"]
    pixels = recipe.make_pixels(rec["shape"], rec["seed"])
    assert hashlib.sha256(pixels.numpy().tobytes()).hexdigest() == rec["pixels_sha256"]
    return data, sd, recipe.make_input(rec["shape"], rec["seed"], rec["mean"], rec["std"])


def _official_model(sd: dict) -> tuple[SCN, object]:
    model = create_model("scn", "official", num_classes=7)
    return model, load_checkpoint(model, sd)


@pytest.mark.shared
def test_official_checkpoint_converts_with_every_key(fx):
    data, sd, _ = fx
    _, report = _official_model(sd)
    assert report.ok and report.converted_from.startswith("official SCN")
    assert len(report.loaded) == len(data["manifest"]) and not report.dropped


@pytest.mark.shared
def test_eval_logits_alpha_and_embedding_match_the_official_model(fx):
    data, sd, x = fx
    model = _official_model(sd)[0].eval()
    with torch.no_grad():
        out = model(x)
    ref = data["outputs"]["eval"]
    assert isinstance(out, SCNOutput)
    close(out.logits, ref["logits"])
    close(out.alpha, ref["alpha"])
    close(out.class_logits, ref["class_logits"])
    close(out.embedding, ref["pooled"])


@pytest.mark.shared
@pytest.mark.parametrize("step", STEPS)
def test_training_step_loss_gradients_and_relabels_match_the_official_step(fx, step: str):
    data, sd, x = fx
    ref = data["outputs"]["train_steps"][step]
    s = ref["settings"]
    inputs = data["inputs"]
    model = _official_model(sd)[0].train()  # the official step runs in train mode (BN batch statistics)
    loss_fn = SCNLoss(beta=s["beta"], margin_rank=s["margin_1"], margin_relabel=s["margin_2"], relabel_epoch=10)
    out = model(x)
    lo = loss_fn(out, inputs["y"], info=StepInfo(epoch=int(s["epoch"]) - 1), index=inputs["index"])
    lo.total.backward()
    close(out.logits, ref["outputs"])
    close(out.alpha, ref["alpha"])
    close(lo.total, ref["loss_total"])
    close(lo.terms["rank"], ref["loss_rank"])
    close(lo.terms["ce"], ref["loss_ce"])
    grads = dict(model.named_parameters())
    for official, ours in (("alpha.0", "importance.fc"), ("fc", "fc")):
        for p in ("weight", "bias"):
            close(grads[f"{ours}.{p}"].grad, ref["grads"][f"{official}.{p}"])
    # the official step rewrote train_loader.dataset.label; the loss's table gives the same labels
    assert torch.equal(loss_fn.current_labels(inputs["dataset_labels"]), ref["labels_after"])


@pytest.mark.shared
def test_the_fixture_covers_relabelled_kept_and_untouched_samples(fx):
    data, _, _ = fx
    inputs, steps = data["inputs"], data["outputs"]["train_steps"]
    before = inputs["dataset_labels"][inputs["index"]]
    after = steps["epoch10_margins_default"]["labels_after"][inputs["index"]]
    changed = int((after != before).sum())
    assert 0 < changed < len(before)  # some samples relabelled, some kept, at margin 0.2
    assert torch.equal(steps["epoch9_before_relabel"]["labels_after"], inputs["dataset_labels"])
    assert float(steps["epoch10_margins_default"]["loss_rank"]) > 0  # the rank term is active


# ------------------------------------------------------------------------------------------------ the loss


class _Out:
    def __init__(self, logits: torch.Tensor, alpha: torch.Tensor) -> None:
        self.logits, self.alpha = logits, alpha


def test_rank_regularisation_is_the_margin_between_the_group_means():
    alpha = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.3, 0.6, 0.2, 0.8, 0.4, 0.55])  # k = int(10 * 0.7) = 7
    loss, gap = rank_regularisation(alpha, beta=0.7, margin=0.5)
    s = alpha.sort(descending=True).values
    assert torch.isclose(gap, s[:7].mean() - s[7:].mean())
    assert torch.isclose(loss, torch.relu(0.5 - gap))
    assert float(rank_regularisation(alpha, 0.7, 0.1)[0]) == 0.0  # groups already further apart than the margin
    assert float(rank_regularisation(torch.tensor([0.4]), 0.7, 0.15)[0]) == 0.0  # one group empty: 0, as official


def test_relabelling_waits_for_its_epoch_or_its_share_of_training():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    out, y, index = _Out(logits, torch.full((2, 1), 0.5)), torch.tensor([2, 1]), torch.tensor([3, 0])
    by_epoch = SCNLoss(relabel_epoch=10)
    by_epoch(out, y, info=StepInfo(epoch=8), index=index)
    assert by_epoch.relabels.numel() == 0
    lo = by_epoch(out, y, info=StepInfo(epoch=9), index=index)  # the 10th epoch, 1-based as the official i
    assert by_epoch.relabels.tolist() == [-1, -1, -1, 0] and float(lo.terms["relabelled"]) == 0.5
    by_share = SCNLoss(relabel_epoch=None, relabel_progress=0.5)
    by_share(out, y, info=StepInfo(epoch=50, progress=0.4), index=index)
    assert by_share.relabels.numel() == 0
    by_share(out, y, info=StepInfo(progress=0.5), index=index)
    assert by_share.current_labels(torch.tensor([1, 1, 1, 2])).tolist() == [1, 1, 1, 0]


def test_relabelled_labels_train_from_the_next_visit():
    loss_fn = SCNLoss(relabel_epoch=1)
    sure = _Out(torch.tensor([[5.0, 0.0, 0.0]]), torch.ones(1, 1))
    first = loss_fn(sure, torch.tensor([2]), index=torch.tensor([4]))
    second = loss_fn(sure, torch.tensor([2]), index=torch.tensor([4]))  # the dataset still says 2; the table says 0
    assert float(second.terms["ce"]) < 0.1 < float(first.terms["ce"])


def test_low_scope_relabels_only_the_low_importance_group():
    logits = torch.tensor([[5.0, 0.0]] * 4)
    alpha = torch.tensor([[0.9], [0.2], [0.8], [0.1]])  # k = int(4 * 0.5) = 2: samples 1 and 3 are the low group
    y, index = torch.ones(4, dtype=torch.long), torch.arange(4)
    every = SCNLoss(beta=0.5, relabel_epoch=1)
    every(_Out(logits, alpha), y, index=index)
    low = SCNLoss(beta=0.5, relabel_epoch=1, relabel_scope="low")
    low(_Out(logits, alpha), y, index=index)
    assert every.relabels.tolist() == [0, 0, 0, 0] and low.relabels.tolist() == [-1, 0, -1, 0]


def test_the_relabel_table_is_training_state_that_a_fresh_loss_restores():
    loss_fn = create_loss("scn", relabel_epoch=1)
    out = _Out(torch.tensor([[0.0, 6.0, 0.0], [6.0, 0.0, 0.0]]), torch.full((2, 1), 0.7))
    loss_fn(out, torch.tensor([0, 0]), index=torch.tensor([7, 2]))
    state = loss_fn.state_dict()
    assert state["relabels"].tolist() == [-1, -1, -1, -1, -1, -1, -1, 1]
    restored = create_loss("scn", relabel_epoch=1)
    restored.load_state_dict(state)  # an empty table grows to the checkpoint's length
    given = torch.zeros(8, dtype=torch.long)
    assert torch.equal(restored.current_labels(given), loss_fn.current_labels(given))


def test_without_indices_relabelling_is_skipped_with_one_warning():
    loss_fn = SCNLoss(relabel_epoch=1)
    out = _Out(torch.tensor([[6.0, 0.0]]), torch.ones(1, 1))
    with pytest.warns(UserWarning, match="no sample indices"):
        loss_fn(out, torch.tensor([1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_fn(out, torch.tensor([1]))  # said once
    assert loss_fn.relabels.numel() == 0


class _TwoRanks:
    """torch.distributed as seen by rank 0 of 2, the other rank relabelling ``other`` (index, label) pairs."""

    def __init__(self, other: tuple[list[int], list[int]]) -> None:
        self.other = torch.tensor(other, dtype=torch.long)

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def get_world_size(self) -> int:
        return 2

    def all_gather(self, out: list[torch.Tensor], mine: torch.Tensor) -> None:
        if mine.ndim == 1:  # the update counts
            theirs = torch.tensor([self.other.shape[1]])
        else:  # the padded (index, label) updates
            theirs = torch.full_like(mine, -1)
            theirs[:, : self.other.shape[1]] = self.other
        out[0].copy_(mine)
        out[1].copy_(theirs)


def test_ddp_processes_share_their_relabels_and_the_later_process_wins_a_tie(monkeypatch):
    import fernb.losses.scn as scn_loss

    monkeypatch.setattr(scn_loss, "torch_dist", _TwoRanks(([5, 1], [0, 3])))
    loss_fn = SCNLoss(relabel_epoch=1)
    out = _Out(torch.tensor([[0.0, 0.0, 6.0]]), torch.ones(1, 1))
    loss_fn(out, torch.tensor([0]), index=torch.tensor([1]))  # this process: sample 1 -> class 2
    assert loss_fn.relabels.tolist() == [-1, 3, -1, -1, -1, 0]


@pytest.mark.parametrize(
    "kwargs",
    [{"beta": 1.0}, {"margin_rank": -0.1}, {"relabel_epoch": 0}, {"relabel_progress": 1.5}, {"relabel_scope": "all"}],
)
def test_bad_settings_are_refused(kwargs: dict):
    with pytest.raises(ValueError):
        SCNLoss(**kwargs)


def test_loss_trains_the_tiny_model_forward_and_backward(device: torch.device):
    torch.manual_seed(0)
    model = create_model("scn", "tiny").to(device).train()
    x = torch.rand(8, 3, 48, 48, device=device)
    lo = create_loss("scn", relabel_epoch=1).to(device)(
        model(x), torch.arange(8, device=device) % 8, index=torch.arange(8)
    )
    lo.total.backward()
    assert torch.isfinite(lo.total) and set(lo.terms) == {"ce", "rank", "alpha_gap", "relabelled"}
    assert model.importance.fc.weight.grad is not None and model.backbone.conv1.weight.grad is not None


# ------------------------------------------------------------------------------------------------ checkpoints


def _as_torchvision(model: SCN) -> dict[str, torch.Tensor]:
    return {k[len("backbone.") :]: v.clone() for k, v in model.state_dict().items() if k.startswith("backbone.")}


def test_a_torchvision_resnet18_fills_the_trunk_and_its_classifier_is_dropped():
    model = create_model("scn", "tiny")
    sd = {
        **_as_torchvision(create_model("scn", "tiny")),
        "fc.weight": torch.zeros(1000, 128),
        "fc.bias": torch.zeros(1000),
    }
    with pytest.warns(UserWarning, match="4 missing"):
        report = load_checkpoint(model, sd, strict=False)
    assert report.converted_from == "torchvision ResNet-18" and set(report.dropped) == {"fc.weight", "fc.bias"}
    assert set(report.missing) == {"importance.fc.weight", "importance.fc.bias", "fc.weight", "fc.bias"}
    assert torch.equal(model.backbone.conv1.weight, sd["conv1.weight"])


def test_the_ms_celeb_resnet18_loads_without_its_embedding_and_identity_layers():
    model = create_model("scn", "tiny")
    trunk = {f"module.{k}": v for k, v in _as_torchvision(create_model("scn", "tiny")).items()}
    extra = {"module.feature.weight": torch.zeros(256, 128), "module.feature.bias": torch.zeros(256)}
    ids = {"module.fc.weight": torch.zeros(100, 256), "module.fc.bias": torch.zeros(100)}
    with pytest.warns(UserWarning, match="4 missing"):
        report = load_checkpoint(model, {**trunk, **extra, **ids}, strict=False)
    assert report.converted_from.startswith("MS-Celeb-1M")
    assert set(report.dropped) == {"feature.weight", "feature.bias", "fc.weight", "fc.bias"}
    assert not report.unexpected and len(report.loaded) == len(trunk)


# ------------------------------------------------------------------------------------------------ engine


def test_presets_carry_the_official_recipe_and_the_budget_does_not_relabel():
    from fernb.engine import config_from_preset

    cfg = config_from_preset("scn/rafdb")
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("adam", 1e-3, 1e-4)
    assert (cfg.schedule.name, cfg.schedule.gamma, cfg.schedule.epochs, cfg.data.batch_size) == (
        "exponential",
        0.9,
        70,
        64,
    )
    assert cfg.loss.kwargs == {"beta": 0.7, "margin_rank": 0.07, "margin_relabel": 0.2, "relabel_epoch": 10}
    budget = config_from_preset("scn/ferplus@budget")
    assert budget.model.kwargs == {"stem_stride": 1} and budget.loss.kwargs["relabel_epoch"] is None
    assert budget.loss.kwargs["relabel_progress"] is None  # the budget recipe does not relabel (presets)
    SCNLoss(**budget.loss.kwargs)  # every recipe key is a loss argument


def test_budget_recipe_trains_saves_and_loads_through_the_engine(tmp_path):
    from fernb.engine import config_from_preset, fit, load_run
    from fernb.engine.checkpoint import load_checkpoint

    cfg = config_from_preset(
        "scn/synthetic@budget",
        smoke=True,
        schedule__steps=3,
        run__out_dir=str(tmp_path),
        run__quiet=True,
        run__threads=1,
        run__precision="fp32",
        data__batch_size=16,
        data__img_size=48,
        loss__kwargs={"relabel_progress": 0.0, "margin_relabel": 0.0},  # relabel every misclassified sample
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the engine passes the batch's indices: no "no index" warning
        res = fit(cfg)
    assert res.steps == 3 and np.isfinite(res.history[-1]["train_loss"]) and "train_rank" in res.history[-1]
    assert res.history[-1]["train_relabelled"] > 0
    _, _, state = load_checkpoint(res.run_dir / "checkpoints" / "last")
    relabels = state["loss"]["relabels"]  # the table is training state: a resumed run continues from it
    assert (relabels >= 0).any()
    rec = json.loads((res.run_dir / "run.json").read_text())
    assert rec["preset"] == "scn/synthetic@budget" and rec["status"] == "completed"
    _, model, _ = load_run(res.run_dir)
    assert isinstance(model, SCN)
    for k, v in res.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v.cpu(), rtol=0, atol=0)
