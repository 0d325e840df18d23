"""ONNX export (every registered model, checked against ONNX Runtime), the model card, and scoring a checkpoint file
without a run folder (``python -m fernb evaluate --model ... --checkpoint FILE``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fernb.engine import config_from_preset, evaluate, fit
from fernb.engine.cli import evaluate_main, export_main
from fernb.engine.evaluate import evaluate_checkpoint
from fernb.engine.export import CARD_MARK, ExportError, export_onnx
from fernb.labels import get_label_space
from fernb.models import VARIANTS, create_model, list_models, parse_variant
from fernb.models._cbam import FastCBAM
from fernb.models._errors import CheckpointMismatchError

SCN_FIXTURE = Path(__file__).parent / "data" / "fidelity" / "scn.pt"
SMALL_SYNTHETIC = {"n": 400, "size": 64}  # the smoke runs' fallback data: a 58-image test split


@pytest.fixture(scope="module")
def onnx_tools() -> None:
    pytest.importorskip("onnx", reason="the export extra is not installed: pip install 'fernb[export]'")
    pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'fernb[export]'")


def tiny(spec: str, **kwargs) -> torch.nn.Module:
    name, flags = parse_variant(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init notices
        return create_model(name, "tiny", **flags, **kwargs)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ARBEx smoke run with one test evaluation (bootstrap intervals in its eval file)."""
    out = tmp_path_factory.mktemp("runs")
    cfg = config_from_preset("arbex/synthetic", smoke=True, run__name="arbex", run__out_dir=str(out), run__quiet=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit(cfg)
        evaluate(result.run_dir, "test", bootstrap=100)
    return Path(result.run_dir)


# -- export -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [*list_models(), *VARIANTS])
def test_every_model_exports_and_matches_onnxruntime(onnx_tools, spec: str, tmp_path: Path):
    model = tiny(spec).eval()
    result = export_onnx(model, tmp_path / f"{spec}.onnx", card=False, preset="tiny")
    assert result.path.is_file() and list(result.outputs) == ["logits"]
    assert result.check_batch == 4  # the export traced 2: the batch axis is dynamic
    assert result.max_abs_error["logits"] <= 1e-5, result.summary()
    assert result.ok
    assert not model.training


@pytest.mark.parametrize("spec", ["manet", "esr+diversity"])
def test_cbam_models_export_the_plain_path_and_keep_the_fast_one(onnx_tools, spec: str, tmp_path: Path):
    model = tiny(spec).eval()
    cbams = [m for m in model.modules() if isinstance(m, FastCBAM)]
    assert cbams, f"{spec} builds FastCBAM"
    result = export_onnx(model, tmp_path / "m.onnx", card=False)
    assert result.max_abs_error["logits"] <= 1e-5
    assert all("forward_attention" not in m.__dict__ for m in cbams)  # the fast path is back after export


def test_arbex_exports_its_named_outputs(onnx_tools, tmp_path: Path):
    import onnxruntime as ort

    model = tiny("arbex").eval()
    result = export_onnx(model, tmp_path / "arbex.onnx", extras=True, card=False)
    names = list(result.outputs)
    assert names[0] == "logits"
    for extra in ("embedding", "primary_dist", "confidence_primary", "anchor_dist", "attention_dist", "final_dist"):
        assert extra in names
    assert "anchors" not in names  # a parameter, not a per-sample output
    assert result.outputs["confidence_primary"] == ["B", 1]
    assert set(result.max_abs_error) == set(names) and result.ok
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == names
    with pytest.raises(ExportError, match="no per-sample output"):
        export_onnx(model, tmp_path / "x.onnx", extras=["not_an_output"], card=False)


def test_metadata_holds_the_input_spec_and_class_order(onnx_tools, run_dir: Path, tmp_path: Path):
    import onnxruntime as ort

    result = export_onnx(run_dir, tmp_path / "arbex.onnx")
    meta = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).get_modelmeta()
    props = meta.custom_metadata_map
    assert json.loads(props["fernb.class_names"]) == list(get_label_space("basic7").names)
    assert json.loads(props["fernb.input_size"]) == [3, 48, 48]
    assert json.loads(props["fernb.mean"]) == pytest.approx([0.485, 0.456, 0.406])
    assert json.loads(props["fernb.outputs"]) == ["logits"]


def test_model_card_is_filled_from_the_run(onnx_tools, run_dir: Path, tmp_path: Path):
    result = export_onnx(run_dir, tmp_path / "out" / "arbex.onnx")
    assert result.card == tmp_path / "out" / "README.md"
    card = result.card.read_text()
    assert card.startswith(CARD_MARK)
    for heading in ("## Input", "## Outputs", "## Data", "### Face detection and alignment", "## Protocol"):
        assert heading in card
    for heading in ("## Recipe", "## Metrics", "## Export check"):
        assert heading in card
    assert "(B, 3, 48, 48)" in card and "[0.485, 0.456, 0.406]" in card and "[0.229, 0.224, 0.225]" in card
    assert "0. neutral" in card and "6. angry" in card
    assert "used as the dataset gives them" in card
    assert "synthetic faces" in card
    assert "| synthetic/test | best |" in card
    record = json.loads((run_dir / "run.json").read_text())
    ev = json.loads((run_dir / "eval" / "synthetic-test-best.json").read_text())
    ci = ev["ci"]["accuracy"]
    assert f"{100 * ev['accuracy']:.1f} [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]" in card
    assert record["environment"]["git"]["commit"] in card or "commit `None`" in card
    assert "max abs error" in card and "adam" in card


