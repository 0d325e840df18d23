"""Faults a run must survive or refuse clearly: two writers of one run folder, ``--overwrite`` with a config that
fails, ``--resume`` with a changed config, a full disk, a read-only folder, out-of-range fields, unreadable files;
and the command line's one-line errors (no traceback without ``--debug``)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import toys as te
from PIL import Image

from fernb.engine import Callback, ConfigError, fit
from fernb.engine.checkpoint import CheckpointError, load_checkpoint
from fernb.engine.rundir import RunBusyError, RunDir, RunFileError, RunLock, RunWriteError, atomic_write_text
from fernb.errors import FernbError

SYNTH = {**te.SYNTH, "schedule.epochs": 2, "data.batch_size": 16}


def _toy(tmp_path: Path, **over):
    return te.toy_config(tmp_path, **{"schedule.epochs": 2, **over})


def _fit(cfg, **kw):
    return fit(cfg, train_data=te.toy_data(32), valid_data=te.toy_data(14, 1), **kw)


class _StopAt(Callback):
    """Interrupt training after optimiser step ``step`` (the last checkpoint is the previous epoch's end)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, logs):
        if logs["step"] == self.step:
            raise KeyboardInterrupt


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name or ".replaced-" in p.name)


# -- one writer per run folder ----------------------------------------------------------------------------------------
def test_a_run_folder_held_by_another_writer_is_refused_before_anything_is_written(tmp_path):
    with RunLock(tmp_path / "toy"):
        with pytest.raises(RunBusyError, match=f"pid {os.getpid()}"):
            _fit(_toy(tmp_path))
    assert not (tmp_path / "toy").exists()
    assert _fit(_toy(tmp_path)).stop_reason == "completed"  # released: the next run goes ahead


