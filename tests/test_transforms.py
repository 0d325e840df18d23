"""Transforms: every preset builds at every size, eval is deterministic, train repeats under a seed, the official
details (erasing, ARM noise, BGR, gray replication) hold, and the specs round-trip through JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from fernb.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    GaussianNoise,
    RandomApplyOneOf,
    ToChannels,
    TransformSpec,
    augmentation_gallery,
    build_transforms,
    denormalize,
    describe,
    list_presets,
    random_erasing,
    to_display,
    transform_spec,
)

PRESETS = list_presets()
SIZES = [48, 64, 112, 224]
# Presets whose train pipeline draws random numbers (Ad-Corre's online pipeline has no augmentation).
RANDOM_PRESETS = [p for p in PRESETS if p != "adcorre"]


def _gray(h: int = 48, w: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")


def _rgb(h: int = 100, w: int = 100, seed: int = 1) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


INPUTS = {"gray": _gray(), "rgb": _rgb()}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    # Per-image transforms run single-threaded (as in DataLoader workers); thread start-up dominates otherwise.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_presets_cover_every_official_method() -> None:
    for name in [
        "poster_v2",
        "poster_v2_affectnet",
        "arbex",
        "arm",
        "adcorre",
        "esr",
        "manet",
        "diversified_rafdb",
        "resnet18",
        "default",
    ]:
        assert name in PRESETS


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("method", PRESETS)
def test_preset_gives_3_channel_float_tensor(method: str, train: bool, size: int) -> None:
    t = build_transforms(method, train, size)
    for kind, img in INPUTS.items():
        torch.manual_seed(0)
        x = t(img)
        assert isinstance(x, torch.Tensor), kind
        assert x.shape == (3, size, size), (kind, x.shape)
        assert x.dtype == torch.float32
        assert torch.isfinite(x).all()


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("method", PRESETS)
def test_preset_keeps_one_channel_when_asked(method: str, train: bool) -> None:
    t = build_transforms(method, train, 64, grayscale_to_rgb=False)
    assert t.spec.channels == 1
    for img in INPUTS.values():
        torch.manual_seed(0)
        assert t(img).shape == (1, 64, 64)


def test_gray_input_is_replicated_into_three_equal_channels() -> None:
    x = build_transforms("adcorre", False, 48)(INPUTS["gray"])  # no normalisation: channels must be identical
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert torch.allclose(x[0], TF.to_tensor(INPUTS["gray"])[0])


def test_numpy_arrays_are_accepted() -> None:
    arr = np.asarray(INPUTS["rgb"])
    t = build_transforms("poster_v2", False, 64)
    assert torch.equal(t(arr), t(INPUTS["rgb"]))
    assert ToChannels(3)(np.asarray(INPUTS["gray"])).mode == "RGB"
    with pytest.raises(TypeError, match="uint8"):
        ToChannels(3)(arr.astype(np.float32))


@pytest.mark.parametrize("method", PRESETS)
def test_eval_transform_is_deterministic_and_only_resizes_and_normalises(method: str) -> None:
    t = build_transforms(method, False, 64)
    torch.manual_seed(1)
    a = t(INPUTS["rgb"])
    torch.manual_seed(2)
    b = t(INPUTS["rgb"])
    assert torch.equal(a, b)
    names = [s["name"] for s in t.spec.steps]
    assert set(names) <= {"to_channels", "resize", "to_tensor", "to_bgr", "normalize"}


@pytest.mark.parametrize("method", PRESETS)
def test_train_transform_repeats_under_a_fixed_torch_seed(method: str) -> None:
    t = build_transforms(method, True, 64)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        outs.append(torch.stack([t(INPUTS["rgb"]) for _ in range(4)]))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("method", RANDOM_PRESETS)
def test_train_transform_varies_with_the_seed(method: str) -> None:
    t = build_transforms(method, True, 64)
    views = []
    for seed in range(6):
        torch.manual_seed(seed)
        views.append(t(INPUTS["rgb"]))
    assert any(not torch.equal(views[0], v) for v in views[1:])


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as err:
        build_transforms("posterv3", True, 64)
    for name in PRESETS:
        assert name in str(err.value)


@pytest.mark.parametrize("size", [0, 7, 64.0, True])
def test_bad_img_size_is_refused(size: object) -> None:
    with pytest.raises(ValueError, match="img_size"):
        build_transforms("default", True, size)  # type: ignore[arg-type]


def test_aliases_resolve_to_presets() -> None:
    assert transform_spec("MA-Net", True, 64).method == "manet"
    assert transform_spec("diversified_affectnet", True, 64).method == "esr"


def test_official_constants_are_recorded() -> None:
    erase = {p: [s for s in transform_spec(p, True, 224).steps if s["name"] == "random_erasing"] for p in PRESETS}
    assert erase["poster_v2"][0]["p"] == 0.5 and erase["poster_v2"][0]["scale"] == [0.02, 0.1]
    assert erase["poster_v2_affectnet"][0]["p"] == 1.0 and erase["poster_v2_affectnet"][0]["scale"] == [0.05, 0.05]
    assert erase["arm"][0]["scale"] == [0.02, 0.1]
    assert erase["diversified_rafdb"][0]["scale"] == [0.02, 0.25]
    assert erase["arbex"] == [] and erase["esr"] == [] and erase["manet"] == []
    arm = transform_spec("arm", True, 224).steps
    assert arm[1]["name"] == "one_of" and arm[1]["p"] == 0.5 and arm[1]["steps"][1]["var"] == 30.0
    arbex = transform_spec("arbex", True, 224).steps
    assert {"name": "resize", "size": 246} in arbex and {"name": "random_crop", "size": 224} in arbex
    # POSTER_V2 erases after Normalize (fills the mean colour); ARBEx's unused heavy pipeline erases before it.
    pv2 = [s["name"] for s in transform_spec("poster_v2", True, 224).steps]
    assert pv2.index("random_erasing") > pv2.index("normalize")
    heavy = [s["name"] for s in transform_spec("arbex_heavy", True, 224).steps]
    assert heavy.index("random_erasing") < heavy.index("normalize")
    assert transform_spec("esr", True, 96).mean is None and transform_spec("manet", True, 224).mean is None
    assert transform_spec("arm", False, 224).mean == IMAGENET_MEAN


def test_every_preset_documents_its_source() -> None:
    for name in PRESETS:
        src = transform_spec(name, True, 64).source
        assert len(src) > 40
        if name not in ("resnet18", "default"):
            assert "§" in src, name


def test_random_erasing_with_p1_erases_the_requested_area() -> None:
    x = torch.ones(3, 100, 100)
    er = random_erasing(p=1.0, scale=(0.1, 0.1), fill="zero")
    torch.manual_seed(0)
    fracs = [float((er(x.clone()) == 0).all(0).float().mean()) for _ in range(20)]
    assert all(0.07 <= f <= 0.13 for f in fracs), fracs


def test_random_erasing_black_fill_after_normalisation() -> None:
    x = torch.full((3, 64, 64), 5.0)
    er = random_erasing(p=1.0, scale=(0.2, 0.2), fill="black", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    torch.manual_seed(0)
    y = er(x)
    erased = (y != 5.0).all(0)
    assert erased.float().mean() > 0.15
    back = denormalize(y, IMAGENET_MEAN, IMAGENET_STD)[:, erased]
    assert torch.allclose(back, torch.zeros_like(back), atol=1e-6)


def test_poster_v2_affectnet_always_erases_five_percent() -> None:
    t = build_transforms("poster_v2_affectnet", True, 112)
    for seed in range(5):
        torch.manual_seed(seed)
        x = t(INPUTS["rgb"])
        frac = float((x == 0).all(0).float().mean())
        assert 0.035 <= frac <= 0.065, frac


def test_arm_noise_has_variance_30() -> None:
    img = Image.fromarray(np.full((256, 256, 3), 128, np.uint8), "RGB")
    torch.manual_seed(0)
    diff = np.asarray(GaussianNoise(var=30.0)(img), np.float64) - 128.0
    # The official uint8 cast truncates: variance 30 + 1/12, mean -0.5.
    assert abs(diff.var() - 30.0) < 1.0, diff.var()
    assert abs(diff.mean() + 0.5) < 0.1, diff.mean()
    torch.manual_seed(0)
    diff_r = np.asarray(GaussianNoise(var=30.0, round=True)(img), np.float64) - 128.0
    assert abs(diff_r.var() - 30.0) < 1.0 and abs(diff_r.mean()) < 0.1


def test_arm_noise_is_clipped_to_the_pixel_range() -> None:
    img = Image.fromarray(np.full((64, 64), 254, np.uint8), "L")
    torch.manual_seed(0)
    out = np.asarray(GaussianNoise(var=30.0)(img))
    assert out.max() == 255 and out.dtype == np.uint8


def test_arm_augmentation_applies_one_of_flip_or_noise_with_p_half() -> None:
    arr = np.zeros((8, 8), np.uint8)
    arr[:, :4] = 100  # left half bright: a flip is visible, noise leaves the halves in place
    img = Image.fromarray(arr, "L")
    flipped = np.asarray(TF.hflip(img))
    aug = build_transforms("arm", True, 8).transforms[1]
    assert isinstance(aug, RandomApplyOneOf)
    torch.manual_seed(0)
    kinds = {"same": 0, "flip": 0, "noise": 0}
    for _ in range(2000):
        out = np.asarray(aug(img))
        if np.array_equal(out, arr):
            kinds["same"] += 1
        elif np.array_equal(out, flipped):
            kinds["flip"] += 1
        else:
            kinds["noise"] += 1
    # Expected 1000 / 500 / 500 (binomial sd <= 22); 5-sigma tolerance.
    assert abs(kinds["same"] - 1000) < 115 and abs(kinds["flip"] - 500) < 100 and abs(kinds["noise"] - 500) < 100


def test_esr_outputs_bgr_by_default() -> None:
    bgr = build_transforms("esr", False, 64)(INPUTS["rgb"])
    rgb = build_transforms("esr", False, 64, bgr=False)(INPUTS["rgb"])
    assert torch.equal(bgr, rgb.flip(0))
    assert transform_spec("esr", False, 64).bgr and not transform_spec("arm", False, 64).bgr


def test_mean_std_override_adds_normalisation() -> None:
    plain = build_transforms("manet", False, 64)(INPUTS["rgb"])
    normed = build_transforms("manet", False, 64, mean=(0.5,), std=(0.25,))(INPUTS["rgb"])
    assert torch.allclose(normed, (plain - 0.5) / 0.25, atol=1e-6)
    with pytest.raises(ValueError, match="both"):
        build_transforms("manet", False, 64, mean=(0.5,))


def test_denormalize_inverts_the_eval_normalisation() -> None:
    x = build_transforms("poster_v2", False, 48)(INPUTS["rgb"])
    ref = TF.to_tensor(TF.resize(INPUTS["rgb"], [48, 48], antialias=True))
    assert torch.allclose(denormalize(x, IMAGENET_MEAN, IMAGENET_STD), ref, atol=1e-5)
    batch = denormalize(x[None].repeat(2, 1, 1, 1), IMAGENET_MEAN, IMAGENET_STD)
    assert batch.shape == (2, 3, 48, 48)


def test_to_display_gives_uint8_rgb() -> None:
    x = build_transforms("poster_v2", False, 48)(INPUTS["rgb"])
    img = to_display(x, IMAGENET_MEAN, IMAGENET_STD)
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    expected = np.asarray(TF.resize(INPUTS["rgb"], [48, 48], antialias=True))
    assert np.abs(img.astype(int) - expected.astype(int)).max() <= 1
    gray = to_display(torch.rand(1, 8, 8))
    assert gray.shape == (8, 8, 3) and (gray[..., 0] == gray[..., 2]).all()
    with pytest.raises(ValueError, match="C, H, W"):
        to_display(torch.rand(4, 8, 8))


@pytest.mark.parametrize("method", ["arm", "esr", "default"])
def test_gallery_is_deterministic_and_leaves_the_rng_alone(method: str) -> None:
    t = build_transforms(method, True, 48)
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    a = augmentation_gallery(INPUTS["rgb"], t, n=6, seed=3)
    assert torch.equal(torch.rand(1), before)
    b = augmentation_gallery(INPUTS["rgb"], t, n=6, seed=3)
    c = augmentation_gallery(INPUTS["rgb"], t, n=6, seed=4)
    assert len(a) == 6 and all(v.shape == (48, 48, 3) and v.dtype == np.uint8 for v in a)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c, strict=True))
    assert len({v.tobytes() for v in a}) > 1


def test_esr_gallery_shows_rgb_again() -> None:
    t = build_transforms("esr", False, 48)
    view = augmentation_gallery(INPUTS["rgb"], t, n=1)[0]
    expected = np.asarray(TF.resize(INPUTS["rgb"], [48, 48], antialias=True))
    assert np.abs(view.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("method", PRESETS)
def test_spec_round_trips_through_json(method: str) -> None:
    t = build_transforms(method, True, 64)
    d = json.loads(json.dumps(describe(t)))
    assert d == t.spec.to_dict()
    rebuilt = TransformSpec.from_dict(d).build()
    torch.manual_seed(5)
    a = t(INPUTS["rgb"])
    torch.manual_seed(5)
    b = rebuilt(INPUTS["rgb"])
    assert torch.equal(a, b)


def test_describe_handles_plain_callables() -> None:
    from torchvision import transforms as T

    d = describe(T.Compose([T.ToTensor()]))
    assert d["method"] == "custom" and d["steps"] == ["ToTensor()"]
    json.dumps(describe(lambda x: x))


def test_unknown_step_is_refused() -> None:
    spec = TransformSpec("custom", True, 32, steps=[{"name": "sharpen"}])
    with pytest.raises(ValueError, match="known steps"):
        spec.build()
