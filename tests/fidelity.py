"""Helpers for the fidelity tests: rebuild reference weights and inputs from ``shared/fidelity`` (its ``recipe``
module) and compare with the README's tolerance."""

from __future__ import annotations

import functools
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["load_recipe", "make_state_dict", "official_state_dict", "load_fixture", "close", "assert_matches"]


def load_recipe(fidelity_dir: Path) -> ModuleType:
    """The fixtures' ``recipe.py`` (it rebuilds weights from key names and inputs from seeds)."""
    if str(fidelity_dir) not in sys.path:
        sys.path.insert(0, str(fidelity_dir))
    import recipe

    return recipe


def make_state_dict(recipe: ModuleType, manifest: list[dict]) -> dict[str, torch.Tensor]:
    """recipe.make_state_dict on two threads (numpy releases the GIL): same tensors, half the wall time."""
    with ThreadPoolExecutor(2) as ex:
        tensors = ex.map(lambda e: recipe.make_tensor(e["key"], e["shape"], e["dtype"], e["rule"]), manifest)
        return dict(zip([e["key"] for e in manifest], tensors))


@functools.lru_cache(maxsize=2)
def official_state_dict(fidelity_dir: Path, name: str) -> dict[str, torch.Tensor]:
    """The recipe state dict of a fixture, built once per session (POSTER_V2's serves several test files)."""
    fx = torch.load(fidelity_dir / name, weights_only=True)
    return make_state_dict(load_recipe(fidelity_dir), fx["manifest"])


def load_fixture(fidelity_dir: Path, name: str) -> tuple[dict, dict[str, torch.Tensor], torch.Tensor]:
    """A fixture file, its rebuilt official state dict and its input batch ``x``."""
    recipe = load_recipe(fidelity_dir)
    data = torch.load(fidelity_dir / name, weights_only=True)
    rec = data["inputs"]["x"]
    x = recipe.make_input(rec["shape"], rec["seed"], rec["mean"], rec["std"])
    return data, make_state_dict(recipe, data["manifest"]), x


def close(actual: torch.Tensor, ref: torch.Tensor, equal_nan: bool = False) -> None:
    """The fidelity README's tolerance: rtol 1e-5, atol 1e-5 * max(1, |ref|max) (NaN/inf ignored in the scale)."""
    atol = 1e-5 * max(1.0, ref.float().abs().nan_to_num(0, 0, 0).max().item())
    torch.testing.assert_close(actual.float(), ref.float(), rtol=1e-5, atol=atol, equal_nan=equal_nan)


def assert_matches(actual: torch.Tensor, ref: torch.Tensor, name: str) -> None:
    """:func:`close`, and small-scale tensors also within 1e-4 of their own scale, so that the absolute tolerance
    on a 1e-2-sized gradient cannot hide a 10% error."""
    scale = ref.abs().max().item()
    torch.testing.assert_close(actual, ref, rtol=1e-5, atol=1e-5 * max(1.0, scale), msg=lambda m: f"{name}: {m}")
    if scale < 1.0:
        err = (actual - ref).abs().max().item()
        assert err <= 1e-4 * scale + 1e-9, f"{name}: max error {err:.2e} on a scale of {scale:.2e}"
