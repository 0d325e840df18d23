"""The key-conversion tables' one function: rules in order, drops, declines, and tables for sub-modules."""

from __future__ import annotations

import pytest

from fernb.models._convert import DROP, MODULE_PREFIX, rename_key, under

RULES = [
    *MODULE_PREFIX,
    (r"^layer([34])_2\.", r"global_layer\1."),
    (r"\.ChannelGate\.mlp\.1\.", ".channel.fc1."),
    (r"^fc_1\.(weight|bias)$", r"fc_local.\1"),
    (r"^output_layer\.", DROP),
    (r"^body\.(\d+)\.", lambda m: DROP if int(m[1]) >= 3 else None),
]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("module.layer3_2.0.ChannelGate.mlp.1.weight", "global_layer3.0.channel.fc1.weight"),  # three rules, in turn
        ("fc_1.weight", "fc_local.weight"),
        ("fc_1.weight.extra", None),  # anchored rules match whole keys only
        ("layer1.0.conv1.weight", None),  # no rule matched
        ("output_layer.0.weight", DROP),
        ("body.5.x", DROP),
        ("body.1.x", None),  # the rule declined
    ],
)
def test_rules_apply_in_order_drop_and_decline(key: str, expected: object):
    assert rename_key(key, RULES) == expected


def test_under_moves_anchored_rules_below_a_prefix():
    rules = [
        (r"^conv([12])\.(\w+)$", r"stem.conv\1.\2"),
        (r"^body\.(\d+)\.w$", lambda m: f"stages.{int(m[1]) + 1}.w"),
        (r"^head\.", DROP),
    ]
    table = under(rules, "ir_back.", "image.")
    assert rename_key("ir_back.conv2.weight", table) == "image.stem.conv2.weight"
    assert rename_key("ir_back.body.4.w", table) == "image.stages.5.w"
    assert rename_key("ir_back.head.fc", table) is DROP
    assert rename_key("conv2.weight", table) is None
    with pytest.raises(ValueError, match="anchored"):
        under([(r"\.mlp\.", ".fc.")], "x.")
