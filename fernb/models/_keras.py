"""Keras HDF5 weight files, read as arrays, and the Keras Xception / Ad-Corre -> fernb name map.

Keras 2 (tf.keras up to 2.15) writes two HDF5 layouts, both read here:

* a whole model (``model.save("x.h5")``, the Ad-Corre releases ``AffectNet_6336.h5``, ``RafDB_8696.h5``,
  ``Fer2013_7203.h5``): the weights sit under the group ``model_weights``, whose attribute ``layer_names`` lists the
  layers in model order; each layer group ``model_weights/<layer>`` carries the attribute ``weight_names``
  (``b"block1_conv1/kernel:0"``, ...) and the arrays are the datasets ``model_weights/<layer>/<weight name>``;
* weights only (``model.save_weights("x.h5")``, e.g. ``xception_weights_tf_dim_ordering_tf_kernels_notop.h5``):
  the same with the layer groups at the top level.

Only numeric datasets are read (h5py never unpickles anything); the model's JSON config is ignored. Keras 3's
``.weights.h5`` layout (``layers/<name>/vars/<i>``) is not supported.

Array layouts (Keras, channels-last) -> PyTorch:

=====================  ==========================  ==========================
Keras                   shape                       PyTorch
=====================  ==========================  ==========================
Conv2D ``kernel``       (kh, kw, in, out)           (out, in, kh, kw)
DepthwiseConv2D /       (kh, kw, in, mult)          (in * mult, 1, kh, kw)
SeparableConv2D
``depthwise_kernel``
SeparableConv2D         (1, 1, in, out)             (out, in, 1, 1)
``pointwise_kernel``
Dense ``kernel``        (in, out)                   (out, in)
BatchNormalization      gamma, beta, moving_mean,   weight, bias, running_mean,
                        moving_variance             running_var
=====================  ==========================  ==========================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._errors import CheckpointMismatchError

__all__ = ["read_keras_h5", "convert_keras_xception", "convert_keras_adcorre", "xception_layer_map", "KerasTensor"]


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "reading Keras .h5 weight files needs h5py: pip install h5py (or install fernb with its 'keras' extra)"
        ) from None
    return h5py


def _names(attr: Any) -> list[str]:
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in np.asarray(attr).reshape(-1)]


def read_keras_h5(path: str | Path) -> dict[str, Tensor]:
    """Read a Keras 2 HDF5 weight file into ``{"<layer>/<weight>:0": tensor}`` in file order, arrays as stored.

    The key is the weight name Keras stored (``"block1_conv1/kernel:0"``, already prefixed by its layer), or
    ``"<layer>/<weight name>"`` when the stored name has no layer part.

    Raises:
        ImportError: h5py is missing (with the ``pip install h5py`` command).
        CheckpointMismatchError: the file is not HDF5, or not in a Keras 2 layout.
    """

    h5py = _h5py()
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CheckpointMismatchError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise CheckpointMismatchError(
                f"{path}: no Keras 'layer_names' attribute (at / or /model_weights); expected a Keras 2 file written "
                "by model.save('x.h5') or model.save_weights('x.h5'). Keras 3 files (layers/<name>/vars/<i>) are not "
                "supported: re-save the weights with tf.keras 2."
            )
        out: dict[str, Tensor] = {}
        for layer in _names(root.attrs["layer_names"]):
            group = root[layer]
            for wname in _names(group.attrs.get("weight_names", [])):
                arr = np.asarray(group[wname][()])
                if arr.dtype.kind not in "fiub":
                    raise CheckpointMismatchError(f"{path}: {layer}/{wname} holds {arr.dtype} data, not numbers")
                key = wname if "/" in wname else f"{layer}/{wname}"
                out[key] = torch.from_numpy(np.ascontiguousarray(arr))
    return out


# -- layouts ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KerasTensor:
    """How one Keras array becomes a PyTorch tensor: ``perm`` permutes the Keras axes into PyTorch order, then the
    result takes the target's shape (only the depthwise kernel needs it: (C, mult, kh, kw) -> (C * mult, 1, kh, kw),
    with mult = 1 in Xception)."""

    perm: tuple[int, ...] | None = None

    def to_torch(self, arr: Tensor, shape: tuple[int, ...]) -> Tensor:
        t = arr.permute(*self.perm) if self.perm is not None else arr
        return t.reshape(shape).contiguous()

    def keras_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The Keras shape that gives a PyTorch tensor of ``shape`` (depthwise: (C, 1, kh, kw) <- (kh, kw, C, 1))."""
        if self.perm is None:
            return tuple(shape)
        out = [0] * len(shape)
        for i, p in enumerate(self.perm):
            out[p] = shape[i]
        return tuple(out)


