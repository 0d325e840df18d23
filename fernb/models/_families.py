"""Imports every model family so that its ``@register_model`` entry points run. Add new families here."""

import importlib

_FAMILIES = ("poster", "arbex", "resnet", "arm", "adcorre", "esr", "manet")

for _name in _FAMILIES:
    try:
        importlib.import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as exc:  # a family not written yet
        if exc.name != f"{__package__}.{_name}":
            raise
