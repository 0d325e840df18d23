"""Label noise on any dataset: flip a seeded, exact share of the training labels, and keep the truth beside them.

The noisy-label FER protocol (SCN, RUL, EAC) trains on a split whose labels were partly replaced and scores on the
clean test split. Three kinds of noise:

- ``symmetric``: each chosen sample gets one of the C - 1 *other* classes of the label space, uniformly;
- ``asymmetric``: each chosen sample gets its class's most confusable class, from :data:`FER_CONFUSION`;
- ``file``: the labels of a published noisy label file in RAF-DB's ``EmoLabel/list_patition_label.txt`` format
  (``train_00001.jpg 5`` lines, RAF-DB's 1-based codes 1..7 = Surprise, Fear, Disgust, Happiness, Sadness, Anger,
  Neutral), such as ``noise01.txt`` / ``noise02.txt`` / ``noise03.txt`` (10 / 20 / 30 %) of the
  Erasing-Attention-Consistency repository (Zhang et al., ECCV 2022), matched to the samples by file name
  (``train_00001.jpg`` and ``train_00001_aligned.jpg`` are the same sample).

Exact and seeded: for ``symmetric`` and ``asymmetric`` exactly ``round(rate * N)`` samples of the N given (rounded
half up) are drawn without replacement by a generator seeded from ``seed`` alone, and for ``symmetric`` their new
classes by the same generator: the same samples and the same seed give the same flips, whatever the run seed (a spec
without ``seed`` takes the run's). The realised rate is therefore ``round(rate * N) / N``, not a per-sample coin.

Every sample keeps its given and its true label as the synthetic data does: ``targets`` are the given (noisy)
labels, ``meta["true_label"]`` the truth and ``meta["is_noisy"]`` = given != true; a dataset that already knows its
truth (the synthetic data) keeps that truth, so flips add to its own noise (and a flip can land back on the truth).
``meta["label_noise_flipped"]`` marks the samples this noise changed. A flipped sample's label distribution
(``dists``, e.g. FER+ votes) becomes the one-hot distribution of its new label: the votes described the old label,
and a noisy label carries no distribution of its own.

The confusion table :data:`FER_CONFUSION` ranks, for each canonical class, the classes it is most often mistaken for
in the confusion matrices that FER papers report on RAF-DB, FER+ and AffectNet (e.g. SCN, Wang et al. CVPR 2020;
RUL, Zhang et al. NeurIPS 2021; FER+, Barsoum et al. ICMI 2016): fear and surprise (both raise the brows and open
the eyes and mouth), disgust and anger (lowered brows, raised upper lip), sadness and neutral (low-intensity faces),
happiness and neutral, contempt and neutral (a one-sided lip-corner pull). It is a fixed, documented choice, not a
measurement of fernb's: a class is sent to the first class of its list that the dataset's label space has, so the
table serves a 7- or 8-class space, CK+'s space without neutral, and Aff-Wild2's ``other`` alike; a class none of
whose partners is in the space is never flipped.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import CANONICAL, DATASET_ORDERS, LabelSpace
from .base import FERDataset
from .errors import DataFormatError, FernbDataError

__all__ = [
    "NOISE_KINDS",
    "FER_CONFUSION",
    "LabelNoiseError",
    "LabelNoiseSpec",
    "LabelNoise",
    "check_label_noise_fields",
    "confusion_partners",
    "read_noise_file",
    "plan_label_noise",
    "apply_label_noise",
]

NOISE_KINDS: tuple[str, ...] = ("symmetric", "asymmetric", "file")

# canonical class -> the classes it is most often confused with, most confusable first (module docstring)
FER_CONFUSION: dict[str, tuple[str, ...]] = {
    "neutral": ("sad", "happy", "contempt", "angry"),
    "happy": ("neutral", "surprise", "contempt"),
    "sad": ("neutral", "fear", "disgust"),
    "surprise": ("fear", "happy", "neutral"),
    "fear": ("surprise", "sad", "disgust"),
    "disgust": ("angry", "sad", "neutral"),
    "angry": ("disgust", "sad", "neutral"),
    "contempt": ("neutral", "happy", "disgust"),
    "other": ("neutral", "sad", "surprise"),
}

_KEYS = ("kind", "rate", "seed", "file")
_STREAM = 0x6E6F6973  # "nois": the noise generator's stream, apart from every other seeded draw of fernb
_FILE_LINE = '"<image name> <RAF-DB label 1..7>", e.g. "train_00001.jpg 5"'


class LabelNoiseError(FernbDataError, ValueError):
    """A label-noise option that does not fit, or data it cannot be applied to; the message says what to do."""


def check_label_noise_fields(spec: Mapping[str, Any] | None, where: str = "label_noise") -> None:
    """Check each given field of a label-noise spec on its own (keys, kind, rate range, seed, file type).

    Fields are checked one by one so that dotted overrides can set them one at a time; :meth:`LabelNoiseSpec.parse`
    checks that the spec is complete.

    Raises:
        LabelNoiseError: naming ``where.<field>``, the value, and what is accepted.
    """
    if not spec:
        return
    if not isinstance(spec, Mapping):
        raise LabelNoiseError(f"{where}={spec!r}: expected a mapping such as {{'rate': 0.3, 'kind': 'symmetric'}}")
    unknown = [k for k in spec if k not in _KEYS]
    if unknown:
        raise LabelNoiseError(f"{where}: unknown key(s) {unknown}; a label-noise spec takes {', '.join(_KEYS)}")
    kind = spec.get("kind")
    if kind is not None and kind not in NOISE_KINDS:
        raise LabelNoiseError(f"{where}.kind={kind!r}: expected one of {', '.join(NOISE_KINDS)}")
    rate = spec.get("rate")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
            raise LabelNoiseError(
                f"{where}.rate={rate!r}: expected the share of training labels to flip, a number in [0, 1) "
                "(0.3 flips 30 %)"
            )
    seed = spec.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise LabelNoiseError(f"{where}.seed={seed!r}: expected a non-negative integer (leave it out: the run seed)")
    file = spec.get("file")
    if file is not None and not isinstance(file, (str, Path)):
        raise LabelNoiseError(f"{where}.file={file!r}: expected the path of a noisy label file")


@dataclass(frozen=True)
class LabelNoiseSpec:
    """A checked, complete label-noise option.

    Attributes:
        kind: one of :data:`NOISE_KINDS`.
        rate: the share of labels to flip (``symmetric``, ``asymmetric``); None for ``file``.
        seed: the noise's own seed; None takes the run seed.
        file: the noisy label file (``file``).
    """

    kind: str
    rate: float | None = None
    seed: int | None = None
    file: Path | None = None

    @classmethod
    def parse(
        cls, spec: Mapping[str, Any] | LabelNoiseSpec | None, where: str = "label_noise", *, check_file: bool = True
    ) -> LabelNoiseSpec | None:
        """The spec of a mapping such as ``{"rate": 0.3, "kind": "symmetric", "seed": 0}`` (kind defaults to
        ``symmetric``); None for None or an empty mapping (no noise).

        Raises:
            LabelNoiseError: a field out of range, a missing ``rate`` or ``file``, a ``rate`` given with ``file``, or
                (with ``check_file``) a file that does not exist; the message names ``where.<field>``.
        """
        if spec is None or isinstance(spec, LabelNoiseSpec):
            return spec
        check_label_noise_fields(spec, where)
        if not spec:
            return None
        kind = str(spec.get("kind") or "symmetric")
        rate, seed, file = spec.get("rate"), spec.get("seed"), spec.get("file")
        if kind == "file":
            if file is None:
                raise LabelNoiseError(
                    f"{where}.kind='file' needs {where}.file: the path of a noisy label file in RAF-DB's "
                    "list_patition_label.txt format (e.g. EAC's EmoLabel/noise03.txt)"
                )
            if rate is not None:
                raise LabelNoiseError(
                    f"{where}.rate={rate!r} with kind='file': the file gives the labels (its rate is recorded in "
                    "run.json); leave rate out"
                )
            path = Path(file).expanduser()
            if check_file and not path.is_file():
                raise LabelNoiseError(
                    f"{where}.file={str(file)!r}: no such file; give the path of a noisy label file such as "
                    "EAC's EmoLabel/noise03.txt"
                )
            return cls(kind, None, seed, path)
        if rate is None:
            raise LabelNoiseError(f"{where}.rate is missing: {kind} noise needs the share of labels to flip, e.g. 0.3")
        if file is not None:
            raise LabelNoiseError(f"{where}.file={str(file)!r} is only read with kind='file' (kind is {kind!r})")
        return cls(kind, float(rate), seed, None)


def confusion_partners(space: LabelSpace) -> np.ndarray:
    """(C,) the label index each class of ``space`` goes to under ``asymmetric`` noise: the first class of its
    :data:`FER_CONFUSION` list that ``space`` has; -1 where none is."""
    out = np.full(len(space), -1, np.int64)
    for i, name in enumerate(space.names):
        partner = next((p for p in FER_CONFUSION[name] if p in space.names), None)
        if partner is not None:
            out[i] = space.names.index(partner)
    return out


def _sample_key(name: str) -> str:
    """``train_00001.jpg`` and ``.../train_00001_aligned.jpg`` -> ``train_00001``."""
    stem = Path(name).stem
    return stem[: -len("_aligned")] if stem.endswith("_aligned") else stem


def read_noise_file(path: str | Path) -> dict[str, tuple[int, int]]:
    """The labels of a noisy label file in RAF-DB's ``list_patition_label.txt`` format.

    Returns:
        ``{sample key: (canonical class index, line number)}``; the key is the image name without extension and
        without an ``_aligned`` suffix.

    Raises:
        DataFormatError: naming the file and line of a line that does not parse, a label outside 1..7, or a name
            listed twice.
    """
    path = Path(path)
    order = DATASET_ORDERS["rafdb"]
    out: dict[str, tuple[int, int]] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataFormatError(path, f"cannot parse {raw!r}", lineno, _FILE_LINE)
        name, label = parts
        try:
            code = int(label)
        except ValueError:
            raise DataFormatError(path, f"label {label!r} is not a whole number", lineno, _FILE_LINE) from None
        if not 1 <= code <= len(order):
            raise DataFormatError(
                path, f"label {code} is out of range", lineno, "RAF-DB labels 1..7 (" + ", ".join(order) + ")"
            )
        key = _sample_key(name)
        if key in out:
            raise DataFormatError(
                path, f"{name!r} is listed twice (first on line {out[key][1]})", lineno, "one line per image"
            )
        out[key] = (CANONICAL.index(order[code - 1]), lineno)
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_targets(ds: FERDataset, path: Path) -> np.ndarray:
    """The given labels a noisy label file assigns to the samples of ``ds``, in ``ds``'s label space."""
    if ds.paths is None:
        raise LabelNoiseError(
            f"label noise kind='file' ({path}) matches samples by file name, and {ds.name}/{ds.split} holds decoded "
            "pixels without names; use a dataset read from image files (RAF-DB), or kind='symmetric'/'asymmetric'"
        )
    labels = read_noise_file(path)
    space = ds.label_space
    out = np.empty(len(ds), np.int64)
    missing: list[str] = []
    for i, p in enumerate(ds.paths):
        key = _sample_key(p.name)
        hit = labels.get(key)
        if hit is None:
            missing.append(p.name)
            continue
        cls, lineno = hit
        name = CANONICAL[cls]
        if name not in space.names:
            raise DataFormatError(
                path,
                f"{key} is labelled {name!r}, which the label space {space.name!r} of {ds.name}/{ds.split} lacks",
                lineno,
                f"labels of the classes {', '.join(space.names)}",
            )
        out[i] = space.names.index(name)
    if missing:
        raise DataFormatError(
            path,
            f"no label for {len(missing)} of the {len(ds)} training samples of {ds.name}/{ds.split} "
            f"(e.g. {', '.join(missing[:3])})",
            expected="a line for every training image, as EAC's noise0N.txt have; check that the file belongs to "
            "this dataset",
        )
    return out


