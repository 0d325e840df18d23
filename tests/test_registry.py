"""The one registry type: names and aliases, the decorator that refuses a taken name, and the public ``register_*``
wrappers built on it."""

from __future__ import annotations

import pytest

from fernb.losses import register_loss
from fernb.models import register_model
from fernb.registry import Registry


def _fresh() -> Registry[object]:
    reg: Registry[object] = Registry("widget")

    @reg.register(aliases=("W-One",))
    def one() -> None: ...

    reg.register("two")(object())
    return reg


def test_register_names_by_dunder_name_or_given_name_and_keeps_aliases_apart():
    reg = _fresh()
    assert reg.names() == ["one", "two"] and reg.aliases() == ["w-one"]
    assert reg.get("W-ONE") is reg.get("one") and reg.canonical("w-one") == "one"


def test_register_refuses_a_taken_name_or_alias_and_add_replaces():
    reg = _fresh()
    with pytest.raises(ValueError, match="widget 'two' is registered twice"):
        reg.register("two")(object())
    with pytest.raises(ValueError, match="widget 'w-one' is registered twice"):
        reg.register("three", aliases=("w-one",))(object())
    with pytest.raises(TypeError, match="give the widget a name"):
        reg.register()(object())
    assert "three" not in reg
    new = object()
    assert reg.add("two", new) is new and reg.get("two") is new


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown widget 'nope'; known: one, two"):
        _fresh().get("nope")


def test_public_wrappers_refuse_a_second_registration():
    def resnet18() -> None: ...

    with pytest.raises(ValueError, match="model 'resnet18' is registered twice"):
        register_model(resnet18)
    with pytest.raises(ValueError, match="loss 'arbex' is registered twice"):
        register_loss("arbex")(lambda: None)
