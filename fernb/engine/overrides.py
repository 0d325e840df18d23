"""Dotted ``key=value`` overrides of a :class:`~fernb.engine.config.TrainConfig`, from the command line or code::

cfg = apply_overrides(cfg, ["optim.lr=1e-3", "data.options.n=200", "schedule.epochs=3"])
cfg = apply_overrides(cfg, optim__lr=1e-3, data={"img_size": 64})
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from .config import ConfigError, TrainConfig, _coerce, _hints, _is_union, _unknown_key

__all__ = ["apply_overrides", "parse_overrides", "parse_value"]

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def parse_value(text: str) -> Any:
    """Parse the right-hand side of a ``key=value`` override.

    ``none``/``null`` -> None, ``true``/``false`` -> bool, numbers (``1e-3`` included) -> int or float, JSON lists and
    objects -> list / dict; anything else stays a string.
    """
    s = text.strip()
    low = s.lower()
    if low in ("none", "null", "~"):
        return None
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if _NUMBER.match(s):
        return int(s) if re.match(r"^[+-]?\d+$", s) else float(s)
    if low in ("inf", "+inf", "-inf", "nan"):
        return float(low)
    if s[:1] in "[{":
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            try:
                return yaml.safe_load(s)
            except yaml.YAMLError as exc:
                raise ConfigError(f"cannot parse {text!r} as a list or mapping: {exc}") from None
    return s


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=1e-3", "run.quiet=true"]`` -> ``{"optim.lr": 0.001, "run.quiet": True}`` (values kept raw)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=1e-3)")
        key, _, value = item.partition("=")
        out[key.strip()] = value
    return out


def _set_path(obj: Any, path: list[str], value: Any, raw: bool, full: str) -> Any:
    """Return ``obj`` with ``path`` set to ``value`` (dataclasses replaced, dicts copied)."""
    key, rest = path[0], path[1:]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        hints = _hints(type(obj))
        if key not in hints:
            raise _unknown_key(type(obj), key, full)
        current = getattr(obj, key)
        if rest:
            new = _set_path(current, rest, value, raw, full)
        else:
            tp = hints[key]
            new = _coerce_override(value, tp, full, raw)
        return dataclasses.replace(obj, **{key: new})
    if isinstance(obj, dict):
        new_dict = dict(obj)
        if rest:
            new_dict[key] = _set_path(new_dict.get(key, {}), rest, value, raw, full)
        else:
            new_dict[key] = parse_value(value) if raw and isinstance(value, str) else value
        return new_dict
    if isinstance(obj, list) and key.isdigit() and int(key) < len(obj):
        new_list = list(obj)
        i = int(key)
        new_list[i] = (
            _set_path(new_list[i], rest, value, raw, full)
            if rest
            else (parse_value(value) if raw and isinstance(value, str) else value)
        )
        return new_list
    raise ConfigError(f"{full}: cannot set {key!r} inside a {type(obj).__name__}")


def _accepts_str(tp: Any) -> bool:
    return tp is str or (_is_union(tp) and str in typing.get_args(tp))


def _coerce_override(value: Any, tp: Any, where: str, raw: bool) -> Any:
    if raw and isinstance(value, str):
        parsed = parse_value(value)
        if _accepts_str(tp):
            # A string field keeps the text as typed ("basic7", a path), except none/null for optional fields.
            return None if parsed is None and _is_union(tp) and type(None) in typing.get_args(tp) else value
        value = parsed
    return _coerce(value, tp, where)


def apply_overrides(
    cfg: TrainConfig, overrides: Mapping[str, Any] | Sequence[str] | None = None, **kw: Any
) -> TrainConfig:
    """A copy of ``cfg`` with dotted-key overrides applied.

    Args:
        cfg: the config.
        overrides: ``["optim.lr=1e-3", ...]`` (values parsed with :func:`parse_value`) or a mapping of dotted keys to
            Python values (``{"optim.lr": 1e-3}``; string values are parsed too).
        **kw: more overrides; ``optim__lr=1e-3`` means ``optim.lr``, and a section name with a mapping
            (``optim={"lr": 1e-3}``) sets several fields.

    Raises:
        ConfigError: for an unknown key (with the closest valid key) or a value of the wrong type.
    """
    items: dict[str, Any] = {}
    if overrides is not None:
        items.update(parse_overrides(overrides) if not isinstance(overrides, Mapping) else overrides)
    for k, v in kw.items():
        items[k.replace("__", ".")] = v
    out = cfg.copy()
    for key, value in items.items():
        if (
            "." not in key
            and isinstance(value, Mapping)
            and key in _hints(TrainConfig)
            and dataclasses.is_dataclass(getattr(out, key))
        ):
            for sub, subval in value.items():
                out = _set_path(out, [key, *str(sub).split(".")], subval, isinstance(subval, str), f"{key}.{sub}")
            continue
        out = _set_path(out, key.split("."), value, isinstance(value, str), key)
    return out
