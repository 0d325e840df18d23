"""Imports every loss module so that its ``@register_loss`` factories run. Add new modules here."""

import importlib

_MODULES = ("ce", "arbex", "arm", "adcorre", "esr", "manet", "diversity")

for _name in _MODULES:
    try:
        importlib.import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as exc:  # a module not written yet
        if exc.name != f"{__package__}.{_name}":
            raise