HOLD = """
import sys, time
from fernb.engine.rundir import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_writer_in_another_process_blocks_the_folder_until_it_dies(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "toy")], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(RunBusyError, match=f"pid {proc.pid}"):
            _fit(_toy(tmp_path))
    finally:
        proc.kill()
        proc.wait()
    # the owner died without releasing: the kernel dropped its lock, so no stale lock blocks the folder
    assert _fit(_toy(tmp_path)).stop_reason == "completed"


# -- overwrite --------------------------------------------------------------------------------------------------------
def test_overwrite_with_a_wrong_data_root_keeps_the_old_run(tmp_path):
    cfg = te.toy_config(tmp_path, **SYNTH)
    fit(cfg)
    before = (tmp_path / "toy" / "config.json").read_text()
    bad = {**SYNTH, "data.dataset": "ferplus", "data.root": str(tmp_path / "typo"), "run.overwrite": True}
    with pytest.raises(FernbError, match="typo"):
        fit(te.toy_config(tmp_path, **bad))
    assert (tmp_path / "toy" / "config.json").read_text() == before
    assert load_checkpoint(tmp_path / "toy" / "checkpoints" / "best")[1]["epoch"] >= 1
    assert _leftovers(tmp_path) == []


def test_overwrite_that_fails_in_its_first_epoch_puts_the_old_run_back(tmp_path):
    _fit(_toy(tmp_path))
    before = RunDir(tmp_path / "toy").read_metrics()
    nan = _toy(tmp_path, **{"run.overwrite": True, "loss.kwargs": {"nan_at": 1}})
    with pytest.warns(UserWarning, match="old run is back"), pytest.raises(FernbError, match="loss"):
        _fit(nan)
    assert RunDir(tmp_path / "toy").read_metrics() == before
    assert _leftovers(tmp_path) == []


def test_overwrite_replaces_the_old_run_once_the_new_one_has_run_an_epoch(tmp_path):
    _fit(_toy(tmp_path, **{"schedule.epochs": 3}))
    res = _fit(_toy(tmp_path, **{"run.overwrite": True}))
    assert len(RunDir(res.run_dir).read_metrics()) == 2
    assert json.loads((res.run_dir / "config.json").read_text())["schedule"]["epochs"] == 2
    assert _leftovers(tmp_path) == []


# -- resume with a changed config -------------------------------------------------------------------------------------
def _interrupted(tmp_path: Path, **over) -> None:
    with pytest.raises(KeyboardInterrupt):
        _fit(_toy(tmp_path, **{"schedule.epochs": 3, **over}), callbacks=[_StopAt(6)])  # 4 steps an epoch


@pytest.mark.parametrize(("key", "value"), [("optim.lr", 0.1), ("data.img_size", 24), ("loss.kwargs", {"nan_at": 99})])
def test_resume_refuses_a_change_that_alters_results(tmp_path, key, value):
    _interrupted(tmp_path)
    saved = (tmp_path / "toy" / "config.json").read_text()
    with pytest.raises(ConfigError, match=rf"(?s){key}.*allow-config-change"):
        _fit(_toy(tmp_path, **{"schedule.epochs": 3, "run.resume": True, key: value}))
    assert (tmp_path / "toy" / "config.json").read_text() == saved


def test_an_accepted_lr_change_on_resume_is_used_recorded_and_saved(tmp_path):
    _interrupted(tmp_path)
    seen: list[float] = []

    class BaseLr(Callback):
        def on_step_end(self, trainer, logs):
            seen.append(trainer.optimizer.param_groups[0]["base_lr"])

    over = {"schedule.epochs": 3, "run.resume": True, "run.allow_config_change": True, "optim.lr": 0.05}
    res = _fit(_toy(tmp_path, **over), callbacks=[BaseLr()])
    assert seen and set(seen) == {0.05}
    assert json.loads((res.run_dir / "config.json").read_text())["optim"]["lr"] == 0.05
    (change,) = RunDir(res.run_dir).read_record()["config_changes"]
    assert change["changes"]["optim.lr"] == {"old": 0.01, "new": 0.05} and "optim.lr" in change["changes_results"]


def test_resume_accepts_changes_that_do_not_alter_results(tmp_path):
    _interrupted(tmp_path)
    res = _fit(_toy(tmp_path, **{"schedule.epochs": 3, "run.resume": True, "run.checkpoint_every_steps": 2}))
    assert res.stop_reason == "completed"
    (change,) = RunDir(res.run_dir).read_record()["config_changes"]
    assert change["changes_results"] == []


# -- full disk, read-only folders, file modes -------------------------------------------------------------------------
def _failing_writes(monkeypatch, err: int, when) -> None:
    import fernb.engine.rundir as rundir

    real = rundir._write_temp

    def write(path: Path, data: bytes) -> str:
        if when(path):
            raise OSError(err, os.strerror(err))
        return real(path, data)

    monkeypatch.setattr(rundir, "_write_temp", write)


def test_a_full_disk_stops_the_run_with_a_clear_error_and_consistent_files(tmp_path, monkeypatch):
    class FullAfterEpoch1(Callback):
        def on_epoch_end(self, row):
            _failing_writes(monkeypatch, errno.ENOSPC, lambda p: True)

    with pytest.raises(RunWriteError, match="No space left on device") as info:
        _fit(_toy(tmp_path, **{"schedule.epochs": 3}), callbacks=[FullAfterEpoch1()])
    assert info.value.errno == errno.ENOSPC and "what to do" in str(info.value)
    run = RunDir(tmp_path / "toy")
    rows, rec = run.read_metrics(), run.read_record()
    assert len(rows) == rec["epochs_done"] == 1 and rec["steps"] == rows[-1]["step"]
    assert _leftovers(tmp_path) == []  # no temporary file or half-written checkpoint folder


def test_a_checkpoint_that_cannot_be_written_leaves_no_temporary_folder(tmp_path, monkeypatch):
    from fernb.engine.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "ckpt" / "last", {"w": torch.ones(2)})
    _failing_writes(monkeypatch, errno.ENOSPC, lambda p: p.name == "state.json")
    with pytest.raises(RunWriteError):
        save_checkpoint(tmp_path / "ckpt" / "last", {"w": torch.zeros(2)})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last"]
    assert torch.equal(load_checkpoint(tmp_path / "ckpt" / "last")[0]["w"], torch.ones(2))


def test_evaluating_a_run_on_a_read_only_disk_prints_the_metrics_and_warns(tmp_path, monkeypatch, capsys):
    from fernb.engine.cli import evaluate_main

    cfg = te.toy_config(tmp_path, **{**SYNTH, "schedule.epochs": 1})
    fit(cfg)
    record = (tmp_path / "toy" / "run.json").read_text()
    _failing_writes(monkeypatch, errno.EROFS, lambda p: True)
    with pytest.warns(UserWarning, match="(?s)not saved.*read-only"):
        assert evaluate_main([str(tmp_path / "toy"), "--split", "valid", "--bootstrap", "0"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert (tmp_path / "toy" / "run.json").read_text() == record


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_run_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~umask


# -- config ranges, checked before anything is read or written --------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("data.train_limit", -5, "data.train_limit"),
        ("data.batch_size", 0, "data.batch_size"),
        ("data.batch_size", -8, "data.batch_size"),
        ("data.num_workers", -1, "data.num_workers"),
        ("data.eval_order", "random", "data.eval_order"),
        ("data.eval_tta", "tencrop", "data.eval_tta"),
        ("schedule.monitor", "valid_acc", "did you mean 'valid_accuracy'"),
        ("optim.lr", float("nan"), "optim.lr"),
        ("data.valid_fraction", 1.5, "data.valid_fraction"),
        ("run.seed", -1, "run.seed"),
    ],
)
def test_out_of_range_fields_are_refused_before_anything_is_written(tmp_path, key, value, match):
    with pytest.raises(ConfigError, match=match):
        _fit(_toy(tmp_path, **{key: value}))
    assert not (tmp_path / "toy").exists()


def test_an_input_too_small_for_the_model_is_refused_before_the_data_is_read(tmp_path, monkeypatch):
    from fernb.engine import config_from_preset

    fit_module = sys.modules["fernb.engine.fit"]

    def no_data(*a, **k):
        raise AssertionError("the data was read")

    monkeypatch.setattr(fit_module, "build_datasets", no_data)
    cfg = config_from_preset("esr/synthetic", smoke=True, **{"data.img_size": 16, "run.out_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"(?s)data.img_size=16: esr .* px works"):
        fit(cfg)


# -- unreadable files -------------------------------------------------------------------------------------------------
def test_damaged_checkpoint_files_are_named(tmp_path):
    from fernb.engine.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "last", {"w": torch.ones(3)}, train_state={"x": torch.zeros(2)})
    (path / "state.json").write_text('{"files": ')
    with pytest.raises(CheckpointError, match="state.json: unreadable"):
        load_checkpoint(path)
    path = save_checkpoint(tmp_path / "last", {"w": torch.ones(3)})
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(path, verify=False)


def test_a_corrupt_run_record_is_named(tmp_path):
    (tmp_path / "run.json").write_text('{"status": "run')
    with pytest.raises(RunFileError, match="run.json: not valid JSON"):
        RunDir(tmp_path).read_record()


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.pth", b"", "empty file"),
        ("random.safetensors", bytes(range(256)) * 4, "not a checkpoint format"),
        ("short.safetensors", (10_000).to_bytes(8, "little") + b'{"w": ', "truncated safetensors"),
    ],
)
def test_unreadable_weight_files_are_named(tmp_path, name, content, match):
    from fernb.models._errors import CheckpointMismatchError
    from fernb.models._weights import read_state_dict

    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointMismatchError, match=rf"{name}: .*{match}"):
        read_state_dict(tmp_path / name)


def test_a_checkpoint_is_read_by_its_content_not_its_extension(tmp_path):
    from safetensors.torch import save_file

    from fernb.models._weights import read_state_dict

    torch.save({"w": torch.ones(2)}, tmp_path / "torch.safetensors")
    save_file({"w": torch.ones(2)}, str(tmp_path / "safe.pth"))
    assert list(read_state_dict(tmp_path / "torch.safetensors")) == list(read_state_dict(tmp_path / "safe.pth"))


@pytest.mark.parametrize(("name", "text"), [("bad.json", '{"data": {'), ("bad.yaml", "data: [1, 2\nmodel: x")])
def test_a_malformed_config_file_is_named(tmp_path, name, text):
    from fernb.engine import load_config

    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=rf"{name}: not valid"):
        load_config(tmp_path / name)


def test_a_16_bit_png_is_scaled_not_clipped(tmp_path):
    from fernb.data.base import read_image

    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    got = np.asarray(read_image(tmp_path / "g16.png"))[..., 0]
    assert np.array_equal(got, (ramp // 257).astype(np.uint8))


# -- the command line -------------------------------------------------------------------------------------------------
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "fernb", *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


def test_the_cli_prints_one_line_errors_and_the_traceback_only_with_debug(tmp_path):
    bad = _cli("train", "resnet18/ferplus", "--smoke", f"data.root={tmp_path / 'typo'}", "--quiet", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ferplus:") and "Traceback" not in bad.stderr
    assert not (tmp_path / "runs" / "resnet18-ferplus-s0").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["resnet18/synthetic", "--smoke", "data.train_limit=-5"], "data.train_limit=-5"),
        (["resnet18/synthetic", "--smoke", "data.batch_size=0", "schedule.monitor=acc"], "schedule.monitor='acc'"),
        (["--config", "{tmp}/c.json"], "c.json: not valid JSON"),
        (["resnet18/ferplus", "--smoke", "data.root={tmp}/typo"], "error: ferplus: the data root does not exist"),
        (["--config", "{tmp}/run", "--resume", "optim.lr=0.5", "run.name=run"], "optim.lr: 0.001 -> 0.5"),
    ],
)
def test_cli_user_errors_are_one_message_without_a_traceback(tmp_path, capsys, args, match):
    from fernb.engine.cli import train_main

    (tmp_path / "c.json").write_text("{")
    run = tmp_path / "run"
    run.mkdir()
    cfg = te.toy_config(tmp_path, **{"optim.lr": 0.001})
    from fernb.engine.config import save_config

    save_config(cfg, run / "config.json")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args] + [f"run.out_dir={tmp_path}"]
    args += [] if any(a.startswith("run.name=") for a in args) else ["run.name=fresh"]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert match in err and err.startswith("error: ") and "Traceback" not in err
    assert train_main([*args, "--debug"]) == 2
    assert "error: " in capsys.readouterr().err


def test_notebooks_show_fernb_errors_as_one_message(capsys):
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    from fernb.errors import short_errors

    shell = InteractiveShell.instance()
    try:
        assert short_errors()
        result = shell.run_cell("from fernb.data import load_dataset\nload_dataset('ferplus', '/nowhere')")
        out = capsys.readouterr()
        assert result.error_in_exec is not None  # the cell still fails (papermill stops)
        assert "DataRootError: ferplus:" in out.out + out.err and "Traceback" not in out.out + out.err
    finally:
        short_errors(False)
        InteractiveShell.clear_instance()


# -- suspicious data: warned with counts ----------------------------------------------------------------------------
def _gray(n: int, seed: int, side: int = 16):
    from fernb.data.base import FERDataset
    from fernb.labels import LABEL_SPACES

    rng = np.random.default_rng(seed)
    px = rng.integers(0, 255, (n, side, side), dtype=np.uint8)
    return px, FERDataset, LABEL_SPACES["basic7"]


def test_duplicates_across_labels_and_splits_and_tiny_images_are_counted():
    from fernb.data.audit import audit_splits

    px, FERDataset, space = _gray(20, 0)
    px[1] = px[0]  # the same image as sample 0, under another label
    train = FERDataset("toy", "train", space, np.arange(20) % 7, pixels=px)
    valid = FERDataset("toy", "valid", space, np.arange(5) % 7, pixels=np.concatenate([px[2:5], _gray(2, 1)[0]]))
    found = audit_splits(train, valid)
    assert (found.conflicting_labels, found.train_valid_overlap) == (2, 3)
    tiny = FERDataset("toy", "valid", space, [0, 1], pixels=np.zeros((2, 1, 1), np.uint8))
    assert audit_splits(train, tiny).tiny == {"valid": 2}


def test_fit_warns_when_validation_images_are_training_images(tmp_path):
    data = te.toy_data(32)
    with pytest.warns(UserWarning, match="32 of 32 validation samples are identical"):
        fit(_toy(tmp_path, **{"schedule.epochs": 1}), train_data=data, valid_data=data)


def test_a_manifest_distribution_that_contradicts_its_label_is_warned(tmp_path):
    from fernb.data import load_dataset

    for i in range(3):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "manifest.csv").write_text(
        "path,label,votes_happy,votes_sad\n0.png,happy,9,1\n1.png,happy,0,10\n2.png,sad,7,3\n"
    )
    with pytest.warns(UserWarning) as got:
        load_dataset("manifest", tmp_path, "all")
    text = " ".join(str(w.message) for w in got)
    assert "1 of 3 rows" in text and "no weight (first: line 3)" in text and "above their label (first: line 4)" in text


def test_notebook_01_with_a_wrong_data_root_stops_on_the_data_root_error(tmp_path):
    from fernb.data.errors import DataRootError

    nb = json.loads((Path(__file__).parents[1] / "notebooks" / "01_data_and_preprocessing.ipynb").read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    ns: dict = {}
    exec(code[0], ns)  # the parameters
    ns.update(DATASET="ferplus", DATA_ROOT=str(tmp_path / "typo"))
    for cell in code[1:]:
        src = "\n".join(line for line in cell.splitlines() if not line.startswith("%"))
        if "load_dataset(DATASET, DATA_ROOT" in src:
            with pytest.raises(DataRootError, match="typo"):
                exec(src, ns)
            return
        exec(src, ns)
    raise AssertionError("notebook 01 has no data-loading cell")