def test_model_card_reports_the_alignment_of_the_run(onnx_tools, run_dir: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    record = json.loads((copy / "run.json").read_text())
    record["data"]["align"] = {"detector": "haar", "template": "arcface-112", "size": 112}
    (copy / "run.json").write_text(json.dumps(record))
    card = export_onnx(copy, tmp_path / "out" / "m.onnx").card
    assert card is not None
    text = card.read_text()
    assert '- detector: `"haar"`' in text and '- template: `"arcface-112"`' in text
    assert "used as the dataset gives them" not in text


def test_a_foreign_readme_is_never_replaced(onnx_tools, run_dir: Path, tmp_path: Path):
    (tmp_path / "README.md").write_text("my project\n")
    result = export_onnx(run_dir, tmp_path / "arbex.onnx")
    assert (tmp_path / "README.md").read_text() == "my project\n"
    assert result.card == tmp_path / "arbex.card.md"


def test_export_command_prints_the_check(onnx_tools, run_dir: Path, tmp_path: Path, capsys):
    assert export_main([str(run_dir), "--onnx", str(tmp_path / "a.onnx"), "--extras"]) == 0
    out = capsys.readouterr().out
    assert "ONNX Runtime check on a batch of 4: max abs error logits" in out and ": ok" in out
    assert "prediction_dist" in out and "model card:" in out
    assert export_main(["--model", "resnet18", "--preset", "tiny", "--onnx", str(tmp_path / "r.onnx")]) == 0
    assert "Unknown: exported from a model" in (tmp_path / "README.md").read_text()


# -- scoring a checkpoint file without a run --------------------------------------------------------------------


def test_evaluate_a_state_dict_without_a_run(tmp_path: Path, capsys):
    model = tiny("resnet18", num_classes=7)
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    save_file(model.state_dict(), str(tmp_path / "r18.safetensors"))
    m = evaluate_checkpoint("resnet18", tmp_path / "r18.pth", "synthetic", preset="tiny", bootstrap=50)
    assert m["n"] > 0 and m["img_size"] == 48 and m["weights"]["loaded"] == len(model.state_dict())
    assert m["class_names"] == list(get_label_space("basic7").names) and "ci" in m
    again = evaluate_checkpoint("resnet18", tmp_path / "r18.safetensors", "synthetic", preset="tiny", bootstrap=0)
    assert again["accuracy"] == m["accuracy"] and again["confusion"] == m["confusion"]
    argv = ["--model", "resnet18", "--preset", "tiny", "--checkpoint", str(tmp_path / "r18.pth")]
    rc = evaluate_main([*argv, "--dataset", "synthetic", "--bootstrap", "0", "--out", str(tmp_path / "m.json")])
    assert rc == 0
    assert "accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == m["accuracy"]


def test_evaluate_an_official_layout_checkpoint_at_the_published_size(tmp_path: Path):
    """A file in the official SCN key layout (names and shapes from the fidelity fixture's manifest), converted on
    load and scored at the published 224 px."""
    manifest = torch.load(SCN_FIXTURE, weights_only=True)["manifest"]
    g = torch.Generator().manual_seed(0)
    sd = {}
    for e in manifest:
        if e["dtype"] == "int64":
            sd[e["key"]] = torch.zeros(e["shape"], dtype=torch.long)
        elif e["key"].endswith("running_var"):
            sd[e["key"]] = torch.rand(e["shape"], generator=g) + 0.5
        else:
            sd[e["key"]] = torch.randn(e["shape"], generator=g) * 0.05
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "scn_official.pth")  # wrapped, as released files often are
    m = evaluate_checkpoint("scn", tmp_path / "scn_official.pth", "synthetic", options=SMALL_SYNTHETIC, bootstrap=0)
    assert m["weights"]["converted_from"].startswith("official SCN")
    assert m["weights"]["loaded"] == len(manifest)
    assert m["img_size"] == 224 and m["preset"] == "official" and m["transform"] == "scn"
    assert m["n"] > 0


def test_evaluate_checkpoint_errors_name_the_problem(tmp_path: Path, capsys):
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        evaluate_checkpoint("resnet18", tmp_path / "missing.pth", "synthetic")
    torch.save(tiny("resnet18", num_classes=7).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(KeyError, match="registered models: .*resnet18"):
        evaluate_checkpoint("resnet19", tmp_path / "r18.pth", "synthetic")
    with pytest.raises(CheckpointMismatchError, match=r"(?s)r18\.pth.*missing in checkpoint.*check --model"):
        evaluate_checkpoint("scn", tmp_path / "r18.pth", "synthetic", preset="tiny")
    for argv, needle in (
        (["--checkpoint", str(tmp_path / "missing.pth")], "missing.pth does not exist"),
        (["--checkpoint", str(tmp_path / "r18.pth"), "--model", "resnet19"], "unknown model 'resnet19'"),
        (["--checkpoint", str(tmp_path / "r18.pth"), "--model", "scn"], "checkpoint does not match"),
    ):
        base = ["--model", "resnet18", "--preset", "tiny", "--dataset", "synthetic"]
        assert evaluate_main([*base, *argv]) == 2
        assert needle in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_main(["--model", "resnet18", "--dataset", "synthetic"])  # no --checkpoint FILE
    assert "--model needs --checkpoint FILE" in capsys.readouterr().err
