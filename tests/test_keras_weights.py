"""Keras HDF5 weights -> Ad-Corre on timm's ``legacy_xception``: files written here in Keras's own layouts (a whole
model under ``model_weights``, and a weights-only notop Xception with its layers at the top level), every array filled
with distinct random values, checked tensor by tensor against the layout transposes, plus the refusals."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fernb.models import create_model
from fernb.models._weights import CheckpointMismatchError, load_checkpoint

h5py = pytest.importorskip("h5py", exc_type=ImportError)  # the Keras reader is an optional extra

K, D, C = 3, 8, 3  # heads, embedding size, classes: a small head on the full Xception
HEAD_NAMES = ["dense_8", "dense_9", "dense_10"]  # creation order; a string sort would put dense_10 first

# Keras Xception (keras.applications.xception) separable convs per block: (in, out) of each sepconv
SEPCONVS = {
    2: [(64, 128), (128, 128)],
    3: [(128, 256), (256, 256)],
    4: [(256, 728), (728, 728)],
    **{b: [(728, 728)] * 3 for b in range(5, 13)},
    13: [(728, 728), (728, 1024)],
}
RESIDUALS = [(64, 128), (128, 256), (256, 728), (728, 1024)]  # 1x1 stride-2 convs of blocks 2, 3, 4, 13


def keras_xception_layers(residual_names: list[str], bn_names: list[str]) -> list[tuple[str, dict[str, tuple]]]:
    """(layer, {weight: Keras shape}) in Keras model order, with the unnamed residual layers called as given."""

    def bn(c: int) -> dict[str, tuple]:
        return {v: (c,) for v in ("gamma", "beta", "moving_mean", "moving_variance")}

    def sep(i: int, o: int) -> dict[str, tuple]:
        return {"depthwise_kernel": (3, 3, i, 1), "pointwise_kernel": (1, 1, i, o)}

    layers = [
        ("block1_conv1", {"kernel": (3, 3, 3, 32)}),
        ("block1_conv1_bn", bn(32)),
        ("block1_conv2", {"kernel": (3, 3, 32, 64)}),
        ("block1_conv2_bn", bn(64)),
    ]
    r = 0
    for b, convs in SEPCONVS.items():
        if b in (2, 3, 4, 13):
            i, o = RESIDUALS[r]
            layers += [(residual_names[r], {"kernel": (1, 1, i, o)}), (bn_names[r], bn(o))]
            r += 1
        for j, (i, o) in enumerate(convs, 1):
            layers += [(f"block{b}_sepconv{j}", sep(i, o)), (f"block{b}_sepconv{j}_bn", bn(o))]
    layers += [
        ("block14_sepconv1", sep(1024, 1536)),
        ("block14_sepconv1_bn", bn(1536)),
        ("block14_sepconv2", sep(1536, 2048)),
        ("block14_sepconv2_bn", bn(2048)),
    ]
    return layers


def timm_target(layer: str, residual_names: list[str], bn_names: list[str]) -> str:
    """fernb key prefix of a Keras Xception layer (timm legacy_xception naming), written out independently."""
    if layer in residual_names:
        return f"backbone.block{(1, 2, 3, 12)[residual_names.index(layer)]}.skip"
    if layer in bn_names:
        return f"backbone.block{(1, 2, 3, 12)[bn_names.index(layer)]}.skipbn"
    fixed = {
        "block1_conv1": "conv1",
        "block1_conv1_bn": "bn1",
        "block1_conv2": "conv2",
        "block1_conv2_bn": "bn2",
        "block14_sepconv1": "conv3",
        "block14_sepconv1_bn": "bn3",
        "block14_sepconv2": "conv4",
        "block14_sepconv2_bn": "bn4",
    }
    if layer in fixed:
        return "backbone." + fixed[layer]
    b, j = int(layer[5:].split("_")[0]), int(layer.split("sepconv")[1][0])
    index = 3 * (j - 1) + (0 if b == 2 else 1) + (1 if layer.endswith("_bn") else 0)
    return f"backbone.block{b - 1}.rep.{index}"


def write_keras_h5(path: Path, layers: list[tuple[str, dict[str, np.ndarray]]], whole_model: bool) -> None:
    """Keras 2 HDF5 layout: ``[model_weights/]<layer>/<layer>/<weight>:0`` datasets, ``layer_names`` and
    ``weight_names`` attributes (byte strings), plus the root attributes Keras writes."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.4.0"
        f.attrs["backend"] = b"tensorflow"
        root = f.create_group("model_weights") if whole_model else f
        if whole_model:
            f.attrs["model_config"] = b'{"class_name": "Functional"}'
            root.attrs["keras_version"] = b"2.4.0"
            root.attrs["backend"] = b"tensorflow"
        root.attrs["layer_names"] = np.array([n.encode() for n, _ in layers])
        for name, weights in layers:
            g = root.create_group(name)
            g.attrs["weight_names"] = np.array([f"{name}/{w}:0".encode() for w in weights])
            for w, arr in weights.items():
                g.create_dataset(f"{name}/{w}:0", data=arr)


