"""Face alignment of whole splits: detect once, cache the landmarks on disk, warp onto the template at any size.

``data.align`` (:class:`fernb.engine.config.DataConfig`) turns this on for a run: every image of every split it
reads (train, valid, test, another dataset's split in a cross-dataset evaluation) goes through the same detector and
template, so a model sees the same framing wherever it is scored.

- :class:`AlignSpec` is the option: ``"mtcnn"`` (a detector name) or ``{"detector": "mtcnn", "template": "arcface",
  "size": 112, "use_mouth": True, "border": "replicate"}``; :meth:`AlignSpec.resolve` fixes ``"auto"`` detector and
  template (the method's published preprocessing, :data:`METHOD_TEMPLATES`) and the size (the run's input side);
- :func:`align_split` runs the detector over a split once, caches the landmarks in
  ``<cache_root>/aligned/<name>-<split>-<detector>-<key>.npz`` (the key hashes the sample list, the files' paths,
  sizes and modification times, as :mod:`fernb.data.arrays` does, and the detector with its options), then warps
  every image: faces onto the template, images without a face centre-cropped (what :class:`FaceAligner` does). The
  result holds uint8 ``pixels`` and, per sample, ``meta["face_found"]`` and ``meta["face_score"]``.

The warp is cheap (well under a millisecond per image); detection is what costs, and it is done once per split and
detector, whatever the template and size.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FernbError
from .arrays import _source_key
from .base import FERDataset
from .cache import cache_root
from .faces.align import FaceAligner, alignment_matrix
from .faces.detectors import DETECTORS, create_detector, detector_name
from .faces.geometry import _BORDERS, _warp, center_crop_matrix
from .faces.types import LANDMARK_NAMES, TEMPLATES, Landmarks

__all__ = [
    "AlignError",
    "AlignSpec",
    "METHOD_TEMPLATES",
    "align_split",
    "align_summary",
    "aligned_cache_path",
    "check_align_fields",
]

_VERSION = 1  # bump when what is cached changes meaning
_KEYS = ("detector", "template", "size", "use_mouth", "border", "options")

# The template of each method's published preprocessing; methods not listed take "fer".
# - "arcface" (the 5-point 112x112 similarity template of MTCNN-aligned face pipelines): SCN (Wang et al. 2020)
#   detects and aligns its faces with MTCNN.
# - "fer": the whole face as in the FER2013/FER+ and CK+ crops and RAF-DB's and AffectNet's released aligned images,
#   which ARBEx / POSTER_V2, ARM, Ad-Corre, ESR, MA-Net and the ResNet-18 baseline train on.
METHOD_TEMPLATES: dict[str, str] = {"scn": "arcface"}


class AlignError(FernbError, ValueError):
    """A ``data.align`` value that cannot work, with what to give instead."""


def check_align_fields(value: Any, where: str = "data.align") -> None:
    """Check the form of an align option (names, types); whether the detector is installed is checked later.

    Raises:
        AlignError: naming ``where`` (and the field), the value and what is accepted.
    """
    if value is None or value is False or value == "" or value == {}:
        return
    if isinstance(value, str):
        value = {"detector": value}
    if not isinstance(value, Mapping):
        raise AlignError(
            f"{where}={value!r}: expected a detector name ({', '.join([*DETECTORS, 'auto'])}), a mapping such as "
            "{'detector': 'mtcnn', 'template': 'arcface'}, or None (off)"
        )
    unknown = [k for k in value if k not in _KEYS]
    if unknown:
        raise AlignError(f"{where}: unknown key(s) {unknown}; an align spec takes {', '.join(_KEYS)}")
    det = value.get("detector", "auto")
    if not isinstance(det, str) or det.lower() not in (*DETECTORS, "auto"):
        raise AlignError(f"{where}.detector={det!r}: expected one of {', '.join([*DETECTORS, 'auto'])}")
    tpl = value.get("template", "auto")
    if not isinstance(tpl, str) or tpl not in (*TEMPLATES, "auto"):
        raise AlignError(f"{where}.template={tpl!r}: expected one of {', '.join([*TEMPLATES, 'auto'])}")
    size = value.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 16):
        raise AlignError(f"{where}.size={size!r}: expected a side in pixels >= 16, or None (the run's img_size)")
    if not isinstance(value.get("use_mouth", False), bool):
        raise AlignError(f"{where}.use_mouth={value['use_mouth']!r}: expected true or false")
    border = value.get("border", "replicate")
    if border not in _BORDERS:
        raise AlignError(f"{where}.border={border!r}: expected one of {', '.join(sorted(_BORDERS))}")
    if not isinstance(value.get("options", {}), Mapping):
        raise AlignError(f"{where}.options={value['options']!r}: expected a mapping of the detector's options")


@dataclass(frozen=True)
class AlignSpec:
    """How a run aligns its faces.

    Attributes:
        detector: ``"mtcnn"``, ``"mediapipe"``, ``"haar"`` or ``"auto"`` (the best installed:
            :func:`fernb.data.faces.create_detector`).
        template: a :data:`~fernb.data.faces.TEMPLATES` name, or ``"auto"``: the method's (:data:`METHOD_TEMPLATES`).
        size: side of the aligned image; None: the run's ``img_size``.
        use_mouth: fit the nose and mouth too when the detector located them (least squares), not only the eyes.
        border: how pixels outside the image are filled (``"replicate"``, ``"constant"``, ``"reflect"``).
        options: the detector's options (:func:`~fernb.data.faces.create_detector`).
    """

    detector: str = "auto"
    template: str = "auto"
    size: int | None = None
    use_mouth: bool = False
    border: str = "replicate"
    options: dict[str, Any] | None = None

    @classmethod
    def parse(cls, value: Any, where: str = "data.align") -> AlignSpec | None:
        """A spec from a config value (None, ``False``, ``""`` and ``{}`` mean off); see :func:`check_align_fields`."""
        check_align_fields(value, where)
        if value is None or value is False or value == "" or value == {}:
            return None
        if isinstance(value, str):
            value = {"detector": value}
        fields = dict(value)
        fields["detector"] = str(fields.get("detector", "auto")).lower()
        fields["options"] = dict(fields.get("options") or {}) or None
        return cls(**fields)

    def resolve(self, method: str | None = None, img_size: int | None = None) -> AlignSpec:
        """The spec with ``"auto"`` detector and template, and ``size``, fixed (``method``: the model's name).

        Raises:
            fernb.data.faces.MissingDetectorError: the detector's package is not installed (names ``make detectors``).
        """
        det = self.detector
        if det == "auto":
            det = detector_name(create_detector("auto"))
        elif det != "haar":
            create_detector(det, **(self.options or {}))  # fails now, with the package's name, if it is missing
        tpl = self.template if self.template != "auto" else METHOD_TEMPLATES.get((method or "").lower(), "fer")
        size = self.size if self.size is not None else img_size
        if size is None:
            raise AlignError("data.align: no size given and no img_size to take it from")
        return replace(self, detector=det, template=tpl, size=int(size))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- detection once, cached -------------------------------------------------------------------------------------------
def _detector_key(spec: AlignSpec) -> str:
    opts = sorted((spec.options or {}).items())
    return f"{spec.detector}|{opts!r}"


def aligned_cache_path(ds: FERDataset, spec: AlignSpec, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/aligned/<name>-<split>-<detector>-<key>.npz``: the landmarks of every image of ``ds``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    h = hashlib.sha256(f"v{_VERSION}|{_source_key(ds, 0)}|{_detector_key(spec)}".encode())
    return root / "aligned" / f"{ds.name}-{ds.split}-{spec.detector}-{h.hexdigest()[:20]}.npz"


def _detect_all(ds: FERDataset, spec: AlignSpec, progress: bool) -> dict[str, np.ndarray]:
    """Per image: face found, score, the four landmarks (N, 4, 2) and which of them were detected (N, 4)."""
    from tqdm.auto import tqdm

    aligner = FaceAligner(size=64, detector=spec.detector, warn=False, **(spec.options or {}))
    n = len(ds)
    found = np.zeros(n, dtype=bool)
    score = np.zeros(n, dtype=np.float32)
    points = np.full((n, len(LANDMARK_NAMES), 2), np.nan, dtype=np.float32)
    detected = np.zeros((n, len(LANDMARK_NAMES)), dtype=bool)
    desc = f"detecting faces in {ds.name}/{ds.split} ({spec.detector})"
    for i in tqdm(range(n), desc=desc, disable=not progress, leave=False, mininterval=1.0):
        res = aligner.align(np.asarray(ds.load_image(i)))
        if res.box is not None and res.landmarks is not None:
            found[i], score[i] = True, res.box.score
            points[i] = res.landmarks.as_array()
            detected[i] = [res.landmarks.is_detected(k) for k in LANDMARK_NAMES]
    return {"found": found, "score": score, "points": points, "detected": detected}


def _load_or_detect(
    ds: FERDataset, spec: AlignSpec, cache: bool, cache_dir: str | os.PathLike | None, progress: bool
) -> dict[str, np.ndarray]:
    path = aligned_cache_path(ds, spec, cache_dir) if cache else None
    if path is not None and path.is_file():
        try:
            with np.load(path) as z:
                got = {k: z[k] for k in ("found", "score", "points", "detected")}
            if len(got["found"]) == len(ds):
                return got
        except (OSError, ValueError, KeyError):
            pass
    got = _detect_all(ds, spec, progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **got)  # type: ignore[arg-type]  # numpy stubs: **kwds also meets allow_pickle: bool
        os.replace(tmp, path)
    return got


def align_split(
    ds: FERDataset,
    spec: AlignSpec,
    *,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> FERDataset:
    """``ds`` with every image aligned by ``spec`` (resolved: :meth:`AlignSpec.resolve`) into uint8 ``pixels``.

    Faces go onto the template (eyes, plus nose and mouth with ``use_mouth``); an image without a face is
    centre-cropped instead. Gray images stay one channel ``(N, S, S)``, colour ones ``(N, S, S, 3)``.

    Returns:
        A plain :class:`FERDataset` with the same samples, labels and transform, ``meta["face_found"]`` (bool) and
        ``meta["face_score"]`` (float32), and a fingerprint that names the alignment.
    """
    if spec.detector == "auto" or spec.template == "auto" or spec.size is None:
        raise AlignError(f"align_split: resolve the spec first (AlignSpec.resolve); got {spec}")
    det = _load_or_detect(ds, spec, cache, cache_dir, progress)
    size, tpl = int(spec.size), TEMPLATES[spec.template]
    first = np.asarray(ds.load_image(0))
    out = np.empty((len(ds), size, size, *first.shape[2:]), dtype=np.uint8)
    for i in range(len(ds)):
        arr = first if i == 0 else np.asarray(ds.load_image(i))
        if det["found"][i]:
            src = {k: "detected" if d else "from_eyes" for k, d in zip(LANDMARK_NAMES, det["detected"][i])}
            lm = Landmarks.from_array(det["points"][i].astype(np.float64), src)
            matrix = alignment_matrix(lm, size, tpl, use_mouth=spec.use_mouth)
        else:
            matrix = center_crop_matrix(arr.shape[1], arr.shape[0], size)
        out[i] = _warp(arr, matrix, size, spec.border)
    if out.ndim == 4 and bool((out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()):
        out = out[..., 0].copy()
    meta = {**ds.meta, "face_found": det["found"].copy(), "face_score": det["score"].copy()}
    key = f"{ds.fingerprint()}|{_detector_key(spec)}|{spec.template}|{size}|{spec.use_mouth}|{spec.border}"
    return ds.with_pixels(out, meta=meta, fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16])


def align_summary(ds: FERDataset) -> dict[str, Any] | None:
    """``{"n", "faces_found", "face_rate"}`` of an aligned split, or None when it was not aligned."""
    found = ds.meta.get("face_found")
    if found is None:
        return None
    k = int(np.asarray(found, dtype=bool).sum())
    return {"n": len(ds), "faces_found": k, "face_rate": round(k / max(1, len(ds)), 4)}
