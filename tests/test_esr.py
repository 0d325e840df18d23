"""ESR-9 and the Diversified ESR against the official outputs in ``shared/fidelity/{esr9,diversified_esr9}.pt``.

Weights are rebuilt from the manifests (official names), also written in the official one-file-per-branch layout,
and loaded through fernb's converter. Tolerances: ``shared/fidelity/README.md`` (integer outputs exactly).
"""

from __future__ import annotations

import pytest
import torch
from fidelity import close, load_fixture

from fernb.losses import create_loss
from fernb.models import create_model
from fernb.models._weights import CheckpointMismatchError, load_checkpoint
from fernb.models.esr import read_official_esr

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def esr9(fidelity_dir, tmp_path_factory):
    data, sd, x = load_fixture(fidelity_dir, "esr9.pt")
    folder = tmp_path_factory.mktemp("esr9")  # the official per-file layout
    torch.save(
        {k[len("base.") :]: v for k, v in sd.items() if k.startswith("base.")},
        folder / "Net-Base-Shared_Representations.pt",
    )
    for i in range(9):
        pre = f"convolutional_branches.{i}."
        torch.save({k[len(pre) :]: v for k, v in sd.items() if k.startswith(pre)}, folder / f"Net-Branch_{i + 1}.pt")
    model = create_model("esr", "official", checkpoint=folder).eval()  # the release folder itself
    sig: dict[str, torch.Tensor] = {}
    hook = model.base.register_forward_hook(lambda m, i, o: sig.__setitem__("shared", o.mean((2, 3))))
    with torch.no_grad():
        out = model(x)
    hook.remove()
    return data, sd, x, model, out, sig, folder


def test_official_release_folder_loads_with_a_full_key_report(esr9):
    data, sd, _, model, _, _, folder = esr9
    assert model.num_active_branches == 9
    report = load_checkpoint(create_model("esr", "official"), folder)
    assert report.ok and report.source == str(folder) and report.converted_from.startswith("official ESR")
    assert len(report.loaded) == len(data["manifest"]) + 1  # + the active-branch buffer
    flat = load_checkpoint(create_model("esr", "official"), sd)  # the flat official naming of the manifest
    assert flat.ok and sorted(flat.loaded) == sorted(report.loaded)
    assert read_official_esr(folder, max_branches=2).keys() >= {"convolutional_branches.1.fc.weight"}


def test_a_folder_that_is_not_an_esr_release_is_refused_by_name(esr9, tmp_path):
    folder = esr9[-1]
    (tmp_path / "weights.pt").write_bytes((folder / "Net-Branch_1.pt").read_bytes())
    with pytest.raises(
        CheckpointMismatchError,
        match=r"not an official ESR release.*Net-Base-Shared_Representations"
        r"\.pt and Net-Branch_1\.pt.*holds weights\.pt",
    ):
        create_model("esr", "official", checkpoint=tmp_path)
    with pytest.raises(CheckpointMismatchError, match="is a folder, but ResNet checkpoints are single files"):
        create_model("resnet18", checkpoint=tmp_path)


def test_branch_logits_affect_and_shared_signature_match(esr9):
    data, _, _, _, out, sig, _ = esr9
    ref = data["outputs"]
    close(out.branch_logits, ref["emotions"])
    close(out.affect, ref["affect"])
    close(sig["shared"], ref["signatures"]["shared_representation"])


def test_plurality_votes_match_exactly(esr9):
    data, _, _, _, out, _, _ = esr9
    assert torch.equal(out.vote_counts, data["outputs"]["vote_counts"].long())


def test_training_script_evaluate_losses_and_counts_match(esr9):
    data, _, _, _, out, _, _ = esr9
    extra = data["extra"]["training_ensemble_main_fer_plus"]
    y = extra["labels"]
    res = create_loss("esr")(out, y)
    per_branch = torch.stack([res.terms[f"ce_branch{i}"] for i in range(9)])
    close(per_branch, extra["per_branch_ce_loss"])
    counts = [int((out.branch_logits[i].argmax(1) == y).sum()) for i in range(9)] + [int((out.vote == y).sum())]
    assert counts == extra["correct_counts_per_branch_then_ensemble"].tolist()


@pytest.fixture(scope="module")
def div_esr9(fidelity_dir):
    data, sd, x = load_fixture(fidelity_dir, "diversified_esr9.pt")
    model = create_model("esr", "official", diversity=True).eval()
    report = load_checkpoint(model, {f"module.{k}": v for k, v in sd.items()})  # DataParallel-style prefix
    with torch.no_grad():
        out = model(x)
    return data, report, out


def test_diversified_esr_converts_every_key(div_esr9):
    data, report, _ = div_esr9
    assert report.ok and len(report.loaded) == len(data["manifest"]) + 1


def test_diversified_esr_logits_and_attention_heads_match(div_esr9):
    data, _, out = div_esr9
    ref = data["outputs"]
    close(out.branch_logits, ref["emotions"])
    close(out.attn_spatial, ref["attn_sp"])
    close(out.attn_channel, ref["attn_ch"])


def test_diversified_esr_official_loss_terms_match(div_esr9):
    from fernb.losses.diversity import diversity

    data, _, out = div_esr9
    ref = data["outputs"]
    for kind, heads in (("spatial", out.attn_spatial), ("channel", out.attn_channel)):
        res = diversity(heads, "official")
        for key in ("direct_div", "det_div", "logdet_div"):
            close(getattr(res, key), ref[f"div_{kind}"][key], equal_nan=True)
    loss = create_loss("esr", diversity_form="official")(out, data["inputs"]["y"])
    close(loss.terms["ce"], ref["loss_ce_sum"])
    close(loss.total, ref["loss_total"])
