"""ARM against the official ``ResNet18_ARM___RAF`` outputs stored in ``shared/fidelity/arm_resnet18_raf.pt``.

The reference weights are rebuilt from the manifest (official key names) and loaded through fernb's own converter.
Tolerances follow ``shared/fidelity/README.md``: rtol 1e-5, atol 1e-5 * max(1, max|ref|).
"""

from __future__ import annotations

import pytest
import torch
from fidelity import close, load_fixture, load_recipe

from fernb.models import create_model
from fernb.models._weights import load_checkpoint

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def fx(fidelity_dir):
    data, sd, x = load_fixture(fidelity_dir, "arm_resnet18_raf.pt")
    rec = data["inputs"]["x"]
    assert torch.equal(load_recipe(fidelity_dir).make_pixels(rec["shape"], rec["seed"]), rec["pixels_uint8"])
    return data, sd, x


@pytest.fixture(scope="module")
def run(fx):
    data, sd, x = fx
    model = create_model("arm", "official", num_classes=7).eval()
    report = load_checkpoint(model, sd)
    sig: dict[str, torch.Tensor] = {}
    hooks = [
        model.backbone.register_forward_hook(lambda m, i, o: sig.__setitem__("features", o.mean((2, 3)))),
        model.arrangement.register_forward_hook(lambda m, i, o: sig.__setitem__("arranged", o.mean((2, 3)))),
        model.arm.bn.register_forward_hook(lambda m, i, o: sig.__setitem__("arm_bn", o.mean((2, 3)))),
    ]
    with torch.no_grad():
        out = model(x)
    for h in hooks:
        h.remove()
    return model, report, out, sig


def test_official_checkpoint_converts_with_every_key(run):
    _, report, _, _ = run
    assert report.ok and report.converted_from and len(report.loaded) == 131  # 129 official + 2 running-map buffers


def test_logits_alpha_and_arm_map_match_the_official_model(fx, run):
    data, _, _ = fx
    _, _, out, _ = run
    ref = data["outputs"]
    close(out.logits, ref["logits"])
    close(out.alpha, ref["alpha"])
    close(out.arm_map, ref["arm_output"])


@pytest.mark.parametrize("name", ["features", "arranged", "arm_bn"])
def test_intermediate_signatures_match(fx, run, name):
    data, _, _ = fx
    close(run[3][name], data["outputs"]["signatures"][name])


def test_official_batch_dependence_is_reproduced(fx, run):
    data, _, x = fx
    model = run[0]
    with torch.no_grad():
        alone = model(x[:2]).logits
    ref = data["outputs"]["batch_dependence"]["logits_first2_alone"]
    close(alone, ref)
    assert (alone - run[2].logits[:2]).abs().max() > 0.01  # the official prediction really depends on the batch


def test_fixed_behaviour_is_batch_independent_and_equals_official_on_its_calibration_batch(fx, run):
    data, _, x = fx
    model = run[0]
    model.calibrate_affinity([x])  # running map = this batch's mean, with BN in eval mode as at test time
    try:
        model.behaviour = "fixed"
        with torch.no_grad():
            full, alone = model(x).logits, model(x[:2]).logits
    finally:
        model.behaviour = "official"
    close(full, data["outputs"]["logits"])
    close(alone, full[:2])