@dataclass
class LabelNoise:
    """The noise planned for one split: new given labels and what was recorded about them.

    Attributes:
        targets: (N,) the given labels after the noise.
        flipped: (N,) bool, the samples whose given label the noise changed.
        source_targets: (N,) the given labels before the noise (checked by :meth:`apply`).
        record: what ``run.json`` keeps (``data.label_noise``): kind, rate asked, seed, file and its sha256,
            the realised rate overall and per class (of the label before the noise).
    """

    targets: np.ndarray
    flipped: np.ndarray
    source_targets: np.ndarray
    record: dict[str, Any]

    def apply(self, ds: FERDataset) -> FERDataset:
        """``ds`` (the split the noise was planned on, or the same samples in the same order, e.g. decoded into an
        array) with the noisy given labels, the true labels kept in ``meta`` and flipped distributions one-hot."""
        if len(ds) != len(self.targets) or not np.array_equal(ds.targets, self.source_targets):
            raise ValueError(
                f"{ds.name}/{ds.split}: this label noise was planned on other samples ({len(self.targets)} samples "
                f"planned, {len(ds)} given)"
            )
        out = ds.subset(np.arange(len(ds)))
        out.targets = self.targets.copy()
        if out.dists is not None and self.flipped.any():
            dists = out.dists.copy()
            rows = np.flatnonzero(self.flipped)
            dists[rows] = 0.0
            dists[rows, self.targets[rows]] = 1.0
            out.dists = dists
        meta = dict(out.meta)
        true = meta["true_label"] if "true_label" in meta else self.source_targets.copy()
        meta["true_label"] = np.asarray(true, dtype=np.int64)
        meta["is_noisy"] = out.targets != meta["true_label"]
        meta["label_noise_flipped"] = self.flipped.copy()
        out.meta = meta
        if ds.source_fingerprint is not None:  # decoded pixels keep the files' fingerprint: add the new labels
            h = hashlib.sha256(f"{ds.source_fingerprint}|label_noise|".encode())
            h.update(out.targets.tobytes())
            out.source_fingerprint = h.hexdigest()[:16]
        return out