_SAME = KerasTensor()
_CONV = KerasTensor((3, 2, 0, 1))  # HWIO -> OIHW (also the separable pointwise kernel)
_DEPTHWISE = KerasTensor((2, 3, 0, 1))  # (kh, kw, C, mult) -> (C, mult, kh, kw) -> (C * mult, 1, kh, kw)
_DENSE = KerasTensor((1, 0))  # (in, out) -> (out, in)
_BN = {"gamma:0": "weight", "beta:0": "bias", "moving_mean:0": "running_mean", "moving_variance:0": "running_var"}

# Keras Xception (keras.applications.xception): sepconvs per block, blocks 2..13 (block 14 is the exit flow)
_XCEPTION_SEPCONVS = {2: 2, 3: 2, 4: 2, **{b: 3 for b in range(5, 13)}, 13: 2}
_XCEPTION_SKIPS = (1, 2, 3, 12)  # timm blocks with a 1x1 residual conv (Keras blocks 2, 3, 4, 13)


def xception_layer_map() -> dict[str, tuple[str, str]]:
    """Named Keras Xception layers -> (kind, timm ``legacy_xception`` module): kinds ``conv``, ``sepconv``, ``bn``.

    Keras block b (2..13) is timm ``block{b-1}``; its j-th separable conv is ``rep.{3(j-1)+1}`` and its BN the next
    index (timm ``block1`` starts without ReLU, so there ``rep.{3(j-1)}``); block 14 is timm ``conv3/bn3``,
    ``conv4/bn4``. The four residual 1x1 convs and their BNs have no name of their own in Keras (``conv2d``,
    ``conv2d_1``, ... or ``conv2d_1``, ... depending on the Keras session); :func:`convert_keras_xception` takes them
    in creation order.
    """
    m: dict[str, tuple[str, str]] = {
        "block1_conv1": ("conv", "conv1"),
        "block1_conv1_bn": ("bn", "bn1"),
        "block1_conv2": ("conv", "conv2"),
        "block1_conv2_bn": ("bn", "bn2"),
        "block14_sepconv1": ("sepconv", "conv3"),
        "block14_sepconv1_bn": ("bn", "bn3"),
        "block14_sepconv2": ("sepconv", "conv4"),
        "block14_sepconv2_bn": ("bn", "bn4"),
    }
    for b, n in _XCEPTION_SEPCONVS.items():
        first = 0 if b == 2 else 1
        for j in range(1, n + 1):
            m[f"block{b}_sepconv{j}"] = ("sepconv", f"block{b - 1}.rep.{3 * (j - 1) + first}")
            m[f"block{b}_sepconv{j}_bn"] = ("bn", f"block{b - 1}.rep.{3 * (j - 1) + first + 1}")
    return m


def _creation_order(name: str) -> int:
    """Keras auto names count up per class in a session: ``dense``, ``dense_1``, ``dense_2`` ..."""
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0


