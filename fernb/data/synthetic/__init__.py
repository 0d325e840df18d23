"""The embedded default data: a procedural generator of facial-expression images.

No FER dataset may be redistributed, so fernb's default data is *made*. Each sample is a face drawn from a vector of
facial-action parameters (loosely FACS action units: brow raise and lower, lid raise and tighten, cheek raise, nose
wrinkle, lip-corner pull and depress, lip stretch and press, jaw drop, ...). An expression class is a *prototype*
vector of those actions (:func:`expression_prototypes`); a sample scales its class prototype by an intensity, adds
the identity's resting face and a little jitter, and renders it over a per-person face geometry with pose, lighting,
occlusion, blur and sensor noise. Every nuisance has a knob in :class:`SyntheticConfig`.

What makes it a testbed rather than a toy:

* **subjects**: ``n_identities`` people with their own geometry, skin, hair and resting face; the train, valid and
  test splits are subject-disjoint (identities split ``split_fractions`` by a seeded permutation).
* **ambiguity**: a fraction ``blend_fraction`` of samples blend two expressions, ``(1 - w) * proto[a] + w * proto[b]``
  with ``w`` in ``blend_weight``; their ground-truth distribution is ``(1 - w, w)`` over ``(a, b)`` (sharpened or
  softened by ``blend_temperature``); pure samples are one-hot (or smoothed by ``label_smoothing``).
* **label noise**: ``noise_rate`` of the samples of ``noisy_splits`` get another *given* label, either uniformly
  (``"symmetric"``) or the most confusable class (``"asymmetric"``, see :data:`CONFUSABLE`). ``targets`` are the given
  labels; ``meta["true_label"]`` and ``meta["is_noisy"]`` keep the truth.

Determinism: sample ``i`` is drawn from a generator seeded by ``(seed, i)`` and identity ``k`` from ``(seed, k)``, and
labels are balanced in blocks of ``C`` consecutive samples, so a sample does not depend on ``n`` or on how the range is
chunked: generating ``[0, n)`` at once, in chunks, or in parallel gives bit-identical arrays.

Generated sets are cached as ``<cache_dir>/synthetic/<config-hash>.npz`` (default ``cache_dir``: the repository's
``data/`` folder, or ``$FERNB_CACHE_DIR``).

Example::

    from fernb.data import load_dataset
    train = load_dataset("synthetic", split="train", n=5000, size=64, seed=0)   # n counts all three splits
    test8 = load_dataset("synthetic", split="test", n=5000, classes="ferplus8")  # with contempt
    faces = generate(SyntheticConfig(n=500, noise_mode="asymmetric"))           # arrays, no cache
"""

from .actions import ACTIONS, CONFUSABLE, OCCLUSION_TYPES, expression_actions, expression_prototypes
from .cache import cache_path, get_synthetic
from .config import GENERATOR_VERSION, SyntheticConfig
from .generator import SyntheticFaces, generate
from .identities import FaceIdentity
from .reader import load_synthetic
from .render import render_face

__all__ = [
    "ACTIONS",
    "CONFUSABLE",
    "OCCLUSION_TYPES",
    "GENERATOR_VERSION",
    "SyntheticConfig",
    "SyntheticFaces",
    "FaceIdentity",
    "expression_prototypes",
    "expression_actions",
    "render_face",
    "generate",
    "get_synthetic",
    "cache_path",
    "load_synthetic",
]