def _per_class(names: tuple[str, ...], labels: np.ndarray, flipped: np.ndarray) -> dict[str, Any]:
    counts = np.bincount(labels, minlength=len(names))
    flips = np.bincount(labels[flipped], minlength=len(names))
    return {
        "realised_rate_per_class": {
            n: (float(f / c) if c else None) for n, c, f in zip(names, counts.tolist(), flips.tolist(), strict=True)
        },
        "flipped_per_class": {n: int(f) for n, f in zip(names, flips.tolist(), strict=True)},
        "class_counts": {n: int(c) for n, c in zip(names, counts.tolist(), strict=True)},
    }


def plan_label_noise(
    ds: FERDataset, spec: Mapping[str, Any] | LabelNoiseSpec, seed: int = 0, *, where: str = "label_noise"
) -> LabelNoise:
    """The noise ``spec`` puts on the given labels of ``ds`` (a pure function of the samples, labels and seed).

    Args:
        ds: the split to make noisy (the part of the training split that trains).
        spec: a mapping (see :meth:`LabelNoiseSpec.parse`) or a parsed spec.
        seed: the seed used when the spec has none (the run seed).
        where: the option's name in error messages.

    Raises:
        LabelNoiseError: the spec does not fit, or the split cannot take it (one class; too few samples of
            classes with a confusable partner for ``asymmetric``).
        DataFormatError: a noisy label file that does not parse or does not cover the split.
    """
    parsed = LabelNoiseSpec.parse(spec, where)
    if parsed is None:
        raise LabelNoiseError(f"{where} is empty: nothing to plan")
    space, n = ds.label_space, len(ds)
    source = ds.targets.copy()
    used_seed = int(parsed.seed if parsed.seed is not None else seed)
    record: dict[str, Any] = {
        "kind": parsed.kind,
        "rate": parsed.rate,
        "seed": used_seed,
        "seed_from": "label_noise" if parsed.seed is not None else "run",
        "split": ds.split,
        "n": n,
    }
    if parsed.kind == "file":
        assert parsed.file is not None
        targets = _file_targets(ds, parsed.file)
        record.update(file=str(parsed.file), file_sha256=_file_sha256(parsed.file))
    else:
        assert parsed.rate is not None
        k = int(math.floor(parsed.rate * n + 0.5))
        targets = source.copy()
        c = len(space)
        rng = np.random.default_rng([used_seed, _STREAM])
        if parsed.kind == "symmetric":
            if c < 2 and k:
                raise LabelNoiseError(f"{where}: symmetric noise needs two classes at least; {space.name} has {c}")
            chosen = np.sort(rng.permutation(n)[:k])
            draw = rng.integers(0, max(1, c - 1), size=k)
            targets[chosen] = draw + (draw >= source[chosen])
        else:
            partners = confusion_partners(space)
            eligible = np.flatnonzero(partners[source] >= 0)
            if k > len(eligible):
                raise LabelNoiseError(
                    f"{where}: asymmetric noise at rate {parsed.rate} flips {k} of {n} samples, but only "
                    f"{len(eligible)} are of classes with a confusable partner in {space.name} "
                    f"({', '.join(space.names)}); lower the rate or use kind='symmetric'"
                )
            chosen = np.sort(eligible[rng.permutation(len(eligible))[:k]])
            targets[chosen] = partners[source[chosen]]
            record["mapping"] = {space.names[i]: space.names[int(j)] for i, j in enumerate(partners.tolist()) if j >= 0}
    flipped = targets != source
    true = ds.meta.get("true_label")
    noisy = targets != (np.asarray(true) if true is not None else source)
    record.update(
        flipped=int(flipped.sum()),
        realised_rate=float(flipped.mean()) if n else 0.0,
        noisy_rate=float(noisy.mean()) if n else 0.0,
        **_per_class(space.names, source, flipped),
    )
    return LabelNoise(targets, flipped, source, record)


def apply_label_noise(
    ds: FERDataset, spec: Mapping[str, Any] | LabelNoiseSpec, seed: int = 0, *, where: str = "label_noise"
) -> tuple[FERDataset, dict[str, Any]]:
    """``ds`` with label noise (see the module docstring) and the noise's record.

    Example::

        noisy, record = apply_label_noise(train, {"rate": 0.3, "kind": "symmetric", "seed": 0})
        noisy.meta["is_noisy"].mean()   # 0.3 (to the nearest sample)
    """
    noise = plan_label_noise(ds, spec, seed, where=where)
    return noise.apply(ds), noise.record
