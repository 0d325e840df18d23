"""Building a run's model: from its config (``fit``) or from a finished run folder and a checkpoint (``evaluate``,
the explorers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models import FERModel, create_model
from .checkpoint import load_checkpoint
from .config import ModelConfig, TrainConfig, load_config
from .distributed import resolve_device
from .rundir import RunDir

__all__ = ["build_model", "load_run"]


def build_model(
    cfg: ModelConfig, num_classes: int, img_size: int | None = None, *, checkpoint: bool = True
) -> FERModel:
    """``create_model`` with the config's preset and overrides.

    ``img_size`` (the run's ``data.img_size``) is passed on to models whose config has an ``img_size`` field, unless
    ``cfg.kwargs`` sets it: some heads are sized from it (ARM's classifier).
    """
    kwargs = dict(cfg.kwargs)
    ckpt = cfg.checkpoint if checkpoint else None
    if img_size is not None and "img_size" not in kwargs:
        try:
            return create_model(
                cfg.name,
                cfg.preset,
                num_classes=num_classes,
                checkpoint=ckpt,
                strict=cfg.strict,
                img_size=img_size,
                **kwargs,
            )
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
    return create_model(cfg.name, cfg.preset, num_classes=num_classes, checkpoint=ckpt, strict=cfg.strict, **kwargs)


def load_run(
    run_dir: str | Path, checkpoint: str | int = "best", *, device: str = "cpu"
) -> tuple[TrainConfig, FERModel, dict[str, Any]]:
    """Rebuild a run's model from its config and a checkpoint, in eval mode.

    ``checkpoint``: ``"best"``, ``"last"``, or an epoch kept by ``run.keep_epochs`` (``3`` or ``"epoch-003"``;
    :meth:`RunDir.checkpoints` lists them).

    Returns:
        ``(config, model, checkpoint_meta)``.
    """
    rd = RunDir(run_dir)
    if not rd.config_path.exists():
        raise FileNotFoundError(f"{rd.path}: no config.json; is this a fernb run folder?")
    cfg = load_config(rd.config_path)
    state, meta, _ = load_checkpoint(rd.checkpoint(checkpoint), with_train_state=False)
    record = rd.read_record()
    names = meta.get("class_names") or (record.get("data") or {}).get("label_space", {}).get("names")
    if names is None:
        raise FileNotFoundError(f"{rd.path}: neither the checkpoint nor run.json names the classes")
    model = build_model(cfg.model, len(names), cfg.data.img_size, checkpoint=False)
    for call in meta.get("stage_calls", []):  # rebuild the architecture of staged runs (e.g. ESR's branches)
        getattr(model, call)()
    model.load_state_dict(state)
    model.to(resolve_device(device)).eval()
    meta = dict(meta)
    meta["class_names"] = list(names)
    return cfg, model, meta