def _group_layers(sd: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    layers: dict[str, dict[str, Tensor]] = {}
    for key, v in sd.items():
        layer, _, var = key.rpartition("/")
        layers.setdefault(layer, {})[var] = v
    return layers


def _kind(variables: Mapping[str, Tensor]) -> str:
    if "depthwise_kernel:0" in variables and "pointwise_kernel:0" in variables:
        return "sepconv"
    if "depthwise_kernel:0" in variables:
        return "depthwise"
    if "moving_mean:0" in variables:
        return "bn"
    kernel = variables.get("kernel:0")
    if kernel is not None:
        return {4: "conv", 2: "dense"}.get(kernel.dim(), "other")
    return "other"


class _Mapper:
    """Collects converted tensors and shape mismatches (Keras layer, weight, file shape, expected shape, target)."""

    def __init__(self, own: Mapping[str, Tensor]) -> None:
        self.own = own
        self.out: dict[str, Tensor] = {}
        self.mismatch: list[tuple[str, str, tuple[int, ...], tuple[int, ...], str]] = []
        self.used: set[tuple[str, str]] = set()

    def put(self, layer: str, var: str, arr: Tensor, target: str, how: KerasTensor) -> None:
        self.used.add((layer, var))
        if target not in self.own:  # keep the Keras name: the report lists it as unexpected
            self.out[f"{layer}/{var}"] = arr
            return
        want = tuple(self.own[target].shape)
        if tuple(arr.shape) != how.keras_shape(want):
            self.mismatch.append((layer, var, tuple(arr.shape), how.keras_shape(want), target))
            return
        self.out[target] = how.to_torch(arr, want).to(self.own[target].dtype)

    def conv(self, layer: str, variables: Mapping[str, Tensor], target: str, kind: str) -> None:
        if kind == "sepconv":
            self.put(layer, "depthwise_kernel:0", variables["depthwise_kernel:0"], f"{target}.conv1.weight", _DEPTHWISE)
            self.put(layer, "pointwise_kernel:0", variables["pointwise_kernel:0"], f"{target}.pointwise.weight", _CONV)
        else:
            self.put(layer, "kernel:0", variables["kernel:0"], f"{target}.weight", _CONV)
        if "bias:0" in variables:
            self.put(layer, "bias:0", variables["bias:0"], f"{target}.bias", _SAME)

    def bn(self, layer: str, variables: Mapping[str, Tensor], target: str) -> None:
        for var, name in _BN.items():
            if var in variables:
                self.put(layer, var, variables[var], f"{target}.{name}", _SAME)
        if f"{target}.num_batches_tracked" in self.own:  # Keras keeps no count
            self.out[f"{target}.num_batches_tracked"] = torch.zeros_like(self.own[f"{target}.num_batches_tracked"])


def convert_keras_xception(
    sd: Mapping[str, Tensor],
    own: Mapping[str, Tensor],
    prefix: str = "",
    dense: Callable[[_Mapper, dict[str, dict[str, Tensor]]], list[str]] | None = None,
) -> tuple[dict[str, Tensor], list[str], list[tuple[str, str, tuple[int, ...], tuple[int, ...], str]]]:
    """Keras Xception weights (:func:`read_keras_h5` keys) -> timm ``legacy_xception`` keys under ``prefix``.

    Args:
        sd: ``{"<layer>/<weight>:0": array}`` as read.
        own: the target model's state dict (names and shapes).
        prefix: where the backbone sits in ``own`` (``"backbone."`` for Ad-Corre).
        dense: maps the Dense layers (a model's heads); returns the Keras keys it dropped.

    Returns:
        (converted state dict, dropped Keras keys, shape mismatches as (layer, weight, file shape, expected Keras
        shape, fernb key)). Layers the map does not know keep their Keras keys, so the key report lists them as
        unexpected.
    """
    layers = _group_layers(sd)
    mapper = _Mapper(own)
    named = xception_layer_map()
    skip_convs = sorted((n for n, v in layers.items() if _kind(v) == "conv" and n not in named), key=_creation_order)
    skip_bns = sorted((n for n, v in layers.items() if _kind(v) == "bn" and n not in named), key=_creation_order)
    for name, variables in layers.items():
        kind = _kind(variables)
        if name in named and named[name][0] == kind:
            target = prefix + named[name][1]
        elif name in skip_convs and skip_convs.index(name) < len(_XCEPTION_SKIPS):
            target = f"{prefix}block{_XCEPTION_SKIPS[skip_convs.index(name)]}.skip"
        elif name in skip_bns and skip_bns.index(name) < len(_XCEPTION_SKIPS):
            target = f"{prefix}block{_XCEPTION_SKIPS[skip_bns.index(name)]}.skipbn"
        else:
            continue
        if kind == "bn":
            mapper.bn(name, variables, target)
        else:
            mapper.conv(name, variables, target, kind)
    dropped = dense(mapper, layers) if dense is not None else []
    for name, variables in layers.items():  # anything not mapped stays under its Keras name (-> "unexpected")
        for var, arr in variables.items():
            if (name, var) not in mapper.used:
                mapper.out.setdefault(f"{name}/{var}", arr)
    return mapper.out, dropped, mapper.mismatch


def convert_keras_adcorre(
    sd: Mapping[str, Tensor], own: Mapping[str, Tensor], num_embeddings: int, embedding_dim: int
) -> tuple[dict[str, Tensor], list[str], list[tuple[str, str, tuple[int, ...], tuple[int, ...], str]]]:
    """An official Ad-Corre Keras model (``cnn_model.py::_create_Xception_l2``) -> :class:`fernb.models.adcorre.AdCorre`
    keys (``backbone.*`` timm ``legacy_xception``, ``heads.*``, ``fc.*``); returns what
    :func:`convert_keras_xception` returns.

    The official model is the Keras Xception's layers (flattened into one functional model, so their names are the
    Xception names), then k ``Dense(256)`` embedding heads and the classifier ``Dense(C, name='out')`` on their
    concatenation. The heads get no name in the code, so Keras names them ``dense``, ``dense_1``, ... in creation
    order (the suffixes shift when the session made other Dense layers first); the concatenation follows creation
    order, and so does the order here: Dense layers other than ``out`` and ``predictions``, sorted by their numeric
    suffix. This naming is inferred from Keras's rules, not read from a released file. fernb's k heads are one
    ``Linear(F, k * d)``: head m fills rows ``m*d:(m+1)*d``. A classifier for another class count is dropped (the
    model's ``fc`` is then missing: ``strict=False`` loads the rest). A notop Xception file has no Dense layers: the
    heads and ``fc`` come out missing.

    Raises:
        CheckpointMismatchError: the file has another number of embedding heads than the model.
    """

    def dense(mapper: _Mapper, layers: dict[str, dict[str, Tensor]]) -> list[str]:
        denses = {n: v for n, v in layers.items() if _kind(v) == "dense" and n != "predictions"}
        out_layer = denses.pop("out", None)
        heads = sorted(denses, key=_creation_order)
        k, d = num_embeddings, embedding_dim
        dropped: list[str] = []
        if heads:
            if len(heads) != k:
                raise CheckpointMismatchError(
                    f"the Keras file has {len(heads)} embedding heads ({', '.join(heads[:4])}, ...), the model "
                    f"num_embeddings={k}: build it with num_embeddings={len(heads)}"
                )
            weights, biases = [], []
            feat = own["heads.weight"].shape[1]
            for m, name in enumerate(heads):
                kernel, bias = layers[name]["kernel:0"], layers[name].get("bias:0")
                mapper.used.update({(name, "kernel:0"), (name, "bias:0")})
                target = f"heads.weight[{m * d}:{(m + 1) * d}]"
                if tuple(kernel.shape) != (feat, d):
                    mapper.mismatch.append((name, "kernel:0", tuple(kernel.shape), (feat, d), target))
                elif bias is not None and tuple(bias.shape) != (d,):
                    mapper.mismatch.append((name, "bias:0", tuple(bias.shape), (d,), target.replace("weight", "bias")))
                else:
                    weights.append(_DENSE.to_torch(kernel, (d, feat)))
                    biases.append(bias if bias is not None else torch.zeros(d))
            if len(weights) == k:
                mapper.out["heads.weight"] = torch.cat(weights).to(own["heads.weight"].dtype)
                mapper.out["heads.bias"] = torch.cat(biases).to(own["heads.bias"].dtype)
        if out_layer is not None:
            kernel = out_layer["kernel:0"]
            num_classes, width = own["fc.weight"].shape
            if kernel.dim() == 2 and kernel.shape[0] == width and kernel.shape[1] != num_classes:
                dropped = [f"out/{var}" for var in out_layer]
                mapper.used.update(("out", var) for var in out_layer)
            else:
                mapper.put("out", "kernel:0", kernel, "fc.weight", _DENSE)
                if "bias:0" in out_layer:
                    mapper.put("out", "bias:0", out_layer["bias:0"], "fc.bias", _SAME)
        return dropped

    return convert_keras_xception(sd, own, prefix="backbone.", dense=dense)


def format_mismatch(path: str, mismatch: list[tuple[str, str, tuple[int, ...], tuple[int, ...], str]]) -> str:
    """One line per mis-shaped Keras weight (first 8)."""
    lines = [f"{path}: {len(mismatch)} Keras weight(s) do not fit the model:"]
    for layer, var, got, want, target in mismatch[:8]:
        lines.append(f"  Keras layer {layer!r} {var}: file {got}, model expects {want} (-> {target})")
    if len(mismatch) > 8:
        lines.append(f"  ... (+{len(mismatch) - 8})")
    return "\n".join(lines)