def fill(layers: list[tuple[str, dict[str, tuple]]], seed: int) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Distinct random values for every array (variances positive, as BatchNorm needs)."""
    rng = np.random.default_rng(seed)
    out = []
    for name, shapes in layers:
        arrays = {w: rng.standard_normal(s, dtype=np.float32) for w, s in shapes.items()}
        if "moving_variance" in arrays:
            arrays["moving_variance"] = np.abs(arrays["moving_variance"]) + 0.1
        out.append((name, arrays))
    return out


TF2_RES = ["conv2d", "conv2d_1", "conv2d_2", "conv2d_3"]  # tf.keras session naming (Ad-Corre's model files)
TF2_BN = ["batch_normalization", "batch_normalization_1", "batch_normalization_2", "batch_normalization_3"]
K1_RES = ["conv2d_1", "conv2d_2", "conv2d_3", "conv2d_4"]  # old Keras naming (the 2017 ImageNet notop file)
K1_BN = ["batch_normalization_1", "batch_normalization_2", "batch_normalization_3", "batch_normalization_4"]


@pytest.fixture(scope="module")
def adcorre_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """A whole Ad-Corre model file: Xception layers, K Dense(D) heads (stored out of creation order), ``out``."""
    layers = fill(keras_xception_layers(TF2_RES, TF2_BN), seed=0)
    rng = np.random.default_rng(1)
    heads = [
        (
            n,
            {
                "kernel": rng.standard_normal((2048, D), dtype=np.float32),
                "bias": rng.standard_normal(D, dtype=np.float32),
            },
        )
        for n in HEAD_NAMES
    ]
    out = (
        "out",
        {"kernel": rng.standard_normal((K * D, C), dtype=np.float32), "bias": rng.standard_normal(C, dtype=np.float32)},
    )
    layers = layers + [heads[2], heads[0], heads[1], out]
    path = tmp_path_factory.mktemp("keras") / "AffectNet_tiny.h5"
    write_keras_h5(path, layers, whole_model=True)
    return path, layers


def build(**kw):
    kw = {"num_embeddings": K, "embedding_dim": D, "num_classes": C} | kw
    return create_model("adcorre", "official", **kw)


@pytest.fixture(scope="module")
def loaded(adcorre_file):
    path, layers = adcorre_file
    model = create_model("adcorre", "official", num_embeddings=K, embedding_dim=D, num_classes=C, checkpoint=path)
    return model.eval(), layers


def test_every_keras_array_lands_in_its_parameter_with_the_layout_transpose(loaded):
    model, layers = loaded
    sd = model.state_dict()
    arrays = dict(layers)
    checked = set()
    for name, weights in layers:
        if name in HEAD_NAMES or name == "out":
            continue
        prefix = timm_target(name, TF2_RES, TF2_BN)
        for w, arr in weights.items():
            t = torch.from_numpy(arr)
            if w == "kernel":  # Conv2D (kh, kw, in, out) -> (out, in, kh, kw)
                key, want = f"{prefix}.weight", t.permute(3, 2, 0, 1)
            elif w == "depthwise_kernel":  # (kh, kw, C, 1) -> (C, 1, kh, kw)
                key, want = f"{prefix}.conv1.weight", t.permute(2, 3, 0, 1)
            elif w == "pointwise_kernel":
                key, want = f"{prefix}.pointwise.weight", t.permute(3, 2, 0, 1)
            else:
                key = (
                    f"{prefix}."
                    + {
                        "gamma": "weight",
                        "beta": "bias",
                        "moving_mean": "running_mean",
                        "moving_variance": "running_var",
                    }[w]
                )
                want = t
            assert torch.equal(sd[key], want), f"{name}/{w} -> {key}"
            checked.add(key)
    for m, head in enumerate(HEAD_NAMES):  # head m fills rows m*D:(m+1)*D, Dense (in, out) -> (out, in)
        torch.testing.assert_close(
            sd["heads.weight"][m * D : (m + 1) * D], torch.from_numpy(arrays[head]["kernel"]).T, rtol=0, atol=0
        )
        torch.testing.assert_close(
            sd["heads.bias"][m * D : (m + 1) * D], torch.from_numpy(arrays[head]["bias"]), rtol=0, atol=0
        )
    assert torch.equal(sd["fc.weight"], torch.from_numpy(arrays["out"]["kernel"]).T)
    assert torch.equal(sd["fc.bias"], torch.from_numpy(arrays["out"]["bias"]))
    checked |= {"heads.weight", "heads.bias", "fc.weight", "fc.bias"}
    learnable = {k for k in sd if not k.endswith("num_batches_tracked")}
    assert checked == learnable  # nothing left at its random init
    assert all(int(sd[k]) == 0 for k in sd if k.endswith("num_batches_tracked"))


def test_the_key_report_is_complete(adcorre_file):
    path, _ = adcorre_file
    report = load_checkpoint(build(), path)
    assert report.ok and not report.dropped and report.source == str(path)
    assert report.converted_from.startswith("Keras") and len(report.loaded) == len(build().state_dict())


def test_loaded_convolutions_compute_what_keras_computes(loaded):
    """Keras convs are cross-correlations with HWIO kernels (SeparableConv2D: depthwise, then pointwise)."""
    model, layers = loaded
    arrays = dict(layers)
    x = torch.rand(1, 3, 9, 9)
    xn = x[0].permute(1, 2, 0).numpy()  # (H, W, C), channels last as Keras
    with torch.no_grad():
        y = model.backbone.conv1(x)[0]  # block1_conv1: 3x3 stride 2, valid
    k = arrays["block1_conv1"]["kernel"]
    for i, j in [(0, 0), (2, 3)]:
        want = np.einsum("hwc,hwco->o", xn[2 * i : 2 * i + 3, 2 * j : 2 * j + 3], k)
        np.testing.assert_allclose(y[:, i, j].numpy(), want, rtol=1e-5, atol=1e-5)
    x = torch.rand(1, 64, 5, 5)
    xn = np.pad(x[0].permute(1, 2, 0).numpy(), ((1, 1), (1, 1), (0, 0)))  # 'same' padding
    with torch.no_grad():
        y = model.backbone.block1.rep[0](x)[0]  # block2_sepconv1
    dw, pw = arrays["block2_sepconv1"]["depthwise_kernel"], arrays["block2_sepconv1"]["pointwise_kernel"]
    depth = np.einsum("hwc,hwc->c", xn[1:4, 2:5], dw[..., 0])  # output position (1, 2)
    np.testing.assert_allclose(y[:, 1, 2].numpy(), depth @ pw[0, 0], rtol=1e-4, atol=1e-4)


def test_notop_xception_file_loads_the_backbone_and_reports_the_heads_missing(tmp_path: Path):
    layers = fill(keras_xception_layers(K1_RES, K1_BN), seed=2)
    path = tmp_path / "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
    write_keras_h5(path, layers, whole_model=False)  # save_weights layout: layer groups at the top level
    with pytest.raises(CheckpointMismatchError, match="missing in checkpoint: heads.weight"):
        load_checkpoint(build(), path)
    model = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = load_checkpoint(model, path, strict=False)
    assert sorted(report.missing) == ["fc.bias", "fc.weight", "heads.bias", "heads.weight"]
    assert not report.unexpected and not report.shape_mismatch
    # the residual convs come in creation order although their names start at conv2d_1 here
    sd = model.state_dict()
    arrays = dict(layers)
    want = torch.from_numpy(arrays["conv2d_4"]["kernel"]).permute(3, 2, 0, 1)
    assert torch.equal(sd["backbone.block12.skip.weight"], want)
    assert torch.equal(
        sd["backbone.block1.skipbn.running_var"], torch.from_numpy(arrays["batch_normalization_1"]["moving_variance"])
    )


def test_a_mis_shaped_array_is_refused_naming_the_layer_and_both_shapes(adcorre_file, tmp_path: Path):
    _, layers = adcorre_file
    bad = [(n, dict(w)) for n, w in layers]
    dict(bad)["block2_sepconv1"]["depthwise_kernel"] = np.zeros((3, 3, 32, 1), np.float32)
    path = tmp_path / "bad.h5"
    write_keras_h5(path, bad, whole_model=True)
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(build(), path)
    msg = str(err.value)
    assert str(path) in msg and "'block2_sepconv1' depthwise_kernel:0" in msg
    assert "file (3, 3, 32, 1), model expects (3, 3, 64, 1)" in msg and "backbone.block1.rep.0.conv1.weight" in msg


def test_another_class_count_drops_the_classifier_and_another_head_count_is_refused(adcorre_file):
    path, _ = adcorre_file
    with pytest.raises(CheckpointMismatchError, match="missing in checkpoint: fc.weight"):
        load_checkpoint(build(num_classes=C + 1), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = load_checkpoint(build(num_classes=C + 1), path, strict=False)
    assert report.dropped == ["out/kernel:0", "out/bias:0"] and sorted(report.missing) == ["fc.bias", "fc.weight"]
    with pytest.raises(CheckpointMismatchError, match="3 embedding heads.*build it with num_embeddings=3"):
        load_checkpoint(build(num_embeddings=2), path)


def test_a_non_xception_backbone_or_a_non_keras_file_is_refused(adcorre_file, tmp_path: Path):
    path, _ = adcorre_file
    with pytest.raises(CheckpointMismatchError, match="backbone='legacy_xception'"):
        create_model("adcorre", "tiny", checkpoint=path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(CheckpointMismatchError, match="no Keras 'layer_names' attribute"):
        load_checkpoint(build(), other)


def test_missing_h5py_says_how_to_install_it(adcorre_file, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ImportError, match="pip install h5py"):
        load_checkpoint(build(), adcorre_file[0])


def test_keras_compat_uses_keras_batchnorm_eps_and_tensorflow_same_pooling():
    model = build()
    assert model.backbone.bn1.eps == 1e-3
    assert create_model("adcorre", "official", keras_compat=False).backbone.bn1.eps == 1e-5
    pool = model.backbone.block3.rep[-1]
    x = torch.randn(1, 2, 28, 28)  # even side: TensorFlow pads only bottom/right
    want = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)
    assert torch.equal(pool(x), want)
