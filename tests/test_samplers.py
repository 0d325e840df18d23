"""Samplers: class balance (statistical for weighted/oversample, exact for MRR), replacement rules, seeded epochs,
DDP shards, the factory's errors, and use with a DataLoader and a FERDataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fernb.data import FERDataset
from fernb.data.samplers import (
    ClassCapSampler,
    ImbalancedOversampler,
    MinimalRandomResampler,
    WeightedClassSampler,
    build_sampler,
    class_counts,
    list_samplers,
)
from fernb.labels import get_label_space

COUNTS = [500, 200, 50, 20, 5]
TARGETS = np.repeat(np.arange(len(COUNTS)), COUNTS).astype(np.int64)
# Shuffle the label order so that index order does not reveal the class.
TARGETS = TARGETS[np.random.default_rng(0).permutation(len(TARGETS))]
N, C = len(TARGETS), len(COUNTS)
RANDOM_SAMPLERS = [s for s in list_samplers() if s != "sequential"]


def _per_class(idx: np.ndarray) -> np.ndarray:
    return np.bincount(TARGETS[idx], minlength=C)


@pytest.mark.parametrize("name", ["weighted", "oversample"])
def test_inverse_frequency_samplers_balance_the_classes(name: str) -> None:
    s = build_sampler(name, TARGETS, seed=0, num_samples=5000)
    got = _per_class(np.array(list(s)))
    # Each class: Binomial(5000, 1/5), mean 1000, sd ~28; 5-sigma tolerance.
    assert np.all(np.abs(got - 1000) < 142), got


@pytest.mark.parametrize("name", ["weighted", "oversample"])
def test_inverse_frequency_samplers_draw_len_dataset_with_replacement(name: str) -> None:
    s = build_sampler(name, TARGETS, seed=0)
    idx = np.array(list(s))
    assert len(s) == len(idx) == N
    assert len(np.unique(idx[TARGETS[idx] == 4])) <= 5  # class 4 has 5 samples but gets ~155 draws
    assert _per_class(idx)[4] > 100


def test_weighted_power_half_gives_square_root_shares() -> None:
    s = WeightedClassSampler(TARGETS, 20000, power=0.5, seed=1)
    share = _per_class(np.array(list(s))) / 20000
    expected = np.sqrt(COUNTS) / np.sqrt(COUNTS).sum()
    assert np.allclose(share, expected, atol=0.015), (share, expected)


def test_weighted_class_weights_and_without_replacement() -> None:
    s = WeightedClassSampler(TARGETS, 100, class_weights=[0, 0, 1, 1, 0], seed=0)
    assert set(TARGETS[list(s)]) <= {2, 3}
    s = WeightedClassSampler(TARGETS, N, replacement=False, seed=0)
    assert sorted(s) == list(range(N))
    with pytest.raises(ValueError, match="replacement"):
        WeightedClassSampler(TARGETS, N + 1, replacement=False)


def test_oversampler_counts_classes_over_the_given_indices_only() -> None:
    sub = np.flatnonzero(TARGETS != 0)[:200]
    s = ImbalancedOversampler(TARGETS, indices=sub, seed=0)
    idx = np.array(list(s))
    assert len(idx) == len(sub) and set(idx) <= set(sub)
    present = np.unique(TARGETS[sub])
    labels_sub = TARGETS[sub]
    expect_w = 1.0 / np.bincount(labels_sub)[labels_sub]
    assert np.allclose(s.weights.numpy(), expect_w)
    assert set(TARGETS[idx]) == set(present)


@pytest.mark.parametrize("fill", ["replacement", "repeat"])
def test_mrr_is_exactly_balanced_with_default_cap_the_smallest_class(fill: str) -> None:
    s = MinimalRandomResampler(TARGETS, fill=fill, seed=0)
    assert s.cap == min(COUNTS)
    for epoch in range(3):
        s.set_epoch(epoch)
        idx = np.array(list(s))
        assert len(idx) == len(s) == C * min(COUNTS)
        assert np.all(_per_class(idx) == min(COUNTS))
        assert len(np.unique(idx)) == len(idx)  # every class has n_c >= M: no repeats


def test_mrr_samples_without_replacement_when_a_class_has_enough() -> None:
    s = MinimalRandomResampler(TARGETS, cap=40, seed=3)
    idx = np.array(list(s))
    per = _per_class(idx)
    assert np.all(per == 40)
    for c in range(C):
        members = idx[TARGETS[idx] == c]
        if COUNTS[c] >= 40:
            assert len(np.unique(members)) == 40, c
        else:
            assert len(np.unique(members)) <= COUNTS[c], c


def test_mrr_repeat_fill_uses_every_sample_of_a_small_class() -> None:
    s = MinimalRandomResampler(TARGETS, cap=12, fill="repeat", seed=0)
    idx = np.array(list(s))
    small = idx[TARGETS[idx] == 4]
    counts = np.unique(small, return_counts=True)[1]
    assert len(counts) == 5 and counts.min() == 2 and counts.max() == 3  # 12 = 2 x 5 + 2


def test_mrr_draws_new_subsets_of_large_classes_across_epochs() -> None:
    s = MinimalRandomResampler(TARGETS, cap=20, seed=0)
    seen: set[int] = set()
    for epoch in range(60):
        s.set_epoch(epoch)
        seen |= {i for i in s if TARGETS[i] == 1}
    assert len(seen) > 190  # 200 samples in class 1, 20 per epoch


def test_mrr_without_shuffle_groups_by_class() -> None:
    idx = np.array(list(MinimalRandomResampler(TARGETS, shuffle=False)))
    assert np.all(np.diff(TARGETS[idx]) >= 0)


def test_class_cap_sampler_keeps_at_most_cap_per_class_without_repeats() -> None:
    s = ClassCapSampler(TARGETS, cap=60, seed=0)
    idx = np.array(list(s))
    assert np.array_equal(_per_class(idx), np.minimum(COUNTS, 60))
    assert len(np.unique(idx)) == len(idx)


def test_class_cap_subset_can_be_fixed_while_the_order_changes() -> None:
    s = ClassCapSampler(TARGETS, cap=60, seed=0)
    s.set_subset(2)
    s.set_epoch(0)
    a = list(s)
    s.set_epoch(1)
    b = list(s)
    assert a != b and sorted(a) == sorted(b)
    s.set_subset(None)
    s.set_epoch(0)
    c = list(s)
    s.set_epoch(1)
    assert sorted(c) != sorted(list(s))


@pytest.mark.parametrize("name", RANDOM_SAMPLERS)
def test_set_epoch_changes_the_order_reproducibly(name: str) -> None:
    a = build_sampler(name, TARGETS, seed=11)
    b = build_sampler(name, TARGETS, seed=11)
    other = build_sampler(name, TARGETS, seed=12)
    orders = []
    for epoch in (0, 1):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        other.set_epoch(epoch)
        la, lb = list(a), list(b)
        assert la == lb and la == list(a)  # same seed and epoch: same order, also when iterated again
        assert la != list(other)
        orders.append(la)
    assert orders[0] != orders[1]


def test_sequential_sampler_is_in_order() -> None:
    s = build_sampler("sequential", TARGETS)
    s.set_epoch(5)
    assert list(s) == list(range(N))


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("replicas", [2, 3, 4])
@pytest.mark.parametrize("name", list_samplers())
def test_ddp_shards_are_disjoint_equal_and_cover_the_epoch(name: str, replicas: int, drop_last: bool) -> None:
    opts = {"cap": 7} if name == "mrr" else {}  # 35 per epoch: not a multiple of 2 or 4 or 3
    shards = []
    for rank in range(replicas):
        s = build_sampler(name, TARGETS, seed=5, num_replicas=replicas, rank=rank, drop_last=drop_last, **opts)
        s.set_epoch(3)
        shards.append(np.array(list(s)))
        epoch = s.epoch_indices()
    lengths = {len(x) for x in shards}
    assert len(lengths) == 1 and lengths.pop() == len(s)
    # Interleaving the shards gives back the epoch: rank r holds positions r, r + R, ... (disjoint by construction).
    total = len(shards[0]) * replicas
    merged = np.empty(total, dtype=np.int64)
    for rank, shard in enumerate(shards):
        merged[rank::replicas] = shard
    if drop_last:
        assert total <= len(epoch) and np.array_equal(merged, epoch[:total])
    else:
        assert total >= len(epoch) and np.array_equal(merged[: len(epoch)], epoch)
        assert np.array_equal(merged[len(epoch) :], epoch[: total - len(epoch)])  # padding wraps around
    if name in ("shuffle", "sequential") and not drop_last:
        assert set(merged) == set(range(N))


def test_ddp_shards_of_a_permutation_are_disjoint_index_sets() -> None:
    parts = [set(build_sampler("shuffle", np.zeros(12, np.int64), num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(p) == 4 for p in parts)
    assert not (parts[0] & parts[1]) and not (parts[1] & parts[2]) and not (parts[0] & parts[2])
    assert set().union(*parts) == set(range(12))


def test_bad_rank_is_refused() -> None:
    with pytest.raises(ValueError, match="rank"):
        build_sampler("shuffle", TARGETS, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas"):
        build_sampler("shuffle", TARGETS, num_replicas=0, rank=0)


def test_unknown_sampler_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as err:
        build_sampler("balanced_softmax", TARGETS)
    for name in list_samplers():
        assert name in str(err.value)


def test_option_of_another_sampler_is_refused() -> None:
    with pytest.raises(TypeError, match="does not take power"):
        build_sampler("mrr", TARGETS, power=0.5)


def test_aliases_resolve() -> None:
    assert isinstance(build_sampler("none", TARGETS), type(build_sampler("shuffle", TARGETS)))
    assert isinstance(build_sampler("ImbalancedDatasetSampler", TARGETS), ImbalancedOversampler)


@pytest.mark.parametrize(
    "bad,err",
    [
        (np.zeros((2, 3), np.int64), ValueError),
        (np.array([0, -1]), ValueError),
        (np.array([0.5, 1.0]), TypeError),
        (np.array([], np.int64), ValueError),
    ],
)
def test_bad_targets_are_refused(bad: np.ndarray, err: type[Exception]) -> None:
    with pytest.raises(err):
        build_sampler("mrr", bad)


def test_targets_can_be_a_list_or_tensor() -> None:
    assert list(build_sampler("mrr", [0, 1, 1], seed=0)) == list(build_sampler("mrr", torch.tensor([0, 1, 1]), seed=0))
    assert class_counts([0, 2, 2]).tolist() == [1, 0, 2]


def test_works_with_a_dataloader_and_fer_dataset_targets() -> None:
    pixels = np.zeros((len(TARGETS), 4, 4), np.uint8)
    ds = FERDataset("toy", "train", get_label_space("basic7"), TARGETS, pixels=pixels)
    s = build_sampler("mrr", ds.targets, seed=0)
    loader = DataLoader(TensorDataset(torch.as_tensor(ds.targets)), batch_size=5, sampler=s)
    labels = torch.cat([b[0] for b in loader]).numpy()
    assert np.array_equal(np.bincount(labels, minlength=C), np.full(C, min(COUNTS)))


def test_rank_and_world_size_default_to_the_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 4)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 3)
    s = build_sampler("oversample", TARGETS, seed=2)
    assert (s.num_replicas, s.rank) == (4, 3)
    explicit = build_sampler("oversample", TARGETS, seed=2, num_replicas=4, rank=3)
    assert list(s) == list(explicit) and len(s) == -(-N // 4)
